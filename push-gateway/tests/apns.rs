//! Notifications through the gateway to the APNs simulator (HTTP/2 + TLS,
//! ES256 provider tokens).

mod common;

use axum::http::Version;
use base64::Engine;
use common::{apns_token, device, notification, APNS_APP};
use futures::future::join_all;
use push_gateway::vendor_sim::Answer;
use serde_json::json;

#[tokio::test]
async fn notify_reaches_apns_over_http2_with_a_valid_provider_token() {
    let env = common::start(|_| {}).await;
    let token = apns_token(1);
    let (status, body) = env
        .notify(&notification("$a1", json!([device(APNS_APP, &token)])))
        .await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));

    let delivered = env.apns.delivered();
    assert_eq!(delivered.len(), 1);
    let push = &delivered[0];
    assert_eq!(push.version, Version::HTTP_2);
    assert_eq!(push.device_token, token);
    assert_eq!(push.topic, APNS_APP);
    assert_eq!(push.push_type, "alert");
    assert_eq!(push.priority.as_deref(), Some("10"));
    assert!(push.expiration.as_deref().unwrap().parse::<u64>().is_ok());
    assert_eq!(push.payload["aps"]["alert"]["title"], "Mission Control");
    assert_eq!(
        push.payload["aps"]["alert"]["body"],
        "Major Tom: I'm floating in a most peculiar way."
    );
    assert_eq!(push.payload["aps"]["badge"], 2);
    assert_eq!(push.payload["aps"]["sound"], "bing");
    assert_eq!(push.payload["event_id"], "$a1");
    assert_eq!(env.apns.auth_failures(), 0);
}

#[tokio::test]
async fn base64_pushkeys_are_sent_as_hex_device_tokens() {
    let env = common::start(|_| {}).await;
    let raw = [0x5au8; 32];
    let pushkey = base64::engine::general_purpose::STANDARD.encode(raw);
    let (status, _) = env
        .notify(&notification("$b64", json!([device(APNS_APP, &pushkey)])))
        .await;
    assert_eq!(status, 200);
    assert_eq!(env.apns.delivered()[0].device_token, "5a".repeat(32));
}

#[tokio::test]
async fn event_id_only_pushers_get_background_pushes() {
    let env = common::start(|_| {}).await;
    let mut dev = device(APNS_APP, &apns_token(2));
    dev["data"] = json!({ "format": "event_id_only" });
    assert_eq!(env.notify(&notification("$bg", json!([dev]))).await.0, 200);
    let push = &env.apns.delivered()[0];
    assert_eq!(push.push_type, "background");
    assert_eq!(push.priority.as_deref(), Some("5"));
    assert_eq!(push.payload["aps"]["content-available"], 1);
    assert!(push.payload["aps"].get("alert").is_none());
    assert_eq!(push.payload["event_id"], "$bg");
}

#[tokio::test]
async fn one_provider_token_serves_many_notifications() {
    let env = &common::start(|_| {}).await;
    let requests = (0..15).map(|i| {
        let body = notification(
            &format!("$p{i}"),
            json!([device(APNS_APP, &apns_token(100 + i))]),
        );
        async move { env.notify(&body).await.0 }
    });
    assert!(join_all(requests).await.iter().all(|s| *s == 200));
    assert_eq!(env.apns.delivered().len(), 15);
    // A changing token would also have drawn TooManyProviderTokenUpdates.
    assert_eq!(env.apns.distinct_provider_tokens(), 1);
    assert_eq!(env.apns.auth_failures(), 0);
}

#[tokio::test]
async fn unregistered_and_bad_device_tokens_are_rejected() {
    let env = common::start(|_| {}).await;
    let (gone, bad, fine) = (apns_token(3), apns_token(4), apns_token(5));
    env.apns.script(&gone, Answer::Unregistered);
    env.apns.script(&bad, Answer::InvalidToken);
    // Too short to be a device token: APNs answers BadDeviceToken.
    let short = "q80=";
    let devices = json!([
        device(APNS_APP, &gone),
        device(APNS_APP, &fine),
        device(APNS_APP, &bad),
        device(APNS_APP, short)
    ]);
    let (status, body) = env.notify(&notification("$gone", devices)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "rejected": [gone, bad, short] }));
    assert_eq!(env.apns.delivered().len(), 1);
}

#[tokio::test]
async fn apns_server_errors_and_rate_limits_are_retried() {
    let env = common::start(|_| {}).await;
    let (flaky, busy) = (apns_token(6), apns_token(7));
    env.apns.script(&flaky, Answer::Unavailable { times: 2 });
    env.apns.script(
        &busy,
        Answer::TooManyRequests {
            times: 1,
            retry_after_secs: 0,
        },
    );
    let devices = json!([device(APNS_APP, &flaky), device(APNS_APP, &busy)]);
    let (status, body) = env.notify(&notification("$retry", devices)).await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));
    assert_eq!(env.apns.attempts(&flaky), 3);
    assert_eq!(env.apns.attempts(&busy), 2);
    assert_eq!(env.apns.delivered().len(), 2);
}
