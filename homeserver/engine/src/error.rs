//! The one error type of the homeserver, shaped like the Matrix error model.
//!
//! Every failure that reaches a client carries an `errcode`, an HTTP status and,
//! for rate limits, `retry_after_ms`. Storage and internal failures become
//! `M_UNKNOWN` with status 500 and are logged, never shown in detail.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: u16,
    pub errcode: &'static str,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub soft_logout: Option<bool>,
    /// Extra top-level fields for the JSON body (UIA flows, `room_version`, ...).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Error {
    pub fn new(status: u16, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            retry_after_ms: None,
            soft_logout: None,
            extra: None,
        }
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "M_FORBIDDEN", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, "M_NOT_FOUND", msg)
    }
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::new(400, "M_BAD_JSON", msg)
    }
    pub fn not_json(msg: impl Into<String>) -> Self {
        Self::new(400, "M_NOT_JSON", msg)
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::new(400, "M_INVALID_PARAM", msg)
    }
    pub fn missing_param(msg: impl Into<String>) -> Self {
        Self::new(400, "M_MISSING_PARAM", msg)
    }
    pub fn unknown(msg: impl Into<String>) -> Self {
        Self::new(500, "M_UNKNOWN", msg)
    }
    pub fn unrecognized(msg: impl Into<String>) -> Self {
        Self::new(404, "M_UNRECOGNIZED", msg)
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(413, "M_TOO_LARGE", msg)
    }
    pub fn user_in_use() -> Self {
        Self::new(400, "M_USER_IN_USE", "User ID already taken.")
    }
    pub fn invalid_username(msg: impl Into<String>) -> Self {
        Self::new(400, "M_INVALID_USERNAME", msg)
    }
    pub fn missing_token() -> Self {
        Self::new(401, "M_MISSING_TOKEN", "Missing access token.")
    }
    pub fn unknown_token(soft_logout: bool) -> Self {
        Self {
            soft_logout: Some(soft_logout),
            ..Self::new(401, "M_UNKNOWN_TOKEN", "Unknown or expired access token.")
        }
    }
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(429, "M_LIMIT_EXCEEDED", "Too many requests.")
        }
    }
    pub fn room_in_use() -> Self {
        Self::new(400, "M_ROOM_IN_USE", "Room alias already taken.")
    }
    pub fn unsupported_room_version(v: &str) -> Self {
        Self::new(
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {v} is not supported."),
        )
    }
    pub fn guest_access_forbidden() -> Self {
        Self::new(
            403,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is not allowed.",
        )
    }

    /// Adds a top-level field to the JSON error body.
    pub fn with_field(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }

    /// The JSON body sent to clients.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = self.extra.clone().unwrap_or_default();
        if !self.errcode.is_empty() {
            body.insert("errcode".into(), self.errcode.into());
            body.insert("error".into(), self.message.clone().into());
        }
        if let Some(ms) = self.retry_after_ms {
            body.insert("retry_after_ms".into(), ms.into());
        }
        if let Some(soft) = self.soft_logout {
            body.insert("soft_logout".into(), soft.into());
        }
        serde_json::Value::Object(body)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.errcode, self.status, self.message)
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Self::unknown("Internal database error.")
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::bad_json(e.to_string())
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::unknown("Internal server error.")
    }
}
