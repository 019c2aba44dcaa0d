//! Unread notification counts for /sync (`unread_notifications` and
//! `unread_thread_notifications`).
//!
//! Small rooms: the push worker keeps a counter per user, room and thread
//! (`push_counts`); a sync reads all of a user's counters in one query.
//!
//! Large rooms (more joined members than `limits.large_room_members`): a send
//! does no per-member work, so there are no counters to read. A sync computes
//! the counts lazily instead: it evaluates the user's rules over the room's
//! events after their read position, at most `push.lazy_count_limit` of them
//! (so counts in a large room saturate at that number), against the room's
//! current state. The result is kept per user and room with the read positions
//! and rules it was computed against; while those stay the same, the next sync
//! evaluates only the events after it, so a member's sync costs one new event,
//! not every unread one.

use std::{collections::HashMap, sync::Arc};

use ruma::OwnedRoomId;
use serde_json::{json, Map, Value};

use super::{
    conditions::{EventContext, Recipient},
    evaluator::CompiledRules,
    thread_of, PushService,
};
use crate::{
    error::Result,
    rooms::send::user_power,
    storage::{CountRecord, Direction, StreamPos},
};

/// One user's stored counters, by room.
#[derive(Debug, Default)]
pub struct UserCounts {
    by_room: HashMap<String, Vec<CountRecord>>,
}

#[derive(Clone, Default)]
struct Tally {
    notif: i64,
    highlight: i64,
}

/// One user's counts in one large room, as evaluated up to `upto`.
#[derive(Clone)]
pub(super) struct LazyTally {
    /// What they were computed against: the user's join position and read
    /// positions (by thread) in the room, and their rules.
    joined_at: StreamPos,
    reads: Vec<(String, StreamPos)>,
    rules: Arc<CompiledRules>,
    upto: StreamPos,
    tallies: HashMap<String, Tally>,
}

/// Users and rooms with kept large-room counts before they are all dropped.
const MAX_LAZY_TALLIES: usize = 200_000;

impl UserCounts {
    /// Whether the room's counters changed after `since` (a read receipt or a
    /// notification), so the room must appear in an incremental sync.
    pub fn changed_since(&self, room_id: &str, since: Option<StreamPos>) -> bool {
        let Some(since) = since else { return false };
        self.by_room
            .get(room_id)
            .is_some_and(|rows| rows.iter().any(|r| r.stream_pos > since))
    }

    fn read_pos(&self, room_id: &str, thread: &str) -> StreamPos {
        let rows = self.by_room.get(room_id).map(Vec::as_slice).unwrap_or(&[]);
        let of = |t: &str| rows.iter().find(|r| r.thread_id == t).map(|r| r.read_pos);
        of(thread).or_else(|| of("main")).unwrap_or(0)
    }
}

fn render(tallies: HashMap<String, Tally>, threaded: bool) -> (Value, Option<Value>) {
    let mut main = Tally::default();
    let mut threads = Map::new();
    for (thread, t) in tallies {
        if thread == "main" || !threaded {
            main.notif += t.notif;
            main.highlight += t.highlight;
        } else if t.notif > 0 || t.highlight > 0 {
            threads.insert(
                thread,
                json!({"notification_count": t.notif, "highlight_count": t.highlight}),
            );
        }
    }
    let unread = json!({"notification_count": main.notif, "highlight_count": main.highlight});
    (
        unread,
        (threaded && !threads.is_empty()).then_some(Value::Object(threads)),
    )
}

impl PushService {
    pub async fn user_counts(&self, user_id: &str) -> Result<UserCounts> {
        let mut out = UserCounts::default();
        for row in self.core.storage.push.counts_for_user(user_id).await? {
            out.by_room
                .entry(row.room_id.clone())
                .or_default()
                .push(row);
        }
        Ok(out)
    }

    /// `unread_notifications` and, when the filter asks for them (`threaded`),
    /// `unread_thread_notifications` of one joined room. With `threaded` the
    /// first covers the main timeline only, per the spec. `joined_at` is the
    /// position of the user's join: nothing before it counts.
    #[allow(clippy::too_many_arguments)]
    pub async fn unread_for_room(
        &self,
        user_id: &str,
        room_id: &str,
        large: bool,
        counts: &UserCounts,
        threaded: bool,
        joined_at: StreamPos,
        upto: StreamPos,
    ) -> Result<(Value, Option<Value>)> {
        let tallies = if large {
            self.lazy_counts(user_id, room_id, counts, joined_at, upto)
                .await?
        } else {
            let mut tallies = HashMap::new();
            for r in counts.by_room.get(room_id).into_iter().flatten() {
                tallies.insert(
                    r.thread_id.clone(),
                    Tally {
                        notif: r.notif_count,
                        highlight: r.highlight_count,
                    },
                );
            }
            tallies
        };
        Ok(render(tallies, threaded))
    }

    /// Evaluates the user's rules over a large room's unread events.
    async fn lazy_counts(
        &self,
        user_id: &str,
        room_id: &str,
        counts: &UserCounts,
        joined_at: StreamPos,
        upto: StreamPos,
    ) -> Result<HashMap<String, Tally>> {
        let rows = counts
            .by_room
            .get(room_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut reads: Vec<(String, StreamPos)> = rows
            .iter()
            .map(|r| (r.thread_id.clone(), r.read_pos))
            .collect();
        reads.sort();
        let rules = self.compiled_rules(user_id).await?;
        let key = (user_id.to_owned(), room_id.to_owned());
        let kept = self.lazy.lock().get(&key).cloned().filter(|k| {
            k.joined_at == joined_at
                && k.reads == reads
                && Arc::ptr_eq(&k.rules, &rules)
                && k.upto <= upto
        });
        let limit = self.core.config.push.lazy_count_limit;
        let (lower, mut tallies) = match kept {
            Some(k) => (k.upto, k.tallies),
            None => {
                let lower = reads.iter().map(|(_, p)| *p).min().unwrap_or(0);
                (lower.max(joined_at), HashMap::new())
            }
        };
        if lower < upto {
            self.evaluate_unread(user_id, room_id, counts, &rules, lower, upto, &mut tallies)
                .await?;
        }
        for t in tallies.values_mut() {
            // Counts saturate at the limit, as a first evaluation would.
            t.notif = t.notif.min(limit as i64);
            t.highlight = t.highlight.min(limit as i64);
        }
        let mut lazy = self.lazy.lock();
        if lazy.len() >= MAX_LAZY_TALLIES && !lazy.contains_key(&key) {
            lazy.clear();
        }
        if lazy.get(&key).is_none_or(|k| k.upto <= upto) {
            lazy.insert(
                key,
                LazyTally {
                    joined_at,
                    reads,
                    rules,
                    upto,
                    tallies: tallies.clone(),
                },
            );
        }
        Ok(tallies)
    }

    /// Adds the user's notifying events of a large room in `(lower, upto]`
    /// (the latest `push.lazy_count_limit` of them) to `tallies`.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate_unread(
        &self,
        user_id: &str,
        room_id: &str,
        counts: &UserCounts,
        rules: &CompiledRules,
        lower: StreamPos,
        upto: StreamPos,
        tallies: &mut HashMap<String, Tally>,
    ) -> Result<()> {
        let Ok(rid) = OwnedRoomId::try_from(room_id) else {
            return Ok(());
        };
        let Some(room) = self.rooms.get(&rid).await? else {
            return Ok(());
        };
        let limit = self.core.config.push.lazy_count_limit;
        let kept = match self.core.cluster {
            None => room.read().await.recent.newest(lower, upto, limit),
            Some(_) => None,
        };
        let events = match kept {
            Some(events) => events,
            None => {
                self.core
                    .storage
                    .timeline
                    .room_events(room_id, upto, lower, Direction::Backward, limit)
                    .await?
            }
        };
        let st = room.read().await;
        let levels = st
            .state_event("m.room.power_levels", "")
            .map(|p| p.content_value())
            .unwrap_or_default();
        let display_name = st
            .state_event("m.room.member", user_id)
            .and_then(|p| p.content_str("displayname"));
        let who = Recipient {
            user_id,
            display_name: display_name.as_deref(),
        };
        for ev in events {
            let Ok(event) = serde_json::from_str::<Value>(&ev.pdu_json) else {
                continue;
            };
            let sender = event["sender"].as_str().unwrap_or_default();
            let thread = thread_of(&event);
            if sender == user_id || ev.stream_pos <= counts.read_pos(room_id, &thread) {
                continue;
            }
            let ctx = EventContext {
                event: &event,
                member_count: st.joined.len() as u64,
                sender_power: user_power(&st, &levels, sender),
                notification_levels: &levels["notifications"],
            };
            if let Some(o) = rules.evaluate(&ctx, &who).filter(|o| o.notify) {
                let t = tallies.entry(thread).or_default();
                t.notif += 1;
                t.highlight += i64::from(o.highlight);
            }
        }
        Ok(())
    }
}
