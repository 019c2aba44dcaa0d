//! Media admin: Synapse's `/_synapse/admin/v1/users/{userId}/media` and
//! `/_synapse/admin/v1/media/{un,}quarantine/{serverName}/{mediaId}`.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde_json::Value;

use super::{q_int, Admin, AdminRoutes, QueryMap};
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
