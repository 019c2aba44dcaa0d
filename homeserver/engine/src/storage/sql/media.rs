//! Media metadata and thumbnails.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{MediaContent, MediaRecord, MediaStore, ThumbnailRecord},
};

fn media_from_row(row: &AnyRow) -> Result<MediaRecord, sqlx::Error> {
    let size: Option<i64> = row.try_get("size")?;
    let sha256: Option<String> = row.try_get("sha256")?;
    let content = match (size, sha256) {
        (Some(size), Some(sha256)) => Some(MediaContent {
            size,
            sha256,
            width: row.try_get("width")?,
            height: row.try_get("height")?,
            animated: flag(row, "animated")?,
        }),
        _ => None,
    };
    Ok(MediaRecord {
        origin: row.try_get("origin")?,
        media_id: row.try_get("media_id")?,
        user_id: row.try_get("user_id")?,
        content_type: row.try_get("content_type")?,
        upload_name: row.try_get("upload_name")?,
        content,
        created_ts: row.try_get("created_ts")?,
        expires_ts: row.try_get("expires_ts")?,
        remote_cache: flag(row, "remote_cache")?,
        last_access_ts: row.try_get("last_access_ts")?,
    })
}

fn thumbnail_from_row(row: &AnyRow) -> Result<ThumbnailRecord, sqlx::Error> {
    Ok(ThumbnailRecord {
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        method: row.try_get("method")?,
        animated: flag(row, "animated")?,
        content_type: row.try_get("content_type")?,
        size: row.try_get("size")?,
        sha256: row.try_get("sha256")?,
    })
}

#[async_trait]
impl MediaStore for SqlStore {
    async fn insert_media(&self, m: &MediaRecord) -> Result<bool> {
        let c = m.content.as_ref();
        let done = sqlx::query(
            "INSERT INTO media (origin, media_id, user_id, content_type, upload_name, size, sha256,
                width, height, animated, created_ts, expires_ts, remote_cache, last_access_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (origin, media_id) DO NOTHING",
        )
        .bind(&m.origin)
        .bind(&m.media_id)
        .bind(&m.user_id)
        .bind(&m.content_type)
        .bind(&m.upload_name)
        .bind(c.map(|c| c.size))
        .bind(c.map(|c| c.sha256.clone()))
        .bind(c.and_then(|c| c.width))
        .bind(c.and_then(|c| c.height))
        .bind(c.is_some_and(|c| c.animated) as i64)
        .bind(m.created_ts)
        .bind(m.expires_ts)
        .bind(m.remote_cache as i64)
        .bind(m.last_access_ts)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fill_media(
        &self,
        origin: &str,
        media_id: &str,
        content_type: &str,
        upload_name: Option<&str>,
        c: &MediaContent,
    ) -> Result<bool> {
        // The `size IS NULL` condition makes concurrent uploads to one id race
        // safely: exactly one of them fills it.
        let done = sqlx::query(
            "UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6,
                width = $7, height = $8, animated = $9, expires_ts = NULL
             WHERE origin = $1 AND media_id = $2 AND size IS NULL",
        )
        .bind(origin)
        .bind(media_id)
        .bind(content_type)
        .bind(upload_name)
        .bind(c.size)
        .bind(&c.sha256)
        .bind(c.width)
        .bind(c.height)
        .bind(c.animated as i64)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let row = sqlx::query("SELECT * FROM media WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(media_from_row).transpose()?)
    }

    async fn user_media_bytes(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query(
            // PostgreSQL sums BIGINT as NUMERIC: cast back for the Any driver.
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM media
             WHERE user_id = $1 AND size IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("total")?)
    }

    async fn pending_count(&self, user_id: &str, now_ms: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM media
             WHERE user_id = $1 AND size IS NULL AND expires_ts > $2",
        )
        .bind(user_id)
        .bind(now_ms)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("n")?)
    }

    async fn put_thumbnail(&self, origin: &str, media_id: &str, t: &ThumbnailRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, animated,
                content_type, size, sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (origin, media_id, width, height, method, animated) DO NOTHING",
        )
        .bind(origin)
        .bind(media_id)
        .bind(t.width)
        .bind(t.height)
        .bind(&t.method)
        .bind(t.animated as i64)
        .bind(&t.content_type)
        .bind(t.size)
        .bind(&t.sha256)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn thumbnails(&self, origin: &str, media_id: &str) -> Result<Vec<ThumbnailRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM media_thumbnails WHERE origin = $1 AND media_id = $2
             ORDER BY width, height",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(thumbnail_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn touch_media(&self, origin: &str, media_id: &str, ts: i64) -> Result<()> {
        sqlx::query("UPDATE media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .bind(ts)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn delete_media(&self, origin: &str, media_id: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self.write.begin().await?;
        let Some(row) = sqlx::query("SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut hashes: Vec<String> = row
            .try_get::<Option<String>, _>("sha256")?
            .into_iter()
            .collect();
        let thumbs =
            sqlx::query("SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .fetch_all(&mut *tx)
                .await?;
        for t in &thumbs {
            hashes.push(t.try_get("sha256")?);
        }
        for table in ["media_thumbnails", "quarantined_media", "media"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE origin = $1 AND media_id = $2"
            )))
            .bind(origin)
            .bind(media_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        hashes.sort();
        hashes.dedup();
        Ok(Some(hashes))
    }

    async fn blob_in_use(&self, sha256: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1)
                  + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1) AS n",
        )
        .bind(sha256)
        .fetch_one(&self.write)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn local_media_before(
        &self,
        origin: &str,
        before_ts: i64,
        size_gt: i64,
    ) -> Result<Vec<MediaRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM media
             WHERE origin = $1 AND remote_cache = 0 AND size IS NOT NULL AND size > $3
               AND COALESCE(last_access_ts, created_ts) < $2
             ORDER BY created_ts, media_id",
        )
        .bind(origin)
        .bind(before_ts)
        .bind(size_gt)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(media_from_row).collect::<Result<_, _>>()?)
    }

    async fn remote_media_before(&self, before_ts: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT origin, media_id FROM media
             WHERE remote_cache = 1 AND COALESCE(last_access_ts, created_ts) < $1
             ORDER BY origin, media_id",
        )
        .bind(before_ts)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("origin")?, r.try_get("media_id")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn avatar_uris(&self) -> Result<Vec<String>> {
        let mut uris: Vec<String> =
            sqlx::query("SELECT avatar_url FROM users WHERE avatar_url IS NOT NULL")
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(|r| r.try_get("avatar_url"))
                .collect::<Result<_, _>>()?;
        let rooms = sqlx::query(
            "SELECT e.pdu_json FROM current_state c JOIN events e ON e.event_id = c.event_id
             WHERE c.event_type = 'm.room.avatar'",
        )
        .fetch_all(&self.read)
        .await?;
        for row in rooms {
            let json: String = row.try_get("pdu_json")?;
            let pdu: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            if let Some(url) = pdu["content"]["url"].as_str() {
                uris.push(url.to_owned());
            }
        }
        Ok(uris)
    }
}
