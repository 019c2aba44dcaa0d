//! The resident server's answer to `PUT /send_join` (Server-Server API,
//! "Joining rooms"): the room's state before the join and its auth chain.
//!
//! For a room with 10,000 members that is 10,000 events of stored PDU JSON.
//! Parsing each one into a `serde_json::Value` only to serialise it again
//! took the resident 1.5 s of a remote join, so the answer is spliced
//! together from the stored JSON as it is ([`RawJson`]). The stored JSON is
//! the canonical form written when the event was built or accepted, so it is
//! the same PDU the re-serialisation produced.

use std::collections::{HashMap, HashSet};

use ruma::OwnedEventId;
use serde_json::Value;

use super::rooms::RoomFederation;
use crate::{
    error::Result,
    rooms::{
        state_res::{EventCache, IdState},
        RoomState,
    },
};

/// A response body that is already JSON: the `send_join` answer spliced from
/// stored events, or any other answer serialised once. Only built from JSON
/// this server produced or validated, so it needs no second check.
#[derive(Debug, Clone)]
pub struct RawJson(String);

impl RawJson {
    /// Serialises `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(value.to_string())
    }

    /// The answer of `send_join`/`send_leave` v1: `[200, body]`.
    pub fn v1_wrapped(self) -> Self {
        let mut out = String::with_capacity(self.0.len() + 6);
        out.push_str("[200,");
        out.push_str(&self.0);
        out.push(']');
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// As a `Value`, for callers that inspect the answer.
    pub fn to_value(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.0)?)
    }
}

impl RoomFederation {
    /// The `send_join` v2 answer for the join `join_json`: the state before
    /// the join (`state_before`), the auth chain of that state and of the
    /// join, the join itself and the servers in the room.
    pub(super) async fn join_answer(
        &self,
        st: &RoomState,
        state_before: &IdState,
        join_auth_events: &[OwnedEventId],
        join_json: &str,
    ) -> Result<RawJson> {
        // The current state is in memory: its events start the auth chain
        // walk without being read back; the rest is read a generation at a
        // time, and every event's JSON in one batched read.
        let mut cache = EventCache::default();
        for pdu in st.state.values() {
            cache.events.insert(pdu.event_id.clone(), pdu.clone());
        }
        let mut chain_ids = self
            .rooms
            .auth_chain(&mut cache, st, state_before.values().cloned())
            .await?;
        chain_ids.extend(join_auth_events.iter().cloned());
        let wanted: Vec<String> = state_before
            .values()
            .chain(chain_ids.iter())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        let json_of: HashMap<String, String> = self
            .core
            .storage
            .federation
            .get_events(&wanted)
            .await?
            .into_iter()
            .map(|ev| (ev.event_id, ev.pdu_json))
            .collect();
        let size: usize = json_of.values().map(|j| j.len() + 1).sum::<usize>() * 2;
        let mut out = String::with_capacity(size + join_json.len() + 256);
        out.push_str("{\"origin\":");
        push_string(&mut out, self.core.server_name.as_str());
        out.push_str(",\"state\":");
        push_events(&mut out, state_before.values(), &json_of);
        out.push_str(",\"auth_chain\":");
        push_events(&mut out, chain_ids.iter(), &json_of);
        out.push_str(",\"event\":");
        out.push_str(join_json);
        out.push_str(",\"members_omitted\":false,\"servers_in_room\":");
        let mut servers: Vec<&String> = st.servers.keys().collect();
        servers.sort();
        out.push_str(&serde_json::to_string(&servers)?);
        out.push('}');
        Ok(RawJson(out))
    }
}

/// A JSON string literal.
fn push_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

/// A JSON array of the stored events `ids` (those found), as stored.
fn push_events<'a>(
    out: &mut String,
    ids: impl Iterator<Item = &'a OwnedEventId>,
    json_of: &HashMap<String, String>,
) {
    out.push('[');
    let mut first = true;
    for id in ids {
        if let Some(json) = json_of.get(id.as_str()) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(json);
        }
    }
    out.push(']');
}
