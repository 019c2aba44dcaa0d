//! Storage traits, one per domain, and the records they exchange.
//!
//! Nothing above this module knows which database is underneath. The SQL backend
//! (`sql/`) serves both SQLite and PostgreSQL from one implementation; the
//! timeline trait is kept narrow (append, point reads and range reads by room and
//! stream position) so that a ScyllaDB backend can implement it later without
//! cross-partition transactions.

pub mod admin;
/// Instances of a multi-instance deployment and their room write locks.
pub mod cluster;
/// The ScyllaDB/Cassandra event log (docs/scale-out.md).
#[cfg(feature = "cql")]
pub mod cql;
mod e2ee;
pub mod federation;
mod media;
mod push;
mod server_keys;
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;

// The end-to-end-encryption traits (keys, device lists, to-device, key backup)
// and their records live in `e2ee.rs`.
pub use media::{MediaContent, MediaRecord, MediaStore, ThumbnailRecord};
pub use server_keys::{KeyResponseRecord, ServerKeyRecord, ServerKeyStore};

pub use e2ee::{
    BackupKeyRecord, BackupVersionRecord, BackupWrite, ClaimedKey, DeviceKeysRecord,
    DeviceListStore, InboxRecord, KeyBackupStore, KeyStore, KeyUpload, KeyUploadOutcome,
    MembershipChange, OneTimeKeyRecord, SignatureRecord, ToDeviceMessage, ToDeviceStore,
};
// Push notifications: notifications, counts, pushers and the delivery queue.
pub use push::{
    CountRecord, NewNotification, NotificationRecord, PushStore, PusherRecord, QueuedPush,
};

/// A stream position: the single, monotonically increasing sequence number that
/// orders everything a /sync can return (events, membership, account data...).
pub type StreamPos = i64;

#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
}

#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub user_id: String,
    pub device_id: String,
    /// Milliseconds since the epoch after which the access token is refused.
    pub expires_ts: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub access_token: &'a str,
    pub refresh_token: Option<&'a str>,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub expires_ts: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
}

/// A persisted event as the timeline stores it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    /// The full PDU, as canonical JSON text (redacted in place once redacted).
    pub pdu_json: String,
    /// Snapshot of the room state before this event.
    pub state_before: i64,
    pub rejected: bool,
    /// The sending device and its transaction id, for `unsigned.transaction_id`.
    pub txn: Option<(String, String)>,
}

/// Everything one accepted event changes, written in one transaction.
#[derive(Clone, Debug)]
pub struct PersistEvent {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu_json: String,
    /// Snapshot id of the state before this event.
    pub state_before: i64,
    /// For a state event: the snapshot to create for the state after it,
    /// as `(new_snapshot_id, parent_snapshot_id)`.
    pub state_after: Option<(i64, i64)>,
    /// The room's new forward extremities (replacing the old set).
    pub forward_extremities: Vec<String>,
    /// Set when sent by a local client with a transaction id.
    pub txn: Option<TxnRecord>,
    /// For `m.room.member`: the target's new membership.
    pub membership: Option<String>,
    /// For `m.room.redaction`: the event to redact, and its redacted PDU JSON.
    pub redaction: Option<(String, String)>,
}

/// A client transaction: idempotency is keyed by device and `key` (the endpoint
/// scope plus the client's txn id); `txn_id` is what the client sent.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    pub user_id: String,
    pub device_id: String,
    pub key: String,
    pub txn_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRecord {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_pos: StreamPos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Clone, Debug)]
pub struct AccountDataRecord {
    pub room_id: Option<String>,
    pub event_type: String,
    pub content: String,
    pub stream_pos: StreamPos,
}

/// Accounts, devices, access and refresh tokens, filters, registration tokens.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a user; returns `false` if the id is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<bool>;
    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>>;
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()>;
    async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> Result<()>;
    async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()>;
    async fn set_deactivated(&self, user_id: &str) -> Result<()>;

    async fn upsert_device(&self, device: &DeviceRecord) -> Result<()>;
    async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>>;
    async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>>;
    async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool>;
    /// Deletes a device together with its tokens.
    async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<()>;
    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ts: i64,
        ip: Option<&str>,
    ) -> Result<()>;

    async fn insert_token(&self, token: &NewToken<'_>) -> Result<()>;
    async fn get_token(&self, access_token: &str) -> Result<Option<TokenRecord>>;
    /// The token and its owner's account, in one read: what authenticating a
    /// request needs.
    async fn get_token_owner(
        &self,
        access_token: &str,
    ) -> Result<Option<(TokenRecord, UserRecord)>>;
    /// Exchanges a refresh token for a new token pair, atomically. Returns the
    /// owner, or `None` if the refresh token is unknown or already used.
    async fn rotate_refresh_token(
        &self,
        refresh_token: &str,
        new: &NewToken<'_>,
    ) -> Result<Option<TokenRecord>>;
    async fn delete_token(&self, access_token: &str) -> Result<()>;
    async fn delete_user_tokens(&self, user_id: &str) -> Result<()>;

    async fn create_filter(&self, user_id: &str, filter_id: &str, filter_json: &str) -> Result<()>;
    async fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>>;

    /// Uses a registration token once, if it is valid; returns whether it was.
    async fn use_registration_token(&self, token: &str, now_ms: i64) -> Result<bool>;
    async fn registration_token_valid(&self, token: &str, now_ms: i64) -> Result<bool>;
    async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> Result<bool>;
}

/// Rooms, their current state, membership, aliases and state history.
#[async_trait]
pub trait RoomStore: Send + Sync {
    async fn create_room(&self, room: &RoomRecord) -> Result<()>;
    async fn get_room(&self, room_id: &str) -> Result<Option<RoomRecord>>;
    async fn set_room_public(&self, room_id: &str, public: bool) -> Result<()>;
    async fn public_rooms(&self) -> Result<Vec<String>>;

    /// The room's current state: `(type, state_key, event_id)`.
    async fn current_state(&self, room_id: &str) -> Result<Vec<(String, String, String)>>;
    async fn forward_extremities(&self, room_id: &str) -> Result<Vec<String>>;
    /// The snapshot id of the room's current state.
    async fn current_snapshot(&self, room_id: &str) -> Result<i64>;
    /// The full state of a snapshot, `(type, state_key, event_id)`, resolved
    /// through its chain of parents.
    async fn snapshot_state(&self, snapshot_id: i64) -> Result<Vec<(String, String, String)>>;
    async fn max_snapshot_id(&self) -> Result<i64>;

    async fn memberships_for_user(&self, user_id: &str) -> Result<Vec<MembershipRecord>>;
    async fn members(&self, room_id: &str) -> Result<Vec<MembershipRecord>>;
    /// Forgets a room the user has left: it leaves their membership listing.
    async fn forget_room(&self, user_id: &str, room_id: &str) -> Result<()>;

    async fn set_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool>;
    async fn get_alias(&self, alias: &str) -> Result<Option<(String, String)>>;
    async fn delete_alias(&self, alias: &str) -> Result<bool>;
    async fn aliases_for_room(&self, room_id: &str) -> Result<Vec<String>>;
}

/// The event timeline: append, point reads and range reads by room and position.
#[async_trait]
pub trait TimelineStore: Send + Sync {
    /// Persists an accepted event and everything it changes, atomically.
    async fn persist_event(&self, ev: &PersistEvent) -> Result<()>;
    async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>>;
    /// The events of the room's current state, in one read.
    async fn current_state_events(&self, room_id: &str) -> Result<Vec<StoredEvent>>;
    /// The PDUs of one state key's history in a room, oldest first, as
    /// `(stream_pos, pdu_json)`. Serves history-visibility checks.
    async fn state_key_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<(StreamPos, String)>>;
    /// Events of a room with `from < pos <= to` (forward) or `to < pos <= from`
    /// (backward, newest first), at most `limit`.
    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<StoredEvent>>;
    async fn room_max_pos(&self, room_id: &str) -> Result<StreamPos>;
    async fn max_stream_pos(&self) -> Result<StreamPos>;
    async fn find_txn(&self, user_id: &str, device_id: &str, key: &str) -> Result<Option<String>>;
}

/// Global and per-room account data.
#[async_trait]
pub trait AccountDataStore: Send + Sync {
    async fn put_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
        content: &str,
        pos: StreamPos,
    ) -> Result<()>;
    async fn get_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
    ) -> Result<Option<String>>;
    async fn account_data_since(
        &self,
        user_id: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<AccountDataRecord>>;
}

#[derive(Clone, Debug)]
pub struct ReceiptRecord {
    pub room_id: String,
    /// `m.read`, `m.read.private` or `org.matrix.msc4089.delivery`.
    pub receipt_type: String,
    pub user_id: String,
    /// `main`, a thread root's event id, or `""` for an unthreaded receipt.
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub stream_pos: StreamPos,
}

/// Read receipts and MSC4089 delivery receipts.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Stores the latest receipt of its (room, type, user, thread).
    async fn put_receipt(&self, receipt: &ReceiptRecord) -> Result<()>;
    /// Stores a delivery receipt; `false` if the device had already acknowledged it.
    async fn put_delivery_receipt(
        &self,
        receipt: &ReceiptRecord,
        event_sender: &str,
    ) -> Result<bool>;
    async fn receipts_since(
        &self,
        room_id: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<ReceiptRecord>>;
    /// Delivery receipts for events `sender` sent, in `(since, upto]`.
    async fn delivery_receipts_for_sender(
        &self,
        sender: &str,
        since: StreamPos,
        upto: StreamPos,
    ) -> Result<Vec<ReceiptRecord>>;
    async fn max_receipt_pos(&self) -> Result<StreamPos>;
}

/// The storage handle the services use: one trait object per domain.
#[derive(Clone)]
pub struct Storage {
    pub accounts: Arc<dyn AccountStore>,
    pub rooms: Arc<dyn RoomStore>,
    pub timeline: Arc<dyn TimelineStore>,
    pub account_data: Arc<dyn AccountDataStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub keys: Arc<dyn KeyStore>,
    pub device_lists: Arc<dyn DeviceListStore>,
    pub to_device: Arc<dyn ToDeviceStore>,
    pub backup: Arc<dyn KeyBackupStore>,
    pub push: Arc<dyn PushStore>,
    pub media: Arc<dyn MediaStore>,
    pub federation: Arc<dyn federation::FederationStore>,
    pub server_keys: Arc<dyn ServerKeyStore>,
    /// The admin API's store (`admin.rs`).
    pub admin: Arc<dyn admin::AdminStore>,
    /// Multi-instance coordination (`cluster.rs`).
    pub cluster: Arc<dyn cluster::ClusterStore>,
}

impl Storage {
    /// Connects to the database named by `url` and brings its schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let store = Arc::new(sql::SqlStore::connect(url, max_connections).await?);
        Ok(Self {
            accounts: store.clone(),
            rooms: store.clone(),
            timeline: store.clone(),
            account_data: store.clone(),
            receipts: store.clone(),
            keys: store.clone(),
            device_lists: store.clone(),
            to_device: store.clone(),
            media: store.clone(),
            federation: store.clone(),
            server_keys: store.clone(),
            admin: store.clone(),
            cluster: store.clone(),
            backup: store.clone(),
            push: store,
        })
    }

    /// Connects to the SQL database and, when `cql` names contact points, to
    /// the CQL event log, which then holds the bodies of timeline messages
    /// (`cql/split`, docs/scale-out.md).
    /// A new keyspace records `cql.bucket_shift_for(clustered)`.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        cql: &crate::config::Cql,
        clustered: bool,
    ) -> anyhow::Result<Self> {
        let storage = Self::connect(url, max_connections).await?;
        if cql.contact_points.is_empty() {
            return Ok(storage);
        }
        storage.with_cql(cql, cql.bucket_shift_for(clustered)).await
    }

    #[cfg(feature = "cql")]
    async fn with_cql(self, config: &crate::config::Cql, shift: u32) -> anyhow::Result<Self> {
        let log = cql::CqlEventLog::connect_with_bucket_shift(config, shift)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to [storage.cql]: {e}"))?;
        if log.bucket_shift() != shift {
            tracing::warn!(
                recorded = log.bucket_shift(),
                wanted = shift,
                "the CQL keyspace keeps the bucket shift it was created with"
            );
        }
        Ok(self.with_event_log(Arc::new(log)))
    }

    #[cfg(not(feature = "cql"))]
    async fn with_cql(self, _config: &crate::config::Cql, _shift: u32) -> anyhow::Result<Self> {
        anyhow::bail!(
            "[storage.cql] is configured, but this build has no CQL support (build with `--features cql`)"
        )
    }

    /// Moves the timeline's message bodies to `log`: the timeline,
    /// federation and admin stores become split stores over the SQL ones.
    #[cfg(feature = "cql")]
    pub fn with_event_log(mut self, log: Arc<dyn cql::EventLog>) -> Self {
        let split = Arc::new(cql::split::SplitTimeline::new(
            self.timeline.clone(),
            self.federation.clone(),
            log.clone(),
        ));
        self.timeline = split.clone();
        self.federation = split;
        self.admin = Arc::new(cql::split::SplitAdmin::new(self.admin.clone(), log));
        self
    }
}
