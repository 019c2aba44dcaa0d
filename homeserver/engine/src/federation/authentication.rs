//! Request authentication (Server-Server API, "Request Authentication").
//!
//! Every federation request is signed by its origin: the signature covers the
//! JSON object `{method, uri, origin, destination, content}` (content only
//! when there is a body), and travels in an `Authorization: X-Matrix
//! origin=..,destination=..,key=..,sig=..` header. Both directions build that
//! object here, so signer and verifier cannot drift apart.

use http::HeaderValue;
use ruma::{
    api::federation::authentication::XMatrix,
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair},
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerSigningKeyId, ServerName,
};

/// The object an X-Matrix signature covers. `uri` is the request's path and
/// query exactly as sent.
pub fn request_object(
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: &ServerName,
    content: Option<&CanonicalJsonValue>,
) -> CanonicalJsonObject {
    let mut object = CanonicalJsonObject::from([
        ("method".to_owned(), method.into()),
        ("uri".to_owned(), uri.into()),
        ("origin".to_owned(), origin.as_str().into()),
        ("destination".to_owned(), destination.as_str().into()),
    ]);
    if let Some(content) = content {
        object.insert("content".to_owned(), content.clone());
    }
    object
}

/// The `Authorization` header for a request from `origin` to `destination`.
pub fn sign_request(
    key: &Ed25519KeyPair,
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: &ServerName,
    content: Option<&CanonicalJsonValue>,
) -> anyhow::Result<HeaderValue> {
    let object = request_object(method, uri, origin, destination, content);
    let canonical = serde_json::to_vec(&object)?;
    let (key_id, signature) = key.sign(&canonical).into_parts();
    let key_id = OwnedServerSigningKeyId::try_from(key_id.as_str())?;
    let header = XMatrix::new(
        origin.to_owned(),
        destination.to_owned(),
        key_id,
        Base64::new(signature),
    );
    Ok(HeaderValue::from(&header))
}

/// Adds the header's signature to `object` as `signatures.<origin>.<key>`,
/// ready for a JSON signature check.
pub fn add_header_signature(object: &mut CanonicalJsonObject, header: &XMatrix) {
    let signatures = object
        .entry("signatures".to_owned())
        .or_insert_with(|| CanonicalJsonValue::Object(Default::default()));
    if let CanonicalJsonValue::Object(signatures) = signatures {
        let mine = signatures
            .entry(header.origin.to_string())
            .or_insert_with(|| CanonicalJsonValue::Object(Default::default()));
        if let CanonicalJsonValue::Object(mine) = mine {
            mine.insert(header.key.to_string(), header.sig.encode().into());
        }
    }
}
