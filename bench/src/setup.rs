//! What every scenario needs before it measures anything: the pooled HTTP
//! client and fresh accounts.

use std::time::Duration;

use admin_cli::http::{read_json, MatrixError};
use anyhow::{bail, Context, Result};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::matrix::{client_url, Session};

/// Where the server is and how to get accounts on it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the homeserver.
    #[arg(long, env = "HS_BASE_URL", default_value = "http://127.0.0.1:8008")]
    pub base_url: String,
    /// Register users with the server's registration shared secret
    /// (`/_synapse/admin/v1/register`) instead of open `/register`.
    #[arg(long, env = "HS_REGISTRATION_SHARED_SECRET", hide_env_values = true)]
    pub registration_shared_secret: Option<String>,
    /// Another instance of the same deployment (multi-instance mode,
    /// docs/scale-out.md); repeat for more. Users are spread over
    /// `--base-url` and these.
    #[arg(long = "instance")]
    pub instances: Vec<String>,
}

impl ServerArgs {
    /// `--base-url` first, then each `--instance`.
    pub fn instance_urls(&self) -> Result<Vec<reqwest::Url>> {
        std::iter::once(&self.base_url)
            .chain(&self.instances)
            .map(|u| reqwest::Url::parse(u).with_context(|| format!("instance URL {u:?}")))
            .collect()
    }
}

/// Password of every benchmark account; they are throwaway.
const PASSWORD: &str = "hs-bench-password";

/// One pooled keep-alive client shared by every simulated user, so connection
/// set-up is paid once per connection rather than per request.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("hs-bench/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        // Default for plain calls; /sync sets its own, longer, timeout.
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// A short random tag that keeps this run's user names and message markers
/// apart from any earlier run against the same server.
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Registers a fresh user `localpart` and logs it in.
pub async fn register_user(
    http: &reqwest::Client,
    server: &ServerArgs,
    localpart: &str,
) -> Result<Session> {
    let base = Url::parse(&server.base_url)
        .with_context(|| format!("invalid --base-url {}", server.base_url))?;
    let (user_id, token) = match &server.registration_shared_secret {
        Some(secret) => {
            let r = admin_cli::register::shared_secret_register(
                http,
                &server.base_url,
                secret,
                localpart,
                PASSWORD,
                false,
            )
            .await?;
            (r.user_id, r.access_token)
        }
        None => register_with_dummy_auth(http, &base, localpart).await?,
    };
    Ok(Session::new(http.clone(), base, user_id, token))
}

#[derive(Deserialize)]
struct Registered {
    user_id: String,
    access_token: Option<String>,
}

/// `POST /_matrix/client/v3/register` through the `m.login.dummy` stage of
/// User-Interactive Authentication. A server may accept the dummy stage at
/// once, or first answer 401 with a UIA `session` that must be echoed back;
/// both are handled.
async fn register_with_dummy_auth(
    http: &reqwest::Client,
    base: &Url,
    localpart: &str,
) -> Result<(String, String)> {
    let url = client_url(base, &["register"])?;
    let mut uia_session: Option<String> = None;
    let mut rate_limited = 0;
    loop {
        let mut auth = json!({ "type": "m.login.dummy" });
        if let Some(session) = &uia_session {
            auth["session"] = json!(session);
        }
        let body = json!({
            "auth": auth,
            "username": localpart,
            "password": PASSWORD,
            "initial_device_display_name": "hs-bench",
        });
        let resp = http
            .post(url.clone())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;

        if resp.status() == StatusCode::UNAUTHORIZED && uia_session.is_none() {
            let uia: Value = resp.json().await.context("decoding the UIA answer")?;
            match uia.get("session").and_then(Value::as_str) {
                Some(session) => {
                    uia_session = Some(session.to_owned());
                    continue;
                }
                None => bail!("registering {localpart}: 401 without a UIA session: {uia}"),
            }
        }
        if resp.status() == StatusCode::TOO_MANY_REQUESTS && rate_limited < 20 {
            let err = read_json::<Value>(resp).await.err();
            let wait = err
                .as_ref()
                .and_then(|e| e.downcast_ref::<MatrixError>())
                .and_then(|m| m.retry_after_ms)
                .unwrap_or(500);
            rate_limited += 1;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            continue;
        }

        let registered: Registered = read_json(resp).await.with_context(|| {
            format!(
                "registering {localpart} with m.login.dummy \
                 (is open registration enabled? else pass --registration-shared-secret)"
            )
        })?;
        let token = registered
            .access_token
            .with_context(|| format!("registering {localpart}: no access_token returned"))?;
        return Ok((registered.user_id, token));
    }
}
