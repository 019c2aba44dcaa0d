//! Rooms: the in-memory view of each active room, and the operations on it.
//!
//! Each room has one [`RoomState`] behind an async `RwLock`. Sends take the write
//! lock, which serialises the room's event graph (prev_events, depth, state) while
//! different rooms proceed in parallel. Readers (sync, members) take the read lock.

mod aliases;
mod coherence;
mod create;
pub mod hierarchy;
mod membership;
pub mod remote;
pub mod send;
pub mod state_res;
pub mod timeline;
pub mod visibility;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use parking_lot::Mutex;
use ruma::{
    room_version_rules::RoomVersionRules, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
};
use tokio::sync::RwLock;

pub use coherence::RoomWriteGuard;
pub use create::{CreateRoom, DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS};

use crate::{
    core::Core,
    error::{Error, Result},
    events::{auth::StateMap, Pdu},
    storage::StreamPos,
};

pub struct RoomState {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub state: StateMap,
    pub extremities: Vec<OwnedEventId>,
    pub max_depth: u64,
    pub snapshot: i64,
    pub latest_pos: StreamPos,
    pub joined: HashSet<String>,
    pub invited: HashSet<String>,
    /// Servers with joined members, and how many: where federation sends.
    pub servers: HashMap<String, usize>,
    /// Above this many joined members the room is "large": one room-level
    /// wake-up instead of waking each member (`limits.large_room_members`).
    pub large_threshold: usize,
    /// The newest timeline events, which incremental syncs read from here.
    pub recent: RecentEvents,
}

/// Timeline events kept per room for incremental syncs.
const RECENT_EVENTS: usize = 16;

/// A room's newest timeline events: every event with a position in
/// `(from, newest]`, in order. Filled by the two paths that add to a held
/// room's timeline (a local send, an accepted remote event); a remote join
/// reloads the room before its event becomes visible, and a history purge
/// empties it. On several instances, events written elsewhere never pass
/// through here, so it is only used on a single instance.
#[derive(Debug, Default)]
pub struct RecentEvents {
    from: StreamPos,
    events: std::collections::VecDeque<crate::storage::StoredEvent>,
}

impl RecentEvents {
    /// Empty, for a room whose events up to `pos` are all in the store.
    pub fn after(pos: StreamPos) -> Self {
        Self {
            from: pos,
            events: Default::default(),
        }
    }

    /// Adds the room's next timeline event.
    pub fn push(&mut self, ev: crate::storage::StoredEvent) {
        if self
            .events
            .back()
            .is_some_and(|b| b.stream_pos >= ev.stream_pos)
        {
            // Out of order: nothing here can be trusted any more.
            return self.clear();
        }
        if self.events.len() == RECENT_EVENTS {
            if let Some(oldest) = self.events.pop_front() {
                self.from = oldest.stream_pos;
            }
        }
        self.events.push_back(ev);
    }

    /// Keeps an event just persisted at `pos` (a local send or an accepted
    /// remote event), after applying the redaction it carries out.
    /// `txn` is the sending device and its txn id, for the sender's
    /// `unsigned.transaction_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn persisted(
        &mut self,
        room_id: &str,
        event_id: &str,
        pos: StreamPos,
        pdu_json: &str,
        state_before: i64,
        txn: Option<(String, String)>,
        redaction: Option<&(String, String)>,
    ) {
        if let Some((target, redacted)) = redaction {
            self.redact(target, redacted);
        }
        self.push(crate::storage::StoredEvent {
            stream_pos: pos,
            event_id: event_id.to_owned(),
            room_id: room_id.to_owned(),
            pdu_json: pdu_json.to_owned(),
            state_before,
            rejected: false,
            txn,
        });
    }

    /// Applies a redaction to a kept event.
    pub fn redact(&mut self, event_id: &str, redacted_json: &str) {
        if let Some(ev) = self.events.iter_mut().find(|e| e.event_id == event_id) {
            redacted_json.clone_into(&mut ev.pdu_json);
        }
    }

    /// Forgets every kept event: the store has changed underneath.
    pub fn clear(&mut self) {
        if let Some(newest) = self.events.back() {
            self.from = self.from.max(newest.stream_pos);
        }
        self.events.clear();
    }

    /// The newest `limit` events in `(lower, upto]`, newest first (what
    /// `TimelineStore::room_events` returns backwards), if all are kept.
    pub fn newest(
        &self,
        lower: StreamPos,
        upto: StreamPos,
        limit: usize,
    ) -> Option<Vec<crate::storage::StoredEvent>> {
        if lower < self.from {
            return None;
        }
        Some(
            self.events
                .iter()
                .rev()
                .filter(|e| e.stream_pos > lower && e.stream_pos <= upto)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

impl RoomState {
    pub fn state_event(&self, kind: &str, key: &str) -> Option<&Arc<Pdu>> {
        self.state.get(&(kind.to_owned(), key.to_owned()))
    }

    pub fn membership_of(&self, user_id: &str) -> Option<String> {
        self.state_event("m.room.member", user_id)
            .and_then(|p| p.content_str("membership"))
    }

    pub fn is_large(&self) -> bool {
        self.joined.len() > self.large_threshold
    }

    /// `join_rule` of the room (`invite` when unset, per spec).
    pub fn join_rule(&self) -> String {
        self.state_event("m.room.join_rules", "")
            .and_then(|p| p.content_str("join_rule"))
            .unwrap_or_else(|| "invite".into())
    }

    pub fn history_visibility(&self) -> String {
        self.state_event("m.room.history_visibility", "")
            .and_then(|p| p.content_str("history_visibility"))
            .unwrap_or_else(|| "shared".into())
    }

    /// Other servers with joined members, plus `extra` (e.g. the server of a
    /// user whose membership an event changes).
    pub fn remote_servers(&self, own: &str, extra: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = self
            .servers
            .keys()
            .filter(|s| s.as_str() != own)
            .cloned()
            .collect();
        if let Some(e) = extra {
            if e != own && !self.servers.contains_key(e) {
                out.push(e.to_owned());
            }
        }
        out
    }

    pub(crate) fn track_membership(&mut self, user_id: &str, membership: &str) {
        let server = server_of(user_id);
        if self.joined.remove(user_id) {
            if let Some(n) = self.servers.get_mut(server) {
                *n -= 1;
                if *n == 0 {
                    self.servers.remove(server);
                }
            }
        }
        self.invited.remove(user_id);
        match membership {
            "join" => {
                self.joined.insert(user_id.to_owned());
                *self.servers.entry(server.to_owned()).or_default() += 1;
            }
            "invite" => {
                self.invited.insert(user_id.to_owned());
            }
            _ => {}
        }
    }
}

/// Whom a new event at `pos` in the room wakes besides the membership's
/// target: each joined or invited member, or the room itself when it is large.
/// A membership change also changes every joined member's device lists (who
/// they share a room with); in a large room that is marked in the journal
/// directly, so the send still wakes only the room.
pub(crate) fn member_wakes(
    core: &Core,
    st: &RoomState,
    pos: StreamPos,
    membership_changed: bool,
) -> Vec<crate::sync::notifier::WakeTarget> {
    use crate::sync::notifier::{Sections, WakeTarget};
    if st.is_large() {
        if membership_changed {
            core.journal
                .mark_all(&st.joined, Sections::DEVICE_LISTS, pos);
        }
        return vec![WakeTarget::Room(st.room_id.to_string())];
    }
    let sections = if membership_changed {
        Sections::DEVICE_LISTS
    } else {
        Sections::NONE
    };
    st.joined
        .iter()
        .chain(st.invited.iter())
        .map(|u| WakeTarget::Changed(u.clone(), sections))
        .collect()
}

/// The server name part of a user id.
pub fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map(|(_, s)| s).unwrap_or("")
}

pub type RoomHandle = Arc<RwLock<RoomState>>;

#[derive(Clone)]
pub struct RoomService {
    core: Arc<Core>,
    cache: Arc<Mutex<HashMap<OwnedRoomId, RoomHandle>>>,
    /// Cached rooms another instance has written to since (`coherence.rs`).
    stale: Arc<Mutex<HashSet<OwnedRoomId>>>,
    /// Serialises first loads so a room is read from storage once.
    loading: Arc<tokio::sync::Mutex<()>>,
}

impl RoomService {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            cache: Default::default(),
            stale: Default::default(),
            loading: Default::default(),
        }
    }

    /// The room's in-memory state, loading it on first use. `None` if unknown here.
    pub async fn get(&self, room_id: &RoomId) -> Result<Option<RoomHandle>> {
        let cached = self.cache.lock().get(room_id).cloned();
        if let Some(h) = cached {
            if self.needs_check(room_id) {
                self.catch_up(&mut *h.write().await).await?;
            }
            return Ok(Some(h));
        }
        let _guard = self.loading.lock().await;
        if let Some(h) = self.cache.lock().get(room_id) {
            return Ok(Some(h.clone()));
        }
        let Some(state) = self.load(room_id).await? else {
            return Ok(None);
        };
        let handle = Arc::new(RwLock::new(state));
        self.cache.lock().insert(room_id.to_owned(), handle.clone());
        Ok(Some(handle))
    }

    /// Like [`get`](Self::get), but an unknown room is `M_NOT_FOUND`.
    pub async fn require(&self, room_id: &RoomId) -> Result<RoomHandle> {
        self.get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room."))
    }

    async fn load(&self, room_id: &RoomId) -> Result<Option<RoomState>> {
        let storage = &self.core.storage;
        let Some(record) = storage.rooms.get_room(room_id.as_str()).await? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(record.room_version.as_str())
            .map_err(|_| Error::unknown("stored room has an invalid version"))?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version(version.as_str()))?;
        let mut state = StateMap::new();
        let mut joined = HashSet::new();
        let mut invited = HashSet::new();
        for ev in storage
            .timeline
            .current_state_events(room_id.as_str())
            .await?
        {
            let event_id = OwnedEventId::try_from(ev.event_id.as_str())
                .map_err(|e| Error::unknown(e.to_string()))?;
            let pdu = Pdu::parse(event_id, room_id, &ev.pdu_json)?;
            let key = (
                pdu.kind.to_string(),
                pdu.state_key.clone().unwrap_or_default(),
            );
            if key.0 == "m.room.member" {
                match pdu.content_str("membership").as_deref() {
                    Some("join") => {
                        joined.insert(key.1.clone());
                    }
                    Some("invite") => {
                        invited.insert(key.1.clone());
                    }
                    _ => {}
                }
            }
            state.insert(key, Arc::new(pdu));
        }
        let mut extremities = Vec::new();
        let mut max_depth = 0;
        for id in storage.rooms.forward_extremities(room_id.as_str()).await? {
            if let Some(ev) = storage.timeline.get_event(&id).await? {
                let event_id = OwnedEventId::try_from(id.as_str())
                    .map_err(|e| Error::unknown(e.to_string()))?;
                let pdu = Pdu::parse(event_id.clone(), room_id, &ev.pdu_json)?;
                max_depth = max_depth.max(pdu.depth);
                extremities.push(event_id);
            }
        }
        let latest_pos = storage.timeline.room_max_pos(room_id.as_str()).await?;
        Ok(Some(RoomState {
            room_id: room_id.to_owned(),
            version,
            rules,
            state,
            extremities,
            max_depth,
            snapshot: storage.rooms.current_snapshot(room_id.as_str()).await?,
            latest_pos,
            servers: joined.iter().fold(HashMap::new(), |mut m, u| {
                *m.entry(server_of(u).to_owned()).or_default() += 1;
                m
            }),
            joined,
            invited,
            large_threshold: self.core.config.limits.large_room_members,
            recent: RecentEvents::after(latest_pos),
        }))
    }

    fn insert(&self, state: RoomState) -> RoomHandle {
        let room_id = state.room_id.clone();
        let handle = Arc::new(RwLock::new(state));
        self.cache.lock().insert(room_id, handle.clone());
        handle
    }

    /// Drops the room's in-memory state (after the admin API purged it from
    /// storage), so the next use reloads it, or finds it gone.
    pub fn evict(&self, room_id: &RoomId) {
        self.cache.lock().remove(room_id);
    }

    /// The user's current membership in the room, if the room is known.
    pub async fn membership(&self, room_id: &RoomId, user_id: &str) -> Result<Option<String>> {
        match self.get(room_id).await? {
            Some(room) => Ok(room.read().await.membership_of(user_id)),
            None => Ok(None),
        }
    }

    /// Errors with `M_FORBIDDEN` unless the user is joined to the room.
    pub async fn require_joined(&self, room_id: &RoomId, user_id: &str) -> Result<RoomHandle> {
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::forbidden("You are not in this room."))?;
        if room.read().await.membership_of(user_id).as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room."));
        }
        Ok(room)
    }

    /// Whom a change in the room wakes: its joined members, or the room
    /// itself when it is large. Empty for a room unknown here.
    pub async fn wake_targets(&self, room_id: &RoomId) -> Vec<crate::sync::notifier::WakeTarget> {
        use crate::sync::notifier::WakeTarget;
        match self.get(room_id).await {
            Ok(Some(room)) => {
                let st = room.read().await;
                if st.is_large() {
                    vec![WakeTarget::Room(room_id.to_string())]
                } else {
                    st.joined.iter().map(|u| WakeTarget::member(u)).collect()
                }
            }
            _ => Vec::new(),
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

#[cfg(test)]
mod tests {
    use super::RecentEvents;
    use crate::storage::StoredEvent;

    fn ev(pos: i64) -> StoredEvent {
        StoredEvent {
            stream_pos: pos,
            event_id: format!("$e{pos}"),
            room_id: "!r:x".into(),
            pdu_json: "{}".into(),
            state_before: 0,
            rejected: false,
            txn: None,
        }
    }

    fn positions(events: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.stream_pos).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut r = RecentEvents::after(10);
        assert_eq!(positions(r.newest(9, 20, 5)), None);
        assert_eq!(positions(r.newest(10, 20, 5)), Some(vec![]));
        for p in [12, 15, 17] {
            r.push(ev(p));
        }
        assert_eq!(positions(r.newest(10, 20, 5)), Some(vec![17, 15, 12]));
        // Only visible positions, newest first, at most `limit`.
        assert_eq!(positions(r.newest(10, 16, 1)), Some(vec![15]));
        assert_eq!(positions(r.newest(15, 20, 5)), Some(vec![17]));
        for p in 18..40 {
            r.push(ev(p));
        }
        // The oldest fell out: ranges reaching below them go to the store.
        // 25 pushed, 16 kept (24..=39): the last one dropped was 23.
        assert_eq!(positions(r.newest(23, 40, 50)).map(|p| p.len()), Some(16));
        assert_eq!(positions(r.newest(30, 40, 50)).map(|p| p.len()), Some(9));
        assert_eq!(positions(r.newest(22, 40, 50)), None);
        r.redact("$e39", "{\"redacted\":true}");
        assert_eq!(
            r.newest(38, 40, 1).unwrap()[0].pdu_json,
            "{\"redacted\":true}"
        );
        r.clear();
        assert_eq!(positions(r.newest(38, 40, 5)), None);
        assert_eq!(positions(r.newest(39, 40, 5)), Some(vec![]));
        // An out-of-order push empties it rather than leave a hole.
        r.push(ev(45));
        r.push(ev(44));
        assert_eq!(positions(r.newest(39, 50, 5)), None);
        assert_eq!(positions(r.newest(45, 50, 5)), Some(vec![]));
    }
}
