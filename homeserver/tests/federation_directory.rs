//! The public room directory across servers: a client reads and searches
//! another server's directory (`/publicRooms?server=`), page by page, and the
//! federation endpoint answers only signed requests.

mod common;

use common::federation::Federation;
use serde_json::{json, Value};

fn names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_and_searches_another_servers_directory() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    for (name, topic) in [
        ("Astronomy", "stars"),
        ("Botany", "plants"),
        ("Chess", "openings"),
    ] {
        alice
            .create_room(json!({"preset": "public_chat", "visibility": "public",
                                "name": name, "topic": topic}))
            .await;
    }
    // Not listed: a private room.
    alice
        .create_room(json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    let hs1 = fed.server_name(0);

    let all = bob
        .get(&format!("/_matrix/client/v3/publicRooms?server={hs1}"))
        .await
        .ok();
    assert_eq!(names(&all), ["Astronomy", "Botany", "Chess"]);
    assert_eq!(all["total_room_count_estimate"], 3);
    let astronomy = all["chunk"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["name"] == "Astronomy"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(astronomy["topic"], "stars");
    assert_eq!(astronomy["num_joined_members"], 1);

    // Paged two at a time through hs2.
    let first = bob
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={hs1}&limit=2"
        ))
        .await
        .ok();
    assert_eq!(first["chunk"].as_array().map(Vec::len), Some(2));
    let next = first["next_batch"].as_str().unwrap_or_default().to_owned();
    let second = bob
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={hs1}&limit=2&since={next}"
        ))
        .await
        .ok();
    assert_eq!(second["chunk"].as_array().map(Vec::len), Some(1));
    let mut seen = names(&first);
    seen.extend(names(&second));
    seen.sort();
    assert_eq!(seen, ["Astronomy", "Botany", "Chess"]);

    // Searched (the POST form, relayed as a POST).
    let found = bob
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={hs1}"),
            json!({"filter": {"generic_search_term": "PLANT"}}),
        )
        .await
        .ok();
    assert_eq!(names(&found), ["Botany"]);

    // Bob joins one he found, then hs1 counts him.
    let room = astronomy["room_id"].as_str().unwrap_or_default().to_owned();
    let r = bob
        .post(
            &format!("/_matrix/client/v3/join/{}?via={hs1}", common::enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let again = alice.get("/_matrix/client/v3/publicRooms").await.ok();
    let members = again["chunk"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["room_id"] == room.as_str()))
        .map(|r| r["num_joined_members"].clone());
    assert_eq!(members, Some(json!(2)));

    // Bad input: a malformed server name, and a server that does not answer.
    bob.get("/_matrix/client/v3/publicRooms?server=not%20a%20server")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let r = bob
        .get("/_matrix/client/v3/publicRooms?server=nowhere.invalid")
        .await;
    assert!(r.status.is_server_error(), "{:?}", r.body);
    // Other servers must sign their requests.
    let unsigned = fed
        .http()
        .get(format!(
            "{}/_matrix/federation/v1/publicRooms",
            fed.federation_url(0)
        ))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(unsigned.ok(), Some(401));
    fed.shutdown().await;
}
