//! Notifications through the gateway to the FCM HTTP v1 simulator.

mod common;

use std::time::{Duration, Instant};

use common::{device, notification, FCM_APP};
use futures::future::join_all;
use push_gateway::vendor_sim::Answer;
use serde_json::json;

#[tokio::test]
async fn notify_reaches_fcm_with_a_valid_bearer_token() {
    let env = common::start(|_| {}).await;
    let (status, body) = env
        .notify(&notification("$ev1", json!([device(FCM_APP, "tok-1")])))
        .await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));

    let delivered = env.fcm.delivered();
    assert_eq!(delivered.len(), 1);
    let m = &delivered[0].message;
    assert_eq!(delivered[0].token, "tok-1");
    assert!(delivered[0].bearer.starts_with("ya29.sim-"));
    assert_eq!(m["notification"]["title"], "Mission Control");
    assert_eq!(
        m["notification"]["body"],
        "Major Tom: I'm floating in a most peculiar way."
    );
    assert_eq!(m["data"]["event_id"], "$ev1");
    assert_eq!(m["data"]["room_id"], "!slw48wfj34rtnrf:example.com");
    assert_eq!(m["data"]["unread_count"], "2");
    assert_eq!(m["android"]["priority"], "HIGH");
    assert_eq!(env.fcm.token_exchanges(), 1);
    assert_eq!(env.fcm.auth_failures(), 0);
}

#[tokio::test]
async fn event_id_only_pushers_get_data_only_messages() {
    let env = common::start(|_| {}).await;
    let mut dev = device(FCM_APP, "tok-data");
    dev["data"] = json!({ "format": "event_id_only" });
    let mut body = notification("$ev2", json!([dev]));
    body["notification"]["prio"] = json!("low");
    assert_eq!(env.notify(&body).await.0, 200);
    let m = env.fcm.delivered()[0].message.clone();
    assert!(m.get("notification").is_none(), "{m}");
    assert!(m["data"].get("sender").is_none());
    assert_eq!(m["data"]["event_id"], "$ev2");
    assert_eq!(m["android"]["priority"], "NORMAL");
}

#[tokio::test]
async fn one_oauth_exchange_serves_many_notifications() {
    let env = &common::start(|_| {}).await;
    let requests = (0..20).map(|i| {
        let body = notification(
            &format!("$many{i}"),
            json!([device(FCM_APP, &format!("tok-{i}"))]),
        );
        async move { env.notify(&body).await.0 }
    });
    assert!(join_all(requests).await.iter().all(|s| *s == 200));
    assert_eq!(env.fcm.delivered().len(), 20);
    assert_eq!(env.fcm.token_exchanges(), 1);
    let metrics = env.metrics().await;
    assert!(metrics.contains(&format!(
        "push_gateway_deliveries_total{{app_id=\"{FCM_APP}\",vendor=\"fcm\",outcome=\"delivered\"}} 20"
    )));
    assert!(metrics.contains(&format!(
        "push_gateway_auth_tokens_total{{app_id=\"{FCM_APP}\"}} 1"
    )));
}

#[tokio::test]
async fn an_expired_access_token_is_renewed() {
    let env = common::start(|_| {}).await;
    // Tokens shorter-lived than the gateway's renewal margin are renewed on every use.
    env.fcm.set_token_lifetime(Duration::from_secs(1));
    for i in 0..2 {
        let body = notification(&format!("$exp{i}"), json!([device(FCM_APP, "tok-exp")]));
        assert_eq!(env.notify(&body).await.0, 200);
    }
    assert_eq!(env.fcm.token_exchanges(), 2);
    assert_eq!(env.fcm.delivered().len(), 2);
}

#[tokio::test]
async fn unregistered_and_invalid_tokens_are_rejected() {
    let env = common::start(|_| {}).await;
    env.fcm.script("gone", Answer::Unregistered);
    env.fcm.script("bogus", Answer::InvalidToken);
    let devices = json!([
        device(FCM_APP, "gone"),
        device(FCM_APP, "fine"),
        device(FCM_APP, "bogus")
    ]);
    let (status, body) = env.notify(&notification("$rej", devices)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "rejected": ["gone", "bogus"] }));
    assert_eq!(env.fcm.delivered().len(), 1);
    // Permanent answers are not retried.
    assert_eq!(env.fcm.attempts("gone"), 1);
    assert_eq!(env.fcm.attempts("bogus"), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let env = common::start(|_| {}).await;
    env.fcm.script("flaky", Answer::Unavailable { times: 2 });
    let (status, body) = env
        .notify(&notification("$5xx", json!([device(FCM_APP, "flaky")])))
        .await;
    assert_eq!((status, body), (200, json!({ "rejected": [] })));
    assert_eq!(env.fcm.attempts("flaky"), 3);
    assert_eq!(env.fcm.delivered().len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after() {
    let env = common::start(|_| {}).await;
    env.fcm.script(
        "busy",
        Answer::TooManyRequests {
            times: 1,
            retry_after_secs: 1,
        },
    );
    let started = Instant::now();
    let (status, _) = env
        .notify(&notification("$429", json!([device(FCM_APP, "busy")])))
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(env.fcm.attempts("busy"), 2);
    assert_eq!(env.fcm.delivered().len(), 1);
}

#[tokio::test]
async fn persistent_failures_ask_the_homeserver_to_retry_without_duplicates() {
    let env = common::start(|c| c.max_attempts = 2).await;
    env.fcm.script("down", Answer::Unavailable { times: 2 });
    let devices = json!([device(FCM_APP, "up"), device(FCM_APP, "down")]);
    let body = notification("$retry", devices);
    let (status, error) = env.notify(&body).await;
    assert_eq!(status, 502);
    assert_eq!(error["errcode"], "M_UNKNOWN");
    assert_eq!(env.fcm.delivered().len(), 1);
    // The homeserver retries: only the device that missed it is sent to.
    let (status, _) = env.notify(&body).await;
    assert_eq!(status, 200);
    let tokens: Vec<String> = env.fcm.delivered().into_iter().map(|d| d.token).collect();
    assert_eq!(tokens.iter().filter(|t| *t == "up").count(), 1);
    assert_eq!(tokens.iter().filter(|t| *t == "down").count(), 1);
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let env = common::start(|c| common::limit_concurrency(c, 3)).await;
    env.fcm.set_delay(Duration::from_millis(100));
    let devices: Vec<_> = (0..12).map(|i| device(FCM_APP, &format!("c{i}"))).collect();
    let (status, _) = env.notify(&notification("$conc", json!(devices))).await;
    assert_eq!(status, 200);
    assert_eq!(env.fcm.delivered().len(), 12);
    assert_eq!(env.fcm.max_in_flight(), 3);
}

#[tokio::test]
async fn a_vendor_that_does_not_answer_in_time_is_retried_then_left_to_the_homeserver() {
    let env = common::start(|c| {
        c.vendor_timeout_ms = 200;
        c.max_attempts = 2;
    })
    .await;
    // Obtain the access token first, so only messages:send is slow.
    let warm = notification("$warm", json!([device(FCM_APP, "warm")]));
    assert_eq!(env.notify(&warm).await.0, 200);
    env.fcm.set_delay(Duration::from_secs(2));
    let started = Instant::now();
    let body = notification("$slow", json!([device(FCM_APP, "slow")]));
    let (status, error) = env.notify(&body).await;
    assert_eq!((status, &error["errcode"]), (502, &json!("M_UNKNOWN")));
    // Two attempts of 200 ms each, each cut short of the vendor's 2 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let metrics = env.metrics().await;
    assert!(metrics.contains(&format!(
        "push_gateway_deliveries_total{{app_id=\"{FCM_APP}\",vendor=\"fcm\",outcome=\"retry_later\"}} 1"
    )));
    // The vendor recovers; the homeserver's retry goes through.
    env.fcm.set_delay(Duration::ZERO);
    assert_eq!(env.notify(&body).await.0, 200);
}
