//! The admin store: listings, flags, room blocks, jobs, purges and counts.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{
        admin::{
            AdminJobRecord, AdminMediaRecord, AdminStore, AdminUserRecord, HistoryPurge, Patch,
            RegistrationTokenRecord, RoomStatsRecord, ServerCounts, UserListQuery, UserOrder,
        },
        UserRecord,
    },
    util::now_ms,
};

/// The user columns plus the admin flags, joined in one read.
const USER_SELECT: &str = "SELECT u.user_id, u.password_hash, u.is_admin, u.deactivated,
    u.displayname, u.avatar_url, u.created_ts,
    CAST(CASE WHEN s.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS shadow_banned,
    CAST(CASE WHEN e.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS erased,
    (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts
  FROM users u
  LEFT JOIN shadow_banned_users s ON s.user_id = u.user_id
  LEFT JOIN erased_users e ON e.user_id = u.user_id";

fn admin_user_from_row(row: &AnyRow) -> Result<AdminUserRecord, sqlx::Error> {
    Ok(AdminUserRecord {
        user: UserRecord {
            user_id: row.try_get("user_id")?,
            password_hash: row.try_get("password_hash")?,
            is_admin: flag(row, "is_admin")?,
            deactivated: flag(row, "deactivated")?,
            displayname: row.try_get("displayname")?,
            avatar_url: row.try_get("avatar_url")?,
            created_ts: row.try_get("created_ts")?,
        },
        shadow_banned: flag(row, "shadow_banned")?,
        erased: flag(row, "erased")?,
        last_seen_ts: row.try_get("last_seen_ts")?,
    })
}

fn job_from_row(row: &AnyRow) -> Result<AdminJobRecord, sqlx::Error> {
    Ok(AdminJobRecord {
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        room_id: row.try_get("room_id")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        result_json: row.try_get("result_json")?,
        started_ts: row.try_get("started_ts")?,
    })
}

fn token_from_row(row: &AnyRow) -> Result<RegistrationTokenRecord, sqlx::Error> {
    Ok(RegistrationTokenRecord {
        token: row.try_get("token")?,
        uses_allowed: row.try_get("uses_allowed")?,
        completed: row.try_get("completed")?,
        expiry_ts: row.try_get("expiry_ts")?,
    })
}

fn order_column(order: UserOrder) -> &'static str {
    match order {
        UserOrder::Name => "u.user_id",
        UserOrder::Admin => "u.is_admin",
        UserOrder::Deactivated => "u.deactivated",
        UserOrder::ShadowBanned => "shadow_banned",
        UserOrder::Displayname => "u.displayname",
        UserOrder::AvatarUrl => "u.avatar_url",
        UserOrder::CreationTs => "u.created_ts",
        UserOrder::LastSeenTs => "last_seen_ts",
    }
}

/// `LIKE` pattern for "contains", with the wildcards of the needle escaped.
fn contains_pattern(needle: &str) -> String {
    let escaped = needle
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

#[async_trait]
impl AdminStore for SqlStore {
    async fn list_users(&self, q: &UserListQuery) -> Result<(Vec<AdminUserRecord>, i64)> {
        // Only fixed SQL fragments are concatenated; every value is bound.
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(name) = &q.name {
            binds.push(contains_pattern(name));
            let n = binds.len();
            conditions.push(format!(
                "(LOWER(u.user_id) LIKE ${n} ESCAPE '\\' OR LOWER(COALESCE(u.displayname, '')) LIKE ${n} ESCAPE '\\')"
            ));
        } else if let Some(user_id) = &q.user_id {
            binds.push(contains_pattern(user_id));
            conditions.push(format!(
                "LOWER(u.user_id) LIKE ${} ESCAPE '\\'",
                binds.len()
            ));
        }
        if !q.deactivated {
            conditions.push("u.deactivated = 0".into());
        }
        match q.admins {
            Some(true) => conditions.push("u.is_admin = 1".into()),
            Some(false) => conditions.push("u.is_admin = 0".into()),
            None => {}
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let dir = if q.backwards { "DESC" } else { "ASC" };
        let page_sql = format!(
            "SELECT * FROM ({USER_SELECT}{filter}) AS listed ORDER BY {} {dir}, user_id {dir} LIMIT {} OFFSET {}",
            order_column(q.order_by).trim_start_matches("u."),
            q.limit.max(0),
            q.from.max(0),
        );
        let count_sql = format!("SELECT COUNT(*) AS n FROM users u{filter}");
        let mut page = sqlx::query(sqlx::AssertSqlSafe(page_sql));
        let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql));
        for b in &binds {
            page = page.bind(b.clone());
            count = count.bind(b.clone());
        }
        let rows = page.fetch_all(&self.read).await?;
        let total: i64 = count.fetch_one(&self.read).await?.try_get("n")?;
        let users = rows
            .iter()
            .map(admin_user_from_row)
            .collect::<Result<_, _>>()?;
        Ok((users, total))
    }

    async fn admin_user(&self, user_id: &str) -> Result<Option<AdminUserRecord>> {
        let sql = format!("{USER_SELECT} WHERE u.user_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(admin_user_from_row).transpose()?)
    }

    async fn set_user_admin(&self, user_id: &str, admin: bool) -> Result<()> {
        sqlx::query("UPDATE users SET is_admin = $1 WHERE user_id = $2")
            .bind(admin as i64)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn reactivate_user(&self, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE users SET deactivated = 0 WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_shadow_banned(&self, user_id: &str, banned: bool) -> Result<()> {
        let q = if banned {
            sqlx::query(
                "INSERT INTO shadow_banned_users (user_id, banned_ts) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(now_ms())
        } else {
            sqlx::query("DELETE FROM shadow_banned_users WHERE user_id = $1").bind(user_id)
        };
        q.execute(&self.write).await?;
        Ok(())
    }

    async fn shadow_banned_users(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM shadow_banned_users")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn set_erased(&self, user_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO erased_users (user_id, erased_ts) VALUES ($1, $2)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn erased_users(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM erased_users")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn set_ratelimit_override(&self, user_id: &str, value: Option<(i64, i64)>) -> Result<()> {
        let q = match value {
            Some((per_second, burst)) => sqlx::query(
                "INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count)
                 VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE
                 SET messages_per_second = excluded.messages_per_second, burst_count = excluded.burst_count",
            )
            .bind(user_id)
            .bind(per_second)
            .bind(burst),
            None => sqlx::query("DELETE FROM ratelimit_overrides WHERE user_id = $1").bind(user_id),
        };
        q.execute(&self.write).await?;
        Ok(())
    }

    async fn ratelimit_overrides(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, messages_per_second, burst_count FROM ratelimit_overrides",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("user_id")?,
                    r.try_get("messages_per_second")?,
                    r.try_get("burst_count")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn room_stats(
        &self,
        room_id: Option<&str>,
        local_suffix: &str,
    ) -> Result<Vec<RoomStatsRecord>> {
        let filter = if room_id.is_some() {
            " WHERE r.room_id = $2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT r.room_id, r.room_version, r.creator, r.is_public,
               (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined,
               (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join'
                  AND m.user_id LIKE $1 ESCAPE '\\') AS joined_local,
               (SELECT COUNT(*) FROM current_state c WHERE c.room_id = r.room_id) AS state_events
             FROM rooms r{filter}"
        );
        let suffix = local_suffix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format!("%{suffix}"));
        if let Some(id) = room_id {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(RoomStatsRecord {
                    room_id: r.try_get("room_id")?,
                    room_version: r.try_get("room_version")?,
                    creator: r.try_get("creator")?,
                    is_public: flag(r, "is_public")?,
                    joined_members: r.try_get("joined")?,
                    joined_local_members: r.try_get("joined_local")?,
                    state_events: r.try_get("state_events")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn summary_state(
        &self,
        room_id: Option<&str>,
        types: &[&str],
    ) -> Result<Vec<(String, String, String)>> {
        let offset = if room_id.is_some() { 2 } else { 1 };
        let placeholders: Vec<String> = (0..types.len())
            .map(|i| format!("${}", i + offset))
            .collect();
        let room_filter = if room_id.is_some() {
            "c.room_id = $1 AND "
        } else {
            ""
        };
        let sql = format!(
            "SELECT c.room_id, c.event_type, e.pdu_json FROM current_state c
             JOIN events e ON e.event_id = c.event_id
             WHERE {room_filter}c.state_key = '' AND c.event_type IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(id) = room_id {
            q = q.bind(id);
        }
        for t in types {
            q = q.bind(*t);
        }
        let rows = q.fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("room_id")?,
                    r.try_get("event_type")?,
                    r.try_get("pdu_json")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn set_room_blocked(&self, room_id: &str, by: Option<&str>) -> Result<()> {
        let q = match by {
            Some(admin) => sqlx::query(
                "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES ($1, $2, $3)
                 ON CONFLICT (room_id) DO NOTHING",
            )
            .bind(room_id)
            .bind(admin)
            .bind(now_ms()),
            None => sqlx::query("DELETE FROM blocked_rooms WHERE room_id = $1").bind(room_id),
        };
        q.execute(&self.write).await?;
        Ok(())
    }

    async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT blocked_by FROM blocked_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("blocked_by")).transpose()?)
    }

    async fn server_notice_room(&self, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT room_id FROM server_notice_rooms WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("room_id")).transpose()?)
    }

    async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
        )
        .bind(user_id)
        .bind(room_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn put_job(&self, job: &AdminJobRecord) -> Result<()> {
        let finished = (job.status != "active").then(now_ms);
        sqlx::query(
            "INSERT INTO admin_jobs (job_id, kind, room_id, status, error, result_json, started_ts, finished_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id) DO UPDATE
             SET status = excluded.status, error = excluded.error,
                 result_json = excluded.result_json, finished_ts = excluded.finished_ts",
        )
        .bind(&job.job_id)
        .bind(&job.kind)
        .bind(&job.room_id)
        .bind(&job.status)
        .bind(&job.error)
        .bind(&job.result_json)
        .bind(job.started_ts)
        .bind(finished)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<AdminJobRecord>> {
        let row = sqlx::query("SELECT * FROM admin_jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(job_from_row).transpose()?)
    }

    async fn jobs_for_room(&self, room_id: &str, kind: &str) -> Result<Vec<AdminJobRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM admin_jobs WHERE room_id = $1 AND kind = $2 ORDER BY started_ts, job_id",
        )
        .bind(room_id)
        .bind(kind)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }

    async fn purge_history(&self, p: &HistoryPurge) -> Result<u64> {
        let mut conditions = vec![
            "room_id = $1".to_owned(),
            "state_key IS NULL".to_owned(),
            "event_id NOT IN (SELECT event_id FROM forward_extremities WHERE room_id = $1)"
                .to_owned(),
        ];
        let mut n = 1;
        if p.before_pos.is_some() {
            n += 1;
            conditions.push(format!("stream_pos < ${n}"));
        }
        if p.before_ts.is_some() {
            n += 1;
            conditions.push(format!("origin_server_ts < ${n}"));
        }
        if p.keep_sender_suffix.is_some() {
            n += 1;
            conditions.push(format!("sender NOT LIKE ${n} ESCAPE '\\'"));
        }
        let filter = conditions.join(" AND ");
        let bind_all = |sql: String| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(p.room_id.clone());
            if let Some(pos) = p.before_pos {
                q = q.bind(pos);
            }
            if let Some(ts) = p.before_ts {
                q = q.bind(ts);
            }
            if let Some(suffix) = &p.keep_sender_suffix {
                let s = suffix
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                q = q.bind(format!("%{s}"));
            }
            q
        };
        let mut tx = self.write.begin().await?;
        bind_all(format!(
            "DELETE FROM txn_ids WHERE event_id IN (SELECT event_id FROM events WHERE {filter})"
        ))
        .execute(&mut *tx)
        .await?;
        let done = bind_all(format!("DELETE FROM events WHERE {filter}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn purge_room(&self, room_id: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let statements = [
            "DELETE FROM txn_ids WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
            "DELETE FROM state_snapshot_entries WHERE snapshot_id IN
               (SELECT snapshot_id FROM state_snapshots WHERE room_id = $1)",
            "DELETE FROM state_snapshots WHERE room_id = $1",
            "DELETE FROM events WHERE room_id = $1",
            "DELETE FROM current_state WHERE room_id = $1",
            "DELETE FROM forward_extremities WHERE room_id = $1",
            "DELETE FROM memberships WHERE room_id = $1",
            "DELETE FROM room_aliases WHERE room_id = $1",
            "DELETE FROM account_data WHERE room_id = $1",
            "DELETE FROM receipts WHERE room_id = $1",
            "DELETE FROM delivery_receipts WHERE room_id = $1",
            "DELETE FROM server_notice_rooms WHERE room_id = $1",
            "DELETE FROM rooms WHERE room_id = $1",
        ];
        for sql in statements {
            sqlx::query(sql).bind(room_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>> {
        let rows = sqlx::query("SELECT * FROM registration_tokens ORDER BY token")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRecord>> {
        let row = sqlx::query("SELECT * FROM registration_tokens WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Patch<i64>,
        expiry_ts: Patch<i64>,
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let exists = sqlx::query("SELECT token FROM registration_tokens WHERE token = $1")
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        if let Some(v) = uses_allowed {
            sqlx::query("UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2")
                .bind(v)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(v) = expiry_ts {
            sqlx::query("UPDATE registration_tokens SET expiry_ts = $1 WHERE token = $2")
                .bind(v)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_registration_token(&self, token: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM registration_tokens WHERE token = $1")
            .bind(token)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_media(
        &self,
        user_id: &str,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<AdminMediaRecord>, i64)> {
        let sql = format!(
            "SELECT m.media_id, m.content_type, m.upload_name, m.size, m.created_ts,
                    m.last_access_ts, q.quarantined_by
             FROM media m LEFT JOIN quarantined_media q
               ON q.origin = m.origin AND q.media_id = m.media_id
             WHERE m.user_id = $1 ORDER BY m.created_ts DESC, m.media_id LIMIT {} OFFSET {}",
            limit.max(0),
            from.max(0)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(&self.read)
            .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM media WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.read)
            .await?
            .try_get("n")?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AdminMediaRecord {
                    media_id: r.try_get("media_id")?,
                    content_type: r.try_get("content_type")?,
                    upload_name: r.try_get("upload_name")?,
                    size: r.try_get("size")?,
                    last_access_ts: r.try_get("last_access_ts")?,
                    created_ts: r.try_get("created_ts")?,
                    quarantined_by: r.try_get("quarantined_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((items, total))
    }

    async fn set_media_quarantined(
        &self,
        origin: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<()> {
        let q = match by {
            Some(admin) => sqlx::query(
                "INSERT INTO quarantined_media (origin, media_id, quarantined_by, quarantined_ts)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (origin, media_id) DO NOTHING",
            )
            .bind(origin)
            .bind(media_id)
            .bind(admin)
            .bind(now_ms()),
            None => {
                sqlx::query("DELETE FROM quarantined_media WHERE origin = $1 AND media_id = $2")
                    .bind(origin)
                    .bind(media_id)
            }
        };
        q.execute(&self.write).await?;
        Ok(())
    }

    async fn media_quarantined(&self, origin: &str, media_id: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS q FROM quarantined_media WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.is_some())
    }

    async fn counts(&self, events_since_ts: i64) -> Result<ServerCounts> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM users WHERE deactivated = 0) AS users,
               (SELECT COUNT(*) FROM users WHERE deactivated = 1) AS deactivated_users,
               (SELECT COUNT(*) FROM rooms) AS rooms,
               (SELECT COUNT(*) FROM events WHERE origin_server_ts >= $1) AS events_since,
               (SELECT COUNT(*) FROM registration_tokens) AS registration_tokens",
        )
        .bind(events_since_ts)
        .fetch_one(&self.read)
        .await?;
        Ok(ServerCounts {
            users: row.try_get("users")?,
            deactivated_users: row.try_get("deactivated_users")?,
            rooms: row.try_get("rooms")?,
            events_since: row.try_get("events_since")?,
            registration_tokens: row.try_get("registration_tokens")?,
        })
    }
}
