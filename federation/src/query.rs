//! Queries (Server-Server API, "Querying for information"): a local user's
//! profile and a local room alias.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    routing::get,
    Json, Router,
};
use engine::{services::Services, Error};
use ruma::{OwnedRoomAliasId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    auth::Origin,
    error::{FedError, FedResult},
};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/query/profile", get(profile))
        .route("/_matrix/federation/v1/query/directory", get(directory))
}

#[derive(Deserialize)]
struct ProfileQuery {
    user_id: OwnedUserId,
    field: Option<String>,
}

async fn profile(
    State(s): State<AppState>,
    Query(q): Query<ProfileQuery>,
    Origin(_origin): Origin,
) -> FedResult<Json<Value>> {
    if !s.core.is_local(q.user_id.server_name()) {
        return Err(FedError(Error::invalid_param("Not a user of this server.")));
    }
    let user = s
        .core
        .storage
        .accounts
        .get_user(q.user_id.as_str())
        .await?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| FedError(Error::not_found("Unknown user.")))?;
    let mut out = serde_json::Map::new();
    let want = |f: &str| q.field.as_deref().is_none_or(|w| w == f);
    if want("displayname") {
        if let Some(n) = user.displayname {
            out.insert("displayname".into(), json!(n));
        }
    }
    if want("avatar_url") {
        if let Some(a) = user.avatar_url {
            out.insert("avatar_url".into(), json!(a));
        }
    }
    Ok(Json(Value::Object(out)))
}

#[derive(Deserialize)]
struct DirectoryQuery {
    room_alias: OwnedRoomAliasId,
}

async fn directory(
    State(s): State<AppState>,
    Query(q): Query<DirectoryQuery>,
    Origin(_origin): Origin,
) -> FedResult<Json<Value>> {
    if !s.core.is_local(q.room_alias.server_name()) {
        return Err(FedError(Error::invalid_param(
            "Not an alias of this server.",
        )));
    }
    let (room_id, _) = s
        .core
        .storage
        .rooms
        .get_alias(q.room_alias.as_str())
        .await?
        .ok_or_else(|| FedError(Error::not_found("Unknown room alias.")))?;
    let mut servers = vec![s.core.server_name.to_string()];
    if let Ok(id) = ruma::OwnedRoomId::try_from(room_id.as_str()) {
        if let Some(room) = s.rooms.get(&id).await? {
            let st = room.read().await;
            servers.extend(st.remote_servers(s.core.server_name.as_str(), None));
        }
    }
    Ok(Json(json!({"room_id": room_id, "servers": servers})))
}
