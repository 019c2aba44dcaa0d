//! `createRoom`: the create event, the creator's join, power levels, the
//! preset's rules, initial state, name, topic and invites, in that order.

use std::{collections::HashSet, sync::Arc};

use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Value};

use super::{RoomService, RoomState};
use crate::{
    error::{Error, Result},
    events::{
        auth,
        auth::StateMap,
        builder::{self, BuildContext, Built, EventDraft},
    },
    storage::RoomRecord,
    util::now_ms,
};

pub const DEFAULT_ROOM_VERSION: &str = "12";
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// The parts of a `createRoom` request the service acts on.
#[derive(Debug, Default, Clone)]
pub struct CreateRoom {
    pub room_version: Option<String>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: Option<String>,
    pub is_public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<String>,
    pub is_direct: bool,
    pub creation_content: Option<serde_json::Map<String, Value>>,
    pub initial_state: Vec<EventDraft>,
    pub power_level_content_override: Option<serde_json::Map<String, Value>>,
}

impl RoomService {
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let core = self.core.clone();
        let version_str = req
            .room_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOM_VERSION.to_owned());
        if !SUPPORTED_ROOM_VERSIONS.contains(&version_str.as_str()) {
            return Err(Error::unsupported_room_version(&version_str));
        }
        let version = RoomVersionId::try_from(version_str.as_str())
            .map_err(|_| Error::unsupported_room_version(&version_str))?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version(&version_str))?;
        for invitee in &req.invite {
            UserId::parse(invitee).map_err(|_| {
                Error::invalid_param(format!("Invalid user id to invite: {invitee}"))
            })?;
        }
        let alias = match &req.alias_localpart {
            Some(local) => {
                let alias = format!("#{local}:{}", core.server_name);
                ruma::RoomAliasId::parse(&alias)
                    .map_err(|_| Error::new(400, "M_INVALID_PARAM", "Invalid room alias."))?;
                if core.storage.rooms.get_alias(&alias).await?.is_some() {
                    return Err(Error::room_in_use());
                }
                Some(alias)
            }
            None => None,
        };
        let preset = req.preset.clone().unwrap_or_else(|| {
            if req.is_public {
                "public_chat".into()
            } else {
                "private_chat".into()
            }
        });

        // 1. m.room.create — for v12 its reference hash names the room.
        let mut create_content = req.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), json!(version_str));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), json!(creator));
        }
        let mut additional_creators: HashSet<String> = HashSet::new();
        if preset == "trusted_private_chat" && rules.authorization.additional_room_creators {
            for invitee in &req.invite {
                additional_creators.insert(invitee.clone());
            }
            if !additional_creators.is_empty() {
                create_content.insert("additional_creators".into(), json!(req.invite));
            }
        }
        let random_room_id;
        let room_id_for_build: Option<&RoomId> =
            if rules.authorization.room_create_event_id_as_room_id {
                None
            } else {
                random_room_id = RoomId::parse(format!(
                    "!{}:{}",
                    crate::util::random_string(18),
                    core.server_name
                ))
                .map_err(|e| Error::unknown(e.to_string()))?;
                Some(&random_room_id)
            };
        let empty = StateMap::new();
        let draft = EventDraft::state("m.room.create", "", Value::Object(create_content));
        let ctx = BuildContext {
            room_id: room_id_for_build,
            rules: &rules,
            state: &empty,
            prev_events: &[],
            max_depth: 0,
            server_name: core.server_name.as_str(),
            key: &core.key,
            now_ms: now_ms(),
        };
        let built = builder::build(&ctx, creator, &draft)?;
        auth::check(
            &rules.authorization,
            &built.pdu,
            &empty,
            &Default::default(),
        )?;
        let room_id = built.pdu.room_id.clone();
        // Plan every event against a scratch copy of the room first: if any is
        // refused, nothing has been stored.
        let mut st = RoomState {
            room_id: room_id.clone(),
            version,
            rules,
            state: StateMap::new(),
            extremities: Vec::new(),
            max_depth: 0,
            snapshot: 0,
            latest_pos: 0,
            joined: Default::default(),
            invited: Default::default(),
            servers: Default::default(),
            large_threshold: core.config.limits.large_room_members,
            recent: Default::default(),
        };
        let mut planned = Vec::new();
        apply_to_scratch(&mut st, &built);
        planned.push(built);

        // 2. The creator joins.
        let profile = core.storage.accounts.get_user(creator.as_str()).await?;
        let mut member = json!({"membership": "join"});
        if let Some(p) = &profile {
            if let Some(name) = &p.displayname {
                member["displayname"] = json!(name);
            }
            if let Some(url) = &p.avatar_url {
                member["avatar_url"] = json!(url);
            }
        }
        planned.push(self.plan(
            &mut st,
            creator,
            EventDraft::state("m.room.member", creator.as_str(), member),
        )?);

        // 3. Power levels; v12 creators are implicit and must not be listed.
        let privileged = st.rules.authorization.explicitly_privilege_room_creators;
        let mut users = serde_json::Map::new();
        if !privileged {
            users.insert(creator.to_string(), json!(100));
        }
        if preset == "trusted_private_chat" {
            for invitee in &req.invite {
                if !(privileged && additional_creators.contains(invitee)) {
                    users.insert(invitee.clone(), json!(100));
                }
            }
        }
        let mut levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": 0,
            "notifications": {"room": 50},
        });
        if let Some(overrides) = req.power_level_content_override {
            for (k, v) in overrides {
                levels[k] = v;
            }
        }
        planned.push(self.plan(
            &mut st,
            creator,
            EventDraft::state("m.room.power_levels", "", levels),
        )?);

        // 4. Canonical alias.
        if let Some(alias) = &alias {
            planned.push(self.plan(
                &mut st,
                creator,
                EventDraft::state("m.room.canonical_alias", "", json!({"alias": alias})),
            )?);
        }

        // 5. The preset's join rules, history visibility and guest access.
        let join_rule = if preset == "public_chat" {
            "public"
        } else {
            "invite"
        };
        let preset_events = [
            ("m.room.join_rules", json!({"join_rule": join_rule})),
            (
                "m.room.history_visibility",
                json!({"history_visibility": "shared"}),
            ),
            (
                "m.room.guest_access",
                json!({"guest_access": if preset == "public_chat" { "forbidden" } else { "can_join" }}),
            ),
        ];
        let overridden: HashSet<(String, String)> = req
            .initial_state
            .iter()
            .map(|d| (d.kind.clone(), d.state_key.clone().unwrap_or_default()))
            .collect();
        for (kind, content) in preset_events {
            if !overridden.contains(&(kind.to_owned(), String::new())) {
                planned.push(self.plan(&mut st, creator, EventDraft::state(kind, "", content))?);
            }
        }

        // 6. initial_state, then 7. name and topic.
        for draft in req.initial_state {
            if draft.kind == "m.room.create"
                || draft.kind == "m.room.member"
                || draft.kind == "m.room.power_levels"
            {
                continue;
            }
            planned.push(self.plan(&mut st, creator, draft)?);
        }
        if let Some(name) = req.name {
            planned.push(self.plan(
                &mut st,
                creator,
                EventDraft::state("m.room.name", "", json!({"name": name})),
            )?);
        }
        if let Some(topic) = req.topic {
            let content = json!({"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}});
            planned.push(self.plan(
                &mut st,
                creator,
                EventDraft::state("m.room.topic", "", content),
            )?);
        }

        // 8. Invites. Users of other servers are invited over federation once
        // the room exists (their server must countersign the invite).
        for invitee in &req.invite {
            if super::server_of(invitee) != core.server_name.as_str() {
                continue;
            }
            let mut content = json!({"membership": "invite"});
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            if let Ok(Some(p)) = core.storage.accounts.get_user(invitee).await {
                if let Some(name) = p.displayname {
                    content["displayname"] = json!(name);
                }
            }
            planned.push(self.plan(
                &mut st,
                creator,
                EventDraft::state("m.room.member", invitee, content),
            )?);
        }

        // Every event is authorised: store the room, then persist them in order.
        core.storage
            .rooms
            .create_room(&RoomRecord {
                room_id: room_id.to_string(),
                room_version: version_str.clone(),
                creator: creator.to_string(),
                is_public: req.is_public,
            })
            .await?;
        if let Some(alias) = &alias {
            if !core
                .storage
                .rooms
                .set_alias(alias, room_id.as_str(), creator.as_str())
                .await?
            {
                tracing::warn!(%alias, "alias was taken while the room was being created");
            }
        }
        let handle = self.insert(RoomState {
            room_id: room_id.clone(),
            version: st.version.clone(),
            rules: st.rules.clone(),
            state: StateMap::new(),
            extremities: Vec::new(),
            max_depth: 0,
            snapshot: 0,
            latest_pos: 0,
            joined: Default::default(),
            invited: Default::default(),
            servers: Default::default(),
            large_threshold: core.config.limits.large_room_members,
            recent: Default::default(),
        });
        let mut live = handle.write().await;
        for built in planned {
            self.persist(&mut live, built, None, creator).await?;
        }
        Ok(room_id)
    }

    /// Builds and authorises an event against a scratch room, and applies it there.
    fn plan(&self, st: &mut RoomState, sender: &UserId, draft: EventDraft) -> Result<Built> {
        let built = self.build(st, sender, &draft)?;
        auth::check(
            &st.rules.authorization,
            &built.pdu,
            &st.state,
            &builder::index_by_id(&st.state),
        )?;
        apply_to_scratch(st, &built);
        Ok(built)
    }
}

/// Advances a scratch room past a planned event (nothing is persisted).
fn apply_to_scratch(st: &mut RoomState, built: &Built) {
    let pdu = &built.pdu;
    st.extremities = vec![pdu.event_id.clone()];
    st.max_depth = st.max_depth.max(pdu.depth);
    if let Some(key) = &pdu.state_key {
        if pdu.kind.to_string() == "m.room.member" {
            if let Some(m) = pdu.content_str("membership") {
                st.track_membership(key, &m);
            }
        }
        st.state
            .insert((pdu.kind.to_string(), key.clone()), Arc::new(pdu.clone()));
    }
}
