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
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::notifier::WakeTarget;
use crate::storage::StreamPos;

/// How long an allocated position may stay open before it counts as leaked.
pub const ABANDON_AFTER: Duration = Duration::from_secs(30);

/// How long a read waits for writes acknowledged before it to become visible.
pub const READ_AFTER_WRITE_WAIT: Duration = Duration::from_secs(2);

pub struct StreamTracker {
    inner: Mutex<Inner>,
    abandon_after: Duration,
    /// The watermark, for readers waiting for their own writes to show.
    visible: watch::Sender<StreamPos>,
    /// Positions this instance hands out are `offset` modulo `stride`: 1 and
    /// 0 on a single instance; the instance count limit and the instance id
    /// in multi-instance mode, so instances never hand out the same position.
    stride: StreamPos,
    offset: StreamPos,
}

struct Inner {
    /// The highest position handed out or promised: every position this
    /// instance hands out from now on is above it.
    last: StreamPos,
    /// The visibility watermark readers see.
    current: StreamPos,
    /// Completed positions above `current`, with the wake-ups they carry
    /// (this instance's, and other instances' in multi-instance mode).
    done: BTreeMap<StreamPos, Vec<WakeTarget>>,
    /// Allocated, not yet completed positions, with when they were allocated.
    open: BTreeMap<StreamPos, Instant>,
    /// Other instances' floors (multi-instance mode): each promises that
    /// everything it will ever persist at or below its floor is persisted.
    remote: HashMap<u16, StreamPos>,
}

impl Inner {
    /// This instance's own floor: below its oldest open position, else all
    /// it has handed out or promised.
    fn local_floor(&self) -> StreamPos {
        match self.open.first_key_value() {
            Some((pos, _)) => pos - 1,
            None => self.last,
        }
    }

    /// Moves the watermark to the lowest floor of all instances (never back),
    /// and returns the wake-ups that became due.
    fn advance(&mut self, abandon_after: Duration) -> Vec<WakeTarget> {
        // Positions leaked by their writers stop holding the watermark.
        while let Some((&pos, at)) = self.open.first_key_value() {
            if at.elapsed() < abandon_after {
                break;
            }
            tracing::warn!(
                pos,
                "stream position abandoned by its writer; moving past it"
            );
            self.open.remove(&pos);
        }
        let floor = self
            .remote
            .values()
            .copied()
            .fold(self.local_floor(), StreamPos::min);
        let mut due = Vec::new();
        if floor > self.current {
            self.current = floor;
            let later = self.done.split_off(&(floor + 1));
            for (_, targets) in std::mem::replace(&mut self.done, later) {
                due.extend(targets);
            }
        }
        due
    }
}

/// What changed when a position completed or a floor moved.
pub struct Advance {
    /// Wake-ups that became visible, in position order.
    pub due: Vec<WakeTarget>,
    /// This instance's floor afterwards (what it tells other instances).
    pub floor: StreamPos,
}

impl StreamTracker {
    /// Starts after the highest position already persisted.
    pub fn new(persisted_max: StreamPos) -> Self {
        Self::with_stride(persisted_max, 1, 0)
    }

    /// A tracker for one of several instances: it hands out positions
    /// congruent to `offset` modulo `stride`, all above `start`.
    pub fn with_stride(start: StreamPos, stride: StreamPos, offset: StreamPos) -> Self {
        Self {
            inner: Mutex::new(Inner {
                last: start,
                current: start,
                done: BTreeMap::new(),
                open: BTreeMap::new(),
                remote: HashMap::new(),
            }),
            abandon_after: ABANDON_AFTER,
            visible: watch::Sender::new(start),
            stride: stride.max(1),
            offset,
        }
    }

    pub fn allocate(&self) -> StreamPos {
        let mut inner = self.inner.lock();
        let mut pos = inner.last + 1;
        if self.stride > 1 {
            // The next position above `last` that is this instance's.
            pos += (self.offset - pos).rem_euclid(self.stride);
        }
        inner.last = pos;
        inner.open.insert(pos, Instant::now());
        pos
    }

    /// The highest position that readers may see.
    pub fn current(&self) -> StreamPos {
        self.inner.lock().current
    }

    /// The highest position handed out so far, completed or not (on several
    /// instances, also the highest floor heard from the others).
    pub fn allocated(&self) -> StreamPos {
        let inner = self.inner.lock();
        inner
            .remote
            .values()
            .copied()
            .fold(inner.last, StreamPos::max)
    }

    /// This instance's floor: what it tells the other instances.
    pub fn local_floor(&self) -> StreamPos {
        self.inner.lock().local_floor()
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

    /// The watermark a reader should answer from: it waits (at most
    /// [`READ_AFTER_WRITE_WAIT`]) until every write acknowledged before the
    /// call, by anyone, is visible. `/messages` and `/context` read through
    /// this, so a client that paginates right after its sends completes sees
    /// them all, whatever other position is still in flight.
    pub async fn settled(&self) -> StreamPos {
        self.wait_visible(self.allocated(), READ_AFTER_WRITE_WAIT)
            .await
    }

    /// Marks `pos` finished (persisted, or abandoned after a failure). Returns the
    /// wake-ups that became due, in position order.
    pub fn complete(&self, pos: StreamPos, wake: Vec<WakeTarget>) -> Vec<WakeTarget> {
        self.complete_with_floor(pos, wake).due
    }

    /// [`Self::complete`], also answering this instance's floor afterwards.
    pub fn complete_with_floor(&self, pos: StreamPos, wake: Vec<WakeTarget>) -> Advance {
        self.update(|inner| {
            inner.open.remove(&pos);
            if pos <= inner.current {
                // Completed after it was given up as abandoned: readers have moved
                // past it, so incremental syncs will not carry it (history will).
                tracing::warn!(pos, "a stream position completed after it was abandoned");
                return;
            }
            if !wake.is_empty() {
                inner.done.entry(pos).or_default().extend(wake);
            }
        })
    }

    /// Records another instance's floor and the wake-ups it carries for
    /// positions up to it. An idle instance raises its own promise to match
    /// (its next position is above it anyway), so one busy instance never
    /// waits for an idle one to catch up.
    pub fn remote_update(
        &self,
        instance: u16,
        floor: StreamPos,
        wakes: Vec<(StreamPos, Vec<WakeTarget>)>,
    ) -> Advance {
        self.update(|inner| {
            let known = inner.remote.entry(instance).or_insert(floor);
            *known = (*known).max(floor);
            inner.last = inner.last.max(floor);
            for (pos, targets) in wakes {
                if pos > inner.current && !targets.is_empty() {
                    inner.done.entry(pos).or_default().extend(targets);
                }
            }
        })
    }

    /// Stops waiting for an instance that has stopped or died.
    pub fn forget_instance(&self, instance: u16) -> Advance {
        self.update(|inner| {
            inner.remote.remove(&instance);
        })
    }

    /// The instances this one currently waits for.
    pub fn known_instances(&self) -> Vec<u16> {
        self.inner.lock().remote.keys().copied().collect()
    }

    fn update(&self, change: impl FnOnce(&mut Inner)) -> Advance {
        let mut inner = self.inner.lock();
        let before = inner.current;
        change(&mut inner);
        let due = inner.advance(self.abandon_after);
        let floor = inner.local_floor();
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
        Advance { due, floor }
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
    fn instances_see_each_others_positions_only_when_both_are_persisted() {
        let user = |u: &str| vec![WakeTarget::User(u.into())];
        let a = StreamTracker::with_stride(100, 4, 1);
        let b = StreamTracker::with_stride(100, 4, 2);
        a.remote_update(2, 100, Vec::new());
        b.remote_update(1, 100, Vec::new());
        let (pa, pb) = (a.allocate(), b.allocate());
        assert_eq!((pa, pb), (101, 102));
        // B's write is done, but A's earlier one is still open: nobody sees 102.
        let done_b = b.complete_with_floor(pb, user("@b:x"));
        assert_eq!(done_b.floor, 102);
        assert!(done_b.due.is_empty());
        assert_eq!(b.current(), 100);
        let heard = a.remote_update(2, done_b.floor, vec![(pb, user("@b:x"))]);
        assert!(heard.due.is_empty());
        assert_eq!(a.current(), 100);
        // A finishes: both positions are visible on A, with both wake-ups.
        let done_a = a.complete_with_floor(pa, user("@a:x"));
        assert_eq!(a.current(), 102);
        assert_eq!(done_a.due, [user("@a:x"), user("@b:x")].concat());
        // ...and on B once it hears A's floor: B's own wake-up was held too.
        let heard = b.remote_update(1, done_a.floor, vec![(pa, user("@a:x"))]);
        assert_eq!(b.current(), 102);
        assert_eq!(heard.due, [user("@a:x"), user("@b:x")].concat());
        // A's next position is its own and above everything it has heard of.
        assert_eq!(a.allocate(), 105);
        // An idle instance follows a busy one without being asked.
        assert_eq!(b.remote_update(1, 105, Vec::new()).floor, 105);
        // A dead instance stops holding the watermark.
        let c = StreamTracker::with_stride(200, 4, 3);
        c.remote_update(1, 150, Vec::new());
        assert_eq!(c.current(), 200);
        c.allocate();
        assert_eq!(c.forget_instance(1).floor, 202);
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
