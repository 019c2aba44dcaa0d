//! /sync: initial and incremental, long-poll wake-ups and timeouts, filters,
//! timeline limits, and the join / invite / leave sections.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_then_incremental() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({ "name": "Kitchen" })).await;
    alice.send_text(&room, "one").await;

    let first = alice.sync(None, None, None).await;
    let joined =
        joined_room(&first, &room).unwrap_or_else(|| panic!("room in rooms.join: {first}"));
    let mut all = joined["state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.extend(
        joined["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    let name = all
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .expect("m.room.name in state or timeline");
    assert_eq!(name["content"]["name"], "Kitchen");
    assert_eq!(bodies(&timeline(&first, &room)), vec!["one"]);
    for e in timeline(&first, &room) {
        assert!(
            e["event_id"].is_string() && e["sender"].is_string() && e["origin_server_ts"].is_u64(),
            "{e}"
        );
        assert!(e.get("room_id").is_none() || e["room_id"] == room.as_str());
    }

    let since = first["next_batch"].as_str().unwrap().to_owned();
    // Nothing new: an incremental sync with timeout 0 has no timeline for the room.
    let idle = alice.sync(Some(&since), Some(0), None).await;
    assert!(timeline(&idle, &room).is_empty(), "nothing new: {idle}");

    alice.send_text(&room, "two").await;
    alice.send_text(&room, "three").await;
    let inc = alice.sync(Some(&since), Some(0), None).await;
    assert_eq!(
        bodies(&timeline(&inc, &room)),
        vec!["two", "three"],
        "incremental sync has only the new events"
    );
    assert_ne!(
        joined_room(&inc, &room).unwrap()["timeline"]["limited"],
        true
    );
    // The same since token gives the same answer (sync positions are replayable).
    let again = alice.sync(Some(&since), Some(0), None).await;
    assert_eq!(bodies(&timeline(&again, &room)), vec!["two", "three"]);
    let next = inc["next_batch"].as_str().unwrap();
    assert!(timeline(&alice.sync(Some(next), Some(0), None).await, &room).is_empty());

    // full_state=true: the whole state again, even with nothing new.
    let full = alice
        .get(&format!(
            "{V3}/sync?since={}&timeout=0&full_state=true",
            enc(next)
        ))
        .await
        .ok();
    let state = joined_room(&full, &room)
        .unwrap_or_else(|| panic!("full_state lists the room: {full}"))["state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create")
            && state.iter().any(|e| e["type"] == "m.room.name"),
        "full_state=true returns the room's state: {full}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_send_and_times_out_otherwise() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let other = carol.create_room(json!({})).await;

    let bob_since = bob.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol_since = carol.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing happens: the long-poll returns after about its timeout, empty.
    let t = Instant::now();
    let idle = bob.sync(Some(&bob_since), Some(1_000), None).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "returned early ({took:?}) with nothing new: {idle}"
    );
    assert!(took < Duration::from_secs(5), "overslept: {took:?}");
    assert!(timeline(&idle, &room).is_empty());

    // A send wakes bob's long-poll at once; carol (not a member) sleeps on.
    let bob_poll = {
        let (bob, since) = (bob.clone(), bob_since.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let s = bob.sync(Some(&since), Some(30_000), None).await;
            (s, t.elapsed())
        })
    };
    let carol_poll = {
        let (carol, since) = (carol.clone(), carol_since.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let s = carol.sync(Some(&since), Some(2_500), None).await;
            (s, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let id = alice.send_text(&room, "wake up").await;
    let (s, _) = bob_poll.await.unwrap();
    let latency = sent.elapsed();
    assert_eq!(
        event_ids(&timeline(&s, &room)),
        vec![id],
        "bob's long-poll returns the message"
    );
    assert!(
        latency < Duration::from_secs(2),
        "woken {latency:?} after the send"
    );
    let (cs, took) = carol_poll.await.unwrap();
    assert!(
        !mentions(&cs, &room),
        "carol sees nothing of a room she's not in: {cs}"
    );
    assert!(
        took >= Duration::from_millis(2_000),
        "carol's long-poll was cut short ({took:?}) by another room's event"
    );
    assert!(room_ids(&cs, "join").iter().all(|r| r == &other));

    // An initial sync with a timeout doesn't wait when it has something to say.
    let t = Instant::now();
    bob.sync(None, Some(30_000), None).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "initial sync waited {:?}",
        t.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_timeline_limit() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let filter =
        json!({ "room": { "timeline": { "limit": 3 } }, "presence": { "not_types": ["*"] } });
    let id = alice.create_filter(filter.clone()).await;
    let back = alice
        .get(&format!(
            "{V3}/user/{}/filter/{}",
            enc(&alice.user_id),
            enc(&id)
        ))
        .await
        .ok();
    assert_eq!(
        back["room"]["timeline"]["limit"], 3,
        "GET filter returns what was stored: {back}"
    );
    assert_eq!(back["presence"], filter["presence"]);
    alice
        .get(&format!(
            "{V3}/user/{}/filter/nosuchfilter",
            enc(&alice.user_id)
        ))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&format!(
        "{V3}/user/{}/filter/{}",
        enc(&alice.user_id),
        enc(&id)
    ))
    .await
    .assert_error(403, "M_FORBIDDEN");

    let room = alice.create_room(json!({})).await;
    for i in 0..10 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let s = alice.sync(None, None, Some(&id)).await;
    let r = joined_room(&s, &room).expect("room");
    assert_eq!(
        bodies(&timeline(&s, &room)),
        vec!["m7", "m8", "m9"],
        "timeline limit 3"
    );
    assert_eq!(timeline(&s, &room).len(), 3);
    assert_eq!(r["timeline"]["limited"], true);
    let prev = r["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch when limited");
    // State not in the timeline is in the state section.
    let state = r["state"]["events"].as_array().expect("state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{s}");

    // The gap is filled through /messages from prev_batch.
    let older = alice.messages(&room, Some(prev), "b", Some(4)).await;
    assert_eq!(
        bodies(older["chunk"].as_array().unwrap()),
        vec!["m6", "m5", "m4", "m3"]
    );

    // Incremental syncs respect the limit too.
    let since = s["next_batch"].as_str().unwrap();
    for i in 10..15 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let inc = alice.sync(Some(since), Some(0), Some(&id)).await;
    let r = joined_room(&inc, &room).expect("room");
    assert_eq!(bodies(&timeline(&inc, &room)), vec!["m12", "m13", "m14"]);
    assert_eq!(r["timeline"]["limited"], true);
    let prev = r["timeline"]["prev_batch"].as_str().unwrap();
    let gap = alice
        .messages_raw(&room, Some(prev), Some(since), "b", Some(50), None)
        .await
        .ok();
    assert_eq!(
        bodies(gap["chunk"].as_array().unwrap()),
        vec!["m11", "m10"],
        "the gap between syncs, exactly"
    );

    // An inline JSON filter works like a stored one.
    let inline = json!({ "room": { "timeline": { "limit": 1 } } }).to_string();
    let s = alice.sync(None, None, Some(&inline)).await;
    assert_eq!(bodies(&timeline(&s, &room)), vec!["m14"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_and_leave_sections() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, None).await;

    let room = alice
        .create_room(json!({ "name": "Party", "invite": [bob.user_id] }))
        .await;
    let s = bob_sync.next(5_000).await;
    let invite = &s["rooms"]["invite"][&room];
    let stripped = invite["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("invite for bob: {s}"));
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Party"),
        "{invite}"
    );
    assert!(
        stripped.iter().any(|e| e["type"] == "m.room.join_rules"),
        "{invite}"
    );
    assert!(!room_ids(&s, "join").contains(&room));
    assert!(timeline(&s, &room).is_empty(), "no timeline before joining");

    // Bob rejects: the room moves to rooms.leave for him, and alice sees it.
    bob.leave(&room).await;
    let s = bob_sync.next(5_000).await;
    assert!(
        room_ids(&s, "leave").contains(&room),
        "rejected invite in rooms.leave: {s}"
    );
    assert!(!room_ids(&s, "invite").contains(&room));
    let got = alice_sync
        .collect_until(&room, Duration::from_secs(10), |g| {
            g.iter().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == bob.user_id.as_str()
                    && e["content"]["membership"] == "leave"
            })
        })
        .await;
    assert!(!got.is_empty());
    let inv = alice
        .get_state(&room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(inv["membership"], "leave");

    // A fresh initial sync doesn't show rejected invites unless include_leave.
    let s = bob.sync(None, None, None).await;
    assert!(!room_ids(&s, "invite").contains(&room) && !room_ids(&s, "join").contains(&room));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_loading_members() {
    let server = TestServer::start().await;
    let owner = server.register_no_password("owner").await;
    let room = owner.create_room(json!({ "preset": "public_chat" })).await;
    let mut users = Vec::new();
    for i in 0..6 {
        let u = server.register_no_password(&format!("u{i}")).await;
        u.join(&room).await;
        users.push(u);
    }
    for u in &users {
        u.send_text(&room, &format!("from {}", u.localpart())).await;
    }
    let filter =
        json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } })
            .to_string();
    let s = owner.sync(None, None, Some(&filter)).await;
    let r = joined_room(&s, &room).expect("room");
    let senders: Vec<String> = timeline(&s, &room)
        .iter()
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        senders,
        vec![users[4].user_id.clone(), users[5].user_id.clone()]
    );
    let members: Vec<String> = r["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    for sender in &senders {
        assert!(
            members.contains(sender),
            "lazy loading includes the timeline senders' members: {members:?}"
        );
    }
    for m in &members {
        assert!(
            senders.contains(m) || m == &owner.user_id,
            "lazy loading left out {m}'s member event? got {members:?}"
        );
    }
    // The summary still counts everyone.
    if let Some(n) = r["summary"]["m.joined_member_count"].as_u64() {
        assert_eq!(n, 7);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_has_its_own_position() {
    let server = TestServer::start().await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", PASSWORD).await;
    let room = phone.create_room(json!({})).await;
    let (mut p, _) = SyncCursor::initial(&phone, None).await;
    let (mut l, _) = SyncCursor::initial(&laptop, None).await;
    phone.send_text(&room, "from phone").await;
    let got_p = p
        .collect_until(&room, Duration::from_secs(10), |g| !bodies(g).is_empty())
        .await;
    let got_l = l
        .collect_until(&room, Duration::from_secs(10), |g| !bodies(g).is_empty())
        .await;
    assert_eq!(bodies(&got_p), vec!["from phone"]);
    assert_eq!(
        bodies(&got_l),
        vec!["from phone"],
        "another device of the same user gets it too"
    );
    // The event sent from the phone carries its transaction id only for the phone.
    let mine = got_p
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap();
    assert!(
        mine["unsigned"]["transaction_id"].is_string(),
        "sender's device sees its txn id: {mine}"
    );
    let theirs = got_l
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap();
    assert!(
        theirs["unsigned"].get("transaction_id").is_none(),
        "other devices don't: {theirs}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_event_fields() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "trim me").await;
    let id = alice
        .create_filter(json!({ "event_fields": ["type", "content.body", "event_id"] }))
        .await;
    let s = alice.sync(None, None, Some(&id)).await;
    let msg = messages_only(&timeline(&s, &room))
        .pop()
        .expect("the message");
    assert_eq!(
        msg["content"],
        json!({ "body": "trim me" }),
        "event_fields keeps content.body only: {msg}"
    );
    assert!(
        msg.get("origin_server_ts").is_none() && msg.get("sender").is_none(),
        "{msg}"
    );
    server.shutdown().await;
}

/// A long-poll is woken by things other than messages too: an invite, and a
/// change to the user's own account data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_invite_and_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = bob.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let poll = {
        let (bob, since) = (bob.clone(), since.clone());
        tokio::spawn(async move { bob.sync(Some(&since), Some(30_000), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let room = alice.create_room(json!({ "invite": [bob.user_id] })).await;
    let s = poll.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the invite took {:?} to wake bob",
        t.elapsed()
    );
    assert!(room_ids(&s, "invite").contains(&room), "{s}");

    let since = s["next_batch"].as_str().unwrap().to_owned();
    let poll = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.sync(Some(&since), Some(30_000), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    bob.put_account_data("org.example.x", json!({ "v": 1 }))
        .await;
    let s = poll.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "account data took {:?} to wake bob",
        t.elapsed()
    );
    let types: Vec<&str> = s["account_data"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"org.example.x"), "{s}");
    server.shutdown().await;
}

/// Joining a room shows up in the next incremental sync with the room's
/// state, so the client can render it without an initial sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newly_joined_room_carries_its_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Garden", "topic": "Plants" }))
        .await;
    for i in 0..15 {
        alice.send_text(&room, &format!("old {i}")).await;
    }
    let since = bob.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.join(&room).await;
    let s = bob.sync(Some(&since), Some(5_000), None).await;
    let r = joined_room(&s, &room)
        .unwrap_or_else(|| panic!("joined room in the incremental sync: {s}"));
    let mut all = r["state"]["events"].as_array().cloned().unwrap_or_default();
    all.extend(timeline(&s, &room));
    for (t, k) in [
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.join_rules", ""),
        ("m.room.power_levels", ""),
    ] {
        assert!(
            all.iter().any(|e| e["type"] == t && e["state_key"] == k),
            "the newly joined room's {t} is in state or timeline: {s}"
        );
    }
    let tl = timeline(&s, &room);
    assert!(
        tl.iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "bob's own join is in the timeline: {s}"
    );
    if r["timeline"]["limited"] == true {
        assert!(r["timeline"]["prev_batch"].is_string(), "{s}");
    }
    server.shutdown().await;
}

/// When an incremental sync's timeline is limited, state changes that fell
/// in the gap are delivered in the state section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_sync_delivers_state_from_the_gap() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Before" }))
        .await;
    bob.join(&room).await;
    let filter = json!({ "room": { "timeline": { "limit": 2 } } }).to_string();
    let since = bob.sync(None, None, Some(&filter)).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    alice
        .put_state(&room, "m.room.name", "", json!({ "name": "After" }))
        .await;
    let carol = server.register("carol").await;
    carol.join(&room).await;
    for i in 0..5 {
        alice.send_text(&room, &format!("n{i}")).await;
    }
    let s = bob.sync(Some(&since), Some(0), Some(&filter)).await;
    let r = joined_room(&s, &room).expect("room");
    assert_eq!(r["timeline"]["limited"], true);
    assert_eq!(bodies(&timeline(&s, &room)), vec!["n3", "n4"]);
    let state = r["state"]["events"].as_array().cloned().unwrap_or_default();
    let name = state
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap_or_else(|| panic!("the renamed room's m.room.name is in state: {s}"));
    assert_eq!(name["content"]["name"], "After");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == carol.user_id.as_str()
            && e["content"]["membership"] == "join"),
        "carol's join from the gap is in state: {s}"
    );
    server.shutdown().await;
}

/// The sync journal (`sync/journal.rs`) lets an incremental sync skip the
/// store reads of sections nothing touched since its token, reuse the
/// memberships and notification counters it read before, and read a room's
/// newest events from memory. Each kind of change must still reach the first
/// sync after it, between syncs that carried only messages, and only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_change_reaches_the_next_incremental_sync_between_messages() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let (mut cursor, _) = SyncCursor::initial(&alice, None).await;
    let mut n = 0;
    // A message from bob, and the sync that carries it: nothing else in it.
    let mut message_only = async |cursor: &mut SyncCursor| {
        n += 1;
        let body = format!("m{n}");
        bob.send_text(&room, &body).await;
        let got = cursor
            .collect_until(&room, Duration::from_secs(10), |evs| {
                bodies(evs).contains(&body)
            })
            .await;
        assert_eq!(bodies(&messages_only(&got)), vec![body.clone()]);
    };
    let next_with =
        async |cursor: &mut SyncCursor, what: &str, found: &dyn Fn(&serde_json::Value) -> bool| {
            let start = Instant::now();
            loop {
                let s = cursor.next(5_000).await;
                if found(&s) {
                    return s;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{what} never arrived"
                );
            }
        };

    message_only(&mut cursor).await;
    alice
        .put_account_data("org.example.journal", json!({ "n": 1 }))
        .await;
    next_with(&mut cursor, "account data", &|s| {
        s["account_data"]["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["n"] == 1))
    })
    .await;
    message_only(&mut cursor).await;

    let to_device = json!({ "messages": { &alice.user_id: { &alice.device_id: { "n": 2 } } } });
    let sent = bob
        .put(&format!("{V3}/sendToDevice/m.journal/{}", txn()), to_device)
        .await;
    assert!(sent.status.is_success(), "{sent:?}");
    next_with(&mut cursor, "the to-device message", &|s| {
        s["to_device"]["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["n"] == 2))
    })
    .await;
    message_only(&mut cursor).await;

    // A device of bob's goes away: alice's device lists name him.
    let bob_phone = server.login("bob", PASSWORD).await;
    bob_phone.logout().await;
    next_with(&mut cursor, "bob's device-list change", &|s| {
        s["device_lists"]["changed"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u == bob.user_id.as_str()))
    })
    .await;
    message_only(&mut cursor).await;

    // A new membership of alice's: kept memberships are not reused past it.
    let other = bob.create_room(json!({ "preset": "private_chat" })).await;
    bob.invite(&other, &alice.user_id).await;
    next_with(&mut cursor, "the invite", &|s| {
        room_ids(s, "invite").contains(&other)
    })
    .await;
    alice.join(&other).await;
    next_with(&mut cursor, "the join", &|s| {
        room_ids(s, "join").contains(&other)
    })
    .await;
    message_only(&mut cursor).await;

    // Notification counts: alice reads, then bob's next message counts.
    let room_id = room.clone();
    let count_is = move |n: u64| {
        let room_id = room_id.clone();
        move |s: &serde_json::Value| {
            joined_room(s, &room_id)
                .is_some_and(|r| r["unread_notifications"]["notification_count"] == n)
        }
    };
    let last = alice.send_text(&room, "alice reads up to here").await;
    let receipt = alice
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)),
            json!({}),
        )
        .await;
    assert!(receipt.status.is_success(), "{receipt:?}");
    next_with(&mut cursor, "the reset count", &count_is(0)).await;
    bob.send_text(&room, "counted").await;
    next_with(&mut cursor, "the count of bob's message", &count_is(1)).await;
    bob.send_text(&room, "counted too").await;
    next_with(
        &mut cursor,
        "the count of bob's second message",
        &count_is(2),
    )
    .await;
    server.shutdown().await;
}
