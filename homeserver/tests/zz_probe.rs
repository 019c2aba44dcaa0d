mod common;
use common::*;
use serde_json::json;
const V3: &str = "/_matrix/client/v3";
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    for bad in ["not a user id", "bob", "@:localhost", "@bob"] {
        eprintln!("PROBE invite {bad:?}: {:?}", alice.invite_raw(&room, bad).await);
    }
    eprintln!("PROBE createRoom garbage invite: {:?}", alice.post(&format!("{V3}/createRoom"), json!({ "invite": ["@ok:localhost", "garbage"] })).await);
    eprintln!("PROBE kick nope: {:?}", alice.membership_action(&room, "kick", "nope", None).await);
    eprintln!("PROBE members: {:?}", alice.get(&format!("{V3}/rooms/{}/members", enc(&room))).await);
    eprintln!("PROBE joined_rooms: {:?}", alice.joined_rooms().await);
    let big = "x".repeat(10 * 1024 * 1024);
    let r = alice.send_event(&room, "m.room.message", &txn(), json!({ "msgtype": "m.text", "body": big })).await;
    eprintln!("PROBE 10MB: {:?}", r);
    server.shutdown().await;
}
