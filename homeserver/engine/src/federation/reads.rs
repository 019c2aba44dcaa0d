//! What other servers may read from our copy of a room: single events, the
//! state at an event, auth chains, and history (`/backfill`,
//! `/get_missing_events`). A server may read a room only while one of its
//! users is joined to it.

use std::collections::{HashSet, VecDeque};

use ruma::{EventId, OwnedEventId, RoomId, ServerName};
use serde_json::{json, Value};

use super::rooms::RoomFederation;
use crate::{
    error::{Error, Result},
    rooms::{state_res::EventCache, RoomHandle},
    util::now_ms,
};

/// The most events one history request returns.
const MAX_HISTORY: usize = 100;

impl RoomFederation {
    /// The room, if `origin` may read it.
    async fn readable_room(&self, origin: &ServerName, room_id: &RoomId) -> Result<RoomHandle> {
        let room = self
            .rooms
            .get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        {
            let st = room.read().await;
            if !st.servers.contains_key(origin.as_str()) {
                return Err(Error::forbidden("Your server is not in this room."));
            }
            super::transactions::require_acl(&st, origin)?;
        }
        Ok(room)
    }

    fn transaction(&self, pdus: Vec<Value>) -> Value {
        json!({
            "origin": self.core.server_name.as_str(),
            "origin_server_ts": now_ms(),
            "pdus": pdus,
        })
    }

    /// A stored event as a PDU, unless it was rejected.
    async fn pdu_value(&self, event_id: &str) -> Result<Option<(String, Value)>> {
        match self.core.storage.timeline.get_event(event_id).await? {
            Some(ev) if !ev.rejected => Ok(Some((
                ev.room_id.clone(),
                serde_json::from_str(&ev.pdu_json)?,
            ))),
            _ => Ok(None),
        }
    }

    /// `GET /event/{eventId}`
    pub async fn get_event(&self, origin: &ServerName, event_id: &EventId) -> Result<Value> {
        let (room_id, pdu) = self
            .pdu_value(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown event."))?;
        let room_id =
            ruma::OwnedRoomId::try_from(room_id).map_err(|e| Error::unknown(e.to_string()))?;
        self.readable_room(origin, &room_id).await?;
        Ok(self.transaction(vec![pdu]))
    }

    /// The state before `event_id` (its ids), and the auth chain of that state.
    async fn state_at(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let room = self.readable_room(origin, room_id).await?;
        let ev = self
            .core
            .storage
            .timeline
            .get_event(event_id.as_str())
            .await?
            .filter(|e| e.room_id == room_id.as_str() && !e.rejected)
            .ok_or_else(|| Error::not_found("Unknown event."))?;
        let state = self.rooms.snapshot_ids(ev.state_before).await?;
        let ids: Vec<OwnedEventId> = state.into_values().collect();
        let st = room.read().await;
        let mut cache = EventCache::default();
        let chain = self
            .rooms
            .auth_chain(&mut cache, &st, ids.iter().cloned())
            .await?;
        Ok((ids, chain.into_iter().collect()))
    }

    /// `GET /state_ids/{roomId}?event_id=`
    pub async fn state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Value> {
        let (state, chain) = self.state_at(origin, room_id, event_id).await?;
        Ok(json!({"pdu_ids": state, "auth_chain_ids": chain}))
    }

    /// `GET /state/{roomId}?event_id=`
    pub async fn state(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Value> {
        let (state, chain) = self.state_at(origin, room_id, event_id).await?;
        Ok(json!({
            "pdus": self.pdus(&state).await?,
            "auth_chain": self.pdus(&chain).await?,
        }))
    }

    /// `GET /event_auth/{roomId}/{eventId}`
    pub async fn event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Value> {
        let room = self.readable_room(origin, room_id).await?;
        let st = room.read().await;
        let mut cache = EventCache::default();
        if self
            .rooms
            .load_pdu(&mut cache, &st, event_id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("Unknown event."));
        }
        let chain: Vec<OwnedEventId> = self
            .rooms
            .auth_chain(&mut cache, &st, [event_id.to_owned()])
            .await?
            .into_iter()
            .collect();
        Ok(json!({"auth_chain": self.pdus(&chain).await?}))
    }

    async fn pdus(&self, ids: &[OwnedEventId]) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((_, v)) = self.pdu_value(id.as_str()).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// `GET /backfill/{roomId}?v=...&limit=`: the given events and those before
    /// them, walking `prev_events` breadth first.
    pub async fn backfill(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Value> {
        self.readable_room(origin, room_id).await?;
        let events = self
            .walk_back(room_id, from, &HashSet::new(), limit.min(MAX_HISTORY), true)
            .await?;
        Ok(self.transaction(events.into_iter().map(|(_, v)| v).collect()))
    }

    /// `POST /get_missing_events/{roomId}`: events before `latest` and after
    /// `earliest`, oldest first.
    pub async fn get_missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        body: &Value,
    ) -> Result<Value> {
        self.readable_room(origin, room_id).await?;
        let ids = |key: &str| -> Vec<OwnedEventId> {
            body[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().and_then(|s| OwnedEventId::try_from(s).ok()))
                .collect()
        };
        let latest = ids("latest_events");
        let earliest: HashSet<OwnedEventId> = ids("earliest_events").into_iter().collect();
        let limit = body["limit"].as_u64().unwrap_or(10).min(MAX_HISTORY as u64) as usize;
        let min_depth = body["min_depth"].as_i64().unwrap_or(0);
        let mut events = self
            .walk_back(room_id, &latest, &earliest, limit, false)
            .await?;
        events.retain(|(depth, _)| *depth >= min_depth);
        events.sort_by_key(|(depth, _)| *depth);
        Ok(json!({"events": events.into_iter().map(|(_, v)| v).collect::<Vec<_>>()}))
    }

    /// Walks `prev_events` back from `start` (included when `include_start`),
    /// stopping at `stop`; returns `(depth, pdu)` pairs.
    async fn walk_back(
        &self,
        room_id: &RoomId,
        start: &[OwnedEventId],
        stop: &HashSet<OwnedEventId>,
        limit: usize,
        include_start: bool,
    ) -> Result<Vec<(i64, Value)>> {
        let mut out = Vec::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut queue: VecDeque<(OwnedEventId, bool)> =
            start.iter().map(|id| (id.clone(), include_start)).collect();
        while let Some((id, include)) = queue.pop_front() {
            if out.len() >= limit {
                break;
            }
            if !seen.insert(id.clone()) || stop.contains(&id) {
                continue;
            }
            let Some((ev_room, pdu)) = self.pdu_value(id.as_str()).await? else {
                continue;
            };
            if ev_room != room_id.as_str() {
                continue;
            }
            for prev in pdu["prev_events"].as_array().into_iter().flatten() {
                if let Some(p) = prev.as_str().and_then(|s| OwnedEventId::try_from(s).ok()) {
                    queue.push_back((p, true));
                }
            }
            if include {
                out.push((pdu["depth"].as_i64().unwrap_or(0), pdu));
            }
        }
        Ok(out)
    }
}
