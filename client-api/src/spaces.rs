//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`, a space and
//! the rooms under it, breadth first, across servers.

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use engine::{federation::hierarchy::HierarchyQuery, Error};
use serde_json::Value;

use crate::{
    error::ApiResult,
    extract::{AppState, Auth},
    rooms::parse_room_id,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        "/_matrix/client/v1/rooms/{room_id}/hierarchy",
        get(hierarchy),
    )
}

fn number(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<usize>> {
    q.get(name)
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                Error::invalid_param(format!("`{name}` must be a non-negative integer")).into()
            })
        })
        .transpose()
}

async fn hierarchy(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let suggested_only = match q.get("suggested_only").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Error::invalid_param("`suggested_only` must be true or false").into())
        }
    };
    let query = HierarchyQuery {
        suggested_only,
        max_depth: number(&q, "max_depth")?,
        limit: number(&q, "limit")?,
        from: q.get("from").cloned(),
    };
    Ok(Json(
        state
            .fed_rooms
            .hierarchy(room_id, &user.user_id, &query)
            .await?,
    ))
}
