//! Presence: `online`, `unavailable` or `offline`, with last activity.
//!
//! A user is online while they have a live connection (a long-poll or a
//! stream) and act; after `idle_after_ms` without activity they become
//! unavailable; when their last connection has been gone for
//! `offline_grace_ms` they go offline. State lives in memory; with several
//! instances it is also kept in Redis and broadcast, and connections are
//! counted across instances (`shared.rs`). Every change takes a stream
//! position and wakes the users who share a room with them.

mod shared;

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
    /// The Redis version of this value (multi-instance mode).
    version: i64,
    /// Whether this instance made the last change (it then sweeps the user
    /// idle; other instances leave that to it).
    local_writer: bool,
}

impl UserPresence {
    fn new(now: i64) -> Self {
        Self {
            state: OFFLINE,
            status_msg: None,
            last_active_ms: now,
            pos: 0,
            version: 0,
            local_writer: false,
        }
    }
}

/// How a change reaches Redis (multi-instance mode).
enum Write {
    /// Stored and broadcast if it changed anything.
    Share,
    /// Stored and broadcast even if it looks unchanged here.
    Force,
    /// Already stored with this version: only broadcast.
    Written(i64),
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserPresence>,
    /// Open connections per user.
    connections: HashMap<String, usize>,
    /// Users whose Redis connection set names this instance.
    registered: HashSet<String>,
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
    pub async fn get(&self, user_id: &str) -> Value {
        if !self.enabled() {
            return json!({"presence": OFFLINE});
        }
        let known = self.inner.lock().users.contains_key(user_id);
        if !known {
            // Unchanged since this instance started: Redis may know.
            if let Some(p) = self.fetch(user_id).await {
                self.inner
                    .lock()
                    .users
                    .entry(user_id.to_owned())
                    .or_insert(p);
            }
        }
        let inner = self.inner.lock();
        match inner.users.get(user_id) {
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
        let register = {
            let mut inner = self.inner.lock();
            *inner.connections.entry(user_id.to_owned()).or_default() += 1;
            self.enabled()
                && self.core.redis.is_some()
                && inner.registered.insert(user_id.to_owned())
        };
        if !self.enabled() {
            return;
        }
        let registered = register && self.register(user_id).await;
        if register && !registered {
            // Try again with the next connection.
            self.inner.lock().registered.remove(user_id);
        }
        let state = match set_presence.map(parse_state) {
            Some(Ok(OFFLINE)) => return,
            Some(Ok(s)) => s,
            _ => ONLINE,
        };
        // This instance's first connection of the user writes their state
        // even if it looks unchanged here: another instance may be taking
        // them offline at this very moment, and this write, made after the
        // connection was recorded, comes after that one.
        let write = if registered {
            Write::Force
        } else {
            Write::Share
        };
        self.change(user_id, Some(state), None, true, write).await;
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
            {
                let mut inner = this.inner.lock();
                if inner.connections.contains_key(&user) {
                    return;
                }
                inner.registered.remove(&user);
            }
            // Offline only if no other live instance holds a connection
            // either; Redis checks and writes in one step. When that cannot
            // be known (single instance, Redis down), this instance decides.
            match this.leave_and_go_offline(&user).await {
                Some(None) => {}
                Some(Some(version)) => {
                    this.change(&user, Some(OFFLINE), None, false, Write::Written(version))
                        .await
                }
                None => this.update(&user, Some(OFFLINE), None, false).await,
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
        self.change(user_id, state, status_msg, active, Write::Share)
            .await
    }

    /// [`Self::update`], with how Redis learns of it.
    async fn change(
        &self,
        user_id: &str,
        state: Option<&'static str>,
        status_msg: Option<Option<String>>,
        active: bool,
        write: Write,
    ) {
        let now = now_ms();
        let snapshot = {
            let mut inner = self.inner.lock();
            let entry = inner
                .users
                .entry(user_id.to_owned())
                .or_insert_with(|| UserPresence::new(now));
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
            if !changed && !matches!(write, Write::Force) {
                return;
            }
            entry.local_writer = true;
            entry.clone()
        };
        // Work out whom to wake before taking a stream position: a position
        // held open across awaits would hold back every later one.
        let (wake, servers) = self.audience(user_id).await;
        let version = match write {
            Write::Share | Write::Force => self.share(user_id, &snapshot, &wake).await,
            Write::Written(v) => {
                self.send_note(user_id, v, &snapshot, &wake).await;
                Some(v)
            }
        };
        self.record(user_id, version, wake);
        if !servers.is_empty() && self.is_local(user_id) {
            let update = self.get(user_id).await;
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

    /// Gives a change a stream position and wakes this instance's readers
    /// (every instance wakes its own when it applies a change).
    fn record(&self, user_id: &str, version: Option<i64>, wake: Vec<WakeTarget>) {
        let pos = {
            let mut inner = self.inner.lock();
            let pos = self.core.stream.allocate();
            if let Some(entry) = inner.users.get_mut(user_id) {
                entry.pos = pos;
                if let Some(v) = version {
                    entry.version = entry.version.max(v);
                }
            }
            inner.log.push_back((pos, user_id.to_owned()));
            if inner.log.len() > CHANGE_LOG {
                inner.log.pop_front();
            }
            pos
        };
        self.core.complete_local(pos, wake);
    }

    /// Another instance's change, from its note: applied unless a newer
    /// version is already here.
    fn apply_note(
        &self,
        user_id: &str,
        version: i64,
        state: &str,
        status_msg: Option<String>,
        last_active_ms: i64,
        wake: Vec<WakeTarget>,
    ) {
        let Ok(state) = parse_state(state) else {
            return;
        };
        {
            let mut inner = self.inner.lock();
            let entry = inner
                .users
                .entry(user_id.to_owned())
                .or_insert_with(|| UserPresence::new(last_active_ms));
            if version <= entry.version {
                return;
            }
            entry.version = version;
            entry.state = state;
            entry.status_msg = status_msg;
            entry.last_active_ms = last_active_ms;
            entry.local_writer = false;
        }
        self.record(user_id, None, wake);
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
        // Presence is read from memory: no user-scoped section changes.
        let mut targets = vec![WakeTarget::member(user_id)];
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
                        targets.push(WakeTarget::member(u));
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

    /// Marks online users idle after `idle_after_ms`, cleans up after dead
    /// instances, and follows the other instances' changes; runs until the
    /// process exits. With several instances, each sweeps the users it holds
    /// connections of or last changed.
    pub fn spawn_idle_sweeper(&self) {
        if !self.enabled() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.announce_boot().await;
            let idle = this.core.config.presence.idle_after_ms as i64;
            let shared = this.core.redis.is_some();
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let now = now_ms();
                let idle_users: Vec<String> = {
                    let inner = this.inner.lock();
                    inner
                        .users
                        .iter()
                        .filter(|(_, p)| p.state == ONLINE && now - p.last_active_ms > idle)
                        .filter(|(u, p)| {
                            !shared || p.local_writer || inner.connections.contains_key(*u)
                        })
                        .map(|(u, _)| u.clone())
                        .collect()
                };
                for user in idle_users {
                    this.update(&user, Some(UNAVAILABLE), None, false).await;
                }
                this.sweep_dead_instances().await;
            }
        });
        let Some(redis) = &self.core.redis else {
            return;
        };
        let this = self.clone();
        redis.notes.follow("presence", move |note| {
            if let Some(crate::cluster::Note::Presence {
                user,
                v,
                state,
                status_msg,
                last_active,
                wake,
            }) = note
            {
                this.apply_note(
                    &user,
                    v,
                    &state,
                    status_msg,
                    last_active,
                    crate::cluster::decode_targets(&wake),
                );
            }
        });
    }
}
