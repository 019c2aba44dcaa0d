//! The small HTTP layer shared by every command group: one pooled client, and
//! the mapping of a non-2xx answer onto the Matrix error model.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Builds the pooled client every command uses.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("admin-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// A Matrix error answer: HTTP status plus the `errcode`/`error` body
/// (`M_FORBIDDEN`, `M_USER_IN_USE`, ...). Kept as a typed error so callers can
/// `downcast_ref` it to react to a particular code.
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: u16,
    pub errcode: Option<String>,
    pub error: Option<String>,
    /// `retry_after_ms` on `M_LIMIT_EXCEEDED`.
    pub retry_after_ms: Option<u64>,
    /// The raw body, for answers that are not a Matrix error object.
    pub body: String,
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        match (&self.errcode, &self.error) {
            (Some(code), Some(msg)) => write!(f, " {code}: {msg}"),
            (Some(code), None) => write!(f, " {code}"),
            _ if self.body.is_empty() => Ok(()),
            _ => write!(f, ": {}", truncate(&self.body, 300)),
        }
    }
}

impl std::error::Error for MatrixError {}

impl MatrixError {
    /// Parses an error answer; a body that is not JSON is kept verbatim.
    pub fn from_body(status: u16, body: String) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let retry_after_ms = json
            .as_ref()
            .and_then(|v| v.get("retry_after_ms"))
            .and_then(|v| v.as_u64());
        MatrixError {
            status,
            errcode: field("errcode"),
            error: field("error"),
            retry_after_ms,
            body,
        }
    }
}

/// Turns a failed request into a message an operator can act on: which
/// server could not be reached and why, without a debug dump.
pub fn transport_error(server: &str, e: reqwest::Error) -> anyhow::Error {
    let why = if e.is_connect() {
        "connection failed (is the server running, and is the URL right?)"
    } else if e.is_timeout() {
        "the request timed out"
    } else if e.is_builder() {
        "the server URL is not valid"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        anyhow::anyhow!("cannot reach the server at {server}: {why}")
    } else {
        anyhow::anyhow!("cannot reach the server at {server}: {why}: {cause}")
    }
}

/// Reads a response: a 2xx body is decoded as `T`, anything else becomes a
/// [`MatrixError`].
pub async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    let url = resp.url().path().to_owned();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        return Err(MatrixError::from_body(status.as_u16(), body).into());
    }
    serde_json::from_str(&body)
        .with_context(|| format!("decoding the answer of {url}: {}", truncate(&body, 300)))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_error_is_parsed_from_the_body() {
        let e = MatrixError::from_body(
            429,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":250}"#.into(),
        );
        assert_eq!(e.errcode.as_deref(), Some("M_LIMIT_EXCEEDED"));
        assert_eq!(e.retry_after_ms, Some(250));
        assert_eq!(e.to_string(), "HTTP 429 M_LIMIT_EXCEEDED: slow down");
    }

    #[test]
    fn non_json_error_keeps_the_body() {
        let e = MatrixError::from_body(502, "Bad Gateway".into());
        assert_eq!(e.errcode, None);
        assert_eq!(e.to_string(), "HTTP 502: Bad Gateway");
    }
}
