//! `POST /keys/signatures/upload`: signatures made with cross-signing keys.
//!
//! Three kinds are accepted, each checked against the key that must have made
//! it:
//! - one of my devices, signed by my self-signing key;
//! - my master key, signed by one of my devices;
//! - another user's master key, signed by my user-signing key.
//!
//! The signed object must be the key the server holds (signatures aside). A
//! refused signature is reported in `failures` and the others still stored.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Value};

use super::{
    device_lists::complete_change,
    query::cross_signing_public_key,
    verify::{invalid_signature, public_key, signature_of, signed_part, verify_signature},
    KeysService,
};
use crate::{
    error::{Error, Result},
    storage::SignatureRecord,
};

/// `user -> key id -> {errcode, error}` for each refused signature.
pub type SignatureFailures = BTreeMap<String, BTreeMap<String, Value>>;

impl KeysService {
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<SignatureFailures> {
        let me = signer.as_str();
        let mut records = Vec::new();
        let mut failures = SignatureFailures::new();
        for (target_user, objects) in signed {
            for (key_id, object) in objects {
                let checked = if target_user == me {
                    self.own_key_signatures(me, &key_id, &object).await
                } else {
                    self.other_master_signature(me, &target_user, &key_id, &object)
                        .await
                };
                match checked {
                    Ok(mut found) => records.append(&mut found),
                    Err(e) if e.status >= 500 => return Err(e),
                    Err(e) => {
                        failures
                            .entry(target_user.clone())
                            .or_default()
                            .insert(key_id, json!({"errcode": e.errcode, "error": e.message}));
                    }
                }
            }
        }
        if !records.is_empty() {
            let pos = self.core.stream.allocate();
            let result = self
                .core
                .storage
                .keys
                .put_signatures(&records, me, pos)
                .await;
            complete_change(&self.core, me, pos, result.is_ok()).await;
            result?;
        }
        Ok(failures)
    }

    /// My device signed by my self-signing key, or my master key signed by my devices.
    async fn own_key_signatures(
        &self,
        me: &str,
        key_id: &str,
        object: &Value,
    ) -> Result<Vec<SignatureRecord>> {
        let store = &self.core.storage.keys;
        let mine = self.stored_cross_signing(me).await?;
        if let Some(device) = store.device_keys(me, key_id).await? {
            let device: Value = serde_json::from_str(&device)?;
            same_key(object, &device)?;
            let ssk = mine
                .get("self_signing")
                .and_then(cross_signing_public_key)
                .ok_or_else(|| invalid_signature("No self-signing key to verify with."))?;
            let ssk_id = format!("ed25519:{ssk}");
            verify_signature(object, me, &ssk_id, &ssk)?;
            return Ok(vec![record(me, key_id, me, &ssk_id, object)]);
        }
        let master = mine
            .get("master")
            .filter(|m| cross_signing_public_key(m).as_deref() == Some(key_id))
            .ok_or_else(|| Error::not_found(format!("Unknown key {key_id}.")))?;
        same_key(object, master)?;
        let mut found = Vec::new();
        let signer_ids: Vec<String> = object["signatures"][me]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for signer_id in signer_ids {
            let Some(device_id) = signer_id.strip_prefix("ed25519:") else {
                continue;
            };
            if device_id == key_id {
                continue; // the master key's own signature
            }
            let Some(device) = store.device_keys(me, device_id).await? else {
                continue;
            };
            let device: Value = serde_json::from_str(&device)?;
            let device_key = public_key(&device, &signer_id).ok_or_else(|| {
                invalid_signature(format!("Device {device_id} has no ed25519 key."))
            })?;
            verify_signature(object, me, &signer_id, device_key)?;
            found.push(record(me, key_id, me, &signer_id, object));
        }
        if found.is_empty() {
            return Err(invalid_signature("No signature by a known device."));
        }
        Ok(found)
    }

    /// Another user's master key signed by my user-signing key.
    async fn other_master_signature(
        &self,
        me: &str,
        target_user: &str,
        key_id: &str,
        object: &Value,
    ) -> Result<Vec<SignatureRecord>> {
        let theirs = self.stored_cross_signing(target_user).await?;
        let master = theirs
            .get("master")
            .filter(|m| cross_signing_public_key(m).as_deref() == Some(key_id))
            .ok_or_else(|| Error::not_found(format!("Unknown key {key_id}.")))?;
        same_key(object, master)?;
        let usk = self
            .stored_cross_signing(me)
            .await?
            .get("user_signing")
            .and_then(cross_signing_public_key)
            .ok_or_else(|| invalid_signature("No user-signing key to verify with."))?;
        let usk_id = format!("ed25519:{usk}");
        verify_signature(object, me, &usk_id, &usk)?;
        Ok(vec![record(target_user, key_id, me, &usk_id, object)])
    }
}

/// The signed object must be the stored key, signatures and `unsigned` aside.
fn same_key(object: &Value, stored: &Value) -> Result<()> {
    if signed_part(object) != signed_part(stored) {
        return Err(Error::invalid_param(
            "The signed object does not match the stored key.",
        ));
    }
    Ok(())
}

fn record(
    target_user: &str,
    target_key: &str,
    signer: &str,
    signer_key: &str,
    object: &Value,
) -> SignatureRecord {
    SignatureRecord {
        target_user_id: target_user.to_owned(),
        target_key_id: target_key.to_owned(),
        signer_user_id: signer.to_owned(),
        signer_key_id: signer_key.to_owned(),
        signature: signature_of(object, signer, signer_key)
            .unwrap_or_default()
            .to_owned(),
    }
}
