//! End-to-end encryption across servers: device keys and one-time keys of
//! users on other servers are asked of their server (`/user/keys/query`,
//! `/user/keys/claim`), and we answer the same for our users, plus
//! `/user/devices`. Only public keys and signatures ever cross.

use std::collections::BTreeMap;

use http::Method;
use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{json, Value};

use super::rooms::RoomFederation;
use crate::{
    error::{Error, Result},
    keys::{ClaimResult, QueryResult},
    storage::StreamPos,
};

/// Splits a per-user map into our users and other servers' users by server.
fn split<T>(
    own: &ServerName,
    wanted: BTreeMap<String, T>,
) -> (
    BTreeMap<String, T>,
    BTreeMap<OwnedServerName, BTreeMap<String, T>>,
) {
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<String, T>> = BTreeMap::new();
    for (user, v) in wanted {
        let Ok(parsed) = UserId::parse(user.as_str()) else {
            continue;
        };
        if parsed.server_name() == own {
            local.insert(user, v);
        } else {
            remote
                .entry(parsed.server_name().to_owned())
                .or_default()
                .insert(user, v);
        }
    }
    (local, remote)
}

fn failure(e: impl std::fmt::Display) -> Value {
    json!({"errcode": "M_UNKNOWN", "error": e.to_string()})
}

/// Whether a user id in a remote answer belongs to the server that answered.
fn belongs(user: &str, server: &ServerName) -> bool {
    UserId::parse(user).is_ok_and(|u| u.server_name() == server)
}

impl RoomFederation {
    /// `POST /keys/query` for local and remote users.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        wanted: BTreeMap<String, Vec<String>>,
    ) -> Result<QueryResult> {
        let (local, remote) = split(&self.core.server_name, wanted);
        let mut out = self.edus.keys.query(requester, local).await?;
        for (server, users) in remote {
            let body = json!({"device_keys": users});
            let response = self
                .fed
                .client
                .request(
                    &server,
                    Method::POST,
                    "/_matrix/federation/v1/user/keys/query",
                    Some(body),
                )
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    out.failures.insert(server.to_string(), failure(e));
                    continue;
                }
            };
            for (user, devices) in response["device_keys"].as_object().into_iter().flatten() {
                if !belongs(user, &server) {
                    continue;
                }
                let entry = out.device_keys.entry(user.clone()).or_default();
                for (device, keys) in devices.as_object().into_iter().flatten() {
                    entry.insert(device.clone(), keys.to_string());
                }
            }
            for (field, target) in [
                ("master_keys", &mut out.master_keys),
                ("self_signing_keys", &mut out.self_signing_keys),
            ] {
                for (user, key) in response[field].as_object().into_iter().flatten() {
                    if belongs(user, &server) {
                        target.insert(user.clone(), key.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// `POST /keys/claim` for local and remote users.
    pub async fn claim_keys(
        &self,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<ClaimResult> {
        let (local, remote) = split(&self.core.server_name, wanted);
        let mut out = self.edus.keys.claim(local).await?;
        for (server, users) in remote {
            let body = json!({"one_time_keys": users});
            let response = match self
                .fed
                .client
                .request(
                    &server,
                    Method::POST,
                    "/_matrix/federation/v1/user/keys/claim",
                    Some(body),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    out.failures.insert(server.to_string(), failure(e));
                    continue;
                }
            };
            for (user, devices) in response["one_time_keys"].as_object().into_iter().flatten() {
                if !belongs(user, &server) {
                    continue;
                }
                for (device, keys) in devices.as_object().into_iter().flatten() {
                    for (key_id, key) in keys.as_object().into_iter().flatten() {
                        out.one_time_keys
                            .entry(user.clone())
                            .or_default()
                            .entry(device.clone())
                            .or_default()
                            .insert(key_id.clone(), key.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// `POST /user/keys/query` from another server: our users only.
    pub async fn serve_keys_query(&self, origin: &ServerName, body: &Value) -> Result<Value> {
        let wanted: BTreeMap<String, Vec<String>> =
            serde_json::from_value(body["device_keys"].clone())
                .map_err(|e| Error::bad_json(format!("invalid device_keys: {e}")))?;
        let wanted = wanted
            .into_iter()
            .filter(|(u, _)| belongs(u, &self.core.server_name))
            .collect();
        // A requester of the origin server sees no user-signing keys.
        let requester = UserId::parse(format!("@federation:{origin}"))
            .map_err(|e| Error::unknown(e.to_string()))?;
        let result = self.edus.keys.query(&requester, wanted).await?;
        let parse = |s: &String| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        let device_keys: BTreeMap<&String, BTreeMap<&String, Value>> = result
            .device_keys
            .iter()
            .map(|(u, d)| (u, d.iter().map(|(id, k)| (id, parse(k))).collect()))
            .collect();
        let keys = |m: &BTreeMap<String, String>| -> BTreeMap<String, Value> {
            m.iter().map(|(u, k)| (u.clone(), parse(k))).collect()
        };
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": keys(&result.master_keys),
            "self_signing_keys": keys(&result.self_signing_keys),
        }))
    }

    /// `POST /user/keys/claim` from another server: our users only.
    pub async fn serve_keys_claim(&self, body: &Value) -> Result<Value> {
        let wanted: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_value(body["one_time_keys"].clone())
                .map_err(|e| Error::bad_json(format!("invalid one_time_keys: {e}")))?;
        let wanted = wanted
            .into_iter()
            .filter(|(u, _)| belongs(u, &self.core.server_name))
            .collect();
        let result = self.edus.keys.claim(wanted).await?;
        let mut out = serde_json::Map::new();
        for (user, devices) in result.one_time_keys {
            let mut d = serde_json::Map::new();
            for (device, keys) in devices {
                let k: serde_json::Map<String, Value> = keys
                    .into_iter()
                    .map(|(id, json)| (id, serde_json::from_str(&json).unwrap_or(Value::Null)))
                    .collect();
                d.insert(device, Value::Object(k));
            }
            out.insert(user, Value::Object(d));
        }
        Ok(json!({"one_time_keys": out}))
    }

    /// `GET /user/devices/{userId}`: a local user's devices with their keys.
    pub async fn serve_user_devices(&self, origin: &ServerName, user: &UserId) -> Result<Value> {
        if !self.core.is_local(user.server_name()) {
            return Err(Error::invalid_param("Not a user of this server."));
        }
        let mut wanted = BTreeMap::new();
        wanted.insert(user.to_string(), Vec::<String>::new());
        let query = self
            .serve_keys_query(origin, &json!({"device_keys": wanted}))
            .await?;
        let devices = self
            .core
            .storage
            .accounts
            .list_devices(user.as_str())
            .await?;
        let list: Vec<Value> = devices
            .iter()
            .filter_map(|d| {
                let keys = query["device_keys"][user.as_str()]
                    .get(&d.device_id)?
                    .clone();
                let mut entry = json!({"device_id": d.device_id, "keys": keys});
                if let Some(name) = &d.display_name {
                    entry["device_display_name"] = json!(name);
                }
                Some(entry)
            })
            .collect();
        // The position of the user's latest device-list change: the chain our
        // `m.device_list_update` EDUs' `prev_id`s continue from.
        let stream_id = self
            .core
            .storage
            .device_lists
            .latest_device_list_change(user.as_str(), StreamPos::MAX)
            .await?
            .unwrap_or(0);
        let mut out = json!({
            "user_id": user,
            "stream_id": stream_id,
            "devices": list,
        });
        if let Some(k) = query["master_keys"].get(user.as_str()) {
            out["master_key"] = k.clone();
        }
        if let Some(k) = query["self_signing_keys"].get(user.as_str()) {
            out["self_signing_key"] = k.clone();
        }
        Ok(out)
    }
}
