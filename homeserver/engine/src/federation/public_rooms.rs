//! The public room directory across servers (Server-Server API "Public Room
//! Directory"): a client asks for another server's directory with
//! `/publicRooms?server=...`, and we ask that server's
//! `/_matrix/federation/v1/publicRooms`. Serving our own directory to other
//! servers is the same page the client API answers (`RoomService::public_rooms_page`).

use http::Method;
use ruma::ServerName;
use serde_json::{json, Value};

use super::rooms::{remote_error, RoomFederation};
use crate::error::{Error, Result};

impl RoomFederation {
    /// One page of `server`'s public rooms. A search term needs the `POST`
    /// form; without one the `GET` form is used, which every server serves.
    pub async fn remote_public_rooms(
        &self,
        server: &ServerName,
        limit: Option<usize>,
        since: Option<&str>,
        term: Option<&str>,
    ) -> Result<Value> {
        let path = "/_matrix/federation/v1/publicRooms";
        let response = if let Some(term) = term {
            let mut body = json!({"filter": {"generic_search_term": term}});
            if let Some(limit) = limit {
                body["limit"] = json!(limit);
            }
            if let Some(since) = since {
                body["since"] = json!(since);
            }
            self.fed
                .client
                .request(server, Method::POST, path, Some(body))
                .await
        } else {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(since) = since {
                query.push(format!("since={}", super::rooms::enc(since)));
            }
            let path = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", query.join("&"))
            };
            self.fed
                .client
                .request(server, Method::GET, &path, None)
                .await
        }
        .map_err(remote_error)?;
        if !response["chunk"].is_array() {
            return Err(Error::unknown(
                "the remote directory answered without a `chunk`",
            ));
        }
        // Only the fields the spec defines reach the client.
        let mut out = json!({"chunk": response["chunk"]});
        for field in ["next_batch", "prev_batch", "total_room_count_estimate"] {
            if !response[field].is_null() {
                out[field] = response[field].clone();
            }
        }
        Ok(out)
    }
}
