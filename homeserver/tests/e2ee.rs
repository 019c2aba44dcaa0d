//! End-to-end encryption, black-box: real Olm/Megolm clients (vodozemac) talk
//! to the server over HTTP. The server stores and relays public keys,
//! signatures and ciphertext; every check here is what a client would notice.

mod common;
#[path = "e2ee/olm.rs"]
mod olm;

#[path = "e2ee/backup.rs"]
mod backup;
#[path = "e2ee/bad_input.rs"]
mod bad_input;
#[path = "e2ee/cross_signing.rs"]
mod cross_signing;
#[path = "e2ee/devices.rs"]
mod devices;

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
