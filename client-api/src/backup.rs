//! Server-side key backup (spec: "Server-side key backups", `/room_keys`).

use std::collections::BTreeMap;

use axum::{extract::State, Router};
use engine::keys::backup::{BackupSession, BackupVersion};
use engine::Error;
use ruma::{
    api::client::backup::{
        add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version, KeyBackupData, RoomKeyBackup,
    },
    serde::Raw,
    OwnedRoomId, UInt,
};
use serde_json::json;

use crate::{
    error::{ApiError, ApiResult},
    extract::{AppState, Ruma},
    keys::value_of,
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_backup_version::v3::Request, _, _>(r, create_version_route);
    let r = ruma_route::<get_latest_backup_info::v3::Request, _, _>(r, latest_version_route);
    let r = ruma_route::<get_backup_info::v3::Request, _, _>(r, get_version_route);
    let r = ruma_route::<update_backup_version::v3::Request, _, _>(r, update_version_route);
    let r = ruma_route::<delete_backup_version::v3::Request, _, _>(r, delete_version_route);
    let r = ruma_route::<add_backup_keys::v3::Request, _, _>(r, put_keys_route);
    let r = ruma_route::<add_backup_keys_for_room::v3::Request, _, _>(r, put_room_keys_route);
    let r = ruma_route::<add_backup_keys_for_session::v3::Request, _, _>(r, put_session_key_route);
    let r = ruma_route::<get_backup_keys::v3::Request, _, _>(r, get_keys_route);
    let r = ruma_route::<get_backup_keys_for_room::v3::Request, _, _>(r, get_room_keys_route);
    let r = ruma_route::<get_backup_keys_for_session::v3::Request, _, _>(r, get_session_key_route);
    let r = ruma_route::<delete_backup_keys::v3::Request, _, _>(r, delete_keys_route);
    let r = ruma_route::<delete_backup_keys_for_room::v3::Request, _, _>(r, delete_room_keys_route);
    ruma_route::<delete_backup_keys_for_session::v3::Request, _, _>(r, delete_session_key_route)
}

fn raw<T>(value: &serde_json::Value) -> ApiResult<Raw<T>> {
    Raw::from_json_string(value.to_string()).map_err(|e| ApiError(Error::unknown(e.to_string())))
}

/// `{algorithm, auth_data}` as ruma's raw `BackupAlgorithm`.
fn version_parts<T>(v: &BackupVersion) -> ApiResult<(Raw<T>, UInt)> {
    let algorithm = raw(&json!({"algorithm": v.algorithm, "auth_data": v.auth_data}))?;
    Ok((algorithm, UInt::new_saturating(v.count)))
}

fn sessions(list: Vec<BackupSession>) -> ApiResult<BTreeMap<String, Raw<KeyBackupData>>> {
    list.into_iter()
        .map(|s| Ok((s.session_id, raw(&s.data)?)))
        .collect()
}

async fn create_version_route(
    State(state): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<create_backup_version::v3::Response>> {
    let user = req.user()?.clone();
    let body = value_of(req.body.algorithm.json())?;
    let version = state
        .key_backup
        .create_version(&user.user_id, &body)
        .await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(
        version,
    )))
}

async fn latest_version_route(
    State(state): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<RumaResponse<get_latest_backup_info::v3::Response>> {
    let user = req.user()?.clone();
    let v = state.key_backup.version(&user.user_id, None).await?;
    let (algorithm, count) = version_parts(&v)?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(
        algorithm, count, v.etag, v.version,
    )))
}

async fn get_version_route(
    State(state): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_info::v3::Response>> {
    let user = req.user()?.clone();
    let v = state
        .key_backup
        .version(&user.user_id, Some(&req.body.version))
        .await?;
    let (algorithm, count) = version_parts(&v)?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(
        algorithm, count, v.etag, v.version,
    )))
}

async fn update_version_route(
    State(state): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<update_backup_version::v3::Response>> {
    let user = req.user()?.clone();
    let body = value_of(req.body.algorithm.json())?;
    state
        .key_backup
        .update_version(&user.user_id, &req.body.version, &body)
        .await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

async fn delete_version_route(
    State(state): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_version::v3::Response>> {
    let user = req.user()?.clone();
    state
        .key_backup
        .delete_version(&user.user_id, &req.body.version)
        .await?;
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

/// Flattens `room -> session -> data` for the service.
fn flatten(
    rooms: BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>,
) -> ApiResult<Vec<(String, String, serde_json::Value)>> {
    let mut out = Vec::new();
    for (room_id, sessions) in rooms {
        for (session_id, data) in sessions {
            out.push((room_id.to_string(), session_id, value_of(data.json())?));
        }
    }
    Ok(out)
}

async fn put_keys_route(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys::v3::Response>> {
    let user = req.user()?.clone();
    let rooms = req
        .body
        .rooms
        .into_iter()
        .map(|(room, backup)| (room, backup.sessions))
        .collect();
    let (etag, count) = state
        .key_backup
        .put_keys(&user.user_id, &req.body.version, flatten(rooms)?)
        .await?;
    Ok(RumaResponse(add_backup_keys::v3::Response::new(
        etag,
        UInt::new_saturating(count),
    )))
}

async fn put_room_keys_route(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys_for_room::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let rooms = BTreeMap::from([(body.room_id, body.sessions)]);
    let (etag, count) = state
        .key_backup
        .put_keys(&user.user_id, &body.version, flatten(rooms)?)
        .await?;
    Ok(RumaResponse(add_backup_keys_for_room::v3::Response::new(
        etag,
        UInt::new_saturating(count),
    )))
}

async fn put_session_key_route(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys_for_session::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let session = vec![(
        body.room_id.to_string(),
        body.session_id,
        value_of(body.session_data.json())?,
    )];
    let (etag, count) = state
        .key_backup
        .put_keys(&user.user_id, &body.version, session)
        .await?;
    Ok(RumaResponse(
        add_backup_keys_for_session::v3::Response::new(etag, UInt::new_saturating(count)),
    ))
}

async fn get_keys_route(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys::v3::Response>> {
    let user = req.user()?.clone();
    let all = state
        .key_backup
        .keys(&user.user_id, &req.body.version, None, None)
        .await?;
    let mut by_room: BTreeMap<String, Vec<BackupSession>> = BTreeMap::new();
    for s in all {
        by_room.entry(s.room_id.clone()).or_default().push(s);
    }
    let mut rooms = BTreeMap::new();
    for (room_id, list) in by_room {
        if let Ok(room_id) = OwnedRoomId::try_from(room_id) {
            rooms.insert(room_id, RoomKeyBackup::new(sessions(list)?));
        }
    }
    Ok(RumaResponse(get_backup_keys::v3::Response::new(rooms)))
}

async fn get_room_keys_route(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys_for_room::v3::Response>> {
    let user = req.user()?.clone();
    let list = state
        .key_backup
        .keys(
            &user.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            None,
        )
        .await?;
    Ok(RumaResponse(get_backup_keys_for_room::v3::Response::new(
        sessions(list)?,
    )))
}

async fn get_session_key_route(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys_for_session::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let found = state
        .key_backup
        .keys(
            &user.user_id,
            &body.version,
            Some(body.room_id.as_str()),
            Some(&body.session_id),
        )
        .await?;
    let session = found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError(Error::not_found("No backed-up key for this session.")))?;
    Ok(RumaResponse(
        get_backup_keys_for_session::v3::Response::new(raw(&session.data)?),
    ))
}

async fn delete_keys_route(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys::v3::Response>> {
    let user = req.user()?.clone();
    let (etag, count) = state
        .key_backup
        .delete_keys(&user.user_id, &req.body.version, None, None)
        .await?;
    Ok(RumaResponse(delete_backup_keys::v3::Response::new(
        etag,
        UInt::new_saturating(count),
    )))
}

async fn delete_room_keys_route(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys_for_room::v3::Response>> {
    let user = req.user()?.clone();
    let (etag, count) = state
        .key_backup
        .delete_keys(
            &user.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            None,
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_room::v3::Response::new(etag, UInt::new_saturating(count)),
    ))
}

async fn delete_session_key_route(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys_for_session::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let (etag, count) = state
        .key_backup
        .delete_keys(
            &user.user_id,
            &body.version,
            Some(body.room_id.as_str()),
            Some(&body.session_id),
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_session::v3::Response::new(etag, UInt::new_saturating(count)),
    ))
}
