//! A local FCM HTTP v1 server with Google's OAuth 2.0 token endpoint
//! (`oauth.rs`).
//!
//! `POST /token` takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//! and an RS256 `assertion`, verifies its signature with the service
//! account's public key and its claims, and issues a bearer token.
//! `POST /v1/projects/{project}/messages:send` checks that token and the
//! message's shape, and answers as FCM does (errors in Google's JSON error
//! format, `Retry-After` on 429).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use super::{lock, random_hex, rsa, Answer, InFlight, Script};
use crate::{config::AppConfig, jwt, FcmConfig};

/// A message FCM accepted: the device token and the whole `message` object.
#[derive(Debug, Clone)]
pub struct FcmDelivery {
    pub token: String,
    pub message: Value,
    /// The OAuth access token it was sent with (one the simulator issued).
    pub bearer: String,
}

pub(super) struct FcmState {
    pub(super) project_id: String,
    pub(super) client_email: String,
    pub(super) private_key_id: String,
    pub(super) token_uri: String,
    pub(super) public_n: Vec<u8>,
    pub(super) public_e: Vec<u8>,
    /// Issued access tokens and when they expire.
    pub(super) tokens: std::sync::Mutex<Vec<(String, Instant)>>,
    pub(super) token_lifetime: std::sync::Mutex<Duration>,
    pub(super) exchanges: std::sync::atomic::AtomicUsize,
    pub(super) auth_failures: std::sync::atomic::AtomicUsize,
    pub(super) delivered: std::sync::Mutex<Vec<FcmDelivery>>,
    pub(super) delivered_notify: Notify,
    pub(super) script: Script,
    pub(super) delay: std::sync::Mutex<Duration>,
    pub(super) in_flight: InFlight,
}

/// A running FCM simulator (plain HTTP on 127.0.0.1).
pub struct FcmSim {
    base_url: String,
    service_account: String,
    state: Arc<FcmState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FcmSim {
    /// Generates a service account (fresh RSA key) and starts serving on an
    /// ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        let key = tokio::task::spawn_blocking(rsa::generate).await??;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let project_id = format!("sim-project-{}", &random_hex(4));
        let client_email = format!("push-gateway@{project_id}.iam.gserviceaccount.com");
        let private_key_id = random_hex(20);
        let token_uri = format!("{base_url}/token");
        let service_account = serde_json::to_string_pretty(&json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": jwt::der_to_pem("PRIVATE KEY", &key.pkcs8_der),
            "client_email": client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }))?;
        let state = Arc::new(FcmState {
            project_id,
            client_email,
            private_key_id,
            token_uri,
            public_n: key.n,
            public_e: key.e,
            tokens: Default::default(),
            token_lifetime: std::sync::Mutex::new(Duration::from_secs(3599)),
            exchanges: Default::default(),
            auth_failures: Default::default(),
            delivered: Default::default(),
            delivered_notify: Notify::new(),
            script: Script::default(),
            delay: Default::default(),
            in_flight: InFlight::default(),
        });
        let router = Router::new()
            .route("/token", post(super::oauth::token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(state.clone());
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
            service_account,
            state,
            stop,
            task,
        })
    }

    /// The value for [`FcmConfig::api_url`].
    pub fn api_url(&self) -> &str {
        &self.base_url
    }

    /// The simulated Firebase project.
    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }

    /// The service-account JSON (its `token_uri` points at this simulator).
    pub fn service_account_json(&self) -> &str {
        &self.service_account
    }

    /// Writes the service-account JSON into `dir` and returns its path.
    pub fn write_service_account(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{}.json", self.state.project_id));
        std::fs::write(&path, &self.service_account)?;
        Ok(path)
    }

    /// An FCM app entry pointing at this simulator (writes the service
    /// account into `dir`).
    pub fn app_config(&self, dir: &Path) -> anyhow::Result<AppConfig> {
        Ok(AppConfig::Fcm(FcmConfig {
            service_account: self.write_service_account(dir)?,
            api_url: self.base_url.clone(),
            max_concurrency: 64,
        }))
    }

    /// Answers requests for `token` with `answer` from now on.
    pub fn script(&self, token: &str, answer: Answer) {
        self.state.script.set(token, answer);
    }

    /// Delays every `messages:send` answer (to observe concurrency).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Lifetime (`expires_in`) of access tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.token_lifetime) = lifetime;
    }

    /// Messages accepted so far, in arrival order.
    pub fn delivered(&self) -> Vec<FcmDelivery> {
        lock(&self.state.delivered).clone()
    }

    /// Waits until at least `count` messages were accepted (or `timeout`
    /// passes) and returns them all.
    pub async fn wait_for_deliveries(&self, count: usize, timeout: Duration) -> Vec<FcmDelivery> {
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

    /// `messages:send` requests made for `token`, whatever their answer.
    pub fn attempts(&self, token: &str) -> u32 {
        self.state.script.attempts(token)
    }

    /// OAuth token exchanges that succeeded.
    pub fn token_exchanges(&self) -> usize {
        self.state
            .exchanges
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests refused for bad credentials (token endpoint or bearer).
    pub fn auth_failures(&self) -> usize {
        self.state
            .auth_failures
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most `messages:send` requests that were in progress at once.
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

/// Google's API error shape, with FCM's `errorCode` detail when given.
fn fcm_error(status: StatusCode, code: &str, message: &str, error_code: Option<&str>) -> Response {
    let mut details = Vec::new();
    if let Some(error_code) = error_code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": error_code,
        }));
    }
    let body = json!({ "error": {
        "code": status.as_u16(), "message": message, "status": code, "details": details,
    }});
    (status, Json(body)).into_response()
}

fn invalid(message: &str) -> Response {
    fcm_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        Some("INVALID_ARGUMENT"),
    )
}

/// Checks a message like FCM's validation does; `Err` is the 400 message.
fn check_message(body: &[u8]) -> Result<(String, Value), String> {
    let root: Value =
        serde_json::from_slice(body).map_err(|_| "Invalid JSON payload received.".to_string())?;
    let Some(message) = root.get("message").filter(|m| m.is_object()) else {
        return Err("Invalid JSON payload received. Missing \"message\".".to_string());
    };
    const FIELDS: [&str; 9] = [
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
    ];
    for key in message.as_object().into_iter().flat_map(|m| m.keys()) {
        if !FIELDS.contains(&key.as_str()) && key != "condition" {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{key}\" at 'message'"
            ));
        }
    }
    let Some(token) = message["token"].as_str() else {
        return Err("Recipient of the message is not set.".to_string());
    };
    if let Some(data) = message.get("data") {
        let all_strings = data
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string));
        if !all_strings {
            return Err("Invalid value at 'message.data': values must be strings".to_string());
        }
    }
    if let Some(n) = message.get("notification") {
        let ok = n.as_object().is_some_and(|n| {
            n.iter()
                .all(|(k, v)| matches!(k.as_str(), "title" | "body" | "image") && v.is_string())
        });
        if !ok {
            return Err("Invalid JSON payload received. Bad 'message.notification'".to_string());
        }
    }
    if let Some(p) = message.get("android").and_then(|a| a.get("priority")) {
        if p != "HIGH" && p != "NORMAL" {
            return Err("Invalid value at 'message.android.priority'".to_string());
        }
    }
    Ok((token.to_string(), message.clone()))
}

async fn send(
    State(state): State<Arc<FcmState>>,
    UrlPath(project): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = state.in_flight.enter();
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let valid = lock(&state.tokens)
        .iter()
        .any(|(t, exp)| *t == bearer && *exp > Instant::now());
    if !valid {
        state
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            None,
        );
    }
    if project != state.project_id {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission denied on project",
            None,
        );
    }
    let (token, message) = match check_message(&body) {
        Ok(checked) => checked,
        Err(why) => return invalid(&why),
    };
    let token_ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
    let scripted = state.script.next(&token);
    let bad_token = || {
        let body = json!({ "error": {
            "code": 400, "status": "INVALID_ARGUMENT",
            "message": "The registration token is not a valid FCM registration token",
            "details": [
                { "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT" },
                { "@type": "type.googleapis.com/google.rpc.BadRequest",
                  "fieldViolations": [{ "field": "message.token", "description": "Invalid registration token" }] },
            ],
        }});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    };
    if !token_ok {
        return bad_token();
    }
    match scripted {
        Some(Answer::Unregistered) => {
            return fcm_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            )
        }
        Some(Answer::InvalidToken) => return bad_token(),
        Some(Answer::Unavailable { .. }) => {
            return fcm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
            )
        }
        Some(Answer::TooManyRequests {
            retry_after_secs, ..
        }) => {
            let mut response = fcm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after_secs.into());
            return response;
        }
        None => {}
    }
    let name = format!("projects/{}/messages/{}", state.project_id, random_hex(8));
    lock(&state.delivered).push(FcmDelivery {
        token,
        message,
        bearer,
    });
    state.delivered_notify.notify_waiters();
    Json(json!({ "name": name })).into_response()
}
