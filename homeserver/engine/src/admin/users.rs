//! Users: list, show, create or modify, deactivate (with erase), reset
//! password, devices, shadow ban and rate-limit overrides.
//!
//! Shapes follow Synapse's user admin API; timestamps `creation_ts` are in
//! seconds and `last_seen_ts` in milliseconds, as Synapse serves them.

use ruma::UserId;
use serde_json::{json, Value};

use super::{bucket, AdminService};
use crate::{
    error::{Error, Result},
    storage::{
        admin::{AdminUserRecord, UserListQuery, UserOrder},
        DeviceRecord,
    },
};

/// Query parameters of the user listing, as the client sent them.
#[derive(Clone, Debug, Default)]
pub struct UserListParams {
    pub from: Option<String>,
    pub limit: Option<i64>,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub deactivated: Option<bool>,
    pub admins: Option<bool>,
    pub order_by: Option<String>,
    pub dir: Option<String>,
}

/// `PUT /_synapse/admin/v2/users/{userId}`: every field optional.
#[derive(Clone, Debug, Default)]
pub struct UpsertUser {
    pub password: Option<String>,
    pub logout_devices: bool,
    pub displayname: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
}

fn user_json(u: &AdminUserRecord) -> Value {
    json!({
        "name": u.user.user_id,
        "displayname": u.user.displayname,
        "avatar_url": u.user.avatar_url,
        "is_guest": false,
        "admin": u.user.is_admin,
        "user_type": null,
        "deactivated": u.user.deactivated,
        "erased": u.erased,
        "shadow_banned": u.shadow_banned,
        "locked": false,
        "creation_ts": u.user.created_ts / 1000,
        "last_seen_ts": u.last_seen_ts,
        "appservice_id": null,
        "threepids": [],
        "external_ids": [],
    })
}

fn device_json(d: &DeviceRecord) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
        "last_seen_user_agent": null,
        "user_id": d.user_id,
    })
}

fn parse_order(order_by: Option<&str>) -> Result<UserOrder> {
    Ok(match order_by.unwrap_or("name") {
        "name" => UserOrder::Name,
        "admin" => UserOrder::Admin,
        "deactivated" => UserOrder::Deactivated,
        "shadow_banned" => UserOrder::ShadowBanned,
        "displayname" => UserOrder::Displayname,
        "avatar_url" => UserOrder::AvatarUrl,
        "creation_ts" => UserOrder::CreationTs,
        "last_seen_ts" => UserOrder::LastSeenTs,
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown value for order_by: {other}"
            )))
        }
    })
}

/// Parses `dir` (`f` or `b`); `true` for backwards.
pub(super) fn parse_dir(dir: Option<&str>) -> Result<bool> {
    match dir.unwrap_or("f") {
        "f" => Ok(false),
        "b" => Ok(true),
        _ => Err(Error::invalid_param("dir must be f or b")),
    }
}

/// Parses `from` and `limit` into a non-negative offset and a page size.
pub(super) fn parse_page(from: Option<&str>, limit: Option<i64>) -> Result<(i64, i64)> {
    let from = match from {
        Some(f) => f
            .parse::<i64>()
            .ok()
            .filter(|f| *f >= 0)
            .ok_or_else(|| Error::invalid_param("from must be a non-negative integer"))?,
        None => 0,
    };
    let limit = limit.unwrap_or(100);
    if !(0..=10_000).contains(&limit) {
        return Err(Error::invalid_param("limit must be between 0 and 10000"));
    }
    Ok((from, limit))
}

impl AdminService {
    /// `GET /_synapse/admin/v2/users`.
    pub async fn list_users(&self, p: UserListParams) -> Result<Value> {
        let (from, limit) = parse_page(p.from.as_deref(), p.limit)?;
        let q = UserListQuery {
            from,
            limit,
            user_id: p.user_id,
            name: p.name,
            deactivated: p.deactivated.unwrap_or(false),
            admins: p.admins,
            order_by: parse_order(p.order_by.as_deref())?,
            backwards: parse_dir(p.dir.as_deref())?,
        };
        let (users, total) = self.core.storage.admin.list_users(&q).await?;
        let mut out = json!({
            "users": users.iter().map(user_json).collect::<Vec<_>>(),
            "total": total,
        });
        let next = from + users.len() as i64;
        if next < total && !users.is_empty() {
            out["next_token"] = json!(next.to_string());
        }
        Ok(out)
    }

    /// `GET /_synapse/admin/v2/users/{userId}`.
    pub async fn user_details(&self, raw_user_id: &str) -> Result<Value> {
        let user_id = self.local_user(raw_user_id)?;
        let user = self
            .core
            .storage
            .admin
            .admin_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("User not found."))?;
        Ok(user_json(&user))
    }

    /// `PUT /_synapse/admin/v2/users/{userId}`: creates the account if it does
    /// not exist, then applies every given field. Returns whether it was
    /// created, and the user's details.
    pub async fn upsert_user(&self, raw_user_id: &str, req: UpsertUser) -> Result<(bool, Value)> {
        let user_id = self.local_user(raw_user_id)?;
        let accounts = &self.core.storage.accounts;
        if let Some(p) = &req.password {
            if p.is_empty() || p.len() > 512 {
                return Err(Error::invalid_param("password must be 1 to 512 characters"));
            }
        }
        let existing = accounts.get_user(user_id.as_str()).await?;
        let created = existing.is_none();
        if created {
            self.accounts
                .validate_localpart(user_id.localpart())
                .map_err(|e| Error::invalid_param(e.message))?;
            let displayname = req.displayname.clone().flatten();
            self.accounts
                .create_account(
                    &user_id,
                    req.password.as_deref(),
                    req.admin.unwrap_or(false),
                    displayname,
                )
                .await?;
        } else if let Some(password) = &req.password {
            self.set_password(&user_id, password, req.logout_devices)
                .await?;
        }
        if let Some(admin) = req.admin {
            self.core
                .storage
                .admin
                .set_user_admin(user_id.as_str(), admin)
                .await?;
        }
        if let Some(name) = &req.displayname {
            if !created || name.is_none() {
                self.accounts
                    .set_displayname(&user_id, name.as_deref())
                    .await?;
            }
        }
        if let Some(url) = &req.avatar_url {
            self.accounts
                .set_avatar_url(&user_id, url.as_deref())
                .await?;
        }
        let was_deactivated = existing.as_ref().is_some_and(|u| u.deactivated);
        match req.deactivated {
            Some(true) if !was_deactivated => self.deactivate_user(&user_id, false).await?,
            Some(false) if was_deactivated => {
                if req.password.is_none() {
                    return Err(Error::invalid_param(
                        "Reactivating a user requires a new password.",
                    ));
                }
                self.core
                    .storage
                    .admin
                    .reactivate_user(user_id.as_str())
                    .await?;
            }
            _ => {}
        }
        Ok((created, self.user_details(user_id.as_str()).await?))
    }

    async fn set_password(&self, user_id: &UserId, password: &str, logout: bool) -> Result<()> {
        let hash = crate::accounts::hash_password(password, &self.core.config.passwords).await?;
        self.core
            .storage
            .accounts
            .set_password_hash(user_id.as_str(), &hash)
            .await?;
        if logout {
            self.logout_everywhere(user_id).await?;
        }
        Ok(())
    }

    /// Deletes every device (and with it every access token) of the user.
    async fn logout_everywhere(&self, user_id: &UserId) -> Result<()> {
        let accounts = &self.core.storage.accounts;
        let devices: Vec<String> = accounts
            .list_devices(user_id.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        for d in &devices {
            accounts.delete_device(user_id.as_str(), d).await?;
        }
        accounts.delete_user_tokens(user_id.as_str()).await?;
        self.keys.devices_removed(user_id, &devices).await
    }

    /// `POST /_synapse/admin/v1/reset_password/{userId}`.
    pub async fn reset_password(
        &self,
        raw_user_id: &str,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        let user_id = self.existing_user(raw_user_id).await?;
        if new_password.is_empty() || new_password.len() > 512 {
            return Err(Error::new(
                400,
                "M_WEAK_PASSWORD",
                "Password must be 1 to 512 characters.",
            ));
        }
        self.set_password(&user_id, new_password, logout_devices)
            .await
    }

    /// `POST /_synapse/admin/v1/deactivate/{userId}`. Idempotent: a second
    /// call finds nothing left to do (and may still erase).
    ///
    /// Deactivation leaves every room, deletes every device, token and device
    /// key. `erase` also removes the display name and avatar and records the
    /// user as erased (`erased: true` in their details).
    pub async fn deactivate(&self, raw_user_id: &str, erase: bool) -> Result<()> {
        let user_id = self.existing_user(raw_user_id).await?;
        self.deactivate_user(&user_id, erase).await
    }

    async fn deactivate_user(&self, user_id: &UserId, erase: bool) -> Result<()> {
        let accounts = &self.core.storage.accounts;
        if erase {
            // Before leaving, so the leave events carry no profile.
            accounts.set_displayname(user_id.as_str(), None).await?;
            accounts.set_avatar_url(user_id.as_str(), None).await?;
            self.core.storage.admin.set_erased(user_id.as_str()).await?;
            self.core.erased.write().insert(user_id.to_string());
        }
        let devices: Vec<String> = accounts
            .list_devices(user_id.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        self.accounts.deactivate(user_id).await?;
        accounts.delete_user_tokens(user_id.as_str()).await?;
        self.keys.devices_removed(user_id, &devices).await
    }

    /// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`.
    pub async fn joined_rooms(&self, raw_user_id: &str) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        let rooms: Vec<String> = self
            .core
            .storage
            .rooms
            .memberships_for_user(user_id.as_str())
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.room_id)
            .collect();
        Ok(json!({"total": rooms.len(), "joined_rooms": rooms}))
    }

    /// `GET /_synapse/admin/v2/users/{userId}/devices`.
    pub async fn devices(&self, raw_user_id: &str) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        let devices = self
            .core
            .storage
            .accounts
            .list_devices(user_id.as_str())
            .await?;
        Ok(json!({
            "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
            "total": devices.len(),
        }))
    }

    /// `GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}`.
    pub async fn device(&self, raw_user_id: &str, device_id: &str) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        let device = self
            .core
            .storage
            .accounts
            .get_device(user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| Error::not_found("Device not found."))?;
        Ok(device_json(&device))
    }

    /// `PUT .../devices/{deviceId}` with `display_name`.
    pub async fn rename_device(
        &self,
        raw_user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<()> {
        let user_id = self.existing_user(raw_user_id).await?;
        if !self
            .core
            .storage
            .accounts
            .set_device_display_name(user_id.as_str(), device_id, display_name)
            .await?
        {
            return Err(Error::not_found("Device not found."));
        }
        Ok(())
    }

    /// `DELETE .../devices/{deviceId}` and `POST .../delete_devices`: logs
    /// the devices out. Deleting a device that is already gone succeeds.
    pub async fn delete_devices(&self, raw_user_id: &str, device_ids: &[String]) -> Result<()> {
        let user_id = self.existing_user(raw_user_id).await?;
        for d in device_ids {
            self.core
                .storage
                .accounts
                .delete_device(user_id.as_str(), d)
                .await?;
        }
        self.keys.devices_removed(&user_id, device_ids).await
    }

    /// `GET /_synapse/admin/v1/whois/{userId}`: sessions per device.
    pub async fn whois(&self, raw_user_id: &str) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        let devices = self
            .core
            .storage
            .accounts
            .list_devices(user_id.as_str())
            .await?;
        let mut by_device = serde_json::Map::new();
        for d in devices {
            by_device.insert(
                d.device_id.clone(),
                json!({"sessions": [{"connections": [{
                    "ip": d.last_seen_ip,
                    "last_seen": d.last_seen_ts,
                    "user_agent": null,
                }]}]}),
            );
        }
        Ok(json!({"user_id": user_id, "devices": by_device}))
    }

    /// `POST`/`DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`.
    pub async fn set_shadow_ban(&self, raw_user_id: &str, banned: bool) -> Result<()> {
        let user_id = self.existing_user(raw_user_id).await?;
        self.core
            .storage
            .admin
            .set_shadow_banned(user_id.as_str(), banned)
            .await?;
        let mut set = self.shadow_banned.write();
        if banned {
            set.insert(user_id.to_string());
        } else {
            set.remove(user_id.as_str());
        }
        Ok(())
    }

    /// `GET .../override_ratelimit`: `{}` when the defaults apply.
    pub async fn ratelimit_override(&self, raw_user_id: &str) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        Ok(match self.overrides.get(user_id.as_str()) {
            Some(b) => json!({
                "messages_per_second": b.per_second as i64,
                "burst_count": b.burst as i64,
            }),
            None => json!({}),
        })
    }

    /// `POST .../override_ratelimit` (`Some`) or `DELETE` (`None`).
    pub async fn set_ratelimit_override(
        &self,
        raw_user_id: &str,
        value: Option<(i64, i64)>,
    ) -> Result<Value> {
        let user_id = self.existing_user(raw_user_id).await?;
        if value.is_some_and(|(p, b)| p < 0 || b < 0) {
            return Err(Error::invalid_param(
                "messages_per_second and burst_count must be non-negative integers",
            ));
        }
        self.core
            .storage
            .admin
            .set_ratelimit_override(user_id.as_str(), value)
            .await?;
        self.overrides
            .set(user_id.as_str(), value.map(|(p, b)| bucket(p, b)));
        Ok(match value {
            Some((p, b)) => json!({"messages_per_second": p, "burst_count": b}),
            None => json!({}),
        })
    }
}
