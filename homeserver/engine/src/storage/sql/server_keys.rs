//! Servers' signing keys and their signed key responses.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::{
    error::Result,
    storage::{KeyResponseRecord, ServerKeyRecord, ServerKeyStore},
};

#[async_trait]
impl ServerKeyStore for SqlStore {
    async fn put_server_keys(
        &self,
        keys: &[ServerKeyRecord],
        response: Option<&KeyResponseRecord>,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for key in keys {
            // A key's validity only grows, so an older response fetched late
            // (through a notary, say) cannot shorten it.
            sqlx::query(
                "INSERT INTO server_signing_keys
                    (server_name, key_id, public_key, valid_until_ts, expired_ts)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (server_name, key_id) DO UPDATE SET
                    public_key = excluded.public_key,
                    valid_until_ts = CASE
                        WHEN excluded.valid_until_ts > server_signing_keys.valid_until_ts
                        THEN excluded.valid_until_ts
                        ELSE server_signing_keys.valid_until_ts END,
                    expired_ts = COALESCE(server_signing_keys.expired_ts, excluded.expired_ts)",
            )
            .bind(&key.server_name)
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired_ts)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(r) = response {
            sqlx::query(
                "INSERT INTO server_key_responses
                    (server_name, response_json, valid_until_ts, fetched_ts)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (server_name) DO UPDATE SET
                    response_json = excluded.response_json,
                    valid_until_ts = excluded.valid_until_ts,
                    fetched_ts = excluded.fetched_ts",
            )
            .bind(&r.server_name)
            .bind(&r.response_json)
            .bind(r.valid_until_ts)
            .bind(r.fetched_ts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn server_keys(&self, server_name: &str) -> Result<Vec<ServerKeyRecord>> {
        let rows = sqlx::query(
            "SELECT server_name, key_id, public_key, valid_until_ts, expired_ts
             FROM server_signing_keys WHERE server_name = $1 ORDER BY key_id",
        )
        .bind(server_name)
        .fetch_all(&self.read)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            keys.push(ServerKeyRecord {
                server_name: row.try_get("server_name")?,
                key_id: row.try_get("key_id")?,
                public_key: row.try_get("public_key")?,
                valid_until_ts: row.try_get("valid_until_ts")?,
                expired_ts: row.try_get("expired_ts")?,
            });
        }
        Ok(keys)
    }

    async fn key_response(&self, server_name: &str) -> Result<Option<KeyResponseRecord>> {
        let row = sqlx::query(
            "SELECT server_name, response_json, valid_until_ts, fetched_ts
             FROM server_key_responses WHERE server_name = $1",
        )
        .bind(server_name)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(KeyResponseRecord {
            server_name: row.try_get("server_name")?,
            response_json: row.try_get("response_json")?,
            valid_until_ts: row.try_get("valid_until_ts")?,
            fetched_ts: row.try_get("fetched_ts")?,
        }))
    }
}
