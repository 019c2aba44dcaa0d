//! The WebSocket stream: pushed sync updates, requests over the socket,
//! resumption, and bad input.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PATH: &str = "/_matrix/client/unstable/io.homeserver.ws/stream";

async fn connect(client: &Client, since: Option<&str>) -> Ws {
    let base = client.base_url.replacen("http://", "ws://", 1);
    let mut url = format!("{base}{PATH}");
    if let Some(s) = since {
        url.push_str(&format!("?since={}", enc(s)));
    }
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {}", client.access_token)).unwrap(),
    );
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("m.json"));
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connects");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("m.json")
    );
    ws
}

/// The next JSON text message (skipping pings), within `limit`.
async fn next_json(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads pushed syncs until one contains an event with `event_id` in `room`;
/// returns (timeline events of the room seen so far, last next_batch).
async fn wait_for_event(ws: &mut Ws, room: &str, event_id: &str) -> (Vec<Value>, String) {
    let mut seen = Vec::new();
    let mut next_batch = String::new();
    loop {
        let msg = next_json(ws, Duration::from_secs(10))
            .await
            .expect("a pushed update");
        if msg["method"] != "sync" {
            continue;
        }
        next_batch = msg["param"]["next_batch"]
            .as_str()
            .unwrap_or(&next_batch)
            .to_owned();
        seen.extend(timeline(&msg["param"], room));
        if seen.iter().any(|e| e["event_id"] == event_id) {
            return (seen, next_batch);
        }
    }
}

async fn request(ws: &mut Ws, id: u64, method: &str, param: Value) -> Value {
    ws.send(Message::Text(
        json!({"id": id, "method": method, "param": param})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    loop {
        let msg = next_json(ws, Duration::from_secs(10))
            .await
            .expect("a response");
        if msg["id"] == json!(id) {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_and_requests_are_answered() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "trusted_private_chat", "invite": [bob.user_id]}))
        .await;
    bob.join(&room).await;

    let versions = server.get("/_matrix/client/versions").await.ok();
    assert_eq!(versions["unstable_features"]["io.homeserver.ws"], true);

    let mut ws = connect(&bob, None).await;
    let first = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("initial sync");
    assert_eq!(first["method"], "sync");
    assert!(
        first["param"]["rooms"]["join"][&room].is_object(),
        "initial sync lists the room"
    );

    // A REST send reaches the socket.
    let sent = alice.send_text(&room, "over rest").await;
    let (events, _) = wait_for_event(&mut ws, &room, &sent).await;
    assert_eq!(bodies(&messages_only(&events)), vec!["over rest"]);

    // Sending over the socket, retried with the same txn id, makes one event.
    let param = json!({"room_id": room, "event_type": "m.room.message", "txn_id": "ws1", "content": {"msgtype": "m.text", "body": "over ws"}});
    let r1 = request(&mut ws, 1, "send", param.clone()).await;
    let r2 = request(&mut ws, 2, "send", param).await;
    let event_id = r1["result"]["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    assert_eq!(r2["result"]["event_id"], event_id.as_str());
    let history = alice.paginate_all(&room, None, "f", 50).await;
    assert_eq!(
        bodies(&messages_only(&history)),
        vec!["over rest", "over ws"]
    );

    // The other request kinds answer like their REST twins.
    assert_eq!(
        request(&mut ws, 3, "ping", json!({})).await["result"],
        json!({})
    );
    let typing = request(
        &mut ws,
        4,
        "typing",
        json!({"room_id": room, "typing": true, "timeout": 5000}),
    )
    .await;
    assert_eq!(typing["result"], json!({}), "{typing}");
    let receipt = request(
        &mut ws,
        5,
        "receipt",
        json!({"room_id": room, "receipt_type": "m.read", "event_id": event_id}),
    )
    .await;
    assert_eq!(receipt["result"], json!({}), "{receipt}");
    let markers = request(
        &mut ws,
        6,
        "read_markers",
        json!({"room_id": room, "m.fully_read": event_id}),
    )
    .await;
    assert_eq!(markers["result"], json!({}), "{markers}");
    let st = request(&mut ws, 7, "state", json!({"room_id": room, "event_type": "m.room.topic", "state_key": "", "content": {"topic": "t"}})).await;
    assert!(st["result"]["event_id"].is_string(), "{st}");
    assert_eq!(
        alice.get_state(&room, "m.room.topic", "").await.ok()["topic"],
        "t"
    );
    let presence = request(&mut ws, 8, "presence", json!({"presence": "unavailable"})).await;
    assert_eq!(presence["result"], json!({}), "{presence}");

    // Errors come back as the REST endpoint's error.
    let outsider_room = alice.create_room(json!({})).await;
    let denied = request(&mut ws, 9, "send", json!({"room_id": outsider_room, "event_type": "m.room.message", "txn_id": "x", "content": {"body": "no"}})).await;
    assert_eq!(denied["error"]["errcode"], "M_FORBIDDEN", "{denied}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_next_batch_yields_exactly_the_missed_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;

    let mut ws = connect(&bob, None).await;
    let first = alice.send_text(&room, "m0").await;
    let (_, resume) = wait_for_event(&mut ws, &room, &first).await;
    ws.close(None).await.ok();
    drop(ws);

    let mut missed = Vec::new();
    for i in 1..=5 {
        missed.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    let mut ws = connect(&bob, Some(&resume)).await;
    let last = missed.last().unwrap().clone();
    let (events, _) = wait_for_event(&mut ws, &room, &last).await;
    assert_eq!(
        event_ids(&messages_only(&events)),
        missed,
        "exactly the missed events, in order, once"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_the_server_carries_on() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    // No token: refused before the upgrade, with the REST error.
    let base = alice.base_url.replacen("http://", "ws://", 1);
    let err = tokio_tungstenite::connect_async(format!("{base}{PATH}"))
        .await
        .expect_err("no token is refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }

    let mut ws = connect(&alice, None).await;
    let _initial = next_json(&mut ws, Duration::from_secs(10)).await;
    ws.send(Message::Text("this is not json".into()))
        .await
        .unwrap();
    let reply = next_json(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply["error"]["errcode"], "M_NOT_JSON");
    let reply = request(&mut ws, 1, "teleport", json!({})).await;
    assert_eq!(reply["error"]["errcode"], "M_UNRECOGNIZED");
    let reply = request(&mut ws, 2, "send", json!({"room_id": 5})).await;
    assert_eq!(reply["error"]["errcode"], "M_BAD_JSON");
    assert_eq!(
        request(&mut ws, 3, "ping", json!({})).await["result"],
        json!({}),
        "the connection carries on"
    );

    // Another connection is unaffected by one that sends an oversized frame.
    let mut other = connect(&alice, None).await;
    let _ = next_json(&mut other, Duration::from_secs(10)).await;
    ws.send(Message::Text("x".repeat(200 * 1024).into()))
        .await
        .ok();
    let mut closed = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                if let Some(f) = frame {
                    assert_eq!(u16::from(f.code), 1009, "message too big");
                }
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "an oversized frame closes that socket");
    assert_eq!(
        request(&mut other, 1, "ping", json!({})).await["result"],
        json!({})
    );
    assert!(
        alice.whoami().await.status.is_success(),
        "the server keeps serving"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_reaped_and_goes_offline() {
    let server = TestServer::start_with(|c| {
        c.limits.ws_ping_interval_ms = 100;
        c.presence.offline_grace_ms = 100;
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));

    // bob connects, then stops reading: his client never answers a ping.
    let mut ws = connect(&bob, None).await;
    let _ = next_json(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(alice.get(&presence).await.ok()["presence"], "online");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The server has given up on him and closed the socket (with 4009; a client
    // that then flushes its overdue pongs may see the broken pipe first).
    let mut ended = false;
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match next {
            Some(Ok(Message::Close(frame))) => {
                if let Some(f) = frame {
                    assert_eq!(u16::from(f.code), 4009, "dead peer closed with 4009");
                }
                ended = true;
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the server closed the dead peer's socket");
    // ...and, his last connection gone, he goes offline.
    let start = std::time::Instant::now();
    while alice.get(&presence).await.ok()["presence"] != "offline" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "bob never went offline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
