//! Querying other servers' keys (Server-Server API, "Querying Keys
//! Directly" and "Querying Keys Through Another Server").
//!
//! A server's own `/_matrix/key/v2/server` is asked first; when it cannot be
//! reached, each configured notary's `/_matrix/key/v2/query`. An answer is
//! accepted only if it is for the server asked about and signed by that
//! server's own verify keys (and, through a notary, by the notary too, whose
//! key is fetched directly). `valid_until_ts` is capped at a week after
//! fetching. The answer is stored whole so we can serve it as a notary.

use http::Method;
use ruma::{serde::Base64, CanonicalJsonObject, CanonicalJsonValue, ServerName};
use serde_json::json;

use super::keys::{
    public_key_map, signing_key_ids, to_object, ServerKeys, VerifyKey, KEY_VALIDITY_MS,
};
use crate::{
    storage::{KeyResponseRecord, ServerKeyRecord},
    util::now_ms,
};

impl ServerKeys {
    /// Fetches `server`'s keys directly, then through each notary; stores the
    /// first acceptable answer.
    pub(super) async fn fetch(
        &self,
        server: &ServerName,
        via_notaries: bool,
    ) -> Result<(), String> {
        let direct = self
            .client
            .request(server, Method::GET, "/_matrix/key/v2/server", None)
            .await
            .map_err(|e| e.to_string());
        let direct = match direct {
            Ok(response) => self.accept(server, response, None).await,
            Err(e) => Err(e),
        };
        let mut errors = match direct {
            Ok(()) => return Ok(()),
            Err(e) => vec![format!("direct: {e}")],
        };
        if via_notaries {
            for notary in self
                .notaries
                .iter()
                .filter(|n| n.as_str() != server.as_str())
            {
                match Box::pin(self.fetch_via_notary(notary, server)).await {
                    Ok(()) => return Ok(()),
                    Err(e) => errors.push(format!("notary {notary}: {e}")),
                }
            }
        }
        Err(errors.join("; "))
    }

    async fn fetch_via_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<(), String> {
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let response = self
            .client
            .request(notary, Method::POST, "/_matrix/key/v2/query", Some(body))
            .await
            .map_err(|e| e.to_string())?;
        let answers = response["server_keys"]
            .as_array()
            .ok_or("no server_keys array")?;
        let mut accepted = false;
        for answer in answers
            .iter()
            .filter(|a| a["server_name"] == server.as_str())
        {
            let object = to_object(answer.clone()).map_err(|e| e.to_string())?;
            // The notary vouches for the answer with its own (directly fetched) key.
            self.verify_json_with(notary, &object, false)
                .await
                .map_err(|e| e.message)?;
            self.accept(server, answer.clone(), Some(notary)).await?;
            accepted = true;
        }
        if accepted {
            Ok(())
        } else {
            Err(format!("no keys for {server} in the answer"))
        }
    }

    /// Validates a key response (its server, its self-signature) and stores it.
    fn accept_checked(
        &self,
        server: &ServerName,
        object: &CanonicalJsonObject,
    ) -> Result<(Vec<ServerKeyRecord>, i64), String> {
        let response = serde_json::to_value(object).map_err(|e| e.to_string())?;
        if response["server_name"] != server.as_str() {
            return Err(format!("answer is for {}", response["server_name"]));
        }
        let valid_until = response["valid_until_ts"]
            .as_i64()
            .ok_or("no valid_until_ts")?;
        let capped = valid_until.min(now_ms() + KEY_VALIDITY_MS);
        let mut records = Vec::new();
        let verify_keys = response["verify_keys"]
            .as_object()
            .filter(|k| !k.is_empty())
            .ok_or("no verify_keys")?;
        // Keys of algorithms we do not know are skipped, not fatal.
        for (key_id, key) in verify_keys
            .iter()
            .filter(|(id, _)| id.starts_with("ed25519:"))
        {
            let key = key["key"].as_str().ok_or("verify key without key")?;
            records.push(record(server, key_id, key, capped, None)?);
        }
        if let Some(old) = response["old_verify_keys"].as_object() {
            for (key_id, key) in old.iter().filter(|(id, _)| id.starts_with("ed25519:")) {
                let expired = key["expired_ts"]
                    .as_i64()
                    .ok_or("old key without expired_ts")?;
                let k = key["key"].as_str().ok_or("old key without key")?;
                records.push(record(server, key_id, k, expired, Some(expired))?);
            }
        }
        // Self-signed: every signature by a current verify key must hold, and
        // there must be at least one.
        let current: Vec<VerifyKey> = records
            .iter()
            .filter(|r| r.expired_ts.is_none())
            .cloned()
            .map(VerifyKey::from_record)
            .collect();
        let wanted = signing_key_ids(object, server);
        let signers: Vec<VerifyKey> = current
            .into_iter()
            .filter(|k| wanted.contains(&k.key_id))
            .collect();
        if signers.is_empty() {
            return Err("not signed by its own verify keys".to_owned());
        }
        let map = public_key_map(server, &signers).map_err(|e| e.message)?;
        let mut only_server = object.clone();
        if let Some(CanonicalJsonValue::Object(sigs)) = object.get("signatures") {
            let mine = sigs
                .iter()
                .filter(|(name, _)| name.as_str() == server.as_str())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            only_server.insert("signatures".to_owned(), CanonicalJsonValue::Object(mine));
        }
        ruma::signatures::verify_json(&map, &only_server)
            .map_err(|e| format!("bad self-signature: {e}"))?;
        Ok((records, capped))
    }

    /// Validates and stores; the stored response keeps only the server's own
    /// signatures (a notary adds its own when it answers).
    async fn accept(
        &self,
        server: &ServerName,
        response: serde_json::Value,
        via: Option<&ServerName>,
    ) -> Result<(), String> {
        let object = to_object(response).map_err(|e| e.to_string())?;
        let (records, valid_until) = self.accept_checked(server, &object)?;
        let mut stored = object;
        if let Some(CanonicalJsonValue::Object(sigs)) = stored.get_mut("signatures") {
            sigs.retain(|name, _| name.as_str() == server.as_str());
        }
        let response = KeyResponseRecord {
            server_name: server.to_string(),
            response_json: CanonicalJsonValue::Object(stored).to_string(),
            valid_until_ts: valid_until,
            fetched_ts: now_ms(),
        };
        tracing::debug!(%server, ?via, keys = records.len(), "fetched server keys");
        self.core
            .storage
            .server_keys
            .put_server_keys(&records, Some(&response))
            .await
            .map_err(|e| e.message)
    }
}

fn record(
    server: &ServerName,
    key_id: &str,
    key: &str,
    valid_until_ts: i64,
    expired_ts: Option<i64>,
) -> Result<ServerKeyRecord, String> {
    if !key_id.starts_with("ed25519:") {
        return Err(format!("unsupported key {key_id}"));
    }
    Base64::<ruma::serde::base64::Standard>::parse(key)
        .map_err(|e| format!("key {key_id}: {e}"))?;
    Ok(ServerKeyRecord {
        server_name: server.to_string(),
        key_id: key_id.to_owned(),
        public_key: key.trim_end_matches('=').to_owned(),
        valid_until_ts,
        expired_ts,
    })
}
