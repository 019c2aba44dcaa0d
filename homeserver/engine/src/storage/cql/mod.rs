//! The CQL event log: room timelines on ScyllaDB (or Apache Cassandra).
//!
//! This is the event rows half of the timeline, the part that grows by
//! ~180 TB a year at the target load and so must scale out. Room state,
//! memberships and everything else stay in the SQL store. The data model,
//! bucket size and consistency choices are explained in docs/scale-out.md:
//!
//! - `events`: partitioned by `(room_id, bucket)` with `bucket = stream_pos >>
//!   shift` ([`bucket_of`]), clustered by `(stream_pos, event_id)`, so no
//!   partition grows without bound and range reads are slices of a partition;
//! - `events_by_id`: event id → (room, position), for point reads;
//! - `room_buckets`: the non-empty buckets of each room, so range reads skip
//!   the empty ones of quiet rooms;
//! - `room_max_pos`: each room's highest published position;
//! - `meta`: the keyspace's bucket shift, recorded when it is created.
//!
//! With `[storage.cql]` configured the homeserver uses the log through
//! [`split::SplitTimeline`]: SQL keeps the index, the log the message bodies.
//!
//! Every statement is prepared once at connect. Range reads page by
//! clustering key (position, then bucket), never by the driver's paging state,
//! so a page boundary is a position a caller can resume from.

mod bodies;
mod purge;
mod schema;
pub mod split;
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

/// The bucket shift a new keyspace records: `bucket = stream_pos >> shift`,
/// so 2^20 positions per partition, about 35 seconds of the whole server's
/// traffic at 30K events/s; a room's partition holds only its own events of
/// that span (docs/scale-out.md has the sizing).
///
/// The shift in use is the one recorded in the keyspace's `meta` table when
/// it was created, never this constant: rows are found by recomputing the
/// bucket from a position, so changing the shift of a populated keyspace
/// would hide every stored event. Clock-derived positions (around 2^57)
/// call for a larger shift, e.g. 42 (about 17 minutes of milliseconds
/// shifted by 20 bits): pass it to [`CqlEventLog::connect_with_bucket_shift`]
/// when creating such a keyspace.
pub const DEFAULT_BUCKET_SHIFT: u32 = crate::config::SINGLE_INSTANCE_BUCKET_SHIFT;

/// Positions per bucket under [`DEFAULT_BUCKET_SHIFT`].
pub const BUCKET_SIZE: StreamPos = 1 << DEFAULT_BUCKET_SHIFT;

/// The bucket (partition) of a position, for a keyspace whose recorded
/// bucket shift is `shift`. The only place buckets are computed.
pub fn bucket_of(pos: StreamPos, shift: u32) -> i64 {
    // An arithmetic shift: floor division by 2^shift, negative positions too.
    pos >> shift.min(62)
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
    /// The rows of a room at exactly these `(position, event id)` keys, in
    /// no particular order; keys without a row are left out. This is how the
    /// SQL-indexed timeline (`split.rs`) fetches bodies: the SQL store says
    /// which events a page holds, the log returns their PDUs.
    async fn events_at(&self, room_id: &str, keys: &[(StreamPos, String)])
        -> Result<Vec<LogEvent>>;
    /// Redacts the row at `(room_id, pos, event_id)`, which the caller knows
    /// to exist: unlike [`EventLog::redact`], no index lookup, so a stale
    /// `events_by_id` entry (an append whose SQL commit failed) cannot
    /// misdirect it. The original PDU is erased, not only hidden.
    async fn redact_at(
        &self,
        room_id: &str,
        pos: StreamPos,
        event_id: &str,
        redacted_pdu_json: &str,
    ) -> Result<()>;
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
    /// The keyspace's recorded bucket shift (`bucket_of`).
    shift: u32,
}

impl CqlEventLog {
    /// Connects, creates the keyspace and tables if missing, and prepares
    /// every statement. A new keyspace records [`DEFAULT_BUCKET_SHIFT`].
    pub async fn connect(config: &CqlConfig) -> Result<Self> {
        Self::connect_with_bucket_shift(config, DEFAULT_BUCKET_SHIFT).await
    }

    /// As [`CqlEventLog::connect`], recording `shift` if the keyspace is new.
    /// An existing keyspace keeps the shift it recorded when it was created.
    pub async fn connect_with_bucket_shift(config: &CqlConfig, shift: u32) -> Result<Self> {
        if shift > 62 {
            return Err(Error::unknown(format!("bucket shift {shift} is over 62")));
        }
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
        let shift = schema::bucket_shift(&session, config, shift).await?;
        let st = Statements::prepare(&session, config).await?;
        Ok(Self {
            session: Arc::new(session),
            st: Arc::new(st),
            shift,
        })
    }

    /// The bucket shift this keyspace was created with.
    pub fn bucket_shift(&self) -> u32 {
        self.shift
    }

    /// The bucket (partition) of a position in this keyspace.
    fn bucket(&self, pos: StreamPos) -> i64 {
        bucket_of(pos, self.shift)
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
