//! Delivery to push gateways (Push Gateway API, `POST /_matrix/push/v1/notify`).
//!
//! The queue is the `push_queue` table, so a restart loses nothing: a row is
//! deleted only once the gateway answered 2xx (or rejected the pushkey, which
//! removes the pusher, or the row outlived `push.give_up_after_ms`). A failed
//! attempt (network error, 5xx or 429) is retried after
//! `push.retry_initial_ms`, doubling up to `push.retry_max_ms`. Before an
//! attempt the row is leased (its next attempt moved past the request
//! timeout), so several instances sharing a database never send it twice at
//! once.

use std::time::Duration;

use futures::StreamExt;
use ruma::OwnedRoomId;
use serde_json::{json, Map, Value};

use super::PushService;
use crate::{error::Result, storage::QueuedPush, util::now_ms};

/// Deliveries fetched per round, and sent concurrently at most.
const ROUND: usize = 200;
const CONCURRENCY: usize = 32;

/// How long to wait before retrying a delivery that has failed `attempts`
/// times before this failure: `retry_initial_ms`, doubling with each
/// failure, at most `retry_max_ms`.
pub(super) fn backoff_ms(cfg: &crate::config::Push, attempts: i64) -> u64 {
    cfg.retry_initial_ms
        .saturating_mul(1u64 << attempts.clamp(0, 20))
        .min(cfg.retry_max_ms)
}

/// What became of one attempt.
enum Attempt {
    Delivered,
    Rejected,
    Retry(String),
    Drop(String),
}

impl PushService {
    pub(super) async fn run_delivery(&self) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let store = &self.core.storage.push;
            let now = now_ms();
            match store.due_pushes(now, ROUND).await {
                Ok(due) if !due.is_empty() => {
                    futures::stream::iter(due)
                        .for_each_concurrent(CONCURRENCY, |q| self.attempt(q))
                        .await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the push queue failed"),
            }
            let wait_ms = match store.next_push_due().await {
                Ok(Some(due)) => (due - now).clamp(10, 5_000),
                _ => 5_000,
            };
            tokio::select! {
                _ = self.delivery_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Leases one queued delivery, sends it, and records the outcome.
    async fn attempt(&self, q: QueuedPush) {
        let cfg = &self.core.config.push;
        let store = &self.core.storage.push;
        let now = now_ms();
        let lease = now + 2 * cfg.gateway_timeout_ms as i64;
        match store.lease_push(&q, q.next_attempt_ts, lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "leasing a push failed");
                return;
            }
        }
        let outcome = match self.send(&q).await {
            Ok(o) => o,
            Err(e) => Attempt::Retry(e.to_string()),
        };
        let result = match outcome {
            Attempt::Delivered => store.push_done(&q).await,
            Attempt::Rejected => {
                tracing::info!(user_id = %q.pusher.user_id, app_id = %q.pusher.app_id,
                    "gateway rejected the pushkey; removing the pusher");
                store
                    .delete_pusher(&q.pusher.user_id, &q.pusher.app_id, &q.pusher.pushkey)
                    .await
                    .map(|_| ())
            }
            Attempt::Drop(why) => {
                tracing::warn!(user_id = %q.pusher.user_id, %why, "dropping a push");
                store.push_done(&q).await
            }
            Attempt::Retry(why) if now - q.created_ts > cfg.give_up_after_ms as i64 => {
                tracing::warn!(user_id = %q.pusher.user_id, %why, "giving up on a push");
                store.push_done(&q).await
            }
            Attempt::Retry(why) => {
                let backoff = backoff_ms(cfg, q.attempts);
                tracing::debug!(user_id = %q.pusher.user_id, %why, backoff, "push failed; will retry");
                store
                    .push_retry(&q, q.attempts + 1, now_ms() + backoff as i64)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "updating the push queue failed");
        }
    }

    async fn send(&self, q: &QueuedPush) -> Result<Attempt> {
        let data: Value = serde_json::from_str(&q.pusher.data).unwrap_or_else(|_| json!({}));
        let Some(url) = data["url"].as_str() else {
            return Ok(Attempt::Drop("pusher has no url".into()));
        };
        let body = json!({"notification": self.notification(q, &data).await?});
        let response = match self.http.post(url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(e.to_string())),
        };
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Ok(Attempt::Retry(format!("gateway answered {status}")));
        }
        if !status.is_success() {
            return Ok(Attempt::Drop(format!("gateway answered {status}")));
        }
        let answer: Value = response.json().await.unwrap_or_else(|_| json!({}));
        let rejected = answer["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(&q.pusher.pushkey)));
        Ok(if rejected {
            Attempt::Rejected
        } else {
            Attempt::Delivered
        })
    }

    /// The `notification` object: everything for the full format, only ids and
    /// counts for `event_id_only`.
    async fn notification(&self, q: &QueuedPush, data: &Value) -> Result<Value> {
        let actions: Vec<Value> = serde_json::from_str(&q.actions).unwrap_or_default();
        let mut tweaks = Map::new();
        for a in &actions {
            if let Some(name) = a["set_tweak"].as_str() {
                let value = a.get("value").cloned().unwrap_or(match name {
                    "highlight" => json!(true),
                    _ => Value::Null,
                });
                tweaks.insert(name.to_owned(), value);
            }
        }
        let prio = if tweaks.contains_key("sound") || tweaks.get("highlight") == Some(&json!(true))
        {
            "high"
        } else {
            "low"
        };
        let mut device_data = data.as_object().cloned().unwrap_or_default();
        device_data.remove("url");
        let unread = self
            .core
            .storage
            .push
            .unread_total(&q.pusher.user_id)
            .await?;
        let mut n = json!({
            "event_id": q.event_id,
            "room_id": q.room_id,
            "prio": prio,
            "counts": {"unread": unread},
            "devices": [{
                "app_id": q.pusher.app_id,
                "pushkey": q.pusher.pushkey,
                "pushkey_ts": q.pusher.pushkey_ts / 1000,
                "data": device_data,
                "tweaks": tweaks,
            }],
        });
        if data["format"] == "event_id_only" {
            return Ok(n);
        }
        let Some(ev) = self.core.storage.timeline.get_event(&q.event_id).await? else {
            return Ok(n);
        };
        let event: Value = serde_json::from_str(&ev.pdu_json)?;
        let sender = event["sender"].as_str().unwrap_or_default();
        n["type"] = event["type"].clone();
        n["sender"] = json!(sender);
        n["content"] = event["content"].clone();
        n["user_is_target"] = json!(event["state_key"].as_str() == Some(&q.pusher.user_id));
        if let Ok(room_id) = OwnedRoomId::try_from(q.room_id.as_str()) {
            if let Some(room) = self.rooms.get(&room_id).await? {
                let st = room.read().await;
                let state_str = |kind: &str, key: &str, field: &str| {
                    st.state_event(kind, key).and_then(|p| p.content_str(field))
                };
                if let Some(name) = state_str("m.room.name", "", "name") {
                    n["room_name"] = json!(name);
                }
                if let Some(alias) = state_str("m.room.canonical_alias", "", "alias") {
                    n["room_alias"] = json!(alias);
                }
                if let Some(name) = state_str("m.room.member", sender, "displayname") {
                    n["sender_display_name"] = json!(name);
                }
            }
        }
        Ok(n)
    }
}
