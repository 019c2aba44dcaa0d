//! Presence: `online`, `unavailable` or `offline`, with last activity.
//!
//! A user is online while they have a live connection (a long-poll or a
//! stream) and act; after `idle_after_ms` without activity they become
//! unavailable; when their last connection has been gone for
//! `offline_grace_ms` they go offline. State lives in memory (Redis when a
//! region runs several instances). Every change takes a stream position and
//! wakes the users who share a room with them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::{
    core::Core,
    error::{Error, Result},
    rooms::RoomService,
    storage::StreamPos,
    sync::notifier::WakeTarget,
    util::now_ms,
};

pub const ONLINE: &str = "online";
pub const UNAVAILABLE: &str = "unavailable";
pub const OFFLINE: &str = "offline";

/// How many recent changes are indexed; older tokens scan the whole map.
const CHANGE_LOG: usize = 65_536;

#[derive(Clone, Debug)]
struct UserPresence {
    state: &'static str,
    status_msg: Option<String>,
    last_active_ms: i64,
    pos: StreamPos,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserPresence>,
    /// Open connections per user.
    connections: HashMap<String, usize>,
    /// `(pos, user)` of recent changes, oldest first.
    log: VecDeque<(StreamPos, String)>,
}

#[derive(Clone)]
pub struct PresenceService {
    core: Arc<Core>,
    rooms: RoomService,
    inner: Arc<Mutex<Inner>>,
}

/// An `m.presence` event for /sync.
fn presence_event(user: &str, p: &UserPresence, now: i64) -> Value {
    let mut content = json!({
        "presence": p.state,
        "last_active_ago": (now - p.last_active_ms).max(0),
        "currently_active": p.state == ONLINE,
    });
    if let Some(msg) = &p.status_msg {
        content["status_msg"] = json!(msg);
    }
    json!({"type": "m.presence", "sender": user, "content": content})
}

fn parse_state(s: &str) -> Result<&'static str> {
    match s {
        ONLINE => Ok(ONLINE),
        UNAVAILABLE => Ok(UNAVAILABLE),
        OFFLINE => Ok(OFFLINE),
        _ => Err(Error::invalid_param(
            "presence must be online, unavailable or offline",
        )),
    }
}

impl PresenceService {
    pub fn new(core: Arc<Core>, rooms: RoomService) -> Self {
        Self {
            core,
            rooms,
            inner: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.core.config.presence.enabled
    }

    /// `PUT /presence/{userId}/status`.
    pub async fn set(&self, user_id: &str, state: &str, status_msg: Option<String>) -> Result<()> {
        let state = parse_state(state)?;
        if !self.enabled() {
            return Ok(());
        }
        self.update(user_id, Some(state), Some(status_msg), true)
            .await;
        Ok(())
    }

    /// `GET /presence/{userId}/status`.
    pub fn get(&self, user_id: &str) -> Value {
        let inner = self.inner.lock();
        match inner.users.get(user_id).filter(|_| self.enabled()) {
            Some(p) => {
                let mut out = json!({
                    "presence": p.state,
                    "last_active_ago": (now_ms() - p.last_active_ms).max(0),
                    "currently_active": p.state == ONLINE,
                });
                if let Some(msg) = &p.status_msg {
                    out["status_msg"] = json!(msg);
                }
                out
            }
            None => json!({"presence": OFFLINE}),
        }
    }

    /// Open sync and stream connections on this instance, for the admin
    /// statistics.
    pub fn open_connections(&self) -> usize {
        self.inner.lock().connections.values().sum()
    }

    /// A sync or stream connection opened. `set_presence` is the sync
    /// parameter (`online` by default).
    pub async fn connection_opened(&self, user_id: &str, set_presence: Option<&str>) {
        // Connections are counted even with presence off: push delivery asks
        // whether a user has one open (`is_connected`).
        *self
            .inner
            .lock()
            .connections
            .entry(user_id.to_owned())
            .or_default() += 1;
        if !self.enabled() {
            return;
        }
        let state = match set_presence.map(parse_state) {
            Some(Ok(OFFLINE)) => return,
            Some(Ok(s)) => s,
            _ => ONLINE,
        };
        self.update(user_id, Some(state), None, true).await;
    }

    /// A connection closed; the user goes offline after the grace period if it
    /// was their last one.
    pub fn connection_closed(&self, user_id: &str) {
        let last = {
            let mut inner = self.inner.lock();
            let n = inner.connections.entry(user_id.to_owned()).or_default();
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                inner.connections.remove(user_id);
            }
            last
        };
        if !last || !self.enabled() {
            return;
        }
        let this = self.clone();
        let user = user_id.to_owned();
        let grace = Duration::from_millis(self.core.config.presence.offline_grace_ms);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let still_gone = !this.inner.lock().connections.contains_key(&user);
            if still_gone {
                this.update(&user, Some(OFFLINE), None, false).await;
            }
        });
    }

    /// Whether the user has an open sync long-poll or WebSocket stream on
    /// this instance (push delivery skips users who do).
    pub fn is_connected(&self, user_id: &str) -> bool {
        self.inner.lock().connections.contains_key(user_id)
    }

    /// Applies a change; wakes co-members only if something visible changed.
    async fn update(
        &self,
        user_id: &str,
        state: Option<&'static str>,
        status_msg: Option<Option<String>>,
        active: bool,
    ) {
        let now = now_ms();
        {
            let mut inner = self.inner.lock();
            let entry = inner
                .users
                .entry(user_id.to_owned())
                .or_insert(UserPresence {
                    state: OFFLINE,
                    status_msg: None,
                    last_active_ms: now,
                    pos: 0,
                });
            let mut changed = false;
            if let Some(s) = state {
                changed |= entry.state != s;
                entry.state = s;
            }
            if let Some(msg) = status_msg {
                changed |= entry.status_msg != msg;
                entry.status_msg = msg;
            }
            if active {
                // Activity only counts as news after a long quiet spell.
                changed |= now - entry.last_active_ms > 60_000;
                entry.last_active_ms = now;
            }
            if !changed {
                return;
            }
        }
        // Work out whom to wake before taking a stream position: a position
        // held open across awaits would hold back every later one.
        let (wake, servers) = self.audience(user_id).await;
        let pos = {
            let mut inner = self.inner.lock();
            let pos = self.core.stream.allocate();
            if let Some(entry) = inner.users.get_mut(user_id) {
                entry.pos = pos;
            }
            inner.log.push_back((pos, user_id.to_owned()));
            if inner.log.len() > CHANGE_LOG {
                inner.log.pop_front();
            }
            pos
        };
        self.core.complete(pos, wake);
        if !servers.is_empty() && self.is_local(user_id) {
            let update = self.get(user_id);
            let mut push = serde_json::json!({
                "user_id": user_id,
                "presence": update["presence"],
                "currently_active": update["currently_active"],
            });
            if let Some(ago) = update.get("last_active_ago") {
                push["last_active_ago"] = ago.clone();
            }
            if let Some(msg) = update.get("status_msg").filter(|m| !m.is_null()) {
                push["status_msg"] = msg.clone();
            }
            let sent = self
                .core
                .outbound
                .send_edu(
                    servers.iter().map(String::as_str),
                    "m.presence",
                    serde_json::json!({"push": [push]}),
                )
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot queue a presence update for federation");
            }
        }
    }

    fn is_local(&self, user_id: &str) -> bool {
        crate::rooms::server_of(user_id) == self.core.server_name.as_str()
    }

    /// A presence update for a user of another server, from its `m.presence` EDU.
    pub async fn set_remote(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<String>,
        last_active_ago: Option<u64>,
    ) {
        if !self.enabled() || self.is_local(user_id) {
            return;
        }
        let Ok(state) = parse_state(state) else {
            return;
        };
        let active = last_active_ago.is_some_and(|ago| ago < 60_000);
        self.update(user_id, Some(state), Some(status_msg), active)
            .await;
    }

    /// Who should be woken by a change of `user_id`'s presence, and the other
    /// servers that share a room with them.
    async fn audience(&self, user_id: &str) -> (Vec<WakeTarget>, Vec<String>) {
        let mut targets = vec![WakeTarget::User(user_id.to_owned())];
        let mut servers = HashSet::new();
        let Ok(memberships) = self.core.storage.rooms.memberships_for_user(user_id).await else {
            return (targets, Vec::new());
        };
        let mut seen = HashSet::new();
        for m in memberships.into_iter().filter(|m| m.membership == "join") {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(m.room_id.as_str()) else {
                continue;
            };
            let Ok(Some(room)) = self.rooms.get(&room_id).await else {
                continue;
            };
            let st = room.read().await;
            servers.extend(st.remote_servers(self.core.server_name.as_str(), None));
            if st.is_large() {
                // No presence fan-out through large rooms: their members pick it
                // up on their next sync instead of all waking at once.
                continue;
            } else {
                for u in &st.joined {
                    if seen.insert(u.clone()) {
                        targets.push(WakeTarget::User(u.clone()));
                    }
                }
            }
        }
        (targets, servers.into_iter().collect())
    }

    /// `m.presence` events for /sync: changes in `(since, upto]` of users for
    /// whom `visible` holds.
    pub fn events_since(
        &self,
        since: Option<StreamPos>,
        upto: StreamPos,
        visible: impl Fn(&str) -> bool,
    ) -> Vec<Value> {
        if !self.enabled() {
            return Vec::new();
        }
        let inner = self.inner.lock();
        let since = since.unwrap_or(0);
        let covered = inner.log.front().is_some_and(|(p, _)| *p <= since + 1);
        let candidates: Vec<&String> = if covered {
            let mut v: Vec<&String> = inner
                .log
                .iter()
                .filter(|(p, _)| *p > since && *p <= upto)
                .map(|(_, u)| u)
                .collect();
            v.sort();
            v.dedup();
            v
        } else {
            inner
                .users
                .iter()
                .filter(|(_, p)| p.pos > since && p.pos <= upto)
                .map(|(u, _)| u)
                .collect()
        };
        let now = now_ms();
        candidates
            .into_iter()
            .filter(|u| visible(u))
            .filter_map(|u| inner.users.get(u.as_str()).map(|p| (u, p)))
            .filter(|(_, p)| p.pos > since && p.pos <= upto)
            .map(|(u, p)| presence_event(u, p, now))
            .collect()
    }

    /// The current presence of `users` (those the server knows about), as
    /// `m.presence` events.
    pub fn current_events(&self, users: &[String]) -> Vec<Value> {
        if !self.enabled() {
            return Vec::new();
        }
        let inner = self.inner.lock();
        let now = now_ms();
        users
            .iter()
            .filter_map(|u| inner.users.get(u).map(|p| (u, p)))
            .map(|(u, p)| presence_event(u, p, now))
            .collect()
    }

    /// Marks online users idle after `idle_after_ms`; runs until the process exits.
    pub fn spawn_idle_sweeper(&self) {
        if !self.enabled() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let idle = this.core.config.presence.idle_after_ms as i64;
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let now = now_ms();
                let idle_users: Vec<String> = this
                    .inner
                    .lock()
                    .users
                    .iter()
                    .filter(|(_, p)| p.state == ONLINE && now - p.last_active_ms > idle)
                    .map(|(u, _)| u.clone())
                    .collect();
                for user in idle_users {
                    this.update(&user, Some(UNAVAILABLE), None, false).await;
                }
            }
        });
    }
}
