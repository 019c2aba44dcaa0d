//! The Server-Server API surface.
//!
//! - [`auth`]: the [`auth::FedRequest`] extractor that authenticates X-Matrix
//!   signed requests.
//! - [`keys`]: the key server and notary endpoints.
//! - [`error`]: Matrix error responses.

pub mod auth;
pub mod error;
pub mod events;
pub mod hierarchy;
pub mod keys;
pub mod membership;
pub mod public_rooms;
pub mod query;
pub mod transactions;
pub mod user;

use axum::{routing::get, Json, Router};
use engine::services::Services;
use serde_json::{json, Value};
use std::sync::Arc;

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(keys::router())
        .merge(membership::router())
        .merge(public_rooms::router())
        .merge(transactions::router())
        .merge(events::router())
        .merge(hierarchy::router())
        .merge(query::router())
        .merge(user::router())
        .route("/_matrix/federation/v1/version", get(version))
}

async fn version() -> Json<Value> {
    Json(json!({"server": {"name": "homeserver", "version": env!("CARGO_PKG_VERSION")}}))
}
