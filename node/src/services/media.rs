//! Attachments: sealing a file into the blob store, recording every attachment sent or
//! received, serving blobs to the peers allowed to fetch them, fetching blobs chunk by chunk
//! from every holder (the schedule is `rules::blob_fetch`), the automatic download policy,
//! asking this user's mailboxes to hold a blob (and, on a mailbox node, holding one), and
//! reading the plaintext back.
//!
//! Who may fetch a blob from this node (`/kith/blob/1`): a peer that presents its hash and is
//! - one of this user's devices, or one of this user's mailboxes;
//! - in a direct conversation that carried it, a device the other user's newest known record
//!   lists;
//! - in a group that carried it, a device this node knows as a member's (it sent to the group,
//!   or a member's record lists it), or a connected peer subscribed to the group's topic (whose
//!   name only members learn);
//! - anyone, for a blob this node holds as a mailbox (the hash is the capability; see
//!   `docs/security.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::blob::{Attachment, BlobKey, BlobRequest, BlobResponse, Manifest};
use kith_protocol::mailbox::{MailboxRequest, MailboxResponse};
use kith_protocol::{codec, ConversationId};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::blobs::{BlobStore, BlobStoreError};
use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::network::Reply;
use crate::rules;
use crate::rules::blob_fetch::{Fetch, Next};
use crate::services::mailbox_client::parse_addrs;
use crate::services::mailbox_server::device_of;
use crate::services::records::Records;
use crate::store::{AttachmentEntry, BlobState, HeldBlob, StoredMessage};
use crate::views::{NodeEvent, TransferView};

/// Default largest file a user may send: 2 GiB.
pub const DEFAULT_MAX_FILE: u64 = 2 << 30;
/// Default quota of the blob store (sealed bytes): 20 GiB.
pub const DEFAULT_BLOB_QUOTA: u64 = 20 << 30;
/// Default size up to which an image downloads as soon as its message arrives: 16 MiB.
pub const DEFAULT_AUTO_IMAGES: u64 = 16 << 20;
/// Default size up to which any attachment downloads at once: none.
pub const DEFAULT_AUTO_ANY: u64 = 0;
/// Default sealed bytes a mailbox node holds for one user: 2 GiB.
pub const DEFAULT_MAILBOX_BLOB_BYTES: u64 = 2 << 30;
/// Blob requests this node serves at once; beyond, it answers `busy`.
pub const MAX_SERVING: usize = 32;
/// Blobs fetched at once; more wait their turn.
pub const MAX_FETCHES: usize = 4;
/// Blobs fetched or waiting their turn at most (photos that arrive beyond it are not fetched
/// by themselves, and asking for one fails with a reason until there is room).
pub const MAX_QUEUED_FETCHES: usize = 256;
/// On a mailbox node: blobs being fetched for one user at once (`hold_blob` beyond is refused).
pub const MAX_PENDING_HOLDS: usize = 16;
/// Rounds in a row in which no chunk arrived after which a fetch fails.
pub const MAX_IDLE_ROUNDS: u32 = 8;
/// The wait after a round in which no chunk arrived; it doubles each such round (0.5, 1, ...
/// 64 s: a fetch with no reachable holder fails after about two minutes).
pub const ROUND_WAIT: Duration = Duration::from_millis(500);
/// Requests for one blob this node serves at once; beyond, `busy` sends the asker to other
/// holders.
pub const MAX_SERVING_PER_BLOB: usize = 16;
/// How long a peer found allowed to fetch a blob is served without checking again (a device
/// revoked or a member removed meanwhile keeps fetching that blob for at most this long).
pub const GRANT_TTL: Duration = Duration::from_secs(60);
/// Grants remembered at most.
pub const MAX_GRANTS: usize = 16_384;
/// The wait after a round in which holders answered only `busy`.
pub const BUSY_WAIT: Duration = Duration::from_millis(100);
/// Rounds in a row of only `busy` answers (a minute) after which they count as idle.
pub const MAX_BUSY_ROUNDS: u32 = 600;
/// Members of a group asked for a blob besides its sender and holders.
pub const MAX_GROUP_SOURCES: usize = 16;
/// How often the sender asks its mailbox whether it holds a blob whole yet.
pub const HOLD_POLL: Duration = Duration::from_secs(2);
/// How long the sender keeps asking its mailbox to hold a blob.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(3600);

/// The media settings (the `media_*` keys of `config.toml`, and `mailbox_blob_bytes`).
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Largest file a user may send.
    pub max_file_size: u64,
    /// Quota of the blob store, in sealed bytes.
    pub quota: u64,
    /// Images up to this size download as soon as their message arrives.
    pub auto_download_images: u64,
    /// Any attachment up to this size downloads as soon as its message arrives.
    pub auto_download_any: u64,
    /// On a mailbox node: sealed bytes held for one user.
    pub mailbox_blob_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_file_size: DEFAULT_MAX_FILE,
            quota: DEFAULT_BLOB_QUOTA,
            auto_download_images: DEFAULT_AUTO_IMAGES,
            auto_download_any: DEFAULT_AUTO_ANY,
            mailbox_blob_bytes: DEFAULT_MAILBOX_BLOB_BYTES,
        }
    }
}

/// What a file is, as its sender describes it.
#[derive(Clone, Debug, Default)]
pub struct FileMeta {
    /// The file name shown to recipients.
    pub name: Option<String>,
    /// Its MIME type (`application/octet-stream` when unknown).
    pub mime: String,
    /// A caption.
    pub caption: Option<String>,
    /// Width and height in pixels, as the client knows them (a video's); a picture's are read
    /// from the file.
    pub size_px: Option<(u32, u32)>,
    /// Duration in milliseconds (audio, video), as the client knows it.
    pub duration_ms: Option<u64>,
    /// A poster frame for a video (JPEG, PNG, WebP or GIF), made into its preview.
    pub poster: Option<Vec<u8>>,
}

/// One of the [`MAX_SERVING_PER_BLOB`] requests of a blob served at once; freed on drop.
struct BlobSlot {
    counts: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    hash: [u8; 32],
}

impl BlobSlot {
    fn take(counts: &Arc<Mutex<HashMap<[u8; 32], usize>>>, hash: [u8; 32]) -> Option<BlobSlot> {
        let mut c = counts.lock().ok()?;
        let n = c.entry(hash).or_default();
        if *n >= MAX_SERVING_PER_BLOB {
            return None;
        }
        *n += 1;
        Some(BlobSlot { counts: counts.clone(), hash })
    }
}

impl Drop for BlobSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            if let Some(n) = c.get_mut(&self.hash) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.hash);
                }
            }
        }
    }
}

/// (blob, peer) pairs found allowed to fetch, and when.
type Grants = HashMap<([u8; 32], PeerId), std::time::Instant>;

/// How a fetch round went.
struct Round {
    /// Chunks stored.
    got: usize,
    /// Whether a holder answered `busy`.
    busy: bool,
    last_error: Option<String>,
}

/// The end of a fetch, as its waiters see it: `None` while it runs.
type FetchEnd = Option<Result<(), String>>;

/// The media service.
#[derive(Clone, Debug)]
pub(crate) struct Media {
    pub(crate) ctx: Ctx,
    pub(crate) records: Records,
    pub(crate) blobs: BlobStore,
    pub(crate) config: MediaConfig,
    /// Fetches running, by blob hash.
    fetches: Arc<Mutex<HashMap<[u8; 32], watch::Receiver<FetchEnd>>>>,
    serving: Arc<Semaphore>,
    /// Requests being served, per blob.
    serving_blob: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    /// Chunks of group files this device sent, served lately (`rules::blob_seed`).
    seeding: Arc<Mutex<rules::blob_seed::Seeding<[u8; 32]>>>,
    /// Blobs served lately, and whether this device seeds them (a group file it sent).
    seeded: Arc<Mutex<HashMap<[u8; 32], bool>>>,
    /// (blob, peer) pairs found allowed lately, and when.
    grants: Arc<Mutex<Grants>>,
    fetch_slots: Arc<Semaphore>,
}

/// How asking one peer for one chunk went.
enum Outcome {
    /// Stored.
    Got,
    /// The peer does not hold it (yet).
    NotHeld,
    /// The peer was busy (it serves this blob to others, or passes its chunks out slowly).
    Busy,
    /// An error, a refusal, or a chunk that failed its check.
    Failed(String),
}

fn blocking_failed(e: tokio::task::JoinError) -> NodeError {
    NodeError::Internal(format!("a blob store task failed: {e}"))
}

/// Runs a blob store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobStoreError> + Send + 'static,
) -> Result<T, NodeError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(blocking_failed)??)
}

impl Media {
    pub(crate) fn new(ctx: Ctx, records: Records, blobs: BlobStore, config: MediaConfig) -> Self {
        Media {
            ctx,
            records,
            blobs,
            config,
            fetches: Arc::default(),
            serving: Arc::new(Semaphore::new(MAX_SERVING)),
            serving_blob: Arc::default(),
            seeding: Arc::default(),
            seeded: Arc::default(),
            grants: Arc::default(),
            fetch_slots: Arc::new(Semaphore::new(MAX_FETCHES)),
        }
    }

    /// Starts again the fetches a stopped node left unfinished.
    pub(crate) fn resume_fetches(&self) -> Result<(), NodeError> {
        for e in self.ctx.store.all_attachments()? {
            if e.state == BlobState::Downloading {
                self.start_fetch(e.attachment()?.hash);
            }
        }
        Ok(())
    }

    /// Seals the file at `path` into the blob store and returns the attachment announcing it
    /// (naming this user's mailboxes as holders). Refuses a file over the size limit.
    pub(crate) async fn seal(&self, path: &Path, meta: FileMeta) -> Result<Attachment, NodeError> {
        let size = tokio::fs::metadata(path).await.map_err(|e| NodeError::io(path, e))?.len();
        let max = self.config.max_file_size;
        if size > max {
            return Err(NodeError::BadInput(format!(
                "the file is {size} bytes; the limit is {max} bytes (media_max_file_size)"
            )));
        }
        self.make_room(BlobStore::stored_size(size))?;
        let key = BlobKey::generate(&mut rand::rngs::OsRng);
        let (blobs, src, k) = (self.blobs.clone(), path.to_owned(), BlobKey(key.0));
        let manifest = blocking(move || blobs.seal_file(&k, &src)).await?;
        // A picture's preview from the file itself; a video's from the poster its client gave.
        let (src, poster) = (path.to_owned(), meta.poster);
        let pictured = tokio::task::spawn_blocking(move || match poster {
            Some(bytes) => crate::preview::of_bytes(&bytes),
            None => crate::preview::of_file(&src),
        })
        .await
        .map_err(blocking_failed)?;
        let (width, height) = match (&pictured, meta.size_px) {
            (_, Some((w, h))) => (Some(w), Some(h)),
            (Some(p), None) => (Some(p.width), Some(p.height)),
            (None, None) => (None, None),
        };
        let holders = self.records.my_mailboxes()?;
        Ok(Attachment {
            hash: manifest.hash(),
            size: manifest.size,
            mime: meta.mime,
            name: meta.name,
            key: key.0,
            caption: meta.caption,
            preview: pictured.and_then(|p| p.preview),
            width,
            height,
            duration_ms: meta.duration_ms,
            holders,
        })
    }

    /// Records attachment `a` of stored message `m`, sent by device `sender` (this one for a
    /// message this node sent); starts its download if the policy says so.
    pub(crate) fn record(
        &self,
        m: &StoredMessage,
        a: &Attachment,
        sender: PeerId,
    ) -> Result<(), NodeError> {
        let complete = self.is_complete(&a.hash);
        let entry = AttachmentEntry {
            message: m.id,
            conversation: m.conversation,
            peer: m.peer,
            group: m.is_group(),
            attachment: codec::to_vec(a),
            sender_device: sender.to_bytes(),
            state: if complete { BlobState::Complete } else { BlobState::Available },
            error: None,
            saved_to: None,
            at: self.ctx.now(),
            mailbox_held: false,
        };
        self.ctx.store.put_attachment(&a.hash, &entry)?;
        if !complete && self.auto_download(a) && !self.queue_full() {
            self.start_fetch(a.hash);
        }
        Ok(())
    }

    /// Records an avatar blob under `id` (no message carries it): this user's own (`held`, so
    /// complete), or another user's, to fetch from its `device`.
    pub(crate) fn record_avatar(
        &self,
        id: [u8; 16],
        conversation: [u8; 16],
        peer: [u8; 16],
        a: &Attachment,
        device: PeerId,
        held: bool,
    ) -> Result<(), NodeError> {
        let complete = held || self.is_complete(&a.hash);
        let entry = AttachmentEntry {
            message: id,
            conversation,
            peer,
            group: false,
            attachment: codec::to_vec(a),
            sender_device: device.to_bytes(),
            state: if complete { BlobState::Complete } else { BlobState::Available },
            error: None,
            saved_to: None,
            at: self.ctx.now(),
            mailbox_held: false,
        };
        self.ctx.store.put_attachment(&a.hash, &entry)
    }

    /// Whether [`MAX_QUEUED_FETCHES`] fetches run or wait already.
    fn queue_full(&self) -> bool {
        self.fetches.lock().map_or(true, |f| f.len() >= MAX_QUEUED_FETCHES)
    }

    fn is_complete(&self, hash: &[u8; 32]) -> bool {
        self.blobs.is_complete(hash)
    }

    /// Whether the download policy fetches `a` as soon as its message arrives.
    fn auto_download(&self, a: &Attachment) -> bool {
        a.size <= self.config.auto_download_any
            || (a.mime.starts_with("image/") && a.size <= self.config.auto_download_images)
    }

    /// The attachment of message `id` and its entry.
    pub(crate) fn attachment(
        &self,
        id: &[u8; 16],
    ) -> Result<(AttachmentEntry, Attachment), NodeError> {
        let e = self.ctx.store.attachment(id)?.ok_or_else(|| {
            NodeError::NotFound(format!("message {} carries no attachment", hex::encode(id)))
        })?;
        let a = e.attachment()?;
        Ok((e, a))
    }

    /// Starts fetching blob `hash` (or joins the fetch running); the receiver turns `Some` when
    /// it ends.
    pub(crate) fn start_fetch(&self, hash: [u8; 32]) -> watch::Receiver<FetchEnd> {
        let Ok(mut fetches) = self.fetches.lock() else {
            let (_, rx) = watch::channel(Some(Err("internal error: a poisoned lock".into())));
            return rx;
        };
        if let Some(rx) = fetches.get(&hash) {
            return rx.clone();
        }
        if fetches.len() >= MAX_QUEUED_FETCHES {
            drop(fetches);
            let why = format!("more than {MAX_QUEUED_FETCHES} downloads at once; ask again later");
            self.set_state(&hash, BlobState::Failed, Some(why.clone()));
            let (_, rx) = watch::channel(Some(Err(why)));
            return rx;
        }
        let (tx, rx) = watch::channel(None);
        fetches.insert(hash, rx.clone());
        drop(fetches);
        // Downloading from now on (also while it waits for a slot), so no one reads the state
        // of an earlier attempt as this one's.
        self.set_state(&hash, BlobState::Downloading, None);
        let me = self.clone();
        self.ctx.spawn(async move {
            let Ok(_slot) = me.fetch_slots.clone().acquire_owned().await else { return };
            let result = me.fetch(hash).await;
            me.ctx.store.set_progress(&hash, 0, 0);
            match &result {
                Ok(()) => {
                    info!(hash = %hex::encode(&hash[..8]), "blob fetched");
                    me.set_state(&hash, BlobState::Complete, None);
                }
                Err(e) => {
                    warn!(hash = %hex::encode(&hash[..8]), "blob fetch failed: {e}");
                    me.set_state(&hash, BlobState::Failed, Some(e.to_string()));
                }
            }
            me.ctx.store.flush().await.or_warn("cannot flush an attachment's state");
            if let Ok(mut f) = me.fetches.lock() {
                f.remove(&hash);
            }
            let _ = tx.send(Some(result.map_err(|e| e.to_string())));
        });
        rx
    }

    /// Fetches the attachment of message `id` if it is not complete, and waits for it.
    pub(crate) async fn download(&self, id: &[u8; 16]) -> Result<(), NodeError> {
        let (_, a) = self.attachment(id)?;
        if self.is_complete(&a.hash) {
            return Ok(());
        }
        let mut rx = self.start_fetch(a.hash);
        let end = rx.wait_for(Option::is_some).await.map_err(|_| NodeError::NetworkStopped)?;
        match end.clone() {
            Some(Err(e)) => Err(NodeError::Transfer(e)),
            _ => Ok(()),
        }
    }

    /// Records the state of blob `hash`'s attachments and tells subscribers.
    fn set_state(&self, hash: &[u8; 32], state: BlobState, error: Option<String>) {
        let entries = self.ctx.store.set_blob_state(hash, state, error.clone());
        if let Some(entries) = entries.or_warn("cannot record an attachment's state") {
            self.transfer_event(hash, &entries, state, error);
        }
    }

    /// Tells subscribers how the fetch of blob `hash` (carried by `entries`) stands.
    fn transfer_event(
        &self,
        hash: &[u8; 32],
        entries: &[AttachmentEntry],
        state: BlobState,
        error: Option<String>,
    ) {
        let Some(a) = entries.first().and_then(|e| e.attachment().ok()) else { return };
        let bytes_held = match state {
            BlobState::Complete => a.size,
            _ => self
                .ctx
                .store
                .progress(hash)
                .map_or(0, |(held, _)| kith_protocol::blob::bytes_in_chunks(held, a.size)),
        };
        let _ = self.ctx.events.send(NodeEvent::Transfer(TransferView {
            hash: hex::encode(hash),
            messages: entries
                .iter()
                .map(|e| kith_protocol::MessageId(e.message).to_string())
                .collect(),
            state: state.as_str(),
            bytes_held,
            size: a.size,
            error,
        }));
    }

    /// Where blob `hash` may be fetched: the devices that sent it, the holders its messages
    /// name, and (for a group) some members.
    fn sources(&self, hash: &[u8; 32]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NodeError> {
        let me = self.ctx.peer_id();
        let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        let mut add = |peer: PeerId, addrs: Vec<Multiaddr>| {
            if peer != me && !out.iter().any(|(p, _)| *p == peer) {
                out.push((peer, addrs));
            }
        };
        let entries = self.ctx.store.attachments_of(hash)?;
        for e in &entries {
            if let Ok(p) = PeerId::from_bytes(&e.sender_device) {
                add(p, Vec::new());
            }
            for h in e.attachment()?.holders {
                if let Ok(p) = PeerId::from_bytes(&h.peer_id) {
                    add(p, parse_addrs(&h.addrs));
                }
            }
        }
        for e in entries.iter().filter(|e| e.group) {
            if let Some(g) = self.ctx.store.group_shared(&e.peer) {
                for p in g.peers.iter().take(MAX_GROUP_SOURCES) {
                    if let Ok(p) = PeerId::from_bytes(p) {
                        add(p, Vec::new());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fetches blob `hash` from the peers that hold it ([`Media::sources`]).
    async fn fetch(&self, hash: [u8; 32]) -> Result<(), NodeError> {
        let sources = self.sources(&hash)?;
        self.fetch_from(hash, &sources).await
    }

    /// Fetches blob `hash` from `sources`, in rounds: each round asks for every chunk still
    /// missing; a round in which nothing arrived waits longer before the next, and
    /// [`MAX_IDLE_ROUNDS`] of them end the fetch with the last error. Once every chunk is held
    /// the blob is synced to disk.
    async fn fetch_from(
        &self,
        hash: [u8; 32],
        sources: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<(), NodeError> {
        if sources.is_empty() {
            return Err(NodeError::Transfer("no peer is known to hold it".into()));
        }
        let addrs: HashMap<PeerId, Vec<Multiaddr>> = sources.iter().cloned().collect();
        let peers: Vec<PeerId> = sources.iter().map(|(p, _)| *p).collect();
        let (mut idle, mut busy_rounds) = (0, 0);
        let mut last_error = String::from("no answer");
        let blobs = self.blobs.clone();
        // The blob's chunk count, once its manifest is held.
        let mut total = blocking(move || blobs.manifest(&hash)).await?.map(|m| m.chunks.len());
        loop {
            if total.is_none() {
                match self.fetch_manifest(&hash, sources).await {
                    Ok(m) => total = Some(m.chunks.len()),
                    Err(NodeError::Transfer(e)) => last_error = e,
                    Err(e) => return Err(e),
                }
            }
            let (mut progressed, mut busy) = (false, false);
            if let Some(total) = total {
                let blobs = self.blobs.clone();
                let missing = blocking(move || blobs.missing(&hash)).await?;
                if missing.is_empty() {
                    let blobs = self.blobs.clone();
                    return blocking(move || blobs.complete(&hash)).await;
                }
                let round = self.fetch_round(total, hash, missing, &peers, &addrs).await;
                debug!(got = round.got, "a fetch round ended");
                (progressed, busy) = (round.got > 0, round.busy);
                if let Some(e) = round.last_error {
                    last_error = e;
                }
            }
            busy_rounds = if progressed { 0 } else { busy_rounds + u32::from(busy) };
            if !progressed && busy && busy_rounds <= MAX_BUSY_ROUNDS {
                // Holders are there but busy (a group's sender passing chunks out slowly while
                // members fetch them): ask again soon, without counting the round as idle.
                tokio::time::sleep(BUSY_WAIT).await;
                continue;
            }
            idle = if progressed { 0 } else { idle + 1 };
            if idle >= MAX_IDLE_ROUNDS {
                return Err(NodeError::Transfer(format!(
                    "none of its {} holders could provide it: {last_error}",
                    peers.len()
                )));
            }
            if idle > 0 {
                tokio::time::sleep(ROUND_WAIT * 2u32.pow(idle - 1)).await;
            }
        }
    }

    /// Drops saved blobs, oldest first (`rules::blob_evict`), until `wanted` more sealed bytes
    /// fit the quota; their attachments become `evicted`. The store still refuses a blob that
    /// does not fit after that.
    fn make_room(&self, wanted: u64) -> Result<(), NodeError> {
        let used = self.blobs.used()?;
        if used.saturating_add(wanted) <= self.config.quota {
            return Ok(());
        }
        let me = self.ctx.peer_id().to_bytes();
        let mut held: HashMap<[u8; 32], rules::blob_evict::Held<[u8; 32]>> = HashMap::new();
        for e in self.ctx.store.all_attachments()? {
            let Ok(a) = e.attachment() else { continue };
            let entry = held.entry(a.hash).or_insert(rules::blob_evict::Held {
                hash: a.hash,
                bytes: BlobStore::stored_size(a.size),
                at: e.at,
                saved: true,
                sent_here: false,
            });
            entry.at = entry.at.max(e.at);
            entry.saved &= e.saved_to.is_some() && e.state == BlobState::Complete;
            entry.sent_here |= e.sender_device == me;
        }
        let held: Vec<_> = held.into_values().collect();
        for hash in rules::blob_evict::choose(&held, used, wanted, self.config.quota) {
            info!(hash = %hex::encode(&hash[..8]), "evicting a saved blob to make room");
            self.blobs.remove(&hash)?;
            self.set_state(&hash, BlobState::Evicted, None);
        }
        Ok(())
    }

    /// The size the messages carrying blob `hash` announce (none for a blob held as a mailbox).
    fn announced_size(&self, hash: &[u8; 32]) -> Option<u64> {
        let entries = self.ctx.store.attachments_of(hash).ok()?;
        entries.first().and_then(|e| e.attachment().ok()).map(|a| a.size)
    }

    /// Asks the sources for the manifest, in order, until one gives a valid one.
    async fn fetch_manifest(
        &self,
        hash: &[u8; 32],
        sources: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<Manifest, NodeError> {
        let mut last = String::from("no answer");
        for (peer, addrs) in sources {
            let request = BlobRequest::Manifest { hash: *hash }.to_bytes();
            let answer = match self.ctx.net.blob_request(*peer, addrs.clone(), request).await? {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match BlobResponse::from_bytes(&answer) {
                Ok(BlobResponse::Manifest { bytes }) => {
                    let m = match Manifest::from_bytes_for(&bytes, hash) {
                        Ok(m) => m,
                        Err(e) => {
                            self.ctx.counters.blob_chunks_rejected.inc();
                            warn!(%peer, "a peer sent a manifest that does not match the blob: {e}");
                            last = format!("{peer} sent a wrong manifest");
                            continue;
                        }
                    };
                    if let Some(want) = self.announced_size(hash).filter(|want| *want != m.size) {
                        // Cannot happen with a hash the sender computed: the message announcing
                        // the blob lies about its size.
                        return Err(NodeError::Transfer(format!(
                            "the blob holds {} bytes, its message announced {want}",
                            m.size
                        )));
                    }
                    self.make_room(BlobStore::stored_size(m.size))?;
                    let (blobs, h) = (self.blobs.clone(), *hash);
                    return blocking(move || blobs.add_manifest(&h, &bytes)).await;
                }
                Ok(BlobResponse::NotFound) => last = format!("{peer} does not hold it"),
                Ok(BlobResponse::Refused { reason }) => last = format!("{peer} refused: {reason}"),
                Ok(_) => last = format!("{peer} answered something else"),
                Err(e) => last = format!("{peer} sent a malformed answer: {e}"),
            }
        }
        Err(NodeError::Transfer(last))
    }

    /// One round of a fetch: every missing chunk asked of the sources as `rules::blob_fetch`
    /// schedules. Returns the chunks stored and the last error.
    async fn fetch_round(
        &self,
        total: usize,
        hash: [u8; 32],
        missing: Vec<usize>,
        peers: &[PeerId],
        addrs: &HashMap<PeerId, Vec<Multiaddr>>,
    ) -> Round {
        let mut held = total - missing.len();
        // Each fetcher its own order (see `Fetch::in_order`).
        let mut order = missing;
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rand::thread_rng());
        let mut fetch = Fetch::in_order(order, peers.to_vec());
        let mut tasks = JoinSet::new();
        let (mut got, mut busy, mut last_error) = (0, false, None);
        self.ctx.store.set_progress(&hash, held, total);
        loop {
            match fetch.next(self.ctx.now()) {
                Next::Complete | Next::Stuck(_) => return Round { got, busy, last_error },
                Next::Ask(asks) => {
                    for (chunk, peer) in asks {
                        let a = addrs.get(&peer).cloned().unwrap_or_default();
                        tasks.spawn(self.clone().fetch_chunk(hash, chunk, peer, a));
                    }
                }
            }
            let joined = tokio::select! {
                j = tasks.join_next() => j,
                _ = tokio::time::sleep(Duration::from_secs(1)) => None,
            };
            if let Some(Ok((chunk, peer, outcome))) = joined {
                match outcome {
                    Outcome::Got => {
                        fetch.done(chunk, &peer);
                        got += 1;
                        held += 1;
                        self.ctx.store.set_progress(&hash, held, total);
                        // An event per percent, not per chunk.
                        if held * 100 / total != (held - 1) * 100 / total {
                            if let Ok(entries) = self.ctx.store.attachments_of(&hash) {
                                self.transfer_event(&hash, &entries, BlobState::Downloading, None);
                            }
                        }
                    }
                    Outcome::NotHeld => fetch.not_held(chunk, &peer),
                    Outcome::Busy => {
                        busy = true;
                        fetch.not_held(chunk, &peer);
                    }
                    Outcome::Failed(e) => {
                        fetch.failed(chunk, &peer);
                        last_error = Some(e);
                    }
                }
            }
            for (chunk, peer) in fetch.overdue(self.ctx.now()) {
                fetch.failed(chunk, &peer);
                last_error = Some(format!("{peer} did not answer in time"));
            }
        }
    }

    async fn fetch_chunk(
        self,
        hash: [u8; 32],
        chunk: usize,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> (usize, PeerId, Outcome) {
        let request = BlobRequest::Chunk { hash, index: chunk as u32 }.to_bytes();
        let answer = match self.ctx.net.blob_request(peer, addrs, request).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return (chunk, peer, Outcome::Failed(e)),
            Err(e) => return (chunk, peer, Outcome::Failed(e.to_string())),
        };
        // A chunk is taken from its frame as it is (no copy); anything else decoded.
        if let Some(bytes) = BlobResponse::chunk_in(&answer) {
            let at = answer.len() - bytes.len();
            return (chunk, peer, self.store_chunk(hash, chunk, peer, answer, at).await);
        }
        let outcome = match BlobResponse::from_bytes(&answer) {
            Ok(BlobResponse::Chunk { bytes }) => {
                self.store_chunk(hash, chunk, peer, bytes, 0).await
            }
            Ok(BlobResponse::NotFound) => Outcome::NotHeld,
            Ok(BlobResponse::Refused { reason }) if reason == "busy" => Outcome::Busy,
            Ok(BlobResponse::Refused { reason }) => {
                Outcome::Failed(format!("{peer} refused: {reason}"))
            }
            Ok(BlobResponse::Manifest { .. }) => {
                Outcome::Failed(format!("{peer} answered a chunk request with a manifest"))
            }
            Err(e) => Outcome::Failed(format!("{peer} sent a malformed answer: {e}")),
        };
        (chunk, peer, outcome)
    }

    /// Checks and stores chunk `chunk` of blob `hash`, `frame[at..]`, from `peer`.
    async fn store_chunk(
        &self,
        hash: [u8; 32],
        chunk: usize,
        peer: PeerId,
        frame: Vec<u8>,
        at: usize,
    ) -> Outcome {
        let (blobs, len) = (self.blobs.clone(), frame.len().saturating_sub(at) as u64);
        match blocking(move || blobs.put_chunk(&hash, chunk, frame.get(at..).unwrap_or_default()))
            .await
        {
            Ok(()) => {
                self.ctx.counters.blob_bytes_fetched.inc_by(len);
                Outcome::Got
            }
            Err(NodeError::Blob(BlobStoreError::Blob(e))) => {
                self.ctx.counters.blob_chunks_rejected.inc();
                warn!(%peer, chunk, "a peer sent a chunk that fails its check: {e}");
                Outcome::Failed(format!("{peer} sent a chunk that fails its check"))
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Answers a blob request from `peer`.
    pub(crate) async fn serve(&self, peer: PeerId, bytes: Vec<u8>, reply: Reply) {
        let answer = |r: BlobResponse| r.to_bytes();
        let request = match BlobRequest::from_bytes(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.ctx.counters.frames_rejected.inc();
                let refused = BlobResponse::Refused { reason: format!("malformed request: {e}") };
                let _ = self.ctx.net.respond(reply, answer(refused)).await;
                return;
            }
        };
        let hash = match &request {
            BlobRequest::Manifest { hash } | BlobRequest::Chunk { hash, .. } => *hash,
        };
        let allowed = match self.granted(&peer, &hash) {
            true => Ok(true),
            false => self.may_fetch(&peer, &hash).await,
        };
        match allowed {
            Ok(true) => self.grant(peer, hash),
            Ok(false) => {
                debug!(%peer, "refused a blob request: not in a conversation that carried it");
                let refused = BlobResponse::Refused { reason: "not allowed".into() };
                let _ = self.ctx.net.respond(reply, answer(refused)).await;
                return;
            }
            Err(e) => {
                warn!("cannot check a blob request: {e}");
                let _ = self.ctx.net.respond(reply, answer(BlobResponse::NotFound)).await;
                return;
            }
        }
        let Some((permit, slot)) = self.admit(&request, hash) else {
            let busy = BlobResponse::Refused { reason: "busy".into() };
            let _ = self.ctx.net.respond(reply, answer(busy)).await;
            return;
        };
        // (This runs in a task of its own already.)
        {
            let (me, blobs) = (self, self.blobs.clone());
            // The encoded answer; for a chunk, with the chunk read straight into the frame.
            let read = move || -> Result<(Vec<u8>, u64), BlobStoreError> {
                Ok(match request {
                    BlobRequest::Manifest { hash } => match blobs.manifest_bytes(&hash)? {
                        Some(bytes) => (BlobResponse::Manifest { bytes }.to_bytes(), 0),
                        None => (BlobResponse::NotFound.to_bytes(), 0),
                    },
                    BlobRequest::Chunk { hash, index } => {
                        let mut len = 0;
                        let header = |n| {
                            len = n as u64;
                            BlobResponse::chunk_header(n)
                        };
                        match blobs.chunk_framed(&hash, index as usize, header)? {
                            Some(frame) => (frame, len),
                            None => (BlobResponse::NotFound.to_bytes(), 0),
                        }
                    }
                })
            };
            let (response, chunk_bytes) = match blocking(read).await {
                Ok(r) => r,
                Err(e) => {
                    warn!("cannot read a blob to serve it: {e}");
                    (BlobResponse::NotFound.to_bytes(), 0)
                }
            };
            me.ctx.counters.blob_bytes_served.inc_by(chunk_bytes);
            let _ = me.ctx.net.respond(reply, response).await;
            drop((permit, slot));
        }
    }

    /// Room to serve `request` now: a slot of the [`MAX_SERVING`], one of the
    /// [`MAX_SERVING_PER_BLOB`] of its blob, and for a chunk of a group file this device sent,
    /// its turn under `rules::blob_seed`. `None`: answer `busy`.
    fn admit(
        &self,
        request: &BlobRequest,
        hash: [u8; 32],
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, BlobSlot)> {
        let permit = self.serving.clone().try_acquire_owned().ok()?;
        if let BlobRequest::Chunk { index, .. } = request {
            if self.seeds(&hash) && !self.seed_allows(&hash, *index as usize) {
                return None;
            }
        }
        Some((permit, BlobSlot::take(&self.serving_blob, hash)?))
    }

    /// Whether `peer` was found allowed to fetch `hash` less than [`GRANT_TTL`] ago.
    fn granted(&self, peer: &PeerId, hash: &[u8; 32]) -> bool {
        let Ok(g) = self.grants.lock() else { return false };
        g.get(&(*hash, *peer)).is_some_and(|at| at.elapsed() < GRANT_TTL)
    }

    /// Remembers that `peer` may fetch `hash` (the check reads the store and verifies records:
    /// too much to do for every chunk).
    fn grant(&self, peer: PeerId, hash: [u8; 32]) {
        if let Ok(mut g) = self.grants.lock() {
            if g.len() >= MAX_GRANTS {
                g.retain(|_, at| at.elapsed() < GRANT_TTL);
                if g.len() >= MAX_GRANTS {
                    g.clear();
                }
            }
            g.insert((hash, peer), std::time::Instant::now());
        }
    }

    /// Whether this device sent blob `hash` to a group: its chunks then go out a limited number
    /// of times (`rules::blob_seed`), the members passing them on to each other.
    fn seeds(&self, hash: &[u8; 32]) -> bool {
        if let Some(known) = self.seeded.lock().ok().and_then(|s| s.get(hash).copied()) {
            return known;
        }
        let me = self.ctx.peer_id().to_bytes();
        let seeds = self
            .ctx
            .store
            .attachments_of(hash)
            .is_ok_and(|all| all.iter().any(|e| e.group && e.sender_device == me));
        if let Ok(mut s) = self.seeded.lock() {
            if s.len() >= MAX_GRANTS {
                s.clear();
            }
            s.insert(*hash, seeds);
        }
        seeds
    }

    fn seed_allows(&self, hash: &[u8; 32], chunk: usize) -> bool {
        let now = self.ctx.now();
        self.seeding.lock().map_or(true, |mut s| s.allow(hash, chunk, now))
    }

    /// Whether `peer` may fetch blob `hash` from this node (see the module's documentation).
    async fn may_fetch(&self, peer: &PeerId, hash: &[u8; 32]) -> Result<bool, NodeError> {
        let store = &self.ctx.store;
        if store.held_blob(hash)?.is_some() {
            return Ok(true);
        }
        // This user's avatar is public, as its key is in the name record.
        let profile = store.meta_get::<Option<kith_protocol::profile::Profile>>("profile")?;
        if profile.flatten().and_then(|p| p.avatar).is_some_and(|a| a.hash == *hash) {
            return Ok(true);
        }
        // Before anything costlier (own devices are checked against signed records): a hash no
        // message here carries is nobody's to fetch.
        let entries = store.attachments_of(hash)?;
        if entries.is_empty() {
            return Ok(false);
        }
        let Some(device) = device_of(peer) else { return Ok(false) };
        if self.records.is_own_device(&device) {
            return Ok(true);
        }
        let peer_bytes = peer.to_bytes();
        if self.records.my_mailboxes()?.iter().any(|m| m.peer_id == peer_bytes) {
            return Ok(true);
        }
        for e in entries {
            if !e.group {
                // The message as stored now: one sent to a name that did not resolve yet was
                // recorded before its recipient was known.
                let other = store.message(&e.message)?.map_or(e.peer, |m| m.peer);
                if self.records.is_device_of(other, &device) {
                    return Ok(true);
                }
                continue;
            }
            let Some(g) = store.group_shared(&e.peer) else { continue };
            if !g.active {
                continue;
            }
            if g.peers.contains(&peer_bytes)
                || g.members.iter().any(|m| self.records.is_device_of(m.user, &device))
            {
                return Ok(true);
            }
            let topic = kith_protocol::group::topic(&ConversationId(g.id));
            if self.ctx.net.topic_peers(topic).await?.contains(peer) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Asks each of this user's mailboxes to hold blob `hash` (in the background), until each
    /// holds it whole or [`HOLD_TIMEOUT`] passed.
    pub(crate) fn hold_at_mailboxes(&self, hash: [u8; 32]) {
        let mailboxes = self.records.my_mailboxes().or_warn("cannot read the mailboxes");
        for mb in mailboxes.unwrap_or_default() {
            let Ok(peer) = PeerId::from_bytes(&mb.peer_id) else { continue };
            let addrs = parse_addrs(&mb.addrs);
            let (net, store) = (self.ctx.net.clone(), self.ctx.store.clone());
            self.ctx.spawn(async move {
                let deadline = tokio::time::Instant::now() + HOLD_TIMEOUT;
                while tokio::time::Instant::now() < deadline {
                    let request = MailboxRequest::HoldBlob { hash }.to_bytes();
                    match net.mailbox_request(peer, addrs.clone(), request).await {
                        Ok(Ok(bytes)) => match MailboxResponse::from_bytes(&bytes) {
                            Ok(MailboxResponse::BlobHeld { complete: true }) => {
                                info!(%peer, "the mailbox holds the blob");
                                store.set_mailbox_held(&hash).or_warn("cannot record a held blob");
                                store.flush().await.or_warn("cannot flush");
                                return;
                            }
                            Ok(MailboxResponse::BlobHeld { complete: false }) => {}
                            Ok(MailboxResponse::Refused { reason }) => {
                                return warn!(%peer, "the mailbox will not hold a blob: {reason}");
                            }
                            other => debug!(%peer, "unexpected answer to HoldBlob: {other:?}"),
                        },
                        Ok(Err(e)) => debug!(%peer, "asking the mailbox to hold a blob: {e}"),
                        Err(_) => return,
                    }
                    tokio::time::sleep(HOLD_POLL).await;
                }
            });
        }
    }

    /// On a mailbox node: `HoldBlob` from an enrolled device of `user`. Starts fetching the
    /// blob from that device (once), and says whether it is held whole.
    pub(crate) fn hold(
        &self,
        peer: PeerId,
        user: [u8; 16],
        hash: [u8; 32],
    ) -> Result<MailboxResponse, NodeError> {
        let store = &self.ctx.store;
        if let Some(h) = store.held_blob(&hash)? {
            if h.complete || self.is_complete(&hash) {
                if !h.complete {
                    store.put_held_blob(&hash, &HeldBlob { complete: true, ..h })?;
                }
                return Ok(MailboxResponse::BlobHeld { complete: true });
            }
            return Ok(MailboxResponse::BlobHeld { complete: false });
        }
        let mine: Vec<HeldBlob> =
            store.held_blobs()?.into_iter().map(|(_, h)| h).filter(|h| h.user == user).collect();
        if mine.iter().filter(|h| !h.complete).count() >= MAX_PENDING_HOLDS {
            return Ok(MailboxResponse::Refused {
                reason: format!(
                    "this mailbox is fetching {MAX_PENDING_HOLDS} blobs for you already; ask again later"
                ),
            });
        }
        let used: u64 = mine.iter().map(|h| h.size).sum();
        if used >= self.config.mailbox_blob_bytes {
            return Ok(MailboxResponse::Refused {
                reason: format!(
                    "this mailbox holds {used} bytes of blobs for you, its limit is {}",
                    self.config.mailbox_blob_bytes
                ),
            });
        }
        let held = HeldBlob {
            user,
            device: peer.to_bytes(),
            size: 0,
            since: self.ctx.now(),
            complete: false,
        };
        store.put_held_blob(&hash, &held)?;
        let me = self.clone();
        self.ctx.spawn(async move { me.take_custody(peer, user, hash).await });
        Ok(MailboxResponse::BlobHeld { complete: false })
    }

    /// Fetches a blob a device asked this mailbox to hold, from that device.
    async fn take_custody(&self, peer: PeerId, user: [u8; 16], hash: [u8; 32]) {
        let result = async {
            let blobs = self.blobs.clone();
            let manifest = match blocking(move || blobs.manifest(&hash)).await? {
                Some(m) => m,
                None => self.fetch_manifest(&hash, &[(peer, Vec::new())]).await?,
            };
            let size = BlobStore::stored_size(manifest.size);
            let store = &self.ctx.store;
            let others: u64 = store
                .held_blobs()?
                .iter()
                .filter(|(h, b)| b.user == user && *h != hash)
                .map(|(_, b)| b.size)
                .sum();
            if others + size > self.config.mailbox_blob_bytes {
                return Err(NodeError::Refused(format!(
                    "holding it would exceed the {} bytes of blobs held per user",
                    self.config.mailbox_blob_bytes
                )));
            }
            if let Some(h) = store.held_blob(&hash)? {
                store.put_held_blob(&hash, &HeldBlob { size, ..h })?;
            }
            let fetched = self.fetch_from(hash, &[(peer, Vec::new())]).await;
            self.ctx.store.set_progress(&hash, 0, 0);
            fetched?;
            if let Some(h) = store.held_blob(&hash)? {
                store.put_held_blob(&hash, &HeldBlob { complete: true, ..h })?;
            }
            store.flush().await
        }
        .await;
        if let Err(e) = result {
            warn!(%peer, "cannot hold a blob for a device: {e}");
            // Forgotten, so the device's next HoldBlob starts again.
            self.ctx.store.remove_held_blob(&hash).or_warn("cannot forget a held blob");
            let _ = self.blobs.remove(&hash);
        }
    }

    /// On a mailbox node: drops held blobs older than the retention.
    pub(crate) fn expire_held(&self, now: u64) {
        let retention = self.ctx.mailbox.retention.as_millis() as u64;
        let held = self.ctx.store.held_blobs().or_warn("cannot read held blobs");
        for (hash, h) in held.unwrap_or_default() {
            if now.saturating_sub(h.since) > retention {
                self.ctx.store.remove_held_blob(&hash).or_warn("cannot forget a held blob");
                if let Err(e) = self.blobs.remove(&hash) {
                    warn!("cannot remove an expired blob: {e}");
                }
            }
        }
    }

    /// Writes the plaintext of message `id`'s attachment to `dest` (complete blobs only).
    pub(crate) async fn save_to(&self, id: &[u8; 16], dest: PathBuf) -> Result<u64, NodeError> {
        let (_, a) = self.attachment(id)?;
        let blobs = self.blobs.clone();
        let key = a.blob_key();
        let written = blocking(move || blobs.open_to(&a.hash, &key, &dest)).await?;
        Ok(written)
    }
}
