//! Linking a new device to an identity (`/kith/link/1`), and recovery phrases.
//!
//! A device that holds the identity key shows a [`LinkCode`]: the peer id and addresses of that
//! device and a fresh 128-bit secret. The new device dials it (the libp2p Noise handshake proves
//! the old device's key, so only that device reads what follows), sends [`LinkRequest::Join`]
//! with the secret and its own public keys, and receives [`LinkResponse::Joined`]: a device
//! certificate signed by the identity key and a snapshot of the account's state. It may then page
//! through the message history with [`LinkRequest::History`]. The secret is valid for one
//! `Join`, for a few minutes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::error::DecodeError;
use crate::identity::{DeviceCertificate, IdentityKeypair, SignedPrekey};
use crate::name::MailboxPeer;

/// Largest encoded link request.
pub const MAX_LINK_REQUEST: usize = 8 * 1024;
/// Largest encoded link response (a snapshot, or one page of history).
pub const MAX_LINK_RESPONSE: usize = 4 * 1024 * 1024;
/// Largest link code accepted, in characters.
pub const MAX_LINK_CODE: usize = 1024;
/// Most addresses a link code carries.
pub const MAX_LINK_ADDRS: usize = 4;
/// Text prefix of a link code.
pub const LINK_CODE_PREFIX: &str = "kithlink1";

/// What a link code carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCode {
    /// Format version, [`VERSION`].
    pub v: u8,
    /// The libp2p peer id of the device that issued the code, in binary form.
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Multiaddresses of that device, as text.
    pub addrs: Vec<String>,
    /// The one-time secret.
    #[serde(with = "serde_bytes")]
    pub secret: [u8; 16],
}

impl LinkCode {
    /// The code as text: [`LINK_CODE_PREFIX`] followed by the base58 of its CBOR encoding.
    pub fn to_text(&self) -> String {
        format!("{LINK_CODE_PREFIX}{}", bs58::encode(codec::to_vec(self)).into_string())
    }

    /// Parses a code typed or pasted by a user (surrounding white space is ignored).
    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        let text = text.trim();
        if text.len() > MAX_LINK_CODE {
            return Err(DecodeError::TooLarge { len: text.len(), max: MAX_LINK_CODE });
        }
        let body = text.strip_prefix(LINK_CODE_PREFIX).ok_or_else(|| {
            DecodeError::Invalid(format!("a link code starts with {LINK_CODE_PREFIX}"))
        })?;
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|e| DecodeError::Invalid(format!("link code is damaged: {e}")))?;
        let code: LinkCode = codec::from_slice(&bytes, MAX_LINK_CODE).map_err(|e| match e {
            DecodeError::Malformed(_) => DecodeError::Invalid(
                "this is not a link code: copy the whole code that `kith device link` shows".into(),
            ),
            other => other,
        })?;
        crate::check_version(code.v)?;
        if code.addrs.len() > MAX_LINK_ADDRS {
            return Err(DecodeError::Invalid(format!("more than {MAX_LINK_ADDRS} addresses")));
        }
        Ok(code)
    }
}

/// A request from a new device to the device that showed the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRequest {
    /// Link the connecting device. Its device key is the connection's libp2p identity.
    Join {
        /// The secret of the link code.
        #[serde(with = "serde_bytes")]
        secret: [u8; 16],
        /// The new device's ed25519 key; must match the connection's peer id.
        #[serde(with = "serde_bytes")]
        device: [u8; 32],
        /// The new device's static X25519 key.
        #[serde(with = "serde_bytes")]
        static_key: [u8; 32],
        /// The label the user chose for the new device.
        label: String,
        /// The new device's first signed prekey.
        prekey: SignedPrekey,
        /// Whether the new device wants the message history.
        history: bool,
    },
    /// One page of the message history, after `after` (a cursor from the previous page).
    History {
        /// The secret of the (used) link code; accepted only from the device it linked.
        #[serde(with = "serde_bytes")]
        secret: [u8; 16],
        /// Where to continue; `None` for the first page.
        after: Option<ByteBuf>,
    },
}

/// The answer to a [`LinkRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkResponse {
    /// The device is linked: its certificate and the account's state.
    Joined {
        /// The new device's certificate, signed by the identity key.
        cert: DeviceCertificate,
        /// The registered name, if any.
        name: Option<String>,
        /// The newest name record, encoded, if any.
        record: Option<ByteBuf>,
        /// Contacts with their pinned keys (the node's own store encoding).
        contacts: Vec<ByteBuf>,
        /// Group states with their keys (the node's own store encoding).
        groups: Vec<ByteBuf>,
        /// The account's mailboxes.
        mailboxes: Vec<MailboxPeer>,
    },
    /// A page of history (the node's own store encoding of messages), oldest first.
    History {
        /// Messages.
        messages: Vec<ByteBuf>,
        /// The cursor of the next page; `None` on the last.
        next: Option<ByteBuf>,
    },
    /// Refused, with a reason for people.
    Refused {
        /// Why.
        reason: String,
    },
}

impl LinkRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body: LinkRequest = codec::from_frame(bytes, MAX_LINK_REQUEST)?;
        if let LinkRequest::Join { label, .. } = &body {
            if label.len() > crate::identity::MAX_DEVICE_LABEL {
                return Err(DecodeError::Invalid("device label too long".into()));
            }
        }
        Ok(body)
    }
}

impl LinkResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::from_frame(bytes, MAX_LINK_RESPONSE)
    }
}

/// Words in a recovery phrase.
pub const PHRASE_WORDS: usize = 24;

/// The recovery phrase of an identity key: its 32-byte secret as 24 BIP-39 English words (the
/// last word carries an 8-bit checksum).
pub fn recovery_phrase(identity: &IdentityKeypair) -> String {
    match bip39::Mnemonic::from_entropy(identity.secret().as_slice()) {
        Ok(m) => m.to_string(),
        // 32 bytes is a valid BIP-39 entropy length.
        Err(e) => unreachable!("32 bytes of entropy always make a phrase: {e}"),
    }
}

/// The identity key of a recovery phrase (words separated by any white space, any case).
pub fn from_recovery_phrase(phrase: &str) -> Result<IdentityKeypair, DecodeError> {
    let words: Vec<String> = phrase.split_whitespace().map(str::to_lowercase).collect();
    if words.len() != PHRASE_WORDS {
        return Err(DecodeError::Invalid(format!(
            "a recovery phrase has {PHRASE_WORDS} words, this one has {}",
            words.len()
        )));
    }
    let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &words.join(" "))
        .map_err(|e| DecodeError::Invalid(format!("not a valid recovery phrase: {e}")))?;
    let entropy = m.to_entropy();
    let secret: [u8; 32] = entropy
        .as_slice()
        .try_into()
        .map_err(|_| DecodeError::Invalid("recovery phrase of the wrong length".into()))?;
    Ok(IdentityKeypair::from_secret(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VERSION;

    #[test]
    fn codes_round_trip_and_damage_is_refused() {
        let code = LinkCode {
            v: VERSION,
            peer: vec![1; 38],
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            secret: [7; 16],
        };
        let text = code.to_text();
        assert!(text.starts_with(LINK_CODE_PREFIX));
        assert_eq!(LinkCode::parse(&format!("  {text}\n")), Ok(code));
        let mut damaged = text.clone();
        damaged.truncate(text.len() - 3);
        assert!(LinkCode::parse(&damaged).is_err());
        assert!(LinkCode::parse("hello").is_err());
        // Valid base58 after the prefix, but not an encoded code: a clear error, not CBOR's.
        let junk = format!("{LINK_CODE_PREFIX}{}", bs58::encode([1u8, 2, 3]).into_string());
        let e = LinkCode::parse(&junk).expect_err("not a code").to_string();
        assert!(e.contains("this is not a link code"), "{e}");
        assert!(LinkCode::parse(&"kithlink1".repeat(200)).is_err());
    }

    #[test]
    fn phrases_round_trip_and_typos_are_caught() {
        let id = IdentityKeypair::generate(&mut rand_core::OsRng);
        let phrase = recovery_phrase(&id);
        assert_eq!(phrase.split(' ').count(), PHRASE_WORDS);
        let back = from_recovery_phrase(&phrase.to_uppercase().replace(' ', "\n  ")).expect("ok");
        assert_eq!(back.public(), id.public());
        // Swapping two different words breaks the checksum (or is another key: never this one).
        let mut words: Vec<&str> = phrase.split(' ').collect();
        if let Some(j) = (1..words.len()).find(|&j| words[j] != words[0]) {
            words.swap(0, j);
            if let Ok(k) = from_recovery_phrase(&words.join(" ")) {
                assert_ne!(k.public(), id.public());
            }
        }
        assert!(from_recovery_phrase("abandon abandon").is_err());
        assert!(from_recovery_phrase(&"zzzz ".repeat(24)).is_err());
    }
}
