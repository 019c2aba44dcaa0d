//! Where the CLI finds its server and access token, in order of precedence:
//! `--server`/`--token` flags, the `ADMIN_CLI_SERVER`/`ADMIN_CLI_TOKEN`
//! environment variables, then the file `admin-cli login` writes
//! (`$XDG_CONFIG_HOME/admin-cli/config.toml`, else
//! `~/.config/admin-cli/config.toml`; `--config` names another).
//!
//! The file holds a bearer token, so it is written with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The stored login.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub server: Option<String>,
    pub token: Option<String>,
    /// Who the token belongs to, for `admin-cli login --status`.
    pub user_id: Option<String>,
}

/// The default config file path.
pub fn default_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set; pass --config")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("admin-cli").join("config.toml"))
}

/// Reads the file; a missing file is an empty login.
pub fn load(path: &Path) -> Result<Stored> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the file readable by its owner only.
pub fn save(path: &Path, stored: &Stored) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(stored).context("encoding the config")?;
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its old mode on open: set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The server URL and token to use, after flags, environment and file.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub token: String,
}

/// Resolves flags (already merged with the environment by clap) over the file.
pub fn resolve(server: Option<String>, token: Option<String>, path: &Path) -> Result<Target> {
    let stored = load(path)?;
    let server = server.or(stored.server);
    let token = token.or(stored.token);
    match (server, token) {
        (Some(server), Some(token)) => Ok(Target {
            server: server.trim_end_matches('/').to_owned(),
            token,
        }),
        (None, _) => bail!(
            "no server given: run `admin-cli login`, or pass --server (or set ADMIN_CLI_SERVER)"
        ),
        (_, None) => bail!(
            "no access token given: run `admin-cli login`, or pass --token (or set ADMIN_CLI_TOKEN)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("admin-cli-test-{}", std::process::id()));
        let path = dir.join("sub").join("config.toml");
        let stored = Stored {
            server: Some("http://hs".into()),
            token: Some("secret".into()),
            user_id: Some("@root:hs".into()),
        };
        save(&path, &stored).unwrap();
        assert_eq!(load(&path).unwrap(), stored);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let target = resolve(None, Some("flag".into()), &path).unwrap();
        assert_eq!(
            (target.server.as_str(), target.token.as_str()),
            ("http://hs", "flag")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_everything_says_what_to_do() {
        let path = std::env::temp_dir().join("admin-cli-does-not-exist/config.toml");
        let err = resolve(None, None, &path).unwrap_err().to_string();
        assert!(err.contains("admin-cli login"), "{err}");
    }
}
