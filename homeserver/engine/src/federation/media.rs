//! Fetching other servers' media (Server-Server API, "Content Repository").
//!
//! `GET /_matrix/federation/v1/media/download/{mediaId}`, X-Matrix signed,
//! answers `multipart/mixed`: a JSON metadata part, then the media's bytes
//! (or a `Location` to fetch them from). A server older than Matrix 1.11
//! answers that endpoint with 404 `M_UNRECOGNIZED`; then the legacy
//! `/_matrix/media/v3/download/{serverName}/{mediaId}` is tried, which answers
//! the bytes directly.
//!
//! Thumbnails of remote media are made here from the cached original (the
//! media repository's thumbnail path), so only downloads cross servers.

use std::{io, time::Duration};

use async_trait::async_trait;
use futures::TryStreamExt;
use http::{header, Method};
use ruma::ServerName;

use super::{FederationClient, FederationError};
use crate::{
    error::{Error, Result},
    media::{
        disposition_file_name, fetch_timeout,
        multipart::{boundary_of, MultipartReader},
        ByteStream, RemoteDownload, RemoteMedia,
    },
};

/// The federation fetcher [`crate::media::MediaService::set_remote`] installs.
pub struct FederationMedia {
    client: FederationClient,
    /// Unsigned HTTPS for a `Location` the origin redirects to.
    redirects: reqwest::Client,
    timeout: Duration,
}

impl FederationMedia {
    pub fn new(client: FederationClient, request_timeout_ms: u64) -> anyhow::Result<Self> {
        let timeout = fetch_timeout(request_timeout_ms);
        let redirects = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::limited(3))
            .timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            redirects,
            timeout,
        })
    }

    async fn get(
        &self,
        origin: &ServerName,
        path: &str,
    ) -> std::result::Result<reqwest::Response, FederationError> {
        self.client
            .request_stream(origin, Method::GET, path, None, Some(self.timeout))
            .await
    }

    /// The federation endpoint's multipart answer, unpacked.
    async fn unpack(&self, origin: &ServerName, resp: reqwest::Response) -> Result<RemoteDownload> {
        let broken = |reason: String| {
            tracing::info!(%origin, %reason, "unusable federation media response");
            Error::new(
                502,
                "M_UNKNOWN",
                format!("{origin} answered with unusable media."),
            )
        };
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE).unwrap_or_default();
        let boundary = boundary_of(&content_type)
            .ok_or_else(|| broken(format!("not multipart/mixed: {content_type:?}")))?;
        let mut reader = MultipartReader::new(body_stream(resp), &boundary);
        let (_metadata, part) = reader
            .read_head()
            .await
            .map_err(|e| broken(e.to_string()))?;
        if let Some(location) = part.get("location") {
            let resp = self
                .redirects
                .get(location)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| broken(format!("following Location: {e}")))?;
            return Ok(plain_download(resp));
        }
        Ok(RemoteDownload {
            content_type: part.get("content-type").map(str::to_owned),
            file_name: part
                .get("content-disposition")
                .and_then(disposition_file_name),
            body: reader.into_body(),
        })
    }
}

#[async_trait]
impl RemoteMedia for FederationMedia {
    async fn download(
        &self,
        origin: &ServerName,
        media_id: &str,
    ) -> Result<Option<RemoteDownload>> {
        let id = encode(media_id);
        match self
            .get(
                origin,
                &format!("/_matrix/federation/v1/media/download/{id}"),
            )
            .await
        {
            Ok(resp) => return self.unpack(origin, resp).await.map(Some),
            Err(e) if !unrecognized(&e) => return not_found_or(e),
            Err(_) => {}
        }
        // A server from before Matrix 1.11.
        let legacy = format!("/_matrix/media/v3/download/{origin}/{id}?allow_remote=false");
        match self.get(origin, &legacy).await {
            Ok(resp) => Ok(Some(plain_download(resp))),
            Err(e) => not_found_or(e),
        }
    }
}

/// An endpoint the origin does not have (rather than media it does not have).
fn unrecognized(e: &FederationError) -> bool {
    matches!(e, FederationError::Remote { status: 400 | 404 | 405, errcode, .. } if errcode == "M_UNRECOGNIZED")
}

/// 404 from the origin is "no such media"; anything else is the origin's
/// failure, as the spec's content repository errors put it.
fn not_found_or(e: FederationError) -> Result<Option<RemoteDownload>> {
    match &e {
        FederationError::Remote { status: 404, .. } => Ok(None),
        FederationError::Remote {
            status: 504,
            errcode,
            ..
        } if errcode == "M_NOT_YET_UPLOADED" => Err(Error::new(
            504,
            "M_NOT_YET_UPLOADED",
            "The remote media has not been uploaded yet.",
        )),
        FederationError::Remote {
            status: 413 | 502,
            errcode,
            ..
        } if errcode == "M_TOO_LARGE" => Err(Error::new(
            502,
            "M_TOO_LARGE",
            "The remote media is too large.",
        )),
        FederationError::Timeout { .. } => Err(Error::new(504, "M_UNKNOWN", e.to_string())),
        FederationError::Denied { .. } => Err(Error::forbidden(e.to_string())),
        _ => Err(Error::new(502, "M_UNKNOWN", e.to_string())),
    }
}

/// A response whose body is the media itself (legacy endpoint, `Location`).
fn plain_download(resp: reqwest::Response) -> RemoteDownload {
    let headers = resp.headers();
    RemoteDownload {
        content_type: header_str(headers, header::CONTENT_TYPE),
        file_name: header_str(headers, header::CONTENT_DISPOSITION)
            .as_deref()
            .and_then(disposition_file_name),
        body: body_stream(resp),
    }
}

fn body_stream(resp: reqwest::Response) -> ByteStream {
    Box::pin(resp.bytes_stream().map_err(io::Error::other))
}

fn header_str(headers: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes a media id for a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn remote(status: u16, errcode: &str) -> FederationError {
        FederationError::Remote {
            destination: "hs.example".to_owned(),
            status,
            errcode: errcode.to_owned(),
            message: String::new(),
            retry_after_ms: None,
            body: Value::Null,
        }
    }

    fn status_of(e: FederationError) -> Option<(u16, &'static str)> {
        not_found_or(e).err().map(|e| (e.status, e.errcode))
    }

    #[test]
    fn only_a_missing_endpoint_falls_back_to_the_legacy_download() {
        assert!(unrecognized(&remote(404, "M_UNRECOGNIZED")));
        assert!(unrecognized(&remote(400, "M_UNRECOGNIZED")));
        assert!(!unrecognized(&remote(404, "M_NOT_FOUND")));
        assert!(!unrecognized(&remote(500, "M_UNRECOGNIZED")));
    }

    #[test]
    fn origin_failures_map_to_the_specs_errors() {
        assert!(matches!(not_found_or(remote(404, "M_NOT_FOUND")), Ok(None)));
        assert_eq!(
            status_of(remote(504, "M_NOT_YET_UPLOADED")),
            Some((504, "M_NOT_YET_UPLOADED"))
        );
        assert_eq!(
            status_of(remote(502, "M_TOO_LARGE")),
            Some((502, "M_TOO_LARGE"))
        );
        assert_eq!(
            status_of(remote(500, "M_UNKNOWN")),
            Some((502, "M_UNKNOWN"))
        );
        assert_eq!(
            status_of(remote(403, "M_FORBIDDEN")),
            Some((502, "M_UNKNOWN"))
        );
        let timeout = FederationError::Timeout {
            destination: "hs.example".to_owned(),
        };
        assert_eq!(status_of(timeout), Some((504, "M_UNKNOWN")));
        let down = FederationError::Unreachable {
            destination: "hs.example".to_owned(),
            reason: "connection refused".to_owned(),
        };
        assert_eq!(status_of(down), Some((502, "M_UNKNOWN")));
    }

    #[test]
    fn media_ids_are_encoded_for_the_path() {
        assert_eq!(encode("AbC-_9"), "AbC-_9");
        assert_eq!(encode("a/b?c"), "a%2Fb%3Fc");
    }
}
