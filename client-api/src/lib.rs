//! The Client-Server API surface: HTTP parsing and responses only. Every handler
//! is a small function that reads like the spec and calls the engine's services.
//!
//! Modules follow the spec's sections: discovery, account (registration),
//! session (login), devices, profile, rooms (creation and membership), events
//! (send, state, redact, read), directory, sync, account data, keys (end-to-end
//! encryption), to-device messages, key backup (`room_keys`).

mod account;
mod account_data;
pub mod admin;
mod backup;
mod devices;
mod directory;
mod discovery;
mod ephemeral;
pub mod error;
mod events;
pub mod extract;
mod keys;
mod profile;
mod push;
mod register;
mod rooms;
mod session;
mod spaces;
pub mod stream;
mod sync;
mod to_device;

use axum::{
    body::Body,
    handler::Handler,
    response::{IntoResponse, Response},
    routing::{on, MethodFilter},
    Router,
};
use bytes::BytesMut;
use engine::Error;
use ruma::api::{path_builder::PathBuilder, Metadata, OutgoingResponse, OutgoingResponseExt};

use crate::error::ApiError;
pub use crate::extract::AppState;

/// A ruma response rendered as HTTP.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(r) => r.map(|b| Body::from(b.freeze())).into_response(),
            Err(e) => ApiError(Error::unknown(format!(
                "response serialisation failed: {e}"
            )))
            .into_response(),
        }
    }
}

/// Registers `handler` on every path and the method of ruma request type `Req`.
pub(crate) fn ruma_route<Req, H, T>(mut router: Router<AppState>, handler: H) -> Router<AppState>
where
    Req: Metadata,
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(Req::METHOD).unwrap_or(MethodFilter::GET);
    let mut seen = std::collections::HashSet::new();
    for path in Req::PATH_BUILDER.all_paths() {
        if seen.insert(path) {
            router = router.route(path, on(filter, handler.clone()));
        }
    }
    router
}

/// The whole Client-Server API router.
pub fn router() -> Router<AppState> {
    let r = Router::new();
    let r = discovery::routes(r);
    let r = register::routes(r);
    let r = session::routes(r);
    let r = devices::routes(r);
    let r = profile::routes(r);
    let r = rooms::routes(r);
    let r = events::routes(r);
    let r = directory::routes(r);
    let r = spaces::routes(r);
    let r = sync::routes(r);
    let r = ephemeral::routes(r);
    let r = stream::routes(r);
    let r = keys::routes(r);
    let r = to_device::routes(r);
    let r = backup::routes(r);
    let r = admin::routes(r);
    let r = account::routes(r);
    let r = push::routes(r);
    account_data::routes(r)
}
