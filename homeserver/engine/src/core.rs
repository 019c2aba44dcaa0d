//! The shared core every service holds: configuration, identity, storage and
//! the stream/notification machinery.

use std::{
    collections::HashSet,
    sync::{atomic::AtomicI64, Arc},
};

use parking_lot::RwLock;
use ruma::OwnedServerName;

use crate::{
    config::Config,
    keys::SigningKey,
    storage::Storage,
    sync::{
        notifier::{Notifier, WakeBus, WakeTarget},
        stream::StreamTracker,
    },
};

pub struct Core {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub key: SigningKey,
    pub storage: Storage,
    pub stream: StreamTracker,
    pub notifier: Arc<Notifier>,
    /// Where wake-ups are published; the local notifier unless a bus is configured.
    pub bus: Arc<dyn WakeBus>,
    /// Next state snapshot id.
    pub next_snapshot: AtomicI64,
    /// Hands persisted events and read receipts to the push worker.
    pub push_jobs: crate::push::JobQueue,
    /// The durable per-destination queues of outgoing federation transactions.
    pub outbound: crate::federation::sender::Outbound,
    /// Users erased by an admin: their old messages are served redacted to
    /// anyone who was not joined when they were sent. Loaded at start-up.
    pub erased: RwLock<HashSet<String>>,
}

impl Core {
    /// Marks a stream position finished and publishes the wake-ups that became due.
    pub fn complete(&self, pos: i64, wake: Vec<WakeTarget>) {
        let due = self.stream.complete(pos, wake);
        if !due.is_empty() {
            self.bus.publish(&due);
        }
    }

    pub fn is_local(&self, server: &ruma::ServerName) -> bool {
        server == self.server_name
    }

    pub fn alloc_snapshot(&self) -> i64 {
        self.next_snapshot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}
