//! History visibility: which of a room's events a user may see.
//!
//! Per the spec, `m.room.history_visibility` at the time of each event decides:
//! `world_readable` (anyone), `shared` (members, including events from before
//! they joined, while they are joined), `invited` (from their invite on) and
//! `joined` (only while joined). Membership "at an event" is the state before
//! it, except that a user's own membership event counts from itself.
//!
//! Events sent by a user an admin erased are served redacted to anyone who was
//! not joined when they were sent (Synapse's behaviour): those who were there
//! keep their history, later joiners never see the content.

use crate::{
    error::Result,
    events::builder,
    storage::{StoredEvent, StreamPos},
};

use super::RoomService;

/// The pieces of history needed to decide visibility for one user in one room.
pub struct VisibilityView {
    /// `(pos, membership)` of the user's member events, oldest first.
    memberships: Vec<(StreamPos, String)>,
    /// `(pos, visibility)` of the room's history visibility events, oldest first.
    visibilities: Vec<(StreamPos, String)>,
}

impl VisibilityView {
    fn membership_at(&self, pos: StreamPos) -> Option<&str> {
        self.memberships
            .iter()
            .rev()
            .find(|(p, _)| *p <= pos)
            .map(|(_, m)| m.as_str())
    }

    fn visibility_at(&self, pos: StreamPos) -> &str {
        self.visibilities
            .iter()
            .rev()
            .find(|(p, _)| *p < pos)
            .map(|(_, v)| v.as_str())
            .unwrap_or("shared")
    }

    /// Whether the user was joined when the event at `pos` was sent.
    fn joined_at(&self, pos: StreamPos) -> bool {
        self.membership_at(pos) == Some("join")
    }

    fn current_membership(&self) -> Option<&str> {
        self.memberships.last().map(|(_, m)| m.as_str())
    }

    pub fn can_see(&self, pos: StreamPos) -> bool {
        // Users always see their own membership changes (their leave, kick or ban).
        if self.memberships.iter().any(|(p, _)| *p == pos) {
            return true;
        }
        let membership = self.membership_at(pos);
        match self.visibility_at(pos) {
            "world_readable" => true,
            "shared" => membership == Some("join") || self.current_membership() == Some("join"),
            "invited" => matches!(membership, Some("join") | Some("invite")),
            _ => membership == Some("join"),
        }
    }

    /// Whether the user may read anything at all (has ever been a member, or the
    /// room is world-readable now).
    pub fn may_read_room(&self) -> bool {
        self.memberships
            .iter()
            .any(|(_, m)| m == "join" || m == "invite")
            || self.visibilities.last().map(|(_, v)| v.as_str()) == Some("world_readable")
    }
}

fn sender(pdu_json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sender {
        sender: String,
    }
    serde_json::from_str::<Sender>(pdu_json)
        .ok()
        .map(|s| s.sender)
}

fn field(pdu_json: &str, field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(pdu_json).ok()?;
    v["content"][field].as_str().map(str::to_owned)
}

impl RoomService {
    pub async fn visibility_view(&self, room_id: &str, user_id: &str) -> Result<VisibilityView> {
        let timeline = &self.core.storage.timeline;
        let memberships = timeline
            .state_key_history(room_id, "m.room.member", user_id)
            .await?
            .into_iter()
            .filter_map(|(pos, json)| field(&json, "membership").map(|m| (pos, m)))
            .collect();
        let visibilities = timeline
            .state_key_history(room_id, "m.room.history_visibility", "")
            .await?
            .into_iter()
            .filter_map(|(pos, json)| field(&json, "history_visibility").map(|v| (pos, v)))
            .collect();
        Ok(VisibilityView {
            memberships,
            visibilities,
        })
    }

    /// Keeps the events `user_id` may see.
    pub async fn filter_visible(
        &self,
        room_id: &str,
        user_id: &str,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        let view = self.visibility_view(room_id, user_id).await?;
        self.visible(room_id, &view, events).await
    }

    /// Keeps the events `view` may see, erased senders' ones redacted where
    /// the viewer was not joined when they were sent.
    pub async fn visible(
        &self,
        room_id: &str,
        view: &VisibilityView,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        let mut events: Vec<StoredEvent> = events
            .into_iter()
            .filter(|e| !e.rejected && view.can_see(e.stream_pos))
            .collect();
        let hidden: Vec<usize> = {
            let erased = self.core.erased.read();
            if erased.is_empty() {
                return Ok(events);
            }
            events
                .iter()
                .enumerate()
                .filter(|(_, e)| !view.joined_at(e.stream_pos))
                .filter(|(_, e)| sender(&e.pdu_json).is_some_and(|s| erased.contains(&s)))
                .map(|(i, _)| i)
                .collect()
        };
        if hidden.is_empty() {
            return Ok(events);
        }
        let Ok(id) = ruma::RoomId::parse(room_id) else {
            return Ok(events);
        };
        let Some(room) = self.get(&id).await? else {
            return Ok(events);
        };
        let rules = room.read().await.rules.clone();
        for i in hidden {
            events[i].pdu_json = builder::redact_json(&events[i].pdu_json, &rules)?;
        }
        Ok(events)
    }
}
