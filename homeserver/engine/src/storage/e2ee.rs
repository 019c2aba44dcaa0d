//! Storage traits for end-to-end encryption: device and cross-signing keys,
//! one-time and fallback keys, device-list changes, the to-device inbox and
//! the server-side key backup.
//!
//! Everything here is public key material, signatures or ciphertext: the server
//! never holds a private key or a plaintext. Each write that must be all or
//! nothing (a key upload, a to-device send, a device's removal) is one method,
//! so a backend can make it one transaction.

use async_trait::async_trait;

use super::StreamPos;
use crate::error::Result;

/// A one-time or fallback key: `<algorithm>:<key_id>` and its JSON as uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeKeyRecord {
    pub algorithm: String,
    pub key_id: String,
    pub key_json: String,
}

/// Everything one `/keys/upload` stores, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct KeyUpload {
    /// The device's signed identity keys, when they are new or changed.
    pub device_keys: Option<String>,
    pub one_time_keys: Vec<OneTimeKeyRecord>,
    pub fallback_keys: Vec<OneTimeKeyRecord>,
    /// Upload order of the one-time keys (claims hand out the lowest first).
    pub seq: i64,
    /// Set when others must re-query this user's keys: a device-list change
    /// recorded at this position.
    pub change_pos: Option<StreamPos>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyUploadOutcome {
    Stored,
    /// A one-time key id was already stored with different content; nothing
    /// was written.
    OneTimeKeyConflict(String),
}

/// A device's identity keys, with its display name for `unsigned`.
#[derive(Clone, Debug)]
pub struct DeviceKeysRecord {
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// A key handed out by `/keys/claim`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKey {
    pub key_id: String,
    pub key_json: String,
    pub fallback: bool,
}

/// A signature from `/keys/signatures/upload`. `target_key_id` is a device id
/// or the public key of a cross-signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureRecord {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// Device identity keys, one-time and fallback keys, cross-signing keys and
/// the signatures on them.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>>;
    /// Identity keys of the user's devices that still exist.
    async fn user_device_keys(&self, user_id: &str) -> Result<Vec<DeviceKeysRecord>>;
    /// Stores an upload atomically (and its device-list change, if any).
    async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        upload: &KeyUpload,
    ) -> Result<KeyUploadOutcome>;
    /// Unclaimed one-time keys per algorithm, and the algorithms whose
    /// fallback key has not been claimed yet.
    async fn key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(Vec<(String, i64)>, Vec<String>)>;
    /// Hands out one key: an unclaimed one-time key, which is deleted in the
    /// same statement (so it goes to exactly one claimer), or else the
    /// fallback key, which is marked used.
    async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<ClaimedKey>>;

    /// `(key_type, key_json)` with key_type master, self_signing or user_signing.
    async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// Stores cross-signing keys and records a device-list change, atomically.
    async fn put_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(String, String)],
        change_pos: StreamPos,
    ) -> Result<()>;
    /// Stores signatures and records a device-list change for `changed_user`.
    async fn put_signatures(
        &self,
        signatures: &[SignatureRecord],
        changed_user: &str,
        change_pos: StreamPos,
    ) -> Result<()>;
    /// Every stored signature on the user's keys.
    async fn signatures_on(&self, target_user_id: &str) -> Result<Vec<SignatureRecord>>;

    /// Removes the devices' keys, signatures, to-device inboxes and txn ids,
    /// and records a device-list change, in one transaction.
    async fn delete_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
        change_pos: StreamPos,
    ) -> Result<()>;
}

/// Rows about other users' membership that a device-list delta is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub other_user: String,
    pub other_membership: String,
    /// Whether the other user's membership changed in the window.
    pub other_changed: bool,
    pub my_membership: String,
    /// Whether my membership of the room changed in the window.
    pub my_changed: bool,
}

/// Device-list changes, and the room sharing that decides who sees them.
#[async_trait]
pub trait DeviceListStore: Send + Sync {
    /// Users with a device-list change at a position in `(from, to]` who are
    /// `user_id` or share a joined room with them now.
    async fn device_list_changes(
        &self,
        user_id: &str,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<Vec<String>>;
    /// Membership changes in `(from, to]` that may change whom `user_id` shares
    /// a room with: others' changes in rooms `user_id` is joined to, and every
    /// member of a room whose membership of `user_id` changed.
    async fn membership_changes(
        &self,
        user_id: &str,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<Vec<MembershipChange>>;
    /// Everyone joined to a room `user_id` is joined to (including `user_id`).
    async fn users_sharing_rooms(&self, user_id: &str) -> Result<Vec<String>>;
    /// The highest stream position the E2EE tables ever used (to-device
    /// messages included, even once delivered and deleted).
    async fn max_stream_pos(&self) -> Result<StreamPos>;
    /// Records that `user_id`'s device list changed at `pos`: how another
    /// server's `m.device_list_update` reaches our users' `/sync`.
    async fn record_device_list_change(&self, user_id: &str, pos: StreamPos) -> Result<()>;
    /// `user_id`'s latest device-list change before `before`, if any: the
    /// `prev_id` of the next `m.device_list_update` we send.
    async fn latest_device_list_change(
        &self,
        user_id: &str,
        before: StreamPos,
    ) -> Result<Option<StreamPos>>;
}

/// A message for one device's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToDeviceMessage {
    pub user_id: String,
    pub device_id: String,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// An inbox entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxRecord {
    pub stream_pos: StreamPos,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// The per-device to-device inbox.
#[async_trait]
pub trait ToDeviceStore: Send + Sync {
    /// Stores every message at `pos` and the sender's transaction key, in one
    /// transaction. Returns `false` (and stores nothing) if the transaction
    /// key was already used by that device.
    async fn send_to_device(
        &self,
        sender_user: &str,
        sender_device: &str,
        txn_key: &str,
        pos: StreamPos,
        messages: &[ToDeviceMessage],
    ) -> Result<bool>;
    /// The device's inbox at positions `<= upto`, oldest first.
    async fn inbox(
        &self,
        user_id: &str,
        device_id: &str,
        upto: StreamPos,
    ) -> Result<Vec<InboxRecord>>;
    /// Deletes the device's messages at positions `<= upto` (delivered).
    async fn delete_inbox(&self, user_id: &str, device_id: &str, upto: StreamPos) -> Result<u64>;
}

/// A backup version's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupVersionRecord {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up Megolm session (its `session_data` is ciphertext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKeyRecord {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

/// What a write to a backup version found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupWrite {
    /// Done; the version's etag and key count afterwards.
    Done { etag: i64, count: i64 },
    /// No such (undeleted) version.
    NotFound,
    /// The version exists but is not the latest one, which is given.
    NotLatest(i64),
}

/// Server-side key backup (`/room_keys`).
#[async_trait]
pub trait KeyBackupStore: Send + Sync {
    /// Creates the next version number for the user.
    async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64>;
    /// One version, or the latest one when `version` is `None`; never a deleted one.
    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRecord>>;
    async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool>;
    /// Marks the version deleted and removes its keys.
    async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool>;
    /// Stores sessions into the latest version, each replacing a stored one
    /// only if it is better (verified, then lower first index, then fewer
    /// forwards). The etag changes when anything was stored.
    async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackupKeyRecord],
    ) -> Result<BackupWrite>;
    /// Sessions of a version, optionally of one room or one session.
    async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRecord>>;
    async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<BackupWrite>;
}
