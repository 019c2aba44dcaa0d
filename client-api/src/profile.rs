//! Profiles: display name and avatar URL, propagated to the user's member events.

use axum::{
    extract::{Path, State},
    routing::get,
    Json, Router,
};
use engine::Error;
use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(
                &format!("/_matrix/client/{v}/profile/{{user_id}}"),
                get(get_profile),
            )
            .route(
                &format!("/_matrix/client/{v}/profile/{{user_id}}/{{field}}"),
                get(get_field).put(set_field),
            );
    }
    r
}

fn parse_user(user_id: &str) -> ApiResult<&UserId> {
    <&UserId>::try_from(user_id).map_err(|_| Error::invalid_param("Invalid user id.").into())
}

async fn get_profile(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = parse_user(&user_id)?;
    if !state.core.is_local(user.server_name()) {
        return Ok(Json(state.fed_rooms.remote_profile(user, None).await?));
    }
    Ok(Json(state.accounts.profile(user).await?))
}

async fn get_field(
    State(state): State<AppState>,
    Path((user_id, field)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = parse_user(&user_id)?;
    let profile = if state.core.is_local(user.server_name()) {
        state.accounts.profile(user).await?
    } else {
        state.fed_rooms.remote_profile(user, Some(&field)).await?
    };
    match profile.get(&field) {
        Some(v) => Ok(Json(json!({ field: v }))),
        None => Err(Error::not_found("Profile field not set.").into()),
    }
}

async fn set_field(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, field)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let target = parse_user(&user_id)?;
    if target != user.user_id {
        return Err(Error::forbidden("You may only change your own profile.").into());
    }
    let value = match &body[&field] {
        Value::String(s) => Some(s.as_str()),
        Value::Null => None,
        _ => return Err(Error::bad_json(format!("`{field}` must be a string")).into()),
    };
    if value.is_some_and(|v| v.len() > 256) {
        return Err(Error::too_large(format!("`{field}` is too long")).into());
    }
    match field.as_str() {
        "displayname" => state.accounts.set_displayname(&user.user_id, value).await?,
        "avatar_url" => state.accounts.set_avatar_url(&user.user_id, value).await?,
        _ => return Err(Error::new(400, "M_UNRECOGNIZED", "Unsupported profile field.").into()),
    }
    Ok(Json(json!({})))
}
