//! The server itself: version, statistics, and server notices (a message
//! from the server to one user).

use ruma::{OwnedRoomId, UserId};
use serde_json::{json, Value};

use super::AdminService;
use crate::{
    account_data::AccountDataService,
    error::{Error, Result},
    events::builder::EventDraft,
    rooms::CreateRoom,
    util::now_ms,
};

/// The body of `POST /_synapse/admin/v1/send_server_notice`.
#[derive(Clone, Debug)]
pub struct ServerNotice {
    pub user_id: String,
    pub event_type: Option<String>,
    pub state_key: Option<String>,
    pub content: Value,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl AdminService {
    /// `GET /_synapse/admin/v1/server_version`.
    pub fn server_version(&self) -> Value {
        json!({"server_version": env!("CARGO_PKG_VERSION")})
    }

    /// `GET /_synapse/admin/v1/statistics/server` (ours; Synapse has no
    /// equivalent): counts from the database, and live numbers from this
    /// instance (connections, long-polls waiting, federation queues).
    pub async fn server_stats(&self) -> Result<Value> {
        let now = now_ms();
        let midnight = now - now.rem_euclid(DAY_MS);
        let counts = self.core.storage.admin.counts(midnight).await?;
        let mut queues = Vec::new();
        let federation = &self.core.storage.federation;
        for destination in federation.outbox_destinations().await? {
            let queued = federation.outbox_len(&destination).await?;
            queues.push(json!({"destination": destination, "queued": queued}));
        }
        Ok(json!({
            "server_name": self.core.server_name,
            "users": counts.users,
            "deactivated_users": counts.deactivated_users,
            "rooms": counts.rooms,
            "events_today": counts.events_since,
            "registration_tokens": counts.registration_tokens,
            "open_connections": self.presence.open_connections(),
            "presence_tracked": self.presence.enabled(),
            "sync_waiters": self.core.notifier.waiting_keys(),
            "federation_queues": queues,
        }))
    }

    /// `POST /_synapse/admin/v1/send_server_notice`: sends the event into the
    /// user's server-notice room, creating the notices account and the room on
    /// first use and re-inviting a user who left.
    pub async fn send_server_notice(&self, notice: ServerNotice) -> Result<Value> {
        let target = self.existing_user(&notice.user_id).await?;
        if !notice.content.is_object() {
            return Err(Error::bad_json("content must be an object"));
        }
        let sender = self.notices_user().await?;
        if sender == target {
            return Err(Error::invalid_param(
                "The notices account cannot notify itself.",
            ));
        }
        let room_id = self.notice_room_for(&sender, &target).await?;
        let draft = match notice.state_key {
            Some(key) => EventDraft::state(
                notice.event_type.as_deref().unwrap_or("m.room.message"),
                &key,
                notice.content,
            ),
            None => EventDraft::message(
                notice.event_type.as_deref().unwrap_or("m.room.message"),
                notice.content,
            ),
        };
        let event_id = self.rooms.send(&room_id, &sender, draft, None).await?;
        Ok(json!({"event_id": event_id}))
    }

    /// The account notices come from, created (without a password, so
    /// nobody can log in as it) on first use.
    async fn notices_user(&self) -> Result<ruma::OwnedUserId> {
        let localpart = &self.core.config.server_notices.localpart;
        let user_id = self.accounts.validate_localpart(localpart)?;
        if self
            .core
            .storage
            .accounts
            .get_user(user_id.as_str())
            .await?
            .is_none()
        {
            match self
                .accounts
                .create_account(&user_id, None, false, Some("Server Notices".into()))
                .await
            {
                Ok(()) => {}
                // Created concurrently by another notice.
                Err(e) if e.errcode == "M_USER_IN_USE" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(user_id)
    }

    async fn notice_room_for(&self, sender: &UserId, target: &UserId) -> Result<OwnedRoomId> {
        let store = &self.core.storage;
        if let Some(room) = store.admin.server_notice_room(target.as_str()).await? {
            if let Ok(room_id) = OwnedRoomId::try_from(room) {
                match self.rooms.membership(&room_id, target.as_str()).await? {
                    Some(m) if m == "join" || m == "invite" => return Ok(room_id),
                    Some(m) if m == "leave" => {
                        self.rooms
                            .set_membership(&room_id, sender, target, "invite", None, false)
                            .await?;
                        return Ok(room_id);
                    }
                    // Banned, or the room is gone: start a new one.
                    _ => {}
                }
            }
        }
        let room_id = self
            .rooms
            .create_room(
                sender,
                CreateRoom {
                    preset: Some("private_chat".into()),
                    name: Some(self.core.config.server_notices.room_name.clone()),
                    invite: vec![target.to_string()],
                    ..Default::default()
                },
            )
            .await?;
        store
            .admin
            .set_server_notice_room(target.as_str(), room_id.as_str())
            .await?;
        // Clients show rooms tagged `m.server_notice` specially.
        AccountDataService::new(self.core.clone())
            .put(
                target.as_str(),
                Some(room_id.as_str()),
                "m.tag",
                &json!({"tags": {"m.server_notice": {"order": 0.5}}}),
            )
            .await?;
        Ok(room_id)
    }
}
