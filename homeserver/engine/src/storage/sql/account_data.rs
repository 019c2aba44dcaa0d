//! Global (`room_id = ''`) and per-room account data.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::{
    error::Result,
    storage::{AccountDataRecord, AccountDataStore, StreamPos},
};

#[async_trait]
impl AccountDataStore for SqlStore {
    async fn put_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
        content: &str,
        pos: StreamPos,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, event_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, room_id, event_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or(""))
        .bind(event_type)
        .bind(content)
        .bind(pos)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND event_type = $3")
            .bind(user_id)
            .bind(room_id.unwrap_or(""))
            .bind(event_type)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("content")).transpose()?)
    }

    async fn account_data_since(
        &self,
        user_id: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, event_type, content, stream_pos FROM account_data
             WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(since)
        .bind(upto)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let room_id: String = r.try_get("room_id")?;
                Ok(AccountDataRecord {
                    room_id: (!room_id.is_empty()).then_some(room_id),
                    event_type: r.try_get("event_type")?,
                    content: r.try_get("content")?,
                    stream_pos: r.try_get("stream_pos")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
