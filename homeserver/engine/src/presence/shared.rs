//! Presence across instances (docs/scale-out.md, "What lives in Redis").
//!
//! - `presence:{user}`: the user's state, status message, last activity and
//!   a version. Each change is also sent as a note, so every instance keeps
//!   all users' presence in memory and /sync never asks Redis.
//! - `conns:{user}`: the instances (`<id>:<boot id>`) holding a connection
//!   of the user. An instance adds itself on the user's first connection and
//!   removes itself when its last one has been gone for the grace period;
//!   the user goes offline only when no *live* instance is left in the set.
//! - `boot_users:{<id>:<boot id>}` and `boots`: who each instance process
//!   holds, so that when one dies (its heartbeat row goes stale) a survivor
//!   removes it from its users' sets and takes those left unconnected offline.
//!
//! Every call falls back to this instance's own view when Redis fails.

use std::collections::{HashMap, HashSet};

use super::{parse_state, PresenceService, UserPresence, OFFLINE};
use crate::{
    cluster::{encode_targets, Note},
    sync::notifier::WakeTarget,
    util::now_ms,
};

/// Presence and connection sets of users nobody touches expire after this.
const TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// KEYS: the user's connection set and presence hash. ARGV: this instance's
/// member, the offline state, then the live members. Leaves the set; if no
/// live member is left, stores the state under a new version (as
/// `bump_version` does) and answers it; else answers 0.
const LEAVE: &str = r#"
redis.call('SREM', KEYS[1], ARGV[1])
local live = {}
for i = 3, #ARGV do live[ARGV[i]] = true end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if live[m] then return 0 end
end
local t = redis.call('TIME')
local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = tonumber(redis.call('HGET', KEYS[2], 'v') or '0')
if v <= old then v = old + 1 end
redis.call('HSET', KEYS[2], 'v', string.format('%.0f', v), 'state', ARGV[2])
return v
"#;

/// How long one survivor may take to clean up after a dead instance.
const SWEEP_LOCK_MS: i64 = 60_000;

impl PresenceService {
    /// This process's member in the connection sets.
    fn me(&self) -> Option<String> {
        let link = self.core.cluster.as_ref()?;
        Some(format!("{}:{}", link.instance, link.boot_id))
    }

    /// Stores a change in Redis and tells the other instances; the version
    /// Redis gave it, or `None` (single instance, or Redis failed).
    pub(super) async fn share(
        &self,
        user_id: &str,
        p: &UserPresence,
        wake: &[WakeTarget],
    ) -> Option<i64> {
        let redis = self.core.redis.as_ref()?;
        let key = redis.commands.key("presence", user_id);
        let status = serde_json::to_string(&p.status_msg).unwrap_or_else(|_| "null".into());
        let mut pipe = redis::pipe();
        pipe.atomic();
        crate::cluster::bump_version(&mut pipe, &key);
        pipe.hset_multiple(
            &key,
            &[
                ("state", p.state.to_owned()),
                ("status_msg", status),
                ("last_active", p.last_active_ms.to_string()),
            ],
        )
        .ignore()
        .pexpire(&key, TTL_MS)
        .ignore();
        let (version,): (i64,) = match redis.commands.pipe(&pipe).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, user = user_id, "presence stays on this instance");
                return None;
            }
        };
        self.send_note(user_id, version, p, wake).await;
        Some(version)
    }

    /// Tells the other instances about a stored change.
    pub(super) async fn send_note(
        &self,
        user_id: &str,
        version: i64,
        p: &UserPresence,
        wake: &[WakeTarget],
    ) {
        let Some(redis) = self.core.redis.as_ref() else {
            return;
        };
        redis
            .notes
            .send(Note::Presence {
                user: user_id.to_owned(),
                v: version,
                state: p.state.to_owned(),
                status_msg: p.status_msg.clone(),
                last_active: p.last_active_ms,
                wake: encode_targets(wake),
            })
            .await;
    }

    /// The user's presence as Redis holds it (for a user this instance has
    /// not heard about since it started).
    pub(super) async fn fetch(&self, user_id: &str) -> Option<UserPresence> {
        let redis = self.core.redis.as_ref()?;
        let key = redis.commands.key("presence", user_id);
        let fields: HashMap<String, String> = redis
            .commands
            .query(redis::cmd("HGETALL").arg(&key))
            .await
            .map_err(|e| tracing::debug!(error = %e, "cannot read presence from Redis"))
            .ok()?;
        let state = parse_state(fields.get("state")?).ok()?;
        Some(UserPresence {
            state,
            status_msg: fields
                .get("status_msg")
                .and_then(|s| serde_json::from_str(s).ok())
                .flatten(),
            last_active_ms: fields.get("last_active")?.parse().ok()?,
            pos: 0,
            version: fields.get("v").and_then(|v| v.parse().ok()).unwrap_or(0),
            local_writer: false,
        })
    }

    /// Adds this instance to the user's connection set. False if Redis failed.
    pub(super) async fn register(&self, user_id: &str) -> bool {
        let (Some(redis), Some(me)) = (self.core.redis.as_ref(), self.me()) else {
            return true;
        };
        let conns = redis.commands.key("conns", user_id);
        let mut pipe = redis::pipe();
        pipe.sadd(&conns, &me)
            .ignore()
            .pexpire(&conns, TTL_MS)
            .ignore();
        let held = redis.commands.key("boot_users", &me);
        let added = redis.commands.pipe::<()>(&pipe).await.and(
            redis
                .commands
                .query::<i64>(redis::cmd("SADD").arg(&held).arg(user_id))
                .await
                .map(|_| ()),
        );
        if let Err(e) = added {
            tracing::debug!(error = %e, "cannot record a connection in Redis");
            return false;
        }
        true
    }

    /// Removes this instance from the user's connection set and, if no live
    /// instance is left in it, stores them offline — in one step, so a
    /// connection another instance records meanwhile is never overlooked.
    /// `Some(Some(version))`: now offline; `Some(None)`: still connected
    /// elsewhere; `None`: unknown (no Redis, or it failed).
    pub(super) async fn leave_and_go_offline(&self, user_id: &str) -> Option<Option<i64>> {
        let redis = self.core.redis.as_ref()?;
        let me = self.me()?;
        let live = self.live_members().await?;
        let held = redis.commands.key("boot_users", &me);
        if let Err(e) = redis
            .commands
            .query::<i64>(redis::cmd("SREM").arg(&held).arg(user_id))
            .await
        {
            tracing::debug!(error = %e, "cannot update this instance's users in Redis");
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEAVE)
            .arg(2)
            .arg(redis.commands.key("conns", user_id))
            .arg(redis.commands.key("presence", user_id))
            .arg(&me)
            .arg(OFFLINE);
        for member in live.iter().filter(|m| **m != me) {
            cmd.arg(member);
        }
        match redis.commands.query::<i64>(&cmd).await {
            Ok(0) => Some(None),
            Ok(version) => Some(Some(version)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot check the user's connections in Redis");
                None
            }
        }
    }

    /// The `<id>:<boot id>` of every live instance process.
    async fn live_members(&self) -> Option<HashSet<String>> {
        self.core.cluster.as_ref()?;
        let lease = self.core.config.cluster.lease_ms as i64;
        let now = now_ms();
        let rows = self.core.storage.cluster.instances().await.ok()?;
        Some(
            rows.into_iter()
                .filter(|r| now - r.heartbeat_ts <= lease)
                .map(|r| format!("{}:{}", r.instance_id, r.boot_id))
                .collect(),
        )
    }

    /// Whether another live instance holds a connection of the user. `None`
    /// when this cannot be known (single instance, Redis or database failed).
    pub(super) async fn connected_elsewhere(&self, user_id: &str) -> Option<bool> {
        let redis = self.core.redis.as_ref()?;
        let me = self.me()?;
        let conns = redis.commands.key("conns", user_id);
        let members: Vec<String> = redis
            .commands
            .query(redis::cmd("SMEMBERS").arg(&conns))
            .await
            .ok()?;
        if members.iter().all(|m| *m == me) {
            return Some(false);
        }
        let live = self.live_members().await?;
        Some(members.iter().any(|m| *m != me && live.contains(m)))
    }

    /// Announces this process, so survivors can clean up after it.
    pub(super) async fn announce_boot(&self) {
        let (Some(redis), Some(me)) = (self.core.redis.as_ref(), self.me()) else {
            return;
        };
        let boots = redis.commands.key("boots", "all");
        if let Err(e) = redis
            .commands
            .query::<i64>(redis::cmd("SADD").arg(&boots).arg(&me))
            .await
        {
            tracing::debug!(error = %e, "cannot announce this instance for presence");
        }
    }

    /// Takes the connections of dead instance processes out of the users'
    /// sets; users left with none go offline. One survivor does each.
    pub(super) async fn sweep_dead_instances(&self) {
        let (Some(redis), Some(me)) = (self.core.redis.clone(), self.me()) else {
            return;
        };
        let boots_key = redis.commands.key("boots", "all");
        let Ok(boots) = redis
            .commands
            .query::<Vec<String>>(redis::cmd("SMEMBERS").arg(&boots_key))
            .await
        else {
            return;
        };
        let Some(live) = self.live_members().await else {
            return;
        };
        for dead in boots.iter().filter(|b| **b != me && !live.contains(*b)) {
            let lock = redis.commands.key("sweep", dead);
            let mut take = redis::cmd("SET");
            take.arg(&lock)
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(SWEEP_LOCK_MS);
            if !matches!(
                redis.commands.query::<Option<String>>(&take).await,
                Ok(Some(_))
            ) {
                continue;
            }
            let held = redis.commands.key("boot_users", dead);
            let Ok(users) = redis
                .commands
                .query::<Vec<String>>(redis::cmd("SMEMBERS").arg(&held))
                .await
            else {
                continue;
            };
            tracing::info!(instance = %dead, users = users.len(), "taking a dead instance's connections out of presence");
            for user in users {
                let conns = redis.commands.key("conns", &user);
                let _ = redis
                    .commands
                    .query::<i64>(redis::cmd("SREM").arg(&conns).arg(dead))
                    .await;
                let here = self.inner.lock().connections.contains_key(&user);
                if !here && self.connected_elsewhere(&user).await == Some(false) {
                    self.update(&user, Some(OFFLINE), None, false).await;
                }
            }
            let _ = redis
                .commands
                .query::<i64>(redis::cmd("DEL").arg(&held))
                .await;
            let _ = redis
                .commands
                .query::<i64>(redis::cmd("SREM").arg(&boots_key).arg(dead))
                .await;
        }
    }
}
