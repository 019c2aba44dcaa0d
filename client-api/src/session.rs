//! Login, token refresh, logout and `whoami`.

use std::time::Duration;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, State},
    Router,
};
use engine::{ratelimit::Action, Error};
use ruma::{
    api::client::{
        account::whoami,
        session::{get_login_types, login, logout, logout_all, refresh_token},
        uiaa::UserIdentifier,
    },
    OwnedDeviceId,
};

use crate::{
    error::ApiResult,
    extract::{AppState, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_login_types::v3::Request, _, _>(r, login_types_route);
    let r = ruma_route::<login::v3::Request, _, _>(r, login_route);
    let r = ruma_route::<refresh_token::v3::Request, _, _>(r, refresh_route);
    let r = ruma_route::<logout::v3::Request, _, _>(r, logout_route);
    let r = ruma_route::<logout_all::v3::Request, _, _>(r, logout_all_route);
    ruma_route::<whoami::v3::Request, _, _>(r, whoami_route)
}

async fn login_types_route(
    _req: Ruma<get_login_types::v3::Request>,
) -> ApiResult<RumaResponse<get_login_types::v3::Response>> {
    use get_login_types::v3::{LoginType, PasswordLoginType};
    Ok(RumaResponse(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ])))
}

async fn login_route(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Ruma<login::v3::Request>,
) -> ApiResult<RumaResponse<login::v3::Response>> {
    let body = req.body;
    let login::v3::LoginInfo::Password(password) = &body.login_info else {
        return Err(Error::new(400, "M_UNKNOWN", "Unsupported login type.").into());
    };
    let user = match &password.identifier {
        Some(UserIdentifier::Matrix(id)) => id.user.clone(),
        _ => {
            return Err(Error::new(
                400,
                "M_UNKNOWN",
                "Only m.id.user identifiers are supported.",
            )
            .into())
        }
    };
    state
        .ratelimit
        .check(Action::Login, &peer.ip().to_string())
        .await?;
    state.ratelimit.check(Action::Login, &user).await?;
    let user_id = state
        .accounts
        .login_password(&user, &password.password)
        .await?;
    let session = state
        .accounts
        .issue_session(
            &user_id,
            body.device_id.map(|d| d.to_string()),
            body.initial_device_display_name,
            body.refresh_token,
        )
        .await?;
    let mut resp = login::v3::Response::new(
        user_id,
        session.access_token,
        OwnedDeviceId::from(session.device_id),
    );
    resp.refresh_token = session.refresh_token;
    resp.expires_in = session.expires_in_ms.map(Duration::from_millis);
    Ok(RumaResponse(resp))
}

async fn refresh_route(
    State(state): State<AppState>,
    req: Ruma<refresh_token::v3::Request>,
) -> ApiResult<RumaResponse<refresh_token::v3::Response>> {
    let session = state.accounts.refresh(&req.body.refresh_token).await?;
    let mut resp = refresh_token::v3::Response::new(session.access_token);
    resp.refresh_token = session.refresh_token;
    resp.expires_in_ms = session.expires_in_ms.map(Duration::from_millis);
    Ok(RumaResponse(resp))
}

async fn logout_route(
    State(state): State<AppState>,
    req: Ruma<logout::v3::Request>,
) -> ApiResult<RumaResponse<logout::v3::Response>> {
    let user = req.user()?;
    state.accounts.logout(user).await?;
    // The device's keys and to-device inbox go with it.
    state
        .keys
        .devices_removed(&user.user_id, std::slice::from_ref(&user.device_id))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

async fn logout_all_route(
    State(state): State<AppState>,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<RumaResponse<logout_all::v3::Response>> {
    let user_id = &req.user()?.user_id;
    let devices: Vec<String> = state
        .core
        .storage
        .accounts
        .list_devices(user_id.as_str())
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    state.accounts.logout_all(user_id).await?;
    // Every device's keys and to-device inbox go with them.
    state.keys.devices_removed(user_id, &devices).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

async fn whoami_route(
    req: Ruma<whoami::v3::Request>,
) -> ApiResult<RumaResponse<whoami::v3::Response>> {
    let user = req.user()?;
    let mut resp = whoami::v3::Response::new(user.user_id.clone(), false);
    resp.device_id = Some(OwnedDeviceId::from(user.device_id.clone()));
    Ok(RumaResponse(resp))
}
