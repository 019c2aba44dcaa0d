//! Acting as a notary (Server-Server API, "Querying keys through another
//! server"): we answer with a server's own signed key response, as we last
//! fetched it, with our signature added, so a server that cannot reach it
//! directly can still verify its signatures.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName};

use super::keys::ServerKeys;
use crate::{error::Result, util::now_ms};

impl ServerKeys {
    /// `server`'s key responses for a notary query: the cached one when it is
    /// valid until at least `minimum_valid_until_ts` (default: now), else a
    /// freshly fetched one; the cached one still when the server cannot be
    /// reached; nothing when we never had any.
    pub async fn notary_query(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: Option<i64>,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if self.is_own(server) {
            return Ok(vec![self.own_key_response()?]);
        }
        let store = &self.core().storage.server_keys;
        let minimum = minimum_valid_until_ts.unwrap_or_else(now_ms);
        let cached = store.key_response(server.as_str()).await?;
        let fresh = cached.as_ref().is_some_and(|c| c.valid_until_ts >= minimum);
        let response = if fresh {
            cached
        } else {
            if let Err(reason) = self.fetch(server, false).await {
                tracing::info!(%server, %reason, "notary: fetching server keys failed");
            }
            store.key_response(server.as_str()).await?
        };
        let Some(response) = response else {
            return Ok(Vec::new());
        };
        let value: serde_json::Value = serde_json::from_str(&response.response_json)?;
        let mut object = match CanonicalJsonValue::try_from(value) {
            Ok(CanonicalJsonValue::Object(o)) => o,
            _ => return Ok(Vec::new()),
        };
        let core = self.core();
        ruma::signatures::sign_json(core.server_name.as_str(), &core.key.pair, &mut object)
            .map_err(|e| crate::Error::unknown(format!("signing a notary answer: {e}")))?;
        Ok(vec![object])
    }
}
