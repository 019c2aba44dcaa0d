//! The direct-message scenario of issue 2: two users, one DM, 100 messages
//! through concurrent /sync long-polls, history on a new device, txnId
//! idempotency, and an outsider who sees nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const N: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_message_scenario() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;

    // Bob syncs before the invite so the invite arrives incrementally.
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;

    let room = alice
        .create_room(json!({
            "is_direct": true,
            "invite": [bob.user_id],
            "preset": "trusted_private_chat",
        }))
        .await;

    // Bob sees the invite in rooms.invite, marked as a DM, from alice.
    let mut invite = Value::Null;
    for _ in 0..10 {
        let s = bob_sync.next(10_000).await;
        if let Some(r) = s["rooms"]["invite"].get(&room) {
            invite = r.clone();
            break;
        }
    }
    let invite_state = invite["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let my_member = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("bob's invite_state lacks his m.room.member invite: {invite}"));
    assert_eq!(my_member["content"]["membership"], "invite");
    assert_eq!(
        my_member["content"]["is_direct"], true,
        "invite must carry is_direct: {my_member}"
    );
    assert_eq!(my_member["sender"], alice.user_id.as_str());

    assert_eq!(bob.join(&room).await, room);

    // A filter big enough that no incremental sync of this test is limited.
    let filter = json!({ "room": { "timeline": { "limit": 200 } } }).to_string();
    let (mut alice_cursor, _) = SyncCursor::initial(&alice, Some(&filter)).await;
    let (mut bob_cursor, _) = SyncCursor::initial(&bob, Some(&filter)).await;

    // Both long-poll loops run for the whole exchange.
    let expected: Vec<String> = (0..N).map(|i| format!("message {i}")).collect();
    let want = expected.clone();
    let alice_task = tokio::spawn({
        let room = room.clone();
        async move {
            alice_cursor
                .collect_until(&room, Duration::from_secs(120), |got| {
                    bodies(got).len() >= want.len()
                })
                .await
        }
    });
    let want = expected.clone();
    let bob_task = tokio::spawn({
        let room = room.clone();
        async move {
            bob_cursor
                .collect_until(&room, Duration::from_secs(120), |got| {
                    bodies(got).len() >= want.len()
                })
                .await
        }
    });

    // The first half is a conversation: each waits for the other's message
    // (seen in a separate long-poll) before replying. The second half is a burst.
    let mut sent_ids = Vec::new();
    let (mut alice_watch, _) = SyncCursor::initial(&alice, Some(&filter)).await;
    let (mut bob_watch, _) = SyncCursor::initial(&bob, Some(&filter)).await;
    for (i, text) in expected.iter().enumerate() {
        let (sender, watcher) = if i % 2 == 0 {
            (&alice, &mut bob_watch)
        } else {
            (&bob, &mut alice_watch)
        };
        let id = sender
            .send(
                &room,
                &format!("dm-{i}"),
                json!({ "msgtype": "m.text", "body": text }),
            )
            .await;
        sent_ids.push(id.clone());
        if i < N / 2 {
            let seen = watcher
                .collect_until(&room, Duration::from_secs(30), |got| {
                    event_ids(got).contains(&id)
                })
                .await;
            assert_eq!(
                bodies(&seen).last(),
                Some(text),
                "the recipient's long-poll ends with the new message"
            );
        }
    }

    let alice_got = alice_task.await.expect("alice's sync loop");
    let bob_got = bob_task.await.expect("bob's sync loop");
    for (who, got) in [("alice", &alice_got), ("bob", &bob_got)] {
        let msgs = messages_only(got);
        assert_eq!(
            bodies(&msgs),
            expected,
            "{who} received every message exactly once, in order"
        );
        assert_eq!(
            event_ids(&msgs),
            sent_ids,
            "{who} received the event ids the sends returned"
        );
        for (i, e) in msgs.iter().enumerate() {
            let sender = if i % 2 == 0 {
                &alice.user_id
            } else {
                &bob.user_id
            };
            assert_eq!(e["sender"], sender.as_str(), "{who}: sender of message {i}");
        }
    }

    // A retried send with the same txnId is the same event, stored once.
    let first = alice
        .send(
            &room,
            "retry-me",
            json!({ "msgtype": "m.text", "body": "retried" }),
        )
        .await;
    let again = alice
        .send(
            &room,
            "retry-me",
            json!({ "msgtype": "m.text", "body": "retried" }),
        )
        .await;
    assert_eq!(
        first, again,
        "same txnId on the same device must return the same event_id"
    );

    // Bob logs out; his old token is dead.
    let old_bob = bob.clone();
    bob.logout().await;
    old_bob.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");

    // Bob logs in with his password on a new device and reads the history.
    let bob2 = server.login("bob", PASSWORD).await;
    assert_ne!(
        bob2.device_id, old_bob.device_id,
        "a password login without device_id makes a new device"
    );
    let mut all: Vec<String> = expected.clone();
    all.push("retried".to_owned());

    // Backwards from a fresh sync's prev_batch.
    let fresh = bob2.sync(None, None, None).await;
    let joined = joined_room(&fresh, &room)
        .unwrap_or_else(|| panic!("bob's new device sees the room: {fresh}"));
    let recent = joined["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prev_batch = joined["timeline"]["prev_batch"]
        .as_str()
        .expect("timeline.prev_batch");
    let mut older = bob2.paginate_all(&room, Some(prev_batch), "b", 17).await;
    older.reverse();
    older.extend(recent);
    assert_eq!(
        bodies(&older),
        all,
        "dir=b from prev_batch, plus the sync timeline, is the whole history in order"
    );

    // Forwards from the start of the room.
    let forward = bob2.paginate_all(&room, None, "f", 23).await;
    assert_eq!(
        bodies(&forward),
        all,
        "dir=f from the start is the whole history in order"
    );
    assert_eq!(event_ids(&messages_only(&forward))[..N], sent_ids[..]);
    assert_eq!(
        forward.first().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "history starts at m.room.create"
    );

    // Carol was never invited: she can read nothing and syncs nothing of the room.
    let some_event = &sent_ids[7];
    carol
        .messages_raw(&room, None, None, "b", Some(10), None)
        .await
        .assert_error(403, "M_FORBIDDEN");
    carol
        .event(&room, some_event)
        .await
        .assert_error_one_of(&[(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND")]);
    carol
        .context(&room, some_event, 5)
        .await
        .assert_error_one_of(&[(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND")]);
    let carol_sync = carol.sync(None, None, None).await;
    assert!(
        !mentions(&carol_sync, &room),
        "carol's initial sync mentions the DM: {carol_sync}"
    );
    for text in ["message 7", "retried"] {
        assert!(!mentions(&carol_sync, text), "carol's sync leaks {text:?}");
    }
    let since = carol_sync["next_batch"].as_str().unwrap().to_owned();
    alice.send_text(&room, "after carol synced").await;
    let carol_inc = carol.sync(Some(&since), Some(500), None).await;
    assert!(
        !mentions(&carol_inc, &room),
        "carol's incremental sync mentions the DM: {carol_inc}"
    );

    server.shutdown().await;
}

/// A retried send really stores one event: /messages shows one copy, and the
/// other side's sync gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_send_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(
            json!({ "is_direct": true, "invite": [bob.user_id], "preset": "trusted_private_chat" }),
        )
        .await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;

    let content = json!({ "msgtype": "m.text", "body": "only once" });
    let ids: Vec<String> =
        futures::future::join_all((0..5).map(|_| alice.send(&room, "same-txn", content.clone())))
            .await;
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "concurrent retries returned different event ids: {ids:?}"
    );
    alice.send_text(&room, "marker").await;

    let got = bob_sync
        .collect_until(&room, Duration::from_secs(20), |g| {
            bodies(g).contains(&"marker".to_owned())
        })
        .await;
    assert_eq!(bodies(&got), vec!["only once", "marker"]);
    let history = bob.messages(&room, None, "b", Some(50)).await;
    let copies = bodies(history["chunk"].as_array().unwrap())
        .iter()
        .filter(|b| *b == "only once")
        .count();
    assert_eq!(copies, 1, "/messages shows the retried message once");

    server.shutdown().await;
}
