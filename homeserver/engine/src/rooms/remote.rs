//! Accepting an event from another server into a room we take part in.
//!
//! The spec's checks on receipt of a PDU, after its signatures and content hash
//! have been verified by the caller:
//! 1. it passes the auth rules against its own `auth_events`, else it is rejected;
//! 2. it passes them against the state before it (resolved from its
//!    `prev_events`), else it is rejected;
//! 3. it passes them against the room's current state, else it is soft-failed:
//!    kept, but not shown to clients and not built upon.
//!
//! Rejected and soft-failed events are stored as outliers, so they are never
//! served as part of the timeline.

use std::{collections::HashMap, sync::Arc};

use ruma::{EventId, OwnedEventId};

use super::{
    state_res::{ids_of, snapshot_against, EventCache, IdState},
    RoomService, RoomState,
};
use crate::{
    error::{Error, Result},
    events::{auth, builder, Pdu},
    storage::federation::{CurrentStateWrite, OutlierWrite, RemoteEventWrite, SnapshotWrite},
    sync::notifier::WakeTarget,
};

/// What became of a received event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Added to the timeline at this stream position.
    Timeline,
    /// Already held.
    Duplicate,
    /// Kept, but it does not pass against current state.
    SoftFailed(String),
    /// It breaks the auth rules.
    Rejected(String),
}

impl RoomService {
    /// The `prev_events` of `pdu` that are not in this room's timeline here.
    pub async fn missing_prev_events(&self, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
        let mut missing = Vec::new();
        for id in &pdu.prev_events {
            let held = self
                .core
                .storage
                .federation
                .event_is_outlier(id.as_str())
                .await?;
            if held != Some(false) {
                missing.push(id.clone());
            }
        }
        Ok(missing)
    }

    /// Runs the receipt checks and stores the event. The caller holds the room's
    /// write lock, has verified signatures and hashes, and has made sure every
    /// `prev_event` is in the timeline and every `auth_event` is held.
    pub async fn accept_remote_locked(
        &self,
        st: &mut RoomState,
        pdu: Pdu,
        json: String,
    ) -> Result<Accepted> {
        let storage = &self.core.storage;
        if storage
            .federation
            .event_is_outlier(pdu.event_id.as_str())
            .await?
            == Some(false)
        {
            return Ok(Accepted::Duplicate);
        }
        let mut cache = EventCache::default();

        // 1. Against its own auth events.
        let auth_state = match self.auth_state(&mut cache, st, &pdu).await? {
            Ok(a) => a,
            Err(e) => return self.store_excluded(st, &pdu, json, true, &e).await,
        };
        if let Err(e) = check(st, &pdu, &auth_state, &auth_state) {
            return self.store_excluded(st, &pdu, json, true, &e).await;
        }

        // 2. Against the state before it.
        let (before_id, before, new_snapshots) = self.state_before(&mut cache, st, &pdu).await?;
        let before_pdus = self.pdus_of(&mut cache, st, &before).await?;
        if let Err(e) = check(st, &pdu, &before_pdus, &auth_state) {
            return self.store_excluded(st, &pdu, json, true, &e).await;
        }

        // 3. Against the current state (skipped when they are the same).
        if before_id != st.snapshot {
            if let Err(e) = check(st, &pdu, &st.state, &auth_state) {
                return self.store_excluded(st, &pdu, json, false, &e).await;
            }
        }

        self.append_remote(st, &mut cache, pdu, json, before_id, before, new_snapshots)
            .await?;
        Ok(Accepted::Timeline)
    }

    /// Whether `pdu` passes the auth rules against its own auth events (the
    /// one check possible for history from before we joined). `Ok(Err(_))`
    /// names the failure; an auth event not held is an error.
    pub async fn check_against_auth_events(
        &self,
        st: &RoomState,
        pdu: &Pdu,
    ) -> Result<std::result::Result<(), String>> {
        let mut cache = EventCache::default();
        Ok(match self.auth_state(&mut cache, st, pdu).await? {
            Ok(auth_state) => check(st, pdu, &auth_state, &auth_state),
            Err(e) => Err(e),
        })
    }

    /// The state `pdu`'s own auth events make up (with the room's create
    /// event, which room version 12 leaves out of `auth_events`).
    /// `Ok(Err(_))` when one of them was rejected; an auth event not held is
    /// an error.
    async fn auth_state(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        pdu: &Pdu,
    ) -> Result<std::result::Result<auth::StateMap, String>> {
        let mut auth_state: auth::StateMap = HashMap::new();
        for id in &pdu.auth_events {
            let Some(a) = self.load_pdu(cache, st, id).await? else {
                return Err(Error::unknown(format!("auth event {id} is not held")));
            };
            if a.rejected {
                return Ok(Err("an auth event was rejected".into()));
            }
            if let Some(k) = &a.state_key {
                auth_state.insert((a.kind.to_string(), k.clone()), a.clone());
            }
        }
        if let Some(create) = st.state_event("m.room.create", "") {
            auth_state
                .entry(("m.room.create".into(), String::new()))
                .or_insert_with(|| create.clone());
        }
        Ok(Ok(auth_state))
    }

    /// The state before `pdu`: the state after its single prev event, or the
    /// resolution of the states after each of them (then a new snapshot).
    async fn state_before(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        pdu: &Pdu,
    ) -> Result<(i64, IdState, Vec<SnapshotWrite>)> {
        // The common case: the event extends our only forward extremity, so
        // the state before it is the room's current state, already in memory.
        if pdu.prev_events.len() == 1 && st.extremities == pdu.prev_events {
            let snapshot = self
                .core
                .storage
                .federation
                .state_after_snapshot(pdu.prev_events[0].as_str())
                .await?;
            if snapshot == Some(st.snapshot) {
                return Ok((st.snapshot, ids_of(st), Vec::new()));
            }
        }
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            let Some(s) = self.state_after(prev).await? else {
                return Err(Error::unknown(format!("prev event {prev} is not held")));
            };
            states.push(s);
        }
        if states.is_empty() {
            return Err(Error::bad_json("event without prev_events"));
        }
        if states.iter().all(|(id, _)| *id == states[0].0) {
            let (id, s) = states.swap_remove(0);
            return Ok((id, s, Vec::new()));
        }
        let maps: Vec<IdState> = states.iter().map(|(_, s)| s.clone()).collect();
        let resolved = self.resolve_states(cache, st, &maps).await?;
        if let Some((id, _)) = states.iter().find(|(_, s)| *s == resolved) {
            return Ok((*id, resolved, Vec::new()));
        }
        let snapshot = snapshot_against(
            self.core.alloc_snapshot(),
            st.room_id.as_str(),
            Some((states[0].0, &states[0].1)),
            &resolved,
        );
        Ok((snapshot.snapshot_id, resolved, vec![snapshot]))
    }

    /// The events of a state given by ids. Those also in the room's current
    /// state are taken from memory, the rest read in one batch: the state
    /// before an event is usually the current state, and reading a large
    /// room's 10,000 events one query at a time made each check take seconds.
    pub async fn pdus_of(
        &self,
        cache: &mut EventCache,
        st: &RoomState,
        state: &IdState,
    ) -> Result<auth::StateMap> {
        let mut out = auth::StateMap::with_capacity(state.len());
        let mut missing = Vec::new();
        for (key, id) in state {
            match st.state.get(key) {
                Some(p) if p.event_id == *id => {
                    out.insert(key.clone(), p.clone());
                }
                _ => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        self.load_pdus(cache, st, &missing).await?;
        for (key, id) in state {
            if out.contains_key(key) {
                continue;
            }
            match cache.events.get(id) {
                Some(p) => {
                    out.insert(key.clone(), p.clone());
                }
                None => return Err(Error::unknown(format!("state event {id} is not held"))),
            }
        }
        Ok(out)
    }

    /// Stores an event that failed a check as an outlier.
    async fn store_excluded(
        &self,
        st: &RoomState,
        pdu: &Pdu,
        json: String,
        rejected: bool,
        reason: &str,
    ) -> Result<Accepted> {
        tracing::info!(event_id = %pdu.event_id, room_id = %st.room_id, rejected, reason, "event not accepted into the timeline");
        let pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .federation
            .store_outliers(&[outlier_write(pos, pdu, json, rejected)])
            .await;
        self.core.complete(pos, Vec::new());
        result?;
        Ok(if rejected {
            Accepted::Rejected(reason.to_owned())
        } else {
            Accepted::SoftFailed(reason.to_owned())
        })
    }

    /// Appends an accepted event: records the state after it, moves the forward
    /// extremities, resolves the room's new current state, and wakes readers.
    #[allow(clippy::too_many_arguments)]
    async fn append_remote(
        &self,
        st: &mut RoomState,
        cache: &mut EventCache,
        pdu: Pdu,
        json: String,
        before_id: i64,
        before: IdState,
        mut snapshots: Vec<SnapshotWrite>,
    ) -> Result<()> {
        let room_id = st.room_id.to_string();
        let (after_id, after) = match &pdu.state_key {
            Some(k) => {
                let id = self.core.alloc_snapshot();
                snapshots.push(SnapshotWrite {
                    snapshot_id: id,
                    room_id: room_id.clone(),
                    parent: (before_id != 0).then_some(before_id),
                    entries: vec![(pdu.kind.to_string(), k.clone(), pdu.event_id.to_string())],
                });
                let mut a = before;
                a.insert((pdu.kind.to_string(), k.clone()), pdu.event_id.clone());
                (id, a)
            }
            None => (before_id, before),
        };
        let mut extremities: Vec<OwnedEventId> = st
            .extremities
            .iter()
            .filter(|e| !pdu.prev_events.contains(e))
            .cloned()
            .collect();
        extremities.push(pdu.event_id.clone());

        let current = ids_of(st);
        let (current_id, new_current) = if extremities.len() == 1 || after == current {
            (after_id, after)
        } else {
            let resolved = self
                .resolve_states(cache, st, &[current.clone(), after.clone()])
                .await?;
            if resolved == current {
                (st.snapshot, resolved)
            } else if resolved == after {
                (after_id, resolved)
            } else {
                let s = snapshot_against(
                    self.core.alloc_snapshot(),
                    &room_id,
                    Some((st.snapshot, &current)),
                    &resolved,
                );
                let id = s.snapshot_id;
                snapshots.push(s);
                (id, resolved)
            }
        };
        let pdu = Arc::new(pdu);
        cache.events.insert(pdu.event_id.clone(), pdu.clone());
        let mut changed = Vec::new();
        let mut memberships = Vec::new();
        let mut changed_pdus = Vec::new();
        for (key, id) in &new_current {
            if current.get(key) == Some(id) {
                continue;
            }
            let Some(p) = self.load_pdu(cache, st, id).await? else {
                return Err(Error::unknown(format!("state event {id} is not held")));
            };
            changed.push((key.0.clone(), key.1.clone(), id.to_string()));
            if key.0 == "m.room.member" {
                let m = p
                    .content_str("membership")
                    .unwrap_or_else(|| "leave".into());
                memberships.push((key.1.clone(), m, id.to_string()));
            }
            changed_pdus.push((key.clone(), p));
        }
        let redaction = self.remote_redaction(st, &pdu, &json).await?;

        let pos = self.core.stream.allocate();
        let write = RemoteEventWrite {
            stream_pos: pos,
            event_id: pdu.event_id.to_string(),
            room_id: room_id.clone(),
            event_type: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            sender: pdu.sender.to_string(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            depth: pdu.depth as i64,
            pdu_json: json,
            rejected: false,
            outlier: false,
            state_before: before_id,
            snapshots,
            state_after: Some(after_id),
            current: Some(CurrentStateWrite {
                snapshot_id: current_id,
                changed,
                memberships: memberships.clone(),
                forward_extremities: extremities.iter().map(|e| e.to_string()).collect(),
            }),
            redaction,
        };
        if let Err(e) = self
            .core
            .storage
            .federation
            .persist_remote_event(&write)
            .await
        {
            self.core.complete(pos, Vec::new());
            return Err(e);
        }

        st.extremities = extremities;
        st.max_depth = st.max_depth.max(pdu.depth);
        st.latest_pos = pos;
        st.snapshot = current_id;
        st.recent.persisted(
            &write.room_id,
            &write.event_id,
            pos,
            &write.pdu_json,
            write.state_before,
            None,
            write.redaction.as_ref(),
        );
        let mut wake = Vec::new();
        for (key, p) in changed_pdus {
            st.state.insert(key, p);
        }
        for (user, m, _) in &memberships {
            st.track_membership(user, m);
            wake.push(WakeTarget::User(user.clone()));
        }
        wake.extend(super::member_wakes(
            &self.core,
            st,
            pos,
            !memberships.is_empty(),
        ));
        self.core.complete_in(pos, wake, Some(st.room_id.as_str()));
        // Our users are notified of events from other servers like any other.
        self.core
            .push_jobs
            .event_persisted(crate::storage::PersistEvent {
                stream_pos: pos,
                event_id: write.event_id,
                room_id: write.room_id,
                event_type: write.event_type,
                state_key: write.state_key,
                sender: write.sender,
                origin_server_ts: write.origin_server_ts,
                depth: write.depth,
                pdu_json: write.pdu_json,
                state_before: write.state_before,
                state_after: None,
                forward_extremities: Vec::new(),
                txn: None,
                membership: memberships.first().map(|(_, m, _)| m.clone()),
                redaction: None,
            });
        Ok(())
    }

    /// For a received redaction the server may apply: the target and its
    /// redacted JSON. Another user's event needs the sender to hold the
    /// `redact` power level.
    async fn remote_redaction(
        &self,
        st: &RoomState,
        pdu: &Pdu,
        json: &str,
    ) -> Result<Option<(String, String)>> {
        let (Some(target), true) = (&pdu.redacts, pdu.kind.to_string() == "m.room.redaction")
        else {
            return Ok(None);
        };
        let Some(ev) = self
            .core
            .storage
            .timeline
            .get_event(target.as_str())
            .await?
        else {
            return Ok(None);
        };
        if ev.room_id != st.room_id.as_str() {
            return Ok(None);
        }
        let original: serde_json::Value = serde_json::from_str(&ev.pdu_json)?;
        if original["sender"].as_str() != Some(pdu.sender.as_str()) {
            let levels = st
                .state_event("m.room.power_levels", "")
                .map(|p| p.content_value())
                .unwrap_or_default();
            let redact_level = levels["redact"].as_i64().unwrap_or(50);
            if super::send::user_power(st, &levels, pdu.sender.as_str()) < redact_level {
                return Ok(None);
            }
        }
        let redacted = builder::redact_json(&ev.pdu_json, &st.rules)?;
        // As for local redactions: clients read `unsigned.redacted_because`.
        let redacted =
            super::send::with_redacted_because(&redacted, &pdu.event_id, json, &st.room_id);
        Ok(Some((ev.event_id, redacted)))
    }
}

/// Runs the auth rules for `pdu` against `state`, resolving its `auth_events`
/// from `auth`.
fn check(
    st: &RoomState,
    pdu: &Pdu,
    state: &auth::StateMap,
    auth_events: &auth::StateMap,
) -> std::result::Result<(), String> {
    let mut by_id: HashMap<&EventId, &Pdu> =
        auth_events.values().map(|p| (&*p.event_id, &**p)).collect();
    // From room version 12 the create event is not listed in `auth_events`:
    // the rules find it through the room id.
    if let Some(create) = st.state_event("m.room.create", "") {
        by_id.insert(&*create.event_id, &**create);
    }
    auth::check(&st.rules.authorization, pdu, state, &by_id).map_err(|e| e.to_string())
}

/// An event to hold outside the timeline.
pub fn outlier_write(pos: i64, pdu: &Pdu, json: String, rejected: bool) -> OutlierWrite {
    OutlierWrite {
        stream_pos: pos,
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        sender: pdu.sender.to_string(),
        origin_server_ts: i64::from(pdu.origin_server_ts.0),
        depth: pdu.depth as i64,
        pdu_json: json,
        rejected,
    }
}
