//! Read receipts and delivery receipts.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::SqlStore;
use crate::{
    error::Result,
    storage::{ReceiptRecord, ReceiptStore, StreamPos},
};

fn receipt_from_row(row: &AnyRow) -> Result<ReceiptRecord, sqlx::Error> {
    Ok(ReceiptRecord {
        room_id: row.try_get("room_id")?,
        receipt_type: row.try_get("receipt_type")?,
        user_id: row.try_get("user_id")?,
        thread_id: row.try_get("thread_id")?,
        event_id: row.try_get("event_id")?,
        ts: row.try_get("ts")?,
        stream_pos: row.try_get("stream_pos")?,
    })
}

#[async_trait]
impl ReceiptStore for SqlStore {
    async fn put_receipt(&self, r: &ReceiptRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
                event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
        )
        .bind(&r.room_id)
        .bind(&r.receipt_type)
        .bind(&r.user_id)
        .bind(&r.thread_id)
        .bind(&r.event_id)
        .bind(r.ts)
        .bind(r.stream_pos)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn put_delivery_receipt(&self, r: &ReceiptRecord, event_sender: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO delivery_receipts (room_id, event_id, user_id, event_sender, ts, stream_pos)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, user_id) DO NOTHING",
        )
        .bind(&r.room_id)
        .bind(&r.event_id)
        .bind(&r.user_id)
        .bind(event_sender)
        .bind(r.ts)
        .bind(r.stream_pos)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn receipts_since(
        &self,
        room_id: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<ReceiptRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
             WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(room_id)
        .bind(since)
        .bind(upto)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(receipt_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn delivery_receipts_for_sender(
        &self,
        sender: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<ReceiptRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, 'org.matrix.msc4089.delivery' AS receipt_type, user_id, '' AS thread_id, event_id, ts, stream_pos
             FROM delivery_receipts WHERE event_sender = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(sender)
        .bind(since)
        .bind(upto)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(receipt_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn max_receipt_pos(&self) -> Result<StreamPos> {
        let a: i64 = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM receipts")
            .fetch_one(&self.read)
            .await?
            .try_get("m")?;
        let b: i64 = sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM delivery_receipts")
            .fetch_one(&self.read)
            .await?
            .try_get("m")?;
        Ok(a.max(b))
    }
}
