//! Group chats: five members talking through concurrent long-polls, and a
//! 1,000-member room built through the API where one message reaches every
//! member's /sync.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_chat() {
    let server = TestServer::start().await;
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let mut users = Vec::new();
    for name in names {
        users.push(server.register(name).await);
    }
    let owner = &users[0];
    let room = owner
        .create_room(json!({
            "preset": "private_chat",
            "name": "The five",
            "invite": users[1..3].iter().map(|u| u.user_id.clone()).collect::<Vec<_>>(),
        }))
        .await;
    // Two invites at creation, two afterwards.
    for u in &users[3..] {
        owner.invite(&room, &u.user_id).await;
    }
    for u in &users[1..] {
        let s = u.sync(None, None, None).await;
        assert!(
            room_ids(&s, "invite").contains(&room),
            "{u:?} sees the invite: {s}"
        );
        assert_eq!(u.join(&room).await, room);
    }

    let joined = owner
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&room)
        ))
        .await
        .ok();
    let mut members: Vec<String> = joined["joined"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    members.sort();
    let mut want: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    want.sort();
    assert_eq!(members, want, "/joined_members lists the five");

    let filter = json!({ "room": { "timeline": { "limit": 100 } } }).to_string();
    let rounds = 4;
    let expected: Vec<String> = (0..rounds)
        .flat_map(|r| names.iter().map(move |n| format!("{n} says {r}")))
        .collect();
    let mut tasks = Vec::new();
    for u in &users {
        let (mut cursor, _) = SyncCursor::initial(u, Some(&filter)).await;
        let (room, n) = (room.clone(), expected.len());
        tasks.push(tokio::spawn(async move {
            cursor
                .collect_until(&room, Duration::from_secs(60), |got| bodies(got).len() >= n)
                .await
        }));
    }
    let mut sent = Vec::new();
    for r in 0..rounds {
        for (u, n) in users.iter().zip(names) {
            sent.push(u.send_text(&room, &format!("{n} says {r}")).await);
        }
    }
    for (u, task) in users.iter().zip(tasks) {
        let got = messages_only(&task.await.unwrap());
        assert_eq!(
            bodies(&got),
            expected,
            "{u:?} got all messages once, in order"
        );
        assert_eq!(event_ids(&got), sent, "{u:?} got the sent event ids");
    }

    // Everyone reads the same history.
    for u in &users {
        let history = u.paginate_all(&room, None, "f", 50).await;
        assert_eq!(bodies(&history), expected, "{u:?}'s /messages history");
    }
    server.shutdown().await;
}

/// Five members send at once: everyone sees the same single order, in /sync
/// and in /messages, with every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_agree_on_order() {
    const EACH: usize = 20;
    let server = TestServer::start().await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(server.register_no_password(&format!("u{i}")).await);
    }
    let room = users[0]
        .create_room(json!({ "preset": "public_chat" }))
        .await;
    for u in &users[1..] {
        u.join(&room).await;
    }
    let filter = json!({ "room": { "timeline": { "limit": 200 } } }).to_string();
    let mut readers = Vec::new();
    for u in &users {
        let (mut cursor, _) = SyncCursor::initial(u, Some(&filter)).await;
        let room = room.clone();
        readers.push(tokio::spawn(async move {
            cursor
                .collect_until(&room, Duration::from_secs(60), |g| {
                    bodies(g).len() >= 5 * EACH
                })
                .await
        }));
    }
    // Each user sends its messages one after another, all users at once.
    let senders = users.iter().enumerate().map(|(i, u)| {
        let room = room.clone();
        async move {
            let mut ids = Vec::new();
            for k in 0..EACH {
                ids.push(u.send_text(&room, &format!("u{i} #{k}")).await);
            }
            ids
        }
    });
    let per_sender: Vec<Vec<String>> = futures::future::join_all(senders).await;

    let history = messages_only(&users[0].paginate_all(&room, None, "f", 30).await);
    let order = event_ids(&history);
    assert_eq!(order.len(), 5 * EACH, "every message stored once");
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5 * EACH, "no duplicates in /messages");
    // Each sender's own messages keep their sending order.
    for ids in &per_sender {
        let positions: Vec<usize> = ids
            .iter()
            .map(|id| order.iter().position(|o| o == id).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a sender's messages out of order: {positions:?}"
        );
    }
    for (u, reader) in users.iter().zip(readers) {
        let got = event_ids(&messages_only(&reader.await.unwrap()));
        assert_eq!(got, order, "{u:?}'s sync order differs from /messages");
        let mut back = event_ids(&messages_only(&u.paginate_all(&room, None, "b", 13).await));
        back.reverse();
        assert_eq!(back, order, "{u:?}'s /messages dir=b order differs");
    }
    server.shutdown().await;
}

/// A 1,000-member public room: everyone registers and joins through the API;
/// one message then shows up in all 1,000 members' incremental syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_member_room() {
    const MEMBERS: usize = 1000;
    const PARALLEL: usize = 50;
    let server = TestServer::start().await;
    let t0 = Instant::now();
    let mut phase = Instant::now();
    let mut lap = |what: &str| {
        eprintln!("thousand_member_room: {what} took {:?}", phase.elapsed());
        phase = Instant::now();
    };

    let owner = server.register_no_password("owner").await;
    let room = owner
        .create_room(json!({ "preset": "public_chat", "name": "Broadcast" }))
        .await;

    let others = bounded(1..MEMBERS, PARALLEL, |i| {
        let server = &server;
        async move { server.register_no_password(&format!("user{i:04}")).await }
    })
    .await;
    lap("registering 999 users");

    let joined = bounded(others.iter(), PARALLEL, |u| {
        let room = room.clone();
        async move { u.join(&room).await }
    })
    .await;
    assert!(joined.iter().all(|r| r == &room));
    lap("999 joins");

    let all: Vec<&Client> = std::iter::once(&owner).chain(others.iter()).collect();
    let members = owner
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(
        members["joined"].as_object().unwrap().len(),
        MEMBERS,
        "/joined_members counts everyone"
    );

    // A cheap initial sync (no rooms) gives each member a position after their join.
    let no_rooms = json!({ "room": { "rooms": [] }, "presence": { "types": [] } }).to_string();
    let positions: Vec<String> = bounded(all.iter(), PARALLEL, |u| {
        let no_rooms = no_rooms.clone();
        async move {
            let s = u.sync(None, None, Some(&no_rooms)).await;
            s["next_batch"].as_str().unwrap().to_owned()
        }
    })
    .await;
    lap("1000 initial syncs");

    // A few members long-poll while the message is sent: they must be woken.
    // Presence is filtered out: with everyone coming online during the
    // setup, each incremental sync would otherwise carry up to ~1,000 presence
    // updates, which is not what this test measures.
    let inc_filter = json!({
        "room": { "timeline": { "limit": 10 }, "state": { "lazy_load_members": true } },
        "presence": { "not_types": ["*"] },
    })
    .to_string();
    let pollers: Vec<_> = (0..MEMBERS)
        .step_by(MEMBERS / 20)
        .map(|i| {
            let (u, since, f, room) = (
                all[i].clone(),
                positions[i].clone(),
                inc_filter.clone(),
                room.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let mut since = since;
                loop {
                    let s = u.sync(Some(&since), Some(30_000), Some(&f)).await;
                    let events = timeline(&s, &room);
                    if !events.is_empty() {
                        return (events, started.elapsed());
                    }
                    since = s["next_batch"].as_str().unwrap().to_owned();
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let event_id = owner.send_text(&room, "hello, everyone").await;
    let sent_at = Instant::now();
    for p in pollers {
        let (events, _) = p.await.unwrap();
        assert_eq!(
            event_ids(&events),
            vec![event_id.clone()],
            "a long-polling member got exactly the message"
        );
    }
    eprintln!(
        "thousand_member_room: 20 long-polls woken within {:?} of the send",
        sent_at.elapsed()
    );
    lap("send and long-poll wake-ups");

    let results = bounded(all.iter().zip(&positions), PARALLEL, |(u, since)| {
        let (f, room) = (inc_filter.clone(), room.clone());
        async move {
            let s = u.sync(Some(since), Some(10_000), Some(&f)).await;
            (u.user_id.clone(), timeline(&s, &room))
        }
    })
    .await;
    lap("1000 incremental syncs");
    let missing: Vec<&String> = results
        .iter()
        .filter(|(_, ev)| !event_ids(ev).contains(&event_id))
        .map(|(u, _)| u)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {MEMBERS} members didn't get the message, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for (user, events) in &results {
        assert_eq!(
            bodies(events),
            vec!["hello, everyone"],
            "{user} got the message exactly once"
        );
    }
    eprintln!("thousand_member_room: total {:?}", t0.elapsed());
    server.shutdown().await;
}
