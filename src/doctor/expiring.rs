//! A bounded map whose entries expire: the in-memory session store and the WeChat replay
//! memory both keep one. It owns only its entries and the sweeper task that drops expired
//! ones; it knows nothing of sessions, signatures or Redis.
//!
//! Both bounds matter: the capacity caps memory however many users write (the least
//! recently used entry makes room), and the sweeper frees expired entries even when no one
//! asks for them again, so patients' messages do not linger in memory past their TTL.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
// Tokio's clock rather than std's, so that tests with paused time drive expiry.
use tokio::time::Instant;

struct Entry<V> {
    value: V,
    expires: Instant,
    /// This entry's place in `by_use`.
    used: u64,
    /// This entry's place in `by_expiry` (the tick makes equal instants distinct).
    expiry_slot: (Instant, u64),
}

/// An LRU map with a deadline per entry. Every operation is O(log n); sweeping costs
/// O(log n) per expired entry, never a scan of the live ones.
pub struct ExpiringLru<K, V> {
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    /// Keys by last use, oldest first.
    by_use: BTreeMap<u64, K>,
    /// Keys by deadline, soonest first.
    by_expiry: BTreeMap<(Instant, u64), K>,
    tick: u64,
}

impl<K: Clone + Eq + Hash, V> ExpiringLru<K, V> {
    /// A map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        ExpiringLru {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            by_expiry: BTreeMap::new(),
            tick: 0,
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The live value of `key`, which counts as a use; an expired one is dropped here.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        let expired = self.entries.get(key)?.expires <= now;
        if expired {
            self.remove(key);
            return None;
        }
        let tick = self.next_tick();
        let entry = self.entries.get_mut(key)?;
        self.by_use.remove(&entry.used);
        entry.used = tick;
        self.by_use.insert(tick, key.clone());
        Some(&entry.value)
    }

    /// Whether `key` holds a live value, without counting as a use.
    pub fn contains_live(&self, key: &K, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|e| e.expires > now)
    }

    /// Stores `value` until `expires`, replacing any previous value, and returns how many
    /// entries were evicted to stay within capacity together with the deadline of the
    /// latest of them (callers that need to know whether a live entry was lost compare it
    /// with the clock).
    pub fn insert(&mut self, key: K, value: V, expires: Instant) -> Evicted {
        self.remove(&key);
        let tick = self.next_tick();
        self.by_use.insert(tick, key.clone());
        self.by_expiry.insert((expires, tick), key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                expires,
                used: tick,
                expiry_slot: (expires, tick),
            },
        );
        let mut evicted = Evicted::default();
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.by_expiry.remove(&entry.expiry_slot);
                evicted.count += 1;
                evicted.latest_expiry = Some(match evicted.latest_expiry {
                    Some(e) if e > entry.expires => e,
                    _ => entry.expires,
                });
            }
        }
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.by_use.remove(&entry.used);
        self.by_expiry.remove(&entry.expiry_slot);
        Some(entry.value)
    }

    /// Drops every entry whose deadline has passed; returns how many.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(e) = self.entries.remove(&key) {
                self.by_use.remove(&e.used);
                removed += 1;
            }
        }
        removed
    }
}

/// What an insert pushed out to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub count: usize,
    pub latest_expiry: Option<Instant>,
}

impl Evicted {
    /// Whether an entry that had not expired yet was pushed out.
    pub fn lost_live(&self, now: Instant) -> bool {
        self.latest_expiry.is_some_and(|e| e > now)
    }
}

/// Runs `sweep` on `target` every `every` until `target` is dropped. The task holds only a
/// `Weak`, so it never keeps the store alive; it notices the drop at its next tick.
pub fn spawn_sweeper<T, F>(
    target: &Arc<T>,
    every: Duration,
    what: &'static str,
    sweep: F,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> usize + Send + 'static,
{
    let weak: Weak<T> = Arc::downgrade(target);
    // `interval` refuses a zero period.
    let every = every.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(target) = weak.upgrade() else {
                break;
            };
            let removed = sweep(&target);
            drop(target);
            if removed > 0 {
                tracing::debug!(removed, what, "expired entries dropped");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_and_forgets_expired_entries() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut map = ExpiringLru::new(2);
        assert_eq!(map.insert("a", 1, later).count, 0);
        assert_eq!(map.insert("b", 2, later).count, 0);
        assert_eq!(map.get(&"a", now), Some(&1), "a is now the most recent");
        let evicted = map.insert("c", 3, later);
        assert_eq!(evicted.count, 1);
        assert!(evicted.lost_live(now));
        assert_eq!(map.get(&"b", now), None, "b was the least recently used");
        assert_eq!(map.len(), 2);

        // Replacing a value neither grows the map nor leaves stale index entries.
        map.insert("a", 10, now + Duration::from_secs(1));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove_expired(now + Duration::from_secs(2)), 1);
        assert_eq!(map.get(&"a", now), None);
        assert_eq!(map.get(&"c", now), Some(&3));
        assert_eq!(map.by_use.len(), 1);
        assert_eq!(map.by_expiry.len(), 1);

        // An expired entry is gone on read even before a sweep.
        map.insert("d", 4, now + Duration::from_secs(1));
        assert_eq!(map.get(&"d", now + Duration::from_secs(1)), None);
        assert!(!map.contains_live(&"d", now));
        assert_eq!(map.len(), 1);
    }
}
