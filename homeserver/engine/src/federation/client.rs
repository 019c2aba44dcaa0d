//! The outbound side of the transport: signed HTTPS requests to other servers.
//!
//! One pooled `reqwest` client (rustls; public and system roots plus
//! `[federation] trusted_ca_paths`) serves every destination; connections are
//! kept alive per `(tls_name, port)`. [`FederationError`] tells a sender whether
//! to back off and retry (unreachable, timed out, 5xx, 429) or give up on the
//! request (the remote refused it with a Matrix error).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use ruma::{CanonicalJsonValue, ServerName};
use serde_json::Value;

use super::{
    access::ServerAccess,
    authentication::sign_request,
    discovery::{Discovery, TargetResolver},
};
use crate::core::Core;

/// Largest response body we read (a `/state` of a big room is tens of MB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a federation request failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// No connection could be made: discovery, DNS, TCP or TLS failed, or the
    /// connection broke mid-request. Retry later with backoff.
    #[error("{destination} is unreachable: {reason}")]
    Unreachable { destination: String, reason: String },
    /// The request did not complete in time. Retry later with backoff.
    #[error("request to {destination} timed out")]
    Timeout { destination: String },
    /// The remote answered with an error status (and usually a Matrix error body).
    #[error("{destination} answered {status} {errcode}: {message}")]
    Remote {
        destination: String,
        status: u16,
        errcode: String,
        message: String,
        retry_after_ms: Option<u64>,
        body: Value,
    },
    /// The remote answered 2xx with something that is not what was asked for.
    #[error("invalid response from {destination}: {reason}")]
    InvalidResponse { destination: String, reason: String },
    /// Our own `[federation] allow`/`deny` lists forbid this destination.
    #[error("federation with {destination} is not allowed by this server's configuration")]
    Denied { destination: String },
    /// The request could not be built (bad path, unsignable body).
    #[error("cannot build a request to {destination}: {reason}")]
    Local { destination: String, reason: String },
}

impl FederationError {
    /// Whether the same request may succeed later: the destination is down,
    /// overloaded or rate-limiting us.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Remote { status, .. } => *status >= 500 || *status == 429,
            Self::InvalidResponse { .. } | Self::Denied { .. } | Self::Local { .. } => false,
        }
    }

    /// The remote's `errcode`, when it answered with one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Remote { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

/// A remote error as seen by our own clients: the remote's status and errcode
/// when it refused (for the errcodes the spec defines), 502 when it could not
/// be reached or answered nonsense.
impl From<FederationError> for crate::Error {
    fn from(e: FederationError) -> Self {
        match &e {
            FederationError::Remote {
                status,
                errcode,
                message,
                ..
            } if (400..500).contains(status) => {
                let code = known_errcode(errcode);
                let mut err = crate::Error::new(*status, code, message.clone());
                if *status == 429 {
                    err.status = 502;
                    err.errcode = "M_UNKNOWN";
                }
                err
            }
            FederationError::Denied { .. } => crate::Error::forbidden(e.to_string()),
            FederationError::Local { .. } => crate::Error::unknown(e.to_string()),
            _ => crate::Error::new(502, "M_UNKNOWN", e.to_string()),
        }
    }
}

/// Errcodes are `&'static str` in our error type; map the remote's string onto
/// the spec's codes (anything else reads as `M_UNKNOWN`).
fn known_errcode(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNAUTHORIZED",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_MISSING_PARAM",
        "M_INVALID_PARAM",
        "M_TOO_LARGE",
        "M_UNRECOGNIZED",
        "M_LIMIT_EXCEEDED",
        "M_UNSUPPORTED_ROOM_VERSION",
        "M_INCOMPATIBLE_ROOM_VERSION",
        "M_USER_IN_USE",
        "M_ROOM_IN_USE",
        "M_GUEST_ACCESS_FORBIDDEN",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("M_UNKNOWN")
}

/// A successful response, unparsed (media, multipart bodies).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Signed requests to other servers. Cheap to clone.
#[derive(Clone)]
pub struct FederationClient {
    core: Arc<Core>,
    discovery: Arc<Discovery>,
    access: Arc<ServerAccess>,
    http: reqwest::Client,
}

impl FederationClient {
    pub fn new(
        core: Arc<Core>,
        discovery: Arc<Discovery>,
        access: Arc<ServerAccess>,
        roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Self> {
        let config = &core.config.federation;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .dns_resolver(Arc::new(TargetResolver(discovery.clone())))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            // HTTP/1.1, whatever other crates enable: the spec's `Host` header
            // (the server name) differs from the URL's authority after SRV or
            // an override, which HTTP/2's `:authority` cannot express.
            .http1_only()
            // Federation requests are signed for one URI; never follow redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("homeserver/", env!("CARGO_PKG_VERSION")));
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        Ok(Self {
            core,
            discovery,
            access,
            http: builder.build()?,
        })
    }

    /// A signed JSON request; the parsed JSON response on 2xx.
    pub async fn request(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<Value, FederationError> {
        let raw = self
            .request_raw(destination, method, path_and_query, body)
            .await?;
        serde_json::from_slice(&raw.body).map_err(|e| FederationError::InvalidResponse {
            destination: destination.to_string(),
            reason: format!("not JSON: {e}"),
        })
    }

    /// A signed request; the raw response on 2xx, a [`FederationError`] otherwise.
    pub async fn request_raw(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<RawResponse, FederationError> {
        let mut response = self
            .request_stream(destination, method, path_and_query, body, None)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = self
            .read_limited(destination, &mut response, MAX_RESPONSE_BYTES)
            .await?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// A signed request whose 2xx response is handed back unread, for bodies
    /// too large to buffer (media). `timeout` replaces `[federation]
    /// request_timeout_ms` for the whole exchange, body included.
    pub async fn request_stream(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, FederationError> {
        let dest = destination.to_string();
        let local = |reason: String| FederationError::Local {
            destination: dest.clone(),
            reason,
        };
        if !self.access.is_allowed(destination) {
            return Err(FederationError::Denied {
                destination: dest.clone(),
            });
        }
        if !path_and_query.starts_with('/') {
            return Err(local(format!("path {path_and_query:?} must start with /")));
        }
        let content = body
            .as_ref()
            .map(|b| CanonicalJsonValue::try_from(b.clone()))
            .transpose()
            .map_err(|e| local(format!("body is not canonical JSON: {e}")))?;
        let authorization = sign_request(
            &self.core.key.pair,
            method.as_str(),
            path_and_query,
            &self.core.server_name,
            destination,
            content.as_ref(),
        )
        .map_err(|e| local(e.to_string()))?;

        let target = self.discovery.resolve(destination).await.map_err(|e| {
            FederationError::Unreachable {
                destination: dest.clone(),
                reason: e.reason,
            }
        })?;
        let url = format!("{}{path_and_query}", target.base_url());
        let mut request = self
            .http
            .request(method, &url)
            .header(header::AUTHORIZATION, authorization);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Ok(host) = HeaderValue::from_str(&target.host_header) {
            request = request.header(header::HOST, host);
        }
        if let Some(content) = &content {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(content.to_string());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_error(destination, e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        // Error bodies are small Matrix errors; anything longer is cut off.
        let body = self
            .read_limited(destination, &mut response, 64 * 1024)
            .await
            .unwrap_or_default();
        let headers = response.headers();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let errcode = json["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned();
        let message = json["error"].as_str().unwrap_or("").to_owned();
        let retry_after_ms = json["retry_after_ms"].as_u64().or_else(|| {
            headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| s * 1000)
        });
        Err(FederationError::Remote {
            destination: dest,
            status,
            errcode,
            message,
            retry_after_ms,
            body: json,
        })
    }

    /// Reads a response body, refusing more than `limit` bytes.
    async fn read_limited(
        &self,
        destination: &ServerName,
        response: &mut reqwest::Response,
        limit: usize,
    ) -> Result<Bytes, FederationError> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > limit {
                        return Err(FederationError::InvalidResponse {
                            destination: destination.to_string(),
                            reason: "response too large".to_owned(),
                        });
                    }
                }
                Ok(None) => return Ok(Bytes::from(body)),
                Err(e) => return Err(self.transport_error(destination, e)),
            }
        }
    }

    /// Maps a transport failure (also one while a streamed body is read).
    pub fn stream_error(&self, destination: &ServerName, e: reqwest::Error) -> FederationError {
        self.transport_error(destination, e)
    }

    fn transport_error(&self, destination: &ServerName, e: reqwest::Error) -> FederationError {
        // A cached delegation may be stale; resolve afresh next time.
        self.discovery.invalidate(destination);
        if e.is_timeout() {
            FederationError::Timeout {
                destination: destination.to_string(),
            }
        } else {
            FederationError::Unreachable {
                destination: destination.to_string(),
                reason: error_chain(&e),
            }
        }
    }
}

/// The error and its sources, so "certificate not valid for name" is not lost
/// behind "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads `[federation] trusted_ca_paths`: every certificate of every PEM file.
pub fn load_trusted_roots(
    config: &crate::config::Federation,
) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let mut roots = Vec::new();
    for path in &config.trusted_ca_paths {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("federation.trusted_ca_paths: {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("federation.trusted_ca_paths: {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "federation.trusted_ca_paths: no certificate in {}",
                path.display()
            );
        }
        roots.extend(certs);
    }
    Ok(roots)
}
