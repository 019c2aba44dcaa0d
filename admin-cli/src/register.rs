//! `register`: create a user with the server's registration shared secret.
//!
//! This is Synapse's admin registration API, which our homeserver serves too,
//! so the same command works against either:
//!
//! 1. `GET /_synapse/admin/v1/register` hands out a single-use `nonce`;
//! 2. `POST /_synapse/admin/v1/register` with `{nonce, username, password,
//!    admin, mac}`, where `mac` is the hex HMAC-SHA1, keyed with the shared
//!    secret, of `nonce \0 username \0 password \0 ("admin" | "notadmin")`.
//!
//! The nonce makes each request single-use; the MAC proves knowledge of the
//! secret without sending it.

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::http;

/// Command-line arguments of `admin-cli register`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the homeserver.
    #[arg(long, env = "HS_BASE_URL", default_value = "http://127.0.0.1:8008")]
    pub base_url: String,
    /// The server's `registration_shared_secret`.
    #[arg(long, env = "HS_REGISTRATION_SHARED_SECRET", hide_env_values = true)]
    pub shared_secret: String,
    /// Localpart of the new user (e.g. `alice`).
    #[arg(long)]
    pub user: String,
    /// Password of the new user.
    #[arg(long, env = "HS_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Make the new user a server admin.
    #[arg(long)]
    pub admin: bool,
}

/// What the server answers to a successful registration.
#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub user_id: String,
    pub access_token: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub home_server: Option<String>,
}

#[derive(Deserialize)]
struct Nonce {
    nonce: String,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    nonce: &'a str,
    username: &'a str,
    password: &'a str,
    admin: bool,
    mac: String,
}

/// Runs `admin-cli register` and prints the new account.
pub async fn run(args: Args) -> Result<()> {
    let client = http::client()?;
    let registered = shared_secret_register(
        &client,
        &args.base_url,
        &args.shared_secret,
        &args.user,
        &args.password,
        args.admin,
    )
    .await?;
    println!("user_id: {}", registered.user_id);
    println!("access_token: {}", registered.access_token);
    if let Some(device_id) = &registered.device_id {
        println!("device_id: {device_id}");
    }
    Ok(())
}

/// Registers `username` through the shared-secret admin API and returns its
/// first access token.
pub async fn shared_secret_register(
    client: &reqwest::Client,
    base_url: &str,
    shared_secret: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> Result<Registered> {
    let url = format!(
        "{}/_synapse/admin/v1/register",
        base_url.trim_end_matches('/')
    );

    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let Nonce { nonce } = http::read_json(resp)
        .await
        .context("fetching a registration nonce")?;

    let body = RegisterBody {
        nonce: &nonce,
        username,
        password,
        admin,
        mac: registration_mac(shared_secret, &nonce, username, password, admin)?,
    };
    let resp = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    http::read_json(resp)
        .await
        .with_context(|| format!("registering {username}"))
}

/// The request MAC: hex HMAC-SHA1 over the NUL-separated fields.
pub fn registration_mac(
    shared_secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> Result<String> {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(shared_secret.as_bytes()).context("initialising HMAC-SHA1")?;
    let role = if admin { "admin" } else { "notadmin" };
    for (i, field) in [nonce, username, password, role].into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(field.as_bytes());
    }
    Ok(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with Python's `hmac`/`hashlib`,
    // the way Synapse's own `register_new_matrix_user` script does it.
    #[test]
    fn mac_matches_synapse_for_a_regular_user() {
        let mac = registration_mac("secret", "abcdef", "alice", "hunter2", false).unwrap();
        assert_eq!(mac, "0bd41f74cb12248a3b9641cb8f93198628290050");
    }

    #[test]
    fn mac_matches_synapse_for_an_admin() {
        let mac = registration_mac("secret", "abcdef", "alice", "hunter2", true).unwrap();
        assert_eq!(mac, "d6f1fc110e05e46e9015a23b98dc4dc0d8630b84");
    }
}
