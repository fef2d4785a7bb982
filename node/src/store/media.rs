//! Attachments (tree `attachments`, by message id, and `blob_index`, by blob hash and message
//! id), blobs a mailbox node holds for its users (tree `held_blobs`), and the progress of
//! fetches in memory.

use serde::{Deserialize, Serialize};

use super::{enc, Store};
use crate::error::NodeError;

/// Where an attachment's blob stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobState {
    /// Announced, not fetched (larger than the automatic download limit, or not asked for yet).
    Available,
    /// Being fetched.
    Downloading,
    /// Every chunk is held and checked: it can be saved or read.
    Complete,
    /// The last fetch failed (`error` says why); asking again retries.
    Failed,
    /// Removed from the blob store to make room (it was saved first); asking again fetches it.
    Evicted,
}

impl BlobState {
    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Available => "available",
            BlobState::Downloading => "downloading",
            BlobState::Complete => "complete",
            BlobState::Failed => "failed",
            BlobState::Evicted => "evicted",
        }
    }
}

/// An attachment this node knows: one it sent, received, or got a copy of from another of the
/// user's devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentEntry {
    /// The message that carries it.
    #[serde(with = "serde_bytes")]
    pub message: [u8; 16],
    /// Its conversation.
    #[serde(with = "serde_bytes")]
    pub conversation: [u8; 16],
    /// For a direct conversation, the other user; for a group, the group id.
    #[serde(with = "serde_bytes")]
    pub peer: [u8; 16],
    /// Whether the conversation is a group.
    pub group: bool,
    /// The `kith_protocol::blob::Attachment`, encoded (it holds the blob's key).
    #[serde(with = "serde_bytes")]
    pub attachment: Vec<u8>,
    /// The peer id (binary) of the device that sent it: the first place to fetch it from.
    #[serde(with = "serde_bytes")]
    pub sender_device: Vec<u8>,
    /// Where its blob stands here.
    pub state: BlobState,
    /// Why the last fetch failed.
    pub error: Option<String>,
    /// Where the plaintext was last saved (as the saver reported it).
    pub saved_to: Option<String>,
    /// When this node learnt of it.
    pub at: u64,
    /// For an attachment this device sent: one of the user's mailboxes holds the blob whole.
    #[serde(default)]
    pub mailbox_held: bool,
}

/// A blob a mailbox node holds for an enrolled user (tree `held_blobs`, by hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBlob {
    /// The user it is held for.
    #[serde(with = "serde_bytes")]
    pub user: [u8; 16],
    /// The device that asked (and that it is fetched from), peer id in binary.
    #[serde(with = "serde_bytes")]
    pub device: Vec<u8>,
    /// Sealed bytes.
    pub size: u64,
    /// When it was asked for.
    pub since: u64,
    /// Whether every chunk is held.
    pub complete: bool,
}

/// Fetches in progress: blob hash → (chunks held, chunks in all).
pub(super) type Progress =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], (usize, usize)>>>;

impl AttachmentEntry {
    /// The attachment it records (with the blob's key).
    pub fn attachment(&self) -> Result<kith_protocol::blob::Attachment, NodeError> {
        let max = kith_protocol::message::MAX_MESSAGE_SIZE;
        kith_protocol::codec::from_stored_slice(&self.attachment, max).map_err(|err| {
            NodeError::Corrupt {
                path: "store/attachments".into(),
                what: format!("attachment of message {}: {err}", hex::encode(self.message)),
            }
        })
    }
}

fn index_key(hash: &[u8; 32], message: &[u8; 16]) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(hash);
    k[32..].copy_from_slice(message);
    k
}

impl Store {
    /// Records an attachment (and indexes it by its blob's hash).
    pub fn put_attachment(&self, hash: &[u8; 32], e: &AttachmentEntry) -> Result<(), NodeError> {
        self.attachments.insert(e.message, enc(e)).map_err(|e| self.err(e))?;
        self.blob_index.insert(index_key(hash, &e.message), &[]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The attachment carried by message `id`, if any.
    pub fn attachment(&self, id: &[u8; 16]) -> Result<Option<AttachmentEntry>, NodeError> {
        match self.attachments.get(id).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Every attachment whose blob is `hash`.
    pub fn attachments_of(&self, hash: &[u8; 32]) -> Result<Vec<AttachmentEntry>, NodeError> {
        let mut out = Vec::new();
        for kv in self.blob_index.scan_prefix(hash) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            let Ok(id) = <[u8; 16]>::try_from(&k[32..]) else { continue };
            if let Some(e) = self.attachment(&id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every attachment, in no particular order (for eviction and restarting fetches).
    pub fn all_attachments(&self) -> Result<Vec<AttachmentEntry>, NodeError> {
        self.attachments
            .iter()
            .values()
            .map(|v| self.decode(&v.map_err(|e| self.err(e))?))
            .collect()
    }

    /// Sets the state (and error) of every attachment of blob `hash`; returns them as written.
    pub fn set_blob_state(
        &self,
        hash: &[u8; 32],
        state: BlobState,
        error: Option<String>,
    ) -> Result<Vec<AttachmentEntry>, NodeError> {
        let mut all = self.attachments_of(hash)?;
        for e in &mut all {
            e.state = state;
            e.error = error.clone();
            self.attachments.insert(e.message, enc(&*e)).map_err(|e| self.err(e))?;
        }
        Ok(all)
    }

    /// Records that a mailbox holds blob `hash` whole.
    pub fn set_mailbox_held(&self, hash: &[u8; 32]) -> Result<(), NodeError> {
        for mut e in self.attachments_of(hash)? {
            e.mailbox_held = true;
            self.attachments.insert(e.message, enc(&e)).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records where the attachment of message `id` was saved.
    pub fn set_saved(&self, id: &[u8; 16], path: &str) -> Result<bool, NodeError> {
        let Some(mut e) = self.attachment(id)? else { return Ok(false) };
        e.saved_to = Some(path.to_owned());
        self.attachments.insert(e.message, enc(&e)).map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// A blob held for a mailbox user.
    pub fn held_blob(&self, hash: &[u8; 32]) -> Result<Option<HeldBlob>, NodeError> {
        match self.held_blobs.get(hash).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records a blob held for a mailbox user.
    pub fn put_held_blob(&self, hash: &[u8; 32], h: &HeldBlob) -> Result<(), NodeError> {
        self.held_blobs.insert(hash, enc(h)).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every blob held for mailbox users, with its hash.
    pub fn held_blobs(&self) -> Result<Vec<([u8; 32], HeldBlob)>, NodeError> {
        let mut out = Vec::new();
        for kv in self.held_blobs.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(hash) = <[u8; 32]>::try_from(&k[..]) else { continue };
            out.push((hash, self.decode(&v)?));
        }
        Ok(out)
    }

    /// Forgets a held blob.
    pub fn remove_held_blob(&self, hash: &[u8; 32]) -> Result<(), NodeError> {
        self.held_blobs.remove(hash).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records how far the fetch of blob `hash` got (chunks held of all), in memory.
    pub fn set_progress(&self, hash: &[u8; 32], held: usize, total: usize) {
        if let Ok(mut p) = self.progress.lock() {
            if held >= total {
                p.remove(hash);
            } else {
                p.insert(*hash, (held, total));
            }
        }
    }

    /// How far the fetch of blob `hash` got, if one runs.
    pub fn progress(&self, hash: &[u8; 32]) -> Option<(usize, usize)> {
        self.progress.lock().ok()?.get(hash).copied()
    }
}
