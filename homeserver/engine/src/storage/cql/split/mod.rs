//! The timeline split between the SQL store and the CQL event log, used when
//! `[storage.cql]` is configured (docs/scale-out.md, "What lives where").
//!
//! SQL keeps every event's index row: id, room, type, state key, position,
//! state snapshot, flags, txn ids, and the body of events that room state
//! needs (state events), of rejected events and outliers. The bodies of
//! timeline messages (non-state events), the bulk of the history, go to the
//! log only; their SQL row carries an empty `pdu_json`, which marks "body in
//! the log" (a PDU is never empty). Reads go through SQL, which decides what
//! exists and in what order, and fetch the empty bodies from the log.
//!
//! Write order: the body is appended to the log first (idempotent), then the
//! SQL transaction commits. If the append fails, the send fails with nothing
//! written to SQL; if the SQL commit fails, the log holds a row no SQL row
//! points at: invisible, since every read starts from SQL. A redaction
//! rewrites the target's SQL `pdu_json` to the redacted form inside the SQL
//! transaction (so every read serves it from then on), then erases the
//! original from the log row with `EventLog::redact_at`.

mod admin;
mod federation;

pub use admin::SplitAdmin;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{EventLog, LogEvent};
use crate::error::{Error, Result};
use crate::storage::{
    federation::FederationStore, Direction, PersistEvent, StoredEvent, StreamPos, TimelineStore,
};

/// The SQL stores the split timeline wraps, and the log beside them.
#[derive(Clone)]
pub struct SplitTimeline {
    sql: Arc<dyn TimelineStore>,
    sql_federation: Arc<dyn FederationStore>,
    log: Arc<dyn EventLog>,
}

impl SplitTimeline {
    pub fn new(
        sql: Arc<dyn TimelineStore>,
        sql_federation: Arc<dyn FederationStore>,
        log: Arc<dyn EventLog>,
    ) -> Self {
        Self {
            sql,
            sql_federation,
            log,
        }
    }

    /// The redaction target whose log row must be erased after the commit:
    /// `(position, event id)` of an event of `room_id` whose body is in the
    /// log. Looked up before the commit, which rewrites its SQL body.
    async fn log_target(
        &self,
        redaction: Option<&(String, String)>,
        room_id: &str,
    ) -> Result<Option<(StreamPos, String, String)>> {
        let Some((target_id, redacted_json)) = redaction else {
            return Ok(None);
        };
        Ok(self
            .sql
            .get_event(target_id)
            .await?
            .filter(|t| t.room_id == room_id && t.pdu_json.is_empty())
            .map(|t| (t.stream_pos, t.event_id, redacted_json.clone())))
    }

    /// Erases a redacted event's original body from its log row. The SQL
    /// store already serves the redacted form, so a failure here cannot
    /// show the original to anyone: it is logged, and the original bytes
    /// stay in the log row until the room is purged.
    async fn erase_in_log(&self, room_id: &str, target: Option<(StreamPos, String, String)>) {
        let Some((pos, event_id, redacted_json)) = target else {
            return;
        };
        if let Err(e) = self
            .log
            .redact_at(room_id, pos, &event_id, &redacted_json)
            .await
        {
            tracing::error!(%room_id, %event_id, error = %e,
                "redacted in SQL, but the original body could not be erased from the event log");
        }
    }

    /// Fills in the bodies that live in the log (empty `pdu_json`). A body
    /// missing from the log is an error, not a gap: skipping it would let a
    /// /sync move past a message its client never saw.
    async fn fill(&self, events: &mut [StoredEvent]) -> Result<()> {
        let mut by_room: HashMap<&str, Vec<(StreamPos, String)>> = HashMap::new();
        for ev in events.iter().filter(|e| e.pdu_json.is_empty()) {
            by_room
                .entry(ev.room_id.as_str())
                .or_default()
                .push((ev.stream_pos, ev.event_id.clone()));
        }
        if by_room.is_empty() {
            return Ok(());
        }
        let mut bodies: HashMap<(StreamPos, String), String> = HashMap::new();
        for (room_id, keys) in by_room {
            for row in self.log.events_at(room_id, &keys).await? {
                bodies.insert((row.stream_pos, row.event_id), row.pdu_json);
            }
        }
        for ev in events.iter_mut().filter(|e| e.pdu_json.is_empty()) {
            match bodies.remove(&(ev.stream_pos, ev.event_id.clone())) {
                Some(body) => ev.pdu_json = body,
                None => {
                    tracing::error!(room_id = %ev.room_id, event_id = %ev.event_id,
                        pos = ev.stream_pos, "an event's body is missing from the event log");
                    return Err(Error::unknown("Internal database error."));
                }
            }
        }
        Ok(())
    }
}

/// Whether an event's body goes to the log: timeline messages only. State
/// events stay whole in SQL (current state and the state joins read them),
/// as do rejected events and outliers (auth material, never served as
/// timeline) and positions below 1 (backfilled history; the log's positions
/// start at 1).
pub(super) fn body_in_log(
    state_key: Option<&str>,
    rejected: bool,
    outlier: bool,
    pos: StreamPos,
) -> bool {
    state_key.is_none() && !rejected && !outlier && pos > 0
}

#[async_trait]
impl TimelineStore for SplitTimeline {
    async fn persist_event(&self, ev: &PersistEvent) -> Result<()> {
        let target = self.log_target(ev.redaction.as_ref(), &ev.room_id).await?;
        if body_in_log(ev.state_key.as_deref(), false, false, ev.stream_pos) {
            // The body first: if this fails, nothing of the event exists.
            self.log.append(&[LogEvent::from(ev)]).await?;
            let index = PersistEvent {
                pdu_json: String::new(),
                ..ev.clone()
            };
            self.sql.persist_event(&index).await?;
        } else {
            self.sql.persist_event(ev).await?;
        }
        self.erase_in_log(&ev.room_id, target).await;
        Ok(())
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let Some(ev) = self.sql.get_event(event_id).await? else {
            return Ok(None);
        };
        let mut one = [ev];
        self.fill(&mut one).await?;
        let [ev] = one;
        Ok(Some(ev))
    }

    async fn current_state_events(&self, room_id: &str) -> Result<Vec<StoredEvent>> {
        let mut events = self.sql.current_state_events(room_id).await?;
        self.fill(&mut events).await?;
        Ok(events)
    }

    async fn state_key_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<(StreamPos, String)>> {
        // State events keep their bodies in SQL (`body_in_log`).
        self.sql
            .state_key_history(room_id, event_type, state_key)
            .await
    }

    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut events = self.sql.room_events(room_id, from, to, dir, limit).await?;
        self.fill(&mut events).await?;
        Ok(events)
    }

    async fn room_max_pos(&self, room_id: &str) -> Result<StreamPos> {
        self.sql.room_max_pos(room_id).await
    }

    async fn max_stream_pos(&self) -> Result<StreamPos> {
        self.sql.max_stream_pos().await
    }

    async fn find_txn(&self, user_id: &str, device_id: &str, key: &str) -> Result<Option<String>> {
        self.sql.find_txn(user_id, device_id, key).await
    }
}
