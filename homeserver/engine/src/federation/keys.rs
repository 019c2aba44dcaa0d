//! Server keys (Server-Server API, "Retrieving server keys").
//!
//! Our side: the signing key in use plus the verify keys we used before, kept
//! across rotations (a key that stops being the current one is stamped with
//! `expired_ts` in the database and published in `old_verify_keys`).
//!
//! Their side: a remote server's keys are fetched from the server itself
//! (`/_matrix/key/v2/server`) or, when it cannot be reached, from the
//! configured notaries (`/_matrix/key/v2/query`). A response is accepted only
//! if the server signed it with its own verify keys (and, through a notary, if
//! the notary signed it too). Keys are cached in the database with their
//! validity, capped at a week after fetching as the spec requires.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
};
use serde_json::json;

pub use ruma::signatures::Verified;

use super::client::FederationClient;
use crate::{
    core::Core,
    error::{Error, Result},
    storage::ServerKeyRecord,
    util::now_ms,
};

/// How long our published keys are valid, and the most we trust another
/// server's `valid_until_ts` beyond the time we fetched it.
pub const KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// After a failed fetch, the same server's keys are not fetched again for this
/// long, so a flood of requests signed by an unreachable server stays cheap.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(5);
/// After a successful fetch that still lacked a wanted key (old events signed
/// by a key the server no longer lists), the pause before asking again.
const MISSING_KEY_BACKOFF: Duration = Duration::from_secs(1);
/// Per-server fetch state kept for at most this many servers; idle entries
/// beyond it are dropped (origins are unauthenticated until checked).
const MAX_FETCH_STATES: usize = 10_000;

/// The last fetch of one server's keys: when, and whether it failed.
type FetchState = Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>;

/// A verify key and when it may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyKey {
    pub key_id: String,
    /// Unpadded base64 of the public key.
    pub key: String,
    pub valid_until_ts: i64,
    /// Set for old keys: signatures made at or after this time are refused.
    pub expired_ts: Option<i64>,
}

impl VerifyKey {
    /// Whether a signature made at `ts` may be checked with this key.
    /// `enforce_validity` is false for room versions 1-4, which ignore
    /// `valid_until_ts`.
    pub fn valid_at(&self, ts: i64, enforce_validity: bool) -> bool {
        if !enforce_validity {
            return true;
        }
        match self.expired_ts {
            Some(expired) => ts < expired,
            None => ts <= self.valid_until_ts,
        }
    }

    pub(super) fn from_record(r: ServerKeyRecord) -> Self {
        Self {
            key_id: r.key_id,
            key: r.public_key,
            valid_until_ts: r.valid_until_ts,
            expired_ts: r.expired_ts,
        }
    }
}

pub(super) fn unauthorized(msg: impl Into<String>) -> Error {
    Error::new(401, "M_UNAUTHORIZED", msg)
}

/// Our keys, other servers' keys, and signature checks against them.
pub struct ServerKeys {
    pub(super) core: Arc<Core>,
    pub(super) client: FederationClient,
    pub(super) notaries: Vec<OwnedServerName>,
    /// Our previous verify keys (not the current one).
    own_old: Vec<VerifyKey>,
    /// One fetch at a time per server, and when it last ran.
    fetches: parking_lot::Mutex<HashMap<OwnedServerName, FetchState>>,
}

impl ServerKeys {
    /// Records a key rotation (a stored current key that is no longer ours
    /// becomes an old key as of now) and loads our old keys.
    pub async fn new(core: Arc<Core>, client: FederationClient) -> anyhow::Result<Self> {
        let config = &core.config.federation;
        let server = core.server_name.as_str();
        let now = now_ms();
        let stored = core.storage.server_keys.server_keys(server).await?;
        let mut writes: Vec<ServerKeyRecord> = stored
            .iter()
            .filter(|k| k.key_id != core.key.key_id && k.expired_ts.is_none())
            .map(|k| ServerKeyRecord {
                expired_ts: Some(now),
                ..k.clone()
            })
            .collect();
        if !writes.is_empty() {
            let rotated: Vec<&str> = writes.iter().map(|k| k.key_id.as_str()).collect();
            tracing::info!(?rotated, current = %core.key.key_id, "signing key rotated: keeping old verify keys");
        }
        writes.push(ServerKeyRecord {
            server_name: server.to_owned(),
            key_id: core.key.key_id.clone(),
            public_key: core.key.public_key_b64.clone(),
            valid_until_ts: now + KEY_VALIDITY_MS,
            expired_ts: None,
        });
        core.storage
            .server_keys
            .put_server_keys(&writes, None)
            .await?;

        let mut own_old: BTreeMap<String, VerifyKey> = BTreeMap::new();
        for old in &config.old_verify_keys {
            Base64::<ruma::serde::base64::Standard>::parse(&old.key).map_err(|e| {
                anyhow::anyhow!("federation.old_verify_keys {}: bad key: {e}", old.key_id)
            })?;
            own_old.insert(
                old.key_id.clone(),
                VerifyKey {
                    key_id: old.key_id.clone(),
                    key: old.key.clone(),
                    valid_until_ts: old.expired_ts as i64,
                    expired_ts: Some(old.expired_ts as i64),
                },
            );
        }
        for k in core.storage.server_keys.server_keys(server).await? {
            if k.key_id != core.key.key_id && k.expired_ts.is_some() {
                own_old.insert(k.key_id.clone(), VerifyKey::from_record(k));
            }
        }
        own_old.remove(&core.key.key_id);
        let notaries = config
            .trusted_key_servers
            .iter()
            .map(|s| {
                ServerName::parse(s)
                    .map_err(|e| anyhow::anyhow!("federation.trusted_key_servers {s:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            core,
            client,
            notaries,
            own_old: own_old.into_values().collect(),
            fetches: Default::default(),
        })
    }

    pub(super) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(super) fn is_own(&self, server: &ServerName) -> bool {
        server == self.core.server_name
    }

    /// Our `/_matrix/key/v2/server` response, signed with the current key.
    pub fn own_key_response(&self) -> Result<CanonicalJsonObject> {
        let key = &self.core.key;
        let old: serde_json::Map<String, serde_json::Value> = self
            .own_old
            .iter()
            .map(|k| {
                (
                    k.key_id.clone(),
                    json!({ "key": k.key, "expired_ts": k.expired_ts.unwrap_or(k.valid_until_ts) }),
                )
            })
            .collect();
        let body = json!({
            "server_name": self.core.server_name,
            "valid_until_ts": now_ms() + KEY_VALIDITY_MS,
            "verify_keys": { key.key_id.clone(): { "key": key.public_key_b64 } },
            "old_verify_keys": old,
        });
        let mut object = to_object(body)?;
        ruma::signatures::sign_json(self.core.server_name.as_str(), &key.pair, &mut object)
            .map_err(|e| Error::unknown(format!("signing our keys: {e}")))?;
        Ok(object)
    }

    /// Our own keys: the current one (valid for [`KEY_VALIDITY_MS`]) and the old ones.
    pub fn own_keys(&self) -> Vec<VerifyKey> {
        let mut keys = vec![VerifyKey {
            key_id: self.core.key.key_id.clone(),
            key: self.core.key.public_key_b64.clone(),
            valid_until_ts: now_ms() + KEY_VALIDITY_MS,
            expired_ts: None,
        }];
        keys.extend(self.own_old.iter().cloned());
        keys
    }

    /// Checks that `object` carries a valid signature by `server` with a key
    /// valid now (every signature of `server` we can check must verify).
    pub async fn verify_json(
        &self,
        server: &ServerName,
        object: &CanonicalJsonObject,
    ) -> Result<()> {
        self.verify_json_with(server, object, true).await
    }

    pub(super) async fn verify_json_with(
        &self,
        server: &ServerName,
        object: &CanonicalJsonObject,
        via_notaries: bool,
    ) -> Result<()> {
        let wanted = signing_key_ids(object, server);
        if wanted.is_empty() {
            return Err(unauthorized(format!("Not signed by {server}")));
        }
        let keys = self
            .keys_for(server, &wanted, now_ms(), true, via_notaries)
            .await?;
        if keys.is_empty() {
            return Err(unauthorized(format!(
                "No valid verify key of {server} is known"
            )));
        }
        // Check only `server`'s signatures: others (a notary's, say) are not ours to judge here.
        let mut only_server = object.clone();
        if let Some(CanonicalJsonValue::Object(sigs)) = object.get("signatures") {
            let mine: CanonicalJsonObject = sigs
                .iter()
                .filter(|(name, _)| name.as_str() == server.as_str())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            only_server.insert("signatures".to_owned(), CanonicalJsonValue::Object(mine));
        }
        let map = public_key_map(server, &keys)?;
        ruma::signatures::verify_json(&map, &only_server)
            .map_err(|e| unauthorized(format!("Invalid signature by {server}: {e}")))
    }

    /// Checks an event's signatures (every server the room version requires)
    /// with keys valid at its `origin_server_ts`, and its content hash.
    /// [`Verified::Signatures`] means the hash did not match: store and serve
    /// the event redacted.
    pub async fn verify_event(
        &self,
        pdu: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<Verified> {
        let needs = signature_needs(pdu, rules)?;
        let map = self
            .event_key_map(&needs, rules, &mut KeyCache::default())
            .await?;
        check_event_signatures(&map, pdu, rules)
    }

    /// The verify keys an event's signatures need (see [`signature_needs`]),
    /// for [`check_event_signatures`]. Keys read from the database are kept in
    /// `cache` for the next event of a batch (the thousands of events of a
    /// `send_join` response mostly share one signing key); a key missing
    /// from the cache goes the usual way ([`Self::keys_for`]).
    pub async fn event_key_map(
        &self,
        needs: &SignatureNeeds,
        rules: &RoomVersionRules,
        cache: &mut KeyCache,
    ) -> Result<PublicKeyMap> {
        let forbidden = |m: String| Error::forbidden(m);
        let mut map = PublicKeyMap::new();
        for (server, wanted) in &needs.servers {
            if wanted.is_empty() {
                return Err(forbidden(format!("Event is not signed by {server}")));
            }
            let keys = self
                .keys_for_cached(server, wanted, needs.ts, rules.enforce_key_validity, cache)
                .await?;
            if keys.is_empty() {
                return Err(forbidden(format!(
                    "No key of {server} valid at the event's time is known"
                )));
            }
            map.extend(public_key_map(server, &keys)?);
        }
        Ok(map)
    }

    /// [`Self::keys_for`] (through notaries too), answered from `cache` when
    /// the stored keys already there are enough.
    async fn keys_for_cached(
        &self,
        server: &ServerName,
        wanted: &BTreeSet<String>,
        ts: i64,
        enforce_validity: bool,
        cache: &mut KeyCache,
    ) -> Result<Vec<VerifyKey>> {
        if server != self.core.server_name {
            let stored = match cache.stored.get(server) {
                Some(keys) => keys,
                None => {
                    let records = self
                        .core
                        .storage
                        .server_keys
                        .server_keys(server.as_str())
                        .await?;
                    let keys = records.into_iter().map(VerifyKey::from_record).collect();
                    cache.stored.entry(server.to_owned()).or_insert(keys)
                }
            };
            let found: Vec<VerifyKey> = stored
                .iter()
                .filter(|k| wanted.contains(&k.key_id) && k.valid_at(ts, enforce_validity))
                .cloned()
                .collect();
            if found.len() == wanted.len() {
                return Ok(found);
            }
            // Missing or expired here: the full way (which may fetch), and
            // the next event reads what it stored.
            cache.stored.remove(server);
        }
        self.keys_for(server, wanted, ts, enforce_validity, true)
            .await
    }

    /// `server`'s keys among `wanted` usable at `ts`, fetching them when some
    /// are missing or expired.
    pub async fn keys_for(
        &self,
        server: &ServerName,
        wanted: &BTreeSet<String>,
        ts: i64,
        enforce_validity: bool,
        via_notaries: bool,
    ) -> Result<Vec<VerifyKey>> {
        if server == self.core.server_name {
            return Ok(self
                .own_keys()
                .into_iter()
                .filter(|k| wanted.contains(&k.key_id) && k.valid_at(ts, enforce_validity))
                .collect());
        }
        let usable = |records: Vec<ServerKeyRecord>| -> Vec<VerifyKey> {
            records
                .into_iter()
                .map(VerifyKey::from_record)
                .filter(|k| wanted.contains(&k.key_id) && k.valid_at(ts, enforce_validity))
                .collect()
        };
        let store = &self.core.storage.server_keys;
        let found = usable(store.server_keys(server.as_str()).await?);
        if found.len() == wanted.len() {
            return Ok(found);
        }
        let state = self.fetch_state(server);
        let mut last = state.lock().await;
        // Another request may have fetched them while we waited.
        let found = usable(store.server_keys(server.as_str()).await?);
        let backing_off = last.is_some_and(|(at, failed)| {
            at.elapsed()
                < if failed {
                    FAILED_FETCH_BACKOFF
                } else {
                    MISSING_KEY_BACKOFF
                }
        });
        if found.len() == wanted.len() || backing_off {
            return Ok(found);
        }
        let failed = match self.fetch(server, via_notaries).await {
            Ok(()) => false,
            Err(reason) => {
                tracing::info!(%server, %reason, "fetching server keys failed");
                true
            }
        };
        *last = Some((Instant::now(), failed));
        Ok(usable(store.server_keys(server.as_str()).await?))
    }

    fn fetch_state(&self, server: &ServerName) -> FetchState {
        let mut states = self.fetches.lock();
        if states.len() >= MAX_FETCH_STATES {
            // Keep entries in use or still backing off.
            states.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .map(|l| l.is_some_and(|(at, _)| at.elapsed() < FAILED_FETCH_BACKOFF))
                        .unwrap_or(true)
            });
        }
        states.entry(server.to_owned()).or_default().clone()
    }
}

/// Stored verify keys by server, read once for a batch of events.
#[derive(Default)]
pub struct KeyCache {
    stored: HashMap<OwnedServerName, Vec<VerifyKey>>,
}

/// Which servers must have signed an event (per the room version), with the
/// ids of their signatures on it, and the time the keys must be valid at.
pub struct SignatureNeeds {
    pub servers: Vec<(OwnedServerName, BTreeSet<String>)>,
    pub ts: i64,
}

/// What checking `pdu`'s signatures needs; no I/O, so batches of events
/// work this out off the async threads.
pub fn signature_needs(
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<SignatureNeeds> {
    let forbidden = |m: String| Error::forbidden(m);
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(pdu, &rules.signatures)
            .map_err(|e| forbidden(format!("Cannot check the event's signatures: {e}")))?;
    let ts = match pdu.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err(forbidden("Event has no origin_server_ts".to_owned())),
    };
    let servers = servers
        .into_iter()
        .map(|server| {
            let wanted = signing_key_ids(pdu, &server);
            (server, wanted)
        })
        .collect();
    Ok(SignatureNeeds { servers, ts })
}

/// Checks `pdu`'s signatures against `map` (from
/// [`ServerKeys::event_key_map`]) and its content hash: the CPU-bound half of
/// [`ServerKeys::verify_event`].
pub fn check_event_signatures(
    map: &PublicKeyMap,
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Verified> {
    ruma::signatures::verify_event(map, pdu, rules)
        .map_err(|e| Error::forbidden(format!("Invalid event signature: {e}")))
}

/// The ids of `server`'s ed25519 signatures on `object`.
pub(super) fn signing_key_ids(
    object: &CanonicalJsonObject,
    server: &ServerName,
) -> BTreeSet<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(sigs)) => match sigs.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(mine)) => mine
                .keys()
                .filter(|id| id.starts_with("ed25519:"))
                .cloned()
                .collect(),
            _ => BTreeSet::new(),
        },
        _ => BTreeSet::new(),
    }
}

pub(super) fn public_key_map(server: &ServerName, keys: &[VerifyKey]) -> Result<PublicKeyMap> {
    let mut set = PublicKeySet::new();
    for k in keys {
        let key = Base64::parse(&k.key)
            .map_err(|e| unauthorized(format!("Bad verify key {} of {server}: {e}", k.key_id)))?;
        set.insert(k.key_id.clone(), key);
    }
    Ok(PublicKeyMap::from([(server.to_string(), set)]))
}

pub(super) fn to_object(value: serde_json::Value) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(o)) => Ok(o),
        Ok(_) => Err(Error::bad_json("Expected a JSON object")),
        Err(e) => Err(Error::bad_json(format!("Not canonical JSON: {e}"))),
    }
}
