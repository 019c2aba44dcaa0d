//! Duplicate suppression. The Push Gateway API asks gateways to use
//! `event_id` to avoid alerting twice when a homeserver retries a request
//! (for example after this gateway answered 502 for one of several devices).
//! Remembered: (event id, app id, pushkey) triples delivered recently.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a delivery is remembered.
const TTL: Duration = Duration::from_secs(15 * 60);
/// Most deliveries remembered; the oldest are forgotten first.
const CAPACITY: usize = 200_000;

/// Last delivery time per key, and keys in the order they were recorded.
type Entries = (HashMap<String, Instant>, VecDeque<(String, Instant)>);

#[derive(Default)]
pub struct Dedup {
    inner: Mutex<Entries>,
}

fn key(event_id: &str, app_id: &str, pushkey: &str) -> String {
    format!("{event_id}\u{0}{app_id}\u{0}{pushkey}")
}

impl Dedup {
    /// Whether this event was already delivered to this device.
    pub fn seen(&self, event_id: &str, app_id: &str, pushkey: &str) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .get(&key(event_id, app_id, pushkey))
            .is_some_and(|at| at.elapsed() < TTL)
    }

    /// Records a delivery.
    pub fn record(&self, event_id: &str, app_id: &str, pushkey: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        let now = Instant::now();
        while let Some((old, at)) = order.front() {
            if order.len() < CAPACITY && at.elapsed() < TTL {
                break;
            }
            // Only forget the entry if it was not recorded again since.
            if map.get(old) == Some(at) {
                map.remove(old);
            }
            order.pop_front();
        }
        let k = key(event_id, app_id, pushkey);
        map.insert(k.clone(), now);
        order.push_back((k, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_device() {
        let d = Dedup::default();
        assert!(!d.seen("$e", "a", "k"));
        d.record("$e", "a", "k");
        assert!(d.seen("$e", "a", "k"));
        assert!(!d.seen("$e", "a", "other"));
        assert!(!d.seen("$f", "a", "k"));
    }
}
