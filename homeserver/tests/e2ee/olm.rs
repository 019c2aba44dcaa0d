//! A minimal end-to-end-encryption client on top of the test [`Client`]:
//! a vodozemac Olm account per device, its key uploads, Olm sessions over
//! to-device messages and Megolm sessions for room messages.
//!
//! Everything cryptographic happens here, on the client side; the server only
//! ever sees public keys, signatures and ciphertext.

use std::collections::HashMap;

use serde_json::{json, Value};
use vodozemac::{
    megolm::{
        GroupSession, InboundGroupSession, MegolmMessage, SessionConfig as MegolmConfig, SessionKey,
    },
    olm::{Account, OlmMessage, Session, SessionConfig as OlmConfig},
    Curve25519PublicKey,
};

use crate::common::{enc, txn, Client};

pub const V3: &str = "/_matrix/client/v3";
pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// Matrix canonical JSON: sorted keys, no insignificant whitespace.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Adds `signatures.<user>.<key_id>`, made by `sign` over the object's
/// canonical JSON without `signatures` and `unsigned`.
pub fn sign_json(v: &mut Value, user: &str, key_id: &str, sign: impl Fn(&[u8]) -> String) {
    let mut unsigned = v.clone();
    let obj = unsigned.as_object_mut().expect("object");
    obj.remove("signatures");
    obj.remove("unsigned");
    let signature = sign(canonical(&unsigned).as_bytes());
    let sigs = v
        .as_object_mut()
        .expect("object")
        .entry("signatures")
        .or_insert_with(|| json!({}));
    sigs.as_object_mut()
        .expect("signatures object")
        .entry(user.to_owned())
        .or_insert_with(|| json!({}))[key_id] = json!(signature);
}

/// One E2EE-capable device of a user.
pub struct Device {
    pub client: Client,
    pub account: Account,
    /// Olm sessions by the peer's curve25519 key.
    pub olm: HashMap<String, Session>,
    /// Megolm sessions this device can decrypt, by session id.
    pub inbound: HashMap<String, InboundGroupSession>,
    /// Since token of this device's sync stream.
    pub since: Option<String>,
}

impl Device {
    pub fn new(client: Client) -> Self {
        Device {
            client,
            account: Account::new(),
            olm: HashMap::new(),
            inbound: HashMap::new(),
            since: None,
        }
    }

    pub fn user(&self) -> &str {
        &self.client.user_id
    }

    pub fn id(&self) -> &str {
        &self.client.device_id
    }

    pub fn curve(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    pub fn ed(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    /// Signs `v` with this device's ed25519 key.
    pub fn sign(&self, v: &mut Value) {
        let (user, key_id) = (self.user().to_owned(), format!("ed25519:{}", self.id()));
        sign_json(v, &user, &key_id, |b| self.account.sign(b).to_base64());
    }

    /// The device's signed identity keys.
    pub fn device_keys(&self) -> Value {
        let mut keys = json!({
            "user_id": self.user(),
            "device_id": self.id(),
            "algorithms": [OLM, MEGOLM],
            "keys": {
                format!("curve25519:{}", self.id()): self.curve(),
                format!("ed25519:{}", self.id()): self.ed(),
            },
        });
        self.sign(&mut keys);
        keys
    }

    /// `n` new signed one-time keys, as `/keys/upload` wants them.
    pub fn one_time_keys(&mut self, n: usize) -> Value {
        self.account.generate_one_time_keys(n);
        let mut out = json!({});
        for (id, key) in self.account.one_time_keys() {
            let mut signed = json!({ "key": key.to_base64() });
            self.sign(&mut signed);
            out[format!("signed_curve25519:{}", id.to_base64())] = signed;
        }
        self.account.mark_keys_as_published();
        out
    }

    /// A new signed fallback key.
    pub fn fallback_key(&mut self) -> Value {
        self.account.generate_fallback_key();
        let mut out = json!({});
        for (id, key) in self.account.fallback_key() {
            let mut signed = json!({ "key": key.to_base64(), "fallback": true });
            self.sign(&mut signed);
            out[format!("signed_curve25519:{}", id.to_base64())] = signed;
        }
        self.account.mark_keys_as_published();
        out
    }

    /// Uploads identity keys, `otks` one-time keys and a fallback key.
    pub async fn upload_keys(&mut self, otks: usize) -> Value {
        let body = json!({
            "device_keys": self.device_keys(),
            "one_time_keys": self.one_time_keys(otks),
            "fallback_keys": self.fallback_key(),
        });
        self.client
            .post(&format!("{V3}/keys/upload"), body)
            .await
            .ok()
    }

    /// One sync from this device's position (long-polling up to `timeout_ms`).
    pub async fn sync(&mut self, timeout_ms: u64) -> Value {
        let body = self
            .client
            .sync(self.since.as_deref(), Some(timeout_ms), None)
            .await;
        self.since = body["next_batch"].as_str().map(str::to_owned);
        body
    }

    /// Opens an Olm session to a device whose identity key and claimed
    /// one-time key are given, unless one exists already.
    pub fn ensure_olm(&mut self, their_curve: &str, their_otk: &str) {
        if self.olm.contains_key(their_curve) {
            return;
        }
        let session = self
            .account
            .create_outbound_session(
                OlmConfig::version_1(),
                Curve25519PublicKey::from_base64(their_curve).expect("curve25519 key"),
                Curve25519PublicKey::from_base64(their_otk).expect("one-time key"),
            )
            .expect("outbound Olm session");
        self.olm.insert(their_curve.to_owned(), session);
    }

    /// The `m.room.encrypted` to-device content carrying `event` (type and
    /// content) for one recipient device, over the Olm session to it.
    pub fn olm_encrypt(&mut self, to: &Peer, event_type: &str, content: Value) -> Value {
        let payload = json!({
            "type": event_type,
            "content": content,
            "sender": self.user(),
            "sender_device": self.id(),
            "keys": { "ed25519": self.ed() },
            "recipient": to.user_id,
            "recipient_keys": { "ed25519": to.ed },
        });
        let my_curve = self.curve();
        let session = self
            .olm
            .get_mut(&to.curve)
            .expect("Olm session to the peer");
        let message = session.encrypt(payload.to_string()).expect("Olm encrypt");
        json!({
            "algorithm": OLM,
            "sender_key": my_curve,
            "ciphertext": { to.curve.clone(): serde_json::to_value(&message).expect("olm message") },
        })
    }

    /// Decrypts a to-device `m.room.encrypted` addressed to this device.
    pub fn olm_decrypt(&mut self, event: &Value) -> Value {
        let content = &event["content"];
        assert_eq!(
            content["algorithm"], OLM,
            "unexpected to-device event {event}"
        );
        let sender_key = content["sender_key"]
            .as_str()
            .expect("sender_key")
            .to_owned();
        let message: OlmMessage =
            serde_json::from_value(content["ciphertext"][self.curve()].clone())
                .expect("ciphertext for me");
        let plaintext = match (&message, self.olm.get_mut(&sender_key)) {
            (OlmMessage::Normal(_), Some(session)) => {
                session.decrypt(&message).expect("Olm decrypt")
            }
            (OlmMessage::PreKey(pre_key), _) => {
                let sender = Curve25519PublicKey::from_base64(&sender_key).expect("sender key");
                let created = self
                    .account
                    .create_inbound_session(OlmConfig::version_1(), sender, pre_key)
                    .expect("inbound Olm session");
                self.olm.insert(sender_key, created.session);
                created.plaintext
            }
            _ => panic!("a normal Olm message without a session"),
        };
        let payload: Value = serde_json::from_slice(&plaintext).expect("Olm payload JSON");
        assert_eq!(payload["recipient"], self.user(), "Olm payload recipient");
        assert_eq!(payload["recipient_keys"]["ed25519"], self.ed());
        payload
    }

    /// Receives an `m.room_key` payload: from now on its session decrypts.
    pub fn accept_room_key(&mut self, payload: &Value) {
        assert_eq!(payload["type"], "m.room_key");
        let key = SessionKey::from_base64(
            payload["content"]["session_key"]
                .as_str()
                .expect("session_key"),
        )
        .expect("session key");
        let session = InboundGroupSession::new(&key, MegolmConfig::version_1());
        self.inbound.insert(session.session_id(), session);
    }

    /// Decrypts a room `m.room.encrypted` event to its plaintext payload.
    pub fn megolm_decrypt(&mut self, event: &Value) -> Value {
        let content = &event["content"];
        assert_eq!(content["algorithm"], MEGOLM, "not a Megolm event: {event}");
        let session_id = content["session_id"].as_str().expect("session_id");
        let session = self
            .inbound
            .get_mut(session_id)
            .unwrap_or_else(|| panic!("{:?} has no Megolm session {session_id}", self.client));
        let message =
            MegolmMessage::from_base64(content["ciphertext"].as_str().expect("ciphertext"))
                .expect("Megolm message");
        let decrypted = session.decrypt(&message).expect("Megolm decrypt");
        serde_json::from_slice(&decrypted.plaintext).expect("Megolm payload JSON")
    }
}

/// What a device knows of another device from `/keys/query`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub user_id: String,
    pub device_id: String,
    pub curve: String,
    pub ed: String,
}

/// A Megolm session this device sends with.
pub struct Outbound {
    pub session: GroupSession,
    pub room_id: String,
}

impl Outbound {
    pub fn new(room_id: &str) -> Self {
        Outbound {
            session: GroupSession::new(MegolmConfig::version_1()),
            room_id: room_id.to_owned(),
        }
    }

    /// The `m.room_key` content that shares this session.
    pub fn room_key(&self) -> Value {
        json!({
            "algorithm": MEGOLM,
            "room_id": self.room_id,
            "session_id": self.session.session_id(),
            "session_key": self.session.session_key().to_base64(),
        })
    }

    /// Encrypts an `m.room.message` into `m.room.encrypted` content.
    pub fn encrypt(&mut self, sender: &Device, body: &str) -> Value {
        let payload = json!({
            "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": body },
            "room_id": self.room_id,
        });
        let message = self.session.encrypt(payload.to_string());
        json!({
            "algorithm": MEGOLM,
            "sender_key": sender.curve(),
            "ciphertext": message.to_base64(),
            "session_id": self.session.session_id(),
            "device_id": sender.id(),
        })
    }
}

/// `POST /keys/query` for whole users; returns the response body.
pub async fn query(client: &Client, users: &[&str]) -> Value {
    let device_keys: serde_json::Map<String, Value> =
        users.iter().map(|u| (u.to_string(), json!([]))).collect();
    client
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": device_keys }),
        )
        .await
        .ok()
}

/// `POST /keys/claim` of one `signed_curve25519` key per `(user, device)`.
pub async fn claim(client: &Client, wanted: &[(&str, &str)]) -> Value {
    let mut one_time_keys = json!({});
    for (user, device) in wanted {
        one_time_keys[*user][*device] = json!("signed_curve25519");
    }
    client
        .post(
            &format!("{V3}/keys/claim"),
            json!({ "one_time_keys": one_time_keys }),
        )
        .await
        .ok()
}

/// `PUT /sendToDevice/{type}/{txn}`.
pub async fn send_to_device(
    client: &Client,
    event_type: &str,
    messages: Value,
) -> crate::common::Response {
    client
        .put(
            &format!("{V3}/sendToDevice/{}/{}", enc(event_type), txn()),
            json!({ "messages": messages }),
        )
        .await
}
