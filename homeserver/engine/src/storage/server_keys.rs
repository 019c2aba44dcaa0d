//! Storage for servers' signing keys: remote servers' verify keys as fetched
//! (directly or through a notary), with the validity they were published with,
//! and our own keys across rotations.

use async_trait::async_trait;

use crate::error::Result;

/// One verify key of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerKeyRecord {
    pub server_name: String,
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64 of the public key.
    pub public_key: String,
    /// Until when the key may be used (milliseconds since the epoch), as
    /// published by its server (capped by the fetcher).
    pub valid_until_ts: i64,
    /// For a key listed in `old_verify_keys`: when its server stopped using it.
    pub expired_ts: Option<i64>,
}

/// A server's signed `/_matrix/key/v2/server` response as we last received it,
/// kept so that we can answer notary queries for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyResponseRecord {
    pub server_name: String,
    /// The response JSON, with the server's own signatures.
    pub response_json: String,
    pub valid_until_ts: i64,
    pub fetched_ts: i64,
}

#[async_trait]
pub trait ServerKeyStore: Send + Sync {
    /// Upserts keys (a key's `valid_until_ts` only grows; an `expired_ts` once
    /// set is kept) and, when given, replaces the server's stored response; in
    /// one transaction.
    async fn put_server_keys(
        &self,
        keys: &[ServerKeyRecord],
        response: Option<&KeyResponseRecord>,
    ) -> Result<()>;
    /// Every key we know for `server_name`, current and old.
    async fn server_keys(&self, server_name: &str) -> Result<Vec<ServerKeyRecord>>;
    async fn key_response(&self, server_name: &str) -> Result<Option<KeyResponseRecord>>;
}
