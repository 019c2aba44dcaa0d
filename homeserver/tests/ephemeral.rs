//! Typing notifications, read receipts, MSC4089 delivery receipts and presence,
//! as members see them through /sync.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// The room's ephemeral events of one type in a sync response.
fn ephemeral(sync: &Value, room_id: &str, kind: &str) -> Vec<Value> {
    joined_room(sync, room_id)
        .and_then(|r| r["ephemeral"]["events"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

/// Long-polls until `pred` holds for a response, or panics after `limit`.
async fn sync_until(
    cursor: &mut SyncCursor,
    limit: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{:?}: condition not met within {limit:?}",
            cursor.client
        );
        let body = cursor.next(left.as_millis().min(10_000) as u64).await;
        if pred(&body) {
            return body;
        }
    }
}

/// alice, bob and carol joined to one room created by alice.
async fn three_in_a_room(server: &TestServer) -> (Client, Client, Client, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    carol.join(&room).await;
    (alice, bob, carol, room)
}

fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    ephemeral(sync, room, "m.typing")
        .last()
        .map(|e| strings(&e["content"]["user_ids"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_starts_stops_and_times_out() {
    let server = TestServer::start().await;
    let (alice, bob, _carol, room) = three_in_a_room(&server).await;
    let (mut cursor, _) = SyncCursor::initial(&bob, None).await;
    let path = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));

    alice
        .put(&path, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    sync_until(&mut cursor, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![alice.user_id.clone()])
    })
    .await;

    alice.put(&path, json!({"typing": false})).await.ok();
    sync_until(&mut cursor, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![])
    })
    .await;

    // A short timeout expires by itself.
    alice
        .put(&path, json!({"typing": true, "timeout": 300}))
        .await
        .ok();
    sync_until(&mut cursor, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![alice.user_id.clone()])
    })
    .await;
    let started = Instant::now();
    sync_until(&mut cursor, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![])
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "typing expired late: {:?}",
        started.elapsed()
    );

    // Only for yourself, only with a timeout, only in rooms you are in.
    let bobs = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    alice
        .put(&bobs, json!({"typing": true, "timeout": 1000}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .put(&path, json!({"typing": true}))
        .await
        .assert_error(400, "M_BAD_JSON");
    let outsider = server.register("dave").await;
    let daves = format!(
        "{V3}/rooms/{}/typing/{}",
        enc(&room),
        enc(&outsider.user_id)
    );
    outsider
        .put(&daves, json!({"typing": true, "timeout": 1000}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}

fn receipt_users(sync: &Value, room: &str, event_id: &str, receipt_type: &str) -> Vec<String> {
    let mut users = Vec::new();
    for e in ephemeral(sync, room, "m.receipt") {
        if let Some(map) = e["content"][event_id][receipt_type].as_object() {
            users.extend(map.keys().cloned());
        }
    }
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_reach_members_and_private_ones_only_their_owner() {
    let server = TestServer::start().await;
    let (alice, bob, carol, room) = three_in_a_room(&server).await;
    let event = alice.send_text(&room, "read me").await;
    let (mut alice_c, _) = SyncCursor::initial(&alice, None).await;
    let (mut carol_c, _) = SyncCursor::initial(&carol, None).await;

    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)),
        json!({}),
    )
    .await
    .ok();
    for cursor in [&mut alice_c, &mut carol_c] {
        let s = sync_until(cursor, Duration::from_secs(10), |s| {
            !receipt_users(s, &room, &event, "m.read").is_empty()
        })
        .await;
        assert_eq!(
            receipt_users(&s, &room, &event, "m.read"),
            vec![bob.user_id.clone()]
        );
    }

    // A threaded receipt carries its thread id.
    carol
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)),
            json!({"thread_id": "main"}),
        )
        .await
        .ok();
    let s = sync_until(&mut alice_c, Duration::from_secs(10), |s| {
        receipt_users(s, &room, &event, "m.read").contains(&carol.user_id)
    })
    .await;
    let receipt =
        ephemeral(&s, &room, "m.receipt")[0]["content"][&event]["m.read"][&carol.user_id].clone();
    assert_eq!(receipt["thread_id"], "main");
    assert!(receipt["ts"].is_i64());

    // m.read.private: bob's other device sees it, alice never does.
    let bob2 = server.login("bob", PASSWORD).await;
    let (mut bob2_c, _) = SyncCursor::initial(&bob2, None).await;
    let second = alice.send_text(&room, "private read").await;
    bob.post(
        &format!(
            "{V3}/rooms/{}/receipt/m.read.private/{}",
            enc(&room),
            enc(&second)
        ),
        json!({}),
    )
    .await
    .ok();
    sync_until(&mut bob2_c, Duration::from_secs(10), |s| {
        receipt_users(s, &room, &second, "m.read.private") == vec![bob.user_id.clone()]
    })
    .await;
    let alice_initial = alice.sync(None, None, None).await;
    assert!(
        receipt_users(&alice_initial, &room, &second, "m.read.private").is_empty(),
        "private receipts stay private"
    );

    // Bad input.
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.bogus/{}", enc(&room), enc(&event)),
        json!({}),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc("$nope")),
        json!({}),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_receipts_reach_only_the_sender() {
    let server = TestServer::start().await;
    let (alice, bob, carol, room) = three_in_a_room(&server).await;
    let (mut alice_c, _) = SyncCursor::initial(&alice, None).await;
    let (mut carol_c, _) = SyncCursor::initial(&carol, None).await;
    let (mut bob_c, _) = SyncCursor::initial(&bob, None).await;
    let event = alice.send_text(&room, "did you get this?").await;

    // bob's device acknowledges the event.
    bob.post(
        &format!(
            "{V3}/rooms/{}/receipt/org.matrix.msc4089.delivery/{}",
            enc(&room),
            enc(&event)
        ),
        json!({}),
    )
    .await
    .ok();
    let s = sync_until(&mut alice_c, Duration::from_secs(10), |s| {
        !receipt_users(s, &room, &event, "org.matrix.msc4089.delivery").is_empty()
    })
    .await;
    assert_eq!(
        receipt_users(&s, &room, &event, "org.matrix.msc4089.delivery"),
        vec![bob.user_id.clone()]
    );

    // Nobody else sees it: let a later message flush carol's and bob's streams.
    let marker = alice.send_text(&room, "marker").await;
    for cursor in [&mut carol_c, &mut bob_c] {
        let mut seen = Vec::new();
        let start = Instant::now();
        loop {
            let s = cursor.next(5_000).await;
            seen.extend(receipt_users(
                &s,
                &room,
                &event,
                "org.matrix.msc4089.delivery",
            ));
            if timeline(&s, &room)
                .iter()
                .any(|e| e["event_id"] == marker.as_str())
                || start.elapsed() > Duration::from_secs(10)
            {
                break;
            }
        }
        assert!(
            seen.is_empty(),
            "{:?} saw a delivery receipt meant for the sender",
            cursor.client
        );
    }
    let carol_initial = carol.sync(None, None, None).await;
    assert!(receipt_users(&carol_initial, &room, &event, "org.matrix.msc4089.delivery").is_empty());
    let alice_initial = alice.sync(None, None, None).await;
    assert_eq!(
        receipt_users(&alice_initial, &room, &event, "org.matrix.msc4089.delivery"),
        vec![bob.user_id.clone()]
    );

    // Acknowledging twice is harmless; receipts are per event.
    bob.post(
        &format!(
            "{V3}/rooms/{}/receipt/org.matrix.msc4089.delivery/{}",
            enc(&room),
            enc(&event)
        ),
        json!({}),
    )
    .await
    .ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_with_room_members_and_goes_offline() {
    let server = TestServer::start_with(|c| c.presence.offline_grace_ms = 300).await;
    let (alice, bob, _carol, room) = three_in_a_room(&server).await;
    let stranger = server.register("stranger").await;
    let _ = room;
    let (mut bob_c, _) = SyncCursor::initial(&bob, None).await;

    let path = format!("{V3}/presence/{}/status", enc(&alice.user_id));
    alice
        .put(
            &path,
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .ok();
    let s = sync_until(&mut bob_c, Duration::from_secs(10), |s| {
        s["presence"]["events"].as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["sender"] == alice.user_id.as_str() && e["content"]["presence"] == "unavailable"
            })
        })
    })
    .await;
    let event = s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == alice.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(event["content"]["status_msg"], "lunch");
    assert!(event["content"]["last_active_ago"].is_i64());

    let got = bob.get(&path).await.ok();
    assert_eq!(got["presence"], "unavailable");
    assert_eq!(got["status_msg"], "lunch");

    // Someone who shares no room never hears of it.
    let s = stranger.sync(None, None, None).await;
    assert!(!s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["sender"] == alice.user_id.as_str()));

    // Syncing makes alice online; once her last connection is gone she goes offline.
    alice.sync(None, Some(0), None).await;
    assert_eq!(bob.get(&path).await.ok()["presence"], "online");
    let start = Instant::now();
    loop {
        if bob.get(&path).await.ok()["presence"] == "offline" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "alice never went offline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    alice
        .put(&path, json!({"presence": "dancing"}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let bobs = format!("{V3}/presence/{}/status", enc(&bob.user_id));
    alice
        .put(&bobs, json!({"presence": "online"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}
