//! Media: a user's uploads, and quarantine (the item stays stored but is
//! served as absent: downloads and thumbnails answer `404 M_NOT_FOUND`).
//!
//! Deleting media by id, age or size and purging the remote cache need the
//! blob store to delete blobs, which it cannot do yet.

use serde_json::{json, Value};

use super::{users::parse_page, AdminService};
use crate::error::{Error, Result};

impl AdminService {
    /// `GET /_synapse/admin/v1/users/{userId}/media`, newest first.
    pub async fn user_media(
        &self,
        raw_user_id: &str,
        from: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        let (from, limit) = parse_page(from, limit)?;
        let (items, total) = self
            .core
            .storage
            .admin
            .user_media(user_id.as_str(), from, limit)
            .await?;
        let media: Vec<Value> = items
            .iter()
            .map(|m| {
                json!({
                    "media_id": m.media_id,
                    "media_type": m.content_type,
                    "media_length": m.size,
                    "upload_name": m.upload_name,
                    "created_ts": m.created_ts,
                    "last_access_ts": m.last_access_ts,
                    "quarantined_by": m.quarantined_by,
                    "safe_from_quarantine": false,
                })
            })
            .collect();
        let mut out = json!({"media": media, "total": total});
        let next = from + items.len() as i64;
        if next < total && !items.is_empty() {
            out["next_token"] = json!(next);
        }
        Ok(out)
    }

    /// `POST /_synapse/admin/v1/media/{un,}quarantine/{serverName}/{mediaId}`.
    /// Both directions are idempotent; unknown media is `M_NOT_FOUND`.
    pub async fn set_media_quarantine(
        &self,
        admin: &str,
        server_name: &str,
        media_id: &str,
        quarantine: bool,
    ) -> Result<Value> {
        ruma::ServerName::parse(server_name)
            .map_err(|_| Error::invalid_param(format!("Invalid server name: {server_name}")))?;
        if self
            .core
            .storage
            .media
            .get_media(server_name, media_id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("Media not found."));
        }
        self.core
            .storage
            .admin
            .set_media_quarantined(server_name, media_id, quarantine.then_some(admin))
            .await?;
        Ok(json!({}))
    }
}
