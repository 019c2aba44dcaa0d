//! End-to-end encryption, black-box: real Olm/Megolm clients (vodozemac) talk
//! to the server over HTTP. The server stores and relays public keys,
//! signatures and ciphertext; every check here is what a client would notice.

mod common;
#[path = "e2ee/olm.rs"]
mod olm;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use common::{enc, Body, Client, TestServer, PASSWORD};
use olm::{claim, query, send_to_device, Device, Outbound, Peer, MEGOLM, V3};
use reqwest::Method;
use serde_json::{json, Value};
use vodozemac::{
    megolm::{ExportedSessionKey, InboundGroupSession, SessionConfig as MegolmConfig},
    pk_encryption::{Message as PkMessage, PkDecryption, PkEncryption},
    Ed25519PublicKey, Ed25519Signature,
};

/// A room with `m.room.encryption`, created by `owner`, joined by `others`.
async fn encrypted_room(owner: &Client, others: &[&Client]) -> String {
    let invite: Vec<&str> = others.iter().map(|c| c.user_id.as_str()).collect();
    let room_id = owner
        .create_room(json!({
            "preset": "private_chat",
            "invite": invite,
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": MEGOLM },
            }],
        }))
        .await;
    for other in others {
        other.join(&room_id).await;
    }
    room_id
}

/// Checks the device's own signature on keys the server returned.
fn assert_self_signed(keys: &Value, user: &str, device: &str) {
    let ed = keys["keys"][format!("ed25519:{device}")]
        .as_str()
        .expect("ed25519 key");
    let sig = keys["signatures"][user][format!("ed25519:{device}")]
        .as_str()
        .expect("device signature");
    let mut signed = keys.clone();
    let o = signed.as_object_mut().unwrap();
    o.remove("signatures");
    o.remove("unsigned");
    Ed25519PublicKey::from_base64(ed)
        .unwrap()
        .verify(
            olm::canonical(&signed).as_bytes(),
            &Ed25519Signature::from_base64(sig).unwrap(),
        )
        .unwrap_or_else(|e| panic!("signature of {user} {device} does not verify: {e}"));
}

/// Every other device of `users`, as `me` learns them from `/keys/query`.
async fn peers(me: &Device, users: &[&str]) -> Vec<Peer> {
    let body = query(&me.client, users).await;
    let mut out = Vec::new();
    for user in users {
        let devices = body["device_keys"][*user]
            .as_object()
            .expect("user's devices");
        for (device_id, keys) in devices {
            if device_id == me.id() {
                continue;
            }
            assert_self_signed(keys, user, device_id);
            out.push(Peer {
                user_id: user.to_string(),
                device_id: device_id.clone(),
                curve: keys["keys"][format!("curve25519:{device_id}")]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                ed: keys["keys"][format!("ed25519:{device_id}")]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            });
        }
    }
    out
}

/// `me` shares a new Megolm session for `room_id` with every peer over Olm,
/// claiming a one-time key wherever it has no Olm session yet.
async fn share_room_key(me: &mut Device, peers: &[Peer], room_id: &str) -> Outbound {
    let outbound = Outbound::new(room_id);
    let need: Vec<&Peer> = peers
        .iter()
        .filter(|p| !me.olm.contains_key(&p.curve))
        .collect();
    if !need.is_empty() {
        let wanted: Vec<(&str, &str)> = need
            .iter()
            .map(|p| (p.user_id.as_str(), p.device_id.as_str()))
            .collect();
        let claimed = claim(&me.client, &wanted).await;
        for p in need {
            let keys = claimed["one_time_keys"][&p.user_id][&p.device_id]
                .as_object()
                .unwrap_or_else(|| panic!("no one-time key claimed for {p:?}: {claimed}"));
            let (_, otk) = keys.iter().next().expect("one key");
            // The claimed key is signed by the device it belongs to.
            let mut signed = otk.clone();
            let sig = signed["signatures"][&p.user_id][format!("ed25519:{}", p.device_id)]
                .as_str()
                .expect("one-time key signature")
                .to_owned();
            signed.as_object_mut().unwrap().remove("signatures");
            Ed25519PublicKey::from_base64(&p.ed)
                .unwrap()
                .verify(
                    olm::canonical(&signed).as_bytes(),
                    &Ed25519Signature::from_base64(&sig).unwrap(),
                )
                .expect("claimed one-time key signature");
            me.ensure_olm(&p.curve, otk["key"].as_str().unwrap());
        }
    }
    let mut messages = json!({});
    for p in peers {
        messages[&p.user_id][&p.device_id] = me.olm_encrypt(p, "m.room_key", outbound.room_key());
    }
    send_to_device(&me.client, "m.room.encrypted", messages)
        .await
        .ok();
    // The sender keeps the session too, to read its own messages.
    me.accept_room_key(&json!({"type": "m.room_key", "content": outbound.room_key()}));
    outbound
}

/// Syncs `device` until it holds Megolm session `session_id` (delivered as
/// an Olm-encrypted `m.room_key`).
async fn receive_room_key(device: &mut Device, session_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !device.inbound.contains_key(session_id) {
        assert!(
            Instant::now() < deadline,
            "{:?} never got room key {session_id}",
            device.client
        );
        let body = device.sync(5_000).await;
        for event in body["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if event["type"] == "m.room.encrypted" {
                let payload = device.olm_decrypt(&event);
                device.accept_room_key(&payload);
            }
        }
    }
}

/// The room's `m.room.encrypted` events, oldest first, via `/messages`.
async fn encrypted_history(client: &Client, room_id: &str) -> Vec<Value> {
    let body = client
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&limit=100",
            enc(room_id)
        ))
        .await
        .ok();
    let mut events: Vec<Value> = body["chunk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["type"] == "m.room.encrypted")
        .collect();
    events.reverse();
    events
}

/// Everything the database holds, as bytes: the SQLite files (database and
/// WAL) as they are on disk, or every row of every PostgreSQL table as text.
async fn stored_bytes(server: &TestServer) -> Vec<u8> {
    let url = &server.config.database.url;
    let mut bytes = Vec::new();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(b);
            }
        }
        return bytes;
    }
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("t"))
    .collect();
    for table in tables {
        let sql = format!("SELECT CAST(t AS TEXT) AS row FROM \"{table}\" t");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            bytes.extend(row.get::<String, _>("row").into_bytes());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn olm_and_megolm_between_two_users_with_two_devices_each() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alice2 = server.login("alice", PASSWORD).await;
    let bob2 = server.login("bob", PASSWORD).await;
    let room_id = encrypted_room(&alice, &[&bob]).await;
    let encryption = alice
        .get_state(&room_id, "m.room.encryption", "")
        .await
        .ok();
    assert_eq!(encryption["algorithm"], MEGOLM);

    let mut devices: Vec<Device> = [alice, alice2, bob, bob2]
        .into_iter()
        .map(Device::new)
        .collect();
    for d in devices.iter_mut() {
        let counts = d.upload_keys(5).await;
        assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 5);
        d.sync(0).await;
    }
    let users = [server.user_id("alice"), server.user_id("bob")];
    let users: Vec<&str> = users.iter().map(String::as_str).collect();

    // Each device in turn shares its Megolm session with the three others
    // over Olm, then sends an encrypted room message.
    let mut sent = Vec::new();
    let mut ciphertexts = Vec::new();
    let mut session_keys = Vec::new();
    for i in 0..devices.len() {
        let peers_of_i = peers(&devices[i], &users).await;
        assert_eq!(peers_of_i.len(), 3, "each device sees the three others");
        let mut outbound = share_room_key(&mut devices[i], &peers_of_i, &room_id).await;
        session_keys.push(
            outbound.room_key()["session_key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let session_id = outbound.session.session_id();
        for (j, other) in devices.iter_mut().enumerate() {
            if j != i {
                receive_room_key(other, &session_id).await;
            }
        }
        let body = format!("secret number {i} from {}", devices[i].id());
        let content = outbound.encrypt(&devices[i], &body);
        ciphertexts.push(content["ciphertext"].as_str().unwrap().to_owned());
        devices[i]
            .client
            .send_event(&room_id, "m.room.encrypted", &common::txn(), content)
            .await
            .ok();
        sent.push(body);
    }

    // Every device decrypts every message to the original plaintext.
    for d in devices.iter_mut() {
        let history = encrypted_history(&d.client, &room_id).await;
        assert_eq!(
            history.len(),
            sent.len(),
            "{:?} sees every message",
            d.client
        );
        let bodies: Vec<String> = history
            .iter()
            .map(|e| {
                let payload = d.megolm_decrypt(e);
                assert_eq!(payload["room_id"], room_id.as_str());
                payload["content"]["body"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(bodies, sent, "{:?} decrypts every message", d.client);
    }

    // No plaintext (nor any Megolm session key) at rest; the ciphertext is there.
    let bytes = stored_bytes(&server).await;
    assert!(
        ciphertexts.iter().any(|c| contains(&bytes, c)),
        "the scan must see the stored ciphertext"
    );
    for secret in sent.iter().chain(session_keys.iter()) {
        assert!(
            !contains(&bytes, secret),
            "{secret:?} found in the database"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_claims_hand_out_each_one_time_key_once_then_the_fallback() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    let otks = alice.one_time_keys(10);
    let fallback = alice.fallback_key();
    alice
        .client
        .post(
            &format!("{V3}/keys/upload"),
            json!({"device_keys": alice.device_keys(), "one_time_keys": otks, "fallback_keys": fallback}),
        )
        .await
        .ok();
    let first = alice.sync(0).await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 10);
    assert_eq!(
        first["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let (user, device) = (alice.user().to_owned(), alice.id().to_owned());
    let claims = (0..50).map(|_| {
        let bob = bob.clone();
        let (user, device) = (user.clone(), device.clone());
        async move { claim(&bob, &[(&user, &device)]).await }
    });
    let results = futures::future::join_all(claims).await;
    let mut handed_out: HashMap<String, usize> = HashMap::new();
    let mut fallbacks = 0;
    for r in &results {
        let keys = r["one_time_keys"][&user][&device]
            .as_object()
            .expect("a key for every claim");
        let (id, key) = keys.iter().next().expect("one key");
        if key["fallback"] == json!(true) {
            fallbacks += 1;
            assert_eq!(fallback.get(id), Some(key), "the fallback key as uploaded");
        } else {
            assert_eq!(
                otks.get(id),
                Some(key),
                "an uploaded one-time key, as uploaded"
            );
            *handed_out.entry(id.clone()).or_default() += 1;
        }
    }
    assert_eq!(handed_out.len(), 10, "all ten one-time keys handed out");
    assert!(
        handed_out.values().all(|n| *n == 1),
        "each at most once: {handed_out:?}"
    );
    assert_eq!(fallbacks, 40, "then the fallback key");

    let after = alice.sync(0).await;
    assert_eq!(after["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(
        after["device_unused_fallback_key_types"],
        json!([]),
        "the fallback key is used"
    );
    // A new fallback key is unused again.
    let body = json!({"fallback_keys": alice.fallback_key()});
    alice
        .client
        .post(&format!("{V3}/keys/upload"), body)
        .await
        .ok();
    let again = alice.sync(0).await;
    assert_eq!(
        again["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    server.shutdown().await;
}

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

fn users_in(sync: &Value, list: &str) -> Vec<String> {
    common::strings(&sync["device_lists"][list])
}

/// `DELETE /devices/{id}` with password auth.
async fn delete_device(client: &Client, device_id: &str) {
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

fn to_device_ns(sync: &Value) -> Vec<u64> {
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

/// A cross-signing key of `user` for `usage`, signed by `signer` if given.
fn cross_signing_key(
    user: &str,
    usage: &str,
    key: &vodozemac::Ed25519SecretKey,
    signer: Option<&vodozemac::Ed25519SecretKey>,
) -> Value {
    let public = key.public_key().to_base64();
    let mut v = json!({
        "user_id": user,
        "usage": [usage],
        "keys": { format!("ed25519:{public}"): public },
    });
    if let Some(signer) = signer {
        let id = format!("ed25519:{}", signer.public_key().to_base64());
        olm::sign_json(&mut v, user, &id, |b| signer.sign(b).to_base64());
    }
    v
}

/// Master, self-signing and user-signing secret keys.
struct CrossSigning {
    master: vodozemac::Ed25519SecretKey,
    ssk: vodozemac::Ed25519SecretKey,
    usk: vodozemac::Ed25519SecretKey,
}

impl CrossSigning {
    fn new() -> Self {
        CrossSigning {
            master: vodozemac::Ed25519SecretKey::new(),
            ssk: vodozemac::Ed25519SecretKey::new(),
            usk: vodozemac::Ed25519SecretKey::new(),
        }
    }

    fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": cross_signing_key(user, "master", &self.master, None),
            "self_signing_key": cross_signing_key(user, "self_signing", &self.ssk, Some(&self.master)),
            "user_signing_key": cross_signing_key(user, "user_signing", &self.usk, Some(&self.master)),
        })
    }

    fn id(key: &vodozemac::Ed25519SecretKey) -> String {
        format!("ed25519:{}", key.public_key().to_base64())
    }
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_show_in_key_queries() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let mut bob = Device::new(server.register("bob").await);
    alice.upload_keys(1).await;
    bob.upload_keys(1).await;
    let (a, b) = (alice.user().to_owned(), bob.user().to_owned());
    let signing_upload = format!("{V3}/keys/device_signing/upload");

    // The first upload needs no extra auth (there is nothing to replace).
    let alice_cs = CrossSigning::new();
    alice
        .client
        .post(&signing_upload, alice_cs.upload_body(&a))
        .await
        .ok();
    let bob_cs = CrossSigning::new();
    bob.client
        .post(&signing_upload, bob_cs.upload_body(&b))
        .await
        .ok();

    let own = query(&alice.client, &[&a]).await;
    let master_pub = alice_cs.master.public_key().to_base64();
    assert_eq!(
        own["master_keys"][&a]["keys"][format!("ed25519:{master_pub}")],
        master_pub.as_str()
    );
    assert!(own["self_signing_keys"][&a].is_object());
    assert!(
        own["user_signing_keys"][&a].is_object(),
        "a user sees their own user-signing key"
    );
    let seen_by_bob = query(&bob.client, &[&a]).await;
    assert!(seen_by_bob["master_keys"][&a].is_object());
    assert!(seen_by_bob["self_signing_keys"][&a].is_object());
    assert!(
        seen_by_bob["user_signing_keys"].get(&a).is_none(),
        "others don't see it"
    );

    // Alice signs her device with her self-signing key.
    let mut device_keys = alice.device_keys();
    let ssk_id = CrossSigning::id(&alice_cs.ssk);
    olm::sign_json(&mut device_keys, &a, &ssk_id, |m| {
        alice_cs.ssk.sign(m).to_base64()
    });
    let signed = alice
        .client
        .post(
            &format!("{V3}/keys/signatures/upload"),
            json!({ &a: { alice.id(): device_keys } }),
        )
        .await
        .ok();
    assert_eq!(signed["failures"], json!({}));
    let seen = query(&bob.client, &[&a]).await;
    let device = &seen["device_keys"][&a][alice.id()];
    assert!(
        device["signatures"][&a][&ssk_id].is_string(),
        "bob sees the cross-signature: {device}"
    );
    assert_self_signed(device, &a, alice.id());

    // Alice verifies bob: his master key signed by her user-signing key.
    let bob_master_pub = bob_cs.master.public_key().to_base64();
    let mut bob_master = cross_signing_key(&b, "master", &bob_cs.master, None);
    let usk_id = CrossSigning::id(&alice_cs.usk);
    olm::sign_json(&mut bob_master, &a, &usk_id, |m| {
        alice_cs.usk.sign(m).to_base64()
    });
    let signatures_upload = format!("{V3}/keys/signatures/upload");
    let ok = alice
        .client
        .post(
            &signatures_upload,
            json!({ &b: { &bob_master_pub: bob_master } }),
        )
        .await
        .ok();
    assert_eq!(ok["failures"], json!({}));
    let alice_view = query(&alice.client, &[&b]).await;
    assert!(alice_view["master_keys"][&b]["signatures"][&a][&usk_id].is_string());
    let bob_view = query(&bob.client, &[&b]).await;
    assert!(bob_view["master_keys"][&b]["signatures"].get(&a).is_none());

    // A forged signature is reported and not stored.
    let mut forged = cross_signing_key(&b, "master", &bob_cs.master, None);
    let charlie_cs = CrossSigning::new();
    olm::sign_json(&mut forged, &b, &format!("ed25519:{}", bob.id()), |m| {
        charlie_cs.usk.sign(m).to_base64()
    });
    let refused = bob
        .client
        .post(
            &signatures_upload,
            json!({ &b: { &bob_master_pub: forged } }),
        )
        .await
        .ok();
    assert_eq!(
        refused["failures"][&b][&bob_master_pub]["errcode"],
        "M_INVALID_SIGNATURE"
    );
    let after = query(&bob.client, &[&b]).await;
    assert!(after["master_keys"][&b]["signatures"][&b]
        .get(format!("ed25519:{}", bob.id()))
        .is_none());

    // Replacing the keys needs the password; the same keys again do not.
    alice
        .client
        .post(&signing_upload, alice_cs.upload_body(&a))
        .await
        .ok();
    let replacement = CrossSigning::new();
    let mut body = replacement.upload_body(&a);
    let challenge = alice.client.post(&signing_upload, body.clone()).await;
    assert_eq!(challenge.status.as_u16(), 401, "{challenge:?}");
    assert!(common::has_flow(&challenge.body, &["m.login.password"]));
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": a},
        "password": PASSWORD,
        "session": challenge.body["session"],
    });
    alice.client.post(&signing_upload, body).await.ok();
    let replaced = query(&bob.client, &[&a]).await;
    let new_pub = replacement.master.public_key().to_base64();
    assert_eq!(
        replaced["master_keys"][&a]["keys"][format!("ed25519:{new_pub}")],
        new_pub.as_str()
    );
    server.shutdown().await;
}

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
