//! Argon2id password hashing, off the async workers.

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

use crate::{
    config::Passwords,
    error::{Error, Result},
};

pub async fn hash(password: &str, cfg: &Passwords) -> Result<String> {
    let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_iterations, 1, None)
        .map_err(|e| Error::unknown(format!("argon2 parameters: {e}")))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| Error::unknown(format!("salt: {e}")))?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::unknown(format!("hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error::unknown(e.to_string()))?
}

/// Verifies against the parameters stored in the hash itself.
pub async fn verify(password: &str, hash: &str) -> bool {
    let password = password.to_owned();
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}
