//! Registration tokens (MSC3231 / Synapse's admin API): create with a use
//! limit and an expiry, list, show, update, delete.
//!
//! A token is counted as used when a registration with it completes, so
//! `pending` (registrations in progress) is always 0 here.

use serde_json::{json, Value};

use super::AdminService;
use crate::{
    error::{Error, Result},
    storage::admin::{Patch, RegistrationTokenRecord},
    util::{now_ms, random_string},
};

fn token_json(t: &RegistrationTokenRecord) -> Value {
    json!({
        "token": t.token,
        "uses_allowed": t.uses_allowed,
        "pending": 0,
        "completed": t.completed,
        "expiry_time": t.expiry_ts,
    })
}

fn is_valid(t: &RegistrationTokenRecord, now: i64) -> bool {
    t.uses_allowed.is_none_or(|u| t.completed < u) && t.expiry_ts.is_none_or(|e| e > now)
}

/// The body of `POST .../registration_tokens/new`.
#[derive(Clone, Debug, Default)]
pub struct NewRegistrationToken {
    pub token: Option<String>,
    pub uses_allowed: Option<i64>,
    pub expiry_time: Option<i64>,
    pub length: Option<i64>,
}

fn check_uses(uses: Option<i64>) -> Result<()> {
    if uses.is_some_and(|u| u < 0) {
        return Err(Error::invalid_param(
            "uses_allowed must be a non-negative integer or null",
        ));
    }
    Ok(())
}

fn check_expiry(expiry: Option<i64>) -> Result<()> {
    if expiry.is_some_and(|e| e < now_ms()) {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    Ok(())
}

impl AdminService {
    /// `GET /_synapse/admin/v1/registration_tokens[?valid=true|false]`.
    pub async fn list_registration_tokens(&self, valid: Option<bool>) -> Result<Value> {
        let now = now_ms();
        let tokens: Vec<Value> = self
            .core
            .storage
            .admin
            .registration_tokens()
            .await?
            .iter()
            .filter(|t| valid.is_none_or(|v| is_valid(t, now) == v))
            .map(token_json)
            .collect();
        Ok(json!({"registration_tokens": tokens}))
    }

    /// `GET /_synapse/admin/v1/registration_tokens/{token}`.
    pub async fn registration_token(&self, token: &str) -> Result<Value> {
        let t = self
            .core
            .storage
            .admin
            .registration_token(token)
            .await?
            .ok_or_else(|| Error::not_found("No such registration token."))?;
        Ok(token_json(&t))
    }

    /// `POST /_synapse/admin/v1/registration_tokens/new`.
    pub async fn create_registration_token(&self, req: NewRegistrationToken) -> Result<Value> {
        let token = match req.token {
            Some(t)
                if !t.is_empty()
                    && t.len() <= 64
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c)) =>
            {
                t
            }
            Some(_) => {
                return Err(Error::invalid_param(
                    "token must be 1-64 characters of [A-Za-z0-9._~-]",
                ))
            }
            None => {
                let length = req.length.unwrap_or(16);
                if !(1..=64).contains(&length) {
                    return Err(Error::invalid_param("length must be between 1 and 64"));
                }
                random_string(length as usize)
            }
        };
        check_uses(req.uses_allowed)?;
        check_expiry(req.expiry_time)?;
        if !self
            .core
            .storage
            .accounts
            .create_registration_token(&token, req.uses_allowed, req.expiry_time)
            .await?
        {
            return Err(Error::invalid_param(format!(
                "Token already exists: {token}"
            )));
        }
        self.registration_token(&token).await
    }

    /// `PUT /_synapse/admin/v1/registration_tokens/{token}`: each field is
    /// left as is when absent, and cleared when `null`.
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Patch<i64>,
        expiry_time: Patch<i64>,
    ) -> Result<Value> {
        check_uses(uses_allowed.flatten())?;
        check_expiry(expiry_time.flatten())?;
        if !self
            .core
            .storage
            .admin
            .update_registration_token(token, uses_allowed, expiry_time)
            .await?
        {
            return Err(Error::not_found("No such registration token."));
        }
        self.registration_token(token).await
    }

    /// `DELETE /_synapse/admin/v1/registration_tokens/{token}`; deleting a
    /// token that is already gone succeeds too.
    pub async fn delete_registration_token(&self, token: &str) -> Result<Value> {
        self.core
            .storage
            .admin
            .delete_registration_token(token)
            .await?;
        Ok(json!({}))
    }
}
