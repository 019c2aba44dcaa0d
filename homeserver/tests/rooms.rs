//! Rooms: creation, state, membership, listings, aliases, the directory,
//! redaction, profiles, read markers, account data, history visibility,
//! /context and /messages.

mod common;

use common::*;
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

fn path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room))
}

/// Current state of a room as (type, state_key) → content.
async fn state_map(
    user: &Client,
    room: &str,
) -> std::collections::HashMap<(String, String), Value> {
    let state = user.get(&path(room, "state")).await.ok();
    state
        .as_array()
        .expect("GET /state is an array")
        .iter()
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["state_key"].as_str().unwrap().to_owned(),
                ),
                e["content"].clone(),
            )
        })
        .collect()
}

fn key(t: &str, k: &str) -> (String, String) {
    (t.to_owned(), k.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_presets() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    for (preset, join_rule) in [
        ("private_chat", "invite"),
        ("trusted_private_chat", "invite"),
        ("public_chat", "public"),
    ] {
        let room = alice
            .create_room(json!({
                "preset": preset,
                "name": format!("{preset} room"),
                "topic": format!("about {preset}"),
                "invite": [bob.user_id],
            }))
            .await;
        let state = state_map(&alice, &room).await;
        assert_eq!(
            state[&key("m.room.join_rules", "")]["join_rule"],
            join_rule,
            "{preset}"
        );
        assert_eq!(
            state[&key("m.room.history_visibility", "")]["history_visibility"],
            "shared",
            "{preset}"
        );
        assert_eq!(
            state[&key("m.room.name", "")]["name"],
            format!("{preset} room")
        );
        assert_eq!(
            state[&key("m.room.topic", "")]["topic"],
            format!("about {preset}")
        );
        assert_eq!(
            state[&key("m.room.member", &alice.user_id)]["membership"],
            "join"
        );
        assert_eq!(
            state[&key("m.room.member", &bob.user_id)]["membership"],
            "invite",
            "{preset}: invitee"
        );
        match preset {
            "public_chat" => {
                if let Some(g) = state.get(&key("m.room.guest_access", "")) {
                    assert_eq!(g["guest_access"], "forbidden", "{preset}");
                }
            }
            _ => assert_eq!(
                state[&key("m.room.guest_access", "")]["guest_access"],
                "can_join",
                "{preset}"
            ),
        }
        assert!(
            state.contains_key(&key("m.room.power_levels", "")),
            "{preset}: power levels"
        );
        // The invitee can join; in the public room so could anyone.
        bob.join(&room).await;
    }

    // initial_state overrides the preset; the default preset is private_chat.
    let room = alice
        .create_room(json!({
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
        }))
        .await;
    let state = state_map(&alice, &room).await;
    assert_eq!(
        state[&key("m.room.history_visibility", "")]["history_visibility"],
        "joined"
    );
    assert_eq!(state[&key("m.room.join_rules", "")]["join_rule"], "invite");
    bob.join_raw(&room).await.assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_versions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    for version in ["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] {
        let room = alice
            .create_room(json!({ "room_version": version, "preset": "public_chat" }))
            .await;
        let create = alice.get_state(&room, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], version, "{version}: {create}");
        if version == "12" {
            assert!(
                !room.contains(':'),
                "v12 room ids have no server part: {room}"
            );
            assert_eq!(
                room.len(),
                44,
                "v12 room id is ! + 43 chars of unpadded base64: {room}"
            );
        } else {
            assert!(room.ends_with(":localhost"), "v{version} room id {room}");
        }
        if version.parse::<u32>().unwrap() <= 10 {
            assert_eq!(
                create["creator"],
                alice.user_id.as_str(),
                "v10 create has creator"
            );
        }
        // The room works: join, talk, read.
        bob.join(&room).await;
        alice.send_text(&room, &format!("hello v{version}")).await;
        let history = bob.paginate_all(&room, None, "f", 50).await;
        assert_eq!(bodies(&history), vec![format!("hello v{version}")]);
        let create_ev = &history[0];
        assert_eq!(create_ev["type"], "m.room.create");
        assert_eq!(create_ev["sender"], alice.user_id.as_str());
        if version == "12" {
            assert_eq!(
                room,
                format!("!{}", &create_ev["event_id"].as_str().unwrap()[1..]),
                "v12 room id derives from the create event"
            );
        }
    }

    // No room_version: the default is 12.
    let room = alice.create_room(json!({})).await;
    assert_eq!(
        alice.get_state(&room, "m.room.create", "").await.ok()["room_version"],
        "12"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_get_and_put() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "invite": [bob.user_id] }))
        .await;
    bob.join(&room).await;

    let ev = alice
        .put_state(&room, "m.room.topic", "", json!({ "topic": "new topic" }))
        .await;
    assert!(ev.starts_with('$'));
    assert_eq!(
        alice.get_state(&room, "m.room.topic", "").await.ok()["topic"],
        "new topic"
    );
    assert_eq!(
        bob.get_state(&room, "m.room.topic", "").await.ok()["topic"],
        "new topic"
    );

    alice
        .put_state(&room, "org.example.custom", "some key", json!({ "n": 1 }))
        .await;
    alice
        .put_state(&room, "org.example.custom", "some key", json!({ "n": 2 }))
        .await;
    assert_eq!(
        bob.get_state(&room, "org.example.custom", "some key")
            .await
            .ok()["n"],
        2,
        "latest state wins"
    );
    let state = state_map(&bob, &room).await;
    assert_eq!(state[&key("org.example.custom", "some key")]["n"], 2);

    alice
        .get_state(&room, "org.example.absent", "")
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Bob (power 0) may not change the name; a non-member may not read state.
    bob.put_state_raw(&room, "m.room.name", "", json!({ "name": "bob's" }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    carol
        .get_state(&room, "m.room.topic", "")
        .await
        .assert_error(403, "M_FORBIDDEN");
    carol
        .get(&path(&room, "state"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    carol
        .put_state_raw(&room, "m.room.topic", "", json!({ "topic": "x" }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    assert_eq!(
        alice.get_state(&room, "m.room.topic", "").await.ok()["topic"],
        "new topic",
        "refused changes left no trace"
    );

    // Raise bob's power and he may.
    let mut pl = alice.get_state(&room, "m.room.power_levels", "").await.ok();
    pl["users"][&bob.user_id] = json!(50);
    alice.put_state(&room, "m.room.power_levels", "", pl).await;
    bob.put_state(&room, "m.room.name", "", json!({ "name": "bob's" }))
        .await;
    assert_eq!(
        alice.get_state(&room, "m.room.name", "").await.ok()["name"],
        "bob's"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_listings() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "invite": [bob.user_id, carol.user_id] }))
        .await;
    let other = alice.create_room(json!({})).await;
    bob.join(&room).await;

    let mut mine = alice.joined_rooms().await;
    mine.sort();
    let mut want = vec![room.clone(), other.clone()];
    want.sort();
    assert_eq!(mine, want);
    assert_eq!(bob.joined_rooms().await, vec![room.clone()]);
    assert!(
        carol.joined_rooms().await.is_empty(),
        "an invite is not a joined room"
    );

    let members = alice.get(&path(&room, "members")).await.ok();
    let mut got: Vec<(String, String)> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (alice.user_id.clone(), "join".to_owned()),
            (bob.user_id.clone(), "join".to_owned()),
            (carol.user_id.clone(), "invite".to_owned())
        ]
    );
    let joined_only = alice
        .get(&format!("{}?membership=join", path(&room, "members")))
        .await
        .ok();
    assert_eq!(
        joined_only["chunk"].as_array().unwrap().len(),
        2,
        "membership=join filter: {joined_only}"
    );
    let not_joined = alice
        .get(&format!("{}?not_membership=join", path(&room, "members")))
        .await
        .ok();
    assert_eq!(
        not_joined["chunk"].as_array().unwrap().len(),
        1,
        "not_membership=join filter: {not_joined}"
    );

    let jm = bob.get(&path(&room, "joined_members")).await.ok();
    let mut ids: Vec<&String> = jm["joined"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, vec![&alice.user_id, &bob.user_id]);

    let dave = server.register("dave").await;
    dave.get(&path(&room, "members"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    dave.get(&path(&room, "joined_members"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    // A non-member can't invite.
    let erin = server.register("erin").await;
    dave.invite_raw(&room, &erin.user_id)
        .await
        .assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_join_by_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "lobby" }))
        .await;

    let canonical = alice
        .get_state(&room, "m.room.canonical_alias", "")
        .await
        .ok();
    assert_eq!(canonical["alias"], "#lobby:localhost");
    let looked_up = bob
        .get(&format!("{V3}/directory/room/{}", enc("#lobby:localhost")))
        .await
        .ok();
    assert_eq!(looked_up["room_id"], room.as_str());
    assert!(
        strings(&looked_up["servers"]).contains(&"localhost".to_owned()),
        "{looked_up}"
    );

    let alias = "#second:localhost";
    let dir = format!("{V3}/directory/room/{}", enc(alias));
    alice.put(&dir, json!({ "room_id": room })).await.ok();
    assert_eq!(alice.get(&dir).await.ok()["room_id"], room.as_str());
    let aliases = alice.get(&path(&room, "aliases")).await.ok();
    let mut list = strings(&aliases["aliases"]);
    list.sort();
    assert_eq!(list, vec!["#lobby:localhost", alias]);

    assert_eq!(bob.join(alias).await, room, "join by alias");
    let taken = bob.put(&dir, json!({ "room_id": room })).await;
    assert_eq!(
        taken.status.as_u16(),
        409,
        "an existing alias is a conflict: {taken:?}"
    );
    assert!(bob.joined_rooms().await.contains(&room));

    // Bob didn't create the alias and isn't privileged: he can't delete it.
    let resp = bob.delete(&dir).await;
    resp.assert_error(403, "M_FORBIDDEN");
    alice.delete(&dir).await.ok();
    bob.get(&dir).await.assert_error(404, "M_NOT_FOUND");
    let carol = server.register("carol").await;
    carol.join_raw(alias).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(carol.join("#lobby:localhost").await, room);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_room_directory() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let public = alice
        .create_room(json!({
            "visibility": "public", "preset": "public_chat", "name": "Town square",
            "topic": "Everyone", "room_alias_name": "town",
        }))
        .await;
    let private = alice.create_room(json!({ "name": "Secret" })).await;
    bob.join(&public).await;

    let dir = bob.get(&format!("{V3}/publicRooms")).await.ok();
    let chunk = dir["chunk"].as_array().unwrap();
    let entry = chunk
        .iter()
        .find(|r| r["room_id"] == public.as_str())
        .unwrap_or_else(|| panic!("public room listed: {dir}"));
    assert_eq!(entry["name"], "Town square");
    assert_eq!(entry["topic"], "Everyone");
    assert_eq!(entry["canonical_alias"], "#town:localhost");
    assert_eq!(entry["num_joined_members"], 2);
    assert_eq!(entry["world_readable"], false);
    assert_eq!(entry["guest_can_join"], false);
    assert!(
        !chunk.iter().any(|r| r["room_id"] == private.as_str()),
        "a private room isn't listed"
    );
    // Without authentication too.
    let anon = server.get(&format!("{V3}/publicRooms")).await.ok();
    assert!(anon["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["room_id"] == public.as_str()));

    let vis = format!("{V3}/directory/list/room/{}", enc(&public));
    assert_eq!(server.get(&vis).await.ok()["visibility"], "public");
    alice
        .put(&vis, json!({ "visibility": "private" }))
        .await
        .ok();
    assert_eq!(server.get(&vis).await.ok()["visibility"], "private");
    let dir = bob.get(&format!("{V3}/publicRooms")).await.ok();
    assert!(
        !dir["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == public.as_str()),
        "unlisted: {dir}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_forget() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    alice.send_text(&room, "before bob left").await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;

    let resp = bob.forget(&room).await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "forgetting a joined room: {resp:?}"
    );
    bob.leave(&room).await;
    alice.send_text(&room, "after bob left").await;
    assert!(bob.joined_rooms().await.is_empty());

    let s = bob_sync.next(5_000).await;
    assert!(
        room_ids(&s, "leave").contains(&room),
        "the leave shows in rooms.leave: {s}"
    );
    assert!(!room_ids(&s, "join").contains(&room));
    let leave_events = s["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        leave_events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "leave timeline has bob's leave: {s}"
    );

    assert!(
        !mentions(&s, "after bob left"),
        "a message after the leave reached bob: {s}"
    );
    let later = bob_sync.next(500).await;
    assert!(
        !mentions(&later, "after bob left"),
        "a message after the leave reached bob: {later}"
    );
    // History up to the leave stays readable; what came after does not.
    let history = bodies(&bob.paginate_all(&room, None, "f", 50).await);
    assert_eq!(history, vec!["before bob left"]);
    let members = alice.get(&path(&room, "joined_members")).await.ok();
    assert_eq!(members["joined"].as_object().unwrap().len(), 1);

    bob.forget(&room).await.ok();
    let include_leave = json!({ "room": { "include_leave": true } }).to_string();
    let fresh = bob.sync(None, None, Some(&include_leave)).await;
    assert!(
        !mentions(&fresh, &room),
        "a forgotten room is gone from sync: {fresh}"
    );
    // He can still come back to a public room.
    bob.join(&room).await;
    assert_eq!(bob.joined_rooms().await, vec![room]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_ban_unban() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;

    // Bob (power 0) can't kick or ban.
    bob.membership_action(&room, "kick", &alice.user_id, None)
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.membership_action(&room, "ban", &alice.user_id, None)
        .await
        .assert_error(403, "M_FORBIDDEN");

    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;
    alice
        .membership_action(&room, "kick", &bob.user_id, Some("be nice"))
        .await
        .ok();
    let member = alice
        .get_state(&room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "be nice");
    assert!(bob.joined_rooms().await.is_empty());
    let s = bob_sync.next(5_000).await;
    let kicked = s["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        kicked.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"
            && e["sender"] == alice.user_id.as_str()),
        "bob's sync shows the kick in rooms.leave: {s}"
    );
    bob.send_event(
        &room,
        "m.room.message",
        &txn(),
        json!({ "msgtype": "m.text", "body": "x" }),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    bob.join(&room).await; // a kick is not a ban

    alice
        .membership_action(&room, "ban", &bob.user_id, Some("spam"))
        .await
        .ok();
    let member = alice
        .get_state(&room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "ban");
    assert_eq!(member["reason"], "spam");
    bob.join_raw(&room).await.assert_error(403, "M_FORBIDDEN");
    alice
        .invite_raw(&room, &bob.user_id)
        .await
        .assert_error(403, "M_FORBIDDEN");

    alice
        .membership_action(&room, "unban", &bob.user_id, None)
        .await
        .ok();
    let member = alice
        .get_state(&room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "leave");
    bob.join(&room).await;
    let jm = alice.get(&path(&room, "joined_members")).await.ok();
    assert_eq!(jm["joined"].as_object().unwrap().len(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_strips_content() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;

    let secret = alice.send_text(&room, "oops, my password").await;
    let bobs = bob.send_text(&room, "bob's own").await;
    // Bob can't redact alice's message, but can redact his own.
    let resp = bob
        .put(
            &path(&room, &format!("redact/{}/{}", enc(&secret), txn())),
            json!({}),
        )
        .await;
    resp.assert_error(403, "M_FORBIDDEN");
    bob.redact(&room, &bobs, None).await;

    let redaction = alice.redact(&room, &secret, Some("typo")).await;
    let ev = bob.event(&room, &secret).await.ok();
    assert_eq!(ev["event_id"], secret.as_str());
    assert_eq!(ev["type"], "m.room.message");
    assert_eq!(
        ev["content"],
        json!({}),
        "a redacted event's content is stripped: {ev}"
    );
    assert_eq!(
        ev["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str(),
        "{ev}"
    );

    let history = bob.paginate_all(&room, None, "f", 50).await;
    assert!(
        !Value::Array(history.clone())
            .to_string()
            .contains("my password"),
        "/messages leaks redacted content"
    );
    let red = history
        .iter()
        .find(|e| e["event_id"] == redaction.as_str())
        .expect("redaction in /messages");
    assert_eq!(red["type"], "m.room.redaction");
    assert_eq!(red["content"]["reason"], "typo");
    let target = red["redacts"]
        .as_str()
        .or(red["content"]["redacts"].as_str());
    assert_eq!(target, Some(secret.as_str()));

    let got = bob_sync
        .collect_until(&room, std::time::Duration::from_secs(10), |g| {
            event_ids(g).contains(&redaction)
        })
        .await;
    assert!(
        event_ids(&got).contains(&redaction),
        "the redaction reaches sync"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn displayname_propagates_to_member_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let rooms = [
        alice.create_room(json!({ "preset": "public_chat" })).await,
        alice.create_room(json!({ "preset": "public_chat" })).await,
    ];
    for r in &rooms {
        bob.join(r).await;
    }
    let (mut alice_sync, _) = SyncCursor::initial(&alice, None).await;

    bob.set_displayname("Bobby Tables").await;
    bob.put(
        &format!("{V3}/profile/{}/avatar_url", enc(&bob.user_id)),
        json!({ "avatar_url": "mxc://localhost/bobface" }),
    )
    .await
    .ok();
    let profile = alice
        .get(&format!("{V3}/profile/{}", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(profile["displayname"], "Bobby Tables");
    assert_eq!(profile["avatar_url"], "mxc://localhost/bobface");
    let dn = alice
        .get(&format!("{V3}/profile/{}/displayname", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(dn["displayname"], "Bobby Tables");

    for r in &rooms {
        let member = alice.get_state(r, "m.room.member", &bob.user_id).await.ok();
        assert_eq!(member["displayname"], "Bobby Tables", "{member}");
        assert_eq!(member["avatar_url"], "mxc://localhost/bobface", "{member}");
        assert_eq!(member["membership"], "join");
        let jm = alice.get(&path(r, "joined_members")).await.ok();
        assert_eq!(
            jm["joined"][&bob.user_id]["display_name"], "Bobby Tables",
            "{jm}"
        );
    }
    // Alice's sync gets bob's new member event in both rooms.
    let mut pending: Vec<&String> = rooms.iter().collect();
    for _ in 0..10 {
        let s = alice_sync.next(2_000).await;
        pending.retain(|r| {
            !timeline(&s, r).iter().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == bob.user_id.as_str()
                    && e["content"]["displayname"] == "Bobby Tables"
                    && e["content"]["avatar_url"] == "mxc://localhost/bobface"
            })
        });
        if pending.is_empty() {
            break;
        }
    }
    assert!(
        pending.is_empty(),
        "no new member event in alice's sync for {pending:?}"
    );
    // A user can't change someone else's name.
    let resp = alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
            json!({ "displayname": "x" }),
        )
        .await;
    resp.assert_error(403, "M_FORBIDDEN");
    alice
        .get(&format!("{V3}/profile/{}", enc("@nobody:localhost")))
        .await
        .assert_error(404, "M_NOT_FOUND");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_and_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(
            json!({ "is_direct": true, "invite": [bob.user_id], "preset": "trusted_private_chat" }),
        )
        .await;
    bob.join(&room).await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, None).await;
    let ev = bob.send_text(&room, "read me").await;

    alice
        .post(&path(&room, "read_markers"), json!({ "m.fully_read": ev }))
        .await
        .ok();
    let fr = alice
        .get_room_account_data(&room, "m.fully_read")
        .await
        .ok();
    assert_eq!(fr["event_id"], ev.as_str());

    // Global and room account data, including m.direct.
    let mut direct = json!({});
    direct[&bob.user_id] = json!([room.clone()]);
    alice.put_account_data("m.direct", direct).await;
    alice
        .put_account_data("org.example.settings", json!({ "theme": "dark" }))
        .await;
    alice
        .put_room_account_data(&room, "org.example.room", json!({ "pinned": true }))
        .await;
    assert_eq!(
        alice.get_account_data("org.example.settings").await.ok()["theme"],
        "dark"
    );
    assert_eq!(
        alice.get_account_data("m.direct").await.ok()[&bob.user_id],
        json!([room.clone()])
    );
    assert_eq!(
        alice
            .get_room_account_data(&room, "org.example.room")
            .await
            .ok()["pinned"],
        true
    );
    alice
        .get_account_data("org.example.absent")
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Only the owner may read or write it.
    let foreign = format!(
        "{V3}/user/{}/account_data/org.example.settings",
        enc(&alice.user_id)
    );
    bob.get(&foreign).await.assert_error(403, "M_FORBIDDEN");
    bob.put(&foreign, json!({ "theme": "light" }))
        .await
        .assert_error(403, "M_FORBIDDEN");

    // Incremental sync carries the changes...
    let mut seen_global = std::collections::HashMap::new();
    let mut seen_room = std::collections::HashMap::new();
    for _ in 0..5 {
        let s = alice_sync.next(2_000).await;
        for e in s["account_data"]["events"].as_array().into_iter().flatten() {
            seen_global.insert(e["type"].as_str().unwrap().to_owned(), e["content"].clone());
        }
        if let Some(r) = joined_room(&s, &room) {
            for e in r["account_data"]["events"].as_array().into_iter().flatten() {
                seen_room.insert(e["type"].as_str().unwrap().to_owned(), e["content"].clone());
            }
        }
        if seen_global.len() >= 2 && seen_room.len() >= 2 {
            break;
        }
    }
    assert_eq!(seen_global["org.example.settings"]["theme"], "dark");
    assert_eq!(seen_global["m.direct"][&bob.user_id], json!([room.clone()]));
    assert_eq!(seen_room["m.fully_read"]["event_id"], ev.as_str());
    assert_eq!(seen_room["org.example.room"]["pinned"], true);

    // ...and so does an initial sync on a new device.
    let other = server.login("alice", PASSWORD).await;
    let s = other.sync(None, None, None).await;
    let global: Vec<&str> = s["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        global.contains(&"m.direct") && global.contains(&"org.example.settings"),
        "{s}"
    );
    let room_ad: Vec<&str> = joined_room(&s, &room).unwrap()["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(room_ad.contains(&"m.fully_read"), "{s}");
    // Bob sees none of alice's account data.
    assert!(!mentions(
        &bob.sync(None, None, None).await,
        "org.example.settings"
    ));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;

    for visibility in ["joined", "invited", "shared", "world_readable"] {
        let room = alice
            .create_room(json!({
                "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": visibility } }],
            }))
            .await;
        let before = alice.send_text(&room, "before the invite").await;
        alice.invite(&room, &bob.user_id).await;
        alice.send_text(&room, "between invite and join").await;
        bob.join(&room).await;
        alice.send_text(&room, "after the join").await;

        let expect: Vec<&str> = match visibility {
            "joined" => vec!["after the join"],
            "invited" => vec!["between invite and join", "after the join"],
            _ => vec![
                "before the invite",
                "between invite and join",
                "after the join",
            ],
        };
        let fwd = bodies(&bob.paginate_all(&room, None, "f", 50).await);
        assert_eq!(fwd, expect, "{visibility}: /messages dir=f");
        let mut back = bodies(&bob.paginate_all(&room, None, "b", 50).await);
        back.reverse();
        assert_eq!(back, expect, "{visibility}: /messages dir=b");

        let s = bob
            .sync(
                None,
                None,
                Some(&json!({ "room": { "timeline": { "limit": 50 } } }).to_string()),
            )
            .await;
        let tl = bodies(&timeline(&s, &room));
        assert_eq!(tl, expect, "{visibility}: initial sync timeline");

        let hidden = ["joined", "invited"].contains(&visibility);
        let resp = bob.event(&room, &before).await;
        let ctx = bob.context(&room, &before, 4).await;
        if hidden {
            resp.assert_error_one_of(&[(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND")]);
            ctx.assert_error_one_of(&[(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND")]);
        } else {
            assert_eq!(resp.ok()["content"]["body"], "before the invite");
            assert_eq!(ctx.ok()["event"]["event_id"], before.as_str());
        }

        // Carol never joined: only a world_readable room is open to her.
        let resp = carol
            .messages_raw(&room, None, None, "b", Some(50), None)
            .await;
        if visibility == "world_readable" {
            let mut got = bodies(resp.ok()["chunk"].as_array().unwrap());
            got.reverse();
            assert_eq!(
                got, expect,
                "world_readable: a non-member reads the history"
            );
        } else {
            resp.assert_error(403, "M_FORBIDDEN");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_around_an_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut ids = Vec::new();
    for i in 0..11 {
        ids.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    let ctx = alice.context(&room, &ids[5], 4).await.ok();
    assert_eq!(ctx["event"]["event_id"], ids[5].as_str());
    assert_eq!(ctx["event"]["content"]["body"], "m5");
    let before = ctx["events_before"].as_array().unwrap();
    let after = ctx["events_after"].as_array().unwrap();
    assert!(!before.is_empty() && !after.is_empty(), "{ctx}");
    assert!(
        before.len() + after.len() <= 4,
        "limit applies to before + after: {ctx}"
    );
    // events_before is in reverse chronological order, events_after chronological.
    let want_before: Vec<String> = (0..before.len()).map(|k| ids[4 - k].clone()).collect();
    let want_after: Vec<String> = (0..after.len()).map(|k| ids[6 + k].clone()).collect();
    assert_eq!(event_ids(before), want_before);
    assert_eq!(event_ids(after), want_after);

    // The tokens continue the timeline in both directions.
    let older = alice
        .messages(&room, ctx["start"].as_str(), "b", Some(1))
        .await;
    assert_eq!(
        event_ids(older["chunk"].as_array().unwrap()),
        vec![ids[4 - before.len()].clone()]
    );
    let newer = alice
        .messages(&room, ctx["end"].as_str(), "f", Some(1))
        .await;
    assert_eq!(
        event_ids(newer["chunk"].as_array().unwrap()),
        vec![ids[6 + after.len()].clone()]
    );
    // The state at the event is included.
    let state = ctx["state"].as_array().expect("context state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{ctx}");

    alice
        .context(&room, "$unknown", 4)
        .await
        .assert_error(404, "M_NOT_FOUND");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_from_and_to_tokens() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..5 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let a = alice.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 5..10 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let b = alice.sync(None, None, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.send_text(&room, "m10").await;

    let f = alice
        .messages_raw(&room, Some(&a), Some(&b), "f", Some(50), None)
        .await
        .ok();
    assert_eq!(
        bodies(f["chunk"].as_array().unwrap()),
        vec!["m5", "m6", "m7", "m8", "m9"],
        "dir=f from A to B"
    );
    let back = alice
        .messages_raw(&room, Some(&b), Some(&a), "b", Some(50), None)
        .await
        .ok();
    assert_eq!(
        bodies(back["chunk"].as_array().unwrap()),
        vec!["m9", "m8", "m7", "m6", "m5"],
        "dir=b from B to A"
    );

    // Limit and continuation.
    let p1 = alice.messages(&room, Some(&b), "b", Some(3)).await;
    assert_eq!(
        bodies(p1["chunk"].as_array().unwrap()),
        vec!["m9", "m8", "m7"]
    );
    assert_eq!(p1["start"], b.as_str(), "start echoes from");
    let p2 = alice
        .messages(&room, p1["end"].as_str(), "b", Some(3))
        .await;
    assert_eq!(
        bodies(p2["chunk"].as_array().unwrap()),
        vec!["m6", "m5", "m4"]
    );
    let p3 = alice
        .messages(&room, p2["end"].as_str(), "f", Some(2))
        .await;
    assert_eq!(
        bodies(p3["chunk"].as_array().unwrap()),
        vec!["m4", "m5"],
        "turning around at a token"
    );

    // From the end without a token; a filter on types.
    let latest = alice.messages(&room, None, "b", Some(1)).await;
    assert_eq!(bodies(latest["chunk"].as_array().unwrap()), vec!["m10"]);
    let only_members = json!({ "types": ["m.room.member"] }).to_string();
    let m = alice
        .messages_raw(&room, None, None, "f", Some(50), Some(&only_members))
        .await
        .ok();
    let chunk = m["chunk"].as_array().unwrap();
    assert!(
        !chunk.is_empty() && chunk.iter().all(|e| e["type"] == "m.room.member"),
        "{m}"
    );
    // dir is required and must be b or f.
    let resp = alice
        .get(&format!("{}?dir=sideways", path(&room, "messages")))
        .await;
    assert_eq!(resp.status.as_u16(), 400, "{resp:?}");
    server.shutdown().await;
}
