//! `[storage]`: backends beside the SQL database. Today: `[storage.cql]`, the
//! ScyllaDB/Cassandra event log of the scale-out design (docs/scale-out.md).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    pub cql: Cql,
}

/// A CQL cluster (ScyllaDB, or Apache Cassandra 4+) holding the room timelines.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cql {
    /// `host:port` of a few nodes; the driver discovers the rest of the
    /// cluster from them. Empty: no CQL store is configured.
    pub contact_points: Vec<String>,
    /// Keyspace of the timeline tables, created with them on connect.
    pub keyspace: String,
    /// Copies of every row. 3 in production: a quorum (2) survives one node down.
    pub replication_factor: u32,
    /// With a datacenter name the keyspace uses `NetworkTopologyStrategy`
    /// with `replication_factor` copies there; empty uses `SimpleStrategy`.
    pub datacenter: String,
    /// Consistency of reads. With `write_consistency`, quorum on both sides
    /// means every instance reads what any instance wrote.
    pub read_consistency: CqlConsistency,
    pub write_consistency: CqlConsistency,
    /// `bucket = stream_pos >> bucket_shift` for the keyspace's partitions,
    /// recorded when the keyspace is created and kept for its life (a later
    /// change is ignored: rows are found by recomputing their bucket). Unset:
    /// 20 for one instance, 26 with `[cluster]`, where positions advance up
    /// to 64 per event (docs/scale-out.md, "Partitions").
    pub bucket_shift: Option<u32>,
}

impl Default for Cql {
    fn default() -> Self {
        Self {
            contact_points: Vec::new(),
            keyspace: "hs_timeline".to_owned(),
            replication_factor: 3,
            datacenter: String::new(),
            read_consistency: CqlConsistency::LocalQuorum,
            write_consistency: CqlConsistency::LocalQuorum,
            bucket_shift: None,
        }
    }
}

/// The bucket shift of a new single-instance keyspace: 2^20 positions.
pub const SINGLE_INSTANCE_BUCKET_SHIFT: u32 = 20;
/// The bucket shift of a new keyspace shared by several instances: each
/// event advances positions by up to 64 (one per possible instance), so 2^6
/// more positions keep a bucket's span of traffic the same.
pub const CLUSTER_BUCKET_SHIFT: u32 = 26;

impl Cql {
    /// The shift a new keyspace records: `bucket_shift`, or the default for
    /// one instance or a cluster.
    pub fn bucket_shift_for(&self, clustered: bool) -> u32 {
        self.bucket_shift.unwrap_or(if clustered {
            CLUSTER_BUCKET_SHIFT
        } else {
            SINGLE_INSTANCE_BUCKET_SHIFT
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let ks = &self.keyspace;
        // CQL identifiers: a letter, then letters, digits or underscores, at most 48.
        let valid = ks.len() <= 48
            && ks.starts_with(|c: char| c.is_ascii_alphabetic())
            && ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            anyhow::bail!(
                "storage.cql.keyspace {ks:?} must be a letter then up to 47 letters, digits or '_'"
            );
        }
        if self.bucket_shift.is_some_and(|s| !(8..=62).contains(&s)) {
            anyhow::bail!("storage.cql.bucket_shift must be between 8 and 62");
        }
        if self.replication_factor == 0 {
            anyhow::bail!("storage.cql.replication_factor must be at least 1");
        }
        if !self
            .datacenter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            anyhow::bail!("storage.cql.datacenter may hold only letters, digits, '_', '-' and '.'");
        }
        Ok(())
    }
}

/// The CQL consistency levels that make sense for the timeline. `SERIAL`
/// levels are for lightweight transactions, which it does not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CqlConsistency {
    One,
    LocalOne,
    Two,
    Three,
    Quorum,
    LocalQuorum,
    EachQuorum,
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c: Cql = toml::from_str(
            "contact_points = [\"10.0.0.1:9042\"]\nkeyspace = \"tl\"\nread_consistency = \"local_one\"",
        )
        .unwrap();
        assert_eq!(c.read_consistency, CqlConsistency::LocalOne);
        assert_eq!(c.write_consistency, CqlConsistency::LocalQuorum);
        c.validate().unwrap();
        for bad in ["1ks", "a-b", "", "ks;DROP"] {
            let c = Cql {
                keyspace: bad.to_owned(),
                ..Cql::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Cql>("read_consistency = \"serial\"").is_err());
    }
}
