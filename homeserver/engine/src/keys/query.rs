//! `POST /keys/query`: the identity keys of users' devices, and their
//! cross-signing keys, with every signature the server holds on them.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Value};

use super::KeysService;
use crate::{error::Result, storage::SignatureRecord};

/// Key JSON per user (and device), ready to send.
#[derive(Clone, Debug, Default)]
pub struct QueryResult {
    pub device_keys: BTreeMap<String, BTreeMap<String, String>>,
    pub master_keys: BTreeMap<String, String>,
    pub self_signing_keys: BTreeMap<String, String>,
    pub user_signing_keys: BTreeMap<String, String>,
    pub failures: BTreeMap<String, Value>,
}

impl KeysService {
    /// Keys of the requested users; an empty device list means every device.
    pub async fn query(
        &self,
        requester: &UserId,
        wanted: BTreeMap<String, Vec<String>>,
    ) -> Result<QueryResult> {
        let store = &self.core.storage.keys;
        let mut out = QueryResult::default();
        for (user_id, device_ids) in wanted {
            let Ok(parsed) = UserId::parse(user_id.as_str()) else {
                continue;
            };
            if !self.core.is_local(parsed.server_name()) {
                out.failures.insert(
                    parsed.server_name().to_string(),
                    json!({"errcode": "M_UNKNOWN", "error": "Federation is not available."}),
                );
                continue;
            }
            let signatures = store.signatures_on(&user_id).await?;
            let devices = out.device_keys.entry(user_id.clone()).or_default();
            for d in store.user_device_keys(&user_id).await? {
                if !device_ids.is_empty() && !device_ids.contains(&d.device_id) {
                    continue;
                }
                let Ok(mut keys) = serde_json::from_str::<Value>(&d.key_json) else {
                    continue;
                };
                merge_signatures(&mut keys, &d.device_id, &signatures, |_| true);
                if let (Some(name), Some(o)) = (d.display_name, keys.as_object_mut()) {
                    let unsigned = o.entry("unsigned").or_insert_with(|| json!({}));
                    if let Some(u) = unsigned.as_object_mut() {
                        u.insert("device_display_name".into(), name.into());
                    }
                }
                devices.insert(d.device_id, keys.to_string());
            }
            for (key_type, key_json) in store.cross_signing_keys(&user_id).await? {
                let Ok(mut key) = serde_json::from_str::<Value>(&key_json) else {
                    continue;
                };
                // Signatures by another user's user-signing key are that
                // user's private business: only they see them.
                let visible = |s: &SignatureRecord| {
                    s.signer_user_id == user_id || s.signer_user_id == requester.as_str()
                };
                if let Some(public) = cross_signing_public_key(&key) {
                    merge_signatures(&mut key, &public, &signatures, visible);
                }
                let target = match key_type.as_str() {
                    "master" => &mut out.master_keys,
                    "self_signing" => &mut out.self_signing_keys,
                    "user_signing" if user_id == requester.as_str() => &mut out.user_signing_keys,
                    _ => continue,
                };
                target.insert(user_id.clone(), key.to_string());
            }
        }
        Ok(out)
    }
}

/// The public key of a cross-signing key object (its single `ed25519:` entry).
pub(crate) fn cross_signing_public_key(key: &Value) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    let (id, value) = keys.iter().next()?;
    id.strip_prefix("ed25519:")?;
    value.as_str().map(str::to_owned)
}

/// Adds the stored signatures on `target_key_id` to the object's `signatures`.
fn merge_signatures(
    object: &mut Value,
    target_key_id: &str,
    signatures: &[SignatureRecord],
    visible: impl Fn(&SignatureRecord) -> bool,
) {
    for s in signatures
        .iter()
        .filter(|s| s.target_key_id == target_key_id && visible(s))
    {
        let Some(o) = object.as_object_mut() else {
            return;
        };
        let all = o.entry("signatures").or_insert_with(|| json!({}));
        if let Some(all) = all.as_object_mut() {
            let by_user = all
                .entry(s.signer_user_id.clone())
                .or_insert_with(|| json!({}));
            if let Some(by_user) = by_user.as_object_mut() {
                by_user.insert(s.signer_key_id.clone(), s.signature.clone().into());
            }
        }
    }
}
