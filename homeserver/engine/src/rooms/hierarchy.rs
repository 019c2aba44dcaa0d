//! Spaces: a room's entry in a space hierarchy (Client-Server "Spaces",
//! Server-Server "Spaces"). A space lists its children with `m.space.child`
//! state events (state key = child room id, `via` = servers to reach it);
//! only children with a non-empty `via` count.
//!
//! Who may see a room's entry: a user who is joined or invited, or anyone
//! when the room is world-readable or its join rule lets them ask or come in
//! (`public`, `knock`, `knock_restricted`), or, for `restricted` rooms, a
//! user joined to one of the allowed rooms. A server sees what its users
//! could: it gets restricted rooms with their `allowed_room_ids` to decide.

use ruma::{OwnedRoomId, OwnedServerName, RoomId};
use serde_json::{json, Value};

use super::{aliases::summary, RoomService, RoomState};
use crate::error::Result;

/// Who asks for a hierarchy entry.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    User(&'a str),
    /// Another server, on behalf of its users.
    Server(&'a str),
}

/// One room of a hierarchy: its summary with `children_state`, and the
/// children to visit next with the servers to ask.
#[derive(Clone, Debug)]
pub struct SpaceEntry {
    pub chunk: Value,
    pub children: Vec<(OwnedRoomId, Vec<OwnedServerName>)>,
}

impl RoomService {
    /// The room's hierarchy entry, if this server holds the room and `viewer`
    /// may see it; `Ok(None)` otherwise.
    pub async fn space_entry(
        &self,
        room_id: &RoomId,
        viewer: Viewer<'_>,
        suggested_only: bool,
    ) -> Result<Option<SpaceEntry>> {
        let Some(room) = self.get(room_id).await? else {
            return Ok(None);
        };
        let st = room.read().await;
        if st.state_event("m.room.create", "").is_none() {
            return Ok(None);
        }
        let allowed = allowed_rooms(&st);
        if !self.may_see(&st, viewer, &allowed).await? {
            return Ok(None);
        }
        let mut chunk = summary(&st);
        chunk["room_version"] = json!(st.version.as_str());
        if let Some(alg) = st
            .state_event("m.room.encryption", "")
            .and_then(|p| p.content_str("algorithm"))
        {
            chunk["encryption"] = json!(alg);
        }
        if matches!(viewer, Viewer::Server(_)) && !allowed.is_empty() {
            chunk["allowed_room_ids"] = json!(allowed);
        }
        let mut children_state = Vec::new();
        let mut children = Vec::new();
        let mut keys: Vec<&(String, String)> = st
            .state
            .keys()
            .filter(|(kind, _)| kind == "m.space.child")
            .collect();
        keys.sort();
        for key in keys {
            let Some(pdu) = st.state.get(key) else {
                continue;
            };
            let content = pdu.content_value();
            let via: Vec<OwnedServerName> = content["via"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
                .collect();
            let Ok(child) = OwnedRoomId::try_from(key.1.as_str()) else {
                continue;
            };
            if via.is_empty() || (suggested_only && content["suggested"] != json!(true)) {
                continue;
            }
            children_state.push(json!({
                "type": "m.space.child",
                "state_key": key.1,
                "sender": pdu.sender.as_str(),
                "origin_server_ts": u64::from(pdu.origin_server_ts.0),
                "content": content,
            }));
            children.push((child, via));
        }
        chunk["children_state"] = json!(children_state);
        Ok(Some(SpaceEntry { chunk, children }))
    }

    async fn may_see(
        &self,
        st: &RoomState,
        viewer: Viewer<'_>,
        allowed: &[String],
    ) -> Result<bool> {
        let rule = st.join_rule();
        if st.history_visibility() == "world_readable"
            || matches!(rule.as_str(), "public" | "knock" | "knock_restricted")
        {
            return Ok(true);
        }
        match viewer {
            Viewer::Server(server) => {
                Ok(st.servers.contains_key(server) || rule == "restricted" && !allowed.is_empty())
            }
            Viewer::User(user) => {
                if matches!(st.membership_of(user).as_deref(), Some("join" | "invite")) {
                    return Ok(true);
                }
                if rule != "restricted" {
                    return Ok(false);
                }
                let memberships = self.core.storage.rooms.memberships_for_user(user).await?;
                Ok(memberships
                    .iter()
                    .any(|m| m.membership == "join" && allowed.contains(&m.room_id)))
            }
        }
    }
}

/// The rooms whose members may join a `restricted` (or `knock_restricted`) room.
pub fn allowed_rooms(st: &RoomState) -> Vec<String> {
    let Some(rules) = st.state_event("m.room.join_rules", "") else {
        return Vec::new();
    };
    rules.content_value()["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "m.room_membership")
        .filter_map(|a| a["room_id"].as_str().map(str::to_owned))
        .collect()
}
