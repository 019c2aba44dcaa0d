//! End-to-end encryption across servers: our users' devices and keys
//! (`/user/devices`, `/user/keys/query`, `/user/keys/claim`).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use engine::services::Services;
use ruma::OwnedUserId;
use serde_json::Value;

use crate::{
    auth::{FedRequest, Origin},
    error::FedResult,
};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(devices),
        )
        .route("/_matrix/federation/v1/user/keys/query", post(keys_query))
        .route("/_matrix/federation/v1/user/keys/claim", post(keys_claim))
}

async fn devices(
    State(s): State<AppState>,
    Path(user_id): Path<OwnedUserId>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms.serve_user_devices(&origin, &user_id).await?,
    ))
}

async fn keys_query(State(s): State<AppState>, req: FedRequest) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms.serve_keys_query(&req.origin, &req.body).await?,
    ))
}

async fn keys_claim(State(s): State<AppState>, req: FedRequest) -> FedResult<Json<Value>> {
    Ok(Json(s.fed_rooms.serve_keys_claim(&req.body).await?))
}
