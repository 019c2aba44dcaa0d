//! The content repository over federation (Server-Server API, Matrix 1.11):
//! `GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`, X-Matrix signed.
//!
//! Only this server's own uploads are served: another server's media is
//! fetched from its origin, never from a server that merely cached it. The
//! answer is `multipart/mixed` with two parts, the (empty) metadata object and
//! the bytes, streamed from the blob store between a fixed prefix and suffix.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use client_api::AppState;
use engine::{
    media::{multipart, Blob},
    Error,
};
use federation::{
    auth::Origin,
    error::{FedError, FedResult},
};
use futures::{stream, StreamExt};

use crate::{
    download::{open, query, wait, DownloadQuery, QueryResult},
    headers::content_disposition,
    thumbnail::{thumbnail_blob, ThumbnailQuery},
};

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    q: QueryResult<DownloadQuery>,
    Origin(origin): Origin,
) -> FedResult<Response> {
    let q = query(q)?;
    let ours = state.media.server_name().to_owned();
    let (record, blob) = open(&state, &ours, &media_id, wait(q.timeout_ms)).await?;
    tracing::debug!(%origin, %media_id, "serving media over federation");
    let content_type = record
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let disposition = content_disposition(content_type, record.upload_name.as_deref());
    multipart_response(content_type, &disposition, blob)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    q: QueryResult<ThumbnailQuery>,
    Origin(origin): Origin,
) -> FedResult<Response> {
    let ours = state.media.server_name().to_owned();
    let (thumb, blob) = thumbnail_blob(&state, &ours, &media_id, q).await?;
    tracing::debug!(%origin, %media_id, "serving a thumbnail over federation");
    let disposition = content_disposition(&thumb.content_type, None);
    multipart_response(&thumb.content_type, &disposition, blob)
}

fn multipart_response(content_type: &str, disposition: &str, blob: Blob) -> FedResult<Response> {
    // A stored type or name with a line break would forge part headers.
    if [content_type, disposition]
        .iter()
        .any(|v| v.contains(['\r', '\n']))
    {
        return Err(FedError(Error::unknown(
            "Media has an unservable content type.",
        )));
    }
    let boundary = multipart::new_boundary();
    let (prefix, suffix) = multipart::frame(&boundary, content_type, disposition);
    let len = prefix.len() as u64 + blob.len + suffix.len() as u64;
    let body = stream::once(async move { Ok(prefix) })
        .chain(blob.body)
        .chain(stream::once(async move { Ok(suffix) }));
    let mut headers = HeaderMap::new();
    let mixed = format!("multipart/mixed; boundary={boundary}");
    if let Ok(v) = HeaderValue::from_str(&mixed) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok((headers, Body::from_stream(body)).into_response())
}
