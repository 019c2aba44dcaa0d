//! What users stored survives a server restart: accounts, tokens, rooms,
//! history, account data and sync positions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Kept", "invite": [bob.user_id] }))
        .await;
    bob.join(&room).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        sent.push(who.send_text(&room, &format!("before {i}")).await);
    }
    alice
        .put_account_data("org.example.kept", json!({ "yes": true }))
        .await;
    let alias = "#kept:localhost";
    alice
        .put(
            &format!("/_matrix/client/v3/directory/room/{}", enc(alias)),
            json!({ "room_id": room }),
        )
        .await
        .ok();
    let bob_since = bob.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_before = server.get("/_matrix/key/v2/server").await;

    server.restart().await;
    let alice = alice.on(&server);
    let bob = bob.on(&server);

    // Tokens still work; the password too.
    assert_eq!(alice.whoami().await.ok()["user_id"], alice.user_id.as_str());
    bob.whoami().await.ok();
    let alice2 = server.login("alice", PASSWORD).await;
    // The signing key is the one from before.
    let key_after = server.get("/_matrix/key/v2/server").await;
    if key_before.status.is_success() {
        assert_eq!(
            key_after.body["verify_keys"], key_before.body["verify_keys"],
            "the server kept its signing key"
        );
    }

    // Rooms, state, aliases, history and account data are all there.
    assert_eq!(alice2.joined_rooms().await, vec![room.clone()]);
    assert_eq!(
        alice2.get_state(&room, "m.room.name", "").await.ok()["name"],
        "Kept"
    );
    let found = alice2
        .get(&format!("/_matrix/client/v3/directory/room/{}", enc(alias)))
        .await
        .ok();
    assert_eq!(found["room_id"], room.as_str());
    let history = alice2.paginate_all(&room, None, "f", 7).await;
    let want: Vec<String> = (0..20).map(|i| format!("before {i}")).collect();
    assert_eq!(bodies(&history), want);
    assert_eq!(event_ids(&messages_only(&history)), sent);
    assert_eq!(
        alice2.get_account_data("org.example.kept").await.ok()["yes"],
        true
    );

    // An old sync position still works, and the room keeps growing in order.
    let after = alice.send_text(&room, "after restart").await;
    let mut old_position = SyncCursor {
        client: bob.clone(),
        since: Some(bob_since.clone()),
        filter: None,
    };
    let got = old_position
        .collect_until(&room, Duration::from_secs(10), |g| {
            event_ids(g).contains(&after)
        })
        .await;
    assert_eq!(
        event_ids(&messages_only(&got)),
        vec![after],
        "incremental sync from a pre-restart token gets just the new message"
    );
    let (mut cursor, _) = SyncCursor::initial(&bob, None).await;
    alice.send_text(&room, "and more").await;
    let got = cursor
        .collect_until(&room, Duration::from_secs(10), |g| !bodies(g).is_empty())
        .await;
    assert_eq!(bodies(&got), vec!["and more"]);
    let all = bodies(&bob.paginate_all(&room, None, "f", 50).await);
    assert_eq!(all.len(), 22);
    assert_eq!(all[20..], ["after restart", "and more"]);
    server.shutdown().await;
}
