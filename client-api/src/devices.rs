//! Device management: list, get, rename, delete (behind password UIA).

use axum::{extract::State, Router};
use engine::{accounts::Requester, storage::DeviceRecord, Error};
use ruma::{
    api::client::device::{
        self, delete_device, delete_devices, get_device, get_devices, update_device,
    },
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
};
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    extract::{AppState, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_devices::v3::Request, _, _>(r, list_route);
    let r = ruma_route::<get_device::v3::Request, _, _>(r, get_route);
    let r = ruma_route::<update_device::v3::Request, _, _>(r, update_route);
    let r = ruma_route::<delete_device::v3::Request, _, _>(r, delete_route);
    ruma_route::<delete_devices::v3::Request, _, _>(r, delete_many_route)
}

fn to_ruma(d: DeviceRecord) -> device::Device {
    let mut out = device::Device::new(OwnedDeviceId::from(d.device_id));
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d
        .last_seen_ts
        .and_then(|t| UInt::new(t as u64))
        .map(MilliSecondsSinceUnixEpoch);
    out
}

async fn list_route(
    State(state): State<AppState>,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<RumaResponse<get_devices::v3::Response>> {
    let devices = state
        .core
        .storage
        .accounts
        .list_devices(req.user()?.user_id.as_str())
        .await?;
    Ok(RumaResponse(get_devices::v3::Response::new(
        devices.into_iter().map(to_ruma).collect(),
    )))
}

async fn get_route(
    State(state): State<AppState>,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<RumaResponse<get_device::v3::Response>> {
    let device = state
        .core
        .storage
        .accounts
        .get_device(req.user()?.user_id.as_str(), req.body.device_id.as_str())
        .await?
        .ok_or_else(|| ApiError(Error::not_found("Device not found.")))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_ruma(device))))
}

async fn update_route(
    State(state): State<AppState>,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<RumaResponse<update_device::v3::Response>> {
    let user = req.user()?;
    let found = state
        .core
        .storage
        .accounts
        .set_device_display_name(
            user.user_id.as_str(),
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await?;
    if !found {
        return Err(Error::not_found("Device not found.").into());
    }
    Ok(RumaResponse(update_device::v3::Response::new()))
}

/// A request's `auth` (UIA) object as JSON, for the UIA checks.
pub(crate) fn auth_json(
    auth: Option<&ruma::api::client::uiaa::AuthData>,
) -> ApiResult<Option<Value>> {
    Ok(auth.map(serde_json::to_value).transpose()?)
}

/// Password UIA: the requester proves their password before destructive changes.
pub async fn require_password_uia(
    state: &AppState,
    user: &Requester,
    auth: Option<Value>,
) -> ApiResult<()> {
    let flows = vec![vec!["m.login.password"]];
    let uia = &state.accounts.uia;
    let Some(auth) = auth else {
        return Err(uia.challenge(&flows, None, None).await.into());
    };
    let session = auth["session"].as_str().map(str::to_owned);
    if auth["type"].as_str() != Some("m.login.password") {
        return Err(uia.challenge(&flows, session.as_deref(), None).await.into());
    }
    let identified = auth["identifier"]["user"]
        .as_str()
        .or(auth["user"].as_str())
        .unwrap_or(user.user_id.as_str());
    let same_user = identified == user.user_id.as_str() || identified == user.user_id.localpart();
    let password = auth["password"].as_str().unwrap_or_default();
    if !same_user {
        return Err(Error::forbidden("You may only authenticate as yourself.").into());
    }
    if state
        .accounts
        .check_password(&user.user_id, password)
        .await
        .is_err()
    {
        return Err(uia
            .challenge(
                &flows,
                session.as_deref(),
                Some(Error::forbidden("Invalid password.")),
            )
            .await
            .into());
    }
    if let Some(s) = session {
        uia.finish(&s).await;
    }
    Ok(())
}

async fn delete_route(
    State(state): State<AppState>,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<RumaResponse<delete_device::v3::Response>> {
    let user = req.user()?.clone();
    let auth = auth_json(req.body.auth.as_ref())?;
    if state
        .core
        .storage
        .accounts
        .get_device(user.user_id.as_str(), req.body.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(Error::not_found("Device not found.").into());
    }
    require_password_uia(&state, &user, auth).await?;
    state
        .core
        .storage
        .accounts
        .delete_device(user.user_id.as_str(), req.body.device_id.as_str())
        .await?;
    // The device's keys and to-device inbox go with it.
    state
        .keys
        .devices_removed(&user.user_id, &[req.body.device_id.to_string()])
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

async fn delete_many_route(
    State(state): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<RumaResponse<delete_devices::v3::Response>> {
    let user = req.user()?.clone();
    let auth = auth_json(req.body.auth.as_ref())?;
    require_password_uia(&state, &user, auth).await?;
    for device_id in &req.body.devices {
        state
            .core
            .storage
            .accounts
            .delete_device(user.user_id.as_str(), device_id.as_str())
            .await?;
    }
    let removed: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    state.keys.devices_removed(&user.user_id, &removed).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
