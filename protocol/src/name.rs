//! User names, signed name records, proof of work and the conflict rule.
//!
//! A [`NameRecord`] is what the DHT stores under the key [`dht_key`] of a name: the name, the
//! identity key that claims it, the user's devices (certificates and current signed prekeys),
//! the user's mailbox peers, a sequence number, a validity window and a proof of work. The whole
//! body is signed by the identity key.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{NameError, RecordError};
use crate::identity::{
    DeviceCertificate, IdentityKeypair, IdentityPublic, Signed, SignedPrekey, UserId,
    VerifiedDevice, VerifiedPrekey,
};
use crate::profile::Profile;
use crate::VERSION;

/// Shortest name, in characters.
pub const MIN_NAME_LEN: usize = 3;
/// Longest name, in characters.
pub const MAX_NAME_LEN: usize = 32;
/// Largest encoded name record accepted, in bytes.
pub const MAX_RECORD_SIZE: usize = 16 * 1024;
/// Most devices one record may list.
pub const MAX_DEVICES: usize = 16;
/// Most mailbox peers one record may list.
pub const MAX_MAILBOXES: usize = 4;
/// Most addresses per mailbox peer.
pub const MAX_MAILBOX_ADDRS: usize = 4;
/// Longest mailbox address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest validity window of a record: 7 days.
pub const MAX_RECORD_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;
/// How far in the future a record's issue time may lie (clock skew): 10 minutes.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// Default proof-of-work difficulty in leading zero bits: 2^22 claim hashes on average, about
/// 0.65 s of one core in a release build on the 2-core reference machine (`docs/benchmarks.md`).
pub const DEFAULT_POW_BITS: u32 = 22;

/// Domain separation prefix of name record signatures.
pub const DOMAIN_NAME_RECORD: &[u8] = b"kith/v1/name-record";
/// Domain separation prefix of the DHT key of a name.
pub const DOMAIN_NAME_KEY: &[u8] = b"kith/v1/name-key";
/// Domain separation prefix of the proof-of-work hash.
pub const DOMAIN_POW: &[u8] = b"kith/v1/pow";

/// Normalizes and validates a user name.
///
/// Surrounding white space is removed and ASCII capitals are lowered. The result must be 3 to 32
/// characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
pub fn normalize_name(input: &str) -> Result<String, NameError> {
    let name = input.trim().to_ascii_lowercase();
    let len = name.chars().count();
    for (pos, ch) in name.chars().enumerate() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.');
        if !ok {
            return Err(NameError::InvalidChar { ch, pos });
        }
    }
    if !(MIN_NAME_LEN..=MAX_NAME_LEN).contains(&len) {
        return Err(NameError::Length { len });
    }
    match name.chars().next() {
        Some(ch) if !ch.is_ascii_alphanumeric() => Err(NameError::BadStart { ch }),
        _ => Ok(name),
    }
}

/// The DHT key of a (normalized) name: `SHA-256("kith/v1/name-key" || 0x00 || name)`.
pub fn dht_key(name: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(DOMAIN_NAME_KEY)
        .chain_update([0u8])
        .chain_update(name.as_bytes())
        .finalize()
        .into()
}

/// The claim hash of `(name, identity, nonce)`:
/// `SHA-256("kith/v1/pow" || 0x00 || len(name) as u8 || name || identity || nonce as u64 BE)`.
pub fn claim_hash(name: &str, identity: &[u8; 32], nonce: u64) -> [u8; 32] {
    let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
    Sha256::new()
        .chain_update(DOMAIN_POW)
        .chain_update([0u8, len])
        .chain_update(name.as_bytes())
        .chain_update(identity)
        .chain_update(nonce.to_be_bytes())
        .finalize()
        .into()
}

/// Number of leading zero bits of a hash.
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for b in hash {
        if *b == 0 {
            bits += 8;
        } else {
            bits += b.leading_zeros();
            break;
        }
    }
    bits
}

/// Finds the first nonce, counting from `start`, whose claim hash has at least `bits` leading
/// zero bits. Expected cost: `2^bits` hashes. The work is bound to the name and the identity key
/// only, so records can be re-signed (new sequence, new prekeys) without redoing it.
pub fn solve_pow(name: &str, identity: &IdentityPublic, bits: u32, start: u64) -> u64 {
    let key = identity.to_bytes();
    let mut nonce = start;
    while leading_zero_bits(&claim_hash(name, &key, nonce)) < bits {
        nonce = nonce.wrapping_add(1);
    }
    nonce
}

/// One device in a name record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The device certificate, signed by the identity key.
    pub cert: DeviceCertificate,
    /// The device's current signed prekey.
    pub prekey: SignedPrekey,
}

/// A mailbox peer that accepts envelopes for the user while the user's devices are offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPeer {
    /// The mailbox's libp2p peer id, in its binary form.
    #[serde(with = "serde_bytes")]
    pub peer_id: Vec<u8>,
    /// Multiaddresses to reach it, as text.
    pub addrs: Vec<String>,
}

/// The signed body of a name record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecordBody {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The normalized name claimed.
    pub name: String,
    /// The identity public key that claims it and signs this record.
    #[serde(with = "serde_bytes")]
    pub identity: [u8; 32],
    /// The user's devices.
    pub devices: Vec<DeviceEntry>,
    /// The user's mailbox peers.
    pub mailboxes: Vec<MailboxPeer>,
    /// Sequence number; each new record of the same identity has a higher one.
    pub seq: u64,
    /// Issue time, milliseconds since the Unix epoch.
    pub issued_at: u64,
    /// Expiry time, milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// Proof-of-work nonce, see [`claim_hash`].
    pub pow_nonce: u64,
    /// The holder's public profile, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// A signed name record as stored in the DHT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NameRecord(pub Signed);

/// What a verifier requires of a name record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPolicy {
    /// Minimum proof-of-work difficulty, in leading zero bits.
    pub min_pow_bits: u32,
}

impl Default for RecordPolicy {
    fn default() -> Self {
        RecordPolicy { min_pow_bits: DEFAULT_POW_BITS }
    }
}

/// A device listed in a verified record, with its current prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordDevice {
    /// The verified device certificate.
    pub device: VerifiedDevice,
    /// The verified current prekey.
    pub prekey: VerifiedPrekey,
}

/// A name record that passed every check of [`NameRecord::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNameRecord {
    /// The normalized name.
    pub name: String,
    /// The identity key holding it.
    pub identity: IdentityPublic,
    /// The user id of that key.
    pub user_id: UserId,
    /// The user's devices.
    pub devices: Vec<RecordDevice>,
    /// The user's mailboxes.
    pub mailboxes: Vec<MailboxPeer>,
    /// Sequence number.
    pub seq: u64,
    /// Issue time.
    pub issued_at: u64,
    /// Expiry time.
    pub expires_at: u64,
    /// Claim hash (the proof of work).
    pub claim_hash: [u8; 32],
    /// SHA-256 of the encoded record, the last tie-breaker.
    pub record_hash: [u8; 32],
    /// The encoded record.
    pub bytes: Vec<u8>,
    /// The holder's profile (checked).
    pub profile: Option<Profile>,
}

impl VerifiedNameRecord {
    /// The device entries exactly as the record lists them (certificates and signed prekeys).
    pub fn device_entries(&self) -> Vec<DeviceEntry> {
        codec::from_slice::<NameRecord>(&self.bytes, MAX_RECORD_SIZE)
            .ok()
            .and_then(|r| r.0.decode_body::<NameRecordBody>(MAX_RECORD_SIZE).ok())
            .map(|b| b.devices)
            .unwrap_or_default()
    }
}

/// The profile an encoded record carries, read without verifying it (for a record verified
/// when it was stored).
pub fn profile_of(bytes: &[u8]) -> Option<Profile> {
    codec::from_slice::<NameRecord>(bytes, MAX_RECORD_SIZE)
        .ok()
        .and_then(|r| r.0.decode_body::<NameRecordBody>(MAX_RECORD_SIZE).ok())
        .and_then(|b| b.profile)
}

/// The fields a user chooses for a new record; [`RecordDraft::sign`] turns it into a record.
#[derive(Clone, Debug)]
pub struct RecordDraft {
    /// The name (normalized by `sign`).
    pub name: String,
    /// Devices to list.
    pub devices: Vec<DeviceEntry>,
    /// Mailboxes to list.
    pub mailboxes: Vec<MailboxPeer>,
    /// Sequence number.
    pub seq: u64,
    /// Issue time.
    pub issued_at: u64,
    /// Expiry time.
    pub expires_at: u64,
    /// A nonce from [`solve_pow`].
    pub pow_nonce: u64,
    /// The public profile to publish.
    pub profile: Option<Profile>,
}

impl RecordDraft {
    /// Signs the draft with the identity key.
    pub fn sign(self, identity: &IdentityKeypair) -> Result<NameRecord, NameError> {
        let body = NameRecordBody {
            v: VERSION,
            name: normalize_name(&self.name)?,
            identity: identity.public().to_bytes(),
            devices: self.devices,
            mailboxes: self.mailboxes,
            seq: self.seq,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            pow_nonce: self.pow_nonce,
            profile: self.profile,
        };
        let body = codec::to_vec(&body);
        let sig = identity.sign(DOMAIN_NAME_RECORD, &body).to_bytes();
        Ok(NameRecord(Signed { body, sig }))
    }
}

impl NameRecord {
    /// Encodes the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes and verifies an encoded record.
    ///
    /// Rejects, in this order: oversized input, malformed encoding, unknown version, an invalid
    /// name, a record stored under another name's key (when `key` is given), a bad signature, an
    /// invalid device list, a validity window that is too long, starts too far in the future or
    /// has passed, and insufficient proof of work.
    pub fn verify(
        bytes: &[u8],
        key: Option<&[u8]>,
        now: u64,
        policy: &RecordPolicy,
    ) -> Result<VerifiedNameRecord, RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::Oversized { len: bytes.len(), max: MAX_RECORD_SIZE });
        }
        let record: NameRecord =
            codec::from_slice(bytes, MAX_RECORD_SIZE).map_err(RecordError::Decode)?;
        let body: NameRecordBody =
            record.0.decode_body(MAX_RECORD_SIZE).map_err(RecordError::Decode)?;
        crate::check_version(body.v).map_err(RecordError::Decode)?;
        let name = normalize_name(&body.name)?;
        if name != body.name {
            return Err(RecordError::Name(NameError::NotNormalized));
        }
        if key.is_some_and(|k| k != dht_key(&name).as_slice()) {
            return Err(RecordError::WrongKey { name });
        }
        let identity =
            IdentityPublic::from_bytes(&body.identity).map_err(|_| RecordError::BadSignature)?;
        if !identity.verify(DOMAIN_NAME_RECORD, &record.0.body, &record.0.signature()) {
            return Err(RecordError::BadSignature);
        }
        if body.devices.is_empty() || body.devices.len() > MAX_DEVICES {
            return Err(RecordError::BadList { what: "no devices, or more than 16" });
        }
        if body.mailboxes.len() > MAX_MAILBOXES
            || body.mailboxes.iter().any(|m| {
                m.addrs.len() > MAX_MAILBOX_ADDRS
                    || m.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
                    || libp2p_identity::PeerId::from_bytes(&m.peer_id).is_err()
            })
        {
            return Err(RecordError::BadList { what: "an invalid or too long mailbox list" });
        }
        if body.expires_at <= body.issued_at
            || body.expires_at - body.issued_at > MAX_RECORD_LIFETIME_MS
        {
            return Err(RecordError::BadValidity("lifetime must be positive and at most 7 days"));
        }
        if body.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(RecordError::BadValidity("issued more than 10 minutes in the future"));
        }
        if body.expires_at <= now {
            return Err(RecordError::Expired { expires_at: body.expires_at, now });
        }
        let claim = claim_hash(&name, &body.identity, body.pow_nonce);
        let have = leading_zero_bits(&claim);
        if have < policy.min_pow_bits {
            return Err(RecordError::InsufficientWork { have, need: policy.min_pow_bits });
        }
        if let Some(p) = &body.profile {
            p.check()?;
        }
        let mut devices = Vec::with_capacity(body.devices.len());
        for entry in &body.devices {
            let device = entry.cert.verify(Some(&identity))?;
            // The record may not outlive any prekey it lists, so a record that verifies at `now`
            // lists only prekeys that are valid at `now`.
            let prekey = entry.prekey.verify(&device.device, body.expires_at.saturating_sub(1))?;
            if devices.iter().any(|d: &RecordDevice| d.device.device == device.device) {
                return Err(RecordError::BadList { what: "the same device twice" });
            }
            devices.push(RecordDevice { device, prekey });
        }
        Ok(VerifiedNameRecord {
            name,
            user_id: identity.user_id(),
            identity,
            devices,
            mailboxes: body.mailboxes,
            seq: body.seq,
            issued_at: body.issued_at,
            expires_at: body.expires_at,
            claim_hash: claim,
            record_hash: Sha256::digest(bytes).into(),
            bytes: bytes.to_vec(),
            profile: body.profile,
        })
    }
}

/// The conflict rule: which of two valid records for the same name wins.
///
/// Returns `Ordering::Greater` when `a` wins.
/// - Same identity: the higher sequence number wins, then the later issue time, then the lower
///   record hash.
/// - Different identities: the lower claim hash (the one with more proof of work, read as a
///   256-bit big-endian number) wins; a tie of claim hashes between different keys cannot occur
///   short of a SHA-256 collision, and is then broken by the lower record hash.
pub fn compare_records(a: &VerifiedNameRecord, b: &VerifiedNameRecord) -> Ordering {
    if a.identity == b.identity {
        a.seq
            .cmp(&b.seq)
            .then(a.issued_at.cmp(&b.issued_at))
            .then(b.record_hash.cmp(&a.record_hash))
    } else {
        b.claim_hash.cmp(&a.claim_hash).then(b.record_hash.cmp(&a.record_hash))
    }
}

/// Whether a node holding `held` (valid and unexpired: the caller verified it at its time now)
/// should accept `new` in its place.
///
/// The incumbent rule: a name held by a live record stays with its key. A record of the same
/// identity replaces it when it wins [`compare_records`] (a newer sequence number), and the
/// same record again is accepted (a re-put); a record of another identity is refused however
/// much work it carries, until the held record expires. So a holder that keeps republishing
/// cannot be displaced at the nodes that hold its record, and more work decides only between
/// claims that reach a node holding neither (`select_record` for a resolver that is handed
/// both).
pub fn check_replaces(
    new: &VerifiedNameRecord,
    held: &VerifiedNameRecord,
) -> Result<(), RecordError> {
    if new.identity != held.identity {
        return Err(RecordError::NameHeld { name: new.name.clone() });
    }
    if new.bytes == held.bytes || compare_records(new, held) == Ordering::Greater {
        return Ok(());
    }
    Err(RecordError::StaleSequence { held: held.seq, got: new.seq })
}

/// Picks the record a resolver uses among the copies a lookup returned, one per holder
/// (duplicates count): the identity that the most holders returned wins (under the incumbent
/// rule, the nodes that held a name first keep it, so a later competing claim can only be
/// stored where the incumbent's record was missing); between identities returned by equally
/// many holders, the one whose best record wins [`compare_records`] (more work). The newest
/// record of the winning identity is returned.
pub fn select_record<I>(records: I) -> Option<VerifiedNameRecord>
where
    I: IntoIterator<Item = VerifiedNameRecord>,
{
    // Per identity: how many copies, and its best record.
    let mut by_identity: Vec<(usize, VerifiedNameRecord)> = Vec::new();
    for r in records {
        match by_identity.iter_mut().find(|(_, best)| best.identity == r.identity) {
            Some((count, best)) => {
                *count += 1;
                if compare_records(&r, best) == Ordering::Greater {
                    *best = r;
                }
            }
            None => by_identity.push((1, r)),
        }
    }
    by_identity
        .into_iter()
        .max_by(|(ca, a), (cb, b)| ca.cmp(cb).then_with(|| compare_records(a, b)))
        .map(|(_, best)| best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;
    use crate::identity::{DeviceKeypair, X25519Secret};

    #[test]
    fn names_normalize_and_validate() {
        assert_eq!(normalize_name("  Alice "), Ok("alice".into()));
        assert_eq!(normalize_name("a.b-c_9"), Ok("a.b-c_9".into()));
        assert_eq!(normalize_name("ab"), Err(NameError::Length { len: 2 }));
        assert_eq!(normalize_name(&"a".repeat(33)), Err(NameError::Length { len: 33 }));
        assert_eq!(normalize_name("al ice"), Err(NameError::InvalidChar { ch: ' ', pos: 2 }));
        assert_eq!(normalize_name("älice"), Err(NameError::InvalidChar { ch: 'ä', pos: 0 }));
        assert_eq!(normalize_name(".alice"), Err(NameError::BadStart { ch: '.' }));
        assert_eq!(normalize_name("@bob"), Err(NameError::InvalidChar { ch: '@', pos: 0 }));
    }

    #[test]
    fn pow_meets_difficulty() {
        let id = IdentityKeypair::from_secret(&[3u8; 32]);
        let nonce = solve_pow("alice", &id.public(), 10, 0);
        assert!(leading_zero_bits(&claim_hash("alice", &id.public().to_bytes(), nonce)) >= 10);
    }

    #[test]
    fn leading_zeros_counts_bits() {
        let mut h = [0xffu8; 32];
        assert_eq!(leading_zero_bits(&h), 0);
        h[0] = 0;
        h[1] = 0x10;
        assert_eq!(leading_zero_bits(&h), 11);
        assert_eq!(leading_zero_bits(&[0u8; 32]), 256);
    }

    pub(crate) fn record(id: &IdentityKeypair, name: &str, seq: u64, bits: u32) -> NameRecord {
        let dev = DeviceKeypair::from_secret(&[9u8; 32]);
        let st = X25519Secret::from_bytes([10u8; 32]);
        let pk = X25519Secret::from_bytes([11u8; 32]);
        let cert = DeviceCertificate::issue(id, &dev, &st, 1_000, "phone");
        let prekey = SignedPrekey::sign(&dev, 1, &pk, 1_000, 1_000_000);
        RecordDraft {
            name: name.into(),
            devices: vec![DeviceEntry { cert, prekey }],
            mailboxes: vec![],
            seq,
            issued_at: 1_000,
            expires_at: 100_000,
            pow_nonce: solve_pow(name, &id.public(), bits, 0),
            profile: None,
        }
        .sign(id)
        .expect("valid name")
    }

    #[test]
    fn verify_rejects_each_fault() {
        let policy = RecordPolicy { min_pow_bits: 6 };
        let id = IdentityKeypair::from_secret(&[1u8; 32]);
        let rec = record(&id, "alice", 1, 6).to_bytes();
        let key = dht_key("alice");
        let v = NameRecord::verify(&rec, Some(&key), 2_000, &policy).expect("valid");
        assert_eq!(v.name, "alice");
        assert_eq!(v.devices.len(), 1);
        assert!(matches!(
            NameRecord::verify(&rec, Some(&dht_key("bob")), 2_000, &policy),
            Err(RecordError::WrongKey { .. })
        ));
        assert!(matches!(
            NameRecord::verify(&rec, Some(&key), 100_000, &policy),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            NameRecord::verify(&rec, Some(&key), 2_000, &RecordPolicy { min_pow_bits: 30 }),
            Err(RecordError::InsufficientWork { need: 30, .. })
        ));
        assert!(matches!(
            NameRecord::verify(&vec![0u8; MAX_RECORD_SIZE + 1], None, 2_000, &policy),
            Err(RecordError::Oversized { .. })
        ));
        // The same record in another encoding (a map key as a byte string instead of text)
        // is not accepted: only the canonical encoding decodes.
        let mut other = rec.clone();
        other[1] ^= 0x20;
        assert!(matches!(
            NameRecord::verify(&other, Some(&key), 2_000, &policy),
            Err(RecordError::Decode(DecodeError::Malformed(_)))
        ));
        let mut forged: NameRecord = codec::from_slice(&rec, MAX_RECORD_SIZE).expect("decodes");
        forged.0.sig[10] ^= 0x40;
        assert_eq!(
            NameRecord::verify(&forged.to_bytes(), Some(&key), 2_000, &policy),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn conflict_rule_and_sequence() {
        let policy = RecordPolicy { min_pow_bits: 4 };
        let a = IdentityKeypair::from_secret(&[1u8; 32]);
        let b = IdentityKeypair::from_secret(&[2u8; 32]);
        let verify =
            |r: NameRecord| NameRecord::verify(&r.to_bytes(), None, 2_000, &policy).expect("valid");
        let a1 = verify(record(&a, "carol", 1, 4));
        let a2 = verify(record(&a, "carol", 2, 4));
        assert!(check_replaces(&a2, &a1).is_ok());
        assert_eq!(check_replaces(&a1, &a2), Err(RecordError::StaleSequence { held: 2, got: 1 }));
        assert!(check_replaces(&a1, &a1).is_ok());
        let b1 = verify(record(&b, "carol", 9, 4));
        // One copy each: more work decides.
        let winner = select_record([a1.clone(), b1.clone()]).expect("one");
        let expected = if a1.claim_hash < b1.claim_hash { &a1 } else { &b1 };
        assert_eq!(winner.identity, expected.identity);
        let (more, less) = if a1.claim_hash < b1.claim_hash { (&a1, &b1) } else { (&b1, &a1) };
        // The incumbent rule: a held record is never displaced by another identity's, even
        // one with more work.
        assert!(matches!(check_replaces(less, more), Err(RecordError::NameHeld { .. })));
        assert!(matches!(check_replaces(more, less), Err(RecordError::NameHeld { .. })));
        // More holders beat more work; the newest record of the winner is returned.
        let pick = |copies: &[&VerifiedNameRecord]| {
            select_record(copies.iter().map(|r| (*r).clone())).expect("one")
        };
        assert_eq!(pick(&[less, less, more]).identity, less.identity);
        assert_eq!(pick(&[more, less, more]).identity, more.identity);
        assert_eq!(pick(&[&a1, &a2, &b1, &b1]).identity, b1.identity);
        let a_wins = pick(&[&a1, &a2, &a1, &b1]);
        assert_eq!((a_wins.identity, a_wins.seq), (a.public(), 2));
    }
}
