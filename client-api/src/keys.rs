//! End-to-end encryption key management: upload, query, claim, changes,
//! cross-signing keys and signatures (spec: "End-to-end encryption").

use std::collections::BTreeMap;

use axum::{extract::State, Json, Router};
use engine::{
    keys::{CrossSigningUpload, KeysUpload},
    sync::parse_token,
    Error,
};
use ruma::{
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    serde::Raw,
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt,
};
use serde_json::{json, value::RawValue, Value};

use crate::{
    devices::require_password_uia,
    error::{ApiError, ApiResult},
    extract::{AppState, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<upload_keys::v3::Request, _, _>(r, upload_route);
    let r = ruma_route::<get_keys::v3::Request, _, _>(r, query_route);
    let r = ruma_route::<claim_keys::v3::Request, _, _>(r, claim_route);
    let r = ruma_route::<get_key_changes::v3::Request, _, _>(r, changes_route);
    let r = ruma_route::<upload_signing_keys::v3::Request, _, _>(r, device_signing_route);
    ruma_route::<upload_signatures::v3::Request, _, _>(r, signatures_route)
}

/// The JSON value behind a raw ruma field.
pub(crate) fn value_of(raw: &RawValue) -> ApiResult<Value> {
    serde_json::from_str(raw.get()).map_err(|e| ApiError(Error::bad_json(e.to_string())))
}

/// Stored key JSON as a ruma raw field.
fn raw<T>(json: String) -> ApiResult<Raw<T>> {
    Raw::from_json_string(json).map_err(|e| ApiError(Error::unknown(e.to_string())))
}

fn user_id(s: &str) -> Option<OwnedUserId> {
    OwnedUserId::try_from(s).ok()
}

async fn upload_route(
    State(state): State<AppState>,
    req: Ruma<upload_keys::v3::Request>,
) -> ApiResult<RumaResponse<upload_keys::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let keys = |m: BTreeMap<OwnedOneTimeKeyId, Raw<_>>| {
        m.into_iter()
            .map(|(id, k)| Ok((id.to_string(), value_of(k.json())?)))
            .collect::<ApiResult<Vec<_>>>()
    };
    let upload = KeysUpload {
        device_keys: body.device_keys.map(|k| value_of(k.json())).transpose()?,
        one_time_keys: keys(body.one_time_keys)?,
        fallback_keys: keys(body.fallback_keys)?,
    };
    let counts = state
        .keys
        .upload(&user.user_id, &user.device_id, upload)
        .await?;
    let counts = counts
        .into_iter()
        .map(|(alg, n)| {
            (
                OneTimeKeyAlgorithm::from(alg.as_str()),
                UInt::new_saturating(n),
            )
        })
        .collect();
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

async fn query_route(
    State(state): State<AppState>,
    req: Ruma<get_keys::v3::Request>,
) -> ApiResult<RumaResponse<get_keys::v3::Response>> {
    let user = req.user()?.clone();
    let wanted = req
        .body
        .device_keys
        .into_iter()
        .map(|(u, ds)| {
            (
                u.to_string(),
                ds.into_iter().map(|d| d.to_string()).collect(),
            )
        })
        .collect();
    let found = state.fed_rooms.query_keys(&user.user_id, wanted).await?;
    let mut resp = get_keys::v3::Response::new();
    resp.failures = found.failures;
    for (u, devices) in found.device_keys {
        let Some(u) = user_id(&u) else { continue };
        let mut out = BTreeMap::new();
        for (d, json) in devices {
            out.insert(OwnedDeviceId::from(d), raw(json)?);
        }
        resp.device_keys.insert(u, out);
    }
    for (source, target) in [
        (found.master_keys, &mut resp.master_keys),
        (found.self_signing_keys, &mut resp.self_signing_keys),
        (found.user_signing_keys, &mut resp.user_signing_keys),
    ] {
        for (u, json) in source {
            if let Some(u) = user_id(&u) {
                target.insert(u, raw(json)?);
            }
        }
    }
    Ok(RumaResponse(resp))
}

async fn claim_route(
    State(state): State<AppState>,
    req: Ruma<claim_keys::v3::Request>,
) -> ApiResult<RumaResponse<claim_keys::v3::Response>> {
    req.user()?;
    let wanted = req
        .body
        .one_time_keys
        .into_iter()
        .map(|(u, ds)| {
            let ds = ds
                .into_iter()
                .map(|(d, alg)| (d.to_string(), alg.to_string()))
                .collect();
            (u.to_string(), ds)
        })
        .collect();
    let claimed = state.fed_rooms.claim_keys(wanted).await?;
    let mut one_time_keys = BTreeMap::new();
    for (u, devices) in claimed.one_time_keys {
        let Some(u) = user_id(&u) else { continue };
        let mut out = BTreeMap::new();
        for (d, keys) in devices {
            let mut ks = BTreeMap::new();
            for (id, json) in keys {
                if let Ok(id) = OwnedOneTimeKeyId::try_from(id.as_str()) {
                    ks.insert(id, raw(json)?);
                }
            }
            out.insert(OwnedDeviceId::from(d), ks);
        }
        one_time_keys.insert(u, out);
    }
    let mut resp = claim_keys::v3::Response::new(one_time_keys);
    resp.failures = claimed.failures;
    Ok(RumaResponse(resp))
}

async fn changes_route(
    State(state): State<AppState>,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<RumaResponse<get_key_changes::v3::Response>> {
    let user = req.user()?.clone();
    let from = parse_token(&req.body.from)?;
    let to = parse_token(&req.body.to)?;
    let (changed, left) = state.keys.changes(&user.user_id, from, to).await?;
    let ids = |v: Vec<String>| v.iter().filter_map(|u| user_id(u)).collect();
    Ok(RumaResponse(get_key_changes::v3::Response::new(
        ids(changed),
        ids(left),
    )))
}

/// Cross-signing keys; replacing existing keys needs the user's password.
async fn device_signing_route(
    State(state): State<AppState>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<RumaResponse<upload_signing_keys::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let key = |k: Option<Raw<_>>| k.map(|k: Raw<_>| value_of(k.json())).transpose();
    let upload = CrossSigningUpload {
        master_key: key(body.master_key)?,
        self_signing_key: key(body.self_signing_key)?,
        user_signing_key: key(body.user_signing_key)?,
    };
    if state
        .keys
        .cross_signing_needs_auth(&user.user_id, &upload)
        .await?
    {
        let auth = crate::devices::auth_json(body.auth.as_ref())?;
        require_password_uia(&state, &user, auth).await?;
    }
    state
        .keys
        .upload_cross_signing(&user.user_id, upload)
        .await?;
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

async fn signatures_route(
    State(state): State<AppState>,
    req: Ruma<upload_signatures::v3::Request>,
) -> ApiResult<Json<Value>> {
    let user = req.user()?.clone();
    let signed: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_value(serde_json::to_value(&req.body.signed_keys)?)?;
    let failures = state.keys.upload_signatures(&user.user_id, signed).await?;
    Ok(Json(json!({ "failures": failures })))
}
