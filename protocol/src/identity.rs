//! Identities, devices, device certificates, signed prekeys and safety numbers.
//!
//! A *user* is an ed25519 identity key; its [`UserId`] is derived from the public key. Each of
//! the user's *devices* has its own ed25519 device key (which is also the device's libp2p key, so
//! the libp2p peer id follows from it) and a static X25519 key used to authenticate the device
//! when it seals envelopes. A [`DeviceCertificate`] signed by the identity key binds the device
//! key, and with it the peer id, and the static X25519 key to the user. A [`SignedPrekey`] signed
//! by the device key is the X25519 key other people seal direct messages to; it is rotated on a
//! schedule.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec;
use crate::error::{CertError, DecodeError};
use crate::VERSION;

/// Domain separation prefix of device certificate signatures.
pub const DOMAIN_DEVICE_CERT: &[u8] = b"kith/v1/device-cert";
/// Domain separation prefix of signed prekey signatures.
pub const DOMAIN_PREKEY: &[u8] = b"kith/v1/prekey";
/// Domain separation prefix of the user id derivation.
pub const DOMAIN_USER_ID: &[u8] = b"kith/v1/user-id";

/// Largest encoded device certificate or signed prekey accepted.
pub const MAX_SIGNED_BLOB: usize = 1024;
/// Longest device label in bytes.
pub const MAX_DEVICE_LABEL: usize = 64;

/// The stable identifier of a user: the first 16 bytes of
/// `SHA-256("kith/v1/user-id" || identity public key)`, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl UserId {
    /// Derives the user id of an identity public key.
    pub fn of(key: &IdentityPublic) -> Self {
        let digest =
            Sha256::new().chain_update(DOMAIN_USER_ID).chain_update(key.to_bytes()).finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        UserId(id)
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(s: &str) -> Result<Self, DecodeError> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| DecodeError::Invalid(format!("user id must be 32 hex digits: {s:?}")))?;
        Ok(UserId(id))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({self})")
    }
}

/// An identity public key (ed25519).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublic(VerifyingKey);

impl IdentityPublic {
    /// Parses 32 bytes as an ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CertError> {
        VerifyingKey::from_bytes(bytes).map(IdentityPublic).map_err(|_| CertError::InvalidKey)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The user id derived from this key.
    pub fn user_id(&self) -> UserId {
        UserId::of(self)
    }

    /// The safety number of this key (see [`safety_number`]).
    pub fn fingerprint(&self) -> String {
        safety_number(self)
    }

    pub(crate) fn verify(&self, domain: &[u8], msg: &[u8], sig: &Signature) -> bool {
        self.0.verify(&domain_message(domain, msg), sig).is_ok()
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({})", hex::encode(self.to_bytes()))
    }
}

/// A user's identity key pair. Whoever holds it can certify devices for the user.
pub struct IdentityKeypair(SigningKey);

impl IdentityKeypair {
    /// Generates a fresh identity key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        IdentityKeypair(SigningKey::generate(rng))
    }

    /// Restores an identity key from its 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        IdentityKeypair(SigningKey::from_bytes(secret))
    }

    /// The 32-byte secret (keep it secret; it is zeroized when dropped).
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.0.verifying_key())
    }

    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.public().user_id()
    }

    pub(crate) fn sign(&self, domain: &[u8], msg: &[u8]) -> Signature {
        self.0.sign(&domain_message(domain, msg))
    }
}

impl fmt::Debug for IdentityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKeypair({:?})", self.public())
    }
}

/// A device's ed25519 key pair. It is also the device's libp2p identity.
pub struct DeviceKeypair(SigningKey);

impl DeviceKeypair {
    /// Generates a fresh device key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        DeviceKeypair(SigningKey::generate(rng))
    }

    /// Restores a device key from its 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        DeviceKeypair(SigningKey::from_bytes(secret))
    }

    /// The 32-byte secret.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The same key as a libp2p key pair.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut secret = self.0.to_bytes();
        // The secret is always 32 bytes, which is all `ed25519_from_bytes` checks.
        let kp = libp2p_identity::Keypair::ed25519_from_bytes(&mut secret)
            .unwrap_or_else(|_| unreachable!("32-byte ed25519 secret"));
        kp
    }

    /// The libp2p peer id of this device.
    pub fn peer_id(&self) -> libp2p_identity::PeerId {
        peer_id_of(&self.public_bytes()).unwrap_or_else(|_| unreachable!("own key is valid"))
    }

    pub(crate) fn sign(&self, domain: &[u8], msg: &[u8]) -> Signature {
        self.0.sign(&domain_message(domain, msg))
    }
}

impl fmt::Debug for DeviceKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKeypair({})", hex::encode(self.public_bytes()))
    }
}

/// The libp2p peer id of a device key.
pub fn peer_id_of(device_key: &[u8; 32]) -> Result<libp2p_identity::PeerId, CertError> {
    let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(device_key)
        .map_err(|_| CertError::InvalidKey)?;
    Ok(libp2p_identity::PublicKey::from(pk).to_peer_id())
}

/// An X25519 secret (device static key or prekey), zeroized when dropped.
#[derive(Clone)]
pub struct X25519Secret(x25519_dalek::StaticSecret);

impl X25519Secret {
    /// Generates a fresh secret.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        X25519Secret(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    /// Restores a secret from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        X25519Secret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The secret bytes.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }
}

impl fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519Secret(public {})", hex::encode(self.public()))
    }
}

fn domain_message(domain: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 1 + msg.len());
    m.extend_from_slice(domain);
    m.push(0);
    m.extend_from_slice(msg);
    m
}

/// A signed value on the wire: the CBOR encoding of the body, and an ed25519 signature over
/// `domain || 0x00 || body`. Signing the exact bytes avoids any need for canonical re-encoding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The CBOR-encoded body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The ed25519 signature.
    #[serde(with = "serde_bytes")]
    pub sig: [u8; 64],
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("body", &hex::encode(&self.body))
            .field("sig", &hex::encode(self.sig))
            .finish()
    }
}

impl Signed {
    pub(crate) fn signature(&self) -> Signature {
        Signature::from_bytes(&self.sig)
    }

    pub(crate) fn decode_body<T: DeserializeOwned + Serialize>(
        &self,
        max: usize,
    ) -> Result<T, DecodeError> {
        codec::from_slice(&self.body, max)
    }
}

/// The body of a device certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertBody {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The identity public key that signs this certificate.
    #[serde(with = "serde_bytes")]
    pub identity: [u8; 32],
    /// The device's ed25519 key (its libp2p peer id derives from it).
    #[serde(with = "serde_bytes")]
    pub device: [u8; 32],
    /// The device's static X25519 key, authenticated in every envelope it seals.
    #[serde(with = "serde_bytes")]
    pub static_key: [u8; 32],
    /// When the certificate was issued, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// A label the user chose ("laptop"), at most [`MAX_DEVICE_LABEL`] bytes.
    pub label: String,
}

/// A device certificate: [`DeviceCertBody`] signed by the identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceCertificate(pub Signed);

/// A device certificate whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// The identity that certified the device.
    pub identity: IdentityPublic,
    /// The device's ed25519 key.
    pub device: [u8; 32],
    /// The device's libp2p peer id.
    pub peer_id: libp2p_identity::PeerId,
    /// The device's static X25519 key.
    pub static_key: [u8; 32],
    /// Issue time.
    pub created_at: u64,
    /// The user's label for the device.
    pub label: String,
}

impl DeviceCertificate {
    /// Issues a certificate for a device.
    pub fn issue(
        identity: &IdentityKeypair,
        device: &DeviceKeypair,
        static_key: &X25519Secret,
        created_at: u64,
        label: &str,
    ) -> Self {
        Self::issue_for(identity, device.public_bytes(), static_key.public(), created_at, label)
    }

    /// Issues a certificate for a device known by its public keys (a device being linked).
    pub fn issue_for(
        identity: &IdentityKeypair,
        device: [u8; 32],
        static_key: [u8; 32],
        created_at: u64,
        label: &str,
    ) -> Self {
        let mut label = label.to_owned();
        truncate_utf8(&mut label, MAX_DEVICE_LABEL);
        let body = DeviceCertBody {
            v: VERSION,
            identity: identity.public().to_bytes(),
            device,
            static_key,
            created_at,
            label,
        };
        let body = codec::to_vec(&body);
        let sig = identity.sign(DOMAIN_DEVICE_CERT, &body).to_bytes();
        DeviceCertificate(Signed { body, sig })
    }

    /// Checks the signature and decodes the certificate. It must have been issued by `expected`
    /// when that is given.
    pub fn verify(&self, expected: Option<&IdentityPublic>) -> Result<VerifiedDevice, CertError> {
        let body: DeviceCertBody = self.0.decode_body(MAX_SIGNED_BLOB)?;
        crate::check_version(body.v)?;
        if body.label.len() > MAX_DEVICE_LABEL {
            return Err(DecodeError::Invalid("device label too long".into()).into());
        }
        let identity = IdentityPublic::from_bytes(&body.identity)?;
        if expected.is_some_and(|e| *e != identity) {
            return Err(CertError::WrongIdentity);
        }
        if !identity.verify(DOMAIN_DEVICE_CERT, &self.0.body, &self.0.signature()) {
            return Err(CertError::BadSignature);
        }
        Ok(VerifiedDevice {
            identity,
            device: body.device,
            peer_id: peer_id_of(&body.device)?,
            static_key: body.static_key,
            created_at: body.created_at,
            label: body.label,
        })
    }

    /// Encodes the certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a certificate (without verifying it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::from_slice(bytes, MAX_SIGNED_BLOB + 128)
    }
}

/// The body of a signed prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyBody {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The device key that signs this prekey.
    #[serde(with = "serde_bytes")]
    pub device: [u8; 32],
    /// Identifier of the prekey, unique per device (a counter).
    pub id: u32,
    /// The X25519 public key.
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Time after which senders must not seal to this prekey.
    pub expires_at: u64,
}

/// An X25519 prekey signed by a device key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignedPrekey(pub Signed);

/// A signed prekey whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPrekey {
    /// Prekey id.
    pub id: u32,
    /// The X25519 public key.
    pub key: [u8; 32],
    /// Creation time.
    pub created_at: u64,
    /// Expiry time.
    pub expires_at: u64,
}

impl SignedPrekey {
    /// Signs a prekey with a device key.
    pub fn sign(
        device: &DeviceKeypair,
        id: u32,
        prekey: &X25519Secret,
        created_at: u64,
        expires_at: u64,
    ) -> Self {
        let body = PrekeyBody {
            v: VERSION,
            device: device.public_bytes(),
            id,
            key: prekey.public(),
            created_at,
            expires_at,
        };
        let body = codec::to_vec(&body);
        let sig = device.sign(DOMAIN_PREKEY, &body).to_bytes();
        SignedPrekey(Signed { body, sig })
    }

    /// Checks that the prekey was signed by `device` and has not expired at `now`.
    pub fn verify(&self, device: &[u8; 32], now: u64) -> Result<VerifiedPrekey, CertError> {
        let body: PrekeyBody = self.0.decode_body(MAX_SIGNED_BLOB)?;
        crate::check_version(body.v)?;
        if body.device != *device {
            return Err(CertError::WrongDevice);
        }
        let key = VerifyingKey::from_bytes(device).map_err(|_| CertError::InvalidKey)?;
        if key.verify(&domain_message(DOMAIN_PREKEY, &self.0.body), &self.0.signature()).is_err() {
            return Err(CertError::BadSignature);
        }
        if body.expires_at <= now {
            return Err(CertError::Expired { expires_at: body.expires_at, now });
        }
        Ok(VerifiedPrekey {
            id: body.id,
            key: body.key,
            created_at: body.created_at,
            expires_at: body.expires_at,
        })
    }
}

pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Number of SHA-256 iterations behind a safety number.
pub const SAFETY_NUMBER_ITERATIONS: usize = 1024;

/// The safety number of an identity key: 30 decimal digits in six groups of five, for people
/// to compare aloud or side by side.
///
/// Computed as `h = SHA-256(0x00 0x01 || key)`, then `h = SHA-256(h || key)` another 1023 times;
/// each group is a 5-byte big-endian chunk of `h` (bytes 0..5, 5..10, ... 25..30) modulo
/// 100000, zero-padded. Two people verify each other by comparing both numbers.
pub fn safety_number(key: &IdentityPublic) -> String {
    let key = key.to_bytes();
    let mut h: [u8; 32] =
        Sha256::new().chain_update([0u8, 1u8]).chain_update(key).finalize().into();
    for _ in 1..SAFETY_NUMBER_ITERATIONS {
        h = Sha256::new().chain_update(h).chain_update(key).finalize().into();
    }
    let groups: Vec<String> = h[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand_core::OsRng {
        rand_core::OsRng
    }

    #[test]
    fn certificate_round_trip_and_checks() {
        let id = IdentityKeypair::generate(&mut rng());
        let other = IdentityKeypair::generate(&mut rng());
        let dev = DeviceKeypair::generate(&mut rng());
        let st = X25519Secret::generate(&mut rng());
        let cert = DeviceCertificate::issue(&id, &dev, &st, 5, "laptop");
        let v = cert.verify(Some(&id.public())).expect("valid");
        assert_eq!(v.peer_id, dev.peer_id());
        assert_eq!(v.static_key, st.public());
        assert_eq!(cert.verify(Some(&other.public())), Err(CertError::WrongIdentity));
        let back = DeviceCertificate::from_bytes(&cert.to_bytes()).expect("decodes");
        assert_eq!(back, cert);
        let mut bad = cert.clone();
        bad.0.sig[0] ^= 1;
        assert_eq!(bad.verify(None), Err(CertError::BadSignature));
    }

    #[test]
    fn prekey_checks_device_and_expiry() {
        let dev = DeviceKeypair::generate(&mut rng());
        let other = DeviceKeypair::generate(&mut rng());
        let pk = X25519Secret::generate(&mut rng());
        let sp = SignedPrekey::sign(&dev, 7, &pk, 10, 100);
        assert_eq!(sp.verify(&dev.public_bytes(), 50).expect("valid").id, 7);
        assert_eq!(sp.verify(&other.public_bytes(), 50), Err(CertError::WrongDevice));
        assert!(matches!(sp.verify(&dev.public_bytes(), 100), Err(CertError::Expired { .. })));
    }

    #[test]
    fn safety_number_shape() {
        let id = IdentityKeypair::from_secret(&[7u8; 32]);
        let s = id.public().fingerprint();
        assert_eq!(s.len(), 35);
        assert!(s.split(' ').all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        let other = IdentityKeypair::from_secret(&[8u8; 32]);
        assert_ne!(s, other.public().fingerprint());
    }

    #[test]
    fn user_id_parses_back() {
        let id = IdentityKeypair::from_secret(&[1u8; 32]).user_id();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        assert!(UserId::parse("xyz").is_err());
    }
}
