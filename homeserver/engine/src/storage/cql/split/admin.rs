//! The admin store of the split timeline: a purged room's rows leave the
//! event log too. Everything else is the SQL store's.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::storage::admin::{
    AdminJobRecord, AdminMediaRecord, AdminStore, AdminUserRecord, HistoryPurge, Patch,
    RegistrationTokenRecord, RoomStatsRecord, ServerCounts, UserListQuery,
};
use crate::storage::cql::EventLog;

/// The SQL admin store, and the log whose rows a room purge deletes.
pub struct SplitAdmin {
    sql: Arc<dyn AdminStore>,
    log: Arc<dyn EventLog>,
}

impl SplitAdmin {
    pub fn new(sql: Arc<dyn AdminStore>, log: Arc<dyn EventLog>) -> Self {
        Self { sql, log }
    }
}

#[async_trait]
impl AdminStore for SplitAdmin {
    /// SQL first: once its rows are gone, the log's are unreachable. A
    /// failure in the log is reported, so the admin job can be retried
    /// (the SQL half is then a no-op).
    async fn purge_room(&self, room_id: &str) -> Result<()> {
        self.sql.purge_room(room_id).await?;
        self.log.delete_room(room_id).await?;
        Ok(())
    }

    async fn list_users(&self, q: &UserListQuery) -> Result<(Vec<AdminUserRecord>, i64)> {
        self.sql.list_users(q).await
    }

    async fn admin_user(&self, user_id: &str) -> Result<Option<AdminUserRecord>> {
        self.sql.admin_user(user_id).await
    }

    async fn set_user_admin(&self, user_id: &str, admin: bool) -> Result<()> {
        self.sql.set_user_admin(user_id, admin).await
    }

    async fn reactivate_user(&self, user_id: &str) -> Result<()> {
        self.sql.reactivate_user(user_id).await
    }

    async fn set_shadow_banned(&self, user_id: &str, banned: bool) -> Result<()> {
        self.sql.set_shadow_banned(user_id, banned).await
    }

    async fn shadow_banned_users(&self) -> Result<Vec<String>> {
        self.sql.shadow_banned_users().await
    }

    async fn set_erased(&self, user_id: &str) -> Result<()> {
        self.sql.set_erased(user_id).await
    }

    async fn erased_users(&self) -> Result<Vec<String>> {
        self.sql.erased_users().await
    }

    async fn set_ratelimit_override(&self, user_id: &str, value: Option<(i64, i64)>) -> Result<()> {
        self.sql.set_ratelimit_override(user_id, value).await
    }

    async fn ratelimit_overrides(&self) -> Result<Vec<(String, i64, i64)>> {
        self.sql.ratelimit_overrides().await
    }

    async fn room_stats(
        &self,
        room_id: Option<&str>,
        local_suffix: &str,
    ) -> Result<Vec<RoomStatsRecord>> {
        self.sql.room_stats(room_id, local_suffix).await
    }

    async fn summary_state(
        &self,
        room_id: Option<&str>,
        types: &[&str],
    ) -> Result<Vec<(String, String, String)>> {
        self.sql.summary_state(room_id, types).await
    }

    async fn set_room_blocked(&self, room_id: &str, by: Option<&str>) -> Result<()> {
        self.sql.set_room_blocked(room_id, by).await
    }

    async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>> {
        self.sql.room_blocked_by(room_id).await
    }

    async fn server_notice_room(&self, user_id: &str) -> Result<Option<String>> {
        self.sql.server_notice_room(user_id).await
    }

    async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        self.sql.set_server_notice_room(user_id, room_id).await
    }

    async fn put_job(&self, job: &AdminJobRecord) -> Result<()> {
        self.sql.put_job(job).await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<AdminJobRecord>> {
        self.sql.get_job(job_id).await
    }

    async fn jobs_for_room(&self, room_id: &str, kind: &str) -> Result<Vec<AdminJobRecord>> {
        self.sql.jobs_for_room(room_id, kind).await
    }

    /// SQL only: the purged messages' bodies stay in the log, unreachable
    /// (no SQL row points at them), until the room is purged. The purge's
    /// filters (timestamp, sender, extremities) are SQL queries; deleting
    /// the bodies too needs the list of purged rows (docs/scale-out.md).
    async fn purge_history(&self, purge: &HistoryPurge) -> Result<u64> {
        self.sql.purge_history(purge).await
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>> {
        self.sql.registration_tokens().await
    }

    async fn registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRecord>> {
        self.sql.registration_token(token).await
    }

    async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Patch<i64>,
        expiry_ts: Patch<i64>,
    ) -> Result<bool> {
        self.sql
            .update_registration_token(token, uses_allowed, expiry_ts)
            .await
    }

    async fn delete_registration_token(&self, token: &str) -> Result<bool> {
        self.sql.delete_registration_token(token).await
    }

    async fn user_media(
        &self,
        user_id: &str,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<AdminMediaRecord>, i64)> {
        self.sql.user_media(user_id, from, limit).await
    }

    async fn set_media_quarantined(
        &self,
        origin: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<()> {
        self.sql.set_media_quarantined(origin, media_id, by).await
    }

    async fn media_quarantined(&self, origin: &str, media_id: &str) -> Result<bool> {
        self.sql.media_quarantined(origin, media_id).await
    }

    async fn counts(&self, events_since_ts: i64) -> Result<ServerCounts> {
        self.sql.counts(events_since_ts).await
    }
}
