//! Room creation and membership: createRoom, join, knock, invite, leave,
//! forget, kick, ban, unban, and the listings (`joined_rooms`, `members`, `joined_members`).

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::{get, post},
    Json, Router,
};
use engine::{events::builder::EventDraft, rooms::CreateRoom, Error};
use ruma::{
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, join_room_by_id, join_room_by_id_or_alias, joined_rooms,
            kick_user, leave_room, unban_user,
        },
        room::{create_room, Visibility},
    },
    OwnedRoomId, RoomAliasId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_room::v3::Request, _, _>(r, create_room_route);
    let r = ruma_route::<join_room_by_id::v3::Request, _, _>(r, join_by_id_route);
    let r = ruma_route::<join_room_by_id_or_alias::v3::Request, _, _>(r, join_by_id_or_alias_route);
    let r = ruma_route::<knock_room::v3::Request, _, _>(r, knock_route);
    let r = ruma_route::<leave_room::v3::Request, _, _>(r, leave_route);
    let r = ruma_route::<forget_room::v3::Request, _, _>(r, forget_route);
    let r = ruma_route::<kick_user::v3::Request, _, _>(r, kick_route);
    let r = ruma_route::<ban_user::v3::Request, _, _>(r, ban_route);
    let r = ruma_route::<unban_user::v3::Request, _, _>(r, unban_route);
    let mut r = ruma_route::<joined_rooms::v3::Request, _, _>(r, joined_rooms_route);
    for v in ["v3", "r0"] {
        r = r
            .route(
                &format!("/_matrix/client/{v}/rooms/{{room_id}}/invite"),
                post(invite_route),
            )
            .route(
                &format!("/_matrix/client/{v}/rooms/{{room_id}}/members"),
                get(members_route),
            )
            .route(
                &format!("/_matrix/client/{v}/rooms/{{room_id}}/joined_members"),
                get(joined_members_route),
            );
    }
    r
}

pub(crate) fn parse_room_id(room_id: &str) -> ApiResult<&RoomId> {
    <&RoomId>::try_from(room_id).map_err(|_| Error::invalid_param("Invalid room id.").into())
}

async fn create_room_route(
    State(state): State<AppState>,
    req: Ruma<create_room::v3::Request>,
) -> ApiResult<RumaResponse<create_room::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let body = req.body;
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let v: Value = serde_json::from_str(raw.json().get())?;
        let kind = v["type"]
            .as_str()
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        initial_state.push(EventDraft::state(
            kind,
            v["state_key"].as_str().unwrap_or(""),
            v["content"].clone(),
        ));
    }
    let object = |raw: Option<String>| -> ApiResult<Option<serde_json::Map<String, Value>>> {
        match raw {
            Some(s) => match serde_json::from_str::<Value>(&s)? {
                Value::Object(m) => Ok(Some(m)),
                _ => Err(Error::bad_json("expected an object").into()),
            },
            None => Ok(None),
        }
    };
    let body_invites = body.invite.clone();
    let is_direct = body.is_direct;
    let request = CreateRoom {
        room_version: body.room_version.map(|v| v.to_string()),
        preset: body.preset.map(|p| p.as_str().to_owned()),
        is_public: body.visibility == Visibility::Public,
        name: body.name,
        topic: body.topic,
        alias_localpart: body.room_alias_name,
        invite: body.invite.iter().map(|u| u.to_string()).collect(),
        is_direct: body.is_direct,
        creation_content: object(body.creation_content.map(|r| r.json().get().to_owned()))?,
        initial_state,
        power_level_content_override: object(
            body.power_level_content_override
                .map(|r| r.json().get().to_owned()),
        )?,
    };
    let remote_invites: Vec<_> = body_invites
        .iter()
        .filter(|u| !state.core.is_local(u.server_name()))
        .cloned()
        .collect();
    let room_id = state.rooms.create_room(&user, request).await?;
    for invitee in remote_invites {
        if let Err(e) = state
            .fed_rooms
            .invite(&room_id, &user, &invitee, None, is_direct)
            .await
        {
            tracing::info!(%room_id, %invitee, error = %e, "remote invite at room creation failed");
        }
    }
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

async fn join_by_id_route(
    State(state): State<AppState>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<RumaResponse<join_room_by_id::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let room_id = state
        .fed_rooms
        .join(&req.body.room_id, &user, &[], req.body.reason.clone())
        .await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(room_id)))
}

/// A room id, or an alias resolved here or by its server (whose suggested
/// servers join `via`).
async fn resolve_target(
    state: &AppState,
    target: &str,
    via: &mut Vec<ruma::OwnedServerName>,
) -> ApiResult<OwnedRoomId> {
    Ok(if target.starts_with('#') {
        let alias = <&RoomAliasId>::try_from(target)
            .map_err(|_| Error::invalid_param("Invalid room alias."))?;
        if state.core.is_local(alias.server_name()) {
            state.rooms.resolve_alias(alias).await?
        } else {
            let (room_id, servers) = state.fed_rooms.resolve_remote_alias(alias).await?;
            via.extend(servers);
            room_id
        }
    } else {
        parse_room_id(target)?.to_owned()
    })
}

async fn knock_route(
    State(state): State<AppState>,
    req: Ruma<knock_room::v3::Request>,
) -> ApiResult<RumaResponse<knock_room::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let mut via = req.body.via.clone();
    let room_id = resolve_target(&state, req.body.room_id_or_alias.as_str(), &mut via).await?;
    let room_id = state
        .fed_rooms
        .knock(&room_id, &user, &via, req.body.reason.clone())
        .await?;
    Ok(RumaResponse(knock_room::v3::Response::new(room_id)))
}

async fn join_by_id_or_alias_route(
    State(state): State<AppState>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let mut via = req.body.via.clone();
    let room_id = resolve_target(&state, req.body.room_id_or_alias.as_str(), &mut via).await?;
    let room_id = state
        .fed_rooms
        .join(&room_id, &user, &via, req.body.reason.clone())
        .await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

async fn leave_route(
    State(state): State<AppState>,
    req: Ruma<leave_room::v3::Request>,
) -> ApiResult<RumaResponse<leave_room::v3::Response>> {
    let user = req.user()?.user_id.clone();
    state
        .fed_rooms
        .leave(&req.body.room_id, &user, req.body.reason.clone())
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

async fn forget_route(
    State(state): State<AppState>,
    req: Ruma<forget_room::v3::Request>,
) -> ApiResult<RumaResponse<forget_room::v3::Response>> {
    let user = req.user()?.user_id.clone();
    state.rooms.forget(&req.body.room_id, &user).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

async fn kick_route(
    State(state): State<AppState>,
    req: Ruma<kick_user::v3::Request>,
) -> ApiResult<RumaResponse<kick_user::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let b = &req.body;
    let target = state
        .rooms
        .membership(&b.room_id, b.user_id.as_str())
        .await?;
    // Kicking a knocking user turns their knock down.
    if !matches!(target.as_deref(), Some("join" | "invite" | "knock")) {
        return Err(Error::forbidden("The target user is not in the room.").into());
    }
    state
        .rooms
        .set_membership(
            &b.room_id,
            &user,
            &b.user_id,
            "leave",
            b.reason.clone(),
            false,
        )
        .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

async fn ban_route(
    State(state): State<AppState>,
    req: Ruma<ban_user::v3::Request>,
) -> ApiResult<RumaResponse<ban_user::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let b = &req.body;
    state
        .rooms
        .set_membership(
            &b.room_id,
            &user,
            &b.user_id,
            "ban",
            b.reason.clone(),
            false,
        )
        .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

async fn unban_route(
    State(state): State<AppState>,
    req: Ruma<unban_user::v3::Request>,
) -> ApiResult<RumaResponse<unban_user::v3::Response>> {
    let user = req.user()?.user_id.clone();
    let b = &req.body;
    state
        .rooms
        .set_membership(
            &b.room_id,
            &user,
            &b.user_id,
            "unban",
            b.reason.clone(),
            false,
        )
        .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

async fn joined_rooms_route(
    State(state): State<AppState>,
    req: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<RumaResponse<joined_rooms::v3::Response>> {
    let user = req.user()?;
    let rooms = state
        .core
        .storage
        .rooms
        .memberships_for_user(user.user_id.as_str())
        .await?;
    let joined = rooms
        .into_iter()
        .filter(|m| m.membership == "join")
        .filter_map(|m| OwnedRoomId::try_from(m.room_id).ok())
        .collect();
    Ok(RumaResponse(joined_rooms::v3::Response::new(joined)))
}

#[derive(Deserialize)]
struct InviteBody {
    user_id: Option<String>,
    reason: Option<String>,
}

async fn invite_route(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<InviteBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let target = body
        .user_id
        .ok_or_else(|| Error::missing_param("Missing user_id."))?;
    let target = <&UserId>::try_from(target.as_str())
        .ok()
        .filter(|u| !u.localpart().is_empty() && !u.as_str().contains(char::is_whitespace))
        .ok_or_else(|| Error::invalid_param("Invalid user id."))?;
    state
        .fed_rooms
        .invite(room_id, &user.user_id, target, body.reason, false)
        .await?;
    Ok(Json(json!({})))
}

async fn members_route(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let mut chunk = state
        .timeline
        .state_events(user.user_id.as_str(), room_id, Some("m.room.member"))
        .await?;
    let membership = |e: &Value| {
        e["content"]["membership"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(only) = q.get("membership") {
        chunk.retain(|e| &membership(e) == only);
    }
    if let Some(not) = q.get("not_membership") {
        chunk.retain(|e| &membership(e) != not);
    }
    Ok(Json(json!({"chunk": chunk})))
}

async fn joined_members_route(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = state
        .rooms
        .require_joined(room_id, user.user_id.as_str())
        .await?;
    let st = room.read().await;
    let mut joined = serde_json::Map::new();
    for user_id in &st.joined {
        let content = st
            .state_event("m.room.member", user_id)
            .map(|p| p.content_value())
            .unwrap_or_default();
        joined.insert(
            user_id.clone(),
            json!({"display_name": content["displayname"], "avatar_url": content["avatar_url"]}),
        );
    }
    Ok(Json(json!({"joined": joined})))
}
