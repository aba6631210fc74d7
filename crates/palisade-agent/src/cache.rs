//! A bounded map with two generations: inserts go to the young generation;
//! when it is full it becomes the old one and the previous old generation is
//! dropped. A hit in the old generation is promoted. This approximates LRU at
//! the cost of two hash lookups on a miss, with no per-entry bookkeeping.
use std::collections::HashMap;
use std::hash::Hash;

/// A bounded two-generation cache. Holds at most `2 * generation` entries.
#[derive(Debug)]
pub struct Cache<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    generation: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// A cache holding at least `generation` and at most `2 * generation` entries.
    pub fn new(generation: usize) -> Self {
        Cache {
            young: HashMap::new(),
            old: HashMap::new(),
            generation: generation.max(1),
        }
    }

    /// Look up and promote.
    pub fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let v = self.old.remove(key)?;
        self.insert(key.clone(), v.clone());
        Some(v)
    }

    /// Insert or replace.
    pub fn insert(&mut self, key: K, value: V) {
        self.old.remove(&key);
        if self.young.len() >= self.generation && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// Remove one entry.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key.
    pub fn keys(&self) -> Vec<K> {
        self.young.keys().chain(self.old.keys()).cloned().collect()
    }

    /// Keep only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.young.retain(|k, v| keep(k, v));
        self.old.retain(|k, v| keep(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_promoting() {
        let mut c = Cache::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        c.insert(3, "c"); // 1,2 become old
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&1), Some("a")); // promoted: young = {3, 1}
        c.insert(4, "d"); // young full: old = {3, 1}, 2 is gone
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&3), Some("c"));
        assert!(c.len() <= 4);
        c.insert(3, "C");
        assert_eq!(c.get(&3), Some("C"));
        assert_eq!(c.remove(&3), Some("C"));
        assert_eq!(c.get(&3), None);
        c.clear();
        assert!(c.is_empty());
    }
}
