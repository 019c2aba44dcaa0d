//! Uploads: `POST /_matrix/media/v3/upload`, and the asynchronous pair
//! `POST /_matrix/media/v1/create` + `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
//!
//! A body is streamed to a staging file while it is hashed and counted, so a
//! server holds one 64 KiB chunk per upload in memory whatever the file's size;
//! an upload over the limit is cut off at the limit with `M_TOO_LARGE`.

use std::path::{Path, PathBuf};

use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderMap},
    Json,
};
use client_api::{error::ApiError, extract::Auth, AppState};
use engine::{
    media::MediaService,
    ratelimit::Action,
    storage::{MediaContent, ThumbnailRecord},
    Error,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    image as pipeline,
    sniff::{self, SNIFF_LEN},
};

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    filename: Option<String>,
}

/// A staging file removed on drop unless it was handed to the blob store.
struct Staged {
    path: PathBuf,
    len: u64,
    sha256: String,
    head: Vec<u8>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // The blob store moves or deletes the file; this catches failures.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Streams `body` into a staging file, hashing as it goes.
async fn stage(dir: &Path, body: Body, max: u64) -> Result<Staged, Error> {
    let path = dir.join(format!("upload-{}", MediaService::new_media_id()));
    let mut staged = Staged {
        path,
        len: 0,
        sha256: String::new(),
        head: Vec::with_capacity(SNIFF_LEN),
    };
    let mut file = tokio::fs::File::create(&staged.path)
        .await
        .map_err(|e| storage_error("create staging file", e))?;
    let mut hasher = Sha256::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::bad_json(format!("Reading the upload failed: {e}")))?;
        staged.len += chunk.len() as u64;
        if staged.len > max {
            return Err(too_large(max));
        }
        if staged.head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - staged.head.len()).min(chunk.len());
            staged.head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| storage_error("write staging file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| storage_error("flush staging file", e))?;
    staged.sha256 = hex::encode(hasher.finalize());
    Ok(staged)
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
    state.ratelimit.check(Action::MediaUpload, user)?;
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

/// Stages, checks, processes and stores an upload's bytes.
async fn store_body(state: &AppState, user: &str, body: Body) -> Result<Stored, Error> {
    let media = &state.media;
    let cfg = media.config().clone();
    let staged = stage(media.staging_dir(), body, cfg.max_upload_bytes).await?;
    media.check_quota(user, staged.len).await?;
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
    // Images are bounded by the upload limit; decoding runs off the workers.
    let data = tokio::fs::read(&staged.path)
        .await
        .map_err(|e| storage_error("read staging file", e))?;
    let task_cfg = cfg.clone();
    let (data, processed) = tokio::task::spawn_blocking(move || {
        let processed = pipeline::process(&data, kind, &task_cfg);
        (data, processed)
    })
    .await
    .map_err(|e| storage_error("image task", e))?;
    let processed = processed?;
    drop(data);
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
    let stored = store_body(&state, user, body).await?;
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
    state.ratelimit.check(Action::MediaUpload, user)?;
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
    let stored = store_body(&state, user, body).await?;
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
