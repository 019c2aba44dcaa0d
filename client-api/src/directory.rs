//! Room aliases and the public room directory.

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use engine::Error;
use ruma::RoomAliasId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
    rooms::parse_room_id,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(
                &format!("/_matrix/client/{v}/directory/room/{{alias}}"),
                get(get_alias).put(put_alias).delete(delete_alias),
            )
            .route(
                &format!("/_matrix/client/{v}/rooms/{{room_id}}/aliases"),
                get(room_aliases),
            )
            .route(
                &format!("/_matrix/client/{v}/directory/list/room/{{room_id}}"),
                get(get_visibility).put(put_visibility),
            )
            .route(
                &format!("/_matrix/client/{v}/publicRooms"),
                get(public_rooms_get).post(public_rooms_post),
            );
    }
    r
}

fn parse_alias(alias: &str) -> ApiResult<&RoomAliasId> {
    <&RoomAliasId>::try_from(alias).map_err(|_| Error::invalid_param("Invalid room alias.").into())
}

async fn get_alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    if !state.core.is_local(alias.server_name()) {
        // Another server's alias: its directory answers (`/query/directory`).
        let (room_id, servers) = state.fed_rooms.resolve_remote_alias(alias).await?;
        return Ok(Json(json!({"room_id": room_id, "servers": servers})));
    }
    let room_id = state.rooms.resolve_alias(alias).await?;
    Ok(Json(
        json!({"room_id": room_id, "servers": [state.core.server_name]}),
    ))
}

#[derive(Deserialize)]
struct PutAlias {
    room_id: String,
}

async fn put_alias(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(alias): Path<String>,
    JsonBody(body): JsonBody<PutAlias>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = parse_room_id(&body.room_id)?;
    state.rooms.set_alias(alias, room_id, &user.user_id).await?;
    Ok(Json(json!({})))
}

async fn delete_alias(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    state
        .rooms
        .delete_alias(alias, &user.user_id, user.is_admin)
        .await?;
    Ok(Json(json!({})))
}

async fn room_aliases(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = state
        .rooms
        .get(room_id)
        .await?
        .ok_or_else(|| Error::forbidden("You are not in this room."))?;
    let readable = {
        let st = room.read().await;
        st.membership_of(user.user_id.as_str()).as_deref() == Some("join")
            || st.history_visibility() == "world_readable"
    };
    if !readable {
        return Err(Error::forbidden("You are not in this room.").into());
    }
    Ok(Json(
        json!({"aliases": state.core.storage.rooms.aliases_for_room(room_id.as_str()).await?}),
    ))
}

async fn get_visibility(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = state
        .core
        .storage
        .rooms
        .get_room(room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room."))?;
    Ok(Json(
        json!({"visibility": if room.is_public { "public" } else { "private" }}),
    ))
}

#[derive(Deserialize)]
struct PutVisibility {
    visibility: String,
}

async fn put_visibility(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<PutVisibility>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let public = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => return Err(Error::invalid_param("visibility must be public or private").into()),
    };
    state
        .rooms
        .require_joined(room_id, user.user_id.as_str())
        .await?;
    state
        .core
        .storage
        .rooms
        .set_room_public(room_id.as_str(), public)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /publicRooms`: this server's directory, or (`server=`) another's
/// through federation.
async fn public_rooms_get(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = q.get("limit").and_then(|l| l.parse().ok());
    let since = q.get("since").map(String::as_str);
    Ok(Json(
        directory(
            &state,
            q.get("server").map(String::as_str),
            limit,
            since,
            None,
        )
        .await?,
    ))
}

async fn public_rooms_post(
    State(state): State<AppState>,
    Auth(_user): Auth,
    Query(q): Query<HashMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let limit = body["limit"].as_u64().map(|l| l as usize);
    Ok(Json(
        directory(
            &state,
            q.get("server").map(String::as_str),
            limit,
            body["since"].as_str(),
            body["filter"]["generic_search_term"].as_str(),
        )
        .await?,
    ))
}

async fn directory(
    state: &AppState,
    server: Option<&str>,
    limit: Option<usize>,
    since: Option<&str>,
    term: Option<&str>,
) -> ApiResult<Value> {
    if let Some(server) = server {
        let server = <&ruma::ServerName>::try_from(server)
            .map_err(|_| Error::invalid_param("Invalid server name."))?;
        if !state.core.is_local(server) {
            return Ok(state
                .fed_rooms
                .remote_public_rooms(server, limit, since, term)
                .await?);
        }
    }
    Ok(state.rooms.public_rooms_page(limit, since, term).await?)
}
