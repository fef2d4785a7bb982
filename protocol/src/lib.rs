//! `kith-protocol`: Kith's wire types, encoding, identities, signatures and end-to-end crypto.
//!
//! This crate does no I/O: it knows nothing of sockets, files, tokio or the libp2p swarm. Every
//! function takes the current time as an argument where it matters, so the node, the tests and
//! the simulator drive exactly the same logic. Every decoder has an explicit size limit and
//! returns a typed error; none panics on any input.
//!
//! - [`identity`]: user identity keys, device keys, device certificates, signed prekeys, safety
//!   numbers.
//! - [`name`]: user names, signed name records, proof of work, the conflict rule.
//! - [`envelope`]: direct-message envelopes sealed with Noise `X`.
//! - [`message`]: messages and their content types.
//! - [`session`]: Double Ratchet sessions between two devices, started by an envelope.
//!
//! The byte-level formats are specified in `docs/protocol.md`.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod blob;
pub mod call;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod group;
pub mod identity;
pub mod interactive;
pub mod link;
pub mod listen;
pub mod mailbox;
pub mod message;
pub mod name;
pub mod plan;
pub mod profile;
pub mod session;
#[cfg(test)]
mod vectors;

pub use envelope::{AckStatus, DeliveryAck, Envelope, Opened, Recipient, SenderDevice};
pub use error::{CertError, DecodeError, EnvelopeError, NameError, RecordError};
pub use identity::{
    safety_number, DeviceCertificate, DeviceKeypair, IdentityKeypair, IdentityPublic, SignedPrekey,
    UserId, VerifiedDevice, VerifiedPrekey, X25519Secret,
};
pub use message::{Content, ConversationId, Member, Message, MessageId, ReceiptKind, Text};
pub use name::{
    dht_key, normalize_name, NameRecord, RecordDraft, RecordPolicy, VerifiedNameRecord,
};

/// The version of every wire format defined here; each top-level value carries it in a `v`
/// field, and decoders reject other values.
pub const VERSION: u8 = 1;

/// Rejects a value whose `v` field is not [`VERSION`].
pub(crate) fn check_version(v: u8) -> Result<(), DecodeError> {
    if v != VERSION {
        return Err(DecodeError::UnsupportedVersion { found: v, supported: VERSION });
    }
    Ok(())
}
