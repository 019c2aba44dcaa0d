//! `PUT /_matrix/federation/v1/send/{txnId}`: the transactions other servers
//! push to us, carrying PDUs and EDUs.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::put,
    Json, Router,
};
use engine::services::Services;
use serde_json::Value;

use crate::{auth::FedRequest, error::FedResult};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/_matrix/federation/v1/send/{txn_id}",
        put(send_transaction),
    )
}

async fn send_transaction(
    State(state): State<AppState>,
    Path(txn_id): Path<String>,
    req: FedRequest,
) -> FedResult<Json<Value>> {
    Ok(Json(
        state
            .fed_rooms
            .receive_transaction(&req.origin, &txn_id, &req.body)
            .await?,
    ))
}
