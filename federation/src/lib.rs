//! The Server-Server API surface. For now: the key server (`/_matrix/key/v2/server`)
//! that lets other servers verify our signed events, and `/federation/v1/version`.
//! Transactions, joins and backfill arrive with the federation issue.

use std::collections::BTreeMap;

use axum::{extract::State, routing::get, Json, Router};
use engine::services::Services;
use serde_json::{json, Value};
use std::sync::Arc;

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/federation/v1/version", get(version))
}

/// Our verify keys, signed by themselves, valid for a week.
async fn server_keys(State(state): State<AppState>) -> Json<Value> {
    let core = &state.core;
    let valid_until = engine::util::now_ms() + 7 * 24 * 3600 * 1000;
    let body = json!({
        "server_name": core.server_name,
        "valid_until_ts": valid_until,
        "verify_keys": { core.key.key_id.clone(): {"key": core.key.public_key_b64} },
        "old_verify_keys": {},
    });
    let mut object: ruma::CanonicalJsonObject =
        match ruma::canonical_json::to_canonical_value(body.clone()) {
            Ok(ruma::CanonicalJsonValue::Object(o)) => o,
            _ => BTreeMap::new(),
        };
    if ruma::signatures::sign_json(core.server_name.as_str(), &core.key.pair, &mut object).is_err()
    {
        return Json(body);
    }
    Json(serde_json::to_value(object).unwrap_or(body))
}

async fn version() -> Json<Value> {
    Json(json!({"server": {"name": "homeserver", "version": env!("CARGO_PKG_VERSION")}}))
}
