//! Federation destinations: Synapse's `/_synapse/admin/v1/federation/destinations`.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde_json::Value;

use super::{q_int, Admin, AdminRoutes, QueryMap};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v1/federation/destinations", list)
        .get(
            "/_synapse/admin/v1/federation/destinations/{destination}",
            show,
        )
        .post(
            "/_synapse/admin/v1/federation/destinations/{destination}/reset_connection",
            reset,
        )
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .admin
            .list_destinations(
                q.get("from").map(String::as_str),
                q_int(&q, "limit")?,
                q.get("order_by").map(String::as_str),
                q.get("dir").map(String::as_str),
                q.get("destination").map(String::as_str),
            )
            .await?,
    ))
}

async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(destination): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.destination(&destination).await?))
}

async fn reset(
    State(state): State<AppState>,
    _admin: Admin,
    Path(destination): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.reset_destination(&destination).await?))
}
