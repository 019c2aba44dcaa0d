//! Room events: send, state, redact, and reading (`/event`, `/messages`, `/context`).

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use engine::accounts::Requester;
use engine::{
    events::builder::EventDraft,
    ratelimit::Action,
    rooms::{send::Txn, timeline::MessagesRequest},
    sync::filter::Filter,
    Error,
};
use ruma::{
    api::client::{message::send_message_event, redact::redact_event},
    OwnedEventId, RoomId,
};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody, Ruma},
    rooms::parse_room_id,
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<send_message_event::v3::Request, _, _>(r, send_route);
    let mut r = ruma_route::<redact_event::v3::Request, _, _>(r, redact_route);
    for v in ["v3", "r0"] {
        let base = format!("/_matrix/client/{v}/rooms/{{room_id}}");
        r = r
            .route(&format!("{base}/state"), get(all_state))
            .route(
                &format!("{base}/state/{{event_type}}"),
                get(get_state_empty_key).put(put_state_empty_key),
            )
            .route(
                &format!("{base}/state/{{event_type}}/"),
                get(get_state_empty_key).put(put_state_empty_key),
            )
            .route(
                &format!("{base}/state/{{event_type}}/{{state_key}}"),
                get(get_state).put(put_state),
            )
            .route(&format!("{base}/event/{{event_id}}"), get(get_event))
            .route(&format!("{base}/messages"), get(messages))
            .route(&format!("{base}/context/{{event_id}}"), get(context));
    }
    r
}

async fn send_route(
    State(state): State<AppState>,
    req: Ruma<send_message_event::v3::Request>,
) -> ApiResult<RumaResponse<send_message_event::v3::Response>> {
    let user = req.user()?.clone();
    let b = req.body;
    let content: Value = serde_json::from_str(b.body.json().get())?;
    let event_id = send_message(
        &state,
        &user,
        &b.room_id,
        &b.event_type.to_string(),
        b.txn_id.as_str(),
        content,
    )
    .await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

async fn redact_route(
    State(state): State<AppState>,
    req: Ruma<redact_event::v3::Request>,
) -> ApiResult<RumaResponse<redact_event::v3::Response>> {
    let user = req.user()?.clone();
    let b = req.body;
    state
        .ratelimit
        .check(Action::Send, user.user_id.as_str())
        .await?;
    let mut content = json!({});
    if let Some(reason) = &b.reason {
        content["reason"] = json!(reason);
    }
    let draft = EventDraft {
        kind: "m.room.redaction".into(),
        state_key: None,
        content,
        redacts: Some(b.event_id.clone()),
    };
    let scope = format!("redact/{}/{}", b.room_id, b.event_id);
    let txn = Txn {
        device_id: &user.device_id,
        txn_id: b.txn_id.as_str(),
        scope: &scope,
    };
    let event_id = state
        .rooms
        .send(&b.room_id, &user.user_id, draft, Some(txn))
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

async fn all_state(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    Ok(Json(Value::Array(
        state
            .timeline
            .state_events(user.user_id.as_str(), room_id, None)
            .await?,
    )))
}

async fn get_state_empty_key(
    state: State<AppState>,
    auth: Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    q: Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    get_state(state, auth, Path((room_id, event_type, String::new())), q).await
}

async fn get_state(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event = state
        .timeline
        .state_event(user.user_id.as_str(), room_id, &event_type, &state_key)
        .await?;
    if q.get("format").map(String::as_str) == Some("event") {
        return Ok(Json(event));
    }
    Ok(Json(event["content"].clone()))
}

async fn put_state_empty_key(
    state: State<AppState>,
    auth: Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    body: JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    put_state(
        state,
        auth,
        Path((room_id, event_type, String::new())),
        body,
    )
    .await
}

async fn put_state(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    JsonBody(content): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = send_state(&state, &user, room_id, &event_type, &state_key, content).await?;
    Ok(Json(json!({"event_id": event_id})))
}

/// Sends a state event for a client (REST and the WebSocket stream alike).
pub(crate) async fn send_state(
    state: &AppState,
    user: &Requester,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> ApiResult<OwnedEventId> {
    if !content.is_object() {
        return Err(Error::bad_json("State event content must be an object.").into());
    }
    state
        .ratelimit
        .check(Action::Send, user.user_id.as_str())
        .await?;
    if event_type == "m.room.canonical_alias" {
        let alt = content["alt_aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        let aliases: Vec<&str> = content["alias"].as_str().into_iter().chain(alt).collect();
        if aliases
            .iter()
            .any(|a| <&ruma::RoomAliasId>::try_from(*a).is_err())
        {
            return Err(Error::invalid_param("Invalid room alias.").into());
        }
        for alias in aliases {
            match state.core.storage.rooms.get_alias(alias).await? {
                Some((r, _)) if r == room_id.as_str() => {}
                _ => {
                    return Err(Error::new(
                        400,
                        "M_BAD_ALIAS",
                        "Alias does not point to this room.",
                    )
                    .into())
                }
            }
        }
    }
    if state.admin.is_shadow_banned(user.user_id.as_str()) {
        return Ok(shadow_event_id());
    }
    // Setting the same state again is idempotent: it returns the current event.
    if let Some(room) = state.rooms.get(room_id).await? {
        let st = room.read().await;
        if let Some(current) = st.state_event(event_type, state_key) {
            if current.sender == user.user_id && current.content_value() == content {
                return Ok(current.event_id.clone());
            }
        }
    }
    let draft = EventDraft::state(event_type, state_key, content);
    Ok(state
        .rooms
        .send(room_id, &user.user_id, draft, None)
        .await?)
}

/// What a shadow-banned user's send answers: a well-formed event id for an
/// event that was never persisted, so the send looks successful to them and
/// reaches nobody (the admin API's shadow ban).
fn shadow_event_id() -> OwnedEventId {
    let id = format!("${}", engine::util::random_string(43));
    OwnedEventId::try_from(id).unwrap_or_else(|_| ruma::owned_event_id!("$shadowbanned"))
}

/// Sends a message event for a client, idempotent per device and txn id.
pub(crate) async fn send_message(
    state: &AppState,
    user: &Requester,
    room_id: &RoomId,
    event_type: &str,
    txn_id: &str,
    content: Value,
) -> ApiResult<OwnedEventId> {
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be an object.").into());
    }
    state
        .ratelimit
        .check(Action::Send, user.user_id.as_str())
        .await?;
    if state.admin.is_shadow_banned(user.user_id.as_str()) {
        return Ok(shadow_event_id());
    }
    let draft = EventDraft::message(event_type, content);
    let scope = format!("send/{room_id}/{event_type}");
    let txn = Txn {
        device_id: &user.device_id,
        txn_id,
        scope: &scope,
    };
    Ok(state
        .rooms
        .send(room_id, &user.user_id, draft, Some(txn))
        .await?)
}

async fn get_event(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    Ok(Json(
        state
            .timeline
            .event(user.user_id.as_str(), &user.device_id, room_id, &event_id)
            .await?,
    ))
}

fn parse_filter(q: &HashMap<String, String>) -> ApiResult<Filter> {
    match q.get("filter") {
        Some(f) => {
            let v: Value =
                serde_json::from_str(f).map_err(|_| Error::bad_json("filter is not valid JSON"))?;
            Ok(Filter::from_room_event_filter(&v))
        }
        None => Ok(Filter::default()),
    }
}

fn parse_limit(q: &HashMap<String, String>, default: usize) -> ApiResult<usize> {
    match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Error::invalid_param("limit must be an integer").into()),
        None => Ok(default),
    }
}

async fn messages(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let backward = match q.get("dir").map(String::as_str) {
        Some("b") | None => true,
        Some("f") => false,
        _ => return Err(Error::invalid_param("dir must be 'b' or 'f'").into()),
    };
    let filter = parse_filter(&q)?;
    let limit = parse_limit(&q, 10)?;
    let request = || MessagesRequest {
        user_id: user.user_id.as_str(),
        device_id: &user.device_id,
        room_id,
        from: q.get("from").map(String::as_str),
        to: q.get("to").map(String::as_str),
        backward,
        limit,
        filter: filter.clone(),
    };
    let out = state.timeline.messages(request()).await?;
    // Paged back past the oldest event held: the room may have begun before
    // this server joined it. Fetch what came before, then read again.
    let at_start = backward && out.get("end").is_none() && !q.contains_key("to");
    if at_start && state.fed_rooms.backfill_history(room_id).await? > 0 {
        return Ok(Json(state.timeline.messages(request()).await?));
    }
    Ok(Json(out))
}

async fn context(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let filter = parse_filter(&q)?;
    let limit = parse_limit(&q, 10)?.min(100);
    Ok(Json(
        state
            .timeline
            .context(
                user.user_id.as_str(),
                &user.device_id,
                room_id,
                &event_id,
                limit,
                filter,
            )
            .await?,
    ))
}
