//! Group state: members, epochs and keys (tree `groups`), and the group messages since a time.

use serde::{Deserialize, Serialize};

use super::{enc, Store, StoredMessage};
use crate::error::NodeError;

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
        match self.groups.get(id).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores a group.
    pub fn put_group(&self, g: &GroupState) -> Result<(), NodeError> {
        self.groups.insert(g.id, enc(g)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<GroupState>, NodeError> {
        self.groups.iter().values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
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
