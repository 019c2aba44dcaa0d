//! Send-to-device messaging (spec: "Send-to-Device messaging").

use axum::{extract::State, Router};
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};

use crate::{
    error::ApiResult,
    extract::{AppState, Ruma},
    keys::value_of,
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<send_event_to_device::v3::Request, _, _>(r, send_route)
}

async fn send_route(
    State(state): State<AppState>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<RumaResponse<send_event_to_device::v3::Response>> {
    let user = req.user()?.clone();
    let body = req.body;
    let mut messages = std::collections::BTreeMap::new();
    for (user_id, devices) in body.messages {
        let mut out = std::collections::BTreeMap::new();
        for (device, content) in devices {
            let device = match device {
                DeviceIdOrAllDevices::DeviceId(d) => d.to_string(),
                DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
            };
            out.insert(device, value_of(content.json())?);
        }
        messages.insert(user_id.to_string(), out);
    }
    state
        .to_device
        .send(
            &user.user_id,
            &user.device_id,
            &body.event_type.to_string(),
            body.txn_id.as_str(),
            messages,
        )
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
