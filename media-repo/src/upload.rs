//! Uploads: `POST /_matrix/media/v3/upload`, and the asynchronous pair
//! `POST /_matrix/media/v1/create` + `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
//!
//! A body is streamed to a staging file while it is hashed and counted, so a
//! server holds one chunk per upload in memory whatever the file's size; an
//! upload over the limit is cut off at the limit with `M_TOO_LARGE`.

use std::path::Path;

use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderMap},
    Json,
};
use client_api::{error::ApiError, extract::Auth, AppState};
use engine::{
    media::staging::{self, StageError, Staged},
    ratelimit::Action,
    storage::{MediaContent, ThumbnailRecord},
    Error,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    image as pipeline,
    sniff::{self, SNIFF_LEN},
};

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    filename: Option<String>,
}

/// Streams `body` into a staging file (engine `media::staging`).
async fn stage(dir: &Path, body: Body, max: u64) -> Result<Staged, Error> {
    staging::stage(dir, body.into_data_stream(), max, SNIFF_LEN)
        .await
        .map_err(|e| match e {
            StageError::TooLarge => too_large(max),
            StageError::Read(e) => Error::bad_json(format!("Reading the upload failed: {e}")),
            StageError::Storage(e) => e,
        })
}

fn storage_error(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "media upload: {what}");
    Error::unknown("Storing the upload failed.")
}

fn too_large(max: u64) -> Error {
    Error::too_large(format!("Uploads are limited to {max} bytes."))
}

/// Rate limit, declared size and quota: everything that can refuse an upload
/// before its body is read.
async fn admit(state: &AppState, user: &str, headers: &HeaderMap) -> Result<(), Error> {
    state.ratelimit.check(Action::MediaUpload, user).await?;
    let max = state.media.config().max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    state.media.check_quota(user, declared.unwrap_or(0)).await
}

/// The stored form of an upload: its blob written, thumbnails made.
struct Stored {
    content_type: String,
    content: MediaContent,
    thumbnails: Vec<ThumbnailRecord>,
}

/// Stages an upload's bytes and checks them against the quota.
async fn stage_body(state: &AppState, user: &str, body: Body) -> Result<Staged, Error> {
    let media = &state.media;
    let staged = stage(media.staging_dir(), body, media.config().max_upload_bytes).await?;
    media.check_quota(user, staged.len).await?;
    Ok(staged)
}

/// Processes and stores a staged upload. The caller holds the media
/// service's `store_guard` until the rows naming the blobs are written.
async fn store_body(state: &AppState, staged: Staged) -> Result<Stored, Error> {
    let media = &state.media;
    let cfg = media.config().clone();
    let mut content_type = sniff::sniff(&staged.head).to_owned();
    let mut content = MediaContent {
        size: staged.len as i64,
        sha256: staged.sha256.clone(),
        width: None,
        height: None,
        animated: false,
    };
    let mut thumbnails = Vec::new();
    let Some(kind) = sniff::image_kind(&staged.head) else {
        media
            .blobs()
            .put_file(&staged.sha256, &staged.path, staged.len)
            .await?;
        return Ok(Stored {
            content_type,
            content,
            thumbnails,
        });
    };
    // One image in memory per core at most (bounded by the upload limit), and
    // reading and decoding run on the blocking pool, off the async workers.
    let turn = media.image_job().await?;
    let (path, task_cfg) = (staged.path.clone(), cfg.clone());
    let processed = tokio::task::spawn_blocking(move || {
        let data = std::fs::read(&path).map_err(|e| storage_error("read staging file", e))?;
        Ok::<_, Error>(pipeline::process(&data, kind, &task_cfg)?)
    })
    .await
    .map_err(|e| storage_error("image task", e))??;
    drop(turn);
    for (size, thumb) in processed.thumbnails {
        let sha256 = hex::encode(Sha256::digest(&thumb.bytes));
        let len = thumb.bytes.len() as i64;
        media.blobs().put_bytes(&sha256, thumb.bytes.into()).await?;
        thumbnails.push(ThumbnailRecord {
            width: i64::from(size.width),
            height: i64::from(size.height),
            method: size.method.as_str().to_owned(),
            animated: false,
            content_type: thumb.content_type.to_owned(),
            size: len,
            sha256,
        });
    }
    content.width = Some(i64::from(processed.width));
    content.height = Some(i64::from(processed.height));
    content.animated = processed.animated;
    match processed.replaced {
        Some(replaced) => {
            content.sha256 = hex::encode(Sha256::digest(&replaced.bytes));
            content.size = replaced.bytes.len() as i64;
            content_type = replaced.content_type.to_owned();
            media
                .blobs()
                .put_bytes(&content.sha256, replaced.bytes.into())
                .await?;
        }
        None => {
            media
                .blobs()
                .put_file(&staged.sha256, &staged.path, staged.len)
                .await?
        }
    }
    Ok(Stored {
        content_type,
        content,
        thumbnails,
    })
}

async fn record_thumbnails(state: &AppState, media_id: &str, stored: &Stored) -> Result<(), Error> {
    let origin = state.media.server_name().as_str();
    for t in &stored.thumbnails {
        state.media.put_thumbnail(origin, media_id, t).await?;
    }
    Ok(())
}

fn upload_name(q: UploadQuery) -> Option<String> {
    q.filename.filter(|n| !n.is_empty())
}

/// `POST /_matrix/media/v3/upload`
pub(crate) async fn upload(
    State(state): State<AppState>,
    Auth(user): Auth,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| Error::invalid_param(e.to_string()))?;
    let user = user.user_id.as_str();
    admit(&state, user, &headers).await?;
    let staged = stage_body(&state, user, body).await?;
    // Blobs stored and rows written under one guard: see `store_guard`.
    let _storing = state.media.store_guard().await;
    let stored = store_body(&state, staged).await?;
    let name = upload_name(q);
    let media_id = state
        .media
        .insert_uploaded(
            user,
            &stored.content_type,
            name.as_deref(),
            stored.content.clone(),
        )
        .await?;
    record_thumbnails(&state, &media_id, &stored).await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{media_id}", state.media.server_name()),
    })))
}

/// `POST /_matrix/media/v1/create`
pub(crate) async fn create(
    State(state): State<AppState>,
    Auth(user): Auth,
) -> Result<Json<Value>, ApiError> {
    let user = user.user_id.as_str();
    state.ratelimit.check(Action::MediaUpload, user).await?;
    let (media_id, expires) = state.media.create_pending(user).await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{media_id}", state.media.server_name()),
        "unused_expires_at": expires,
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub(crate) async fn upload_to(
    State(state): State<AppState>,
    Auth(user): Auth,
    UrlPath((server_name, media_id)): UrlPath<(String, String)>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| Error::invalid_param(e.to_string()))?;
    if server_name != state.media.server_name().as_str() {
        return Err(Error::not_found("Unknown media id.").into());
    }
    let user = user.user_id.as_str();
    state.media.check_pending(user, &media_id).await?;
    admit(&state, user, &headers).await?;
    let staged = stage_body(&state, user, body).await?;
    let _storing = state.media.store_guard().await;
    let stored = store_body(&state, staged).await?;
    let name = upload_name(q);
    state
        .media
        .fill_pending(
            &media_id,
            &stored.content_type,
            name.as_deref(),
            &stored.content,
        )
        .await?;
    record_thumbnails(&state, &media_id, &stored).await?;
    Ok(Json(json!({})))
}
