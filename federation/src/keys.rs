//! The key server (Server-Server API, "Retrieving server keys"): our own keys
//! at `/_matrix/key/v2/server`, and the notary endpoints that vouch for other
//! servers' keys. None of these are authenticated: keys are self-signed.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    routing::{get, post},
    Json, Router,
};
use engine::{services::Services, Error};
use futures::StreamExt;
use ruma::{CanonicalJsonObject, ServerName};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{FedError, FedResult};

type AppState = Arc<Services>;

/// Servers one notary query may ask about.
const MAX_QUERIED_SERVERS: usize = 100;
/// Servers fetched concurrently while answering one query.
const CONCURRENT_FETCHES: usize = 8;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        // The deprecated per-key form still answers with every key.
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
        .route("/_matrix/key/v2/query", post(query_keys))
        .route(
            "/_matrix/key/v2/query/{server_name}",
            get(query_server_keys),
        )
}

/// GET /_matrix/key/v2/server: our current key and old keys, self-signed.
async fn server_keys(State(state): State<AppState>) -> FedResult<Json<CanonicalJsonObject>> {
    Ok(Json(state.federation.keys.own_key_response()?))
}

#[derive(Deserialize)]
struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, QueryCriteria>>,
}

#[derive(Deserialize, Default)]
struct QueryCriteria {
    minimum_valid_until_ts: Option<i64>,
}

/// POST /_matrix/key/v2/query: keys of several servers, each answer signed by
/// its server and by us.
async fn query_keys(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> FedResult<Json<Value>> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| FedError(Error::not_json(format!("Body is not JSON: {e}"))))?;
    let query: QueryBody = serde_json::from_value(body)?;
    if query.server_keys.len() > MAX_QUERIED_SERVERS {
        return Err(FedError(Error::too_large(format!(
            "At most {MAX_QUERIED_SERVERS} servers per query"
        ))));
    }
    // Unparseable server names are skipped, as are servers we know nothing of.
    let wanted: Vec<_> = query
        .server_keys
        .iter()
        .filter_map(|(name, criteria)| {
            let server = ServerName::parse(name).ok()?;
            // The strictest criterion of any key asked about applies.
            let minimum = criteria
                .values()
                .filter_map(|c| c.minimum_valid_until_ts)
                .max();
            Some((server, minimum))
        })
        .collect();
    let keys = &state.federation.keys;
    let answers: Vec<_> = futures::stream::iter(wanted)
        .map(|(server, minimum)| async move { keys.notary_query(&server, minimum).await })
        .buffered(CONCURRENT_FETCHES)
        .collect()
        .await;
    let mut server_keys = Vec::new();
    for answer in answers {
        server_keys.extend(answer?);
    }
    Ok(Json(json!({ "server_keys": server_keys })))
}

#[derive(Deserialize)]
struct QueryParams {
    minimum_valid_until_ts: Option<i64>,
}

/// GET /_matrix/key/v2/query/{serverName}: one server's keys, signed by it and by us.
async fn query_server_keys(
    State(state): State<AppState>,
    Path(server_name): Path<String>,
    Query(params): Query<QueryParams>,
) -> FedResult<Json<Value>> {
    let server = ServerName::parse(&server_name)
        .map_err(|e| FedError(Error::invalid_param(format!("Invalid server name: {e}"))))?;
    let answer = state
        .federation
        .keys
        .notary_query(&server, params.minimum_valid_until_ts)
        .await?;
    Ok(Json(json!({ "server_keys": answer })))
}
