//! A local APNs provider API server: HTTP/2 over TLS, token authentication.
//!
//! `POST /3/device/{token}` checks the ES256 provider token (key id, team id,
//! signature, age, and how often it changes on one connection: APNs wants one
//! token per connection, replaced at most every 20 minutes) and the `apns-*`
//! headers, then
//! answers like APNs: 200 with an `apns-id`, or an error status with
//! `{"reason": ...}` (410 adds a `timestamp`).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, Path as UrlPath, State},
    http::{HeaderMap, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use ring::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
        ECDSA_P256_SHA256_FIXED_SIGNING,
    },
};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use super::{lock, parse_jws, random_hex, tls, Answer, InFlight, Script};
use crate::{config::AppConfig, jwt, ApnsConfig};

/// APNs refuses provider tokens older than this.
const TOKEN_MAX_AGE: u64 = 3600;
/// APNs throttles connections that switch tokens more often than this.
const TOKEN_MIN_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// APNs payload limit for regular pushes.
const MAX_PAYLOAD: usize = 4096;

/// A push APNs accepted.
#[derive(Debug, Clone)]
pub struct ApnsDelivery {
    /// Hex device token from the request path.
    pub device_token: String,
    pub topic: String,
    pub push_type: String,
    pub priority: Option<String>,
    pub expiration: Option<String>,
    pub payload: Value,
    /// The HTTP version the request came over (always HTTP/2 when accepted).
    pub version: Version,
    pub apns_id: String,
}

struct ApnsState {
    key_id: String,
    team_id: String,
    topic: String,
    public_key: Vec<u8>,
    /// The provider token in use on each connection, and since when.
    current_token: std::sync::Mutex<HashMap<u64, (String, Instant)>>,
    /// Every provider token accepted.
    tokens_seen: std::sync::Mutex<HashSet<String>>,
    auth_failures: std::sync::atomic::AtomicUsize,
    delivered: std::sync::Mutex<Vec<ApnsDelivery>>,
    delivered_notify: Notify,
    script: Script,
    in_flight: InFlight,
}

/// A running APNs simulator (HTTPS, HTTP/2 only, on 127.0.0.1).
pub struct ApnsSim {
    base_url: String,
    key_pem: String,
    ca_pem: String,
    state: Arc<ApnsState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApnsSim {
    /// Generates a P-256 signing key, a TLS CA and certificate, and starts
    /// serving `topic` (the app's bundle id) on an ephemeral port.
    pub async fn start(topic: &str) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the APNs key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("loading the APNs key"))?;
        let pki = tls::test_pki()?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("https://{}", tcp.local_addr()?);
        let state = Arc::new(ApnsState {
            key_id: random_hex(5).to_uppercase(),
            team_id: random_hex(5).to_uppercase(),
            topic: topic.to_string(),
            public_key: pair.public_key().as_ref().to_vec(),
            current_token: Default::default(),
            tokens_seen: Default::default(),
            auth_failures: Default::default(),
            delivered: Default::default(),
            delivered_notify: Notify::new(),
            script: Script::default(),
            in_flight: InFlight::default(),
        });
        let router = Router::new()
            .route("/3/device/{token}", post(push))
            .with_state(state.clone())
            .into_make_service_with_connect_info::<tls::Conn>();
        let listener = tls::TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(pki.server),
            accepted: 0,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            base_url,
            key_pem: jwt::der_to_pem("PRIVATE KEY", pkcs8.as_ref()),
            ca_pem: pki.ca_pem,
            state,
            stop,
            task,
        })
    }

    /// The value for [`ApnsConfig::api_url`] (`https://127.0.0.1:PORT`).
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    pub fn key_id(&self) -> &str {
        &self.state.key_id
    }

    pub fn team_id(&self) -> &str {
        &self.state.team_id
    }

    pub fn topic(&self) -> &str {
        &self.state.topic
    }

    /// The `.p8` signing key (PKCS#8 PEM), as Apple hands it out.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate (PEM) that signed the simulator's TLS certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes `AuthKey_<KEYID>.p8` and the CA certificate into `dir`;
    /// returns (key path, CA path).
    pub fn write_files(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = dir.join(format!("AuthKey_{}.p8", self.state.key_id));
        let ca = dir.join(format!("apns-sim-ca-{}.pem", self.state.key_id));
        std::fs::write(&key, &self.key_pem)?;
        std::fs::write(&ca, &self.ca_pem)?;
        Ok((key, ca))
    }

    /// An APNs app entry pointing at this simulator (writes the key and CA
    /// certificate into `dir`).
    pub fn app_config(&self, dir: &Path) -> anyhow::Result<AppConfig> {
        let (key_path, ca) = self.write_files(dir)?;
        Ok(AppConfig::Apns(ApnsConfig {
            key_path,
            key_id: self.state.key_id.clone(),
            team_id: self.state.team_id.clone(),
            topic: self.state.topic.clone(),
            api_url: self.base_url.clone(),
            ca_cert: Some(ca),
            max_concurrency: 64,
        }))
    }

    /// Answers requests for the hex `device_token` with `answer` from now on.
    pub fn script(&self, device_token: &str, answer: Answer) {
        self.state.script.set(device_token, answer);
    }

    /// Pushes accepted so far, in arrival order.
    pub fn delivered(&self) -> Vec<ApnsDelivery> {
        lock(&self.state.delivered).clone()
    }

    /// Waits until at least `count` pushes were accepted (or `timeout`
    /// passes) and returns them all.
    pub async fn wait_for_deliveries(&self, count: usize, timeout: Duration) -> Vec<ApnsDelivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.delivered_notify.notified();
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.delivered();
            }
        }
    }

    /// Requests made for `device_token`, whatever their answer.
    pub fn attempts(&self, device_token: &str) -> u32 {
        self.state.script.attempts(device_token)
    }

    /// How many different provider tokens were accepted.
    pub fn distinct_provider_tokens(&self) -> usize {
        lock(&self.state.tokens_seen).len()
    }

    /// Requests refused for a missing, invalid or expired provider token.
    pub fn auth_failures(&self) -> usize {
        self.state
            .auth_failures
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most requests that were in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.state
            .in_flight
            .max
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn reason(status: StatusCode, reason: &str) -> Response {
    let mut body = json!({ "reason": reason });
    if status == StatusCode::GONE {
        body["timestamp"] = json!(jwt::now_secs() * 1000);
    }
    (status, Json(body)).into_response()
}

/// Checks the provider token; `Err` is the status and reason to answer.
fn check_provider_token(
    state: &ApnsState,
    conn: u64,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let fail = |status: StatusCode, why: &'static str| {
        state
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err((status, why))
    };
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
    else {
        return fail(StatusCode::FORBIDDEN, "MissingProviderToken");
    };
    let Some(jws) = parse_jws(token) else {
        return fail(StatusCode::FORBIDDEN, "InvalidProviderToken");
    };
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &state.public_key);
    if jws.header["alg"] != "ES256"
        || jws.header["kid"] != state.key_id.as_str()
        || jws.claims["iss"] != state.team_id.as_str()
        || public
            .verify(jws.signing_input.as_bytes(), &jws.signature)
            .is_err()
    {
        return fail(StatusCode::FORBIDDEN, "InvalidProviderToken");
    }
    let iat = jws.claims["iat"].as_u64().unwrap_or(0);
    let now = jwt::now_secs();
    if iat + TOKEN_MAX_AGE < now || iat > now + 60 {
        return fail(StatusCode::FORBIDDEN, "ExpiredProviderToken");
    }
    let mut current = lock(&state.current_token);
    match current.get(&conn) {
        Some((same, _)) if same == token => {}
        Some((_, since)) if since.elapsed() < TOKEN_MIN_INTERVAL => {
            return fail(StatusCode::TOO_MANY_REQUESTS, "TooManyProviderTokenUpdates");
        }
        _ => {
            current.insert(conn, (token.to_string(), Instant::now()));
            lock(&state.tokens_seen).insert(token.to_string());
        }
    }
    Ok(())
}

async fn push(
    State(state): State<Arc<ApnsState>>,
    ConnectInfo(conn): ConnectInfo<tls::Conn>,
    UrlPath(device_token): UrlPath<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = state.in_flight.enter();
    if version != Version::HTTP_2 {
        return reason(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "BadRequest");
    }
    if let Err((status, why)) = check_provider_token(&state, conn.serial, &headers) {
        return reason(status, why);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(topic) = header("apns-topic") else {
        return reason(StatusCode::BAD_REQUEST, "MissingTopic");
    };
    if topic != state.topic {
        return reason(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic");
    }
    const PUSH_TYPES: [&str; 9] = [
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "location",
    ];
    let Some(push_type) = header("apns-push-type").filter(|t| PUSH_TYPES.contains(&t.as_str()))
    else {
        return reason(StatusCode::BAD_REQUEST, "InvalidPushType");
    };
    let priority = header("apns-priority");
    match priority.as_deref() {
        None | Some("5") | Some("1") => {}
        Some("10") if push_type != "background" => {}
        Some(_) => return reason(StatusCode::BAD_REQUEST, "BadPriority"),
    }
    let expiration = header("apns-expiration");
    if expiration
        .as_deref()
        .is_some_and(|e| e.parse::<u64>().is_err())
    {
        return reason(StatusCode::BAD_REQUEST, "BadExpirationDate");
    }
    let hex_ok = device_token.len() >= 64
        && device_token.len().is_multiple_of(2)
        && device_token.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok {
        return reason(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    if body.is_empty() {
        return reason(StatusCode::BAD_REQUEST, "PayloadEmpty");
    }
    if body.len() > MAX_PAYLOAD {
        return reason(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) if v["aps"].is_object() => v,
        _ => return reason(StatusCode::BAD_REQUEST, "BadRequest"),
    };
    match state.script.next(&device_token) {
        Some(Answer::Unregistered) => return reason(StatusCode::GONE, "Unregistered"),
        Some(Answer::InvalidToken) => return reason(StatusCode::BAD_REQUEST, "BadDeviceToken"),
        Some(Answer::Unavailable { .. }) => {
            return reason(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        }
        Some(Answer::TooManyRequests {
            retry_after_secs, ..
        }) => {
            let mut response = reason(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
            response
                .headers_mut()
                .insert("retry-after", retry_after_secs.into());
            return response;
        }
        None => {}
    }
    let id = random_hex(16);
    let apns_id = format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
    .to_uppercase();
    lock(&state.delivered).push(ApnsDelivery {
        device_token,
        topic,
        push_type,
        priority,
        expiration,
        payload,
        version,
        apns_id: apns_id.clone(),
    });
    state.delivered_notify.notify_waiters();
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = apns_id.parse() {
        response.headers_mut().insert("apns-id", value);
    }
    response
}
