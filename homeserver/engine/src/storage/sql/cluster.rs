//! The instance table and room write locks (`storage/cluster.rs`).
//!
//! Room locks are PostgreSQL transaction-level advisory locks: the guard owns
//! an open transaction whose only statement took the lock, so dropping it
//! (rollback) or losing the connection releases it. SQLite is one process's
//! database: its writers are serialised in memory and the lock is empty.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::SqlStore;
use crate::{
    error::Result,
    storage::cluster::{ClusterStore, InstanceRecord, RoomLock},
};

/// The advisory lock key of a room: 64 bits of a hash of its id, in a space
/// of its own (collisions only make two rooms share a lock).
fn lock_key(room_id: &str) -> i64 {
    let digest = Sha256::digest(format!("room-write:{room_id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[async_trait]
impl ClusterStore for SqlStore {
    async fn heartbeat(&self, record: &InstanceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_instances (instance_id, boot_id, floor, heartbeat_ts)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (instance_id) DO UPDATE SET boot_id = excluded.boot_id,
                 floor = excluded.floor, heartbeat_ts = excluded.heartbeat_ts",
        )
        .bind(i64::from(record.instance_id))
        .bind(&record.boot_id)
        .bind(record.floor)
        .bind(record.heartbeat_ts)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let rows = sqlx::query(
            "SELECT instance_id, boot_id, floor, heartbeat_ts FROM cluster_instances
             ORDER BY instance_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("instance_id")?;
                Ok(InstanceRecord {
                    instance_id: u16::try_from(id).unwrap_or(u16::MAX),
                    boot_id: r.try_get("boot_id")?,
                    floor: r.try_get("floor")?,
                    heartbeat_ts: r.try_get("heartbeat_ts")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn leave(&self, instance_id: u16, boot_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM cluster_instances WHERE instance_id = $1 AND boot_id = $2")
            .bind(i64::from(instance_id))
            .bind(boot_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn lock_room(&self, room_id: &str) -> Result<RoomLock> {
        if self.is_sqlite {
            return Ok(RoomLock::local());
        }
        let mut tx = self.write.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(room_id))
            .execute(&mut *tx)
            .await?;
        Ok(RoomLock::held(Box::new(tx)))
    }
}
