//! Storage for rooms that span servers: events accepted from other servers
//! (with the state they resolve to), outliers, remote invites, and the durable
//! outbound and inbound transaction bookkeeping.

use async_trait::async_trait;

use super::{StoredEvent, StreamPos};
use crate::error::Result;

/// One `(type, state_key, event_id)` entry of a state map.
pub type StateEntry = (String, String, String);

/// A state snapshot to create: `entries` on top of `parent` (or a full state
/// when `parent` is `None`).
#[derive(Clone, Debug)]
pub struct SnapshotWrite {
    pub snapshot_id: i64,
    pub room_id: String,
    pub parent: Option<i64>,
    pub entries: Vec<StateEntry>,
}

/// A change to the room's current state, written with the event that caused it.
#[derive(Clone, Debug)]
pub struct CurrentStateWrite {
    pub snapshot_id: i64,
    /// Keys whose event changed (the full state when the room is new here).
    pub changed: Vec<StateEntry>,
    /// Membership rows to upsert: `(user_id, membership, event_id)`.
    pub memberships: Vec<(String, String, String)>,
    pub forward_extremities: Vec<String>,
}

/// An event from another server (or our own event on a forked graph), written
/// in one transaction with the snapshots and current-state change it implies.
#[derive(Clone, Debug)]
pub struct RemoteEventWrite {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu_json: String,
    pub rejected: bool,
    pub outlier: bool,
    pub state_before: i64,
    /// Snapshots to create first (state before and after the event, when new).
    pub snapshots: Vec<SnapshotWrite>,
    /// The state after the event, recorded for later events that point at it.
    pub state_after: Option<i64>,
    pub current: Option<CurrentStateWrite>,
    /// For a redaction: the target event and its redacted JSON.
    pub redaction: Option<(String, String)>,
}

/// `state_before` of a backfilled event: the state around it is not known.
pub const NO_SNAPSHOT: i64 = -1;

/// An event held outside the timeline (auth chains, state received on join).
#[derive(Clone, Debug)]
pub struct OutlierWrite {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu_json: String,
    pub rejected: bool,
}

#[derive(Clone, Debug)]
pub struct RemoteInviteRecord {
    pub room_id: String,
    pub user_id: String,
    pub event_id: String,
    pub room_version: String,
    /// JSON array of stripped state events.
    pub stripped_state: String,
}

#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    /// `pdu` or `edu`.
    pub kind: String,
    pub payload: String,
}

#[derive(Clone, Debug, Default)]
pub struct DestinationRecord {
    pub destination: String,
    pub retry_at: i64,
    pub backoff_ms: i64,
    pub last_success_ts: Option<i64>,
    pub last_failure_ts: Option<i64>,
    pub last_error: Option<String>,
}

#[async_trait]
pub trait FederationStore: Send + Sync {
    async fn persist_remote_event(&self, ev: &RemoteEventWrite) -> Result<()>;
    /// Stores events outside the timeline; events already held are left alone.
    async fn store_outliers(&self, events: &[OutlierWrite]) -> Result<()>;
    /// Puts history from before this server joined into the timeline, below
    /// every position held: `events` newest first, each given the next lower
    /// position (their `stream_pos` is ignored). An event held as an outlier
    /// moves into the timeline; one already in it is left alone. Returns how
    /// many were added. Backfilled events carry no state snapshot
    /// (`state_before` is [`NO_SNAPSHOT`]).
    async fn store_backfilled(&self, events: &[OutlierWrite]) -> Result<usize>;
    /// The events held here (timeline or outlier) among `event_ids`, in no
    /// particular order; unknown ids are skipped. One query per few thousand
    /// ids: answering or taking in a join of a large room reads its whole
    /// state and auth chain.
    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>>;
    /// Whether the event is held and, if so, whether it is an outlier.
    async fn event_is_outlier(&self, event_id: &str) -> Result<Option<bool>>;
    /// The snapshot of the state after an event, if one was recorded or can be
    /// derived (a local state event's own snapshot).
    async fn state_after_snapshot(&self, event_id: &str) -> Result<Option<i64>>;
    /// Records the state after an event held outside the timeline (the state
    /// at a gap in the graph, fetched from another server).
    async fn record_state_after(&self, event_id: &str, snapshot_id: i64) -> Result<()>;
    /// Creates a snapshot on its own (the state of a room joined over federation).
    async fn create_snapshot(&self, snapshot: &SnapshotWrite) -> Result<()>;

    /// Records an invite to (`membership` "invite") or a knock on ("knock")
    /// a room not held here, with the user's membership row, atomically.
    async fn put_remote_invite(
        &self,
        invite: &RemoteInviteRecord,
        membership: &str,
        pos: StreamPos,
    ) -> Result<()>;
    async fn get_remote_invite(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<RemoteInviteRecord>>;
    async fn delete_remote_invite(&self, room_id: &str, user_id: &str) -> Result<()>;
    /// Records a membership in a room we do not hold (a rejected remote invite).
    async fn set_membership_row(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
        event_id: &str,
        pos: StreamPos,
    ) -> Result<()>;

    /// Appends rows to the outbound queue; ids are assigned by the caller.
    async fn outbox_push(&self, rows: &[OutboxRow]) -> Result<()>;
    async fn outbox_peek(&self, destination: &str, limit: usize) -> Result<Vec<OutboxRow>>;
    async fn outbox_delete(&self, destination: &str, ids: &[i64]) -> Result<()>;
    /// Destinations with queued rows.
    async fn outbox_destinations(&self) -> Result<Vec<String>>;
    async fn outbox_max_id(&self) -> Result<i64>;
    async fn outbox_len(&self, destination: &str) -> Result<i64>;

    async fn get_destination(&self, destination: &str) -> Result<Option<DestinationRecord>>;
    async fn put_destination(&self, record: &DestinationRecord) -> Result<()>;
    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>>;

    async fn inbound_txn(&self, origin: &str, txn_id: &str) -> Result<Option<String>>;
    async fn put_inbound_txn(&self, origin: &str, txn_id: &str, response: &str) -> Result<()>;
}
