//! Knocking (Client-Server "Knocking on rooms", Server-Server "Knocking upon a
//! room"): a user asks a room's members to be let in.
//!
//! - On a room this server is in, a knock is a local membership change.
//! - On a room held elsewhere: `make_knock`, sign, `send_knock` through a
//!   resident server. The answer's `knock_room_state` lets the client show the
//!   room under `rooms.knock` in /sync until it is let in (an invite arrives
//!   over `/invite`) or turned away (a leave or ban arrives in a transaction
//!   even though this server is not in the room).
//! - Rescinding a knock on a room held elsewhere is a `make_leave`/`send_leave`
//!   through a server in the room, like rejecting a remote invite.
//!
//! The resident side (`make_knock`/`send_knock` for users of other servers)
//! is the generic membership code in `membership.rs`.

use http::Method;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::Value;

use super::{
    membership::strip_entry,
    rooms::{enc, remote_error, CheckedPdu, RoomFederation},
};
use crate::{
    error::{Error, Result},
    events::{client_format::to_stripped, Pdu},
    rooms::remote::outlier_write,
    storage::federation::RemoteInviteRecord,
    sync::notifier::WakeTarget,
};

impl RoomFederation {
    /// `POST /knock/{roomIdOrAlias}`: a local knock when this server is in
    /// the room, otherwise a remote one through `via` or the room id's server.
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        if self.holds(room_id).await? {
            self.rooms.knock(room_id, user, reason).await?;
            return Ok(room_id.to_owned());
        }
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        servers.dedup();
        self.through_servers(&servers, "knock on", |server| {
            Box::pin(self.knock_via(server, room_id, user, reason.clone()))
        })
        .await?;
        Ok(room_id.to_owned())
    }

    async fn knock_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let (version, event_id, json) = self
            .signed_membership(server, room_id, user, "knock", reason)
            .await?;
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            enc(room_id.as_str()),
            enc(event_id.as_str())
        );
        let response = self
            .fed
            .client
            .request(
                server,
                Method::PUT,
                &path,
                Some(serde_json::from_str(&json)?),
            )
            .await
            .map_err(remote_error)?;
        let mut stripped: Vec<Value> = response["knock_room_state"]
            .as_array()
            .map(|entries| entries.iter().filter_map(strip_entry).collect())
            .unwrap_or_default();
        stripped.push(to_stripped(&json));
        let pdu = Pdu::parse(event_id.clone(), room_id, &json)?;
        let record = RemoteInviteRecord {
            room_id: room_id.to_string(),
            user_id: user.to_string(),
            event_id: event_id.to_string(),
            room_version: version.to_string(),
            stripped_state: Value::Array(stripped).to_string(),
        };
        self.record_outside(&record, &pdu, json, "knock").await
    }

    /// Stores our user's membership in a room this server does not hold: the
    /// event as an outlier, and the record sync shows.
    async fn record_outside(
        &self,
        record: &RemoteInviteRecord,
        pdu: &Pdu,
        json: String,
        membership: &str,
    ) -> Result<()> {
        let storage = &self.core.storage;
        let pos = self.core.stream.allocate();
        let stored = async {
            storage
                .federation
                .store_outliers(&[outlier_write(pos, pdu, json, false)])
                .await?;
            if membership == "knock" {
                storage
                    .federation
                    .put_remote_invite(record, membership, pos)
                    .await
            } else {
                storage
                    .federation
                    .set_membership_row(
                        &record.room_id,
                        &record.user_id,
                        membership,
                        &record.event_id,
                        pos,
                    )
                    .await?;
                storage
                    .federation
                    .delete_remote_invite(&record.room_id, &record.user_id)
                    .await
            }
        }
        .await;
        let wake = match stored {
            Ok(()) => vec![WakeTarget::User(record.user_id.clone())],
            Err(_) => Vec::new(),
        };
        self.core.complete(pos, wake);
        stored
    }

    /// A server of the room behind a remote invite or knock record: whoever
    /// sent its `m.room.create`, then any other stripped state sender, then
    /// the room id's server. Never this one.
    pub(super) fn server_in_room(
        &self,
        record: &RemoteInviteRecord,
        room_id: &RoomId,
    ) -> Option<OwnedServerName> {
        let state: Vec<Value> = serde_json::from_str(&record.stripped_state).unwrap_or_default();
        let create_first = state
            .iter()
            .filter(|e| e["type"] == "m.room.create")
            .chain(state.iter().filter(|e| e["type"] != "m.room.create"));
        create_first
            .filter_map(|e| e["sender"].as_str())
            .filter_map(|s| UserId::parse(s).ok())
            .map(|u| u.server_name().to_owned())
            .chain(room_id.server_name().map(ToOwned::to_owned))
            .find(|s| !self.core.is_local(s))
    }

    /// A transaction carried a PDU for a room this server is not in. The one
    /// kind that matters is the answer to a knock or invite of one of our
    /// users: a leave (knock refused, invite withdrawn) or a ban. Anything
    /// else is refused as for an unknown room.
    pub(super) async fn membership_outside(
        &self,
        room_id: &RoomId,
        value: &Value,
    ) -> Result<ruma::OwnedEventId> {
        let unknown = || Error::not_found("Unknown room");
        let target = value["state_key"].as_str().ok_or_else(unknown)?;
        if value["type"] != "m.room.member" {
            return Err(unknown());
        }
        let target_id = UserId::parse(target).map_err(|_| unknown())?;
        if !self.core.is_local(target_id.server_name()) {
            return Err(unknown());
        }
        let record = self
            .core
            .storage
            .federation
            .get_remote_invite(room_id.as_str(), target)
            .await?
            .ok_or_else(unknown)?;
        let version =
            ruma::RoomVersionId::try_from(record.room_version.as_str()).map_err(|_| unknown())?;
        let CheckedPdu { pdu, json } = self.check_pdu(room_id, &version, value).await?;
        let membership = pdu.content_str("membership").unwrap_or_default();
        if !matches!(membership.as_str(), "leave" | "ban") || pdu.sender.as_str() == target {
            // Our own user's leave only ever comes from us.
            return Err(unknown());
        }
        let id = pdu.event_id.clone();
        let outcome = RemoteInviteRecord {
            event_id: id.to_string(),
            ..record
        };
        self.record_outside(&outcome, &pdu, json, &membership)
            .await?;
        Ok(id)
    }
}
