//! `m.device_list_update` EDUs, both directions.
//!
//! Outbound: when a local device uploads new identity keys or is deleted, the
//! servers of everyone sharing a room with its owner get an EDU, so their
//! clients re-query the keys before encrypting for the user again. Each EDU
//! carries `stream_id` (the change's stream position) and `prev_id` (the
//! user's previous change): a receiver that has not seen `prev_id` knows it
//! missed an update and resyncs with `GET /user/devices` (whose `stream_id` is
//! the same chain's latest position).
//!
//! Inbound: an update about a user of the sending server, who shares a room
//! with one of our users, is recorded as a device-list change of that user,
//! so our users' `/sync` lists them in `device_lists.changed`. Remote keys are
//! not cached here (`/keys/query` asks the user's server every time), so
//! nothing else needs invalidating. `m.signing_key_update` is handled the same
//! way: new cross-signing keys are a device-list change too; we send one when
//! a local user's master or self-signing key changes.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{ServerName, UserId};
use serde_json::{json, Value};

use super::rooms::RoomFederation;
use crate::{
    core::Core,
    error::{Error, Result},
    keys::device_lists::complete_change,
    rooms::server_of,
    storage::StreamPos,
};

/// What happened to a local device.
pub enum DeviceChange {
    /// The device uploaded these (new) identity keys.
    Keys(Value),
    /// The device was deleted (logout, `DELETE /devices`).
    Deleted,
}

/// The other servers that must hear about `user_id`'s device changes: those
/// of every user sharing a joined room with them.
async fn interested_servers(core: &Core, user_id: &str) -> Result<BTreeSet<String>> {
    let own = core.server_name.as_str();
    Ok(core
        .storage
        .device_lists
        .users_sharing_rooms(user_id)
        .await?
        .iter()
        .map(|u| server_of(u))
        .filter(|s| !s.is_empty() && *s != own)
        .map(str::to_owned)
        .collect())
}

/// Queues an `m.device_list_update` for a change of a local device at `pos`
/// (already stored). Failures are logged, never returned: the local change
/// stands, and remote servers resync on the next update's `prev_id` gap.
pub async fn announce(
    core: &Arc<Core>,
    user_id: &UserId,
    device_id: &str,
    pos: StreamPos,
    change: DeviceChange,
) {
    if let Err(e) = try_announce(core, user_id, device_id, pos, change).await {
        tracing::warn!(%user_id, device_id, error = %e, "cannot queue a device-list update");
    }
}

async fn try_announce(
    core: &Arc<Core>,
    user_id: &UserId,
    device_id: &str,
    pos: StreamPos,
    change: DeviceChange,
) -> Result<()> {
    if !core.is_local(user_id.server_name()) {
        return Ok(());
    }
    let destinations = interested_servers(core, user_id.as_str()).await?;
    if destinations.is_empty() {
        return Ok(());
    }
    let prev = core
        .storage
        .device_lists
        .latest_device_list_change(user_id.as_str(), pos)
        .await?;
    let mut content = json!({
        "user_id": user_id,
        "device_id": device_id,
        "stream_id": pos,
        "prev_id": prev.into_iter().collect::<Vec<_>>(),
    });
    match change {
        DeviceChange::Keys(keys) => content["keys"] = keys,
        DeviceChange::Deleted => content["deleted"] = json!(true),
    }
    core.outbound
        .send_edu(
            destinations.iter().map(String::as_str),
            "m.device_list_update",
            content,
        )
        .await
}

/// Queues an `m.signing_key_update` with a local user's new public
/// cross-signing keys (master and self-signing; the user-signing key is
/// never shared with other servers). Nothing is sent when neither changed.
pub async fn announce_signing_keys(
    core: &Arc<Core>,
    user_id: &UserId,
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
) {
    if master_key.is_none() && self_signing_key.is_none() {
        return;
    }
    let mut content = json!({ "user_id": user_id });
    if let Some(k) = master_key {
        content["master_key"] = k;
    }
    if let Some(k) = self_signing_key {
        content["self_signing_key"] = k;
    }
    let sent = async {
        if !core.is_local(user_id.server_name()) {
            return Ok(());
        }
        let destinations = interested_servers(core, user_id.as_str()).await?;
        core.outbound
            .send_edu(
                destinations.iter().map(String::as_str),
                "m.signing_key_update",
                content,
            )
            .await
    }
    .await;
    if let Err(e) = sent {
        tracing::warn!(%user_id, error = %e, "cannot queue a signing-key update");
    }
}

impl RoomFederation {
    /// An inbound `m.device_list_update` or `m.signing_key_update`.
    pub(crate) async fn receive_device_list_update(
        &self,
        origin: &ServerName,
        content: &Value,
    ) -> Result<()> {
        let user = content["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| Error::bad_json("invalid user_id"))?;
        if user.server_name() != origin {
            return Err(Error::forbidden(
                "An EDU may only speak for the origin's users.",
            ));
        }
        // Only users who share a room with one of ours are tracked: nobody
        // here needs to hear about anyone else.
        let lists = &self.core.storage.device_lists;
        let sharing = lists.users_sharing_rooms(user.as_str()).await?;
        if !sharing
            .iter()
            .any(|u| UserId::parse(u.as_str()).is_ok_and(|u| self.core.is_local(u.server_name())))
        {
            tracing::debug!(%origin, %user, "ignoring a device-list update of an untracked user");
            return Ok(());
        }
        let pos = self.core.stream.allocate();
        let stored = lists.record_device_list_change(user.as_str(), pos).await;
        complete_change(&self.core, user.as_str(), pos, stored.is_ok()).await;
        stored
    }
}
