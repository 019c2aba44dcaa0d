//! Account data (global and per room) and read markers.

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use engine::{accounts::Requester, Error};
use ruma::RoomId;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
    rooms::parse_room_id,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(&format!("/_matrix/client/{v}/user/{{user_id}}/account_data/{{event_type}}"), get(get_global).put(put_global))
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{event_type}}"),
                get(get_room).put(put_room),
            )
            .route(&format!("/_matrix/client/{v}/rooms/{{room_id}}/read_markers"), post(read_markers));
    }
    r
}

fn own(user_id: &str, requester: &str) -> ApiResult<()> {
    if user_id != requester {
        return Err(Error::forbidden("Cannot access other users' account data.").into());
    }
    Ok(())
}

/// Types the server manages itself and clients may not set directly.
fn check_settable(event_type: &str) -> ApiResult<()> {
    if event_type == "m.fully_read" || event_type == "m.push_rules" {
        return Err(Error::bad_json(format!("Cannot set {event_type} through this API.")).into());
    }
    Ok(())
}

async fn get_global(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, event_type)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    own(&user_id, user.user_id.as_str())?;
    let v = state
        .account_data
        .get(&user_id, None, &event_type)
        .await?
        .ok_or_else(|| Error::not_found("Account data not found."))?;
    Ok(Json(v))
}

async fn put_global(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, event_type)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    own(&user_id, user.user_id.as_str())?;
    check_settable(&event_type)?;
    if !body.is_object() {
        return Err(Error::bad_json("Content must be an object.").into());
    }
    state
        .account_data
        .put(&user_id, None, &event_type, &body)
        .await?;
    Ok(Json(json!({})))
}

async fn get_room(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, room_id, event_type)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    own(&user_id, user.user_id.as_str())?;
    let room_id = parse_room_id(&room_id)?;
    let v = state
        .account_data
        .get(&user_id, Some(room_id.as_str()), &event_type)
        .await?
        .ok_or_else(|| Error::not_found("Account data not found."))?;
    Ok(Json(v))
}

async fn put_room(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, room_id, event_type)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    own(&user_id, user.user_id.as_str())?;
    check_settable(&event_type)?;
    let room_id = parse_room_id(&room_id)?;
    if !body.is_object() {
        return Err(Error::bad_json("Content must be an object.").into());
    }
    state
        .account_data
        .put(&user_id, Some(room_id.as_str()), &event_type, &body)
        .await?;
    Ok(Json(json!({})))
}

/// `m.fully_read` is stored as room account data; `m.read` and `m.read.private`
/// are receipts.
async fn read_markers(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    set_read_markers(&state, &user, room_id, &body).await?;
    Ok(Json(json!({})))
}

/// Applies a read-markers body (REST and the WebSocket stream alike).
pub(crate) async fn set_read_markers(
    state: &AppState,
    user: &Requester,
    room_id: &RoomId,
    body: &Value,
) -> ApiResult<()> {
    state
        .rooms
        .require_joined(room_id, user.user_id.as_str())
        .await?;
    for receipt_type in [engine::receipts::READ, engine::receipts::READ_PRIVATE] {
        if let Some(event_id) = body.get(receipt_type) {
            let event_id = event_id
                .as_str()
                .ok_or_else(|| Error::bad_json(format!("{receipt_type} must be an event id")))?;
            state
                .receipts
                .post(room_id, user.user_id.as_str(), receipt_type, event_id, None)
                .await?;
        }
    }
    if let Some(event_id) = body.get("m.fully_read") {
        let event_id = event_id
            .as_str()
            .ok_or_else(|| Error::bad_json("m.fully_read must be an event id"))?;
        state
            .account_data
            .put(
                user.user_id.as_str(),
                Some(room_id.as_str()),
                "m.fully_read",
                &json!({"event_id": event_id}),
            )
            .await?;
    }
    Ok(())
}
