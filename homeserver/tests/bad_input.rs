//! Bad input gets the spec's error, the server keeps serving, and nothing is
//! persisted half-way.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// After a bad request, a valid one from the same user still works.
async fn still_serving(user: &Client) {
    let who = user.whoami().await.ok();
    assert_eq!(
        who["user_id"],
        user.user_id.as_str(),
        "server still serves after bad input"
    );
}

async fn room_bodies(user: &Client, room: &str) -> Vec<String> {
    bodies(&user.paginate_all(room, None, "f", 100).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_m_not_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;

    for raw in [
        &b"{not json"[..],
        b"",
        b"{\"msgtype\": \"m.text\", \"body\": \"cut",
        b"\xff\xfe garbage",
    ] {
        let resp = alice
            .request(
                Method::PUT,
                &format!("{V3}/rooms/{}/send/m.room.message/{}", enc(&room), txn()),
                Body::Raw(raw.to_vec()),
            )
            .await;
        assert!(
            resp.status.as_u16() == 400 && resp.errcode() == "M_NOT_JSON",
            "body {:?}: expected 400 M_NOT_JSON: {resp:?}",
            String::from_utf8_lossy(raw)
        );
        still_serving(&alice).await;
    }
    let resp = alice
        .request(
            Method::POST,
            &format!("{V3}/createRoom"),
            Body::Raw(b"{\"name\":".to_vec()),
        )
        .await;
    resp.assert_error(400, "M_NOT_JSON");
    let resp = server
        .request(
            Method::POST,
            &format!("{V3}/login"),
            Body::Raw(b"[[[".to_vec()),
        )
        .await;
    resp.assert_error(400, "M_NOT_JSON");

    assert_eq!(
        room_bodies(&alice, &room).await,
        Vec::<String>::new(),
        "a failed send leaves no event"
    );
    alice.send_text(&room, "fine").await;
    assert_eq!(room_bodies(&alice, &room).await, vec!["fine"]);
    assert_eq!(
        alice.joined_rooms().await,
        vec![room],
        "the malformed createRoom created nothing"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_m_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({ "name": "kept" })).await;

    let cases: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "name": 42 }),
        ),
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "invite": "@bob:localhost" }),
        ),
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "is_direct": "yes" }),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            json!({ "displayname": ["a"] }),
        ),
        (
            Method::POST,
            format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": 7 }),
        ),
        (
            Method::POST,
            format!("{V3}/user/{}/filter", enc(&alice.user_id)),
            json!({ "room": { "timeline": { "limit": "ten" } } }),
        ),
        (
            Method::POST,
            format!("{V3}/login"),
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": 5 }, "password": PASSWORD }),
        ),
    ];
    for (method, path, body) in cases {
        let resp = alice.request(method, &path, Body::Json(body)).await;
        resp.assert_error(400, "M_BAD_JSON");
        still_serving(&alice).await;
    }

    // A message content must be an object.
    let resp = alice
        .send_event(
            &room,
            "m.room.message",
            &txn(),
            json!(["not", "an", "object"]),
        )
        .await;
    resp.assert_error_one_of(&[(400, "M_BAD_JSON"), (400, "M_NOT_JSON")]);

    // Nothing changed: one room, still named "kept", no messages.
    assert_eq!(alice.joined_rooms().await, vec![room.clone()]);
    let name = alice.get_state(&room, "m.room.name", "").await.ok();
    assert_eq!(name["name"], "kept");
    assert!(room_bodies(&alice, &room).await.is_empty());
    let profile = alice
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert_ne!(profile["displayname"], json!(["a"]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_is_m_too_large() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;

    // 10 MB: over the request body limit. A server that answers before
    // reading the whole body may have the connection reset under the client
    // before it reads the 413; that is retried a few times (and reported).
    let big =
        serde_json::to_vec(&json!({ "msgtype": "m.text", "body": "x".repeat(10 * 1024 * 1024) }))
            .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let path = format!("{V3}/rooms/{}/send/m.room.message/{}", enc(&room), txn());
        match alice
            .try_request(Method::PUT, &path, Body::Raw(big.clone()))
            .await
        {
            Ok(resp) => {
                resp.assert_error(413, "M_TOO_LARGE");
                outcomes.push("413".to_owned());
                break;
            }
            Err(e) => outcomes.push(format!("transport error: {e}")),
        }
        still_serving(&alice).await;
    }
    if outcomes.len() > 1 {
        eprintln!("huge_body_is_m_too_large: 10 MB attempts: {outcomes:?}");
    }
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("413"),
        "never got the 413: {outcomes:?}"
    );
    still_serving(&alice).await;

    // 70 KB: under the body limit, over the 64 KiB PDU limit.
    let pdu = "y".repeat(70 * 1024);
    let resp = alice
        .send_event(
            &room,
            "m.room.message",
            &txn(),
            json!({ "msgtype": "m.text", "body": pdu }),
        )
        .await;
    resp.assert_error(413, "M_TOO_LARGE");
    still_serving(&alice).await;

    assert!(
        room_bodies(&alice, &room).await.is_empty(),
        "no oversized event was stored"
    );
    alice.send_text(&room, "small").await;
    assert_eq!(room_bodies(&alice, &room).await, vec!["small"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_room_ids() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let unknown = "!doesnotexist:localhost";
    let either = [(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND")];

    alice
        .send_event(
            unknown,
            "m.room.message",
            &txn(),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await
        .assert_error_one_of(&either);
    alice
        .messages_raw(unknown, None, None, "b", None, None)
        .await
        .assert_error_one_of(&either);
    alice
        .get(&format!("{V3}/rooms/{}/state", enc(unknown)))
        .await
        .assert_error_one_of(&either);
    alice
        .get_state(unknown, "m.room.name", "")
        .await
        .assert_error_one_of(&either);
    alice
        .get(&format!("{V3}/rooms/{}/members", enc(unknown)))
        .await
        .assert_error_one_of(&either);
    alice.join_raw(unknown).await.assert_error_one_of(&either);
    alice
        .post(&format!("{V3}/rooms/{}/leave", enc(unknown)), json!({}))
        .await
        .assert_error_one_of(&either);
    alice
        .invite_raw(unknown, &server.user_id("alice"))
        .await
        .assert_error_one_of(&either);
    alice
        .event(unknown, "$nosuchevent")
        .await
        .assert_error_one_of(&either);
    alice
        .context(unknown, "$nosuchevent", 5)
        .await
        .assert_error_one_of(&either);
    alice
        .join_raw("#nowhere:localhost")
        .await
        .assert_error(404, "M_NOT_FOUND");
    still_serving(&alice).await;

    // Not a room id at all.
    let resp = alice
        .send_event(
            "not-a-room",
            "m.room.message",
            &txn(),
            json!({ "body": "x" }),
        )
        .await;
    assert!(
        resp.status.is_client_error(),
        "malformed room id must be a 4xx: {resp:?}"
    );
    assert!(
        resp.errcode().starts_with("M_"),
        "with an errcode: {resp:?}"
    );
    assert!(alice.joined_rooms().await.is_empty(), "no room appeared");
    still_serving(&alice).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_ids() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;

    for bad in ["not a user id", "bob", "@:localhost", "@bob"] {
        alice
            .invite_raw(&room, bad)
            .await
            .assert_error(400, "M_INVALID_PARAM");
        still_serving(&alice).await;
    }
    alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "invite": ["@ok:localhost", "garbage"] }),
        )
        .await
        .assert_error_one_of(&[(400, "M_INVALID_PARAM"), (400, "M_BAD_JSON")]);
    alice
        .membership_action(&room, "kick", "nope", None)
        .await
        .assert_error_one_of(&[(400, "M_INVALID_PARAM"), (400, "M_BAD_JSON")]);

    // No member event was written for any of them, and the bad createRoom made no room.
    let members = alice
        .get(&format!("{V3}/rooms/{}/members", enc(&room)))
        .await
        .ok();
    let chunk = members["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "only alice is a member: {members}");
    assert_eq!(alice.joined_rooms().await, vec![room]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unknown_tokens() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let resp = server.get(&format!("{V3}/account/whoami")).await;
    resp.assert_error(401, "M_MISSING_TOKEN");
    let resp = server.get(&format!("{V3}/sync")).await;
    resp.assert_error(401, "M_MISSING_TOKEN");
    let resp = server.post(&format!("{V3}/createRoom"), json!({})).await;
    resp.assert_error(401, "M_MISSING_TOKEN");

    let stranger = server.with_token("syt_bogus_token");
    for resp in [
        stranger.whoami().await,
        stranger.sync_raw(None, None, None).await,
    ] {
        resp.assert_error(401, "M_UNKNOWN_TOKEN");
        assert_eq!(
            resp.body["soft_logout"], false,
            "soft_logout must be false for an unknown token: {resp:?}"
        );
    }
    still_serving(&alice).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_and_methods() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    alice
        .get("/_matrix/client/v3/no/such/endpoint")
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    alice
        .request(Method::DELETE, &format!("{V3}/createRoom"), Body::None)
        .await
        .assert_error_one_of(&[(405, "M_UNRECOGNIZED"), (404, "M_UNRECOGNIZED")]);
    alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "room_version": "9999" }),
        )
        .await
        .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    assert!(alice.joined_rooms().await.is_empty());
    still_serving(&alice).await;
    server.shutdown().await;
}

/// Transaction ids are scoped to a device: the same txnId from another device
/// of the same user is a new event; from the same device it is the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_ids_are_scoped_per_device() {
    let server = TestServer::start().await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", PASSWORD).await;
    assert_ne!(phone.device_id, laptop.device_id);
    let room = phone.create_room(json!({})).await;

    let content = json!({ "msgtype": "m.text", "body": "hi" });
    let a1 = phone.send(&room, "shared-txn", content.clone()).await;
    let b1 = laptop.send(&room, "shared-txn", content.clone()).await;
    assert_ne!(
        a1, b1,
        "another device reusing a txnId must create a new event"
    );
    let a2 = phone.send(&room, "shared-txn", content.clone()).await;
    let b2 = laptop.send(&room, "shared-txn", content.clone()).await;
    assert_eq!(a1, a2, "same device, same txnId: same event");
    assert_eq!(b1, b2, "same device, same txnId: same event");

    let history = phone.paginate_all(&room, None, "f", 50).await;
    let msgs = messages_only(&history);
    assert_eq!(
        event_ids(&msgs),
        vec![a1.clone(), b1.clone()],
        "two events, each stored once"
    );

    // The spec scopes a txnId to the device and the request path: the same
    // id sent to another room is another event.
    let other = phone.create_room(json!({})).await;
    let c = phone.send(&other, "shared-txn", content.clone()).await;
    assert_ne!(c, a1);
    assert_eq!(
        bodies(&phone.paginate_all(&other, None, "f", 50).await),
        vec!["hi"]
    );

    // A new login on a fresh device: the txnId is free again there.
    let tablet = server.login("alice", PASSWORD).await;
    let d = tablet.send(&room, "shared-txn", content).await;
    assert!(d != a1 && d != b1);
    assert_eq!(
        messages_only(&phone.paginate_all(&room, None, "f", 50).await).len(),
        3
    );
    server.shutdown().await;
}

/// A createRoom that fails leaves no room behind; one that succeeds is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_room_leaves_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let cases = [
        json!({ "name": "bad power", "power_level_content_override": { "users_default": "high" } }),
        json!({ "name": "bad power 2", "power_level_content_override": { "users": { "@alice:localhost": "max" } } }),
        json!({ "name": "bad alias", "room_alias_name": "has space and :colon" }),
        json!({ "name": "bad state", "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": 5 } }] }),
        json!({ "name": "remote invite", "invite": ["@someone:unreachable.invalid"] }),
    ];
    for body in cases {
        let before = alice.joined_rooms().await;
        let resp = alice.post(&format!("{V3}/createRoom"), body.clone()).await;
        let after = alice.joined_rooms().await;
        if resp.status.is_success() {
            let room = resp.body["room_id"].as_str().unwrap().to_owned();
            assert_eq!(after.len(), before.len() + 1, "{body}: {resp:?}");
            assert_eq!(
                alice.get_state(&room, "m.room.name", "").await.ok()["name"],
                body["name"],
                "{body}: a room that was created is complete"
            );
        } else {
            assert!(
                resp.status.is_client_error() || resp.status.as_u16() == 502,
                "{body}: {resp:?}"
            );
            assert!(resp.errcode().starts_with("M_"), "{body}: {resp:?}");
            assert_eq!(
                after, before,
                "{body} failed ({resp:?}) but left a room behind"
            );
        }
        still_serving(&alice).await;
    }
    // The alias from the bad-alias case wasn't registered half-way.
    let resp = alice
        .get(&format!(
            "{V3}/directory/room/{}",
            enc("#has space and :colon:localhost")
        ))
        .await;
    assert!(!resp.status.is_success(), "{resp:?}");
    server.shutdown().await;
}
