//! The media repository (`/_matrix/media/*`, `/_matrix/client/v1/media/*`):
//! uploads, image cleaning and thumbnails, authenticated download, on the
//! local filesystem or an S3-compatible bucket (`engine::media`).
//!
//! Modules follow the spec's content repository section: uploads (`upload`),
//! downloads (`download`), thumbnails (`thumbnail`); `image` is the
//! processing pipeline, `sniff` the content-type detection, `headers` what
//! every served file carries; `federation` serves our uploads to other servers
//! (`/_matrix/federation/v1/media/*`). Operators' guide: `docs/media.md`.

mod download;
mod federation;
mod headers;
pub mod image;
pub mod sniff;
mod thumbnail;
mod upload;

use axum::{
    extract::State,
    routing::{get, post, put},
    Json, Router,
};
use client_api::{error::ApiError, extract::Auth, AppState};
use serde_json::{json, Value};

/// Every media endpoint. The legacy unauthenticated ones are always routed and
/// answer 404 `M_NOT_FOUND` unless `media.legacy_unauthenticated` is on.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/media/v3/upload", post(upload::upload))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload::upload_to),
        )
        .route("/_matrix/media/v1/create", post(upload::create))
        .route("/_matrix/client/v1/media/config", get(config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download::download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download::download_named),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail::thumbnail),
        )
        .route("/_matrix/media/v3/config", get(legacy_config))
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(download::legacy_download),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(download::legacy_download_named),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(thumbnail::legacy_thumbnail),
        )
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(federation::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(federation::thumbnail),
        )
}

fn config_body(state: &AppState) -> Json<Value> {
    Json(json!({ "m.upload.size": state.media.config().max_upload_bytes }))
}

/// `GET /_matrix/client/v1/media/config`
async fn config(State(state): State<AppState>, _auth: Auth) -> Json<Value> {
    config_body(&state)
}

/// `GET /_matrix/media/v3/config` (legacy)
async fn legacy_config(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    download::legacy_allowed(&state)?;
    Ok(config_body(&state))
}
