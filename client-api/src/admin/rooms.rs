//! Room admin: Synapse's `/_synapse/admin/v1/rooms...` (list, details,
//! members, state, block), room deletion (`DELETE /v1` and `/v2/rooms/{id}`
//! with its status endpoints) and history purges.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    Json,
};
use engine::admin::{DeleteRoomRequest, PurgeHistoryRequest, RoomListQuery};
use serde::Deserialize;
use serde_json::Value;

use super::{body, q_int, Admin, AdminRoutes, QueryMap};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v1/rooms", list)
        .get("/_synapse/admin/v1/rooms/{room_id}", show)
        .delete("/_synapse/admin/v1/rooms/{room_id}", delete_v1)
        .get("/_synapse/admin/v1/rooms/{room_id}/members", members)
        .get("/_synapse/admin/v1/rooms/{room_id}/state", state_events)
        .get("/_synapse/admin/v1/rooms/{room_id}/block", block_status)
        .put("/_synapse/admin/v1/rooms/{room_id}/block", set_block)
        .delete("/_synapse/admin/v2/rooms/{room_id}", delete_v2)
        .get(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            room_delete_status,
        )
        .get(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            delete_status,
        )
        .post("/_synapse/admin/v1/purge_history/{room_id}", purge)
        .post(
            "/_synapse/admin/v1/purge_history/{room_id}/{event_id}",
            purge_up_to_event,
        )
        .get(
            "/_synapse/admin/v1/purge_history_status/{purge_id}",
            purge_status,
        )
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueryMap>,
) -> ApiResult<Json<Value>> {
    let query = RoomListQuery {
        from: q.get("from").cloned(),
        limit: q_int(&q, "limit")?,
        order_by: q.get("order_by").cloned(),
        dir: q.get("dir").cloned(),
        search_term: q.get("search_term").cloned(),
    };
    Ok(Json(state.admin.list_rooms(query).await?))
}

async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.room_details(&room_id).await?))
}

async fn members(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.room_members(&room_id).await?))
}

async fn state_events(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.room_state(&room_id).await?))
}

async fn block_status(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.room_block_status(&room_id).await?))
}

#[derive(Deserialize)]
struct BlockBody {
    block: bool,
}

async fn set_block(
    State(state): State<AppState>,
    Admin(me): Admin,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: BlockBody = body(&bytes)?;
    Ok(Json(
        state
            .admin
            .set_room_block(&me.user_id, &room_id, b.block)
            .await?,
    ))
}

#[derive(Deserialize)]
struct DeleteBody {
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
    #[serde(default)]
    block: bool,
    #[serde(default = "yes")]
    purge: bool,
    #[serde(default)]
    force_purge: bool,
}

fn yes() -> bool {
    true
}

fn delete_request(me: &Admin, bytes: &Bytes) -> ApiResult<DeleteRoomRequest> {
    let b: DeleteBody = body(bytes)?;
    Ok(DeleteRoomRequest {
        requested_by: me.0.user_id.to_string(),
        new_room_user_id: b.new_room_user_id,
        room_name: b.room_name,
        message: b.message,
        block: b.block,
        purge: b.purge,
        force_purge: b.force_purge,
    })
}

/// Synchronous: answers once every member is out (and the room purged).
async fn delete_v1(
    State(state): State<AppState>,
    me: Admin,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let req = delete_request(&me, &bytes)?;
    Ok(Json(state.admin.delete_room(&room_id, req, true).await?))
}

/// Asynchronous: answers `{delete_id}`; progress at the status endpoints.
async fn delete_v2(
    State(state): State<AppState>,
    me: Admin,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let req = delete_request(&me, &bytes)?;
    Ok(Json(state.admin.delete_room(&room_id, req, false).await?))
}

async fn room_delete_status(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.delete_status_for_room(&room_id).await?))
}

async fn delete_status(
    State(state): State<AppState>,
    _admin: Admin,
    Path(delete_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.delete_status(&delete_id).await?))
}

#[derive(Deserialize)]
struct PurgeBody {
    #[serde(default)]
    delete_local_events: bool,
    purge_up_to_event_id: Option<String>,
    purge_up_to_ts: Option<i64>,
}

async fn purge(
    State(state): State<AppState>,
    _admin: Admin,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: PurgeBody = body(&bytes)?;
    let req = PurgeHistoryRequest {
        event_id: b.purge_up_to_event_id,
        purge_up_to_ts: b.purge_up_to_ts,
        delete_local_events: b.delete_local_events,
    };
    Ok(Json(state.admin.purge_history(&room_id, req).await?))
}

async fn purge_up_to_event(
    State(state): State<AppState>,
    _admin: Admin,
    Path((room_id, event_id)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: PurgeBody = body(&bytes)?;
    let req = PurgeHistoryRequest {
        event_id: Some(event_id),
        purge_up_to_ts: b.purge_up_to_ts,
        delete_local_events: b.delete_local_events,
    };
    Ok(Json(state.admin.purge_history(&room_id, req).await?))
}

async fn purge_status(
    State(state): State<AppState>,
    _admin: Admin,
    Path(purge_id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.purge_status(&purge_id).await?))
}
