//! `GET` and `POST /_matrix/federation/v1/publicRooms`: our public room
//! directory for other servers, paged and searchable like the client API's.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Query, State},
    routing::get,
    Json, Router,
};
use engine::services::Services;
use serde_json::Value;

use crate::{
    auth::{FedRequest, Origin},
    error::FedResult,
};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/_matrix/federation/v1/publicRooms",
        get(public_rooms_get).post(public_rooms_post),
    )
}

async fn public_rooms_get(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    Origin(_origin): Origin,
) -> FedResult<Json<Value>> {
    let limit = q.get("limit").and_then(|l| l.parse().ok());
    let since = q.get("since").map(String::as_str);
    Ok(Json(
        state.rooms.public_rooms_page(limit, since, None).await?,
    ))
}

async fn public_rooms_post(
    State(state): State<AppState>,
    req: FedRequest,
) -> FedResult<Json<Value>> {
    let body = &req.body;
    let limit = body["limit"].as_u64().map(|l| l as usize);
    Ok(Json(
        state
            .rooms
            .public_rooms_page(
                limit,
                body["since"].as_str(),
                body["filter"]["generic_search_term"].as_str(),
            )
            .await?,
    ))
}
