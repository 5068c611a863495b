//! A queue of due times by key: what the coordinator arms its one timer from (a task's
//! valid-after or deadline, a worker's heartbeat limit), so time events fire from a timer set to
//! the earliest due time, never from a polling loop.
//!
//! Pure: "now" is a parameter. Each key has at most one due time; scheduling it again moves it.

use std::collections::{BTreeMap, BTreeSet};

use crate::task::Timestamp;

/// Due times by key, earliest first (ties by key, so the order is deterministic).
#[derive(Debug, Clone)]
pub struct TimerQueue<K> {
    by_time: BTreeSet<(Timestamp, K)>,
    by_key: BTreeMap<K, Timestamp>,
}

impl<K: Ord + Clone> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> TimerQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `key` due at `at`, replacing its earlier due time if it had one.
    pub fn schedule(&mut self, key: K, at: Timestamp) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Forgets `key`; returns when it was due.
    pub fn cancel(&mut self, key: &K) -> Option<Timestamp> {
        let at = self.by_key.remove(key)?;
        self.by_time.remove(&(at, key.clone()));
        Some(at)
    }

    /// When `key` is due.
    pub fn due_at(&self, key: &K) -> Option<Timestamp> {
        self.by_key.get(key).copied()
    }

    /// The earliest due time: what to arm the timer for.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns every key due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms)
    }

    #[test]
    fn pops_in_time_order_and_honours_cancel_and_reschedule() {
        let mut q = TimerQueue::new();
        assert_eq!(q.next_due(), None);
        q.schedule("b", t(20));
        q.schedule("a", t(20));
        q.schedule("c", t(10));
        q.schedule("d", t(30));
        assert_eq!(q.next_due(), Some(t(10)));
        assert_eq!(q.cancel(&"c"), Some(t(10)));
        assert_eq!(q.cancel(&"c"), None);
        q.schedule("d", t(5));
        assert_eq!(q.due_at(&"d"), Some(t(5)));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop_due(t(4)), Vec::<&str>::new());
        assert_eq!(q.pop_due(t(20)), vec!["d", "a", "b"]);
        assert_eq!(q.next_due(), None);
        assert!(q.is_empty());
        assert_eq!(q.pop_due(t(100)), Vec::<&str>::new());
    }
}
