//! Several instances of one homeserver (multi-instance mode, docs/scale-out.md):
//! one PostgreSQL database, one signing key, one Redis, one server name.
//!
//! Needs `HS_TEST_POSTGRES_URL` and Redis seeds (`HS_TEST_REDIS_CLUSTER`):
//! the scaleout step of `scripts/test.sh` provides both and sets
//! `HS_TEST_SCALEOUT=1`. Elsewhere the tests that need them return early.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{PgDatabase, TestServer};

/// Whether to run the multi-instance tests: only in the scaleout step
/// (`HS_TEST_SCALEOUT=1`), where a missing server is a failure. The other
/// steps skip them, so they run once per CI run.
pub fn available() -> bool {
    if std::env::var("HS_TEST_SCALEOUT").is_ok_and(|v| v == "1") {
        assert!(
            std::env::var("HS_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()),
            "HS_TEST_SCALEOUT=1 needs HS_TEST_POSTGRES_URL"
        );
        assert!(
            std::env::var("HS_TEST_REDIS_CLUSTER").is_ok_and(|v| !v.is_empty()),
            "HS_TEST_SCALEOUT=1 needs HS_TEST_REDIS_CLUSTER"
        );
        return true;
    }
    eprintln!(
        "multi-instance test skipped: run by `./scripts/test.sh scaleout` (HS_TEST_SCALEOUT=1)"
    );
    false
}

/// The Redis Cluster seeds of the test environment.
pub fn redis_cluster() -> Vec<String> {
    std::env::var("HS_TEST_REDIS_CLUSTER")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub struct Cluster {
    /// Instance `i` is `instances[i]` (stop and start it with its methods).
    pub instances: Vec<TestServer>,
    pub server_name: String,
    db: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` instances sharing a fresh database, talking through `redis`.
    pub async fn start(n: usize, redis: Vec<String>) -> Self {
        Self::start_with(n, redis, |_| {}).await
    }

    /// [`Self::start`], with `adjust` applied to every instance's configuration.
    pub async fn start_with(
        n: usize,
        redis: Vec<String>,
        adjust: impl Fn(&mut engine::config::Config) + Clone + Send + 'static,
    ) -> Self {
        let admin_url = std::env::var("HS_TEST_POSTGRES_URL").expect("HS_TEST_POSTGRES_URL");
        let db = PgDatabase::create(&admin_url).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // Its own server name: the stream channel is per server name, and
        // other tests' clusters share the Redis.
        let server_name = format!("c{:08x}.localhost", rand::random::<u32>());
        let key: PathBuf = dir.path().join("signing.key");
        let mut instances = Vec::new();
        for i in 0..n {
            let (url, name, key, redis) = (
                db.url.clone(),
                server_name.clone(),
                key.clone(),
                redis.clone(),
            );
            let adjust = adjust.clone();
            instances.push(
                TestServer::start_with(move |c| {
                    c.server_name = name;
                    c.signing_key_path = key;
                    c.database.url = url;
                    c.cluster.redis = redis;
                    c.cluster.instance_id = i as u16;
                    c.cluster.heartbeat_ms = 50;
                    c.cluster.lease_ms = 1_000;
                    adjust(c);
                })
                .await,
            );
        }
        Cluster {
            instances,
            server_name,
            db: Some(db),
            _dir: dir,
        }
    }

    pub async fn shutdown(mut self) {
        for s in std::mem::take(&mut self.instances) {
            s.shutdown().await;
        }
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}

/// A private plain Redis server the test may stop and start again.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        server.start_again();
        server
    }

    pub fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/test.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A federation where `hs1.test` runs as two instances (indexes 0 and 1, one
/// database, one signing key, one Redis) and `hs3.test` (index 2) is a plain
/// server. Peers reach `hs1.test` through instance 0's federation listener.
pub async fn federation_with_two_instance_hs1(
    redis: Vec<String>,
) -> (super::federation::Federation, PgDatabase) {
    let admin_url = std::env::var("HS_TEST_POSTGRES_URL").expect("HS_TEST_POSTGRES_URL");
    let db = PgDatabase::create(&admin_url).await;
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("hs1-signing.key");
    let url = db.url.clone();
    let fed = super::federation::Federation::start_with(3, move |i, c| {
        if i < 2 {
            c.server_name = super::federation::server_name(0);
            c.signing_key_path = key.clone();
            c.database.url = url.clone();
            c.cluster.redis = redis.clone();
            c.cluster.instance_id = i as u16;
            c.cluster.heartbeat_ms = 50;
            c.cluster.lease_ms = 1_000;
        }
    })
    .await;
    // The key file was read at start-up by both instances.
    drop(keys);
    (fed, db)
}

impl PgDatabase {
    /// Drops the shared database of a multi-instance test.
    pub async fn drop_shared(self) {
        self.drop_database().await;
    }
}
