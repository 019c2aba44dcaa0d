//! The keyspace and tables of the event log, created on connect.
//!
//! Every statement is `IF NOT EXISTS`, so any number of instances may start
//! at once; the driver waits for schema agreement after each one.

use scylla::client::session::Session;
use scylla::statement::{unprepared::Statement, Consistency};

use super::{db_error, rows};
use crate::config::Cql as CqlConfig;
use crate::error::Result;

/// Table definitions; `{ks}` is the configured keyspace.
const TABLES: &[&str] = &[
    // One partition per (room, bucket); rows ordered by position, so a
    // /messages page is one slice. `redacted_pdu_json` is a column of its own
    // so that re-appending an event (a retry) cannot undo its redaction.
    // The event id completes the key: an append whose SQL commit then fails
    // (a position or id already taken there) adds a row of its own instead
    // of overwriting the event that holds the position.
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
        PRIMARY KEY ((room_id, bucket), stream_pos, event_id)
    ) WITH CLUSTERING ORDER BY (stream_pos ASC, event_id ASC)",
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
    // Keyspace-wide settings fixed at creation: `bucket_shift`.
    "CREATE TABLE IF NOT EXISTS {ks}.meta (
        name text PRIMARY KEY,
        value bigint
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

/// The keyspace's bucket shift: the one recorded in `meta`, or `default`
/// recorded now if the keyspace is new. The first instance to record it
/// wins (a lightweight transaction, once per keyspace); the others, and
/// every later start, read it back (at `SERIAL`, so they see that write).
pub(super) async fn bucket_shift(
    session: &Session,
    config: &CqlConfig,
    default: u32,
) -> Result<u32> {
    let ks = &config.keyspace;
    let mut read = Statement::new(format!(
        "SELECT value FROM {ks}.meta WHERE name = 'bucket_shift'"
    ));
    read.set_consistency(Consistency::Serial);
    let recorded = |result| -> Result<Option<i64>> {
        Ok(rows::<(Option<i64>,)>(result)?
            .into_iter()
            .next()
            .and_then(|(v,)| v))
    };
    let mut shift = recorded(
        session
            .query_unpaged(read.clone(), ())
            .await
            .map_err(db_error)?,
    )?;
    if shift.is_none() {
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.meta (name, value) VALUES ('bucket_shift', ?) IF NOT EXISTS"
                ),
                (i64::from(default),),
            )
            .await
            .map_err(db_error)?;
        shift = recorded(session.query_unpaged(read, ()).await.map_err(db_error)?)?;
    }
    match shift {
        Some(s @ 0..=62) => {
            if s != i64::from(default) {
                tracing::info!(keyspace = %ks, shift = s, "using the keyspace's recorded bucket shift");
            }
            Ok(s as u32)
        }
        other => Err(crate::error::Error::unknown(format!(
            "keyspace {ks} records an invalid bucket shift {other:?}"
        ))),
    }
}
