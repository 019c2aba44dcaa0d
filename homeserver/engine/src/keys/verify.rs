//! Checking the ed25519 signatures on uploaded keys.
//!
//! Every signed object (device keys, signed one-time keys, cross-signing keys)
//! is checked against exactly the one signature that vouches for it: its
//! signer's user id and key id. Other signatures in the object are kept but
//! not relied upon.

use ruma::{serde::Base64, CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// `400 M_INVALID_SIGNATURE`.
pub fn invalid_signature(msg: impl Into<String>) -> Error {
    Error::new(400, "M_INVALID_SIGNATURE", msg)
}

/// Checks that `object` carries a valid signature by `signer_user`'s key
/// `key_id` (`ed25519:<name>`), whose public key is `public_key` (unpadded base64).
pub fn verify_signature(
    object: &Value,
    signer_user: &str,
    key_id: &str,
    public_key: &str,
) -> Result<()> {
    let signature = signature_of(object, signer_user, key_id)
        .ok_or_else(|| invalid_signature(format!("Missing signature {signer_user} {key_id}.")))?;
    // Keep only the signature being checked: `verify_json` checks every
    // entity present, and others' keys are not ours to check here.
    let mut only = object.clone();
    only["signatures"] = json!({ signer_user: { key_id: signature } });
    let canonical = canonical_object(&only)?;
    let key = Base64::parse(public_key)
        .map_err(|_| invalid_signature(format!("Invalid public key for {key_id}.")))?;
    let map = [(
        signer_user.to_owned(),
        [(key_id.to_owned(), key)].into_iter().collect(),
    )]
    .into_iter()
    .collect();
    ruma::signatures::verify_json(&map, &canonical)
        .map_err(|e| invalid_signature(format!("Invalid signature {signer_user} {key_id}: {e}")))
}

/// The signature string at `signatures.<user>.<key_id>`, if any.
pub fn signature_of<'a>(object: &'a Value, user: &str, key_id: &str) -> Option<&'a str> {
    object.get("signatures")?.get(user)?.get(key_id)?.as_str()
}

/// The value of `keys.<key_id>` (a public key), if any.
pub fn public_key<'a>(object: &'a Value, key_id: &str) -> Option<&'a str> {
    object.get("keys")?.get(key_id)?.as_str()
}

/// The object as canonical JSON; floats and out-of-range integers are bad JSON.
pub fn canonical_object(value: &Value) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(o)) => Ok(o),
        Ok(_) => Err(Error::bad_json("Expected a JSON object.")),
        Err(e) => Err(Error::bad_json(format!("Not canonical JSON: {e}"))),
    }
}

/// The object without `signatures` and `unsigned`: what a signature covers.
/// Two uploads of the same key compare equal on this.
pub fn signed_part(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}
