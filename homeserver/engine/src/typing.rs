//! Typing notifications: who is typing in which room, delivered as the
//! ephemeral `m.typing` event in /sync.
//!
//! Typing is ephemeral and lives in memory (Redis when several instances share a
//! region). Every change takes a stream position so /sync tokens cover it, and
//! wakes the room's members like a message does. Entries expire on their own.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::RoomId;

use crate::{
    core::Core,
    error::{Error, Result},
    rooms::RoomService,
    storage::StreamPos,
    sync::notifier::WakeTarget,
};

/// The longest typing timeout a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    users: HashMap<String, Instant>,
    /// Position of the last change.
    pos: StreamPos,
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
        let changed = {
            let mut state = self.state.lock();
            let room = state.entry(room_id.to_string()).or_default();
            if typing {
                let deadline = Instant::now() + timeout.min(MAX_TIMEOUT);
                room.users.insert(user_id.to_owned(), deadline).is_none()
            } else {
                room.users.remove(user_id).is_some()
            }
        };
        if changed {
            self.bump(room_id.as_str()).await;
            self.federate(room_id, user_id, typing, timeout).await;
        }
        Ok(())
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

    /// Records a change and wakes the room.
    async fn bump(&self, room_id: &str) {
        let pos = self.core.stream.allocate();
        if let Some(room) = self.state.lock().get_mut(room_id) {
            room.pos = pos;
        }
        let wake = match ruma::OwnedRoomId::try_from(room_id) {
            Ok(id) => match self.rooms.get(&id).await {
                Ok(Some(handle)) => {
                    let st = handle.read().await;
                    if st.is_large() {
                        vec![WakeTarget::Room(room_id.to_owned())]
                    } else {
                        st.joined
                            .iter()
                            .map(|u| WakeTarget::User(u.clone()))
                            .collect()
                    }
                }
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        self.core.complete(pos, wake);
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
        let changed = match since {
            Some(s) => room.pos > s && room.pos <= upto,
            None => !room.users.is_empty(),
        };
        if !changed {
            return None;
        }
        let mut users: Vec<&String> = room.users.keys().collect();
        users.sort();
        Some(serde_json::json!({"type": "m.typing", "content": {"user_ids": users}}))
    }

    /// Expires stale entries; runs until the process exits.
    pub fn spawn_expiry(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = Instant::now();
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
                    this.bump(&room_id).await;
                }
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
