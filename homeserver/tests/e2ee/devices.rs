//! Device lists and to-device messages: who is told about new and deleted
//! devices, and the per-device inbox.

use super::*;

fn users_in(sync: &Value, list: &str) -> Vec<String> {
    common::strings(&sync["device_lists"][list])
}

/// `DELETE /devices/{id}` with password auth.
pub(super) async fn delete_device(client: &Client, device_id: &str) {
    let auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": PASSWORD,
    }});
    client
        .request(
            Method::DELETE,
            &format!("{V3}/devices/{}", enc(device_id)),
            Body::Json(auth),
        )
        .await
        .ok();
}

#[tokio::test]
async fn device_lists_follow_new_and_deleted_devices_and_shared_rooms() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    let charlie = server.register("charlie").await;
    let room_id = encrypted_room(&alice.client, &[&bob]).await;
    alice.upload_keys(1).await;
    alice.sync(0).await;
    let from = alice.since.clone().unwrap();

    // Bob adds a device: alice's waiting long-poll returns with bob in `changed`.
    let poll = {
        let (client, since) = (alice.client.clone(), from.clone());
        tokio::spawn(async move { client.sync(Some(&since), Some(20_000), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut bob_phone = Device::new(server.login("bob", PASSWORD).await);
    bob_phone.upload_keys(1).await;
    let woke = poll.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long-poll woke up"
    );
    assert_eq!(users_in(&woke, "changed"), vec![bob.user_id.clone()]);
    alice.since = woke["next_batch"].as_str().map(str::to_owned);

    // /keys/changes reports the same between the two tokens.
    let changes = alice
        .client
        .get(&format!(
            "{V3}/keys/changes?from={from}&to={}",
            alice.since.as_deref().unwrap()
        ))
        .await
        .ok();
    assert_eq!(
        common::strings(&changes["changed"]),
        vec![bob.user_id.clone()]
    );

    // A stranger's new keys are none of alice's business.
    Device::new(charlie.clone()).upload_keys(1).await;
    let quiet = alice.sync(0).await;
    assert!(!users_in(&quiet, "changed").contains(&charlie.user_id));

    // Alice's own new device shows up for her existing one.
    Device::new(server.login("alice", PASSWORD).await)
        .upload_keys(1)
        .await;
    let own = alice.sync(0).await;
    assert_eq!(users_in(&own, "changed"), vec![alice.user().to_owned()]);

    // Bob deletes a device: alice is told, and its keys are gone.
    delete_device(&bob, bob_phone.id()).await;
    let deleted = alice.sync(0).await;
    assert_eq!(users_in(&deleted, "changed"), vec![bob.user_id.clone()]);
    let keys = query(&alice.client, &[&bob.user_id]).await;
    assert!(keys["device_keys"][&bob.user_id]
        .get(bob_phone.id())
        .is_none());

    // Charlie joins: alice now shares a room with him.
    alice.client.invite(&room_id, &charlie.user_id).await;
    charlie.join(&room_id).await;
    let joined = alice.sync(0).await;
    assert!(users_in(&joined, "changed").contains(&charlie.user_id));

    // Bob leaves the last room they share: he is in `left`.
    let before_leave = alice.since.clone().unwrap();
    bob.leave(&room_id).await;
    let left = alice.sync(0).await;
    assert_eq!(users_in(&left, "left"), vec![bob.user_id.clone()]);
    assert!(!users_in(&left, "changed").contains(&bob.user_id));
    let changes = alice
        .client
        .get(&format!(
            "{V3}/keys/changes?from={before_leave}&to={}",
            alice.since.as_deref().unwrap()
        ))
        .await
        .ok();
    assert_eq!(common::strings(&changes["left"]), vec![bob.user_id.clone()]);
    server.shutdown().await;
}

/// `PUT /sendToDevice/m.test/{txn}` from `from` to `(user, device or "*")`.
async fn send_test(from: &Client, txn: &str, user: &str, device: &str, n: u64) {
    from.put(
        &format!("{V3}/sendToDevice/m.test/{txn}"),
        json!({"messages": {user: {device: {"n": n}}}}),
    )
    .await
    .ok();
}

pub(super) fn to_device_ns(sync: &Value) -> Vec<u64> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["type"] == "m.test")
        .map(|e| e["content"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn to_device_inbox_survives_lost_responses_and_restarts() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob2 = server.login("bob", PASSWORD).await;
    let since0 = bob.sync(None, Some(0), None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob2_since = bob2.sync(None, Some(0), None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A message wakes bob's long-poll.
    let poll = {
        let (bob, since) = (bob.clone(), since0.clone());
        tokio::spawn(async move { bob.sync(Some(&since), Some(20_000), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_test(&alice, "T1", &bob.user_id, &bob.device_id, 1).await;
    let r1 = poll.await.unwrap();
    assert_eq!(to_device_ns(&r1), vec![1]);
    let event = &r1["to_device"]["events"][0];
    assert_eq!(event["sender"], alice.user_id.as_str());

    // The response was lost: syncing from the old token delivers it again.
    let retry = bob.sync(Some(&since0), Some(0), None).await;
    assert_eq!(to_device_ns(&retry), vec![1]);

    // The same transaction again is accepted and not delivered twice.
    send_test(&alice, "T1", &bob.user_id, &bob.device_id, 99).await;
    send_test(&alice, "T2", &bob.user_id, "*", 2).await;
    let r1_next = r1["next_batch"].as_str().unwrap().to_owned();
    let r2 = bob.sync(Some(&r1_next), Some(0), None).await;
    assert_eq!(to_device_ns(&r2), vec![2]);
    // Syncing past message 1 proved receipt: it is gone even for the old token.
    let stale = bob.sync(Some(&since0), Some(0), None).await;
    assert_eq!(to_device_ns(&stale), vec![2]);
    // `*` reached bob's other device too, and only that.
    let other = bob2.sync(Some(&bob2_since), Some(0), None).await;
    assert_eq!(to_device_ns(&other), vec![2]);

    // A restart between send and receipt loses nothing, and positions are not reused.
    send_test(&alice, "T3", &bob.user_id, &bob.device_id, 3).await;
    server.restart().await;
    let (alice, bob, bob2) = (alice.on(&server), bob.on(&server), bob2.on(&server));
    let r2_next = r2["next_batch"].as_str().unwrap().to_owned();
    let r3 = bob.sync(Some(&r2_next), Some(0), None).await;
    assert_eq!(to_device_ns(&r3), vec![3]);
    let r3_next = r3["next_batch"].as_str().unwrap().to_owned();
    let r4 = bob.sync(Some(&r3_next), Some(0), None).await;
    assert!(to_device_ns(&r4).is_empty());
    send_test(&alice, "T4", &bob.user_id, &bob.device_id, 4).await;
    let r4_next = r4["next_batch"].as_str().unwrap().to_owned();
    let r5 = bob.sync(Some(&r4_next), Some(0), None).await;
    assert_eq!(
        to_device_ns(&r5),
        vec![4],
        "a message sent after the restart arrives"
    );

    // A deleted device's inbox goes with it.
    send_test(&alice, "T5", &bob.user_id, &bob2.device_id, 5).await;
    delete_device(&bob, &bob2.device_id).await;
    let again = server
        .login_with("bob", PASSWORD, json!({"device_id": bob2.device_id}))
        .await;
    let fresh = again.sync(None, Some(0), None).await;
    assert!(
        to_device_ns(&fresh).is_empty(),
        "no stale messages: {fresh}"
    );
    server.shutdown().await;
}
