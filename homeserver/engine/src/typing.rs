//! Typing notifications: who is typing in which room, delivered as the
//! ephemeral `m.typing` event in /sync.
//!
//! Typing is ephemeral: it lives in memory, and entries expire on their own.
//! Every change takes a stream position so /sync tokens cover it, and wakes
//! the room's members like a message does.
//!
//! With several instances (docs/scale-out.md, "What lives in Redis"), the
//! room's typing set is kept in a Redis hash (`typing:{room}`: user → deadline,
//! plus a version), and every change is *broadcast* as a note carrying the
//! room's whole new set. Each instance keeps the broadcast sets in memory, so
//! /sync never asks Redis: reading the hash at sync time would cost one Redis
//! round trip per joined room per sync, where a broadcast costs one message
//! per change. The version Redis hands out orders concurrent changes; each
//! instance applies a set under its own stream position and wakes only its
//! own waiters, so a reader never skips a set that arrived late. Deadlines
//! are wall-clock times, so every instance expires a typer on its own, even
//! when the instance that set it has died. Without Redis, typing still works
//! among the users of one instance.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::RoomId;

use crate::{
    cluster::{decode_targets, encode_targets, Note},
    core::Core,
    error::{Error, Result},
    rooms::RoomService,
    storage::StreamPos,
    sync::notifier::WakeTarget,
    util::now_ms,
};

/// The longest typing timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// The Redis hash's version field (user ids start with `@`).
const VERSION_FIELD: &str = "v";

#[derive(Default)]
struct RoomTyping {
    /// Typing users and when they stop (ms since the epoch).
    users: HashMap<String, i64>,
    /// Position of the last change.
    pos: StreamPos,
    /// The Redis version of `users` (multi-instance mode).
    version: i64,
}

#[derive(Clone)]
pub struct TypingService {
    core: Arc<Core>,
    rooms: RoomService,
    state: Arc<Mutex<HashMap<String, RoomTyping>>>,
}

impl TypingService {
    pub fn new(core: Arc<Core>, rooms: RoomService) -> Self {
        Self {
            core,
            rooms,
            state: Default::default(),
        }
    }

    /// `PUT /rooms/{roomId}/typing/{userId}`.
    pub async fn set_typing(
        &self,
        room_id: &RoomId,
        user_id: &str,
        typing: bool,
        timeout: Duration,
    ) -> Result<()> {
        self.rooms.require_joined(room_id, user_id).await?;
        let deadline = now_ms() + timeout.min(MAX_TIMEOUT).as_millis() as i64;
        let wake = self.room_targets(room_id.as_str()).await;
        let changed = match self
            .set_shared(room_id.as_str(), user_id, typing, deadline, &wake)
            .await
        {
            Some(changed) => changed,
            None => self.set_local(room_id.as_str(), user_id, typing, deadline, wake),
        };
        if changed {
            self.federate(room_id, user_id, typing, timeout).await;
        }
        Ok(())
    }

    /// Records the change in Redis and tells the other instances. `None`
    /// when there is no Redis (single instance) or it failed: the caller
    /// then applies the change locally.
    async fn set_shared(
        &self,
        room_id: &str,
        user_id: &str,
        typing: bool,
        deadline: i64,
        wake: &[WakeTarget],
    ) -> Option<bool> {
        let redis = self.core.redis.as_ref()?;
        let key = redis.commands.key("typing", room_id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if typing {
            pipe.hset(&key, user_id, deadline).ignore();
        } else {
            pipe.hdel(&key, user_id).ignore();
        }
        crate::cluster::bump_version(&mut pipe, &key);
        pipe.hgetall(&key)
            .pexpire(&key, MAX_TIMEOUT.as_millis() as i64 * 2)
            .ignore();
        let (version, mut users): (i64, HashMap<String, i64>) =
            match redis.commands.pipe(&pipe).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!(error = %e, room = room_id, "typing stays on this instance");
                    return None;
                }
            };
        users.remove(VERSION_FIELD);
        let now = now_ms();
        users.retain(|_, d| *d > now);
        let mut sorted: Vec<(String, i64)> = users.iter().map(|(u, d)| (u.clone(), *d)).collect();
        sorted.sort();
        redis
            .notes
            .send(Note::Typing {
                room: room_id.to_owned(),
                v: version,
                users: sorted,
                wake: encode_targets(wake),
            })
            .await;
        Some(self.apply(room_id, version, users, wake.to_vec()))
    }

    /// Applies a change to this instance's copy only.
    fn set_local(
        &self,
        room_id: &str,
        user_id: &str,
        typing: bool,
        deadline: i64,
        wake: Vec<WakeTarget>,
    ) -> bool {
        let changed = {
            let mut state = self.state.lock();
            let room = state.entry(room_id.to_owned()).or_default();
            if typing {
                room.users.insert(user_id.to_owned(), deadline).is_none()
            } else {
                room.users.remove(user_id).is_some()
            }
        };
        if changed {
            self.bump(room_id, wake);
        }
        changed
    }

    /// Installs a room's typing set of `version` (from Redis, here or on
    /// another instance) unless a newer one is in place. True if the set of
    /// typing users changed.
    fn apply(
        &self,
        room_id: &str,
        version: i64,
        users: HashMap<String, i64>,
        wake: Vec<WakeTarget>,
    ) -> bool {
        let changed = {
            let mut state = self.state.lock();
            let room = state.entry(room_id.to_owned()).or_default();
            if version <= room.version {
                return false;
            }
            room.version = version;
            let changed = room.users.len() != users.len()
                || users.keys().any(|u| !room.users.contains_key(u));
            room.users = users;
            changed
        };
        if changed {
            self.bump(room_id, wake);
        }
        changed
    }

    /// Tells the other servers in the room that a local user is typing.
    async fn federate(&self, room_id: &RoomId, user_id: &str, typing: bool, timeout: Duration) {
        let own = self.core.server_name.as_str();
        if crate::rooms::server_of(user_id) != own {
            return;
        }
        let destinations = match self.rooms.get(room_id).await {
            Ok(Some(room)) => room.read().await.remote_servers(own, None),
            _ => return,
        };
        if destinations.is_empty() {
            return;
        }
        let content = serde_json::json!({
            "room_id": room_id,
            "user_id": user_id,
            "typing": typing,
            "timeout": timeout.min(MAX_TIMEOUT).as_millis() as u64,
        });
        if let Err(e) = self
            .core
            .outbound
            .send_edu(destinations.iter().map(String::as_str), "m.typing", content)
            .await
        {
            tracing::warn!(error = %e, "cannot queue a typing notification for federation");
        }
    }

    /// Whom a change in the room wakes: its members, or the room itself when
    /// it is large.
    async fn room_targets(&self, room_id: &str) -> Vec<WakeTarget> {
        let Ok(id) = ruma::OwnedRoomId::try_from(room_id) else {
            return Vec::new();
        };
        self.rooms.wake_targets(&id).await
    }

    /// Gives a change a position and wakes this instance's readers (each
    /// instance wakes its own when it applies the change).
    fn bump(&self, room_id: &str, wake: Vec<WakeTarget>) {
        let pos = self.core.stream.allocate();
        if let Some(room) = self.state.lock().get_mut(room_id) {
            room.pos = pos;
        }
        self.core.complete_local(pos, wake);
    }

    /// The `m.typing` content for a room if it changed after `since` (always on
    /// an initial sync when someone is typing).
    pub fn typing_event(
        &self,
        room_id: &str,
        since: Option<StreamPos>,
        upto: StreamPos,
    ) -> Option<serde_json::Value> {
        let state = self.state.lock();
        let room = state.get(room_id)?;
        let now = now_ms();
        let mut users: Vec<&String> = room
            .users
            .iter()
            .filter(|(_, deadline)| **deadline > now)
            .map(|(u, _)| u)
            .collect();
        let changed = match since {
            Some(s) => room.pos > s && room.pos <= upto,
            None => !users.is_empty(),
        };
        if !changed {
            return None;
        }
        users.sort();
        Some(serde_json::json!({"type": "m.typing", "content": {"user_ids": users}}))
    }

    /// Expires stale entries and follows the other instances' changes; runs
    /// until the process exits.
    pub fn spawn_expiry(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = now_ms();
                let expired: Vec<String> = {
                    let mut state = this.state.lock();
                    let mut rooms = Vec::new();
                    for (room_id, room) in state.iter_mut() {
                        let before = room.users.len();
                        room.users.retain(|_, deadline| *deadline > now);
                        if room.users.len() != before {
                            rooms.push(room_id.clone());
                        }
                    }
                    state.retain(|_, r| !r.users.is_empty() || r.pos > 0);
                    rooms
                };
                for room_id in expired {
                    let wake = this.room_targets(&room_id).await;
                    this.bump(&room_id, wake);
                }
            }
        });
        let Some(redis) = &self.core.redis else {
            return;
        };
        let this = self.clone();
        redis.notes.follow("typing", move |note| {
            if let Some(Note::Typing {
                room,
                v,
                users,
                wake,
            }) = note
            {
                let now = now_ms();
                let users = users.into_iter().filter(|(_, d)| *d > now).collect();
                this.apply(&room, v, users, decode_targets(&wake));
            }
        });
    }
}

/// Validates a client's typing timeout.
pub fn parse_timeout(typing: bool, timeout_ms: Option<u64>) -> Result<Duration> {
    match (typing, timeout_ms) {
        (true, Some(ms)) => Ok(Duration::from_millis(ms)),
        (true, None) => Err(Error::bad_json("`timeout` is required when typing is true")),
        (false, _) => Ok(Duration::ZERO),
    }
}
