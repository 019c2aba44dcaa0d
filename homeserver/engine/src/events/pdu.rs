//! A parsed PDU, as stored and as checked by the auth rules.

use ruma::{
    events::TimelineEventType, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// One event of a room, in the form the auth rules and the services read.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (derived for v12 create events, whose PDU has no `room_id`).
    pub room_id: OwnedRoomId,
    /// Whether the PDU itself carries `room_id` (absent only on v12+ create events).
    pub room_id_in_pdu: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    pub rejected: bool,
}

#[derive(Deserialize)]
struct Wire {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: UInt,
    #[serde(rename = "type")]
    kind: String,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a stored or received PDU. `room_id` is the room it belongs to, used
    /// when the PDU omits it (v12 create events).
    pub fn parse(event_id: OwnedEventId, room_id: &RoomId, json: &str) -> Result<Self> {
        let wire: Wire =
            serde_json::from_str(json).map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
        // From room v11 `redacts` lives in the content; accept either place.
        let redacts = wire.redacts.or_else(|| {
            (wire.kind == "m.room.redaction")
                .then(|| {
                    serde_json::from_str::<RedactsInContent>(wire.content.get())
                        .ok()
                        .and_then(|c| c.redacts)
                })
                .flatten()
        });
        Ok(Self {
            event_id,
            room_id_in_pdu: wire.room_id.is_some(),
            room_id: wire.room_id.unwrap_or_else(|| room_id.to_owned()),
            sender: wire.sender,
            origin_server_ts: MilliSecondsSinceUnixEpoch(wire.origin_server_ts),
            kind: TimelineEventType::from(wire.kind.as_str()),
            content: wire.content,
            state_key: wire.state_key,
            prev_events: wire.prev_events,
            auth_events: wire.auth_events,
            redacts,
            depth: wire.depth.into(),
            rejected: false,
        })
    }

    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// A string field of the content, e.g. `membership` or `join_rule`.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_value()
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_pdu.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}
