//! The end-to-end-encryption parts of a sync response: to-device messages,
//! device-list changes, one-time-key counts and unused fallback key types.
//!
//! Kept apart from the sync engine so the key services own their sync output.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::{
    core::Core, error::Result, keys, storage::StreamPos, sync::notifier::Sections, to_device,
};

/// What `/sync` adds for a device's end-to-end encryption.
pub struct E2eeSections {
    pub to_device: Vec<Value>,
    pub device_lists_changed: Vec<String>,
    pub device_lists_left: Vec<String>,
    pub one_time_keys_count: Value,
    pub unused_fallback_key_types: Vec<String>,
}

impl E2eeSections {
    /// Whether anything here should end a long-poll early.
    pub fn has_updates(&self) -> bool {
        !self.to_device.is_empty()
            || !self.device_lists_changed.is_empty()
            || !self.device_lists_left.is_empty()
    }
}

/// Computes the sections for `device_id` of `user_id` between `since` and `upto`.
///
/// To-device messages at or before `since` are deleted here: the device
/// asking from `since` proves it received the response that carried them.
/// An initial sync (no `since`) reports no device-list changes: the client
/// queries every key it needs from scratch.
pub async fn sections(
    core: &Arc<Core>,
    user_id: &str,
    device_id: &str,
    since: Option<StreamPos>,
    upto: StreamPos,
) -> Result<E2eeSections> {
    let changed = |sections| since.is_none_or(|s| core.journal.changed(user_id, sections, s));
    let to_device = if changed(Sections::TO_DEVICE) {
        to_device::deliver(core, user_id, device_id, since, upto).await?
    } else {
        // Messages delivered at or before `since` stay in the inbox until
        // the next delivery deletes them.
        Vec::new()
    };
    let (changed, left) = match since {
        Some(since) if changed(Sections::DEVICE_LISTS) => {
            keys::device_lists::delta(core, user_id, since, upto).await?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let (counts, fallbacks) = keys::key_counts(core, user_id, device_id).await?;
    Ok(E2eeSections {
        to_device,
        device_lists_changed: changed,
        device_lists_left: left,
        one_time_keys_count: json!(counts),
        unused_fallback_key_types: fallbacks,
    })
}
