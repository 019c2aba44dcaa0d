//! Google's OAuth 2.0 token endpoint for service accounts, as the FCM
//! simulator serves it: `POST /token` with
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256
//! `assertion`, verified against the service account's public key.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde_json::json;

use super::{fcm::FcmState, lock, parse_jws, random_hex};
use crate::jwt;

/// Google's OAuth error shape.
fn oauth_error(state: &FcmState, description: &str) -> Response {
    state
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let body = json!({ "error": "invalid_grant", "error_description": description });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

pub(super) async fn token(
    State(state): State<Arc<FcmState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error(&state, "Bad Request: expected a form body");
    }
    let fields = form_fields(&body);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(&state, "Invalid grant_type");
    }
    let Some(jws) = field("assertion").and_then(parse_jws) else {
        return oauth_error(&state, "Invalid JWT: malformed assertion");
    };
    if jws.header["alg"] != "RS256" {
        return oauth_error(&state, "Invalid JWT: alg must be RS256");
    }
    if jws
        .header
        .get("kid")
        .is_some_and(|k| k != state.private_key_id.as_str())
    {
        return oauth_error(&state, "Invalid JWT Signature: unknown key id");
    }
    let public = RsaPublicKeyComponents {
        n: &state.public_n,
        e: &state.public_e,
    };
    if public
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            jws.signing_input.as_bytes(),
            &jws.signature,
        )
        .is_err()
    {
        return oauth_error(&state, "Invalid JWT Signature.");
    }
    let c = &jws.claims;
    let now = jwt::now_secs();
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    if c["iss"] != state.client_email.as_str() {
        return oauth_error(&state, "Invalid JWT: iss is not the service account");
    }
    if c["aud"] != state.token_uri.as_str() {
        return oauth_error(&state, "Invalid JWT: Failed audience check.");
    }
    if !c["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .any(|s| s == crate::fcm::SCOPE)
    {
        return oauth_error(&state, "Invalid JWT: scope must include firebase.messaging");
    }
    if iat > now + 60 || exp <= now || exp < iat || exp - iat > 3600 {
        return oauth_error(&state, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let access_token = format!("ya29.sim-{}", random_hex(24));
    let lifetime = *lock(&state.token_lifetime);
    lock(&state.tokens).push((access_token.clone(), Instant::now() + lifetime));
    state
        .exchanges
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Json(json!({
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::form_fields;

    #[test]
    fn decodes_forms() {
        let fields = form_fields(b"grant_type=urn%3Aietf%3Aparams&assertion=a.b.c&x=1+2%");
        assert_eq!(fields[0], ("grant_type".into(), "urn:ietf:params".into()));
        assert_eq!(fields[1].1, "a.b.c");
        assert_eq!(fields[2].1, "1 2%");
    }
}
