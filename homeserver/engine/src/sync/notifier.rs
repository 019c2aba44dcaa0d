//! Wakes exactly the long-polls (and, later, streams) that an update concerns.
//!
//! A waiter registers under its user id, and under the ids of the large rooms it
//! is joined to. A send in a small room wakes each member's key (fan-out on
//! write); a send in a large room wakes one room key that its members' waiters
//! subscribe to (no per-member work on the write path).
//!
//! [`WakeBus`] is the seam for a cross-instance bus: the local notifier is one
//! implementation; a Redis-fed one can publish to every instance.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WakeTarget {
    User(String),
    Room(String),
}

/// Publishes wake-ups. Implementations must never block the caller.
pub trait WakeBus: Send + Sync {
    fn publish(&self, targets: &[WakeTarget]);
}

/// The in-process notifier.
#[derive(Default)]
pub struct Notifier {
    keys: Mutex<HashMap<WakeTarget, Arc<Notify>>>,
}

impl Notifier {
    /// The handle to wait on for `target`. Callers must call `notified()` and
    /// `enable()` on it *before* checking for new data, then await.
    pub fn subscribe(&self, target: WakeTarget) -> Arc<Notify> {
        self.keys
            .lock()
            .entry(target)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Drops keys that no waiter holds any more.
    pub fn gc(&self) {
        self.keys.lock().retain(|_, n| Arc::strong_count(n) > 1);
    }

    /// Wakes every waiter: they re-read the store. For when wake-ups from
    /// other instances may have been missed (Redis unreachable).
    pub fn wake_all(&self) {
        for notify in self.keys.lock().values() {
            notify.notify_waiters();
        }
    }

    pub fn waiting_keys(&self) -> usize {
        self.keys.lock().len()
    }
}

impl WakeBus for Notifier {
    fn publish(&self, targets: &[WakeTarget]) {
        let keys = self.keys.lock();
        for target in targets {
            if let Some(notify) = keys.get(target) {
                notify.notify_waiters();
            }
        }
    }
}
