//! Request extractors: [`Ruma`] parses any ruma `IncomingRequest` and
//! authenticates it per the endpoint's metadata; [`Auth`] authenticates only;
//! [`JsonBody`] parses a JSON body with the spec's error codes.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    http::{request::Parts, HeaderMap, Method},
};
use engine::{accounts::Requester, services::Services, Error};
use ruma::api::{
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication,
    },
    IncomingRequest, IncomingRequestExt,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub type AppState = Arc<Services>;

/// How an endpoint's auth scheme treats the access token.
pub trait TokenPolicy {
    const REQUIRED: bool;
    const CHECKED: bool;
}
macro_rules! policy {
    ($t:ty, $req:expr, $checked:expr) => {
        impl TokenPolicy for $t {
            const REQUIRED: bool = $req;
            const CHECKED: bool = $checked;
        }
    };
}
policy!(AccessToken, true, true);
policy!(AccessTokenOptional, false, true);
policy!(AppserviceToken, true, true);
policy!(AppserviceTokenOptional, false, true);
policy!(NoAuthentication, false, false);
policy!(NoAccessToken, false, false);

/// A parsed ruma request plus its authenticated requester, if any.
pub struct Ruma<T> {
    pub body: T,
    pub requester: Option<Requester>,
}

impl<T> Ruma<T> {
    /// The requester of an endpoint whose scheme requires a token.
    pub fn user(&self) -> Result<&Requester, ApiError> {
        self.requester
            .as_ref()
            .ok_or_else(|| ApiError(Error::missing_token()))
    }
}

/// The access token from `Authorization: Bearer` or the `access_token` query.
pub fn access_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_owned());
        }
    }
    query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token=").map(percent_decode))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn authenticate(
    state: &AppState,
    parts: &Parts,
    required: bool,
) -> Result<Option<Requester>, ApiError> {
    match access_token(&parts.headers, parts.uri.query()) {
        Some(token) => Ok(Some(state.accounts.authenticate(&token).await?)),
        None if required => Err(ApiError(Error::missing_token())),
        None => Ok(None),
    }
}

/// Reads the body under the configured limit, answering `M_TOO_LARGE` beyond it.
async fn read_body(state: &AppState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let limit = state.core.config.limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(Error::too_large(format!(
            "Request body exceeds {limit} bytes."
        )))
    })
}

/// Whether a body is well-formed JSON in valid UTF-8.
fn is_json(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .is_ok_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
}

/// Classifies a body that failed to parse: not JSON at all, or JSON of the wrong shape.
fn json_error(body: &[u8], err: impl std::fmt::Display) -> Error {
    if !is_json(body) {
        return Error::not_json("Content not JSON.");
    }
    let msg = err.to_string();
    // Identifier parse errors (a malformed user or room id) are invalid parameters.
    if [
        "sigil",
        "server name",
        "localpart",
        "missing colon",
        "invalid ID",
        "delimiter",
    ]
    .iter()
    .any(|m| msg.contains(m))
    {
        return Error::invalid_param(msg);
    }
    Error::bad_json(msg)
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest,
    T::Authentication: TokenPolicy,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, state).await {
                Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
                Err(_) => Vec::new(),
            };
        let requester = if <T::Authentication as TokenPolicy>::CHECKED {
            authenticate(state, &parts, <T::Authentication as TokenPolicy>::REQUIRED).await?
        } else {
            None
        };
        let mut bytes = read_body(state, body).await?;
        // Every PUT carries content. Clients send many POSTs (join, leave,
        // logout...) without a body: read that as `{}`, as Synapse does.
        if parts.method == Method::POST && bytes.is_empty() {
            bytes = Bytes::from_static(b"{}");
        }
        let needs_json = matches!(parts.method, Method::PUT | Method::POST);
        if needs_json && !is_json(&bytes) {
            return Err(ApiError(Error::not_json("Content not JSON.")));
        }
        let http_req = axum::http::Request::from_parts(parts, &bytes[..]);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(http_req, &args).map_err(|e| {
            use ruma::api::error::{DeserializationError as D, FromHttpRequestError as F};
            ApiError(match e {
                F::Deserialization(D::Json(j)) => json_error(&bytes, j),
                F::Deserialization(D::Ident(i)) => Error::invalid_param(i.to_string()),
                F::Deserialization(other) => Error::invalid_param(other.to_string()),
                F::MethodMismatch { .. } => Error::unrecognized("Unrecognized request"),
                other => Error::bad_json(other.to_string()),
            })
        })?;
        Ok(Ruma { body, requester })
    }
}

/// Authenticates the request with a required access token.
pub struct Auth(pub Requester);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts, true).await? {
            Some(r) => Ok(Auth(r)),
            None => Err(ApiError(Error::missing_token())),
        }
    }
}

/// A JSON body, with `M_NOT_JSON`, `M_BAD_JSON` and `M_TOO_LARGE` as the spec wants.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_post = req.method() == Method::POST;
        let mut bytes = read_body(state, req.into_body()).await?;
        if bytes.is_empty() && is_post {
            bytes = Bytes::from_static(b"{}");
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError(json_error(&bytes, e)))
    }
}
