//! Token-bucket rate limits per action and key (user id or client IP).
//!
//! In-process for a single instance. With several instances behind a load
//! balancer, a client spreading requests over them would get one bucket per
//! instance, so the buckets live in Redis instead (`rl:{<action>:<key>}`, one
//! key per bucket holding its "theoretical arrival time", GCRA — the same
//! limits as the token bucket, in one atomic script). When Redis does not
//! answer, each instance limits on its own again until it returns.

use std::{collections::HashMap, sync::Arc, time::Instant};

use parking_lot::{Mutex, RwLock};

use crate::{
    cluster::Commands,
    config::{Bucket, RateLimits},
    error::{Error, Result},
    util::now_ms,
};

/// GCRA over one key. ARGV: now (ms), ms per token, burst × ms per token.
/// Answers 0 (allowed, token taken) or the ms to wait.
const GCRA: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil(next_tat - now) + 1000)
return 0
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Login,
    Register,
    Send,
    MediaUpload,
}

/// Per-user message-rate overrides set through the admin API
/// (`override_ratelimit`). A zero bucket (`0/s`, burst `0`) means "unlimited".
/// Shared between the limiter and the admin service that edits it.
#[derive(Default)]
pub struct RateLimitOverrides(RwLock<HashMap<String, Bucket>>);

impl RateLimitOverrides {
    pub fn set(&self, user_id: &str, bucket: Option<Bucket>) {
        let mut map = self.0.write();
        match bucket {
            Some(b) => {
                map.insert(user_id.to_owned(), b);
            }
            None => {
                map.remove(user_id);
            }
        }
    }

    pub fn get(&self, user_id: &str) -> Option<Bucket> {
        self.0.read().get(user_id).copied()
    }
}

pub struct RateLimiter {
    config: RateLimits,
    buckets: Mutex<HashMap<(Action, String), (f64, Instant)>>,
    overrides: Arc<RateLimitOverrides>,
    /// Shared buckets (multi-instance mode).
    redis: Option<Arc<Commands>>,
}

impl RateLimiter {
    pub fn new(config: RateLimits) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
            overrides: Default::default(),
            redis: None,
        }
    }

    /// Keeps the buckets in Redis (multi-instance mode).
    pub fn shared(mut self, redis: Option<Arc<Commands>>) -> Self {
        self.redis = redis;
        self
    }

    /// The override table the admin service edits.
    pub fn overrides(&self) -> Arc<RateLimitOverrides> {
        self.overrides.clone()
    }

    /// The bucket for `action` and `key`: a message-rate override of the user
    /// (the key of `Send`) wins over the configured default.
    fn bucket(&self, action: Action, key: &str) -> Bucket {
        match action {
            Action::Login => self.config.login,
            Action::Register => self.config.register,
            Action::Send => self.overrides.get(key).unwrap_or(self.config.send),
            Action::MediaUpload => self.config.media_upload,
        }
    }

    /// Takes one token for `key`, or answers `M_LIMIT_EXCEEDED` with the wait.
    pub async fn check(&self, action: Action, key: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let bucket = self.bucket(action, key);
        if bucket.per_second <= 0.0 && bucket.burst <= 0.0 {
            // An admin override of 0/0: this user is not limited.
            return Ok(());
        }
        if let Some(wait) = self.check_shared(action, key, bucket).await {
            return match wait {
                0 => Ok(()),
                ms => Err(Error::limit_exceeded(ms)),
            };
        }
        self.check_local(action, key, bucket)
    }

    /// The bucket in Redis: `Some(0)` allowed, `Some(ms)` to wait, `None`
    /// when there is no Redis or it failed (the local bucket decides).
    async fn check_shared(&self, action: Action, key: &str, bucket: Bucket) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        let interval = 1000.0 / bucket.per_second.max(1e-6);
        let tolerance = interval * bucket.burst;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(GCRA)
            .arg(1)
            .arg(redis.key("rl", &format!("{action:?}:{key}")))
            .arg(now_ms())
            .arg(interval)
            .arg(tolerance);
        match redis.query::<i64>(&cmd).await {
            Ok(wait) => Some(wait.max(0) as u64),
            Err(e) => {
                tracing::debug!(error = %e, "rate limit checked on this instance only");
                None
            }
        }
    }

    fn check_local(&self, action: Action, key: &str, bucket: Bucket) -> Result<()> {
        let Bucket { per_second, burst } = bucket;
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget full buckets: they behave exactly like absent ones.
            buckets.retain(|(a, k), (tokens, at)| {
                let b = self.bucket(*a, k);
                *tokens + now.duration_since(*at).as_secs_f64() * b.per_second < b.burst
            });
        }
        let (tokens, at) = buckets
            .entry((action, key.to_owned()))
            .or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_second.max(1e-6) * 1000.0).ceil() as u64;
            Err(Error::limit_exceeded(wait.max(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_limited() {
        let cfg = RateLimits {
            enabled: true,
            login: Bucket {
                per_second: 1.0,
                burst: 2.0,
            },
            register: Bucket {
                per_second: 1.0,
                burst: 2.0,
            },
            send: Bucket {
                per_second: 1.0,
                burst: 2.0,
            },
            media_upload: Bucket {
                per_second: 1.0,
                burst: 2.0,
            },
        };
        let rl = RateLimiter::new(cfg);
        assert!(rl.check(Action::Send, "a").await.is_ok());
        assert!(rl.check(Action::Send, "a").await.is_ok());
        let err = rl.check(Action::Send, "a").await.unwrap_err();
        assert_eq!(err.errcode, "M_LIMIT_EXCEEDED");
        assert!(err.retry_after_ms.unwrap() > 0);
        assert!(rl.check(Action::Send, "b").await.is_ok());

        // An override of 0/0 lifts the limit; removing it restores the default.
        rl.overrides().set(
            "a",
            Some(Bucket {
                per_second: 0.0,
                burst: 0.0,
            }),
        );
        for _ in 0..10 {
            assert!(rl.check(Action::Send, "a").await.is_ok());
        }
        rl.overrides().set("a", None);
        assert!(rl.check(Action::Send, "a").await.is_err());
    }
}
