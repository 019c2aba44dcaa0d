//! Spaces: `/hierarchy` walks a space breadth first, shows each user only the
//! rooms they may see, honours `suggested_only`, `max_depth` and paging, and
//! crosses servers through the federation `/hierarchy` endpoint.

mod common;

use std::collections::BTreeSet;

use common::{enc, federation::Federation, Client, TestServer};
use serde_json::{json, Value};

async fn space(owner: &Client, name: &str, public: bool) -> String {
    let preset = if public {
        "public_chat"
    } else {
        "private_chat"
    };
    owner
        .create_room(json!({"preset": preset, "name": name,
                            "creation_content": {"type": "m.space"}}))
        .await
}

async fn room(owner: &Client, name: &str, public: bool) -> String {
    let preset = if public {
        "public_chat"
    } else {
        "private_chat"
    };
    owner
        .create_room(json!({"preset": preset, "name": name}))
        .await
}

async fn add_child(owner: &Client, parent: &str, child: &str, server: &str, suggested: bool) {
    owner
        .put_state(
            parent,
            "m.space.child",
            child,
            json!({"via": [server], "suggested": suggested}),
        )
        .await;
}

fn hierarchy_path(root: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", enc(root))
}

fn names(v: &Value) -> Vec<String> {
    v["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

fn strs(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_is_walked_breadth_first_showing_only_what_each_user_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let hs = server.server_name.clone();
    let top = space(&alice, "Top", true).await;
    let lobby = room(&alice, "Lobby", true).await;
    let secret = room(&alice, "Secret", false).await;
    let sub = space(&alice, "Sub", true).await;
    let deep = room(&alice, "Deep", true).await;
    add_child(&alice, &top, &lobby, &hs, true).await;
    add_child(&alice, &top, &secret, &hs, false).await;
    add_child(&alice, &top, &sub, &hs, false).await;
    add_child(&alice, &sub, &deep, &hs, false).await;
    // A child without `via` does not count.
    alice
        .put_state(&top, "m.space.child", &deep, json!({}))
        .await;

    // Alice, in every room, sees them all, level by level.
    let all = alice.get(&hierarchy_path(&top, "")).await.ok();
    let got = names(&all);
    assert_eq!(got.len(), 5, "{all}");
    assert_eq!(got[0], "Top");
    assert_eq!(set(&got[1..4]), strs(&["Lobby", "Secret", "Sub"]));
    assert_eq!(got[4], "Deep");
    let first = &all["rooms"][0];
    assert_eq!(first["room_type"], "m.space");
    assert_eq!(first["children_state"].as_array().map(Vec::len), Some(3));
    assert!(first["children_state"][0]["origin_server_ts"].is_u64());
    assert!(all.get("next_batch").is_none());

    // Bob, in none of them, does not see the private room.
    let bobs = names(&bob.get(&hierarchy_path(&top, "")).await.ok());
    assert_eq!(set(&bobs), strs(&["Top", "Lobby", "Sub", "Deep"]));

    // suggested_only and max_depth.
    let suggested = names(
        &alice
            .get(&hierarchy_path(&top, "suggested_only=true"))
            .await
            .ok(),
    );
    assert_eq!(suggested, ["Top", "Lobby"]);
    let shallow = names(&alice.get(&hierarchy_path(&top, "max_depth=1")).await.ok());
    assert_eq!(set(&shallow), strs(&["Top", "Lobby", "Secret", "Sub"]));

    // Paging two at a time covers the same rooms once each.
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..5 {
        let query = match &from {
            Some(t) => format!("limit=2&from={}", enc(t)),
            None => "limit=2".to_owned(),
        };
        let page = alice.get(&hierarchy_path(&top, &query)).await.ok();
        paged.extend(names(&page));
        from = page["next_batch"].as_str().map(str::to_owned);
        if from.is_none() {
            break;
        }
    }
    assert_eq!(paged, got);
    // A token from another walk is refused.
    let page = alice.get(&hierarchy_path(&top, "limit=2")).await.ok();
    let token = page["next_batch"].as_str().unwrap_or_default().to_owned();
    alice
        .get(&hierarchy_path(
            &top,
            &format!("limit=2&max_depth=1&from={}", enc(&token)),
        ))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&hierarchy_path(&top, "limit=-1"))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // A private space is closed to outsiders.
    let hidden = space(&alice, "Hidden", false).await;
    bob.get(&hierarchy_path(&hidden, ""))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_on_another_server_is_walked_through_federation() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let hs1 = fed.server_name(0);
    let top = space(&alice, "Faraway", true).await;
    let open = room(&alice, "Open", true).await;
    let closed = room(&alice, "Closed", false).await;
    let sub = space(&alice, "Nested", true).await;
    let leaf = room(&alice, "Leaf", true).await;
    add_child(&alice, &top, &open, &hs1, true).await;
    add_child(&alice, &top, &closed, &hs1, false).await;
    add_child(&alice, &top, &sub, &hs1, false).await;
    add_child(&alice, &sub, &leaf, &hs1, false).await;

    // Bob joins the space (room ids of version 12 name no server, so a
    // space is found through one's own rooms); his server holds none of the
    // children and asks hs1 about them.
    let r = bob
        .post(
            &format!("/_matrix/client/v3/join/{}?via={hs1}", enc(&top)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let walk = bob.get(&hierarchy_path(&top, "")).await.ok();
    let got = names(&walk);
    assert_eq!(got[0], "Faraway");
    assert_eq!(set(&got), strs(&["Faraway", "Open", "Nested", "Leaf"]));
    assert!(walk["rooms"][0].get("allowed_room_ids").is_none());
    let suggested = names(
        &bob.get(&hierarchy_path(&top, "suggested_only=true"))
            .await
            .ok(),
    );
    assert_eq!(suggested, ["Faraway", "Open"]);

    // The federation endpoint itself: signed requests only; a closed room is
    // listed as inaccessible to a server with nobody in it.
    let unsigned = fed
        .http()
        .get(format!(
            "{}/_matrix/federation/v1/hierarchy/{}",
            fed.federation_url(0),
            enc(&top)
        ))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(unsigned.ok(), Some(401));
    let services = fed.servers[1].services();
    let hs1_name = ruma::ServerName::parse(hs1.as_str()).expect("server name");
    let get = reqwest::Method::GET;
    let answer = services
        .federation
        .client
        .request(
            &hs1_name,
            get,
            &format!("/_matrix/federation/v1/hierarchy/{}", enc(&top)),
            None,
        )
        .await
        .expect("signed hierarchy request");
    assert_eq!(answer["room"]["name"], "Faraway");
    assert_eq!(answer["inaccessible_children"], json!([closed]));
    let children: BTreeSet<String> = answer["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(children, strs(&["Open", "Nested"]));
    fed.shutdown().await;
}
