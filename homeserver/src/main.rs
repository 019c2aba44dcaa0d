//! `homeserver [--config FILE]`: with no arguments, a development server on
//! 127.0.0.1:8008 with SQLite under `./data` and open registration.

use std::path::PathBuf;

use clap::Parser;
use engine::config::Config;
use tracing_subscriber::EnvFilter;

/// jemalloc keeps its bookkeeping outside the memory it hands out, so the
/// pages of a buffer never written stay unbacked. glibc's malloc writes a
/// header before every chunk, which makes resident the pages around each of
/// hyper's 8 KiB per-connection buffers even while they are empty: with tens
/// of thousands of idle connections that was 3 KiB of RSS per connection
/// (docs/capacity.md, "Memory per connection").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about = "A federated, Matrix-compatible homeserver")]
struct Args {
    /// TOML configuration file; see docs/configuration.md. Without it the
    /// built-in development defaults apply (plus HS_* environment overrides).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(args.config.as_deref())?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    if config.logging.json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if config.registration.enabled && !config.registration.require_token {
        tracing::warn!(
            "open registration is enabled: anyone who can reach this server may create an account"
        );
    }
    let mut server = homeserver::start(config).await?;
    let stop = server.shutdown_handle();
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    server.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
