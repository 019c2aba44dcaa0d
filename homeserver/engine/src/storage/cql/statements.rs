//! Every statement of the event log, prepared once per connection.
//!
//! Reads run at the configured read consistency, writes at the write
//! consistency. All writes are idempotent (same values, or a position used
//! as the write timestamp), so the driver may retry them after a timeout.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{consistency, db_error};
use crate::config::Cql as CqlConfig;
use crate::error::Result;

/// The columns of an `events` row, in `EventRow`'s order.
pub(super) const EVENT_COLUMNS: &str = "stream_pos, event_id, event_type, state_key, sender, \
     origin_server_ts, depth, pdu_json, redacted_pdu_json, state_before, rejected, txn_device, txn_id";

pub(super) struct Statements {
    pub insert_event: PreparedStatement,
    pub insert_by_id: PreparedStatement,
    pub insert_bucket: PreparedStatement,
    pub publish_max_pos: PreparedStatement,

    pub get_by_id: PreparedStatement,
    pub get_event: PreparedStatement,
    pub buckets_asc: PreparedStatement,
    pub buckets_desc: PreparedStatement,
    pub range_asc: PreparedStatement,
    pub range_desc: PreparedStatement,
    pub get_max_pos: PreparedStatement,

    pub redact: PreparedStatement,

    pub ids_in_range: PreparedStatement,
    pub delete_by_id: PreparedStatement,
    pub delete_bucket_rows: PreparedStatement,
    pub delete_range: PreparedStatement,
    pub delete_bucket_index: PreparedStatement,
    pub delete_room_index: PreparedStatement,
    pub delete_max_pos: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, config: &CqlConfig) -> Result<Self> {
        let ks = &config.keyspace;
        let read = consistency(config.read_consistency);
        let write = consistency(config.write_consistency);
        let prep = |cql: String, level| async move {
            let mut st = session.prepare(cql).await.map_err(db_error)?;
            st.set_consistency(level);
            st.set_is_idempotent(true);
            Ok::<_, crate::error::Error>(st)
        };
        Ok(Self {
            insert_event: prep(
                format!(
                    "INSERT INTO {ks}.events (room_id, bucket, stream_pos, event_id, event_type, \
                     state_key, sender, origin_server_ts, depth, pdu_json, state_before, rejected, \
                     txn_device, txn_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                write,
            )
            .await?,
            insert_by_id: prep(
                format!(
                    "INSERT INTO {ks}.events_by_id (event_id, room_id, stream_pos) VALUES (?, ?, ?)"
                ),
                write,
            )
            .await?,
            insert_bucket: prep(
                format!("INSERT INTO {ks}.room_buckets (room_id, bucket) VALUES (?, ?)"),
                write,
            )
            .await?,
            publish_max_pos: prep(
                format!(
                    "UPDATE {ks}.room_max_pos USING TIMESTAMP ? SET max_pos = ? WHERE room_id = ?"
                ),
                write,
            )
            .await?,
            get_by_id: prep(
                format!("SELECT room_id, stream_pos FROM {ks}.events_by_id WHERE event_id = ?"),
                read,
            )
            .await?,
            get_event: prep(
                format!(
                    "SELECT {EVENT_COLUMNS} FROM {ks}.events \
                     WHERE room_id = ? AND bucket = ? AND stream_pos = ? AND event_id = ?"
                ),
                read,
            )
            .await?,
            buckets_asc: prep(
                format!(
                    "SELECT bucket FROM {ks}.room_buckets WHERE room_id = ? \
                     AND bucket >= ? AND bucket <= ? ORDER BY bucket ASC LIMIT ?"
                ),
                read,
            )
            .await?,
            buckets_desc: prep(
                format!(
                    "SELECT bucket FROM {ks}.room_buckets WHERE room_id = ? \
                     AND bucket >= ? AND bucket <= ? ORDER BY bucket DESC LIMIT ?"
                ),
                read,
            )
            .await?,
            range_asc: prep(
                format!(
                    "SELECT {EVENT_COLUMNS} FROM {ks}.events WHERE room_id = ? AND bucket = ? \
                     AND stream_pos >= ? AND stream_pos <= ? ORDER BY stream_pos ASC LIMIT ?"
                ),
                read,
            )
            .await?,
            range_desc: prep(
                format!(
                    "SELECT {EVENT_COLUMNS} FROM {ks}.events WHERE room_id = ? AND bucket = ? \
                     AND stream_pos >= ? AND stream_pos <= ? ORDER BY stream_pos DESC LIMIT ?"
                ),
                read,
            )
            .await?,
            get_max_pos: prep(
                format!("SELECT max_pos FROM {ks}.room_max_pos WHERE room_id = ?"),
                read,
            )
            .await?,
            redact: prep(
                format!(
                    "UPDATE {ks}.events SET redacted_pdu_json = ?, pdu_json = null \
                     WHERE room_id = ? AND bucket = ? AND stream_pos = ? AND event_id = ?"
                ),
                write,
            )
            .await?,
            ids_in_range: prep(
                format!(
                    "SELECT stream_pos, event_id FROM {ks}.events WHERE room_id = ? AND bucket = ? \
                     AND stream_pos >= ? AND stream_pos < ? ORDER BY stream_pos ASC LIMIT ?"
                ),
                read,
            )
            .await?,
            delete_by_id: prep(
                format!("DELETE FROM {ks}.events_by_id WHERE event_id = ?"),
                write,
            )
            .await?,
            delete_bucket_rows: prep(
                format!("DELETE FROM {ks}.events WHERE room_id = ? AND bucket = ?"),
                write,
            )
            .await?,
            delete_range: prep(
                format!(
                    "DELETE FROM {ks}.events WHERE room_id = ? AND bucket = ? AND stream_pos < ?"
                ),
                write,
            )
            .await?,
            delete_bucket_index: prep(
                format!("DELETE FROM {ks}.room_buckets WHERE room_id = ? AND bucket = ?"),
                write,
            )
            .await?,
            delete_room_index: prep(
                format!("DELETE FROM {ks}.room_buckets WHERE room_id = ?"),
                write,
            )
            .await?,
            delete_max_pos: prep(
                format!("DELETE FROM {ks}.room_max_pos USING TIMESTAMP ? WHERE room_id = ?"),
                write,
            )
            .await?,
        })
    }
}
