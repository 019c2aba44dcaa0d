//! Send-to-device messaging: Olm-encrypted key shares, verification requests
//! and the like, addressed to one device (or `*`, all of a user's devices).
//!
//! Each message lands in the target device's inbox at a global stream
//! position and is delivered by `/sync`. It is deleted only when the device
//! syncs again with a token at or past that position, which proves the
//! earlier response arrived: a crash or a dropped response loses nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    core::Core,
    error::{Error, Result},
    storage::{StreamPos, ToDeviceMessage},
    sync::notifier::{Sections, WakeTarget},
};

/// The largest content one to-device message may carry (the federation EDU
/// limit, so every message could later cross to another server).
pub const MAX_MESSAGE_BYTES: usize = 65_536;

/// The device id that addresses all of a user's devices.
const ALL_DEVICES: &str = "*";

#[derive(Clone)]
pub struct ToDeviceService {
    core: Arc<Core>,
}

impl ToDeviceService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// `PUT /sendToDevice/{eventType}/{txnId}`: `messages` is
    /// `user -> device id or "*" -> content`. A repeated `txn_id` from the
    /// same device is accepted and ignored.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &str,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<()> {
        if event_type.is_empty() || event_type.len() > 255 {
            return Err(Error::invalid_param("Invalid event type."));
        }
        // Check everything before storing anything.
        for content in messages.values().flat_map(|d| d.values()) {
            if !content.is_object() {
                return Err(Error::bad_json("Message content must be an object."));
            }
            if content.to_string().len() > MAX_MESSAGE_BYTES {
                return Err(Error::too_large(format!(
                    "A to-device message may carry at most {MAX_MESSAGE_BYTES} bytes."
                )));
            }
        }
        let mut out = Vec::new();
        let mut recipients = BTreeSet::new();
        let mut remote: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> =
            BTreeMap::new();
        for (user_id, devices) in &messages {
            let Ok(parsed) = UserId::parse(user_id.as_str()) else {
                return Err(Error::invalid_param(format!("Invalid user id {user_id}.")));
            };
            if !self.core.is_local(parsed.server_name()) {
                // Only our own users' messages travel to other servers.
                if self.core.is_local(sender.server_name()) {
                    remote
                        .entry(parsed.server_name().to_string())
                        .or_default()
                        .insert(user_id.clone(), devices.clone());
                }
                continue;
            }
            for (device_id, content) in self.resolve_devices(user_id, devices).await? {
                out.push(ToDeviceMessage {
                    user_id: user_id.clone(),
                    device_id,
                    sender: sender.to_string(),
                    event_type: event_type.to_owned(),
                    content: content.to_string(),
                });
                recipients.insert(user_id.clone());
            }
        }
        let txn_key = serde_json::to_string(&[event_type, txn_id])?;
        let pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .to_device
            .send_to_device(sender.as_str(), sender_device, &txn_key, pos, &out)
            .await;
        let wake = match result {
            Ok(true) => recipients
                .into_iter()
                .map(|u| WakeTarget::Changed(u, Sections::TO_DEVICE))
                .collect(),
            _ => Vec::new(),
        };
        self.core.complete(pos, wake);
        if matches!(result, Ok(true)) {
            for (server, messages) in remote {
                let content = serde_json::json!({
                    "sender": sender,
                    "type": event_type,
                    "message_id": format!("{sender_device}:{txn_id}"),
                    "messages": messages,
                });
                if let Err(e) = self
                    .core
                    .outbound
                    .send_edu([server.as_str()], "m.direct_to_device", content)
                    .await
                {
                    tracing::warn!(error = %e, "cannot queue to-device messages for federation");
                }
            }
        }
        result.map(|_| ())
    }

    /// Expands `*` to the user's devices; named devices must exist. A named
    /// device's own content wins over the wildcard's.
    async fn resolve_devices<'a>(
        &self,
        user_id: &str,
        devices: &'a BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, &'a Value>> {
        let existing: BTreeSet<String> = self
            .core
            .storage
            .accounts
            .list_devices(user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        let mut out = BTreeMap::new();
        if let Some(content) = devices.get(ALL_DEVICES) {
            out.extend(existing.iter().map(|d| (d.clone(), content)));
        }
        for (device_id, content) in devices {
            if device_id != ALL_DEVICES && existing.contains(device_id) {
                out.insert(device_id.clone(), content);
            }
        }
        Ok(out)
    }
}

/// The device's to-device events for a sync from `since` up to `upto`.
/// Messages at or before `since` were delivered by the response that handed
/// out `since`, so they are deleted now.
pub async fn deliver(
    core: &Core,
    user_id: &str,
    device_id: &str,
    since: Option<StreamPos>,
    upto: StreamPos,
) -> Result<Vec<Value>> {
    let store = &core.storage.to_device;
    let inbox = store.inbox(user_id, device_id, upto).await?;
    let (delivered, fresh): (Vec<_>, Vec<_>) = inbox
        .into_iter()
        .partition(|m| since.is_some_and(|s| m.stream_pos <= s));
    if let (Some(since), false) = (since, delivered.is_empty()) {
        store
            .delete_inbox(user_id, device_id, since.min(upto))
            .await?;
    }
    Ok(fresh
        .into_iter()
        .map(|m| {
            json!({
                "sender": m.sender,
                "type": m.event_type,
                "content": serde_json::from_str::<Value>(&m.content).unwrap_or_else(|_| json!({})),
            })
        })
        .collect())
}
