//! Group messages: encrypted with the group's epoch key, signed by the sending device inside
//! the ciphertext, carried over gossipsub.
//!
//! A [`GroupEnvelope`] is `XChaCha20-Poly1305(epoch key, random 24-byte nonce,
//! associated data = "kith/v1/group" || 0x00 || group id || epoch as u64 BE)` of a
//! [`GroupPlain`]: the sender's device certificate, the encoded message, the device's sequence
//! number for the group, and the device's ed25519 signature over
//! `"kith/v1/group-sig2" || 0x00 || group id || epoch || seq || message` (all numbers u64 BE).
//! Envelopes without a sequence number (from before it existed) are signed over
//! `"kith/v1/group-sig" || 0x00 || group id || epoch || message` and still open.
//!
//! The sequence number counts the group messages one device sealed for one group, from 1. It is
//! inside the signature, so no other member can change it, and it lets a member prove which
//! messages of a device it lacks: a number missing between two it holds.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::envelope::SenderDevice;
use crate::error::{DecodeError, EnvelopeError};
use crate::identity::{DeviceCertificate, DeviceKeypair};
use crate::message::{ConversationId, Message, MAX_MESSAGE_SIZE};
use crate::VERSION;

/// Domain of the associated data.
pub const DOMAIN_GROUP: &[u8] = b"kith/v1/group";
/// Domain of the device signature of an envelope without a sequence number.
pub const DOMAIN_GROUP_SIG: &[u8] = b"kith/v1/group-sig";
/// Domain of the device signature of an envelope with a sequence number.
pub const DOMAIN_GROUP_SIG_SEQ: &[u8] = b"kith/v1/group-sig2";
/// Domain of the topic derivation.
pub const DOMAIN_GROUP_TOPIC: &[u8] = b"kith/v1/group-topic";
/// Largest encoded group envelope (also gossipsub's transmit limit for Kith).
pub const MAX_GROUP_ENVELOPE: usize = 64 * 1024;

/// The gossipsub topic of a group: `"kith-group/"` and 32 hex digits of
/// `SHA-256("kith/v1/group-topic" || 0x00 || group id)`.
pub fn topic(group: &ConversationId) -> String {
    let d = Sha256::new()
        .chain_update(DOMAIN_GROUP_TOPIC)
        .chain_update([0u8])
        .chain_update(group.0)
        .finalize();
    format!("kith-group/{}", hex::encode(&d[..16]))
}

/// An encrypted group message as published on the group's topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEnvelope {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The group.
    pub group: ConversationId,
    /// The epoch whose key encrypts it.
    pub epoch: u64,
    /// Random nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 24],
    /// The ciphertext of a [`GroupPlain`].
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The plaintext of a group envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlain {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The sending device's certificate.
    pub cert: DeviceCertificate,
    /// The encoded message.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// The device's signature (see the module documentation).
    #[serde(with = "serde_bytes")]
    pub sig: [u8; 64],
    /// The device's sequence number in this group (absent from envelopes sealed before it
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// An opened group envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedGroup {
    /// The authenticated sender.
    pub sender: SenderDevice,
    /// The message.
    pub message: Message,
    /// The sending device's sequence number in this group, if the envelope has one.
    pub seq: Option<u64>,
}

fn aad(group: &ConversationId, epoch: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(DOMAIN_GROUP.len() + 25);
    a.extend_from_slice(DOMAIN_GROUP);
    a.push(0);
    a.extend_from_slice(&group.0);
    a.extend_from_slice(&epoch.to_be_bytes());
    a
}

fn signed_bytes(group: &ConversationId, epoch: u64, seq: Option<u64>, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN_GROUP_SIG_SEQ.len() + 33 + message.len());
    m.extend_from_slice(if seq.is_some() { DOMAIN_GROUP_SIG_SEQ } else { DOMAIN_GROUP_SIG });
    m.push(0);
    m.extend_from_slice(&group.0);
    m.extend_from_slice(&epoch.to_be_bytes());
    if let Some(seq) = seq {
        m.extend_from_slice(&seq.to_be_bytes());
    }
    m.extend_from_slice(message);
    m
}

impl GroupEnvelope {
    /// Signs `message` with the device key and encrypts it with the epoch key. `seq` is the
    /// device's sequence number for the group (`None` only to make envelopes of the older kind).
    pub fn seal<R: RngCore + CryptoRng>(
        rng: &mut R,
        key: &[u8; 32],
        epoch: u64,
        (cert, device): (&DeviceCertificate, &DeviceKeypair),
        seq: Option<u64>,
        message: &Message,
    ) -> Result<GroupEnvelope, EnvelopeError> {
        let group = message.conversation;
        let bytes = message.to_bytes();
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(EnvelopeError::TooLarge { len: bytes.len(), max: MAX_MESSAGE_SIZE });
        }
        let sig = ed25519_dalek::Signer::sign(
            &signing_key(device),
            &signed_bytes(&group, epoch, seq, &bytes),
        )
        .to_bytes();
        let plain =
            codec::to_vec(&GroupPlain { v: VERSION, cert: cert.clone(), message: bytes, sig, seq });
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(key.into());
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad(&group, epoch) })
            .map_err(|_| EnvelopeError::Crypto("encryption failed".into()))?;
        let env = GroupEnvelope { v: VERSION, group, epoch, nonce, ciphertext };
        let len = env.to_bytes().len();
        if len > MAX_GROUP_ENVELOPE {
            return Err(EnvelopeError::TooLarge { len, max: MAX_GROUP_ENVELOPE });
        }
        Ok(env)
    }

    /// Decrypts with the epoch key and checks the sender's certificate and signature and that
    /// the message belongs to this group.
    pub fn open(&self, key: &[u8; 32]) -> Result<OpenedGroup, EnvelopeError> {
        let cipher = XChaCha20Poly1305::new(key.into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload { msg: &self.ciphertext, aad: &aad(&self.group, self.epoch) },
            )
            .map_err(|_| EnvelopeError::Crypto("does not decrypt with the epoch key".into()))?;
        let plain: GroupPlain = codec::from_slice(&plain, MAX_GROUP_ENVELOPE)?;
        crate::check_version(plain.v)?;
        let cert = plain.cert.verify(None)?;
        let device =
            VerifyingKey::from_bytes(&cert.device).map_err(|_| EnvelopeError::BadSignature)?;
        device
            .verify(
                &signed_bytes(&self.group, self.epoch, plain.seq, &plain.message),
                &Signature::from_bytes(&plain.sig),
            )
            .map_err(|_| EnvelopeError::BadSignature)?;
        let message = Message::from_bytes(&plain.message)?;
        if message.sender != cert.identity.user_id() || message.conversation != self.group {
            return Err(EnvelopeError::SenderMismatch);
        }
        Ok(OpenedGroup {
            sender: SenderDevice {
                identity: cert.identity,
                user_id: cert.identity.user_id(),
                device: cert.device,
                peer_id: cert.peer_id,
                certified_at: cert.created_at,
            },
            message,
            seq: plain.seq,
        })
    }

    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: GroupEnvelope = codec::from_slice(bytes, MAX_GROUP_ENVELOPE)?;
        crate::check_version(env.v)?;
        Ok(env)
    }
}

fn signing_key(device: &DeviceKeypair) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&device.secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{IdentityKeypair, X25519Secret};
    use crate::message::{Content, MessageId, Text};
    use crate::UserId;

    fn setup() -> (IdentityKeypair, DeviceKeypair, DeviceCertificate, Message) {
        let id = IdentityKeypair::from_secret(&[1; 32]);
        let dev = DeviceKeypair::from_secret(&[2; 32]);
        let cert = DeviceCertificate::issue(&id, &dev, &X25519Secret::from_bytes([3; 32]), 1, "x");
        let m = Message {
            v: VERSION,
            id: MessageId([4; 16]),
            conversation: ConversationId([5; 16]),
            sender: id.user_id(),
            sent_at: 6,
            content: Content::Text(Text { body: "hello group".into() }),
        };
        (id, dev, cert, m)
    }

    #[test]
    fn seal_open_and_tamper() {
        let (_, dev, cert, m) = setup();
        let key = [9u8; 32];
        let env = GroupEnvelope::seal(&mut rand_core::OsRng, &key, 3, (&cert, &dev), Some(1), &m)
            .expect("seals");
        let back = GroupEnvelope::from_bytes(&env.to_bytes()).expect("decodes");
        assert_eq!(back.open(&key).expect("opens").message, m);
        assert!(matches!(back.open(&[8u8; 32]), Err(EnvelopeError::Crypto(_))));
        let mut wrong_epoch = back.clone();
        wrong_epoch.epoch = 4;
        assert!(wrong_epoch.open(&key).is_err());
        let mut flipped = back;
        flipped.ciphertext[5] ^= 1;
        assert!(flipped.open(&key).is_err());
    }

    /// A member holds the epoch key: it can decrypt an envelope and seal its plaintext again.
    fn reseal(
        env: &GroupEnvelope,
        key: &[u8; 32],
        change: impl FnOnce(&mut GroupPlain),
    ) -> GroupEnvelope {
        let cipher = XChaCha20Poly1305::new(key.into());
        let aad = aad(&env.group, env.epoch);
        let plain = cipher
            .decrypt(XNonce::from_slice(&env.nonce), Payload { msg: &env.ciphertext, aad: &aad })
            .expect("decrypts");
        let mut plain: GroupPlain = codec::from_slice(&plain, MAX_GROUP_ENVELOPE).expect("decodes");
        change(&mut plain);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&env.nonce),
                Payload { msg: &codec::to_vec(&plain), aad: &aad },
            )
            .expect("encrypts");
        GroupEnvelope { ciphertext, ..env.clone() }
    }

    #[test]
    fn the_sequence_number_is_signed() {
        let (_, dev, cert, m) = setup();
        let key = [9u8; 32];
        let env = GroupEnvelope::seal(&mut rand_core::OsRng, &key, 3, (&cert, &dev), Some(41), &m)
            .expect("seals");
        assert_eq!(env.open(&key).expect("opens").seq, Some(41));
        // Envelopes of the older kind, without a number, still open.
        let old = GroupEnvelope::seal(&mut rand_core::OsRng, &key, 3, (&cert, &dev), None, &m)
            .expect("seals");
        assert_eq!(old.open(&key).expect("opens").seq, None);
        // A member cannot change, add or remove the number of another device's message.
        let changed = reseal(&env, &key, |p| p.seq = Some(40));
        assert_eq!(changed.open(&key), Err(EnvelopeError::BadSignature));
        let removed = reseal(&env, &key, |p| p.seq = None);
        assert_eq!(removed.open(&key), Err(EnvelopeError::BadSignature));
        let added = reseal(&old, &key, |p| p.seq = Some(1));
        assert_eq!(added.open(&key), Err(EnvelopeError::BadSignature));
        // Unchanged, the resealed envelope opens: the failures above are the number's.
        assert!(reseal(&env, &key, |_| ()).open(&key).is_ok());
    }

    #[test]
    fn forged_sender_is_rejected() {
        let (_, dev, cert, mut m) = setup();
        m.sender = UserId([7; 16]);
        let env =
            GroupEnvelope::seal(&mut rand_core::OsRng, &[9; 32], 1, (&cert, &dev), Some(1), &m)
                .expect("seals");
        assert_eq!(env.open(&[9; 32]), Err(EnvelopeError::SenderMismatch));
        // Signed by another device than the certificate's.
        let (_, _, cert2, m2) = setup();
        let other = DeviceKeypair::from_secret(&[42; 32]);
        let env =
            GroupEnvelope::seal(&mut rand_core::OsRng, &[9; 32], 1, (&cert2, &other), Some(1), &m2)
                .expect("seals");
        assert_eq!(env.open(&[9; 32]), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn topics_differ_per_group() {
        assert_ne!(topic(&ConversationId([1; 16])), topic(&ConversationId([2; 16])));
        assert!(topic(&ConversationId([1; 16])).starts_with("kith-group/"));
    }
}

/// Largest encoded sync response.
pub const MAX_SYNC_RESPONSE: usize = 1024 * 1024;
/// Largest encoded sync request.
pub const MAX_SYNC_REQUEST: usize = 4096;

/// `/kith/sync/1` request: the group messages the requester may have missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The group.
    pub group: ConversationId,
    /// Messages sent at or after this time (milliseconds since the Unix epoch).
    pub since: u64,
    /// The requesting device's certificate; its device key must be the connection's identity
    /// and its user a member of the group.
    pub cert: DeviceCertificate,
    /// Envelopes sent since `since` that the requester holds already, which the responder
    /// leaves out: their [`envelope_digest`]s, concatenated (at most [`MAX_SYNC_KNOWN`]).
    /// Absent from older requesters, whose responders then send everything since `since`.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<u8>,
}

/// Most digests in [`SyncRequest::known`] (the request stays under its 4 KiB limit).
pub const MAX_SYNC_KNOWN: usize = 384;

/// A group envelope's digest: the first 8 bytes of SHA-256 of its encoding. Tells a device it
/// holds an envelope already without opening it (a sync answer repeats what gossip brought).
pub fn envelope_digest(envelope: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(envelope);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// `/kith/sync/1` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// Encoded group envelopes, oldest first.
    pub envelopes: Vec<serde_bytes::ByteBuf>,
    /// Whether more were left out (ask again with a later `since`).
    pub more: bool,
}

impl SyncRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let r: SyncRequest = codec::from_slice(bytes, MAX_SYNC_REQUEST)?;
        crate::check_version(r.v)?;
        Ok(r)
    }
}

impl SyncResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let r: SyncResponse = codec::from_slice(bytes, MAX_SYNC_RESPONSE)?;
        crate::check_version(r.v)?;
        Ok(r)
    }
}
