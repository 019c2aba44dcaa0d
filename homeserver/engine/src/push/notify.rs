//! The push worker: evaluates each persisted event's push rules for its local
//! recipients and records notifications, counts and queued pushes; applies
//! read receipts to the counts. One worker, in stream order, in batches.

use std::collections::HashSet;

use ruma::OwnedRoomId;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    conditions::{EventContext, Recipient},
    EventJob, Job, PushService,
};
use crate::{
    error::Result,
    rooms::send::user_power,
    storage::NewNotification,
    sync::notifier::{Sections, WakeTarget},
    util::now_ms,
};

/// Most jobs handled in one batch (one storage transaction).
const BATCH: usize = 256;

/// The thread an event belongs to: its thread root for `m.thread` relations,
/// else the main timeline.
pub fn thread_of(event: &Value) -> String {
    let rel = &event["content"]["m.relates_to"];
    match (rel["rel_type"].as_str(), rel["event_id"].as_str()) {
        (Some("m.thread"), Some(root)) => root.to_owned(),
        _ => "main".to_owned(),
    }
}

/// Who an event's rules are evaluated for, with their room display names.
struct Audience {
    recipients: Vec<(String, Option<String>)>,
    /// The invitee of an invite: notified and pushed, but not yet a member
    /// whose room counts it belongs in.
    invitee: Option<String>,
    member_count: u64,
    sender_power: i64,
    notification_levels: Value,
    large: bool,
}

impl PushService {
    pub(super) async fn run_worker(&self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut jobs = Vec::with_capacity(BATCH);
        let mut stop = self.stop.subscribe();
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut jobs, BATCH) => n,
                _ = stop.changed() => 0,
            };
            if received == 0 {
                return;
            }
            let mut events = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Event(e) => events.push(*e),
                    Job::Read {
                        user_id,
                        room_id,
                        thread_id,
                        read_pos,
                        done,
                    } => {
                        // Events queued before the receipt are counted first.
                        self.process_events(std::mem::take(&mut events)).await;
                        self.apply_read(&user_id, &room_id, thread_id.as_deref(), read_pos)
                            .await;
                        let _ = done.send(());
                    }
                }
            }
            self.process_events(events).await;
        }
    }

    async fn apply_read(&self, user_id: &str, room_id: &str, thread: Option<&str>, pos: i64) {
        let counts_pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .push
            .mark_read(user_id, room_id, thread, pos, counts_pos)
            .await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, user_id, room_id, "resetting notification counts failed");
        }
        self.core.complete(
            counts_pos,
            vec![WakeTarget::Changed(user_id.to_owned(), Sections::COUNTS)],
        );
    }

    async fn process_events(&self, events: Vec<EventJob>) {
        if events.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        for job in &events {
            if let Err(e) = self.evaluate_event(job, &mut batch).await {
                tracing::warn!(error = %e, event_id = %job.event_id, "push rule evaluation failed");
            }
        }
        if batch.is_empty() {
            return;
        }
        let counts_pos = self.core.stream.allocate();
        let now = now_ms();
        let result = self
            .core
            .storage
            .push
            .record_notifications(&batch, counts_pos, now)
            .await;
        let mut wake: HashSet<&str> = HashSet::new();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "recording notifications failed");
        } else {
            wake.extend(
                batch
                    .iter()
                    .filter(|n| n.counted)
                    .map(|n| n.user_id.as_str()),
            );
        }
        self.core.complete(
            counts_pos,
            wake.into_iter()
                .map(|u| WakeTarget::Changed(u.to_owned(), Sections::COUNTS))
                .collect(),
        );
        if result.is_ok() && batch.iter().any(|n| n.push) {
            self.delivery_wake.notify_one();
        }
    }

    /// Evaluates one event for each recipient; notifications go to `out`.
    async fn evaluate_event(&self, job: &EventJob, out: &mut Vec<NewNotification>) -> Result<()> {
        let event: Value = serde_json::from_str(&job.pdu_json)?;
        let Some(audience) = self.audience(job, &event).await? else {
            return Ok(());
        };
        let ctx = EventContext {
            event: &event,
            member_count: audience.member_count,
            sender_power: audience.sender_power,
            notification_levels: &audience.notification_levels,
        };
        let thread_id = thread_of(&event);
        for (user_id, display_name) in &audience.recipients {
            let rules = self.compiled_rules(user_id).await?;
            let who = Recipient {
                user_id,
                display_name: display_name.as_deref(),
            };
            let Some(outcome) = rules.evaluate(&ctx, &who).filter(|o| o.notify) else {
                continue;
            };
            out.push(NewNotification {
                user_id: user_id.clone(),
                room_id: job.room_id.clone(),
                event_id: job.event_id.clone(),
                thread_id: thread_id.clone(),
                stream_pos: job.stream_pos,
                ts: job.ts,
                actions: Value::Array(outcome.actions).to_string(),
                highlight: outcome.highlight,
                counted: !audience.large && audience.invitee.as_ref() != Some(user_id),
                push: !self.presence.is_connected(user_id),
            });
        }
        Ok(())
    }

    /// The local users to evaluate an event for: every joined member but the
    /// sender in a small room; only the mentioned members in a large one; and
    /// the invitee of an invite.
    async fn audience(&self, job: &EventJob, event: &Value) -> Result<Option<Audience>> {
        let Ok(room_id) = OwnedRoomId::try_from(job.room_id.as_str()) else {
            return Ok(None);
        };
        let Some(room) = self.rooms.get(&room_id).await? else {
            return Ok(None);
        };
        let st = room.read().await;
        let levels = st
            .state_event("m.room.power_levels", "")
            .map(|p| p.content_value())
            .unwrap_or_default();
        let large = st.is_large();
        let mut users: Vec<&str> = if large {
            event["content"]["m.mentions"]["user_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|u| st.joined.contains(*u))
                .collect()
        } else {
            st.joined.iter().map(String::as_str).collect()
        };
        let invitee = (event["type"] == "m.room.member"
            && event["content"]["membership"] == "invite")
            .then(|| event["state_key"].as_str())
            .flatten();
        users.extend(invitee);
        let server = format!(":{}", self.core.server_name);
        let mut seen = HashSet::new();
        let recipients = users
            .into_iter()
            .filter(|u| *u != job.sender && u.ends_with(&server) && seen.insert(*u))
            .map(|u| {
                let name = st
                    .state_event("m.room.member", u)
                    .and_then(|p| p.content_str("displayname"));
                (u.to_owned(), name)
            })
            .collect();
        Ok(Some(Audience {
            recipients,
            invitee: invitee.map(str::to_owned),
            member_count: st.joined.len() as u64,
            sender_power: user_power(&st, &levels, &job.sender),
            notification_levels: levels["notifications"].clone(),
            large,
        }))
    }
}
