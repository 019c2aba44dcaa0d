//! `POST /keys/claim`: hands out one-time keys so a peer can open an Olm
//! session with a device.
//!
//! Each one-time key goes to exactly one claimer, however many claim at once:
//! the store picks and deletes it in one statement. When a device has none
//! left, its fallback key is handed out instead (to any number of claimers).

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Value};

use super::KeysService;
use crate::error::Result;

/// `user -> device -> "<algorithm>:<key id>" -> key JSON`, plus failures per server.
#[derive(Clone, Debug, Default)]
pub struct ClaimResult {
    pub one_time_keys: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    pub failures: BTreeMap<String, Value>,
}

impl KeysService {
    /// Claims one key per requested `(user, device, algorithm)`.
    pub async fn claim(
        &self,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<ClaimResult> {
        let mut out = ClaimResult::default();
        for (user_id, devices) in wanted {
            let Ok(parsed) = UserId::parse(user_id.as_str()) else {
                continue;
            };
            if !self.core.is_local(parsed.server_name()) {
                // No federation yet: the remote server is reported unreachable.
                out.failures.insert(
                    parsed.server_name().to_string(),
                    json!({"errcode": "M_UNKNOWN", "error": "Federation is not available."}),
                );
                continue;
            }
            for (device_id, algorithm) in devices {
                let claimed = self
                    .core
                    .storage
                    .keys
                    .claim_key(&user_id, &device_id, &algorithm)
                    .await;
                // Claimed or not, a count cached before the claim may be stale.
                self.core.key_counts.invalidate(&user_id);
                let claimed = claimed?;
                if let Some(key) = claimed {
                    out.one_time_keys
                        .entry(user_id.clone())
                        .or_default()
                        .entry(device_id)
                        .or_default()
                        .insert(format!("{algorithm}:{}", key.key_id), key.key_json);
                }
            }
        }
        Ok(out)
    }
}
