//! `POST /keys/upload`: a device publishes its identity keys, one-time keys
//! and fallback keys.
//!
//! Everything is checked before anything is written, and the write is one
//! transaction: a refused upload leaves nothing behind.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::Value;

use super::{
    device_lists::complete_change,
    verify::{public_key, verify_signature},
    KeysService,
};
use crate::{
    error::{Error, Result},
    storage::{KeyUpload, KeyUploadOutcome, OneTimeKeyRecord},
    util::now_ms,
};

/// What a device uploads; key ids are `<algorithm>:<key id>`.
#[derive(Clone, Debug, Default)]
pub struct KeysUpload {
    pub device_keys: Option<Value>,
    pub one_time_keys: Vec<(String, Value)>,
    pub fallback_keys: Vec<(String, Value)>,
}

impl KeysService {
    /// Stores the device's keys; returns its unclaimed one-time-key counts.
    pub async fn upload(
        &self,
        user_id: &UserId,
        device_id: &str,
        upload: KeysUpload,
    ) -> Result<BTreeMap<String, u64>> {
        let user = user_id.as_str();
        let store = &self.core.storage.keys;
        let stored: Option<Value> = store
            .device_keys(user, device_id)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok());

        let mut new_device_keys = None;
        let ed25519_id = format!("ed25519:{device_id}");
        let signing_key = match &upload.device_keys {
            Some(keys) => {
                check_device_keys(keys, user, device_id)?;
                let unchanged = stored.as_ref().is_some_and(|s| s == keys);
                if !unchanged {
                    new_device_keys = Some(keys.to_string());
                }
                public_key(keys, &ed25519_id).map(str::to_owned)
            }
            None => stored
                .as_ref()
                .and_then(|s| public_key(s, &ed25519_id))
                .map(str::to_owned),
        };
        let key_check = |id: &str, v: &Value| {
            check_one_time_key(id, v, user, device_id, signing_key.as_deref())
        };
        let one_time_keys = upload
            .one_time_keys
            .iter()
            .map(|(id, v)| key_check(id, v))
            .collect::<Result<Vec<_>>>()?;
        let fallback_keys = upload
            .fallback_keys
            .iter()
            .map(|(id, v)| key_check(id, v))
            .collect::<Result<Vec<_>>>()?;
        if let Some(dup) = duplicate_algorithm(&fallback_keys) {
            return Err(Error::invalid_param(format!(
                "More than one fallback key for {dup}."
            )));
        }

        // Identity keys that others will see are a device-list change.
        let change_pos = new_device_keys
            .is_some()
            .then(|| self.core.stream.allocate());
        let record = KeyUpload {
            device_keys: new_device_keys,
            one_time_keys,
            fallback_keys,
            seq: now_ms().saturating_mul(1000),
            change_pos,
        };
        let outcome = store.upload_keys(user, device_id, &record).await;
        self.core.key_counts.invalidate(user);
        if let Some(pos) = change_pos {
            let stored = matches!(outcome, Ok(KeyUploadOutcome::Stored));
            complete_change(&self.core, user, pos, stored).await;
            if let (true, Some(keys)) = (stored, upload.device_keys) {
                let change = crate::federation::device_lists::DeviceChange::Keys(keys);
                crate::federation::device_lists::announce(
                    &self.core, user_id, device_id, pos, change,
                )
                .await;
            }
        }
        match outcome? {
            KeyUploadOutcome::Stored => Ok(self.key_counts(user, device_id).await?.0),
            KeyUploadOutcome::OneTimeKeyConflict(id) => Err(Error::invalid_param(format!(
                "One-time key {id} already exists with different content."
            ))),
        }
    }
}

/// The device's identity keys must be its own and signed by its own ed25519 key.
fn check_device_keys(keys: &Value, user_id: &str, device_id: &str) -> Result<()> {
    if !keys.is_object() {
        return Err(Error::bad_json("device_keys must be an object."));
    }
    if keys["user_id"].as_str() != Some(user_id) || keys["device_id"].as_str() != Some(device_id) {
        return Err(Error::invalid_param(
            "device_keys.user_id and device_id must be the uploading device's.",
        ));
    }
    if !keys["algorithms"].is_array() {
        return Err(Error::bad_json("device_keys.algorithms must be a list."));
    }
    let Some(keys_map) = keys["keys"].as_object() else {
        return Err(Error::bad_json("device_keys.keys must be an object."));
    };
    if keys_map.values().any(|v| !v.is_string()) {
        return Err(Error::bad_json("device_keys.keys values must be strings."));
    }
    let ed25519_id = format!("ed25519:{device_id}");
    let Some(ed25519) = public_key(keys, &ed25519_id) else {
        return Err(Error::bad_json(format!(
            "device_keys.keys lacks {ed25519_id}."
        )));
    };
    verify_signature(keys, user_id, &ed25519_id, ed25519)
}

/// Parses `<algorithm>:<id>` and checks a `signed_*` key's signature by the
/// device's ed25519 key.
fn check_one_time_key(
    full_id: &str,
    value: &Value,
    user_id: &str,
    device_id: &str,
    signing_key: Option<&str>,
) -> Result<OneTimeKeyRecord> {
    let Some((algorithm, key_id)) = full_id
        .split_once(':')
        .filter(|(a, k)| !a.is_empty() && !k.is_empty())
    else {
        return Err(Error::invalid_param(format!("Invalid key id {full_id}.")));
    };
    if algorithm.starts_with("signed_") {
        if !value.get("key").is_some_and(Value::is_string) {
            return Err(Error::bad_json(format!(
                "{full_id} must be an object with a key."
            )));
        }
        let Some(signing_key) = signing_key else {
            return Err(Error::invalid_param(
                "Upload the device's identity keys before signed one-time keys.",
            ));
        };
        verify_signature(value, user_id, &format!("ed25519:{device_id}"), signing_key)?;
    }
    Ok(OneTimeKeyRecord {
        algorithm: algorithm.to_owned(),
        key_id: key_id.to_owned(),
        key_json: value.to_string(),
    })
}

fn duplicate_algorithm(keys: &[OneTimeKeyRecord]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .map(|k| k.algorithm.as_str())
        .find(|a| !seen.insert(*a))
}
