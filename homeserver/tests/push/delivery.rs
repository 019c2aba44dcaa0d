//! End to end: the homeserver pushes offline users through the real
//! `push-gateway` process, which posts to the local FCM-protocol server (with
//! an OAuth bearer token it obtained with a signed JWT) and the local
//! APNs-protocol server (over HTTP/2, with an ES256 provider token). Rejected
//! tokens remove pushers; a gateway outage and a homeserver restart lose
//! nothing.

use std::time::Duration;

use axum::http::Version;
use push_gateway::vendor_sim::Answer;
use serde_json::{json, Value};

use super::{
    common::{Client, TestServer},
    eventually,
    gateway::{Vendors, ANDROID, IOS},
    pusher, V3,
};

/// The iOS device token (hex, as APNs wants it; the gateway also accepts base64).
const IOS_TOKEN: &str = "5a5b5c5d5e5f60616263646566676869707172737475767778798081828384ab";
const ANDROID_TOKEN: &str = "bob-android-fcm-token";

/// A homeserver that retries failed pushes quickly.
async fn push_server() -> TestServer {
    TestServer::start_with(|c| {
        c.push.retry_initial_ms = 100;
        c.push.retry_max_ms = 400;
    })
    .await
}

/// Bob's two phones: Android with full notifications, iOS with
/// `event_id_only` (the app fetches the event itself).
async fn set_pushers(bob: &Client, url: &str) {
    let mut android = pusher(url, ANDROID_TOKEN, None);
    android["app_id"] = json!(ANDROID);
    let mut ios = pusher(url, IOS_TOKEN, Some("event_id_only"));
    ios["app_id"] = json!(IOS);
    ios["append"] = json!(true);
    for body in [android, ios] {
        bob.post(&format!("{V3}/pushers/set"), body).await.ok();
    }
}

async fn pushkeys(bob: &Client) -> Vec<String> {
    let listed = bob.get(&format!("{V3}/pushers")).await.ok();
    let mut keys: Vec<String> = listed["pushers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pushkey"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// Alice and bob in a 1:1 room.
async fn dm(server: &TestServer) -> (Client, Client, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "name": "Chat"}))
        .await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn offline_user_is_pushed_to_fcm_and_apns_and_rejected_tokens_remove_pushers() {
    let vendors = Vendors::start().await;
    let gateway = vendors.start_gateway().await;
    let server = push_server().await;
    let (alice, bob, room) = dm(&server).await;
    set_pushers(&bob, &vendors.notify_url()).await;
    assert_eq!(pushkeys(&bob).await, [IOS_TOKEN, ANDROID_TOKEN]);

    // Bob has no open sync: alice's message reaches both of his phones.
    let hello = alice.send_text(&room, "hello bob").await;
    let fcm = vendors
        .fcm
        .wait_for_deliveries(1, Duration::from_secs(10))
        .await;
    let apns = vendors
        .apns
        .wait_for_deliveries(1, Duration::from_secs(10))
        .await;
    assert_eq!((fcm.len(), apns.len()), (1, 1), "one push per phone");

    // FCM: posted with a bearer token the OAuth endpoint issued for the
    // gateway's RS256 assertion; a full alert with the message and the badge.
    let m = &fcm[0].message;
    assert_eq!(fcm[0].token, ANDROID_TOKEN);
    assert!(fcm[0].bearer.starts_with("ya29.sim-"));
    assert_eq!(vendors.fcm.token_exchanges(), 1);
    assert_eq!(vendors.fcm.auth_failures(), 0);
    assert_eq!(m["data"]["event_id"], hello.as_str());
    assert_eq!(m["data"]["room_id"], room.as_str());
    assert_eq!(m["data"]["unread_count"], "1", "badge: bob's unread count");
    assert_eq!(m["notification"]["title"], "Chat");
    assert!(
        m["notification"]["body"]
            .as_str()
            .is_some_and(|b| b.ends_with(": hello bob")),
        "{m}"
    );

    // APNs: HTTP/2 with a valid ES256 provider token; event_id_only gives a
    // background push with the badge and no text.
    let push = &apns[0];
    assert_eq!(push.version, Version::HTTP_2);
    assert_eq!(push.device_token, IOS_TOKEN);
    assert_eq!(push.topic, IOS);
    assert_eq!(
        (push.push_type.as_str(), push.priority.as_deref()),
        ("background", Some("5"))
    );
    assert_eq!(push.payload["aps"]["badge"], 1);
    assert_eq!(push.payload["aps"]["content-available"], 1);
    assert!(
        push.payload["aps"].get("alert").is_none(),
        "{}",
        push.payload
    );
    assert_eq!(push.payload["event_id"], hello.as_str());
    assert_eq!(vendors.apns.auth_failures(), 0);
    assert_eq!(vendors.apns.distinct_provider_tokens(), 1);

    // While bob has a sync open (here one that waits on no rooms), he is not pushed.
    let waiting = {
        let bob = bob.clone();
        let since = bob.sync(None, Some(0), None).await["next_batch"]
            .as_str()
            .unwrap()
            .to_owned();
        let filter = json!({"room": {"rooms": []}, "presence": {"types": []}}).to_string();
        tokio::spawn(async move { bob.sync(Some(&since), Some(3_000), Some(&filter)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.send_text(&room, "bob is online").await;
    waiting.await.unwrap();
    let later = alice.send_text(&room, "bob went away").await;
    let fcm = vendors
        .fcm
        .wait_for_deliveries(2, Duration::from_secs(10))
        .await;
    let apns = vendors
        .apns
        .wait_for_deliveries(2, Duration::from_secs(10))
        .await;
    let fcm_ids: Vec<&Value> = fcm.iter().map(|d| &d.message["data"]["event_id"]).collect();
    let apns_ids: Vec<&Value> = apns.iter().map(|d| &d.payload["event_id"]).collect();
    assert_eq!(fcm_ids, [&json!(hello), &json!(later)]);
    assert_eq!(apns_ids, [&json!(hello), &json!(later)]);
    assert_eq!(fcm[1].message["data"]["unread_count"], "3");
    assert_eq!(apns[1].payload["aps"]["badge"], 3);

    // FCM says the Android token is unregistered: the gateway rejects it and
    // the homeserver removes that pusher; the iPhone is still pushed.
    vendors.fcm.script(ANDROID_TOKEN, Answer::Unregistered);
    alice.send_text(&room, "are you there?").await;
    eventually("the Android pusher's removal", || async {
        (pushkeys(&bob).await == [IOS_TOKEN]).then_some(())
    })
    .await;
    assert_eq!(
        vendors
            .apns
            .wait_for_deliveries(3, Duration::from_secs(10))
            .await
            .len(),
        3
    );

    // APNs says the same of the iOS token (410 Unregistered).
    vendors.apns.script(IOS_TOKEN, Answer::Unregistered);
    alice.send_text(&room, "still there?").await;
    eventually("the iOS pusher's removal", || async {
        pushkeys(&bob).await.is_empty().then_some(())
    })
    .await;
    let attempts = (
        vendors.fcm.attempts(ANDROID_TOKEN),
        vendors.apns.attempts(IOS_TOKEN),
    );
    alice.send_text(&room, "nobody to push").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (
            vendors.fcm.attempts(ANDROID_TOKEN),
            vendors.apns.attempts(IOS_TOKEN)
        ),
        attempts,
        "no pushers, no pushes"
    );
    assert_eq!(
        (
            vendors.fcm.delivered().len(),
            vendors.apns.delivered().len()
        ),
        (2, 3)
    );

    let metrics = vendors.metrics().await;
    for (app, vendor) in [(ANDROID, "fcm"), (IOS, "apns")] {
        let line = format!(
            "push_gateway_deliveries_total{{app_id=\"{app}\",vendor=\"{vendor}\",outcome=\"rejected\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    gateway.kill();
    server.shutdown().await;
}

#[tokio::test]
async fn queued_pushes_survive_a_gateway_outage_and_a_homeserver_restart() {
    let vendors = Vendors::start().await;
    let gateway = vendors.start_gateway().await;
    let mut server = push_server().await;
    let (alice, bob, room) = dm(&server).await;
    set_pushers(&bob, &vendors.notify_url()).await;
    let mut sent = vec![alice.send_text(&room, "zero").await];
    vendors
        .fcm
        .wait_for_deliveries(1, Duration::from_secs(10))
        .await;
    vendors
        .apns
        .wait_for_deliveries(1, Duration::from_secs(10))
        .await;
    // Let the homeserver read both answers before the gateway dies (killed
    // mid-answer, it would rightly retry, and a fresh gateway process does
    // not remember what it already delivered).
    eventually("both answers sent", || async {
        let m = vendors.metrics().await;
        m.contains("push_gateway_notify_requests_total{status=\"200\"} 2")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The gateway goes down: these are queued and retried with backoff.
    gateway.kill();
    sent.push(alice.send_text(&room, "one").await);
    sent.push(alice.send_text(&room, "two").await);
    eventually("both notified", || async {
        let n = bob.get(&format!("{V3}/notifications")).await.ok();
        (n["notifications"].as_array()?.len() >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The queue is in the database: a restarted homeserver still has it.
    server.restart().await;
    let alice = alice.on(&server);
    sent.push(alice.send_text(&room, "three").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vendors.fcm.delivered().len(), 1);
    assert_eq!(vendors.apns.delivered().len(), 1);

    // The gateway comes back on the same address and gets everything, once.
    let gateway = vendors.start_gateway().await;
    vendors
        .fcm
        .wait_for_deliveries(4, Duration::from_secs(15))
        .await;
    vendors
        .apns
        .wait_for_deliveries(4, Duration::from_secs(15))
        .await;
    // Time for any duplicate to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sent.sort();
    let mut fcm: Vec<String> = vendors
        .fcm
        .delivered()
        .iter()
        .filter_map(|d| d.message["data"]["event_id"].as_str().map(str::to_owned))
        .collect();
    let mut apns: Vec<String> = vendors
        .apns
        .delivered()
        .iter()
        .filter_map(|d| d.payload["event_id"].as_str().map(str::to_owned))
        .collect();
    fcm.sort();
    apns.sort();
    assert_eq!(fcm, sent, "FCM: none lost, none doubled");
    assert_eq!(apns, sent, "APNs: none lost, none doubled");
    gateway.kill();
    server.shutdown().await;
}
