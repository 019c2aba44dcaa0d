//! Rooms spanning servers: remote events with their resolved state, outliers,
//! remote invites, and the federation transaction queues.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Any, Row, Transaction};

use super::{
    multi_row,
    timeline::{event_from_row, EVENT_COLUMNS},
    SqlStore,
};
use crate::{
    error::Result,
    storage::{
        federation::{
            CurrentStateWrite, DestinationRecord, FederationStore, OutboxRow, OutlierWrite,
            RemoteEventWrite, RemoteInviteRecord, SnapshotWrite, NO_SNAPSHOT,
        },
        StoredEvent, StreamPos,
    },
};

async fn write_snapshot(
    tx: &mut Transaction<'_, Any>,
    numbered: bool,
    s: &SnapshotWrite,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO state_snapshots (snapshot_id, room_id, parent_id) VALUES ($1, $2, $3)",
    )
    .bind(s.snapshot_id)
    .bind(&s.room_id)
    .bind(s.parent)
    .execute(&mut **tx)
    .await?;
    // A joined room's first snapshot is its whole state: many rows at a time.
    for chunk in s.entries.chunks(multi_row::rows_per_chunk(4)) {
        let sql = format!(
            "INSERT INTO state_snapshot_entries (snapshot_id, event_type, state_key, event_id) VALUES {}",
            multi_row::values("(?, ?, ?, ?)", chunk.len(), 1, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (t, k, e) in chunk {
            q = q.bind(s.snapshot_id).bind(t).bind(k).bind(e);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// One membership row, inserted or replaced (and un-forgotten).
fn upsert_membership<'q>(
    room_id: &'q str,
    user_id: &'q str,
    membership: &'q str,
    event_id: &'q str,
    pos: StreamPos,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
            event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(event_id)
    .bind(pos)
}

async fn write_current(
    tx: &mut Transaction<'_, Any>,
    numbered: bool,
    room_id: &str,
    pos: StreamPos,
    c: &CurrentStateWrite,
) -> Result<()> {
    // Rows go in chunks (the whole state when a room is joined over
    // federation); a key listed twice keeps its last entry, as writing the
    // entries one by one would.
    let changed = multi_row::last_per_key(&c.changed, |(t, k, _)| (t.as_str(), k.as_str()));
    for chunk in changed.chunks(multi_row::rows_per_chunk(4)) {
        let sql = format!(
            "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES {}
             ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
            multi_row::values("(?, ?, ?, ?)", chunk.len(), 1, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (t, k, e) in chunk {
            q = q.bind(room_id).bind(t).bind(k).bind(e);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE rooms SET current_snapshot = $1 WHERE room_id = $2")
        .bind(c.snapshot_id)
        .bind(room_id)
        .execute(&mut **tx)
        .await?;
    let memberships = multi_row::last_per_key(&c.memberships, |(user, _, _)| user.as_str());
    for chunk in memberships.chunks(multi_row::rows_per_chunk(5)) {
        let sql = format!(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES {}
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
                event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
            multi_row::values("(?, ?, ?, ?, ?, 0)", chunk.len(), 1, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (user, membership, event_id) in chunk {
            q = q
                .bind(room_id)
                .bind(user)
                .bind(membership)
                .bind(event_id)
                .bind(pos);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1")
        .bind(room_id)
        .execute(&mut **tx)
        .await?;
    for chunk in c.forward_extremities.chunks(multi_row::rows_per_chunk(2)) {
        let sql = format!(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES {}",
            multi_row::values("(?, ?)", chunk.len(), 1, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for extremity in chunk {
            q = q.bind(room_id).bind(extremity);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

fn outbox_from_row(r: &AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        destination: r.try_get("destination")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
    })
}

fn destination_from_row(r: &AnyRow) -> Result<DestinationRecord, sqlx::Error> {
    Ok(DestinationRecord {
        destination: r.try_get("destination")?,
        retry_at: r.try_get("retry_at")?,
        backoff_ms: r.try_get("backoff_ms")?,
        last_success_ts: r.try_get("last_success_ts")?,
        last_failure_ts: r.try_get("last_failure_ts")?,
        last_error: r.try_get("last_error")?,
    })
}

#[async_trait]
impl FederationStore for SqlStore {
    async fn persist_remote_event(&self, ev: &RemoteEventWrite) -> Result<()> {
        let numbered = multi_row::numbered(&self.write);
        let mut tx = self.write.begin().await?;
        for s in &ev.snapshots {
            write_snapshot(&mut tx, numbered, s).await?;
        }
        // An outlier we already hold becomes part of the timeline: replace it.
        sqlx::query("DELETE FROM events WHERE event_id = $1 AND outlier = 1")
            .bind(&ev.event_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth,
                                 pdu_json, state_before, rejected, redacted, outlier)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12)",
        )
        .bind(ev.stream_pos)
        .bind(&ev.event_id)
        .bind(&ev.room_id)
        .bind(&ev.event_type)
        .bind(&ev.state_key)
        .bind(&ev.sender)
        .bind(ev.origin_server_ts)
        .bind(ev.depth)
        .bind(&ev.pdu_json)
        .bind(ev.state_before)
        .bind(ev.rejected as i64)
        .bind(ev.outlier as i64)
        .execute(&mut *tx)
        .await?;
        if let Some(after) = ev.state_after {
            sqlx::query("INSERT INTO event_state_after (event_id, snapshot_id) VALUES ($1, $2)")
                .bind(&ev.event_id)
                .bind(after)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(c) = &ev.current {
            write_current(&mut tx, numbered, &ev.room_id, ev.stream_pos, c).await?;
        }
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
        tx.commit().await?;
        Ok(())
    }

    async fn store_outliers(&self, events: &[OutlierWrite]) -> Result<()> {
        let numbered = multi_row::numbered(&self.write);
        let mut tx = self.write.begin().await?;
        for chunk in events.chunks(multi_row::rows_per_chunk(10)) {
            let sql = format!(
                "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth,
                                     pdu_json, state_before, rejected, redacted, outlier)
                 VALUES {}
                 ON CONFLICT (event_id) DO NOTHING",
                multi_row::values("(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, 1)", chunk.len(), 1, numbered)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ev in chunk {
                q = q
                    .bind(ev.stream_pos)
                    .bind(&ev.event_id)
                    .bind(&ev.room_id)
                    .bind(&ev.event_type)
                    .bind(&ev.state_key)
                    .bind(&ev.sender)
                    .bind(ev.origin_server_ts)
                    .bind(ev.depth)
                    .bind(&ev.pdu_json)
                    .bind(ev.rejected as i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let numbered = multi_row::numbered(&self.read);
        let mut out = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(multi_row::rows_per_chunk(1)) {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
                multi_row::values("?", chunk.len(), 1, numbered)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.read).await? {
                out.push(event_from_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn store_backfilled(&self, events: &[OutlierWrite]) -> Result<usize> {
        let mut tx = self.write.begin().await?;
        let lowest: i64 = sqlx::query("SELECT COALESCE(MIN(stream_pos), 0) AS m FROM events")
            .fetch_one(&mut *tx)
            .await?
            .try_get("m")?;
        let mut pos = lowest.min(0);
        let mut added = 0;
        for ev in events {
            pos -= 1;
            let moved = sqlx::query(
                "UPDATE events SET stream_pos = $1, outlier = 0, state_before = $2
                 WHERE event_id = $3 AND outlier = 1",
            )
            .bind(pos)
            .bind(NO_SNAPSHOT)
            .bind(&ev.event_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let inserted = if moved == 0 {
                sqlx::query(
                    "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth,
                                         pdu_json, state_before, rejected, redacted, outlier)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0)
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(pos)
                .bind(&ev.event_id)
                .bind(&ev.room_id)
                .bind(&ev.event_type)
                .bind(&ev.state_key)
                .bind(&ev.sender)
                .bind(ev.origin_server_ts)
                .bind(ev.depth)
                .bind(&ev.pdu_json)
                .bind(NO_SNAPSHOT)
                .bind(ev.rejected as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                moved
            };
            added += inserted as usize;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn event_is_outlier(&self, event_id: &str) -> Result<Option<bool>> {
        let row = sqlx::query("SELECT outlier FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>("outlier")? != 0),
            None => None,
        })
    }

    async fn state_after_snapshot(&self, event_id: &str) -> Result<Option<i64>> {
        if let Some(r) =
            sqlx::query("SELECT snapshot_id FROM event_state_after WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&self.read)
                .await?
        {
            return Ok(Some(r.try_get("snapshot_id")?));
        }
        let Some(ev) =
            sqlx::query("SELECT state_before, state_key, outlier FROM events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&self.read)
                .await?
        else {
            return Ok(None);
        };
        if ev.try_get::<i64, _>("outlier")? != 0 {
            return Ok(None);
        }
        let state_before: i64 = ev.try_get("state_before")?;
        if state_before == NO_SNAPSHOT {
            // Backfilled: the state around it must be asked for, like an outlier's.
            return Ok(None);
        }
        let state_key: Option<String> = ev.try_get("state_key")?;
        if state_key.is_none() {
            return Ok(Some(state_before));
        }
        // A local state event made a one-entry snapshot on top of its state before.
        let row = sqlx::query(
            "SELECT s.snapshot_id FROM state_snapshots s
             JOIN state_snapshot_entries e ON e.snapshot_id = s.snapshot_id
             WHERE e.event_id = $1 AND COALESCE(s.parent_id, 0) = $2",
        )
        .bind(event_id)
        .bind(state_before)
        .fetch_optional(&self.read)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("snapshot_id")?),
            None => None,
        })
    }

    async fn record_state_after(&self, event_id: &str, snapshot_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_state_after (event_id, snapshot_id) VALUES ($1, $2)
             ON CONFLICT (event_id) DO UPDATE SET snapshot_id = excluded.snapshot_id",
        )
        .bind(event_id)
        .bind(snapshot_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn create_snapshot(&self, snapshot: &SnapshotWrite) -> Result<()> {
        let mut tx = self.write.begin().await?;
        write_snapshot(&mut tx, multi_row::numbered(&self.write), snapshot).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_remote_invite(
        &self,
        invite: &RemoteInviteRecord,
        membership: &str,
        pos: StreamPos,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO remote_invites (room_id, user_id, event_id, room_version, stripped_state) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = excluded.event_id,
                room_version = excluded.room_version, stripped_state = excluded.stripped_state",
        )
        .bind(&invite.room_id)
        .bind(&invite.user_id)
        .bind(&invite.event_id)
        .bind(&invite.room_version)
        .bind(&invite.stripped_state)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
                event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
        )
        .bind(&invite.room_id)
        .bind(&invite.user_id)
        .bind(membership)
        .bind(&invite.event_id)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_remote_invite(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<RemoteInviteRecord>> {
        let row = sqlx::query(
            "SELECT room_id, user_id, event_id, room_version, stripped_state FROM remote_invites WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(match row {
            Some(r) => Some(RemoteInviteRecord {
                room_id: r.try_get("room_id")?,
                user_id: r.try_get("user_id")?,
                event_id: r.try_get("event_id")?,
                room_version: r.try_get("room_version")?,
                stripped_state: r.try_get("stripped_state")?,
            }),
            None => None,
        })
    }

    async fn delete_remote_invite(&self, room_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_membership_row(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
        event_id: &str,
        pos: StreamPos,
    ) -> Result<()> {
        upsert_membership(room_id, user_id, membership, event_id, pos)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn outbox_push(&self, rows: &[OutboxRow]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let now = crate::util::now_ms();
        for row in rows {
            sqlx::query("INSERT INTO federation_outbox (id, destination, kind, payload, created_ts) VALUES ($1, $2, $3, $4, $5)")
                .bind(row.id)
                .bind(&row.destination)
                .bind(&row.kind)
                .bind(&row.payload)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_peek(&self, destination: &str, limit: usize) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, destination, kind, payload FROM federation_outbox WHERE destination = $1 ORDER BY id LIMIT $2",
        )
        .bind(destination)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(outbox_from_row).collect::<Result<_, _>>()?)
    }

    async fn outbox_delete(&self, destination: &str, ids: &[i64]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM federation_outbox WHERE destination = $1 AND id = $2")
                .bind(destination)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_destinations(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT destination FROM federation_outbox")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("destination"))
            .collect::<Result<_, _>>()?)
    }

    async fn outbox_max_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM federation_outbox")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("m")?)
    }

    async fn outbox_len(&self, destination: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM federation_outbox WHERE destination = $1")
            .bind(destination)
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("n")?)
    }

    async fn get_destination(&self, destination: &str) -> Result<Option<DestinationRecord>> {
        let row = sqlx::query(
            "SELECT destination, retry_at, backoff_ms, last_success_ts, last_failure_ts, last_error
             FROM federation_destinations WHERE destination = $1",
        )
        .bind(destination)
        .fetch_optional(&self.read)
        .await?;
        Ok(match row {
            Some(r) => Some(destination_from_row(&r)?),
            None => None,
        })
    }

    async fn put_destination(&self, d: &DestinationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_destinations (destination, retry_at, backoff_ms, last_success_ts, last_failure_ts, last_error)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (destination) DO UPDATE SET retry_at = excluded.retry_at, backoff_ms = excluded.backoff_ms,
                last_success_ts = excluded.last_success_ts, last_failure_ts = excluded.last_failure_ts,
                last_error = excluded.last_error",
        )
        .bind(&d.destination)
        .bind(d.retry_at)
        .bind(d.backoff_ms)
        .bind(d.last_success_ts)
        .bind(d.last_failure_ts)
        .bind(&d.last_error)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>> {
        let rows = sqlx::query(
            "SELECT destination, retry_at, backoff_ms, last_success_ts, last_failure_ts, last_error
             FROM federation_destinations ORDER BY destination",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(destination_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn inbound_txn(&self, origin: &str, txn_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
        )
        .bind(origin)
        .bind(txn_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("response")?),
            None => None,
        })
    }

    async fn put_inbound_txn(&self, origin: &str, txn_id: &str, response: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(response)
        .bind(crate::util::now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
