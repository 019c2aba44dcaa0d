//! The receiving side of a measurement: a client that follows one room over
//! `/sync` long-polls or over the WebSocket stream, and reports when each
//! marked message of this run reaches it.
//!
//! Both transports stamp an arrival when the whole answer (HTTP body or
//! WebSocket frame) has been read, before decoding: that is when a client
//! could first show the message.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

use crate::matrix::{Session, SyncResponse};

/// Key under which each message carries its run and sequence number.
pub const MARKER: &str = "dev.hs_bench";

/// How updates reach the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `GET /sync?since=…&timeout=…`, re-issued after every answer.
    Longpoll,
    /// The WebSocket stream (`docs/websocket.md`).
    Ws,
}

/// A marked message reached a recipient: `(recipient, seq, when)`.
pub type Arrival = (usize, u64, Instant);

/// Who receives, and where to report.
pub struct Receiver {
    pub index: usize,
    pub session: Session,
    pub room_id: String,
    pub run: String,
    pub since: String,
    /// Source address for the WebSocket's TCP connection (spreads many
    /// recipients over several 127.x addresses); `None` for the default.
    pub source: Option<IpAddr>,
}

/// The `m.json` envelope of a server-pushed update.
#[derive(Deserialize)]
struct Pushed {
    method: String,
    param: Option<SyncResponse>,
}

/// The sync filter: only this room's messages, nothing else, so each answer
/// stays as small as a real client's incremental sync.
pub fn sync_filter(room_id: &str) -> String {
    json!({
        "presence": { "not_types": ["*"] },
        "account_data": { "not_types": ["*"] },
        "room": {
            "rooms": [room_id],
            "timeline": { "limit": 50, "types": ["m.room.message"] },
            "state": { "lazy_load_members": true },
            "ephemeral": { "not_types": ["*"] },
            "account_data": { "not_types": ["*"] },
        },
    })
    .to_string()
}

/// A marked message body for `seq` of `run`, padded to about `padding` bytes.
pub fn message(run: &str, seq: u64, padding: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("hs-bench {seq} {padding}"),
        MARKER: { "run": run, "seq": seq },
    })
}

impl Receiver {
    /// Follows the room until `arrivals` is closed or the transport fails.
    pub async fn run(
        self,
        transport: Transport,
        arrivals: mpsc::UnboundedSender<Arrival>,
    ) -> Result<()> {
        match transport {
            Transport::Longpoll => self.long_poll(arrivals).await,
            Transport::Ws => self.websocket(arrivals).await,
        }
    }

    async fn long_poll(self, arrivals: mpsc::UnboundedSender<Arrival>) -> Result<()> {
        let filter = sync_filter(&self.room_id);
        let mut since = self.since.clone();
        loop {
            let (sync, arrived) = self
                .session
                .sync(Some(&since), &filter, 30_000)
                .await
                .with_context(|| format!("{}'s /sync long-poll", self.session.user_id))?;
            since = sync.next_batch.clone();
            if !self.report(&sync, arrived, &arrivals) {
                return Ok(());
            }
        }
    }

    async fn websocket(self, arrivals: mpsc::UnboundedSender<Arrival>) -> Result<()> {
        let base = self.session.base().clone();
        let host = base.host_str().context("base URL has no host")?;
        let port = base
            .port_or_known_default()
            .context("base URL has no port")?;
        let server: SocketAddr = format!("{host}:{port}")
            .parse()
            .context("--base-url must use an IP address for WebSocket recipients")?;
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket
            .connect(server)
            .await
            .context("connecting the WebSocket")?;
        stream.set_nodelay(true)?;
        let mut url = base.clone();
        url.set_scheme("ws").ok();
        url.set_path("/_matrix/client/unstable/io.homeserver.ws/stream");
        url.query_pairs_mut()
            .append_pair("since", &self.since)
            .append_pair("filter", &sync_filter(&self.room_id));
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", self.session.token()))?,
        );
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("m.json"));
        let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
            .await
            .context("WebSocket handshake")?;
        while let Some(frame) = ws.next().await {
            let text = match frame.context("reading the WebSocket")? {
                Message::Text(text) => text,
                Message::Close(close) => bail!("server closed the stream: {close:?}"),
                _ => continue,
            };
            let arrived = Instant::now();
            let pushed: Pushed = serde_json::from_str(&text).context("decoding an update")?;
            let Some(sync) = pushed.param.filter(|_| pushed.method == "sync") else {
                continue;
            };
            if !self.report(&sync, arrived, &arrivals) {
                return Ok(());
            }
        }
        bail!("the WebSocket stream ended")
    }

    /// Reports this run's messages in `sync`; false once nobody listens.
    fn report(
        &self,
        sync: &SyncResponse,
        arrived: Instant,
        arrivals: &mpsc::UnboundedSender<Arrival>,
    ) -> bool {
        let Some(room) = sync.rooms.join.get(&self.room_id) else {
            return !arrivals.is_closed();
        };
        for event in &room.timeline.events {
            let marker = &event.content[MARKER];
            if event.kind != "m.room.message" || marker["run"].as_str() != Some(&self.run) {
                continue;
            }
            if let Some(seq) = marker["seq"].as_u64() {
                if arrivals.send((self.index, seq, arrived)).is_err() {
                    return false;
                }
            }
        }
        true
    }
}
