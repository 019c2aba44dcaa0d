//! Delivering one notification to one device: the per-app concurrency limit,
//! retries with backoff on vendor 5xx / 429 / network errors (honouring
//! `Retry-After`), and a fresh credential when the vendor refuses ours.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::{
    apns::ApnsSender,
    fcm::FcmSender,
    metrics::Metrics,
    payload::{Device, Notification},
};

/// What one request to a vendor came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// The vendor says the token is unregistered or invalid: the homeserver
    /// must drop the pusher.
    Rejected(String),
    /// A refusal that retrying cannot fix and that is not about the token.
    Failed(String),
    /// A transient failure; `after` is the vendor's `Retry-After`, if any.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The vendor refused our access token / provider token: mint a new one.
    AuthRefused(String),
}

/// A device's final result for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Rejected,
    Failed,
    /// Still failing transiently after every attempt: the homeserver retries.
    RetryLater,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::RetryLater => "retry_later",
        }
    }
}

/// The vendor client of one app.
pub enum Vendor {
    Fcm(FcmSender),
    Apns(ApnsSender),
}

impl Vendor {
    async fn send(&self, n: &Notification, d: &Device) -> Attempt {
        match self {
            Vendor::Fcm(s) => s.send(n, d).await,
            Vendor::Apns(s) => s.send(n, d).await,
        }
    }

    async fn refresh_auth(&self) {
        match self {
            Vendor::Fcm(s) => s.forget_token().await,
            Vendor::Apns(s) => s.forget_token().await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Vendor::Fcm(_) => "fcm",
            Vendor::Apns(_) => "apns",
        }
    }
}

/// One configured `app_id`.
pub struct App {
    pub app_id: String,
    pub vendor: Vendor,
    /// Vendor requests in flight at once for this app.
    pub limit: Semaphore,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_retry_after: Duration,
}

/// Sends `n` to `d` through `app`, retrying per `policy`.
pub async fn deliver(
    app: &App,
    policy: RetryPolicy,
    metrics: &Arc<Metrics>,
    n: &Notification,
    d: &Device,
) -> Outcome {
    let mut backoff = policy.base;
    for attempt in 1..=policy.max_attempts {
        let result = {
            // The permit is held for the request only, not while backing off.
            let Ok(_permit) = app.limit.acquire().await else {
                return Outcome::RetryLater;
            };
            let started = std::time::Instant::now();
            let result = app.vendor.send(n, d).await;
            metrics.vendor_latency(&app.app_id, app.vendor.name(), started.elapsed());
            result
        };
        let last = attempt == policy.max_attempts;
        match result {
            Attempt::Delivered => return Outcome::Delivered,
            Attempt::Rejected(reason) => {
                tracing::info!(app_id = %app.app_id, %reason, "vendor rejected pushkey");
                return Outcome::Rejected;
            }
            Attempt::Failed(reason) => {
                tracing::warn!(app_id = %app.app_id, %reason, "vendor refused notification");
                return Outcome::Failed;
            }
            Attempt::AuthRefused(reason) => {
                tracing::warn!(app_id = %app.app_id, %reason, "vendor refused credentials; renewing");
                app.vendor.refresh_auth().await;
            }
            Attempt::Retry { after, reason } => {
                tracing::warn!(app_id = %app.app_id, attempt, %reason, "transient vendor failure");
                if last {
                    break;
                }
                let wait = match after {
                    Some(after) if after > policy.max_retry_after => return Outcome::RetryLater,
                    Some(after) => after,
                    None => backoff,
                };
                tokio::time::sleep(wait).await;
                backoff = backoff.saturating_mul(2);
            }
        }
    }
    Outcome::RetryLater
}

/// Parses a `Retry-After` header given in seconds (the form FCM and APNs use).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
