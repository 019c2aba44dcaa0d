//! Rooms across servers: our homeservers on loopback, each with its own server
//! name and CA-signed certificate, federating over TLS. Users on different
//! servers join each other's rooms, message, invite, and see the same
//! timeline and state; forged or unauthorised events are refused.

mod common;

use std::time::Duration;

use common::{
    federation::{join_via, wait_for_bodies, wait_for_membership, Federation},
    Client,
};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn remote_join_then_messages_flow_both_ways() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Across"}))
        .await;
    alice.send_text(&room, "before bob").await;

    let r = join_via(&bob, &room, &fed.server_name(0)).await;
    assert_eq!(r.status, 200, "join: {:?}", r.body);
    assert!(bob.joined_rooms().await.contains(&room));
    // Bob's server now holds the room's state.
    let name = bob.get_state(&room, "m.room.name", "").await.ok();
    assert_eq!(name["name"], "Across");
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    alice.send_text(&room, "hello bob").await;
    bob.send_text(&room, "hello alice").await;
    let on_bob = wait_for_bodies(&bob, &room, |b| {
        b.len() >= 2 && b.contains(&"hello alice".into())
    })
    .await;
    let on_alice = wait_for_bodies(&alice, &room, |b| b.len() >= 3).await;
    assert!(on_bob.contains(&"hello bob".to_owned()), "{on_bob:?}");
    assert_eq!(on_alice, ["before bob", "hello bob", "hello alice"]);

    // A burst in both directions arrives complete and in the same order.
    for i in 0..10 {
        alice.send_text(&room, &format!("a{i}")).await;
    }
    for i in 0..10 {
        bob.send_text(&room, &format!("b{i}")).await;
    }
    let done = |b: &[String]| b.iter().any(|x| x == "a9") && b.iter().any(|x| x == "b9");
    let on_alice = wait_for_bodies(&alice, &room, done).await;
    let on_bob = wait_for_bodies(&bob, &room, done).await;
    let tail = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|b| b.starts_with('a') || b.starts_with('b'))
            .filter(|b| b.len() == 2)
            .cloned()
            .collect()
    };
    assert_eq!(tail(&on_alice).len(), 20);
    assert_eq!(tail(&on_bob).len(), 20);
    // Each sender's messages keep their order on both servers. (Messages
    // sent concurrently on two servers may interleave differently, as their
    // arrival order differs; causally ordered ones never do.)
    for prefix in ["a", "b"] {
        let only = |v: &[String]| -> Vec<String> {
            tail(v)
                .into_iter()
                .filter(|b| b.starts_with(prefix))
                .collect()
        };
        let expected: Vec<String> = (0..10).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(only(&on_alice), expected);
        assert_eq!(only(&on_bob), expected);
    }
    // A reply written after reading the burst comes after all of it everywhere.
    bob.send_text(&room, "after the burst").await;
    let on_alice =
        wait_for_bodies(&alice, &room, |b| b.iter().any(|x| x == "after the burst")).await;
    assert_eq!(on_alice.last().map(String::as_str), Some("after the burst"));
    fed.shutdown().await;
}

#[tokio::test]
async fn invites_cross_servers_and_can_be_accepted_or_rejected() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let carol = fed.servers[1].register("carol").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Secret", "invite": [bob.user_id]}))
        .await;

    // Bob sees the invite with the room's stripped state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sync = bob.sync(None, None, None).await;
        if let Some(inv) = sync["rooms"]["invite"].get(&room) {
            let events = inv["invite_state"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(events
                .iter()
                .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret"));
            assert!(events
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()));
            assert!(events.iter().any(|e| e["type"] == "m.room.create"));
            // Servers exchange full PDUs (MSC4311); clients get stripped events.
            for e in &events {
                let mut keys: Vec<&str> =
                    e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                keys.sort_unstable();
                assert_eq!(keys, ["content", "sender", "state_key", "type"], "{e}");
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no invite for bob");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Accepting needs no `via`: the inviting server is known.
    let r = bob
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", common::enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    // Carol is invited by a user of another server, and refuses.
    alice.invite(&room, &carol.user_id).await;
    wait_for_membership(&alice, &room, &carol.user_id, "invite").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !carol.sync(None, None, None).await["rooms"]["invite"]
        .get(&room)
        .is_some_and(|v| v.is_object())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invite for carol"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    carol.leave(&room).await;
    wait_for_membership(&alice, &room, &carol.user_id, "leave").await;

    // Inviting someone who does not exist on the other server fails cleanly.
    let r = alice.invite_raw(&room, "@nobody:hs2.test").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    fed.shutdown().await;
}

#[tokio::test]
async fn three_servers_converge_on_timeline_and_state() {
    let fed = Federation::start(3).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let carol = fed.servers[2].register("carol").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Three"}))
        .await;
    assert_eq!(join_via(&bob, &room, &fed.server_name(0)).await.status, 200);
    // Carol joins through bob's server, which is not the room's creator.
    let r = join_via(&carol, &room, &fed.server_name(1)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for c in [&alice, &bob] {
        wait_for_membership(c, &room, &carol.user_id, "join").await;
    }
    wait_for_membership(&carol, &room, &bob.user_id, "join").await;

    alice.send_text(&room, "from alice").await;
    bob.send_text(&room, "from bob").await;
    carol.send_text(&room, "from carol").await;
    let all = |b: &[String]| {
        ["from alice", "from bob", "from carol"]
            .iter()
            .all(|m| b.iter().any(|x| x == m))
    };
    let a = wait_for_bodies(&alice, &room, all).await;
    let b = wait_for_bodies(&bob, &room, all).await;
    let c = wait_for_bodies(&carol, &room, all).await;
    assert_eq!(a.len(), 3);
    assert_eq!(a.len(), b.len());
    assert_eq!(b.len(), c.len());

    // State set on one server converges everywhere.
    alice
        .put_state(&room, "m.room.topic", "", json!({"topic": "converged"}))
        .await;
    for client in [&bob, &carol] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = client.get_state(&room, "m.room.topic", "").await;
            if r.status == 200 && r.ok()["topic"] == "converged" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "topic never reached {}",
                client.user_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Membership lists agree.
    let members = |c: &Client| {
        let c = c.clone();
        let room = room.clone();
        async move {
            let v = c
                .get(&format!(
                    "/_matrix/client/v3/rooms/{}/joined_members",
                    common::enc(&room)
                ))
                .await
                .ok();
            let mut m: Vec<String> = v["joined"].as_object().unwrap().keys().cloned().collect();
            m.sort();
            m
        }
    };
    let expected = {
        let mut v = vec![
            alice.user_id.clone(),
            bob.user_id.clone(),
            carol.user_id.clone(),
        ];
        v.sort();
        v
    };
    assert_eq!(members(&alice).await, expected);
    assert_eq!(members(&bob).await, expected);
    assert_eq!(members(&carol).await, expected);
    fed.shutdown().await;
}

#[tokio::test]
async fn typing_receipts_and_to_device_cross_servers() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(join_via(&bob, &room, &fed.server_name(0)).await.status, 200);
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    // Typing on hs1 shows on hs2.
    let r = alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                common::enc(&room),
                common::enc(&alice.user_id)
            ),
            json!({"typing": true, "timeout": 20000}),
        )
        .await;
    assert_eq!(r.status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'typing: loop {
        let sync = bob.sync(None, None, None).await;
        for e in sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|x| x == alice.user_id.as_str()))
            {
                break 'typing;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "typing never crossed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A read receipt from hs2 shows on hs1.
    let event_id = alice.send_text(&room, "read me").await;
    wait_for_bodies(&bob, &room, |b| b.iter().any(|x| x == "read me")).await;
    let r = bob
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                common::enc(&room),
                common::enc(&event_id)
            ),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'receipt: loop {
        let sync = alice.sync(None, None, None).await;
        for e in sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if e["type"] == "m.receipt"
                && !e["content"][&event_id]["m.read"][&bob.user_id].is_null()
            {
                break 'receipt;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipt never crossed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A to-device message from hs1 reaches bob's device on hs2.
    let bob_device = bob.device_id.clone();
    let r = alice
        .put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{}", common::txn()),
            json!({"messages": {bob.user_id.as_str(): {bob_device.as_str(): {"hello": "there"}}}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sync = bob.sync(None, None, None).await;
        let events = sync["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.iter().any(|e| {
            e["type"] == "m.test"
                && e["content"]["hello"] == "there"
                && e["sender"] == alice.user_id.as_str()
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "to-device never crossed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fed.shutdown().await;
}

/// Sends a transaction to hs1 signed by hs2 (through hs2's own federation
/// client), carrying `pdus`.
async fn send_as_hs2(fed: &Federation, pdus: Vec<Value>) -> Value {
    let hs2 = fed.servers[1].services();
    let dest = ruma::ServerName::parse(fed.server_name(0)).unwrap();
    hs2.federation
        .client
        .request(
            &dest,
            Method::PUT,
            &format!("/_matrix/federation/v1/send/forged-{}", common::txn()),
            Some(json!({"origin": fed.server_name(1), "origin_server_ts": 0, "pdus": pdus, "edus": []})),
        )
        .await
        .expect("transaction accepted")
}

/// A message event from bob (hs2), built and signed by hs2 on top of hs1's
/// current extremities as hs2 sees them.
async fn bob_message(fed: &Federation, room: &str, bob: &str, body: &str) -> Value {
    let hs2 = fed.servers[1].services();
    let room_id = ruma::OwnedRoomId::try_from(room).unwrap();
    let handle = hs2.rooms.require(&room_id).await.unwrap();
    let st = handle.read().await;
    let user = ruma::UserId::parse(bob).unwrap();
    let built = hs2
        .rooms
        .build_for(
            &st,
            &user,
            &engine::events::builder::EventDraft::message(
                "m.room.message",
                json!({"msgtype": "m.text", "body": body}),
            ),
        )
        .unwrap();
    serde_json::from_str(&built.json).unwrap()
}

#[tokio::test]
async fn forged_tampered_and_unauthorised_events_are_not_shown() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let mallory = fed.servers[1].register("mallory").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    assert_eq!(join_via(&bob, &room, &fed.server_name(0)).await.status, 200);
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    // A forged signature: the event is refused.
    let mut forged = bob_message(&fed, &room, &bob.user_id, "forged").await;
    forged["signatures"][fed.server_name(1)]["ed25519:forged"] = json!("AAAA");
    if let Some(sigs) = forged["signatures"][fed.server_name(1)].as_object_mut() {
        sigs.retain(|k, _| k == "ed25519:forged");
    }
    let r = send_as_hs2(&fed, vec![forged]).await;
    assert!(
        r["pdus"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.get("error").is_some())
            || r["pdus"].as_object().unwrap().is_empty(),
        "{r}"
    );

    // A tampered body (content hash mismatch): kept only redacted.
    let mut tampered = bob_message(&fed, &room, &bob.user_id, "original").await;
    tampered["content"]["body"] = json!("tampered");
    send_as_hs2(&fed, vec![tampered]).await;

    // An event from a user who never joined: rejected by the auth rules.
    let sneaky = bob_message(&fed, &room, &mallory.user_id, "sneaky").await;
    let r = send_as_hs2(&fed, vec![sneaky]).await;
    let results: Vec<&Value> = r["pdus"].as_object().unwrap().values().collect();
    assert!(results.iter().all(|v| v.get("error").is_some()), "{r}");

    // A legitimate message after all that still arrives, and none of the bad
    // bodies is ever shown.
    bob.send_text(&room, "legit").await;
    let bodies = wait_for_bodies(&alice, &room, |b| b.iter().any(|x| x == "legit")).await;
    for bad in ["forged", "tampered", "original", "sneaky"] {
        assert!(
            !bodies.iter().any(|b| b == bad),
            "{bad} was shown: {bodies:?}"
        );
    }
    fed.shutdown().await;
}

/// A redaction received over federation hides the target's content and
/// records `unsigned.redacted_because`, as a local one does.
#[tokio::test]
async fn remote_redactions_are_applied_with_redacted_because() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = join_via(&bob, &room, &fed.server_name(0)).await;
    assert_eq!(r.status, 200, "join: {:?}", r.body);
    let event_id = bob.send_text(&room, "oops").await;
    wait_for_bodies(&alice, &room, |b| b.contains(&"oops".to_owned())).await;
    let r = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/{}",
                common::enc(&room),
                common::enc(&event_id),
                common::txn()
            ),
            json!({"reason": "typo"}),
        )
        .await;
    assert_eq!(r.status, 200, "redact: {:?}", r.body);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        common::enc(&room),
        common::enc(&event_id)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = alice.get(&path).await.ok();
        if ev["content"] == json!({}) {
            let because = &ev["unsigned"]["redacted_because"];
            assert_eq!(because["type"], "m.room.redaction", "{ev}");
            assert_eq!(because["sender"], bob.user_id.as_str(), "{ev}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never saw the redaction: {ev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fed.shutdown().await;
}
