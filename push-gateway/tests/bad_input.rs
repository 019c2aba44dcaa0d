//! Bad requests to /notify get clean Matrix errors, nothing is sent to a
//! vendor, and the gateway keeps serving.

mod common;

use common::{device, notification, APNS_APP, FCM_APP};
use serde_json::{json, Value};

async fn post_raw(env: &common::Env, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = env
        .client
        .post(env.gateway.notify_url())
        .body(body.to_string());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_requests_get_matrix_errors_and_the_gateway_keeps_serving() {
    let env = common::start(|c| c.max_body_bytes = 4096).await;
    let json_ct = Some("application/json");
    let valid = notification("$ok", json!([device(FCM_APP, "t")])).to_string();
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (json_ct, "{not json".into(), 400, "M_NOT_JSON"),
        (json_ct, "".into(), 400, "M_NOT_JSON"),
        (json_ct, "[]".into(), 400, "M_BAD_JSON"),
        (json_ct, "{}".into(), 400, "M_BAD_JSON"),
        (
            json_ct,
            json!({ "notification": {} }).to_string(),
            400,
            "M_BAD_JSON",
        ),
        (
            json_ct,
            json!({ "notification": { "devices": [{ "app_id": FCM_APP }] } }).to_string(),
            400,
            "M_BAD_JSON",
        ),
        (
            json_ct,
            json!({ "notification": { "devices": "x" } }).to_string(),
            400,
            "M_BAD_JSON",
        ),
        (
            json_ct,
            json!({ "notification": { "prio": "urgent", "devices": [] } }).to_string(),
            400,
            "M_BAD_JSON",
        ),
        (
            json_ct,
            json!({ "notification": { "devices": [device(FCM_APP, "")] } }).to_string(),
            400,
            "M_BAD_JSON",
        ),
        (
            json_ct,
            notification(
                "$x",
                json!([device(FCM_APP, "t"), device("im.unknown", "t")]),
            )
            .to_string(),
            400,
            "M_INVALID_PARAM",
        ),
        (None, valid.clone(), 400, "M_NOT_JSON"),
        (Some("text/plain"), valid.clone(), 400, "M_NOT_JSON"),
        (
            json_ct,
            format!("{{\"pad\":\"{}\"}}", "x".repeat(5000)),
            413,
            "M_TOO_LARGE",
        ),
    ];
    for (ct, body, status, errcode) in cases {
        let (got_status, got) = post_raw(&env, ct, &body).await;
        assert_eq!(got_status, status, "{ct:?} {body:.80} -> {got}");
        assert_eq!(got["errcode"], errcode, "{body:.80}");
        assert!(got["error"].is_string());
    }
    // Nothing reached a vendor, not even the known device of the request
    // that also named an unknown app.
    assert!(env.fcm.delivered().is_empty());
    assert_eq!(env.fcm.attempts("t"), 0);

    // Still serving.
    let (status, body) = post_raw(&env, Some("application/json; charset=utf-8"), &valid).await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));
    assert_eq!(env.fcm.delivered().len(), 1);

    let metrics = env.metrics().await;
    assert!(
        metrics.contains("push_gateway_notify_requests_total{status=\"400\"} 12"),
        "{metrics}"
    );
    assert!(metrics.contains("push_gateway_notify_requests_total{status=\"413\"} 1"));
    assert!(metrics.contains("push_gateway_notify_requests_total{status=\"200\"} 1"));
}

#[tokio::test]
async fn a_notification_with_no_devices_rejects_nothing() {
    let env = common::start(|_| {}).await;
    let (status, body) = env
        .notify(&json!({ "notification": { "devices": [] } }))
        .await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));
}

#[tokio::test]
async fn badge_only_updates_are_delivered() {
    // No event_id: a count update. APNs gets a silent badge update.
    let env = common::start(|_| {}).await;
    let body = json!({ "notification": {
        "counts": { "unread": 7 },
        "devices": [device(APNS_APP, &common::apns_token(9)), device(FCM_APP, "badge")],
    }});
    assert_eq!(env.notify(&body).await.0, 200);
    let push = &env.apns.delivered()[0];
    assert_eq!(push.payload["aps"]["badge"], 7);
    assert_eq!(push.push_type, "background");
    let m = &env.fcm.delivered()[0].message;
    assert_eq!(m["data"]["unread_count"], "7");
    assert!(m.get("notification").is_none());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_matrix_errors() {
    let env = common::start(|_| {}).await;
    let base = format!("http://{}", env.gateway.addr);
    let response = env
        .client
        .get(format!("{base}/_matrix/push/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errcode"],
        "M_UNRECOGNIZED"
    );
    let response = env
        .client
        .get(env.gateway.notify_url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errcode"],
        "M_UNRECOGNIZED"
    );
}
