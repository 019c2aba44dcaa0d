//! The first piece of the admin API, at Synapse-compatible paths so existing
//! tools work: registration tokens. Callers must be server admins.

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use engine::{util::random_string, Error};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        "/_synapse/admin/v1/registration_tokens/new",
        post(new_token),
    )
    .route(
        "/_synapse/admin/v1/registration_tokens/{token}",
        get(get_token),
    )
}

fn require_admin(user: &engine::accounts::Requester) -> ApiResult<()> {
    if !user.is_admin {
        return Err(Error::forbidden("You are not a server admin").into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewToken {
    token: Option<String>,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
    length: Option<usize>,
}

async fn new_token(
    State(state): State<AppState>,
    Auth(user): Auth,
    JsonBody(body): JsonBody<NewToken>,
) -> ApiResult<Json<Value>> {
    require_admin(&user)?;
    let token = match body.token {
        Some(t)
            if !t.is_empty()
                && t.len() <= 64
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c)) =>
        {
            t
        }
        Some(_) => {
            return Err(
                Error::invalid_param("token must be 1-64 characters of [A-Za-z0-9._~-]").into(),
            )
        }
        None => random_string(body.length.unwrap_or(16).clamp(1, 64)),
    };
    if body.uses_allowed.is_some_and(|u| u < 0) {
        return Err(Error::invalid_param("uses_allowed must be a non-negative integer").into());
    }
    if !state
        .core
        .storage
        .accounts
        .create_registration_token(&token, body.uses_allowed, body.expiry_time)
        .await?
    {
        return Err(Error::invalid_param("Token already exists").into());
    }
    tracing::info!(admin = %user.user_id, "created a registration token");
    Ok(Json(
        json!({"token": token, "uses_allowed": body.uses_allowed, "pending": 0, "completed": 0, "expiry_time": body.expiry_time}),
    ))
}

async fn get_token(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    require_admin(&user)?;
    let valid = state
        .core
        .storage
        .accounts
        .registration_token_valid(&token, engine::util::now_ms())
        .await?;
    Ok(Json(json!({"token": token, "valid": valid})))
}
