//! The server: version, statistics, server notices.

use axum::{body::Bytes, extract::State, Json};
use engine::admin::ServerNotice;
use serde::Deserialize;
use serde_json::Value;

use super::{body, Admin, AdminRoutes};
use crate::{error::ApiResult, extract::AppState};

pub(super) fn routes(r: AdminRoutes) -> AdminRoutes {
    r.get("/_synapse/admin/v1/server_version", version)
        .get("/_synapse/admin/v1/statistics/server", stats)
        .post("/_synapse/admin/v1/send_server_notice", send_notice)
}

async fn version(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.server_version()))
}

async fn stats(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(state.admin.server_stats().await?))
}

#[derive(Deserialize)]
struct NoticeBody {
    user_id: String,
    content: Value,
    #[serde(rename = "type")]
    event_type: Option<String>,
    state_key: Option<String>,
}

async fn send_notice(
    State(state): State<AppState>,
    _admin: Admin,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let b: NoticeBody = body(&bytes)?;
    let notice = ServerNotice {
        user_id: b.user_id,
        event_type: b.event_type,
        state_key: b.state_key,
        content: b.content,
    };
    Ok(Json(state.admin.send_server_notice(notice).await?))
}
