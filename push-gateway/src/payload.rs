//! The notification a homeserver sends (Push Gateway API `/notify` body) and
//! its translation into what FCM and APNs deliver to the device.
//!
//! A pusher created with `data.format = "event_id_only"` gets a data-only
//! (FCM) or background (APNs) push: the app fetches the event itself, so no
//! message text passes through the vendor. Otherwise the push carries an alert
//! with the sender and, for plain messages, the body.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `POST /_matrix/push/v1/notify` request body.
#[derive(Debug, Deserialize)]
pub struct NotifyRequest {
    pub notification: Notification,
}

#[derive(Debug, Deserialize)]
pub struct Notification {
    pub event_id: Option<String>,
    pub room_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub sender: Option<String>,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub user_is_target: Option<bool>,
    pub prio: Option<Priority>,
    pub content: Option<Map<String, Value>>,
    #[serde(default)]
    pub counts: Counts,
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Low,
}

#[derive(Debug, Default, Deserialize)]
pub struct Counts {
    pub unread: Option<u64>,
    pub missed_calls: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Device {
    pub app_id: String,
    pub pushkey: String,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub tweaks: Map<String, Value>,
}

impl Device {
    /// Whether the pusher asked for `event_id_only` (no content through the vendor).
    pub fn event_id_only(&self) -> bool {
        self.data.get("format").and_then(Value::as_str) == Some("event_id_only")
    }
}

/// Longest message excerpt put in an alert; APNs payloads are limited to 4 KB.
const MAX_BODY_CHARS: usize = 500;

impl Notification {
    fn high_priority(&self) -> bool {
        self.prio != Some(Priority::Low)
    }

    fn sender_name(&self) -> Option<&str> {
        self.sender_display_name
            .as_deref()
            .or(self.sender.as_deref())
    }

    /// Alert title and body for a notification about an event.
    pub fn alert_text(&self) -> (String, String) {
        let sender = self.sender_name().unwrap_or("Someone");
        let title = self
            .room_name
            .clone()
            .or_else(|| self.room_alias.clone())
            .unwrap_or_else(|| sender.to_string());
        let content = self.content.as_ref();
        let text = |key: &str| content.and_then(|c| c.get(key)).and_then(Value::as_str);
        let body = match self.event_type.as_deref() {
            Some("m.room.message") => match text("body") {
                Some(body) => format!("{sender}: {}", truncate(body, MAX_BODY_CHARS)),
                None => format!("{sender} sent a message"),
            },
            Some("m.room.encrypted") => format!("{sender} sent an encrypted message"),
            Some("m.room.member") if self.user_is_target == Some(true) => {
                if text("membership") == Some("invite") {
                    format!("{sender} invited you")
                } else {
                    format!("{sender} changed your membership")
                }
            }
            Some("m.call.invite") => format!("{sender} is calling"),
            _ => format!("New activity from {sender}"),
        };
        (title, body)
    }

    /// FCM HTTP v1 `message` for one device. FCM `data` values must be strings.
    pub fn fcm_message(&self, device: &Device) -> Value {
        let mut data = BTreeMap::new();
        fn put(data: &mut BTreeMap<String, String>, k: &str, v: &Option<String>) {
            if let Some(v) = v {
                data.insert(k.to_string(), v.clone());
            }
        }
        put(&mut data, "event_id", &self.event_id);
        put(&mut data, "room_id", &self.room_id);
        if let Some(unread) = self.counts.unread {
            data.insert("unread_count".into(), unread.to_string());
        }
        if let Some(calls) = self.counts.missed_calls {
            data.insert("missed_calls".into(), calls.to_string());
        }
        data.insert(
            "prio".into(),
            if self.high_priority() { "high" } else { "low" }.into(),
        );
        let mut message = json!({
            "token": device.pushkey,
            "android": { "priority": if self.high_priority() { "HIGH" } else { "NORMAL" } },
        });
        if !device.event_id_only() {
            put(&mut data, "type", &self.event_type);
            put(&mut data, "sender", &self.sender);
            put(&mut data, "sender_display_name", &self.sender_display_name);
            put(&mut data, "room_name", &self.room_name);
            put(&mut data, "room_alias", &self.room_alias);
            if self.event_id.is_some() {
                let (title, body) = self.alert_text();
                message["notification"] = json!({ "title": title, "body": body });
            }
        }
        message["data"] = json!(data);
        json!({ "message": message })
    }

    /// APNs JSON payload plus the `apns-push-type` and `apns-priority` headers.
    pub fn apns_payload(&self, device: &Device) -> (Value, &'static str, u8) {
        let mut aps = Map::new();
        if let Some(unread) = self.counts.unread {
            aps.insert("badge".into(), json!(unread));
        }
        let alert = self.event_id.is_some() && !device.event_id_only();
        if alert {
            let (title, body) = self.alert_text();
            aps.insert("alert".into(), json!({ "title": title, "body": body }));
            if let Some(sound) = device.tweaks.get("sound").and_then(Value::as_str) {
                aps.insert("sound".into(), json!(sound));
            }
            aps.insert("mutable-content".into(), json!(1));
        } else {
            aps.insert("content-available".into(), json!(1));
        }
        let mut payload = Map::new();
        payload.insert("aps".into(), Value::Object(aps));
        for (key, value) in [("event_id", &self.event_id), ("room_id", &self.room_id)] {
            if let Some(value) = value {
                payload.insert(key.into(), json!(value));
            }
        }
        // Background pushes must use priority 5; alerts use 10 unless low-priority.
        let (push_type, priority) = match (alert, self.high_priority()) {
            (true, true) => ("alert", 10),
            (true, false) => ("alert", 5),
            (false, _) => ("background", 5),
        };
        (Value::Object(payload), push_type, priority)
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(format: Option<&str>) -> Notification {
        let data = format.map(|f| json!({ "format": f })).unwrap_or(json!({}));
        serde_json::from_value(json!({
            "event_id": "$e", "room_id": "!r:x", "type": "m.room.message",
            "sender": "@a:x", "sender_display_name": "Alice", "room_name": "Ops",
            "content": { "msgtype": "m.text", "body": "hi" },
            "counts": { "unread": 3 },
            "devices": [{ "app_id": "a", "pushkey": "k", "data": data, "tweaks": { "sound": "bing" } }]
        }))
        .unwrap()
    }

    #[test]
    fn full_format_gives_alerts() {
        let n = notification(None);
        let fcm = n.fcm_message(&n.devices[0]);
        assert_eq!(fcm["message"]["notification"]["body"], "Alice: hi");
        assert_eq!(fcm["message"]["data"]["unread_count"], "3");
        let (apns, push_type, prio) = n.apns_payload(&n.devices[0]);
        assert_eq!((push_type, prio), ("alert", 10));
        assert_eq!(apns["aps"]["alert"]["title"], "Ops");
        assert_eq!(apns["aps"]["sound"], "bing");
        assert_eq!(apns["aps"]["badge"], 3);
    }

    #[test]
    fn event_id_only_is_data_only() {
        let n = notification(Some("event_id_only"));
        let fcm = n.fcm_message(&n.devices[0]);
        assert!(fcm["message"].get("notification").is_none());
        assert!(fcm["message"]["data"].get("sender").is_none());
        assert_eq!(fcm["message"]["data"]["event_id"], "$e");
        let (apns, push_type, prio) = n.apns_payload(&n.devices[0]);
        assert_eq!((push_type, prio), ("background", 5));
        assert_eq!(apns["aps"]["content-available"], 1);
        assert!(apns["aps"].get("alert").is_none());
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
