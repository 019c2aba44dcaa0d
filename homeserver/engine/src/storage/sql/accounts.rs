//! Accounts, devices, tokens, filters and registration tokens.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{AccountStore, DeviceRecord, NewToken, TokenRecord, UserRecord},
};

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        user_id: row.try_get("user_id")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: flag(row, "is_admin")?,
        deactivated: flag(row, "deactivated")?,
        displayname: row.try_get("displayname")?,
        avatar_url: row.try_get("avatar_url")?,
        created_ts: row.try_get("created_ts")?,
    })
}

fn device_from_row(row: &AnyRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        display_name: row.try_get("display_name")?,
        last_seen_ts: row.try_get("last_seen_ts")?,
        last_seen_ip: row.try_get("last_seen_ip")?,
    })
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_user(&self, u: &UserRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, displayname, avatar_url, created_ts)
             VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(&u.user_id)
        .bind(&u.password_hash)
        .bind(u.is_admin as i64)
        .bind(&u.displayname)
        .bind(&u.avatar_url)
        .bind(u.created_ts)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET displayname = $1 WHERE user_id = $2")
            .bind(name)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET avatar_url = $1 WHERE user_id = $2")
            .bind(url)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_deactivated(&self, user_id: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_device(&self, d: &DeviceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, device_id) DO UPDATE SET
                display_name = COALESCE(excluded.display_name, devices.display_name),
                last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
        )
        .bind(&d.user_id)
        .bind(&d.device_id)
        .bind(&d.display_name)
        .bind(d.last_seen_ts)
        .bind(&d.last_seen_ip)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>> {
        let row = sqlx::query("SELECT * FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(device_from_row).transpose()?)
    }

    async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>> {
        let rows = sqlx::query("SELECT * FROM devices WHERE user_id = $1 ORDER BY device_id")
            .bind(user_id)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(device_from_row).collect::<Result<_, _>>()?)
    }

    async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(name)
        .bind(user_id)
        .bind(device_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ts: i64,
        ip: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 WHERE user_id = $3 AND device_id = $4")
            .bind(ts)
            .bind(ip)
            .bind(user_id)
            .bind(device_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn insert_token(&self, t: &NewToken<'_>) -> Result<()> {
        sqlx::query("INSERT INTO access_tokens (token, user_id, device_id, expires_ts, refresh_token) VALUES ($1, $2, $3, $4, $5)")
            .bind(t.access_token)
            .bind(t.user_id)
            .bind(t.device_id)
            .bind(t.expires_ts)
            .bind(t.refresh_token)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn get_token(&self, access_token: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT user_id, device_id, expires_ts FROM access_tokens WHERE token = $1",
        )
        .bind(access_token)
        .fetch_optional(&self.read)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(TokenRecord {
                    user_id: r.try_get("user_id")?,
                    device_id: r.try_get("device_id")?,
                    expires_ts: r.try_get("expires_ts")?,
                })
            })
            .transpose()?)
    }

    async fn get_token_owner(
        &self,
        access_token: &str,
    ) -> Result<Option<(TokenRecord, UserRecord)>> {
        let row = sqlx::query(
            "SELECT t.device_id, t.expires_ts, u.* FROM access_tokens t
             JOIN users u ON u.user_id = t.user_id WHERE t.token = $1",
        )
        .bind(access_token)
        .fetch_optional(&self.read)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                let user = user_from_row(&r)?;
                let token = TokenRecord {
                    user_id: user.user_id.clone(),
                    device_id: r.try_get("device_id")?,
                    expires_ts: r.try_get("expires_ts")?,
                };
                Ok((token, user))
            })
            .transpose()?)
    }

    async fn rotate_refresh_token(
        &self,
        refresh_token: &str,
        new: &NewToken<'_>,
    ) -> Result<Option<TokenRecord>> {
        let mut tx = self.write.begin().await?;
        let row =
            sqlx::query("SELECT user_id, device_id FROM access_tokens WHERE refresh_token = $1")
                .bind(refresh_token)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get("user_id")?;
        let device_id: String = row.try_get("device_id")?;
        // Only the rotation whose DELETE removes the row wins: a concurrent one may have read it too.
        if sqlx::query("DELETE FROM access_tokens WHERE refresh_token = $1")
            .bind(refresh_token)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 0
        {
            return Ok(None);
        }
        sqlx::query("INSERT INTO access_tokens (token, user_id, device_id, expires_ts, refresh_token) VALUES ($1, $2, $3, $4, $5)")
            .bind(new.access_token)
            .bind(&user_id)
            .bind(&device_id)
            .bind(new.expires_ts)
            .bind(new.refresh_token)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(TokenRecord {
            user_id,
            device_id,
            expires_ts: new.expires_ts,
        }))
    }

    async fn delete_token(&self, access_token: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE token = $1")
            .bind(access_token)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn delete_user_tokens(&self, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn create_filter(&self, user_id: &str, filter_id: &str, filter_json: &str) -> Result<()> {
        sqlx::query("INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(filter_id)
            .bind(filter_json)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| r.try_get("filter_json")).transpose()?)
    }

    async fn use_registration_token(&self, token: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE registration_tokens SET completed = completed + 1
             WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed)
               AND (expiry_ts IS NULL OR expiry_ts > $2)",
        )
        .bind(token)
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn registration_token_valid(&self, token: &str, now_ms: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS ok FROM registration_tokens WHERE token = $1
               AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
        )
        .bind(token)
        .bind(now_ms)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.is_some())
    }

    async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ts) VALUES ($1, $2, 0, $3)
             ON CONFLICT (token) DO NOTHING",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_ts)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
