//! Accounts: registration, login, access and refresh tokens, devices, profiles.

mod password;
pub mod shared_secret;
pub mod uia;

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value};

use crate::{
    core::Core,
    error::{Error, Result},
    rooms::RoomService,
    storage::{DeviceRecord, NewToken, UserRecord},
    util::{now_ms, random_string},
};

/// Hashes a password with the configured parameters (the admin API sets passwords too).
pub(crate) use password::hash as hash_password;
pub use shared_secret::SharedSecretRegistration;
use uia::UiaSessions;

/// The authenticated requester of a client request.
#[derive(Clone, Debug)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub is_admin: bool,
    pub access_token: String,
}

/// What a successful registration or login hands back.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct RegisterParams {
    pub username: Option<String>,
    pub password: Option<String>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
    pub refresh_token: bool,
    pub auth: Option<Value>,
    pub is_guest: bool,
}

#[derive(Clone)]
pub struct AccountService {
    core: Arc<Core>,
    rooms: RoomService,
    pub uia: Arc<UiaSessions>,
    pub shared_secret: Arc<SharedSecretRegistration>,
}

impl AccountService {
    pub fn new(core: Arc<Core>, rooms: RoomService) -> Self {
        Self {
            rooms,
            uia: Arc::new(UiaSessions::new(
                core.redis.as_ref().map(|r| r.commands.clone()),
            )),
            shared_secret: Arc::new(SharedSecretRegistration::new(
                core.redis.as_ref().map(|r| r.commands.clone()),
            )),
            core,
        }
    }

    /// Checks a localpart: lowercase letters, digits and `._=-/+`, full id ≤ 255 bytes.
    pub fn validate_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        if localpart.is_empty()
            || !localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
        {
            return Err(Error::invalid_username("User ID may only contain a-z, 0-9, and ._=-/+"));
        }
        let user_id = format!("@{localpart}:{}", self.core.server_name);
        if user_id.len() > 255 {
            return Err(Error::invalid_username("User ID is too long."));
        }
        UserId::parse(&user_id).map_err(|_| Error::invalid_username("Invalid user ID."))
    }

    pub async fn is_available(&self, localpart: &str) -> Result<bool> {
        let user_id = self.validate_localpart(localpart)?;
        Ok(self
            .core
            .storage
            .accounts
            .get_user(user_id.as_str())
            .await?
            .is_none())
    }

    /// `POST /register`, after user-interactive authentication has passed.
    pub async fn register(&self, params: RegisterParams) -> Result<(OwnedUserId, Option<Session>)> {
        let localpart = match &params.username {
            Some(u) => u.clone(),
            None => random_string(12).to_lowercase(),
        };
        let user_id = self.validate_localpart(&localpart)?;
        self.create_account(&user_id, params.password.as_deref(), false, None)
            .await?;
        if params.inhibit_login {
            return Ok((user_id, None));
        }
        let session = self
            .issue_session(
                &user_id,
                params.device_id,
                params.initial_device_display_name,
                params.refresh_token,
            )
            .await?;
        Ok((user_id, Some(session)))
    }

    /// Creates the account row; `M_USER_IN_USE` if the id is taken.
    pub async fn create_account(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
        displayname: Option<String>,
    ) -> Result<()> {
        let password_hash = match password {
            Some(p) => Some(password::hash(p, &self.core.config.passwords).await?),
            None => None,
        };
        let record = UserRecord {
            user_id: user_id.to_string(),
            password_hash,
            is_admin: admin,
            deactivated: false,
            displayname: Some(displayname.unwrap_or_else(|| user_id.localpart().to_owned())),
            avatar_url: None,
            created_ts: now_ms(),
        };
        if !self.core.storage.accounts.create_user(&record).await? {
            return Err(Error::user_in_use());
        }
        Ok(())
    }

    /// Creates (or reuses) a device and issues its tokens.
    pub async fn issue_session(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        display_name: Option<String>,
        refresh: bool,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase());
        let accounts = &self.core.storage.accounts;
        accounts
            .upsert_device(&DeviceRecord {
                user_id: user_id.to_string(),
                device_id: device_id.clone(),
                display_name,
                last_seen_ts: Some(now_ms()),
                last_seen_ip: None,
            })
            .await?;
        // A device has one live access token: logging in again with the same
        // device id replaces it.
        let lifetime = if refresh {
            self.core
                .config
                .registration
                .access_token_lifetime_ms
                .or(Some(5 * 60 * 1000))
        } else {
            None
        };
        let access_token = format!("hs_{}", random_string(40));
        let refresh_token = refresh.then(|| format!("hsr_{}", random_string(40)));
        accounts
            .insert_token(&NewToken {
                access_token: &access_token,
                refresh_token: refresh_token.as_deref(),
                user_id: user_id.as_str(),
                device_id: &device_id,
                expires_ts: lifetime.map(|l| now_ms() + l as i64),
            })
            .await?;
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
            refresh_token,
            expires_in_ms: lifetime,
        })
    }

    /// Resolves an access token to its user and device.
    pub async fn authenticate(&self, token: &str) -> Result<Requester> {
        let accounts = &self.core.storage.accounts;
        let (record, user) = accounts
            .get_token_owner(token)
            .await?
            .ok_or_else(|| Error::unknown_token(false))?;
        if record.expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(Error::unknown_token(true));
        }
        if user.deactivated {
            return Err(Error::unknown_token(false));
        }
        let user_id =
            OwnedUserId::try_from(record.user_id).map_err(|e| Error::unknown(e.to_string()))?;
        Ok(Requester {
            user_id,
            device_id: record.device_id,
            is_admin: user.is_admin,
            access_token: token.to_owned(),
        })
    }

    /// Password login. `identifier` may name a localpart or a full user id.
    pub async fn login_password(&self, user: &str, password: &str) -> Result<OwnedUserId> {
        let user_id = if user.starts_with('@') {
            // Localparts are stored lower-case; logins are case-insensitive.
            UserId::parse(user.to_lowercase())
                .map_err(|_| Error::forbidden("Invalid username or password."))?
        } else {
            UserId::parse(format!(
                "@{}:{}",
                user.to_lowercase(),
                self.core.server_name
            ))
            .map_err(|_| Error::forbidden("Invalid username or password."))?
        };
        self.check_password(&user_id, password).await?;
        Ok(user_id)
    }

    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let user = self
            .core
            .storage
            .accounts
            .get_user(user_id.as_str())
            .await?;
        let hash = user
            .filter(|u| !u.deactivated)
            .and_then(|u| u.password_hash);
        match hash {
            Some(h) if password::verify(password, &h).await => Ok(()),
            _ => Err(Error::forbidden("Invalid username or password.")),
        }
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let lifetime = self
            .core
            .config
            .registration
            .access_token_lifetime_ms
            .unwrap_or(5 * 60 * 1000);
        let access_token = format!("hs_{}", random_string(40));
        let new_refresh = format!("hsr_{}", random_string(40));
        let record = self
            .core
            .storage
            .accounts
            .rotate_refresh_token(
                refresh_token,
                &NewToken {
                    access_token: &access_token,
                    refresh_token: Some(&new_refresh),
                    user_id: "",
                    device_id: "",
                    expires_ts: Some(now_ms() + lifetime as i64),
                },
            )
            .await?
            .ok_or_else(|| Error::unknown_token(false))?;
        let user_id =
            OwnedUserId::try_from(record.user_id).map_err(|e| Error::unknown(e.to_string()))?;
        Ok(Session {
            user_id,
            device_id: record.device_id,
            access_token,
            refresh_token: Some(new_refresh),
            expires_in_ms: Some(lifetime),
        })
    }

    pub async fn logout(&self, requester: &Requester) -> Result<()> {
        self.core
            .storage
            .accounts
            .delete_device(requester.user_id.as_str(), &requester.device_id)
            .await
    }

    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let accounts = &self.core.storage.accounts;
        for device in accounts.list_devices(user_id.as_str()).await? {
            accounts
                .delete_device(user_id.as_str(), &device.device_id)
                .await?;
        }
        accounts.delete_user_tokens(user_id.as_str()).await
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        self.core
            .storage
            .accounts
            .set_displayname(user_id.as_str(), name)
            .await?;
        self.rooms.propagate_profile(user_id).await
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> Result<()> {
        self.core
            .storage
            .accounts
            .set_avatar_url(user_id.as_str(), url)
            .await?;
        self.rooms.propagate_profile(user_id).await
    }

    pub async fn profile(&self, user_id: &UserId) -> Result<Value> {
        let user = self
            .core
            .storage
            .accounts
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Profile not found."))?;
        let mut out = json!({});
        if let Some(n) = user.displayname {
            out["displayname"] = json!(n);
        }
        if let Some(a) = user.avatar_url {
            out["avatar_url"] = json!(a);
        }
        Ok(out)
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl AccountService {
    /// Sets a new password; with `logout_devices`, every other device is logged out.
    pub async fn change_password(
        &self,
        requester: &Requester,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        if new_password.is_empty() || new_password.len() > 512 {
            return Err(Error::new(
                400,
                "M_WEAK_PASSWORD",
                "Password must be 1 to 512 characters.",
            ));
        }
        let hash = password::hash(new_password, &self.core.config.passwords).await?;
        let accounts = &self.core.storage.accounts;
        accounts
            .set_password_hash(requester.user_id.as_str(), &hash)
            .await?;
        if logout_devices {
            for device in accounts.list_devices(requester.user_id.as_str()).await? {
                if device.device_id != requester.device_id {
                    accounts
                        .delete_device(requester.user_id.as_str(), &device.device_id)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Deactivates the account: leaves every room, then revokes all access.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        for m in self
            .core
            .storage
            .rooms
            .memberships_for_user(user_id.as_str())
            .await?
        {
            if matches!(m.membership.as_str(), "join" | "invite" | "knock") {
                if let Ok(room_id) = ruma::OwnedRoomId::try_from(m.room_id.as_str()) {
                    if let Err(e) = self.rooms.leave(&room_id, user_id, None).await {
                        tracing::warn!(room = %room_id, error = %e, "could not leave room while deactivating");
                    }
                }
            }
        }
        let accounts = &self.core.storage.accounts;
        for device in accounts.list_devices(user_id.as_str()).await? {
            accounts
                .delete_device(user_id.as_str(), &device.device_id)
                .await?;
        }
        accounts.set_deactivated(user_id.as_str()).await
    }
}
