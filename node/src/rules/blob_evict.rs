//! Which blobs to drop when the blob store needs room: only blobs the user already saved
//! (received attachments written out to a file, so the file is not lost), oldest first, and
//! only as many as the new blob needs. Blobs this device sent are never dropped (its
//! recipients may still fetch them from it), nor blobs not saved yet.

/// A blob the store holds, as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held<H> {
    /// Its hash (or any name).
    pub hash: H,
    /// Sealed bytes it takes.
    pub bytes: u64,
    /// When the newest message carrying it arrived.
    pub at: u64,
    /// Whether every message carrying it was saved by the user.
    pub saved: bool,
    /// Whether this device sent it.
    pub sent_here: bool,
}

/// The blobs to drop, in order, so that `wanted` more bytes fit `quota` with `used` in use;
/// empty when they fit already. When dropping every candidate is not enough, all of them are
/// named (the caller then still refuses the new blob with a quota error).
pub fn choose<H: Clone>(held: &[Held<H>], used: u64, wanted: u64, quota: u64) -> Vec<H> {
    let mut need = (used.saturating_add(wanted)).saturating_sub(quota);
    if need == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<&Held<H>> = held.iter().filter(|h| h.saved && !h.sent_here).collect();
    candidates.sort_by_key(|h| h.at);
    let mut out = Vec::new();
    for h in candidates {
        if need == 0 {
            break;
        }
        need = need.saturating_sub(h.bytes);
        out.push(h.hash.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(hash: char, bytes: u64, at: u64, saved: bool, sent_here: bool) -> Held<char> {
        Held { hash, bytes, at, saved, sent_here }
    }

    #[test]
    fn the_oldest_saved_blobs_make_room_and_no_more() {
        let all = [
            held('a', 10, 3, true, false),
            held('b', 10, 1, true, false),
            held('c', 10, 0, false, false),
            held('d', 10, 0, true, true),
            held('e', 10, 2, true, false),
        ];
        assert_eq!(choose(&all, 50, 10, 100), Vec::<char>::new(), "fits already");
        assert_eq!(choose(&all, 50, 55, 100), vec!['b'], "5 bytes short: the oldest saved one");
        assert_eq!(choose(&all, 50, 65, 100), vec!['b', 'e']);
        // Unsaved and own blobs are never named, even when that is not enough.
        assert_eq!(choose(&all, 50, 500, 100), vec!['b', 'e', 'a']);
    }
}
