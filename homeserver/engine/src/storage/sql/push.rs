//! Notifications, unread counts, pushers and the delivery queue.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{
        CountRecord, NewNotification, NotificationRecord, PushStore, PusherRecord, QueuedPush,
        StreamPos,
    },
};

const PUSHER_COLUMNS: &str = "p.user_id, p.app_id, p.pushkey, p.kind, p.app_display_name, \
     p.device_display_name, p.profile_tag, p.lang, p.data, p.pushkey_ts";

fn pusher_from_row(row: &AnyRow) -> Result<PusherRecord, sqlx::Error> {
    Ok(PusherRecord {
        user_id: row.try_get("user_id")?,
        app_id: row.try_get("app_id")?,
        pushkey: row.try_get("pushkey")?,
        kind: row.try_get("kind")?,
        app_display_name: row.try_get("app_display_name")?,
        device_display_name: row.try_get("device_display_name")?,
        profile_tag: row.try_get("profile_tag")?,
        lang: row.try_get("lang")?,
        data: row.try_get("data")?,
        pushkey_ts: row.try_get("pushkey_ts")?,
    })
}

#[async_trait]
impl PushStore for SqlStore {
    async fn record_notifications(
        &self,
        batch: &[NewNotification],
        counts_pos: StreamPos,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for n in batch {
            let inserted = sqlx::query(
                "INSERT INTO push_notifications (user_id, event_id, room_id, thread_id, stream_pos, ts, actions, highlight)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, event_id) DO NOTHING",
            )
            .bind(&n.user_id)
            .bind(&n.event_id)
            .bind(&n.room_id)
            .bind(&n.thread_id)
            .bind(n.stream_pos)
            .bind(n.ts)
            .bind(&n.actions)
            .bind(i64::from(n.highlight))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                continue;
            }
            if n.counted {
                sqlx::query(
                    "INSERT INTO push_counts (user_id, room_id, thread_id, notif_count, highlight_count, read_pos, stream_pos)
                     VALUES ($1, $2, $3, 1, $4, 0, $5)
                     ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET
                        notif_count = push_counts.notif_count + 1,
                        highlight_count = push_counts.highlight_count + excluded.highlight_count,
                        stream_pos = excluded.stream_pos
                     WHERE push_counts.read_pos < $6",
                )
                .bind(&n.user_id)
                .bind(&n.room_id)
                .bind(&n.thread_id)
                .bind(i64::from(n.highlight))
                .bind(counts_pos)
                .bind(n.stream_pos)
                .execute(&mut *tx)
                .await?;
            }
            if n.push {
                sqlx::query(
                    "INSERT INTO push_queue (user_id, app_id, pushkey, event_id, room_id, actions, attempts, next_attempt_ts, created_ts)
                     SELECT user_id, app_id, pushkey, $2, $3, $5, 0, $4, $4 FROM pushers WHERE user_id = $1
                     ON CONFLICT (app_id, pushkey, user_id, event_id) DO NOTHING",
                )
                .bind(&n.user_id)
                .bind(&n.event_id)
                .bind(&n.room_id)
                .bind(now_ms)
                .bind(&n.actions)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_read(
        &self,
        user_id: &str,
        room_id: &str,
        thread_id: Option<&str>,
        read_pos: StreamPos,
        counts_pos: StreamPos,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        // A row for the thread read (the main timeline for an unthreaded
        // receipt) keeps the read position for lazily counted large rooms.
        sqlx::query(
            "INSERT INTO push_counts (user_id, room_id, thread_id, notif_count, highlight_count, read_pos, stream_pos)
             VALUES ($1, $2, $3, 0, 0, 0, 0) ON CONFLICT (user_id, room_id, thread_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(thread_id.unwrap_or("main"))
        .execute(&mut *tx)
        .await?;
        let recount = "UPDATE push_counts SET
                notif_count = (SELECT COUNT(*) FROM push_notifications n WHERE n.user_id = push_counts.user_id
                    AND n.room_id = push_counts.room_id AND n.thread_id = push_counts.thread_id AND n.stream_pos > $3),
                highlight_count = (SELECT COUNT(*) FROM push_notifications n WHERE n.user_id = push_counts.user_id
                    AND n.room_id = push_counts.room_id AND n.thread_id = push_counts.thread_id AND n.stream_pos > $3
                    AND n.highlight = 1),
                read_pos = $3, stream_pos = $4
             WHERE user_id = $1 AND room_id = $2 AND read_pos < $3";
        match thread_id {
            Some(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{recount} AND thread_id = $5")))
                    .bind(user_id)
                    .bind(room_id)
                    .bind(read_pos)
                    .bind(counts_pos)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query(recount)
                    .bind(user_id)
                    .bind(room_id)
                    .bind(read_pos)
                    .bind(counts_pos)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn counts_for_user(&self, user_id: &str) -> Result<Vec<CountRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, thread_id, notif_count, highlight_count, read_pos, stream_pos
             FROM push_counts WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CountRecord {
                    room_id: r.try_get("room_id")?,
                    thread_id: r.try_get("thread_id")?,
                    notif_count: r.try_get("notif_count")?,
                    highlight_count: r.try_get("highlight_count")?,
                    read_pos: r.try_get("read_pos")?,
                    stream_pos: r.try_get("stream_pos")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn unread_total(&self, user_id: &str) -> Result<i64> {
        Ok(sqlx::query(
            // SUM of a BIGINT is NUMERIC on PostgreSQL: cast it back.
            "SELECT CAST(COALESCE(SUM(notif_count), 0) AS BIGINT) AS total FROM push_counts WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.read)
        .await?
        .try_get("total")?)
    }

    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRecord>> {
        let sql = format!(
            "SELECT n.user_id, n.room_id, n.event_id, n.thread_id, n.stream_pos, n.ts, n.actions, n.highlight,
                    COALESCE(c.read_pos, 0) AS read_pos
             FROM push_notifications n LEFT JOIN push_counts c ON c.user_id = n.user_id
                AND c.room_id = n.room_id AND c.thread_id = n.thread_id
             WHERE n.user_id = $1 AND n.stream_pos < $2 {}
             ORDER BY n.stream_pos DESC LIMIT $3",
            if only_highlight {
                "AND n.highlight = 1"
            } else {
                ""
            }
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let pos: i64 = r.try_get("stream_pos")?;
                let read_pos: i64 = r.try_get("read_pos")?;
                Ok(NotificationRecord {
                    user_id: r.try_get("user_id")?,
                    room_id: r.try_get("room_id")?,
                    event_id: r.try_get("event_id")?,
                    thread_id: r.try_get("thread_id")?,
                    stream_pos: pos,
                    ts: r.try_get("ts")?,
                    actions: r.try_get("actions")?,
                    highlight: flag(r, "highlight")?,
                    read: pos <= read_pos,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers p WHERE p.user_id = $1 ORDER BY p.app_id, p.pushkey"
        )))
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(pusher_from_row).collect::<Result<_, _>>()?)
    }

    async fn set_pusher(&self, p: &PusherRecord, append: bool) -> Result<()> {
        let mut tx = self.write.begin().await?;
        if !append {
            for table in ["push_queue", "pushers"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3"
                )))
                .bind(&p.app_id)
                .bind(&p.pushkey)
                .bind(&p.user_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name,
                profile_tag, lang, data, pushkey_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,
                app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
                profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
                pushkey_ts = excluded.pushkey_ts",
        )
        .bind(&p.user_id)
        .bind(&p.app_id)
        .bind(&p.pushkey)
        .bind(&p.kind)
        .bind(&p.app_display_name)
        .bind(&p.device_display_name)
        .bind(p.profile_tag.clone())
        .bind(&p.lang)
        .bind(&p.data)
        .bind(p.pushkey_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM push_queue WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *tx)
            .await?;
        let gone =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    async fn due_pushes(&self, now_ms: i64, limit: usize) -> Result<Vec<QueuedPush>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PUSHER_COLUMNS}, q.event_id, q.room_id, q.actions, q.attempts, q.next_attempt_ts, q.created_ts
             FROM push_queue q JOIN pushers p ON p.app_id = q.app_id AND p.pushkey = q.pushkey AND p.user_id = q.user_id
             WHERE q.next_attempt_ts <= $1 ORDER BY q.next_attempt_ts, q.created_ts LIMIT $2"
        )))
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedPush {
                    pusher: pusher_from_row(r)?,
                    event_id: r.try_get("event_id")?,
                    room_id: r.try_get("room_id")?,
                    actions: r.try_get("actions")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_ts: r.try_get("next_attempt_ts")?,
                    created_ts: r.try_get("created_ts")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn next_push_due(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query("SELECT MIN(next_attempt_ts) AS due FROM push_queue")
                .fetch_one(&self.read)
                .await?
                .try_get("due")?,
        )
    }

    async fn lease_push(&self, q: &QueuedPush, expected: i64, lease_until: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE push_queue SET next_attempt_ts = $1 WHERE app_id = $2 AND pushkey = $3
               AND user_id = $4 AND event_id = $5 AND next_attempt_ts = $6",
        )
        .bind(lease_until)
        .bind(&q.pusher.app_id)
        .bind(&q.pusher.pushkey)
        .bind(&q.pusher.user_id)
        .bind(&q.event_id)
        .bind(expected)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn push_done(&self, q: &QueuedPush) -> Result<()> {
        sqlx::query(
            "DELETE FROM push_queue WHERE app_id = $1 AND pushkey = $2 AND user_id = $3 AND event_id = $4",
        )
        .bind(&q.pusher.app_id)
        .bind(&q.pusher.pushkey)
        .bind(&q.pusher.user_id)
        .bind(&q.event_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn push_retry(&self, q: &QueuedPush, attempts: i64, next_attempt_ts: i64) -> Result<()> {
        sqlx::query(
            "UPDATE push_queue SET attempts = $1, next_attempt_ts = $2
             WHERE app_id = $3 AND pushkey = $4 AND user_id = $5 AND event_id = $6",
        )
        .bind(attempts)
        .bind(next_attempt_ts)
        .bind(&q.pusher.app_id)
        .bind(&q.pusher.pushkey)
        .bind(&q.pusher.user_id)
        .bind(&q.event_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
