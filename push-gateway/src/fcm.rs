//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! Authentication is Google's service-account flow: an RS256-signed JWT
//! assertion is exchanged at the account's `token_uri` for an OAuth access
//! token, which is cached until shortly before it expires so that thousands of
//! pushes cost one exchange. Messages go to
//! `{api_url}/v1/projects/{project_id}/messages:send`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::{
    delivery::{retry_after, Attempt},
    jwt::{now_secs, Rs256Signer},
    metrics::Metrics,
    payload::{Device, Notification},
};

/// The OAuth scope FCM requires.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Renew the access token this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// The fields of a Google service-account JSON file that the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

pub struct FcmSender {
    app_id: String,
    client: reqwest::Client,
    send_url: String,
    account: ServiceAccount,
    signer: Rs256Signer,
    token: Mutex<Option<CachedToken>>,
    metrics: Arc<Metrics>,
}

impl FcmSender {
    pub fn new(
        app_id: &str,
        service_account: &std::path::Path,
        api_url: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(service_account)
            .with_context(|| format!("reading service account {}", service_account.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .with_context(|| format!("parsing service account {}", service_account.display()))?;
        let signer = Rs256Signer::from_pem(&account.private_key)
            .with_context(|| format!("private_key of {}", service_account.display()))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the FCM HTTP client")?;
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            api_url.trim_end_matches('/'),
            account.project_id
        );
        Ok(Self {
            app_id: app_id.to_string(),
            client,
            send_url,
            account,
            signer,
            token: Mutex::new(None),
            metrics,
        })
    }

    /// Drops the cached access token (FCM answered 401).
    pub async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// The cached access token, or a fresh one. The lock is held across the
    /// exchange so concurrent pushes wait for one exchange instead of racing.
    async fn access_token(&self) -> Result<String, Attempt> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.renew_at > Instant::now()) {
            return Ok(token.value.clone());
        }
        let iat = now_secs();
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.account.private_key_id });
        let claims = json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": iat,
            "exp": iat + 3600,
        });
        let assertion = self
            .signer
            .sign(&header, &claims)
            .map_err(|e| Attempt::Failed(format!("signing the OAuth assertion: {e}")))?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let response = self
            .client
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Attempt::Retry {
                after: None,
                reason: format!("OAuth token endpoint: {e}"),
            })?;
        let status = response.status();
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            // A refused assertion is a configuration problem the operator must
            // fix; the homeserver keeps the notification queued meanwhile.
            return Err(Attempt::Retry {
                after,
                reason: format!("OAuth token endpoint answered {status}: {text}"),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: u64,
        }
        let parsed: TokenResponse = serde_json::from_str(&text).map_err(|e| Attempt::Retry {
            after: None,
            reason: format!("OAuth token endpoint answered unparseable JSON: {e}"),
        })?;
        self.metrics.auth_token(&self.app_id);
        let lifetime = Duration::from_secs(parsed.expires_in).saturating_sub(TOKEN_MARGIN);
        *cached = Some(CachedToken {
            value: parsed.access_token.clone(),
            renew_at: Instant::now() + lifetime,
        });
        Ok(parsed.access_token)
    }

    pub async fn send(&self, n: &Notification, d: &Device) -> Attempt {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(attempt) => return attempt,
        };
        let response = match self
            .client
            .post(&self.send_url)
            .bearer_auth(token)
            .json(&n.fcm_message(d))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    after: None,
                    reason: format!("FCM: {e}"),
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let after = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        classify(status.as_u16(), after, &body)
    }
}

/// Maps an FCM error answer to what the gateway does about it.
fn classify(status: u16, after: Option<Duration>, body: &Value) -> Attempt {
    let error = &body["error"];
    let message = error["message"].as_str().unwrap_or("").to_string();
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let error_code = details
        .iter()
        .find_map(|d| d["errorCode"].as_str())
        .or_else(|| error["status"].as_str())
        .unwrap_or("")
        .to_string();
    let about_token = details.iter().any(|d| {
        d["fieldViolations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|f| f["field"] == "message.token"))
    }) || message.to_ascii_lowercase().contains("registration token");
    let reason = format!("{status} {error_code}: {message}");
    match (status, error_code.as_str()) {
        (_, "UNREGISTERED") => Attempt::Rejected(reason),
        (400, "INVALID_ARGUMENT") if about_token => Attempt::Rejected(reason),
        (401, _) | (_, "UNAUTHENTICATED") => Attempt::AuthRefused(reason),
        (429, _) | (500..=599, _) => Attempt::Retry { after, reason },
        _ => Attempt::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_fcm_errors() {
        let unregistered = json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
        assert!(matches!(
            classify(404, None, &unregistered),
            Attempt::Rejected(_)
        ));
        let bad_token = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The registration token is not a valid FCM registration token",
            "details": [{"errorCode": "INVALID_ARGUMENT"}]}});
        assert!(matches!(
            classify(400, None, &bad_token),
            Attempt::Rejected(_)
        ));
        let bad_payload = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid JSON payload received."}});
        assert!(matches!(
            classify(400, None, &bad_payload),
            Attempt::Failed(_)
        ));
        assert!(matches!(
            classify(503, None, &Value::Null),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(429, None, &Value::Null),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(401, None, &Value::Null),
            Attempt::AuthRefused(_)
        ));
    }
}
