//! Configuration: one TOML file, plus `PUSH_GATEWAY_*` environment overrides of
//! the top-level keys. Every option is described in docs/push-gateway.md and
//! shown in config/push-gateway.example.toml.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the Push Gateway API (and `/metrics`) listens on. Port 0 picks
    /// a free port; [`crate::Gateway::addr`] tells which.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Log filter when `RUST_LOG` is unset (binary only).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Largest `/notify` body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Timeout of one request to a vendor (and of one OAuth exchange).
    #[serde(default = "default_vendor_timeout_ms")]
    pub vendor_timeout_ms: u64,
    /// Attempts per device on vendor 5xx, 429 or network errors (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay when the vendor gives no `Retry-After`; doubles each time.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// A `Retry-After` longer than this is not waited for: the device fails
    /// for now and the homeserver retries the whole request later.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// One entry per pusher `app_id`.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
}

/// How one `app_id` reaches its devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AppConfig {
    /// Firebase Cloud Messaging, HTTP v1 API.
    Fcm(FcmConfig),
    /// Apple Push Notification service, token (JWT) authentication.
    Apns(ApnsConfig),
}

impl AppConfig {
    /// The vendor's short name, as used in metrics labels.
    pub fn vendor(&self) -> &'static str {
        match self {
            AppConfig::Fcm(_) => "fcm",
            AppConfig::Apns(_) => "apns",
        }
    }

    fn max_concurrency(&self) -> usize {
        match self {
            AppConfig::Fcm(c) => c.max_concurrency,
            AppConfig::Apns(c) => c.max_concurrency,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON downloaded from the Firebase console. Its
    /// `project_id`, `client_email`, `private_key` and `token_uri` are used.
    pub service_account: PathBuf,
    /// Base URL of the FCM API; requests go to
    /// `{api_url}/v1/projects/{project_id}/messages:send`.
    #[serde(default = "default_fcm_url")]
    pub api_url: String,
    /// Vendor requests in flight at once for this app.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `AuthKey_<KEYID>.p8` signing key from the Apple developer account.
    pub key_path: PathBuf,
    /// The 10-character key id of that key.
    pub key_id: String,
    /// The 10-character team id.
    pub team_id: String,
    /// `apns-topic`: the app's bundle id.
    pub topic: String,
    /// APNs host: production `https://api.push.apple.com` or sandbox
    /// `https://api.sandbox.push.apple.com`.
    #[serde(default = "default_apns_url")]
    pub api_url: String,
    /// Extra PEM CA certificate to trust (a private APNs relay or a test server).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Vendor requests in flight at once for this app.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}
fn default_log_level() -> String {
    "info".into()
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_vendor_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_base_ms() -> u64 {
    250
}
fn default_max_retry_after_ms() -> u64 {
    10_000
}
fn default_fcm_url() -> String {
    "https://fcm.googleapis.com".into()
}
fn default_apns_url() -> String {
    "https://api.push.apple.com".into()
}
fn default_max_concurrency() -> usize {
    64
}

impl Default for Config {
    /// The documented defaults, with no apps.
    fn default() -> Self {
        Config {
            listen: default_listen(),
            log_level: default_log_level(),
            max_body_bytes: default_max_body_bytes(),
            vendor_timeout_ms: default_vendor_timeout_ms(),
            max_attempts: default_max_attempts(),
            retry_base_ms: default_retry_base_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            apps: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads `path`, applies `PUSH_GATEWAY_<KEY>` overrides of top-level keys
    /// (for example `PUSH_GATEWAY_LISTEN=0.0.0.0:5000`), and validates.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_toml(&text, std::env::vars())
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text, applies overrides from `env`, and validates.
    pub fn from_toml(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (key, raw) in env {
            let Some(name) = key.strip_prefix("PUSH_GATEWAY_") else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if name == "apps" {
                anyhow::bail!("apps cannot be set from the environment");
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw));
            table.insert(name, value);
        }
        let config: Config = table.try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings that could only fail later, at delivery time.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_attempts == 0 {
            anyhow::bail!("max_attempts must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes must be at least 1024");
        }
        for (app_id, app) in &self.apps {
            if app.max_concurrency() == 0 {
                anyhow::bail!("apps.{app_id:?}: max_concurrency must be at least 1");
            }
            let url = match app {
                AppConfig::Fcm(c) => &c.api_url,
                AppConfig::Apns(c) => &c.api_url,
            };
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                anyhow::bail!("apps.{app_id:?}: api_url {url:?} is not an http(s) URL");
            }
            if let AppConfig::Apns(c) = app {
                if c.key_id.is_empty() || c.team_id.is_empty() || c.topic.is_empty() {
                    anyhow::bail!("apps.{app_id:?}: key_id, team_id and topic are required");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../config/push-gateway.example.toml");
        let config = Config::from_toml(text, std::iter::empty()).unwrap();
        assert!(matches!(
            config.apps.get("im.example.android"),
            Some(AppConfig::Fcm(_))
        ));
        assert!(matches!(
            config.apps.get("im.example.ios"),
            Some(AppConfig::Apns(_))
        ));
    }

    #[test]
    fn defaults_match_an_empty_file() {
        let empty = Config::from_toml("", std::iter::empty()).unwrap();
        let default = Config::default();
        assert_eq!(format!("{empty:?}"), format!("{default:?}"));
    }

    #[test]
    fn env_overrides_top_level_keys() {
        let env = [
            (
                "PUSH_GATEWAY_LISTEN".to_string(),
                "0.0.0.0:7000".to_string(),
            ),
            ("PUSH_GATEWAY_MAX_ATTEMPTS".to_string(), "5".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let config = Config::from_toml("", env.into_iter()).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.max_attempts, 5);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Config::from_toml("listen = 3", std::iter::empty()).is_err());
        assert!(Config::from_toml("nonsense = 1", std::iter::empty()).is_err());
        let no_kind = "[apps.\"a\"]\nservice_account = \"x\"";
        assert!(Config::from_toml(no_kind, std::iter::empty()).is_err());
        let zero = "max_attempts = 0";
        assert!(Config::from_toml(zero, std::iter::empty()).is_err());
    }
}
