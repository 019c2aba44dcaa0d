//! Token-bucket rate limits per action and key (user id or client IP).
//!
//! In-process for a single instance; the Redis-backed variant for a region
//! shares counters across instances (scale-out issue).

use std::{collections::HashMap, time::Instant};

use parking_lot::Mutex;

use crate::{
    config::{Bucket, RateLimits},
    error::{Error, Result},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Login,
    Register,
    Send,
}

pub struct RateLimiter {
    config: RateLimits,
    buckets: Mutex<HashMap<(Action, String), (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(config: RateLimits) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, action: Action) -> Bucket {
        match action {
            Action::Login => self.config.login,
            Action::Register => self.config.register,
            Action::Send => self.config.send,
        }
    }

    /// Takes one token for `key`, or answers `M_LIMIT_EXCEEDED` with the wait.
    pub fn check(&self, action: Action, key: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let Bucket { per_second, burst } = self.bucket(action);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget full buckets: they behave exactly like absent ones.
            buckets.retain(|(a, _), (tokens, at)| {
                let b = self.bucket(*a);
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
        };
        let rl = RateLimiter::new(cfg);
        assert!(rl.check(Action::Send, "a").is_ok());
        assert!(rl.check(Action::Send, "a").is_ok());
        let err = rl.check(Action::Send, "a").unwrap_err();
        assert_eq!(err.errcode, "M_LIMIT_EXCEEDED");
        assert!(err.retry_after_ms.unwrap() > 0);
        assert!(rl.check(Action::Send, "b").is_ok());
    }
}
