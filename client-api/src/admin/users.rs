//! User admin: Synapse's `/_synapse/admin/v{1,2}/users...`, `deactivate`,
//! `reset_password` and `whois`.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use engine::{
    admin::{UpsertUser, UserListParams},
    Error,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, q_bool, q_int, Admin, AdminRoutes, QueryMap};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v2/users", list)
        .get("/_synapse/admin/v2/users/{user_id}", show)
        .put("/_synapse/admin/v2/users/{user_id}", upsert)
        .post("/_synapse/admin/v1/deactivate/{user_id}", deactivate)
        .post(
            "/_synapse/admin/v1/reset_password/{user_id}",
            reset_password,
        )
        .get("/_synapse/admin/v1/users/{user_id}/admin", get_admin)
        .put("/_synapse/admin/v1/users/{user_id}/admin", set_admin)
        .get(
            "/_synapse/admin/v1/users/{user_id}/joined_rooms",
            joined_rooms,
        )
        .get("/_synapse/admin/v2/users/{user_id}/devices", devices)
        .post(
            "/_synapse/admin/v2/users/{user_id}/delete_devices",
            delete_devices,
        )
        .get(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            device,
        )
        .put(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            rename_device,
        )
        .delete(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            delete_device,
        )
        .get("/_synapse/admin/v1/whois/{user_id}", whois)
        .post("/_synapse/admin/v1/users/{user_id}/shadow_ban", shadow_ban)
        .delete(
            "/_synapse/admin/v1/users/{user_id}/shadow_ban",
            unshadow_ban,
        )
        .get(
            "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            get_ratelimit,
        )
        .post(
            "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            set_ratelimit,
        )
        .delete(
            "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            delete_ratelimit,
        )
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let params = UserListParams {
        from: q.get("from").cloned(),
        limit: q_int(&q, "limit")?,
        user_id: q.get("user_id").cloned(),
        name: q.get("name").cloned(),
        deactivated: q_bool(&q, "deactivated")?,
        admins: q_bool(&q, "admins")?,
        order_by: q.get("order_by").cloned(),
        dir: q.get("dir").cloned(),
    };
    Ok(Json(state.admin.list_users(params).await?))
}

async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.user_details(&user_id).await?))
}

/// A string field that may be absent (keep), null (clear) or a string.
fn patch_str(body: &Value, key: &str) -> ApiResult<Option<Option<String>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(Error::bad_json(format!("{key} must be a string or null")).into()),
    }
}

fn opt_bool(body: &Value, key: &str) -> ApiResult<Option<bool>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::bad_json(format!("{key} must be a boolean")).into()),
    }
}

async fn upsert(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: Value = body(&bytes)?;
    if !b.is_object() {
        return Err(Error::bad_json("The body must be a JSON object.").into());
    }
    let password = match patch_str(&b, "password")? {
        Some(Some(p)) => Some(p),
        Some(None) | None => None,
    };
    let req = UpsertUser {
        password,
        logout_devices: opt_bool(&b, "logout_devices")?.unwrap_or(true),
        displayname: patch_str(&b, "displayname")?,
        avatar_url: patch_str(&b, "avatar_url")?,
        admin: opt_bool(&b, "admin")?,
        deactivated: opt_bool(&b, "deactivated")?,
    };
    let (created, details) = state.admin.upsert_user(&user_id, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(details)))
}

#[derive(Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: DeactivateBody = body(&bytes)?;
    state.admin.deactivate(&user_id, b.erase).await?;
    Ok(Json(json!({"id_server_unbind_result": "success"})))
}

#[derive(Deserialize)]
struct ResetPasswordBody {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn reset_password(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: ResetPasswordBody = body(&bytes)?;
    state
        .admin
        .reset_password(&user_id, &b.new_password, b.logout_devices)
        .await?;
    Ok(Json(json!({})))
}

async fn get_admin(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let details = state.admin.user_details(&user_id).await?;
    Ok(Json(json!({"admin": details["admin"]})))
}

#[derive(Deserialize)]
struct SetAdminBody {
    admin: bool,
}

async fn set_admin(
    State(state): State<AppState>,
    Admin(me): Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: SetAdminBody = body(&bytes)?;
    if !b.admin && me.user_id.as_str() == user_id {
        return Err(Error::invalid_param("You may not demote yourself.").into());
    }
    let req = UpsertUser {
        admin: Some(b.admin),
        ..Default::default()
    };
    // Only existing users: the upsert below would create one.
    state.admin.user_details(&user_id).await?;
    state.admin.upsert_user(&user_id, req).await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.joined_rooms(&user_id).await?))
}

async fn devices(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.devices(&user_id).await?))
}

async fn device(
    State(state): State<AppState>,
    _admin: Admin,
    Path((user_id, device_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.device(&user_id, &device_id).await?))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

async fn rename_device(
    State(state): State<AppState>,
    _admin: Admin,
    Path((user_id, device_id)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: RenameBody = body(&bytes)?;
    state
        .admin
        .rename_device(&user_id, &device_id, b.display_name.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn delete_device(
    State(state): State<AppState>,
    _admin: Admin,
    Path((user_id, device_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.admin.delete_devices(&user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevicesBody {
    devices: Vec<String>,
}

async fn delete_devices(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: DeleteDevicesBody = body(&bytes)?;
    state.admin.delete_devices(&user_id, &b.devices).await?;
    Ok(Json(json!({})))
}

async fn whois(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.whois(&user_id).await?))
}

async fn shadow_ban(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.admin.set_shadow_ban(&user_id, true).await?;
    Ok(Json(json!({})))
}

async fn unshadow_ban(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.admin.set_shadow_ban(&user_id, false).await?;
    Ok(Json(json!({})))
}

async fn get_ratelimit(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.ratelimit_override(&user_id).await?))
}

#[derive(Deserialize)]
struct RatelimitBody {
    #[serde(default)]
    messages_per_second: i64,
    #[serde(default)]
    burst_count: i64,
}

async fn set_ratelimit(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: RatelimitBody = body(&bytes)?;
    Ok(Json(
        state
            .admin
            .set_ratelimit_override(&user_id, Some((b.messages_per_second, b.burst_count)))
            .await?,
    ))
}

async fn delete_ratelimit(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.admin.set_ratelimit_override(&user_id, None).await?;
    Ok(Json(json!({})))
}
