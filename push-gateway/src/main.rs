//! `push-gateway --config FILE`: the Matrix push gateway for FCM and APNs.
//! See docs/push-gateway.md.

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "Matrix push gateway forwarding to FCM and APNs")]
struct Args {
    /// TOML configuration file (see config/push-gateway.example.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Log as JSON lines instead of readable text.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match push_gateway::Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("push-gateway: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    if args.json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let mut gateway = match push_gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("push-gateway: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            gateway.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
        _ = gateway.wait() => std::process::ExitCode::from(1),
    }
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
