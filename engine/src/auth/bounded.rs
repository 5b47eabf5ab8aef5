//! A map with a fixed capacity that forgets its oldest entries first.
//!
//! Every table the authenticator keeps is fed by peers (nonces they use, addresses they send
//! from, user names they try), so each must have a bound that holds whatever they send
//! (ARCHITECTURE.md: "every table and queue is bounded"). Insertion order is the eviction order:
//! the entry that has been in the table longest goes first, which for nonces and failure records
//! is also the one least likely to matter.
//!
//! The hash map uses the standard library's randomly keyed SipHash, so a peer choosing keys
//! (user names) cannot force collisions.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map holding at most `capacity` entries; inserting into a full map evicts the oldest entry.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    capacity: usize,
    /// Each value with the insertion number of its entry in `order`.
    entries: HashMap<K, (V, u64)>,
    /// Keys in insertion order. An element whose insertion number no longer matches the map's
    /// (the key was removed, or removed and inserted again) is a tombstone, skipped when reached.
    order: VecDeque<(K, u64)>,
    next_insertion: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// A map that holds at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> BoundedMap<K, V> {
        BoundedMap {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_insertion: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(value, _)| value)
    }

    /// Inserts or replaces `key`'s value. A new key in a full map first evicts the oldest entry,
    /// which is returned. A replaced value keeps its key's place in the eviction order.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some((slot, _)) = self.entries.get_mut(&key) {
            *slot = value;
            return None;
        }
        let evicted = if self.entries.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let insertion = self.next_insertion;
        self.next_insertion += 1;
        self.order.push_back((key.clone(), insertion));
        self.entries.insert(key, (value, insertion));
        self.compact_if_needed();
        evicted
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        // The key stays in `order` as a tombstone; `compact_if_needed` bounds how many pile up.
        let removed = self.entries.remove(key).map(|(value, _)| value);
        self.compact_if_needed();
        removed
    }

    /// The oldest live entry, without removing it.
    pub(crate) fn oldest(&mut self) -> Option<(&K, &V)> {
        self.drop_leading_tombstones();
        let (key, _) = self.order.front()?;
        self.entries.get_key_value(key).map(|(k, (v, _))| (k, v))
    }

    /// Removes and returns the oldest live entry.
    pub(crate) fn pop_oldest(&mut self) -> Option<(K, V)> {
        self.drop_leading_tombstones();
        let (key, insertion) = self.order.pop_front()?;
        match self.entries.entry(key) {
            Entry::Occupied(e) if e.get().1 == insertion => {
                let (key, (value, _)) = e.remove_entry();
                Some((key, value))
            }
            // `drop_leading_tombstones` left a live entry at the front.
            _ => None,
        }
    }

    fn is_live(&self, key: &K, insertion: u64) -> bool {
        self.entries.get(key).is_some_and(|(_, i)| *i == insertion)
    }

    fn drop_leading_tombstones(&mut self) {
        while let Some((key, insertion)) = self.order.front() {
            if self.is_live(key, *insertion) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Keeps `order` within twice the capacity (plus slack) by dropping every tombstone once it
    /// has grown that far: amortised O(1) per operation.
    fn compact_if_needed(&mut self) {
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, insertion)| entries.get(key).is_some_and(|(_, i)| i == insertion));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_when_full() {
        let mut map = BoundedMap::new(2);
        assert_eq!(map.insert("a", 1), None);
        assert_eq!(map.insert("b", 2), None);
        assert_eq!(map.insert("a", 10), None, "replacing does not evict");
        assert_eq!(map.insert("c", 3), Some(("a", 10)));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"b"), Some(&2));
        assert_eq!(map.get(&"c"), Some(&3));
    }

    #[test]
    fn removed_keys_are_skipped_and_order_stays_bounded() {
        let mut map = BoundedMap::new(4);
        for round in 0..1000u32 {
            map.insert(round % 7, round);
            map.remove(&(round % 7));
            assert!(map.order.len() <= 2 * map.capacity() + 16);
        }
        assert_eq!(map.len(), 0);
        assert_eq!(map.oldest(), None);
        map.insert(1, 1);
        map.insert(2, 2);
        map.remove(&1);
        assert_eq!(map.oldest(), Some((&2, &2)));
        assert_eq!(map.pop_oldest(), Some((2, 2)));
        assert_eq!(map.pop_oldest(), None);
    }

    #[test]
    fn reinserted_key_moves_to_the_back() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.remove(&"a");
        map.insert("a", 3);
        assert_eq!(map.insert("c", 4), Some(("b", 2)));
    }
}
