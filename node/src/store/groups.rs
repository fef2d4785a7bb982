//! Group state: members, epochs and keys (tree `groups`), the group messages since a time, and
//! messages to groups not known yet (tree `group_waiting`), and the sequence numbers of group
//! messages sealed and held (trees `group_next_seq`, `group_seqs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use sled::transaction::TransactionError;
use sled::Transactional;

use kith_protocol::codec;

use super::{enc, msg_key, sled_lock, Status, Store, StoredMessage, MAX_VALUE};
use crate::error::NodeError;
use crate::rules::group_seq::Received;

/// The groups in memory, by id.
pub(super) type GroupCache = HashMap<[u8; 16], Arc<GroupState>>;

/// A message to a group whose state has not reached this device yet (tree `group_waiting`,
/// keyed by group id and message id): the encoded `kith_protocol::Message`, sealed and posted
/// once the state arrives. Its history entry is `waiting` meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupWaiting {
    /// The group.
    #[serde(with = "serde_bytes")]
    pub group: [u8; 16],
    /// The message id.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// The encoded message.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// When it was sent.
    pub since: u64,
}

fn waiting_key(group: &[u8; 16], id: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(group);
    k[16..].copy_from_slice(id);
    k
}

/// A member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// User id.
    #[serde(with = "serde_bytes")]
    pub user: [u8; 16],
    /// Identity key.
    #[serde(with = "serde_bytes")]
    pub identity: [u8; 32],
    /// Name, when known.
    pub name: Option<String>,
}

/// What this device knows of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Group (conversation) id.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// Members, in the order they joined.
    pub members: Vec<GroupMember>,
    /// Current epoch.
    pub epoch: u64,
    /// Keys of the epochs this device was a member of: (epoch, key).
    pub keys: Vec<(u64, Vec<u8>)>,
    /// Whether this user is still a member.
    pub active: bool,
    /// When this device joined (its history starts there).
    pub joined_at: u64,
    /// Members that announced they leave, awaiting the new epoch.
    #[serde(default)]
    pub leaving: Vec<Vec<u8>>,
    /// Peer ids (binary) of member devices seen, used to sync and to keep the mesh connected.
    #[serde(default)]
    pub peers: Vec<Vec<u8>>,
    /// For each epoch this device held: its members (user ids) and when this device moved on
    /// from it (local time), if it did.
    #[serde(default)]
    pub epochs: Vec<EpochMembers>,
}

/// The members of one epoch of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMembers {
    /// Epoch number.
    pub epoch: u64,
    /// Members' user ids.
    pub members: Vec<Vec<u8>>,
    /// When this device moved to a later epoch.
    pub ended_at: Option<u64>,
}

impl GroupState {
    /// A group this device joins now, at `epoch` with `key`.
    pub fn joined(
        id: [u8; 16],
        members: Vec<GroupMember>,
        epoch: u64,
        key: [u8; 32],
        now: u64,
    ) -> Self {
        let mut g = GroupState {
            id,
            members,
            epoch: 0,
            keys: Vec::new(),
            active: true,
            joined_at: now,
            leaving: Vec::new(),
            peers: Vec::new(),
            epochs: Vec::new(),
        };
        g.enter_epoch(epoch, key, now);
        g
    }

    /// Moves to `epoch` with `key` and the current member list, closing the previous epoch.
    pub fn enter_epoch(&mut self, epoch: u64, key: [u8; 32], now: u64) {
        for e in self.epochs.iter_mut().filter(|e| e.ended_at.is_none()) {
            e.ended_at = Some(now);
        }
        self.epoch = epoch;
        self.keys.push((epoch, key.to_vec()));
        self.epochs.push(EpochMembers {
            epoch,
            members: self.members.iter().map(|m| m.user.to_vec()).collect(),
            ended_at: None,
        });
    }
}

impl Store {
    /// A group by id.
    pub fn group(&self, id: &[u8; 16]) -> Result<Option<GroupState>, NodeError> {
        Ok(self.group_shared(id).map(|g| (*g).clone()))
    }

    /// A group by id, shared with the store's copy in memory: for reading it without copying
    /// a list of hundreds of members.
    pub fn group_shared(&self, id: &[u8; 16]) -> Option<Arc<GroupState>> {
        self.group_cache().get(id).cloned()
    }

    /// Stores a group.
    pub fn put_group(&self, g: &GroupState) -> Result<(), NodeError> {
        let mut cache = self.group_cache();
        self.groups.insert(g.id, enc(g)).map_err(|e| self.err(e))?;
        cache.insert(g.id, Arc::new(g.clone()));
        Ok(())
    }

    /// Every group, shared with the store's copies in memory.
    pub fn groups_shared(&self) -> Vec<Arc<GroupState>> {
        self.group_cache().values().cloned().collect()
    }

    fn group_cache(&self) -> std::sync::MutexGuard<'_, GroupCache> {
        self.group_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads every group into memory (when the store opens). A group that does not decode is
    /// left out, with a warning, rather than making every group unreadable.
    pub(super) fn load_groups(&self) -> Result<(), NodeError> {
        let mut cache = self.group_cache();
        cache.clear();
        for kv in self.groups.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            match self.decode::<GroupState>(&v) {
                Ok(g) => {
                    cache.insert(g.id, Arc::new(g));
                }
                Err(e) => tracing::warn!(key = %hex::encode(&k), "a group is left out: {e}"),
            }
        }
        Ok(())
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<GroupState>, NodeError> {
        Ok(self.group_cache().values().map(|g| (**g).clone()).collect())
    }

    /// Stores a message to a group not known yet: its history entry `m` (status `waiting`) and
    /// the message to post once the group's state arrives, in one transaction.
    pub fn insert_group_waiting(
        &self,
        m: &StoredMessage,
        w: &GroupWaiting,
    ) -> Result<(), NodeError> {
        let key = msg_key(&m.conversation, m.sent_at, &m.id);
        let (value, waiting) = (enc(m), enc(w));
        let _serial = sled_lock();
        let r: Result<(), TransactionError<()>> =
            (&self.messages, &self.msg_index, &self.group_waiting).transaction(
                |(msgs, index, pending)| {
                    msgs.insert(key.as_slice(), value.as_slice())?;
                    index.insert(&m.id, key.as_slice())?;
                    pending.insert(&waiting_key(&w.group, &w.id), waiting.as_slice())?;
                    Ok(())
                },
            );
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// The messages waiting for a group's state (`Some`), or for any group (`None`).
    pub fn group_waiting(&self, group: Option<&[u8; 16]>) -> Result<Vec<GroupWaiting>, NodeError> {
        let iter = match group {
            Some(g) => self.group_waiting.scan_prefix(g),
            None => self.group_waiting.iter(),
        };
        iter.values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
    }

    /// A waiting group message was sealed: its history entry `old` becomes `new` (same id,
    /// sent now, status `sent`, the envelope as `raw`) and it stops waiting, in one
    /// transaction. `false` when it no longer waits (cancelled meanwhile).
    pub fn release_group_waiting(
        &self,
        old: &StoredMessage,
        new: &StoredMessage,
    ) -> Result<bool, NodeError> {
        let old_key = msg_key(&old.conversation, old.sent_at, &old.id);
        let key = msg_key(&new.conversation, new.sent_at, &new.id);
        let value = enc(new);
        let _serial = sled_lock();
        let r: Result<bool, TransactionError<()>> =
            (&self.messages, &self.msg_index, &self.group_waiting).transaction(
                |(msgs, index, pending)| {
                    if pending.remove(&waiting_key(&old.conversation, &old.id))?.is_none() {
                        return Ok(false);
                    }
                    msgs.remove(old_key.as_slice())?;
                    msgs.insert(key.as_slice(), value.as_slice())?;
                    index.insert(&new.id, key.as_slice())?;
                    Ok(true)
                },
            );
        r.map_err(|e| self.err(format!("{e:?}")))
    }

    /// Ends a waiting group message: it stops waiting and its status becomes `status`
    /// (cancelled, failed), in one transaction. Whether it was waiting.
    pub fn end_group_waiting(
        &self,
        group: &[u8; 16],
        id: &[u8; 16],
        status: Status,
    ) -> Result<bool, NodeError> {
        self.end_pending(&self.group_waiting, &waiting_key(group, id), id, status)
    }

    /// The next sequence number of this device's messages to group `group` (from 1). Flushed
    /// with the message that carries it; a number taken by a message that was then lost (a
    /// crash before the flush) is a gap the members give up on after a day.
    pub fn next_group_seq(&self, group: &[u8; 16]) -> Result<u64, NodeError> {
        let next = |old: Option<&[u8]>| {
            let last = old.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            Some(last.saturating_add(1).to_be_bytes().to_vec())
        };
        let v = self.group_next_seq.update_and_fetch(group, next).map_err(|e| self.err(e))?;
        Ok(v.and_then(|b| (&b[..]).try_into().ok()).map_or(1, u64::from_be_bytes))
    }

    /// Records that this device holds the message numbered `seq` of `device` in `group`.
    /// A record that does not decode is started afresh (it only tells what to catch up on).
    pub fn record_group_seq(
        &self,
        group: &[u8; 16],
        device: &[u8],
        seq: u64,
        now: u64,
    ) -> Result<(), NodeError> {
        let key = [&group[..], device].concat();
        let add = |old: Option<&[u8]>| {
            let mut r: Received =
                old.and_then(|b| codec::from_slice(b, MAX_VALUE).ok()).unwrap_or_default();
            r.insert(seq, now);
            Some(enc(&r))
        };
        self.group_seqs.update_and_fetch(key, add).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The devices of `group` with messages this device can prove it lacks, and how many of
    /// each, gaps older than [`GAP_PATIENCE_MS`](crate::rules::group_seq::GAP_PATIENCE_MS)
    /// given up.
    pub fn group_gaps(&self, group: &[u8; 16], now: u64) -> Result<Vec<(Vec<u8>, u64)>, NodeError> {
        let mut out = Vec::new();
        for kv in self.group_seqs.scan_prefix(group) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(mut r) = self.decode::<Received>(&v) else { continue };
            r.expire(now);
            match r.missing() {
                0 => {}
                n => out.push((k[16..].to_vec(), n)),
            }
        }
        Ok(out)
    }

    /// How many messages wait for group states.
    pub fn group_waiting_len(&self) -> usize {
        self.group_waiting.len()
    }

    /// Messages of a conversation sent at or after `since`, oldest first, at most `max`.
    pub fn messages_since(
        &self,
        conversation: &[u8; 16],
        since: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, NodeError> {
        let mut start = [0u8; 40];
        start[..16].copy_from_slice(conversation);
        start[16..24].copy_from_slice(&since.to_be_bytes());
        let mut end = [0xffu8; 40];
        end[..16].copy_from_slice(conversation);
        self.messages
            .range(start..=end)
            .values()
            .take(max)
            .map(|v| self.decode(&v.map_err(|e| self.err(e))?))
            .collect()
    }
}
