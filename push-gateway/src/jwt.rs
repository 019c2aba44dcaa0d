//! JSON Web Tokens as the vendors want them: RS256 assertions for Google's
//! OAuth token endpoint (FCM) and ES256 provider tokens for APNs.
//!
//! Signing uses `ring`, which rustls already brings into the build, so the
//! gateway adds no second crypto stack. Keys arrive as PEM-wrapped PKCS#8.

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256},
};
use serde::Serialize;

/// The DER bytes inside the first PEM block of `pem` (any label).
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            if inside {
                return STANDARD
                    .decode(body.as_bytes())
                    .context("PEM body is not base64");
            }
        } else if inside {
            body.push_str(line);
        }
    }
    anyhow::bail!("no PEM block found")
}

/// Wraps DER bytes in a PEM block with the given label (the simulators write keys).
#[cfg_attr(not(feature = "vendor-sim"), allow(dead_code))]
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// base64url without padding, as JWS uses.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &impl Serialize, claims: &impl Serialize) -> anyhow::Result<String> {
    Ok(format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header)?),
        b64url(&serde_json::to_vec(claims)?)
    ))
}

/// An RSA key that signs RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
pub struct Rs256Signer {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Rs256Signer {
    /// From a PEM `PRIVATE KEY` (PKCS#8), as in a Google service-account JSON.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = pem_to_der(pem)?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("not a usable RSA PKCS#8 key: {e}"))?;
        Ok(Self {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// A compact JWS `header.claims.signature`.
    pub fn sign(&self, header: &impl Serialize, claims: &impl Serialize) -> anyhow::Result<String> {
        let input = signing_input(header, claims)?;
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }
}

/// A P-256 key that signs ES256 (ECDSA, fixed-width r||s signature).
pub struct Es256Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256Signer {
    /// From a PEM `PRIVATE KEY` (PKCS#8), as in an APNs `AuthKey_*.p8` file.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = pem_to_der(pem)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| anyhow::anyhow!("not a usable P-256 PKCS#8 key: {e}"))?;
        Ok(Self { key, rng })
    }

    /// A compact JWS `header.claims.signature`.
    pub fn sign(&self, header: &impl Serialize, claims: &impl Serialize) -> anyhow::Result<String> {
        let input = signing_input(header, claims)?;
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?;
        Ok(format!("{input}.{}", b64url(sig.as_ref())))
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250, 251, 252];
        let pem = der_to_pem("PRIVATE KEY", &der);
        assert_eq!(pem_to_der(&pem).unwrap(), der);
        assert!(pem_to_der("garbage").is_err());
    }
}
