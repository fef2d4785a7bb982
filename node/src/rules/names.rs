//! What a name's holder makes of reading its name back from the DHT after publishing it.
//!
//! Kademlia acknowledges a store before the receiving node has checked the record (and a node
//! that holds another identity's live record refuses it), so a successful store says little.
//! The holder therefore reads the name back and counts: how many other peers serve its record
//! (at its sequence number or later), and which other identity, if any, some holders return.

use kith_protocol::name::{compare_records, select_record};
use kith_protocol::{IdentityPublic, VerifiedNameRecord};

/// One copy of the name's record as a lookup returned it.
#[derive(Clone, Debug)]
pub struct Copy {
    /// Whether another peer returned it (`false`: this node's own store).
    pub remote: bool,
    /// The verified record.
    pub record: VerifiedNameRecord,
}

/// Another identity's claim on the name, as the read-back found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Competitor {
    /// Its best record.
    pub record: VerifiedNameRecord,
    /// How many holders returned it.
    pub holders: usize,
}

/// The outcome of a read-back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// Other peers that serve this holder's record at the published sequence number or later.
    pub served_by: usize,
    /// The other identity returned by the most holders, if any.
    pub competitor: Option<Competitor>,
    /// Whether a resolver handed these copies would pick this holder (`select_record`).
    pub mine_wins: bool,
}

/// Reads the copies a lookup of the name returned, for holder `me` that published `seq`.
pub fn read_back(me: &IdentityPublic, seq: u64, copies: &[Copy]) -> ReadBack {
    let served_by = copies
        .iter()
        .filter(|c| c.remote && c.record.identity == *me && c.record.seq >= seq)
        .count();
    let mut others: Vec<Competitor> = Vec::new();
    for c in copies.iter().filter(|c| c.record.identity != *me) {
        match others.iter_mut().find(|o| o.record.identity == c.record.identity) {
            Some(o) => {
                o.holders += 1;
                if compare_records(&c.record, &o.record).is_gt() {
                    o.record = c.record.clone();
                }
            }
            None => others.push(Competitor { record: c.record.clone(), holders: 1 }),
        }
    }
    let competitor = others.into_iter().max_by(|a, b| {
        a.holders.cmp(&b.holders).then_with(|| compare_records(&a.record, &b.record))
    });
    let winner = select_record(copies.iter().map(|c| c.record.clone()));
    ReadBack { served_by, competitor, mine_wins: winner.is_some_and(|w| w.identity == *me) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::harness::fixtures::{identity, record};

    fn copy(remote: bool, record: &VerifiedNameRecord) -> Copy {
        Copy { remote, record: record.clone() }
    }

    #[test]
    fn a_record_served_only_by_this_node_is_not_served() {
        let bob = identity(1).public();
        let r = record(1, "bob", 3, &[1]);
        let rb = read_back(&bob, 3, &[copy(false, &r)]);
        assert_eq!((rb.served_by, rb.competitor, rb.mine_wins), (0, None, true));
        // Peers serving an older sequence number do not count; the same or a newer one does.
        let old = record(1, "bob", 2, &[1]);
        let rb = read_back(&bob, 3, &[copy(false, &r), copy(true, &old), copy(true, &r)]);
        assert_eq!(rb.served_by, 1);
    }

    #[test]
    fn a_competing_claim_is_found_and_the_majority_decides() {
        let bob = identity(1).public();
        let (b, m) = (record(1, "bob", 1, &[1]), record(2, "bob", 1, &[2]));
        let rb = read_back(&bob, 1, &[copy(false, &b), copy(true, &b), copy(true, &m)]);
        assert_eq!(rb.served_by, 1);
        assert_eq!(rb.competitor, Some(Competitor { record: m.clone(), holders: 1 }));
        assert!(rb.mine_wins);
        let rb = read_back(&bob, 1, &[copy(false, &b), copy(true, &m), copy(true, &m)]);
        assert_eq!(rb.competitor.map(|c| c.holders), Some(2));
        assert!(!rb.mine_wins);
    }
}
