//! The sync engine: what changed for one device since its token, waiting for the
//! notifier when nothing did.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::FutureExt;
use ruma::OwnedRoomId;
use serde_json::{json, Map, Value};

use super::{
    filter::Filter,
    make_token,
    notifier::{Sections, WakeTarget},
    parse_token,
    stream::READ_AFTER_WRITE_WAIT,
};
use std::collections::HashMap;

use crate::{
    core::Core,
    error::Result,
    events::client_format::{to_client, to_stripped},
    presence::PresenceService,
    push::{PushService, UserCounts},
    receipts::ReceiptService,
    rooms::RoomHandle,
    rooms::RoomService,
    storage::ReceiptRecord,
    storage::{Direction, MembershipRecord, StoredEvent, StreamPos},
    typing::TypingService,
    util::now_ms,
};

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub user_id: String,
    pub device_id: String,
    pub since: Option<String>,
    pub timeout_ms: u64,
    pub full_state: bool,
    pub filter: Filter,
    /// The `set_presence` parameter: `online` (default), `unavailable` or `offline`.
    pub set_presence: Option<String>,
}

#[derive(Clone)]
pub struct SyncService {
    core: Arc<Core>,
    rooms: RoomService,
    typing: TypingService,
    receipts: ReceiptService,
    presence: PresenceService,
    push: PushService,
}

/// Counts a sync as an open connection for presence while it runs.
struct ConnectionGuard<'a> {
    presence: &'a PresenceService,
    user_id: &'a str,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.presence.connection_closed(self.user_id);
    }
}

/// What one computation of a response gathers across rooms.
struct Pass {
    since: Option<StreamPos>,
    upto: StreamPos,
    /// The viewer's delivery receipts, by room.
    deliveries: HashMap<String, Vec<ReceiptRecord>>,
    /// Large joined rooms, whose room-level wake-ups a long-poll must watch.
    large_rooms: Vec<String>,
    joined_handles: Vec<RoomHandle>,
    /// Users whose current presence this response must carry even if it did
    /// not change: members of newly joined rooms, and members who just joined.
    presence_of: HashSet<String>,
    /// The viewer's unread notification counters.
    counts: Arc<UserCounts>,
}

/// One computed response and what to wait on if it is empty.
struct Computed {
    body: Value,
    empty: bool,
    large_rooms: Vec<String>,
}

/// The state event types that make up an invite's stripped state.
pub const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl SyncService {
    pub fn new(
        core: Arc<Core>,
        rooms: RoomService,
        typing: TypingService,
        receipts: ReceiptService,
        presence: PresenceService,
        push: PushService,
    ) -> Self {
        Self {
            core,
            rooms,
            typing,
            receipts,
            presence,
            push,
        }
    }

    pub async fn sync(&self, req: &SyncRequest) -> Result<Value> {
        let since = req.since.as_deref().map(parse_token).transpose()?;
        let timeout = Duration::from_millis(
            req.timeout_ms
                .min(self.core.config.limits.max_sync_timeout_ms),
        );
        let deadline = tokio::time::Instant::now() + timeout;
        // Everything acknowledged before this request must be in its answer.
        let floor = self.core.stream.allocated();
        // Boxed, like the computation below: this future stays allocated
        // for as long as the long-poll waits, at the size of its largest
        // step, so steps that only run at its start live in boxes of their own.
        Box::pin(
            self.presence
                .connection_opened(&req.user_id, req.set_presence.as_deref()),
        )
        .await;
        Box::pin(self.core.stream.wait_visible(floor, READ_AFTER_WRITE_WAIT)).await;
        let _connection = ConnectionGuard {
            presence: &self.presence,
            user_id: &req.user_id,
        };
        loop {
            // Subscribe before reading, so a wake-up between the read and the wait is kept.
            let user_key = self
                .core
                .notifier
                .subscribe(WakeTarget::User(req.user_id.clone()));
            let user_wait = user_key.notified();
            tokio::pin!(user_wait);
            user_wait.as_mut().enable();

            let upto = self.core.stream.current();
            // Boxed: a waiting sync (one per idle connection) then holds only
            // what it waits on, not the computation's locals or its answer.
            let Computed {
                body,
                empty,
                large_rooms,
            } = Box::pin(self.compute(req, since, upto)).await?;
            let can_wait =
                since.is_some() && !req.full_state && tokio::time::Instant::now() < deadline;
            if !empty || !can_wait {
                return Ok(body);
            }
            drop(body);
            let room_keys: Vec<_> = large_rooms
                .iter()
                .map(|r| self.core.notifier.subscribe(WakeTarget::Room(r.clone())))
                .collect();
            let mut waits: Vec<_> = room_keys.iter().map(|k| k.notified().boxed()).collect();
            for w in waits.iter_mut() {
                // Enabling through a boxed future: poll once to register interest.
                let _ = futures::poll!(w.as_mut());
            }
            if self.core.stream.current() != upto {
                continue;
            }
            waits.push(user_wait.boxed());
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let upto = self.core.stream.current();
                    return Ok(Box::pin(self.compute(req, since, upto)).await?.body);
                }
            }
        }
    }

    /// The user's memberships: kept in the journal for an incremental sync,
    /// read from the store (and kept) otherwise.
    async fn memberships(
        &self,
        user_id: &str,
        since: Option<StreamPos>,
    ) -> Result<Arc<Vec<MembershipRecord>>> {
        let journal = &self.core.journal;
        if since.is_some() {
            if let Some(kept) = journal.memberships(user_id) {
                return Ok(kept);
            }
        }
        let read_at = self.core.stream.current();
        let read = Arc::new(
            self.core
                .storage
                .rooms
                .memberships_for_user(user_id)
                .await?,
        );
        journal.keep_memberships(user_id, read_at, read.clone());
        Ok(read)
    }

    /// The user's notification counters, kept in the journal like memberships.
    async fn counts(&self, user_id: &str, since: Option<StreamPos>) -> Result<Arc<UserCounts>> {
        let journal = &self.core.journal;
        if since.is_some() {
            if let Some(kept) = journal.counts(user_id) {
                return Ok(kept);
            }
        }
        let read_at = self.core.stream.current();
        let read = Arc::new(self.push.user_counts(user_id).await?);
        journal.keep_counts(user_id, read_at, read.clone());
        Ok(read)
    }

    async fn compute(
        &self,
        req: &SyncRequest,
        since: Option<StreamPos>,
        upto: StreamPos,
    ) -> Result<Computed> {
        let storage = &self.core.storage;
        let memberships = self.memberships(&req.user_id, since).await?;
        let journal = &self.core.journal;
        let changed = |sections| since.is_none_or(|s| journal.changed(&req.user_id, sections, s));
        let account_data = if changed(Sections::ACCOUNT_DATA) {
            storage
                .account_data
                .account_data_since(&req.user_id, since.unwrap_or(0), upto)
                .await?
        } else {
            Vec::new()
        };
        let mut join = Map::new();
        let mut invite = Map::new();
        let mut knock = Map::new();
        let mut leave = Map::new();
        let mut pass = Pass {
            since,
            upto,
            deliveries: self
                .receipts
                .deliveries_for(&req.user_id, since, upto)
                .await?,
            large_rooms: Vec::new(),
            joined_handles: Vec::new(),
            presence_of: HashSet::new(),
            counts: self.counts(&req.user_id, since).await?,
        };

        for m in memberships
            .iter()
            .filter(|m| req.filter.room_allowed(&m.room_id) && m.stream_pos <= upto)
        {
            let room_data: Vec<Value> = account_data
                .iter()
                .filter(|a| a.room_id.as_deref() == Some(&m.room_id))
                .map(|a| json!({"type": a.event_type, "content": serde_json::from_str::<Value>(&a.content).unwrap_or(json!({}))}))
                .collect();
            match m.membership.as_str() {
                "join" => {
                    if let Some(room) = self.joined_room(req, m, room_data, &mut pass).await? {
                        join.insert(m.room_id.clone(), room);
                    }
                }
                "invite" if since.is_none_or(|s| m.stream_pos > s) => {
                    let events = self.stripped_room(m).await?;
                    invite.insert(
                        m.room_id.clone(),
                        json!({"invite_state": {"events": events}}),
                    );
                }
                "knock" if since.is_none_or(|s| m.stream_pos > s) => {
                    let events = self.stripped_room(m).await?;
                    knock.insert(
                        m.room_id.clone(),
                        json!({"knock_state": {"events": events}}),
                    );
                }
                "leave" | "ban"
                    if since.is_some_and(|s| m.stream_pos > s)
                        || (since.is_none() && req.filter.include_leave) =>
                {
                    leave.insert(m.room_id.clone(), self.left_room(req, m, since).await?);
                }
                _ => {}
            }
        }

        let mut global: Vec<Value> = account_data
            .iter()
            .filter(|a| a.room_id.is_none())
            .map(|a| json!({"type": a.event_type, "content": serde_json::from_str::<Value>(&a.content).unwrap_or(json!({}))}))
            .collect();
        if since.is_none() {
            // Clients expect their push rules in an initial sync, changed or not.
            global.extend(self.push.default_rules_event(&req.user_id).await?);
        }
        let mut presence = Vec::new();
        for event in self.presence.events_since(since, upto, |_| true) {
            let sender = event["sender"].as_str().unwrap_or_default();
            let mut shares = sender == req.user_id;
            for room in &pass.joined_handles {
                if shares {
                    break;
                }
                shares = room.read().await.joined.contains(sender);
            }
            if shares {
                pass.presence_of.remove(sender);
                presence.push(event);
            }
        }
        pass.presence_of.remove(&req.user_id);
        let extra: Vec<String> = pass.presence_of.iter().cloned().collect();
        presence.extend(self.presence.current_events(&extra));
        let e2ee =
            super::e2ee::sections(&self.core, &req.user_id, &req.device_id, since, upto).await?;
        let empty = join.is_empty()
            && invite.is_empty()
            && knock.is_empty()
            && leave.is_empty()
            && global.is_empty()
            && presence.is_empty()
            && !e2ee.has_updates();
        let body = json!({
            "next_batch": make_token(upto),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": global},
            "presence": {"events": presence},
            "to_device": {"events": e2ee.to_device},
            "device_lists": {"changed": e2ee.device_lists_changed, "left": e2ee.device_lists_left},
            "device_one_time_keys_count": e2ee.one_time_keys_count,
            "device_unused_fallback_key_types": e2ee.unused_fallback_key_types,
        });
        Ok(Computed {
            body,
            empty,
            large_rooms: pass.large_rooms,
        })
    }

    async fn joined_room(
        &self,
        req: &SyncRequest,
        m: &MembershipRecord,
        room_data: Vec<Value>,
        pass: &mut Pass,
    ) -> Result<Option<Value>> {
        let (since, upto) = (pass.since, pass.upto);
        let Ok(room_id) = OwnedRoomId::try_from(m.room_id.as_str()) else {
            return Ok(None);
        };
        let Some(room) = self.rooms.get(&room_id).await? else {
            return Ok(None);
        };
        let (latest, is_large, joined_count, invited_count, heroes) = {
            let st = room.read().await;
            let heroes: Vec<String> = st
                .joined
                .iter()
                .filter(|u| **u != req.user_id)
                .take(5)
                .cloned()
                .collect();
            (
                st.latest_pos,
                st.is_large(),
                st.joined.len(),
                st.invited.len(),
                heroes,
            )
        };
        if is_large {
            pass.large_rooms.push(m.room_id.clone());
        }
        pass.joined_handles.push(room.clone());
        let mut ephemeral = Vec::new();
        ephemeral.extend(self.typing.typing_event(&m.room_id, since, upto));
        let room_deliveries = pass
            .deliveries
            .get(&m.room_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        ephemeral.extend(
            self.receipts
                .receipt_event(&m.room_id, &req.user_id, since, upto, room_deliveries)
                .await?,
        );
        let newly_joined = since.is_none_or(|s| m.stream_pos > s);
        let has_new = since.is_none_or(|s| latest > s);
        let counts_changed = pass.counts.changed_since(&m.room_id, since);
        if !newly_joined
            && !has_new
            && !req.full_state
            && room_data.is_empty()
            && ephemeral.is_empty()
            && !counts_changed
        {
            return Ok(None);
        }
        let (unread, unread_threads) = self
            .push
            .unread_for_room(
                &req.user_id,
                &m.room_id,
                is_large,
                &pass.counts,
                req.filter.unread_thread_notifications,
                m.stream_pos,
                upto,
            )
            .await?;
        if !newly_joined && !has_new && !req.full_state {
            // Only ephemeral, account-data or count news: no timeline to send.
            let mut body = json!({
                "timeline": {"events": [], "limited": false, "prev_batch": make_token(since.unwrap_or(upto))},
                "state": {"events": []},
                "account_data": {"events": room_data},
                "ephemeral": {"events": ephemeral},
                "unread_notifications": unread,
            });
            if let Some(threads) = unread_threads {
                body["unread_thread_notifications"] = threads;
            }
            return Ok(Some(body));
        }

        let lower = if newly_joined { 0 } else { since.unwrap_or(0) };
        let limit = req.filter.timeline_limit;
        let kept = match self.core.cluster {
            None => room.read().await.recent.newest(lower, upto, limit + 1),
            Some(_) => None,
        };
        let mut events = match kept {
            Some(events) => events,
            None => {
                self.core
                    .storage
                    .timeline
                    .room_events(&m.room_id, upto, lower, Direction::Backward, limit + 1)
                    .await?
            }
        };
        let limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        // Fast path: a member who joined before every event here sees them all.
        if events.first().is_some_and(|e| e.stream_pos < m.stream_pos) {
            events = self
                .rooms
                .filter_visible(&m.room_id, &req.user_id, events)
                .await?;
        }
        let prev_batch = match events.first() {
            Some(first) => make_token(first.stream_pos - 1),
            None => make_token(since.unwrap_or(upto)),
        };

        let timeline_ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let state = if newly_joined || req.full_state || (limited && since.is_some()) {
            let snapshot = match events.first() {
                Some(first) => first.state_before,
                None => self.core.storage.rooms.current_snapshot(&m.room_id).await?,
            };
            let mut entries = self.core.storage.rooms.snapshot_state(snapshot).await?;
            if !newly_joined && !req.full_state {
                // Only what changed between `since` and the start of the timeline.
                let changed = self
                    .state_changed_between(
                        &m.room_id,
                        since.unwrap_or(0),
                        events.first().map(|e| e.stream_pos - 1).unwrap_or(upto),
                    )
                    .await?;
                entries.retain(|(_, _, id)| changed.contains(id));
            }
            if req.filter.lazy_load_members {
                let senders: HashSet<String> = events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(&e.pdu_json).ok())
                    .filter_map(|v| v["sender"].as_str().map(str::to_owned))
                    .chain(std::iter::once(req.user_id.clone()))
                    .collect();
                entries.retain(|(t, k, _)| t != "m.room.member" || senders.contains(k));
            }
            let mut out = Vec::new();
            for (_, _, id) in entries
                .iter()
                .filter(|(_, _, id)| !timeline_ids.contains(id.as_str()))
            {
                if let Some(ev) = self.core.storage.timeline.get_event(id).await? {
                    out.push(to_client(&ev, None, now_ms(), false));
                }
            }
            out
        } else {
            Vec::new()
        };

        if since.is_some() && self.presence.enabled() {
            if newly_joined {
                pass.presence_of
                    .extend(room.read().await.joined.iter().cloned());
            }
            for e in &events {
                if let Ok(v) = serde_json::from_str::<Value>(&e.pdu_json) {
                    if v["type"] == "m.room.member" && v["content"]["membership"] == "join" {
                        if let Some(user) = v["state_key"].as_str() {
                            pass.presence_of.insert(user.to_owned());
                        }
                    }
                }
            }
        }
        let now = now_ms();
        let viewer = Some((req.user_id.as_str(), req.device_id.as_str()));
        let timeline: Vec<Value> = events
            .iter()
            .map(|e| to_client(e, viewer, now, false))
            .filter(|e| req.filter.event_allowed(e))
            .map(|e| req.filter.project(e))
            .collect();
        let mut body = json!({
            "timeline": {"events": timeline, "limited": limited, "prev_batch": prev_batch},
            "state": {"events": state},
            "account_data": {"events": room_data},
            "ephemeral": {"events": ephemeral},
            "summary": {
                "m.joined_member_count": joined_count,
                "m.invited_member_count": invited_count,
                "m.heroes": heroes,
            },
            "unread_notifications": unread,
        });
        if let Some(threads) = unread_threads {
            body["unread_thread_notifications"] = threads;
        }
        Ok(Some(body))
    }

    /// Ids of state events sent in `(from, to]`.
    async fn state_changed_between(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
    ) -> Result<HashSet<String>> {
        let events = self
            .core
            .storage
            .timeline
            .room_events(room_id, from, to, Direction::Forward, 10_000)
            .await?;
        Ok(events
            .into_iter()
            .filter(|e| {
                serde_json::from_str::<Value>(&e.pdu_json)
                    .map(|v| v.get("state_key").is_some())
                    .unwrap_or(false)
            })
            .map(|e| e.event_id)
            .collect())
    }

    /// What an invited or knocking user sees of a room: its stripped state and
    /// their own member event.
    async fn stripped_room(&self, m: &MembershipRecord) -> Result<Value> {
        // Invited to (or knocking on) a room not held here: the stripped state
        // came with the invite (or the knock's answer).
        if let Some(invite) = self
            .core
            .storage
            .federation
            .get_remote_invite(&m.room_id, &m.user_id)
            .await?
        {
            if invite.event_id == m.event_id {
                return Ok(serde_json::from_str(&invite.stripped_state)?);
            }
        }
        let mut events = Vec::new();
        if let Ok(room_id) = OwnedRoomId::try_from(m.room_id.as_str()) {
            if let Some(room) = self.rooms.get(&room_id).await? {
                events = self.rooms.stripped_state(&*room.read().await).await?;
            }
        }
        if let Some(ev) = self.core.storage.timeline.get_event(&m.event_id).await? {
            events.push(to_stripped(&ev.pdu_json));
        }
        Ok(Value::Array(events))
    }

    async fn left_room(
        &self,
        req: &SyncRequest,
        m: &MembershipRecord,
        since: Option<StreamPos>,
    ) -> Result<Value> {
        let limit = req.filter.timeline_limit;
        let mut events = self
            .core
            .storage
            .timeline
            .room_events(
                &m.room_id,
                m.stream_pos,
                since.unwrap_or(0),
                Direction::Backward,
                limit + 1,
            )
            .await?;
        let limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        let events: Vec<StoredEvent> = self
            .rooms
            .filter_visible(&m.room_id, &req.user_id, events)
            .await?;
        let prev_batch = events
            .first()
            .map(|e| make_token(e.stream_pos - 1))
            .unwrap_or_else(|| make_token(m.stream_pos));
        let now = now_ms();
        let viewer = Some((req.user_id.as_str(), req.device_id.as_str()));
        let timeline: Vec<Value> = events
            .iter()
            .map(|e| to_client(e, viewer, now, false))
            .collect();
        Ok(json!({
            "timeline": {"events": timeline, "limited": limited, "prev_batch": prev_batch},
            "state": {"events": []},
            "account_data": {"events": []},
        }))
    }
}
