//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space we hold and its
//! children, for another server walking the space for its users.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use engine::services::Services;
use ruma::OwnedRoomId;
use serde_json::Value;

use crate::{auth::Origin, error::FedResult};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/hierarchy/{room_id}", get(hierarchy))
}

async fn hierarchy(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    Query(q): Query<HashMap<String, String>>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    let suggested_only = q.get("suggested_only").is_some_and(|v| v == "true");
    Ok(Json(
        state
            .fed_rooms
            .serve_hierarchy(&origin, &room_id, suggested_only)
            .await?,
    ))
}
