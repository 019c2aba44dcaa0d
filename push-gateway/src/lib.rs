//! The push gateway: a separate service that receives Matrix Push Gateway API
//! notifications (`POST /_matrix/push/v1/notify`) from homeservers and
//! forwards them to Firebase Cloud Messaging (HTTP v1) and Apple Push
//! Notification service (token auth, HTTP/2), one configured `app_id` each.
//!
//! Run it in-process with [`start`]:
//!
//! ```no_run
//! # async fn demo(config: push_gateway::Config) -> anyhow::Result<()> {
//! let gateway = push_gateway::start(config).await?;
//! println!("pushers should use {}", gateway.notify_url());
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! With the `vendor-sim` feature, [`vendor_sim`] provides local FCM- and
//! APNs-protocol servers for tests.

mod apns;
pub mod config;
mod dedup;
mod delivery;
mod error;
mod fcm;
mod jwt;
mod metrics;
mod notify;
mod payload;
#[cfg(feature = "vendor-sim")]
pub mod vendor_sim;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::DefaultBodyLimit, extract::State, routing::get, routing::post, Router};
use tokio::{sync::oneshot, task::JoinHandle};

pub use config::{ApnsConfig, AppConfig, Config, FcmConfig};

use delivery::{App, RetryPolicy, Vendor};

/// State shared by every request.
pub(crate) struct Shared {
    apps: HashMap<String, App>,
    policy: RetryPolicy,
    metrics: Arc<metrics::Metrics>,
    dedup: dedup::Dedup,
}

/// A running gateway. Dropping it does not stop it: call [`Gateway::shutdown`].
pub struct Gateway {
    /// The address the gateway actually listens on.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// `http://{addr}/_matrix/push/v1/notify`: the URL pushers are set up with.
    pub fn notify_url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    /// Stops accepting connections, lets requests in progress finish, and
    /// returns when the server has stopped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Returns when the server stops on its own (it normally runs until
    /// [`Gateway::shutdown`]); the binary uses this to exit on server failure.
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Loads every app's credentials, binds `config.listen` and starts serving.
/// Fails, without starting, if any key file is missing or unusable.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let timeout = Duration::from_millis(config.vendor_timeout_ms);
    let mut apps = HashMap::new();
    for (app_id, app) in &config.apps {
        let vendor = match app {
            AppConfig::Fcm(c) => Vendor::Fcm(
                fcm::FcmSender::new(
                    app_id,
                    &c.service_account,
                    &c.api_url,
                    timeout,
                    metrics.clone(),
                )
                .with_context(|| format!("app {app_id:?}"))?,
            ),
            AppConfig::Apns(c) => Vendor::Apns(
                apns::ApnsSender::new(app_id, c, timeout, metrics.clone())
                    .with_context(|| format!("app {app_id:?}"))?,
            ),
        };
        let limit = match app {
            AppConfig::Fcm(c) => c.max_concurrency,
            AppConfig::Apns(c) => c.max_concurrency,
        };
        apps.insert(
            app_id.clone(),
            App {
                app_id: app_id.clone(),
                vendor,
                limit: tokio::sync::Semaphore::new(limit),
            },
        );
    }
    let shared = Arc::new(Shared {
        apps,
        policy: RetryPolicy {
            max_attempts: config.max_attempts,
            base: Duration::from_millis(config.retry_base_ms),
            max_retry_after: Duration::from_millis(config.max_retry_after_ms),
        },
        metrics,
        dedup: dedup::Dedup::default(),
    });
    let router = Router::new()
        .route("/_matrix/push/v1/notify", post(notify::notify))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { error::ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            error::ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                errcode: "M_UNRECOGNIZED",
                message: "Method not allowed".into(),
            }
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("push gateway server failed: {e}");
        }
    });
    tracing::info!(%addr, apps = config.apps.len(), "push gateway listening");
    Ok(Gateway { addr, stop, task })
}

async fn render_metrics(State(shared): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        shared.metrics.render(),
    )
}
