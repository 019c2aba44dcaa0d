//! Rooms, current state, state snapshots, memberships and aliases.

use async_trait::async_trait;
use sqlx::{any::AnyRow, Row};

use super::{flag, SqlStore};
use crate::{
    error::Result,
    storage::{MembershipRecord, RoomRecord, RoomStore},
};

fn membership_from_row(row: &AnyRow) -> Result<MembershipRecord, sqlx::Error> {
    Ok(MembershipRecord {
        room_id: row.try_get("room_id")?,
        user_id: row.try_get("user_id")?,
        membership: row.try_get("membership")?,
        event_id: row.try_get("event_id")?,
        stream_pos: row.try_get("stream_pos")?,
    })
}

fn state_triples(rows: &[AnyRow]) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("event_type")?,
                r.try_get("state_key")?,
                r.try_get("event_id")?,
            ))
        })
        .collect()
}

#[async_trait]
impl RoomStore for SqlStore {
    async fn create_room(&self, room: &RoomRecord) -> Result<()> {
        sqlx::query("INSERT INTO rooms (room_id, room_version, creator, is_public, current_snapshot) VALUES ($1, $2, $3, $4, 0)")
            .bind(&room.room_id)
            .bind(&room.room_version)
            .bind(&room.creator)
            .bind(room.is_public as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn get_room(&self, room_id: &str) -> Result<Option<RoomRecord>> {
        let row = sqlx::query(
            "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(RoomRecord {
                    room_id: r.try_get("room_id")?,
                    room_version: r.try_get("room_version")?,
                    creator: r.try_get("creator")?,
                    is_public: flag(&r, "is_public")?,
                })
            })
            .transpose()?)
    }

    async fn set_room_public(&self, room_id: &str, public: bool) -> Result<()> {
        sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
            .bind(public as i64)
            .bind(room_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn public_rooms(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("room_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn current_state(&self, room_id: &str) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_all(&self.read)
        .await?;
        Ok(state_triples(&rows)?)
    }

    async fn forward_extremities(&self, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT event_id FROM forward_extremities WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("event_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn current_snapshot(&self, room_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT current_snapshot FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row
            .map(|r| r.try_get("current_snapshot"))
            .transpose()?
            .unwrap_or(0))
    }

    async fn snapshot_state(&self, snapshot_id: i64) -> Result<Vec<(String, String, String)>> {
        // Walk the parent chain in one query; the nearest entry for a key wins.
        let rows = sqlx::query(
            "WITH RECURSIVE chain(id, hops) AS (
                 SELECT snapshot_id, 0 FROM state_snapshots WHERE snapshot_id = $1
                 UNION ALL
                 SELECT s.parent_id, c.hops + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.id
                 WHERE s.parent_id IS NOT NULL
             )
             SELECT e.event_type, e.state_key, e.event_id FROM chain c
             JOIN state_snapshot_entries e ON e.snapshot_id = c.id ORDER BY c.hops ASC",
        )
        .bind(snapshot_id)
        .fetch_all(&self.read)
        .await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (t, k, e) in state_triples(&rows)? {
            if seen.insert((t.clone(), k.clone())) {
                out.push((t, k, e));
            }
        }
        Ok(out)
    }

    async fn max_snapshot_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(snapshot_id), 0) AS m FROM state_snapshots")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("m")?)
    }

    async fn memberships_for_user(&self, user_id: &str) -> Result<Vec<MembershipRecord>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream_pos FROM memberships WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(membership_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn members(&self, room_id: &str) -> Result<Vec<MembershipRecord>> {
        let rows = sqlx::query("SELECT room_id, user_id, membership, event_id, stream_pos FROM memberships WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(membership_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn forget_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        sqlx::query("UPDATE memberships SET forgotten = 1 WHERE user_id = $1 AND room_id = $2 AND membership IN ('leave', 'ban')")
            .bind(user_id)
            .bind(room_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        let done = sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.read)
            .await?;
        Ok(row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((r.try_get("room_id")?, r.try_get("creator")?))
            })
            .transpose()?)
    }

    async fn delete_alias(&self, alias: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn aliases_for_room(&self, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("alias"))
            .collect::<Result<_, _>>()?)
    }
}
