//! The client listener's accept loop.
//!
//! `axum::serve` runs every connection through hyper-util's protocol-sniffing
//! connection, whose state holds an HTTP/2 connection inline next to the
//! HTTP/1 one, inside one task per connection. An idle client connection (a
//! pending `/sync` long-poll, or a WebSocket) keeps that task alive for
//! minutes, so its size is paid per held connection. Here a connection whose
//! first byte cannot start the HTTP/2 preface (`PRI * HTTP/2.0`), which is
//! every `GET` and so every long-poll and WebSocket upgrade, is served by
//! hyper's HTTP/1 connection alone; the others (`PUT`, `POST`, `PATCH`, and
//! HTTP/2 with prior knowledge) go through the sniffing connection, boxed so
//! that it does not size every task.
//!
//! Everything else matches `axum::serve`: `ConnectInfo<SocketAddr>` on each
//! request, upgrades (WebSockets), `TCP_NODELAY`, accept errors that do not
//! stop the loop, and a graceful shutdown that stops accepting, asks every
//! connection to finish its in-flight request, and waits for them.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, pin::pin, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    response::Response,
    Router,
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower_service::Service;

/// The first byte of the HTTP/2 connection preface.
const H2_PREFACE_START: u8 = b'P';

/// Serves `app` on `listener` until `stop` resolves, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    // Dropped to tell connections to shut down gracefully.
    let (signal_tx, signal_rx) = watch::channel(());
    // Each connection holds a receiver; `closed()` resolves when all are gone.
    let (close_tx, close_rx) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Updates are small writes (WebSocket frames, sync answers): without
        // TCP_NODELAY one can sit behind the peer's delayed ACK for 40 ms.
        let _ = tcp.set_nodelay(true);
        let service = Connection {
            app: app.clone(),
            remote,
        };
        let (signal, close) = (signal_rx.clone(), close_rx.clone());
        tokio::spawn(async move {
            connection(tcp, service, signal).await;
            drop(close);
        });
    }
    drop(listener);
    drop(signal_tx);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// Like `axum::serve`: a failed accept never stops the server. Running out
/// of file descriptors waits a second for connections to close.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it closes, or finishes it gracefully once
/// `signal`'s sender is dropped.
async fn connection(tcp: TcpStream, service: Connection, mut signal: watch::Receiver<()>) {
    let mut first = [0u8; 1];
    let http1_only = matches!(tcp.peek(&mut first).await, Ok(1) if first[0] != H2_PREFACE_START);
    let io = TokioIo::new(tcp);
    if http1_only {
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades();
        let mut conn = pin!(conn);
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            _ = signal.changed() => conn.as_mut().graceful_shutdown(),
        }
        log_end(conn.await);
    } else {
        Box::pin(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(io, service);
            let mut conn = pin!(conn);
            tokio::select! {
                result = conn.as_mut() => return log_end(result),
                _ = signal.changed() => conn.as_mut().graceful_shutdown(),
            }
            log_end(conn.await);
        })
        .await;
    }
}

fn log_end<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// The per-connection service: the router, with the peer's address as
/// `ConnectInfo` (what `into_make_service_with_connect_info` adds).
#[derive(Clone)]
struct Connection {
    app: Router,
    remote: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as Service<Request>>::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.remote));
        self.app.clone().call(req)
    }
}
