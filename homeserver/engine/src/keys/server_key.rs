//! The server's ed25519 signing key: generated on first start, then loaded.
//!
//! File format (one line): `ed25519 <key_version> <base64 PKCS#8 DER>`.

use std::path::Path;

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use ruma::signatures::Ed25519KeyPair;

pub struct SigningKey {
    pub pair: Ed25519KeyPair,
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64 of the public key, as published in `/_matrix/key/v2/server`.
    pub public_key_b64: String,
}

impl SigningKey {
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let der = Ed25519KeyPair::generate();
            let version = crate::util::random_string(6);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(
                path,
                format!("ed25519 {version} {}\n", STANDARD_NO_PAD.encode(&*der)),
            )?;
            restrict_permissions(path);
            tracing::info!(path = %path.display(), "generated a new signing key");
        }
        let text = std::fs::read_to_string(path)?;
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("{}: expected `ed25519 <version> <base64>`", path.display());
        };
        let der = STANDARD_NO_PAD.decode(b64.trim_end_matches('='))?;
        let pair = Ed25519KeyPair::from_der(&der, version.to_owned())
            .map_err(|e| anyhow::anyhow!("{}: invalid key: {e}", path.display()))?;
        let public_key_b64 = STANDARD_NO_PAD.encode(pair.public_key());
        Ok(Self {
            key_id: format!("ed25519:{version}"),
            pair,
            public_key_b64,
        })
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}
