//! The mailbox protocol (`/kith/mailbox/1`): enrolling a device with a mailbox node, depositing
//! sealed envelopes for it while it is offline, fetching and deleting them.
//!
//! A mailbox sees only what these frames carry: sealed envelopes (ciphertext), the recipient
//! device key each is addressed to, the certificate of each enrolled device, and the peers that
//! connect to it.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::DecodeError;
use crate::identity::DeviceCertificate;

/// Largest encoded mailbox request (a deposit carries one envelope).
pub const MAX_MAILBOX_REQUEST: usize = crate::envelope::MAX_ENVELOPE + 1024;
/// Largest encoded mailbox response (a batch of fetched envelopes).
pub const MAX_MAILBOX_RESPONSE: usize = 1024 * 1024;
/// Most envelopes one fetch returns.
pub const MAX_FETCH: u32 = 64;
/// Most ids one delete names.
pub const MAX_DELETE: usize = 256;

/// A request to a mailbox node, or (`Notify`) from a mailbox node to an enrolled device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxRequest {
    /// Enroll the connecting device; the certificate's device key must be the connection's
    /// libp2p identity.
    Enroll {
        /// The device certificate of the connecting device.
        cert: DeviceCertificate,
    },
    /// Hold this encoded envelope for the device it is addressed to.
    Deposit {
        /// An encoded [`crate::Envelope`].
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Return envelopes held for the connecting device, oldest first.
    Fetch {
        /// At most this many (capped at [`MAX_FETCH`]).
        max: u32,
    },
    /// Delete these envelopes (by id) held for the connecting device; sent after they are
    /// durably stored by the device.
    Delete {
        /// Envelope ids ([`crate::Envelope::digest`]).
        ids: Vec<MailId>,
    },
    /// From a mailbox to a connected device: envelopes are waiting.
    Notify,
    /// Hold blob `hash` for the connecting (enrolled) device's user: the mailbox fetches it
    /// from the device over `/kith/blob/1` and serves it to whoever presents the hash. Asked
    /// again, it says how far it got.
    HoldBlob {
        /// The blob's hash.
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
    },
}

/// The id of a held envelope: [`crate::Envelope::digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MailId(#[serde(with = "serde_bytes")] pub [u8; 16]);

/// One held envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailItem {
    /// Its id.
    pub id: MailId,
    /// The encoded envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// The answer to a [`MailboxRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxResponse {
    /// The device is enrolled.
    Enrolled,
    /// The envelope is durably held (or was already: `duplicate`).
    Deposited {
        /// True if an envelope with the same id was already held.
        duplicate: bool,
    },
    /// Refused, with a reason for people (not enrolled, over quota, rate limited, not allowed,
    /// not a mailbox).
    Refused {
        /// Why.
        reason: String,
    },
    /// Held envelopes.
    Envelopes {
        /// Oldest first.
        items: Vec<MailItem>,
        /// Whether more are waiting.
        more: bool,
    },
    /// How many envelopes were deleted.
    Deleted {
        /// Count.
        count: u32,
    },
    /// Acknowledges a `Notify`.
    Ok,
    /// The answer to `HoldBlob`: the mailbox holds the blob whole (`complete`), or is
    /// fetching it.
    BlobHeld {
        /// Whether every chunk is held.
        complete: bool,
    },
}

impl MailboxRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body: MailboxRequest = codec::from_frame(bytes, MAX_MAILBOX_REQUEST)?;
        if let MailboxRequest::Delete { ids } = &body {
            if ids.len() > MAX_DELETE {
                return Err(DecodeError::Invalid(format!("more than {MAX_DELETE} ids")));
            }
        }
        Ok(body)
    }
}

impl MailboxResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::from_frame(bytes, MAX_MAILBOX_RESPONSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let reqs = [
            MailboxRequest::Deposit { envelope: vec![1, 2, 3] },
            MailboxRequest::Fetch { max: 5 },
            MailboxRequest::Delete { ids: vec![MailId([7; 16])] },
            MailboxRequest::Notify,
        ];
        for r in reqs {
            assert_eq!(MailboxRequest::from_bytes(&r.to_bytes()), Ok(r));
        }
        let resp = MailboxResponse::Envelopes {
            items: vec![MailItem { id: MailId([1; 16]), envelope: vec![9; 10] }],
            more: true,
        };
        assert_eq!(MailboxResponse::from_bytes(&resp.to_bytes()), Ok(resp));
        let many = MailboxRequest::Delete { ids: vec![MailId([0; 16]); MAX_DELETE + 1] };
        assert!(MailboxRequest::from_bytes(&many.to_bytes()).is_err());
        assert!(MailboxRequest::from_bytes(&[0xff; 10]).is_err());
    }
}
