//! Which chunk of a blob to ask which peer for next: a bounded window of chunks in flight, at
//! most [`PER_SOURCE`] of them from any one peer, so the blob comes from every peer that holds
//! it (in a group, the members that fetched it before) and not from the sender's uplink alone.
//! A chunk whose request failed, timed out or came back wrong goes back to the queue and is not
//! asked of that peer again; a peer that failed [`MAX_SOURCE_FAILURES`] times is dropped. A
//! fetch starts from the chunks the blob store still misses, so it resumes after a restart.
//!
//! Pure: the caller sends the requests [`Fetch::next`] returns, reports each answer with
//! [`Fetch::done`] or [`Fetch::failed`] and times out the overdue ones [`Fetch::overdue`]
//! names, with `now` passed in.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

/// Chunks in flight at once, over all peers (8 × 256 KiB = 2 MiB buffered at most).
pub const WINDOW: usize = 16;
/// Chunks in flight at once from one peer.
pub const PER_SOURCE: usize = 8;
/// How long a chunk request may take before it is asked elsewhere.
pub const CHUNK_TIMEOUT_MS: u64 = 30_000;
/// Failures after which a peer is no longer asked for this blob.
pub const MAX_SOURCE_FAILURES: u32 = 3;

/// The state of one blob's fetch.
#[derive(Debug)]
pub struct Fetch<P> {
    /// Chunks not held and not in flight, as (rank, chunk): asked in rank order.
    queue: BTreeSet<(usize, usize)>,
    /// Each chunk's rank.
    rank: HashMap<usize, usize>,
    /// Chunk → (peer asked, when).
    in_flight: HashMap<usize, (P, u64)>,
    /// Peers that hold the blob, in order of preference.
    sources: Vec<P>,
    /// Per peer: failures so far.
    failures: HashMap<P, u32>,
    /// (chunk, peer) pairs that failed: not asked again.
    failed_pairs: HashSet<(usize, P)>,
}

/// What the fetch needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<P> {
    /// Ask these (chunk, peer) pairs now.
    Ask(Vec<(usize, P)>),
    /// Every chunk is held.
    Complete,
    /// Chunks are missing and no peer is left to ask for them.
    Stuck(Vec<usize>),
}

impl<P: Clone + Eq + Hash> Fetch<P> {
    /// A fetch of the chunks `missing` (from the blob store) from `sources`, lowest first.
    pub fn new(missing: impl IntoIterator<Item = usize>, sources: Vec<P>) -> Self {
        Self::in_order(missing, sources)
    }

    /// A fetch of the chunks `order` from `sources`, asked in that order. Members of a group
    /// fetching one blob at once each take their own random order, so that they soon hold
    /// different chunks and can serve them to each other instead of all asking the sender for
    /// the same one.
    pub fn in_order(order: impl IntoIterator<Item = usize>, sources: Vec<P>) -> Self {
        let rank: HashMap<usize, usize> =
            order.into_iter().enumerate().map(|(r, c)| (c, r)).collect();
        Fetch {
            queue: rank.iter().map(|(c, r)| (*r, *c)).collect(),
            rank,
            in_flight: HashMap::new(),
            sources,
            failures: HashMap::new(),
            failed_pairs: HashSet::new(),
        }
    }

    /// A peer that now holds the blob too (a member that fetched it).
    pub fn add_source(&mut self, peer: P) {
        if !self.sources.contains(&peer) {
            self.sources.push(peer);
        }
    }

    fn rank_of(&self, chunk: usize) -> usize {
        self.rank.get(&chunk).copied().unwrap_or(chunk)
    }

    fn usable(&self, peer: &P) -> bool {
        self.failures.get(peer).copied().unwrap_or(0) < MAX_SOURCE_FAILURES
    }

    /// The requests to send now (marked in flight at `now`), or whether the fetch is over.
    pub fn next(&mut self, now: u64) -> Next<P> {
        if self.queue.is_empty() && self.in_flight.is_empty() {
            return Next::Complete;
        }
        let mut load: HashMap<P, usize> = HashMap::new();
        for (peer, _) in self.in_flight.values() {
            *load.entry(peer.clone()).or_default() += 1;
        }
        // Picks first (reading the queue in place, only as far as the window has room), then
        // marks them in flight.
        let room = WINDOW.saturating_sub(self.in_flight.len());
        let mut ask = Vec::new();
        for &(_, chunk) in &self.queue {
            if ask.len() >= room {
                break;
            }
            let has_room = |p: &&P| load.get(*p).copied().unwrap_or(0) < PER_SOURCE;
            if !self.sources.iter().filter(|p| self.usable(p)).any(|p| has_room(&p)) {
                break;
            }
            // The least loaded usable peer that has not failed this chunk.
            let pick = self
                .sources
                .iter()
                .filter(|p| self.usable(p) && !self.failed_pairs.contains(&(chunk, (*p).clone())))
                .filter(has_room)
                .min_by_key(|p| load.get(*p).copied().unwrap_or(0))
                .cloned();
            if let Some(peer) = pick {
                *load.entry(peer.clone()).or_default() += 1;
                ask.push((chunk, peer));
            }
        }
        for (chunk, peer) in &ask {
            self.queue.remove(&(self.rank_of(*chunk), *chunk));
            self.in_flight.insert(*chunk, (peer.clone(), now));
        }
        if ask.is_empty() && self.in_flight.is_empty() {
            // Nothing in flight and nobody to ask for what is queued.
            let mut stuck: Vec<usize> = self.queue.iter().map(|(_, c)| *c).collect();
            stuck.sort_unstable();
            return Next::Stuck(stuck);
        }
        Next::Ask(ask)
    }

    /// Chunk `chunk` arrived from `peer` and passed its check (and is stored).
    pub fn done(&mut self, chunk: usize, peer: &P) {
        if self.in_flight.get(&chunk).is_some_and(|(p, _)| p == peer) {
            self.in_flight.remove(&chunk);
        }
    }

    /// Asking `peer` for `chunk` failed (an error, `not_found`, a chunk that failed its check,
    /// or a timeout): the chunk goes back to the queue.
    pub fn failed(&mut self, chunk: usize, peer: &P) {
        if self.in_flight.get(&chunk).is_some_and(|(p, _)| p == peer) {
            self.in_flight.remove(&chunk);
            self.queue.insert((self.rank_of(chunk), chunk));
            self.failed_pairs.insert((chunk, peer.clone()));
            *self.failures.entry(peer.clone()).or_default() += 1;
        }
    }

    /// `peer` does not hold `chunk` (yet: a member still fetching it), or was too busy to
    /// serve it: the chunk goes back to the queue and is not asked of that peer again in this
    /// fetch, but the peer is not counted as failing.
    pub fn not_held(&mut self, chunk: usize, peer: &P) {
        if self.in_flight.get(&chunk).is_some_and(|(p, _)| p == peer) {
            self.in_flight.remove(&chunk);
            self.queue.insert((self.rank_of(chunk), chunk));
            self.failed_pairs.insert((chunk, peer.clone()));
        }
    }

    /// Requests in flight for longer than [`CHUNK_TIMEOUT_MS`] at `now`; the caller reports
    /// each with [`Fetch::failed`].
    pub fn overdue(&self, now: u64) -> Vec<(usize, P)> {
        let mut late: Vec<(usize, P)> = self
            .in_flight
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) >= CHUNK_TIMEOUT_MS)
            .map(|(c, (p, _))| (*c, p.clone()))
            .collect();
        late.sort_by_key(|(c, _)| *c);
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(next: Next<char>) -> Vec<(usize, char)> {
        match next {
            Next::Ask(a) => a,
            other => panic!("expected requests, got {other:?}"),
        }
    }

    #[test]
    fn the_window_is_shared_among_sources_and_refills_as_chunks_arrive() {
        let mut f = Fetch::new(0..20, vec!['a', 'b', 'c']);
        let first = asked(f.next(0));
        assert_eq!(first.len(), WINDOW);
        for peer in ['a', 'b', 'c'] {
            let n = first.iter().filter(|(_, p)| *p == peer).count();
            assert!((2..=PER_SOURCE).contains(&n), "{peer} got {n} of {first:?}");
        }
        assert_eq!(f.next(1), Next::Ask(vec![]), "the window is full");
        f.done(first[0].0, &first[0].1);
        let refill = asked(f.next(2));
        assert_eq!(refill, vec![(WINDOW, first[0].1)]);
    }

    #[test]
    fn one_source_gets_at_most_its_share_and_the_fetch_completes() {
        let mut f = Fetch::new([0, 1, 2, 3, 4, 5], vec!['a']);
        let mut now = 0;
        loop {
            match f.next(now) {
                Next::Ask(a) => {
                    assert!(a.len() <= PER_SOURCE);
                    for (c, p) in a {
                        f.done(c, &p);
                    }
                }
                Next::Complete => break,
                Next::Stuck(s) => panic!("stuck on {s:?}"),
            }
            now += 1;
        }
    }

    #[test]
    fn a_failed_chunk_is_asked_of_another_peer_and_a_bad_peer_is_dropped() {
        let mut f = Fetch::new([0], vec!['a', 'b']);
        let [(c, p)] = asked(f.next(0))[..] else { panic!("one request") };
        f.failed(c, &p);
        let again = asked(f.next(1));
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].1, p, "not the peer that failed it");
        f.failed(again[0].0, &again[0].1);
        assert_eq!(f.next(2), Next::Stuck(vec![0]));
        // A new source unblocks it.
        f.add_source('c');
        assert_eq!(asked(f.next(3)), vec![(0, 'c')]);

        let mut g = Fetch::new(0..40, vec!['x', 'y']);
        for round in 0..MAX_SOURCE_FAILURES {
            for (c, p) in asked(g.next(u64::from(round))) {
                if p == 'x' {
                    g.failed(c, &p);
                } else {
                    g.done(c, &p);
                }
            }
        }
        assert!(asked(g.next(10)).iter().all(|(_, p)| *p == 'y'), "x is no longer asked");
    }

    #[test]
    fn overdue_requests_are_named_and_late_answers_ignored() {
        let mut f = Fetch::new([0, 1], vec!['a', 'b']);
        let first = asked(f.next(0));
        assert!(f.overdue(CHUNK_TIMEOUT_MS - 1).is_empty());
        let late = f.overdue(CHUNK_TIMEOUT_MS);
        assert_eq!(late.len(), 2);
        for (c, p) in &late {
            f.failed(*c, p);
        }
        // An answer from the peer that timed out no longer counts.
        f.done(first[0].0, &first[0].1);
        let retry = asked(f.next(CHUNK_TIMEOUT_MS));
        assert_eq!(retry.len(), 2);
        for (c, p) in retry {
            assert!(!first.contains(&(c, p)));
            f.done(c, &p);
        }
        assert_eq!(f.next(CHUNK_TIMEOUT_MS + 1), Next::Complete);
    }

    #[test]
    fn a_resumed_fetch_asks_only_what_is_missing() {
        let mut f = Fetch::new([3, 7], vec!['a', 'b']);
        let mut chunks: Vec<usize> = asked(f.next(0)).into_iter().map(|(c, _)| c).collect();
        chunks.sort_unstable();
        assert_eq!(chunks, vec![3, 7]);
        assert_eq!(Fetch::<char>::new([], vec![]).next(0), Next::Complete);
    }

    #[test]
    fn a_peer_without_the_chunk_is_not_asked_for_it_again_but_stays_a_source() {
        let mut f = Fetch::new(0..(MAX_SOURCE_FAILURES as usize + 2), vec!['m']);
        f.add_source('s');
        // 'm' (a member still fetching) holds none of them; 's' (the sender) holds all.
        let mut held = 0;
        for now in 0..100 {
            match f.next(now) {
                Next::Ask(a) => {
                    for (c, p) in a {
                        if p == 'm' {
                            f.not_held(c, &p);
                        } else {
                            f.done(c, &p);
                            held += 1;
                        }
                    }
                }
                Next::Complete => break,
                Next::Stuck(s) => panic!("stuck on {s:?}"),
            }
        }
        assert_eq!(held, MAX_SOURCE_FAILURES as usize + 2);
        // More misses than MAX_SOURCE_FAILURES, and 'm' is still asked for a new chunk.
        let mut g = Fetch::new([0, 1, 2, 3, 4], vec!['m']);
        for now in 0.. {
            match g.next(now) {
                Next::Ask(a) => a.iter().for_each(|(c, p)| g.not_held(*c, p)),
                Next::Stuck(s) => {
                    assert_eq!(s, vec![0, 1, 2, 3, 4], "every pair was tried");
                    break;
                }
                Next::Complete => panic!("nothing was held"),
            }
        }
        assert!(g.usable(&'m'));
    }

    #[test]
    fn chunks_are_asked_in_the_order_given_and_a_failed_one_keeps_its_place() {
        let mut f = Fetch::in_order([5, 2, 9, 0], vec!['a']);
        let first = asked(f.next(0));
        assert_eq!(first, vec![(5, 'a'), (2, 'a'), (9, 'a'), (0, 'a')]);
        f.not_held(2, &'a');
        f.add_source('b');
        assert_eq!(asked(f.next(1)), vec![(2, 'b')]);
    }
}
