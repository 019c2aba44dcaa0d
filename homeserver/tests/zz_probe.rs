mod common;
use common::*;
use serde_json::json;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let mut server = TestServer::start().await;
    let alice = server.register_no_password("alice").await;
    let bob = server.register_no_password("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let mut since = bob.sync(None, None, None).await["next_batch"].as_str().unwrap().to_owned();
    server.restart().await;
    let alice = alice.on(&server);
    let bob = bob.on(&server);
    let mut misses = 0;
    for i in 0..100 {
        let id = alice.send_text(&room, &format!("m{i}")).await;
        let s = bob.sync(Some(&since), Some(5000), None).await;
        if !event_ids(&timeline(&s, &room)).contains(&id) {
            misses += 1;
            if misses < 3 { eprintln!("PROBE miss {i}: since={since} resp={}", s.to_string().chars().take(800).collect::<String>()); }
            let s2 = bob.sync(s["next_batch"].as_str(), Some(5000), None).await;
            if !event_ids(&timeline(&s2, &room)).contains(&id) { eprintln!("PROBE LOST {i}"); }
            since = s2["next_batch"].as_str().unwrap().to_owned();
        } else {
            since = s["next_batch"].as_str().unwrap().to_owned();
        }
    }
    eprintln!("PROBE misses {misses}/100");
    server.shutdown().await;
}
