//! Account registration: `/register` with user-interactive auth, availability,
//! registration-token validity, and Synapse-compatible shared-secret registration.

use std::time::Duration;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, State},
    routing::get,
    Json, Router,
};
use engine::{
    accounts::{shared_secret::verify_mac, RegisterParams},
    ratelimit::Action,
    util::now_ms,
    Error,
};
use ruma::{
    api::client::account::{
        check_registration_token_validity, get_username_availability, register,
    },
    OwnedDeviceId, OwnedUserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, JsonBody, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<register::v3::Request, _, _>(r, register_route);
    let r = ruma_route::<get_username_availability::v3::Request, _, _>(r, available_route);
    let r =
        ruma_route::<check_registration_token_validity::v1::Request, _, _>(r, token_validity_route);
    r.route(
        "/_synapse/admin/v1/register",
        get(shared_secret_nonce).post(shared_secret_register),
    )
}

/// The UIA flows registration offers under the current policy.
fn flows(state: &AppState) -> Vec<Vec<&'static str>> {
    if state.core.config.registration.require_token {
        vec![vec!["m.login.registration_token"]]
    } else {
        vec![vec!["m.login.dummy"]]
    }
}

async fn register_route(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Ruma<register::v3::Request>,
) -> ApiResult<RumaResponse<register::v3::Response>> {
    let reg = &state.core.config.registration;
    if !reg.enabled && !reg.require_token {
        return Err(Error::forbidden("Registration has been disabled.").into());
    }
    let mut body = req.body;
    // Localparts are lower-case; accept capitals as Synapse does, by folding them.
    body.username = body.username.map(|u| u.to_lowercase());
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::guest_access_forbidden().into());
    }
    if let Some(username) = &body.username {
        // Validate before the UIA round-trip, as clients expect.
        state.accounts.validate_localpart(username)?;
        if !state.accounts.is_available(username).await? {
            return Err(Error::user_in_use().into());
        }
    }
    let flows = flows(&state);
    let auth = crate::devices::auth_json(body.auth.as_ref())?;
    let session = complete_uia(&state, &flows, auth.as_ref()).await?;
    state
        .ratelimit
        .check(Action::Register, &peer.ip().to_string())
        .await?;
    if state.core.config.registration.require_token {
        let token = auth
            .as_ref()
            .and_then(|a| a["token"].as_str())
            .unwrap_or_default();
        if !state
            .core
            .storage
            .accounts
            .use_registration_token(token, now_ms())
            .await?
        {
            return Err(state
                .accounts
                .uia
                .challenge(
                    &flows,
                    Some(&session),
                    Some(Error::new(
                        401,
                        "M_UNAUTHORIZED",
                        "Invalid registration token.",
                    )),
                )
                .await
                .into());
        }
    }
    state.accounts.uia.finish(&session).await;
    let (user_id, session) = state
        .accounts
        .register(RegisterParams {
            username: body.username,
            password: body.password,
            device_id: body.device_id.map(|d| d.to_string()),
            initial_device_display_name: body.initial_device_display_name,
            inhibit_login: body.inhibit_login,
            refresh_token: body.refresh_token,
            auth: auth.clone(),
            is_guest: false,
        })
        .await?;
    let mut resp = register::v3::Response::new(user_id);
    if let Some(s) = session {
        resp.access_token = Some(s.access_token);
        resp.device_id = Some(OwnedDeviceId::from(s.device_id));
        resp.refresh_token = s.refresh_token;
        resp.expires_in = s.expires_in_ms.map(Duration::from_millis);
    }
    Ok(RumaResponse(resp))
}

/// Runs one UIA round for registration; returns the session once a flow is done.
async fn complete_uia(
    state: &AppState,
    flows: &[Vec<&str>],
    auth: Option<&Value>,
) -> ApiResult<String> {
    let Some(auth) = auth else {
        return Err(state.accounts.uia.challenge(flows, None, None).await.into());
    };
    let session = auth["session"].as_str().map(str::to_owned);
    let Some(session_id) = session.clone() else {
        // A stage without a session starts one (allowed for a single-stage flow).
        let challenge = state.accounts.uia.challenge(flows, None, None).await;
        let id = challenge
            .extra
            .as_ref()
            .and_then(|e| e["session"].as_str())
            .unwrap_or_default()
            .to_owned();
        return finish_stage(state, flows, auth, id).await;
    };
    if !state.accounts.uia.exists(&session_id).await {
        return Err(state
            .accounts
            .uia
            .challenge(
                flows,
                None,
                Some(Error::new(401, "M_UNKNOWN", "Unknown UIA session.")),
            )
            .await
            .into());
    }
    finish_stage(state, flows, auth, session_id).await
}

async fn finish_stage(
    state: &AppState,
    flows: &[Vec<&str>],
    auth: &Value,
    session: String,
) -> ApiResult<String> {
    let uia = &state.accounts.uia;
    match auth["type"].as_str() {
        Some("m.login.dummy") if flows.iter().any(|f| f.contains(&"m.login.dummy")) => {
            uia.complete_stage(&session, "m.login.dummy").await
        }
        Some("m.login.registration_token")
            if flows
                .iter()
                .any(|f| f.contains(&"m.login.registration_token")) =>
        {
            let token = auth["token"].as_str().unwrap_or_default();
            if !state
                .core
                .storage
                .accounts
                .registration_token_valid(token, now_ms())
                .await?
            {
                return Err(uia
                    .challenge(
                        flows,
                        Some(&session),
                        Some(Error::new(
                            401,
                            "M_UNAUTHORIZED",
                            "Invalid registration token.",
                        )),
                    )
                    .await
                    .into());
            }
            uia.complete_stage(&session, "m.login.registration_token")
                .await;
        }
        None => {}
        Some(other) => {
            return Err(uia
                .challenge(
                    flows,
                    Some(&session),
                    Some(Error::new(
                        401,
                        "M_UNRECOGNIZED",
                        format!("Unsupported stage {other}"),
                    )),
                )
                .await
                .into());
        }
    }
    if uia.flow_done(&session, flows).await {
        Ok(session)
    } else {
        Err(uia.challenge(flows, Some(&session), None).await.into())
    }
}

async fn available_route(
    State(state): State<AppState>,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<RumaResponse<get_username_availability::v3::Response>> {
    if !state.accounts.is_available(&req.body.username).await? {
        return Err(Error::user_in_use().into());
    }
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

async fn token_validity_route(
    State(state): State<AppState>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<RumaResponse<check_registration_token_validity::v1::Response>> {
    let valid = state
        .core
        .storage
        .accounts
        .registration_token_valid(&req.body.token, now_ms())
        .await?;
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}

async fn shared_secret_nonce(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    if state.core.config.registration.shared_secret.is_none() {
        return Err(Error::new(
            400,
            "M_UNKNOWN",
            "Shared secret registration is not enabled",
        )
        .into());
    }
    Ok(Json(
        json!({"nonce": state.accounts.shared_secret.new_nonce().await}),
    ))
}

#[derive(Deserialize)]
struct SharedSecretBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    mac: String,
    displayname: Option<String>,
}

async fn shared_secret_register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SharedSecretBody>,
) -> ApiResult<Json<Value>> {
    let Some(secret) = state.core.config.registration.shared_secret.clone() else {
        return Err(Error::new(
            400,
            "M_UNKNOWN",
            "Shared secret registration is not enabled",
        )
        .into());
    };
    if !state.accounts.shared_secret.take_nonce(&body.nonce).await {
        return Err(Error::new(400, "M_UNKNOWN", "Unrecognised nonce").into());
    }
    if !verify_mac(
        &secret,
        &body.nonce,
        &body.username,
        &body.password,
        body.admin,
        &body.mac,
    ) {
        return Err(Error::forbidden("HMAC incorrect").into());
    }
    let user_id: OwnedUserId = state
        .accounts
        .validate_localpart(&body.username.to_lowercase())?;
    state
        .accounts
        .create_account(&user_id, Some(&body.password), body.admin, body.displayname)
        .await?;
    let session = state
        .accounts
        .issue_session(&user_id, None, None, false)
        .await?;
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.core.server_name,
    })))
}
