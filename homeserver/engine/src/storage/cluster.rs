//! What instances of one deployment share through the database: who is alive
//! with which stream floor, and a lock per room for writers.

use async_trait::async_trait;

use super::StreamPos;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance_id: u16,
    /// A random id per process start: tells a restarted instance from a
    /// second process wrongly configured with the same id.
    pub boot_id: String,
    pub floor: StreamPos,
    /// When the instance last wrote its row, by its own clock (ms).
    pub heartbeat_ts: i64,
}

/// Held while an instance writes to a room; other instances' writers of the
/// same room wait. Dropping it releases the lock.
pub struct RoomLock(#[allow(dead_code)] Option<Box<dyn Send>>);

impl RoomLock {
    /// A lock that excludes nothing: one process serialises its writers itself.
    pub fn local() -> Self {
        Self(None)
    }

    pub fn held(guard: Box<dyn Send>) -> Self {
        Self(Some(guard))
    }
}

#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Writes this instance's row: alive now, with this floor.
    async fn heartbeat(&self, record: &InstanceRecord) -> Result<()>;
    /// Every instance row, live or not.
    async fn instances(&self) -> Result<Vec<InstanceRecord>>;
    /// Removes this instance's row on a clean shutdown (if it is still ours).
    async fn leave(&self, instance_id: u16, boot_id: &str) -> Result<()>;
    /// Serialises writers of one room across processes sharing the database.
    /// Held for the few milliseconds of one write; a process that dies
    /// releases it with its connection.
    async fn lock_room(&self, room_id: &str) -> Result<RoomLock>;
}
