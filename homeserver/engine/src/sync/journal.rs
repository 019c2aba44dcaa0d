//! The sync journal: at which stream position each user's user-scoped sync
//! sections last changed, so an incremental sync skips the store reads of
//! sections nothing touched since its token.
//!
//! [`crate::core::Core::complete_in`] marks the sections a position's wake-ups
//! name ([`WakeTarget::User`] marks all of them) *before* the position becomes
//! visible: a sync that sees a position also sees its marks. A sync whose token
//! is below the journal's floor (positions from before start-up, or marks
//! dropped to bound memory) reads the store as if everything changed.
//!
//! It holds only this process's completions. In multi-instance mode another
//! instance's write reaches it only as a wake-up that Redis may have lost, so
//! there the journal answers "changed" for everything: correctness never
//! depends on the bus.
//!
//! One-time-key counts have no stream position (claims do not take one); they
//! are cached by value instead, see [`KeyCountCache`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;

use super::notifier::{Sections, WakeTarget};
use crate::{
    push::UserCounts,
    storage::{MembershipRecord, StreamPos},
};

/// Users with marks before the journal forgets them all and raises its floor.
const MAX_USERS: usize = 200_000;

/// Per user, the last position at which each section changed.
pub struct SyncJournal {
    inner: Mutex<Inner>,
    /// Whether this process sees every write (a single instance).
    authoritative: bool,
}

struct Inner {
    /// Tokens below this may predate a forgotten mark: everything changed.
    floor: StreamPos,
    /// The highest position marked so far.
    highest: StreamPos,
    marks: HashMap<String, [StreamPos; SECTION_COUNT]>,
    memberships: Kept<Vec<MembershipRecord>>,
    counts: Kept<UserCounts>,
}

/// Values read from the store per user, each with the visible position when
/// its read began: valid until a mark of its section above that position.
struct Kept<T> {
    section: Sections,
    values: HashMap<String, (StreamPos, Arc<T>)>,
}

impl<T> Kept<T> {
    fn new(section: Sections) -> Self {
        Self {
            section,
            values: HashMap::new(),
        }
    }
}

const SECTION_COUNT: usize = 6;

/// Users with a kept value of one kind before the journal drops them all.
const MAX_KEPT: usize = 50_000;

fn bits(sections: Sections) -> impl Iterator<Item = usize> {
    (0..SECTION_COUNT).filter(move |i| sections.0 & (1 << i) != 0)
}

impl SyncJournal {
    /// A journal for positions above `start`; `authoritative` on a single instance.
    pub fn new(start: StreamPos, authoritative: bool) -> Self {
        Self {
            inner: Mutex::new(Inner {
                floor: start,
                highest: start,
                marks: HashMap::new(),
                memberships: Kept::new(Sections::MEMBERSHIPS),
                counts: Kept::new(Sections::COUNTS),
            }),
            authoritative,
        }
    }

    /// Records the sections the wake-ups of `pos` change.
    pub fn record(&self, pos: StreamPos, wake: &[WakeTarget]) {
        let mut changed = wake.iter().filter_map(|t| match t {
            WakeTarget::User(u) => Some((u, Sections::ALL)),
            WakeTarget::Changed(u, s) if *s != Sections::NONE => Some((u, *s)),
            _ => None,
        });
        let Some(first) = changed.next() else { return };
        let mut inner = self.inner.lock();
        for (user, sections) in std::iter::once(first).chain(changed) {
            inner.mark(user, sections, pos);
        }
    }

    /// Marks `sections` of each of `users` changed at `pos`, for a change that
    /// wakes them some other way (a large room's room-level wake-up).
    pub fn mark_all<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        sections: Sections,
        pos: StreamPos,
    ) {
        let mut inner = self.inner.lock();
        for user in users {
            inner.mark(user, sections, pos);
        }
    }

    /// For a change at `pos` whose users are unknown: every token below `pos`
    /// now reads everything from the store.
    pub fn forget_before(&self, pos: StreamPos) {
        let mut inner = self.inner.lock();
        inner.floor = inner.floor.max(pos);
        inner.highest = inner.highest.max(pos);
    }

    /// The user's memberships kept by [`Self::keep_memberships`], unless one
    /// may have changed since they were read.
    pub fn memberships(&self, user_id: &str) -> Option<Arc<Vec<MembershipRecord>>> {
        self.kept(user_id, |i| &i.memberships)
    }

    /// Keeps memberships read from the store by a read that began when
    /// `read_at` was the visible position.
    pub fn keep_memberships(
        &self,
        user_id: &str,
        read_at: StreamPos,
        memberships: Arc<Vec<MembershipRecord>>,
    ) {
        self.keep(user_id, read_at, memberships, |i| &mut i.memberships)
    }

    /// The user's notification counters kept by [`Self::keep_counts`], unless
    /// they may have changed since they were read.
    pub fn counts(&self, user_id: &str) -> Option<Arc<UserCounts>> {
        self.kept(user_id, |i| &i.counts)
    }

    /// Keeps counters read from the store by a read that began at `read_at`.
    pub fn keep_counts(&self, user_id: &str, read_at: StreamPos, counts: Arc<UserCounts>) {
        self.keep(user_id, read_at, counts, |i| &mut i.counts)
    }

    fn kept<T>(&self, user_id: &str, which: impl Fn(&Inner) -> &Kept<T>) -> Option<Arc<T>> {
        if !self.authoritative {
            return None;
        }
        let inner = self.inner.lock();
        let kept = which(&inner);
        let (read_at, value) = kept.values.get(user_id)?;
        let changed = *read_at < inner.floor
            || inner
                .marks
                .get(user_id)
                .is_some_and(|m| bits(kept.section).any(|i| m[i] > *read_at));
        (!changed).then(|| value.clone())
    }

    fn keep<T>(
        &self,
        user_id: &str,
        read_at: StreamPos,
        value: Arc<T>,
        which: impl Fn(&mut Inner) -> &mut Kept<T>,
    ) {
        if !self.authoritative {
            return;
        }
        let mut inner = self.inner.lock();
        let kept = which(&mut inner);
        if kept.values.len() >= MAX_KEPT && !kept.values.contains_key(user_id) {
            kept.values.clear();
        }
        kept.values.insert(user_id.to_owned(), (read_at, value));
    }

    /// Whether any of `sections` of `user_id` may have changed after `since`.
    pub fn changed(&self, user_id: &str, sections: Sections, since: StreamPos) -> bool {
        if !self.authoritative {
            return true;
        }
        let inner = self.inner.lock();
        if since < inner.floor {
            return true;
        }
        inner
            .marks
            .get(user_id)
            .is_some_and(|marks| bits(sections).any(|i| marks[i] > since))
    }
}

impl Inner {
    fn mark(&mut self, user: &str, sections: Sections, pos: StreamPos) {
        if self.marks.len() >= MAX_USERS && !self.marks.contains_key(user) {
            // Forget everything rather than track age: syncs from before
            // now read the store once, then the journal serves them again.
            self.marks.clear();
            self.memberships.values.clear();
            self.counts.values.clear();
            self.floor = self.highest;
        }
        self.highest = self.highest.max(pos);
        let marks = match self.marks.get_mut(user) {
            Some(m) => m,
            None => self
                .marks
                .entry(user.to_owned())
                .or_insert([StreamPos::MIN; SECTION_COUNT]),
        };
        for i in bits(sections) {
            marks[i] = marks[i].max(pos);
        }
    }
}

/// One-time-key counts and unused fallback key types per device, as a sync
/// reports them. Uploads and claims invalidate a user's entries; a count read
/// from the store is kept only if no invalidation happened while it was read.
/// Single instance only, like the journal: a claim on another instance would
/// leave a stale count here.
pub struct KeyCountCache {
    entries: Mutex<HashMap<String, BTreeMap<String, KeyCounts>>>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
    enabled: bool,
}

/// Unclaimed one-time keys per algorithm and unused fallback key algorithms.
pub type KeyCounts = (BTreeMap<String, u64>, Vec<String>);

/// Devices with cached counts before the cache starts over.
const MAX_CACHED_USERS: usize = 200_000;

impl KeyCountCache {
    pub fn new(enabled: bool) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            enabled,
        }
    }

    /// The cached counts of a device, or the epoch to pass to [`Self::put`]
    /// after reading them from the store.
    pub fn get(&self, user_id: &str, device_id: &str) -> Result<KeyCounts, u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.enabled {
            if let Some(c) = self
                .entries
                .lock()
                .get(user_id)
                .and_then(|d| d.get(device_id))
            {
                return Ok(c.clone());
            }
        }
        Err(epoch)
    }

    /// Keeps counts read from the store at `epoch`, unless they may be stale.
    pub fn put(&self, user_id: &str, device_id: &str, epoch: u64, counts: &KeyCounts) {
        if !self.enabled {
            return;
        }
        let mut entries = self.entries.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= MAX_CACHED_USERS && !entries.contains_key(user_id) {
            entries.clear();
        }
        entries
            .entry(user_id.to_owned())
            .or_default()
            .insert(device_id.to_owned(), counts.clone());
    }

    /// Forgets a user's counts: keys were uploaded, claimed or deleted.
    pub fn invalidate(&self, user_id: &str) {
        let mut entries = self.entries.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> WakeTarget {
        WakeTarget::User(u.into())
    }

    #[test]
    fn marks_only_the_named_sections_after_the_floor() {
        let j = SyncJournal::new(10, true);
        // Below the floor everything may have changed.
        assert!(j.changed("@a:x", Sections::TO_DEVICE, 9));
        assert!(!j.changed("@a:x", Sections::TO_DEVICE, 10));
        j.record(
            12,
            &[
                WakeTarget::Changed("@a:x".into(), Sections::TO_DEVICE),
                WakeTarget::member("@b:x"),
                WakeTarget::Room("!r:x".into()),
            ],
        );
        assert!(j.changed("@a:x", Sections::TO_DEVICE, 11));
        assert!(!j.changed("@a:x", Sections::TO_DEVICE, 12));
        assert!(!j.changed("@a:x", Sections::ACCOUNT_DATA, 11));
        assert!(!j.changed("@b:x", Sections::ALL, 10));
        j.record(13, &[user("@b:x")]);
        assert!(j.changed("@b:x", Sections::DEVICE_LISTS, 12));
        assert!(j.changed("@b:x", Sections::ACCOUNT_DATA, 12));
        // A later completion of an earlier position never lowers a mark.
        j.record(11, &[user("@b:x")]);
        assert!(j.changed("@b:x", Sections::DEVICE_LISTS, 12));
        j.mark_all(&["@c:x".to_owned()], Sections::DEVICE_LISTS, 14);
        assert!(j.changed("@c:x", Sections::DEVICE_LISTS, 13));
        assert!(!j.changed("@c:x", Sections::TO_DEVICE, 13));
        j.forget_before(20);
        assert!(j.changed("@nobody:x", Sections::TO_DEVICE, 19));
        assert!(!j.changed("@nobody:x", Sections::TO_DEVICE, 20));
    }

    #[test]
    fn kept_memberships_last_until_a_later_membership_mark() {
        let j = SyncJournal::new(10, true);
        let list = Arc::new(vec![MembershipRecord {
            room_id: "!r:x".into(),
            user_id: "@a:x".into(),
            membership: "join".into(),
            event_id: "$e".into(),
            stream_pos: 8,
        }]);
        // Read before the floor: never served.
        j.keep_memberships("@a:x", 9, list.clone());
        assert!(j.memberships("@a:x").is_none());
        j.keep_memberships("@a:x", 12, list.clone());
        j.record(11, &[WakeTarget::User("@a:x".into())]);
        // A change the read already saw does not invalidate it.
        assert_eq!(j.memberships("@a:x"), Some(list.clone()));
        j.record(
            13,
            &[WakeTarget::Changed("@a:x".into(), Sections::TO_DEVICE)],
        );
        assert!(j.memberships("@a:x").is_some());
        j.record(
            14,
            &[WakeTarget::Changed("@a:x".into(), Sections::MEMBERSHIPS)],
        );
        assert!(j.memberships("@a:x").is_none());
    }

    #[test]
    fn not_authoritative_means_always_changed() {
        let j = SyncJournal::new(10, false);
        assert!(j.changed("@a:x", Sections::TO_DEVICE, 100));
    }

    #[test]
    fn forgetting_raises_the_floor_to_the_highest_mark() {
        let j = SyncJournal::new(0, true);
        for i in 0..MAX_USERS {
            j.record(i as StreamPos + 1, &[user(&format!("@u{i}:x"))]);
        }
        let top = MAX_USERS as StreamPos;
        j.record(top + 1, &[user("@new:x")]);
        // Forgotten users count as changed for tokens below the old highest...
        assert!(j.changed("@u0:x", Sections::TO_DEVICE, top - 1));
        // ...but not after it.
        assert!(!j.changed("@u0:x", Sections::TO_DEVICE, top));
        assert!(j.changed("@new:x", Sections::TO_DEVICE, top));
    }

    #[test]
    fn key_counts_read_across_an_invalidation_are_not_kept() {
        let c = KeyCountCache::new(true);
        let counts: KeyCounts = (BTreeMap::from([("signed_curve25519".into(), 5)]), vec![]);
        let Err(epoch) = c.get("@a:x", "D") else {
            panic!("empty cache hit")
        };
        c.invalidate("@b:x");
        c.put("@a:x", "D", epoch, &counts);
        let Err(epoch) = c.get("@a:x", "D") else {
            panic!("stale counts kept")
        };
        c.put("@a:x", "D", epoch, &counts);
        assert_eq!(c.get("@a:x", "D"), Ok(counts));
        c.invalidate("@a:x");
        assert!(c.get("@a:x", "D").is_err());
    }
}
