//! State of the room at an event, and state resolution when the event graph forks.
//!
//! A room's graph forks whenever two servers send at once. The state before an
//! event is then the resolution (v2, or v2.1 for room version 12) of the states
//! after each of its `prev_events`; the room's current state is the resolution
//! of the states after each forward extremity. ruma's `state-res` runs the
//! algorithm; this module feeds it the state maps, auth chains and, for v2.1,
//! the conflicted state subgraph.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    events::StateEventType, room_version_rules::StateResolutionVersion, EventId, OwnedEventId,
};

use super::{RoomService, RoomState};
use crate::{
    error::{Error, Result},
    events::Pdu,
    storage::federation::{SnapshotWrite, StateEntry},
};

/// State by `(type, state_key)`, as event ids.
pub type IdState = HashMap<(String, String), OwnedEventId>;

/// Events loaded while working on one room, by id.
#[derive(Default)]
pub struct EventCache {
    pub events: HashMap<OwnedEventId, Arc<Pdu>>,
}

impl RoomService {
    /// Loads an event of the room (timeline or outlier), caching it.
    pub async fn load_pdu(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        id: &EventId,
    ) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = cache.events.get(id) {
            return Ok(Some(p.clone()));
        }
        let Some(ev) = self.core.storage.timeline.get_event(id.as_str()).await? else {
            return Ok(None);
        };
        if ev.room_id != st.room_id.as_str() {
            return Ok(None);
        }
        let mut pdu = Pdu::parse(id.to_owned(), &st.room_id, &ev.pdu_json)?;
        pdu.rejected = ev.rejected;
        let pdu = Arc::new(pdu);
        cache.events.insert(id.to_owned(), pdu.clone());
        Ok(Some(pdu))
    }

    /// The state of a snapshot as event ids.
    pub async fn snapshot_ids(&self, snapshot: i64) -> Result<IdState> {
        let mut out = IdState::new();
        for (t, k, e) in self.core.storage.rooms.snapshot_state(snapshot).await? {
            let id = OwnedEventId::try_from(e).map_err(|e| Error::unknown(e.to_string()))?;
            out.insert((t, k), id);
        }
        Ok(out)
    }

    /// The snapshot id and state after `event_id`, if the event is in the
    /// room's timeline here.
    pub async fn state_after(&self, event_id: &EventId) -> Result<Option<(i64, IdState)>> {
        let Some(snapshot) = self
            .core
            .storage
            .federation
            .state_after_snapshot(event_id.as_str())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((snapshot, self.snapshot_ids(snapshot).await?)))
    }

    /// Loads the events among `ids` not cached yet with one batched read
    /// (timeline or outlier, of this room only), caching them.
    pub async fn load_pdus(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        ids: &[OwnedEventId],
    ) -> Result<()> {
        let mut missing: Vec<String> = ids
            .iter()
            .filter(|id| !cache.events.contains_key(*id))
            .map(|id| id.to_string())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        for ev in self.core.storage.federation.get_events(&missing).await? {
            if ev.room_id != st.room_id.as_str() {
                continue;
            }
            let id = OwnedEventId::try_from(ev.event_id.as_str())
                .map_err(|e| Error::unknown(e.to_string()))?;
            let mut pdu = Pdu::parse(id.clone(), &st.room_id, &ev.pdu_json)?;
            pdu.rejected = ev.rejected;
            cache.events.insert(id, Arc::new(pdu));
        }
        Ok(())
    }

    /// The full auth chain of `ids` (not including `ids` themselves unless they
    /// are reachable from another). Walked a generation at a time, each
    /// generation's events read in one batch.
    pub async fn auth_chain(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        ids: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let start: Vec<OwnedEventId> = ids.into_iter().collect();
        self.load_pdus(cache, st, &start).await?;
        let mut next: Vec<OwnedEventId> = Vec::new();
        for id in &start {
            if let Some(p) = cache.events.get(id) {
                next.extend(p.auth_events.iter().cloned());
            }
        }
        while !next.is_empty() {
            let generation: Vec<OwnedEventId> = std::mem::take(&mut next)
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            self.load_pdus(cache, st, &generation).await?;
            for id in &generation {
                if let Some(p) = cache.events.get(id) {
                    next.extend(p.auth_events.iter().cloned());
                }
            }
        }
        Ok(seen)
    }

    /// Resolves several candidate states into one, by the room version's algorithm.
    pub async fn resolve_states(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        states: &[IdState],
    ) -> Result<IdState> {
        if states.is_empty() {
            return Ok(IdState::new());
        }
        if states.iter().all(|s| s == &states[0]) {
            return Ok(states[0].clone());
        }
        let StateResolutionVersion::V2(res_rules) = &st.rules.state_res else {
            return Err(Error::unsupported_room_version(st.version.as_str()));
        };
        let mut chains = Vec::with_capacity(states.len());
        for s in states {
            let chain = self.auth_chain(cache, st, s.values().cloned()).await?;
            // Make sure every state event itself is loaded for the callbacks.
            for id in s.values() {
                self.load_pdu(cache, st, id).await?;
            }
            chains.push(chain);
        }
        let maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
            .iter()
            .map(|s| {
                s.iter()
                    .map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone()))
                    .collect()
            })
            .collect();
        let auth_chains = chains
            .iter()
            .map(|c| c.iter().cloned().collect())
            .collect::<Vec<ruma::state_res::utils::event_id_set::EventIdSet<OwnedEventId>>>();
        let events = &cache.events;
        let fetch = |id: &EventId| events.get(id).map(|p| (**p).clone());
        let subgraph = |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(events, conflicted))
        };
        let resolved = ruma::state_res::resolve(
            &st.rules.authorization,
            res_rules,
            maps.iter(),
            auth_chains,
            fetch,
            subgraph,
        )
        .map_err(|e| Error::unknown(format!("state resolution failed: {e}")))?;
        Ok(resolved
            .into_iter()
            .map(|((t, k), id)| ((t.to_string(), k), id))
            .collect())
    }
}

/// The conflicted state subgraph of state resolution v2.1: every event on an
/// auth path from one conflicted event to another.
fn conflicted_subgraph(
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
    conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>,
) -> ruma::state_res::utils::event_id_set::EventIdSet<OwnedEventId> {
    let targets: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    // Memoised: does `id` reach a conflicted event through its auth events?
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    fn walk(
        id: &OwnedEventId,
        events: &HashMap<OwnedEventId, Arc<Pdu>>,
        targets: &HashSet<&OwnedEventId>,
        reaches: &mut HashMap<OwnedEventId, bool>,
        depth: usize,
    ) -> bool {
        if let Some(r) = reaches.get(id) {
            return *r;
        }
        // Guard against pathological chains: treat very deep walks as not reaching.
        if depth > 10_000 {
            return false;
        }
        reaches.insert(id.clone(), false);
        let mut found = false;
        if let Some(p) = events.get(id) {
            for a in &p.auth_events {
                let hit = targets.contains(a) || walk(a, events, targets, reaches, depth + 1);
                found |= hit;
            }
        }
        reaches.insert(id.clone(), found);
        found
    }
    let mut out = ruma::state_res::utils::event_id_set::EventIdSet::new();
    for start in &targets {
        // Events between `start` and another conflicted event: ancestors of
        // `start` that themselves reach a conflicted event, plus `start`.
        let mut stack = vec![(*start).clone()];
        let mut visited = HashSet::new();
        while let Some(id) = stack.pop() {
            if !visited.insert(id.clone()) {
                continue;
            }
            let on_path = targets.contains(&id) || walk(&id, events, &targets, &mut reaches, 0);
            if !on_path {
                continue;
            }
            out.insert(id.clone());
            if let Some(p) = events.get(&id) {
                stack.extend(p.auth_events.iter().cloned());
            }
        }
    }
    out
}

/// A snapshot holding `new` expressed against `parent` (whose state is
/// `parent_state`): only the changed entries, or the full state when `new`
/// drops a key the parent has.
pub fn snapshot_against(
    snapshot_id: i64,
    room_id: &str,
    parent: Option<(i64, &IdState)>,
    new: &IdState,
) -> SnapshotWrite {
    let full = |new: &IdState| -> Vec<StateEntry> {
        new.iter()
            .map(|((t, k), e)| (t.clone(), k.clone(), e.to_string()))
            .collect()
    };
    match parent {
        Some((pid, pstate)) if pstate.keys().all(|k| new.contains_key(k)) => SnapshotWrite {
            snapshot_id,
            room_id: room_id.to_owned(),
            parent: Some(pid),
            entries: new
                .iter()
                .filter(|(k, e)| pstate.get(*k) != Some(*e))
                .map(|((t, k), e)| (t.clone(), k.clone(), e.to_string()))
                .collect(),
        },
        _ => SnapshotWrite {
            snapshot_id,
            room_id: room_id.to_owned(),
            parent: None,
            entries: full(new),
        },
    }
}

/// The current in-memory state of a room as event ids.
pub fn ids_of(st: &RoomState) -> IdState {
    st.state
        .iter()
        .map(|(k, p)| (k.clone(), p.event_id.clone()))
        .collect()
}
