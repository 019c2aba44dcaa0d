//! Wakes exactly the long-polls (and, later, streams) that an update concerns.
//!
//! A waiter registers under its user id, and under the ids of the large rooms it
//! is joined to. A send in a small room wakes each member's key (fan-out on
//! write); a send in a large room wakes one room key that its members' waiters
//! subscribe to (no per-member work on the write path).
//!
//! A user's wake-up also says which of their sync sections changed
//! ([`Sections`]), so the sync journal (`sync/journal.rs`) can tell an
//! incremental sync which store reads it may skip.
//!
//! [`WakeBus`] is the seam for a cross-instance bus: the local notifier is one
//! implementation; a Redis-fed one can publish to every instance.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WakeTarget {
    /// Wakes the user's waiters; any of their sync sections may have changed.
    User(String),
    /// Wakes the user's waiters; of their user-scoped sync sections only
    /// these changed. [`Sections::NONE`]: only room data (timelines, typing,
    /// receipts, presence), which a sync reads from per-room positions.
    Changed(String, Sections),
    /// Wakes the waiters of a large room's members.
    Room(String),
}

impl WakeTarget {
    /// A wake-up for a change in a room the user is in, and nothing else.
    pub fn member(user_id: &str) -> Self {
        Self::Changed(user_id.to_owned(), Sections::NONE)
    }

    /// The user a wake-up is for, if it is for one.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::User(u) | Self::Changed(u, _) => Some(u),
            Self::Room(_) => None,
        }
    }
}

/// The user-scoped parts of a sync response a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sections(pub u8);

impl Sections {
    pub const NONE: Self = Self(0);
    pub const ACCOUNT_DATA: Self = Self(1);
    pub const TO_DEVICE: Self = Self(1 << 1);
    pub const DEVICE_LISTS: Self = Self(1 << 2);
    /// Delivery receipts for events the user sent.
    pub const DELIVERIES: Self = Self(1 << 3);
    /// The user's own room memberships (joins, invites, leaves, forgets).
    pub const MEMBERSHIPS: Self = Self(1 << 4);
    /// The user's unread notification counters.
    pub const COUNTS: Self = Self(1 << 5);
    pub const ALL: Self = Self(u8::MAX);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Publishes wake-ups. Implementations must never block the caller.
pub trait WakeBus: Send + Sync {
    fn publish(&self, targets: &[WakeTarget]);
}

/// The in-process notifier: one key per waiting user and per watched large room.
#[derive(Default)]
pub struct Notifier {
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    users: HashMap<String, Arc<Notify>>,
    rooms: HashMap<String, Arc<Notify>>,
}

impl Notifier {
    /// The handle to wait on for `target`. Callers must call `notified()` and
    /// `enable()` on it *before* checking for new data, then await.
    pub fn subscribe(&self, target: WakeTarget) -> Arc<Notify> {
        let mut keys = self.keys.lock();
        let (map, id) = match target {
            WakeTarget::User(u) | WakeTarget::Changed(u, _) => (&mut keys.users, u),
            WakeTarget::Room(r) => (&mut keys.rooms, r),
        };
        map.entry(id)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Drops keys that no waiter holds any more.
    pub fn gc(&self) {
        let mut keys = self.keys.lock();
        keys.users.retain(|_, n| Arc::strong_count(n) > 1);
        keys.rooms.retain(|_, n| Arc::strong_count(n) > 1);
    }

    /// Wakes every waiter: they re-read the store. For when wake-ups from
    /// other instances may have been missed (Redis unreachable).
    pub fn wake_all(&self) {
        let keys = self.keys.lock();
        for notify in keys.users.values().chain(keys.rooms.values()) {
            notify.notify_waiters();
        }
    }

    pub fn waiting_keys(&self) -> usize {
        let keys = self.keys.lock();
        keys.users.len() + keys.rooms.len()
    }
}

impl WakeBus for Notifier {
    fn publish(&self, targets: &[WakeTarget]) {
        let keys = self.keys.lock();
        for target in targets {
            let notify = match target {
                WakeTarget::User(u) | WakeTarget::Changed(u, _) => keys.users.get(u),
                WakeTarget::Room(r) => keys.rooms.get(r),
            };
            if let Some(notify) = notify {
                notify.notify_waiters();
            }
        }
    }
}
