//! The per-device to-device inbox and `sendToDevice` transaction ids.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::{
    error::Result,
    storage::{InboxRecord, StreamPos, ToDeviceMessage, ToDeviceStore},
};

#[async_trait]
impl ToDeviceStore for SqlStore {
    async fn send_to_device(
        &self,
        sender_user: &str,
        sender_device: &str,
        txn_key: &str,
        pos: StreamPos,
        messages: &[ToDeviceMessage],
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        // The transaction id goes in first: a retry racing the original finds
        // it taken and stores nothing.
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_key) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, device_id, txn_key) DO NOTHING",
        )
        .bind(sender_user)
        .bind(sender_device)
        .bind(txn_key)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        for m in messages {
            sqlx::query(
                "INSERT INTO to_device_inbox (user_id, device_id, stream_pos, sender, event_type, content)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&m.user_id)
            .bind(&m.device_id)
            .bind(pos)
            .bind(&m.sender)
            .bind(&m.event_type)
            .bind(&m.content)
            .execute(&mut *tx)
            .await?;
        }
        // Inbox rows are deleted once delivered; the watermark keeps their
        // position from being handed out again after a restart.
        sqlx::query(
            "INSERT INTO stream_watermarks (stream, stream_pos) VALUES ('to_device', $1)
             ON CONFLICT (stream) DO UPDATE SET stream_pos = excluded.stream_pos
             WHERE stream_watermarks.stream_pos < excluded.stream_pos",
        )
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn inbox(
        &self,
        user_id: &str,
        device_id: &str,
        upto: StreamPos,
    ) -> Result<Vec<InboxRecord>> {
        let rows = sqlx::query(
            "SELECT stream_pos, sender, event_type, content FROM to_device_inbox
             WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InboxRecord {
                    stream_pos: r.try_get("stream_pos")?,
                    sender: r.try_get("sender")?,
                    event_type: r.try_get("event_type")?,
                    content: r.try_get("content")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn delete_inbox(&self, user_id: &str, device_id: &str, upto: StreamPos) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }
}
