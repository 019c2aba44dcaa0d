//! Server-side key backup: versions and their (encrypted) Megolm sessions.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Any, Row, Transaction};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{BackupKeyRecord, BackupVersionRecord, BackupWrite, KeyBackupStore},
};

/// Concurrent creations may pick the same next number; the loser tries again.
const CREATE_ATTEMPTS: usize = 8;

fn key_from_row(r: &AnyRow) -> Result<BackupKeyRecord, sqlx::Error> {
    Ok(BackupKeyRecord {
        room_id: r.try_get("room_id")?,
        session_id: r.try_get("session_id")?,
        first_message_index: r.try_get("first_message_index")?,
        forwarded_count: r.try_get("forwarded_count")?,
        is_verified: flag(r, "is_verified")?,
        session_data: r.try_get("session_data")?,
    })
}

/// The latest undeleted version, and whether `version` exists undeleted.
async fn check_version(
    tx: &mut Transaction<'_, Any>,
    user_id: &str,
    version: i64,
) -> Result<(Option<i64>, bool), sqlx::Error> {
    let latest: Option<i64> = sqlx::query(
        "SELECT MAX(version) AS v FROM backup_versions WHERE user_id = $1 AND deleted = 0",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("v")?;
    let exists = sqlx::query(
        "SELECT 1 AS one FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?
    .is_some();
    Ok((latest, exists))
}

/// Bumps the etag when something changed; returns the etag and key count.
async fn finish_write(
    tx: &mut Transaction<'_, Any>,
    user_id: &str,
    version: i64,
    changed: bool,
) -> Result<BackupWrite, sqlx::Error> {
    if changed {
        sqlx::query(
            "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    }
    let row = sqlx::query(
        "SELECT etag, (SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2) AS n
         FROM backup_versions WHERE user_id = $1 AND version = $2",
    )
    .bind(user_id)
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    Ok(BackupWrite::Done {
        etag: row.try_get("etag")?,
        count: row.try_get("n")?,
    })
}

#[async_trait]
impl KeyBackupStore for SqlStore {
    async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64> {
        for _ in 0..CREATE_ATTEMPTS {
            let row = sqlx::query(
                "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, 0
                 FROM backup_versions WHERE user_id = $1
                 ON CONFLICT (user_id, version) DO NOTHING
                 RETURNING version",
            )
            .bind(user_id)
            .bind(algorithm)
            .bind(auth_data)
            .fetch_optional(&self.write)
            .await?;
            if let Some(row) = row {
                return Ok(row.try_get("version")?);
            }
        }
        Err(crate::Error::unknown(
            "Could not allocate a backup version.",
        ))
    }

    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRecord>> {
        let select = "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) AS n
             FROM backup_versions v WHERE v.user_id = $1 AND v.deleted = 0";
        let row = match version {
            Some(version) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{select} AND v.version = $2")))
                    .bind(user_id)
                    .bind(version)
                    .fetch_optional(&self.read)
                    .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select} ORDER BY v.version DESC LIMIT 1"
                )))
                .bind(user_id)
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(|r| {
            Ok(BackupVersionRecord {
                version: r.try_get("version")?,
                algorithm: r.try_get("algorithm")?,
                auth_data: r.try_get("auth_data")?,
                etag: r.try_get("etag")?,
                count: r.try_get("n")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE backup_versions SET auth_data = $3
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE backup_versions SET deleted = 1
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackupKeyRecord],
    ) -> Result<BackupWrite> {
        let mut tx = self.write.begin().await?;
        let (latest, exists) = check_version(&mut tx, user_id, version).await?;
        if !exists {
            return Ok(BackupWrite::NotFound);
        }
        if let Some(latest) = latest.filter(|l| *l != version) {
            return Ok(BackupWrite::NotLatest(latest));
        }
        let mut changed = false;
        for k in keys {
            // The stored session is replaced only by a better one: verified
            // beats unverified, then the lower first index, then fewer forwards.
            let done = sqlx::query(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
                    forwarded_count, is_verified, session_data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                    first_message_index = excluded.first_message_index,
                    forwarded_count = excluded.forwarded_count,
                    is_verified = excluded.is_verified,
                    session_data = excluded.session_data
                 WHERE excluded.is_verified > backup_keys.is_verified
                    OR (excluded.is_verified = backup_keys.is_verified
                        AND (excluded.first_message_index < backup_keys.first_message_index
                             OR (excluded.first_message_index = backup_keys.first_message_index
                                 AND excluded.forwarded_count < backup_keys.forwarded_count)))",
            )
            .bind(user_id)
            .bind(version)
            .bind(&k.room_id)
            .bind(&k.session_id)
            .bind(k.first_message_index)
            .bind(k.forwarded_count)
            .bind(k.is_verified as i64)
            .bind(&k.session_data)
            .execute(&mut *tx)
            .await?;
            changed |= done.rows_affected() > 0;
        }
        let result = finish_write(&mut tx, user_id, version, changed).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRecord>> {
        // `$3 IS NULL` cannot type an untyped NULL on PostgreSQL; '' means "any".
        let rows = sqlx::query(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
             FROM backup_keys WHERE user_id = $1 AND version = $2
               AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
             ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<BackupWrite> {
        let mut tx = self.write.begin().await?;
        let (_, exists) = check_version(&mut tx, user_id, version).await?;
        if !exists {
            return Ok(BackupWrite::NotFound);
        }
        let done = sqlx::query(
            "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2
               AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .execute(&mut *tx)
        .await?;
        let result = finish_write(&mut tx, user_id, version, done.rows_affected() > 0).await?;
        tx.commit().await?;
        Ok(result)
    }
}
