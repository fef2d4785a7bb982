//! The mailbox service's deposit rate limit: at most `per_minute` deposits per sending peer in
//! each wall-clock minute, counting at most [`MAX_RATE_ENTRIES`] peers (the table is cleared
//! beyond, which at worst lets a peer deposit twice its limit in one minute).

use std::collections::HashMap;
use std::hash::Hash;

/// Most sending peers tracked by the deposit rate limit; the table is cleared beyond.
pub const MAX_RATE_ENTRIES: usize = 10_000;

/// Deposits per sending peer in the current minute.
#[derive(Debug)]
pub struct RateTable<K> {
    per_minute: u32,
    counts: HashMap<K, (u64, u32)>,
}

impl<K: Hash + Eq> RateTable<K> {
    /// A table allowing `per_minute` deposits per peer and minute.
    pub fn new(per_minute: u32) -> Self {
        RateTable { per_minute, counts: HashMap::new() }
    }

    /// Counts a deposit by `peer` at `now` (milliseconds); whether it is within the limit.
    pub fn allow(&mut self, peer: K, now: u64) -> bool {
        let minute = now / 60_000;
        if self.counts.len() >= MAX_RATE_ENTRIES && !self.counts.contains_key(&peer) {
            self.counts.clear();
        }
        let entry = self.counts.entry(peer).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_minute
    }

    /// Peers tracked.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposits_are_limited_per_peer_and_minute() {
        let mut t = RateTable::new(2);
        assert!(t.allow(1u32, 0));
        assert!(t.allow(1, 59_999));
        assert!(!t.allow(1, 59_999), "third in the same minute");
        assert!(t.allow(2, 59_999), "another peer");
        assert!(t.allow(1, 60_000), "a new minute");
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = RateTable::new(1);
        for p in 0..MAX_RATE_ENTRIES as u32 {
            assert!(t.allow(p, 0));
        }
        assert!(!t.allow(0, 0), "a known peer does not clear the table");
        assert_eq!(t.len(), MAX_RATE_ENTRIES);
        assert!(t.allow(u32::MAX, 0));
        assert_eq!(t.len(), 1);
    }
}
