//! The admin API (`/_synapse/admin/...`): authorization on every route,
//! Synapse's response shapes, bad input, and what each operation does to
//! the users and rooms it targets.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const A1: &str = "/_synapse/admin/v1";
const A2: &str = "/_synapse/admin/v2";

/// A server with an admin `root` (logged in) and its URL-encoded helpers.
async fn setup() -> (TestServer, Client) {
    setup_with(|_| {}).await
}

async fn setup_with(adjust: impl FnOnce(&mut engine::config::Config)) -> (TestServer, Client) {
    let server = TestServer::start_with(adjust).await;
    server.admin_register("root", PASSWORD, true).await.ok();
    let admin = server.login("root", PASSWORD).await;
    (server, admin)
}

fn user_path(user_id: &str) -> String {
    format!("{A2}/users/{}", enc(user_id))
}

fn has_keys(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(*k).is_some(), "missing `{k}` in {v}");
    }
}

/// Fills a route's path parameters with plausible values.
fn concrete(path: &str) -> String {
    path.replace("{user_id}", &enc("@someone:localhost"))
        .replace("{room_id}", &enc("!nowhere:localhost"))
        .replace("{event_id}", &enc("$event"))
        .replace("{device_id}", "DEVICE")
        .replace("{token}", "tok")
        .replace("{delete_id}", "d1")
        .replace("{purge_id}", "p1")
        .replace("{destination}", "other.example")
        .replace("{server_name}", "localhost")
        .replace("{media_id}", "media")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_non_admins() {
    let (server, _admin) = setup().await;
    let plain = server.register("plain").await;
    let anonymous = server.with_token("");
    let table = client_api::admin::route_table();
    assert!(table.len() >= 40, "route table too small: {table:?}");
    for (method, path) in &table {
        assert!(path.starts_with("/_synapse/admin/"), "{path}");
        let path = concrete(path);
        let body = if *method == Method::GET {
            Body::None
        } else {
            Body::Json(json!({}))
        };
        let resp = plain.request(method.clone(), &path, body).await;
        resp.assert_error(403, "M_FORBIDDEN");
        let resp = server.request(method.clone(), &path, Body::None).await;
        resp.assert_error(401, "M_MISSING_TOKEN");
    }
    drop(anonymous);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modify_list_and_show_users() {
    let (server, admin) = setup().await;
    let carol = "@carol:localhost";
    let created = admin
        .put(
            &user_path(carol),
            json!({"password": "pw-carol-1", "displayname": "Carol", "admin": false}),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let details = created.body;
    has_keys(
        &details,
        &[
            "name",
            "displayname",
            "avatar_url",
            "is_guest",
            "admin",
            "deactivated",
            "erased",
            "shadow_banned",
            "creation_ts",
            "threepids",
            "external_ids",
            "locked",
        ],
    );
    assert_eq!(details["name"], carol);
    assert_eq!(details["displayname"], "Carol");
    assert_eq!(details["admin"], false);
    server.login("carol", "pw-carol-1").await;

    // Modify: 200, fields change, others stay.
    let modified = admin
        .put(
            &user_path(carol),
            json!({"displayname": "Caroline", "admin": true}),
        )
        .await;
    assert_eq!(modified.status.as_u16(), 200, "{modified:?}");
    assert_eq!(modified.body["displayname"], "Caroline");
    assert_eq!(modified.body["admin"], true);

    for name in ["dave", "erin", "frank"] {
        server.register(name).await;
    }
    let page = admin.get(&format!("{A2}/users?limit=2")).await.ok();
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["total"], 5);
    assert_eq!(page["next_token"], "2");
    assert_eq!(page["users"][0]["name"], "@carol:localhost");
    let rest = admin.get(&format!("{A2}/users?from=2&limit=10")).await.ok();
    assert_eq!(rest["users"].as_array().unwrap().len(), 3);
    assert!(rest.get("next_token").is_none(), "{rest}");
    let back = admin.get(&format!("{A2}/users?dir=b&limit=1")).await.ok();
    assert_eq!(back["users"][0]["name"], "@root:localhost");
    let search = admin.get(&format!("{A2}/users?name=carol")).await.ok();
    assert_eq!(search["total"], 1, "{search}");
    let admins = admin.get(&format!("{A2}/users?admins=true")).await.ok();
    assert_eq!(admins["total"], 2, "{admins}");

    let shown = admin.get(&user_path(carol)).await.ok();
    assert_eq!(shown["displayname"], "Caroline");
    let is_admin = admin
        .get(&format!("{A1}/users/{}/admin", enc(carol)))
        .await
        .ok();
    assert_eq!(is_admin["admin"], true);

    // Bad input.
    admin
        .get(&user_path("@nobody:localhost"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .get(&user_path("not-a-user-id"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .get(&user_path("@someone:elsewhere.example"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .get(&format!("{A2}/users?order_by=shoe_size"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .get(&format!("{A2}/users?limit=-1"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .put(&user_path(carol), json!({"admin": "yes"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_devices_and_whois() {
    let (server, admin) = setup().await;
    let gina = server.register("gina").await;
    let second = server.login("gina", PASSWORD).await;
    let devices = admin
        .get(&format!("{}/devices", user_path(&gina.user_id)))
        .await
        .ok();
    assert_eq!(devices["total"], 2);
    has_keys(
        &devices["devices"][0],
        &[
            "device_id",
            "display_name",
            "last_seen_ip",
            "last_seen_ts",
            "user_id",
        ],
    );
    let one = format!("{}/devices/{}", user_path(&gina.user_id), second.device_id);
    admin.get(&one).await.ok();
    admin.put(&one, json!({"display_name": "phone"})).await.ok();
    assert_eq!(admin.get(&one).await.ok()["display_name"], "phone");
    admin.delete(&one).await.ok();
    // Idempotent.
    admin.delete(&one).await.ok();
    second.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    gina.whoami().await.ok();
    admin.get(&one).await.assert_error(404, "M_NOT_FOUND");

    let whois = admin
        .get(&format!("{A1}/whois/{}", enc(&gina.user_id)))
        .await
        .ok();
    assert_eq!(whois["user_id"], gina.user_id);
    assert!(
        whois["devices"][&gina.device_id]["sessions"].is_array(),
        "{whois}"
    );

    // Reset: the new password works and every session is logged out.
    admin
        .post(
            &format!("{A1}/reset_password/{}", enc(&gina.user_id)),
            json!({"new_password": "fresh-pw"}),
        )
        .await
        .ok();
    gina.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    server.login("gina", "fresh-pw").await.whoami().await.ok();
    server
        .login_raw("gina", PASSWORD, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    admin
        .post(
            &format!("{A1}/reset_password/{}", enc("@ghost:localhost")),
            json!({"new_password": "x"}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .post(
            &format!("{A1}/reset_password/{}", enc(&gina.user_id)),
            json!({}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_with_erase_ends_the_account() {
    let (server, admin) = setup().await;
    let hank = server.register("hank").await;
    let ivy = server.register("ivy").await;
    let room = ivy.create_room(json!({"preset": "public_chat"})).await;
    hank.join(&room).await;
    hank.send_text(&room, "before deactivation").await;

    let path = format!("{A1}/deactivate/{}", enc(&hank.user_id));
    let done = admin.post(&path, json!({"erase": true})).await.ok();
    assert_eq!(done["id_server_unbind_result"], "success");
    hank.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    server
        .login_raw("hank", PASSWORD, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let details = admin.get(&user_path(&hank.user_id)).await.ok();
    assert_eq!(details["deactivated"], true);
    assert_eq!(details["erased"], true);
    assert_eq!(details["displayname"], Value::Null);
    let members = admin
        .get(&format!("{A1}/rooms/{}/members", enc(&room)))
        .await
        .ok();
    assert_eq!(members["members"], json!([ivy.user_id]));
    // Again: nothing left to do, still a success.
    admin.post(&path, json!({"erase": true})).await.ok();
    // Listed only when deactivated users are asked for.
    let active = admin.get(&format!("{A2}/users?name=hank")).await.ok();
    assert_eq!(active["total"], 0);
    let all = admin
        .get(&format!("{A2}/users?name=hank&deactivated=true"))
        .await
        .ok();
    assert_eq!(all["total"], 1);
    server.shutdown().await;
}

/// The `m.text` body of `event_id` as `client` sees it in the room's history,
/// through `/messages`, `/event`, `/context` and an initial `/sync`.
async fn bodies_seen(client: &Client, room: &str, event_id: &str) -> Vec<Value> {
    let history = client.messages(room, None, "b", Some(50)).await;
    let from_messages = history["chunk"]
        .as_array()
        .and_then(|c| c.iter().find(|e| e["event_id"] == event_id))
        .map(|e| e["content"]["body"].clone())
        .unwrap_or(Value::Null);
    let from_event = client.event(room, event_id).await.ok()["content"]["body"].clone();
    let from_context =
        client.context(room, event_id, 4).await.ok()["event"]["content"]["body"].clone();
    let sync = client
        .sync(None, None, Some(r#"{"room":{"timeline":{"limit":50}}}"#))
        .await;
    let from_sync = sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .and_then(|c| c.iter().find(|e| e["event_id"] == event_id))
        .map(|e| e["content"]["body"].clone())
        .unwrap_or(Value::Null);
    vec![from_messages, from_event, from_context, from_sync]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_users_messages_are_hidden_from_later_joiners() {
    let (server, admin) = setup().await;
    let lou = server.register("lou").await;
    let max = server.register("max").await;
    let ned = server.register("ned").await;
    let room = max
        .create_room(json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": "shared"}}]}))
        .await;
    lou.join(&room).await;
    let secret = lou.send_text(&room, "erase me").await;

    // Before erasure, a newcomer reads it like anyone else.
    let path = format!("{A1}/deactivate/{}", enc(&lou.user_id));
    admin.post(&path, json!({"erase": true})).await.ok();
    ned.join(&room).await;
    // Max was there when it was sent: he keeps his history.
    let text = Value::from("erase me");
    assert_eq!(
        bodies_seen(&max, &room, &secret).await,
        vec![text.clone(); 4]
    );
    // Ned joined later: the event is there, its content is not.
    assert_eq!(
        bodies_seen(&ned, &room, &secret).await,
        vec![Value::Null; 4]
    );
    let ev = ned.event(&room, &secret).await.ok();
    assert_eq!(ev["sender"], lou.user_id.as_str());
    assert_eq!(ev["content"], json!({}));

    // A plain deactivation hides nothing.
    let pia = server.register("pia").await;
    max.invite(&room, &pia.user_id).await;
    pia.join(&room).await;
    let kept = pia.send_text(&room, "keep me").await;
    let path = format!("{A1}/deactivate/{}", enc(&pia.user_id));
    admin.post(&path, json!({"erase": false})).await.ok();
    let quinn = server.register("quinn").await;
    quinn.join(&room).await;
    let seen = bodies_seen(&quinn, &room, &kept).await;
    assert_eq!(seen, vec![Value::from("keep me"); 4]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_banned_sends_reach_nobody() {
    let (server, admin) = setup().await;
    let jan = server.register("jan").await;
    let kim = server.register("kim").await;
    let room = kim.create_room(json!({"preset": "public_chat"})).await;
    jan.join(&room).await;
    let ban = format!("{A1}/users/{}/shadow_ban", enc(&jan.user_id));
    admin.post(&ban, json!({})).await.ok();
    assert_eq!(
        admin.get(&user_path(&jan.user_id)).await.ok()["shadow_banned"],
        true
    );

    let ghost = jan.send_text(&room, "nobody sees this").await;
    assert!(ghost.starts_with('$'));
    let bodies = |page: &Value| -> Vec<String> {
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let page = kim.messages(&room, None, "b", Some(20)).await;
    assert!(!bodies(&page).contains(&"nobody sees this".to_owned()));

    admin.delete(&ban).await.ok();
    admin.delete(&ban).await.ok();
    jan.send_text(&room, "now you do").await;
    let page = kim.messages(&room, None, "b", Some(20)).await;
    assert!(bodies(&page).contains(&"now you do".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_override_is_honoured() {
    let (server, admin) = setup_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.send.per_second = 0.1;
        c.rate_limits.send.burst = 2.0;
        c.rate_limits.login.burst = 100.0;
        c.rate_limits.register.burst = 100.0;
    })
    .await;
    let leo = server.register("leo").await;
    let room = leo.create_room(json!({})).await;
    let limited = |resp: &Response| resp.status.as_u16() == 429;
    let mut hit = false;
    for i in 0..4 {
        let r = leo
            .send_event(
                &room,
                "m.room.message",
                &format!("a{i}"),
                json!({"body": "x"}),
            )
            .await;
        hit |= limited(&r);
    }
    assert!(hit, "the default limit must apply first");

    let path = format!("{A1}/users/{}/override_ratelimit", enc(&leo.user_id));
    assert_eq!(admin.get(&path).await.ok(), json!({}));
    let set = admin
        .post(&path, json!({"messages_per_second": 0, "burst_count": 0}))
        .await
        .ok();
    assert_eq!(set, json!({"messages_per_second": 0, "burst_count": 0}));
    assert_eq!(admin.get(&path).await.ok(), set);
    for i in 0..10 {
        leo.send_event(
            &room,
            "m.room.message",
            &format!("b{i}"),
            json!({"body": "y"}),
        )
        .await
        .ok();
    }
    admin.delete(&path).await.ok();
    let r = leo
        .send_event(&room, "m.room.message", "c", json!({"body": "z"}))
        .await;
    r.assert_error(429, "M_LIMIT_EXCEEDED");
    admin
        .post(&path, json!({"messages_per_second": -1}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_list_show_members_state_and_block() {
    let (server, admin) = setup().await;
    let mia = server.register("mia").await;
    let ned = server.register("ned").await;
    let alpha = mia
        .create_room(json!({"name": "Alpha", "preset": "public_chat"}))
        .await;
    let beta = mia
        .create_room(json!({"name": "Beta", "preset": "public_chat"}))
        .await;
    ned.join(&beta).await;

    let list = admin.get(&format!("{A1}/rooms")).await.ok();
    assert_eq!(list["total_rooms"], 2);
    assert_eq!(list["offset"], 0);
    let first = &list["rooms"][0];
    has_keys(
        first,
        &[
            "room_id",
            "name",
            "canonical_alias",
            "joined_members",
            "joined_local_members",
            "version",
            "creator",
            "encryption",
            "federatable",
            "public",
            "join_rules",
            "guest_access",
            "history_visibility",
            "state_events",
            "room_type",
        ],
    );
    assert_eq!(first["name"], "Alpha");
    assert_eq!(first["join_rules"], "public");
    let by_size = admin
        .get(&format!("{A1}/rooms?order_by=joined_members"))
        .await
        .ok();
    assert_eq!(by_size["rooms"][0]["room_id"], beta);
    assert_eq!(by_size["rooms"][0]["joined_members"], 2);
    let reversed = admin.get(&format!("{A1}/rooms?dir=b&limit=1")).await.ok();
    assert_eq!(reversed["rooms"][0]["name"], "Beta");
    assert_eq!(reversed["next_batch"], 1);
    let found = admin.get(&format!("{A1}/rooms?search_term=alp")).await.ok();
    assert_eq!(found["total_rooms"], 1);
    assert_eq!(found["rooms"][0]["room_id"], alpha);

    let details = admin.get(&format!("{A1}/rooms/{}", enc(&beta))).await.ok();
    has_keys(
        &details,
        &["topic", "avatar", "joined_local_devices", "forgotten"],
    );
    assert_eq!(details["joined_local_members"], 2);
    let members = admin
        .get(&format!("{A1}/rooms/{}/members", enc(&beta)))
        .await
        .ok();
    assert_eq!(members["total"], 2);
    let state = admin
        .get(&format!("{A1}/rooms/{}/state", enc(&beta)))
        .await
        .ok();
    assert!(state["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create"));

    // Blocked: joins are refused until unblocked.
    let block = format!("{A1}/rooms/{}/block", enc(&alpha));
    assert_eq!(admin.get(&block).await.ok(), json!({"block": false}));
    admin.put(&block, json!({"block": true})).await.ok();
    let status = admin.get(&block).await.ok();
    assert_eq!(status["block"], true);
    assert_eq!(status["user_id"], admin.user_id);
    ned.join_raw(&alpha).await.assert_error(403, "M_FORBIDDEN");
    admin.put(&block, json!({"block": false})).await.ok();
    ned.join(&alpha).await;

    // Bad input.
    let unknown = enc("!unknown:localhost");
    admin
        .get(&format!("{A1}/rooms/{unknown}"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .get(&format!("{A1}/rooms/{unknown}/members"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .get(&format!("{A1}/rooms/{}", enc("not-a-room")))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .put(&block, json!({"block": "maybe"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server.shutdown().await;
}

/// Polls a v2 deletion until it is no longer active.
async fn wait_deleted(admin: &Client, delete_id: &str) -> Value {
    for _ in 0..100 {
        let status = admin
            .get(&format!("{A2}/rooms/delete_status/{delete_id}"))
            .await
            .ok();
        if status["status"] != "active" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("room deletion {delete_id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_a_room_moves_everyone_out() {
    let (server, admin) = setup().await;
    let olga = server.register("olga").await;
    let pete = server.register("pete").await;
    let room = olga
        .create_room(json!({"preset": "public_chat", "room_alias_name": "doomed"}))
        .await;
    pete.join(&room).await;
    olga.send_text(&room, "illegal content").await;

    let path = format!("{A2}/rooms/{}", enc(&room));
    let started = admin
        .request(
            Method::DELETE,
            &path,
            Body::Json(json!({
                "new_room_user_id": admin.user_id,
                "room_name": "Moved",
                "message": "This room was shut down.",
                "block": true,
                "purge": true,
            })),
        )
        .await
        .ok();
    let delete_id = started["delete_id"].as_str().expect("delete_id").to_owned();
    let status = wait_deleted(&admin, &delete_id).await;
    assert_eq!(status["status"], "complete", "{status}");
    let outcome = &status["shutdown_room"];
    let mut kicked = strings(&outcome["kicked_users"]);
    kicked.sort();
    assert_eq!(kicked, vec![olga.user_id.clone(), pete.user_id.clone()]);
    assert_eq!(outcome["failed_to_kick_users"], json!([]));
    assert_eq!(outcome["local_aliases"], json!(["#doomed:localhost"]));
    let new_room = outcome["new_room_id"]
        .as_str()
        .expect("new room")
        .to_owned();

    for member in [&olga, &pete] {
        let joined = member.joined_rooms().await;
        assert!(!joined.contains(&room), "{member:?} still in the room");
        assert!(joined.contains(&new_room), "{member:?} not moved");
    }
    let notice = olga.messages(&new_room, None, "b", Some(10)).await;
    assert!(notice["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["content"]["body"] == "This room was shut down."));
    admin
        .get(&format!("{A1}/rooms/{}", enc(&room)))
        .await
        .assert_error(404, "M_NOT_FOUND");
    pete.join_raw(&room).await.assert_error(403, "M_FORBIDDEN");

    let by_room = admin.get(&format!("{path}/delete_status")).await.ok();
    assert_eq!(by_room["results"][0]["delete_id"], delete_id);
    // Deleting again is a no-op that completes.
    let again = admin.request(Method::DELETE, &path, Body::None).await.ok();
    let again = wait_deleted(&admin, again["delete_id"].as_str().unwrap()).await;
    assert_eq!(again["status"], "complete");
    assert_eq!(again["shutdown_room"]["kicked_users"], json!([]));

    // v1 answers the outcome directly.
    let other = olga.create_room(json!({})).await;
    let v1 = admin
        .request(
            Method::DELETE,
            &format!("{A1}/rooms/{}", enc(&other)),
            Body::None,
        )
        .await
        .ok();
    assert_eq!(v1["kicked_users"], json!([olga.user_id]));
    admin
        .get(&format!("{A2}/rooms/delete_status/nope"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .request(
            Method::DELETE,
            &format!("{A2}/rooms/{}", enc("bad")),
            Body::None,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_history_keeps_state() {
    let (server, admin) = setup().await;
    let quinn = server.register("quinn").await;
    let room = quinn
        .create_room(json!({"name": "History", "preset": "public_chat"}))
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(quinn.send_text(&room, &format!("m{i}")).await);
    }
    let path = format!("{A1}/purge_history/{}", enc(&room));
    admin
        .post(&path, json!({"delete_local_events": true}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    let started = admin
        .post(
            &path,
            json!({"delete_local_events": true, "purge_up_to_event_id": ids[3]}),
        )
        .await
        .ok();
    let purge_id = started["purge_id"].as_str().expect("purge_id");
    let status = admin
        .get(&format!("{A1}/purge_history_status/{purge_id}"))
        .await
        .ok();
    assert_eq!(status["status"], "complete");

    let page = quinn.messages(&room, None, "b", Some(50)).await;
    let events = page["chunk"].as_array().unwrap();
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["m4", "m3"], "{page}");
    assert!(
        events.iter().any(|e| e["type"] == "m.room.name"),
        "state kept"
    );
    let state = admin
        .get(&format!("{A1}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    assert!(state["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.name"));
    admin
        .post(&format!("{path}/{}", enc("$missing")), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .get(&format!("{A1}/purge_history_status/unknown"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_tokens_lifecycle() {
    let (server, admin) = setup().await;
    let base = format!("{A1}/registration_tokens");
    let created = admin
        .post(
            &format!("{base}/new"),
            json!({"token": "abc", "uses_allowed": 2}),
        )
        .await
        .ok();
    assert_eq!(
        created,
        json!({"token": "abc", "uses_allowed": 2, "pending": 0, "completed": 0, "expiry_time": null})
    );
    let random = admin
        .post(&format!("{base}/new"), json!({"length": 10}))
        .await
        .ok();
    assert_eq!(random["token"].as_str().unwrap().len(), 10);
    let list = admin.get(&base).await.ok();
    assert_eq!(list["registration_tokens"].as_array().unwrap().len(), 2);

    let updated = admin
        .put(&format!("{base}/abc"), json!({"uses_allowed": 0}))
        .await
        .ok();
    assert_eq!(updated["uses_allowed"], 0);
    let invalid = admin.get(&format!("{base}?valid=false")).await.ok();
    assert_eq!(invalid["registration_tokens"][0]["token"], "abc");
    let cleared = admin
        .put(&format!("{base}/abc"), json!({"uses_allowed": null}))
        .await
        .ok();
    assert_eq!(cleared["uses_allowed"], Value::Null);

    admin.delete(&format!("{base}/abc")).await.ok();
    admin.delete(&format!("{base}/abc")).await.ok();
    admin
        .get(&format!("{base}/abc"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .put(&format!("{base}/abc"), json!({"uses_allowed": 1}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .post(&format!("{base}/new"), json!({"uses_allowed": -1}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .post(&format!("{base}/new"), json!({"token": "no spaces"}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .post(&format!("{base}/new"), json!({"expiry_time": 1000}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .get(&format!("{base}?valid=perhaps"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_version_stats_and_notices() {
    let (server, admin) = setup().await;
    let rose = server.register("rose").await;
    let version = admin.get(&format!("{A1}/server_version")).await.ok();
    assert!(version["server_version"].is_string());

    let room = rose.create_room(json!({})).await;
    rose.send_text(&room, "counted").await;
    let stats = admin.get(&format!("{A1}/statistics/server")).await.ok();
    has_keys(
        &stats,
        &[
            "users",
            "rooms",
            "events_today",
            "open_connections",
            "sync_waiters",
            "federation_queues",
        ],
    );
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["rooms"], 1);
    assert!(stats["events_today"].as_i64().unwrap() >= 6, "{stats}");

    let send = |body: &str| json!({"user_id": rose.user_id, "content": {"msgtype": "m.text", "body": body}});
    let sent = admin
        .post(
            &format!("{A1}/send_server_notice"),
            send("maintenance at 3am"),
        )
        .await
        .ok();
    assert!(sent["event_id"].as_str().unwrap().starts_with('$'));
    // The notice room arrives as an invite; joining shows the notice.
    let sync = rose.get("/_matrix/client/v3/sync").await.ok();
    let invites = sync["rooms"]["invite"].as_object().expect("an invite");
    let notice_room = invites.keys().next().unwrap().clone();
    rose.join(&notice_room).await;
    admin
        .post(&format!("{A1}/send_server_notice"), send("done"))
        .await
        .ok();
    let page = rose.messages(&notice_room, None, "b", Some(10)).await;
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["done", "maintenance at 3am"]);
    admin
        .post(
            &format!("{A1}/send_server_notice"),
            json!({"user_id": "@nobody:localhost", "content": {"body": "x"}}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .post(&format!("{A1}/send_server_notice"), json!({"content": {}}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_destinations_bad_input() {
    let (server, admin) = setup().await;
    let base = format!("{A1}/federation/destinations");
    let list = admin.get(&base).await.ok();
    assert!(list["destinations"].is_array());
    assert!(list["total"].is_i64());
    admin
        .get(&format!("{base}/unknown.example"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .post(
            &format!("{base}/unknown.example/reset_connection"),
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .get(&format!("{base}/{}", enc("not a server")))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_listing_and_quarantine() {
    let (server, admin) = setup().await;
    let sam = server.register("sam").await;
    let uploaded: Value = server
        .http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=notes.txt",
            server.base_url
        ))
        .bearer_auth(&sam.access_token)
        .header("content-type", "text/plain")
        .body("some notes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = uploaded["content_uri"].as_str().expect("content_uri");
    let media_id = uri.rsplit('/').next().unwrap().to_owned();
    let download = format!("/_matrix/client/v1/media/download/localhost/{media_id}");
    sam.get(&download).await.ok();

    let list = admin
        .get(&format!("{A1}/users/{}/media", enc(&sam.user_id)))
        .await
        .ok();
    assert_eq!(list["total"], 1);
    let item = &list["media"][0];
    has_keys(
        item,
        &[
            "media_id",
            "media_type",
            "media_length",
            "upload_name",
            "created_ts",
            "quarantined_by",
        ],
    );
    assert_eq!(item["media_id"], media_id);
    assert_eq!(item["media_length"], 10);
    assert_eq!(item["quarantined_by"], Value::Null);

    let quarantine = format!("{A1}/media/quarantine/localhost/{media_id}");
    admin.post(&quarantine, json!({})).await.ok();
    admin.post(&quarantine, json!({})).await.ok();
    sam.get(&download).await.assert_error(404, "M_NOT_FOUND");
    let list = admin
        .get(&format!("{A1}/users/{}/media", enc(&sam.user_id)))
        .await
        .ok();
    assert_eq!(list["media"][0]["quarantined_by"], admin.user_id);
    admin
        .post(
            &format!("{A1}/media/unquarantine/localhost/{media_id}"),
            json!({}),
        )
        .await
        .ok();
    sam.get(&download).await.ok();

    admin
        .post(
            &format!("{A1}/media/quarantine/localhost/missing"),
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    admin
        .post(
            &format!("{A1}/media/quarantine/{}/x", enc("bad name")),
            json!({}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    admin
        .get(&format!("{A1}/users/{}/media", enc("@ghost:localhost")))
        .await
        .assert_error(404, "M_NOT_FOUND");
    server.shutdown().await;
}
