//! Device-list tracking: who must re-query whose keys.
//!
//! A user's device list "changes" when one of their devices uploads new
//! identity keys or is deleted, or their cross-signing keys or signatures
//! change. Each change is a row at a global stream position, so `/sync` and
//! `/keys/changes` report it between two tokens like any other update. A user
//! also appears in `changed` when they start sharing a room with you, and in
//! `left` when you no longer share any room.

use std::{collections::BTreeSet, sync::Arc};

use ruma::UserId;

use super::KeysService;
use crate::{
    core::Core,
    error::Result,
    storage::StreamPos,
    sync::notifier::{Sections, WakeTarget},
};

/// `(changed, left)` for `user_id` between the positions `from` and `to`.
pub async fn delta(
    core: &Core,
    user_id: &str,
    from: StreamPos,
    to: StreamPos,
) -> Result<(Vec<String>, Vec<String>)> {
    if to <= from {
        return Ok((Vec::new(), Vec::new()));
    }
    let lists = &core.storage.device_lists;
    // Key changes of `user_id` and of users sharing a room with them now.
    let mut changed: BTreeSet<String> = lists
        .device_list_changes(user_id, from, to)
        .await?
        .into_iter()
        .collect();
    let mut joined = BTreeSet::new();
    let mut left = BTreeSet::new();
    for m in lists.membership_changes(user_id, from, to).await? {
        let theirs = m.other_membership.as_str();
        if m.my_changed {
            match m.my_membership.as_str() {
                "join" if theirs == "join" => {
                    joined.insert(m.other_user);
                }
                "leave" | "ban" if theirs == "join" || m.other_changed => {
                    left.insert(m.other_user);
                }
                _ => {}
            }
        } else {
            match theirs {
                "join" => {
                    joined.insert(m.other_user);
                }
                "leave" | "ban" => {
                    left.insert(m.other_user);
                }
                _ => {}
            }
        }
    }
    if !joined.is_empty() || !left.is_empty() {
        // Sharing is decided by every room, not just the ones that changed.
        let shared: BTreeSet<String> = lists
            .users_sharing_rooms(user_id)
            .await?
            .into_iter()
            .collect();
        changed.extend(joined.into_iter().filter(|u| shared.contains(u)));
        left.retain(|u| !shared.contains(u) && u != user_id);
    }
    Ok((changed.into_iter().collect(), left.into_iter().collect()))
}

/// Completes a device-list change at `pos`, waking `user_id` and everyone who
/// shares a room with them if it was stored. Always completes the position,
/// so the stream never stalls on it.
pub(crate) async fn complete_change(core: &Arc<Core>, user_id: &str, pos: StreamPos, stored: bool) {
    let mut wake = Vec::new();
    if stored {
        let changed = |u: String| WakeTarget::Changed(u, Sections::DEVICE_LISTS);
        wake.push(changed(user_id.to_owned()));
        match core.storage.device_lists.users_sharing_rooms(user_id).await {
            Ok(users) => wake.extend(users.into_iter().filter(|u| u != user_id).map(changed)),
            Err(e) => {
                tracing::warn!(error = %e, "device-list wake-up limited to the user");
                // Whoever shares a room with them must still see the change.
                core.journal.forget_before(pos);
            }
        }
    }
    core.complete(pos, wake);
}

impl KeysService {
    /// `GET /keys/changes`: users whose device lists changed between two
    /// sync tokens, and users who no longer share a room.
    pub async fn changes(
        &self,
        user_id: &UserId,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let to = to.min(self.core.stream.current());
        delta(&self.core, user_id.as_str(), from, to).await
    }

    /// Forgets deleted devices' keys and inboxes and tells the users who
    /// share a room that the device list changed. Called after the devices
    /// themselves are deleted (logout, `DELETE /devices`).
    pub async fn devices_removed(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .keys
            .delete_device_keys(user_id.as_str(), device_ids, pos)
            .await;
        self.core.key_counts.invalidate(user_id.as_str());
        complete_change(&self.core, user_id.as_str(), pos, result.is_ok()).await;
        if result.is_ok() {
            use crate::federation::device_lists::{announce, DeviceChange};
            for device_id in device_ids {
                announce(&self.core, user_id, device_id, pos, DeviceChange::Deleted).await;
            }
        }
        result
    }
}
