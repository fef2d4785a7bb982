//! Direct-message envelopes, sealed end to end with the Noise `X` pattern.
//!
//! The sender runs a one-message Noise handshake, `Noise_X_25519_ChaChaPoly_BLAKE2s`, as
//! initiator: its static key is its device's static X25519 key (bound to the user by the
//! device certificate) and the responder's static key is the recipient device's current signed
//! prekey. The handshake payload is a [`Sealed`] value: the sender's device certificate and the
//! message. The recipient reads the handshake with the prekey's private key, learns the sender's
//! static key from it, and accepts the message only if that key is the one the enclosed
//! certificate binds to the sender's identity.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{DecodeError, EnvelopeError};
use crate::identity::{DeviceCertificate, IdentityPublic, UserId, X25519Secret};
use crate::message::Message;
use crate::session::{HandshakeKeys, Session, SessionError, SessionInit, SessionMessage};
use crate::VERSION;

/// The Noise protocol name used for envelopes.
pub const NOISE_PARAMS: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
/// Domain separation prefix of the Noise prologue.
pub const DOMAIN_ENVELOPE: &[u8] = b"kith/v1/envelope";
/// Largest Noise message (the Noise specification's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// Bytes the `X` handshake adds to its payload: ephemeral key (32), encrypted static key
/// (32 + 16) and the payload's tag (16).
pub const NOISE_OVERHEAD: usize = 96;
/// Largest encoded [`Sealed`] payload.
pub const MAX_SEALED: usize = MAX_NOISE_MESSAGE - NOISE_OVERHEAD;
/// Largest encoded envelope accepted.
pub const MAX_ENVELOPE: usize = MAX_NOISE_MESSAGE + 128;

/// A sealed direct message addressed to one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The recipient device's ed25519 key.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; 32],
    /// The id of the recipient's signed prekey it is sealed to.
    pub prekey_id: u32,
    /// The Noise handshake message (empty in a session envelope).
    #[serde(with = "serde_bytes")]
    pub noise: Vec<u8>,
    /// A message of an established session ([`crate::session`]) instead of a handshake; its
    /// plaintext is a [`SessionPlain`]. Absent from envelopes sealed with Noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMessage>,
}

/// The plaintext of a session envelope: what [`Sealed`] carries, less the certificate (the
/// session was authenticated when it started).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionPlain {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The message.
    pub message: Message,
    /// As [`Sealed::sender_name`].
    #[serde(default)]
    pub sender_name: Option<String>,
}

/// The plaintext inside an envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The sending device's certificate.
    pub cert: DeviceCertificate,
    /// The message.
    pub message: Message,
    /// The name the sender claims, a hint only: the recipient shows it after resolving the name
    /// to the same identity.
    #[serde(default)]
    pub sender_name: Option<String>,
    /// Starts a session ([`crate::session`]) with the recipient device. Older devices ignore
    /// it and open the message as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionInit>,
}

/// Where to seal an envelope to: a device of the recipient and its current prekey, as listed in
/// the recipient's verified name record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The device's ed25519 key.
    pub device: [u8; 32],
    /// The prekey id.
    pub prekey_id: u32,
    /// The prekey's X25519 public key.
    pub prekey: [u8; 32],
}

/// The authenticated sender of an opened envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderDevice {
    /// The sender's identity key.
    pub identity: IdentityPublic,
    /// The sender's user id.
    pub user_id: UserId,
    /// The sending device's ed25519 key.
    pub device: [u8; 32],
    /// The sending device's libp2p peer id.
    pub peer_id: libp2p_identity::PeerId,
    /// When the device's certificate was issued.
    pub certified_at: u64,
}

/// An opened envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    /// Who sent it, authenticated.
    pub sender: SenderDevice,
    /// The message.
    pub message: Message,
    /// The name the sender claims (unverified; see [`Sealed::sender_name`]).
    pub sender_name: Option<String>,
}

fn prologue(device: &[u8; 32], prekey_id: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(DOMAIN_ENVELOPE.len() + 37);
    p.extend_from_slice(DOMAIN_ENVELOPE);
    p.push(0);
    p.extend_from_slice(device);
    p.extend_from_slice(&prekey_id.to_be_bytes());
    p
}

/// A random number generator behind a `dyn` reference (so the inner opening function is not
/// generic over it).
trait AcceptRng: rand_core::RngCore + rand_core::CryptoRng {}
impl<R: rand_core::RngCore + rand_core::CryptoRng> AcceptRng for R {}

struct RngRef<'a>(&'a mut dyn AcceptRng);

impl rand_core::RngCore for RngRef<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}
impl rand_core::CryptoRng for RngRef<'_> {}

fn crypto(e: snow::Error) -> EnvelopeError {
    EnvelopeError::Crypto(e.to_string())
}

impl Envelope {
    /// Seals `message` from the device holding `cert` and `static_key` to `to`.
    pub fn seal(
        cert: &DeviceCertificate,
        static_key: &X25519Secret,
        to: &Recipient,
        message: &Message,
        sender_name: Option<&str>,
    ) -> Result<Envelope, EnvelopeError> {
        Ok(Self::seal_inner(cert, static_key, to, message, sender_name, None, None)?.0)
    }

    /// Seals `message` as [`Envelope::seal`] does and starts a session with the recipient
    /// device: the envelope carries the initiator's first ratchet key, and the returned
    /// session (to store before the envelope leaves) encrypts the next messages to that device
    /// once it has the session too.
    pub fn seal_starting_session<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
        cert: &DeviceCertificate,
        static_key: &X25519Secret,
        to: &Recipient,
        message: &Message,
        sender_name: Option<&str>,
        now: u64,
    ) -> Result<(Envelope, Session), EnvelopeError> {
        let ratchet = Session::ratchet_pair(rng);
        let init = SessionInit { ratchet: ratchet.1 };
        let (env, keys) =
            Self::seal_inner(cert, static_key, to, message, sender_name, None, Some(init))?;
        let keys = keys.ok_or_else(|| EnvelopeError::Crypto("no handshake keys".into()))?;
        Ok((env, Session::initiate(&keys, ratchet, &to.prekey, now)))
    }

    /// Seals `message` in an established session to the device `device` (its ed25519 key).
    pub fn seal_in_session(
        session: &mut Session,
        device: &[u8; 32],
        message: &Message,
        sender_name: Option<&str>,
    ) -> Result<Envelope, EnvelopeError> {
        let plain = SessionPlain {
            v: VERSION,
            message: message.clone(),
            sender_name: sender_name.map(str::to_owned),
        };
        let payload = codec::to_vec(&plain);
        if payload.len() > MAX_SEALED {
            return Err(EnvelopeError::TooLarge { len: payload.len(), max: MAX_SEALED });
        }
        let m = session.encrypt(device, &payload)?;
        Ok(Envelope {
            v: VERSION,
            recipient: *device,
            prekey_id: 0,
            noise: Vec::new(),
            session: Some(m),
        })
    }

    /// The id of the session this envelope was sealed in, if it was.
    pub fn session_id(&self) -> Option<[u8; 16]> {
        self.session.as_ref().map(|m| m.session)
    }

    /// Opens a session envelope addressed to the device `device` with its session (the one
    /// [`Envelope::session_id`] names). Checks what [`Envelope::open`] checks of the message
    /// itself; who sent it is the session's other side, which the caller knows. On an error the
    /// session is unchanged.
    pub fn open_in_session<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        rng: &mut R,
        device: &[u8; 32],
        session: &mut Session,
        now: u64,
    ) -> Result<(Message, Option<String>), EnvelopeError> {
        crate::check_version(self.v)?;
        if self.recipient != *device {
            return Err(EnvelopeError::WrongRecipient);
        }
        let m = self.session.as_ref().ok_or(EnvelopeError::Session(SessionError::WrongSession))?;
        let mut trial = session.clone();
        let payload = trial.decrypt(rng, device, m, now)?;
        let plain: SessionPlain = codec::from_slice(&payload, MAX_SEALED)?;
        crate::check_version(plain.v)?;
        plain.message.content.validate()?;
        crate::check_version(plain.message.v)?;
        if plain.sender_name.as_ref().is_some_and(|n| n.len() > crate::name::MAX_NAME_LEN) {
            return Err(DecodeError::Invalid("sender name too long".into()).into());
        }
        *session = trial;
        Ok((plain.message, plain.sender_name))
    }

    pub(crate) fn seal_inner(
        cert: &DeviceCertificate,
        static_key: &X25519Secret,
        to: &Recipient,
        message: &Message,
        sender_name: Option<&str>,
        fixed_ephemeral: Option<&[u8; 32]>,
        init: Option<SessionInit>,
    ) -> Result<(Envelope, Option<HandshakeKeys>), EnvelopeError> {
        let sealed = Sealed {
            v: VERSION,
            cert: cert.clone(),
            message: message.clone(),
            sender_name: sender_name.map(str::to_owned),
            session: init,
        };
        let payload = codec::to_vec(&sealed);
        if payload.len() > MAX_SEALED {
            return Err(EnvelopeError::TooLarge { len: payload.len(), max: MAX_SEALED });
        }
        let params = NOISE_PARAMS.parse().map_err(crypto)?;
        let secret = static_key.to_bytes();
        let prologue = prologue(&to.device, to.prekey_id);
        let mut builder = snow::Builder::new(params)
            .local_private_key(secret.as_slice())
            .map_err(crypto)?
            .remote_public_key(&to.prekey)
            .map_err(crypto)?
            .prologue(&prologue)
            .map_err(crypto)?;
        if let Some(e) = fixed_ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(e);
        }
        let mut hs = builder.build_initiator().map_err(crypto)?;
        let mut noise = vec![0u8; payload.len() + NOISE_OVERHEAD];
        let n = hs.write_message(&payload, &mut noise).map_err(crypto)?;
        noise.truncate(n);
        let keys = init.map(|_| {
            let hash = hs.get_handshake_hash().to_vec();
            let (k1, k2) = hs.dangerously_get_raw_split();
            HandshakeKeys::derive(&k1, &k2, &hash)
        });
        let env = Envelope {
            v: VERSION,
            recipient: to.device,
            prekey_id: to.prekey_id,
            noise,
            session: None,
        };
        Ok((env, keys))
    }

    /// Opens an envelope addressed to the device `device`, looking its prekey secret up by id.
    ///
    /// Fails if the envelope is for another device, the prekey is unknown (for instance deleted
    /// after its grace period), the ciphertext was altered, the sender certificate does not
    /// verify, or the certificate does not match the Noise-authenticated sender key.
    pub fn open<F>(&self, device: &[u8; 32], prekey: F) -> Result<Opened, EnvelopeError>
    where
        F: FnOnce(u32) -> Option<X25519Secret>,
    {
        Ok(self.open_inner(device, prekey, None)?.0)
    }

    /// Opens an envelope as [`Envelope::open`] does and, if it starts a session, returns this
    /// device's side of it (to store before acknowledging the message).
    pub fn open_accepting_session<F, R>(
        &self,
        rng: &mut R,
        device: &[u8; 32],
        prekey: F,
        now: u64,
    ) -> Result<(Opened, Option<Session>), EnvelopeError>
    where
        F: FnOnce(u32) -> Option<X25519Secret>,
        R: rand_core::RngCore + rand_core::CryptoRng,
    {
        self.open_inner(device, prekey, Some((rng as &mut dyn AcceptRng, now)))
    }

    fn open_inner<F>(
        &self,
        device: &[u8; 32],
        prekey: F,
        accept: Option<(&mut dyn AcceptRng, u64)>,
    ) -> Result<(Opened, Option<Session>), EnvelopeError>
    where
        F: FnOnce(u32) -> Option<X25519Secret>,
    {
        crate::check_version(self.v)?;
        if self.session.is_some() {
            return Err(EnvelopeError::Session(SessionError::WrongSession));
        }
        if self.recipient != *device {
            return Err(EnvelopeError::WrongRecipient);
        }
        let secret = prekey(self.prekey_id).ok_or(EnvelopeError::WrongRecipient)?;
        if self.noise.len() > MAX_NOISE_MESSAGE || self.noise.len() < NOISE_OVERHEAD {
            return Err(EnvelopeError::Crypto("handshake message has an impossible length".into()));
        }
        let params = NOISE_PARAMS.parse().map_err(crypto)?;
        let secret = secret.to_bytes();
        let prologue = prologue(device, self.prekey_id);
        let mut hs = snow::Builder::new(params)
            .local_private_key(secret.as_slice())
            .map_err(crypto)?
            .prologue(&prologue)
            .map_err(crypto)?
            .build_responder()
            .map_err(crypto)?;
        let mut payload = vec![0u8; self.noise.len()];
        let n = hs.read_message(&self.noise, &mut payload).map_err(crypto)?;
        let hash = hs.get_handshake_hash().to_vec();
        payload.truncate(n);
        let remote = hs
            .get_remote_static()
            .ok_or_else(|| EnvelopeError::Crypto("no sender static key".into()))?
            .to_vec();
        let sealed: Sealed = codec::from_slice(&payload, MAX_SEALED)?;
        crate::check_version(sealed.v)?;
        sealed.message.content.validate()?;
        crate::check_version(sealed.message.v)?;
        if sealed.sender_name.as_ref().is_some_and(|n| n.len() > crate::name::MAX_NAME_LEN) {
            return Err(DecodeError::Invalid("sender name too long".into()).into());
        }
        let cert = sealed.cert.verify(None)?;
        if cert.static_key.as_slice() != remote.as_slice()
            || sealed.message.sender != cert.identity.user_id()
        {
            return Err(EnvelopeError::SenderMismatch);
        }
        let session = match (accept, sealed.session) {
            (Some((rng, now)), Some(init)) => {
                let (k1, k2) = hs.dangerously_get_raw_split();
                let keys = HandshakeKeys::derive(&k1, &k2, &hash);
                let secret = X25519Secret::from_bytes(*secret);
                Some(Session::accept(&mut RngRef(rng), &keys, &secret, &init, now))
            }
            _ => None,
        };
        let opened = Opened {
            sender: SenderDevice {
                user_id: cert.identity.user_id(),
                identity: cert.identity,
                device: cert.device,
                peer_id: cert.peer_id,
                certified_at: cert.created_at,
            },
            message: sealed.message,
            sender_name: sealed.sender_name,
        };
        Ok((opened, session))
    }

    /// A digest that identifies this envelope (the first 16 bytes of SHA-256 of the encoding).
    pub fn digest(&self) -> [u8; 16] {
        let d = Sha256::digest(self.to_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes an envelope (without opening it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: Envelope = codec::from_slice(bytes, MAX_ENVELOPE)?;
        crate::check_version(env.v)?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DeviceKeypair, IdentityKeypair};
    use crate::message::{Content, ConversationId, MessageId, Text};

    pub(crate) struct Party {
        pub(crate) id: IdentityKeypair,
        pub(crate) dev: DeviceKeypair,
        pub(crate) st: X25519Secret,
        pub(crate) prekey: X25519Secret,
        pub(crate) cert: DeviceCertificate,
    }

    pub(crate) fn party(seed: u8) -> Party {
        let id = IdentityKeypair::from_secret(&[seed; 32]);
        let dev = DeviceKeypair::from_secret(&[seed + 1; 32]);
        let st = X25519Secret::from_bytes([seed + 2; 32]);
        let prekey = X25519Secret::from_bytes([seed + 3; 32]);
        let cert = DeviceCertificate::issue(&id, &dev, &st, 1, "test");
        Party { id, dev, st, prekey, cert }
    }

    fn hello(from: &Party) -> Message {
        Message {
            v: VERSION,
            id: MessageId([5; 16]),
            conversation: ConversationId([6; 16]),
            sender: from.id.user_id(),
            sent_at: 7,
            content: Content::Text(Text { body: "hello".into() }),
        }
    }

    #[test]
    fn seal_and_open() {
        let alice = party(10);
        let bob = party(20);
        let to =
            Recipient { device: bob.dev.public_bytes(), prekey_id: 3, prekey: bob.prekey.public() };
        let env = Envelope::seal(&alice.cert, &alice.st, &to, &hello(&alice), Some("alice"))
            .expect("seals");
        let wire = Envelope::from_bytes(&env.to_bytes()).expect("decodes");
        let opened = wire
            .open(&bob.dev.public_bytes(), |id| (id == 3).then(|| bob.prekey.clone()))
            .expect("opens");
        assert_eq!(opened.message, hello(&alice));
        assert_eq!(opened.sender.user_id, alice.id.user_id());
        assert_eq!(opened.sender.peer_id, alice.dev.peer_id());
        // Wrong device, unknown prekey.
        assert_eq!(
            wire.open(&alice.dev.public_bytes(), |_| Some(bob.prekey.clone())),
            Err(EnvelopeError::WrongRecipient)
        );
        assert_eq!(
            wire.open(&bob.dev.public_bytes(), |_| None),
            Err(EnvelopeError::WrongRecipient)
        );
        // The wrong prekey secret does not decrypt.
        assert!(matches!(
            wire.open(&bob.dev.public_bytes(), |_| Some(alice.prekey.clone())),
            Err(EnvelopeError::Crypto(_))
        ));
    }

    #[test]
    fn an_envelope_starts_a_session_that_carries_the_next_messages() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let alice = party(10);
        let bob = party(20);
        let (ad, bd) = (alice.dev.public_bytes(), bob.dev.public_bytes());
        let to = Recipient { device: bd, prekey_id: 3, prekey: bob.prekey.public() };
        let (env, mut a_session) = Envelope::seal_starting_session(
            &mut rng,
            &alice.cert,
            &alice.st,
            &to,
            &hello(&alice),
            Some("alice"),
            5,
        )
        .expect("seals");
        let wire = Envelope::from_bytes(&env.to_bytes()).expect("decodes");
        // A device that does not know sessions opens it as any envelope.
        let plain = wire.open(&bd, |_| Some(bob.prekey.clone())).expect("opens");
        assert_eq!(plain.message, hello(&alice));
        let (opened, b_session) = wire
            .open_accepting_session(&mut rng, &bd, |_| Some(bob.prekey.clone()), 5)
            .expect("opens");
        assert_eq!(opened.sender.device, ad);
        let mut b_session = b_session.expect("a session starts");
        assert_eq!(a_session.id(), b_session.id());
        // Both directions, through the wire encoding.
        let mut m = hello(&alice);
        m.id = MessageId([8; 16]);
        let e = Envelope::seal_in_session(&mut a_session, &bd, &m, Some("alice")).expect("seals");
        let e = Envelope::from_bytes(&e.to_bytes()).expect("decodes");
        assert_eq!(e.session_id(), Some(a_session.id()));
        assert!(e.open(&bd, |_| Some(bob.prekey.clone())).is_err(), "not a Noise envelope");
        let (got, name) = e.open_in_session(&mut rng, &bd, &mut b_session, 6).expect("opens");
        assert_eq!((got, name.as_deref()), (m.clone(), Some("alice")));
        assert!(matches!(
            e.open_in_session(&mut rng, &bd, &mut b_session, 6),
            Err(EnvelopeError::Session(crate::session::SessionError::KeyGone))
        ));
        let r = Envelope::seal_in_session(&mut b_session, &ad, &hello(&bob), None).expect("seals");
        assert_eq!(
            r.open_in_session(&mut rng, &ad, &mut a_session, 7).expect("opens").0,
            hello(&bob)
        );
        // An envelope without a session starts none.
        let env = Envelope::seal(&alice.cert, &alice.st, &to, &hello(&alice), None).expect("seals");
        let (_, none) = env
            .open_accepting_session(&mut rng, &bd, |_| Some(bob.prekey.clone()), 5)
            .expect("opens");
        assert!(none.is_none());
    }

    #[test]
    fn forged_sender_is_rejected() {
        let alice = party(10);
        let bob = party(20);
        let mallory = party(30);
        let to =
            Recipient { device: bob.dev.public_bytes(), prekey_id: 1, prekey: bob.prekey.public() };
        // Mallory presents alice's certificate but authenticates with her own static key.
        let env = Envelope::seal(&alice.cert, &mallory.st, &to, &hello(&alice), Some("alice"))
            .expect("seals");
        assert_eq!(
            env.open(&bob.dev.public_bytes(), |_| Some(bob.prekey.clone())),
            Err(EnvelopeError::SenderMismatch)
        );
        // Mallory's own certificate but a message claiming to be from alice.
        let env = Envelope::seal(&mallory.cert, &mallory.st, &to, &hello(&alice), Some("alice"))
            .expect("seals");
        assert_eq!(
            env.open(&bob.dev.public_bytes(), |_| Some(bob.prekey.clone())),
            Err(EnvelopeError::SenderMismatch)
        );
    }

    #[test]
    fn oversized_message_is_refused() {
        let alice = party(10);
        let bob = party(20);
        let to =
            Recipient { device: bob.dev.public_bytes(), prekey_id: 1, prekey: bob.prekey.public() };
        let mut m = hello(&alice);
        m.content = Content::Unsupported { kind: "blob".into(), body: vec![0; MAX_SEALED] };
        assert!(matches!(
            Envelope::seal(&alice.cert, &alice.st, &to, &m, None),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }
}

/// The answer of a recipient device to a delivered envelope (`/kith/dm/1` response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAck {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// What became of the envelope.
    pub status: AckStatus,
    /// A reason a person can read, for `rejected` and `busy`.
    pub reason: Option<String>,
    /// The session the recipient device holds for this envelope's sender (the one it started
    /// or was sealed in): the sender then seals its next messages in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<serde_bytes::ByteArray<16>>,
}

/// What became of a delivered envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Opened and durably stored (flushed to disk) by the recipient device.
    Stored,
    /// Already stored earlier (same message id); nothing changed.
    Duplicate,
    /// Refused for good: it does not open, or breaks a rule; retrying will not help.
    Rejected,
    /// Not processed now (the device is overloaded); retry later.
    Busy,
    /// Sealed in a session the recipient device does not hold (it lost its state): seal it
    /// again with Noise. Only sent to devices that seal in sessions.
    NoSession,
}

/// Largest encoded [`DeliveryAck`].
pub const MAX_ACK: usize = 1024;

impl DeliveryAck {
    /// An acknowledgement with the given status and reason.
    pub fn new(status: AckStatus, reason: Option<String>) -> Self {
        let reason = reason.map(|mut r| {
            crate::identity::truncate_utf8(&mut r, 512);
            r
        });
        DeliveryAck { v: VERSION, status, reason, session: None }
    }

    /// The same, naming the session the recipient holds with the sender.
    pub fn with_session(mut self, session: Option<[u8; 16]>) -> Self {
        self.session = session.map(serde_bytes::ByteArray::new);
        self
    }

    /// Encodes the acknowledgement.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes an acknowledgement.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let ack: DeliveryAck = codec::from_slice(bytes, MAX_ACK)?;
        crate::check_version(ack.v)?;
        Ok(ack)
    }
}
