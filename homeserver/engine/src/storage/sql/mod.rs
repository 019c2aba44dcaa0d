//! The SQL backend: one implementation over sqlx's `Any` driver, serving SQLite
//! (embedded default) and PostgreSQL alike.
//!
//! Queries are written in the dialect both engines accept (`$n` placeholders,
//! `ON CONFLICT`, `TEXT`/`BIGINT` columns), so there is no per-backend copy of the
//! logic. SQLite gets one writer connection (its engine admits one writer at a
//! time anyway) plus a pool of readers over WAL.

mod account_data;
mod accounts;
mod admin;
mod backup;
mod cluster;
mod device_lists;
mod federation;
mod group_commit;
mod keys;
mod media;
mod multi_row;
mod push;
mod receipts;
mod rooms;
mod server_keys;
mod timeline;
mod to_device;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::{
    any::{AnyPoolOptions, AnyRow},
    AnyPool, Executor, Row,
};

/// Ordered schema migrations. A migration is never edited once released.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_e2ee.sql")),
    (3, include_str!("../migrations/0003_receipts.sql")),
    (4, include_str!("../migrations/0004_media.sql")),
    (5, include_str!("../migrations/0005_push.sql")),
    (6, include_str!("../migrations/0006_federation_keys.sql")),
    (7, include_str!("../migrations/0007_federation_rooms.sql")),
    (8, include_str!("../migrations/0008_admin.sql")),
    (9, include_str!("../migrations/0009_media_access.sql")),
    (10, include_str!("../migrations/0010_cluster.sql")),
];

pub struct SqlStore {
    /// Serialises writes on SQLite; on PostgreSQL it is the same pool as `read`.
    write: AnyPool,
    read: AnyPool,
    /// Persists accepted events in group-committed batches (`group_commit.rs`).
    events: group_commit::EventWriter,
    /// SQLite is one process's database; PostgreSQL may be shared by instances.
    is_sqlite: bool,
    /// Background tasks of this store stop once every clone is dropped.
    _alive: Arc<()>,
}

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let (write, read) = if is_sqlite {
            let url = sqlite_url(url)?;
            let write = sqlite_pool(&url, 1).await?;
            // The writer creates the file and switches it to WAL before readers open it.
            run_migrations(&write).await?;
            let read = sqlite_pool(&url, max_connections.clamp(1, 8)).await?;
            (write, read)
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections.max(2))
                .connect(url)
                .await?;
            run_migrations(&pool).await?;
            (pool.clone(), pool)
        };
        let events = group_commit::EventWriter::spawn(write.clone(), is_sqlite);
        let alive = Arc::new(());
        if is_sqlite {
            spawn_checkpointer(sqlite_url(url)?, Arc::downgrade(&alive));
        }
        Ok(Self {
            write,
            read,
            events,
            is_sqlite,
            _alive: alive,
        })
    }
}

/// Makes sure the SQLite file's directory exists and the file is created on demand.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path != ":memory:" {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    Ok(if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    })
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Checkpoints SQLite's WAL every [`CHECKPOINT_EVERY`] from a connection of
/// its own (`PASSIVE`: it never waits for readers or the writer), so the
/// checkpoint's fsyncs stay off the commits that answer sends.
fn spawn_checkpointer(url: String, alive: Weak<()>) {
    tokio::spawn(async move {
        let pool = match sqlite_pool(&url, 1).await {
            Ok(pool) => pool,
            Err(e) => {
                tracing::warn!(error = %e, "no WAL checkpointer: commits checkpoint instead");
                return;
            }
        };
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while alive.strong_count() > 0 {
            tick.tick().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_optional(&pool)
                .await
            {
                tracing::debug!(error = %e, "WAL checkpoint failed; retrying");
            }
        }
        pool.close().await;
    });
}

async fn sqlite_pool(url: &str, max: u32) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        // A connection to a local file cannot go stale, so no ping on each
        // acquire: that round trip through the connection's worker thread
        // was 5% of the server's CPU under a send load.
        .test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                // A checkpoint runs on the commit that crosses this many WAL
                // pages, and its fsyncs (10-20 ms here) hold that send's
                // answer: at SQLite's default of 1,000 pages one send in 40
                // paid it, which was the whole p99. The checkpointer below
                // keeps the WAL short from a connection of its own; this is
                // the backstop for when it falls behind.
                conn.execute("PRAGMA wal_autocheckpoint = 10000").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

async fn run_migrations(pool: &AnyPool) -> anyhow::Result<()> {
    if pool.connect_options().database_url.scheme() == "sqlite" {
        return migrate(pool).await;
    }
    // Instances of one deployment may start together: one migrates, the
    // others wait on this session lock and then find nothing left to do.
    let mut conn = pool.acquire().await?;
    conn.execute("SELECT pg_advisory_lock(7213748529)").await?;
    let migrated = migrate(pool).await;
    conn.execute("SELECT pg_advisory_unlock(7213748529)")
        .await?;
    migrated
}

async fn migrate(pool: &AnyPool) -> anyhow::Result<()> {
    pool.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(pool)
        .await?
        .try_get("v")?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = pool.begin().await?;
        // Drop `--` comments first: they may contain semicolons.
        let without_comments: String = sql
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in without_comments
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(*version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

fn flag(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}
