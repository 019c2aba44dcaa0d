//! The admin API client: one authenticated request helper per method, each
//! answering the decoded JSON or a typed error (the server's Matrix error,
//! or a clear "cannot reach the server").

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::Value;

use crate::{config::Target, http};

/// `/_synapse/admin/v1`
pub const V1: &str = "/_synapse/admin/v1";
/// `/_synapse/admin/v2`
pub const V2: &str = "/_synapse/admin/v2";

pub struct Api {
    client: reqwest::Client,
    pub server: String,
    token: String,
}

impl Api {
    pub fn new(target: Target) -> Result<Self> {
        Ok(Self {
            client: http::client()?,
            server: target.server,
            token: target.token,
        })
    }

    /// Sends one request; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| http::transport_error(&self.server, e))?;
        http::read_json(resp)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        self.call(Method::DELETE, path, body).await
    }

    /// The server name, from the admin's own user id (`whoami`).
    pub async fn server_name(&self) -> Result<String> {
        let me = self.get("/_matrix/client/v3/account/whoami").await?;
        me["user_id"]
            .as_str()
            .and_then(|u| u.split_once(':'))
            .map(|(_, server)| server.to_owned())
            .context("whoami answered without a user id")
    }

    /// A full user id from `@user:server` or a bare localpart.
    pub async fn user_id(&self, user: &str) -> Result<String> {
        if user.starts_with('@') {
            return Ok(user.to_owned());
        }
        Ok(format!("@{user}:{}", self.server_name().await?))
    }
}

/// Percent-encodes a path segment (user ids, room ids, tokens).
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() * 3);
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn ids_are_encoded_for_paths() {
        assert_eq!(enc("!room:hs.example"), "%21room%3Ahs.example");
        assert_eq!(enc("@a/b:hs"), "%40a%2Fb%3Ahs");
    }
}
