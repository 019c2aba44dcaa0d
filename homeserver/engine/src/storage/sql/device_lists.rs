//! Device-list changes, and the room sharing that decides who is told of them.
//!
//! "Shares a room" means both users are joined to it (from `memberships`).

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::{
    error::Result,
    storage::{DeviceListStore, MembershipChange, StreamPos},
};

#[async_trait]
impl DeviceListStore for SqlStore {
    async fn device_list_changes(
        &self,
        user_id: &str,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.user_id FROM device_list_changes c
             WHERE c.stream_pos > $2 AND c.stream_pos <= $3
               AND (c.user_id = $1 OR EXISTS (
                    SELECT 1 FROM memberships mine
                    JOIN memberships theirs ON theirs.room_id = mine.room_id
                    WHERE mine.user_id = $1 AND mine.membership = 'join'
                      AND theirs.user_id = c.user_id AND theirs.membership = 'join'))
             ORDER BY c.user_id",
        )
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn membership_changes(
        &self,
        user_id: &str,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<Vec<MembershipChange>> {
        let rows = sqlx::query(
            "SELECT theirs.user_id AS other_user, theirs.membership AS other_membership,
                    theirs.stream_pos AS other_pos, mine.membership AS my_membership,
                    mine.stream_pos AS my_pos
             FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id
             WHERE mine.user_id = $1 AND theirs.user_id <> $1
               AND ((mine.membership = 'join' AND theirs.stream_pos > $2 AND theirs.stream_pos <= $3)
                    OR (mine.stream_pos > $2 AND mine.stream_pos <= $3))",
        )
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await?;
        let in_window = |pos: i64| pos > from && pos <= to;
        rows.iter()
            .map(|r| {
                Ok(MembershipChange {
                    other_user: r.try_get("other_user")?,
                    other_membership: r.try_get("other_membership")?,
                    other_changed: in_window(r.try_get("other_pos")?),
                    my_membership: r.try_get("my_membership")?,
                    my_changed: in_window(r.try_get("my_pos")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn users_sharing_rooms(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT theirs.user_id FROM memberships mine
             JOIN memberships theirs ON theirs.room_id = mine.room_id
             WHERE mine.user_id = $1 AND mine.membership = 'join' AND theirs.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn max_stream_pos(&self) -> Result<StreamPos> {
        let changes: i64 =
            sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM device_list_changes")
                .fetch_one(&self.read)
                .await?
                .try_get("m")?;
        let watermarks: i64 =
            sqlx::query("SELECT COALESCE(MAX(stream_pos), 0) AS m FROM stream_watermarks")
                .fetch_one(&self.read)
                .await?
                .try_get("m")?;
        Ok(changes.max(watermarks))
    }

    async fn record_device_list_change(&self, user_id: &str, pos: StreamPos) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2)
             ON CONFLICT (user_id, stream_pos) DO NOTHING",
        )
        .bind(user_id)
        .bind(pos)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn latest_device_list_change(
        &self,
        user_id: &str,
        before: StreamPos,
    ) -> Result<Option<StreamPos>> {
        let row = sqlx::query(
            "SELECT MAX(stream_pos) AS m FROM device_list_changes
             WHERE user_id = $1 AND stream_pos < $2",
        )
        .bind(user_id)
        .bind(before)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("m")?)
    }
}
