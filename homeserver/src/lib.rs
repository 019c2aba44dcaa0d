//! Wires the engine and the HTTP surfaces into one server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use engine::{config::Config, services::Services, Error};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_http::cors::{Any, CorsLayer};

/// A running server: its bound address and a way to stop it.
pub struct Server {
    pub client_addr: SocketAddr,
    pub services: Arc<Services>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections, lets in-flight requests finish, and returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }

    /// Waits until the server stops (after a shutdown signal).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn shutdown_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// The full HTTP application for a set of services.
pub fn app(services: Arc<Services>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any);
    client_api::router()
        .merge(federation::router())
        .fallback(unrecognized)
        .method_not_allowed_fallback(unrecognized)
        .layer(middleware::from_fn(request_span))
        .layer(cors)
        .with_state(services)
}

async fn unrecognized(method: Method) -> Response {
    let status = if method == Method::OPTIONS {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    // Unknown endpoints and unsupported methods both answer M_UNRECOGNIZED.
    let body = Error::unrecognized("Unrecognized request").to_json();
    (status, axum::Json(body)).into_response()
}

/// One tracing span per request, tagged with a request id.
async fn request_span(req: Request, next: Next) -> Response {
    let id = engine::util::random_string(10);
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let _enter = span.enter();
    let started = std::time::Instant::now();
    drop(_enter);
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let _enter = span.enter();
    tracing::debug!(
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "done"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Starts the server on the configured listener.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(config.listeners.client).await?;
    let client_addr = listener.local_addr()?;
    let services = Services::start(config).await?;
    let app = app(services.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "server stopped with an error");
        }
    });
    tracing::info!(%client_addr, "listening");
    Ok(Server {
        client_addr,
        services,
        shutdown: Some(tx),
        task,
    })
}
