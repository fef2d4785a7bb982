//! Typed errors for every fallible operation of the protocol crate.

use thiserror::Error;

/// A value could not be decoded from bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the decoder accepts.
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// The bytes are not valid CBOR of the expected shape.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The value carries a version this implementation does not speak.
    #[error("unsupported version {found} (this implementation speaks version {supported})")]
    UnsupportedVersion {
        /// The version found in the input.
        found: u8,
        /// The version this implementation speaks.
        supported: u8,
    },
    /// The value decoded but breaks a rule of the protocol (a limit, a range, a format).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// A user name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is too short or too long.
    #[error("name must be 3 to 32 characters long, got {len}")]
    Length {
        /// The length in characters after normalization.
        len: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error(
        "name may contain only lowercase ASCII letters, digits, '-', '_' and '.'; found {ch:?} at position {pos}"
    )]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its position (0-based, in characters).
        pos: usize,
    },
    /// The name is valid but not in normalized form (capitals or surrounding space).
    #[error("name is not in normalized form (lowercase, no surrounding space)")]
    NotNormalized,
    /// The name must start with a letter or digit.
    #[error("name must start with a letter or digit, not {ch:?}")]
    BadStart {
        /// The first character.
        ch: char,
    },
}

/// A device certificate or signed prekey is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate could not be decoded.
    #[error("certificate: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The certificate was issued by another identity than the one expected.
    #[error("certificate was issued by another identity")]
    WrongIdentity,
    /// A key inside the certificate is not a valid key.
    #[error("certificate holds an invalid key")]
    InvalidKey,
    /// The prekey was signed by another device than the certificate's.
    #[error("prekey was signed by another device")]
    WrongDevice,
    /// The signed prekey has expired.
    #[error("signed prekey expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry time, milliseconds since the Unix epoch.
        expires_at: u64,
        /// The time of the check.
        now: u64,
    },
}

/// A name record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record is larger than allowed.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Length of the encoded record.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record could not be decoded.
    #[error("record: {0}")]
    Decode(DecodeError),
    /// The record's profile breaks a rule of `docs/protocol.md` 4.2.
    #[error("record profile: {what}")]
    BadProfile {
        /// Which rule.
        what: &'static str,
    },
    /// The record's signature does not verify under its identity key.
    #[error("record signature does not verify")]
    BadSignature,
    /// The name inside the record is not valid.
    #[error("record name: {0}")]
    Name(#[from] NameError),
    /// The record was stored under a DHT key that is not the key of its name.
    #[error("record for name {name:?} stored under the key of another name")]
    WrongKey {
        /// The name inside the record.
        name: String,
    },
    /// The record has expired.
    #[error("record expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry time, milliseconds since the Unix epoch.
        expires_at: u64,
        /// Time of the check.
        now: u64,
    },
    /// The record claims a lifetime longer than the protocol allows, or starts in the future.
    #[error("record validity window is not acceptable: {0}")]
    BadValidity(&'static str),
    /// The proof of work is below the required difficulty.
    #[error("proof of work has {have} leading zero bits, {need} required")]
    InsufficientWork {
        /// Leading zero bits of the claim hash.
        have: u32,
        /// Required leading zero bits.
        need: u32,
    },
    /// A record from the same identity with a higher sequence number is already held.
    #[error("stale record: sequence {got} is lower than the held {held}")]
    StaleSequence {
        /// The held sequence number.
        held: u64,
        /// The offered sequence number.
        got: u64,
    },
    /// Another identity holds the name and wins the conflict rule.
    #[error("name {name:?} is held by another identity")]
    NameHeld {
        /// The contested name.
        name: String,
    },
    /// The record lists too many devices or mailboxes, or none.
    #[error("record lists {what}")]
    BadList {
        /// What is wrong.
        what: &'static str,
    },
    /// A device entry is not valid.
    #[error("device entry: {0}")]
    Device(#[from] CertError),
}

/// A direct-message envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope or its payload could not be decoded.
    #[error("envelope: {0}")]
    Decode(#[from] DecodeError),
    /// The plaintext is too large to seal in one envelope.
    #[error("message of {len} bytes exceeds the envelope limit of {max} bytes")]
    TooLarge {
        /// Encoded message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope is addressed to another device or prekey.
    #[error("envelope is addressed to another device or prekey")]
    WrongRecipient,
    /// The Noise handshake failed: the ciphertext was altered, or sealed to another key.
    #[error("envelope does not decrypt: {0}")]
    Crypto(String),
    /// The sender's certificate is not valid.
    #[error("sender certificate: {0}")]
    Certificate(#[from] CertError),
    /// The sender's device signature does not verify.
    #[error("sender signature does not verify")]
    BadSignature,
    /// The Noise static key of the sender does not match its certificate, or the message claims
    /// another sender than the certificate's identity.
    #[error("sender is not who the envelope claims")]
    SenderMismatch,
    /// A session envelope did not open ([`crate::session`]).
    #[error("session: {0}")]
    Session(#[from] crate::session::SessionError),
}
