//! History from before a server joined a room: paging back in `/messages`
//! past the join fetches it from a server in the room (`/backfill`), checks
//! it, and shows it in order, once, as history visibility allows.

mod common;

use common::federation::{join_via, wait_for_membership, Federation};
use serde_json::{json, Value};

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_pages_back_into_history_held_elsewhere() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let hs1 = fed.server_name(0);

    // More history than one backfill request (100 events) carries.
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Archive"}))
        .await;
    let sent: Vec<String> = (0..130).map(|i| format!("old {i}")).collect();
    for body in &sent {
        alice.send_text(&room, body).await;
    }
    join_via(&bob, &room, &hs1).await;
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    // Paging back from now reaches the room's creation, in order, once each.
    let back = bob.paginate_all(&room, None, "b", 25).await;
    let mut got = bodies(&back);
    got.reverse();
    assert_eq!(got, sent);
    assert_eq!(
        back.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );
    let ids: std::collections::HashSet<&str> =
        back.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(ids.len(), back.len(), "an event came twice");
    // Read again: served from what is now held, identical.
    let again = bob.paginate_all(&room, None, "b", 40).await;
    assert_eq!(bodies(&again), bodies(&back));
    // Paging forward from the start sees the same history in order.
    let forward = bob.paginate_all(&room, None, "f", 50).await;
    assert_eq!(bodies(&forward), sent);

    // Incremental sync does not replay history.
    let sync = bob.sync(None, None, None).await;
    let since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
    alice.send_text(&room, "new").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let next = bob.sync(Some(&since), Some(1000), None).await;
        let events = next["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !events.is_empty() {
            assert_eq!(bodies(&events), ["new"]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new message");
    }

    // A room whose history is for members only: the late joiner gets none of it.
    let closed = alice
        .create_room(json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": "joined"}}]}))
        .await;
    alice.send_text(&closed, "before you came").await;
    join_via(&bob, &closed, &hs1).await;
    let history = bob.paginate_all(&closed, None, "b", 20).await;
    assert!(bodies(&history).is_empty(), "{history:?}");
    fed.shutdown().await;
}
