//! The admin API's logic: what a server admin may do to users, rooms,
//! registration tokens, federation and the server itself.
//!
//! The HTTP surface (`client-api/src/admin/`) authenticates the admin, writes
//! the audit line and renders; everything else is here. Answers are shaped
//! like Synapse's admin API (`/_synapse/admin/...`) wherever Synapse has the
//! same endpoint, so operators' existing tools (synadm, synapse-admin) work.
//!
//! Two decisions are enforced on hot paths outside this module, from state
//! kept here in memory and persisted in `0008_admin.sql`:
//! - shadow bans ([`AdminService::is_shadow_banned`]), checked by the send
//!   paths, which then answer success without persisting anything;
//! - rate-limit overrides, installed into the limiter's override table.
//!
//! Both are loaded at start-up; on a multi-instance deployment another
//! instance learns of a change at its next restart.

mod federation;
mod media;
mod rooms;
mod server;
mod shutdown;
mod tokens;
mod users;

use std::{collections::HashSet, sync::Arc};

use parking_lot::RwLock;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

pub use rooms::{PurgeHistoryRequest, RoomListQuery};
pub use server::ServerNotice;
pub use shutdown::DeleteRoomRequest;
pub use tokens::NewRegistrationToken;
pub use users::{UpsertUser, UserListParams};

use crate::{
    accounts::AccountService,
    config::Bucket,
    core::Core,
    error::{Error, Result},
    keys::KeysService,
    presence::PresenceService,
    ratelimit::RateLimitOverrides,
    rooms::RoomService,
};

#[derive(Clone)]
pub struct AdminService {
    core: Arc<Core>,
    rooms: RoomService,
    accounts: AccountService,
    keys: KeysService,
    presence: PresenceService,
    overrides: Arc<RateLimitOverrides>,
    shadow_banned: Arc<RwLock<HashSet<String>>>,
}

impl AdminService {
    /// Assembles the service and loads the shadow bans and rate-limit
    /// overrides that other paths consult.
    pub async fn new(
        core: Arc<Core>,
        rooms: RoomService,
        accounts: AccountService,
        keys: KeysService,
        presence: PresenceService,
        overrides: Arc<RateLimitOverrides>,
    ) -> Result<Self> {
        let store = &core.storage.admin;
        let banned: HashSet<String> = store.shadow_banned_users().await?.into_iter().collect();
        for (user, per_second, burst) in store.ratelimit_overrides().await? {
            overrides.set(&user, Some(bucket(per_second, burst)));
        }
        Ok(Self {
            core,
            rooms,
            accounts,
            keys,
            presence,
            overrides,
            shadow_banned: Arc::new(RwLock::new(banned)),
        })
    }

    /// Whether the user is shadow-banned: their sends must look successful to
    /// them but reach nobody.
    pub fn is_shadow_banned(&self, user_id: &str) -> bool {
        self.shadow_banned.read().contains(user_id)
    }

    /// Whether joins to the room are refused on this server.
    pub async fn is_room_blocked(&self, room_id: &str) -> Result<bool> {
        Ok(self
            .core
            .storage
            .admin
            .room_blocked_by(room_id)
            .await?
            .is_some())
    }

    /// Parses a user id of this server; `M_INVALID_PARAM` for a malformed or
    /// remote one.
    fn local_user(&self, raw: &str) -> Result<OwnedUserId> {
        let user_id = UserId::parse(raw)
            .map_err(|_| Error::invalid_param(format!("Invalid user id: {raw}")))?;
        if !self.core.is_local(user_id.server_name()) {
            return Err(Error::invalid_param(
                "Only local users can be administered.",
            ));
        }
        Ok(user_id)
    }

    /// Like [`local_user`](Self::local_user), and the account must exist.
    async fn existing_user(&self, raw: &str) -> Result<OwnedUserId> {
        let user_id = self.local_user(raw)?;
        if self
            .core
            .storage
            .accounts
            .get_user(user_id.as_str())
            .await?
            .is_none()
        {
            return Err(Error::not_found("User not found."));
        }
        Ok(user_id)
    }

    /// The `:server` suffix of local user ids.
    fn local_suffix(&self) -> String {
        format!(":{}", self.core.server_name)
    }
}

/// Parses a room id; `M_INVALID_PARAM` if malformed.
pub fn parse_room_id(raw: &str) -> Result<OwnedRoomId> {
    RoomId::parse(raw).map_err(|_| Error::invalid_param(format!("Invalid room id: {raw}")))
}

fn bucket(per_second: i64, burst: i64) -> Bucket {
    Bucket {
        per_second: per_second as f64,
        burst: burst as f64,
    }
}
