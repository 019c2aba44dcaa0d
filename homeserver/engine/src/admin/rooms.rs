//! Rooms: list (sorted, searched, paged), details, members, state, block,
//! and purging history while keeping state.
//!
//! The listing reads every room's counts and summary state in two queries
//! and sorts in memory: fine for the rooms of a regional server today; a
//! stats table kept up to date by the send path is the way past millions.

use std::{cmp::Ordering, collections::HashMap};

use ruma::UserId;
use serde_json::{json, Value};

use super::{
    parse_room_id,
    users::{parse_dir, parse_page},
    AdminService,
};
use crate::{
    error::{Error, Result},
    events::client_format::to_client,
    storage::admin::{AdminJobRecord, HistoryPurge, RoomStatsRecord},
    util::{now_ms, random_string},
};

/// State events the listing shows (all with an empty state key).
const SUMMARY_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.encryption",
];

#[derive(Clone, Debug, Default)]
pub struct RoomListQuery {
    pub from: Option<String>,
    pub limit: Option<i64>,
    pub order_by: Option<String>,
    pub dir: Option<String>,
    pub search_term: Option<String>,
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`.
#[derive(Clone, Debug, Default)]
pub struct PurgeHistoryRequest {
    pub event_id: Option<String>,
    pub purge_up_to_ts: Option<i64>,
    pub delete_local_events: bool,
}

/// One room as the listing shows it.
struct Summary {
    stats: RoomStatsRecord,
    content: HashMap<String, Value>,
}

impl Summary {
    fn field(&self, event_type: &str, key: &str) -> Value {
        self.content
            .get(event_type)
            .and_then(|c| c.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn text(&self, event_type: &str, key: &str) -> Option<String> {
        self.field(event_type, key).as_str().map(str::to_owned)
    }

    fn to_json(&self) -> Value {
        let s = &self.stats;
        let federatable = self
            .field("m.room.create", "m.federate")
            .as_bool()
            .unwrap_or(true);
        json!({
            "room_id": s.room_id,
            "name": self.text("m.room.name", "name"),
            "canonical_alias": self.text("m.room.canonical_alias", "alias"),
            "joined_members": s.joined_members,
            "joined_local_members": s.joined_local_members,
            "version": s.room_version,
            "creator": s.creator,
            "encryption": self.text("m.room.encryption", "algorithm"),
            "federatable": federatable,
            "public": s.is_public,
            "join_rules": self.text("m.room.join_rules", "join_rule"),
            "guest_access": self.text("m.room.guest_access", "guest_access"),
            "history_visibility": self.text("m.room.history_visibility", "history_visibility"),
            "state_events": s.state_events,
            "room_type": self.text("m.room.create", "type"),
        })
    }
}

/// Compares two optional strings with absent values last.
fn cmp_text(a: Option<String>, b: Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Compares two rooms for one `order_by`.
type RoomOrder = dyn Fn(&Summary, &Summary) -> Ordering;

fn sort_rooms(rooms: &mut [Summary], order_by: &str) -> Result<()> {
    let text = |t: &'static str, k: &'static str| {
        move |a: &Summary, b: &Summary| cmp_text(a.text(t, k), b.text(t, k))
    };
    let cmp: Box<RoomOrder> = match order_by {
        "name" | "alphabetical" => Box::new(text("m.room.name", "name")),
        "canonical_alias" => Box::new(text("m.room.canonical_alias", "alias")),
        "joined_members" | "size" => {
            Box::new(|a: &Summary, b: &Summary| b.stats.joined_members.cmp(&a.stats.joined_members))
        }
        "joined_local_members" => Box::new(|a: &Summary, b: &Summary| {
            b.stats
                .joined_local_members
                .cmp(&a.stats.joined_local_members)
        }),
        "state_events" => {
            Box::new(|a: &Summary, b: &Summary| b.stats.state_events.cmp(&a.stats.state_events))
        }
        "version" => Box::new(|a: &Summary, b: &Summary| {
            let v = |s: &Summary| s.stats.room_version.parse::<i64>().unwrap_or(0);
            v(b).cmp(&v(a))
        }),
        "creator" => Box::new(|a: &Summary, b: &Summary| a.stats.creator.cmp(&b.stats.creator)),
        "encryption" => Box::new(text("m.room.encryption", "algorithm")),
        "federatable" => Box::new(|a: &Summary, b: &Summary| {
            let f = |s: &Summary| s.to_json()["federatable"].as_bool().unwrap_or(true);
            f(b).cmp(&f(a))
        }),
        "public" => Box::new(|a: &Summary, b: &Summary| b.stats.is_public.cmp(&a.stats.is_public)),
        "join_rules" => Box::new(text("m.room.join_rules", "join_rule")),
        "guest_access" => Box::new(text("m.room.guest_access", "guest_access")),
        "history_visibility" => Box::new(text("m.room.history_visibility", "history_visibility")),
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown value for order_by: {other}"
            )))
        }
    };
    rooms.sort_by(|a, b| cmp(a, b).then_with(|| a.stats.room_id.cmp(&b.stats.room_id)));
    Ok(())
}

impl AdminService {
    async fn summaries(&self, room_id: Option<&str>) -> Result<Vec<Summary>> {
        let store = &self.core.storage.admin;
        let stats = store.room_stats(room_id, &self.local_suffix()).await?;
        let mut content: HashMap<String, HashMap<String, Value>> = HashMap::new();
        for (room, event_type, pdu) in store.summary_state(room_id, SUMMARY_TYPES).await? {
            let pdu: Value = serde_json::from_str(&pdu).unwrap_or(Value::Null);
            content
                .entry(room)
                .or_default()
                .insert(event_type, pdu["content"].clone());
        }
        Ok(stats
            .into_iter()
            .map(|s| Summary {
                content: content.remove(&s.room_id).unwrap_or_default(),
                stats: s,
            })
            .collect())
    }

    /// `GET /_synapse/admin/v1/rooms`.
    pub async fn list_rooms(&self, q: RoomListQuery) -> Result<Value> {
        let (from, limit) = parse_page(q.from.as_deref(), q.limit)?;
        let backwards = parse_dir(q.dir.as_deref())?;
        let mut rooms = self.summaries(None).await?;
        if let Some(term) = q.search_term.as_deref().filter(|t| !t.is_empty()) {
            let term = term.to_lowercase();
            rooms.retain(|r| {
                r.stats.room_id.to_lowercase().contains(&term)
                    || r.text("m.room.name", "name")
                        .is_some_and(|n| n.to_lowercase().contains(&term))
                    || r.text("m.room.canonical_alias", "alias")
                        .is_some_and(|a| a.to_lowercase().contains(&term))
            });
        }
        sort_rooms(&mut rooms, q.order_by.as_deref().unwrap_or("name"))?;
        if backwards {
            rooms.reverse();
        }
        let total = rooms.len() as i64;
        let page: Vec<Value> = rooms
            .iter()
            .skip(from as usize)
            .take(limit as usize)
            .map(Summary::to_json)
            .collect();
        let mut out = json!({"rooms": page, "offset": from, "total_rooms": total});
        if from + (page.len() as i64) < total && !page.is_empty() {
            out["next_batch"] = json!(from + page.len() as i64);
        }
        if from > 0 {
            out["prev_batch"] = json!((from - limit).max(0));
        }
        Ok(out)
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}`.
    pub async fn room_details(&self, raw_room_id: &str) -> Result<Value> {
        let room_id = parse_room_id(raw_room_id)?;
        let summary = self
            .summaries(Some(room_id.as_str()))
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("Room not found."))?;
        let mut out = summary.to_json();
        out["topic"] = json!(summary.text("m.room.topic", "topic"));
        out["avatar"] = json!(summary.text("m.room.avatar", "url"));
        let mut devices = 0;
        for user in self.joined_members(room_id.as_str()).await? {
            if user.ends_with(&self.local_suffix()) {
                devices += self.core.storage.accounts.list_devices(&user).await?.len();
            }
        }
        out["joined_local_devices"] = json!(devices);
        out["forgotten"] = json!(false);
        out["blocked"] = json!(self.is_room_blocked(room_id.as_str()).await?);
        Ok(out)
    }

    async fn joined_members(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(self
            .core
            .storage
            .rooms
            .members(room_id)
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.user_id)
            .collect())
    }

    async fn require_room(&self, raw_room_id: &str) -> Result<ruma::OwnedRoomId> {
        let room_id = parse_room_id(raw_room_id)?;
        if self
            .core
            .storage
            .rooms
            .get_room(room_id.as_str())
            .await?
            .is_none()
        {
            return Err(Error::not_found("Room not found."));
        }
        Ok(room_id)
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/members`: joined members.
    pub async fn room_members(&self, raw_room_id: &str) -> Result<Value> {
        let room_id = self.require_room(raw_room_id).await?;
        let members = self.joined_members(room_id.as_str()).await?;
        Ok(json!({"total": members.len(), "members": members}))
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/state`: the current state.
    pub async fn room_state(&self, raw_room_id: &str) -> Result<Value> {
        let room_id = self.require_room(raw_room_id).await?;
        let now = now_ms();
        let state: Vec<Value> = self
            .core
            .storage
            .timeline
            .current_state_events(room_id.as_str())
            .await?
            .iter()
            .map(|ev| to_client(ev, None, now, true))
            .collect();
        Ok(json!({"state": state}))
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/block`. Any well-formed room id
    /// may be asked about, known here or not.
    pub async fn room_block_status(&self, raw_room_id: &str) -> Result<Value> {
        let room_id = parse_room_id(raw_room_id)?;
        Ok(
            match self
                .core
                .storage
                .admin
                .room_blocked_by(room_id.as_str())
                .await?
            {
                Some(by) => json!({"block": true, "user_id": by}),
                None => json!({"block": false}),
            },
        )
    }

    /// `PUT /_synapse/admin/v1/rooms/{roomId}/block`. Blocking a room unknown
    /// here pre-empts it; both directions are idempotent.
    pub async fn set_room_block(
        &self,
        admin: &UserId,
        raw_room_id: &str,
        block: bool,
    ) -> Result<Value> {
        let room_id = parse_room_id(raw_room_id)?;
        self.core
            .storage
            .admin
            .set_room_blocked(room_id.as_str(), block.then_some(admin.as_str()))
            .await?;
        Ok(json!({"block": block}))
    }

    /// Purges a room's history up to an event or a timestamp, keeping every
    /// state event (and the latest events, which later events point at).
    /// Runs before answering; the job is recorded so its status can be read
    /// at `/_synapse/admin/v1/purge_history_status/{purgeId}` as in Synapse.
    pub async fn purge_history(
        &self,
        raw_room_id: &str,
        req: PurgeHistoryRequest,
    ) -> Result<Value> {
        let room_id = self.require_room(raw_room_id).await?;
        let before_pos = match &req.event_id {
            Some(id) => {
                let ev = self
                    .core
                    .storage
                    .timeline
                    .get_event(id)
                    .await?
                    .filter(|ev| ev.room_id == room_id.as_str())
                    .ok_or_else(|| Error::not_found("Event not found in this room."))?;
                Some(ev.stream_pos)
            }
            None => None,
        };
        if before_pos.is_none() && req.purge_up_to_ts.is_none() {
            return Err(Error::missing_param(
                "One of purge_up_to_event_id or purge_up_to_ts is required.",
            ));
        }
        let purge = HistoryPurge {
            room_id: room_id.to_string(),
            before_pos,
            before_ts: req.purge_up_to_ts,
            keep_sender_suffix: (!req.delete_local_events).then(|| self.local_suffix()),
        };
        let purge_id = random_string(16);
        let mut job = AdminJobRecord {
            job_id: purge_id.clone(),
            kind: "purge_history".into(),
            room_id: room_id.to_string(),
            status: "active".into(),
            error: None,
            result_json: None,
            started_ts: now_ms(),
        };
        self.core.storage.admin.put_job(&job).await?;
        let purged = self.core.storage.admin.purge_history(&purge).await;
        if let Ok(Some(room)) = self.rooms.get(&room_id).await {
            // Syncs must not serve purged events from memory.
            room.write().await.recent.clear();
        }
        match purged {
            Ok(deleted) => {
                job.status = "complete".into();
                job.result_json = Some(json!({"deleted_events": deleted}).to_string());
                tracing::info!(target: "audit", room = %room_id, deleted, "purged room history");
            }
            Err(e) => {
                job.status = "failed".into();
                job.error = Some(e.message.clone());
            }
        }
        self.core.storage.admin.put_job(&job).await?;
        Ok(json!({"purge_id": purge_id}))
    }

    /// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`.
    pub async fn purge_status(&self, purge_id: &str) -> Result<Value> {
        let job = self
            .core
            .storage
            .admin
            .get_job(purge_id)
            .await?
            .filter(|j| j.kind == "purge_history")
            .ok_or_else(|| Error::not_found("Purge not found."))?;
        let mut out = json!({"status": job.status});
        if let Some(e) = job.error {
            out["error"] = json!(e);
        }
        if let Some(Ok(Value::Object(r))) = job.result_json.as_deref().map(serde_json::from_str) {
            for (k, v) in r {
                out[k] = v;
            }
        }
        Ok(out)
    }
}
