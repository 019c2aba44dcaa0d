//! The command connection to Redis that services use for shared ephemeral
//! state (typing, presence, connection counts, UIA sessions, nonces, rate
//! limits): docs/scale-out.md, "What lives in Redis".
//!
//! - **Either topology.** The seeds may name a Redis Cluster or one plain
//!   server. `INFO cluster` on the first seed that answers tells which: a
//!   cluster gets a `cluster_async::ClusterConnection` (it follows slot moves
//!   and failovers), a plain server a `ConnectionManager`.
//! - **Keys** are `hs:<server name>:<kind>:{<id>}`: namespaced by server name
//!   (several deployments may share a Redis), with the entity in a hash tag so
//!   every key of one room or user sits in one slot and multi-key
//!   transactions about it work on a cluster.
//! - **Never in the way.** Each call has a short timeout. A connection
//!   failure opens a breaker for a moment, during which calls fail at once
//!   instead of each waiting out the timeout; callers fall back to local
//!   state. Nothing here panics, and reconnecting happens in the background.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::RwLock;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    FromRedisValue,
};

use crate::util::now_ms;

/// The longest a single command (or transaction) may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a connection attempt to one seed may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a connection failure, calls fail fast for this long.
const BREAKER_MS: i64 = 1_000;

/// Why a Redis call did not answer; callers log it and fall back.
#[derive(Debug)]
pub enum CommandError {
    /// Not connected, or the breaker is open after a recent failure.
    Unavailable,
    /// No answer within [`CALL_TIMEOUT`].
    Timeout,
    Redis(redis::RedisError),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => f.write_str("Redis is unavailable"),
            Self::Timeout => write!(f, "Redis did not answer within {CALL_TIMEOUT:?}"),
            Self::Redis(e) => write!(f, "Redis error: {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

pub type CommandResult<T> = Result<T, CommandError>;

#[derive(Clone)]
enum Conn {
    Cluster(ClusterConnection),
    Single(ConnectionManager),
}

/// What the services use of Redis: the command connection and the notes
/// channel. `None` in [`crate::core::Core::redis`] on a single instance.
#[derive(Clone)]
pub struct Redis {
    pub commands: Arc<Commands>,
    pub notes: Arc<super::Notes>,
}

impl Redis {
    /// Connects (waiting at most a moment) and starts following the notes.
    pub async fn start(seeds: &[String], server_name: &str, boot_id: &str) -> Self {
        let commands = Commands::new(seeds, server_name);
        commands.connect().await;
        let notes = super::Notes::new(commands.clone(), boot_id);
        notes.spawn();
        Self { commands, notes }
    }
}

/// Raises the `v` field of the hash `KEYS[1]` to Redis's clock in
/// microseconds (or one past its value if that is higher) and answers it.
/// Versions so made keep growing even when the key expired or Redis lost its
/// data, so instances that remember an older version never take a new value
/// for a stale one. Microseconds since the epoch stay exact in Lua's doubles.
const BUMP_VERSION: &str = r#"
local t = redis.call('TIME')
local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v <= old then v = old + 1 end
redis.call('HSET', KEYS[1], 'v', string.format('%.0f', v))
return v
"#;

/// Adds [`BUMP_VERSION`] on `key` to a pipeline (its answer: the version).
pub fn bump_version(pipe: &mut redis::Pipeline, key: &str) {
    pipe.cmd("EVAL").arg(BUMP_VERSION).arg(1).arg(key);
}

/// The shared command connection (one per process, cheap to use from any task).
pub struct Commands {
    seeds: Vec<String>,
    namespace: String,
    conn: RwLock<Option<Conn>>,
    /// Calls fail fast until this time (ms since the epoch).
    down_until: AtomicI64,
    connecting: AtomicBool,
}

/// Hash tags end at the first `}`: keep an id's braces out of the tag.
fn tag(id: &str) -> String {
    id.replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

impl Commands {
    pub fn new(seeds: &[String], server_name: &str) -> Arc<Self> {
        Arc::new(Self {
            seeds: seeds.to_vec(),
            namespace: format!("hs:{server_name}"),
            conn: RwLock::new(None),
            down_until: AtomicI64::new(0),
            connecting: AtomicBool::new(false),
        })
    }

    /// `hs:<server>:<kind>:{<id>}`: all keys about one id share a slot.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{{{}}}", self.namespace, tag(id))
    }

    /// A pub/sub channel of this deployment.
    pub fn channel(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// Connects now (start-up); on failure keeps trying in the background.
    pub async fn connect(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let connected = self.try_connect().await;
        self.connecting.store(false, Ordering::Release);
        if !connected {
            self.reconnect_later();
        }
    }

    /// Whether calls currently go to Redis (connected, breaker closed).
    pub fn available(&self) -> bool {
        self.conn.read().is_some() && now_ms() >= self.down_until.load(Ordering::Acquire)
    }

    fn reconnect_later(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if this.try_connect().await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(BREAKER_MS as u64)).await;
            }
            this.connecting.store(false, Ordering::Release);
        });
    }

    /// One round over the seeds; true once connected.
    async fn try_connect(&self) -> bool {
        for seed in &self.seeds {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.open(seed)).await {
                Ok(Ok(conn)) => {
                    *self.conn.write() = Some(conn);
                    self.down_until.store(0, Ordering::Release);
                    tracing::info!(seed = %seed, "Redis command connection up");
                    return true;
                }
                Ok(Err(e)) => tracing::debug!(seed = %seed, error = %e, "cannot connect to Redis"),
                Err(_) => tracing::debug!(seed = %seed, "timed out connecting to Redis"),
            }
        }
        false
    }

    /// Asks `seed` whether it is part of a cluster, and connects accordingly.
    async fn open(&self, seed: &str) -> redis::RedisResult<Conn> {
        let client = redis::Client::open(format!("redis://{seed}/"))?;
        let mut probe = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut probe)
            .await?;
        if info.contains("cluster_enabled:1") {
            let urls: Vec<String> = self.seeds.iter().map(|s| format!("redis://{s}/")).collect();
            let conn = ClusterClientBuilder::new(urls)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(CALL_TIMEOUT)
                .retries(1)
                .build()?
                .get_async_connection()
                .await?;
            Ok(Conn::Cluster(conn))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(CALL_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(BREAKER_MS as u64));
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
    }

    /// The connection to use now, or why there is none.
    fn current(self: &Arc<Self>) -> CommandResult<Conn> {
        if now_ms() < self.down_until.load(Ordering::Acquire) {
            return Err(CommandError::Unavailable);
        }
        match self.conn.read().clone() {
            Some(c) => Ok(c),
            None => {
                self.reconnect_later();
                Err(CommandError::Unavailable)
            }
        }
    }

    /// Notes a failed call: connection trouble opens the breaker.
    fn failed(&self, e: CommandError) -> CommandError {
        let connection_trouble = match &e {
            CommandError::Unavailable | CommandError::Timeout => true,
            CommandError::Redis(r) => {
                r.is_io_error()
                    || r.is_timeout()
                    || r.is_connection_dropped()
                    || r.is_connection_refusal()
                    || r.is_cluster_error()
            }
        };
        if connection_trouble {
            self.down_until
                .store(now_ms() + BREAKER_MS, Ordering::Release);
        }
        e
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(self: &Arc<Self>, cmd: &redis::Cmd) -> CommandResult<T> {
        let conn = self.current()?;
        let call = async move {
            match conn {
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(CommandError::Redis(e))),
            Err(_) => Err(self.failed(CommandError::Timeout)),
        }
    }

    /// Runs a pipeline (a `MULTI` transaction when built with `.atomic()`;
    /// on a cluster all its keys must share a slot, i.e. a hash tag).
    pub async fn pipe<T: FromRedisValue>(
        self: &Arc<Self>,
        pipe: &redis::Pipeline,
    ) -> CommandResult<T> {
        let conn = self.current()?;
        let call = async move {
            match conn {
                Conn::Cluster(mut c) => pipe.query_async::<T>(&mut c).await,
                Conn::Single(mut c) => pipe.query_async::<T>(&mut c).await,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(CommandError::Redis(e))),
            Err(_) => Err(self.failed(CommandError::Timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_ids_inside_one_hash_tag() {
        let c = Commands::new(&[], "example.org");
        assert_eq!(
            c.key("typing", "!room:example.org"),
            "hs:example.org:typing:{!room:example.org}"
        );
        // A brace in an id cannot end the tag early.
        assert_eq!(c.key("uia", "a}b{"), "hs:example.org:uia:{a%7Db%7B}");
        assert_eq!(c.channel("notes"), "hs:example.org.notes");
    }
}
