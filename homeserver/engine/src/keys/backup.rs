//! Server-side key backup (`/room_keys`): clients store their Megolm session
//! keys, encrypted to a backup key the server never sees, so a new device can
//! read old messages.
//!
//! Versions are numbered per user and never reused. Keys are only written to
//! the latest version (`M_WRONG_ROOM_KEYS_VERSION` otherwise). A stored
//! session is replaced only by a better one: verified beats unverified, then
//! the lower `first_message_index`, then the lower `forwarded_count`. The
//! `etag` changes whenever the stored keys change; `count` is their number.

use std::sync::Arc;

use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    core::Core,
    error::{Error, Result},
    storage::{BackupKeyRecord, BackupWrite},
};

#[derive(Clone)]
pub struct KeyBackupService {
    core: Arc<Core>,
}

/// A backup version as `GET /room_keys/version` shows it.
#[derive(Clone, Debug)]
pub struct BackupVersion {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Value,
    pub etag: String,
    pub count: u64,
}

/// One backed-up session: its room, id and `KeyBackupData` JSON.
#[derive(Clone, Debug)]
pub struct BackupSession {
    pub room_id: String,
    pub session_id: String,
    pub data: Value,
}

fn no_version(version: &str) -> Error {
    Error::not_found(format!("Unknown backup version {version}."))
}

/// Version strings are the numbers we handed out; anything else is unknown.
fn parse_version(version: &str) -> Result<i64> {
    version.parse::<i64>().map_err(|_| no_version(version))
}

fn etag_count(write: BackupWrite, version: &str) -> Result<(String, u64)> {
    match write {
        BackupWrite::Done { etag, count } => Ok((etag.to_string(), count.max(0) as u64)),
        BackupWrite::NotFound => Err(no_version(version)),
        BackupWrite::NotLatest(current) => Err(Error::new(
            403,
            "M_WRONG_ROOM_KEYS_VERSION",
            "Keys can only be added to the latest backup version.",
        )
        .with_field("current_version", current.to_string().into())),
    }
}

impl KeyBackupService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// `POST /room_keys/version`: `body` is `{algorithm, auth_data}`.
    pub async fn create_version(&self, user_id: &UserId, body: &Value) -> Result<String> {
        let (algorithm, auth_data) = algorithm_and_auth_data(body)?;
        let version = self
            .core
            .storage
            .backup
            .create_backup_version(user_id.as_str(), algorithm, &auth_data.to_string())
            .await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`: `None` is the latest version.
    pub async fn version(&self, user_id: &UserId, version: Option<&str>) -> Result<BackupVersion> {
        let number = version.map(parse_version).transpose()?;
        let record = self
            .core
            .storage
            .backup
            .backup_version(user_id.as_str(), number)
            .await?
            .ok_or_else(|| match version {
                Some(v) => no_version(v),
                None => Error::not_found("No backup version exists."),
            })?;
        Ok(BackupVersion {
            version: record.version.to_string(),
            algorithm: record.algorithm,
            auth_data: serde_json::from_str(&record.auth_data).unwrap_or_else(|_| json!({})),
            etag: record.etag.to_string(),
            count: record.count.max(0) as u64,
        })
    }

    /// `PUT /room_keys/version/{version}`: replaces `auth_data`; the algorithm
    /// cannot change.
    pub async fn update_version(
        &self,
        user_id: &UserId,
        version: &str,
        body: &Value,
    ) -> Result<()> {
        let (algorithm, auth_data) = algorithm_and_auth_data(body)?;
        if body
            .get("version")
            .is_some_and(|v| v.as_str() != Some(version))
        {
            return Err(Error::invalid_param(
                "The body's version does not match the path's.",
            ));
        }
        let current = self.version(user_id, Some(version)).await?;
        if current.algorithm != algorithm {
            return Err(Error::invalid_param(
                "A backup version's algorithm cannot change.",
            ));
        }
        let updated = self
            .core
            .storage
            .backup
            .update_backup_version(
                user_id.as_str(),
                parse_version(version)?,
                &auth_data.to_string(),
            )
            .await?;
        if !updated {
            return Err(no_version(version));
        }
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`: the version and all its keys.
    pub async fn delete_version(&self, user_id: &UserId, version: &str) -> Result<()> {
        let deleted = self
            .core
            .storage
            .backup
            .delete_backup_version(user_id.as_str(), parse_version(version)?)
            .await?;
        if !deleted {
            return Err(no_version(version));
        }
        Ok(())
    }

    /// `PUT /room_keys/keys[...]`: `(room_id, session_id, KeyBackupData)`.
    /// Returns the new etag and count.
    pub async fn put_keys(
        &self,
        user_id: &UserId,
        version: &str,
        sessions: Vec<(String, String, Value)>,
    ) -> Result<(String, u64)> {
        let number = parse_version(version)?;
        let records = sessions
            .into_iter()
            .map(|(room_id, session_id, data)| to_record(room_id, session_id, &data))
            .collect::<Result<Vec<_>>>()?;
        let write = self
            .core
            .storage
            .backup
            .put_backup_keys(user_id.as_str(), number, &records)
            .await?;
        etag_count(write, version)
    }

    /// `GET /room_keys/keys[...]`: sessions of the version, of one room, or one session.
    pub async fn keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupSession>> {
        self.version(user_id, Some(version)).await?;
        let records = self
            .core
            .storage
            .backup
            .backup_keys(
                user_id.as_str(),
                parse_version(version)?,
                room_id,
                session_id,
            )
            .await?;
        Ok(records.into_iter().map(from_record).collect())
    }

    /// `DELETE /room_keys/keys[...]`: returns the new etag and count.
    pub async fn delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<(String, u64)> {
        let write = self
            .core
            .storage
            .backup
            .delete_backup_keys(
                user_id.as_str(),
                parse_version(version)?,
                room_id,
                session_id,
            )
            .await?;
        etag_count(write, version)
    }
}

fn algorithm_and_auth_data(body: &Value) -> Result<(&str, &Value)> {
    let algorithm = body["algorithm"]
        .as_str()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::bad_json("algorithm must be a string."))?;
    let auth_data = body
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| Error::bad_json("auth_data must be an object."))?;
    Ok((algorithm, auth_data))
}

fn to_record(room_id: String, session_id: String, data: &Value) -> Result<BackupKeyRecord> {
    let count = |field: &str| {
        data[field]
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Error::bad_json(format!("{field} must be a non-negative integer.")))
    };
    let is_verified = data["is_verified"]
        .as_bool()
        .ok_or_else(|| Error::bad_json("is_verified must be a boolean."))?;
    let session_data = data
        .get("session_data")
        .filter(|s| s.is_object())
        .ok_or_else(|| Error::bad_json("session_data must be an object."))?;
    Ok(BackupKeyRecord {
        room_id,
        session_id,
        first_message_index: count("first_message_index")?,
        forwarded_count: count("forwarded_count")?,
        is_verified,
        session_data: session_data.to_string(),
    })
}

fn from_record(r: BackupKeyRecord) -> BackupSession {
    BackupSession {
        data: json!({
            "first_message_index": r.first_message_index,
            "forwarded_count": r.forwarded_count,
            "is_verified": r.is_verified,
            "session_data": serde_json::from_str::<Value>(&r.session_data).unwrap_or_else(|_| json!({})),
        }),
        room_id: r.room_id,
        session_id: r.session_id,
    }
}
