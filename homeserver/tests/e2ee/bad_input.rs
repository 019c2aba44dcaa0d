//! Bad input is refused with the spec's error, and nothing is half-stored.

use super::{
    cross_signing::{cross_signing_key, CrossSigning},
    devices::to_device_ns,
    *,
};

#[tokio::test]
async fn bad_keys_and_oversized_messages_are_refused_with_nothing_stored() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    let a = alice.user().to_owned();
    let upload = format!("{V3}/keys/upload");
    let stored_devices = |client: Client, user: String| async move {
        query(&client, &[&user]).await["device_keys"][&user]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0)
    };

    // Device keys whose signature does not match their content.
    let mut tampered = alice.device_keys();
    tampered["keys"][format!("curve25519:{}", alice.id())] =
        json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let otks = alice.one_time_keys(3);
    alice
        .client
        .post(
            &upload,
            json!({"device_keys": tampered, "one_time_keys": otks}),
        )
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");

    // Device keys for another user, or another device.
    let mut bobs = alice.device_keys();
    bobs["user_id"] = json!(bob.user_id);
    alice.sign(&mut bobs);
    alice
        .client
        .post(&upload, json!({"device_keys": bobs}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut other_device = alice.device_keys();
    other_device["device_id"] = json!("SOMEONEELSE");
    alice
        .client
        .post(&upload, json!({"device_keys": other_device}))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // A one-time key with a bad signature sinks the whole upload.
    let mut bad_otk = json!({"key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    olm::sign_json(&mut bad_otk, &a, &format!("ed25519:{}", alice.id()), |_| {
        vodozemac::Ed25519SecretKey::new()
            .sign(b"other")
            .to_base64()
    });
    alice
        .client
        .post(
            &upload,
            json!({"device_keys": alice.device_keys(), "one_time_keys": {"signed_curve25519:BAD": bad_otk}}),
        )
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");
    assert_eq!(
        stored_devices(bob.clone(), a.clone()).await,
        0,
        "no device keys were stored"
    );
    let counts = alice.sync(0).await;
    assert_eq!(counts["device_one_time_keys_count"]["signed_curve25519"], 0);

    // A valid upload, then a conflicting one: the new key in it is not stored either.
    let good = alice.one_time_keys(2);
    let stored = alice
        .client
        .post(
            &upload,
            json!({"device_keys": alice.device_keys(), "one_time_keys": good}),
        )
        .await
        .ok();
    assert_eq!(stored["one_time_key_counts"]["signed_curve25519"], 2);
    let (existing_id, _) = good.as_object().unwrap().iter().next().unwrap();
    let mut conflicting = alice.one_time_keys(2);
    let replacement = conflicting
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    conflicting[existing_id] = replacement;
    alice
        .client
        .post(&upload, json!({"one_time_keys": conflicting}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let counts = alice.client.post(&upload, json!({})).await.ok();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);

    // An oversized to-device message: nobody gets anything from that request.
    let big = "x".repeat(70_000);
    send_to_device(
        &bob,
        "m.test",
        json!({ &a: { alice.id(): {"small": true} }, &bob.user_id: { "*": {"big": big} } }),
    )
    .await
    .assert_error(413, "M_TOO_LARGE");
    send_to_device(
        &bob,
        "m.test",
        json!({ &a: { alice.id(): "not an object" } }),
    )
    .await
    .assert_error(400, "M_BAD_JSON");
    let inbox = alice.sync(0).await;
    assert!(to_device_ns(&inbox).is_empty() && inbox["to_device"]["events"] == json!([]));

    // Cross-signing: a self-signing key not signed by the master key sinks
    // the whole upload; a master key for someone else is refused.
    let cs = CrossSigning::new();
    let mut body = cs.upload_body(&a);
    body["self_signing_key"] = cross_signing_key(&a, "self_signing", &cs.ssk, Some(&cs.usk));
    alice
        .client
        .post(&format!("{V3}/keys/device_signing/upload"), body)
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");
    let mut body = cs.upload_body(&a);
    body["master_key"] = cross_signing_key(&bob.user_id, "master", &cs.master, None);
    alice
        .client
        .post(&format!("{V3}/keys/device_signing/upload"), body)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let keys = query(&bob, &[&a]).await;
    assert!(
        keys["master_keys"].get(&a).is_none(),
        "no cross-signing key was stored"
    );
    server.shutdown().await;
}
