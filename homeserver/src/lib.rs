//! Wires the engine and the HTTP surfaces into one server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
    Router,
};
use engine::{config::Config, services::Services, Error};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tower_http::cors::{Any, CorsLayer};

pub mod serve;
pub mod tls;

/// A running server: its bound address and a way to stop it.
pub struct Server {
    pub client_addr: SocketAddr,
    /// The federation listener's address, when one is configured.
    pub federation_addr: Option<SocketAddr>,
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
        // Queued pushes stay in the database for the next start.
        self.services.push.stop();
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
        .merge(media_repo::router())
        .fallback(unrecognized)
        .method_not_allowed_fallback(unrecognized)
        .layer(middleware::from_fn(writes_run_to_completion))
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

/// A request that changes something runs to its end even when the client
/// goes away: hyper drops a request's future when its connection closes, and a
/// write cut between its database commit and its in-memory bookkeeping (room
/// extremities, stream positions, wake-ups) would leave the two disagreeing.
/// Reads stay cancellable, so an abandoned long-poll costs nothing.
async fn writes_run_to_completion(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match tokio::spawn(tracing::Instrument::in_current_span(next.run(req))).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "request handler failed");
            let body = Error::unknown("Internal server error").to_json();
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
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

/// The federation listener: TLS when `[tls]` is configured, plain HTTP (for a
/// TLS-terminating proxy in front) otherwise.
enum FederationListener {
    Tls(tls::TlsListener),
    Plain(TcpListener),
}

async fn bind_federation(config: &Config) -> anyhow::Result<Option<FederationListener>> {
    let Some(addr) = config.listeners.federation else {
        return Ok(None);
    };
    let tcp = TcpListener::bind(addr).await?;
    Ok(Some(match (&config.tls.cert_path, &config.tls.key_path) {
        (Some(cert), Some(key)) => {
            FederationListener::Tls(tls::TlsListener::new(tcp, tls::server_config(cert, key)?)?)
        }
        _ => {
            tracing::warn!("listeners.federation is set without [tls]: serving plain HTTP");
            FederationListener::Plain(tcp)
        }
    }))
}

/// The client listener; with `listeners.reuse_port`, one of several processes
/// sharing the port (`SO_REUSEPORT`).
fn bind_client(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = config.listeners.client;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if config.listeners.reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket.listen(4096)?)
}

/// Starts the server on the configured listeners.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let listener = bind_client(&config)?;
    let client_addr = listener.local_addr()?;
    let federation = bind_federation(&config).await?;
    let federation_addr = match &federation {
        Some(FederationListener::Tls(l)) => Some(axum::serve::Listener::local_addr(l)?),
        Some(FederationListener::Plain(l)) => Some(l.local_addr()?),
        None => None,
    };
    let services = Services::start(config).await?;
    let app = app(services.clone());
    let (tx, rx) = oneshot::channel::<()>();
    // One shutdown signal, fanned out to every listener.
    let (stop_tx, stop_rx) = watch::channel(());
    let stopped = |mut rx: watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };
    // Our own accept loop: a held connection (long-poll, WebSocket) costs
    // less memory there than in `axum::serve` (see serve.rs).
    let client = serve::serve(listener, app.clone(), stopped(stop_rx.clone()));
    let federation = async move {
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        match federation {
            // `tap_io` gives the TLS listener axum's `ConnectInfo<SocketAddr>`.
            Some(FederationListener::Tls(l)) => {
                axum::serve(l.tap_io(|_| {}), make)
                    .with_graceful_shutdown(stopped(stop_rx))
                    .await
            }
            Some(FederationListener::Plain(l)) => {
                axum::serve(l, make)
                    .with_graceful_shutdown(stopped(stop_rx))
                    .await
            }
            None => Ok(()),
        }
    };
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = rx.await;
            let _ = stop_tx.send(());
        };
        let (client, federation, ()) = tokio::join!(client, federation, signal);
        for (name, result) in [("client", client), ("federation", federation)] {
            if let Err(e) = result {
                tracing::error!(listener = name, error = %e, "server stopped with an error");
            }
        }
    });
    tracing::info!(%client_addr, ?federation_addr, "listening");
    Ok(Server {
        client_addr,
        federation_addr,
        services,
        shutdown: Some(tx),
        task,
    })
}
