//! Which group messages of one device a member holds, by the device's sequence numbers in the
//! group, and which it can prove it lacks: a number missing between two it holds.
//!
//! A member does not know what a device sent before the first message it holds of it (it may
//! have joined later), nor after the last (nothing was sent, or it has not arrived): only the
//! gaps between numbers it holds are provable. Catch-up asks for messages until they are
//! filled, and the API reports how many are missing.
//!
//! Bounds: at most [`MAX_RANGES`] runs of held numbers per device (the oldest gap is given up
//! beyond that); a gap missing for [`GAP_PATIENCE_MS`] is given up (its sender may have lost the
//! message before it was published); a number more than [`MAX_JUMP`] above the highest held
//! starts the count afresh rather than claim thousands of missing messages.

use serde::{Deserialize, Serialize};

/// Most runs of held numbers remembered per device and group.
pub const MAX_RANGES: usize = 64;
/// How long a gap is asked for before it is given up: 24 hours.
pub const GAP_PATIENCE_MS: u64 = 24 * 60 * 60 * 1000;
/// A number this far above the highest held is not taken to prove the numbers between missing.
pub const MAX_JUMP: u64 = 4096;

/// The sequence numbers held of one device in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Runs of held numbers: inclusive, sorted, disjoint and not adjacent.
    ranges: Vec<(u64, u64)>,
    /// When each gap was first seen: `noticed[i]` is for the gap after `ranges[i]`.
    noticed: Vec<u64>,
    /// How many missing numbers were given up on (see the module documentation).
    pub given_up: u64,
}

impl Received {
    /// Records number `seq`, held from `now`. False if it was held already.
    pub fn insert(&mut self, seq: u64, now: u64) -> bool {
        let r = &mut self.ranges;
        let Some(&(_, top)) = r.last() else {
            r.push((seq, seq));
            return true;
        };
        if seq > top.saturating_add(MAX_JUMP) {
            self.given_up += self.missing();
            self.ranges = vec![(seq, seq)];
            self.noticed.clear();
            return true;
        }
        // The first run that ends at or after `seq - 1`: `seq` joins it, joins it to the next,
        // or goes before it.
        let i = r.partition_point(|&(_, end)| end.saturating_add(1) < seq);
        if i == r.len() {
            // Above every run, not adjacent: a new gap before it.
            r.push((seq, seq));
            self.noticed.push(now);
        } else if r[i].0 <= seq && seq <= r[i].1 {
            return false;
        } else if r[i].1.saturating_add(1) == seq {
            r[i].1 = seq;
            if i + 1 < r.len() && r[i + 1].0 == seq.saturating_add(1) {
                r[i].1 = r[i + 1].1;
                r.remove(i + 1);
                self.noticed.remove(i);
            }
        } else if r[i].0 == seq.saturating_add(1) {
            r[i].0 = seq;
        } else {
            // Below run i, not adjacent to it: splits the gap before it, or makes one at the
            // bottom.
            r.insert(i, (seq, seq));
            let when = if i == 0 { now } else { self.noticed[i - 1] };
            self.noticed.insert(i, when);
        }
        while self.ranges.len() > MAX_RANGES {
            self.give_up_gap(0);
        }
        true
    }

    /// Gives up gaps missing for longer than [`GAP_PATIENCE_MS`].
    pub fn expire(&mut self, now: u64) {
        let mut i = 0;
        while i < self.noticed.len() {
            if now.saturating_sub(self.noticed[i]) >= GAP_PATIENCE_MS {
                self.give_up_gap(i);
            } else {
                i += 1;
            }
        }
    }

    /// Counts gap `i`'s numbers as given up and joins the runs on either side of it.
    fn give_up_gap(&mut self, i: usize) {
        let (a, b) = (self.ranges[i], self.ranges[i + 1]);
        self.given_up += b.0 - a.1 - 1;
        self.ranges[i] = (a.0, b.1);
        self.ranges.remove(i + 1);
        self.noticed.remove(i);
    }

    /// The missing numbers, as inclusive ranges.
    pub fn gaps(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.windows(2).map(|w| (w[0].1 + 1, w[1].0 - 1))
    }

    /// How many numbers are missing between the lowest and the highest held.
    pub fn missing(&self) -> u64 {
        self.gaps().map(|(a, b)| b - a + 1).sum()
    }

    /// The highest number held.
    pub fn highest(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gaps_are_between_held_numbers() {
        let mut r = Received::default();
        assert!(r.insert(5, 0));
        assert_eq!(r.missing(), 0, "nothing below the first held number is provable");
        assert!(r.insert(9, 10));
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(6, 8)]);
        assert!(r.insert(7, 20));
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(6, 6), (8, 8)]);
        assert!(!r.insert(7, 30), "held already");
        assert!(r.insert(6, 40) && r.insert(8, 40));
        assert_eq!(r.missing(), 0);
        assert_eq!(r.ranges, vec![(5, 9)]);
        // A number below the first held makes the numbers between provable.
        assert!(r.insert(2, 50));
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(3, 4)]);
    }

    #[test]
    fn gaps_are_given_up_after_a_day() {
        let mut r = Received::default();
        r.insert(1, 0);
        r.insert(3, 1_000);
        r.insert(10, 2_000);
        // Splitting a gap keeps the time it was first seen.
        r.insert(6, GAP_PATIENCE_MS);
        r.expire(GAP_PATIENCE_MS + 999);
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(2, 2), (4, 5), (7, 9)]);
        assert_eq!(r.given_up, 0);
        r.expire(GAP_PATIENCE_MS + 1_000);
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(4, 5), (7, 9)]);
        assert_eq!(r.given_up, 1);
        r.expire(GAP_PATIENCE_MS + 2_000);
        assert_eq!((r.missing(), r.given_up), (0, 1 + 2 + 3));
    }

    #[test]
    fn far_jumps_and_many_gaps_stay_bounded() {
        let mut r = Received::default();
        r.insert(1, 0);
        r.insert(3, 0);
        r.insert(3 + MAX_JUMP + 1, 0);
        assert_eq!((r.missing(), r.given_up), (0, 1), "a far jump proves nothing");
        let mut r = Received::default();
        for s in 0..(MAX_RANGES as u64 + 10) {
            r.insert(s * 2, 0);
        }
        assert_eq!(r.ranges.len(), MAX_RANGES);
        assert_eq!(r.missing(), MAX_RANGES as u64 - 1);
        assert_eq!(r.given_up, 10);
        r.insert(u64::MAX, 0);
        r.insert(u64::MAX - 1, 0);
        assert_eq!(r.highest(), Some(u64::MAX));
    }

    proptest! {
        /// Whatever the order and the repeats, the missing count is exactly the numbers between
        /// the lowest and the highest held that are not held.
        #[test]
        fn missing_is_exactly_the_holes(seqs in proptest::collection::vec(1u64..200, 1..300)) {
            let mut r = Received::default();
            let mut held = std::collections::BTreeSet::new();
            for (t, &s) in seqs.iter().enumerate() {
                prop_assert_eq!(r.insert(s, t as u64), held.insert(s));
            }
            let (lo, hi) = (*held.first().unwrap(), *held.last().unwrap());
            let holes = (lo..=hi).filter(|s| !held.contains(s)).count() as u64;
            prop_assert_eq!(r.missing() + r.given_up, holes);
            prop_assert!(r.ranges.len() <= MAX_RANGES);
            prop_assert_eq!(r.noticed.len(), r.ranges.len() - 1);
            for (a, b) in r.gaps() {
                prop_assert!(a <= b && (a..=b).all(|s| !held.contains(&s)));
            }
        }
    }
}
