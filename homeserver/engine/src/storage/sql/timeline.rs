//! The event timeline. Accepted events are written by the group-commit writer
//! (`group_commit.rs`).

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{Direction, PersistEvent, StoredEvent, StreamPos, TimelineStore},
};

/// The columns [`event_from_row`] reads.
pub(super) const EVENT_COLUMNS: &str =
    "stream_pos, event_id, room_id, pdu_json, state_before, rejected, txn_device, txn_id";

pub(super) fn event_from_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
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
        // Batched with concurrent sends into one transaction: `group_commit.rs`.
        self.events.write(ev.clone()).await
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
            "SELECT stream_pos, pdu_json FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND rejected = 0 AND outlier = 0
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
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND outlier = 0
                 ORDER BY stream_pos ASC LIMIT $4"
            ),
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos <= $2 AND stream_pos > $3 AND outlier = 0
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
            sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM events WHERE room_id = $1 AND outlier = 0")
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
