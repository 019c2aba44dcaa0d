//! Thumbnails: `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
//! and the legacy `/_matrix/media/v3/thumbnail/...`.
//!
//! A request is answered with the thumbnail made for exactly its width, height,
//! method and animation: the configured sizes exist from upload on; any other
//! (clamped to `max_thumbnail_dimension`) is made on first request, stored and
//! served from the store afterwards.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use client_api::{error::ApiError, extract::Auth, AppState};
use engine::{config::ThumbnailMethod, media::Blob, storage::ThumbnailRecord, Error};
use futures::TryStreamExt;
use ruma::ServerName;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    download::{legacy_allowed, parse_server, wait, QueryResult},
    headers::media_headers,
    image as pipeline, sniff,
};

#[derive(Deserialize)]
pub(crate) struct ThumbnailQuery {
    width: Option<u64>,
    height: Option<u64>,
    method: Option<String>,
    animated: Option<bool>,
    timeout_ms: Option<u64>,
}

struct Want {
    width: u32,
    height: u32,
    method: ThumbnailMethod,
    animated: bool,
}

fn parse(q: QueryResult<ThumbnailQuery>, max_dim: u32) -> Result<(Want, Option<u64>), Error> {
    let Query(q) = q.map_err(|e| Error::invalid_param(e.to_string()))?;
    let dim = |v: Option<u64>, name: &str| match v {
        None => Err(Error::missing_param(format!("Missing {name}."))),
        Some(0) => Err(Error::invalid_param(format!("{name} must be positive."))),
        Some(v) => Ok(v.min(u64::from(max_dim)) as u32),
    };
    let method = match q.method.as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown thumbnail method {other:?}."
            )))
        }
    };
    Ok((
        Want {
            width: dim(q.width, "width")?,
            height: dim(q.height, "height")?,
            method,
            animated: q.animated.unwrap_or(false),
        },
        q.timeout_ms,
    ))
}

fn cannot_thumbnail() -> Error {
    Error::new(
        400,
        "M_UNKNOWN",
        "Cannot generate thumbnails for the requested content.",
    )
}

/// The thumbnail of `mxc://origin/media_id` a request asks for, made and
/// stored first if it does not exist yet; with its blob.
pub(crate) async fn thumbnail_blob(
    state: &AppState,
    origin: &ServerName,
    media_id: &str,
    q: QueryResult<ThumbnailQuery>,
) -> Result<(ThumbnailRecord, Blob), Error> {
    let cfg = state.media.config().clone();
    let (want, timeout_ms) = parse(q, cfg.max_thumbnail_dimension)?;
    let (record, content) = state
        .media
        .get_uploaded(origin, media_id, wait(timeout_ms))
        .await?;
    let kind = record
        .content_type
        .as_deref()
        .and_then(sniff::image_kind_of_type)
        .ok_or_else(cannot_thumbnail)?;
    // A still image has no animated thumbnail: `animated=true` gets the still one.
    // A remote item's record was cached without analysing its pixels, so it is
    // not known to be still: the pipeline checks the bytes for animation.
    let animated = want.animated && (content.animated || record.remote_cache);
    let method = want.method.as_str();
    let existing = state
        .media
        .thumbnails(origin.as_str(), media_id)
        .await?
        .into_iter()
        .find(|t| {
            t.width == i64::from(want.width)
                && t.height == i64::from(want.height)
                && t.method == method
                && t.animated == animated
        });
    let thumb = match existing {
        Some(t) => t,
        None => {
            // As for uploads: one image in memory and decoding per core.
            let turn = state.media.image_job().await?;
            let blob = state
                .media
                .blobs()
                .get(&content.sha256)
                .await?
                .ok_or_else(|| Error::not_found("Media not found."))?;
            let data = blob
                .body
                .try_fold(BytesMut::new(), |mut acc, chunk| async move {
                    acc.extend_from_slice(&chunk);
                    Ok(acc)
                })
                .await
                .map_err(|e| Error::unknown(format!("Reading media failed: {e}")))?;
            let size = (want.width, want.height);
            let (m, task_cfg) = (want.method, cfg.clone());
            let made = tokio::task::spawn_blocking(move || {
                pipeline::thumbnail(&data, kind, size, m, animated, &task_cfg)
            })
            .await
            .map_err(|e| Error::unknown(format!("Thumbnail task failed: {e}")))??;
            drop(turn);
            let sha256 = hex::encode(Sha256::digest(&made.bytes));
            let t = ThumbnailRecord {
                width: i64::from(want.width),
                height: i64::from(want.height),
                method: method.to_owned(),
                animated,
                content_type: made.content_type.to_owned(),
                size: made.bytes.len() as i64,
                sha256: sha256.clone(),
            };
            let _storing = state.media.store_guard().await;
            state
                .media
                .blobs()
                .put_bytes(&sha256, made.bytes.into())
                .await?;
            state
                .media
                .put_thumbnail(origin.as_str(), media_id, &t)
                .await?;
            t
        }
    };
    let blob = state
        .media
        .blobs()
        .get(&thumb.sha256)
        .await?
        .ok_or_else(|| Error::not_found("Thumbnail not found."))?;
    Ok((thumb, blob))
}

async fn serve(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    q: QueryResult<ThumbnailQuery>,
    authenticated: bool,
) -> Result<Response, Error> {
    let origin = parse_server(server_name)?;
    let (thumb, blob) = thumbnail_blob(state, &origin, media_id, q).await?;
    let headers = media_headers(&thumb.content_type, None, blob.len, authenticated);
    Ok((headers, Body::from_stream(blob.body)).into_response())
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    _auth: Auth,
    Path((server, media_id)): Path<(String, String)>,
    q: QueryResult<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    Ok(serve(&state, &server, &media_id, q, true).await?)
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (legacy)
pub(crate) async fn legacy_thumbnail(
    State(state): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    q: QueryResult<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    legacy_allowed(&state)?;
    Ok(serve(&state, &server, &media_id, q, false).await?)
}
