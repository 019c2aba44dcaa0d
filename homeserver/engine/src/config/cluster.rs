//! `[cluster]`: several homeserver processes serving one server name
//! (docs/scale-out.md).

use serde::{Deserialize, Serialize};

/// The most instances one deployment may run: stream positions are spread
/// over them by their remainder modulo this number.
pub const MAX_INSTANCES: u16 = 64;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// Redis nodes (`host:port`), any node of a Redis Cluster or one plain
    /// server. Empty: this process is the only instance (the default).
    pub redis: Vec<String>,
    /// This instance's id, unique among the deployment's live instances,
    /// below 64.
    pub instance_id: u16,
    /// How often an instance writes its row in the shared database.
    pub heartbeat_ms: u64,
    /// An instance silent for this long is taken for dead: the others stop
    /// waiting for its writes.
    pub lease_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            redis: Vec::new(),
            instance_id: 0,
            heartbeat_ms: 100,
            lease_ms: 5_000,
        }
    }
}

impl Cluster {
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }

    pub fn validate(&self, database_url: &str) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.instance_id >= MAX_INSTANCES {
            anyhow::bail!("cluster.instance_id must be below {MAX_INSTANCES}");
        }
        if database_url.starts_with("sqlite:") {
            anyhow::bail!(
                "[cluster] needs a database the instances share: set database.url to PostgreSQL"
            );
        }
        if self.heartbeat_ms == 0 || self.lease_ms < 4 * self.heartbeat_ms {
            anyhow::bail!(
                "cluster.lease_ms must be at least 4 heartbeats (cluster.heartbeat_ms > 0)"
            );
        }
        Ok(())
    }
}
