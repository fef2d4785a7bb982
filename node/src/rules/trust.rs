//! Resolving a name against the key pinned on first use.
//!
//! The first time a name resolves, its key is pinned. Afterwards the node keeps using the newest
//! record of the pinned key, even when another key wins the DHT's conflict rule (that is marked
//! as a key change for the user to check and accept with `kith trust`). When the DHT cannot be
//! reached, the pinned record is used while it is valid.

use kith_protocol::name::{compare_records, select_record};
use kith_protocol::VerifiedNameRecord;

/// What the node knows of a name before asking the DHT.
#[derive(Clone, Debug, Default)]
pub struct Pinned {
    /// The pinned identity key, if the name was resolved before.
    pub identity: Option<[u8; 32]>,
    /// The pinned contact's stored record, if it still verifies now.
    pub stored: Option<VerifiedNameRecord>,
}

/// What to do with a lookup's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// First contact: pin the winning record's key and use it.
    PinFirst(VerifiedNameRecord),
    /// A pinned contact: use `record` (the newest record of the pinned key) and store it with
    /// the contact, together with `changed_to` (another key the name now resolves to, awaiting
    /// `kith trust`; `None` when the pinned key still wins).
    UsePinned {
        /// The record to use and store.
        record: VerifiedNameRecord,
        /// The key that now wins the name, if not the pinned one.
        changed_to: Option<[u8; 32]>,
    },
    /// The DHT was not reached or found nothing: the stored record of the pinned key, unchanged.
    Fallback(VerifiedNameRecord),
    /// The name resolves only to another key than the pinned one: refuse, and remember
    /// `changed_to` with the contact.
    KeyChanged {
        /// The record that won.
        winner: VerifiedNameRecord,
        /// Its identity key.
        changed_to: [u8; 32],
    },
    /// No valid record, and nothing pinned to fall back on.
    NotFound,
    /// The DHT was not reached, and nothing pinned to fall back on.
    Unreachable,
}

/// Decides a resolution. `fetched` is the DHT's answer (valid records, deduplicated), or
/// `None` when the DHT could not be asked.
pub fn decide(pinned: &Pinned, fetched: Option<Vec<VerifiedNameRecord>>) -> Decision {
    let Some(valid) = fetched else {
        return pinned.stored.clone().map_or(Decision::Unreachable, Decision::Fallback);
    };
    let Some(winner) = select_record(valid.iter().cloned()) else {
        return pinned.stored.clone().map_or(Decision::NotFound, Decision::Fallback);
    };
    let Some(identity) = pinned.identity else { return Decision::PinFirst(winner) };
    let own = valid
        .iter()
        .filter(|r| r.identity.to_bytes() == identity)
        .max_by(|a, b| compare_records(a, b));
    let winner_key = winner.identity.to_bytes();
    let changed_to = (winner_key != identity).then_some(winner_key);
    match own.cloned().or_else(|| pinned.stored.clone()) {
        Some(record) => Decision::UsePinned { record, changed_to },
        None => Decision::KeyChanged { winner, changed_to: winner_key },
    }
}

/// Whether a record a contact pushed (`record.update`, sent by `sender`) replaces the one held:
/// it must be the sender's own, for a name pinned to the sender's key (`pinned`), and newer than
/// `held` (the copy stored with the contact). `Err` says why not.
pub fn pushed_record(
    sender: &[u8; 32],
    pinned: Option<[u8; 32]>,
    held: Option<&VerifiedNameRecord>,
    new: &VerifiedNameRecord,
) -> Result<(), &'static str> {
    if new.identity.to_bytes() != *sender {
        return Err("not the sender's own record");
    }
    match pinned {
        None => return Err("not a contact's name"),
        Some(p) if p != *sender => return Err("the name is pinned to another key"),
        Some(_) => {}
    }
    if held.is_some_and(|h| compare_records(new, h) != std::cmp::Ordering::Greater) {
        return Err("not newer than the record held");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::harness::fixtures::record;

    fn pinned(r: &VerifiedNameRecord) -> Pinned {
        Pinned { identity: Some(r.identity.to_bytes()), stored: Some(r.clone()) }
    }

    #[test]
    fn a_pushed_record_replaces_only_an_older_one_of_the_pinned_sender() {
        let old = record(1, "alice", 1, &[1, 2]);
        let new = record(1, "alice", 2, &[1]);
        let other = record(2, "alice", 3, &[7]);
        let alice = old.identity.to_bytes();
        let pin = Some(alice);
        assert_eq!(pushed_record(&alice, pin, Some(&old), &new), Ok(()));
        assert_eq!(pushed_record(&alice, pin, None, &new), Ok(()), "nothing held that verifies");
        assert!(pushed_record(&alice, pin, Some(&new), &old).is_err(), "older");
        assert!(pushed_record(&alice, pin, Some(&new), &new).is_err(), "the same");
        assert!(pushed_record(&alice, None, Some(&old), &new).is_err(), "not a contact");
        let mallory = other.identity.to_bytes();
        assert!(pushed_record(&mallory, pin, Some(&old), &other).is_err(), "pinned to alice");
        assert!(pushed_record(&mallory, Some(mallory), None, &new).is_err(), "not its own");
    }

    #[test]
    fn first_use_pins_the_winner() {
        let a = record(1, "alice", 1, &[1]);
        assert_eq!(decide(&Pinned::default(), Some(vec![a.clone()])), Decision::PinFirst(a));
    }

    #[test]
    fn nothing_found_or_unreachable_falls_back_on_the_pin() {
        let a = record(1, "alice", 1, &[1]);
        assert_eq!(decide(&Pinned::default(), Some(vec![])), Decision::NotFound);
        assert_eq!(decide(&Pinned::default(), None), Decision::Unreachable);
        assert_eq!(decide(&pinned(&a), None), Decision::Fallback(a.clone()));
        assert_eq!(decide(&pinned(&a), Some(vec![])), Decision::Fallback(a));
    }

    #[test]
    fn a_newer_record_of_the_pinned_key_is_used() {
        let old = record(1, "alice", 1, &[1]);
        let new = record(1, "alice", 2, &[1, 2]);
        let d = decide(&pinned(&old), Some(vec![old.clone(), new.clone()]));
        assert_eq!(d, Decision::UsePinned { record: new, changed_to: None });
    }

    /// An impostor's record that wins the conflict rule never replaces the pinned key: the
    /// pinned key's record is used and the change is remembered; with no record of the pinned
    /// key left at all, the resolution is refused.
    #[test]
    fn another_key_never_replaces_the_pin() {
        let a = record(1, "alice", 1, &[1]);
        let mallory = record(2, "alice", 9, &[2]);
        let winner = select_record([a.clone(), mallory.clone()]).expect("one wins");
        let d = decide(&pinned(&a), Some(vec![a.clone(), mallory.clone()]));
        let changed_to = (winner.identity != a.identity).then(|| winner.identity.to_bytes());
        assert_eq!(d, Decision::UsePinned { record: a.clone(), changed_to });
        let only = Pinned { identity: Some(a.identity.to_bytes()), stored: None };
        assert_eq!(
            decide(&only, Some(vec![mallory.clone()])),
            Decision::KeyChanged { changed_to: mallory.identity.to_bytes(), winner: mallory },
        );
    }
}
