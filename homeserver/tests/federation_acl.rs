//! Server ACLs (`m.room.server_acl`): once a room denies a server, its events
//! are refused, it cannot read the room or join more users to it, and other
//! servers carry on.

mod common;

use std::time::Duration;

use common::{
    enc,
    federation::{join_via, wait_for_bodies, wait_for_membership, Federation},
};
use serde_json::{json, Value};

/// A signed federation GET from server `from` to server `to`.
async fn signed_get(fed: &Federation, from: usize, to: usize, path: &str) -> Result<Value, String> {
    let services = fed.servers[from].services();
    let dest = ruma::ServerName::parse(fed.server_name(to)).map_err(|e| e.to_string())?;
    services
        .federation
        .client
        .request(&dest, reqwest::Method::GET, path, None)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_server_is_refused_everywhere_and_others_carry_on() {
    let fed = Federation::start(3).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let dave = fed.servers[1].register("dave").await;
    let carol = fed.servers[2].register("carol").await;
    let hs1 = fed.server_name(0);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = join_via(&bob, &room, &hs1).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;

    let acl_event = alice
        .put_state(
            &room,
            "m.room.server_acl",
            "",
            json!({"allow": ["*"], "deny": [fed.server_name(1)], "allow_ip_literals": false}),
        )
        .await;

    // hs2 can no longer read the room or bring another user in.
    let state = signed_get(
        &fed,
        1,
        0,
        &format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&room),
            enc(&acl_event)
        ),
    )
    .await;
    assert!(
        state.as_ref().is_err_and(|e| e.contains("M_FORBIDDEN")),
        "{state:?}"
    );
    let make_join = signed_get(
        &fed,
        1,
        0,
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=12",
            enc(&room),
            enc(&dave.user_id)
        ),
    )
    .await;
    assert!(
        make_join.as_ref().is_err_and(|e| e.contains("M_FORBIDDEN")),
        "{make_join:?}"
    );
    // hs2 still holds the room, so it joins dave itself; hs1 refuses the event.
    join_via(&dave, &room, &hs1).await;

    // Bob's messages from hs2 are refused; a server not denied joins and talks.
    bob.send_text(&room, "from a denied server").await;
    let r = join_via(&carol, &room, &hs1).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    carol.send_text(&room, "from hs3").await;
    let seen = wait_for_bodies(&alice, &room, |b| b.iter().any(|x| x == "from hs3")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen_later = wait_for_bodies(&alice, &room, |_| true).await;
    assert!(!seen
        .iter()
        .chain(&seen_later)
        .any(|b| b == "from a denied server"));
    fed.shutdown().await;
}
