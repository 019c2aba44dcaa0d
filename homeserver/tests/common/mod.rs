//! Black-box test harness: starts the real homeserver on an ephemeral port and
//! drives it over HTTP the way a Matrix client does.
//!
//! Backend: with `HS_TEST_POSTGRES_URL` set (an admin URL such as
//! `postgres://postgres@127.0.0.1:55432/postgres`) every server gets a fresh
//! database `hs_test_<random>`; otherwise an SQLite file in a temporary
//! directory. The same tests thus run against both backends.
//!
//! `HS_TEST_LOG` sets the server's log filter (default `warn`).

#![allow(dead_code)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use engine::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub mod cluster;
pub mod federation;
pub mod link;
pub mod sync;

#[allow(unused_imports)]
pub use self::sync::*;

/// The password every [`TestServer::register`]ed user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The shared secret configured for `/_synapse/admin/v1/register`.
pub const SHARED_SECRET: &str = "test-secret";

/// A running homeserver with its own storage, stopped by [`TestServer::shutdown`]
/// (or, less gracefully, on drop).
pub struct TestServer {
    server: Option<homeserver::Server>,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub server_name: String,
    pub http: reqwest::Client,
    postgres: Option<PgDatabase>,
    /// The config the server was started with (for [`TestServer::restart`]).
    pub config: Config,
    /// Holds the SQLite file and the signing key; removed on drop.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the test defaults: open registration, shared secret set,
    /// rate limits off.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], with `adjust` applied to the config last.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            server_name: "localhost".to_owned(),
            signing_key_path: dir.path().join("signing.key"),
            ..Config::default()
        };
        config.listeners.client = "127.0.0.1:0".parse().unwrap();
        // Media blobs live with the test's other files, not in the crate.
        config.media.path = dir.path().join("media");
        config.registration.enabled = true;
        config.registration.require_token = false;
        config.registration.shared_secret = Some(SHARED_SECRET.to_owned());
        config.rate_limits.enabled = false;
        config.logging.level = std::env::var("HS_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());

        let postgres = match std::env::var("HS_TEST_POSTGRES_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let db = PgDatabase::create(&admin_url).await;
                config.database.url = db.url.clone();
                config.database.max_connections = 8;
                Some(db)
            }
            _ => {
                config.database.url = format!("sqlite://{}", dir.path().join("hs.db").display());
                None
            }
        };
        adjust(&mut config);
        let server_name = config.server_name.clone();

        let server = homeserver::start(config.clone())
            .await
            .expect("homeserver::start");
        let base_url = format!("http://{}", server.client_addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        TestServer {
            server: Some(server),
            base_url,
            server_name,
            http,
            postgres,
            config,
            _dir: dir,
        }
    }

    /// Stops the server and starts a new one on the same storage and signing
    /// key (on a new port: rebind clients with [`Client::on`]).
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown().await;
        }
        let server = homeserver::start(self.config.clone())
            .await
            .expect("homeserver::start after restart");
        self.base_url = format!("http://{}", server.client_addr);
        self.server = Some(server);
    }

    /// Stops the server, keeping its storage, until [`TestServer::start_again`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown().await;
        }
    }

    /// Starts a stopped server again on its storage and signing key (its
    /// federation listener on the same address, its client one on a new port).
    pub async fn start_again(&mut self) {
        self.restart().await;
    }

    /// Stops the server, then drops its PostgreSQL database (if any).
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown().await;
        }
        if let Some(db) = self.postgres.take() {
            db.drop_database().await;
        }
    }

    /// The running server's services (its engine), for tests that need to
    /// act as the server itself, e.g. send a signed federation request.
    pub fn services(&self) -> std::sync::Arc<engine::services::Services> {
        self.server
            .as_ref()
            .expect("server is running")
            .services
            .clone()
    }

    /// `@localpart:server_name`
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// A request without an access token.
    pub async fn request(&self, method: Method, path: &str, body: Body) -> Response {
        send_request(&self.http, &self.base_url, None, method, path, body).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Body::Json(body)).await
    }

    /// A client that carries `token` (possibly bogus) without knowing whose it is.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            user_id: String::new(),
            access_token: token.to_owned(),
            device_id: String::new(),
            password: None,
            refresh_token: None,
        }
    }

    /// Registers `username` with [`PASSWORD`] through the m.login.dummy UIA flow.
    pub async fn register(&self, username: &str) -> Client {
        self.register_with(username, Some(PASSWORD), json!({}))
            .await
    }

    /// Registers without a password (cheap: no password hashing). Such a user
    /// can't log in again, which bulk tests don't need.
    pub async fn register_no_password(&self, username: &str) -> Client {
        self.register_with(username, None, json!({})).await
    }

    /// Registers through the UIA flow: a first POST without `auth` must give
    /// 401 with a `session` and a flow made of `m.login.dummy`; the second POST
    /// completes it. `extra` is merged into both request bodies.
    pub async fn register_with(
        &self,
        username: &str,
        password: Option<&str>,
        extra: Value,
    ) -> Client {
        let mut body = json!({ "username": username });
        if let Some(password) = password {
            body["password"] = json!(password);
        }
        merge(&mut body, &extra);
        let first = self.post("/_matrix/client/v3/register", body.clone()).await;
        assert_eq!(
            first.status,
            StatusCode::UNAUTHORIZED,
            "first POST /register for {username} must start UIA with 401, got {first:?}"
        );
        let session = first.body["session"]
            .as_str()
            .unwrap_or_else(|| panic!("UIA 401 has no session: {first:?}"))
            .to_owned();
        assert!(
            has_flow(&first.body, &["m.login.dummy"]),
            "UIA flows must offer [m.login.dummy]: {first:?}"
        );
        body["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let done = self.post("/_matrix/client/v3/register", body).await.ok();
        let client = self.client_from_login(&done, password);
        assert_eq!(
            client.user_id,
            self.user_id(username),
            "register returned {done}"
        );
        client
    }

    /// Shared-secret registration compatible with Synapse's
    /// `/_synapse/admin/v1/register`.
    pub async fn admin_register(&self, username: &str, password: &str, admin: bool) -> Response {
        let nonce = self.get("/_synapse/admin/v1/register").await.ok()["nonce"]
            .as_str()
            .expect("nonce")
            .to_owned();
        let mac = admin_register_mac(SHARED_SECRET, &nonce, username, password, admin);
        self.post(
            "/_synapse/admin/v1/register",
            json!({
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac,
            }),
        )
        .await
    }

    /// Password login; returns the raw response.
    pub async fn login_raw(&self, user: &str, password: &str, extra: Value) -> Response {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        merge(&mut body, &extra);
        self.post("/_matrix/client/v3/login", body).await
    }

    /// Password login that must succeed; a new device unless `extra` names one.
    pub async fn login(&self, user: &str, password: &str) -> Client {
        self.login_with(user, password, json!({})).await
    }

    pub async fn login_with(&self, user: &str, password: &str, extra: Value) -> Client {
        let body = self.login_raw(user, password, extra).await.ok();
        self.client_from_login(&body, Some(password))
    }

    fn client_from_login(&self, body: &Value, password: Option<&str>) -> Client {
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("login/register response lacks {name}: {body}"))
                .to_owned()
        };
        Client {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            user_id: field("user_id"),
            access_token: field("access_token"),
            device_id: field("device_id"),
            password: password.map(str::to_owned),
            refresh_token: body["refresh_token"].as_str().map(str::to_owned),
        }
    }
}

/// `hex(HMAC-SHA1(secret, nonce \0 user \0 password \0 admin|notadmin))`
pub fn admin_register_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin {
        b"admin".as_slice()
    } else {
        b"notadmin".as_slice()
    });
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a UIA response offers a flow with exactly these stages.
pub fn has_flow(uia: &Value, stages: &[&str]) -> bool {
    uia["flows"].as_array().into_iter().flatten().any(|flow| {
        let got: Vec<&str> = flow["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        got == stages
    })
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    /// Raw bytes sent as `application/json` (for malformed-input tests).
    Raw(Vec<u8>),
}

/// A response: status plus the JSON body (`Value::Null` when the body isn't JSON).
#[derive(Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub method: Method,
    pub path: String,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.text.clone();
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        write!(
            f,
            "{} {} -> {} {}",
            self.method,
            self.path,
            self.status.as_u16(),
            text
        )
    }
}

impl Response {
    /// The body of a 2xx response; panics with the request and response otherwise.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(self.status.is_success(), "expected success: {self:?}");
        self.body
    }

    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts an error response with this status and `errcode`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert!(
            self.status.as_u16() == status && self.errcode() == errcode,
            "expected {status} {errcode}: {self:?}"
        );
        assert!(
            self.body["error"].is_string() || self.body["error"].is_null(),
            "error must be a string: {self:?}"
        );
    }

    /// Asserts an error response matching one of `(status, errcode)`.
    #[track_caller]
    pub fn assert_error_one_of(&self, allowed: &[(u16, &str)]) {
        assert!(
            allowed
                .iter()
                .any(|(s, e)| self.status.as_u16() == *s && self.errcode() == *e),
            "expected one of {allowed:?}: {self:?}"
        );
    }
}

async fn send_request(
    http: &reqwest::Client,
    base_url: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Body,
) -> Response {
    try_send_request(http, base_url, token, method.clone(), path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: transport error: {e}"))
}

/// Like `send_request`, but a transport error (e.g. a reset connection) is
/// returned rather than a panic.
async fn try_send_request(
    http: &reqwest::Client,
    base_url: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Body,
) -> Result<Response, reqwest::Error> {
    let mut req = http.request(method.clone(), format!("{base_url}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(&v),
        Body::Raw(bytes) => req.header("content-type", "application/json").body(bytes),
    };
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Response {
        status,
        body,
        text,
        method,
        path: path.to_owned(),
    })
}

/// Percent-encodes a path segment (room ids, aliases, event ids, user ids).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A unique transaction id.
pub fn txn() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("txn{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One user's device session.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base_url: String,
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({} / {})", self.user_id, self.device_id)
    }
}

const V3: &str = "/_matrix/client/v3";

impl Client {
    /// The same session, talking to `server` (e.g. after a restart).
    pub fn on(&self, server: &TestServer) -> Client {
        Client {
            base_url: server.base_url.clone(),
            ..self.clone()
        }
    }

    pub fn localpart(&self) -> &str {
        self.user_id
            .trim_start_matches('@')
            .split(':')
            .next()
            .unwrap()
    }

    /// A request whose transport errors are returned, not panicked on.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Response, reqwest::Error> {
        try_send_request(
            &self.http,
            &self.base_url,
            Some(&self.access_token),
            method,
            path,
            body,
        )
        .await
    }

    pub async fn request(&self, method: Method, path: &str, body: Body) -> Response {
        send_request(
            &self.http,
            &self.base_url,
            Some(&self.access_token),
            method,
            path,
            body,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Body::Json(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Body::Json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, Body::None).await
    }

    pub async fn whoami(&self) -> Response {
        self.get(&format!("{V3}/account/whoami")).await
    }

    pub async fn logout(&self) {
        self.post(&format!("{V3}/logout"), json!({})).await.ok();
    }

    // ----- rooms -----

    /// POST /createRoom; returns the room id.
    pub async fn create_room(&self, body: Value) -> String {
        let resp = self.post(&format!("{V3}/createRoom"), body).await.ok();
        resp["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn invite_raw(&self, room_id: &str, user_id: &str) -> Response {
        self.post(
            &format!("{V3}/rooms/{}/invite", enc(room_id)),
            json!({ "user_id": user_id }),
        )
        .await
    }

    pub async fn invite(&self, room_id: &str, user_id: &str) {
        self.invite_raw(room_id, user_id).await.ok();
    }

    /// POST /join/{roomIdOrAlias}
    pub async fn join_raw(&self, room_id_or_alias: &str) -> Response {
        self.post(&format!("{V3}/join/{}", enc(room_id_or_alias)), json!({}))
            .await
    }

    /// Joins by id or alias; returns the room id.
    pub async fn join(&self, room_id_or_alias: &str) -> String {
        let body = self.join_raw(room_id_or_alias).await.ok();
        body["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn leave(&self, room_id: &str) {
        self.post(&format!("{V3}/rooms/{}/leave", enc(room_id)), json!({}))
            .await
            .ok();
    }

    pub async fn forget(&self, room_id: &str) -> Response {
        self.post(&format!("{V3}/rooms/{}/forget", enc(room_id)), json!({}))
            .await
    }

    /// POST /rooms/{roomId}/{action} for kick, ban and unban.
    pub async fn membership_action(
        &self,
        room_id: &str,
        action: &str,
        user_id: &str,
        reason: Option<&str>,
    ) -> Response {
        let mut body = json!({ "user_id": user_id });
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        self.post(&format!("{V3}/rooms/{}/{action}", enc(room_id)), body)
            .await
    }

    pub async fn joined_rooms(&self) -> Vec<String> {
        let body = self.get(&format!("{V3}/joined_rooms")).await.ok();
        strings(&body["joined_rooms"])
    }

    // ----- events -----

    /// PUT /rooms/{roomId}/send/{eventType}/{txnId}
    pub async fn send_event(
        &self,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        content: Value,
    ) -> Response {
        self.put(
            &format!(
                "{V3}/rooms/{}/send/{}/{}",
                enc(room_id),
                enc(event_type),
                enc(txn_id)
            ),
            content,
        )
        .await
    }

    /// Sends an `m.room.message` with this transaction id; returns the event id.
    pub async fn send(&self, room_id: &str, txn_id: &str, content: Value) -> String {
        let body = self
            .send_event(room_id, "m.room.message", txn_id, content)
            .await
            .ok();
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sends an `m.text` message; returns the event id.
    pub async fn send_text(&self, room_id: &str, text: &str) -> String {
        self.send(
            room_id,
            &txn(),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
    }

    pub async fn put_state_raw(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Response {
        self.put(
            &format!(
                "{V3}/rooms/{}/state/{}/{}",
                enc(room_id),
                enc(event_type),
                enc(state_key)
            ),
            content,
        )
        .await
    }

    /// PUT a state event; returns its event id.
    pub async fn put_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let body = self
            .put_state_raw(room_id, event_type, state_key, content)
            .await
            .ok();
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn get_state(&self, room_id: &str, event_type: &str, state_key: &str) -> Response {
        self.get(&format!(
            "{V3}/rooms/{}/state/{}/{}",
            enc(room_id),
            enc(event_type),
            enc(state_key)
        ))
        .await
    }

    pub async fn redact(&self, room_id: &str, event_id: &str, reason: Option<&str>) -> String {
        let body = match reason {
            Some(r) => json!({ "reason": r }),
            None => json!({}),
        };
        let resp = self
            .put(
                &format!(
                    "{V3}/rooms/{}/redact/{}/{}",
                    enc(room_id),
                    enc(event_id),
                    txn()
                ),
                body,
            )
            .await
            .ok();
        resp["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn event(&self, room_id: &str, event_id: &str) -> Response {
        self.get(&format!(
            "{V3}/rooms/{}/event/{}",
            enc(room_id),
            enc(event_id)
        ))
        .await
    }

    pub async fn context(&self, room_id: &str, event_id: &str, limit: u32) -> Response {
        self.get(&format!(
            "{V3}/rooms/{}/context/{}?limit={limit}",
            enc(room_id),
            enc(event_id)
        ))
        .await
    }

    /// GET /rooms/{roomId}/messages
    pub async fn messages_raw(
        &self,
        room_id: &str,
        from: Option<&str>,
        to: Option<&str>,
        dir: &str,
        limit: Option<u32>,
        filter: Option<&str>,
    ) -> Response {
        let mut q = format!("dir={dir}");
        if let Some(from) = from {
            q.push_str(&format!("&from={}", enc(from)));
        }
        if let Some(to) = to {
            q.push_str(&format!("&to={}", enc(to)));
        }
        if let Some(limit) = limit {
            q.push_str(&format!("&limit={limit}"));
        }
        if let Some(filter) = filter {
            q.push_str(&format!("&filter={}", enc(filter)));
        }
        self.get(&format!("{V3}/rooms/{}/messages?{q}", enc(room_id)))
            .await
    }

    pub async fn messages(
        &self,
        room_id: &str,
        from: Option<&str>,
        dir: &str,
        limit: Option<u32>,
    ) -> Value {
        self.messages_raw(room_id, from, None, dir, limit, None)
            .await
            .ok()
    }

    /// Pages through /messages from `from` in `dir` until the end of the room
    /// (no `end` token or an empty chunk); returns all events in the order
    /// received.
    pub async fn paginate_all(
        &self,
        room_id: &str,
        from: Option<&str>,
        dir: &str,
        limit: u32,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = from.map(str::to_owned);
        for _ in 0..10_000 {
            let page = self
                .messages(room_id, from.as_deref(), dir, Some(limit))
                .await;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            assert!(
                chunk.len() <= limit as usize,
                "/messages returned more than limit={limit}: {}",
                chunk.len()
            );
            let empty = chunk.is_empty();
            out.extend(chunk);
            match page["end"].as_str() {
                Some(end) if !empty => {
                    assert_ne!(
                        Some(end),
                        from.as_deref(),
                        "/messages end token did not advance"
                    );
                    from = Some(end.to_owned());
                }
                _ => return out,
            }
        }
        panic!("/messages pagination did not terminate");
    }

    // ----- sync, filters, account data -----

    pub async fn sync_raw(
        &self,
        since: Option<&str>,
        timeout_ms: Option<u64>,
        filter: Option<&str>,
    ) -> Response {
        let mut q = Vec::new();
        if let Some(since) = since {
            q.push(format!("since={}", enc(since)));
        }
        if let Some(t) = timeout_ms {
            q.push(format!("timeout={t}"));
        }
        if let Some(f) = filter {
            q.push(format!("filter={}", enc(f)));
        }
        self.get(&format!("{V3}/sync?{}", q.join("&"))).await
    }

    /// GET /sync that must succeed.
    pub async fn sync(
        &self,
        since: Option<&str>,
        timeout_ms: Option<u64>,
        filter: Option<&str>,
    ) -> Value {
        let body = self.sync_raw(since, timeout_ms, filter).await.ok();
        assert!(
            body["next_batch"].is_string(),
            "sync without next_batch: {body}"
        );
        body
    }

    /// POST /user/{userId}/filter; returns the filter id.
    pub async fn create_filter(&self, filter: Value) -> String {
        let body = self
            .post(&format!("{V3}/user/{}/filter", enc(&self.user_id)), filter)
            .await
            .ok();
        body["filter_id"].as_str().expect("filter_id").to_owned()
    }

    pub async fn put_account_data(&self, data_type: &str, content: Value) {
        self.put(
            &format!(
                "{V3}/user/{}/account_data/{}",
                enc(&self.user_id),
                enc(data_type)
            ),
            content,
        )
        .await
        .ok();
    }

    pub async fn get_account_data(&self, data_type: &str) -> Response {
        self.get(&format!(
            "{V3}/user/{}/account_data/{}",
            enc(&self.user_id),
            enc(data_type)
        ))
        .await
    }

    pub async fn put_room_account_data(&self, room_id: &str, data_type: &str, content: Value) {
        self.put(
            &format!(
                "{V3}/user/{}/rooms/{}/account_data/{}",
                enc(&self.user_id),
                enc(room_id),
                enc(data_type)
            ),
            content,
        )
        .await
        .ok();
    }

    pub async fn get_room_account_data(&self, room_id: &str, data_type: &str) -> Response {
        self.get(&format!(
            "{V3}/user/{}/rooms/{}/account_data/{}",
            enc(&self.user_id),
            enc(room_id),
            enc(data_type)
        ))
        .await
    }

    pub async fn set_displayname(&self, name: &str) {
        self.put(
            &format!("{V3}/profile/{}/displayname", enc(&self.user_id)),
            json!({ "displayname": name }),
        )
        .await
        .ok();
    }
}

/// The strings of a JSON array (empty when it isn't one).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Runs `f` over `items` with at most `limit` futures in flight, keeping order.
pub async fn bounded<T, F, Fut, R>(items: impl IntoIterator<Item = T>, limit: usize, f: F) -> Vec<R>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    use futures::StreamExt;
    futures::stream::iter(items)
        .map(f)
        .buffered(limit)
        .collect()
        .await
}

/// A fresh PostgreSQL database for one server.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        use sqlx::Connection;
        let name = format!("hs_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to HS_TEST_POSTGRES_URL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let mut url = reqwest::Url::parse(admin_url).expect("HS_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        }
    }

    async fn drop_database(self) {
        drop_pg_database(self.admin_url.clone(), self.name.clone()).await;
        std::mem::forget(self);
    }
}

async fn drop_pg_database(admin_url: String, name: String) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

impl Drop for PgDatabase {
    /// A test that panicked never reached `shutdown`: drop its database from a
    /// helper thread (we may be inside a runtime here).
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(drop_pg_database(admin_url, name));
        })
        .join();
    }
}
