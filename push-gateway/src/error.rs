//! Errors answered to homeservers, in the Matrix error shape
//! (`{"errcode": "M_...", "error": "..."}`), so a pusher's logs read like any
//! other Matrix API failure.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_BAD_JSON",
            message: message.into(),
        }
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_NOT_JSON",
            message: message.into(),
        }
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_INVALID_PARAM",
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            errcode: "M_TOO_LARGE",
            message: message.into(),
        }
    }

    /// A vendor could not be reached, or kept failing, for some devices: the
    /// homeserver should retry the request later (duplicates are suppressed).
    pub fn upstream(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            errcode: "M_UNKNOWN",
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errcode: "M_UNRECOGNIZED",
            message: "Unrecognized request".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "errcode": self.errcode, "error": self.message });
        (self.status, Json(body)).into_response()
    }
}
