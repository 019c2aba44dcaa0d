//! Federation keys and request authentication between real homeservers on
//! loopback (TLS with a test CA): the key server, key rotation, the notary,
//! the signed client, and the X-Matrix extractor against good and bad requests.

mod common;

use std::{net::SocketAddr, sync::Arc};

use axum::{routing::any, Json, Router};
use common::federation::Federation;
use engine::{
    config::OldVerifyKey,
    federation::{authentication::sign_request, FederationError},
    keys::SigningKey,
    services::Services,
};
use federation::auth::FedRequest;
use reqwest::{Method, StatusCode};
use ruma::{
    api::federation::authentication::XMatrix,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    engine::util::now_ms()
}

fn object(v: &Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(v.clone()).expect("canonical JSON") {
        CanonicalJsonValue::Object(o) => o,
        other => panic!("not an object: {other:?}"),
    }
}

/// `server`'s current verify keys from a key response, as a public key map.
fn keys_of(response: &Value, server: &str) -> PublicKeyMap {
    let mut set = PublicKeySet::new();
    for (id, key) in response["verify_keys"].as_object().expect("verify_keys") {
        set.insert(
            id.clone(),
            Base64::parse(key["key"].as_str().unwrap()).unwrap(),
        );
    }
    PublicKeyMap::from([(server.to_owned(), set)])
}

/// Only `server`'s signatures of `v`, so a check needs no other server's keys.
fn signed_by_only(v: &Value, server: &str) -> CanonicalJsonObject {
    let mut v = v.clone();
    let sig = v["signatures"][server].clone();
    v["signatures"] = json!({ server: sig });
    object(&v)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let resp = http.get(url).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    resp.json().await.expect("JSON")
}

#[tokio::test]
async fn key_server_publishes_a_self_signed_key() {
    let fed = Federation::start(1).await;
    let http = fed.http();
    let url = format!("{}/_matrix/key/v2/server", fed.federation_url(0));
    let keys = get_json(&http, &url).await;
    assert_eq!(keys["server_name"], "hs1.test");
    let key = fed.servers[0].services().core.key.key_id.clone();
    assert!(keys["verify_keys"][&key]["key"].is_string(), "{keys}");
    let valid_until = keys["valid_until_ts"].as_i64().unwrap();
    assert!(
        valid_until > now_ms() + 24 * 3600 * 1000,
        "valid for days: {keys}"
    );
    assert_eq!(keys["old_verify_keys"], json!({}));
    ruma::signatures::verify_json(&keys_of(&keys, "hs1.test"), &object(&keys))
        .expect("self-signature verifies");
    // A tampered copy does not.
    let mut tampered = keys.clone();
    tampered["valid_until_ts"] = json!(valid_until + 1);
    assert!(
        ruma::signatures::verify_json(&keys_of(&keys, "hs1.test"), &object(&tampered)).is_err()
    );
    // The same document on the client listener.
    let plain = fed.servers[0].get("/_matrix/key/v2/server").await.ok();
    assert_eq!(plain["verify_keys"], keys["verify_keys"]);
    fed.shutdown().await;
}

#[tokio::test]
async fn rotated_keys_stay_in_old_verify_keys() {
    let legacy = OldVerifyKey {
        key_id: "ed25519:legacy".to_owned(),
        key: "VGhpcyBpcyBub3QgYSByZWFsIGtleSwgb25seSBieXRlcw".to_owned(),
        expired_ts: 1_000,
    };
    let mut fed = Federation::start_with(2, |i, config| {
        if i == 0 {
            config.federation.old_verify_keys = vec![legacy.clone()];
        }
    })
    .await;
    let http = fed.http();
    let url = format!("{}/_matrix/key/v2/server", fed.federation_url(0));
    let before = get_json(&http, &url).await;
    let first_key = fed.servers[0].services().core.key.key_id.clone();
    assert_eq!(
        before["old_verify_keys"]["ed25519:legacy"]["expired_ts"],
        1_000
    );

    // hs2 learns hs1's first key through a notary query to itself.
    let hs2 = fed.servers[1].services();
    let hs1_name = ServerName::parse("hs1.test").unwrap();
    assert_eq!(
        hs2.federation
            .keys
            .notary_query(&hs1_name, None)
            .await
            .unwrap()
            .len(),
        1
    );

    // Rotate: a new signing key file, same database.
    std::fs::remove_file(&fed.servers[0].config.signing_key_path).unwrap();
    let rotated_at = now_ms();
    fed.servers[0].restart().await;
    let second_key = fed.servers[0].services().core.key.key_id.clone();
    assert_ne!(first_key, second_key);
    let after = get_json(&http, &url).await;
    assert!(after["verify_keys"][&second_key].is_object(), "{after}");
    assert!(after["verify_keys"][&first_key].is_null(), "{after}");
    let old = &after["old_verify_keys"][&first_key];
    assert_eq!(old["key"], before["verify_keys"][&first_key]["key"]);
    let expired = old["expired_ts"].as_i64().expect("expired_ts");
    assert!(expired >= rotated_at && expired <= now_ms(), "{after}");
    assert_eq!(
        after["old_verify_keys"]["ed25519:legacy"]["expired_ts"],
        1_000
    );
    ruma::signatures::verify_json(&keys_of(&after, "hs1.test"), &object(&after))
        .expect("signed with the new key");

    // A request signed with the new key verifies at hs2, which had cached only
    // the old one: the unknown key id makes it fetch again.
    let probe = Probe::start(fed.servers[1].services()).await;
    let key = &fed.servers[0].services().core.key;
    let resp = probe
        .send(key, "hs1.test", "hs2.test", Method::GET, "/p", None, None)
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    fed.shutdown().await;
}

#[tokio::test]
async fn notary_vouches_for_another_servers_keys() {
    let fed = Federation::start(2).await;
    let http = fed.http();
    let hs1_keys = get_json(
        &http,
        &format!("{}/_matrix/key/v2/server", fed.federation_url(0)),
    )
    .await;
    let hs2_keys = get_json(
        &http,
        &format!("{}/_matrix/key/v2/server", fed.federation_url(1)),
    )
    .await;
    let check = |answer: &Value| {
        assert_eq!(answer["server_name"], "hs1.test");
        assert_eq!(answer["verify_keys"], hs1_keys["verify_keys"]);
        ruma::signatures::verify_json(
            &keys_of(&hs1_keys, "hs1.test"),
            &signed_by_only(answer, "hs1.test"),
        )
        .expect("signed by hs1");
        ruma::signatures::verify_json(
            &keys_of(&hs2_keys, "hs2.test"),
            &signed_by_only(answer, "hs2.test"),
        )
        .expect("signed by the notary hs2");
    };
    let resp = http
        .post(format!("{}/_matrix/key/v2/query", fed.federation_url(1)))
        .json(
            &json!({ "server_keys": { "hs1.test": { "ed25519:whatever": {
            "minimum_valid_until_ts": now_ms() + 1000 } } } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let answers = body["server_keys"].as_array().expect("server_keys");
    assert_eq!(answers.len(), 1, "{body}");
    check(&answers[0]);

    // The GET form, answered from the cache this time.
    let url = format!("{}/_matrix/key/v2/query/hs1.test", fed.federation_url(1));
    let body = get_json(&http, &url).await;
    check(&body["server_keys"][0]);

    // The notary asked about itself answers with its own keys.
    let url = format!("{}/_matrix/key/v2/query/hs2.test", fed.federation_url(1));
    let body = get_json(&http, &url).await;
    assert_eq!(
        body["server_keys"][0]["verify_keys"],
        hs2_keys["verify_keys"]
    );

    // Bad input.
    let url = format!(
        "{}/_matrix/key/v2/query/not%20a%20server",
        fed.federation_url(1)
    );
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http
        .post(format!("{}/_matrix/key/v2/query", fed.federation_url(1)))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");
    fed.shutdown().await;
}

#[tokio::test]
async fn keys_come_through_a_notary_when_the_server_is_unreachable() {
    // hs3 reaches hs1 only through the notary hs2: its override for hs1 points
    // at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fed = Federation::start_with(3, |i, config| {
        if i == 2 {
            config
                .federation
                .overrides
                .insert("hs1.test".into(), closed.to_string());
            config.federation.trusted_key_servers = vec!["hs2.test".into()];
        }
    })
    .await;
    let probe = Probe::start(fed.servers[2].services()).await;
    let key = &fed.servers[0].services().core.key;
    let (status, body) = probe
        .send(
            key,
            "hs1.test",
            "hs3.test",
            Method::PUT,
            "/p",
            Some(json!({"x": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["origin"], "hs1.test");
    fed.shutdown().await;
}

/// The extractor under test, in a router of its own with a server's state.
struct Probe {
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Probe {
    async fn start(services: Arc<Services>) -> Self {
        let app = Router::new()
            .route(
                "/p",
                any(|req: FedRequest| async move {
                    Json(json!({ "origin": req.origin, "body": req.body }))
                }),
            )
            .with_state(services);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Probe {
            addr,
            http: reqwest::Client::new(),
        }
    }

    /// Sends `body` signed by `key` as `origin` for `destination`. `signed_body`
    /// is what the signature covers (default: `body`).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        key: &SigningKey,
        origin: &str,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        signed_body: Option<Value>,
    ) -> (StatusCode, Value) {
        let header = x_matrix(
            key,
            origin,
            destination,
            method.as_str(),
            path,
            signed_body.as_ref().or(body.as_ref()),
        );
        self.send_raw(method, path, &[header], body.map(|b| b.to_string()))
            .await
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[String],
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        for h in headers {
            req = req.header("authorization", h);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("probe request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn x_matrix(
    key: &SigningKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> String {
    let content = body.map(|b| CanonicalJsonValue::try_from(b.clone()).unwrap());
    let header = sign_request(
        &key.pair,
        method,
        uri,
        &ServerName::parse(origin).unwrap(),
        &ServerName::parse(destination).unwrap(),
        content.as_ref(),
    )
    .unwrap();
    header.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn signed_requests_verify_and_bad_ones_are_refused() {
    let fed = Federation::start_with(3, |i, config| {
        if i == 1 {
            config.federation.deny = vec!["hs3*".into()];
            config.federation.max_request_bytes = 64 * 1024;
        }
    })
    .await;
    let probe = Probe::start(fed.servers[1].services()).await;
    let hs1 = fed.servers[0].services();
    let key = &hs1.core.key;
    let body = json!({ "pdus": [], "edus": [{ "edu_type": "m.typing" }] });

    // Good: with a body, and without one.
    let (status, echoed) = probe
        .send(
            key,
            "hs1.test",
            "hs2.test",
            Method::PUT,
            "/p",
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{echoed}");
    assert_eq!(echoed, json!({ "origin": "hs1.test", "body": body }));
    let (status, echoed) = probe
        .send(key, "hs1.test", "hs2.test", Method::GET, "/p", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{echoed}");

    // The header as Synapse writes it: bare origin and destination, quoted key
    // and sig; and the same signature twice in two headers.
    let parsed = XMatrix::parse(x_matrix(key, "hs1.test", "hs2.test", "GET", "/p", None)).unwrap();
    let synapse_style = format!(
        "X-Matrix origin=hs1.test,destination=hs2.test,key=\"{}\",sig=\"{}\"",
        parsed.key,
        parsed.sig.encode()
    );
    let (status, _) = probe
        .send_raw(
            Method::GET,
            "/p",
            std::slice::from_ref(&synapse_style),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = probe
        .send_raw(
            Method::GET,
            "/p",
            &[synapse_style.clone(), synapse_style],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let refused = |(status, body): (StatusCode, Value), want: u16, errcode: &str| {
        assert_eq!(status.as_u16(), want, "{body}");
        assert_eq!(body["errcode"], errcode, "{body}");
    };
    // Forged: the signature covers another body.
    let forged = probe
        .send(
            key,
            "hs1.test",
            "hs2.test",
            Method::PUT,
            "/p",
            Some(json!({"a": 2})),
            Some(json!({"a": 1})),
        )
        .await;
    refused(forged, 401, "M_UNAUTHORIZED");
    // Another method or path than signed.
    let header = x_matrix(key, "hs1.test", "hs2.test", "GET", "/p?x=1", None);
    refused(
        probe.send_raw(Method::GET, "/p", &[header], None).await,
        401,
        "M_UNAUTHORIZED",
    );
    // For another destination.
    let wrong_dest = probe
        .send(key, "hs1.test", "hs3.test", Method::GET, "/p", None, None)
        .await;
    refused(wrong_dest, 401, "M_UNAUTHORIZED");
    // hs1's key claiming to be the allowed-but-different origin... hs2 itself.
    let spoofed = probe
        .send(key, "hs2.test", "hs2.test", Method::GET, "/p", None, None)
        .await;
    refused(spoofed, 401, "M_UNAUTHORIZED");
    // Headers naming two origins.
    let a = x_matrix(key, "hs1.test", "hs2.test", "GET", "/p", None);
    let b = a
        .replace("origin=\"hs1.test\"", "origin=\"hs2.test\"")
        .replace("origin=hs1.test", "origin=hs2.test");
    assert_ne!(a, b);
    refused(
        probe.send_raw(Method::GET, "/p", &[a, b], None).await,
        401,
        "M_UNAUTHORIZED",
    );
    // Missing or malformed.
    refused(
        probe.send_raw(Method::GET, "/p", &[], None).await,
        401,
        "M_UNAUTHORIZED",
    );
    let bearer = vec!["Bearer abc".to_owned()];
    refused(
        probe.send_raw(Method::GET, "/p", &bearer, None).await,
        401,
        "M_UNAUTHORIZED",
    );
    let broken = vec!["X-Matrix origin=hs1.test,key=\"ed25519:x\"".to_owned()];
    refused(
        probe.send_raw(Method::GET, "/p", &broken, None).await,
        401,
        "M_UNAUTHORIZED",
    );
    let hs3_key = &fed.servers[2].services().core.key;
    // hs3's key, claiming to be hs1: not one of hs1's keys.
    let impostor = probe
        .send(
            hs3_key,
            "hs1.test",
            "hs2.test",
            Method::GET,
            "/p",
            None,
            None,
        )
        .await;
    refused(impostor, 401, "M_UNAUTHORIZED");
    // Denied by hs2's deny list, though correctly signed by hs3.
    let denied = probe
        .send(
            hs3_key,
            "hs3.test",
            "hs2.test",
            Method::GET,
            "/p",
            None,
            None,
        )
        .await;
    refused(denied, 403, "M_FORBIDDEN");
    // Too large, and not JSON.
    let big = json!({ "blob": "x".repeat(100 * 1024) });
    let too_large = probe
        .send(
            key,
            "hs1.test",
            "hs2.test",
            Method::PUT,
            "/p",
            Some(big),
            None,
        )
        .await;
    refused(too_large, 413, "M_TOO_LARGE");
    let header = x_matrix(key, "hs1.test", "hs2.test", "PUT", "/p", None);
    let not_json = probe
        .send_raw(Method::PUT, "/p", &[header], Some("{oops".into()))
        .await;
    refused(not_json, 400, "M_NOT_JSON");
    fed.shutdown().await;
}

#[tokio::test]
async fn client_reaches_peers_and_classifies_failures() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // Accepts connections and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fed = Federation::start_with(2, |i, config| {
        if i == 0 {
            let hs2 = config.federation.overrides["hs2.test"].clone();
            let o = &mut config.federation.overrides;
            o.insert("down.test".into(), closed.to_string());
            o.insert("silent.test".into(), silent_addr.to_string());
            // hs2's listener, whose certificate is not valid for this name.
            o.insert("impostor.test".into(), hs2);
            config.federation.request_timeout_ms = 1500;
            config.federation.deny = vec!["evil.test".into()];
        }
    })
    .await;
    let client = &fed.servers[0].services().federation.client;
    let name = |s| ServerName::parse(s).unwrap();

    let keys = client
        .request(
            &name("hs2.test"),
            Method::GET,
            "/_matrix/key/v2/server",
            None,
        )
        .await
        .expect("hs1 -> hs2 over TLS");
    assert_eq!(keys["server_name"], "hs2.test");
    let raw = client
        .request_raw(
            &name("hs2.test"),
            Method::GET,
            "/_matrix/federation/v1/version",
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200);

    let err = client
        .request(
            &name("hs2.test"),
            Method::GET,
            "/_matrix/federation/v1/nope",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FederationError::Remote { status: 404, errcode, .. } if errcode == "M_UNRECOGNIZED"),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    for (server, want) in [
        ("down.test", "unreachable"),
        ("impostor.test", "unreachable"),
        ("silent.test", "timeout"),
    ] {
        let err = client
            .request(&name(server), Method::GET, "/_matrix/key/v2/server", None)
            .await
            .unwrap_err();
        let got = match err {
            FederationError::Unreachable { .. } => "unreachable",
            FederationError::Timeout { .. } => "timeout",
            ref other => panic!("{server}: {other:?}"),
        };
        assert_eq!(got, want, "{server}: {err}");
        assert!(err.is_retryable());
    }
    let err = client
        .request(&name("evil.test"), Method::GET, "/", None)
        .await
        .unwrap_err();
    assert!(matches!(err, FederationError::Denied { .. }), "{err:?}");
    fed.shutdown().await;
}
