//! Space hierarchies across servers. A client walks a space breadth-first
//! (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): rooms this server
//! holds are read locally, others are asked of a server in their `via` list
//! with `GET /_matrix/federation/v1/hierarchy/{roomId}`, which answers a room
//! with its accessible children in one go. We serve that endpoint for rooms
//! we hold.

use std::collections::{HashMap, HashSet, VecDeque};

use http::Method;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::rooms::{enc, remote_error, RoomFederation};
use crate::{
    error::{Error, Result},
    rooms::hierarchy::{SpaceEntry, Viewer},
};

/// Rooms visited per walk, whatever the page size: bounds the work one
/// request can cause on this and other servers.
const MAX_ROOMS: usize = 500;
const DEFAULT_LIMIT: usize = 50;

/// The client's parameters; `from` must come from a walk with the same
/// `suggested_only` and `max_depth`.
#[derive(Clone, Debug, Default)]
pub struct HierarchyQuery {
    pub suggested_only: bool,
    pub max_depth: Option<usize>,
    pub limit: Option<usize>,
    pub from: Option<String>,
}

impl HierarchyQuery {
    fn token(&self, offset: usize) -> String {
        let depth = self.max_depth.map(|d| d.to_string()).unwrap_or_default();
        format!("{offset}_{}_{depth}", u8::from(self.suggested_only))
    }

    /// The offset a `from` token resumes at.
    fn offset(&self) -> Result<usize> {
        let Some(from) = &self.from else {
            return Ok(0);
        };
        let mut parts = from.splitn(2, '_');
        let offset = parts.next().and_then(|o| o.parse().ok());
        match offset {
            Some(offset) if self.token(offset) == *from => Ok(offset),
            Some(_) => Err(Error::invalid_param(
                "suggested_only and max_depth cannot change on paginated requests",
            )),
            None => Err(Error::invalid_param("Unknown pagination token.")),
        }
    }
}

impl RoomFederation {
    /// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` for a local user.
    pub async fn hierarchy(
        &self,
        root: &RoomId,
        user: &UserId,
        q: &HierarchyQuery,
    ) -> Result<Value> {
        let offset = q.offset()?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_ROOMS);
        let mut rooms: Vec<Value> = Vec::new();
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        // Chunks of children that came with a remote parent's answer.
        let mut known: HashMap<OwnedRoomId, Value> = HashMap::new();
        let mut queue: VecDeque<(OwnedRoomId, usize, Vec<OwnedServerName>)> = VecDeque::new();
        let root_via = root
            .server_name()
            .map(ToOwned::to_owned)
            .into_iter()
            .collect();
        queue.push_back((root.to_owned(), 0, root_via));
        while let Some((room, depth, via)) = queue.pop_front() {
            if rooms.len() >= MAX_ROOMS || rooms.len() > offset + limit {
                break;
            }
            if !seen.insert(room.clone()) {
                continue;
            }
            let entry = match self
                .rooms
                .space_entry(&room, Viewer::User(user.as_str()), q.suggested_only)
                .await?
            {
                Some(entry) => Some(entry),
                None if self.holds(&room).await? => None,
                None => {
                    self.remote_entry(&room, &via, q.suggested_only, &mut known)
                        .await
                }
            };
            let Some(entry) = entry else {
                if room == root {
                    return Err(Error::forbidden("You may not see this room."));
                }
                continue;
            };
            if q.max_depth.is_none_or(|max| depth < max) {
                for (child, via) in entry.children {
                    queue.push_back((child, depth + 1, via));
                }
            }
            rooms.push(entry.chunk);
        }
        let more = rooms.len() > offset + limit;
        let page: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
        let mut out = json!({ "rooms": page });
        if more {
            out["next_batch"] = json!(q.token(offset + limit));
        }
        Ok(out)
    }

    /// A room held elsewhere: from an earlier answer, or asked of `via`.
    async fn remote_entry(
        &self,
        room: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
        known: &mut HashMap<OwnedRoomId, Value>,
    ) -> Option<SpaceEntry> {
        for server in via.iter().filter(|s| !self.core.is_local(s)) {
            let path = format!(
                "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
                enc(room.as_str())
            );
            let answer = match self
                .fed
                .client
                .request(server, Method::GET, &path, None)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(%server, %room, error = %remote_error(e), "remote hierarchy failed");
                    continue;
                }
            };
            if answer["room"]["room_id"] != room.as_str() {
                continue;
            }
            for child in answer["children"].as_array().into_iter().flatten() {
                if let Some(id) = child["room_id"]
                    .as_str()
                    .and_then(|r| OwnedRoomId::try_from(r).ok())
                {
                    known.insert(id, child.clone());
                }
            }
            return Some(entry_of(answer["room"].clone()));
        }
        // A child the parent's server described without its own children.
        known.remove(room).map(entry_of)
    }

    /// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `origin`.
    pub async fn serve_hierarchy(
        &self,
        origin: &ServerName,
        room: &RoomId,
        suggested_only: bool,
    ) -> Result<Value> {
        let viewer = Viewer::Server(origin.as_str());
        let entry = self
            .rooms
            .space_entry(room, viewer, suggested_only)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room, or not accessible."))?;
        let mut children = Vec::new();
        let mut inaccessible = Vec::new();
        for (child, _) in &entry.children {
            match self.rooms.space_entry(child, viewer, false).await? {
                Some(c) => {
                    let mut chunk = c.chunk;
                    if let Some(o) = chunk.as_object_mut() {
                        o.remove("children_state");
                    }
                    children.push(chunk);
                }
                // Held here but closed to that server; unknown ones are left out.
                None if self.holds(child).await? => inaccessible.push(child.to_string()),
                None => {}
            }
        }
        Ok(json!({
            "room": entry.chunk,
            "children": children,
            "inaccessible_children": inaccessible,
        }))
    }
}

/// A remote chunk as an entry: its children come from its `children_state`.
fn entry_of(chunk: Value) -> SpaceEntry {
    let children = chunk["children_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let id = OwnedRoomId::try_from(e["state_key"].as_str()?).ok()?;
            let via: Vec<OwnedServerName> = e["content"]["via"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
                .collect();
            (!via.is_empty()).then_some((id, via))
        })
        .collect();
    let mut chunk = chunk;
    if let Some(o) = chunk.as_object_mut() {
        // What a server tells another server only.
        o.remove("allowed_room_ids");
        o.entry("children_state").or_insert_with(|| json!([]));
    }
    SpaceEntry { chunk, children }
}
