//! Turning the engine's Matrix error into an HTTP response.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use engine::Error;

/// The error every handler returns: the engine's error, rendered as the spec's
/// JSON error body with its status (and `Retry-After` for rate limits).
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.to_json())).into_response();
        if let Some(ms) = self.0.retry_after_ms {
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        Self(Error::bad_json(e.to_string()))
    }
}
