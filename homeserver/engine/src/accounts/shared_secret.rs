//! Shared-secret registration, compatible with Synapse's
//! `/_synapse/admin/v1/register`: `GET` hands out a single-use nonce; `POST`
//! carries `mac = hex(HMAC-SHA1(secret, nonce \0 user \0 password \0 admin|notadmin))`.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha1::Sha1;

use crate::util::{now_ms, random_string};

/// A nonce is good for this long.
const NONCE_TTL_MS: i64 = 60_000;

#[derive(Default)]
pub struct SharedSecretRegistration {
    nonces: Mutex<HashMap<String, i64>>,
}

impl SharedSecretRegistration {
    pub fn new_nonce(&self) -> String {
        let nonce = random_string(32);
        let now = now_ms();
        let mut nonces = self.nonces.lock();
        nonces.retain(|_, issued| now - *issued < NONCE_TTL_MS);
        nonces.insert(nonce.clone(), now);
        nonce
    }

    /// Consumes the nonce; true if it was issued and has not expired.
    pub fn take_nonce(&self, nonce: &str) -> bool {
        self.nonces
            .lock()
            .remove(nonce)
            .is_some_and(|issued| now_ms() - issued < NONCE_TTL_MS)
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
