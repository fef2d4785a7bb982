//! `receipt` (delivered): a recipient device reports messages as durably stored (they reached it
//! through a mailbox). The outbox marks that device done; a message is `delivered` once every
//! device is. Not shown in the history.

use kith_protocol::MessageId;

use crate::services::Services;

/// Applies a delivery receipt from `device`.
pub(crate) fn receive(s: &Services, device: &[u8; 32], ids: &[MessageId]) {
    s.outbox.receipt_received(device, ids);
}
