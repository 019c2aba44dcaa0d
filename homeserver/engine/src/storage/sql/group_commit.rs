//! Group commit for accepted events.
//!
//! Every local send used to be its own transaction on the single SQLite writer
//! connection, and each statement of it a round trip to sqlx's worker thread:
//! the writer, not the CPU, capped sustained sends at a few hundred per second.
//! Here one task owns event persistence. While a batch is being committed, the
//! sends that arrive queue up; the next batch takes all of them (from every
//! room) and writes them in one transaction with multi-row statements. A
//! caller is answered only after the transaction holding its event committed,
//! so an acknowledged event is durable exactly as before (SQLite WAL with
//! `synchronous = NORMAL` survives a killed process; PostgreSQL commits are
//! fsynced). An idle server commits a lone event at once: batching never waits
//! for company.
//!
//! If a batch fails (one event conflicts, say), each of its events is retried
//! in a transaction of its own, so only the offending event reports the error.

use std::collections::HashMap;

use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::{Error, Result},
    storage::{PersistEvent, TxnRecord},
};

/// At most this many events per transaction: bounds the statement size
/// (12 parameters per event, far below SQLite's and PostgreSQL's limits) and
/// the number of distinct prepared statements each connection caches.
const MAX_BATCH: usize = 64;

/// Sends waiting for the writer. Beyond this, senders wait for room in the
/// queue (backpressure) rather than growing memory without bound.
const QUEUE: usize = 4096;

struct Job {
    event: PersistEvent,
    done: oneshot::Sender<Result<()>>,
}

/// The handle `persist_event` uses; the writer task ends when it is dropped.
pub(super) struct EventWriter {
    jobs: mpsc::Sender<Job>,
}

impl EventWriter {
    pub(super) fn spawn(pool: AnyPool, sqlite: bool) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, sqlite, rx));
        Self { jobs }
    }

    /// Persists one event; returns once the transaction holding it committed.
    pub(super) async fn write(&self, event: PersistEvent) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { event, done })
            .await
            .map_err(|_| Error::unknown("the event writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::unknown("the event writer dropped a write"))?
    }
}

async fn run(pool: AnyPool, sqlite: bool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<&PersistEvent> = batch.iter().map(|j| &j.event).collect();
        let started = std::time::Instant::now();
        let outcome = write_batch(&pool, sqlite, &events).await;
        tracing::trace!(
            size = events.len(),
            micros = started.elapsed().as_micros() as u64,
            "event batch written"
        );
        match outcome {
            Ok(()) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.done.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, size = batch.len(), "event batch failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = write_batch(&pool, sqlite, &[&job.event]).await;
                    let _ = job.done.send(result);
                }
            }
        }
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Writes `events` (in stream order) and everything they change, in one
/// transaction. The result is the same as persisting them one after another.
///
/// The bulk of it (the events, their txn ids, the rooms' new forward
/// extremities) is four multi-row statements. On SQLite they go to the
/// connection's worker thread as one multi-statement query, since each round
/// trip to that thread costs more than the statements themselves; PostgreSQL
/// cannot prepare several statements at once, so there they go one by one.
async fn write_batch(pool: &AnyPool, sqlite: bool, events: &[&PersistEvent]) -> Result<()> {
    let mut tx = pool.begin().await?;
    let txns: Vec<(&TxnRecord, &str)> = events
        .iter()
        .filter_map(|ev| ev.txn.as_ref().map(|t| (t, ev.event_id.as_str())))
        .collect();
    let extremities = Extremities::of(events);
    if sqlite {
        let mut sql = events_sql(events.len(), 1);
        let mut next = 1 + events.len() * EVENT_PARAMS;
        if !txns.is_empty() {
            sql.push_str(";\n");
            sql.push_str(&txn_sql(txns.len(), next));
            next += txns.len() * 4;
        }
        sql.push_str(";\n");
        sql.push_str(&extremities.delete_sql(next));
        next += extremities.rooms.len();
        if !extremities.rows.is_empty() {
            sql.push_str(";\n");
            sql.push_str(&extremities.insert_sql(next));
        }
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let q = bind_events(q, events);
        let q = bind_txns(q, &txns);
        let q = extremities.bind_delete(q);
        extremities.bind_insert(q).execute(&mut *tx).await?;
    } else {
        let q = sqlx::query(sqlx::AssertSqlSafe(events_sql(events.len(), 1)));
        bind_events(q, events).execute(&mut *tx).await?;
        if !txns.is_empty() {
            let q = sqlx::query(sqlx::AssertSqlSafe(txn_sql(txns.len(), 1)));
            bind_txns(q, &txns).execute(&mut *tx).await?;
        }
        let q = sqlx::query(sqlx::AssertSqlSafe(extremities.delete_sql(1)));
        extremities.bind_delete(q).execute(&mut *tx).await?;
        if !extremities.rows.is_empty() {
            let q = sqlx::query(sqlx::AssertSqlSafe(extremities.insert_sql(1)));
            extremities.bind_insert(q).execute(&mut *tx).await?;
        }
    }
    // State and redactions, in stream order: rare next to messages, and each
    // depends on the one before (current state, the redacted event's JSON).
    // Forward extremities do not depend on them, so writing those first is safe.
    for ev in events {
        apply_state(&mut tx, ev).await?;
        if let Some((redacted_id, redacted_json)) = &ev.redaction {
            sqlx::query(
                "UPDATE events SET pdu_json = $1, redacted = 1 WHERE event_id = $2 AND room_id = $3",
            )
            .bind(redacted_json)
            .bind(redacted_id)
            .bind(&ev.room_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// `($first, $first+1, …)` groups of `width` placeholders for `rows` rows,
/// with `literal` appended inside every group.
fn placeholders(rows: usize, width: usize, first: usize, literal: &str) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + r * width + c).to_string());
        }
        out.push_str(literal);
        out.push(')');
    }
    out
}

const EVENT_PARAMS: usize = 12;

fn events_sql(rows: usize, first: usize) -> String {
    format!(
        "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth,
                             pdu_json, state_before, txn_device, txn_id, rejected, redacted) VALUES {}",
        placeholders(rows, EVENT_PARAMS, first, ", 0, 0")
    )
}

fn bind_events<'q>(mut q: AnyQuery<'q>, events: &[&'q PersistEvent]) -> AnyQuery<'q> {
    for ev in events {
        let (txn_device, txn_id) = match &ev.txn {
            Some(t) => (Some(t.device_id.as_str()), Some(t.txn_id.as_str())),
            None => (None, None),
        };
        q = q
            .bind(ev.stream_pos)
            .bind(ev.event_id.as_str())
            .bind(ev.room_id.as_str())
            .bind(ev.event_type.as_str())
            .bind(ev.state_key.as_deref())
            .bind(ev.sender.as_str())
            .bind(ev.origin_server_ts)
            .bind(ev.depth)
            .bind(ev.pdu_json.as_str())
            .bind(ev.state_before)
            .bind(txn_device)
            .bind(txn_id);
    }
    q
}

fn txn_sql(rows: usize, first: usize) -> String {
    format!(
        "INSERT INTO txn_ids (user_id, device_id, txn_id, event_id) VALUES {}",
        placeholders(rows, 4, first, "")
    )
}

fn bind_txns<'q>(mut q: AnyQuery<'q>, txns: &[(&'q TxnRecord, &'q str)]) -> AnyQuery<'q> {
    for (t, event_id) in txns {
        q = q
            .bind(t.user_id.as_str())
            .bind(t.device_id.as_str())
            .bind(t.key.as_str())
            .bind(*event_id);
    }
    q
}

/// Each room's forward extremities become those of its last event in the batch.
struct Extremities<'a> {
    rooms: Vec<&'a str>,
    rows: Vec<(&'a str, &'a str)>,
}

impl<'a> Extremities<'a> {
    fn of(events: &[&'a PersistEvent]) -> Self {
        let mut last: HashMap<&str, &PersistEvent> = HashMap::new();
        for ev in events {
            last.insert(ev.room_id.as_str(), ev);
        }
        let mut rooms: Vec<&str> = last.keys().copied().collect();
        rooms.sort_unstable();
        let rows = rooms
            .iter()
            .flat_map(|room| {
                last[room]
                    .forward_extremities
                    .iter()
                    .map(move |e| (*room, e.as_str()))
            })
            .collect();
        Self { rooms, rows }
    }

    fn delete_sql(&self, first: usize) -> String {
        let list: Vec<String> = (0..self.rooms.len())
            .map(|i| format!("${}", first + i))
            .collect();
        format!(
            "DELETE FROM forward_extremities WHERE room_id IN ({})",
            list.join(", ")
        )
    }

    fn bind_delete<'q>(&self, mut q: AnyQuery<'q>) -> AnyQuery<'q>
    where
        'a: 'q,
    {
        for room in &self.rooms {
            q = q.bind(*room);
        }
        q
    }

    fn insert_sql(&self, first: usize) -> String {
        format!(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES {}",
            placeholders(self.rows.len(), 2, first, "")
        )
    }

    fn bind_insert<'q>(&self, mut q: AnyQuery<'q>) -> AnyQuery<'q>
    where
        'a: 'q,
    {
        for (room, event_id) in &self.rows {
            q = q.bind(*room).bind(*event_id);
        }
        q
    }
}

/// A state event's new snapshot, current state and membership. Rare next to
/// messages, so these stay one statement each, in stream order.
async fn apply_state(tx: &mut Transaction<'_, Any>, ev: &PersistEvent) -> Result<()> {
    let (Some(state_key), Some((snapshot, parent))) = (&ev.state_key, ev.state_after) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO state_snapshots (snapshot_id, room_id, parent_id) VALUES ($1, $2, $3)",
    )
    .bind(snapshot)
    .bind(&ev.room_id)
    .bind(if parent == 0 { None } else { Some(parent) })
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO state_snapshot_entries (snapshot_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)")
        .bind(snapshot)
        .bind(&ev.event_type)
        .bind(state_key)
        .bind(&ev.event_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )
    .bind(&ev.room_id)
    .bind(&ev.event_type)
    .bind(state_key)
    .bind(&ev.event_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE rooms SET current_snapshot = $1 WHERE room_id = $2")
        .bind(snapshot)
        .bind(&ev.room_id)
        .execute(&mut **tx)
        .await?;
    if let Some(membership) = &ev.membership {
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
                event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
        )
        .bind(&ev.room_id)
        .bind(state_key)
        .bind(membership)
        .bind(&ev.event_id)
        .bind(ev.stream_pos)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_rows_consecutively() {
        assert_eq!(placeholders(2, 2, 1, ""), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3, 5, ", 0"), "($5, $6, $7, 0)");
    }
}
