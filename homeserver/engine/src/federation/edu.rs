//! Inbound EDUs: the ephemeral data other servers push in transactions.
//!
//! Every EDU speaks only for users of the server that sent it; anything else
//! is dropped. Typing and receipts go through the same services as local
//! clients' requests (which check the user is in the room); to-device
//! messages land in the local recipients' inboxes.

use std::{collections::BTreeMap, time::Duration};

use ruma::{OwnedRoomId, ServerName, UserId};
use serde_json::Value;

use super::rooms::RoomFederation;
use crate::error::{Error, Result};

/// How long a remote typing notification lasts without a refresh.
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

impl RoomFederation {
    pub async fn receive_edu(&self, origin: &ServerName, edu: &Value) -> Result<()> {
        let content = &edu["content"];
        match edu["edu_type"].as_str().unwrap_or_default() {
            "m.typing" => self.receive_typing(origin, content).await,
            "m.receipt" => self.receive_receipts(origin, content).await,
            "m.direct_to_device" => self.receive_to_device(origin, content).await,
            "m.presence" => self.receive_presence(origin, content).await,
            "m.device_list_update" | "m.signing_key_update" => {
                self.receive_device_list_update(origin, content).await
            }
            other => {
                tracing::debug!(%origin, edu_type = other, "ignoring an EDU type we do not handle");
                Ok(())
            }
        }
    }

    /// The ACL check for a room EDU; rooms not held here have none to apply.
    async fn require_room_acl(&self, room_id: &ruma::RoomId, origin: &ServerName) -> Result<()> {
        match self.rooms.get(room_id).await? {
            Some(room) => super::transactions::require_acl(&*room.read().await, origin),
            None => Ok(()),
        }
    }

    async fn receive_typing(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let room_id = parse_room(&content["room_id"])?;
        let user = user_of(origin, &content["user_id"])?;
        self.require_room_acl(&room_id, origin).await?;
        let typing = content["typing"].as_bool().unwrap_or(false);
        self.edus
            .typing
            .set_typing(&room_id, user.as_str(), typing, REMOTE_TYPING_TIMEOUT)
            .await
    }

    /// `{room_id: {receipt_type: {user_id: {event_ids, data}}}}`
    async fn receive_receipts(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(rooms) = content.as_object() else {
            return Err(Error::bad_json("m.receipt content must be an object"));
        };
        for (room, types) in rooms {
            let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
                continue;
            };
            if self.require_room_acl(&room_id, origin).await.is_err() {
                continue;
            }
            for (receipt_type, users) in types.as_object().into_iter().flatten() {
                // Private receipts never leave their server; refuse them here too.
                if receipt_type == "m.read.private" {
                    continue;
                }
                for (user, receipt) in users.as_object().into_iter().flatten() {
                    let Ok(user) = user_of(origin, &Value::String(user.clone())) else {
                        continue;
                    };
                    let thread = receipt["data"]["thread_id"].as_str();
                    for event_id in receipt["event_ids"].as_array().into_iter().flatten() {
                        let Some(event_id) = event_id.as_str() else {
                            continue;
                        };
                        if let Err(e) = self
                            .edus
                            .receipts
                            .post(&room_id, user.as_str(), receipt_type, event_id, thread)
                            .await
                        {
                            tracing::info!(%origin, %room_id, error = %e, "dropping a remote receipt");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `{sender, type, message_id, messages: {user: {device: content}}}`
    async fn receive_to_device(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let sender = user_of(origin, &content["sender"])?;
        let event_type = content["type"]
            .as_str()
            .ok_or_else(|| Error::bad_json("m.direct_to_device without type"))?;
        let message_id = content["message_id"].as_str().unwrap_or_default();
        let messages: BTreeMap<String, BTreeMap<String, Value>> =
            serde_json::from_value(content["messages"].clone())
                .map_err(|e| Error::bad_json(format!("invalid messages: {e}")))?;
        // Only our users' messages are ours to deliver.
        let local: BTreeMap<String, BTreeMap<String, Value>> = messages
            .into_iter()
            .filter(|(u, _)| {
                UserId::parse(u.as_str()).is_ok_and(|u| self.core.is_local(u.server_name()))
            })
            .collect();
        // The origin's message id deduplicates a retried EDU.
        let device = format!("federation:{origin}");
        self.edus
            .to_device
            .send(&sender, &device, event_type, message_id, local)
            .await
    }

    /// `{push: [{user_id, presence, last_active_ago, status_msg, currently_active}]}`
    async fn receive_presence(&self, origin: &ServerName, content: &Value) -> Result<()> {
        for update in content["push"].as_array().into_iter().flatten() {
            let Ok(user) = user_of(origin, &update["user_id"]) else {
                continue;
            };
            let state = update["presence"].as_str().unwrap_or("offline");
            let status = update["status_msg"].as_str().map(str::to_owned);
            let last_active_ago = update["last_active_ago"].as_u64();
            self.edus
                .presence
                .set_remote(user.as_str(), state, status, last_active_ago)
                .await;
        }
        Ok(())
    }
}

fn parse_room(v: &Value) -> Result<OwnedRoomId> {
    v.as_str()
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::bad_json("invalid room_id"))
}

/// A user id that must belong to `origin`.
fn user_of(origin: &ServerName, v: &Value) -> Result<ruma::OwnedUserId> {
    let user = v
        .as_str()
        .and_then(|u| UserId::parse(u).ok())
        .ok_or_else(|| Error::bad_json("invalid user_id"))?;
    if user.server_name() != origin {
        return Err(Error::forbidden(
            "An EDU may only speak for the origin's users.",
        ));
    }
    Ok(user)
}
