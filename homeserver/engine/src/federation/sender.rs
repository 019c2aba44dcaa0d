//! The outbound side of federation: one durable queue per destination server.
//!
//! Every PDU or EDU for another server is first written to the
//! `federation_outbox` table, then a per-destination worker batches what is
//! queued into `PUT /_matrix/federation/v1/send/{txnId}` (at most 50 PDUs and
//! 100 EDUs, the spec's limits). Rows are deleted only once the destination has
//! answered 200, so a crash or a restart loses nothing: the next start finds
//! the rows and sends them. A destination that fails is retried with
//! exponential backoff, recorded in `federation_destinations` so it survives a
//! restart; each destination has its own worker, so one that is down never
//! delays the others. A transaction id is derived from the rows it carries,
//! which makes a retried transaction idempotent at the receiver.
//!
//! With several instances (docs/scale-out.md) every destination has one
//! sender: the live instance its name hashes to. The others queue rows for
//! it in the shared table, and the owner finds them when it next scans the
//! table (every cluster heartbeat); when instances come or go, destinations
//! move with the hash.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use http::Method;
use parking_lot::Mutex;
use ruma::ServerName;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::client::FederationClient;
use crate::{
    error::Result,
    storage::{
        federation::{DestinationRecord, OutboxRow},
        Storage,
    },
    util::now_ms,
};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// First retry delay after a failure; doubled on each further failure.
const MIN_BACKOFF_MS: i64 = 500;
/// The longest a destination waits between attempts.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;

/// Handle to the outbound queues; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    server_name: String,
    next_id: AtomicI64,
    /// One wake-up per destination whose worker is running.
    workers: Mutex<HashMap<String, WorkerHandle>>,
    client: OnceLock<FederationClient>,
    /// Row ids step by this (the instance count limit with several instances).
    id_stride: i64,
    /// Whether this instance sends for a destination (all, on one instance).
    owner: OnceLock<OwnerFn>,
}

/// Answers whether this instance is the one that sends to a destination.
pub type OwnerFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct WorkerHandle {
    notify: Arc<Notify>,
    /// Set while the worker waits for new rows (not while it backs off).
    idle: Arc<std::sync::atomic::AtomicBool>,
}

impl Outbound {
    /// `id_stride`/`id_offset`: row ids are `id_offset` modulo `id_stride`,
    /// so instances sharing the table never pick the same id (1/0 alone).
    pub async fn new(
        storage: Storage,
        server_name: &ServerName,
        id_stride: i64,
        id_offset: i64,
    ) -> Result<Self> {
        let max = storage.federation.outbox_max_id().await?;
        // Ids continue from the clock so they stay unique even if the queue
        // was emptied and the process restarted.
        let id_stride = id_stride.max(1);
        let start = max.max(now_ms() * 1000);
        let start = (start / id_stride + 1) * id_stride + id_offset - 1;
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                server_name: server_name.to_string(),
                next_id: AtomicI64::new(start + 1),
                workers: Mutex::new(HashMap::new()),
                client: OnceLock::new(),
                id_stride,
                owner: OnceLock::new(),
            }),
        })
    }

    /// Starts sending, with `client`, what is queued now and whatever comes later.
    pub async fn start(&self, client: FederationClient) -> Result<()> {
        let _ = self.inner.client.set(client);
        for destination in self.inner.storage.federation.outbox_destinations().await? {
            self.wake(&destination);
        }
        Ok(())
    }

    /// Queues a PDU (canonical JSON text) for each destination.
    pub async fn send_pdu<'a>(
        &self,
        destinations: impl IntoIterator<Item = &'a str>,
        pdu_json: &str,
    ) -> Result<()> {
        self.push(destinations, "pdu", pdu_json).await
    }

    /// Queues an EDU for each destination.
    pub async fn send_edu<'a>(
        &self,
        destinations: impl IntoIterator<Item = &'a str>,
        edu_type: &str,
        content: Value,
    ) -> Result<()> {
        let payload = json!({"edu_type": edu_type, "content": content}).to_string();
        self.push(destinations, "edu", &payload).await
    }

    async fn push<'a>(
        &self,
        destinations: impl IntoIterator<Item = &'a str>,
        kind: &str,
        payload: &str,
    ) -> Result<()> {
        let rows: Vec<OutboxRow> = destinations
            .into_iter()
            .filter(|d| *d != self.inner.server_name)
            .map(|d| OutboxRow {
                id: self
                    .inner
                    .next_id
                    .fetch_add(self.inner.id_stride, Ordering::Relaxed),
                destination: d.to_owned(),
                kind: kind.to_owned(),
                payload: payload.to_owned(),
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.inner.storage.federation.outbox_push(&rows).await?;
        for row in &rows {
            self.wake(&row.destination);
        }
        Ok(())
    }

    /// Multi-instance mode: which destinations this instance sends to.
    pub fn set_owner(&self, owner: OwnerFn) {
        let _ = self.inner.owner.set(owner);
    }

    fn owns(&self, destination: &str) -> bool {
        self.inner.owner.get().is_none_or(|owns| owns(destination))
    }

    /// Multi-instance mode: starts or wakes the senders of destinations this
    /// instance owns that have rows queued (by any instance). Workers backing
    /// off after a failure are left alone.
    pub async fn rescan(&self) -> Result<()> {
        for destination in self.inner.storage.federation.outbox_destinations().await? {
            let running = self.inner.workers.lock().get(&destination).cloned();
            match running {
                Some(w) if w.idle.load(Ordering::Acquire) => w.notify.notify_one(),
                Some(_) => {}
                None => self.wake(&destination),
            }
        }
        Ok(())
    }

    /// Wakes the destination's worker (starting it if needed). Also used when
    /// the destination shows it is back: its backoff is cut short.
    pub fn wake(&self, destination: &str) {
        if !self.owns(destination) {
            return;
        }
        let mut workers = self.inner.workers.lock();
        if let Some(w) = workers.get(destination) {
            w.notify.notify_one();
            return;
        }
        let Some(client) = self.inner.client.get().cloned() else {
            // Not started yet: `start` picks the rows up from the table.
            return;
        };
        let handle = WorkerHandle {
            notify: Arc::new(Notify::new()),
            idle: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        workers.insert(destination.to_owned(), handle.clone());
        handle.notify.notify_one();
        let worker = Worker {
            storage: self.inner.storage.clone(),
            destination: destination.to_owned(),
            origin: self.inner.server_name.clone(),
            client,
            notify: handle.notify,
            idle: handle.idle,
            outbound: self.clone(),
        };
        tokio::spawn(worker.run());
    }

    /// A remote server reached us, so it is up: retry anything queued for it now.
    pub async fn destination_is_up(&self, destination: &str) {
        let storage = &self.inner.storage.federation;
        if let Ok(Some(mut d)) = storage.get_destination(destination).await {
            if d.retry_at > now_ms() {
                d.retry_at = 0;
                d.backoff_ms = 0;
                let _ = storage.put_destination(&d).await;
                self.wake(destination);
            }
        }
    }
}

struct Worker {
    storage: Storage,
    destination: String,
    origin: String,
    client: FederationClient,
    notify: Arc<Notify>,
    idle: Arc<std::sync::atomic::AtomicBool>,
    /// To stop when the destination moves to another instance.
    outbound: Outbound,
}

impl Worker {
    async fn run(self) {
        let Ok(server) = ServerName::parse(&self.destination) else {
            tracing::warn!(destination = %self.destination, "not a server name; dropping its queue");
            return;
        };
        loop {
            self.idle.store(true, Ordering::Release);
            self.notify.notified().await;
            self.idle.store(false, Ordering::Release);
            if !self.outbound.owns(&self.destination) {
                // Another instance sends to it now (instances came or went).
                self.outbound.inner.workers.lock().remove(&self.destination);
                return;
            }
            // Drain everything queued, honouring the backoff between failures.
            loop {
                let record = self
                    .storage
                    .federation
                    .get_destination(&self.destination)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| DestinationRecord {
                        destination: self.destination.clone(),
                        ..Default::default()
                    });
                let wait = record.retry_at - now_ms();
                if wait > 0 {
                    // A wake-up (the destination contacted us) cuts the wait short.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(wait as u64),
                        self.notify.notified(),
                    )
                    .await;
                    continue;
                }
                let rows = match self
                    .storage
                    .federation
                    .outbox_peek(&self.destination, 500)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(destination = %self.destination, error = %e, "cannot read the outbox");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if rows.is_empty() {
                    break;
                }
                let (batch, body) = self.transaction(&rows);
                let txn_id = format!("{}-{}", batch[0], batch.len());
                let path = format!("/_matrix/federation/v1/send/{txn_id}");
                let outcome = self
                    .client
                    .request(&server, Method::PUT, &path, Some(body))
                    .await;
                match outcome {
                    Ok(response) => {
                        log_pdu_errors(&self.destination, &response);
                        let _ = self
                            .storage
                            .federation
                            .outbox_delete(&self.destination, &batch)
                            .await;
                        if record.backoff_ms != 0 || record.last_success_ts.is_none() {
                            let _ = self
                                .storage
                                .federation
                                .put_destination(&DestinationRecord {
                                    retry_at: 0,
                                    backoff_ms: 0,
                                    last_success_ts: Some(now_ms()),
                                    ..record
                                })
                                .await;
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        let backoff = (record.backoff_ms * 2).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
                        tracing::info!(destination = %self.destination, error = %e, backoff_ms = backoff, "transaction failed; will retry");
                        let _ = self
                            .storage
                            .federation
                            .put_destination(&DestinationRecord {
                                retry_at: now_ms() + backoff,
                                backoff_ms: backoff,
                                last_failure_ts: Some(now_ms()),
                                last_error: Some(e.to_string()),
                                ..record
                            })
                            .await;
                    }
                    Err(e) => {
                        // The destination refuses this transaction outright;
                        // retrying the same rows would block its queue forever.
                        tracing::warn!(destination = %self.destination, error = %e, "transaction refused; dropping it");
                        let _ = self
                            .storage
                            .federation
                            .outbox_delete(&self.destination, &batch)
                            .await;
                        let _ = self
                            .storage
                            .federation
                            .put_destination(&DestinationRecord {
                                last_failure_ts: Some(now_ms()),
                                last_error: Some(e.to_string()),
                                ..record
                            })
                            .await;
                    }
                }
            }
        }
    }

    /// The rows that fit in one transaction, and its body.
    fn transaction(&self, rows: &[OutboxRow]) -> (Vec<i64>, Value) {
        let mut ids = Vec::new();
        let mut pdus = Vec::new();
        let mut edus = Vec::new();
        for row in rows {
            let full = match row.kind.as_str() {
                "pdu" => pdus.len() >= MAX_PDUS,
                _ => edus.len() >= MAX_EDUS,
            };
            if full {
                // Keep the queue's order: stop at the first row that does not fit.
                break;
            }
            let Ok(value) = serde_json::from_str::<Value>(&row.payload) else {
                ids.push(row.id);
                continue;
            };
            match row.kind.as_str() {
                "pdu" => pdus.push(value),
                _ => edus.push(value),
            }
            ids.push(row.id);
        }
        let body = json!({
            "origin": self.origin,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        });
        (ids, body)
    }
}

fn log_pdu_errors(destination: &str, response: &Value) {
    if let Some(pdus) = response.get("pdus").and_then(Value::as_object) {
        for (event_id, result) in pdus {
            if let Some(error) = result.get("error") {
                tracing::info!(destination, %event_id, %error, "destination did not accept a PDU");
            }
        }
    }
}
