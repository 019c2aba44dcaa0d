//! Configuration: one TOML file with commented defaults, plus environment overrides.
//!
//! Every option is documented in `docs/configuration.md`. Environment variables
//! named `HS_<SECTION>__<KEY>` (double underscore between levels) override the file,
//! e.g. `HS_DATABASE__URL=postgres://...` or `HS_SERVER_NAME=example.org`.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

mod cluster;
pub use cluster::{Cluster, MAX_INSTANCES};
mod media;
pub use media::{BlobStoreKind, Media, ThumbnailMethod, ThumbnailSize, S3};
mod storage;
pub use storage::{
    Cql, CqlConsistency, Storage, CLUSTER_BUCKET_SHIFT, SINGLE_INSTANCE_BUCKET_SHIFT,
};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The server name that appears in user ids and room aliases (`@alice:<server_name>`).
    pub server_name: String,
    /// Where to store the signing key (generated on first start).
    pub signing_key_path: PathBuf,
    pub listeners: Listeners,
    pub database: Database,
    /// Stores beside the SQL database (`[storage.cql]`).
    pub storage: Storage,
    pub registration: Registration,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub logging: Logging,
    pub passwords: Passwords,
    pub tls: Tls,
    pub federation: Federation,
    pub presence: Presence,
    pub push: Push,
    pub media: Media,
    pub server_notices: ServerNotices,
    /// Several instances serving one server name (`[cluster]`).
    pub cluster: Cluster,
}

/// Server notices: messages from the server to a user (admin API
/// `send_server_notice`), delivered in a room the notices user shares with them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerNotices {
    /// Localpart of the account notices are sent from (created on first use).
    pub localpart: String,
    /// Name of the room notices arrive in.
    pub room_name: String,
}

impl Default for ServerNotices {
    fn default() -> Self {
        Self {
            localpart: "server".to_owned(),
            room_name: "Server Notices".to_owned(),
        }
    }
}

/// Presence: online / unavailable / offline with last activity.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Presence {
    /// Off: presence is neither tracked nor sent, and `/presence` reports offline.
    pub enabled: bool,
    /// An online user with no activity for this long becomes `unavailable`.
    pub idle_after_ms: u64,
    /// A user whose last connection closed goes `offline` after this grace period.
    pub offline_grace_ms: u64,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after_ms: 5 * 60 * 1000,
            offline_grace_ms: 30_000,
        }
    }
}

/// Push notifications: rule evaluation, unread counts and delivery to push
/// gateways (`docs/push.md`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Push {
    /// The first retry of a failed delivery waits this long; each further
    /// retry waits twice as long, up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A delivery still failing this long after it was queued is dropped.
    pub give_up_after_ms: u64,
    /// Timeout of one request to a push gateway.
    pub gateway_timeout_ms: u64,
    /// Large rooms are counted lazily at /sync over at most this many of the
    /// newest unread events (their counts saturate at this number).
    pub lazy_count_limit: usize,
}

impl Default for Push {
    fn default() -> Self {
        Self {
            retry_initial_ms: 1_000,
            retry_max_ms: 10 * 60 * 1000,
            give_up_after_ms: 24 * 60 * 60 * 1000,
            gateway_timeout_ms: 10_000,
            lazy_count_limit: 100,
        }
    }
}

/// Argon2id parameters for password hashes. Defaults follow OWASP's minimum;
/// tests lower them to stay fast.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Passwords {
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

impl Default for Passwords {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// Client-Server API (and the key server). Plain HTTP. Port 0 picks a free
    /// port (used by tests).
    pub client: SocketAddr,
    /// Server-Server API (federation, the key server), over TLS when `[tls]` is
    /// set. Unset: no federation listener.
    pub federation: Option<SocketAddr>,
    /// Bind the client listener with `SO_REUSEPORT`, so several server
    /// processes on one host can share its port and the kernel spreads new
    /// connections over them (each process has its own file limit).
    pub reuse_port: bool,
}

/// The certificate the federation listener presents.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Federation {
    /// Extra PEM CA certificates to trust for outbound federation, on top of the
    /// public roots (a private CA, e.g. a test network's).
    pub trusted_ca_paths: Vec<PathBuf>,
    /// Static `server name -> "host:port"` (or `"ip:port"`) entries that bypass
    /// discovery. The server name is still the TLS name and the `Host` header.
    pub overrides: std::collections::BTreeMap<String, String>,
    /// Only these servers (globs: `*`, `?`) may federate with us; empty allows all.
    pub allow: Vec<String>,
    /// These servers (globs) may not federate with us; checked after `allow`.
    pub deny: Vec<String>,
    /// Notary servers asked for a server's keys when it cannot be reached directly.
    pub trusted_key_servers: Vec<String>,
    /// Verify keys this server used before, published under `old_verify_keys`
    /// (keys rotated on this database are remembered automatically).
    pub old_verify_keys: Vec<OldVerifyKey>,
    /// DNS servers (`ip:port`) for SRV and address lookups; empty uses the
    /// system's resolver configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// Timeout for one outbound federation request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Timeout for establishing an outbound connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest accepted inbound federation request body, in bytes.
    pub max_request_bytes: usize,
}

/// A verify key this server no longer signs with.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OldVerifyKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64 of the public key.
    pub key: String,
    /// When the key stopped being used, in milliseconds since the epoch.
    pub expired_ts: u64,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            trusted_ca_paths: Vec::new(),
            overrides: Default::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            trusted_key_servers: Vec::new(),
            old_verify_keys: Vec::new(),
            dns_servers: Vec::new(),
            request_timeout_ms: 60_000,
            connect_timeout_ms: 10_000,
            max_request_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `sqlite://path/to/file.db` (embedded default) or `postgres://user:pass@host/db`.
    pub url: String,
    /// Maximum pooled connections (PostgreSQL). SQLite uses one writer and a few readers.
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    /// Open registration with `m.login.dummy`: anyone may register.
    pub enabled: bool,
    /// When set, registration requires a registration token (`m.login.registration_token`).
    pub require_token: bool,
    /// Shared secret for `/_synapse/admin/v1/register` (HMAC-SHA1). Unset disables it.
    pub shared_secret: Option<String>,
    /// Issue refresh tokens to clients that ask for them; access tokens then expire.
    pub access_token_lifetime_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes. Larger bodies get `M_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// Longest accepted /sync `timeout`, in milliseconds.
    pub max_sync_timeout_ms: u64,
    /// Rooms with more joined members than this are "large": a send wakes one
    /// room-level key instead of each member (fan-out on read).
    pub large_room_members: usize,
    /// The WebSocket stream pings this often; a peer silent for three
    /// intervals is closed as dead.
    pub ws_ping_interval_ms: u64,
}

/// Token-bucket rate limits. `per_second` is the refill rate, `burst` the bucket size.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub enabled: bool,
    pub login: Bucket,
    pub register: Bucket,
    pub send: Bucket,
    /// Media uploads (`/upload`, `/create`), per user.
    pub media_upload: Bucket,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// `tracing` filter directive, e.g. `info` or `hs_engine=debug,info`.
    pub level: String,
    /// Emit JSON lines instead of human-readable logs.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            signing_key_path: PathBuf::from("./data/signing.key"),
            listeners: Listeners::default(),
            database: Database::default(),
            storage: Storage::default(),
            registration: Registration::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            logging: Logging::default(),
            passwords: Passwords::default(),
            presence: Presence::default(),
            push: Push::default(),
            tls: Tls::default(),
            federation: Federation::default(),
            media: Media::default(),
            server_notices: ServerNotices::default(),
            cluster: Cluster::default(),
        }
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            client: SocketAddr::from(([127, 0, 0, 1], 8008)),
            federation: None,
            reuse_port: false,
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: "sqlite://./data/homeserver.db".to_owned(),
            max_connections: 16,
        }
    }
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            enabled: true,
            require_token: false,
            shared_secret: None,
            access_token_lifetime_ms: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_sync_timeout_ms: 120_000,
            large_room_members: 100,
            ws_ping_interval_ms: 30_000,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            login: Bucket {
                per_second: 0.5,
                burst: 10.0,
            },
            register: Bucket {
                per_second: 0.2,
                burst: 5.0,
            },
            send: Bucket {
                per_second: 20.0,
                burst: 100.0,
            },
            media_upload: Bucket {
                per_second: 1.0,
                burst: 20.0,
            },
        }
    }
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: "info,ruma_state_res=warn,sqlx=warn".to_owned(),
            json: false,
        }
    }
}

impl Config {
    /// Reads a TOML file (if given), then applies `HS_*` environment overrides.
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut value: toml::Table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text)?
            }
            None => toml::Table::new(),
        };
        apply_env_overrides(&mut value, std::env::vars());
        let config: Config = value.try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ruma::ServerName::parse(&self.server_name)
            .map_err(|e| anyhow::anyhow!("server_name {:?} is invalid: {e}", self.server_name))?;
        if self.limits.max_body_bytes < 1024 {
            anyhow::bail!("limits.max_body_bytes must be at least 1024");
        }
        if self.tls.cert_path.is_some() != self.tls.key_path.is_some() {
            anyhow::bail!("tls.cert_path and tls.key_path must be set together");
        }
        self.media.validate()?;
        self.storage.cql.validate()?;
        self.cluster.validate(&self.database.url)?;
        Ok(())
    }
}

/// Options that are unset by default, so absent from the serialised defaults.
const OPTIONAL_KEYS: &[&str] = &[
    "registration.shared_secret",
    "registration.access_token_lifetime_ms",
    "listeners.federation",
    "tls.cert_path",
    "tls.key_path",
];

/// Whether `parts` names a configuration option. Other `HS_*` variables (test
/// harness settings, for instance) are not ours and are ignored.
fn is_known_key(parts: &[String]) -> bool {
    let dotted = parts.join(".");
    if OPTIONAL_KEYS.contains(&dotted.as_str()) {
        return true;
    }
    let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(Config::default()) else {
        return false;
    };
    let mut table = &defaults;
    for (i, part) in parts.iter().enumerate() {
        match table.get(part) {
            Some(toml::Value::Table(t)) if i + 1 < parts.len() => table = t,
            Some(_) if i + 1 == parts.len() => return true,
            _ => return false,
        }
    }
    false
}

/// `HS_DATABASE__URL=x` sets `[database] url = "x"`. Values parse as TOML
/// scalars when they can (`true`, `42`), and as strings otherwise.
fn apply_env_overrides(root: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) {
    for (key, raw) in vars {
        let Some(path) = key.strip_prefix("HS_") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if !is_known_key(&parts) {
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut table = &mut *root;
        for part in &parts[..parts.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(next) = entry else {
                unreachable!()
            };
            table = next;
        }
        if let Some(last) = parts.last() {
            table.insert(last.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        for (name, text) in [
            (
                "development.toml",
                include_str!("../../../config/development.toml"),
            ),
            (
                "production.example.toml",
                include_str!("../../../config/production.example.toml"),
            ),
        ] {
            let config: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let prod: Config =
            toml::from_str(include_str!("../../../config/production.example.toml")).unwrap();
        assert!(
            !prod.registration.enabled,
            "production example keeps registration closed"
        );
    }

    #[test]
    fn env_overrides_nested_keys() {
        let mut t = toml::Table::new();
        apply_env_overrides(
            &mut t,
            vec![
                ("HS_DATABASE__URL".to_owned(), "postgres://x/y".to_owned()),
                ("HS_REGISTRATION__ENABLED".to_owned(), "false".to_owned()),
                ("OTHER".to_owned(), "1".to_owned()),
                ("HS_TEST_POSTGRES_URL".to_owned(), "x".to_owned()),
                (
                    "HS_REGISTRATION__SHARED_SECRET".to_owned(),
                    "s3cret".to_owned(),
                ),
            ]
            .into_iter(),
        );
        let c: Config = t.try_into().unwrap();
        assert_eq!(c.database.url, "postgres://x/y");
        assert!(!c.registration.enabled);
        assert_eq!(c.registration.shared_secret.as_deref(), Some("s3cret"));
    }

    #[test]
    fn federation_listener_and_tls_options() {
        let defaults = Config::default();
        assert!(defaults.listeners.federation.is_none());
        assert!(defaults.tls.cert_path.is_none());
        assert!(defaults.federation.trusted_ca_paths.is_empty());

        let mut t: toml::Table = toml::from_str(
            r#"
            [tls]
            cert_path = "/etc/hs/tls.crt"
            [federation]
            trusted_ca_paths = ["/etc/hs/ca.crt"]
            "#,
        )
        .unwrap();
        apply_env_overrides(
            &mut t,
            vec![
                (
                    "HS_LISTENERS__FEDERATION".to_owned(),
                    "0.0.0.0:8448".to_owned(),
                ),
                ("HS_TLS__KEY_PATH".to_owned(), "/etc/hs/tls.key".to_owned()),
            ]
            .into_iter(),
        );
        let c: Config = t.try_into().unwrap();
        assert_eq!(
            c.listeners.federation,
            Some("0.0.0.0:8448".parse().unwrap())
        );
        assert_eq!(
            c.tls.key_path.as_deref(),
            Some(std::path::Path::new("/etc/hs/tls.key"))
        );
        assert_eq!(c.federation.trusted_ca_paths.len(), 1);
        c.validate().unwrap();

        let half = Config {
            tls: Tls {
                cert_path: Some("/x".into()),
                key_path: None,
            },
            ..Config::default()
        };
        assert!(half.validate().is_err());
    }
}
