//! Building a new local event: select `auth_events`, point `prev_events` at the
//! forward extremities, set `depth`, hash, sign and derive the event id.

use std::collections::HashMap;

use ruma::{
    canonical_json::to_canonical_value, events::TimelineEventType,
    room_version_rules::RoomVersionRules, CanonicalJsonObject, CanonicalJsonValue, EventId,
    OwnedEventId, OwnedRoomId, RoomId, UserId,
};
use serde_json::{json, value::to_raw_value};

use super::{auth::StateMap, Pdu};
use crate::{
    error::{Error, Result},
    keys::SigningKey,
};

/// What a client (or the server itself) asks to send.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: serde_json::Value,
    /// For `m.room.redaction`.
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(kind: &str, state_key: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }
    pub fn message(kind: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// The room context an event is built against.
pub struct BuildContext<'a> {
    /// `None` only while building a v12 create event, whose id names the room.
    pub room_id: Option<&'a RoomId>,
    pub rules: &'a RoomVersionRules,
    pub state: &'a StateMap,
    pub prev_events: &'a [OwnedEventId],
    pub max_depth: u64,
    pub server_name: &'a str,
    pub key: &'a SigningKey,
    pub now_ms: i64,
}

/// A signed PDU with its canonical JSON text.
pub struct Built {
    pub pdu: Pdu,
    pub json: String,
}

pub fn build(ctx: &BuildContext<'_>, sender: &UserId, draft: &EventDraft) -> Result<Built> {
    let object = template(ctx, sender, draft)?;
    sign(ctx, object)
}

/// The unsigned event: what `make_join` and `make_leave` hand to the joining
/// server, and what [`build`] then hashes and signs.
pub fn template(
    ctx: &BuildContext<'_>,
    sender: &UserId,
    draft: &EventDraft,
) -> Result<CanonicalJsonObject> {
    let kind = TimelineEventType::from(draft.kind.as_str());
    let content_raw = to_raw_value(&draft.content).map_err(|e| Error::bad_json(e.to_string()))?;
    let auth_types = ruma::state_res::auth_types_for_event(
        &kind,
        sender,
        draft.state_key.as_deref(),
        &content_raw,
        &ctx.rules.authorization,
    )
    .map_err(Error::bad_json)?;
    let mut auth_events: Vec<OwnedEventId> = auth_types
        .iter()
        .filter_map(|(t, k)| {
            ctx.state
                .get(&(t.to_string(), k.clone()))
                .map(|p| p.event_id.clone())
        })
        .collect();
    auth_events.sort();
    auth_events.dedup();

    let mut obj = json!({
        "auth_events": auth_events,
        "content": draft.content,
        "depth": ctx.max_depth + 1,
        "origin_server_ts": ctx.now_ms,
        "prev_events": ctx.prev_events,
        "sender": sender,
        "type": draft.kind,
    });
    if let Some(room_id) = ctx.room_id {
        obj["room_id"] = json!(room_id);
    }
    if let Some(key) = &draft.state_key {
        obj["state_key"] = json!(key);
    }
    if let Some(redacts) = &draft.redacts {
        // v11+ carries `redacts` in the content; keep the top-level key too for
        // older room versions and clients that read it there.
        obj["redacts"] = json!(redacts);
        if ctx.rules.redaction.content_field_redacts {
            obj["content"]["redacts"] = json!(redacts);
        }
    }
    let CanonicalJsonValue::Object(object) = to_canonical_value(obj)
        .map_err(|e| Error::bad_json(format!("event is not canonical JSON: {e}")))?
    else {
        return Err(Error::unknown("event did not serialise to an object"));
    };
    // The spec caps a PDU at 65536 bytes of canonical JSON; refuse before signing
    // (the signature and hashes add about 200 bytes).
    if canonical_string(&object).len() > 65_536 - 256 {
        return Err(Error::too_large(
            "Event is larger than the 64 KiB PDU limit.",
        ));
    }
    Ok(object)
}

/// Hashes and signs an event built here, and derives its id.
pub fn sign(ctx: &BuildContext<'_>, mut object: CanonicalJsonObject) -> Result<Built> {
    ruma::signatures::hash_and_sign_event(
        ctx.server_name,
        &ctx.key.pair,
        &mut object,
        &ctx.rules.redaction,
    )
    .map_err(|e| Error::bad_json(format!("cannot sign event: {e}")))?;
    let hash = ruma::signatures::reference_hash(&object, ctx.rules)
        .map_err(|e| Error::too_large(format!("event too large: {e}")))?;
    let event_id = EventId::parse(format!("${hash}")).map_err(|e| Error::unknown(e.to_string()))?;
    let room_id: OwnedRoomId = match ctx.room_id {
        Some(r) => r.to_owned(),
        None => RoomId::parse(format!("!{hash}")).map_err(|e| Error::unknown(e.to_string()))?,
    };
    let json = canonical_string(&object);
    let mut pdu = Pdu::parse(event_id, &room_id, &json)?;
    pdu.room_id = room_id;
    Ok(Built { pdu, json })
}

pub fn canonical_string(object: &CanonicalJsonObject) -> String {
    serde_json::to_string(object).unwrap_or_default()
}

/// The redacted form of a stored PDU, by the room version's redaction algorithm.
pub fn redact_json(pdu_json: &str, rules: &RoomVersionRules) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(pdu_json)?;
    let CanonicalJsonValue::Object(object) =
        to_canonical_value(value).map_err(|e| Error::unknown(e.to_string()))?
    else {
        return Err(Error::unknown("stored PDU is not an object"));
    };
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
        .map_err(|e| Error::unknown(e.to_string()))?;
    Ok(canonical_string(&redacted))
}

/// Maps event ids to the events of `state` (used to resolve `auth_events`).
pub fn index_by_id(state: &StateMap) -> HashMap<&EventId, &Pdu> {
    state.values().map(|p| (&*p.event_id, &**p)).collect()
}
