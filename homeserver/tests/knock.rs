//! Knocking: asking to be let into a room whose join rule is `knock`, on this
//! server and across servers; the knock shows in /sync under `rooms.knock`,
//! then is answered by an invite (let in) or a kick (turned away), or is
//! withdrawn by leaving.

mod common;

use std::time::Duration;

use common::{
    enc,
    federation::{wait_for_membership, Federation},
    Client, TestServer,
};
use serde_json::{json, Value};

/// A room (version 10) whose members let people in by answering knocks.
async fn knock_room(owner: &Client, name: &str) -> String {
    owner
        .create_room(json!({
            "preset": "private_chat",
            "room_version": "10",
            "name": name,
            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                               "content": {"join_rule": "knock"}}],
        }))
        .await
}

fn knock_path(room: &str, via: Option<&str>) -> String {
    match via {
        Some(server) => format!("/_matrix/client/v3/knock/{}?via={server}", enc(room)),
        None => format!("/_matrix/client/v3/knock/{}", enc(room)),
    }
}

/// Polls `client`'s initial sync until `section` (`knock`, `invite`, `join`,
/// `leave`) holds the room; returns that entry.
async fn wait_in_section(client: &Client, section: &str, room: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let filter = r#"{"room":{"include_leave":true}}"#;
    loop {
        let sync = client.sync(None, None, Some(filter)).await;
        if let Some(entry) = sync["rooms"][section].get(room) {
            return entry.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {room} under rooms.{section}: {}",
            client.user_id,
            sync["rooms"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_has(entry: &Value, list: &str, kind: &str, check: impl Fn(&Value) -> bool) -> bool {
    entry[list]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["type"] == kind && check(e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocks_on_this_server_are_answered_by_invites_kicks_or_withdrawn() {
    let server = TestServer::start().await;
    let owner = server.register("owner").await;
    let kate = server.register("kate").await;
    let room = knock_room(&owner, "Knock knock").await;

    // Kate knocks with a reason: she sees the room's name, her knock; the owner sees her knock.
    let r = kate
        .post(&knock_path(&room, None), json!({"reason": "let me in"}))
        .await
        .ok();
    assert_eq!(r["room_id"], room.as_str());
    let entry = wait_in_section(&kate, "knock", &room).await;
    assert!(state_has(&entry, "knock_state", "m.room.name", |e| {
        e["content"]["name"] == "Knock knock"
    }));
    assert!(state_has(&entry, "knock_state", "m.room.member", |e| {
        e["state_key"] == kate.user_id.as_str() && e["content"]["membership"] == "knock"
    }));
    let member = owner
        .get_state(&room, "m.room.member", &kate.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "knock");
    assert_eq!(member["reason"], "let me in");
    // Knocking twice changes nothing; joining uninvited is still refused.
    kate.post(&knock_path(&room, None), json!({})).await.ok();
    kate.join_raw(&room).await.assert_error(403, "M_FORBIDDEN");

    // The owner lets her in: the knock becomes an invite she accepts.
    owner.invite(&room, &kate.user_id).await;
    wait_in_section(&kate, "invite", &room).await;
    kate.join(&room).await;
    wait_for_membership(&owner, &room, &kate.user_id, "join").await;

    // Leo knocks and withdraws; Mia knocks and is turned away.
    let leo = server.register("leo").await;
    leo.post(&knock_path(&room, None), json!({})).await.ok();
    leo.leave(&room).await;
    wait_for_membership(&owner, &room, &leo.user_id, "leave").await;
    let mia = server.register("mia").await;
    mia.post(&knock_path(&room, None), json!({})).await.ok();
    owner
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            json!({"user_id": mia.user_id, "reason": "not today"}),
        )
        .await
        .ok();
    wait_in_section(&mia, "leave", &room).await;

    // Rooms that do not take knocks refuse them; a banned user cannot knock.
    let public = owner.create_room(json!({"preset": "public_chat"})).await;
    leo.post(&knock_path(&public, None), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    owner
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({"user_id": leo.user_id}),
        )
        .await
        .ok();
    leo.post(&knock_path(&room, None), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    leo.post(&knock_path("!nowhere:localhost", None), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    leo.post(&knock_path("not a room", None), json!({}))
        .await
        .assert_error_one_of(&[(400, "M_INVALID_PARAM"), (400, "M_UNRECOGNIZED")]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocks_cross_servers_and_are_answered_there() {
    let fed = Federation::start(2).await;
    let owner = fed.servers[0].register("owner").await;
    let nina = fed.servers[1].register("nina").await;
    let omar = fed.servers[1].register("omar").await;
    let room = knock_room(&owner, "Over there").await;
    let hs1 = fed.server_name(0);

    // Nina, on hs2, knocks through hs1 and sees what hs1 told her.
    let r = nina.post(&knock_path(&room, Some(&hs1)), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let entry = wait_in_section(&nina, "knock", &room).await;
    assert!(state_has(&entry, "knock_state", "m.room.name", |e| {
        e["content"]["name"] == "Over there"
    }));
    wait_for_membership(&owner, &room, &nina.user_id, "knock").await;

    // Let in: the owner's invite reaches hs2, and Nina joins through hs1.
    owner.invite(&room, &nina.user_id).await;
    wait_in_section(&nina, "invite", &room).await;
    let r = nina
        .post(
            &format!("/_matrix/client/v3/join/{}?via={hs1}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for_membership(&owner, &room, &nina.user_id, "join").await;

    // Omar knocks on a room hs2 is not in and is turned away: the kick
    // reaches hs2 although it holds no copy of the room.
    let closed = knock_room(&owner, "Closed").await;
    omar.post(&knock_path(&closed, Some(&hs1)), json!({}))
        .await
        .ok();
    wait_for_membership(&owner, &closed, &omar.user_id, "knock").await;
    owner
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&closed)),
            json!({"user_id": omar.user_id}),
        )
        .await
        .ok();
    wait_in_section(&omar, "leave", &closed).await;

    // And a knock withdrawn from hs2 reaches hs1.
    let other = knock_room(&owner, "Other").await;
    omar.post(&knock_path(&other, Some(&hs1)), json!({}))
        .await
        .ok();
    wait_in_section(&omar, "knock", &other).await;
    omar.leave(&other).await;
    wait_for_membership(&owner, &other, &omar.user_id, "leave").await;
    fed.shutdown().await;
}
