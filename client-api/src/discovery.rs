//! Server discovery: `/versions`, `/capabilities`, `.well-known/matrix/client`.

use axum::{extract::State, routing::get, Json, Router};
use serde_json::{json, Value};

use crate::extract::{AppState, Auth};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_matrix/client/versions", get(versions))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
        .route("/.well-known/matrix/client", get(well_known))
}

/// Only versions whose required endpoints are implemented are advertised.
async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6"],
        "unstable_features": {crate::stream::FEATURE: true, "org.matrix.msc4089": true},
    }))
}

async fn capabilities(State(_state): State<AppState>, Auth(_): Auth) -> Json<Value> {
    let available: serde_json::Map<String, Value> = engine::rooms::SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| ((*v).to_owned(), json!("stable")))
        .collect();
    Json(json!({
        "capabilities": {
            "m.room_versions": {"default": engine::rooms::DEFAULT_ROOM_VERSION, "available": available},
            "m.change_password": {"enabled": false},
            "m.set_displayname": {"enabled": true},
            "m.set_avatar_url": {"enabled": true},
            "m.3pid_changes": {"enabled": false},
        }
    }))
}

async fn well_known(State(state): State<AppState>) -> Json<Value> {
    let base = format!("http://{}", state.core.config.listeners.client);
    Json(json!({"m.homeserver": {"base_url": base}}))
}
