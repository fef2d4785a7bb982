//! How often the sender of a group's file serves each chunk: at most [`SEED_COPIES`] times per
//! [`SEED_WINDOW_MS`]. Members fetch the chunks in different orders, so once a chunk went out
//! twice, others get it from the members that have it (the sender answers `busy`), and the
//! sender's uplink carries about two copies of the file instead of one per member. After the
//! window the sender serves it again, so a chunk whose holders went away is not lost.

use std::collections::HashMap;
use std::hash::Hash;

/// Copies of one chunk served per window.
pub const SEED_COPIES: u32 = 2;
/// The window.
pub const SEED_WINDOW_MS: u64 = 1_000;
/// Chunks tracked at most; beyond, windows that ended are forgotten (and if that is not
/// enough, everything).
pub const MAX_TRACKED: usize = 65_536;

/// The chunks served lately.
#[derive(Debug)]
pub struct Seeding<H> {
    served: HashMap<(H, usize), (u32, u64)>,
}

impl<H> Default for Seeding<H> {
    fn default() -> Self {
        Seeding { served: HashMap::new() }
    }
}

impl<H: Clone + Eq + Hash> Seeding<H> {
    /// Whether chunk `chunk` of blob `hash` may be served at `now` (and counts it if so).
    pub fn allow(&mut self, hash: &H, chunk: usize, now: u64) -> bool {
        if self.served.len() >= MAX_TRACKED {
            self.served.retain(|_, (_, since)| now.saturating_sub(*since) < SEED_WINDOW_MS);
            if self.served.len() >= MAX_TRACKED {
                self.served.clear();
            }
        }
        let e = self.served.entry((hash.clone(), chunk)).or_insert((0, now));
        if now.saturating_sub(e.1) >= SEED_WINDOW_MS {
            *e = (0, now);
        }
        if e.0 >= SEED_COPIES {
            return false;
        }
        e.0 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chunk_goes_out_twice_per_window() {
        let mut s = Seeding::default();
        assert!(s.allow(&'a', 0, 0));
        assert!(s.allow(&'a', 0, 10));
        assert!(!s.allow(&'a', 0, 20), "a third copy within the window");
        assert!(s.allow(&'a', 1, 20), "another chunk");
        assert!(s.allow(&'b', 0, 20), "another blob");
        assert!(!s.allow(&'a', 0, SEED_WINDOW_MS - 1));
        assert!(s.allow(&'a', 0, SEED_WINDOW_MS), "a new window");
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut s = Seeding::default();
        for i in 0..MAX_TRACKED + 10 {
            assert!(s.allow(&0u8, i, 0));
        }
        assert!(s.served.len() <= MAX_TRACKED);
    }
}
