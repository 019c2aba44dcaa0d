//! Backfill (Server-Server "Backfilling and retrieving missing events"): a
//! server that joined a room late holds its history only from the join on.
//! When a client pages back (`/messages`, `dir=b`) past the oldest event held,
//! we ask a server in the room for what came before with
//! `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...`.
//!
//! Each event received is checked like any other (signatures, content hash,
//! the auth rules against its own auth events, fetched when missing) and put
//! into the timeline *below* every position held, newest first, so paging on
//! continues into it while incremental `/sync` never replays it. Events that
//! fail a check are dropped. The room's history visibility then decides, as
//! for any event, what the reader may see. Backfill stops at the room's
//! `m.room.create`.

use std::collections::HashSet;

use http::Method;
use ruma::{OwnedEventId, RoomId};
use serde_json::Value;

use super::rooms::{enc, remote_error, CheckedPdu, RoomFederation};
use crate::{
    error::Result,
    events::Pdu,
    rooms::remote::outlier_write,
    storage::{Direction, StreamPos},
};

/// Events asked for per request.
const BACKFILL_LIMIT: usize = 100;

impl RoomFederation {
    /// Fills in history before the oldest event held in the room, if the room
    /// started before we joined it. Returns how many events were added; 0
    /// when the room's start is already held or nobody could be asked.
    pub async fn backfill_history(&self, room_id: &RoomId) -> Result<usize> {
        let Some(room) = self.rooms.get(room_id).await? else {
            return Ok(0);
        };
        let timeline = &self.core.storage.timeline;
        let oldest = timeline
            .room_events(
                room_id.as_str(),
                StreamPos::MIN,
                StreamPos::MAX,
                Direction::Forward,
                1,
            )
            .await?;
        let Some(oldest) = oldest.into_iter().next() else {
            return Ok(0);
        };
        let oldest_pdu: Value = serde_json::from_str(&oldest.pdu_json)?;
        if oldest_pdu["type"] == "m.room.create" {
            return Ok(0);
        }
        let from: Vec<String> = oldest_pdu["prev_events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if from.is_empty() {
            return Ok(0);
        }
        let (version, servers) = {
            let st = room.read().await;
            (
                st.version.clone(),
                st.remote_servers(self.core.server_name.as_str(), None),
            )
        };
        let query: Vec<String> = from.iter().map(|id| format!("v={}", enc(id))).collect();
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?limit={BACKFILL_LIMIT}&{}",
            enc(room_id.as_str()),
            query.join("&")
        );
        for server in servers {
            let Ok(server) = ruma::OwnedServerName::try_from(server.as_str()) else {
                continue;
            };
            let response = match self
                .fed
                .client
                .request(&server, Method::GET, &path, None)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %remote_error(e), "backfill request failed");
                    continue;
                }
            };
            let pdus = response["pdus"].as_array().cloned().unwrap_or_default();
            let mut checked = Vec::new();
            let mut seen: HashSet<OwnedEventId> = HashSet::new();
            for value in &pdus {
                let c = match self.check_pdu(room_id, &version, value).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(%server, error = %e, "dropping an invalid backfilled event");
                        continue;
                    }
                };
                if c.pdu.room_id != room_id || !seen.insert(c.pdu.event_id.clone()) {
                    continue;
                }
                checked.push(c);
            }
            let accepted = self.accept_history(&server, room_id, checked).await?;
            return self
                .core
                .storage
                .federation
                .store_backfilled(&accepted)
                .await;
        }
        Ok(0)
    }

    /// The backfilled events that pass the auth rules against their auth
    /// events, newest first, ready to store.
    async fn accept_history(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        mut checked: Vec<CheckedPdu>,
    ) -> Result<Vec<crate::storage::federation::OutlierWrite>> {
        let Some(room) = self.rooms.get(room_id).await? else {
            return Ok(Vec::new());
        };
        let st = room.read().await;
        checked.sort_by_key(|c| std::cmp::Reverse(c.pdu.depth));
        let mut out = Vec::new();
        for c in checked {
            if self
                .core
                .storage
                .federation
                .event_is_outlier(c.pdu.event_id.as_str())
                .await?
                == Some(false)
            {
                continue;
            }
            if let Err(e) = self.fetch_missing_auth(origin, &st, &c).await {
                tracing::info!(event_id = %c.pdu.event_id, error = %e, "backfilled event's auth events unavailable");
                continue;
            }
            match self.rooms.check_against_auth_events(&st, &c.pdu).await {
                Ok(Ok(())) => out.push(history_write(&c.pdu, c.json)),
                Ok(Err(reason)) => {
                    tracing::info!(event_id = %c.pdu.event_id, reason, "backfilled event not allowed")
                }
                Err(e) => {
                    tracing::info!(event_id = %c.pdu.event_id, error = %e, "backfilled event unchecked")
                }
            }
        }
        Ok(out)
    }
}

fn history_write(pdu: &Pdu, json: String) -> crate::storage::federation::OutlierWrite {
    // The position is assigned by the store, below everything held.
    outlier_write(0, pdu, json, false)
}
