//! Downloads: `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`
//! (authenticated) and the legacy `/_matrix/media/v3/download/...`.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use client_api::{error::ApiError, extract::Auth, AppState};
use engine::{media::Blob, storage::MediaRecord, Error};
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;

use crate::headers::media_headers;

#[derive(Deserialize)]
pub(crate) struct DownloadQuery {
    pub(crate) timeout_ms: Option<u64>,
}

/// The spec's default wait for content that is not uploaded yet.
const DEFAULT_WAIT_MS: u64 = 20_000;

pub(crate) type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(crate) fn parse_server(server_name: &str) -> Result<OwnedServerName, Error> {
    // An mxc URI with a malformed server name can name no media.
    OwnedServerName::try_from(server_name).map_err(|_| Error::not_found("Media not found."))
}

pub(crate) fn wait(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS))
}

/// The record and blob of an uploaded item (fetched first if remote),
/// waiting up to `wait` for an asynchronous upload to arrive.
pub(crate) async fn open(
    state: &AppState,
    origin: &ServerName,
    media_id: &str,
    wait: Duration,
) -> Result<(MediaRecord, Blob), Error> {
    let (record, content) = state.media.get_uploaded(origin, media_id, wait).await?;
    let blob = state
        .media
        .blobs()
        .get(&content.sha256)
        .await?
        .ok_or_else(|| {
            tracing::error!(%origin, %media_id, "media blob missing from the store");
            Error::not_found("Media not found.")
        })?;
    Ok((record, blob))
}

async fn serve(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    file_name: Option<&str>,
    timeout_ms: Option<u64>,
    authenticated: bool,
) -> Result<Response, Error> {
    let origin = parse_server(server_name)?;
    let (record, blob) = open(state, &origin, media_id, wait(timeout_ms)).await?;
    let content_type = record
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let name = file_name.or(record.upload_name.as_deref());
    let headers = media_headers(content_type, name, blob.len, authenticated);
    Ok((headers, Body::from_stream(blob.body)).into_response())
}

pub(crate) fn query(q: QueryResult<DownloadQuery>) -> Result<DownloadQuery, Error> {
    q.map(|Query(q)| q)
        .map_err(|e| Error::invalid_param(e.to_string()))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub(crate) async fn download(
    State(state): State<AppState>,
    _auth: Auth,
    Path((server, media_id)): Path<(String, String)>,
    q: QueryResult<DownloadQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(serve(&state, &server, &media_id, None, q.timeout_ms, true).await?)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub(crate) async fn download_named(
    State(state): State<AppState>,
    _auth: Auth,
    Path((server, media_id, name)): Path<(String, String, String)>,
    q: QueryResult<DownloadQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(serve(&state, &server, &media_id, Some(&name), q.timeout_ms, true).await?)
}

/// Refuses legacy unauthenticated access unless the operator enabled it.
pub(crate) fn legacy_allowed(state: &AppState) -> Result<(), Error> {
    if state.media.config().legacy_unauthenticated {
        Ok(())
    } else {
        Err(Error::not_found(
            "Unauthenticated media is disabled; use /_matrix/client/v1/media.",
        ))
    }
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (legacy)
pub(crate) async fn legacy_download(
    State(state): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    q: QueryResult<DownloadQuery>,
) -> Result<Response, ApiError> {
    legacy_allowed(&state)?;
    let q = query(q)?;
    Ok(serve(&state, &server, &media_id, None, q.timeout_ms, false).await?)
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (legacy)
pub(crate) async fn legacy_download_named(
    State(state): State<AppState>,
    Path((server, media_id, name)): Path<(String, String, String)>,
    q: QueryResult<DownloadQuery>,
) -> Result<Response, ApiError> {
    legacy_allowed(&state)?;
    let q = query(q)?;
    Ok(serve(&state, &server, &media_id, Some(&name), q.timeout_ms, false).await?)
}
