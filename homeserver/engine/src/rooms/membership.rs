//! Membership changes of local users: join, knock, invite, leave, kick, ban,
//! unban, forget.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

use super::RoomService;
use crate::{
    error::{Error, Result},
    events::builder::EventDraft,
};

impl RoomService {
    /// Joins a local user to a room on this server.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        // Rooms blocked through the admin API refuse every join.
        self.refuse_if_blocked(room_id).await?;
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("No known servers to join this room through."))?;
        let mut st = self.write_lock(&room).await?;
        if st.membership_of(user.as_str()).as_deref() == Some("join") {
            return Ok(room_id.to_owned());
        }
        let content = self.member_content(user, "join", reason).await?;
        self.send_locked(
            &mut st,
            user,
            EventDraft::state("m.room.member", user.as_str(), content),
            None,
        )
        .await?;
        Ok(room_id.to_owned())
    }

    /// Knocks on a room on this server: asks its members to be let in. The
    /// room's `join_rule` must allow it (`knock`, or `knock_restricted` in
    /// room versions that have it); the auth rules decide.
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        self.refuse_if_blocked(room_id).await?;
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("No known servers to knock on this room through."))?;
        let mut st = self.write_lock(&room).await?;
        match st.membership_of(user.as_str()).as_deref() {
            Some("knock") => return Ok(()),
            Some("join") => return Err(Error::forbidden("You are already in this room.")),
            Some("invite") => {
                return Err(Error::forbidden(
                    "You are already invited: join the room instead.",
                ))
            }
            Some("ban") => return Err(Error::forbidden("You are banned from this room.")),
            _ => {}
        }
        let content = self.member_content(user, "knock", reason).await?;
        self.send_locked(
            &mut st,
            user,
            EventDraft::state("m.room.member", user.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    pub async fn leave(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        let mut st = self.write_lock(&room).await?;
        match st.membership_of(user.as_str()).as_deref() {
            Some("join") | Some("invite") | Some("knock") => {}
            Some("leave") => return Ok(()),
            _ => return Err(Error::forbidden("You are not in this room.")),
        }
        let mut content = json!({"membership": "leave"});
        if let Some(r) = reason {
            content["reason"] = json!(r);
        }
        self.send_locked(
            &mut st,
            user,
            EventDraft::state("m.room.member", user.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Sets another user's membership: `invite`, `leave` (kick or unban) or `ban`.
    pub async fn set_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::forbidden("You are not in this room."))?;
        let mut st = self.write_lock(&room).await?;
        if st.membership_of(sender.as_str()).as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room."));
        }
        let current = st.membership_of(target.as_str());
        match membership {
            "invite" if current.as_deref() == Some("join") => {
                return Err(Error::forbidden("The user is already in the room."));
            }
            "invite" if current.as_deref() == Some("ban") => {
                return Err(Error::forbidden("The user is banned."))
            }
            "invite" if current.as_deref() == Some("invite") => return Ok(()),
            "unban" if current.as_deref() != Some("ban") => return Ok(()),
            _ => {}
        }
        let wire = if membership == "unban" {
            "leave"
        } else {
            membership
        };
        let mut content = if wire == "invite" {
            self.member_content(target, "invite", None).await?
        } else {
            json!({"membership": wire})
        };
        if let Some(r) = reason {
            content["reason"] = json!(r);
        }
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.send_locked(
            &mut st,
            sender,
            EventDraft::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        match self.membership(room_id, user.as_str()).await?.as_deref() {
            Some("join") | Some("invite") => Err(Error::new(
                400,
                "M_UNKNOWN",
                "You must leave the room before forgetting it.",
            )),
            _ => {
                // A position of its own, so syncs drop kept memberships.
                let pos = self.core.stream.allocate();
                let result = self
                    .core
                    .storage
                    .rooms
                    .forget_room(user.as_str(), room_id.as_str())
                    .await;
                let wake = crate::sync::notifier::WakeTarget::Changed(
                    user.to_string(),
                    crate::sync::notifier::Sections::MEMBERSHIPS,
                );
                self.core.complete(pos, vec![wake]);
                result
            }
        }
    }

    /// What an invited or knocking user is shown of a room: the stripped form
    /// of its name, topic, avatar, join rules, create event and the like
    /// ([`crate::sync::STRIPPED_STATE`]).
    pub async fn stripped_state(&self, st: &super::RoomState) -> Result<Vec<Value>> {
        Ok(self
            .summary_state_pdus(st, None)
            .await?
            .iter()
            .map(|json| crate::events::client_format::to_stripped(json))
            .collect())
    }

    /// The same events in full (canonical PDU JSON), as servers send them to
    /// each other in `invite_room_state` and `knock_room_state` (Matrix 1.16,
    /// MSC4311: the receiver can check them, the create event among them),
    /// with one more state event (`extra` = type and state key) if given.
    pub async fn summary_state_pdus(
        &self,
        st: &super::RoomState,
        extra: Option<(&str, &str)>,
    ) -> Result<Vec<String>> {
        let keys = crate::sync::STRIPPED_STATE
            .iter()
            .map(|kind| (*kind, ""))
            .chain(extra);
        let mut events = Vec::new();
        for (kind, state_key) in keys {
            let Some(p) = st.state_event(kind, state_key) else {
                continue;
            };
            if let Some(ev) = self
                .core
                .storage
                .timeline
                .get_event(p.event_id.as_str())
                .await?
            {
                events.push(ev.pdu_json);
            }
        }
        Ok(events)
    }

    /// Rooms blocked through the admin API refuse every join and knock.
    async fn refuse_if_blocked(&self, room_id: &RoomId) -> Result<()> {
        let blocked = self
            .core
            .storage
            .admin
            .room_blocked_by(room_id.as_str())
            .await?;
        match blocked {
            Some(_) => Err(Error::forbidden(
                "This room has been blocked on this server.",
            )),
            None => Ok(()),
        }
    }

    /// A member event's content with the user's profile.
    pub(crate) async fn member_content(
        &self,
        user: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<Value> {
        let mut content = json!({"membership": membership});
        if let Some(p) = self.core.storage.accounts.get_user(user.as_str()).await? {
            if let Some(name) = p.displayname {
                content["displayname"] = json!(name);
            }
            if let Some(url) = p.avatar_url {
                content["avatar_url"] = json!(url);
            }
        }
        if let Some(r) = reason {
            content["reason"] = json!(r);
        }
        Ok(content)
    }

    /// Re-sends the user's member event in every joined room after a profile change.
    pub async fn propagate_profile(&self, user: &UserId) -> Result<()> {
        let memberships = self
            .core
            .storage
            .rooms
            .memberships_for_user(user.as_str())
            .await?;
        for m in memberships.into_iter().filter(|m| m.membership == "join") {
            let Ok(room_id) = OwnedRoomId::try_from(m.room_id.as_str()) else {
                continue;
            };
            let content = self.member_content(user, "join", None).await?;
            if let Err(e) = self
                .send(
                    &room_id,
                    user,
                    EventDraft::state("m.room.member", user.as_str(), content),
                    None,
                )
                .await
            {
                tracing::warn!(room = %room_id, error = %e, "could not propagate profile change");
            }
        }
        Ok(())
    }
}
