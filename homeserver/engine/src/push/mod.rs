//! Push notifications (spec: "Push Notifications"): push rules, notification
//! counts, pushers and delivery to push gateways.
//!
//! The write path stays cheap: a send only hands the persisted event to
//! [`JobQueue`] (a channel send). One background worker evaluates each
//! event's push rules for the room's local members, in stream order, records
//! notifications and unread counts, and queues pushes for users with no open
//! connection. Large rooms get no per-member work there beyond the users the
//! event mentions; their counts are computed lazily at /sync (see `counts.rs`).
//! Read receipts go through the same worker, so a receipt never races the
//! notifications of the events it covers. See `docs/push.md`.

pub mod conditions;
mod counts;
mod delivery;
pub mod evaluator;
mod listing;
mod notify;
mod pushers;
pub mod rules;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use counts::UserCounts;
pub use notify::thread_of;
pub use pushers::{pusher_json, NOTIFY_PATH};

use self::{
    evaluator::CompiledRules,
    rules::{PushRule, Ruleset},
};
use crate::{
    account_data::AccountDataService,
    core::Core,
    error::{Error, Result},
    presence::PresenceService,
    rooms::RoomService,
    storage::{PersistEvent, StreamPos},
};

/// The account data type the spec stores push rules under.
pub const PUSH_RULES: &str = "m.push_rules";

/// How long a cached ruleset is trusted before it is read again. With
/// several instances, an edit also drops the other instances' copies at once
/// (a note on the notes channel); this bounds staleness when a note is lost.
const RULES_TTL: Duration = Duration::from_secs(30);
/// Cached rulesets kept at most; the cache is cleared beyond this.
const RULES_CACHE_MAX: usize = 100_000;

/// Work for the push worker, in stream order.
pub(crate) enum Job {
    Event(Box<EventJob>),
    Read {
        user_id: String,
        room_id: String,
        /// `None` for an unthreaded receipt (every thread).
        thread_id: Option<String>,
        read_pos: StreamPos,
        done: oneshot::Sender<()>,
    },
}

pub(crate) struct EventJob {
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    pub stream_pos: StreamPos,
    pub ts: i64,
    pub pdu_json: String,
}

/// The send pipeline's handle on the push worker: enqueueing is a channel send.
#[derive(Clone)]
pub struct JobQueue(mpsc::UnboundedSender<Job>);

/// The receiving end, handed to [`PushService::spawn`].
pub struct JobReceiver(mpsc::UnboundedReceiver<Job>);

pub fn job_queue() -> (JobQueue, JobReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (JobQueue(tx), JobReceiver(rx))
}

impl JobQueue {
    /// Called once per persisted event, after it is visible.
    pub fn event_persisted(&self, ev: PersistEvent) {
        let _ = self.0.send(Job::Event(Box::new(EventJob {
            room_id: ev.room_id,
            event_id: ev.event_id,
            sender: ev.sender,
            stream_pos: ev.stream_pos,
            ts: ev.origin_server_ts,
            pdu_json: ev.pdu_json,
        })));
    }

    /// A read receipt moved: resets the counts it covers. Waits until the
    /// worker has applied it, so the next /sync shows the new counts.
    pub async fn read_receipt(
        &self,
        user_id: &str,
        room_id: &str,
        thread_id: Option<&str>,
        read_pos: StreamPos,
    ) {
        let (done, wait) = oneshot::channel();
        let job = Job::Read {
            user_id: user_id.to_owned(),
            room_id: room_id.to_owned(),
            thread_id: thread_id.filter(|t| !t.is_empty()).map(str::to_owned),
            read_pos,
            done,
        };
        if self.0.send(job).is_ok() {
            let _ = wait.await;
        }
    }
}

struct CachedRules {
    loaded: Instant,
    ruleset: Arc<Ruleset>,
    compiled: Arc<CompiledRules>,
}

#[derive(Clone)]
pub struct PushService {
    core: Arc<Core>,
    rooms: RoomService,
    presence: PresenceService,
    account_data: AccountDataService,
    cache: Arc<Mutex<HashMap<String, Arc<CachedRules>>>>,
    /// Large rooms' lazily computed counts, by user and room (`counts.rs`).
    lazy: Arc<Mutex<HashMap<(String, String), counts::LazyTally>>>,
    /// Woken when deliveries are queued.
    delivery_wake: Arc<Notify>,
    /// Set on shutdown: the worker and the delivery task stop.
    stop: Arc<watch::Sender<bool>>,
    http: reqwest::Client,
}

impl PushService {
    pub fn new(
        core: Arc<Core>,
        rooms: RoomService,
        presence: PresenceService,
        account_data: AccountDataService,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(core.config.push.gateway_timeout_ms))
            .build()
            .unwrap_or_default();
        Self {
            core,
            rooms,
            presence,
            account_data,
            cache: Default::default(),
            lazy: Default::default(),
            delivery_wake: Default::default(),
            stop: Arc::new(watch::channel(false).0),
            http,
        }
    }

    /// Starts the evaluation worker and the delivery task.
    pub fn spawn(&self, jobs: JobReceiver) {
        let worker = self.clone();
        tokio::spawn(async move { worker.run_worker(jobs.0).await });
        let delivery = self.clone();
        tokio::spawn(async move { delivery.run_delivery().await });
        if let Some(redis) = &self.core.redis {
            let cache = self.cache.clone();
            redis.notes.follow("push rules", move |note| match note {
                Some(crate::cluster::Note::PushRules { user }) => {
                    cache.lock().remove(&user);
                }
                Some(_) => {}
                // Missed some: any cached ruleset may be stale.
                None => cache.lock().clear(),
            });
        }
    }

    /// Stops the background tasks (server shutdown). Queued deliveries stay
    /// in the database for the next start.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The user's ruleset (server defaults merged with their changes).
    pub async fn ruleset(&self, user_id: &str) -> Result<Arc<Ruleset>> {
        Ok(self.cached(user_id).await?.ruleset.clone())
    }

    /// The user's rules compiled for evaluation.
    pub async fn compiled_rules(&self, user_id: &str) -> Result<Arc<CompiledRules>> {
        Ok(self.cached(user_id).await?.compiled.clone())
    }

    async fn cached(&self, user_id: &str) -> Result<Arc<CachedRules>> {
        if let Some(c) = self.cache.lock().get(user_id) {
            if c.loaded.elapsed() < RULES_TTL {
                return Ok(c.clone());
            }
        }
        let stored = self.account_data.get(user_id, None, PUSH_RULES).await?;
        let ruleset = match stored.as_ref().map(|v| &v["global"]) {
            Some(global) => serde_json::from_value::<Ruleset>(global.clone())
                .unwrap_or_default()
                .with_server_defaults(user_id),
            None => rules::server_default(user_id),
        };
        Ok(self.remember(user_id, ruleset))
    }

    fn remember(&self, user_id: &str, ruleset: Ruleset) -> Arc<CachedRules> {
        let entry = Arc::new(CachedRules {
            loaded: Instant::now(),
            compiled: Arc::new(CompiledRules::compile(&ruleset)),
            ruleset: Arc::new(ruleset),
        });
        let mut cache = self.cache.lock();
        if cache.len() >= RULES_CACHE_MAX {
            cache.clear();
        }
        cache.insert(user_id.to_owned(), entry.clone());
        entry
    }

    /// The `m.push_rules` account data event for an initial /sync of a user
    /// who never changed a rule (stored rules arrive as ordinary account data).
    pub async fn default_rules_event(&self, user_id: &str) -> Result<Option<Value>> {
        if self
            .account_data
            .get(user_id, None, PUSH_RULES)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let ruleset = self.ruleset(user_id).await?;
        Ok(Some(serde_json::json!({
            "type": PUSH_RULES,
            "content": {"global": &*ruleset},
        })))
    }

    /// Applies an edit to the user's ruleset and stores it (waking their devices).
    pub async fn edit_rules(
        &self,
        user_id: &str,
        edit: impl FnOnce(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        // Read through the store, not the cache, so edits never build on a stale copy.
        self.cache.lock().remove(user_id);
        let mut ruleset = (*self.ruleset(user_id).await?).clone();
        edit(&mut ruleset)?;
        let content = serde_json::json!({"global": &ruleset});
        self.account_data
            .put(user_id, None, PUSH_RULES, &content)
            .await?;
        self.remember(user_id, ruleset);
        if let Some(redis) = &self.core.redis {
            let user = user_id.to_owned();
            redis
                .notes
                .send(crate::cluster::Note::PushRules { user })
                .await;
        }
        Ok(())
    }

    /// One rule, for `GET /pushrules/global/{kind}/{ruleId}`.
    pub async fn rule(&self, user_id: &str, kind: &str, rule_id: &str) -> Result<PushRule> {
        let ruleset = self.ruleset(user_id).await?;
        if ruleset.kind(kind).is_none() {
            return Err(Error::invalid_param(format!(
                "Unknown push rule kind {kind}"
            )));
        }
        ruleset
            .get(kind, rule_id)
            .cloned()
            .ok_or_else(|| Error::not_found("Push rule not found."))
    }
}
