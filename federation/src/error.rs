//! Errors on the federation surface: the engine's [`engine::Error`], sent as a
//! Matrix error body with its status (and `Retry-After` for rate limits).

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use engine::Error;

#[derive(Debug)]
pub struct FedError(pub Error);

pub type FedResult<T> = Result<T, FedError>;

impl From<Error> for FedError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<serde_json::Error> for FedError {
    fn from(e: serde_json::Error) -> Self {
        Self(Error::bad_json(e.to_string()))
    }
}

impl IntoResponse for FedError {
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
