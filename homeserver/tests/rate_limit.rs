//! Rate limits: a small send bucket answers 429 M_LIMIT_EXCEEDED with
//! `retry_after_ms`, and refills.

mod common;

use std::time::Duration;

use common::*;
use engine::config::Bucket;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_rate_limit() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.send = Bucket {
            per_second: 1.0,
            burst: 3.0,
        };
        c.rate_limits.register = Bucket {
            per_second: 100.0,
            burst: 100.0,
        };
        c.rate_limits.login = Bucket {
            per_second: 100.0,
            burst: 100.0,
        };
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;

    let mut accepted = Vec::new();
    let mut limited = None;
    for i in 0..10 {
        let resp = alice
            .send_event(
                &room,
                "m.room.message",
                &txn(),
                json!({ "msgtype": "m.text", "body": format!("m{i}") }),
            )
            .await;
        if resp.status.is_success() {
            accepted.push(format!("m{i}"));
        } else {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.unwrap_or_else(|| panic!("10 quick sends with burst 3 were never limited"));
    resp.assert_error(429, "M_LIMIT_EXCEEDED");
    let retry = resp.body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms: {resp:?}"));
    assert!(retry > 0 && retry <= 5_000, "retry_after_ms {retry}");
    assert!(
        (1..=5).contains(&accepted.len()),
        "burst 3 allows about 3 sends, got {}",
        accepted.len()
    );

    // The limit is per user: bob can still send; the refused send left nothing.
    bob.send_text(&room, "bob is fine").await;
    tokio::time::sleep(Duration::from_millis(retry + 100)).await;
    alice.send_text(&room, "after waiting").await;
    let mut want = accepted.clone();
    want.push("bob is fine".to_owned());
    want.push("after waiting".to_owned());
    assert_eq!(
        bodies(&alice.paginate_all(&room, None, "f", 50).await),
        want
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rate_limit() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login = Bucket {
            per_second: 0.1,
            burst: 2.0,
        };
        c.rate_limits.register = Bucket {
            per_second: 100.0,
            burst: 100.0,
        };
    })
    .await;
    server.register("alice").await;
    let mut last = None;
    for _ in 0..6 {
        let resp = server.login_raw("alice", "wrong", json!({})).await;
        if resp.status.as_u16() == 429 {
            last = Some(resp);
            break;
        }
        resp.assert_error(403, "M_FORBIDDEN");
    }
    let resp = last.expect("repeated failed logins get rate limited");
    resp.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(resp.body["retry_after_ms"].as_u64().is_some(), "{resp:?}");
    server.shutdown().await;
}
