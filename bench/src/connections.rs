//! Idle connections: how many WebSocket streams or pending /sync long-polls a
//! server process holds, and what each costs in resident memory.
//!
//! Reads the server's `VmRSS` from `/proc/<pid>/status` before and after
//! opening the connections, so it must run on the server's machine. Both this
//! process and the server need a file limit above `--count` (`ulimit -n`).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::setup::{http_client, register_user, run_id, ServerArgs};

#[derive(Debug, Clone, clap::ValueEnum)]
pub enum Kind {
    /// WebSocket streams (`/_matrix/client/unstable/io.homeserver.ws/stream`).
    Ws,
    /// Pending `/sync` long-polls.
    Longpoll,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The server's process id, to read its RSS; several, comma-separated,
    /// when server processes share the port (`listeners.reuse_port`): their
    /// RSS is summed.
    #[arg(long, value_delimiter = ',', required = true)]
    pub server_pid: Vec<u32>,
    #[arg(long, value_enum, default_value = "ws")]
    pub kind: Kind,
    /// How many connections to open.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Local source addresses to spread connections over (each gives ~28K
    /// ephemeral ports), e.g. `127.0.0.2,127.0.0.3`.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub source_ips: Vec<IpAddr>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub parallel: usize,
    /// How long to hold them after the last one is up, before measuring.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
}

fn total_rss_kib(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&pid| rss_kib(pid)).sum()
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS line")
}

pub async fn run(args: Args) -> Result<()> {
    let http = http_client()?;
    let user = register_user(&http, &args.server, &format!("bench_{}_conn", run_id())).await?;
    let token = user.token().to_owned();
    let base = args.server.base_url.trim_end_matches('/').to_owned();
    let server_addr: SocketAddr = {
        let url = reqwest::Url::parse(&base)?;
        let host = url.host_str().context("base URL has no host")?;
        let port = url
            .port_or_known_default()
            .context("base URL has no port")?;
        format!("{host}:{port}")
            .parse()
            .context("--base-url must use an IP address")?
    };
    // A first sync gives the token that makes every later long-poll wait.
    let since = user.sync(None, "{}", 0).await?.0.next_batch;

    let before = total_rss_kib(&args.server_pid)?;
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Opened, then closed by the server (or the network) before the end.
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(args.count);
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel));
    for i in 0..args.count {
        let source = args.source_ips[i % args.source_ips.len()];
        let (open, failed, dropped, gate, token, base, since) = (
            open.clone(),
            failed.clone(),
            dropped.clone(),
            gate.clone(),
            token.clone(),
            base.clone(),
            since.clone(),
        );
        let mut hold = hold_rx.clone();
        let kind = args.kind.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let result = match kind {
                Kind::Ws => open_ws(server_addr, source, &base, &token, &since)
                    .await
                    .map(Conn::Ws),
                Kind::Longpoll => open_longpoll(source, &base, &token, &since)
                    .await
                    .map(Conn::Poll),
            };
            drop(permit);
            match result {
                Ok(mut conn) => {
                    open.fetch_add(1, Ordering::Relaxed);
                    let lost = match &mut conn {
                        // Read while holding: tungstenite answers the
                        // server's pings only as the stream is read, and the
                        // server reaps a peer silent for three ping intervals.
                        Conn::Ws(ws) => loop {
                            tokio::select! {
                                _ = hold.wait_for(|done| *done) => break false,
                                msg = ws.next() => match msg {
                                    Some(Ok(_)) => continue,
                                    _ => break true,
                                },
                            }
                        },
                        Conn::Poll(_) => {
                            let _ = hold.wait_for(|done| *done).await;
                            false
                        }
                    };
                    if lost {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(conn);
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Wait until every connection is up (or failed).
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.count {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(600) {
            bail!("connections not established after 10 minutes");
        }
    }
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after = total_rss_kib(&args.server_pid)?;
    let held = open.load(Ordering::Relaxed) - dropped.load(Ordering::Relaxed);
    let _ = hold_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "hs-bench connections: {:?} x {} (source IPs {:?})",
        args.kind, args.count, args.source_ips
    );
    println!(
        "  held          {held} ({} failed, {} dropped by the server), opened in {:.1} s",
        failed.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        ramp.as_secs_f64()
    );
    println!(
        "  server RSS    {:.1} MiB before, {:.1} MiB with the connections open",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    if held > 0 {
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / held as f64;
        println!(
            "  per connection {:.0} bytes ({:.2} KiB)",
            per,
            per / 1024.0
        );
    }
    Ok(())
}

enum Conn {
    /// Held, and read (for pings), until the measurement ends.
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>),
    Poll(tokio::task::JoinHandle<()>),
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Conn::Poll(h) = self {
            h.abort();
        }
    }
}

async fn open_ws(
    server: SocketAddr,
    source: IpAddr,
    base: &str,
    token: &str,
    since: &str,
) -> Result<Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    let url = format!(
        "{}/_matrix/client/unstable/io.homeserver.ws/stream?since={since}",
        base.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("m.json"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    // Drain whatever arrives (pings are answered by tungstenite) in the background of the hold.
    let _ = tokio::time::timeout(Duration::from_millis(1), ws.next()).await;
    Ok(Box::new(ws))
}

async fn open_longpoll(
    source: IpAddr,
    base: &str,
    token: &str,
    since: &str,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .local_address(source)
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{base}/_matrix/client/v3/sync?since={since}&timeout=110000");
    let token = token.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let req = client.get(&url).bearer_auth(&token).send();
        let _ = ready_tx.send(());
        let _ = req.await;
    });
    let _ = ready_rx.await;
    Ok(handle)
}
