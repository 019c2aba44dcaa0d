//! Deleting (shutting down) a room: every local member leaves, optionally
//! into a new notice room that explains why; the room may be blocked and its
//! data purged. As in Synapse, this is a job: `DELETE /v2/rooms/{roomId}`
//! answers a `delete_id` at once and the status endpoints report progress;
//! `DELETE /v1/rooms/{roomId}` waits and answers the outcome.
//!
//! Every step is idempotent: deleting a room twice (or a room this server
//! never had) completes with nothing left to do.

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::{parse_room_id, AdminService};
use crate::{
    error::{Error, Result},
    events::builder::EventDraft,
    rooms::CreateRoom,
    storage::admin::AdminJobRecord,
    util::{now_ms, random_string},
};

const DEFAULT_ROOM_NAME: &str = "Content Violation Notification";
const DEFAULT_MESSAGE: &str =
    "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

/// The body of `DELETE /_synapse/admin/v{1,2}/rooms/{roomId}`.
#[derive(Clone, Debug)]
pub struct DeleteRoomRequest {
    /// The admin who asked (recorded as the blocker).
    pub requested_by: String,
    pub new_room_user_id: Option<String>,
    pub room_name: Option<String>,
    pub message: Option<String>,
    pub block: bool,
    pub purge: bool,
    pub force_purge: bool,
}

impl Default for DeleteRoomRequest {
    fn default() -> Self {
        Self {
            requested_by: String::new(),
            new_room_user_id: None,
            room_name: None,
            message: None,
            block: false,
            purge: true,
            force_purge: false,
        }
    }
}

/// What a shutdown did, in Synapse's `shutdown_room` shape.
#[derive(Default)]
struct Outcome {
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
    new_room_id: Option<String>,
}

impl Outcome {
    fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}

fn job_json(job: &AdminJobRecord) -> Value {
    let shutdown = job
        .result_json
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| Outcome::default().to_json());
    let mut out = json!({
        "delete_id": job.job_id,
        "room_id": job.room_id,
        "status": job.status,
        "shutdown_room": shutdown,
    });
    if let Some(e) = &job.error {
        out["error"] = json!(e);
    }
    out
}

impl AdminService {
    /// Starts deleting a room. With `wait`, runs to the end and answers the
    /// outcome (v1); otherwise answers `{delete_id}` at once (v2).
    pub async fn delete_room(
        &self,
        raw_room_id: &str,
        req: DeleteRoomRequest,
        wait: bool,
    ) -> Result<Value> {
        let room_id = parse_room_id(raw_room_id)?;
        let notice_sender = match &req.new_room_user_id {
            Some(raw) => Some(self.existing_user(raw).await?),
            None => None,
        };
        let job = AdminJobRecord {
            job_id: random_string(16),
            kind: "delete_room".into(),
            room_id: room_id.to_string(),
            status: "active".into(),
            error: None,
            result_json: None,
            started_ts: now_ms(),
        };
        self.core.storage.admin.put_job(&job).await?;
        if wait {
            let job = self.run_delete(job, room_id, notice_sender, req).await?;
            if let Some(e) = job.error {
                return Err(Error::unknown(e));
            }
            let mut out = job_json_outcome(&job);
            out["delete_id"] = json!(job.job_id);
            return Ok(out);
        }
        let delete_id = job.job_id.clone();
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run_delete(job, room_id, notice_sender, req).await {
                tracing::error!(error = %e, "room deletion could not record its outcome");
            }
        });
        Ok(json!({"delete_id": delete_id}))
    }

    /// Runs a deletion job and records its outcome.
    async fn run_delete(
        &self,
        mut job: AdminJobRecord,
        room_id: OwnedRoomId,
        notice_sender: Option<OwnedUserId>,
        req: DeleteRoomRequest,
    ) -> Result<AdminJobRecord> {
        let mut outcome = Outcome::default();
        match self
            .shutdown_steps(&room_id, notice_sender.as_deref(), &req, &mut outcome)
            .await
        {
            Ok(()) => job.status = "complete".into(),
            Err(e) => {
                job.status = "failed".into();
                job.error = Some(e.message.clone());
            }
        }
        job.result_json = Some(outcome.to_json().to_string());
        tracing::info!(
            target: "audit",
            room = %room_id,
            status = %job.status,
            kicked = outcome.kicked_users.len(),
            "room deletion finished"
        );
        self.core.storage.admin.put_job(&job).await?;
        Ok(job)
    }

    async fn shutdown_steps(
        &self,
        room_id: &ruma::RoomId,
        notice_sender: Option<&UserId>,
        req: &DeleteRoomRequest,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let store = &self.core.storage;
        if req.block {
            // First, so nobody re-joins while members are being moved out.
            store
                .admin
                .set_room_blocked(room_id.as_str(), Some(&req.requested_by))
                .await?;
        }
        if store.rooms.get_room(room_id.as_str()).await?.is_none() {
            return Ok(());
        }
        let suffix = self.local_suffix();
        let locals: Vec<String> = store
            .rooms
            .members(room_id.as_str())
            .await?
            .into_iter()
            .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
            .map(|m| m.user_id)
            .filter(|u| u.ends_with(&suffix))
            .collect();
        let new_room = match notice_sender {
            Some(sender) if !locals.is_empty() => Some(self.notice_room(sender, req).await?),
            _ => None,
        };
        outcome.new_room_id = new_room.as_ref().map(|r| r.to_string());
        for user in locals {
            let Ok(user_id) = UserId::parse(&user) else {
                outcome.failed_to_kick_users.push(user);
                continue;
            };
            match self.rooms.leave(room_id, &user_id, None).await {
                Ok(()) => {
                    if let Some(new_room) = &new_room {
                        if let Err(e) = self.rooms.join(new_room, &user_id, None).await {
                            tracing::warn!(user = %user_id, error = %e, "could not join the notice room");
                        }
                    }
                    outcome.kicked_users.push(user);
                }
                Err(e) => {
                    tracing::warn!(user = %user_id, error = %e, "could not remove a member");
                    outcome.failed_to_kick_users.push(user);
                }
            }
        }
        for alias in store.rooms.aliases_for_room(room_id.as_str()).await? {
            store.rooms.delete_alias(&alias).await?;
            outcome.local_aliases.push(alias);
        }
        if req.purge {
            if !outcome.failed_to_kick_users.is_empty() && !req.force_purge {
                return Err(Error::unknown(
                    "Some local users could not be removed; not purging (use force_purge).",
                ));
            }
            store.admin.purge_room(room_id.as_str()).await?;
            self.rooms.evict(room_id);
        }
        Ok(())
    }

    /// Creates the room evicted members are moved into, with the message.
    async fn notice_room(&self, sender: &UserId, req: &DeleteRoomRequest) -> Result<OwnedRoomId> {
        let mut power = serde_json::Map::new();
        power.insert("users_default".into(), json!(-10));
        let room_id = self
            .rooms
            .create_room(
                sender,
                CreateRoom {
                    preset: Some("public_chat".into()),
                    name: Some(
                        req.room_name
                            .clone()
                            .unwrap_or_else(|| DEFAULT_ROOM_NAME.into()),
                    ),
                    power_level_content_override: Some(power),
                    ..Default::default()
                },
            )
            .await?;
        let body = req
            .message
            .clone()
            .unwrap_or_else(|| DEFAULT_MESSAGE.into());
        self.rooms
            .send(
                &room_id,
                sender,
                EventDraft::message("m.room.message", json!({"msgtype": "m.text", "body": body})),
                None,
            )
            .await?;
        Ok(room_id)
    }

    /// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`.
    pub async fn delete_status_for_room(&self, raw_room_id: &str) -> Result<Value> {
        let room_id = parse_room_id(raw_room_id)?;
        let jobs = self
            .core
            .storage
            .admin
            .jobs_for_room(room_id.as_str(), "delete_room")
            .await?;
        if jobs.is_empty() {
            return Err(Error::not_found("No delete task for this room."));
        }
        Ok(json!({"results": jobs.iter().map(job_json).collect::<Vec<_>>()}))
    }

    /// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`.
    pub async fn delete_status(&self, delete_id: &str) -> Result<Value> {
        let job = self
            .core
            .storage
            .admin
            .get_job(delete_id)
            .await?
            .filter(|j| j.kind == "delete_room")
            .ok_or_else(|| Error::not_found("Delete task not found."))?;
        let mut out = job_json(&job);
        if let Some(o) = out.as_object_mut() {
            o.remove("delete_id");
        }
        Ok(out)
    }
}

/// The v1 answer: the outcome fields at the top level.
fn job_json_outcome(job: &AdminJobRecord) -> Value {
    job.result_json
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| Outcome::default().to_json())
}
