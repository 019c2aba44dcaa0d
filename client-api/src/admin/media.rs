//! Media admin: Synapse's `/_synapse/admin/v1/users/{userId}/media`,
//! `/_synapse/admin/v1/media/{un,}quarantine/{serverName}/{mediaId}`, and
//! deletion: one local item, local items by last access and size, and the
//! remote media cache (`purge_media_cache`). The media service does the
//! deleting (`engine::media::MediaService::delete*`); this parses and renders.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use engine::{media::Deleted, Error};
use ruma::ServerName;
use serde_json::{json, Value};

use super::{q_bool, q_int, Admin, AdminRoutes, QueryMap};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v1/users/{user_id}/media", user_media)
        .post(
            "/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}",
            quarantine,
        )
        .post(
            "/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}",
            unquarantine,
        )
        .delete(
            "/_synapse/admin/v1/media/{server_name}/{media_id}",
            delete_one,
        )
        .post("/_synapse/admin/v1/media/delete", delete_old)
        .post(
            "/_synapse/admin/v1/media/{server_name}/delete",
            delete_old_on,
        )
        .post("/_synapse/admin/v1/purge_media_cache", purge_cache)
}

async fn user_media(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let from = q.get("from").map(String::as_str);
    Ok(Json(
        state
            .admin
            .user_media(&user_id, from, q_int(&q, "limit")?)
            .await?,
    ))
}

async fn quarantine(
    State(state): State<AppState>,
    Admin(me): Admin,
    Path((server_name, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .admin
            .set_media_quarantine(me.user_id.as_str(), &server_name, &media_id, true)
            .await?,
    ))
}

async fn unquarantine(
    State(state): State<AppState>,
    Admin(me): Admin,
    Path((server_name, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .admin
            .set_media_quarantine(me.user_id.as_str(), &server_name, &media_id, false)
            .await?,
    ))
}

/// Refuses anything but this server's name: only our own uploads can be
/// deleted (cached remote media goes through `purge_media_cache`).
fn local_server(state: &AppState, server_name: &str) -> ApiResult<()> {
    let name = ServerName::parse(server_name)
        .map_err(|_| Error::invalid_param(format!("Invalid server name: {server_name}")))?;
    if name != state.core.server_name {
        return Err(Error::invalid_param("Can only delete local media.").into());
    }
    Ok(())
}

/// A required `before_ts` in milliseconds. A value that reads as a date in
/// 1970 is almost certainly seconds, and would delete nothing: refused.
fn before_ts(q: &QueryMap) -> ApiResult<i64> {
    let ts = q_int(q, "before_ts")?
        .ok_or_else(|| Error::missing_param("Missing integer query parameter before_ts."))?;
    if ts < 0 {
        return Err(Error::invalid_param("before_ts must not be negative.").into());
    }
    if ts < 30_000_000_000 {
        return Err(Error::invalid_param(
            "before_ts is in 1970: it must be a timestamp in milliseconds.",
        )
        .into());
    }
    Ok(ts)
}

fn deleted_media(d: Deleted) -> Json<Value> {
    Json(json!({"deleted_media": d.media_ids, "total": d.media_ids.len()}))
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`: one local item,
/// its thumbnails and (if nothing else uses it) its blob. Already deleted:
/// `total: 0`.
async fn delete_one(
    State(state): State<AppState>,
    _admin: Admin,
    Path((server_name, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    local_server(&state, &server_name)?;
    let deleted = state
        .media
        .delete(&state.core.server_name, &media_id)
        .await?;
    Ok(deleted_media(deleted))
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=`
async fn delete_old(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let before = before_ts(&q)?;
    let size_gt = q_int(&q, "size_gt")?.unwrap_or(0);
    if size_gt < 0 {
        return Err(Error::invalid_param("size_gt must not be negative.").into());
    }
    let keep_profiles = q_bool(&q, "keep_profiles")?.unwrap_or(true);
    let deleted = state
        .media
        .delete_local_before(before, size_gt, keep_profiles)
        .await?;
    Ok(deleted_media(deleted))
}

/// `POST /_synapse/admin/v1/media/{serverName}/delete?...` (the older path).
async fn delete_old_on(
    State(state): State<AppState>,
    admin: Admin,
    Path(server_name): Path<String>,
    q: Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    local_server(&state, &server_name)?;
    delete_old(State(state), admin, q).await
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=`: cached copies of
/// remote media not accessed since then.
async fn purge_cache(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let before = before_ts(&q)?;
    let deleted = state.media.purge_remote_cache(before).await?;
    Ok(Json(json!({"deleted": deleted.media_ids.len()})))
}
