//! The event pipeline for local events: build, authorise, persist, then notify.

use std::sync::Arc;

use ruma::{OwnedEventId, RoomId, UserId};

use super::{RoomService, RoomState};
use crate::{
    error::{Error, Result},
    events::{
        auth,
        builder::{self, BuildContext, Built, EventDraft},
    },
    storage::{PersistEvent, TxnRecord},
    sync::notifier::WakeTarget,
    util::now_ms,
};

/// The sending device and its transaction id, for idempotent client sends.
/// Per the spec a txn id is scoped to the device and the endpoint's path, so
/// `scope` names the path (e.g. `send/!room/m.room.message`).
#[derive(Clone, Copy, Debug)]
pub struct Txn<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
    pub scope: &'a str,
}

impl Txn<'_> {
    fn key(&self) -> String {
        format!("{}|{}", self.scope, self.txn_id)
    }
}

impl RoomService {
    /// Sends an event into a room on behalf of a local user. A retried send with
    /// the same device and txn id returns the first event's id.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        let timeline = &self.core.storage.timeline;
        let room = self
            .get(room_id)
            .await?
            .ok_or_else(|| Error::forbidden("You are not in this room."))?;
        let mut st = self.write_lock(&room).await?;
        if let Some(t) = txn {
            // Checked under the room lock, so a concurrent retry either sees
            // the first send's id or is the first send. (Retries are rare: one
            // read here, not one before the lock and one after.)
            if let Some(id) = timeline
                .find_txn(sender.as_str(), t.device_id, &t.key())
                .await?
            {
                return OwnedEventId::try_from(id).map_err(|e| Error::unknown(e.to_string()));
            }
        }
        self.send_locked(&mut st, sender, draft, txn).await
    }

    /// Builds, authorises and persists an event while holding the room's write lock.
    pub(crate) async fn send_locked(
        &self,
        st: &mut RoomState,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        let built = self.build(st, sender, &draft)?;
        auth::check(
            &st.rules.authorization,
            &built.pdu,
            &st.state,
            &builder::index_by_id(&st.state),
        )?;
        if draft.kind == "m.room.redaction" {
            self.check_redaction(st, sender, draft.redacts.as_ref())
                .await?;
        }
        self.persist(st, built, txn, sender).await
    }

    /// Builds a local event against the room (for callers outside this module
    /// that send it elsewhere before persisting, such as a remote invite).
    pub fn build_for(&self, st: &RoomState, sender: &UserId, draft: &EventDraft) -> Result<Built> {
        self.build(st, sender, draft)
    }

    /// Persists an event built and authorised by the caller.
    pub async fn persist_built(
        &self,
        st: &mut RoomState,
        built: Built,
        sender: &UserId,
    ) -> Result<OwnedEventId> {
        self.persist(st, built, None, sender).await
    }

    pub(crate) fn build(
        &self,
        st: &RoomState,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<Built> {
        let ctx = BuildContext {
            room_id: Some(&st.room_id),
            rules: &st.rules,
            state: &st.state,
            prev_events: &st.extremities,
            max_depth: st.max_depth,
            server_name: self.core.server_name.as_str(),
            key: &self.core.key,
            now_ms: now_ms(),
        };
        builder::build(&ctx, sender, draft)
    }

    /// Clients may redact their own events; redacting others' needs the `redact` power level.
    async fn check_redaction(
        &self,
        st: &RoomState,
        sender: &UserId,
        target: Option<&OwnedEventId>,
    ) -> Result<()> {
        let target = target.ok_or_else(|| Error::bad_json("redaction without `redacts`"))?;
        let Some(ev) = self
            .core
            .storage
            .timeline
            .get_event(target.as_str())
            .await?
        else {
            return Ok(());
        };
        if ev.room_id != st.room_id.as_str() {
            return Err(Error::not_found("Event not found in this room."));
        }
        let original: serde_json::Value = serde_json::from_str(&ev.pdu_json)?;
        if original["sender"].as_str() == Some(sender.as_str()) {
            return Ok(());
        }
        let levels = st
            .state_event("m.room.power_levels", "")
            .map(|p| p.content_value())
            .unwrap_or_default();
        let redact_level = levels["redact"].as_i64().unwrap_or(50);
        if user_power(st, &levels, sender.as_str()) < redact_level {
            return Err(Error::forbidden("You may not redact other users' events."));
        }
        Ok(())
    }

    /// Persists an authorised event, applies it to the in-memory room, and wakes
    /// whoever it concerns once its stream position is visible.
    pub(crate) async fn persist(
        &self,
        st: &mut RoomState,
        built: Built,
        txn: Option<Txn<'_>>,
        sender: &UserId,
    ) -> Result<OwnedEventId> {
        let Built { pdu, json } = built;
        let core = &self.core;
        // Other servers in the room (and the server of a user whose membership
        // changes) get the event over federation once it is stored.
        let member_server = (pdu.kind.to_string() == "m.room.member")
            .then(|| pdu.state_key.as_deref().map(super::server_of))
            .flatten();
        let destinations = st.remote_servers(core.server_name.as_str(), member_server);
        let outbound_json = (!destinations.is_empty()).then(|| json.clone());
        let pos = core.stream.allocate();
        let state_after = pdu
            .state_key
            .as_ref()
            .map(|_| (core.alloc_snapshot(), st.snapshot));
        let membership = (pdu.kind.to_string() == "m.room.member")
            .then(|| pdu.content_str("membership"))
            .flatten();
        let redaction = match (&pdu.redacts, pdu.kind.to_string() == "m.room.redaction") {
            (Some(target), true) => match core.storage.timeline.get_event(target.as_str()).await {
                Ok(Some(ev)) if ev.room_id == st.room_id.as_str() => {
                    let redacted = builder::redact_json(&ev.pdu_json, &st.rules)?;
                    Some((
                        ev.event_id.clone(),
                        with_redacted_because(&redacted, &pdu.event_id, &json, &st.room_id),
                    ))
                }
                Ok(_) => None,
                Err(e) => {
                    core.complete(pos, Vec::new());
                    return Err(e);
                }
            },
            _ => None,
        };
        let record = PersistEvent {
            stream_pos: pos,
            event_id: pdu.event_id.to_string(),
            room_id: st.room_id.to_string(),
            event_type: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            sender: sender.to_string(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            depth: pdu.depth as i64,
            pdu_json: json,
            state_before: st.snapshot,
            state_after,
            forward_extremities: vec![pdu.event_id.to_string()],
            txn: txn.map(|t| TxnRecord {
                user_id: sender.to_string(),
                device_id: t.device_id.to_owned(),
                key: t.key(),
                txn_id: t.txn_id.to_owned(),
            }),
            membership: membership.clone(),
            redaction: redaction.clone(),
        };
        if let Err(e) = core.storage.timeline.persist_event(&record).await {
            core.complete(pos, Vec::new());
            return Err(e);
        }

        // Persisted: now apply to the in-memory room.
        let txn = (record.txn.as_ref()).map(|t| (t.device_id.clone(), t.txn_id.clone()));
        st.recent.persisted(
            &record.room_id,
            &record.event_id,
            pos,
            &record.pdu_json,
            record.state_before,
            txn,
            record.redaction.as_ref(),
        );
        let event_id = pdu.event_id.clone();
        st.extremities = vec![event_id.clone()];
        st.max_depth = st.max_depth.max(pdu.depth);
        st.latest_pos = pos;
        let mut wake = Vec::new();
        if let (Some(key), Some((snapshot, _))) = (pdu.state_key.clone(), state_after) {
            st.snapshot = snapshot;
            if let Some(m) = &membership {
                st.track_membership(&key, m);
                wake.push(WakeTarget::User(key.clone()));
            }
            st.state.insert((pdu.kind.to_string(), key), Arc::new(pdu));
        }
        wake.extend(super::member_wakes(core, st, pos, membership.is_some()));
        core.complete_in(pos, wake, Some(st.room_id.as_str()));
        if let Some(json) = outbound_json {
            if let Err(e) = core
                .outbound
                .send_pdu(destinations.iter().map(String::as_str), &json)
                .await
            {
                tracing::error!(error = %e, event_id = %event_id, "cannot queue the event for federation");
            }
        }
        // Push rules run off the send path: this only queues the event.
        core.push_jobs.event_persisted(record);
        Ok(event_id)
    }
}

/// Records the redaction in the redacted event's `unsigned.redacted_because`,
/// which clients read to show "message deleted".
pub(super) fn with_redacted_because(
    redacted: &str,
    redaction_id: &ruma::EventId,
    redaction_json: &str,
    room_id: &ruma::RoomId,
) -> String {
    let Ok(serde_json::Value::Object(mut obj)) =
        serde_json::from_str::<serde_json::Value>(redacted)
    else {
        return redacted.to_owned();
    };
    let because = crate::events::client_format::to_client(
        &crate::storage::StoredEvent {
            stream_pos: 0,
            event_id: redaction_id.to_string(),
            room_id: room_id.to_string(),
            pdu_json: redaction_json.to_owned(),
            state_before: 0,
            rejected: false,
            txn: None,
        },
        None,
        0,
        true,
    );
    let mut because = because;
    if let Some(u) = because.get_mut("unsigned").and_then(|u| u.as_object_mut()) {
        u.remove("age");
    }
    obj.insert(
        "unsigned".into(),
        serde_json::json!({"redacted_because": because}),
    );
    serde_json::Value::Object(obj).to_string()
}

/// A user's power level from `m.room.power_levels` content. Room creators in v12
/// rooms outrank everyone.
pub fn user_power(st: &RoomState, levels: &serde_json::Value, user_id: &str) -> i64 {
    if st.rules.authorization.explicitly_privilege_room_creators && is_creator(st, user_id) {
        return i64::MAX;
    }
    if levels.is_null() {
        // Without a power levels event the creator has 100 and everyone else 0.
        return if is_creator(st, user_id) { 100 } else { 0 };
    }
    levels["users"][user_id]
        .as_i64()
        .or_else(|| levels["users_default"].as_i64())
        .unwrap_or(0)
}

fn is_creator(st: &RoomState, user_id: &str) -> bool {
    let Some(create) = st.state_event("m.room.create", "") else {
        return false;
    };
    if create.sender.as_str() == user_id {
        return true;
    }
    let content = create.content_value();
    content["additional_creators"]
        .as_array()
        .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(user_id)))
}
