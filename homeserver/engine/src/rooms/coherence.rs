//! Keeping cached rooms right when other instances write to them
//! (multi-instance mode, `cluster/`).
//!
//! - A writer takes the room's lock in the shared database after its local
//!   lock, then catches its copy up with what other instances stored, so it
//!   builds on the room's true forward extremities and authorises against
//!   its true state.
//! - A reader uses its copy unless another instance announced a change to
//!   the room since (or Redis is unreachable and announcements may be
//!   missed): then it catches up first.
//!
//! Catching up reads the events stored since the copy's position. Messages
//! only move the extremities; a state event among them reloads the room.

use std::ops::{Deref, DerefMut};

use ruma::OwnedEventId;
use tokio::sync::RwLockWriteGuard;

use super::{RoomHandle, RoomService, RoomState};
use crate::{
    error::{Error, Result},
    storage::{cluster::RoomLock, Direction},
};

/// More events than this since the cached copy: reload instead.
const CATCH_UP_LIMIT: usize = 64;

/// A room locked for writing, here and (in multi-instance mode) across
/// instances. Dereferences to the room's state.
pub struct RoomWriteGuard<'a> {
    state: RwLockWriteGuard<'a, RoomState>,
    _shared: RoomLock,
}

impl Deref for RoomWriteGuard<'_> {
    type Target = RoomState;
    fn deref(&self) -> &RoomState {
        &self.state
    }
}

impl DerefMut for RoomWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut RoomState {
        &mut self.state
    }
}

impl RoomService {
    fn multi_instance(&self) -> bool {
        self.core.cluster.is_some()
    }

    /// Locks the room for a write: local writers queue on the in-memory lock,
    /// then the holder takes the shared lock and catches up.
    pub async fn write_lock<'a>(&self, room: &'a RoomHandle) -> Result<RoomWriteGuard<'a>> {
        let mut state = room.write().await;
        if !self.multi_instance() {
            return Ok(RoomWriteGuard {
                state,
                _shared: RoomLock::local(),
            });
        }
        let shared = self
            .core
            .storage
            .cluster
            .lock_room(state.room_id.as_str())
            .await?;
        self.catch_up(&mut state).await?;
        Ok(RoomWriteGuard {
            state,
            _shared: shared,
        })
    }

    /// Another instance stored events in `room_id`: refresh before next use.
    pub fn mark_stale(&self, room_id: &str) {
        let Ok(id) = ruma::RoomId::parse(room_id) else {
            return;
        };
        if self.cache.lock().contains_key(&id) {
            self.stale.lock().insert(id);
        }
    }

    /// Announcements may have been missed: check every cached room on next use.
    pub fn mark_all_stale(&self) {
        let cached: Vec<_> = self.cache.lock().keys().cloned().collect();
        self.stale.lock().extend(cached);
    }

    /// Whether a cached room must be checked against the store before use.
    pub(super) fn needs_check(&self, room_id: &ruma::RoomId) -> bool {
        match &self.core.cluster {
            None => false,
            Some(link) => !link.subscribed() || self.stale.lock().remove(room_id),
        }
    }

    /// Brings `st` up to date with what the store holds for the room.
    pub(super) async fn catch_up(&self, st: &mut RoomState) -> Result<()> {
        let storage = &self.core.storage;
        let room_id = st.room_id.clone();
        let stored = storage.timeline.room_max_pos(room_id.as_str()).await?;
        if stored <= st.latest_pos {
            return Ok(());
        }
        let newer = storage
            .timeline
            .room_events(
                room_id.as_str(),
                st.latest_pos,
                stored,
                Direction::Forward,
                CATCH_UP_LIMIT,
            )
            .await?;
        let mut max_depth = st.max_depth;
        let mut only_messages = newer.len() < CATCH_UP_LIMIT;
        for ev in &newer {
            let Ok(pdu) = serde_json::from_str::<serde_json::Value>(&ev.pdu_json) else {
                only_messages = false;
                break;
            };
            if pdu.get("state_key").is_some() {
                only_messages = false;
                break;
            }
            max_depth = max_depth.max(pdu["depth"].as_u64().unwrap_or(0));
        }
        if !only_messages {
            *st = self
                .load(&room_id)
                .await?
                .ok_or_else(|| Error::not_found("Unknown room."))?;
            return Ok(());
        }
        st.extremities = storage
            .rooms
            .forward_extremities(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|id| OwnedEventId::try_from(id).ok())
            .collect();
        st.max_depth = max_depth;
        st.latest_pos = stored;
        Ok(())
    }
}
