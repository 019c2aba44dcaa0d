//! Room aliases (`#name:server`) and the public room directory.

use ruma::{OwnedRoomId, RoomAliasId, UserId};

use super::RoomService;
use crate::error::{Error, Result};

impl RoomService {
    pub async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &ruma::RoomId,
        creator: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.core.server_name {
            return Err(Error::invalid_param("Alias must be on this server."));
        }
        self.require_joined(room_id, creator.as_str()).await?;
        if !self
            .core
            .storage
            .rooms
            .set_alias(alias.as_str(), room_id.as_str(), creator.as_str())
            .await?
        {
            return Err(Error::new(409, "M_UNKNOWN", "Room alias already exists."));
        }
        Ok(())
    }

    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        let (room_id, _) = self
            .core
            .storage
            .rooms
            .get_alias(alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found."))?;
        OwnedRoomId::try_from(room_id).map_err(|e| Error::unknown(e.to_string()))
    }

    /// Deletes an alias; its creator or a room moderator may.
    pub async fn delete_alias(
        &self,
        alias: &RoomAliasId,
        user: &UserId,
        is_admin: bool,
    ) -> Result<()> {
        let (room_id, creator) = self
            .core
            .storage
            .rooms
            .get_alias(alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found."))?;
        if creator != user.as_str() && !is_admin {
            let room_id =
                OwnedRoomId::try_from(room_id).map_err(|e| Error::unknown(e.to_string()))?;
            let room = self.require_joined(&room_id, user.as_str()).await?;
            let st = room.read().await;
            let levels = st
                .state_event("m.room.power_levels", "")
                .map(|p| p.content_value())
                .unwrap_or_default();
            let needed = levels["events"]["m.room.canonical_alias"]
                .as_i64()
                .or(levels["state_default"].as_i64())
                .unwrap_or(50);
            if super::send::user_power(&st, &levels, user.as_str()) < needed {
                return Err(Error::forbidden("You may not delete this alias."));
            }
        }
        self.core.storage.rooms.delete_alias(alias.as_str()).await?;
        Ok(())
    }

    /// Public rooms with their summary fields, as `/publicRooms` returns them.
    pub async fn public_rooms(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for id in self.core.storage.rooms.public_rooms().await? {
            let Ok(room_id) = OwnedRoomId::try_from(id.as_str()) else {
                continue;
            };
            let Some(room) = self.get(&room_id).await? else {
                continue;
            };
            let chunk = summary(&*room.read().await);
            out.push(chunk);
        }
        Ok(out)
    }

    /// One page of the public room directory, as `/publicRooms` (client and
    /// federation) answers it: rooms matching `term` (in name, topic or
    /// canonical alias, case-insensitively), `since` being an `o<offset>`
    /// token from an earlier page's `next_batch` or `prev_batch`.
    pub async fn public_rooms_page(
        &self,
        limit: Option<usize>,
        since: Option<&str>,
        term: Option<&str>,
    ) -> Result<serde_json::Value> {
        Ok(page(self.public_rooms().await?, limit, since, term))
    }
}

/// The fields the directory and the space hierarchy show of a room.
pub(crate) fn summary(st: &super::RoomState) -> serde_json::Value {
    let mut chunk = serde_json::json!({
        "room_id": st.room_id,
        "num_joined_members": st.joined.len(),
        "world_readable": st.history_visibility() == "world_readable",
        "guest_can_join": st
            .state_event("m.room.guest_access", "")
            .and_then(|p| p.content_str("guest_access"))
            .as_deref()
            == Some("can_join"),
        "join_rule": st.join_rule(),
    });
    for (kind, field, out_field) in [
        ("m.room.name", "name", "name"),
        ("m.room.topic", "topic", "topic"),
        ("m.room.avatar", "url", "avatar_url"),
        ("m.room.canonical_alias", "alias", "canonical_alias"),
    ] {
        if let Some(v) = st.state_event(kind, "").and_then(|p| p.content_str(field)) {
            chunk[out_field] = serde_json::json!(v);
        }
    }
    if let Some(t) = st
        .state_event("m.room.create", "")
        .and_then(|p| p.content_str("type"))
    {
        chunk["room_type"] = serde_json::json!(t);
    }
    chunk
}

fn page(
    all: Vec<serde_json::Value>,
    limit: Option<usize>,
    since: Option<&str>,
    term: Option<&str>,
) -> serde_json::Value {
    let term = term.map(str::to_lowercase);
    let filtered: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|r| {
            term.as_deref().is_none_or(|t| {
                ["name", "topic", "canonical_alias"]
                    .iter()
                    .any(|f| r[*f].as_str().is_some_and(|s| s.to_lowercase().contains(t)))
            })
        })
        .collect();
    let total = filtered.len();
    let offset = since
        .and_then(|s| s.strip_prefix('o'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(total);
    let limit = limit.unwrap_or(total.max(1)).max(1);
    let chunk: Vec<serde_json::Value> = filtered.into_iter().skip(offset).take(limit).collect();
    let mut out = serde_json::json!({"chunk": chunk, "total_room_count_estimate": total});
    if offset + limit < total {
        out["next_batch"] = serde_json::json!(format!("o{}", offset + limit));
    }
    if offset > 0 {
        out["prev_batch"] = serde_json::json!(format!("o{}", offset.saturating_sub(limit)));
    }
    out
}
