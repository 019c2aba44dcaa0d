//! Receipts: `m.read` and `m.read.private` (threaded and unthreaded), and
//! MSC4089 delivery receipts (`org.matrix.msc4089.delivery`).
//!
//! A delivery receipt says "this event reached one of my devices". It is
//! per event (not "everything up to"), and it is routed only to the event's
//! sender: other members never see it. In /sync it arrives in the sender's
//! `m.receipt` ephemeral event of the room, under the receipt type
//! `org.matrix.msc4089.delivery`, keyed by the recipient's user id with `ts`.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use ruma::RoomId;
use serde_json::{json, Map, Value};

use crate::{
    core::Core,
    error::{Error, Result},
    rooms::RoomService,
    storage::{ReceiptRecord, StreamPos},
    sync::notifier::{Sections, WakeTarget},
    util::now_ms,
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";
pub const FULLY_READ: &str = "m.fully_read";
pub const DELIVERY: &str = "org.matrix.msc4089.delivery";

#[derive(Clone)]
pub struct ReceiptService {
    core: Arc<Core>,
    rooms: RoomService,
    /// Last receipt position per room, so a sync skips rooms without news
    /// without a query. Single instance only: with several, receipts written
    /// elsewhere never reach this map, so every sync asks the store. (Delivery
    /// receipts are marked in the sync journal instead.)
    room_pos: Arc<Mutex<HashMap<String, StreamPos>>>,
    /// Receipts persisted before start-up are at or below this position.
    floor: StreamPos,
}

impl ReceiptService {
    pub async fn new(core: Arc<Core>, rooms: RoomService) -> Result<Self> {
        let floor = core.storage.receipts.max_receipt_pos().await?;
        Ok(Self {
            core,
            rooms,
            room_pos: Default::default(),
            floor,
        })
    }

    /// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
    pub async fn post(
        &self,
        room_id: &RoomId,
        user_id: &str,
        receipt_type: &str,
        event_id: &str,
        thread_id: Option<&str>,
    ) -> Result<()> {
        if !matches!(receipt_type, READ | READ_PRIVATE | FULLY_READ | DELIVERY) {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {receipt_type}"
            )));
        }
        if let Some(t) = thread_id {
            if receipt_type == FULLY_READ || receipt_type == DELIVERY {
                return Err(Error::invalid_param(
                    "thread_id is not allowed for this receipt type",
                ));
            }
            if t != "main" && !t.starts_with('$') {
                return Err(Error::invalid_param(
                    "thread_id must be `main` or an event id",
                ));
            }
        }
        self.rooms.require_joined(room_id, user_id).await?;
        let event = self
            .core
            .storage
            .timeline
            .get_event(event_id)
            .await?
            .filter(|e| e.room_id == room_id.as_str())
            .ok_or_else(|| Error::not_found("Event not found in this room."))?;
        if receipt_type == FULLY_READ {
            return Err(Error::invalid_param("use read_markers for m.fully_read"));
        }
        let pos = self.core.stream.allocate();
        let record = ReceiptRecord {
            room_id: room_id.to_string(),
            receipt_type: receipt_type.to_owned(),
            user_id: user_id.to_owned(),
            thread_id: thread_id.unwrap_or("").to_owned(),
            event_id: event_id.to_owned(),
            ts: now_ms(),
            stream_pos: pos,
        };
        let result = match receipt_type {
            DELIVERY => {
                let sender = serde_json::from_str::<Value>(&event.pdu_json)?["sender"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match self
                    .core
                    .storage
                    .receipts
                    .put_delivery_receipt(&record, &sender)
                    .await
                {
                    Ok(true) if sender != user_id => {
                        Ok(vec![WakeTarget::Changed(sender, Sections::DELIVERIES)])
                    }
                    Ok(_) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
            _ => match self.core.storage.receipts.put_receipt(&record).await {
                Ok(()) => {
                    self.room_pos.lock().insert(room_id.to_string(), pos);
                    if receipt_type == READ_PRIVATE {
                        Ok(vec![WakeTarget::member(user_id)])
                    } else {
                        Ok(self.room_targets(room_id).await)
                    }
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(wake) => {
                self.core.complete(pos, wake);
                self.federate(
                    room_id,
                    user_id,
                    receipt_type,
                    &event.pdu_json,
                    event_id,
                    thread_id,
                )
                .await;
                if matches!(receipt_type, READ | READ_PRIVATE) {
                    // Either read receipt resets the notification counts it covers.
                    self.core
                        .push_jobs
                        .read_receipt(user_id, room_id.as_str(), thread_id, event.stream_pos)
                        .await;
                }
                Ok(())
            }
            Err(e) => {
                self.core.complete(pos, Vec::new());
                Err(e)
            }
        }
    }

    /// Sends a local user's public receipt to the other servers in the room
    /// (a delivery receipt only to the server of the event's sender).
    async fn federate(
        &self,
        room_id: &RoomId,
        user_id: &str,
        receipt_type: &str,
        event_json: &str,
        event_id: &str,
        thread_id: Option<&str>,
    ) {
        let own = self.core.server_name.as_str();
        if receipt_type == READ_PRIVATE || crate::rooms::server_of(user_id) != own {
            return;
        }
        let destinations: Vec<String> = if receipt_type == DELIVERY {
            let sender = serde_json::from_str::<Value>(event_json)
                .ok()
                .and_then(|v| v["sender"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let server = crate::rooms::server_of(&sender);
            if server.is_empty() || server == own {
                return;
            }
            vec![server.to_owned()]
        } else {
            match self.rooms.get(room_id).await {
                Ok(Some(room)) => room.read().await.remote_servers(own, None),
                _ => return,
            }
        };
        if destinations.is_empty() {
            return;
        }
        let mut data = serde_json::json!({"ts": now_ms()});
        if let Some(t) = thread_id {
            data["thread_id"] = serde_json::json!(t);
        }
        let content = serde_json::json!({
            room_id.as_str(): {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}
        });
        if let Err(e) = self
            .core
            .outbound
            .send_edu(
                destinations.iter().map(String::as_str),
                "m.receipt",
                content,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot queue a receipt for federation");
        }
    }

    async fn room_targets(&self, room_id: &RoomId) -> Vec<WakeTarget> {
        self.rooms.wake_targets(room_id).await
    }

    /// Whether the room may have read receipts newer than `since`.
    fn room_changed(&self, room_id: &str, since: Option<StreamPos>) -> bool {
        let Some(since) = since else { return true };
        if self.core.cluster.is_some() {
            // Receipts written on another instance never pass through
            // `room_pos` here: ask the store.
            return true;
        }
        let last = self
            .room_pos
            .lock()
            .get(room_id)
            .copied()
            .unwrap_or(self.floor);
        last > since
    }

    /// Delivery receipts for events `viewer` sent, grouped by room.
    pub async fn deliveries_for(
        &self,
        viewer: &str,
        since: Option<StreamPos>,
        upto: StreamPos,
    ) -> Result<HashMap<String, Vec<ReceiptRecord>>> {
        let mut out: HashMap<String, Vec<ReceiptRecord>> = HashMap::new();
        if since.is_some_and(|s| !self.core.journal.changed(viewer, Sections::DELIVERIES, s)) {
            return Ok(out);
        }
        for r in self
            .core
            .storage
            .receipts
            .delivery_receipts_for_sender(viewer, since.unwrap_or(0), upto)
            .await?
        {
            out.entry(r.room_id.clone()).or_default().push(r);
        }
        Ok(out)
    }

    /// The room's `m.receipt` ephemeral event for `viewer`, if anything changed.
    /// `deliveries` are the viewer's delivery receipts in this room.
    pub async fn receipt_event(
        &self,
        room_id: &str,
        viewer: &str,
        since: Option<StreamPos>,
        upto: StreamPos,
        deliveries: &[ReceiptRecord],
    ) -> Result<Option<Value>> {
        let mut records = Vec::new();
        if self.room_changed(room_id, since) {
            records = self
                .core
                .storage
                .receipts
                .receipts_since(room_id, since.unwrap_or(0), upto)
                .await?;
            records.retain(|r| r.receipt_type != READ_PRIVATE || r.user_id == viewer);
        }
        records.extend(deliveries.iter().cloned());
        if records.is_empty() {
            return Ok(None);
        }
        let mut content = Map::new();
        for r in records {
            let mut entry = json!({"ts": r.ts});
            if !r.thread_id.is_empty() {
                entry["thread_id"] = json!(r.thread_id);
            }
            let by_event = content.entry(r.event_id).or_insert_with(|| json!({}));
            let by_type = by_event
                .as_object_mut()
                .map(|o| o.entry(r.receipt_type).or_insert_with(|| json!({})));
            if let Some(Value::Object(users)) = by_type {
                users.insert(r.user_id, entry);
            }
        }
        Ok(Some(json!({"type": "m.receipt", "content": content})))
    }
}
