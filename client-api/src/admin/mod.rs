//! The admin API's HTTP surface, at Synapse-compatible paths
//! (`/_synapse/admin/...`) so operators' existing tools work against us.
//!
//! One file per area: `users`, `rooms`, `media`, `tokens` (registration
//! tokens), `federation`, `server`. Handlers only parse and render; the logic is in
//! the engine's `admin` service.
//!
//! Every route is registered through [`AdminRoutes`], which records it in a
//! table ([`route_table`]) so a test can call each one with a non-admin token;
//! and every handler takes the [`Admin`] extractor, which refuses non-admins
//! with `M_FORBIDDEN` and writes the audit line.

mod federation;
mod media;
mod rooms;
mod server;
mod tokens;
mod users;

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequestParts, RawPathParams},
    handler::Handler,
    http::{request::Parts, Method},
    routing::{on, MethodFilter},
    Router,
};
use engine::{accounts::Requester, Error};
use serde::de::DeserializeOwned;

use crate::{
    error::{ApiError, ApiResult},
    extract::{AppState, Auth},
};

/// Adds every admin route to the client router.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    build(AdminRoutes {
        router: r,
        table: Vec::new(),
    })
    .router
}

/// Every admin route as `(method, path)`, from the same code that registers
/// them, so nothing registered can be missing from the list.
pub fn route_table() -> Vec<(Method, &'static str)> {
    build(AdminRoutes {
        router: Router::new(),
        table: Vec::new(),
    })
    .table
}

fn build(r: AdminRoutes) -> AdminRoutes {
    let r = users::routes(r);
    let r = rooms::routes(r);
    let r = tokens::routes(r);
    let r = federation::routes(r);
    let r = media::routes(r);
    server::routes(r)
}

/// A router that remembers what it registered.
pub(crate) struct AdminRoutes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl AdminRoutes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }

    pub(crate) fn get<H: Handler<T, AppState>, T: 'static>(self, p: &'static str, h: H) -> Self {
        self.add(Method::GET, p, h)
    }
    pub(crate) fn post<H: Handler<T, AppState>, T: 'static>(self, p: &'static str, h: H) -> Self {
        self.add(Method::POST, p, h)
    }
    pub(crate) fn put<H: Handler<T, AppState>, T: 'static>(self, p: &'static str, h: H) -> Self {
        self.add(Method::PUT, p, h)
    }
    pub(crate) fn delete<H: Handler<T, AppState>, T: 'static>(self, p: &'static str, h: H) -> Self {
        self.add(Method::DELETE, p, h)
    }
}

/// An authenticated server admin. Refuses everyone else with `M_FORBIDDEN`,
/// and writes one audit line (tracing target `audit`) per call: who, which
/// endpoint, and the path's targets.
pub struct Admin(pub Requester);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(user) = Auth::from_request_parts(parts, state).await?;
        let action = format!("{} {}", parts.method, parts.uri.path());
        let target = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params
                .iter()
                .map(|(_, v)| v.to_owned())
                .collect::<Vec<_>>()
                .join(" "),
            Err(_) => String::new(),
        };
        if !user.is_admin {
            tracing::warn!(
                target: "audit",
                user = %user.user_id,
                action = %action,
                target = %target,
                "refused: not a server admin"
            );
            return Err(Error::forbidden("You are not a server admin.").into());
        }
        tracing::info!(
            target: "audit",
            admin = %user.user_id,
            action = %action,
            target = %target,
            "admin API call"
        );
        Ok(Admin(user))
    }
}

/// Parses an optional JSON body: an empty body (common on `DELETE` and bare
/// `POST`s) reads as `{}`.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
            ApiError(Error::not_json("Content not JSON."))
        } else {
            ApiError(Error::bad_json(e.to_string()))
        }
    })
}

pub(crate) type QueryMap = HashMap<String, String>;

/// A boolean query parameter (`true`/`false`); `M_INVALID_PARAM` otherwise.
pub(crate) fn q_bool(q: &QueryMap, name: &str) -> ApiResult<Option<bool>> {
    match q.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Error::invalid_param(format!("{name} must be true or false")).into()),
    }
}

/// An integer query parameter; `M_INVALID_PARAM` otherwise.
pub(crate) fn q_int(q: &QueryMap, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Error::invalid_param(format!("{name} must be an integer")).into())
        })
        .transpose()
}
