//! When a node with too few connections dials its bootstrap peers and peers its routing table
//! knows again: no more at a time than the connections it lacks, each peer not connected at
//! once, then after [`REDIAL_FIRST_MS`], doubling up to [`REDIAL_MAX_MS`] while it stays
//! unreachable; a peer that connects starts over. So a bootstrap peer that restarts, however often, is
//! reached again within [`REDIAL_MAX_MS`] of coming back (plus the interval at which the caller
//! checks), and one that is gone for good costs
//! a dial a minute.

use std::collections::HashMap;
use std::hash::Hash;

/// The wait after a peer's first redial.
pub const REDIAL_FIRST_MS: u64 = 10_000;
/// The longest wait between redials of one peer.
pub const REDIAL_MAX_MS: u64 = 60_000;

/// Per peer: when it may be dialed next, and the wait after that.
#[derive(Debug)]
pub struct Redial<K> {
    waits: HashMap<K, (u64, u64)>,
}

impl<K> Default for Redial<K> {
    fn default() -> Self {
        Redial { waits: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Redial<K> {
    /// Of `peers` (in order of preference), at most `missing` to dial now: those not
    /// `connected` whose wait has passed. Connected peers start over; with `missing` 0 (enough
    /// connections) nothing is dialed.
    pub fn due(
        &mut self,
        now: u64,
        missing: usize,
        peers: &[K],
        connected: impl Fn(&K) -> bool,
    ) -> Vec<K> {
        let mut due = Vec::new();
        for peer in peers {
            if connected(peer) {
                self.waits.remove(peer);
                continue;
            }
            if due.len() >= missing {
                continue;
            }
            let (next, wait) = self.waits.get(peer).copied().unwrap_or((now, REDIAL_FIRST_MS));
            if now >= next {
                due.push(peer.clone());
                self.waits.insert(peer.clone(), (now + wait, (wait * 2).min(REDIAL_MAX_MS)));
            }
        }
        due
    }

    /// Forgets peers that are not in `peers` any more (bounded by the peers ever passed).
    pub fn retain(&mut self, peers: &[K]) {
        self.waits.retain(|k, _| peers.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_peer_is_dialed_with_a_doubling_wait_up_to_a_minute() {
        let mut r = Redial::default();
        let dials: Vec<u64> = (0..40u64)
            .map(|i| i * 5_000)
            .filter(|&now| !r.due(now, 1, &["b"], |_| false).is_empty())
            .collect();
        assert_eq!(dials, [0, 10_000, 30_000, 70_000, 130_000, 190_000]);
    }

    #[test]
    fn a_peer_that_connected_starts_over_and_enough_connections_dial_nothing() {
        let mut r = Redial::default();
        assert_eq!(r.due(0, 1, &["b"], |_| false), ["b"]);
        assert!(r.due(5_000, 1, &["b"], |_| false).is_empty());
        // It came back: the wait starts over, so the next loss is redialed at once.
        assert!(r.due(6_000, 1, &["b"], |_| true).is_empty());
        assert_eq!(r.due(7_000, 1, &["b"], |_| false), ["b"]);
        // Enough connections: nothing is dialed however long a peer is away.
        let mut r = Redial::default();
        assert!(r.due(0, 0, &["b"], |_| false).is_empty());
        assert!(r.due(1_000_000, 0, &["b"], |_| false).is_empty());
    }

    #[test]
    fn no_more_peers_are_dialed_than_connections_are_missing() {
        let mut r = Redial::default();
        let peers = ["a", "b", "c", "d"];
        // "b" is connected; two are missing: the first two others, in order.
        assert_eq!(r.due(0, 2, &peers, |p| *p == "b"), ["a", "c"]);
        // "d" was not dialed, so its wait did not start: it is first in line next time.
        assert_eq!(r.due(1_000, 2, &peers, |p| *p == "b"), ["d"]);
    }
}
