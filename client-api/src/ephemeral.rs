//! Typing notifications, receipts and presence.

use axum::{
    extract::{Path, State},
    routing::{get, post, put},
    Json, Router,
};
use engine::{accounts::Requester, typing::parse_timeout, Error};
use ruma::RoomId;
use serde::Deserialize;
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
            .route(
                &format!("/_matrix/client/{v}/rooms/{{room_id}}/typing/{{user_id}}"),
                put(typing),
            )
            .route(
                &format!(
                    "/_matrix/client/{v}/rooms/{{room_id}}/receipt/{{receipt_type}}/{{event_id}}"
                ),
                post(receipt),
            )
            .route(
                &format!("/_matrix/client/{v}/presence/{{user_id}}/status"),
                get(get_presence).put(put_presence),
            );
    }
    r
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

async fn typing(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    if user_id != user.user_id.as_str() {
        return Err(Error::forbidden("You may only set your own typing state.").into());
    }
    let timeout = parse_timeout(body.typing, body.timeout)?;
    state
        .typing
        .set_typing(room_id, user.user_id.as_str(), body.typing, timeout)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReceiptBody {
    thread_id: Option<String>,
}

async fn receipt(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    post_receipt(
        &state,
        &user,
        room_id,
        &receipt_type,
        &event_id,
        body.thread_id.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

/// Posts a receipt for a client (REST and the WebSocket stream alike).
pub(crate) async fn post_receipt(
    state: &AppState,
    user: &Requester,
    room_id: &RoomId,
    receipt_type: &str,
    event_id: &str,
    thread_id: Option<&str>,
) -> ApiResult<()> {
    if receipt_type == engine::receipts::FULLY_READ {
        state
            .rooms
            .require_joined(room_id, user.user_id.as_str())
            .await?;
        state
            .account_data
            .put(
                user.user_id.as_str(),
                Some(room_id.as_str()),
                "m.fully_read",
                &json!({"event_id": event_id}),
            )
            .await?;
        return Ok(());
    }
    state
        .receipts
        .post(
            room_id,
            user.user_id.as_str(),
            receipt_type,
            event_id,
            thread_id,
        )
        .await?;
    Ok(())
}

async fn get_presence(
    State(state): State<AppState>,
    Auth(_user): Auth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if <&ruma::UserId>::try_from(user_id.as_str()).is_err() {
        return Err(Error::invalid_param("Invalid user id.").into());
    }
    if state
        .core
        .storage
        .accounts
        .get_user(&user_id)
        .await?
        .is_none()
        && user_id.ends_with(&format!(":{}", state.core.server_name))
    {
        return Err(Error::not_found("Unknown user.").into());
    }
    Ok(Json(state.presence.get(&user_id).await))
}

#[derive(Deserialize)]
struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

async fn put_presence(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<PresenceBody>,
) -> ApiResult<Json<Value>> {
    if user_id != user.user_id.as_str() {
        return Err(Error::forbidden("You may only set your own presence.").into());
    }
    state
        .presence
        .set(user.user_id.as_str(), &body.presence, body.status_msg)
        .await?;
    Ok(Json(json!({})))
}
