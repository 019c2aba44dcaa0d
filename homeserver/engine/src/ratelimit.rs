//! Token-bucket rate limits per action and key (user id or client IP).
//!
//! In-process for a single instance; the Redis-backed variant for a region
//! shares counters across instances (scale-out issue).

use std::{collections::HashMap, sync::Arc, time::Instant};

use parking_lot::{Mutex, RwLock};

use crate::{
    config::{Bucket, RateLimits},
    error::{Error, Result},
};

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
}

impl RateLimiter {
    pub fn new(config: RateLimits) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
            overrides: Default::default(),
        }
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
    pub fn check(&self, action: Action, key: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let Bucket { per_second, burst } = self.bucket(action, key);
        if per_second <= 0.0 && burst <= 0.0 {
            // An admin override of 0/0: this user is not limited.
            return Ok(());
        }
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

    #[test]
    fn burst_then_limited() {
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
        assert!(rl.check(Action::Send, "a").is_ok());
        assert!(rl.check(Action::Send, "a").is_ok());
        let err = rl.check(Action::Send, "a").unwrap_err();
        assert_eq!(err.errcode, "M_LIMIT_EXCEEDED");
        assert!(err.retry_after_ms.unwrap() > 0);
        assert!(rl.check(Action::Send, "b").is_ok());

        // An override of 0/0 lifts the limit; removing it restores the default.
        rl.overrides().set(
            "a",
            Some(Bucket {
                per_second: 0.0,
                burst: 0.0,
            }),
        );
        for _ in 0..10 {
            assert!(rl.check(Action::Send, "a").is_ok());
        }
        rl.overrides().set("a", None);
        assert!(rl.check(Action::Send, "a").is_err());
    }
}
