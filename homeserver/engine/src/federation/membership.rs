//! Membership over federation (Server-Server API, "Joining rooms", "Leaving
//! rooms", "Inviting to a room"), in both directions:
//!
//! - as the resident server: `make_join`/`send_join`, `make_leave`/`send_leave`,
//!   and receiving an invite for one of our users;
//! - as the joining server: joining a room held elsewhere, inviting a remote
//!   user, rejecting a remote invite.

use std::{collections::HashMap, sync::Arc};

use http::Method;
use ruma::{
    CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
};
use serde_json::{json, Value};

use super::{
    join_answer::RawJson,
    rooms::{enc, event_id_of, remote_error, to_object, CheckedPdu, RoomFederation},
};
use crate::{
    error::{Error, Result},
    events::{
        builder::{self, BuildContext, Built, EventDraft},
        client_format::to_stripped,
        Pdu,
    },
    rooms::{
        remote::{outlier_write, Accepted},
        state_res::{ids_of, snapshot_against},
        RoomState, SUPPORTED_ROOM_VERSIONS,
    },
    storage::{
        federation::{CurrentStateWrite, RemoteEventWrite, RemoteInviteRecord},
        RoomRecord,
    },
    sync::notifier::WakeTarget,
    util::now_ms,
};

impl RoomFederation {
    // ----- Resident side ----------------------------------------------------

    /// `GET /make_join` and `/make_leave`: an unsigned membership event for a
    /// user of `origin`, built on the room's current state.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        versions: &[String],
    ) -> Result<Value> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(
                "The user does not belong to the requesting server.",
            ));
        }
        let room = self.resident_room(room_id).await?;
        let st = room.read().await;
        super::transactions::require_acl(&st, origin)?;
        let needs_version = matches!(membership, "join" | "knock");
        if needs_version && !versions.iter().any(|v| v == st.version.as_str()) {
            return Err(Error::new(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "Your server does not support this room's version.",
            )
            .with_field("room_version", json!(st.version.as_str())));
        }
        let draft = EventDraft::state(
            "m.room.member",
            user_id.as_str(),
            json!({"membership": membership}),
        );
        let ctx = self.build_context(&st);
        let template = builder::template(&ctx, user_id, &draft)?;
        // Refuse early what the auth rules would refuse anyway.
        let json = builder::canonical_string(&template);
        let probe = Pdu::parse(
            EventId::parse("$probe").map_err(|e| Error::unknown(e.to_string()))?,
            room_id,
            &json,
        )?;
        crate::events::auth::check(
            &st.rules.authorization,
            &probe,
            &st.state,
            &builder::index_by_id(&st.state),
        )?;
        let mut event: Value = serde_json::from_str(&json)?;
        event["origin"] = json!(self.core.server_name.as_str());
        Ok(json!({"room_version": st.version.as_str(), "event": event}))
    }

    /// `PUT /send_join` and `/send_leave`: accepts the signed membership event
    /// and, for a join, returns the room's state and auth chain
    /// ([`Self::join_answer`]).
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        membership: &str,
        body: &Value,
    ) -> Result<RawJson> {
        let room = self.resident_room(room_id).await?;
        let version = {
            let st = room.read().await;
            super::transactions::require_acl(&st, origin)?;
            st.version.clone()
        };
        let CheckedPdu { pdu, json } = self.check_pdu(room_id, &version, body).await?;
        if pdu.event_id != event_id {
            return Err(Error::bad_json("The event id does not match the event."));
        }
        let state_key = pdu.state_key.clone().unwrap_or_default();
        if pdu.kind.to_string() != "m.room.member"
            || pdu.content_str("membership").as_deref() != Some(membership)
            || state_key != pdu.sender.as_str()
            || pdu.sender.server_name() != origin
        {
            return Err(Error::bad_json(format!(
                "Expected a {membership} of a user of {origin} by themselves."
            )));
        }
        let mut st = self.rooms.write_lock(&room).await?;
        let state_before = ids_of(&st);
        let outcome = self
            .rooms
            .accept_remote_locked(&mut st, pdu.clone(), json.clone())
            .await?;
        match outcome {
            Accepted::Timeline | Accepted::Duplicate => {}
            Accepted::Rejected(r) | Accepted::SoftFailed(r) => {
                return Err(Error::forbidden(format!("The event is not allowed: {r}")));
            }
        }
        // The other servers in the room learn of the new member from us.
        let others: Vec<String> = st
            .remote_servers(self.core.server_name.as_str(), None)
            .into_iter()
            .filter(|s| s.as_str() != origin.as_str())
            .collect();
        if outcome == Accepted::Timeline && !others.is_empty() {
            self.core
                .outbound
                .send_pdu(others.iter().map(String::as_str), &json)
                .await?;
        }
        if membership == "knock" {
            // Full events, as for invites (MSC4311).
            let knock_room_state = full_events(self.rooms.summary_state_pdus(&st, None).await?)?;
            return Ok(RawJson::from_value(
                &json!({ "knock_room_state": knock_room_state }),
            ));
        }
        if membership != "join" {
            return Ok(RawJson::from_value(&json!({})));
        }
        self.join_answer(&st, &state_before, &pdu.auth_events, &json)
            .await
    }

    /// `PUT /invite` (v2): one of our users is invited to a room on another
    /// server. We countersign the event and show the invite to the user.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        body: &Value,
    ) -> Result<Value> {
        let version_str = body["room_version"].as_str().unwrap_or("1");
        let version = RoomVersionId::try_from(version_str)
            .map_err(|_| Error::bad_json("invalid room_version"))?;
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(Error::new(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "This server does not support the room's version.",
            )
            .with_field("room_version", json!(version.as_str())));
        }
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version(version.as_str()))?;
        let CheckedPdu { pdu, json } = self.check_pdu(room_id, &version, &body["event"]).await?;
        if pdu.event_id != event_id {
            return Err(Error::bad_json("The event id does not match the event."));
        }
        let target = pdu.state_key.clone().unwrap_or_default();
        if pdu.kind.to_string() != "m.room.member"
            || pdu.content_str("membership").as_deref() != Some("invite")
            || pdu.sender.server_name() != origin
        {
            return Err(Error::bad_json(
                "Expected an invite sent by a user of the origin.",
            ));
        }
        let target_id =
            UserId::parse(target.as_str()).map_err(|_| Error::bad_json("invalid invitee"))?;
        if !self.core.is_local(target_id.server_name()) {
            return Err(Error::bad_json("The invitee is not a user of this server."));
        }
        match self.core.storage.accounts.get_user(&target).await? {
            Some(u) if !u.deactivated => {}
            _ => return Err(Error::not_found("Unknown user.")),
        }
        // Countersign: our signature joins the sender's.
        let mut object = to_object(&serde_json::from_str::<Value>(&json)?)?;
        ruma::signatures::hash_and_sign_event(
            self.core.server_name.as_str(),
            &self.core.key.pair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::unknown(format!("cannot sign invite: {e}")))?;
        let signed = builder::canonical_string(&object);

        // Since Matrix 1.16 (MSC4311) the entries are full PDUs, older servers
        // send stripped events: clients get the stripped form of either.
        let mut stripped: Vec<Value> = body["invite_room_state"]
            .as_array()
            .map(|entries| entries.iter().filter_map(strip_entry).collect())
            .unwrap_or_default();
        stripped.push(to_stripped(&signed));
        let pos = self.core.stream.allocate();
        let stored = async {
            self.core
                .storage
                .federation
                .store_outliers(&[outlier_write(pos, &pdu, signed.clone(), false)])
                .await?;
            self.core
                .storage
                .federation
                .put_remote_invite(
                    &RemoteInviteRecord {
                        room_id: room_id.to_string(),
                        user_id: target.clone(),
                        event_id: event_id.to_string(),
                        room_version: version.to_string(),
                        stripped_state: Value::Array(stripped).to_string(),
                    },
                    "invite",
                    pos,
                )
                .await
        }
        .await;
        self.core.complete(
            pos,
            if stored.is_ok() {
                vec![WakeTarget::User(target.clone())]
            } else {
                Vec::new()
            },
        );
        stored?;
        Ok(json!({"event": serde_json::from_str::<Value>(&signed)?}))
    }

    // ----- Client requests that may need another server ---------------------

    /// `POST /join`: a local join when this server is in the room, otherwise a
    /// remote join through `via`, the inviting server, or the room id's server.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        if self.holds(room_id).await? {
            return self.rooms.join(room_id, user, reason).await;
        }
        let mut servers: Vec<OwnedServerName> = Vec::new();
        if let Some(server) = self.inviting_server(room_id, user).await? {
            servers.push(server);
        }
        servers.extend(via.iter().cloned());
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        servers.retain(|s| !self.core.is_local(s));
        servers.dedup();
        if servers.is_empty() {
            // Nobody else to ask: a room we created and everyone left, say.
            return self.rooms.join(room_id, user, reason).await;
        }
        self.join_remote(room_id, user, &servers, reason).await
    }

    /// `POST /invite`: users of other servers are invited over federation.
    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        if self.core.is_local(target.server_name()) {
            return self
                .rooms
                .set_membership(room_id, sender, target, "invite", reason, is_direct)
                .await;
        }
        self.invite_remote(room_id, sender, target, reason, is_direct)
            .await
    }

    /// `POST /leave`: rejecting an invite to a room this server does not hold
    /// goes through the inviting server; anything else is a local leave.
    pub async fn leave(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let held = match self.rooms.get(room_id).await? {
            Some(room) => room.read().await.membership_of(user.as_str()).is_some(),
            None => false,
        };
        if !held && self.reject_remote_invite(room_id, user).await? {
            return Ok(());
        }
        self.rooms.leave(room_id, user, reason).await
    }

    /// The server of whoever invited `user` to a room held elsewhere.
    async fn inviting_server(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedServerName>> {
        let storage = &self.core.storage;
        let Some(invite) = storage
            .federation
            .get_remote_invite(room_id.as_str(), user.as_str())
            .await?
        else {
            return Ok(None);
        };
        Ok(storage
            .timeline
            .get_event(&invite.event_id)
            .await?
            .and_then(|ev| serde_json::from_str::<Value>(&ev.pdu_json).ok())
            .and_then(|v| v["sender"].as_str().map(str::to_owned))
            .and_then(|s| UserId::parse(s).ok())
            .map(|u| u.server_name().to_owned()))
    }

    /// Resolves an alias of another server with `/query/directory`.
    pub async fn resolve_remote_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let path = format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            enc(alias.as_str())
        );
        let response = self
            .fed
            .client
            .request(alias.server_name(), Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        let room_id = response["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            .ok_or_else(|| Error::unknown("remote directory answered without a room id"))?;
        let servers = response["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
            .collect();
        Ok((room_id, servers))
    }

    // ----- Our users in rooms held elsewhere --------------------------------

    /// Joins a local user to a room through one of `via`: `make_join`, sign,
    /// `send_join`, then the room's state becomes ours.
    pub async fn join_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        self.through_servers(via, "join", |server| {
            Box::pin(self.join_via(server, room_id, user, reason.clone()))
        })
        .await?;
        Ok(room_id.to_owned())
    }

    /// Tries `attempt` through each server of `servers` other than this one,
    /// in order: the first success wins, otherwise the last failure is the
    /// answer (`M_NOT_FOUND` when there was nobody to ask).
    pub(super) async fn through_servers<'a>(
        &self,
        servers: &'a [OwnedServerName],
        what: &str,
        mut attempt: impl FnMut(&'a ServerName) -> futures::future::BoxFuture<'a, Result<()>>,
    ) -> Result<()> {
        let mut last = Error::not_found(format!("No known servers to {what} this room through."));
        for server in servers.iter().filter(|s| !self.core.is_local(s)) {
            match attempt(server).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, error = %e, "remote {what} failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn join_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let (version, event_id, json) = self
            .signed_membership(server, room_id, user, "join", reason)
            .await?;
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            enc(room_id.as_str()),
            enc(event_id.as_str())
        );
        let body: Value = serde_json::from_str(&json)?;
        let raw = self
            .fed
            .client
            .request_raw(server, Method::PUT, &path, Some(body))
            .await
            .map_err(remote_error)?;
        // The events stay unparsed JSON until the checks, which parse them
        // over the cores.
        let response: SendJoinAnswer = serde_json::from_slice(&raw.body).map_err(|e| {
            Error::new(
                502,
                "M_UNKNOWN",
                format!("{server} sent an invalid send_join answer: {e}"),
            )
        })?;
        self.complete_join(server, room_id, &version, event_id, json, response)
            .await
    }

    /// Our user's `membership` (`join` or `knock`) in a room held elsewhere,
    /// built by `server` (`make_join`/`make_knock`) with the user's profile and
    /// `reason`, then hashed and signed: the room version, event id and JSON.
    pub(super) async fn signed_membership(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<(RoomVersionId, OwnedEventId, String)> {
        let endpoint = format!("make_{membership}");
        let (version, mut object) = self
            .make_remote(server, room_id, user, &endpoint, true)
            .await?;
        let content = self.rooms.member_content(user, membership, reason).await?;
        object.insert(
            "content".into(),
            ruma::canonical_json::to_canonical_value(content)
                .map_err(|e| Error::unknown(e.to_string()))?,
        );
        let (event_id, json) = self.sign_template(&version, object)?;
        Ok((version, event_id, json))
    }

    /// `make_join`/`make_leave` on a remote server: the room version and the
    /// template, with our `origin_server_ts`.
    async fn make_remote(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        endpoint: &str,
        with_versions: bool,
    ) -> Result<(RoomVersionId, ruma::CanonicalJsonObject)> {
        let mut path = format!(
            "/_matrix/federation/v1/{endpoint}/{}/{}",
            enc(room_id.as_str()),
            enc(user.as_str())
        );
        if with_versions {
            let query: Vec<String> = SUPPORTED_ROOM_VERSIONS
                .iter()
                .map(|v| format!("ver={v}"))
                .collect();
            path = format!("{path}?{}", query.join("&"));
        }
        let response = self
            .fed
            .client
            .request(server, Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        let version = RoomVersionId::try_from(response["room_version"].as_str().unwrap_or("1"))
            .map_err(|_| Error::unknown("remote sent an invalid room version"))?;
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(Error::unsupported_room_version(version.as_str()));
        }
        let mut object = to_object(&response["event"])?;
        let sender_ok = matches!(object.get("sender"), Some(CanonicalJsonValue::String(s)) if s == user.as_str());
        let room_ok = match object.get("room_id") {
            Some(CanonicalJsonValue::String(r)) => r == room_id.as_str(),
            _ => false,
        };
        if !sender_ok || !room_ok {
            return Err(Error::unknown(
                "remote sent a template for another user or room",
            ));
        }
        object.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(ruma::Int::new_saturating(now_ms())),
        );
        object.insert(
            "origin".into(),
            CanonicalJsonValue::String(self.core.server_name.to_string()),
        );
        object.remove("signatures");
        object.remove("hashes");
        object.remove("unsigned");
        Ok((version, object))
    }

    /// Hashes and signs a template; its event id and canonical JSON.
    fn sign_template(
        &self,
        version: &RoomVersionId,
        mut object: ruma::CanonicalJsonObject,
    ) -> Result<(OwnedEventId, String)> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version(version.as_str()))?;
        ruma::signatures::hash_and_sign_event(
            self.core.server_name.as_str(),
            &self.core.key.pair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::unknown(format!("cannot sign event: {e}")))?;
        let event_id = event_id_of(&object, &rules)?;
        Ok((event_id, builder::canonical_string(&object)))
    }

    /// Takes in the `send_join` response: checks the state and auth chain,
    /// stores them, and appends our join on top.
    async fn complete_join(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        join_id: OwnedEventId,
        join_json: String,
        response: SendJoinAnswer,
    ) -> Result<()> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version(version.as_str()))?;
        // The resident may have countersigned our join; prefer its copy.
        let join_json = match &response.event {
            Some(ev) if ev.is_object() => {
                let object = to_object(ev)?;
                if event_id_of(&object, &rules)? == join_id {
                    builder::canonical_string(&object)
                } else {
                    join_json
                }
            }
            _ => join_json,
        };
        let mut by_id: HashMap<OwnedEventId, CheckedPdu> = HashMap::new();
        let mut state_ids = Vec::new();
        // The auth chain first, then the state: all checked at once, over the
        // cores (`pdu_checks.rs`); an event that fails its checks is dropped.
        let SendJoinAnswer {
            state,
            auth_chain: mut values,
            ..
        } = response;
        let chain_len = values.len();
        values.extend(state);
        let checked_all = self.check_pdus(room_id, version, values).await?;
        for (i, checked) in checked_all.into_iter().enumerate() {
            let checked = match checked {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(%server, error = %e, "dropping an invalid event of send_join");
                    continue;
                }
            };
            if i >= chain_len {
                state_ids.push(checked.pdu.event_id.clone());
            }
            by_id.entry(checked.pdu.event_id.clone()).or_insert(checked);
        }
        // Each event must pass the auth rules against its own auth events.
        let mut ordered: Vec<&CheckedPdu> = by_id.values().collect();
        ordered.sort_by_key(|c| c.pdu.depth);
        let mut rejected = std::collections::HashSet::new();
        let create_pdu = by_id
            .values()
            .find(|c| {
                c.pdu.kind.to_string() == "m.room.create" && c.pdu.state_key.as_deref() == Some("")
            })
            .map(|c| Arc::new(c.pdu.clone()));
        let pdus: HashMap<&EventId, &Pdu> = by_id.iter().map(|(k, v)| (&**k, &v.pdu)).collect();
        // Shared copies: the same few events (create, power levels, join
        // rules) are among the auth events of every member event.
        let shared: HashMap<&EventId, Arc<Pdu>> = by_id
            .iter()
            .map(|(k, v)| (&**k, Arc::new(v.pdu.clone())))
            .collect();
        for c in &ordered {
            let mut auth_state = crate::events::auth::StateMap::new();
            let mut missing = false;
            for a in &c.pdu.auth_events {
                match shared.get(&**a) {
                    Some(ap) if !rejected.contains(a) => {
                        if let Some(k) = &ap.state_key {
                            auth_state.insert((ap.kind.to_string(), k.clone()), ap.clone());
                        }
                    }
                    _ => missing = true,
                }
            }
            // Room version 12 leaves the create event out of `auth_events`.
            if let Some(create) = &create_pdu {
                if c.pdu.kind.to_string() != "m.room.create" {
                    auth_state
                        .entry(("m.room.create".into(), String::new()))
                        .or_insert_with(|| create.clone());
                }
            }
            let ok = !missing
                && crate::events::auth::check(&rules.authorization, &c.pdu, &auth_state, &pdus)
                    .is_ok();
            if !ok {
                rejected.insert(c.pdu.event_id.clone());
            }
        }
        let create = state_ids
            .iter()
            .filter_map(|id| by_id.get(id))
            .find(|c| c.pdu.kind.to_string() == "m.room.create")
            .ok_or_else(|| Error::unknown("send_join state has no create event"))?;
        let creator = create.pdu.sender.to_string();

        let storage = &self.core.storage;
        if storage.rooms.get_room(room_id.as_str()).await?.is_none() {
            storage
                .rooms
                .create_room(&RoomRecord {
                    room_id: room_id.to_string(),
                    room_version: version.to_string(),
                    creator,
                    is_public: false,
                })
                .await?;
        }
        // Everything received is held as an outlier first.
        let mut outliers = Vec::new();
        let mut positions = Vec::new();
        for c in by_id.values() {
            let pos = self.core.stream.allocate();
            positions.push(pos);
            outliers.push(outlier_write(
                pos,
                &c.pdu,
                c.json.clone(),
                rejected.contains(&c.pdu.event_id),
            ));
        }
        let stored = storage.federation.store_outliers(&outliers).await;
        for pos in positions {
            self.core.complete(pos, Vec::new());
        }
        stored?;

        // The state before our join, then our join on top.
        let mut state = crate::rooms::state_res::IdState::new();
        let mut memberships = Vec::new();
        for id in &state_ids {
            let Some(c) = by_id.get(id) else { continue };
            if rejected.contains(id) {
                continue;
            }
            if let Some(k) = &c.pdu.state_key {
                state.insert((c.pdu.kind.to_string(), k.clone()), id.clone());
                if c.pdu.kind.to_string() == "m.room.member" {
                    let m = c
                        .pdu
                        .content_str("membership")
                        .unwrap_or_else(|| "leave".into());
                    memberships.push((k.clone(), m, id.to_string()));
                }
            }
        }
        let join = Pdu::parse(join_id.clone(), room_id, &join_json)?;
        let before = snapshot_against(self.core.alloc_snapshot(), room_id.as_str(), None, &state);
        let mut after_state = state.clone();
        let user = join.state_key.clone().unwrap_or_default();
        after_state.insert(("m.room.member".into(), user.clone()), join_id.clone());
        let after = snapshot_against(
            self.core.alloc_snapshot(),
            room_id.as_str(),
            Some((before.snapshot_id, &state)),
            &after_state,
        );
        memberships.push((user.clone(), "join".into(), join_id.to_string()));
        let pos = self.core.stream.allocate();
        let write = RemoteEventWrite {
            stream_pos: pos,
            event_id: join_id.to_string(),
            room_id: room_id.to_string(),
            event_type: "m.room.member".into(),
            state_key: Some(user.clone()),
            sender: join.sender.to_string(),
            origin_server_ts: i64::from(join.origin_server_ts.0),
            depth: join.depth as i64,
            pdu_json: join_json,
            rejected: false,
            outlier: false,
            state_before: before.snapshot_id,
            state_after: Some(after.snapshot_id),
            current: Some(CurrentStateWrite {
                snapshot_id: after.snapshot_id,
                changed: after_state
                    .iter()
                    .map(|((t, k), e)| (t.clone(), k.clone(), e.to_string()))
                    .collect(),
                memberships,
                forward_extremities: vec![join_id.to_string()],
            }),
            snapshots: vec![before, after],
            redaction: None,
        };
        let persisted = storage.federation.persist_remote_event(&write).await;
        // Reloaded from the store below; dropped before the join is visible,
        // so no sync reads the old copy's kept events past it.
        self.rooms.evict(room_id);
        self.core.complete(
            pos,
            if persisted.is_ok() {
                vec![WakeTarget::User(user.clone())]
            } else {
                Vec::new()
            },
        );
        persisted?;
        let _ = storage
            .federation
            .delete_remote_invite(room_id.as_str(), &user)
            .await;
        // Reload the room from what was just stored.
        self.rooms.evict(room_id);
        self.rooms.require(room_id).await?;
        Ok(())
    }

    /// Invites a user of another server: their server countersigns the invite
    /// (`PUT /invite`), then it joins the room's timeline like any event.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        let room = self
            .rooms
            .get(room_id)
            .await?
            .ok_or_else(|| Error::forbidden("You are not in this room."))?;
        let mut st = self.rooms.write_lock(&room).await?;
        if st.membership_of(sender.as_str()).as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room."));
        }
        match st.membership_of(target.as_str()).as_deref() {
            Some("join") => return Err(Error::forbidden("The user is already in the room.")),
            Some("ban") => return Err(Error::forbidden("The user is banned.")),
            Some("invite") => return Ok(()),
            _ => {}
        }
        let mut content = json!({"membership": "invite"});
        if let Some(r) = reason {
            content["reason"] = json!(r);
        }
        if is_direct {
            content["is_direct"] = json!(true);
        }
        let draft = EventDraft::state("m.room.member", target.as_str(), content);
        let built = self.rooms.build_for(&st, sender, &draft)?;
        crate::events::auth::check(
            &st.rules.authorization,
            &built.pdu,
            &st.state,
            &builder::index_by_id(&st.state),
        )?;
        // `invite_room_state` carries full signed PDUs (Matrix 1.16, MSC4311),
        // the create event among them: Synapse checks each against the room
        // version and its signatures, and warns (later: refuses) otherwise.
        let invite_state = full_events(
            self.rooms
                .summary_state_pdus(&st, Some(("m.room.member", sender.as_str())))
                .await?,
        )?;
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            enc(room_id.as_str()),
            enc(built.pdu.event_id.as_str())
        );
        let body = json!({
            "room_version": st.version.as_str(),
            "event": serde_json::from_str::<Value>(&built.json)?,
            "invite_room_state": invite_state,
        });
        let response = self
            .fed
            .client
            .request(target.server_name(), Method::PUT, &path, Some(body))
            .await
            .map_err(remote_error)?;
        let version = st.version.clone();
        let signed = self
            .check_pdu(room_id, &version, &response["event"])
            .await?;
        if signed.pdu.event_id != built.pdu.event_id {
            return Err(Error::unknown("the invitee's server changed the invite"));
        }
        self.rooms
            .persist_built(
                &mut st,
                Built {
                    pdu: signed.pdu,
                    json: signed.json,
                },
                sender,
            )
            .await?;
        Ok(())
    }

    /// Rejects (or retracts our acceptance of) an invite to a room we do not
    /// hold: `make_leave`/`send_leave` through the inviting server.
    pub async fn reject_remote_invite(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let storage = &self.core.storage;
        let Some(invite) = storage
            .federation
            .get_remote_invite(room_id.as_str(), user.as_str())
            .await?
        else {
            return Ok(false);
        };
        // A knock was ours: rescinding it goes through a server in the room.
        let inviter_server = match self.inviting_server(room_id, user).await? {
            Some(s) if !self.core.is_local(&s) => Some(s),
            _ => self.server_in_room(&invite, room_id),
        };
        let mut event_id = invite.event_id.clone();
        if let Some(server) = inviter_server {
            let attempt = async {
                let (version, mut object) = self
                    .make_remote(&server, room_id, user, "make_leave", false)
                    .await?;
                object.insert(
                    "content".into(),
                    ruma::canonical_json::to_canonical_value(json!({"membership": "leave"}))
                        .map_err(|e| Error::unknown(e.to_string()))?,
                );
                let (id, json) = self.sign_template(&version, object)?;
                let path = format!(
                    "/_matrix/federation/v2/send_leave/{}/{}",
                    enc(room_id.as_str()),
                    enc(id.as_str())
                );
                self.fed
                    .client
                    .request(
                        &server,
                        Method::PUT,
                        &path,
                        Some(serde_json::from_str(&json)?),
                    )
                    .await
                    .map_err(remote_error)?;
                Ok::<_, Error>(id)
            }
            .await;
            match attempt {
                Ok(id) => event_id = id.to_string(),
                // The invite is refused locally even if the inviter cannot be told.
                Err(e) => {
                    tracing::info!(%room_id, error = %e, "could not tell the inviting server")
                }
            }
        }
        let pos = self.core.stream.allocate();
        let result = async {
            storage
                .federation
                .set_membership_row(room_id.as_str(), user.as_str(), "leave", &event_id, pos)
                .await?;
            storage
                .federation
                .delete_remote_invite(room_id.as_str(), user.as_str())
                .await
        }
        .await;
        self.core
            .complete(pos, vec![WakeTarget::User(user.to_string())]);
        result?;
        Ok(true)
    }

    /// Whether this server is in the room (has a joined member), so it acts
    /// on the room itself rather than through another server.
    pub(super) async fn holds(&self, room: &RoomId) -> Result<bool> {
        Ok(match self.rooms.get(room).await? {
            Some(r) => r
                .read()
                .await
                .servers
                .contains_key(self.core.server_name.as_str()),
            None => false,
        })
    }

    /// The room, if this server is in it (has a joined member).
    async fn resident_room(&self, room_id: &RoomId) -> Result<crate::rooms::RoomHandle> {
        let room = self
            .rooms
            .get(room_id)
            .await?
            .ok_or_else(|| Error::not_found("This server is not in that room."))?;
        if !room
            .read()
            .await
            .servers
            .contains_key(self.core.server_name.as_str())
        {
            return Err(Error::not_found("This server is not in that room."));
        }
        Ok(room)
    }

    fn build_context<'a>(&'a self, st: &'a RoomState) -> BuildContext<'a> {
        BuildContext {
            room_id: Some(&st.room_id),
            rules: &st.rules,
            state: &st.state,
            prev_events: &st.extremities,
            max_depth: st.max_depth,
            server_name: self.core.server_name.as_str(),
            key: &self.core.key,
            now_ms: now_ms(),
        }
    }
}

/// What `complete_join` reads of a `send_join` v2 answer. The events are
/// kept as received: parsing 10,000 of them into values on the task that
/// received them, then converting each into canonical JSON, was a large
/// part of a remote join.
#[derive(serde::Deserialize)]
struct SendJoinAnswer {
    #[serde(default)]
    state: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    auth_chain: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    event: Option<Value>,
}

/// One `invite_room_state` entry as clients see it (`type`, `state_key`,
/// `sender`, `content`), whether the inviting server sent a full PDU or an
/// already stripped event; entries without a type and state key are dropped.
pub(super) fn strip_entry(entry: &Value) -> Option<Value> {
    let kind = entry.get("type")?.as_str()?;
    let state_key = entry.get("state_key")?.as_str()?;
    Some(json!({
        "type": kind,
        "state_key": state_key,
        "sender": entry.get("sender").cloned().unwrap_or(Value::Null),
        "content": entry.get("content").cloned().unwrap_or_else(|| json!({})),
    }))
}

fn full_events(pdus: Vec<String>) -> Result<Vec<Value>> {
    pdus.iter()
        .map(|json| serde_json::from_str(json).map_err(Into::into))
        .collect()
}
