//! Double Ratchet sessions between two devices.
//!
//! A session starts with a sealed envelope ([`crate::envelope`], Noise `X` to the recipient's
//! signed prekey) whose payload carries a [`SessionInit`]: the initiator's first ratchet public
//! key. Both sides derive the session's secret from the handshake's split keys (secret to the
//! two devices) and its id from the handshake hash (public). From then on each message is
//! encrypted with a key used once, taken from a symmetric chain (HMAC-SHA-256), and each time
//! the direction of the conversation changes the side that speaks steps a Diffie-Hellman ratchet
//! (a new X25519 key pair, its output mixed into the root key with HKDF-SHA-256), as in Signal's
//! Double Ratchet. The state is a plain value: the caller stores it and passes time and
//! randomness in.
//!
//! What it gives (see `docs/security.md`):
//! - **forward secrecy per message**: a message key is derived, used once and deleted; chain
//!   keys only move forward, so a device compromised later cannot recompute the keys of
//!   messages it already opened (except those still held as skipped keys, below);
//! - **post-compromise security after one round trip**: once both sides have stepped the
//!   Diffie-Hellman ratchet with fresh key pairs after a compromise of the state, the attacker
//!   who copied that state can no longer follow.
//!
//! Messages may arrive out of order or very late (mailboxes, retries): the keys of messages
//! skipped over are kept, at most [`MAX_SKIPPED`] per session and for at most
//! [`SKIPPED_MAX_AGE_MS`]; a header that would skip more than [`MAX_SKIP`] keys at once is
//! refused. Decryption works on a copy of the state and keeps it only if the message opens, so
//! a forged or corrupted message changes nothing.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroize;

use crate::codec;
use crate::error::DecodeError;
use crate::identity::X25519Secret;

/// Most message keys one header may make the receiver skip over (in one chain).
pub const MAX_SKIP: u32 = 2_000;
/// Most skipped message keys a session keeps; the oldest go first.
pub const MAX_SKIPPED: usize = 2_000;
/// How long a skipped message key is kept: 30 days (a message held that long by a mailbox or an
/// outbox still opens; one later does not).
pub const SKIPPED_MAX_AGE_MS: u64 = 30 * 24 * 3600 * 1000;
/// How many of the other side's earlier ratchet keys a session remembers, to tell a replayed
/// message ([`SessionError::KeyGone`]) from a forged one ([`SessionError::Decrypt`]).
pub const MAX_RETIRED: usize = 64;
/// Largest encoded session state accepted from the store.
pub const MAX_SESSION_STATE: usize = 256 * 1024;

const INFO_SECRET: &[u8] = b"kith/v1/session/secret";
const INFO_ROOT: &[u8] = b"kith/v1/session/root";
const DOMAIN_ID: &[u8] = b"kith/v1/session/id";
const DOMAIN_AD: &[u8] = b"kith/v1/session/message";

/// The initiator's part of a new session, carried inside the sealed payload of the envelope
/// that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInit {
    /// The initiator's first ratchet public key.
    #[serde(with = "serde_bytes")]
    pub ratchet: [u8; 32],
}

/// A message encrypted in a session: the ratchet header in the clear, then the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMessage {
    /// The session's id.
    #[serde(with = "serde_bytes")]
    pub session: [u8; 16],
    /// The sender's current ratchet public key.
    #[serde(with = "serde_bytes")]
    pub dh: [u8; 32],
    /// How many messages the sender sent in its previous sending chain.
    pub pn: u32,
    /// This message's number in the sender's current chain.
    pub n: u32,
    /// ChaCha20-Poly1305 of the plaintext under the message key (nonce 0: each key is used
    /// once), with the header as associated data.
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// Why a session message did not open.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    /// The message belongs to another session.
    #[error("message of another session")]
    WrongSession,
    /// Its key was used already (a message opened before) or dropped (too old, or pushed out
    /// by newer skipped keys).
    #[error("message key already used or expired")]
    KeyGone,
    /// The header would skip more message keys than allowed.
    #[error("message is {0} messages ahead of its chain (limit {MAX_SKIP})")]
    TooFarAhead(u64),
    /// The ciphertext does not authenticate: altered, or not for this session.
    #[error("session message does not decrypt")]
    Decrypt,
    /// The sending chain is exhausted (2^32 messages).
    #[error("session exhausted")]
    Exhausted,
    /// A stored session state does not decode.
    #[error("session state: {0}")]
    State(#[from] DecodeError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Chain {
    #[serde(with = "serde_bytes")]
    key: [u8; 32],
    n: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Skipped {
    #[serde(with = "serde_bytes")]
    dh: [u8; 32],
    n: u32,
    #[serde(with = "serde_bytes")]
    key: [u8; 32],
    at: u64,
}

/// One side of a session. Encode it with [`Session::to_bytes`] to store it; every change must
/// be stored before what it produced leaves the device (a sealed message) or is acknowledged
/// (an opened one).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    v: u8,
    #[serde(with = "serde_bytes")]
    id: [u8; 16],
    #[serde(with = "serde_bytes")]
    root: [u8; 32],
    #[serde(with = "serde_bytes")]
    own_secret: [u8; 32],
    #[serde(with = "serde_bytes")]
    own_public: [u8; 32],
    #[serde(with = "serde_bytes")]
    remote: [u8; 32],
    send: Option<Chain>,
    recv: Option<Chain>,
    prev_n: u32,
    skipped: Vec<Skipped>,
    /// The other side's earlier ratchet keys, newest last (at most [`MAX_RETIRED`]): a message
    /// under one of them whose key is not kept was opened already, or expired.
    #[serde(default)]
    retired: Vec<serde_bytes::ByteArray<32>>,
    /// Whether this side started the session.
    initiator: bool,
    /// When the session was created (milliseconds since the epoch).
    created_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &hex::encode(self.id))
            .field("initiator", &self.initiator)
            .field("sent", &self.send.as_ref().map(|c| c.n))
            .field("received", &self.recv.as_ref().map(|c| c.n))
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.root.zeroize();
        self.own_secret.zeroize();
        if let Some(c) = self.send.as_mut() {
            c.key.zeroize();
        }
        if let Some(c) = self.recv.as_mut() {
            c.key.zeroize();
        }
        for s in &mut self.skipped {
            s.key.zeroize();
        }
    }
}

/// What a Noise handshake gives a new session: its secret and its id.
pub(crate) struct HandshakeKeys {
    pub(crate) secret: [u8; 32],
    pub(crate) id: [u8; 16],
}

impl HandshakeKeys {
    /// From the handshake's split keys (secret) and its hash (public).
    pub(crate) fn derive(k1: &[u8; 32], k2: &[u8; 32], hash: &[u8]) -> Self {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(k1);
        ikm[32..].copy_from_slice(k2);
        let mut secret = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's limit of 8,160: expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, &ikm).expand(INFO_SECRET, &mut secret);
        ikm.zeroize();
        let d =
            Sha256::new().chain_update(DOMAIN_ID).chain_update([0]).chain_update(hash).finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        HandshakeKeys { secret, id }
    }
}

impl Drop for HandshakeKeys {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn dh(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    let s = x25519_dalek::StaticSecret::from(*secret);
    s.diffie_hellman(&x25519_dalek::PublicKey::from(*public)).to_bytes()
}

fn new_pair<R: RngCore + CryptoRng>(rng: &mut R) -> ([u8; 32], [u8; 32]) {
    let s = X25519Secret::generate(rng);
    (*s.to_bytes(), s.public())
}

/// KDF_RK: the new root key and a new chain key from the root key and a DH output.
fn kdf_root(root: &[u8; 32], mut dh_out: [u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    let _ = Hkdf::<Sha256>::new(Some(root), &dh_out).expand(INFO_ROOT, &mut okm);
    dh_out.zeroize();
    let (mut r, mut c) = ([0u8; 32], [0u8; 32]);
    r.copy_from_slice(&okm[..32]);
    c.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (r, c)
}

/// KDF_CK: the next chain key and this step's message key.
fn kdf_chain(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    // HMAC pads a key shorter than the hash's block (64 bytes) with zeros: the padded key
    // gives the same MAC, and a fixed-size key cannot be refused.
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(ck);
    let step = |b: u8| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
        mac.update(&[b]);
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        out
    };
    let out = (step(2), step(1));
    key.zeroize();
    out
}

fn associated(id: &[u8; 16], recipient: &[u8; 32], dh: &[u8; 32], pn: u32, n: u32) -> Vec<u8> {
    let mut ad = Vec::with_capacity(DOMAIN_AD.len() + 1 + 16 + 32 + 32 + 8);
    ad.extend_from_slice(DOMAIN_AD);
    ad.push(0);
    ad.extend_from_slice(id);
    ad.extend_from_slice(recipient);
    ad.extend_from_slice(dh);
    ad.extend_from_slice(&pn.to_be_bytes());
    ad.extend_from_slice(&n.to_be_bytes());
    ad
}

impl Session {
    /// The initiator's side, after sealing the envelope that carries `init` to the
    /// recipient's prekey `their_prekey`. Returns the session and the [`SessionInit`] to put in
    /// that envelope; the caller seals the envelope first to learn the handshake's keys, so this
    /// takes the ratchet pair generated before.
    pub(crate) fn initiate(
        keys: &HandshakeKeys,
        ratchet: ([u8; 32], [u8; 32]),
        their_prekey: &[u8; 32],
        now: u64,
    ) -> Session {
        let (root, ck) = kdf_root(&keys.secret, dh(&ratchet.0, their_prekey));
        Session {
            v: crate::VERSION,
            id: keys.id,
            root,
            own_secret: ratchet.0,
            own_public: ratchet.1,
            remote: *their_prekey,
            send: Some(Chain { key: ck, n: 0 }),
            recv: None,
            prev_n: 0,
            skipped: Vec::new(),
            retired: Vec::new(),
            initiator: true,
            created_at: now,
        }
    }

    /// A fresh ratchet key pair for [`Session::initiate`].
    pub(crate) fn ratchet_pair<R: RngCore + CryptoRng>(rng: &mut R) -> ([u8; 32], [u8; 32]) {
        new_pair(rng)
    }

    /// The recipient's side, on opening an envelope sealed to `prekey` that carried `init`.
    pub(crate) fn accept<R: RngCore + CryptoRng>(
        rng: &mut R,
        keys: &HandshakeKeys,
        prekey: &X25519Secret,
        init: &SessionInit,
        now: u64,
    ) -> Session {
        let (root, recv_ck) = kdf_root(&keys.secret, dh(&prekey.to_bytes(), &init.ratchet));
        let (own_secret, own_public) = new_pair(rng);
        let (root, send_ck) = kdf_root(&root, dh(&own_secret, &init.ratchet));
        Session {
            v: crate::VERSION,
            id: keys.id,
            root,
            own_secret,
            own_public,
            remote: init.ratchet,
            send: Some(Chain { key: send_ck, n: 0 }),
            recv: Some(Chain { key: recv_ck, n: 0 }),
            prev_n: 0,
            skipped: Vec::new(),
            retired: Vec::new(),
            initiator: false,
            created_at: now,
        }
    }

    /// The session's id.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Whether this side started the session.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// When the session was created.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Whether a message from the other side has opened in it (it holds the session too).
    pub fn has_received(&self) -> bool {
        self.recv.as_ref().is_some_and(|c| c.n > 0) || !self.initiator
    }

    /// How many skipped message keys it holds.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Encrypts `plaintext` to the other side's device `recipient` (its ed25519 key, bound into
    /// the associated data), advancing the sending chain.
    pub fn encrypt(
        &mut self,
        recipient: &[u8; 32],
        plaintext: &[u8],
    ) -> Result<SessionMessage, SessionError> {
        let chain = self.send.as_mut().ok_or(SessionError::Exhausted)?;
        if chain.n == u32::MAX {
            return Err(SessionError::Exhausted);
        }
        let (next, mut mk) = kdf_chain(&chain.key);
        chain.key = next;
        let n = chain.n;
        chain.n += 1;
        let ad = associated(&self.id, recipient, &self.own_public, self.prev_n, n);
        let ct = ChaCha20Poly1305::new(Key::from_slice(&mk))
            .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: plaintext, aad: &ad })
            .map_err(|_| SessionError::Decrypt);
        mk.zeroize();
        Ok(SessionMessage { session: self.id, dh: self.own_public, pn: self.prev_n, n, ct: ct? })
    }

    /// Decrypts a message sent to this device (`own`, its ed25519 key), at time `now`. On any
    /// error the state is unchanged.
    pub fn decrypt<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        own: &[u8; 32],
        m: &SessionMessage,
        now: u64,
    ) -> Result<Vec<u8>, SessionError> {
        if m.session != self.id {
            return Err(SessionError::WrongSession);
        }
        let mut s = self.clone();
        s.skipped.retain(|k| k.at.saturating_add(SKIPPED_MAX_AGE_MS) > now);
        let ad = associated(&s.id, own, &m.dh, m.pn, m.n);
        if let Some(i) = s.skipped.iter().position(|k| k.dh == m.dh && k.n == m.n) {
            let k = s.skipped.remove(i);
            let pt = open(&k.key, &ad, &m.ct)?;
            *self = s;
            return Ok(pt);
        }
        if s.retired.iter().any(|k| **k == m.dh) {
            return Err(SessionError::KeyGone);
        }
        if m.dh != s.remote {
            // A new ratchet key from the other side: keep the rest of the current receiving
            // chain's keys, then step the DH ratchet.
            if s.recv.is_some() {
                s.skip_to(m.pn, now)?;
            }
            s.prev_n = s.send.as_ref().map_or(0, |c| c.n);
            s.retired.push(serde_bytes::ByteArray::new(s.remote));
            if s.retired.len() > MAX_RETIRED {
                s.retired.remove(0);
            }
            s.remote = m.dh;
            let (root, recv_ck) = kdf_root(&s.root, dh(&s.own_secret, &s.remote));
            let (own_secret, own_public) = new_pair(rng);
            let (root, send_ck) = kdf_root(&root, dh(&own_secret, &s.remote));
            s.root = root;
            s.own_secret = own_secret;
            s.own_public = own_public;
            s.recv = Some(Chain { key: recv_ck, n: 0 });
            s.send = Some(Chain { key: send_ck, n: 0 });
        } else if s.recv.as_ref().is_none_or(|c| m.n < c.n) {
            // The current chain's key for this number was used already (or this side never
            // received in it).
            return Err(SessionError::KeyGone);
        }
        s.skip_to(m.n, now)?;
        let chain = s.recv.as_mut().ok_or(SessionError::KeyGone)?;
        let (next, mut mk) = kdf_chain(&chain.key);
        chain.key = next;
        chain.n += 1;
        let pt = open(&mk, &ad, &m.ct);
        mk.zeroize();
        let pt = pt?;
        *self = s;
        Ok(pt)
    }

    /// Keeps the keys of the receiving chain up to (not including) number `until`.
    fn skip_to(&mut self, until: u32, now: u64) -> Result<(), SessionError> {
        let Some(chain) = self.recv.as_mut() else { return Ok(()) };
        if until <= chain.n {
            return Ok(());
        }
        let gap = u64::from(until - chain.n);
        if gap > u64::from(MAX_SKIP) {
            return Err(SessionError::TooFarAhead(gap));
        }
        while chain.n < until {
            let (next, mk) = kdf_chain(&chain.key);
            self.skipped.push(Skipped { dh: self.remote, n: chain.n, key: mk, at: now });
            chain.key = next;
            chain.n += 1;
        }
        if self.skipped.len() > MAX_SKIPPED {
            let extra = self.skipped.len() - MAX_SKIPPED;
            self.skipped.drain(..extra);
        }
        Ok(())
    }

    /// Encodes the state for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a stored state.
    pub fn from_bytes(bytes: &[u8]) -> Result<Session, SessionError> {
        let s: Session = codec::from_slice(bytes, MAX_SESSION_STATE)?;
        crate::check_version(s.v)?;
        Ok(s)
    }
}

fn open(key: &[u8; 32], ad: &[u8], ct: &[u8]) -> Result<Vec<u8>, SessionError> {
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: ct, aad: ad })
        .map_err(|_| SessionError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    type Rng = rand_chacha::ChaCha20Rng;

    const A: [u8; 32] = [0xa; 32];
    const B: [u8; 32] = [0xb; 32];

    /// A pair of sessions as a sealed envelope would start them.
    pub(crate) fn pair(rng: &mut Rng) -> (Session, Session) {
        let keys = HandshakeKeys::derive(&[1; 32], &[2; 32], &[3; 32]);
        let prekey = X25519Secret::generate(rng);
        let ratchet = Session::ratchet_pair(rng);
        let init = SessionInit { ratchet: ratchet.1 };
        let alice = Session::initiate(&keys, ratchet, &prekey.public(), 0);
        let bob = Session::accept(rng, &keys, &prekey, &init, 0);
        (alice, bob)
    }

    #[test]
    fn messages_open_in_both_directions_and_only_once() {
        let mut rng = Rng::seed_from_u64(1);
        let (mut alice, mut bob) = pair(&mut rng);
        for round in 0..3u8 {
            let m1 = alice.encrypt(&B, &[round, 1]).expect("encrypts");
            let m2 = alice.encrypt(&B, &[round, 2]).expect("encrypts");
            assert_eq!(bob.decrypt(&mut rng, &B, &m1, 0), Ok(vec![round, 1]));
            assert_eq!(bob.decrypt(&mut rng, &B, &m2, 0), Ok(vec![round, 2]));
            assert_eq!(bob.decrypt(&mut rng, &B, &m2, 0), Err(SessionError::KeyGone));
            let r = bob.encrypt(&A, &[round, 3]).expect("encrypts");
            assert_eq!(alice.decrypt(&mut rng, &A, &r, 0), Ok(vec![round, 3]));
            assert_eq!(alice.decrypt(&mut rng, &A, &r, 0), Err(SessionError::KeyGone));
        }
        assert!(alice.has_received() && bob.has_received());
    }

    #[test]
    fn each_direction_change_steps_the_dh_ratchet() {
        let mut rng = Rng::seed_from_u64(2);
        let (mut alice, mut bob) = pair(&mut rng);
        let a1 = alice.encrypt(&B, b"1").expect("encrypts");
        bob.decrypt(&mut rng, &B, &a1, 0).expect("opens");
        let b1 = bob.encrypt(&A, b"2").expect("encrypts");
        alice.decrypt(&mut rng, &A, &b1, 0).expect("opens");
        let a2 = alice.encrypt(&B, b"3").expect("encrypts");
        assert_ne!(a1.dh, a2.dh, "alice has a new ratchet key after bob spoke");
        assert_eq!((a2.n, a2.pn), (0, 1));
        let before = bob.clone();
        bob.decrypt(&mut rng, &B, &a2, 0).expect("opens");
        assert_ne!(before.root, bob.root);
    }

    #[test]
    fn out_of_order_messages_open_from_skipped_keys() {
        let mut rng = Rng::seed_from_u64(3);
        let (mut alice, mut bob) = pair(&mut rng);
        let ms: Vec<_> = (0..5u8).map(|i| alice.encrypt(&B, &[i]).expect("encrypts")).collect();
        assert_eq!(bob.decrypt(&mut rng, &B, &ms[4], 0), Ok(vec![4]));
        assert_eq!(bob.skipped_keys(), 4);
        // Bob answers: alice steps the ratchet; her older messages still open at bob.
        let r = bob.encrypt(&A, b"r").expect("encrypts");
        alice.decrypt(&mut rng, &A, &r, 0).expect("opens");
        let late = alice.encrypt(&B, b"late").expect("encrypts");
        assert_eq!(bob.decrypt(&mut rng, &B, &late, 0), Ok(b"late".to_vec()));
        for i in [2usize, 0, 3, 1] {
            assert_eq!(bob.decrypt(&mut rng, &B, &ms[i], 0), Ok(vec![i as u8]));
        }
        assert_eq!(bob.skipped_keys(), 0);
    }

    #[test]
    fn skipped_keys_are_bounded_and_expire() {
        let mut rng = Rng::seed_from_u64(4);
        let (mut alice, mut bob) = pair(&mut rng);
        let first = alice.encrypt(&B, b"first").expect("encrypts");
        for _ in 0..MAX_SKIP {
            alice.encrypt(&B, b"x").expect("encrypts");
        }
        let far = alice.encrypt(&B, b"far").expect("encrypts");
        assert_eq!(
            bob.decrypt(&mut rng, &B, &far, 0),
            Err(SessionError::TooFarAhead(u64::from(MAX_SKIP) + 1))
        );
        let mut near = alice.encrypt(&B, b"near").expect("encrypts");
        // A header that lies about its number is refused without changing the state.
        near.n = MAX_SKIP - 1;
        let before = bob.clone();
        assert_eq!(bob.decrypt(&mut rng, &B, &near, 0), Err(SessionError::Decrypt));
        assert!(before == bob);
        // Skipped keys expire.
        let (mut alice, mut bob) = pair(&mut rng);
        let old = alice.encrypt(&B, b"old").expect("encrypts");
        let new = alice.encrypt(&B, b"new").expect("encrypts");
        bob.decrypt(&mut rng, &B, &new, 10).expect("opens");
        assert_eq!(
            bob.decrypt(&mut rng, &B, &old, 10 + SKIPPED_MAX_AGE_MS),
            Err(SessionError::KeyGone)
        );
        assert_eq!(bob.skipped_keys(), 1, "a failed open keeps the state");
        assert_eq!(bob.decrypt(&mut rng, &B, &old, 11), Ok(b"old".to_vec()));
        let _ = first;
    }

    #[test]
    fn tampering_and_wrong_recipient_fail_and_change_nothing() {
        let mut rng = Rng::seed_from_u64(5);
        let (mut alice, mut bob) = pair(&mut rng);
        let m = alice.encrypt(&B, b"hello").expect("encrypts");
        let before = bob.clone();
        let mut bad = m.clone();
        bad.ct[0] ^= 1;
        assert_eq!(bob.decrypt(&mut rng, &B, &bad, 0), Err(SessionError::Decrypt));
        let mut bad = m.clone();
        bad.pn = 7;
        assert_eq!(bob.decrypt(&mut rng, &B, &bad, 0), Err(SessionError::Decrypt));
        assert_eq!(bob.decrypt(&mut rng, &A, &m, 0), Err(SessionError::Decrypt));
        let mut bad = m.clone();
        bad.session = [9; 16];
        assert_eq!(bob.decrypt(&mut rng, &B, &bad, 0), Err(SessionError::WrongSession));
        assert!(before == bob);
        assert_eq!(bob.decrypt(&mut rng, &B, &m, 0), Ok(b"hello".to_vec()));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Send(bool),
        Deliver(usize),
        Replay(usize),
        Drop(usize),
        Restart(bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => any::<bool>().prop_map(Op::Send),
            4 => any::<usize>().prop_map(Op::Deliver),
            1 => any::<usize>().prop_map(Op::Replay),
            1 => any::<usize>().prop_map(Op::Drop),
            1 => any::<bool>().prop_map(Op::Restart),
        ]
    }

    proptest::proptest! {
        /// Random interleavings of sends both ways, deliveries in any order, replays, losses and
        /// restarts (the state stored and read back): every message delivered opens once, to
        /// its plaintext, and never again.
        #[test]
        fn every_message_opens_exactly_once(seed: u64, ops in proptest::collection::vec(op(), 1..150)) {
            let mut rng = Rng::seed_from_u64(seed);
            let (alice, bob) = pair(&mut rng);
            let mut sides = [alice, bob];
            let devices = [A, B];
            // In flight: (to side, message, plaintext); delivered: the same, kept for replays.
            let mut flight: Vec<(usize, SessionMessage, Vec<u8>)> = Vec::new();
            let mut delivered: Vec<(usize, SessionMessage)> = Vec::new();
            let mut count = 0u32;
            for op in ops {
                match op {
                    Op::Send(from_bob) => {
                        let (from, to) = if from_bob { (1, 0) } else { (0, 1) };
                        count += 1;
                        let text = count.to_be_bytes().to_vec();
                        let m = sides[from].encrypt(&devices[to], &text).expect("encrypts");
                        flight.push((to, m, text));
                    }
                    Op::Deliver(i) if !flight.is_empty() => {
                        let (to, m, text) = flight.remove(i % flight.len());
                        let got = sides[to].decrypt(&mut rng, &devices[to], &m, 0);
                        proptest::prop_assert_eq!(got, Ok(text));
                        delivered.push((to, m));
                    }
                    Op::Replay(i) if !delivered.is_empty() => {
                        let (to, m) = delivered[i % delivered.len()].clone();
                        let got = sides[to].decrypt(&mut rng, &devices[to], &m, 0);
                        proptest::prop_assert_eq!(got, Err(SessionError::KeyGone));
                    }
                    Op::Drop(i) if !flight.is_empty() => {
                        flight.remove(i % flight.len());
                    }
                    Op::Restart(bob) => {
                        let side = usize::from(bob);
                        sides[side] = Session::from_bytes(&sides[side].to_bytes()).expect("decodes");
                    }
                    _ => {}
                }
            }
            // What is still in flight opens too, in any order.
            while let Some((to, m, text)) = flight.pop() {
                proptest::prop_assert_eq!(sides[to].decrypt(&mut rng, &devices[to], &m, 0), Ok(text));
            }
        }
    }

    #[test]
    fn state_survives_encoding() {
        let mut rng = Rng::seed_from_u64(6);
        let (mut alice, bob) = pair(&mut rng);
        let m = alice.encrypt(&B, b"x").expect("encrypts");
        let mut bob = Session::from_bytes(&bob.to_bytes()).expect("decodes");
        assert_eq!(bob.decrypt(&mut rng, &B, &m, 0), Ok(b"x".to_vec()));
        assert!(Session::from_bytes(&[0xff, 0x00]).is_err());
    }
}
