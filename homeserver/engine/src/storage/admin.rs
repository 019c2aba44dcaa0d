//! What the admin API reads and writes beyond the other stores: user
//! listings, shadow bans, rate-limit overrides, erasure, room blocks, server
//! notice rooms, long-running admin jobs, room and history purges, statistics.

use async_trait::async_trait;

use super::{StreamPos, UserRecord};
use crate::error::Result;

/// Sort keys of the user listing (Synapse's `order_by` values we support).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserOrder {
    Name,
    Admin,
    Deactivated,
    ShadowBanned,
    Displayname,
    AvatarUrl,
    CreationTs,
    LastSeenTs,
}

/// Filters and paging of `GET /_synapse/admin/v2/users`.
#[derive(Clone, Debug)]
pub struct UserListQuery {
    pub from: i64,
    pub limit: i64,
    /// Substring of the user id.
    pub user_id: Option<String>,
    /// Substring of the user id or the display name.
    pub name: Option<String>,
    /// Include deactivated users.
    pub deactivated: bool,
    /// Only admins (`Some(true)`) or only non-admins (`Some(false)`).
    pub admins: Option<bool>,
    pub order_by: UserOrder,
    pub backwards: bool,
}

/// A user as the admin API shows it.
#[derive(Clone, Debug)]
pub struct AdminUserRecord {
    pub user: UserRecord,
    pub shadow_banned: bool,
    pub erased: bool,
    pub last_seen_ts: Option<i64>,
}

/// The per-room numbers the room listing sorts and shows.
#[derive(Clone, Debug)]
pub struct RoomStatsRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub state_events: i64,
}

/// A long-running admin job (room deletion, history purge).
#[derive(Clone, Debug)]
pub struct AdminJobRecord {
    pub job_id: String,
    /// `delete_room` or `purge_history`.
    pub kind: String,
    pub room_id: String,
    /// `active`, `complete` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub result_json: Option<String>,
    pub started_ts: i64,
}

/// Where a history purge stops.
#[derive(Clone, Debug)]
pub struct HistoryPurge {
    pub room_id: String,
    /// Events strictly below this stream position are candidates.
    pub before_pos: Option<StreamPos>,
    /// Events with `origin_server_ts` strictly below this are candidates.
    pub before_ts: Option<i64>,
    /// `None` purges everyone's events; `Some(suffix)` keeps events whose
    /// sender ends with `suffix` (`:our.server`), i.e. local users' events.
    pub keep_sender_suffix: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ServerCounts {
    pub users: i64,
    pub deactivated_users: i64,
    pub rooms: i64,
    pub events_since: i64,
    pub registration_tokens: i64,
}

/// A registration token with its use counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTokenRecord {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
}

/// A user's upload as the admin API lists it.
#[derive(Clone, Debug)]
pub struct AdminMediaRecord {
    pub media_id: String,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    pub size: Option<i64>,
    pub created_ts: i64,
    pub last_access_ts: Option<i64>,
    pub quarantined_by: Option<String>,
}

/// A field of an update: leave as is, or set (possibly to null).
pub type Patch<T> = Option<Option<T>>;

#[async_trait]
pub trait AdminStore: Send + Sync {
    /// One page of users, and the number matching the filters.
    async fn list_users(&self, q: &UserListQuery) -> Result<(Vec<AdminUserRecord>, i64)>;
    async fn admin_user(&self, user_id: &str) -> Result<Option<AdminUserRecord>>;
    async fn set_user_admin(&self, user_id: &str, admin: bool) -> Result<()>;
    /// Clears the deactivated flag (re-activation by an admin).
    async fn reactivate_user(&self, user_id: &str) -> Result<()>;

    async fn set_shadow_banned(&self, user_id: &str, banned: bool) -> Result<()>;
    async fn shadow_banned_users(&self) -> Result<Vec<String>>;
    async fn set_erased(&self, user_id: &str) -> Result<()>;
    async fn erased_users(&self) -> Result<Vec<String>>;

    /// `Some((messages_per_second, burst_count))` sets, `None` removes.
    async fn set_ratelimit_override(&self, user_id: &str, value: Option<(i64, i64)>) -> Result<()>;
    async fn ratelimit_overrides(&self) -> Result<Vec<(String, i64, i64)>>;

    /// Statistics of every room, or of one.
    async fn room_stats(
        &self,
        room_id: Option<&str>,
        local_suffix: &str,
    ) -> Result<Vec<RoomStatsRecord>>;
    /// Content of the rooms' summary state events (`state_key` empty, type in
    /// `types`): `(room_id, type, pdu_json)`.
    async fn summary_state(
        &self,
        room_id: Option<&str>,
        types: &[&str],
    ) -> Result<Vec<(String, String, String)>>;

    /// Blocks (`Some(admin)`) or unblocks (`None`) a room.
    async fn set_room_blocked(&self, room_id: &str, by: Option<&str>) -> Result<()>;
    /// Who blocked the room, if it is blocked.
    async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>>;

    async fn server_notice_room(&self, user_id: &str) -> Result<Option<String>>;
    async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> Result<()>;

    async fn put_job(&self, job: &AdminJobRecord) -> Result<()>;
    async fn get_job(&self, job_id: &str) -> Result<Option<AdminJobRecord>>;
    async fn jobs_for_room(&self, room_id: &str, kind: &str) -> Result<Vec<AdminJobRecord>>;

    /// Deletes non-state events per `purge` (never forward extremities);
    /// returns how many were deleted.
    async fn purge_history(&self, purge: &HistoryPurge) -> Result<u64>;
    /// Removes every trace of a room from the database.
    async fn purge_room(&self, room_id: &str) -> Result<()>;

    async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>>;
    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRecord>>;
    /// Returns `false` if the token does not exist.
    async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Patch<i64>,
        expiry_ts: Patch<i64>,
    ) -> Result<bool>;
    /// Returns `false` if the token did not exist.
    async fn delete_registration_token(&self, token: &str) -> Result<bool>;

    /// A user's uploads, newest first, and how many there are.
    async fn user_media(
        &self,
        user_id: &str,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<AdminMediaRecord>, i64)>;
    /// Quarantines (`Some(admin)`) or releases (`None`) a media item.
    async fn set_media_quarantined(
        &self,
        origin: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<()>;
    async fn media_quarantined(&self, origin: &str, media_id: &str) -> Result<bool>;

    async fn counts(&self, events_since_ts: i64) -> Result<ServerCounts>;
}
