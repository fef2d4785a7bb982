//! The deterministic harness for the rules: seeded random sequences of events driven through
//! `rules/` with a clock that is a plain number, and fixtures (records, sender devices) built
//! from fixed keys.
//!
//! [`for_seeds`] runs a check for seeds `0..n`; a failure names its seed, and
//! `KITH_SEED=<seed> cargo test -p kith-node <test>` replays exactly that case.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Runs `check` with a generator seeded by each of `0..n`, or only by `KITH_SEED` when it is
/// set; panics with the seed of the first failing case.
pub(crate) fn for_seeds(n: u64, check: impl Fn(&mut ChaCha8Rng)) {
    let seeds: Vec<u64> = match std::env::var("KITH_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..n).collect(),
    };
    for seed in seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&mut rng))) {
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("failed with seed {seed}: {what}\nreplay with KITH_SEED={seed}");
        }
    }
}

/// Records and devices built from fixed keys.
pub(crate) mod fixtures {
    use kith_protocol::identity::{peer_id_of, DeviceKeypair};
    use kith_protocol::name::{DeviceEntry, RecordDraft};
    use kith_protocol::{
        dht_key, DeviceCertificate, IdentityKeypair, NameRecord, RecordPolicy, SenderDevice,
        SignedPrekey, VerifiedNameRecord, X25519Secret,
    };

    /// When fixture records are issued (plus their sequence number).
    pub(crate) const ISSUED_AT: u64 = 1_000_000;

    /// An outbox target for device `d` (key `[d; 32]`, peer id `[d]`), never tried.
    pub(crate) fn device_target(d: u8) -> crate::store::DeviceTarget {
        crate::store::DeviceTarget {
            device: [d; 32],
            peer_id: vec![d],
            envelope: vec![],
            done: false,
            attempts: 0,
            next_at: 0,
            last_error: None,
            deposited: false,
            prekey: None,
        }
    }

    /// The identity key numbered `n`.
    pub(crate) fn identity(n: u8) -> IdentityKeypair {
        IdentityKeypair::from_secret(&[n; 32])
    }

    fn device_key(user: u8, device: u8) -> DeviceKeypair {
        DeviceKeypair::from_secret(&[
            user.wrapping_mul(31) ^ device,
            device,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
        ])
    }

    /// The record of `name` held by identity `user`, with sequence number `seq`, listing devices
    /// numbered `devices` (certified at [`ISSUED_AT`]), issued at [`ISSUED_AT`]` + seq`.
    pub(crate) fn record(user: u8, name: &str, seq: u64, devices: &[u8]) -> VerifiedNameRecord {
        let id = identity(user);
        let issued_at = ISSUED_AT + seq;
        let devices = devices
            .iter()
            .map(|d| {
                let dev = device_key(user, *d);
                let st = X25519Secret::from_bytes([*d; 32]);
                let pk = X25519Secret::from_bytes([d.wrapping_add(1); 32]);
                DeviceEntry {
                    cert: DeviceCertificate::issue(&id, &dev, &st, ISSUED_AT, "device"),
                    prekey: SignedPrekey::sign(&dev, 1, &pk, ISSUED_AT, ISSUED_AT + 7_200_000),
                }
            })
            .collect();
        let signed = RecordDraft {
            name: name.into(),
            devices,
            mailboxes: vec![],
            seq,
            issued_at,
            expires_at: issued_at + 3_600_000,
            pow_nonce: 0,
            profile: None,
        }
        .sign(&id)
        .expect("a valid name");
        let policy = RecordPolicy { min_pow_bits: 0 };
        NameRecord::verify(&signed.to_bytes(), Some(&dht_key(name)), issued_at, &policy)
            .expect("the fixture verifies")
    }

    /// Device `device` of identity `user` as the sender of a message, certified at
    /// `certified_at`.
    pub(crate) fn sender(user: u8, device: u8, certified_at: u64) -> SenderDevice {
        let identity = identity(user).public();
        let key = device_key(user, device).public_bytes();
        SenderDevice {
            identity,
            user_id: identity.user_id(),
            device: key,
            peer_id: peer_id_of(&key).expect("an ed25519 key"),
            certified_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::Rng;

    use super::fixtures::device_target as target;
    use super::for_seeds;
    use crate::rules::group::{self, Adopt, Drop};
    use crate::rules::outbox::{self, Attempt, Progress, MAX_BACKOFF_MS};
    use crate::store::{GroupMember, GroupState, OutboxEntry};

    /// The outbox against a model: random attempts, receipts, connections and device-list
    /// changes over a clock that only moves forward. A device acknowledged is never tried
    /// again, a failed one waits within the backoff bounds, and the entry's progress always
    /// matches the model's set of devices still owed the message.
    #[test]
    fn the_outbox_matches_its_model() {
        for_seeds(300, |rng| {
            let n = rng.gen_range(1..=5u8);
            let mut e = OutboxEntry {
                id: [0; 16],
                recipient: [0; 16],
                targets: (1..=n).map(target).collect(),
                created_at: 0,
                mailboxes: vec![],
                in_history: true,
                waiting: None,
                plain: None,
            };
            let mut owed: BTreeSet<u8> = (1..=n).collect();
            let mut held: BTreeSet<u8> = BTreeSet::new();
            let mut now = 0u64;
            for _ in 0..200 {
                now += rng.gen_range(0..5_000);
                let due = outbox::due(&e, now);
                for &i in &due {
                    assert!(!e.targets[i].done, "an acknowledged device is retried");
                    assert!(e.targets[i].next_at <= now);
                }
                let p = match rng.gen_range(0..10) {
                    0..=5 if !due.is_empty() => {
                        let i = due[rng.gen_range(0..due.len())];
                        let d = e.targets[i].device[0];
                        let outcome = match rng.gen_range(0..7) {
                            0 | 1 => Attempt::Delivered,
                            2 | 3 => Attempt::Deposited("offline".into()),
                            4 => Attempt::Resealed,
                            _ => Attempt::Failed("unreachable".into()),
                        };
                        match &outcome {
                            Attempt::Delivered => {
                                owed.remove(&d);
                            }
                            Attempt::Deposited(_) => {
                                held.insert(d);
                            }
                            Attempt::Failed(_) => {}
                            // The mailbox's copy was sealed in the lost session: it does not
                            // count, and the new envelope is due at once.
                            Attempt::Resealed => {
                                held.remove(&d);
                            }
                        }
                        let delivered = outcome == Attempt::Delivered;
                        let resealed = outcome == Attempt::Resealed;
                        let p = outbox::finish_attempt(&mut e, i, outcome, now, rng.gen());
                        if resealed {
                            assert_eq!(e.targets[i].next_at, now);
                            assert!(!e.targets[i].deposited);
                        } else if !delivered {
                            let wait = e.targets[i].next_at - now;
                            assert!((1_000..=MAX_BACKOFF_MS * 5 / 4).contains(&wait), "{wait}");
                        }
                        p
                    }
                    6 => {
                        let d = rng.gen_range(1..=n + 1);
                        let p = outbox::apply_receipt(&mut e, &[d; 32]);
                        let was_owed = owed.remove(&d);
                        assert_eq!(p == Progress::Unchanged, !was_owed, "receipt of {d}");
                        p
                    }
                    7 => {
                        let d = rng.gen_range(1..=n);
                        let changed = outbox::peer_connected(&mut e, &[d]);
                        assert_eq!(changed, owed.contains(&d));
                        if changed {
                            assert!(outbox::due(&e, now)
                                .iter()
                                .any(|i| e.targets[*i].peer_id == [d]));
                        }
                        Progress::Unchanged
                    }
                    8 => {
                        let keep: Vec<[u8; 32]> =
                            (1..=n).filter(|_| rng.gen_bool(0.8)).map(|d| [d; 32]).collect();
                        owed.retain(|d| keep.contains(&[*d; 32]));
                        held.retain(|d| keep.contains(&[*d; 32]));
                        outbox::keep_devices(&mut e, &keep)
                    }
                    _ => Progress::Unchanged,
                };
                let expect = if e.targets.is_empty() {
                    Progress::Empty
                } else if owed.is_empty() {
                    Progress::Complete
                } else {
                    Progress::Pending { stored: owed.iter().all(|d| held.contains(d)) }
                };
                if p != Progress::Unchanged {
                    assert_eq!(p, expect);
                }
                assert_eq!(outbox::complete(&e), owed.is_empty());
                if matches!(expect, Progress::Complete | Progress::Empty) {
                    assert_eq!(outbox::next_due(&e), None);
                    return;
                }
            }
        });
    }

    fn member(u: u8) -> GroupMember {
        GroupMember { user: [u; 16], identity: [u; 32], name: None }
    }

    /// Random member changes proposed by random members, some allowed and some not. Whatever
    /// is adopted never drops a member who joined before its sender without announcing a
    /// leave, and a member removed from an epoch can never post in it, nor in its previous
    /// epoch once the grace period is over.
    #[test]
    fn group_changes_follow_the_removal_rule() {
        for_seeds(300, |rng| {
            let mut next = 1u8;
            let mut g = GroupState::joined([1; 16], vec![member(0), member(1)], 1, [1; 32], 0);
            let mut now = 0u64;
            for _ in 0..60 {
                now += rng.gen_range(0..40_000);
                let sender = g.members[rng.gen_range(0..g.members.len())].user;
                if rng.gen_bool(0.1) {
                    g.leaving.push(g.members[rng.gen_range(0..g.members.len())].user.to_vec());
                }
                let mut members: Vec<GroupMember> =
                    g.members.iter().filter(|_| rng.gen_bool(0.85)).cloned().collect();
                if rng.gen_bool(0.5) && next < 40 {
                    next += 1;
                    members.push(member(next));
                }
                let verdict = group::adopt(Some(&g), &[0; 16], &sender, &members, g.epoch + 1);
                let s_pos = g.members.iter().position(|m| m.user == sender).expect("a member");
                let dropped: Vec<(usize, [u8; 16])> = g
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !members.iter().any(|n| n.user == m.user))
                    .map(|(i, m)| (i, m.user))
                    .collect();
                let legal = dropped
                    .iter()
                    .all(|(i, u)| *i > s_pos || g.leaving.iter().any(|l| l.as_slice() == u));
                let named = members.iter().any(|m| m.user == [0; 16])
                    && members.iter().any(|m| m.user == sender);
                match verdict {
                    Adopt::Advance => assert!(legal && named),
                    Adopt::Forbidden => assert!(named && !legal),
                    Adopt::NotNamed => assert!(!named),
                    other => panic!("unexpected {other:?}"),
                }
                if verdict != Adopt::Advance {
                    continue;
                }
                let old = g.epoch;
                g.members = members;
                g.enter_epoch(old + 1, [(old + 1) as u8; 32], now);
                for (_, u) in &dropped {
                    let at = now + rng.gen_range(0..120_000);
                    assert_eq!(
                        group::sender_allowed(&g, g.epoch, u, at, at, false),
                        Err(Drop::Reject)
                    );
                    let late = now + group::EPOCH_GRACE_MS + 1 + rng.gen_range(0..1_000);
                    assert_eq!(
                        group::sender_allowed(&g, old, u, late, late, false),
                        Err(Drop::Reject)
                    );
                }
                g.leaving.retain(|l| g.members.iter().any(|m| m.user.as_slice() == l.as_slice()));
                if !g.members.iter().any(|m| m.user == [0; 16]) {
                    return;
                }
            }
        });
    }
}
