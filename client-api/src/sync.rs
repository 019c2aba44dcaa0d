//! `/sync` and filters.

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::{get, post},
    Json, Router,
};
use engine::{
    accounts::Requester,
    sync::{filter::Filter, SyncRequest},
    util::random_string,
    Error,
};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, JsonBody},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(&format!("/_matrix/client/{v}/sync"), get(sync))
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/filter"),
                post(create_filter),
            )
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/filter/{{filter_id}}"),
                get(get_filter),
            );
    }
    r
}

/// The `filter` parameter: inline JSON, or the id of a stored filter.
pub(crate) async fn resolve_filter(
    state: &AppState,
    user: &Requester,
    filter: Option<&str>,
) -> ApiResult<Filter> {
    Ok(match filter {
        None => Filter::default(),
        Some(f) if f.trim_start().starts_with('{') => Filter::from_json(
            &serde_json::from_str::<Value>(f)
                .map_err(|_| Error::bad_json("filter is not valid JSON"))?,
        ),
        Some(id) => {
            let stored = state
                .core
                .storage
                .accounts
                .get_filter(user.user_id.as_str(), id)
                .await?
                .ok_or_else(|| Error::not_found("Unknown filter."))?;
            Filter::from_json(&serde_json::from_str::<Value>(&stored)?)
        }
    })
}

async fn sync(
    State(state): State<AppState>,
    Auth(user): Auth,
    Query(mut q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    // A pending long-poll keeps this future allocated at the size of its
    // largest step: the filter look-up runs in a box of its own, and only
    // the request itself is kept across the wait.
    let filter = Box::pin(resolve_filter(
        &state,
        &user,
        q.get("filter").map(String::as_str),
    ))
    .await?;
    let timeout_ms = match q.get("timeout") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| Error::invalid_param("timeout must be an integer"))?,
        None => 0,
    };
    let request = SyncRequest {
        user_id: user.user_id.to_string(),
        device_id: user.device_id.clone(),
        since: q.remove("since"),
        timeout_ms,
        full_state: q.get("full_state").map(String::as_str) == Some("true"),
        filter,
        set_presence: q.remove("set_presence"),
    };
    drop((q, user));
    Ok(Json(state.sync.sync(&request).await?))
}

async fn create_filter(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    if user_id != user.user_id.as_str() {
        return Err(Error::forbidden("Cannot create filters for other users.").into());
    }
    if !body.is_object() {
        return Err(Error::bad_json("Filter must be an object.").into());
    }
    validate_filter(&body)?;
    if let Some(limit) = body["room"]["timeline"].get("limit") {
        if !limit.is_u64() {
            return Err(
                Error::bad_json("room.timeline.limit must be a non-negative integer").into(),
            );
        }
    }
    let filter_id = random_string(12);
    state
        .core
        .storage
        .accounts
        .create_filter(user.user_id.as_str(), &filter_id, &body.to_string())
        .await?;
    Ok(Json(json!({"filter_id": filter_id})))
}

async fn get_filter(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if user_id != user.user_id.as_str() {
        return Err(Error::forbidden("Cannot read filters of other users.").into());
    }
    let stored = state
        .core
        .storage
        .accounts
        .get_filter(user.user_id.as_str(), &filter_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown filter."))?;
    Ok(Json(serde_json::from_str(&stored)?))
}

/// Rejects filters naming malformed user or room ids, as the spec's schema does.
fn validate_filter(body: &Value) -> ApiResult<()> {
    let room = &body["room"];
    let event_filters = [
        &room["timeline"],
        &room["state"],
        &room["ephemeral"],
        &room["account_data"],
        &body["presence"],
        &body["account_data"],
    ];
    for f in event_filters {
        for key in ["senders", "not_senders"] {
            for id in f[key].as_array().into_iter().flatten() {
                if id
                    .as_str()
                    .is_none_or(|s| <&ruma::UserId>::try_from(s).is_err())
                {
                    return Err(Error::bad_json(format!("{key} must hold user ids")).into());
                }
            }
        }
    }
    for key in ["rooms", "not_rooms"] {
        for f in [room, &room["timeline"], &room["state"], &room["ephemeral"]] {
            for id in f[key].as_array().into_iter().flatten() {
                if id
                    .as_str()
                    .is_none_or(|s| <&ruma::RoomId>::try_from(s).is_err())
                {
                    return Err(Error::bad_json(format!("{key} must hold room ids")).into());
                }
            }
        }
    }
    Ok(())
}
