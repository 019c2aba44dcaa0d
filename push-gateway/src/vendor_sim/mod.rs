//! Local stand-ins for FCM and APNs, for tests and benchmarks (cargo feature
//! `vendor-sim`). They speak the vendors' wire protocols and answer like the
//! vendors, errors included, so the gateway is exercised exactly as in
//! production; nothing in the gateway knows it is talking to a simulator.
//!
//! - [`FcmSim`]: Google's OAuth token endpoint (verifies the RS256 assertion
//!   against the service account's public key) and FCM HTTP v1
//!   `messages:send` (checks the bearer token and the message shape).
//! - [`ApnsSim`]: APNs over HTTP/2 and TLS (verifies the ES256 provider token
//!   and the `apns-*` headers).
//!
//! Each generates its own keys and writes the files the gateway config points
//! at. Typical use:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use push_gateway::vendor_sim::{Answer, ApnsSim, FcmSim};
//! use std::time::Duration;
//! let dir = tempfile::tempdir()?; // holds the generated key files
//! let fcm = FcmSim::start().await?;
//! let apns = ApnsSim::start("com.example.ios").await?; // the apns-topic it accepts
//! let mut config = push_gateway::Config::default();
//! config.listen = "127.0.0.1:0".parse()?; // any free port; see `gateway.addr`
//! config.apps.insert("com.example.android".into(), fcm.app_config(dir.path())?);
//! config.apps.insert("com.example.ios".into(), apns.app_config(dir.path())?);
//! let gateway = push_gateway::start(config).await?;
//! // Pushers get `data.url = gateway.notify_url()`.
//! fcm.script("dead-token", Answer::Unregistered); // -> "rejected": ["dead-token"]
//! // ... the homeserver notifies pushkey "live-token" of app com.example.android, then:
//! let delivered = fcm.wait_for_deliveries(1, Duration::from_secs(5)).await;
//! assert_eq!(delivered[0].token, "live-token");
//! assert_eq!(delivered[0].message["data"]["event_id"], "$event");
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

mod apns;
mod fcm;
mod oauth;
mod rsa;
mod tls;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::Value;

pub use apns::{ApnsDelivery, ApnsSim};
pub use fcm::{FcmDelivery, FcmSim};

/// A scripted answer for one device token, in the vendor's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The token is no longer registered: FCM 404 `UNREGISTERED`, APNs 410
    /// `Unregistered`. Permanent.
    Unregistered,
    /// The token is not valid: FCM 400 `INVALID_ARGUMENT` on `message.token`,
    /// APNs 400 `BadDeviceToken`. Permanent.
    InvalidToken,
    /// The next `times` requests for the token fail with 503 (FCM
    /// `UNAVAILABLE`, APNs `ServiceUnavailable`); later ones succeed.
    Unavailable { times: u32 },
    /// The next `times` requests get 429 (FCM `QUOTA_EXCEEDED`, APNs
    /// `TooManyRequests`) with `Retry-After: retry_after_secs`.
    TooManyRequests { times: u32, retry_after_secs: u64 },
}

/// Scripted answers, per device token, and request counts.
#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<String, Answer>>,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Script {
    fn set(&self, token: &str, answer: Answer) {
        lock(&self.answers).insert(token.to_string(), answer);
    }

    /// Counts a request for `token` and returns the scripted error to
    /// answer, if any.
    fn next(&self, token: &str) -> Option<Answer> {
        let mut answers = lock(&self.answers);
        *lock(&self.attempts).entry(token.to_string()).or_default() += 1;
        let answer = answers.get_mut(token)?;
        match answer {
            Answer::Unregistered | Answer::InvalidToken => Some(*answer),
            Answer::Unavailable { times } | Answer::TooManyRequests { times, .. } => {
                if *times == 0 {
                    return None;
                }
                *times -= 1;
                Some(*answer)
            }
        }
    }

    fn attempts(&self, token: &str) -> u32 {
        lock(&self.attempts).get(token).copied().unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tracks requests in flight and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A compact JWS split into its decoded header and claims, the signed input
/// and the signature bytes.
struct Jws {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn parse_jws(token: &str) -> Option<Jws> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
    Some(Jws {
        header: serde_json::from_slice(&decode(h)?).ok()?,
        claims: serde_json::from_slice(&decode(c)?).ok()?,
        signing_input: format!("{h}.{c}"),
        signature: decode(s)?,
    })
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0; bytes];
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
