//! Account management: password change and deactivation (both behind password UIA).

use axum::{extract::State, routing::post, Json, Router};
use engine::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    devices::require_password_uia,
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(
                &format!("/_matrix/client/{v}/account/password"),
                post(change_password),
            )
            .route(
                &format!("/_matrix/client/{v}/account/deactivate"),
                post(deactivate),
            );
    }
    r
}

#[derive(Deserialize)]
struct PasswordBody {
    new_password: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<Value>,
}

fn yes() -> bool {
    true
}

async fn change_password(
    State(state): State<AppState>,
    Auth(user): Auth,
    JsonBody(body): JsonBody<PasswordBody>,
) -> ApiResult<Json<Value>> {
    require_password_uia(&state, &user, body.auth).await?;
    let new_password = body
        .new_password
        .ok_or_else(|| Error::missing_param("Missing new_password."))?;
    state
        .accounts
        .change_password(&user, &new_password, body.logout_devices)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeactivateBody {
    auth: Option<Value>,
}

async fn deactivate(
    State(state): State<AppState>,
    Auth(user): Auth,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    require_password_uia(&state, &user, body.auth).await?;
    let devices: Vec<String> = state
        .core
        .storage
        .accounts
        .list_devices(user.user_id.as_str())
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    state.accounts.deactivate(&user.user_id).await?;
    // Their devices' keys and to-device inboxes go with the account.
    state.keys.devices_removed(&user.user_id, &devices).await?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}
