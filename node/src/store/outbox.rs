//! The outbox (tree `outbox`): outgoing messages not yet acknowledged by every recipient
//! device, the lookups of names that do not resolve yet, and ending a message's deliveries.
//!
//! Beside the tree, the store keeps its schedule in memory ([`OutboxIndex`]): for each entry,
//! when each pending delivery and lookup is due and to which peer. The delivery task asks it
//! what is due and decodes only those entries; before, it read and decoded the whole outbox
//! every time it woke, which made a node with thousands of queued messages (the creator of a
//! large group) spend its time decoding its outbox.

use std::collections::HashMap;

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
    /// For an envelope sealed in a session: the device's prekey (id and key) when it was
    /// sealed, to seal it again with Noise if the device lost the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prekey: Option<(u32, serde_bytes::ByteArray<32>)>,
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
    /// The encoded message, kept when an envelope was sealed in a session (to seal it again
    /// if the device lost the session).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub plain: Option<Vec<u8>>,
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

/// Inside a transaction: sets the status of the message stored under `key` in `msgs`, if there
/// is one (a message that does not decode aborts the transaction).
fn set_status_in(
    msgs: &sled::transaction::TransactionalTree,
    key: Option<&[u8]>,
    status: Status,
) -> Result<(), ConflictableTransactionError<()>> {
    let Some(k) = key else { return Ok(()) };
    if let Some(v) = msgs.get(k)? {
        let mut m: StoredMessage = codec::from_stored_slice(&v, MAX_VALUE)
            .map_err(|_| ConflictableTransactionError::Abort(()))?;
        m.status = status;
        msgs.insert(k, enc(&m).as_slice())?;
    }
    Ok(())
}

/// What is pending of one outbox entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Schedule {
    recipient: [u8; 16],
    /// Pending targets: index, binary peer id, earliest next attempt.
    targets: Vec<(usize, Vec<u8>, u64)>,
    /// The next lookup of a waiting name.
    lookup_at: Option<u64>,
    /// The flush ticket ([`Store::flush_ticket`]) that must be on disk before its envelopes
    /// leave: a new entry's sealing advanced sessions, and an envelope sent before that is
    /// durable could be sealed again under the same message key after a crash.
    durable_at: u64,
}

impl Schedule {
    fn of(e: &OutboxEntry) -> Schedule {
        Schedule {
            recipient: e.recipient,
            targets: (e.targets.iter().enumerate())
                .filter(|(_, t)| !t.done)
                .map(|(i, t)| (i, t.peer_id.clone(), t.next_at))
                .collect(),
            lookup_at: e.waiting.as_ref().map(|w| w.next_at),
            durable_at: 0,
        }
    }
}

/// The outbox's schedule, by message id: written with the tree, under its lock, so the two
/// agree.
#[derive(Debug, Default)]
pub(super) struct OutboxIndex(HashMap<[u8; 16], Schedule>);

impl OutboxIndex {
    /// Replaces an entry's schedule, keeping the flush it waits for.
    fn keep_durable(&mut self, id: [u8; 16], mut s: Schedule) {
        s.durable_at = self.0.get(&id).map_or(0, |old| old.durable_at);
        self.0.insert(id, s);
    }
}

/// A lookup of a waiting name, in the pairs [`Store::outbox_due`] returns.
pub const LOOKUP: usize = usize::MAX;

/// What of the outbox is due (see [`Store::outbox_due`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Deliveries (message id, target index) and lookups (message id, [`LOOKUP`]) due now,
    /// the longest due first.
    pub now: Vec<([u8; 16], usize)>,
    /// When the next one not due yet is.
    pub next: Option<u64>,
}

impl Store {
    /// Stores an outgoing message and its outbox entry in one transaction.
    pub fn insert_outgoing(&self, m: &StoredMessage, out: &OutboxEntry) -> Result<(), NodeError> {
        let key = msg_key(&m.conversation, m.sent_at, &m.id);
        let (value, entry) = (enc(m), enc(out));
        let mut schedule = self.outbox_index();
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
        r.map_err(|e| self.err(format!("{e:?}")))?;
        schedule
            .0
            .insert(out.id, Schedule { durable_at: self.flush_ticket(), ..Schedule::of(out) });
        Ok(())
    }

    /// Writes an entry whose envelopes were sealed again (in a new session): like
    /// [`Store::put_outbox`], but they leave only once a flush covers this write.
    pub fn put_outbox_resealed(&self, e: &OutboxEntry) -> Result<(), NodeError> {
        let mut schedule = self.outbox_index();
        self.outbox.insert(e.id, enc(e)).map_err(|x| self.err(x))?;
        schedule.0.insert(e.id, Schedule { durable_at: self.flush_ticket(), ..Schedule::of(e) });
        Ok(())
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
        let mut schedule = self.outbox_index();
        self.outbox.insert(e.id, enc(e)).map_err(|x| self.err(x))?;
        schedule.keep_durable(e.id, Schedule::of(e));
        Ok(())
    }

    /// Removes an outbox entry.
    pub fn remove_outbox(&self, id: &[u8; 16]) -> Result<(), NodeError> {
        let mut schedule = self.outbox_index();
        self.outbox.remove(id).map_err(|e| self.err(e))?;
        schedule.0.remove(id);
        Ok(())
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
        let mut schedule = self.outbox_index();
        let _serial = sled_lock();
        let r: Result<(), TransactionError<()>> = (&self.messages, &self.msg_index, &self.outbox)
            .transaction(|(msgs, index, outbox)| {
                msgs.remove(old_key.as_slice())?;
                msgs.insert(key.as_slice(), value.as_slice())?;
                index.insert(&new.id, key.as_slice())?;
                outbox.insert(&new.id, out.as_slice())?;
                Ok(())
            });
        r.map_err(|e| self.err(format!("{e:?}")))?;
        schedule
            .0
            .insert(entry.id, Schedule { durable_at: self.flush_ticket(), ..Schedule::of(entry) });
        Ok(())
    }

    /// Ends an outgoing message's deliveries: its outbox entry goes and its status becomes
    /// `status` (cancelled, failed), in one transaction. Whether it had an outbox entry.
    pub fn end_outgoing(&self, id: &[u8; 16], status: Status) -> Result<bool, NodeError> {
        Ok(!self.end_outgoing_many(&[*id], status)?.is_empty())
    }

    /// [`Store::end_outgoing`] for several messages in one transaction (a sled transaction
    /// writes the log twice however small it is, so acknowledgements are ended together). The
    /// ids that had an outbox entry.
    pub fn end_outgoing_many(
        &self,
        ids: &[[u8; 16]],
        status: Status,
    ) -> Result<Vec<[u8; 16]>, NodeError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            keys.push(self.msg_index.get(id).map_err(|e| self.err(e))?);
        }
        let mut schedule = self.outbox_index();
        let _serial = sled_lock();
        let r: Result<Vec<[u8; 16]>, TransactionError<()>> = (&self.messages, &self.outbox)
            .transaction(|(msgs, outbox)| {
                let mut ended = Vec::with_capacity(ids.len());
                for (id, key) in ids.iter().zip(&keys) {
                    if outbox.remove(id)?.is_none() {
                        continue;
                    }
                    ended.push(*id);
                    set_status_in(msgs, key.as_deref(), status)?;
                }
                Ok(ended)
            });
        let ended = r.map_err(|e| self.err(format!("{e:?}")))?;
        for id in ids {
            schedule.0.remove(id);
        }
        Ok(ended)
    }

    /// Writes outbox entry `e` and sets its message's status to `status`, in one transaction
    /// (a delivery reached a mailbox: the entry notes it and the message becomes `stored`), so
    /// that a crash never leaves one without the other.
    pub fn put_outbox_with_status(&self, e: &OutboxEntry, status: Status) -> Result<(), NodeError> {
        let mut schedule = self.outbox_index();
        self.pending_and_status(&self.outbox, &e.id, Some(&enc(e)), &e.id, status)?;
        schedule.keep_durable(e.id, Schedule::of(e));
        Ok(())
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
        self.pending_and_status(pending, pending_key, None, id, status)
    }

    /// Writes `value` under `pending_key` in `pending` (or removes the key when `value` is
    /// `None`) and sets message `id`'s status to `status`, in one transaction. A removal of a
    /// key that is not there changes nothing and returns `false`.
    fn pending_and_status(
        &self,
        pending: &sled::Tree,
        pending_key: &[u8],
        value: Option<&[u8]>,
        id: &[u8; 16],
        status: Status,
    ) -> Result<bool, NodeError> {
        let key = self.msg_index.get(id).map_err(|e| self.err(e))?;
        let _serial = sled_lock();
        let r: Result<bool, TransactionError<()>> =
            (&self.messages, pending).transaction(|(msgs, pending)| {
                match value {
                    Some(v) => {
                        pending.insert(pending_key, v)?;
                    }
                    None => {
                        if pending.remove(pending_key)?.is_none() {
                            return Ok(false);
                        }
                    }
                }
                set_status_in(msgs, key.as_deref(), status)?;
                Ok(true)
            });
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// Every outbox entry.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, NodeError> {
        self.outbox.iter().values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
    }

    fn outbox_index(&self) -> std::sync::MutexGuard<'_, OutboxIndex> {
        self.outbox_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the outbox's schedule from the tree (when the store opens). An entry that does
    /// not decode is left out, with a warning, rather than stopping every other delivery.
    pub(super) fn load_outbox_index(&self) -> Result<(), NodeError> {
        let mut schedule = self.outbox_index();
        schedule.0.clear();
        for kv in self.outbox.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            match self.decode::<OutboxEntry>(&v) {
                Ok(e) => {
                    schedule.0.insert(e.id, Schedule::of(&e));
                }
                Err(e) => {
                    tracing::warn!(key = %hex::encode(&k), "an outbox entry is left out: {e}")
                }
            }
        }
        Ok(())
    }

    /// The deliveries and lookups due at `now` that `busy` does not rule out (those under
    /// way), the longest due first, at most `limit`; and when the next of the others is due.
    /// Reads no entry: the caller decodes only those it starts.
    pub fn outbox_due(
        &self,
        now: u64,
        limit: usize,
        busy: impl Fn(&([u8; 16], usize)) -> bool,
    ) -> Due {
        let schedule = self.outbox_index();
        let mut due: Vec<(u64, ([u8; 16], usize))> = Vec::new();
        let mut next: Option<u64> = None;
        let durable = self.flushed_ticket();
        for (id, s) in &schedule.0 {
            if s.durable_at > durable {
                // Not on disk yet: the flush that covers it wakes the delivery task.
                next = Some(next.map_or(now + 10, |n| n.min(now + 10)));
                continue;
            }
            let items = s.targets.iter().map(|(i, _, at)| (*i, *at));
            for (i, at) in items.chain(s.lookup_at.map(|at| (LOOKUP, at))) {
                if busy(&(*id, i)) {
                    continue;
                }
                if at <= now {
                    due.push((at, (*id, i)));
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        due.sort_unstable();
        due.truncate(limit);
        Due { now: due.into_iter().map(|(_, k)| k).collect(), next }
    }

    /// The outbox entries with a pending delivery to `peer` or a name lookup pending.
    pub fn outbox_ids_for_peer(&self, peer: &[u8]) -> Vec<[u8; 16]> {
        let schedule = self.outbox_index();
        (schedule.0.iter())
            .filter(|(_, s)| s.lookup_at.is_some() || s.targets.iter().any(|t| t.1 == peer))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The outbox entries to `user`.
    pub fn outbox_ids_to(&self, user: &[u8; 16]) -> Vec<[u8; 16]> {
        let schedule = self.outbox_index();
        schedule.0.iter().filter(|(_, s)| &s.recipient == user).map(|(id, _)| *id).collect()
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
            plain: None,
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

    fn target(peer: u8, next_at: u64, done: bool) -> DeviceTarget {
        DeviceTarget {
            device: [peer; 32],
            peer_id: vec![peer],
            envelope: vec![0; 100],
            done,
            attempts: 0,
            next_at,
            last_error: None,
            deposited: false,
            prekey: None,
        }
    }

    fn entry(id: u8, targets: Vec<DeviceTarget>, waiting_at: Option<u64>) -> OutboxEntry {
        OutboxEntry {
            id: [id; 16],
            recipient: [id % 2; 16],
            targets,
            created_at: 1,
            mailboxes: vec![],
            in_history: false,
            waiting: waiting_at.map(|next_at| Waiting {
                name: "carol".into(),
                since: 1,
                attempts: 0,
                last_try: 0,
                next_at,
                last_error: None,
            }),
            plain: None,
        }
    }

    /// The schedule in memory follows every write of the tree and is read back when the store
    /// opens again: what is due, the longest due first, without what is under way, at most
    /// `limit`; when the next is due; which entries wait for a peer or a user.
    #[test]
    fn the_outbox_schedule_follows_the_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.put_outbox(&entry(1, vec![target(7, 50, false), target(8, 500, false)], None))
            .expect("put");
        s.put_outbox(&entry(2, vec![target(7, 10, false), target(9, 0, true)], None)).expect("put");
        s.put_outbox(&entry(3, vec![], Some(20))).expect("put");
        let mut m = msg(4, 9, 100);
        m.direction = Direction::Out;
        s.insert_outgoing(&m, &entry(4, vec![target(9, 5000, false)], None)).expect("queued");
        let due = s.outbox_due(100, 10, |_| false);
        assert_eq!(due.now, vec![([2; 16], 0), ([3; 16], LOOKUP), ([1; 16], 0)]);
        assert_eq!(due.next, Some(110), "a new entry waits for the flush that covers it");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(s.flush()).expect("flushed");
        let due = s.outbox_due(100, 10, |_| false);
        assert_eq!(due.next, Some(500));
        let due = s.outbox_due(100, 1, |k| k.0 == [2; 16]);
        assert_eq!(due.now, vec![([3; 16], LOOKUP)], "busy left out, then the limit");
        let mut ids = s.outbox_ids_for_peer(&[7]);
        ids.sort();
        assert_eq!(ids, vec![[1; 16], [2; 16], [3; 16]], "peer 7's, and the waiting one");
        assert_eq!(s.outbox_ids_for_peer(&[9]).len(), 2, "a done target does not count");
        let mut ids = s.outbox_ids_to(&[0; 16]);
        ids.sort();
        assert_eq!(ids, vec![[2; 16], [4; 16]]);

        s.remove_outbox(&[2; 16]).expect("removed");
        s.end_outgoing(&[4; 16], Status::Cancelled).expect("ended");
        s.put_outbox(&entry(1, vec![target(7, 50, true), target(8, 500, false)], None))
            .expect("put");
        let after = |s: &Store| s.outbox_due(1000, 10, |_| false);
        assert_eq!(after(&s).now, vec![([3; 16], LOOKUP), ([1; 16], 1)]);
        assert_eq!(after(&s).next, None);
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(after(&s).now, vec![([3; 16], LOOKUP), ([1; 16], 1)], "read back on open");
    }
}
