//! Test harness for the storage conformance suite: a fresh, migrated store per
//! test on every available backend, and a builder for the records
//! `persist_event` takes.
//!
//! Backends: SQLite always, as a file in a temporary directory. PostgreSQL too
//! when `HS_TEST_POSTGRES_URL` names an admin connection (for example
//! `postgres://postgres@127.0.0.1:55432/postgres`): each test then gets its own
//! database `hs_conf_<random>`, dropped when the test ends, even by panic.
//! Built with the `cql` feature, every test also runs with the timeline's
//! message bodies in a CQL event log (`cql_sqlite`, `cql_postgres`), on a
//! keyspace of its own on the node `HS_TEST_CQL_URL` names.

#![allow(dead_code)]

use hs_engine::storage::{PersistEvent, Storage, TxnRecord};
use serde_json::{json, Value};
use sqlx::Connection;

/// Runs each named `async fn(&Storage)` once per backend, as the tests
/// `<name>::sqlite` and `<name>::postgres`. Without `HS_TEST_POSTGRES_URL` the
/// PostgreSQL variant reports that it was skipped and passes.
///
/// `conformance!(timeline: ...)` marks tests of the timeline: built with the
/// `cql` feature they also run with the message bodies in a CQL event log,
/// as `<name>::cql_sqlite` and `<name>::cql_postgres` (skipped without
/// `HS_TEST_CQL_URL`, and the latter without `HS_TEST_POSTGRES_URL`).
#[macro_export]
macro_rules! conformance {
    (timeline: $($test:ident),* $(,)?) => {$(
        mod $test {
            $crate::conformance!(@sql $test);

            /// SQLite with the timeline's message bodies in the CQL log.
            #[cfg(feature = "cql")]
            #[tokio::test]
            async fn cql_sqlite() {
                let Some(store) = $crate::common::TestStore::sqlite().await.with_cql().await else {
                    return;
                };
                super::$test(&store.storage).await;
                store.finish().await;
            }

            /// PostgreSQL with the timeline's message bodies in the CQL log:
            /// the production layout.
            #[cfg(feature = "cql")]
            #[tokio::test]
            async fn cql_postgres() {
                let Some(store) = $crate::common::TestStore::postgres().await else {
                    eprintln!("HS_TEST_POSTGRES_URL is not set: skipped on PostgreSQL");
                    return;
                };
                let Some(store) = store.with_cql().await else {
                    return;
                };
                super::$test(&store.storage).await;
                store.finish().await;
            }
        }
    )*};
    (@sql $test:ident) => {
        #[tokio::test]
        async fn sqlite() {
            let store = $crate::common::TestStore::sqlite().await;
            super::$test(&store.storage).await;
            store.finish().await;
        }

        #[tokio::test]
        async fn postgres() {
            let Some(store) = $crate::common::TestStore::postgres().await else {
                eprintln!("HS_TEST_POSTGRES_URL is not set: skipped on PostgreSQL");
                return;
            };
            super::$test(&store.storage).await;
            store.finish().await;
        }
    };
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            $crate::conformance!(@sql $test);
        }
    )*};
}

/// A freshly migrated store, and whatever must be cleaned up after it.
pub struct TestStore {
    pub storage: Storage,
    /// The SQL database's URL, for tests that look under the traits.
    pub url: String,
    /// Holds the SQLite file; removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// Declared after `storage` so the pools are dropped before the database.
    postgres: Option<PgDatabase>,
    /// The CQL keyspace of the event log, dropped by `finish`.
    #[cfg(feature = "cql")]
    cql: Option<CqlKeyspace>,
}

#[cfg(feature = "cql")]
struct CqlKeyspace {
    log: hs_engine::storage::cql::CqlEventLog,
    keyspace: String,
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("hs.db").display());
        let storage = Storage::connect(&url, 4).await.expect("connect to SQLite");
        TestStore {
            storage,
            url,
            _dir: Some(dir),
            postgres: None,
            #[cfg(feature = "cql")]
            cql: None,
        }
    }

    /// `None` when no PostgreSQL server is configured.
    pub async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("HS_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let db = PgDatabase::create(&admin_url).await;
        let storage = Storage::connect(&db.url, 4)
            .await
            .expect("connect to PostgreSQL");
        Some(TestStore {
            storage,
            url: db.url.clone(),
            _dir: None,
            postgres: Some(db),
            #[cfg(feature = "cql")]
            cql: None,
        })
    }

    /// Moves the timeline's message bodies to a CQL event log on a fresh
    /// keyspace of the node named by `HS_TEST_CQL_URL` (`host:port`, set by
    /// `scripts/test.sh scaleout`). `None` (the test is skipped) when it is
    /// not set, except under `CI=true`, where that fails.
    #[cfg(feature = "cql")]
    pub async fn with_cql(mut self) -> Option<Self> {
        use hs_engine::storage::cql::CqlEventLog;
        let Some(url) = std::env::var("HS_TEST_CQL_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "HS_TEST_CQL_URL is not set (scripts/test.sh scaleout starts Cassandra)"
            );
            eprintln!("HS_TEST_CQL_URL is not set: skipped on CQL");
            self.finish().await;
            return None;
        };
        let keyspace = format!("hs_conf_{:016x}", rand::random::<u64>());
        let config = hs_engine::config::Cql {
            contact_points: vec![url],
            keyspace: keyspace.clone(),
            replication_factor: 1,
            ..hs_engine::config::Cql::default()
        };
        let started = std::time::Instant::now();
        let log = CqlEventLog::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connecting to the CQL node: {e}"));
        eprintln!("CQL keyspace {keyspace} ready in {:?}", started.elapsed());
        self.storage = self
            .storage
            .clone()
            .with_event_log(std::sync::Arc::new(log.clone()));
        self.cql = Some(CqlKeyspace { log, keyspace });
        Some(self)
    }

    /// The CQL event log and its keyspace, once `with_cql` added them.
    #[cfg(feature = "cql")]
    pub fn event_log(&self) -> Option<(&hs_engine::storage::cql::CqlEventLog, &str)> {
        self.cql.as_ref().map(|c| (&c.log, c.keyspace.as_str()))
    }

    /// Closes the store and drops its PostgreSQL database and CQL keyspace,
    /// if any.
    pub async fn finish(self) {
        let TestStore {
            storage,
            url: _,
            _dir,
            postgres,
            #[cfg(feature = "cql")]
            cql,
        } = self;
        drop(storage);
        if let Some(db) = postgres {
            db.drop_database().await;
        }
        #[cfg(feature = "cql")]
        if let Some(CqlKeyspace { log, keyspace }) = cql {
            let _ = log
                .session()
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
                .await;
        }
    }
}

/// A PostgreSQL database created for one test.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        let name = format!("hs_conf_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to HS_TEST_POSTGRES_URL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let url = database_url(admin_url, &name);
        PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }

    async fn drop_database(self) {
        drop_pg_database(&self.admin_url, &self.name).await;
        std::mem::forget(self);
    }
}

impl Drop for PgDatabase {
    /// A test that panicked never reached `finish`: drop its database from a
    /// helper thread with its own runtime (we are inside the test's runtime).
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(drop_pg_database(&admin_url, &name));
        })
        .join();
    }
}

async fn drop_pg_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(admin_url).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// `admin_url` with its database (the URL's path) replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut url = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Builds the [`PersistEvent`] for one event, the way the room service does: a
/// state event creates snapshot `snapshot` on top of `parent` (its state
/// before), and the event becomes the room's only forward extremity.
pub struct Ev {
    ev: PersistEvent,
    content: Value,
}

impl Ev {
    /// A timeline event of `event_type` at stream position `pos`.
    pub fn new(
        room_id: &str,
        pos: i64,
        event_id: &str,
        sender: &str,
        event_type: &str,
        content: Value,
    ) -> Self {
        Ev {
            ev: PersistEvent {
                stream_pos: pos,
                event_id: event_id.to_owned(),
                room_id: room_id.to_owned(),
                event_type: event_type.to_owned(),
                state_key: None,
                sender: sender.to_owned(),
                origin_server_ts: 1_700_000_000_000 + pos,
                depth: pos,
                pdu_json: String::new(),
                state_before: 0,
                state_after: None,
                forward_extremities: vec![event_id.to_owned()],
                txn: None,
                membership: None,
                redaction: None,
            },
            content,
        }
    }

    /// An `m.room.message` with `body`.
    pub fn message(room_id: &str, pos: i64, event_id: &str, sender: &str, body: &str) -> Self {
        Self::new(
            room_id,
            pos,
            event_id,
            sender,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": body }),
        )
    }

    /// An `m.room.member` event for `user` (who also sends it), creating
    /// snapshot `snapshot` on top of `parent`.
    pub fn member(
        room_id: &str,
        pos: i64,
        event_id: &str,
        user: &str,
        membership: &str,
        snapshot: (i64, i64),
    ) -> Self {
        let mut ev = Self::new(
            room_id,
            pos,
            event_id,
            user,
            "m.room.member",
            json!({ "membership": membership }),
        )
        .state(user, snapshot);
        ev.ev.membership = Some(membership.to_owned());
        ev
    }

    /// Sent by `sender` rather than by the user the event was made for.
    pub fn sent_by(mut self, sender: &str) -> Self {
        self.ev.sender = sender.to_owned();
        self
    }

    /// Makes this a state event with `state_key`, creating snapshot
    /// `snapshot.0` on top of `snapshot.1`.
    pub fn state(mut self, state_key: &str, (snapshot, parent): (i64, i64)) -> Self {
        self.ev.state_key = Some(state_key.to_owned());
        self.ev.state_before = parent;
        self.ev.state_after = Some((snapshot, parent));
        self
    }

    /// Sent on top of state snapshot `snapshot`.
    pub fn before(mut self, snapshot: i64) -> Self {
        self.ev.state_before = snapshot;
        self
    }

    /// Sent by a local client's `device` in the transaction `key` (endpoint
    /// scope and txn id), with the client's own `txn_id`.
    pub fn txn(mut self, device: &str, key: &str, txn_id: &str) -> Self {
        self.ev.txn = Some(TxnRecord {
            user_id: self.ev.sender.clone(),
            device_id: device.to_owned(),
            key: key.to_owned(),
            txn_id: txn_id.to_owned(),
        });
        self
    }

    /// Redacts `target`, whose PDU becomes `redacted_json`.
    pub fn redacts(mut self, target: &str, redacted_json: &str) -> Self {
        self.ev.redaction = Some((target.to_owned(), redacted_json.to_owned()));
        self
    }

    /// Replaces the room's forward extremities with `ids` instead of this event.
    pub fn extremities(mut self, ids: &[&str]) -> Self {
        self.ev.forward_extremities = ids.iter().map(|id| (*id).to_owned()).collect();
        self
    }

    pub fn build(mut self) -> PersistEvent {
        let mut pdu = json!({
            "event_id": self.ev.event_id,
            "room_id": self.ev.room_id,
            "type": self.ev.event_type,
            "sender": self.ev.sender,
            "origin_server_ts": self.ev.origin_server_ts,
            "depth": self.ev.depth,
            "content": self.content,
        });
        if let Some(key) = &self.ev.state_key {
            pdu["state_key"] = json!(key);
        }
        if let Some((target, _)) = &self.ev.redaction {
            pdu["redacts"] = json!(target);
        }
        self.ev.pdu_json = pdu.to_string();
        self.ev
    }
}

/// Parses a stored PDU.
pub fn pdu(json: &str) -> Value {
    serde_json::from_str(json).expect("stored PDU is JSON")
}
