//! Reading a room: `/messages`, `/context`, `/event`, `/state` and `/members`,
//! each filtered by history visibility.

use std::{collections::HashSet, sync::Arc};

use ruma::RoomId;
use serde_json::{json, Value};

use super::RoomService;
use crate::{
    core::Core,
    error::{Error, Result},
    events::client_format::to_client,
    storage::{Direction, StoredEvent, StreamPos},
    sync::{filter::Filter, make_token, parse_pagination_token},
    util::now_ms,
};

#[derive(Clone)]
pub struct TimelineService {
    core: Arc<Core>,
    rooms: RoomService,
}

pub struct MessagesRequest<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub room_id: &'a RoomId,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub backward: bool,
    pub limit: usize,
    pub filter: Filter,
}

impl TimelineService {
    pub fn new(core: Arc<Core>, rooms: RoomService) -> Self {
        Self { core, rooms }
    }

    /// Errors with `M_FORBIDDEN` unless the user may read the room at all.
    async fn require_readable(
        &self,
        room_id: &RoomId,
        user_id: &str,
    ) -> Result<super::visibility::VisibilityView> {
        if self.rooms.get(room_id).await?.is_none() {
            return Err(Error::forbidden("You are not allowed to view this room."));
        }
        let view = self
            .rooms
            .visibility_view(room_id.as_str(), user_id)
            .await?;
        if !view.may_read_room() {
            return Err(Error::forbidden("You are not allowed to view this room."));
        }
        Ok(view)
    }

    fn render(&self, events: &[StoredEvent], user_id: &str, device_id: &str) -> Vec<Value> {
        let now = now_ms();
        events
            .iter()
            .map(|e| to_client(e, Some((user_id, device_id)), now, true))
            .collect()
    }

    pub async fn messages(&self, req: MessagesRequest<'_>) -> Result<Value> {
        let view = self.require_readable(req.room_id, req.user_id).await?;
        let timeline = &self.core.storage.timeline;
        let current = self.core.stream.settled().await;
        let from = match req.from {
            Some(t) => parse_pagination_token(t)?.min(current),
            None if req.backward => current,
            // Backfilled history sits below position 0.
            None => StreamPos::MIN,
        };
        let to = req.to.map(parse_pagination_token).transpose()?;
        let limit = req.limit.clamp(1, 1000);
        let (raw, end) = if req.backward {
            let raw = timeline
                .room_events(
                    req.room_id.as_str(),
                    from,
                    to.unwrap_or(StreamPos::MIN),
                    Direction::Backward,
                    limit,
                )
                .await?;
            let end = (raw.len() == limit)
                .then(|| raw.last().map(|e| e.stream_pos - 1))
                .flatten();
            (raw, end)
        } else {
            let upper = to.unwrap_or(current).min(current);
            let raw = timeline
                .room_events(req.room_id.as_str(), from, upper, Direction::Forward, limit)
                .await?;
            let end = (raw.len() == limit)
                .then(|| raw.last().map(|e| e.stream_pos))
                .flatten();
            (raw, end)
        };
        let visible = self.rooms.visible(req.room_id.as_str(), &view, raw).await?;
        let chunk: Vec<Value> = self
            .render(&visible, req.user_id, req.device_id)
            .into_iter()
            .filter(|e| req.filter.event_allowed(e))
            .collect();
        let state = if req.filter.lazy_load_members {
            self.member_events_for(req.room_id, &chunk).await?
        } else {
            Vec::new()
        };
        let mut out = json!({"chunk": chunk, "start": make_token(from), "state": state});
        if let Some(end) = end {
            out["end"] = json!(make_token(end));
        }
        Ok(out)
    }

    /// Current member events of the senders of `events` (lazy-loaded members).
    async fn member_events_for(&self, room_id: &RoomId, events: &[Value]) -> Result<Vec<Value>> {
        let senders: HashSet<&str> = events.iter().filter_map(|e| e["sender"].as_str()).collect();
        let room = self.rooms.require(room_id).await?;
        let ids: Vec<String> = {
            let st = room.read().await;
            senders
                .iter()
                .filter_map(|s| {
                    st.state_event("m.room.member", s)
                        .map(|p| p.event_id.to_string())
                })
                .collect()
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(ev) = self.core.storage.timeline.get_event(&id).await? {
                out.push(to_client(&ev, None, now_ms(), true));
            }
        }
        Ok(out)
    }

    /// A single event, if the user may see it.
    pub async fn event(
        &self,
        user_id: &str,
        device_id: &str,
        room_id: &RoomId,
        event_id: &str,
    ) -> Result<Value> {
        // Per the spec an event you may not see is indistinguishable from none.
        let view = self
            .require_readable(room_id, user_id)
            .await
            .map_err(|_| Error::not_found("Event not found."))?;
        let ev = self
            .core
            .storage
            .timeline
            .get_event(event_id)
            .await?
            .filter(|e| e.room_id == room_id.as_str() && !e.rejected)
            .ok_or_else(|| Error::not_found("Event not found."))?;
        let ev = self
            .rooms
            .visible(room_id.as_str(), &view, vec![ev])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("Event not found."))?;
        Ok(to_client(&ev, Some((user_id, device_id)), now_ms(), true))
    }

    /// `/context/{eventId}`: the event with up to `limit` events around it.
    pub async fn context(
        &self,
        user_id: &str,
        device_id: &str,
        room_id: &RoomId,
        event_id: &str,
        limit: usize,
        filter: Filter,
    ) -> Result<Value> {
        let view = self.require_readable(room_id, user_id).await?;
        let timeline = &self.core.storage.timeline;
        let ev = timeline
            .get_event(event_id)
            .await?
            .filter(|e| e.room_id == room_id.as_str());
        let ev = self
            .rooms
            .visible(room_id.as_str(), &view, ev.into_iter().collect())
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("Event not found."))?;
        let current = self.core.stream.settled().await;
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let before = timeline
            .room_events(
                room_id.as_str(),
                ev.stream_pos - 1,
                0,
                Direction::Backward,
                before_n.max(1),
            )
            .await?;
        let after = timeline
            .room_events(
                room_id.as_str(),
                ev.stream_pos,
                current,
                Direction::Forward,
                after_n.max(1),
            )
            .await?;
        let before: Vec<StoredEvent> = before.into_iter().take(before_n).collect();
        let before = self.rooms.visible(room_id.as_str(), &view, before).await?;
        let after: Vec<StoredEvent> = after.into_iter().take(after_n).collect();
        let after = self.rooms.visible(room_id.as_str(), &view, after).await?;
        let start = before
            .last()
            .map(|e| e.stream_pos - 1)
            .unwrap_or(ev.stream_pos - 1);
        let end = after.last().map(|e| e.stream_pos).unwrap_or(ev.stream_pos);
        let state_ids = self
            .core
            .storage
            .rooms
            .snapshot_state(ev.state_before)
            .await?;
        let mut state = Vec::new();
        for (t, _, id) in &state_ids {
            if filter.lazy_load_members && t == "m.room.member" {
                continue;
            }
            if let Some(s) = timeline.get_event(id).await? {
                state.push(to_client(&s, None, now_ms(), true));
            }
        }
        Ok(json!({
            "event": to_client(&ev, Some((user_id, device_id)), now_ms(), true),
            "events_before": self.render(&before, user_id, device_id).into_iter().filter(|e| filter.event_allowed(e)).collect::<Vec<_>>(),
            "events_after": self.render(&after, user_id, device_id).into_iter().filter(|e| filter.event_allowed(e)).collect::<Vec<_>>(),
            "start": make_token(start),
            "end": make_token(end),
            "state": state,
        }))
    }

    /// The state a user may see: current state while joined, otherwise the state
    /// when they left (or current state for world-readable rooms).
    pub async fn state_ids_for(
        &self,
        user_id: &str,
        room_id: &RoomId,
    ) -> Result<Vec<(String, String, String)>> {
        let room = self
            .rooms
            .get(room_id)
            .await?
            .ok_or_else(|| Error::forbidden("You are not allowed to view this room."))?;
        let (membership, member_event, world_readable, current) = {
            let st = room.read().await;
            let member = st
                .state_event("m.room.member", user_id)
                .map(|p| p.event_id.to_string());
            let current: Vec<(String, String, String)> = st
                .state
                .iter()
                .map(|((t, k), p)| (t.clone(), k.clone(), p.event_id.to_string()))
                .collect();
            (
                st.membership_of(user_id),
                member,
                st.history_visibility() == "world_readable",
                current,
            )
        };
        match membership.as_deref() {
            Some("join") => Ok(current),
            _ if world_readable => Ok(current),
            Some("leave") | Some("ban") => {
                let Some(id) = member_event else {
                    return Err(Error::forbidden("You are not in this room."));
                };
                let ev = self
                    .core
                    .storage
                    .timeline
                    .get_event(&id)
                    .await?
                    .ok_or_else(|| Error::forbidden("You are not in this room."))?;
                // Only someone who had been joined may see the state at their departure.
                let view = self
                    .rooms
                    .visibility_view(room_id.as_str(), user_id)
                    .await?;
                if !view.may_read_room() {
                    return Err(Error::forbidden("You are not in this room."));
                }
                let mut state = self
                    .core
                    .storage
                    .rooms
                    .snapshot_state(ev.state_before)
                    .await?;
                state.retain(|(t, k, _)| !(t == "m.room.member" && k == user_id));
                state.push(("m.room.member".into(), user_id.to_owned(), id));
                Ok(state)
            }
            _ => Err(Error::forbidden("You are not in this room.")),
        }
    }

    pub async fn state_events(
        &self,
        user_id: &str,
        room_id: &RoomId,
        only_type: Option<&str>,
    ) -> Result<Vec<Value>> {
        let ids = self.state_ids_for(user_id, room_id).await?;
        let mut out = Vec::new();
        for (t, _, id) in ids {
            if only_type.is_some_and(|o| o != t) {
                continue;
            }
            if let Some(ev) = self.core.storage.timeline.get_event(&id).await? {
                out.push(to_client(&ev, None, now_ms(), true));
            }
        }
        Ok(out)
    }

    /// The content of one state event.
    pub async fn state_event(
        &self,
        user_id: &str,
        room_id: &RoomId,
        kind: &str,
        key: &str,
    ) -> Result<Value> {
        let ids = self.state_ids_for(user_id, room_id).await?;
        let (_, _, id) = ids
            .into_iter()
            .find(|(t, k, _)| t == kind && k == key)
            .ok_or_else(|| Error::not_found("Event not found."))?;
        let ev = self
            .core
            .storage
            .timeline
            .get_event(&id)
            .await?
            .ok_or_else(|| Error::not_found("Event not found."))?;
        Ok(to_client(&ev, None, now_ms(), true))
    }
}
