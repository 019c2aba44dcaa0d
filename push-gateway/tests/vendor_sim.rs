//! The simulators refuse what the real vendors refuse: forged or missing
//! credentials never count as deliveries, so the other tests' "delivered"
//! really means "authenticated correctly".

mod common;

use push_gateway::{
    vendor_sim::{ApnsSim, FcmSim},
    AppConfig, Config,
};
use serde_json::{json, Value};

#[tokio::test]
async fn fcm_refuses_assertions_signed_with_another_key() {
    let (real, other) = tokio::join!(FcmSim::start(), FcmSim::start());
    let (real, other) = (real.unwrap(), other.unwrap());
    // The real account's identity, the other account's private key.
    let mut forged: Value = serde_json::from_str(real.service_account_json()).unwrap();
    let other_sa: Value = serde_json::from_str(other.service_account_json()).unwrap();
    forged["private_key"] = other_sa["private_key"].clone();
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("forged.json");
    std::fs::write(&sa, forged.to_string()).unwrap();
    let AppConfig::Fcm(mut app) = real.app_config(dir.path()).unwrap() else {
        unreachable!()
    };
    app.service_account = sa;
    let mut config = Config::from_toml(
        "listen = \"127.0.0.1:0\"\nmax_attempts = 2\nretry_base_ms = 10",
        std::iter::empty(),
    )
    .unwrap();
    config.apps.insert("im.forged".into(), AppConfig::Fcm(app));
    let gateway = push_gateway::start(config).await.unwrap();

    let body = json!({ "notification": { "event_id": "$f", "devices": [{ "app_id": "im.forged", "pushkey": "k" }] } });
    let response = reqwest::Client::new()
        .post(gateway.notify_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(real.delivered().is_empty());
    assert_eq!(real.token_exchanges(), 0);
    assert_eq!(real.auth_failures(), 2);
}

#[tokio::test]
async fn fcm_refuses_unknown_bearer_tokens() {
    let fcm = FcmSim::start().await.unwrap();
    let url = format!(
        "{}/v1/projects/{}/messages:send",
        fcm.api_url(),
        fcm.project_id()
    );
    let message = json!({ "message": { "token": "k", "data": { "a": "b" } } });
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth("ya29.made-up")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert!(fcm.delivered().is_empty());
}

#[tokio::test]
async fn apns_refuses_provider_tokens_signed_with_another_key() {
    let (real, other) = tokio::join!(ApnsSim::start("im.app"), ApnsSim::start("im.app"));
    let (real, other) = (real.unwrap(), other.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let AppConfig::Apns(mut app) = real.app_config(dir.path()).unwrap() else {
        unreachable!()
    };
    let other_key = dir.path().join("other.p8");
    std::fs::write(&other_key, other.key_pem()).unwrap();
    app.key_path = other_key;
    let mut config = Config::from_toml(
        "listen = \"127.0.0.1:0\"\nmax_attempts = 2\nretry_base_ms = 10",
        std::iter::empty(),
    )
    .unwrap();
    config.apps.insert("im.forged".into(), AppConfig::Apns(app));
    let gateway = push_gateway::start(config).await.unwrap();

    let body = json!({ "notification": { "event_id": "$f", "devices": [{ "app_id": "im.forged", "pushkey": common::apns_token(1) }] } });
    let response = reqwest::Client::new()
        .post(gateway.notify_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(real.delivered().is_empty());
    assert_eq!(real.auth_failures(), 2);
}

#[tokio::test]
async fn apns_requires_http2_and_a_provider_token() {
    let apns = ApnsSim::start("im.app").await.unwrap();
    let ca = reqwest::Certificate::from_pem(apns.ca_pem().as_bytes()).unwrap();
    let url = format!("{}/3/device/{}", apns.api_url(), common::apns_token(1));
    let payload = json!({ "aps": { "alert": "hi" } });
    let h2 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(&url)
        .header("apns-topic", "im.app")
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "MissingProviderToken"
    );
    assert!(apns.delivered().is_empty());
}

/// A provider token for `apns`, signed with its key (`iat` = `iat`).
fn provider_token(apns: &ApnsSim, iat: u64) -> String {
    use base64::{
        engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine,
    };
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let body: String = apns
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        part(json!({ "alg": "ES256", "kid": apns.key_id() })),
        part(json!({ "iss": apns.team_id(), "iat": iat }))
    );
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test]
async fn apns_allows_one_provider_token_per_connection() {
    let apns = ApnsSim::start("im.app").await.unwrap();
    let ca = reqwest::Certificate::from_pem(apns.ca_pem().as_bytes()).unwrap();
    let connection = || {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .http2_prior_knowledge()
            .build()
            .unwrap()
    };
    let url = format!("{}/3/device/{}", apns.api_url(), common::apns_token(1));
    let send = |client: &reqwest::Client, token: &str| {
        client
            .post(&url)
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", "im.app")
            .header("apns-push-type", "alert")
            .json(&json!({ "aps": { "alert": "hi" } }))
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (first, second) = (provider_token(&apns, now - 5), provider_token(&apns, now));
    let one = connection();
    assert_eq!(send(&one, &first).await.unwrap().status(), 200);
    assert_eq!(send(&one, &first).await.unwrap().status(), 200);
    // Another token on the same connection minutes later: throttled.
    let response = send(&one, &second).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "TooManyProviderTokenUpdates"
    );
    // A new connection (another gateway instance, or one restarted) may use its own.
    let two = connection();
    assert_eq!(send(&two, &second).await.unwrap().status(), 200);
    assert_eq!(apns.delivered().len(), 3);
    assert_eq!(apns.distinct_provider_tokens(), 2);
}

#[tokio::test]
async fn two_gateway_instances_share_an_apns_key() {
    let apns = ApnsSim::start("im.app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let mut config = Config::from_toml("listen = \"127.0.0.1:0\"", std::iter::empty()).unwrap();
        config
            .apps
            .insert("im.app".into(), apns.app_config(dir.path()).unwrap());
        gateways.push(push_gateway::start(config).await.unwrap());
    }
    let client = reqwest::Client::new();
    for (i, gateway) in gateways.iter().enumerate() {
        let body = json!({ "notification": { "event_id": format!("$g{i}"),
            "devices": [{ "app_id": "im.app", "pushkey": common::apns_token(i as u32) }] } });
        let response = client
            .post(gateway.notify_url())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(apns.delivered().len(), 2);
    assert_eq!(apns.distinct_provider_tokens(), 2);
    assert_eq!(apns.auth_failures(), 0);
}
