//! Federation when servers and the network between them fail: a server that
//! was down gets everything queued for it, once, in order; two servers that
//! changed a room's state while partitioned agree on it after healing.

mod common;

use std::time::Duration;

use common::{
    federation::{join_via, server_name, wait_for_bodies, wait_for_membership, Federation},
    link::Link,
    Client,
};
use serde_json::{json, Value};

/// Waits until every client reads the same value at `path` in the room's
/// `event_type` state, and that value satisfies `pred`; returns it.
async fn wait_for_agreement(
    clients: &[&Client],
    room: &str,
    event_type: &str,
    field: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut seen = Vec::new();
        for c in clients {
            let r = c.get_state(room, event_type, "").await;
            seen.push(if r.status == 200 {
                r.ok()[field].clone()
            } else {
                Value::Null
            });
        }
        if seen.windows(2).all(|w| w[0] == w[1]) && pred(&seen[0]) {
            return seen[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "servers disagree on {event_type}.{field}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_was_down_gets_everything_once_in_order() {
    let mut fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    join_via(&bob, &room, &fed.server_name(0)).await;
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;
    alice.send_text(&room, "before").await;
    wait_for_bodies(&bob, &room, |b| b == ["before"]).await;

    // hs2 goes down; alice keeps talking into the room.
    fed.servers[1].stop().await;
    let sent: Vec<String> = (0..12).map(|i| format!("while down {i}")).collect();
    for body in &sent {
        alice.send_text(&room, body).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Back up: hs1's queue delivers the backlog, each message once, in order.
    fed.servers[1].start_again().await;
    let bob = bob.on(&fed.servers[1]);
    let mut expected = vec!["before".to_owned()];
    expected.extend(sent.iter().cloned());
    let on_bob = wait_for_bodies(&bob, &room, |b| b.len() >= expected.len()).await;
    assert_eq!(on_bob, expected);

    // And the conversation goes on in both directions.
    bob.send_text(&room, "I'm back").await;
    wait_for_bodies(&alice, &room, |b| b.last().is_some_and(|x| x == "I'm back")).await;
    alice.send_text(&room, "welcome back").await;
    expected.extend(["I'm back".to_owned(), "welcome back".to_owned()]);
    let done = |b: &[String]| b.len() >= expected.len();
    assert_eq!(wait_for_bodies(&alice, &room, done).await, expected);
    assert_eq!(wait_for_bodies(&bob, &room, done).await, expected);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_servers_resolve_concurrent_state_the_same_way() {
    // hs1 reaches hs2 only through `to_hs2`, and hs2 reaches hs1 only through `to_hs1`.
    let to_hs2 = Link::new().await;
    let to_hs1 = Link::new().await;
    let (via_hs2, via_hs1) = (to_hs2.addr.to_string(), to_hs1.addr.to_string());
    let fed = Federation::start_with(2, move |i, config| {
        let (peer, relay) = match i {
            0 => (server_name(1), via_hs2.clone()),
            _ => (server_name(0), via_hs1.clone()),
        };
        config.federation.overrides.insert(peer, relay);
    })
    .await;
    to_hs2.connect_to(fed.addrs[1]);
    to_hs1.connect_to(fed.addrs[0]);

    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "name": "Start",
            "power_level_content_override": {
                // Room version 12: the creator outranks everyone without a level.
                "users": {bob.user_id.as_str(): 100}
            },
        }))
        .await;
    join_via(&bob, &room, &fed.server_name(0)).await;
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;
    wait_for_membership(&bob, &room, &alice.user_id, "join").await;

    // Partitioned, both rename the room; only bob sets a topic.
    to_hs2.cut();
    to_hs1.cut();
    alice
        .put_state(&room, "m.room.name", "", json!({"name": "Alpha"}))
        .await;
    bob.put_state(&room, "m.room.name", "", json!({"name": "Beta"}))
        .await;
    bob.put_state(&room, "m.room.topic", "", json!({"topic": "Bravo"}))
        .await;
    alice.send_text(&room, "alice alone").await;
    bob.send_text(&room, "bob alone").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        alice.get_state(&room, "m.room.name", "").await.ok()["name"],
        "Alpha"
    );
    assert_eq!(
        bob.get_state(&room, "m.room.name", "").await.ok()["name"],
        "Beta"
    );

    // Healed: the queues deliver, each server resolves the fork, and both
    // end up with one name (whichever the resolution picks) and bob's topic.
    to_hs2.heal();
    to_hs1.heal();
    let both = [&alice, &bob];
    let name = wait_for_agreement(&both, &room, "m.room.name", "name", |v| {
        v == "Alpha" || v == "Beta"
    })
    .await;
    wait_for_agreement(&both, &room, "m.room.topic", "topic", |v| v == "Bravo").await;
    let all = |b: &[String]| b.len() >= 2;
    for c in both {
        let bodies = wait_for_bodies(c, &room, all).await;
        assert!(bodies.contains(&"alice alone".to_owned()), "{bodies:?}");
        assert!(bodies.contains(&"bob alone".to_owned()), "{bodies:?}");
    }

    // A message after healing merges the fork; state stays agreed.
    alice.send_text(&room, "together again").await;
    let after = |b: &[String]| b.iter().any(|x| x == "together again");
    wait_for_bodies(&bob, &room, after).await;
    let again = wait_for_agreement(&both, &room, "m.room.name", "name", |_| true).await;
    assert_eq!(again, name);
    fed.shutdown().await;
}
