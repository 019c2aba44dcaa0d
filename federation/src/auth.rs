//! Authentication of inbound federation requests (Server-Server API,
//! "Request Authentication").
//!
//! [`FedRequest`] is the extractor every authenticated federation endpoint
//! takes. It
//! 1. parses the `Authorization: X-Matrix ...` header(s) (quoted or bare
//!    parameters, in any order; several headers must agree on the origin),
//! 2. refuses a `destination` other than us (401 `M_UNAUTHORIZED`),
//! 3. refuses origins our `[federation] allow`/`deny` lists exclude (403
//!    `M_FORBIDDEN`),
//! 4. reads the body within `[federation] max_request_bytes` (413
//!    `M_TOO_LARGE`; 400 `M_NOT_JSON` when it is not JSON),
//! 5. checks the signature over `{method, uri, origin, destination, content}`
//!    with the origin's key, fetched when unknown (401 `M_UNAUTHORIZED`).
//!
//! It yields the verified origin and the parsed body.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{FromRequest, Request},
    http::{header, HeaderMap},
};
use engine::{
    federation::authentication::{add_header_signature, request_object},
    services::Services,
    Error,
};
use ruma::{api::federation::authentication::XMatrix, CanonicalJsonValue, OwnedServerName};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::FedError;

/// A federation request whose X-Matrix signature checked out.
#[derive(Debug, Clone)]
pub struct FedRequest {
    /// The server that signed the request.
    pub origin: OwnedServerName,
    /// The JSON body; `Value::Null` when the request had none.
    pub body: Value,
}

impl FedRequest {
    /// The body as `T`, or `M_BAD_JSON`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FedError> {
        T::deserialize(&self.body).map_err(|e| FedError(Error::bad_json(e.to_string())))
    }
}

/// Just the verified origin, for endpoints without a body.
#[derive(Debug, Clone)]
pub struct Origin(pub OwnedServerName);

fn unauthorized(msg: impl Into<String>) -> FedError {
    FedError(Error::new(401, "M_UNAUTHORIZED", msg))
}

/// Every X-Matrix `Authorization` header, parsed. At least one is required;
/// all must name the same origin.
pub fn parse_x_matrix(headers: &HeaderMap) -> Result<Vec<XMatrix>, FedError> {
    let mut parsed = Vec::new();
    for value in headers.get_all(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not ASCII"))?;
        let is_x_matrix = text
            .trim_start()
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("X-Matrix"));
        if !is_x_matrix {
            continue;
        }
        let header = XMatrix::parse(text)
            .map_err(|e| unauthorized(format!("Malformed X-Matrix Authorization header: {e}")))?;
        parsed.push(header);
    }
    let Some(first) = parsed.first() else {
        return Err(unauthorized("Missing X-Matrix Authorization header"));
    };
    if parsed.iter().any(|h| h.origin != first.origin) {
        return Err(unauthorized(
            "X-Matrix Authorization headers name different origins",
        ));
    }
    Ok(parsed)
}

impl FromRequest<Arc<Services>> for FedRequest {
    type Rejection = FedError;

    async fn from_request(req: Request, state: &Arc<Services>) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let ours = &state.core.server_name;
        let headers = parse_x_matrix(&parts.headers)?;
        let origin = headers[0].origin.clone();
        if headers
            .iter()
            .any(|h| h.destination.as_ref().is_some_and(|d| d != ours))
        {
            return Err(unauthorized(format!(
                "This request is for another server; this is {ours}"
            )));
        }
        if !state.federation.access.is_allowed(&origin) {
            return Err(FedError(Error::forbidden(format!(
                "Federation with {origin} is not allowed"
            ))));
        }
        let body = read_body(
            body,
            &parts.headers,
            state.core.config.federation.max_request_bytes,
        )
        .await?;
        let content: Option<CanonicalJsonValue> = if body.is_empty() {
            None
        } else {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| FedError(Error::not_json(format!("Body is not JSON: {e}"))))?;
            Some(CanonicalJsonValue::try_from(value).map_err(|e| {
                FedError(Error::bad_json(format!("Body is not canonical JSON: {e}")))
            })?)
        };
        // The signature covers the URI as sent: federation routes are merged,
        // never `nest`ed (which would strip a prefix from it).
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut object = request_object(
            parts.method.as_str(),
            path_and_query,
            &origin,
            ours,
            content.as_ref(),
        );
        for header in &headers {
            add_header_signature(&mut object, header);
        }
        state
            .federation
            .keys
            .verify_json(&origin, &object)
            .await
            .map_err(|e| {
                tracing::info!(%origin, error = %e, "federation request signature refused");
                unauthorized(e.message)
            })?;
        let body = match content {
            Some(c) => serde_json::to_value(c)?,
            None => Value::Null,
        };
        Ok(FedRequest { origin, body })
    }
}

impl FromRequest<Arc<Services>> for Origin {
    type Rejection = FedError;

    async fn from_request(req: Request, state: &Arc<Services>) -> Result<Self, Self::Rejection> {
        let request = FedRequest::from_request(req, state).await?;
        Ok(Origin(request.origin))
    }
}

/// The body, refusing more than `limit` bytes (by `Content-Length` up front,
/// by counting otherwise).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, FedError> {
    let too_large = || {
        FedError(Error::too_large(format!(
            "Request body exceeds {limit} bytes"
        )))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else {
            FedError(Error::bad_json(format!(
                "Reading the request body failed: {inner}"
            )))
        }
    })
}
