//! Apple Push Notification service, token-based authentication over HTTP/2.
//!
//! Every request carries a provider token: an ES256 JWT (`kid` = key id,
//! `iss` = team id, `iat`) signed with the `.p8` key. Apple refuses tokens
//! older than an hour and throttles ones renewed more often than every 20
//! minutes, so one token is reused for 50 minutes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::{
    config::ApnsConfig,
    delivery::{retry_after, Attempt},
    jwt::{now_secs, Es256Signer},
    metrics::Metrics,
    payload::{Device, Notification},
};

/// How long one provider token is used.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// How long APNs keeps trying to reach an offline device.
const EXPIRATION: u64 = 24 * 3600;

pub struct ApnsSender {
    app_id: String,
    client: reqwest::Client,
    base_url: String,
    key_id: String,
    team_id: String,
    topic: String,
    signer: Es256Signer,
    token: Mutex<Option<(String, Instant)>>,
    metrics: Arc<Metrics>,
}

impl ApnsSender {
    pub fn new(
        app_id: &str,
        config: &ApnsConfig,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(&config.key_path)
            .with_context(|| format!("reading APNs key {}", config.key_path.display()))?;
        let signer = Es256Signer::from_pem(&pem)
            .with_context(|| format!("APNs key {}", config.key_path.display()))?;
        // APNs speaks HTTP/2 only.
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(timeout);
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("CA certificate {}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Self {
            app_id: app_id.to_string(),
            client: builder.build().context("building the APNs HTTP client")?,
            base_url: config.api_url.trim_end_matches('/').to_string(),
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            topic: config.topic.clone(),
            signer,
            token: Mutex::new(None),
            metrics,
        })
    }

    /// Drops the cached provider token (APNs answered ExpiredProviderToken).
    pub async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn provider_token(&self) -> Result<String, Attempt> {
        let mut cached = self.token.lock().await;
        if let Some((token, minted)) = cached.as_ref() {
            if minted.elapsed() < TOKEN_LIFETIME {
                return Ok(token.clone());
            }
        }
        let header = json!({ "alg": "ES256", "kid": self.key_id });
        let claims = json!({ "iss": self.team_id, "iat": now_secs() });
        let token = self
            .signer
            .sign(&header, &claims)
            .map_err(|e| Attempt::Failed(format!("signing the provider token: {e}")))?;
        self.metrics.auth_token(&self.app_id);
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    pub async fn send(&self, n: &Notification, d: &Device) -> Attempt {
        let Some(device_token) = device_token(&d.pushkey) else {
            return Attempt::Rejected("pushkey is neither a hex nor a base64 device token".into());
        };
        let token = match self.provider_token().await {
            Ok(token) => token,
            Err(attempt) => return attempt,
        };
        let (payload, push_type, priority) = n.apns_payload(d);
        let response = match self
            .client
            .post(format!("{}/3/device/{device_token}", self.base_url))
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority.to_string())
            .header("apns-expiration", (now_secs() + EXPIRATION).to_string())
            .json(&payload)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    after: None,
                    reason: format!("APNs: {e}"),
                }
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            return Attempt::Delivered;
        }
        let after = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        classify(status, after, body["reason"].as_str().unwrap_or(""))
    }
}

/// The hex device token APNs wants. Matrix iOS apps usually register the
/// token base64-encoded as their pushkey; hex pushkeys are accepted as they are.
fn device_token(pushkey: &str) -> Option<String> {
    if pushkey.len() >= 32
        && pushkey.len().is_multiple_of(2)
        && pushkey.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(pushkey.to_ascii_lowercase());
    }
    let bytes = STANDARD.decode(pushkey).ok().filter(|b| !b.is_empty())?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Maps an APNs error answer (status and `reason`) to what the gateway does.
fn classify(status: u16, after: Option<Duration>, reason: &str) -> Attempt {
    let text = format!("{status} {reason}");
    match (status, reason) {
        (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
            Attempt::Rejected(text)
        }
        (403, "ExpiredProviderToken") | (403, "InvalidProviderToken") => Attempt::AuthRefused(text),
        (429, _) | (500..=599, _) => Attempt::Retry {
            after,
            reason: text,
        },
        _ => Attempt::Failed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens() {
        let hex = "ab".repeat(32);
        assert_eq!(device_token(&hex).as_deref(), Some(hex.as_str()));
        assert_eq!(device_token("q80=").as_deref(), Some("abcd"));
        assert_eq!(device_token("not base64!"), None);
    }

    #[test]
    fn classifies_apns_errors() {
        assert!(matches!(
            classify(410, None, "Unregistered"),
            Attempt::Rejected(_)
        ));
        assert!(matches!(
            classify(400, None, "BadDeviceToken"),
            Attempt::Rejected(_)
        ));
        assert!(matches!(
            classify(400, None, "BadTopic"),
            Attempt::Failed(_)
        ));
        assert!(matches!(
            classify(403, None, "ExpiredProviderToken"),
            Attempt::AuthRefused(_)
        ));
        assert!(matches!(
            classify(429, None, "TooManyRequests"),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(503, None, "ServiceUnavailable"),
            Attempt::Retry { .. }
        ));
    }
}
