//! A minimal Matrix Client-Server API client: just the calls the scenarios
//! make, each named after its endpoint in the spec.
//!
//! Rate limiting (`429 M_LIMIT_EXCEEDED`) is honoured by waiting
//! `retry_after_ms` and retrying with the same request; for sends the
//! transaction id makes that retry idempotent. Retries are counted so a report
//! can say when the limiter, not the server, set the pace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin_cli::http::{read_json, MatrixError};
use anyhow::{anyhow, Context, Result};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// How often one request is retried after `M_LIMIT_EXCEEDED`.
const MAX_RATE_LIMIT_RETRIES: u32 = 20;
/// Used when a 429 does not say how long to wait.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_millis(500);

/// A logged-in user: the pooled HTTP client plus an access token.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    base: Url,
    pub user_id: String,
    token: String,
    rate_limited: Arc<AtomicU64>,
}

/// One page of `GET /rooms/{roomId}/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesPage {
    #[serde(default)]
    pub chunk: Vec<Event>,
    pub end: Option<String>,
}

/// The parts of a room event the benchmarks look at.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub content: Value,
}

/// The parts of a `/sync` answer the benchmarks look at.
#[derive(Debug, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Deserialize)]
struct EventId {
    event_id: String,
}

#[derive(Deserialize)]
struct RoomId {
    room_id: String,
}

impl Session {
    pub fn new(http: reqwest::Client, base: Url, user_id: String, token: String) -> Self {
        Session {
            http,
            base,
            user_id,
            token,
            rate_limited: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The access token (for transports other than this client, e.g. WebSocket).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The same session through another instance of the same deployment.
    pub fn on(&self, base: &Url) -> Session {
        Session {
            base: base.clone(),
            ..self.clone()
        }
    }

    /// How many requests of this session were retried after a 429.
    pub fn rate_limited_retries(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// `POST /_matrix/client/v3/createRoom`; returns the room id.
    pub async fn create_room(&self, body: &Value) -> Result<String> {
        let url = client_url(&self.base, &["createRoom"])?;
        let room: RoomId = self
            .call(|| self.authed(Method::POST, url.clone()).json(body))
            .await
            .context("createRoom")?;
        Ok(room.room_id)
    }

    /// `POST /_matrix/client/v3/rooms/{roomId}/join`.
    pub async fn join(&self, room_id: &str) -> Result<()> {
        let url = client_url(&self.base, &["rooms", room_id, "join"])?;
        let _: Value = self
            .call(|| self.authed(Method::POST, url.clone()).json(&json!({})))
            .await
            .with_context(|| format!("{} joining {room_id}", self.user_id))?;
        Ok(())
    }

    /// `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}`;
    /// returns the event id.
    pub async fn send_message(
        &self,
        room_id: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String> {
        let url = client_url(
            &self.base,
            &["rooms", room_id, "send", "m.room.message", txn_id],
        )?;
        let sent: EventId = self
            .call(|| self.authed(Method::PUT, url.clone()).json(content))
            .await
            .with_context(|| format!("sending {txn_id} to {room_id}"))?;
        Ok(sent.event_id)
    }

    /// `GET /_matrix/client/v3/sync`. Also returns the instant the whole
    /// answer had arrived, before decoding, which is when a client could
    /// first show its events.
    pub async fn sync(
        &self,
        since: Option<&str>,
        filter: &str,
        timeout_ms: u64,
    ) -> Result<(SyncResponse, Instant)> {
        let mut url = client_url(&self.base, &["sync"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("filter", filter);
            query.append_pair("timeout", &timeout_ms.to_string());
            if let Some(since) = since {
                query.append_pair("since", since);
            }
        }
        let resp = self
            .authed(Method::GET, url)
            // Leave the server its whole long-poll window, plus slack.
            .timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(30))
            .send()
            .await
            .context("GET /sync")?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading /sync")?;
        let arrived = Instant::now();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(MatrixError::from_body(status.as_u16(), text).into());
        }
        let sync = serde_json::from_slice(&body).context("decoding /sync")?;
        Ok((sync, arrived))
    }

    /// `GET /_matrix/client/v3/rooms/{roomId}/messages`, forwards from `from`
    /// (or from the start of the room when `None`).
    pub async fn messages_forward(
        &self,
        room_id: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<MessagesPage> {
        let mut url = client_url(&self.base, &["rooms", room_id, "messages"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("dir", "f");
            query.append_pair("limit", &limit.to_string());
            if let Some(from) = from {
                query.append_pair("from", from);
            }
        }
        self.call(|| self.authed(Method::GET, url.clone()))
            .await
            .with_context(|| format!("/messages of {room_id}"))
    }

    fn authed(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    async fn call<T: DeserializeOwned>(&self, build: impl Fn() -> RequestBuilder) -> Result<T> {
        call_with_retry(&self.rate_limited, build).await
    }
}

/// Sends the request `build` makes, retrying on `M_LIMIT_EXCEEDED`.
pub async fn call_with_retry<T: DeserializeOwned>(
    retries: &AtomicU64,
    build: impl Fn() -> RequestBuilder,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        let resp = build().send().await.context("sending request")?;
        match read_json(resp).await {
            Err(err) if attempt < MAX_RATE_LIMIT_RETRIES => {
                let Some(wait) = rate_limit_wait(&err) else {
                    return Err(err);
                };
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// How long to wait if `err` is a 429, or `None` for any other error.
fn rate_limit_wait(err: &anyhow::Error) -> Option<Duration> {
    let m = err.downcast_ref::<MatrixError>()?;
    (m.status == 429).then(|| {
        m.retry_after_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_RETRY_AFTER)
    })
}

/// `base` + `/_matrix/client/v3/` + the given path segments, each
/// percent-encoded as one segment (room ids contain `!` and `:`).
pub fn client_url(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["_matrix", "client", "v3"])
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_stay_one_path_segment() {
        let base = Url::parse("http://127.0.0.1:8008/").unwrap();
        let url = client_url(&base, &["rooms", "!a/b:example.org", "join"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/!a%2Fb:example.org/join"
        );
    }

    #[test]
    fn base_path_prefix_is_kept() {
        let base = Url::parse("https://example.org/matrix").unwrap();
        let url = client_url(&base, &["sync"]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://example.org/matrix/_matrix/client/v3/sync"
        );
    }
}
