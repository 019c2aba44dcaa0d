//! The keyspace and tables of the event log, created on connect.
//!
//! Every statement is `IF NOT EXISTS`, so any number of instances may start
//! at once; the driver waits for schema agreement after each one.

use scylla::client::session::Session;

use super::db_error;
use crate::config::Cql as CqlConfig;
use crate::error::Result;

/// Table definitions; `{ks}` is the configured keyspace.
const TABLES: &[&str] = &[
    // One partition per (room, bucket); rows ordered by position, so a
    // /messages page is one slice. `redacted_pdu_json` is a column of its own
    // so that re-appending an event (a retry) cannot undo its redaction.
    "CREATE TABLE IF NOT EXISTS {ks}.events (
        room_id text,
        bucket bigint,
        stream_pos bigint,
        event_id text,
        event_type text,
        state_key text,
        sender text,
        origin_server_ts bigint,
        depth bigint,
        pdu_json text,
        redacted_pdu_json text,
        state_before bigint,
        rejected boolean,
        txn_device text,
        txn_id text,
        PRIMARY KEY ((room_id, bucket), stream_pos)
    ) WITH CLUSTERING ORDER BY (stream_pos ASC)",
    // Point reads by event id: one small partition per event.
    "CREATE TABLE IF NOT EXISTS {ks}.events_by_id (
        event_id text PRIMARY KEY,
        room_id text,
        stream_pos bigint
    )",
    // The buckets a room has events in: range reads visit only these.
    "CREATE TABLE IF NOT EXISTS {ks}.room_buckets (
        room_id text,
        bucket bigint,
        PRIMARY KEY (room_id, bucket)
    ) WITH CLUSTERING ORDER BY (bucket ASC)",
    // Written with `USING TIMESTAMP <position>`: the highest position wins
    // whatever order the writes arrive in, with no read-before-write.
    "CREATE TABLE IF NOT EXISTS {ks}.room_max_pos (
        room_id text PRIMARY KEY,
        max_pos bigint
    )",
];

pub(super) async fn create(session: &Session, config: &CqlConfig) -> Result<()> {
    // The keyspace name and datacenter were validated as plain identifiers,
    // so formatting them into DDL cannot inject anything.
    let replication = if config.datacenter.is_empty() {
        format!(
            "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            config.replication_factor
        )
    } else {
        format!(
            "{{'class': 'NetworkTopologyStrategy', '{}': {}}}",
            config.datacenter, config.replication_factor
        )
    };
    let ks = &config.keyspace;
    session
        .query_unpaged(
            format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"),
            (),
        )
        .await
        .map_err(db_error)?;
    for table in TABLES {
        session
            .query_unpaged(table.replace("{ks}", ks), ())
            .await
            .map_err(db_error)?;
    }
    Ok(())
}
