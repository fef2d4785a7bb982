//! The outbox (tree `outbox`): outgoing messages not yet acknowledged by every recipient
//! device, the lookups of names that do not resolve yet, and ending a message's deliveries.

use kith_protocol::codec;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{enc, msg_key, sled_lock, Status, Store, StoredMessage, MAX_VALUE};
use crate::error::NodeError;

/// One recipient device of an outgoing message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTarget {
    /// The device's ed25519 key.
    #[serde(with = "serde_bytes")]
    pub device: [u8; 32],
    /// The device's libp2p peer id (binary form).
    #[serde(with = "serde_bytes")]
    pub peer_id: Vec<u8>,
    /// The envelope sealed to it, sent as is on every attempt.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// Whether the device acknowledged it.
    pub done: bool,
    /// Attempts so far.
    pub attempts: u32,
    /// Earliest time of the next attempt.
    pub next_at: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Whether a mailbox of the recipient holds the envelope.
    #[serde(default)]
    pub deposited: bool,
}

/// An outgoing message not yet acknowledged by every recipient device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Message id.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// The recipient's user id.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; 16],
    /// The recipient devices.
    pub targets: Vec<DeviceTarget>,
    /// When it was queued.
    pub created_at: u64,
    /// The recipient's mailboxes: binary peer id and multiaddrs.
    #[serde(default)]
    pub mailboxes: Vec<(Vec<u8>, Vec<String>)>,
    /// Whether the message is shown in the history (receipts are not).
    #[serde(default = "yes")]
    pub in_history: bool,
    /// While the recipient's name does not resolve: the name and the lookups so far (the entry
    /// has no targets until it resolves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// The lookups of a recipient's name that did not resolve yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The name.
    pub name: String,
    /// When the message was queued.
    pub since: u64,
    /// Lookups so far.
    pub attempts: u32,
    /// When the last lookup started (0: none yet).
    pub last_try: u64,
    /// Earliest time of the next lookup.
    pub next_at: u64,
    /// Why the last lookup failed.
    pub last_error: Option<String>,
}

fn yes() -> bool {
    true
}

impl Store {
    /// Stores an outgoing message and its outbox entry in one transaction.
    pub fn insert_outgoing(&self, m: &StoredMessage, out: &OutboxEntry) -> Result<(), NodeError> {
        let key = msg_key(&m.conversation, m.sent_at, &m.id);
        let (value, entry) = (enc(m), enc(out));
        let _serial = sled_lock();
        let r: Result<(), TransactionError<()>> = (&self.messages, &self.msg_index, &self.outbox)
            .transaction(|(msgs, index, outbox)| {
                if out.in_history {
                    msgs.insert(key.as_slice(), value.as_slice())?;
                    index.insert(&m.id, key.as_slice())?;
                }
                outbox.insert(&m.id, entry.as_slice())?;
                Ok(())
            });
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// An outbox entry by message id.
    pub fn outbox_entry(&self, id: &[u8; 16]) -> Result<Option<OutboxEntry>, NodeError> {
        match self.outbox.get(id).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Replaces an outbox entry.
    pub fn put_outbox(&self, e: &OutboxEntry) -> Result<(), NodeError> {
        self.outbox.insert(e.id, enc(e)).map(|_| ()).map_err(|x| self.err(x))
    }

    /// Removes an outbox entry.
    pub fn remove_outbox(&self, id: &[u8; 16]) -> Result<(), NodeError> {
        self.outbox.remove(id).map(|_| ()).map_err(|e| self.err(e))
    }

    /// A waiting message's name resolved: `old` (under its placeholder conversation) becomes
    /// `new` (same id, under the real conversation) and its outbox entry `entry`, in one
    /// transaction.
    pub fn resolve_waiting(
        &self,
        old: &StoredMessage,
        new: &StoredMessage,
        entry: &OutboxEntry,
    ) -> Result<(), NodeError> {
        let old_key = msg_key(&old.conversation, old.sent_at, &old.id);
        let key = msg_key(&new.conversation, new.sent_at, &new.id);
        let (value, out) = (enc(new), enc(entry));
        let _serial = sled_lock();
        let r: Result<(), TransactionError<()>> = (&self.messages, &self.msg_index, &self.outbox)
            .transaction(|(msgs, index, outbox)| {
                msgs.remove(old_key.as_slice())?;
                msgs.insert(key.as_slice(), value.as_slice())?;
                index.insert(&new.id, key.as_slice())?;
                outbox.insert(&new.id, out.as_slice())?;
                Ok(())
            });
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// Ends an outgoing message's deliveries: its outbox entry goes and its status becomes
    /// `status` (cancelled, failed), in one transaction. Whether it had an outbox entry.
    pub fn end_outgoing(&self, id: &[u8; 16], status: Status) -> Result<bool, NodeError> {
        self.end_pending(&self.outbox, id, id, status)
    }

    /// Removes `pending_key` from `pending` (the outbox, or the messages waiting for a group's
    /// state) and sets message `id`'s status to `status`, in one transaction. Whether the
    /// entry was there.
    pub(super) fn end_pending(
        &self,
        pending: &sled::Tree,
        pending_key: &[u8],
        id: &[u8; 16],
        status: Status,
    ) -> Result<bool, NodeError> {
        let key = self.msg_index.get(id).map_err(|e| self.err(e))?;
        let _serial = sled_lock();
        let r: Result<bool, TransactionError<()>> =
            (&self.messages, pending).transaction(|(msgs, pending)| {
                if pending.remove(pending_key)?.is_none() {
                    return Ok(false);
                }
                let Some(k) = &key else { return Ok(true) };
                if let Some(v) = msgs.get(k)? {
                    let mut m: StoredMessage = codec::from_stored_slice(&v, MAX_VALUE)
                        .map_err(|_| ConflictableTransactionError::Abort(()))?;
                    m.status = status;
                    msgs.insert(k, enc(&m).as_slice())?;
                }
                Ok(true)
            });
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// Every outbox entry.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, NodeError> {
        self.outbox.iter().values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
    }

    /// Number of outbox entries.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::msg;
    use super::super::Direction;
    use super::*;

    /// A waiting message moves to its real conversation, keeping its id; ending it removes its
    /// outbox entry and sets its status in one step.
    #[test]
    fn a_waiting_message_moves_once_resolved_and_can_be_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let mut old = msg(1, 9, 100);
        old.direction = Direction::Out;
        old.status = Status::Waiting;
        old.waiting_for = Some("carol".into());
        let entry = OutboxEntry {
            id: old.id,
            recipient: [0; 16],
            targets: vec![],
            created_at: 100,
            mailboxes: vec![],
            in_history: true,
            waiting: None,
        };
        s.insert_outgoing(&old, &entry).expect("queued");
        let new = StoredMessage {
            conversation: [3; 16],
            waiting_for: None,
            status: Status::Queued,
            ..old.clone()
        };
        s.resolve_waiting(&old, &new, &entry).expect("moved");
        assert_eq!(s.message(&old.id).expect("read"), Some(new.clone()));
        assert!(s.messages(Some(&[9; 16]), 10).expect("read").is_empty(), "nothing left behind");
        assert_eq!(s.messages(Some(&[3; 16]), 10).expect("read").len(), 1);
        assert!(s.end_outgoing(&old.id, Status::Cancelled).expect("ended"));
        assert_eq!(s.message(&old.id).expect("read").map(|m| m.status), Some(Status::Cancelled));
        assert_eq!(s.outbox_len(), 0);
        assert!(!s.end_outgoing(&old.id, Status::Cancelled).expect("no entry left"));
    }
}
