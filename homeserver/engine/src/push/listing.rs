//! `GET /notifications`: the events a user was notified about, newest first.

use serde_json::{json, Value};

use super::PushService;
use crate::{
    error::{Error, Result},
    events::client_format::to_client,
    util::now_ms,
};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

impl PushService {
    /// `from` is a `next_token` of an earlier page; `only` may be `highlight`.
    pub async fn notifications(
        &self,
        user_id: &str,
        from: Option<&str>,
        limit: Option<u64>,
        only: Option<&str>,
    ) -> Result<Value> {
        let before = from
            .map(|f| {
                f.parse::<i64>()
                    .map_err(|_| Error::invalid_param("Invalid `from` token."))
            })
            .transpose()?;
        let limit = limit
            .map(|l| (l as usize).clamp(1, MAX_LIMIT))
            .unwrap_or(DEFAULT_LIMIT);
        let only_highlight = only.is_some_and(|o| o.contains("highlight"));
        // One more than asked tells whether another page exists.
        let mut records = self
            .core
            .storage
            .push
            .notifications(user_id, before, limit + 1, only_highlight)
            .await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let now = now_ms();
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            let Some(ev) = self.core.storage.timeline.get_event(&r.event_id).await? else {
                continue;
            };
            out.push(json!({
                "actions": serde_json::from_str::<Value>(&r.actions).unwrap_or_else(|_| json!([])),
                "event": to_client(&ev, None, now, false),
                "read": r.read,
                "room_id": r.room_id,
                "ts": r.ts,
            }));
        }
        let mut body = json!({"notifications": out});
        if more {
            if let Some(last) = records.last() {
                body["next_token"] = json!(last.stream_pos.to_string());
            }
        }
        Ok(body)
    }
}
