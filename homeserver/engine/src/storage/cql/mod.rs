//! The CQL event log: room timelines on ScyllaDB (or Apache Cassandra).
//!
//! This is the event rows half of the timeline, the part that grows by
//! ~180 TB a year at the target load and so must scale out. Room state,
//! memberships and everything else stay in the SQL store. The data model,
//! bucket size and consistency choices are explained in docs/scale-out.md:
//!
//! - `events`: partitioned by `(room_id, bucket)` with `bucket = stream_pos /
//!   BUCKET_SIZE`, clustered by `stream_pos`, so no partition grows without
//!   bound and range reads are slices of a partition;
//! - `events_by_id`: event id → (room, position), for point reads;
//! - `room_buckets`: the non-empty buckets of each room, so range reads skip
//!   the empty ones of quiet rooms;
//! - `room_max_pos`: each room's highest published position.
//!
//! Every statement is prepared once at connect. Range reads page by
//! clustering key (position, then bucket), never by the driver's paging state,
//! so a page boundary is a position a caller can resume from.

mod purge;
mod schema;
mod statements;
mod timeline;

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::{session::Session, session_builder::SessionBuilder};
use scylla::response::query_result::QueryResult;
use scylla::statement::Consistency;

use crate::config::{Cql as CqlConfig, CqlConsistency};
use crate::error::{Error, Result};
use crate::storage::{Direction, PersistEvent, StoredEvent, StreamPos};

use statements::Statements;

/// Stream positions per partition of `events`. Fixed forever: rows are found
/// by recomputing the bucket from a position, so changing it would hide every
/// stored event. 2^20 positions is about 35 seconds of the whole server's
/// traffic at 30K events/s; a room's partition holds only its own events of
/// that span (docs/scale-out.md has the sizing).
pub const BUCKET_SIZE: StreamPos = 1 << 20;

/// The bucket (partition) of a position.
pub fn bucket_of(pos: StreamPos) -> i64 {
    pos.div_euclid(BUCKET_SIZE)
}

/// One event row of the log: what the timeline stores about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    /// The PDU as canonical JSON; on reads, its redacted form once redacted.
    pub pdu_json: String,
    /// Snapshot id (in the SQL store) of the room state before this event.
    pub state_before: i64,
    pub rejected: bool,
    /// The sending device and its transaction id, for `unsigned.transaction_id`.
    pub txn: Option<(String, String)>,
    /// Set on reads of a redacted event; ignored by `append`.
    pub redacted: bool,
}

impl From<&PersistEvent> for LogEvent {
    fn from(ev: &PersistEvent) -> Self {
        Self {
            stream_pos: ev.stream_pos,
            event_id: ev.event_id.clone(),
            room_id: ev.room_id.clone(),
            event_type: ev.event_type.clone(),
            state_key: ev.state_key.clone(),
            sender: ev.sender.clone(),
            origin_server_ts: ev.origin_server_ts,
            depth: ev.depth,
            pdu_json: ev.pdu_json.clone(),
            state_before: ev.state_before,
            rejected: false,
            txn: ev
                .txn
                .as_ref()
                .map(|t| (t.device_id.clone(), t.txn_id.clone())),
            redacted: false,
        }
    }
}

impl From<LogEvent> for StoredEvent {
    fn from(ev: LogEvent) -> Self {
        Self {
            stream_pos: ev.stream_pos,
            event_id: ev.event_id,
            room_id: ev.room_id,
            pdu_json: ev.pdu_json,
            state_before: ev.state_before,
            rejected: ev.rejected,
            txn: ev.txn,
        }
    }
}

/// The event rows of room timelines: the operations of `TimelineStore` that a
/// wide-column store can serve without cross-partition transactions.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Stores events at the positions they were given. Idempotent: appending
    /// the same events again (a retry) changes nothing. Callers drop events
    /// already stored under another position, as the event pipeline does.
    async fn append(&self, events: &[LogEvent]) -> Result<()>;
    async fn get_event(&self, event_id: &str) -> Result<Option<LogEvent>>;
    /// Events of a room with `from < pos <= to` (forward, oldest first) or
    /// `to < pos <= from` (backward, newest first), at most `limit`.
    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<LogEvent>>;
    /// The room's highest published position, 0 for an unknown room.
    async fn room_max_pos(&self, room_id: &str) -> Result<StreamPos>;
    /// Replaces a stored event's PDU by its redacted form; `false` if the
    /// event is unknown. A later re-append does not undo it.
    async fn redact(&self, event_id: &str, redacted_pdu_json: &str) -> Result<bool>;
    /// Deletes every event of a room; returns how many.
    async fn delete_room(&self, room_id: &str) -> Result<u64>;
    /// Deletes a room's events with `pos < before`; returns how many.
    async fn purge_before(&self, room_id: &str, before: StreamPos) -> Result<u64>;
}

/// The `EventLog` on a CQL cluster.
#[derive(Clone)]
pub struct CqlEventLog {
    session: Arc<Session>,
    st: Arc<Statements>,
}

impl CqlEventLog {
    /// Connects, creates the keyspace and tables if missing, and prepares
    /// every statement.
    pub async fn connect(config: &CqlConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|e| Error::unknown(e.to_string()))?;
        if config.contact_points.is_empty() {
            return Err(Error::unknown("storage.cql.contact_points is empty"));
        }
        let session = SessionBuilder::new()
            .known_nodes(&config.contact_points)
            .build()
            .await
            .map_err(db_error)?;
        schema::create(&session, config).await?;
        let st = Statements::prepare(&session, config).await?;
        Ok(Self {
            session: Arc::new(session),
            st: Arc::new(st),
        })
    }

    /// The driver session, for callers that share the connection pool.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

fn consistency(c: CqlConsistency) -> Consistency {
    match c {
        CqlConsistency::One => Consistency::One,
        CqlConsistency::LocalOne => Consistency::LocalOne,
        CqlConsistency::Two => Consistency::Two,
        CqlConsistency::Three => Consistency::Three,
        CqlConsistency::Quorum => Consistency::Quorum,
        CqlConsistency::LocalQuorum => Consistency::LocalQuorum,
        CqlConsistency::EachQuorum => Consistency::EachQuorum,
        CqlConsistency::All => Consistency::All,
    }
}

/// Driver errors are logged and surface as `M_UNKNOWN`, like SQL errors.
fn db_error(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "CQL error");
    Error::unknown("Internal database error.")
}

/// Every row of a result, deserialized as `R`.
fn rows<R>(result: QueryResult) -> Result<Vec<R>>
where
    R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
{
    let rows = result.into_rows_result().map_err(db_error)?;
    let out = rows
        .rows::<R>()
        .map_err(db_error)?
        .collect::<Result<Vec<R>, _>>()
        .map_err(db_error)?;
    Ok(out)
}
