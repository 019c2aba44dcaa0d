//! Reading /sync responses, and a cursor that follows a device's sync stream.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Client;

/// `rooms.join.<room_id>` of a sync response, if present.
pub fn joined_room<'a>(sync: &'a Value, room_id: &str) -> Option<&'a Value> {
    sync["rooms"]["join"].get(room_id)
}

/// The timeline events of a joined room in a sync response (empty if absent).
pub fn timeline(sync: &Value, room_id: &str) -> Vec<Value> {
    joined_room(sync, room_id)
        .and_then(|r| r["timeline"]["events"].as_array().cloned())
        .unwrap_or_default()
}

/// The room ids under `rooms.<section>` (`join`, `invite`, `leave`, `knock`).
pub fn room_ids(sync: &Value, section: &str) -> Vec<String> {
    sync["rooms"][section]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether the room id occurs anywhere in the response.
pub fn mentions(sync: &Value, needle: &str) -> bool {
    sync.to_string().contains(needle)
}

/// The events of type `m.room.message`.
pub fn messages_only(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .cloned()
        .collect()
}

/// `content.body` of each `m.room.message` event.
pub fn bodies(events: &[Value]) -> Vec<String> {
    messages_only(events)
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `event_id` of each event.
pub fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The events of `type` in a list.
pub fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

/// Follows one device's sync stream: an initial sync, then incremental ones.
pub struct SyncCursor {
    pub client: Client,
    pub since: Option<String>,
    pub filter: Option<String>,
}

impl SyncCursor {
    /// Does the initial sync; returns the cursor and that first response.
    pub async fn initial(client: &Client, filter: Option<&str>) -> (Self, Value) {
        let mut cursor = SyncCursor {
            client: client.clone(),
            since: None,
            filter: filter.map(str::to_owned),
        };
        let first = cursor.next(0).await;
        (cursor, first)
    }

    /// One (long-poll) sync from the current position; advances the position.
    pub async fn next(&mut self, timeout_ms: u64) -> Value {
        let body = self
            .client
            .sync(
                self.since.as_deref(),
                Some(timeout_ms),
                self.filter.as_deref(),
            )
            .await;
        self.since = Some(body["next_batch"].as_str().unwrap().to_owned());
        body
    }

    /// Long-polls until `room_id`'s timeline has yielded events satisfying
    /// `done`, or `deadline` passes. Returns every timeline event of the room
    /// received, in order, and asserts no response was `limited` (a gap).
    pub async fn collect_until(
        &mut self,
        room_id: &str,
        deadline: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        let mut got: Vec<Value> = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "{:?}: timed out after {deadline:?} waiting on {room_id}; got {} events: {:?}",
                self.client,
                got.len(),
                bodies(&got)
            );
            let body = self.next(left.as_millis().min(30_000) as u64).await;
            if let Some(room) = joined_room(&body, room_id) {
                assert_ne!(
                    room["timeline"]["limited"],
                    Value::Bool(true),
                    "{:?}: incremental sync was limited (events skipped)",
                    self.client
                );
                got.extend(
                    room["timeline"]["events"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
        got
    }
}
