//! The client-facing event format: a PDU minus its federation fields, plus
//! `unsigned` (age, transaction id, redaction marker).

use serde_json::{Map, Value};

use crate::storage::StoredEvent;

/// Fields of a PDU that clients never see.
const FEDERATION_ONLY: &[&str] = &[
    "auth_events",
    "prev_events",
    "hashes",
    "signatures",
    "depth",
    "origin",
];

/// Renders a stored event for a client. `viewer_device` adds
/// `unsigned.transaction_id` when the viewer's own device sent it.
pub fn to_client(
    ev: &StoredEvent,
    viewer: Option<(&str, &str)>,
    now_ms: i64,
    with_room_id: bool,
) -> Value {
    let mut obj: Map<String, Value> = match serde_json::from_str(&ev.pdu_json) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for key in FEDERATION_ONLY {
        obj.remove(*key);
    }
    obj.insert("event_id".into(), Value::String(ev.event_id.clone()));
    if with_room_id {
        obj.insert("room_id".into(), Value::String(ev.room_id.clone()));
    } else {
        obj.remove("room_id");
    }
    let mut unsigned = match obj.remove("unsigned") {
        Some(Value::Object(u)) => u,
        _ => Map::new(),
    };
    if let Some(ts) = obj.get("origin_server_ts").and_then(Value::as_i64) {
        unsigned.insert("age".into(), Value::from((now_ms - ts).max(0)));
    }
    if let (Some((viewer_user, viewer_device)), Some((device, txn))) = (viewer, &ev.txn) {
        let sender = obj
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if sender == viewer_user && device == viewer_device {
            unsigned.insert("transaction_id".into(), Value::String(txn.clone()));
        }
    }
    obj.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(obj)
}

/// Stripped state (`type`, `state_key`, `sender`, `content`) for invites.
pub fn to_stripped(pdu_json: &str) -> Value {
    let v: Value = serde_json::from_str(pdu_json).unwrap_or(Value::Null);
    serde_json::json!({
        "type": v["type"],
        "state_key": v["state_key"],
        "sender": v["sender"],
        "content": v["content"],
    })
}
