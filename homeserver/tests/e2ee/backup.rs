//! Server-side key backup: restoring history on a new device, versions,
//! etags and the rules for replacing a backed-up session.

use super::*;

/// The backup's `session_data` for an exported Megolm session, encrypted to
/// the backup's public key (m.megolm_backup.v1.curve25519-aes-sha2).
fn backup_session_data(backup_key: &PkEncryption, sender: &Device, exported: &str) -> Value {
    let plaintext = json!({
        "algorithm": MEGOLM,
        "sender_key": sender.curve(),
        "session_key": exported,
        "sender_claimed_keys": { "ed25519": sender.ed() },
        "forwarding_curve25519_key_chain": [],
    });
    let m = backup_key
        .encrypt(plaintext.to_string().as_bytes())
        .expect("encrypt");
    json!({
        "ephemeral": m.ephemeral_key.to_base64(),
        "ciphertext": vodozemac::base64_encode(&m.ciphertext),
        "mac": vodozemac::base64_encode(&m.mac),
    })
}

#[tokio::test]
async fn key_backup_restores_history_after_logout_everywhere() {
    let server = TestServer::start().await;
    let mut phone = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    phone.upload_keys(2).await;
    let room_id = encrypted_room(&phone.client, &[&bob]).await;

    let mut outbound = Outbound::new(&room_id);
    // Exported before the first message, so the backup can read them all.
    let exported =
        InboundGroupSession::new(&outbound.session.session_key(), MegolmConfig::version_1())
            .export_at_first_known_index()
            .to_base64();
    let sent: Vec<String> = (0..3).map(|i| format!("before re-login #{i}")).collect();
    for body in &sent {
        let content = outbound.encrypt(&phone, body);
        phone
            .client
            .send_event(&room_id, "m.room.encrypted", &common::txn(), content)
            .await
            .ok();
    }

    // Back the session up, encrypted to a key only the user holds.
    let recovery = PkDecryption::new();
    let mut auth_data = json!({ "public_key": recovery.public_key().to_base64() });
    phone.sign(&mut auth_data);
    let created = phone
        .client
        .post(
            &format!("{V3}/room_keys/version"),
            json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": auth_data}),
        )
        .await
        .ok();
    let version = created["version"].as_str().expect("version").to_owned();
    let session_id = outbound.session.session_id();
    let encryptor = PkEncryption::from_key(recovery.public_key());
    let put = phone
        .client
        .put(
            &format!("{V3}/room_keys/keys?version={version}"),
            json!({"rooms": {room_id.clone(): {"sessions": {session_id.clone(): {
                "first_message_index": 0,
                "forwarded_count": 0,
                "is_verified": true,
                "session_data": backup_session_data(&encryptor, &phone, &exported),
            }}}}}),
        )
        .await
        .ok();
    assert_eq!(put["count"], 1);

    // Log out everywhere: the old session and its device keys are gone.
    phone
        .client
        .post(&format!("{V3}/logout/all"), json!({}))
        .await
        .ok();
    phone
        .client
        .whoami()
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");

    // A new device restores the key from the backup and reads the history.
    let laptop = server.login("alice", PASSWORD).await;
    let keys = query(&laptop, &[&laptop.user_id]).await;
    let devices = keys["device_keys"][&laptop.user_id].as_object().unwrap();
    assert!(
        !devices.contains_key(phone.id()),
        "the logged-out device's keys are gone"
    );

    let info = laptop.get(&format!("{V3}/room_keys/version")).await.ok();
    assert_eq!(info["version"], version.as_str());
    assert_eq!(info["count"], 1);
    assert_eq!(
        info["auth_data"]["public_key"],
        recovery.public_key().to_base64()
    );
    let backed_up = laptop
        .get(&format!("{V3}/room_keys/keys?version={version}"))
        .await
        .ok();
    let data = &backed_up["rooms"][&room_id]["sessions"][&session_id]["session_data"];
    let message = PkMessage::from_base64(
        data["ciphertext"].as_str().unwrap(),
        data["mac"].as_str().unwrap(),
        data["ephemeral"].as_str().unwrap(),
    )
    .expect("backup message");
    let restored: Value =
        serde_json::from_slice(&recovery.decrypt(&message).expect("decrypt backup"))
            .expect("backup JSON");
    let key = ExportedSessionKey::from_base64(restored["session_key"].as_str().unwrap()).unwrap();
    let mut restored_device = Device::new(laptop.clone());
    let session = InboundGroupSession::import(&key, MegolmConfig::version_1());
    restored_device
        .inbound
        .insert(session.session_id(), session);

    let history = encrypted_history(&laptop, &room_id).await;
    let bodies: Vec<String> = history
        .iter()
        .map(|e| {
            restored_device.megolm_decrypt(e)["content"]["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, sent, "the new device reads the old messages");

    let bytes = stored_bytes(&server).await;
    assert!(
        contains(&bytes, &session_id),
        "the scan must see the backup's rows"
    );
    assert!(
        !contains(&bytes, &exported),
        "the session key is not stored in the clear"
    );
    for body in &sent {
        assert!(!contains(&bytes, body), "{body:?} found in the database");
    }
    server.shutdown().await;
}

/// A `KeyBackupData` whose ciphertext names `tag`, so tests can tell copies apart.
fn backup_key(first_index: u64, forwarded: u64, verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    })
}

#[tokio::test]
async fn key_backup_versions_etags_and_replacement_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = "!room:localhost";
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    alice
        .get(&format!("{V3}/room_keys/version"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let v1 = alice
        .post(
            &format!("{V3}/room_keys/version"),
            json!({"algorithm": algorithm, "auth_data": {"public_key": "abc"}}),
        )
        .await
        .ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();

    let session_path =
        |v: &str, s: &str| format!("{V3}/room_keys/keys/{}/{s}?version={v}", enc(room));
    let put = |v: String, s: &'static str, data: Value| {
        let alice = alice.clone();
        let path = session_path(&v, s);
        async move { alice.put(&path, data).await }
    };
    let stored_tag = |s: &'static str| {
        let alice = alice.clone();
        let path = session_path(&v1, s);
        async move { alice.get(&path).await.ok()["session_data"]["ciphertext"].clone() }
    };

    let first = put(v1.clone(), "S", backup_key(5, 1, false, "first"))
        .await
        .ok();
    assert_eq!(first["count"], 1);
    let etag1 = first["etag"].clone();
    // Worse (later first index): kept out, etag unchanged.
    let worse = put(v1.clone(), "S", backup_key(7, 0, false, "worse"))
        .await
        .ok();
    assert_eq!(
        (worse["etag"].clone(), worse["count"].clone()),
        (etag1.clone(), json!(1))
    );
    assert_eq!(stored_tag("S").await, "first");
    // Same index, fewer forwards: replaces.
    let fewer = put(v1.clone(), "S", backup_key(5, 0, false, "fewer"))
        .await
        .ok();
    assert_ne!(fewer["etag"], etag1, "the etag changes when keys change");
    assert_eq!(stored_tag("S").await, "fewer");
    // Verified beats a lower index; unverified never replaces verified.
    put(v1.clone(), "S", backup_key(9, 3, true, "verified"))
        .await
        .ok();
    assert_eq!(stored_tag("S").await, "verified");
    put(v1.clone(), "S", backup_key(0, 0, false, "unverified"))
        .await
        .ok();
    assert_eq!(stored_tag("S").await, "verified");
    put(v1.clone(), "T", backup_key(0, 0, false, "other"))
        .await
        .ok();

    let info = alice
        .get(&format!("{V3}/room_keys/version/{v1}"))
        .await
        .ok();
    assert_eq!(
        (info["count"].clone(), info["algorithm"].clone()),
        (json!(2), json!(algorithm))
    );
    let room_keys = alice
        .get(&format!("{V3}/room_keys/keys/{}?version={v1}", enc(room)))
        .await
        .ok();
    let sessions: BTreeSet<&String> = room_keys["sessions"].as_object().unwrap().keys().collect();
    assert_eq!(sessions.len(), 2);

    // A newer version takes over: writing to the old one is refused.
    let v2 = alice
        .post(
            &format!("{V3}/room_keys/version"),
            json!({"algorithm": algorithm, "auth_data": {}}),
        )
        .await
        .ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2);
    let stale = put(v1.clone(), "S", backup_key(0, 0, true, "stale")).await;
    stale.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(stale.body["current_version"], v2.as_str());
    assert_eq!(
        alice.get(&format!("{V3}/room_keys/version")).await.ok()["version"],
        v2.as_str()
    );

    // auth_data can change; the algorithm cannot.
    let update = format!("{V3}/room_keys/version/{v2}");
    alice
        .put(
            &update,
            json!({"algorithm": algorithm, "auth_data": {"public_key": "new"}}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get(&update).await.ok()["auth_data"]["public_key"],
        "new"
    );
    alice
        .put(
            &update,
            json!({"algorithm": "other.algorithm", "auth_data": {}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Deleting keys changes count and etag; deleting a version brings back the previous one.
    let deleted = alice
        .request(Method::DELETE, &session_path(&v1, "T"), Body::None)
        .await
        .ok();
    assert_eq!(deleted["count"], 1);
    alice
        .delete(&format!("{V3}/room_keys/version/{v2}"))
        .await
        .ok();
    alice.get(&update).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(
        alice.get(&format!("{V3}/room_keys/version")).await.ok()["version"],
        v1.as_str()
    );
    alice
        .delete(&format!("{V3}/room_keys/version/{v2}"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("{V3}/room_keys/keys?version=999"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&session_path(&v1, "NOPE"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Another user sees none of it.
    let bob = server.register("bob").await;
    bob.get(&format!("{V3}/room_keys/version"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&session_path(&v1, "S"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let all = alice
        .get(&format!("{V3}/room_keys/keys?version={v1}"))
        .await
        .ok();
    assert_eq!(all["rooms"][room]["sessions"]["S"]["is_verified"], true);
    let _: BTreeMap<String, Value> = serde_json::from_value(all["rooms"].clone()).unwrap();
    server.shutdown().await;
}
