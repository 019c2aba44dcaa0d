//! End-to-end encryption keys (the spec's "Key management" sections): device
//! identity keys, one-time and fallback keys, cross-signing keys and
//! signatures, device-list tracking, and the server-side key backup.
//!
//! The server only stores and relays public keys, signatures and ciphertext.
//! It checks every signature it can (a device's keys are signed by the device,
//! signed one-time keys by the device, self- and user-signing keys by the
//! master key), so a client never receives a key the server could have known
//! to be forged.
//!
//! | endpoint | file |
//! |---|---|
//! | `POST /keys/upload` | `upload.rs` |
//! | `POST /keys/query` | `query.rs` |
//! | `POST /keys/claim` | `claim.rs` |
//! | `GET /keys/changes`, device lists in `/sync` | `device_lists.rs` |
//! | `POST /keys/device_signing/upload` | `cross_signing.rs` |
//! | `POST /keys/signatures/upload` | `signatures.rs` |
//! | `/room_keys/...` | `backup.rs` |
//!
//! `server_key.rs` is the homeserver's own signing key (federation), kept here
//! under its historical path `keys::SigningKey`.

pub mod backup;
mod claim;
mod cross_signing;
pub mod device_lists;
mod query;
mod server_key;
mod signatures;
mod upload;
pub mod verify;

use std::{collections::BTreeMap, sync::Arc};

use crate::{core::Core, error::Result};

pub use backup::KeyBackupService;
pub use claim::ClaimResult;
pub use cross_signing::CrossSigningUpload;
pub use query::QueryResult;
pub use server_key::SigningKey;
pub use upload::KeysUpload;

/// The one-time-key algorithm clients always expect a count for.
pub const SIGNED_CURVE25519: &str = "signed_curve25519";

#[derive(Clone)]
pub struct KeysService {
    core: Arc<Core>,
}

impl KeysService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Unclaimed one-time keys per algorithm (`signed_curve25519` always
    /// present) and the algorithms of unused fallback keys, for one device.
    pub async fn key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        key_counts(&self.core, user_id, device_id).await
    }
}

pub(crate) async fn key_counts(
    core: &Core,
    user_id: &str,
    device_id: &str,
) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
    let epoch = match core.key_counts.get(user_id, device_id) {
        Ok(cached) => return Ok(cached),
        Err(epoch) => epoch,
    };
    let (counts, fallbacks) = core.storage.keys.key_counts(user_id, device_id).await?;
    let mut out: BTreeMap<String, u64> = counts
        .into_iter()
        .map(|(alg, n)| (alg, n.max(0) as u64))
        .collect();
    out.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
    let counts = (out, fallbacks);
    core.key_counts.put(user_id, device_id, epoch, &counts);
    Ok(counts)
}
