//! Shared-secret registration, compatible with Synapse's
//! `/_synapse/admin/v1/register`: `GET` hands out a single-use nonce; `POST`
//! carries `mac = hex(HMAC-SHA1(secret, nonce \0 user \0 password \0 admin|notadmin))`.

use std::{collections::HashMap, sync::Arc};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha1::Sha1;

use crate::{
    cluster::Commands,
    util::{now_ms, random_string},
};

/// A nonce is good for this long.
const NONCE_TTL_MS: i64 = 60_000;

/// Issued nonces. With several instances the `POST` may reach another
/// instance than the `GET`, so nonces are also kept in Redis
/// (`nonce:{nonce}`, expiring with it); taking one deletes it everywhere,
/// so it is used once across instances.
#[derive(Default)]
pub struct SharedSecretRegistration {
    nonces: Mutex<HashMap<String, i64>>,
    redis: Option<Arc<Commands>>,
}

impl SharedSecretRegistration {
    pub fn new(redis: Option<Arc<Commands>>) -> Self {
        Self {
            nonces: Default::default(),
            redis,
        }
    }

    pub async fn new_nonce(&self) -> String {
        let nonce = random_string(32);
        let now = now_ms();
        {
            let mut nonces = self.nonces.lock();
            nonces.retain(|_, issued| now - *issued < NONCE_TTL_MS);
            nonces.insert(nonce.clone(), now);
        }
        if let Some(redis) = &self.redis {
            let mut cmd = redis::cmd("SET");
            cmd.arg(redis.key("nonce", &nonce))
                .arg(1)
                .arg("PX")
                .arg(NONCE_TTL_MS);
            if let Err(e) = redis.query::<()>(&cmd).await {
                tracing::warn!(error = %e, "registration nonce valid on this instance only");
            }
        }
        nonce
    }

    /// Consumes the nonce; true if it was issued and has not expired.
    pub async fn take_nonce(&self, nonce: &str) -> bool {
        let local = self
            .nonces
            .lock()
            .remove(nonce)
            .is_some_and(|issued| now_ms() - issued < NONCE_TTL_MS);
        let Some(redis) = &self.redis else {
            return local;
        };
        match redis
            .query::<i64>(redis::cmd("DEL").arg(redis.key("nonce", nonce)))
            .await
        {
            Ok(deleted) => deleted == 1 || local,
            Err(e) => {
                tracing::warn!(error = %e, "checking a registration nonce on this instance only");
                local
            }
        }
    }
}

/// Constant-time check of the request's MAC.
pub fn verify_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
    mac_hex: &str,
) -> bool {
    let Ok(expected) = hex::decode(mac_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin {
        b"admin" as &[u8]
    } else {
        b"notadmin"
    });
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mac_round_trip() {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s").unwrap();
        mac.update(b"n\0u\0p\0notadmin");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert!(super::verify_mac("s", "n", "u", "p", false, &hex));
        assert!(!super::verify_mac("s", "n", "u", "p", true, &hex));
    }
}
