//! Shared set-up: a gateway started in-process with one FCM app and one APNs
//! app, each pointing at its local vendor simulator.
#![allow(dead_code)]

use std::time::Duration;

use push_gateway::{
    vendor_sim::{ApnsSim, FcmSim},
    AppConfig, Config, Gateway,
};
use serde_json::{json, Value};

pub const FCM_APP: &str = "im.test.android";
pub const APNS_APP: &str = "im.test.ios";

pub struct Env {
    pub fcm: FcmSim,
    pub apns: ApnsSim,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts both simulators and a gateway; `tweak` adjusts the config first.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (fcm, apns) = tokio::join!(FcmSim::start(), ApnsSim::start(APNS_APP));
    let (fcm, apns) = (fcm.unwrap(), apns.unwrap());
    let mut config = Config::from_toml(
        "listen = \"127.0.0.1:0\"\nretry_base_ms = 20\nvendor_timeout_ms = 5000",
        std::iter::empty(),
    )
    .unwrap();
    config
        .apps
        .insert(FCM_APP.into(), fcm.app_config(dir.path()).unwrap());
    config
        .apps
        .insert(APNS_APP.into(), apns.app_config(dir.path()).unwrap());
    tweak(&mut config);
    let gateway = push_gateway::start(config).await.unwrap();
    Env {
        fcm,
        apns,
        gateway,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

/// Sets `max_concurrency` of every app.
pub fn limit_concurrency(config: &mut Config, limit: usize) {
    for app in config.apps.values_mut() {
        match app {
            AppConfig::Fcm(c) => c.max_concurrency = limit,
            AppConfig::Apns(c) => c.max_concurrency = limit,
        }
    }
}

/// A notification about a message, in the spec's example shape.
pub fn notification(event_id: &str, devices: Value) -> Value {
    json!({ "notification": {
        "event_id": event_id,
        "room_id": "!slw48wfj34rtnrf:example.com",
        "type": "m.room.message",
        "sender": "@exampleuser:matrix.org",
        "sender_display_name": "Major Tom",
        "room_name": "Mission Control",
        "prio": "high",
        "content": { "msgtype": "m.text", "body": "I'm floating in a most peculiar way." },
        "counts": { "unread": 2, "missed_calls": 1 },
        "devices": devices,
    }})
}

pub fn device(app_id: &str, pushkey: &str) -> Value {
    json!({ "app_id": app_id, "pushkey": pushkey, "pushkey_ts": 12345678, "data": {}, "tweaks": { "sound": "bing" } })
}

/// A hex APNs device token, unique per `n`.
pub fn apns_token(n: u32) -> String {
    format!("{:064x}", 0xabcdef00u64 + n as u64)
}

impl Env {
    /// POSTs `body` to /notify; returns status and JSON body.
    pub async fn notify(&self, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.gateway.notify_url())
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.gateway.addr);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
