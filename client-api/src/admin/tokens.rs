//! Registration tokens: Synapse's `/_synapse/admin/v1/registration_tokens`.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    Json,
};
use engine::{admin::NewRegistrationToken, Error};
use serde_json::Value;

use super::{body, q_bool, Admin, AdminRoutes, QueryMap};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v1/registration_tokens", list)
        .post("/_synapse/admin/v1/registration_tokens/new", create)
        .get("/_synapse/admin/v1/registration_tokens/{token}", show)
        .put("/_synapse/admin/v1/registration_tokens/{token}", update)
        .delete("/_synapse/admin/v1/registration_tokens/{token}", delete)
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let valid = q_bool(&q, "valid")?;
    Ok(Json(state.admin.list_registration_tokens(valid).await?))
}

/// An integer-or-null field: absent → `None`, null → `Some(None)`.
fn patch_int(b: &Value, key: &str) -> ApiResult<Option<Option<i64>>> {
    match b.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_i64() {
            Some(n) => Ok(Some(Some(n))),
            None => Err(Error::invalid_param(format!("{key} must be an integer or null")).into()),
        },
    }
}

async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: Value = body(&bytes)?;
    let token = match b.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Error::invalid_param("token must be a string").into()),
    };
    let req = NewRegistrationToken {
        token,
        uses_allowed: patch_int(&b, "uses_allowed")?.flatten(),
        expiry_time: patch_int(&b, "expiry_time")?.flatten(),
        length: patch_int(&b, "length")?.flatten(),
    };
    Ok(Json(state.admin.create_registration_token(req).await?))
}

async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.registration_token(&token).await?))
}

async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(token): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: Value = body(&bytes)?;
    Ok(Json(
        state
            .admin
            .update_registration_token(
                &token,
                patch_int(&b, "uses_allowed")?,
                patch_int(&b, "expiry_time")?,
            )
            .await?,
    ))
}

async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.delete_registration_token(&token).await?))
}
