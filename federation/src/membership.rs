//! Joining, knocking, leaving and inviting over federation:
//! `make_join`/`send_join`, `make_knock`/`send_knock`, `make_leave`/`send_leave`
//! and `invite` (v2). Version 1 of `send_join` and
//! `send_leave` answers in the old `[200, body]` array shape.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use engine::{federation::join_answer::RawJson, services::Services};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::Value;

use crate::{
    auth::{FedRequest, Origin},
    error::FedResult,
};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(make_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(send_join_v2),
        )
        .route(
            "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
            put(send_join_v1),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(send_leave_v2),
        )
        .route(
            "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
            put(send_leave_v1),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(invite_v2),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(make_knock),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(send_knock),
        )
}

/// A body that is already JSON (the `send_join` answer is spliced from
/// stored events rather than serialised again: see `join_answer.rs`).
fn json_response(body: RawJson) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.into_string(),
    )
        .into_response()
}

/// The `ver` parameters of a query string (repeated, so not serde's job).
fn versions(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "ver")
        .map(|(_, v)| v.to_owned())
        .collect()
}

async fn make_join(
    State(state): State<AppState>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    let mut vers = versions(query.as_deref());
    if vers.is_empty() {
        // No `ver` means the joining server only knows room version 1.
        vers.push("1".into());
    }
    Ok(Json(
        state
            .fed_rooms
            .make_membership(&origin, &room_id, &user_id, "join", &vers)
            .await?,
    ))
}

async fn make_knock(
    State(state): State<AppState>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    // Knocking exists from room version 7: a server naming none cannot knock.
    let vers = versions(query.as_deref());
    Ok(Json(
        state
            .fed_rooms
            .make_membership(&origin, &room_id, &user_id, "knock", &vers)
            .await?,
    ))
}

async fn send_knock(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Response> {
    Ok(json_response(
        send_membership(&state, &req, &room_id, &event_id, "knock").await?,
    ))
}

async fn make_leave(
    State(state): State<AppState>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(
        state
            .fed_rooms
            .make_membership(&origin, &room_id, &user_id, "leave", &[])
            .await?,
    ))
}

async fn send_membership(
    state: &AppState,
    req: &FedRequest,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
    membership: &str,
) -> FedResult<RawJson> {
    Ok(state
        .fed_rooms
        .send_membership(&req.origin, room_id, event_id, membership, &req.body)
        .await?)
}

async fn send_join_v2(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Response> {
    Ok(json_response(
        send_membership(&state, &req, &room_id, &event_id, "join").await?,
    ))
}

async fn send_join_v1(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Response> {
    let body = send_membership(&state, &req, &room_id, &event_id, "join").await?;
    Ok(json_response(body.v1_wrapped()))
}

async fn send_leave_v2(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Response> {
    Ok(json_response(
        send_membership(&state, &req, &room_id, &event_id, "leave").await?,
    ))
}

async fn send_leave_v1(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Response> {
    let body = send_membership(&state, &req, &room_id, &event_id, "leave").await?;
    Ok(json_response(body.v1_wrapped()))
}

async fn invite_v2(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    req: FedRequest,
) -> FedResult<Json<Value>> {
    Ok(Json(
        state
            .fed_rooms
            .receive_invite(&req.origin, &room_id, &event_id, &req.body)
            .await?,
    ))
}
