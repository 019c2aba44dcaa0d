//! Cross-signing keys and signatures, as `/keys/query` shows them.

use super::*;

/// A cross-signing key of `user` for `usage`, signed by `signer` if given.
pub(super) fn cross_signing_key(
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
pub(super) struct CrossSigning {
    pub(super) master: vodozemac::Ed25519SecretKey,
    pub(super) ssk: vodozemac::Ed25519SecretKey,
    pub(super) usk: vodozemac::Ed25519SecretKey,
}

impl CrossSigning {
    pub(super) fn new() -> Self {
        CrossSigning {
            master: vodozemac::Ed25519SecretKey::new(),
            ssk: vodozemac::Ed25519SecretKey::new(),
            usk: vodozemac::Ed25519SecretKey::new(),
        }
    }

    pub(super) fn upload_body(&self, user: &str) -> Value {
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
