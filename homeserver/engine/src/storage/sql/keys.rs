//! Device identity keys, one-time and fallback keys, cross-signing keys and
//! uploaded signatures.

use async_trait::async_trait;
use sqlx::{Any, Row, Transaction};

use super::SqlStore;
use crate::{
    error::Result,
    storage::{
        ClaimedKey, DeviceKeysRecord, KeyStore, KeyUpload, KeyUploadOutcome, SignatureRecord,
        StreamPos,
    },
};

/// Records that `user_id`'s devices or keys changed at `pos`.
pub(super) async fn record_change(
    tx: &mut Transaction<'_, Any>,
    user_id: &str,
    pos: StreamPos,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2)
         ON CONFLICT (user_id, stream_pos) DO NOTHING",
    )
    .bind(user_id)
    .bind(pos)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claiming retries when a concurrent claim took the key this one picked
/// (PostgreSQL re-checks the row after waiting on its lock and skips it).
const CLAIM_ATTEMPTS: usize = 64;

#[async_trait]
impl KeyStore for SqlStore {
    async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.try_get("key_json")).transpose()?)
    }

    async fn user_device_keys(&self, user_id: &str) -> Result<Vec<DeviceKeysRecord>> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceKeysRecord {
                    device_id: r.try_get("device_id")?,
                    key_json: r.try_get("key_json")?,
                    display_name: r.try_get("display_name")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        upload: &KeyUpload,
    ) -> Result<KeyUploadOutcome> {
        let mut tx = self.write.begin().await?;
        if let Some(keys) = &upload.device_keys {
            sqlx::query(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(keys)
            .execute(&mut *tx)
            .await?;
        }
        for (i, key) in upload.one_time_keys.iter().enumerate() {
            let inserted = sqlx::query(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.key_json)
            .bind(upload.seq + i as i64)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                let stored: String = sqlx::query(
                    "SELECT key_json FROM e2e_one_time_keys
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(&key.algorithm)
                .bind(&key.key_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("key_json")?;
                if !same_json(&stored, &key.key_json) {
                    tx.rollback().await?;
                    return Ok(KeyUploadOutcome::OneTimeKeyConflict(format!(
                        "{}:{}",
                        key.algorithm, key.key_id
                    )));
                }
            }
        }
        for key in &upload.fallback_keys {
            // A re-upload of the same key keeps its `used` flag; a new key is unused.
            sqlx::query(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                 VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                    key_id = excluded.key_id, key_json = excluded.key_json, used = 0
                 WHERE e2e_fallback_keys.key_id <> excluded.key_id
                    OR e2e_fallback_keys.key_json <> excluded.key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.key_json)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(pos) = upload.change_pos {
            record_change(&mut tx, user_id, pos).await?;
        }
        tx.commit().await?;
        Ok(KeyUploadOutcome::Stored)
    }

    async fn key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(Vec<(String, i64)>, Vec<String>)> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) AS n, CAST(0 AS BIGINT) AS fallback FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
             UNION ALL
             SELECT algorithm, CAST(0 AS BIGINT) AS n, CAST(1 AS BIGINT) AS fallback FROM e2e_fallback_keys
             WHERE user_id = $1 AND device_id = $2 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.read)
        .await?;
        let mut counts = Vec::new();
        let mut unused_fallbacks = Vec::new();
        for r in &rows {
            let algorithm: String = r.try_get("algorithm")?;
            if r.try_get::<i64, _>("fallback")? != 0 {
                unused_fallbacks.push(algorithm);
            } else {
                counts.push((algorithm, r.try_get::<i64, _>("n")?));
            }
        }
        Ok((counts, unused_fallbacks))
    }

    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>> {
        for _ in 0..CLAIM_ATTEMPTS {
            // One statement picks and deletes the key: whoever deletes the row
            // is the only one who gets it.
            let claimed = sqlx::query(
                "DELETE FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
                    SELECT key_id FROM e2e_one_time_keys
                    WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                    ORDER BY seq, key_id LIMIT 1)
                 RETURNING key_id, key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&self.write)
            .await?;
            if let Some(row) = claimed {
                return Ok(Some(ClaimedKey {
                    key_id: row.try_get("key_id")?,
                    key_json: row.try_get("key_json")?,
                    fallback: false,
                }));
            }
            let remaining = sqlx::query(
                "SELECT 1 AS one FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&self.write)
            .await?;
            if remaining.is_none() {
                break;
            }
        }
        let fallback = sqlx::query(
            "UPDATE e2e_fallback_keys SET used = 1
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&self.write)
        .await?;
        fallback
            .map(|row| {
                Ok(ClaimedKey {
                    key_id: row.try_get("key_id")?,
                    key_json: row.try_get("key_json")?,
                    fallback: true,
                })
            })
            .transpose()
            .map_err(|e: sqlx::Error| e.into())
    }

    async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key_type")?, r.try_get("key_json")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(String, String)],
        change_pos: StreamPos,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for (key_type, key_json) in keys {
            sqlx::query(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(key_type)
            .bind(key_json)
            .execute(&mut *tx)
            .await?;
        }
        record_change(&mut tx, user_id, change_pos).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_signatures(
        &self,
        signatures: &[SignatureRecord],
        changed_user: &str,
        change_pos: StreamPos,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for s in signatures {
            sqlx::query(
                "INSERT INTO e2e_signatures
                    (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&s.target_user_id)
            .bind(&s.target_key_id)
            .bind(&s.signer_user_id)
            .bind(&s.signer_key_id)
            .bind(&s.signature)
            .execute(&mut *tx)
            .await?;
        }
        record_change(&mut tx, changed_user, change_pos).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signatures_on(&self, target_user_id: &str) -> Result<Vec<SignatureRecord>> {
        let rows = sqlx::query(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
             FROM e2e_signatures WHERE target_user_id = $1",
        )
        .bind(target_user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SignatureRecord {
                    target_user_id: r.try_get("target_user_id")?,
                    target_key_id: r.try_get("target_key_id")?,
                    signer_user_id: r.try_get("signer_user_id")?,
                    signer_key_id: r.try_get("signer_key_id")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn delete_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
        change_pos: StreamPos,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for device_id in device_ids {
            for table in [
                "e2e_device_keys",
                "e2e_one_time_keys",
                "e2e_fallback_keys",
                "to_device_inbox",
                "to_device_txns",
            ] {
                let sql = format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        }
        record_change(&mut tx, user_id, change_pos).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Whether two JSON texts hold the same value (key order and spacing aside).
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
