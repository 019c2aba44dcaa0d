//! Inbound transactions (`PUT /_matrix/federation/v1/send/{txnId}`): the PDUs
//! and EDUs another server pushes to us.
//!
//! A transaction is idempotent per `(origin, txnId)`: its response is stored
//! and replayed on a retry. Each PDU is checked (signatures, content hash,
//! the three auth checks in `rooms::remote`) and its gaps are filled first:
//! missing auth events come from `/event_auth`, missing `prev_events` from
//! `/get_missing_events`, and when those cannot close the gap, the state at
//! the missing event comes from `/state_ids`.

use std::collections::HashSet;

use http::Method;
use ruma::{OwnedEventId, OwnedRoomId, ServerName};
use serde_json::{json, Map, Value};

use super::rooms::{enc, remote_error, CheckedPdu, RoomFederation};
use crate::{
    error::{Error, Result},
    rooms::{
        remote::{outlier_write, Accepted},
        state_res::{snapshot_against, IdState},
        RoomState,
    },
};

/// The spec's limits per transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// How many missing events one `/get_missing_events` asks for.
const MISSING_EVENTS_LIMIT: usize = 20;

impl RoomFederation {
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        body: &Value,
    ) -> Result<Value> {
        let storage = &self.core.storage.federation;
        if let Some(previous) = storage.inbound_txn(origin.as_str(), txn_id).await? {
            return Ok(serde_json::from_str(&previous)?);
        }
        let pdus = body["pdus"].as_array().cloned().unwrap_or_default();
        let edus = body["edus"].as_array().cloned().unwrap_or_default();
        if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
            return Err(Error::bad_json(format!(
                "A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs."
            )));
        }
        if let Some(claimed) = body["origin"].as_str() {
            if claimed != origin.as_str() {
                return Err(Error::forbidden(
                    "The transaction's origin is not the sender.",
                ));
            }
        }
        // The sender is evidently up: anything we queued for it can go now.
        self.core.outbound.destination_is_up(origin.as_str()).await;

        let mut results = Map::new();
        for pdu in &pdus {
            let (id, outcome) = self.receive_pdu(origin, pdu).await;
            let Some(id) = id else { continue };
            let entry = match outcome {
                Ok(()) => json!({}),
                Err(e) => json!({"error": e.message}),
            };
            results.insert(id.to_string(), entry);
        }
        for edu in &edus {
            if let Err(e) = self.receive_edu(origin, edu).await {
                tracing::info!(%origin, error = %e, "dropping an EDU");
            }
        }
        let response = json!({"pdus": results});
        storage
            .put_inbound_txn(origin.as_str(), txn_id, &response.to_string())
            .await?;
        Ok(response)
    }

    /// One PDU of a transaction; its id (when it could be computed) and outcome.
    async fn receive_pdu(
        &self,
        origin: &ServerName,
        value: &Value,
    ) -> (Option<OwnedEventId>, Result<()>) {
        let Some(room_id) = value["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
        else {
            return (None, Err(Error::bad_json("PDU without a valid room_id")));
        };
        let room = match self.rooms.get(&room_id).await {
            Ok(Some(room)) => room,
            Ok(None) => {
                // Only the answer to one of our users' knocks or invites.
                return match self.membership_outside(&room_id, value).await {
                    Ok(id) => (Some(id), Ok(())),
                    Err(e) => (None, Err(e)),
                };
            }
            Err(e) => return (None, Err(e)),
        };
        let (version, denied) = {
            let st = room.read().await;
            (st.version.clone(), !server_acl_allows(&st, origin))
        };
        if denied {
            return (
                None,
                Err(Error::forbidden("Server is banned by the room's ACL.")),
            );
        }
        let checked = match self.check_pdu(&room_id, &version, value).await {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        };
        let id = checked.pdu.event_id.clone();
        let mut st = match self.rooms.write_lock(&room).await {
            Ok(st) => st,
            Err(e) => return (Some(id), Err(e)),
        };
        let outcome = self.process_pdu(origin, &mut st, checked, 0).await;
        (Some(id), outcome)
    }

    /// Fills the event's gaps, then runs the receipt checks on it.
    async fn process_pdu(
        &self,
        origin: &ServerName,
        st: &mut RoomState,
        checked: CheckedPdu,
        depth: usize,
    ) -> Result<()> {
        self.fetch_missing_auth(origin, st, &checked).await?;
        let mut missing = self.rooms.missing_prev_events(&checked.pdu).await?;
        if !missing.is_empty() && depth == 0 {
            self.fetch_missing_prev(origin, st, &checked).await?;
            missing = self.rooms.missing_prev_events(&checked.pdu).await?;
        }
        for prev in &missing {
            // No path back to what we hold: take the state at the gap from the sender.
            self.state_at_gap(origin, st, prev).await?;
        }
        match self
            .rooms
            .accept_remote_locked(st, checked.pdu, checked.json)
            .await?
        {
            Accepted::Timeline | Accepted::Duplicate => Ok(()),
            Accepted::SoftFailed(_) => Ok(()),
            Accepted::Rejected(reason) => Err(Error::forbidden(reason)),
        }
    }

    /// Fetches and stores (as outliers) the auth events of `checked` we lack.
    pub(super) async fn fetch_missing_auth(
        &self,
        origin: &ServerName,
        st: &RoomState,
        checked: &CheckedPdu,
    ) -> Result<()> {
        let mut lacking = false;
        for id in &checked.pdu.auth_events {
            if self
                .core
                .storage
                .federation
                .event_is_outlier(id.as_str())
                .await?
                .is_none()
            {
                lacking = true;
                break;
            }
        }
        if !lacking {
            return Ok(());
        }
        let path = format!(
            "/_matrix/federation/v1/event_auth/{}/{}",
            enc(st.room_id.as_str()),
            enc(checked.pdu.event_id.as_str())
        );
        let response = self
            .fed
            .client
            .request(origin, Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        self.store_as_outliers(st, response["auth_chain"].as_array().into_iter().flatten())
            .await
    }

    /// Checks and stores events outside the timeline, skipping those held.
    async fn store_as_outliers<'a>(
        &self,
        st: &RoomState,
        values: impl Iterator<Item = &'a Value>,
    ) -> Result<()> {
        let mut writes = Vec::new();
        let mut positions = Vec::new();
        for value in values {
            let checked = match self.check_pdu(&st.room_id, &st.version, value).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(error = %e, "dropping an invalid fetched event");
                    continue;
                }
            };
            if self
                .core
                .storage
                .federation
                .event_is_outlier(checked.pdu.event_id.as_str())
                .await?
                .is_some()
            {
                continue;
            }
            let pos = self.core.stream.allocate();
            positions.push(pos);
            writes.push(outlier_write(pos, &checked.pdu, checked.json, false));
        }
        let result = self.core.storage.federation.store_outliers(&writes).await;
        for pos in positions {
            self.core.complete(pos, Vec::new());
        }
        result
    }

    /// `/get_missing_events` between our forward extremities and the event;
    /// the events returned are processed oldest first.
    async fn fetch_missing_prev(
        &self,
        origin: &ServerName,
        st: &mut RoomState,
        checked: &CheckedPdu,
    ) -> Result<()> {
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            enc(st.room_id.as_str())
        );
        let body = json!({
            "earliest_events": st.extremities,
            "latest_events": [checked.pdu.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": 0,
        });
        let response = match self
            .fed
            .client
            .request(origin, Method::POST, &path, Some(body))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%origin, error = %e, "get_missing_events failed");
                return Ok(());
            }
        };
        let mut events = Vec::new();
        for value in response["events"].as_array().into_iter().flatten() {
            match self.check_pdu(&st.room_id, &st.version, value).await {
                Ok(c) => events.push(c),
                Err(e) => tracing::info!(error = %e, "dropping an invalid missing event"),
            }
        }
        events.sort_by_key(|c| c.pdu.depth);
        let mut seen = HashSet::new();
        for c in events {
            if c.pdu.event_id == checked.pdu.event_id || !seen.insert(c.pdu.event_id.clone()) {
                continue;
            }
            // Nested gaps are not chased further: depth 1.
            if let Err(e) = Box::pin(self.process_pdu(origin, st, c, 1)).await {
                tracing::info!(error = %e, "a missing event was not accepted");
            }
        }
        Ok(())
    }

    /// The state after an event we cannot reach: `/state_ids` at it (the state
    /// before it) from `origin`, plus the event itself. The event is held as an
    /// outlier with that state recorded, so later events can build on it.
    async fn state_at_gap(
        &self,
        origin: &ServerName,
        st: &RoomState,
        event_id: &OwnedEventId,
    ) -> Result<()> {
        let storage = &self.core.storage;
        if storage
            .federation
            .state_after_snapshot(event_id.as_str())
            .await?
            .is_some()
        {
            return Ok(());
        }
        let path = format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(st.room_id.as_str()),
            enc(event_id.as_str())
        );
        let response = self
            .fed
            .client
            .request(origin, Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        for key in ["pdu_ids", "auth_chain_ids"] {
            for id in response[key].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str().and_then(|s| OwnedEventId::try_from(s).ok()) {
                    wanted.push(id);
                }
            }
        }
        wanted.push(event_id.clone());
        let mut fetched = Vec::new();
        for id in &wanted {
            if storage
                .federation
                .event_is_outlier(id.as_str())
                .await?
                .is_some()
            {
                continue;
            }
            match self.fetch_event(origin, &st.room_id, &st.version, id).await {
                Ok(c) => fetched.push(c),
                Err(e) => {
                    tracing::info!(event_id = %id, error = %e, "cannot fetch an event at a gap")
                }
            }
        }
        let mut writes = Vec::new();
        let mut positions = Vec::new();
        for c in &fetched {
            let pos = self.core.stream.allocate();
            positions.push(pos);
            writes.push(outlier_write(pos, &c.pdu, c.json.clone(), false));
        }
        let stored = storage.federation.store_outliers(&writes).await;
        for pos in positions {
            self.core.complete(pos, Vec::new());
        }
        stored?;

        let mut state = IdState::new();
        for id in response["pdu_ids"].as_array().into_iter().flatten() {
            let Some(id) = id.as_str().and_then(|s| OwnedEventId::try_from(s).ok()) else {
                continue;
            };
            let Some(ev) = storage.timeline.get_event(id.as_str()).await? else {
                continue;
            };
            let v: Value = serde_json::from_str(&ev.pdu_json)?;
            if let (Some(t), Some(k)) = (v["type"].as_str(), v["state_key"].as_str()) {
                state.insert((t.to_owned(), k.to_owned()), id);
            }
        }
        // The gap event itself, when it is a state event, is part of the state after it.
        if let Some(ev) = storage.timeline.get_event(event_id.as_str()).await? {
            let v: Value = serde_json::from_str(&ev.pdu_json)?;
            if let (Some(t), Some(k)) = (v["type"].as_str(), v["state_key"].as_str()) {
                state.insert((t.to_owned(), k.to_owned()), event_id.clone());
            }
        } else {
            return Err(Error::unknown(format!("cannot fetch {event_id}")));
        }
        let snapshot = snapshot_against(
            self.core.alloc_snapshot(),
            st.room_id.as_str(),
            None,
            &state,
        );
        let id = snapshot.snapshot_id;
        storage.federation.create_snapshot(&snapshot).await?;
        storage
            .federation
            .record_state_after(event_id.as_str(), id)
            .await
    }
}

/// `M_FORBIDDEN` unless the room's `m.room.server_acl` lets `server` take
/// part: every request about a room from a server passes through this (the
/// spec's list: transactions' PDUs and room EDUs, joins, knocks, leaves and
/// every room read).
pub fn require_acl(st: &RoomState, server: &ServerName) -> Result<()> {
    if server_acl_allows(st, server) {
        Ok(())
    } else {
        Err(Error::forbidden("Server is banned by the room's ACL."))
    }
}

/// Whether the room's `m.room.server_acl` lets `server` take part.
pub fn server_acl_allows(st: &RoomState, server: &ServerName) -> bool {
    let Some(acl) = st.state_event("m.room.server_acl", "") else {
        return true;
    };
    let content = acl.content_value();
    let host = server.host();
    if !content["allow_ip_literals"].as_bool().unwrap_or(true)
        && (host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('['))
    {
        return false;
    }
    let matches = |key: &str| {
        content[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|pattern| crate::federation::access::glob_match(pattern, host))
    };
    !matches("deny") && matches("allow")
}
