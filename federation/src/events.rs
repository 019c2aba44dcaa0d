//! Reading our copy of a room: `/event`, `/state`, `/state_ids`,
//! `/event_auth`, `/backfill` and `/get_missing_events`.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, RawQuery, State},
    routing::{get, post},
    Json, Router,
};
use engine::{services::Services, Error};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    auth::{FedRequest, Origin},
    error::{FedError, FedResult},
};

type AppState = Arc<Services>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/federation/v1/event/{event_id}", get(event))
        .route("/_matrix/federation/v1/state/{room_id}", get(state))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(event_auth),
        )
        .route("/_matrix/federation/v1/backfill/{room_id}", get(backfill))
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(get_missing_events),
        )
}

#[derive(Deserialize)]
struct AtEvent {
    event_id: OwnedEventId,
}

async fn event(
    State(s): State<AppState>,
    Path(event_id): Path<OwnedEventId>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(s.fed_rooms.get_event(&origin, &event_id).await?))
}

async fn state(
    State(s): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    Query(q): Query<AtEvent>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms.state(&origin, &room_id, &q.event_id).await?,
    ))
}

async fn state_ids(
    State(s): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    Query(q): Query<AtEvent>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms
            .state_ids(&origin, &room_id, &q.event_id)
            .await?,
    ))
}

async fn event_auth(
    State(s): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms.event_auth(&origin, &room_id, &event_id).await?,
    ))
}

/// `?v=$a&v=$b&limit=10`: repeated `v`, so parsed by hand.
async fn backfill(
    State(s): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    Origin(origin): Origin,
) -> FedResult<Json<Value>> {
    let mut from = Vec::new();
    let mut limit = 10usize;
    for (k, v) in query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        let v = percent_decode(v);
        match k {
            "v" => from.push(
                OwnedEventId::try_from(v.as_str())
                    .map_err(|_| FedError(Error::invalid_param("invalid event id in v")))?,
            ),
            "limit" => {
                limit = v
                    .parse()
                    .map_err(|_| FedError(Error::invalid_param("invalid limit")))?
            }
            _ => {}
        }
    }
    if from.is_empty() {
        return Err(FedError(Error::missing_param("v is required")));
    }
    Ok(Json(
        s.fed_rooms
            .backfill(&origin, &room_id, &from, limit)
            .await?,
    ))
}

async fn get_missing_events(
    State(s): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
    req: FedRequest,
) -> FedResult<Json<Value>> {
    Ok(Json(
        s.fed_rooms
            .get_missing_events(&req.origin, &room_id, &req.body)
            .await?,
    ))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
