//! `POST /keys/device_signing/upload`: a user's cross-signing keys.
//!
//! The master key identifies the user; the self-signing key (which signs the
//! user's own devices) and the user-signing key (which signs other users'
//! master keys) must be signed by it. Replacing keys needs user-interactive
//! auth; the first upload, or a retry of the same keys, does not (spec v1.11,
//! MSC3967), which is what lets clients bootstrap cross-signing at sign-up.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::Value;

use super::{
    device_lists::complete_change,
    query::cross_signing_public_key,
    verify::{invalid_signature, verify_signature},
    KeysService,
};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct CrossSigningUpload {
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
}

impl CrossSigningUpload {
    /// `(key_type, key)` for each key present.
    fn keys(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        [
            ("master", &self.master_key),
            ("self_signing", &self.self_signing_key),
            ("user_signing", &self.user_signing_key),
        ]
        .into_iter()
        .filter_map(|(t, k)| k.as_ref().map(|k| (t, k)))
    }
}

impl KeysService {
    /// The user's stored cross-signing keys by type.
    pub(crate) async fn stored_cross_signing(
        &self,
        user_id: &str,
    ) -> Result<BTreeMap<String, Value>> {
        Ok(self
            .core
            .storage
            .keys
            .cross_signing_keys(user_id)
            .await?
            .into_iter()
            .filter_map(|(t, json)| serde_json::from_str(&json).ok().map(|v| (t, v)))
            .collect())
    }

    /// Whether this upload needs user-interactive auth: only when it would
    /// replace an existing master key's set with different keys.
    pub async fn cross_signing_needs_auth(
        &self,
        user_id: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool> {
        let stored = self.stored_cross_signing(user_id.as_str()).await?;
        if !stored.contains_key("master") {
            return Ok(false);
        }
        Ok(upload.keys().any(|(t, k)| stored.get(t) != Some(k)))
    }

    /// Checks and stores the keys; a device-list change tells others to re-query.
    pub async fn upload_cross_signing(
        &self,
        user_id: &UserId,
        upload: CrossSigningUpload,
    ) -> Result<()> {
        let user = user_id.as_str();
        let stored = self.stored_cross_signing(user).await?;
        let master = match &upload.master_key {
            Some(master) => {
                check_key(master, user, "master")?;
                master
            }
            None if upload.self_signing_key.is_none() && upload.user_signing_key.is_none() => {
                return Ok(());
            }
            None => stored
                .get("master")
                .ok_or_else(|| invalid_signature("No master key to verify the signature with."))?,
        };
        let master_public = check_key(master, user, "master")?;
        let master_id = format!("ed25519:{master_public}");
        for (usage, key) in [
            ("self_signing", &upload.self_signing_key),
            ("user_signing", &upload.user_signing_key),
        ] {
            if let Some(key) = key {
                check_key(key, user, usage)?;
                verify_signature(key, user, &master_id, &master_public)?;
            }
        }
        let changed: Vec<(String, String)> = upload
            .keys()
            .filter(|(t, k)| stored.get(*t) != Some(*k))
            .map(|(t, k)| (t.to_owned(), k.to_string()))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .keys
            .put_cross_signing_keys(user, &changed, pos)
            .await;
        complete_change(&self.core, user, pos, result.is_ok()).await;
        if result.is_ok() {
            // Only keys that changed; never the user-signing key, which only
            // its owner may see.
            let public = |usage: &str| {
                if !changed.iter().any(|(t, _)| t == usage) {
                    return None;
                }
                upload
                    .keys()
                    .find(|(t, _)| *t == usage)
                    .map(|(_, k)| k.clone())
            };
            crate::federation::device_lists::announce_signing_keys(
                &self.core,
                user_id,
                public("master"),
                public("self_signing"),
            )
            .await;
        }
        result
    }
}

/// A cross-signing key must be the user's, carry its usage, and hold exactly
/// one ed25519 key named after itself. Returns that public key.
fn check_key(key: &Value, user_id: &str, usage: &str) -> Result<String> {
    if !key.is_object() {
        return Err(Error::bad_json(format!(
            "The {usage} key must be an object."
        )));
    }
    if key["user_id"].as_str() != Some(user_id) {
        return Err(Error::invalid_param(format!(
            "The {usage} key must belong to {user_id}."
        )));
    }
    let usages = key["usage"].as_array();
    if !usages.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage))) {
        return Err(Error::invalid_param(format!(
            "The {usage} key must list \"{usage}\" in its usage."
        )));
    }
    let single = key["keys"].as_object().is_some_and(|k| k.len() == 1);
    let public = cross_signing_public_key(key)
        .filter(|p| single && key["keys"][format!("ed25519:{p}")].as_str() == Some(p.as_str()));
    public.ok_or_else(|| {
        Error::invalid_param(format!(
            "The {usage} key must hold one key, \"ed25519:<public key>\": <public key>."
        ))
    })
}
