//! The event timeline, and the one transaction that persists an accepted event.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{Direction, PersistEvent, StoredEvent, StreamPos, TimelineStore},
};

const EVENT_COLUMNS: &str =
    "stream_pos, event_id, room_id, pdu_json, state_before, rejected, txn_device, txn_id";

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let txn_device: Option<String> = row.try_get("txn_device")?;
    let txn_id: Option<String> = row.try_get("txn_id")?;
    Ok(StoredEvent {
        stream_pos: row.try_get("stream_pos")?,
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        pdu_json: row.try_get("pdu_json")?,
        state_before: row.try_get("state_before")?,
        rejected: flag(row, "rejected")?,
        txn: txn_device.zip(txn_id),
    })
}

#[async_trait]
impl TimelineStore for SqlStore {
    async fn persist_event(&self, ev: &PersistEvent) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let (txn_device, txn_id) = match &ev.txn {
            Some(t) => (Some(t.device_id.as_str()), Some(t.txn_id.as_str())),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth,
                                 pdu_json, state_before, rejected, redacted, txn_device, txn_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11, $12)",
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
        .bind(txn_device)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?;

        if let Some(t) = &ev.txn {
            sqlx::query("INSERT INTO txn_ids (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)")
                .bind(&t.user_id)
                .bind(&t.device_id)
                .bind(&t.key)
                .bind(&ev.event_id)
                .execute(&mut *tx)
                .await?;
        }

        if let (Some(state_key), Some((snapshot, parent))) = (&ev.state_key, ev.state_after) {
            sqlx::query(
                "INSERT INTO state_snapshots (snapshot_id, room_id, parent_id) VALUES ($1, $2, $3)",
            )
            .bind(snapshot)
            .bind(&ev.room_id)
            .bind(if parent == 0 { None } else { Some(parent) })
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO state_snapshot_entries (snapshot_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)")
                .bind(snapshot)
                .bind(&ev.event_type)
                .bind(state_key)
                .bind(&ev.event_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
            )
            .bind(&ev.room_id)
            .bind(&ev.event_type)
            .bind(state_key)
            .bind(&ev.event_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE rooms SET current_snapshot = $1 WHERE room_id = $2")
                .bind(snapshot)
                .bind(&ev.room_id)
                .execute(&mut *tx)
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
                .execute(&mut *tx)
                .await?;
            }
        }

        if let Some((redacted_id, redacted_json)) = &ev.redaction {
            sqlx::query("UPDATE events SET pdu_json = $1, redacted = 1 WHERE event_id = $2 AND room_id = $3")
                .bind(redacted_json)
                .bind(redacted_id)
                .bind(&ev.room_id)
                .execute(&mut *tx)
                .await?;
        }

        sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1")
            .bind(&ev.room_id)
            .execute(&mut *tx)
            .await?;
        for extremity in &ev.forward_extremities {
            sqlx::query("INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)")
                .bind(&ev.room_id)
                .bind(extremity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(event_from_row).transpose()?)
    }

    async fn current_state_events(&self, room_id: &str) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT e.stream_pos, e.event_id, e.room_id, e.pdu_json, e.state_before, e.rejected, e.txn_device, e.txn_id
             FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = $1",
        )
        .bind(room_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    async fn state_key_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<(StreamPos, String)>> {
        let rows = sqlx::query(
            "SELECT stream_pos, pdu_json FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND rejected = 0
             ORDER BY stream_pos ASC",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("stream_pos")?, r.try_get("pdu_json")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let sql = match dir {
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3
                 ORDER BY stream_pos ASC LIMIT $4"
            ),
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos <= $2 AND stream_pos > $3
                 ORDER BY stream_pos DESC LIMIT $4"
            ),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(from)
            .bind(to)
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    async fn room_max_pos(&self, room_id: &str) -> Result<StreamPos> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM events WHERE room_id = $1")
                .bind(room_id)
                .fetch_one(&self.read)
                .await?;
        Ok(row.try_get("m")?)
    }

    async fn max_stream_pos(&self) -> Result<StreamPos> {
        let events: i64 = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM events")
            .fetch_one(&self.read)
            .await?
            .try_get("m")?;
        let data: i64 = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM account_data")
            .fetch_one(&self.read)
            .await?
            .try_get("m")?;
        Ok(events.max(data))
    }

    async fn find_txn(&self, user_id: &str, device_id: &str, key: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.try_get("event_id")).transpose()?)
    }
}
