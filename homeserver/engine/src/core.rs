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
        journal::{KeyCountCache, SyncJournal},
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
    /// Which user-scoped sync sections changed at which position.
    pub journal: SyncJournal,
    /// One-time-key counts as /sync reports them.
    pub key_counts: KeyCountCache,
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
    /// The other instances of a multi-instance deployment (`cluster/`).
    pub cluster: Option<Arc<crate::cluster::Link>>,
    /// Redis commands and the notes channel (multi-instance mode), for the
    /// services that share ephemeral state (docs/scale-out.md).
    pub redis: Option<crate::cluster::Redis>,
    /// Snapshot ids step by this (the instance count limit in multi-instance
    /// mode, so instances never allocate the same id).
    pub snapshot_stride: i64,
}

impl Core {
    /// Marks a stream position finished and publishes the wake-ups that became due.
    pub fn complete(&self, pos: i64, wake: Vec<WakeTarget>) {
        self.complete_in(pos, wake, None);
    }

    /// [`Self::complete`] for a position that stored an event of `room`: other
    /// instances refresh their copy of the room before they next use it.
    pub fn complete_in(&self, pos: i64, wake: Vec<WakeTarget>, room: Option<&str>) {
        self.journal.record(pos, &wake);
        let Some(link) = &self.cluster else {
            let due = self.stream.complete(pos, wake);
            self.wake(&due);
            return;
        };
        let remote = (!wake.is_empty()).then(|| (pos, wake.clone()));
        let advance = self.stream.complete_with_floor(pos, wake);
        self.wake(&advance.due);
        link.announce(advance.floor, remote, room.map(str::to_owned));
    }

    /// [`Self::complete`] for a change every instance learns on its own (a
    /// note on the notes channel): the wake-ups stay on this instance and the
    /// others only hear its floor.
    pub fn complete_local(&self, pos: i64, wake: Vec<WakeTarget>) {
        let Some(link) = &self.cluster else {
            return self.complete(pos, wake);
        };
        self.journal.record(pos, &wake);
        let advance = self.stream.complete_with_floor(pos, wake);
        self.wake(&advance.due);
        link.announce(advance.floor, None, None);
    }

    /// Wakes this instance's waiters for `due`.
    pub fn wake(&self, due: &[WakeTarget]) {
        if !due.is_empty() {
            self.bus.publish(due);
        }
    }

    pub fn is_local(&self, server: &ruma::ServerName) -> bool {
        server == self.server_name
    }

    pub fn alloc_snapshot(&self) -> i64 {
        self.next_snapshot
            .fetch_add(self.snapshot_stride, std::sync::atomic::Ordering::Relaxed)
    }
}
