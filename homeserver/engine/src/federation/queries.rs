//! Client requests about another server's users and aliases, answered by
//! that server's `/query` endpoints: `GET /profile/{userId}` of a remote user
//! (`/query/profile`) and `GET /directory/room/{alias}` of a remote alias
//! (`/query/directory`, in [`RoomFederation::resolve_remote_alias`]).

use http::Method;
use ruma::UserId;
use serde_json::{json, Value};

use super::rooms::{enc, remote_error, RoomFederation};
use crate::error::{Error, Result};

/// Profile fields a remote answer may contribute; anything else is dropped
/// so a remote server cannot inject arbitrary keys into our answers.
const PROFILE_FIELDS: &[&str] = &["displayname", "avatar_url"];

impl RoomFederation {
    /// A remote user's profile, or one `field` of it, from their server.
    pub async fn remote_profile(&self, user: &UserId, field: Option<&str>) -> Result<Value> {
        let mut path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            enc(user.as_str())
        );
        if let Some(field) = field {
            if !PROFILE_FIELDS.contains(&field) {
                return Err(Error::not_found("Profile field not set."));
            }
            path.push_str("&field=");
            path.push_str(&enc(field));
        }
        let response = self
            .fed
            .client
            .request(user.server_name(), Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        let mut out = json!({});
        for key in PROFILE_FIELDS {
            if let Some(value) = response.get(*key).and_then(Value::as_str) {
                out[*key] = json!(value);
            }
        }
        Ok(out)
    }
}
