//! `POST /_matrix/push/v1/notify` (Push Gateway API): fans one notification
//! out to its devices and answers the pushkeys the vendors rejected.
//!
//! Input is checked completely (JSON, shape, every `app_id` known) before any
//! device is contacted, so a bad request never delivers half of itself.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header::CONTENT_TYPE, HeaderMap},
    Json,
};
use futures::future::join_all;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::{
    delivery::{deliver, Outcome},
    error::ApiError,
    payload::NotifyRequest,
    Shared,
};

pub async fn notify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let span = tracing::info_span!("notify", request_id = %next_request_id());
    let result = handle(&shared, &headers, body).instrument(span).await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status.as_u16(),
    };
    shared.metrics.request(status);
    result
}

async fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::not_json("Content-Type must be application/json"));
    }
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body: {e}"))
        } else {
            ApiError::bad_json(format!("request body: {e}"))
        }
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::not_json(format!("body is not JSON: {e}")))?;
    let request: NotifyRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_json(format!("invalid notification: {e}")))?;
    let n = request.notification;
    tracing::debug!(event_id = ?n.event_id, devices = n.devices.len(), "notification");
    for device in &n.devices {
        if device.pushkey.is_empty() {
            return Err(ApiError::bad_json("a device has an empty pushkey"));
        }
        if !shared.apps.contains_key(&device.app_id) {
            return Err(ApiError::invalid_param(format!(
                "unknown app_id {:?}: not configured on this gateway",
                device.app_id
            )));
        }
    }

    let outcomes = join_all(n.devices.iter().map(|device| async {
        let Some(app) = shared.apps.get(&device.app_id) else {
            return Outcome::Failed;
        };
        let vendor = app.vendor.name();
        if let Some(event_id) = &n.event_id {
            if shared.dedup.seen(event_id, &app.app_id, &device.pushkey) {
                shared.metrics.delivery(&app.app_id, vendor, "duplicate");
                return Outcome::Delivered;
            }
        }
        let outcome = deliver(app, shared.policy, &shared.metrics, &n, device).await;
        shared
            .metrics
            .delivery(&app.app_id, vendor, outcome.label());
        if let (Outcome::Delivered, Some(event_id)) = (outcome, &n.event_id) {
            shared.dedup.record(event_id, &app.app_id, &device.pushkey);
        }
        outcome
    }))
    .await;

    if outcomes.contains(&Outcome::RetryLater) {
        return Err(ApiError::upstream(
            "a push vendor is unavailable for some devices; retry later",
        ));
    }
    let rejected: Vec<&str> = n
        .devices
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Outcome::Rejected)
        .map(|(d, _)| d.pushkey.as_str())
        .collect();
    Ok(Json(json!({ "rejected": rejected })))
}

/// A process-unique id for each /notify request, so its log lines (one per
/// vendor failure) can be grouped.
fn next_request_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
