//! The sled store. This module owns every sled tree; nothing else touches sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | text key | CBOR value (schema version, registered name, record sequence, ...) |
//! | `prekeys` | prekey id, u32 BE | [`PrekeyEntry`] |
//! | `contacts` | normalized name | [`Contact`] |
//! | `messages` | conversation id (16) ‖ sent time (u64 BE) ‖ message id (16) | [`StoredMessage`] |
//! | `msg_index` | message id (16) | key in `messages` |
//! | `outbox` | message id (16) | [`OutboxEntry`] |
//! | `mailbox` | device (32) ‖ deposit time (u64 BE) ‖ envelope id (16) | [`HeldEnvelope`] (mailbox nodes) |
//! | `mailbox_idx` | device (32) ‖ envelope id (16) | key in `mailbox` |
//! | `enrolled` | device (32) | user id (16) of an enrolled device (mailbox nodes) |
//! | `groups` | group id (16) | [`GroupState`] |
//! | `group_seqs` | group id (16) ‖ device peer id | [`Received`](crate::rules::group_seq::Received): the device's group messages held |
//! | `group_next_seq` | group id (16) | u64 BE: the last sequence number this device sealed |
//! | `attachments` | message id (16) | [`AttachmentEntry`] |
//! | `blob_index` | blob hash (32) ‖ message id (16) | empty |
//! | `held_blobs` | blob hash (32) | [`HeldBlob`] (mailbox nodes) |
//!
//! Values are CBOR through `kith_protocol::codec`. Writes that belong together (a message, its
//! index entry, its outbox entry) are one sled transaction. Callers that acknowledge a write to
//! a person or a peer call [`Store::flush`] first: sled alone flushes only every 500 ms.

use std::path::{Path, PathBuf};

use kith_protocol::codec;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;

use crate::error::NodeError;

mod accounts;
mod groups;
mod mailbox;
mod media;
mod outbox;
mod sessions;

pub use accounts::{ConsentEntry, ReportEntry, MAX_BOT_VALUE, MAX_REPORTS};
pub use groups::{EpochMembers, GroupMember, GroupState, GroupWaiting};
pub use mailbox::DepositRefusal;
pub use media::{AttachmentEntry, BlobState, HeldBlob};
pub use outbox::{DeviceTarget, Due, OutboxEntry, Waiting, LOOKUP};
pub use sessions::{DeviceSessions, StoredSession, MAX_SESSIONS_PER_DEVICE};

/// The version of the store layout; opening a store of another version is refused.
pub const SCHEMA_VERSION: u64 = 1;
/// A file next to sled's own, written when the store is created.
const MARKER: &str = "kith-store";
/// Largest value the store decodes.
const MAX_VALUE: usize = 1024 * 1024;

/// The status of a stored message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Outgoing, durably queued, not yet handed to the network.
    Queued,
    /// Outgoing, sent to at least one device, not yet acknowledged by all.
    Sent,
    /// Outgoing, held by a mailbox of the recipient for every device not yet reached.
    Stored,
    /// Outgoing, acknowledged as durably stored by every recipient device.
    Delivered,
    /// Outgoing, the recipient has read it.
    Read,
    /// Incoming, stored.
    Received,
    /// Outgoing, stored; the recipient's name does not resolve yet, and lookups continue
    /// (for at most `rules::outbox::WAITING_LIMIT_MS`).
    Waiting,
    /// Outgoing, withdrawn by the user before every device had it.
    Cancelled,
    /// Outgoing, given up: the recipient's name did not resolve in time.
    Failed,
}

impl Status {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Stored => "stored",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Received => "received",
            Status::Waiting => "waiting",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }
}

/// Whether a message was sent or received by this user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

/// A message in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Message id.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// Conversation id.
    #[serde(with = "serde_bytes")]
    pub conversation: [u8; 16],
    /// Sent or received.
    pub direction: Direction,
    /// The sender's user id.
    #[serde(with = "serde_bytes")]
    pub sender: [u8; 16],
    /// The other party's user id.
    #[serde(with = "serde_bytes")]
    pub peer: [u8; 16],
    /// The content kind.
    pub kind: String,
    /// The text, for text-bearing kinds.
    pub text: Option<String>,
    /// The sender's clock at sending.
    pub sent_at: u64,
    /// When this device stored it.
    pub stored_at: u64,
    /// Status.
    pub status: Status,
    /// The encoded `kith_protocol::Message`.
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    /// For an outgoing message whose recipient's name did not resolve yet: that name (the
    /// message is kept under a placeholder conversation until it resolves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// For a reply, reaction, edit or delete: the message it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<[u8; 16]>,
    /// For a reaction: it takes the emoji (`text`) back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// For a `location`: the point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<Point>,
    /// For a planning kind (`docs/protocol.md` 6.6) and `live_location`: the encoded content,
    /// which [`crate::services::plans`] folds into the conversation's events, lists, bills and shared
    /// locations (a group message's `raw` is its sealed envelope, so the content is kept here).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub plan: Option<Vec<u8>>,
    /// Not a message of its own in the history: an answer to an event, a list's edit, a
    /// payment's confirmation, a live location's update. Listings skip it, and it does not
    /// count towards their limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// For a message from a sender this node had no name for: the name the sender claimed,
    /// unchecked (it is pinned once a lookup finds it under the sender's key). Kept with the
    /// message so a bot can check it after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_name: Option<String>,
}

/// A decision to block (or unblock) someone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// Blocked (else unblocked).
    pub blocked: bool,
    /// Their name, when known.
    pub name: Option<String>,
    /// When (ms, the deciding device's clock).
    pub at: u64,
}

/// A shared location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: Option<f32>,
    /// A label.
    pub label: Option<String>,
}

impl StoredMessage {
    /// Whether it belongs to a group: group messages are stored with the group's id as their
    /// `peer` (a direct conversation's id is never a user id).
    pub fn is_group(&self) -> bool {
        self.peer == self.conversation
    }

    /// The history entry of `m`; `peer` is the other party (the group id for group messages),
    /// `raw` what is kept of it (the encoded message, or the group envelope).
    pub fn of(
        m: &kith_protocol::Message,
        direction: Direction,
        peer: [u8; 16],
        status: Status,
        raw: Vec<u8>,
    ) -> Self {
        use kith_protocol::Content;
        let (target, removed) = match &m.content {
            Content::Reply { to, .. } | Content::Edit { to, .. } | Content::Delete { to } => {
                (Some(to.0), false)
            }
            Content::Reaction { to, remove, .. } => (Some(to.0), *remove),
            Content::EventChange(c) => (Some(c.to.0), false),
            Content::Rsvp(r) => (Some(r.to.0), false),
            Content::ListChange(c) => (Some(c.to.0), false),
            Content::PaymentConfirm(c) => (Some(c.to.0), false),
            Content::InteractiveUpdate(u) => (Some(u.to.0), false),
            Content::InteractiveAnswer(a) => (Some(a.to.0), false),
            _ => (None, false),
        };
        let text = match &m.content {
            Content::Reaction { emoji, .. } => Some(emoji.clone()),
            c => crate::services::plans::summary(c).or_else(|| c.summary()),
        };
        let hidden = matches!(
            &m.content,
            Content::Rsvp(_)
                | Content::ListChange(_)
                | Content::PaymentConfirm(_)
                | Content::LiveLocation { seq: 1.., .. }
                | Content::InteractiveUpdate(_)
                | Content::Consent(_)
        );
        let plan = crate::services::plans::is_plan(&m.content)
            .then(|| kith_protocol::codec::to_vec(&m.content));
        let point = match &m.content {
            Content::Location { lat, lon, accuracy_m, label } => {
                Some(Point { lat: *lat, lon: *lon, accuracy_m: *accuracy_m, label: label.clone() })
            }
            Content::LiveLocation { lat, lon, accuracy_m, .. } => {
                Some(Point { lat: *lat, lon: *lon, accuracy_m: *accuracy_m, label: None })
            }
            _ => None,
        };
        StoredMessage {
            id: m.id.0,
            conversation: m.conversation.0,
            direction,
            sender: m.sender.0,
            peer,
            kind: m.content.kind().to_owned(),
            text,
            sent_at: m.sent_at,
            stored_at: crate::now_ms(),
            status,
            raw,
            waiting_for: None,
            target,
            removed,
            point,
            plan,
            hidden,
            claimed_name: None,
        }
    }
}

/// One page of history: encoded messages, and the key to continue after.
pub type HistoryPage = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// An envelope held by this node's mailbox service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldEnvelope {
    /// Envelope id (its digest).
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// The encoded envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// When it was deposited.
    pub deposited_at: u64,
}

/// A pinned contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The normalized name.
    pub name: String,
    /// The pinned user id.
    #[serde(with = "serde_bytes")]
    pub user_id: [u8; 16],
    /// The pinned identity key.
    #[serde(with = "serde_bytes")]
    pub identity: [u8; 32],
    /// The latest verified record of the pinned identity.
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
    /// When the key was pinned.
    pub pinned_at: u64,
    /// A different identity the name resolved to since, awaiting `kith trust`.
    pub changed_to: Option<Vec<u8>>,
}

/// A prekey of this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyEntry {
    /// Prekey id.
    pub id: u32,
    /// The X25519 secret.
    #[serde(with = "serde_bytes")]
    pub secret: [u8; 32],
    /// The encoded signed prekey.
    #[serde(with = "serde_bytes")]
    pub signed: Vec<u8>,
    /// Creation time.
    pub created_at: u64,
    /// Expiry time.
    pub expires_at: u64,
    /// When a newer prekey replaced it.
    pub replaced_at: Option<u64>,
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    prekeys: sled::Tree,
    contacts: sled::Tree,
    messages: sled::Tree,
    msg_index: sled::Tree,
    outbox: sled::Tree,
    mailbox: sled::Tree,
    mailbox_idx: sled::Tree,
    enrolled: sled::Tree,
    groups: sled::Tree,
    group_waiting: sled::Tree,
    group_seqs: sled::Tree,
    group_next_seq: sled::Tree,
    idempotency: sled::Tree,
    attachments: sled::Tree,
    blob_index: sled::Tree,
    held_blobs: sled::Tree,
    consent: sled::Tree,
    bot_state: sled::Tree,
    bot_inbox: sled::Tree,
    sessions: sled::Tree,
    session_for: sled::Tree,
    /// Whether incoming messages go to `bot_inbox` too (a business's or bot's node).
    inbox_on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Woken when a message enters the inbox.
    inbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Fetches in progress: blob hash → (chunks held, chunks in all).
    progress: media::Progress,
    /// How many keys `idempotency` holds, counted on first use ([`UNCOUNTED`] before): sled's
    /// `len` reads the whole tree.
    idempotency_len: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    flushes: std::sync::Arc<FlushGate>,
    outbox_index: std::sync::Arc<std::sync::Mutex<outbox::OutboxIndex>>,
    /// Every group, decoded: a group message's checks read its group's state, and decoding a
    /// state of hundreds of members for each message was most of a busy node's work.
    group_cache: std::sync::Arc<std::sync::Mutex<groups::GroupCache>>,
    /// Which names are pinned to each user id, read on first use and kept up to date by
    /// [`Store::put_contact`]: a message's view names its sender, and reading every contact
    /// for each one was most of a bot's work with a thousand people writing to it.
    contact_index: std::sync::Arc<std::sync::Mutex<Option<ContactIndex>>>,
    /// This user's account kind, once read (`Store::own_kind`).
    own_kind: std::sync::Arc<std::sync::Mutex<Option<kith_protocol::profile::AccountKind>>>,
}

/// The pinned names of each user id, and the user id of each name.
#[derive(Debug, Default)]
struct ContactIndex {
    by_user: std::collections::HashMap<[u8; 16], std::collections::BTreeSet<String>>,
    by_name: std::collections::HashMap<String, [u8; 16]>,
}

impl ContactIndex {
    fn put(&mut self, name: &str, user: [u8; 16]) {
        if let Some(old) = self.by_name.insert(name.to_owned(), user) {
            if let Some(names) = self.by_user.get_mut(&old) {
                names.remove(name);
                if names.is_empty() {
                    self.by_user.remove(&old);
                }
            }
        }
        self.by_user.entry(user).or_default().insert(name.to_owned());
    }
}

/// Group commit: callers that ask for a flush while one is running share the next one.
#[derive(Debug, Default)]
struct FlushGate {
    /// Tickets handed out (one per `flush` call).
    requested: std::sync::atomic::AtomicU64,
    /// The highest ticket whose writes are known to be on disk.
    done: std::sync::atomic::AtomicU64,
    /// Flushes run (calls that found their writes on disk already are not counted).
    runs: std::sync::atomic::AtomicU64,
    /// Held while a flush runs.
    running: tokio::sync::Mutex<()>,
}

/// Serializes sled transactions and flushes in this process. sled 0.34 guards both with one
/// process-wide reader-writer lock; a flush that holds it as a reader while waiting on its I/O
/// threads, and a transaction waiting for it as a writer, can block each other forever. So
/// transactions and flushes never overlap, and sled's own background flusher is off (every
/// acknowledged write is flushed explicitly).
static SLED_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sled_lock() -> std::sync::MutexGuard<'static, ()> {
    SLED_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes the files sled created in the store's directory (and its subdirectories) owner-only:
/// files 0600, directories 0700. sled creates them with the process's umask (often 0644).
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
                private_files(&entry.path())?;
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// How long an idempotency key of `POST /v1/messages` is remembered (24 hours).
pub const IDEMPOTENCY_KEPT_MS: u64 = 24 * 60 * 60 * 1000;
/// Most idempotency keys remembered; beyond it the oldest are forgotten.
pub const MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// `Store::idempotency_len` before the keys were first counted.
const UNCOUNTED: usize = usize::MAX;

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    codec::to_vec(v)
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// Fails with a one-line error naming the path when the directory is locked by another
    /// process, damaged, or of another schema version.
    pub fn open(path: &Path) -> Result<Store, NodeError> {
        let err = |reason: String| NodeError::Store { path: path.to_owned(), reason };
        // Owner-only (0700): the store holds prekey private keys and the whole history, and
        // whatever sled writes inside later is behind it.
        crate::private_fs::create_dir(path)
            .map_err(|e| err(format!("cannot be made private: {e}")))?;
        let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"));
        // A store closed a moment ago in this process may still be held by sled's I/O threads
        // for a few milliseconds; wait briefly before calling it locked.
        let mut opened = sled::Config::new().path(path).flush_every_ms(None).open();
        for _ in 0..40 {
            match &opened {
                Err(e) if locked(e) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    opened = sled::Config::new().path(path).flush_every_ms(None).open();
                }
                _ => break,
            }
        }
        let db = opened.map_err(|e| match e {
            ref l if locked(l) => {
                err("is in use by another process (is a kith daemon already running with this home?)".into())
            }
            sled::Error::Corruption { .. } => err(format!(
                "is damaged ({e}); restore it from a backup, or move it away to start with an empty history"
            )),
            other => err(format!("cannot be opened: {other}")),
        })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| err(format!("cannot open tree {name}: {e}")))
        };
        let store = Store {
            meta: tree("meta")?,
            prekeys: tree("prekeys")?,
            contacts: tree("contacts")?,
            messages: tree("messages")?,
            msg_index: tree("msg_index")?,
            outbox: tree("outbox")?,
            mailbox: tree("mailbox")?,
            mailbox_idx: tree("mailbox_idx")?,
            enrolled: tree("enrolled")?,
            groups: tree("groups")?,
            group_waiting: tree("group_waiting")?,
            group_seqs: tree("group_seqs")?,
            group_next_seq: tree("group_next_seq")?,
            idempotency: tree("idempotency")?,
            attachments: tree("attachments")?,
            blob_index: tree("blob_index")?,
            held_blobs: tree("held_blobs")?,
            consent: tree("consent")?,
            bot_state: tree("bot_state")?,
            bot_inbox: tree("bot_inbox")?,
            sessions: tree("sessions")?,
            session_for: tree("session_for")?,
            inbox_on: std::sync::Arc::default(),
            inbox_notify: std::sync::Arc::default(),
            progress: std::sync::Arc::default(),
            idempotency_len: std::sync::Arc::new(UNCOUNTED.into()),
            flushes: std::sync::Arc::new(FlushGate::default()),
            outbox_index: std::sync::Arc::default(),
            group_cache: std::sync::Arc::default(),
            contact_index: std::sync::Arc::default(),
            own_kind: std::sync::Arc::default(),
            db,
            path: path.to_owned(),
        };
        // sled opens a damaged database as an empty one; the marker file, written once the
        // store was first created, tells "new" from "lost its data".
        let marker = path.join(MARKER);
        match store.meta_get::<u64>("schema")? {
            None if marker.exists() => {
                return Err(err(
                    "is damaged: its data is missing; restore it from a backup, or move it away to start with an empty history"
                        .into(),
                ))
            }
            None => {
                store.meta_set("schema", &SCHEMA_VERSION)?;
                {
                    let _serial = sled_lock();
                    store.db.flush().map_err(|e| err(format!("cannot be written: {e}")))?;
                }
                std::fs::write(&marker, format!("kith store, layout {SCHEMA_VERSION}\n"))
                    .map_err(|e| err(format!("cannot be written: {e}")))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(err(format!(
                    "has layout version {v}, this kith understands {SCHEMA_VERSION}; use a matching kith version"
                )))
            }
        }
        store.load_outbox_index()?;
        store.load_groups()?;
        private_files(path).map_err(|e| err(format!("cannot be made private: {e}")))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> NodeError {
        NodeError::Store { path: self.path.clone(), reason: e.to_string() }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, NodeError> {
        codec::from_stored_slice(bytes, MAX_VALUE)
            .map_err(|e| self.err(format!("damaged value: {e}")))
    }

    /// Flushes every pending write to disk. Call before acknowledging a write.
    ///
    /// Concurrent callers share flushes: a caller's writes are on disk once a flush that began
    /// after its call has finished.
    pub async fn flush(&self) -> Result<(), NodeError> {
        use std::sync::atomic::Ordering::SeqCst;
        let gate = &self.flushes;
        let ticket = gate.requested.fetch_add(1, SeqCst) + 1;
        let _running = gate.running.lock().await;
        if gate.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket handed out so far belongs to writes made before this flush starts.
        let covers = gate.requested.load(SeqCst);
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let _serial = sled_lock();
            db.flush()
        })
        .await
        .map_err(|e| self.err(format!("flush task failed: {e}")))?;
        flushed.map_err(|e| self.err(e))?;
        gate.done.fetch_max(covers, SeqCst);
        gate.runs.fetch_add(1, SeqCst);
        Ok(())
    }

    /// The ticket of the next flush to start: a write made now is on disk once
    /// [`Store::flushed_ticket`] reaches it.
    pub fn flush_ticket(&self) -> u64 {
        self.flushes.requested.load(std::sync::atomic::Ordering::SeqCst) + 1
    }

    /// How many flushes ran since the store opened (a call whose writes an earlier flush
    /// covered does not count).
    pub fn flushes_run(&self) -> u64 {
        self.flushes.runs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The highest flush ticket whose writes are on disk.
    pub fn flushed_ticket(&self) -> u64 {
        self.flushes.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reads a metadata value.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, NodeError> {
        match self.meta.get(key).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Writes a metadata value.
    pub fn meta_set<T: Serialize>(&self, key: &str, value: &T) -> Result<(), NodeError> {
        self.meta.insert(key, enc(value)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// Every block decision this user made, by user id (hex): blocked or not, the name, when.
    pub fn blocks(&self) -> Result<std::collections::BTreeMap<String, BlockEntry>, NodeError> {
        Ok(self.meta_get("blocks")?.unwrap_or_default())
    }

    /// Whether this user blocked `user`.
    pub fn is_blocked(&self, user: &[u8; 16]) -> Result<bool, NodeError> {
        Ok(self.blocks()?.get(&hex::encode(user)).is_some_and(|b| b.blocked))
    }

    /// Records a block decision about `user`, unless one made later (`at`) is already held;
    /// answers whether it was taken.
    pub fn put_block(&self, user: &[u8; 16], entry: BlockEntry) -> Result<bool, NodeError> {
        let mut all = self.blocks()?;
        let key = hex::encode(user);
        if all.get(&key).is_some_and(|b| b.at > entry.at) {
            return Ok(false);
        }
        all.insert(key, entry);
        self.meta_set("blocks", &all)?;
        Ok(true)
    }

    /// Stores a prekey.
    pub fn put_prekey(&self, p: &PrekeyEntry) -> Result<(), NodeError> {
        self.prekeys.insert(p.id.to_be_bytes(), enc(p)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// A prekey by id.
    pub fn prekey(&self, id: u32) -> Result<Option<PrekeyEntry>, NodeError> {
        match self.prekeys.get(id.to_be_bytes()).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// All prekeys, oldest id first.
    pub fn prekeys(&self) -> Result<Vec<PrekeyEntry>, NodeError> {
        self.prekeys.iter().values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
    }

    /// Deletes a prekey (its secret is gone for good).
    pub fn delete_prekey(&self, id: u32) -> Result<(), NodeError> {
        self.prekeys.remove(id.to_be_bytes()).map(|_| ()).map_err(|e| self.err(e))
    }

    /// A contact by name.
    pub fn contact(&self, name: &str) -> Result<Option<Contact>, NodeError> {
        match self.contacts.get(name).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores a contact.
    pub fn put_contact(&self, c: &Contact) -> Result<(), NodeError> {
        // Under the index's lock, so the index follows the writes in their order.
        let mut index = self.contact_index();
        self.contacts.insert(c.name.as_bytes(), enc(c)).map_err(|e| self.err(e))?;
        if let Some(index) = index.as_mut() {
            index.put(&c.name, c.user_id);
        }
        Ok(())
    }

    fn contact_index(&self) -> std::sync::MutexGuard<'_, Option<ContactIndex>> {
        self.contact_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names pinned to `user`, in order (most users have one), from the index (read from
    /// the contacts on first use).
    pub fn names_pinned_to(&self, user: &[u8; 16]) -> Result<Vec<String>, NodeError> {
        let mut index = self.contact_index();
        if index.is_none() {
            let mut built = ContactIndex::default();
            for c in self.contacts()? {
                built.put(&c.name, c.user_id);
            }
            *index = Some(built);
        }
        Ok(index
            .as_ref()
            .and_then(|i| i.by_user.get(user))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// All contacts, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, NodeError> {
        self.contacts.iter().values().map(|v| self.decode(&v.map_err(|e| self.err(e))?)).collect()
    }

    /// The name pinned for a user id, if any.
    pub fn name_of(&self, user: &[u8; 16]) -> Result<Option<String>, NodeError> {
        Ok(self.names_pinned_to(user)?.into_iter().next())
    }

    /// Stores an incoming message unless a message with the same id is already stored.
    /// Returns whether it was new.
    pub fn insert_incoming(&self, m: &StoredMessage) -> Result<bool, NodeError> {
        let key = msg_key(&m.conversation, m.sent_at, &m.id);
        let value = enc(m);
        // A bot's node also puts what it receives in its inbox, in the same write (at least
        // once: `crate::bot`).
        let inbox = (self.inbox_on() && m.direction == Direction::In && !m.hidden)
            .then(|| self.db.generate_id().map(u64::to_be_bytes))
            .transpose()
            .map_err(|e| self.err(e))?;
        let r: Result<bool, TransactionError<()>> = {
            let _serial = sled_lock();
            (&self.messages, &self.msg_index, &self.bot_inbox).transaction(|(msgs, index, ib)| {
                if index.get(m.id)?.is_some() {
                    return Ok(false);
                }
                msgs.insert(key.as_slice(), value.as_slice())?;
                index.insert(&m.id, key.as_slice())?;
                if let Some(k) = inbox {
                    ib.insert(k.as_slice(), m.id.as_slice())?;
                }
                Ok(true)
            })
        };
        let fresh = r.map_err(|e| self.err(format!("{e:?}")))?;
        if fresh && inbox.is_some() {
            self.inbox_notify.notify_one();
        }
        Ok(fresh)
    }

    /// A message by id.
    pub fn message(&self, id: &[u8; 16]) -> Result<Option<StoredMessage>, NodeError> {
        let Some(key) = self.msg_index.get(id).map_err(|e| self.err(e))? else { return Ok(None) };
        match self.messages.get(key).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The message a client's send with idempotency key `key` created, if one did within
    /// [`IDEMPOTENCY_KEPT_MS`] before `now`.
    pub fn idempotent_send(&self, key: &str, now: u64) -> Result<Option<[u8; 16]>, NodeError> {
        let Some(v) = self.idempotency.get(key.as_bytes()).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let (id, at): ([u8; 16], u64) = self.decode(&v)?;
        Ok((now.saturating_sub(at) < IDEMPOTENCY_KEPT_MS).then_some(id))
    }

    /// Remembers that the send with idempotency key `key` created message `id` at `now`. Keys
    /// older than [`IDEMPOTENCY_KEPT_MS`] are forgotten, and beyond [`MAX_IDEMPOTENCY_KEYS`]
    /// the oldest.
    pub fn put_idempotent_send(&self, key: &str, id: &[u8; 16], now: u64) -> Result<(), NodeError> {
        use std::sync::atomic::Ordering;
        let previous =
            self.idempotency.insert(key.as_bytes(), enc(&(id, now))).map_err(|e| self.err(e))?;
        let len = match self.idempotency_len.load(Ordering::Acquire) {
            UNCOUNTED => self.idempotency.len(),
            n if previous.is_none() => n + 1,
            n => n,
        };
        self.idempotency_len.store(len, Ordering::Release);
        if len <= MAX_IDEMPOTENCY_KEYS {
            return Ok(());
        }
        let mut kept: Vec<(u64, sled::IVec)> = Vec::new();
        for kv in self.idempotency.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            match self.decode::<([u8; 16], u64)>(&v) {
                Ok((_, at)) if now.saturating_sub(at) < IDEMPOTENCY_KEPT_MS => kept.push((at, k)),
                _ => {
                    self.idempotency.remove(&k).map_err(|e| self.err(e))?;
                }
            }
        }
        kept.sort();
        let excess = kept.len().saturating_sub(MAX_IDEMPOTENCY_KEYS);
        self.idempotency_len.store(kept.len() - excess, Ordering::Release);
        for (_, k) in kept.into_iter().take(excess) {
            self.idempotency.remove(&k).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Sets a message's status; returns the updated message, or `None` if unknown.
    pub fn set_status(
        &self,
        id: &[u8; 16],
        status: Status,
    ) -> Result<Option<StoredMessage>, NodeError> {
        let Some(key) = self.msg_index.get(id).map_err(|e| self.err(e))? else { return Ok(None) };
        // A compare-and-swap, not a transaction: sled 0.34 writes its log twice for every
        // transaction (`pin_log`), and this runs for each message sent.
        let mut damaged = false;
        let updated = self
            .messages
            .update_and_fetch(&key, |old| {
                let old = old?;
                damaged = false;
                match codec::from_stored_slice::<StoredMessage>(old, MAX_VALUE) {
                    Ok(mut m) => {
                        m.status = status;
                        Some(enc(&m))
                    }
                    Err(_) => {
                        damaged = true;
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(|e| self.err(e))?;
        if damaged {
            return Err(self.err("damaged value: a message does not decode"));
        }
        match updated {
            Some(bytes) => Ok(Some(self.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The last `limit` messages, oldest first, of one conversation or of all.
    pub fn messages(
        &self,
        conversation: Option<&[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, NodeError> {
        let mut out: Vec<StoredMessage> = match conversation {
            Some(c) => {
                let mut out = Vec::new();
                for v in self.messages.scan_prefix(c).values().rev() {
                    let m: StoredMessage = self.decode(&v.map_err(|e| self.err(e))?)?;
                    if !m.hidden {
                        out.push(m);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
                out
            }
            None => {
                let mut all: Vec<StoredMessage> = Vec::new();
                for v in self.messages.iter().values() {
                    let m: StoredMessage = self.decode(&v.map_err(|e| self.err(e))?)?;
                    if !m.hidden {
                        all.push(m);
                    }
                }
                all.sort_by_key(|m| (m.sent_at, m.stored_at));
                all.into_iter().rev().take(limit).collect()
            }
        };
        out.reverse();
        Ok(out)
    }

    /// Every message of a conversation that carries a planning content (`plan`), hidden ones
    /// included, oldest first. Reads the whole conversation.
    pub fn plan_messages(&self, conversation: &[u8; 16]) -> Result<Vec<StoredMessage>, NodeError> {
        let mut out = Vec::new();
        for v in self.messages.scan_prefix(conversation).values() {
            let m: StoredMessage = self.decode(&v.map_err(|e| self.err(e))?)?;
            if m.plan.is_some() {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// One page of the whole history in key order, for a device being linked: the encoded
    /// messages after `after` (a key from the previous page) up to about `max_bytes`, and the
    /// key to continue from (`None` on the last page).
    pub fn history_page(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<HistoryPage, NodeError> {
        let range = match after {
            Some(k) => self
                .messages
                .range::<&[u8], _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => self.messages.iter(),
        };
        let (mut out, mut size, mut last) = (Vec::new(), 0, None);
        for item in range {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if size + v.len() > max_bytes && !out.is_empty() {
                return Ok((out, last));
            }
            size += v.len();
            out.push(v.to_vec());
            last = Some(k.to_vec());
        }
        Ok((out, None))
    }
}

/// Messages of a conversation sort by the sender's time, so each sender's messages show in the
/// order they were sent whatever order they arrive in; the message id breaks ties, so every
/// member of a group sees the same order.
pub(crate) fn msg_key(conversation: &[u8; 16], sent_at: u64, id: &[u8; 16]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(conversation);
    k[16..24].copy_from_slice(&sent_at.to_be_bytes());
    k[24..].copy_from_slice(id);
    k
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn msg(id: u8, conv: u8, at: u64) -> StoredMessage {
        StoredMessage {
            id: [id; 16],
            conversation: [conv; 16],
            direction: Direction::In,
            sender: [1; 16],
            peer: [1; 16],
            kind: "text".into(),
            text: Some(format!("m{id}")),
            sent_at: at,
            stored_at: at,
            status: Status::Received,
            raw: vec![],
            waiting_for: None,
            target: None,
            removed: false,
            point: None,
            plan: None,
            hidden: false,
            claimed_name: None,
        }
    }

    /// The names pinned to a user follow the contacts written before and after the index
    /// is first read, a name moving to another user included, and a reopened store agrees.
    #[test]
    fn the_contact_index_follows_the_contacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let contact = |name: &str, user: u8| Contact {
            name: name.into(),
            user_id: [user; 16],
            identity: [user; 32],
            record: vec![],
            pinned_at: 1,
            changed_to: None,
        };
        let s = Store::open(dir.path()).expect("open");
        s.put_contact(&contact("bob", 2)).expect("put");
        s.put_contact(&contact("bobby", 2)).expect("put");
        assert_eq!(s.names_pinned_to(&[2; 16]).expect("names"), ["bob", "bobby"]);
        assert_eq!(s.name_of(&[3; 16]).expect("name"), None);
        // After the index was built: a new user, and "bobby" passing to carol's id.
        s.put_contact(&contact("carol", 3)).expect("put");
        s.put_contact(&contact("bobby", 3)).expect("put");
        assert_eq!(s.names_pinned_to(&[2; 16]).expect("names"), ["bob"]);
        assert_eq!(s.names_pinned_to(&[3; 16]).expect("names"), ["bobby", "carol"]);
        assert_eq!(s.name_of(&[3; 16]).expect("name").as_deref(), Some("bobby"));
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.names_pinned_to(&[2; 16]).expect("names"), ["bob"]);
        assert_eq!(s.names_pinned_to(&[3; 16]).expect("names"), ["bobby", "carol"]);
    }

    #[test]
    fn hidden_messages_do_not_take_places_in_a_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.insert_incoming(&msg(1, 9, 10)).expect("insert");
        // A live location's 20 updates after the last message shown.
        for i in 0..20u8 {
            let mut update = msg(100 + i, 9, 20 + u64::from(i));
            (update.kind, update.hidden, update.plan) =
                ("live_location".into(), true, Some(vec![i]));
            s.insert_incoming(&update).expect("insert");
        }
        s.insert_incoming(&msg(2, 9, 50)).expect("insert");
        let shown = s.messages(Some(&[9; 16]), 2).expect("list");
        assert_eq!(shown.iter().map(|m| m.id[0]).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.messages(None, 5).expect("list").len(), 2);
        assert_eq!(s.plan_messages(&[9; 16]).expect("plans").len(), 20);
    }

    #[test]
    fn incoming_is_deduplicated_and_ordered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        assert!(s.insert_incoming(&msg(1, 9, 10)).expect("insert"));
        assert!(!s.insert_incoming(&msg(1, 9, 10)).expect("insert"));
        assert!(s.insert_incoming(&msg(2, 9, 11)).expect("insert"));
        assert!(s.insert_incoming(&msg(3, 8, 12)).expect("insert"));
        let conv = s.messages(Some(&[9; 16]), 100).expect("list");
        assert_eq!(conv.iter().map(|m| m.id[0]).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            s.messages(None, 2).expect("list").iter().map(|m| m.id[0]).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let updated = s.set_status(&[2; 16], Status::Read).expect("status").expect("known");
        assert_eq!(updated.status, Status::Read);
        assert_eq!(s.message(&[2; 16]).expect("get").map(|m| m.status), Some(Status::Read));
    }

    #[test]
    fn store_survives_reopen_and_refuses_a_second_opener() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.insert_incoming(&msg(1, 1, 1)).expect("insert");
            let second = Store::open(dir.path());
            assert!(matches!(second, Err(NodeError::Store { .. })), "{second:?}");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.messages(None, 10).expect("list").len(), 1);
    }

    #[test]
    fn mailbox_dedups_enforces_quotas_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let dev = [5u8; 32];
        let held = |id: u8, at: u64| HeldEnvelope {
            id: [id; 16],
            envelope: vec![0; 100],
            deposited_at: at,
        };
        assert_eq!(s.deposit(&dev, &held(1, 10), 2, 1000).expect("deposit"), Ok(true));
        assert_eq!(s.deposit(&dev, &held(1, 11), 2, 1000).expect("deposit"), Ok(false));
        assert_eq!(s.deposit(&dev, &held(2, 12), 2, 1000).expect("deposit"), Ok(true));
        assert_eq!(
            s.deposit(&dev, &held(3, 13), 2, 1000).expect("deposit"),
            Err(DepositRefusal::Messages)
        );
        assert_eq!(
            s.deposit(&[6; 32], &held(3, 13), 9, 50).expect("deposit"),
            Err(DepositRefusal::Bytes)
        );
        let (items, more) = s.held(&dev, 1, 1 << 20).expect("held");
        assert_eq!((items.len(), more), (1, true));
        assert_eq!(items[0].id, [1; 16]);
        assert_eq!(s.release(&dev, &[[1; 16], [9; 16]]).expect("release"), 1);
        assert_eq!(s.mailbox_usage(&dev).expect("usage"), (1, 100));
        assert_eq!(s.expire_held(13).expect("expire"), 1);
        assert_eq!(s.mailbox_totals().expect("totals"), (0, 0));
    }

    #[test]
    fn concurrent_writers_do_not_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        for t in 0..8u8 {
            let (s, tx) = (s.clone(), tx.clone());
            std::thread::spawn(move || {
                for i in 0..200u8 {
                    let mut m = msg(i, t, u64::from(i));
                    m.id[0] = t;
                    m.id[1] = i;
                    let out = OutboxEntry {
                        id: m.id,
                        recipient: [0; 16],
                        targets: vec![],
                        created_at: 0,
                        mailboxes: vec![],
                        in_history: true,
                        waiting: None,
                        plain: None,
                    };
                    s.insert_outgoing(&m, &out).expect("insert");
                    s.insert_incoming(&msg(i, t.wrapping_add(100), 0)).expect("insert");
                }
                let _ = tx.send(());
            });
        }
        for _ in 0..8 {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("a writer is stuck (deadlock)");
        }
        assert_eq!(s.outbox_len(), 8 * 200);
    }

    #[test]
    fn idempotency_keys_are_kept_a_day_and_the_oldest_go_beyond_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("store")).expect("open");
        s.put_idempotent_send("k1", &[1; 16], 1_000).expect("put");
        assert_eq!(s.idempotent_send("k1", 2_000).expect("get"), Some([1; 16]));
        assert_eq!(s.idempotent_send("k2", 2_000).expect("get"), None);
        assert_eq!(s.idempotent_send("k1", 1_000 + IDEMPOTENCY_KEPT_MS).expect("get"), None);
        for i in 0..MAX_IDEMPOTENCY_KEYS as u64 {
            s.put_idempotent_send(&format!("n{i}"), &[2; 16], 10_000 + i).expect("put");
        }
        // One over the limit: the oldest (k1) went.
        assert_eq!(s.idempotency.len(), MAX_IDEMPOTENCY_KEYS);
        assert_eq!(s.idempotent_send("k1", 20_000).expect("get"), None);
        assert_eq!(s.idempotent_send("n0", 20_000).expect("get"), Some([2; 16]));
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let s = Store::open(&path).expect("open");
        s.put_prekey(&PrekeyEntry {
            id: 1,
            secret: [7; 32],
            signed: vec![1],
            created_at: 1,
            expires_at: 2,
            replaced_at: None,
        })
        .expect("prekey");
        drop(s);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        // A store made by an older kith (0755, files 0644) is tightened when it opens.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(path.join("db"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        drop(Store::open(&path).expect("reopen"));
        assert_eq!(mode(&path), 0o700);
        for entry in std::fs::read_dir(&path).expect("read_dir") {
            let entry = entry.expect("entry");
            let want = if entry.file_type().expect("type").is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&entry.path()), want, "{}", entry.path().display());
        }
    }

    #[test]
    fn a_store_that_lost_its_data_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.insert_incoming(&msg(1, 1, 1)).expect("insert");
        }
        std::fs::write(dir.path().join("db"), vec![0x5a; 4096]).expect("damage");
        let err = Store::open(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("is damaged"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn other_schema_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.meta_set("schema", &99u64).expect("set");
        }
        let err = Store::open(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("layout version 99"), "{err}");
    }
}
