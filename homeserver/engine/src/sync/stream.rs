//! Stream position allocation with an in-order visibility watermark.
//!
//! Writers in different rooms persist concurrently, so position 8 may commit
//! before position 7. A reader that saw 8 and moved its token past 7 would miss
//! 7 for ever. Readers therefore only see [`StreamTracker::current`]: the highest
//! position below which every allocated position has completed. Wake-ups for a
//! position are held back until it becomes visible, so no wake-up is lost.
//!
//! A position whose writer never reports back (its request future was dropped
//! when the client disconnected mid-write) would hold the watermark, and with
//! it every later wake-up on the server, for ever. So a position still open
//! [`ABANDON_AFTER`] after it was allocated is treated as abandoned: the
//! watermark moves past it, loudly. Writers finish or fail long before that
//! (SQLite's busy timeout is 10 s), so only a leaked position is ever skipped.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::notifier::WakeTarget;
use crate::storage::StreamPos;

/// How long an allocated position may stay open before it counts as leaked.
pub const ABANDON_AFTER: Duration = Duration::from_secs(30);

pub struct StreamTracker {
    inner: Mutex<Inner>,
    abandon_after: Duration,
    /// The watermark, for readers waiting for their own writes to show.
    visible: watch::Sender<StreamPos>,
}

struct Inner {
    next: StreamPos,
    current: StreamPos,
    /// Completed positions above `current`, with the wake-ups they carry.
    done: BTreeMap<StreamPos, Vec<WakeTarget>>,
    /// Allocated, not yet completed positions, with when they were allocated.
    open: BTreeMap<StreamPos, Instant>,
}

impl StreamTracker {
    /// Starts after the highest position already persisted.
    pub fn new(persisted_max: StreamPos) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: persisted_max + 1,
                current: persisted_max,
                done: BTreeMap::new(),
                open: BTreeMap::new(),
            }),
            abandon_after: ABANDON_AFTER,
            visible: watch::Sender::new(persisted_max),
        }
    }

    pub fn allocate(&self) -> StreamPos {
        let mut inner = self.inner.lock();
        let pos = inner.next;
        inner.next += 1;
        inner.open.insert(pos, Instant::now());
        pos
    }

    /// The highest position that readers may see.
    pub fn current(&self) -> StreamPos {
        self.inner.lock().current
    }

    /// The highest position handed out so far, completed or not.
    pub fn allocated(&self) -> StreamPos {
        self.inner.lock().next - 1
    }

    /// Waits until every position up to `pos` is visible, or `max` passes.
    /// Returns the watermark then. A reader calls this with [`Self::allocated`]
    /// taken when its request arrived, so any write acknowledged before the
    /// request (by anyone) is in its answer.
    pub async fn wait_visible(&self, pos: StreamPos, max: Duration) -> StreamPos {
        let mut rx = self.visible.subscribe();
        // `wait_for` answers with a guard on the channel's value: it must be
        // gone before `current()` locks the tracker, which `complete` holds
        // while it publishes (a lock-order inversion otherwise).
        let reached = tokio::time::timeout(max, rx.wait_for(|v| *v >= pos))
            .await
            .is_ok();
        if !reached {
            tracing::debug!(pos, "read went ahead before earlier writes became visible");
        }
        self.current()
    }

    /// Marks `pos` finished (persisted, or abandoned after a failure). Returns the
    /// wake-ups that became due, in position order.
    pub fn complete(&self, pos: StreamPos, wake: Vec<WakeTarget>) -> Vec<WakeTarget> {
        let mut inner = self.inner.lock();
        inner.open.remove(&pos);
        if pos <= inner.current {
            // Completed after it was given up as abandoned: readers have moved
            // past it, so incremental syncs will not carry it (history will).
            tracing::warn!(pos, "a stream position completed after it was abandoned");
            return Vec::new();
        }
        inner.done.insert(pos, wake);
        let before = inner.current;
        let mut due = Vec::new();
        loop {
            let next = inner.current + 1;
            if let Some(targets) = inner.done.remove(&next) {
                inner.current = next;
                due.extend(targets);
                continue;
            }
            match inner.open.get(&next) {
                Some(at) if at.elapsed() >= self.abandon_after => {
                    tracing::warn!(
                        pos = next,
                        "stream position abandoned by its writer; moving past it"
                    );
                    inner.open.remove(&next);
                    inner.current = next;
                }
                _ => break,
            }
        }
        let moved = (inner.current != before).then_some(inner.current);
        drop(inner);
        // Published outside the tracker's lock: readers of the channel never
        // wait on the tracker while holding it, nor we on them.
        if let Some(current) = moved {
            self.visible.send_if_modified(|v| {
                let newer = current > *v;
                if newer {
                    *v = current;
                }
                newer
            });
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_position_stops_holding_the_watermark() {
        let mut t = StreamTracker::new(0);
        t.abandon_after = Duration::ZERO;
        let leaked = t.allocate();
        let b = t.allocate();
        let due = t.complete(b, vec![WakeTarget::User("@b:x".into())]);
        assert_eq!(t.current(), b);
        assert_eq!(due, vec![WakeTarget::User("@b:x".into())]);
        // A late completion neither moves the watermark back nor wakes anyone.
        assert!(t
            .complete(leaked, vec![WakeTarget::User("@l:x".into())])
            .is_empty());
        assert_eq!(t.current(), b);
    }

    #[test]
    fn open_positions_hold_the_watermark_until_abandoned() {
        let t = StreamTracker::new(0);
        let _slow = t.allocate();
        let b = t.allocate();
        assert!(t.complete(b, Vec::new()).is_empty());
        assert_eq!(t.current(), 0);
    }

    #[tokio::test]
    async fn a_reader_waits_for_writes_allocated_before_it() {
        let t = std::sync::Arc::new(StreamTracker::new(0));
        let slow = t.allocate();
        let fast = t.allocate();
        t.complete(fast, Vec::new());
        let floor = t.allocated();
        let writer = {
            let t = t.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                t.complete(slow, Vec::new());
            })
        };
        assert_eq!(t.wait_visible(floor, Duration::from_secs(5)).await, fast);
        writer.await.ok();
        // A write that never finishes only delays the reader by `max`.
        let stuck = t.allocate();
        assert_eq!(t.wait_visible(stuck, Duration::from_millis(10)).await, fast);
    }

    #[test]
    fn visibility_waits_for_gaps() {
        let t = StreamTracker::new(10);
        let a = t.allocate();
        let b = t.allocate();
        assert_eq!((a, b), (11, 12));
        let due = t.complete(b, vec![WakeTarget::User("@b:x".into())]);
        assert!(due.is_empty());
        assert_eq!(t.current(), 10);
        let due = t.complete(a, vec![WakeTarget::User("@a:x".into())]);
        assert_eq!(t.current(), 12);
        assert_eq!(
            due,
            vec![
                WakeTarget::User("@a:x".into()),
                WakeTarget::User("@b:x".into())
            ]
        );
    }
}
