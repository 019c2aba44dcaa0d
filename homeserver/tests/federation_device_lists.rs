//! `m.device_list_update` and `m.signing_key_update` across servers: when a
//! user's devices, device keys or cross-signing keys change, users on other
//! servers who share a room with them see the user in `/sync`'s
//! `device_lists.changed`, and `/keys/query` returns the new keys.

mod common;

use std::time::Duration;

use common::{enc, federation::Federation, Client, PASSWORD};
use ruma::{
    serde::{base64::Standard, Base64},
    signatures::{sign_json, Ed25519KeyPair},
    CanonicalJsonObject,
};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// Uploads freshly generated, self-signed device keys for the client's device;
/// returns the ed25519 public key.
async fn upload_device_keys(client: &Client) -> String {
    let der = Ed25519KeyPair::generate();
    let pair = Ed25519KeyPair::from_der(&der, client.device_id.clone()).expect("key pair");
    let ed = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
    let keys = json!({
        "user_id": client.user_id,
        "device_id": client.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{}", client.device_id): ed,
            format!("curve25519:{}", client.device_id): Base64::<Standard>::new(vec![7u8; 32]).encode(),
        },
    });
    let mut object: CanonicalJsonObject =
        serde_json::from_value(keys).expect("canonical JSON object");
    sign_json(&client.user_id, &pair, &mut object).expect("signing");
    let r = client
        .post(
            &format!("{V3}/keys/upload"),
            json!({"device_keys": serde_json::to_value(&object).unwrap()}),
        )
        .await;
    assert_eq!(r.status, 200, "keys/upload: {:?}", r.body);
    ed
}

/// Long-polls `client`'s /sync from `since` until `user` is in
/// `device_lists.changed`; returns the next token.
async fn wait_changed(client: &Client, since: &str, user: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut since = since.to_owned();
    loop {
        let body = client.sync(Some(&since), Some(1000), None).await;
        since = body["next_batch"].as_str().unwrap().to_owned();
        let changed = &body["device_lists"]["changed"];
        if changed
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == user))
        {
            return since;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {user} in device_lists.changed",
            client.user_id
        );
    }
}

/// The ed25519 keys of `user`'s devices, as `client`'s server reports them.
async fn queried_devices(client: &Client, user: &str) -> Value {
    let r = client
        .post(
            &format!("{V3}/keys/query"),
            json!({"device_keys": {user: []}}),
        )
        .await
        .ok();
    r["device_keys"][user].clone()
}

/// Syncs until the room shows as joined; returns the token after it.
async fn settled_token(client: &Client, room_id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = client.sync(None, Some(0), None).await;
        if body["rooms"]["join"].get(room_id).is_some() {
            return body["next_batch"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "room never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn device_changes_reach_users_on_other_servers() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&fed.server_name(0))),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "join: {:?}", r.body);
    let bob_since = settled_token(&bob, &room).await;
    let alice_since = settled_token(&alice, &room).await;

    // A new device's keys on hs1 reach bob on hs2: changed, and queryable.
    let ed = upload_device_keys(&alice).await;
    let bob_since = wait_changed(&bob, &bob_since, &alice.user_id).await;
    let devices = queried_devices(&bob, &alice.user_id).await;
    assert_eq!(
        devices[&alice.device_id]["keys"][format!("ed25519:{}", alice.device_id)],
        json!(ed)
    );

    // And the other way round.
    upload_device_keys(&bob).await;
    wait_changed(&alice, &alice_since, &bob.user_id).await;

    // A second device of alice appears, then its deletion (logout) is told too.
    let phone = fed.servers[0].login("alice", PASSWORD).await;
    upload_device_keys(&phone).await;
    let bob_since = wait_changed(&bob, &bob_since, &alice.user_id).await;
    assert!(queried_devices(&bob, &alice.user_id).await[&phone.device_id].is_object());
    phone.logout().await;
    wait_changed(&bob, &bob_since, &alice.user_id).await;
    let devices = queried_devices(&bob, &alice.user_id).await;
    assert!(devices.get(&phone.device_id).is_none(), "{devices}");
    assert!(devices[&alice.device_id].is_object(), "{devices}");
    fed.shutdown().await;
}

/// Uploads a master key and a self-signing key signed by it.
async fn upload_cross_signing(client: &Client) {
    let key = |usage: &str| {
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).expect("key pair");
        let public = Base64::<Standard>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&der, public.clone()).expect("key pair");
        let body = json!({
            "user_id": client.user_id,
            "usage": [usage],
            "keys": {format!("ed25519:{public}"): public},
        });
        (pair, body)
    };
    let (master, master_body) = key("master");
    let (_, self_body) = key("self_signing");
    let mut object: CanonicalJsonObject = serde_json::from_value(self_body).unwrap();
    sign_json(&client.user_id, &master, &mut object).expect("signing");
    let r = client
        .post(
            &format!("{V3}/keys/device_signing/upload"),
            json!({
                "master_key": master_body,
                "self_signing_key": serde_json::to_value(&object).unwrap(),
            }),
        )
        .await;
    assert_eq!(r.status, 200, "device_signing/upload: {:?}", r.body);
}

#[tokio::test]
async fn cross_signing_changes_reach_users_on_other_servers() {
    let fed = Federation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&fed.server_name(0))),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "join: {:?}", r.body);
    let bob_since = settled_token(&bob, &room).await;
    upload_cross_signing(&alice).await;
    wait_changed(&bob, &bob_since, &alice.user_id).await;
    let r = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({"device_keys": {&alice.user_id: []}}),
        )
        .await
        .ok();
    assert!(r["master_keys"][&alice.user_id].is_object(), "{r}");
    fed.shutdown().await;
}
