//! The push storage trait: notifications, unread counts, pushers and the
//! pusher delivery queue.

use async_trait::async_trait;

use super::StreamPos;
use crate::error::Result;

/// A notification to record for one user.
#[derive(Clone, Debug)]
pub struct NewNotification {
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub thread_id: String,
    /// The event's stream position.
    pub stream_pos: StreamPos,
    pub ts: i64,
    /// The matching rule's actions, as JSON text.
    pub actions: String,
    pub highlight: bool,
    /// Whether it counts in `push_counts` (false for large rooms, counted lazily).
    pub counted: bool,
    /// Whether to queue it for the user's pushers (the user is offline).
    pub push: bool,
}

#[derive(Clone, Debug)]
pub struct NotificationRecord {
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub thread_id: String,
    pub stream_pos: StreamPos,
    pub ts: i64,
    pub actions: String,
    pub highlight: bool,
    /// Whether the user's read receipt covers it.
    pub read: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountRecord {
    pub room_id: String,
    pub thread_id: String,
    pub notif_count: i64,
    pub highlight_count: i64,
    pub read_pos: StreamPos,
    pub stream_pos: StreamPos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PusherRecord {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON text (`url`, `format`, ...).
    pub data: String,
    pub pushkey_ts: i64,
}

/// A queued delivery with its pusher.
#[derive(Clone, Debug)]
pub struct QueuedPush {
    pub pusher: PusherRecord,
    pub event_id: String,
    pub room_id: String,
    /// The matching rule's actions, as JSON text.
    pub actions: String,
    pub attempts: i64,
    pub next_attempt_ts: i64,
    pub created_ts: i64,
}

#[async_trait]
pub trait PushStore: Send + Sync {
    /// Records notifications, bumps counts (for `counted` ones whose event is
    /// after the user's read position) to `counts_pos`, and queues `push` ones
    /// for every pusher of their user, all in one transaction.
    async fn record_notifications(
        &self,
        batch: &[NewNotification],
        counts_pos: StreamPos,
        now_ms: i64,
    ) -> Result<()>;
    /// Moves the read position forward to `read_pos` for one thread (or, with
    /// `None`, every thread of the room) and recounts what is still unread.
    async fn mark_read(
        &self,
        user_id: &str,
        room_id: &str,
        thread_id: Option<&str>,
        read_pos: StreamPos,
        counts_pos: StreamPos,
    ) -> Result<()>;
    async fn counts_for_user(&self, user_id: &str) -> Result<Vec<CountRecord>>;
    /// The user's unread notification total across rooms (the badge).
    async fn unread_total(&self, user_id: &str) -> Result<i64>;
    /// Newest first, strictly before `before` (a stream position).
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<StreamPos>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRecord>>;

    async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRecord>>;
    /// Adds or replaces a pusher; unless `append`, other users' pushers with
    /// the same app id and pushkey are removed.
    async fn set_pusher(&self, pusher: &PusherRecord, append: bool) -> Result<()>;
    /// Removes a pusher and its queued deliveries; `false` if there was none.
    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool>;

    /// Queued deliveries due at `now_ms`, oldest first.
    async fn due_pushes(&self, now_ms: i64, limit: usize) -> Result<Vec<QueuedPush>>;
    /// The earliest `next_attempt_ts` in the queue.
    async fn next_push_due(&self) -> Result<Option<i64>>;
    /// Claims a delivery by moving its next attempt from `expected` to
    /// `lease_until`; `false` if another worker claimed it first.
    async fn lease_push(&self, q: &QueuedPush, expected: i64, lease_until: i64) -> Result<bool>;
    async fn push_done(&self, q: &QueuedPush) -> Result<()>;
    async fn push_retry(&self, q: &QueuedPush, attempts: i64, next_attempt_ts: i64) -> Result<()>;
}
