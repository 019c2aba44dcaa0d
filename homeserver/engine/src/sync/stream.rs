//! Stream position allocation with an in-order visibility watermark.
//!
//! Writers in different rooms persist concurrently, so position 8 may commit
//! before position 7. A reader that saw 8 and moved its token past 7 would miss
//! 7 for ever. Readers therefore only see [`StreamTracker::current`]: the highest
//! position below which every allocated position has completed. Wake-ups for a
//! position are held back until it becomes visible, so no wake-up is lost.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::notifier::WakeTarget;
use crate::storage::StreamPos;

pub struct StreamTracker {
    inner: Mutex<Inner>,
}

struct Inner {
    next: StreamPos,
    current: StreamPos,
    /// Completed positions above `current`, with the wake-ups they carry.
    done: BTreeMap<StreamPos, Vec<WakeTarget>>,
}

impl StreamTracker {
    /// Starts after the highest position already persisted.
    pub fn new(persisted_max: StreamPos) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: persisted_max + 1,
                current: persisted_max,
                done: BTreeMap::new(),
            }),
        }
    }

    pub fn allocate(&self) -> StreamPos {
        let mut inner = self.inner.lock();
        let pos = inner.next;
        inner.next += 1;
        pos
    }

    /// The highest position that readers may see.
    pub fn current(&self) -> StreamPos {
        self.inner.lock().current
    }

    /// Marks `pos` finished (persisted, or abandoned after a failure). Returns the
    /// wake-ups that became due, in position order.
    pub fn complete(&self, pos: StreamPos, wake: Vec<WakeTarget>) -> Vec<WakeTarget> {
        let mut inner = self.inner.lock();
        inner.done.insert(pos, wake);
        let mut due = Vec::new();
        loop {
            let next = inner.current + 1;
            match inner.done.remove(&next) {
                Some(targets) => {
                    inner.current = next;
                    due.extend(targets);
                }
                None => break,
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
