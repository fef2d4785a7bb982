//! The blob store: sealed attachment chunks on disk, addressed by blob hash.
//!
//! Blobs live in files, not in sled's values (a photo would otherwise be rewritten by every
//! compaction). The layout under the store's directory is, for each blob, a directory
//! `<hash hex>/` with
//! - `manifest`: the blob's manifest, as received (checked against the hash);
//! - `chunks`: its sealed chunks, chunk `i` at byte `i × (CHUNK_SIZE + 4096)` (each at a page
//!   boundary), made at its full size when the manifest is taken (sparse where nothing was
//!   written yet); stores of earlier versions have `data` instead, chunk `i` at
//!   `i × (CHUNK_SIZE + TAG_SIZE)`, read and written as they are;
//! - `complete`: an empty file, written once every chunk is checked and the chunks are synced.
//!
//! A fetch writes chunks past the page cache (`O_DIRECT`, on Linux, where the file system
//! takes it; through the cache elsewhere): copying each 256 KiB into the page cache was the
//! largest and most variable cost of receiving a file (docs/benchmarks.md).
//!
//! Which chunks a blob being fetched holds is kept in memory; after a restart it is found
//! again by checking each chunk of `data` against the manifest, so a chunk a crash cut short
//! is fetched again and [`BlobStore::missing`] says exactly what a fetch still needs. Every
//! chunk is checked before it is written; the manifest is checked against the blob's hash.
//! Files are readable by their owner only. Open blobs (their file handle and which chunks they
//! hold) are cached, at most [`MAX_OPEN_BLOBS`] not in use, so serving or fetching a chunk
//! opens no file.
//!
//! Stores written by earlier versions (a file per chunk, `<hash hex>/<index>`) are converted
//! when the store opens.
//!
//! The store sees sealed chunks only; the key is the caller's ([`BlobStore::seal_file`] takes
//! it to seal, [`BlobStore::open_to`] to write the plaintext out). These calls block: async
//! callers run them with `spawn_blocking`. The media service (`services::media`) drives it.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::private_fs;

use kith_protocol::blob::{self, BlobError, BlobKey, Manifest, CHUNK_SIZE, TAG_SIZE};
use thiserror::Error;

/// Blobs kept open (file handle and held chunks) while nothing uses them.
pub const MAX_OPEN_BLOBS: usize = 64;

/// Bytes a fetch writes to a blob's `data` before they are synced (so that the sync when the
/// blob completes has little left to write, and the disk works while the network does).
pub const SYNC_EVERY: u64 = 16 << 20;

/// Bytes from one sealed chunk's start to the next's in a blob's `data` file (stores of
/// earlier versions).
const SEALED_CHUNK: u64 = (CHUNK_SIZE + TAG_SIZE) as u64;

/// The alignment of chunks in a blob's `chunks` file: a page, so that a fetch can write them
/// past the page cache (`O_DIRECT`, see [`ChunkWriter`]).
const ALIGN: usize = 4096;

/// Bytes from one sealed chunk's start to the next's in a blob's `chunks` file.
const SLOT: u64 = (CHUNK_SIZE + ALIGN) as u64;

/// Where a blob's sealed chunks are in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `data`: chunk `i` at `i × (CHUNK_SIZE + TAG_SIZE)` (stores of earlier versions).
    Packed,
    /// `chunks`: chunk `i` at `i × (CHUNK_SIZE + 4096)`, each at a page boundary.
    Aligned,
}

impl Layout {
    fn file(self) -> &'static str {
        match self {
            Layout::Packed => "data",
            Layout::Aligned => "chunks",
        }
    }

    fn offset(self, index: usize) -> u64 {
        index as u64
            * match self {
                Layout::Packed => SEALED_CHUNK,
                Layout::Aligned => SLOT,
            }
    }

    /// The file's length for a blob of `size` plaintext bytes: up to the end of its last chunk
    /// (in `chunks`, of the last page it writes).
    fn len_for(self, size: u64) -> u64 {
        let last = blob::chunk_count(size).saturating_sub(1);
        let end = sealed_len(size, last) as u64;
        match self {
            Layout::Packed => blob::sealed_size(size),
            Layout::Aligned => self.offset(last) + end.div_ceil(ALIGN as u64) * ALIGN as u64,
        }
    }

    /// The layout of the blob in `dir`: `data` if it has one, else `chunks`.
    fn of(dir: &Path) -> Self {
        match dir.join("data").exists() {
            true => Layout::Packed,
            false => Layout::Aligned,
        }
    }
}

/// A blob store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BlobStoreError {
    /// Reading or writing the store's files (or the file to seal or write out).
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
    /// A manifest or a chunk failed its check; nothing was stored.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The store does not hold this blob's manifest.
    #[error("unknown blob {0}")]
    Unknown(String),
    /// The blob is not complete yet: these chunks are missing.
    #[error("blob {hash} is missing {missing} of its chunks")]
    Incomplete {
        /// The blob's hash, hex.
        hash: String,
        /// How many chunks are missing.
        missing: usize,
    },
    /// Taking the blob would exceed the store's quota.
    #[error("blob store quota of {quota} bytes exceeded: {used} used, {wanted} more wanted")]
    Quota {
        /// The quota.
        quota: u64,
        /// Bytes in use.
        used: u64,
        /// Bytes the blob needs.
        wanted: u64,
    },
    /// The file to seal changed size while it was read.
    #[error("the file changed while it was being read")]
    Changed,
}

/// Sealed blobs on disk under one directory, with a quota on their sealed bytes.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    quota: u64,
    /// Blobs opened so far (see [`MAX_OPEN_BLOBS`]), shared by every clone.
    open: Arc<Mutex<HashMap<[u8; 32], Arc<OpenBlob>>>>,
}

/// One blob's manifest, its open `data` file and the chunks it holds.
#[derive(Debug)]
struct OpenBlob {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    data: fs::File,
    layout: Layout,
    /// The same file opened for writes past the page cache (`O_DIRECT`, Linux, `chunks` files
    /// of blobs being fetched), or `None`.
    direct: Option<fs::File>,
    /// Set when the file system refused a write past the page cache: writes go through it.
    direct_refused: AtomicBool,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    chunks: Vec<bool>,
    count: usize,
    /// Bytes written since the last sync.
    unsynced: u64,
}

impl OpenBlob {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn holds(&self, index: usize) -> bool {
        self.held().chunks.get(index).copied().unwrap_or(false)
    }

    /// Marks chunk `index` held; true when [`SYNC_EVERY`] bytes were written since the last
    /// sync (the caller syncs).
    fn mark(&self, index: usize) -> bool {
        let mut held = self.held();
        if let Some(h) = held.chunks.get_mut(index) {
            if !*h {
                *h = true;
                held.count += 1;
                held.unsynced += SEALED_CHUNK;
            }
        }
        let sync = held.unsynced >= SYNC_EVERY;
        if sync {
            held.unsynced = 0;
        }
        sync
    }

    fn missing(&self) -> Vec<usize> {
        let held = self.held();
        (0..held.chunks.len()).filter(|&i| !held.chunks[i]).collect()
    }

    /// Writes sealed chunk `index` (checked by the caller) at its place: past the page cache
    /// where the blob has a direct handle (copying 256 KiB into the page cache cost this
    /// machine's kernel 0.1 to 0.8 ms, and made a file's transfer rate vary by half from run to
    /// run; see docs/benchmarks.md), else through it.
    fn write(&self, index: usize, sealed: &[u8]) -> std::io::Result<()> {
        if sealed.len() > CHUNK_SIZE + TAG_SIZE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "chunk too long"));
        }
        let at = self.layout.offset(index);
        if let Some(direct) = &self.direct {
            if !self.direct_refused.load(Ordering::Relaxed) {
                match write_direct(direct, sealed, at) {
                    Ok(()) => return Ok(()),
                    // The file system does not take this write past its cache.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        self.direct_refused.store(true, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        write_at(&self.data, sealed, at)
    }

    /// Sealed chunk `index` as stored (unchecked); the caller knows it is held.
    fn read(&self, index: usize) -> std::io::Result<Vec<u8>> {
        let mut sealed = vec![0u8; sealed_len(self.manifest.size, index)];
        read_at(&self.data, &mut sealed, self.layout.offset(index))?;
        Ok(sealed)
    }
}

fn hex_of(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// Length of sealed chunk `index` of a blob of `size` plaintext bytes.
fn sealed_len(size: u64, index: usize) -> usize {
    let start = index as u64 * CHUNK_SIZE as u64;
    size.saturating_sub(start).min(CHUNK_SIZE as u64) as usize + TAG_SIZE
}

/// The file at `path`, or `None` if there is none.
fn read_if_any(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens (creating it, owner-only) a blob's `data` file for reading and writing.
fn open_data(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Opens the `chunks` file in `dir` for writes past the page cache, where the system and
/// file system allow it; `None` elsewhere (and for `data` files, whose chunks are not
/// aligned).
#[cfg(target_os = "linux")]
fn open_direct(dir: &Path, layout: Layout) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if layout != Layout::Aligned {
        return None;
    }
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join(layout.file()))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path, _: Layout) -> Option<fs::File> {
    None
}

/// Writes `sealed` at `at` (a multiple of [`ALIGN`]) through `file`, opened with `O_DIRECT`:
/// copied into a page-aligned buffer of this thread and padded with zeros to whole pages, as
/// `O_DIRECT` requires.
fn write_direct(file: &fs::File, sealed: &[u8], at: u64) -> std::io::Result<()> {
    thread_local! {
        static PAGES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let len = sealed.len().div_ceil(ALIGN) * ALIGN;
    PAGES.with_borrow_mut(|buf| {
        if buf.len() < SLOT as usize + ALIGN {
            buf.resize(SLOT as usize + ALIGN, 0);
        }
        let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        let pages = buf.get_mut(start..start + len).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "chunk too long")
        })?;
        let (data, pad) = pages.split_at_mut(sealed.len());
        data.copy_from_slice(sealed);
        pad.fill(0);
        write_at(file, pages, at)
    })
}

#[cfg(unix)]
fn read_at(file: &fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_at(file: &fs::File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl BlobStore {
    /// Opens (creating it owner-only) the store at `dir`, taking at most `quota` sealed bytes.
    /// Leftovers of a seal a crash cut short are removed; blobs stored a file per chunk (by
    /// earlier versions) are converted.
    pub fn open(dir: impl Into<PathBuf>, quota: u64) -> Result<Self, BlobStoreError> {
        let dir = dir.into();
        private_fs::create_dir(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !entry.file_type()?.is_dir() {
                continue;
            }
            if name.starts_with(".sealing-") {
                fs::remove_dir_all(entry.path())?;
            } else if entry.path().join("manifest").exists()
                && !entry.path().join("data").exists()
                && !entry.path().join("chunks").exists()
            {
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(name.as_bytes(), &mut hash).is_ok() {
                    convert_chunk_files(&entry.path(), &hash)?;
                }
            }
        }
        Ok(BlobStore { dir, quota, open: Arc::default() })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_dir(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(hex_of(hash))
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<[u8; 32], Arc<OpenBlob>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Blob `hash`, opened (and cached) if its manifest is held. A stored manifest that no
    /// longer matches its hash (a damaged disk) is an error, not a blob. Opening a blob that is
    /// not complete checks every chunk its `data` holds.
    fn blob(&self, hash: &[u8; 32]) -> Result<Option<Arc<OpenBlob>>, BlobStoreError> {
        if let Some(open) = self.cache().get(hash) {
            return Ok(Some(open.clone()));
        }
        let dir = self.blob_dir(hash);
        let Some(manifest_bytes) = read_if_any(&dir.join("manifest"))? else {
            return Ok(None);
        };
        let manifest = Manifest::from_bytes_for(&manifest_bytes, hash)?;
        let layout = Layout::of(&dir);
        let data = open_data(&dir.join(layout.file()))?;
        let size = layout.len_for(manifest.size);
        let len = data.metadata()?.len();
        let complete = len == size && dir.join("complete").exists();
        if len != size {
            data.set_len(size)?;
        }
        let chunks = if complete {
            vec![true; manifest.chunks.len()]
        } else {
            let mut sealed = Vec::new();
            let mut chunks = Vec::with_capacity(manifest.chunks.len());
            for index in 0..manifest.chunks.len() {
                sealed.resize(sealed_len(manifest.size, index), 0);
                read_at(&data, &mut sealed, layout.offset(index))?;
                chunks.push(manifest.check_chunk(index, &sealed).is_ok());
            }
            chunks
        };
        let count = chunks.iter().filter(|held| **held).count();
        if !complete && count == chunks.len() {
            private_fs::write_atomic(&dir, "complete", b"")?;
        }
        let direct = match complete || count == chunks.len() {
            true => None,
            false => open_direct(&dir, layout),
        };
        let held = Mutex::new(Held { chunks, count, unsynced: 0 });
        let direct_refused = AtomicBool::new(false);
        let open =
            OpenBlob { manifest, manifest_bytes, data, layout, direct, direct_refused, held };
        Ok(Some(self.cached(hash, open)))
    }

    /// Caches `open` as blob `hash`, unless another call cached it first (then that one).
    fn cached(&self, hash: &[u8; 32], open: OpenBlob) -> Arc<OpenBlob> {
        let mut cache = self.cache();
        if let Some(raced) = cache.get(hash) {
            return raced.clone();
        }
        if cache.len() >= MAX_OPEN_BLOBS {
            cache.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let open = Arc::new(open);
        cache.insert(*hash, open.clone());
        open
    }

    fn held_blob(&self, hash: &[u8; 32]) -> Result<Arc<OpenBlob>, BlobStoreError> {
        self.blob(hash)?.ok_or_else(|| BlobStoreError::Unknown(hex_of(hash)))
    }

    /// Sealed bytes held, over every blob (complete or not: a blob being fetched counts at
    /// its full size, which its `data` file was made at).
    pub fn used(&self) -> Result<u64, BlobStoreError> {
        let mut used = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                for file in fs::read_dir(entry.path())? {
                    used += file?.metadata()?.len();
                }
            }
        }
        Ok(used)
    }

    /// Takes the manifest of blob `hash` (to fetch it), checking it against the hash and that
    /// the whole blob fits the quota. Taking a manifest already held is a no-op.
    pub fn add_manifest(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<Manifest, BlobStoreError> {
        let manifest = Manifest::from_bytes_for(bytes, hash)?;
        if let Some(held) = self.blob(hash)? {
            return Ok(held.manifest.clone());
        }
        let layout = Layout::Aligned;
        self.check_quota(layout.len_for(manifest.size))?;
        let dir = self.blob_dir(hash);
        private_fs::create_dir(&dir)?;
        let data = open_data(&dir.join(layout.file()))?;
        data.set_len(layout.len_for(manifest.size))?;
        private_fs::write_atomic(&dir, "manifest", bytes)?;
        // Holding nothing yet: cached as such, so the (sparse) data is not read to check.
        let chunks = manifest.chunks.len();
        let open = OpenBlob {
            manifest: manifest.clone(),
            manifest_bytes: bytes.to_vec(),
            data,
            layout,
            direct: open_direct(&dir, layout),
            direct_refused: AtomicBool::new(false),
            held: Mutex::new(Held { chunks: vec![false; chunks], count: 0, unsynced: 0 }),
        };
        Ok(self.cached(hash, open).manifest.clone())
    }

    fn check_quota(&self, wanted: u64) -> Result<(), BlobStoreError> {
        let used = self.used()?;
        if used.saturating_add(wanted) > self.quota {
            return Err(BlobStoreError::Quota { quota: self.quota, used, wanted });
        }
        Ok(())
    }

    /// The manifest of blob `hash`, if held.
    pub fn manifest(&self, hash: &[u8; 32]) -> Result<Option<Manifest>, BlobStoreError> {
        Ok(self.blob(hash)?.map(|b| b.manifest.clone()))
    }

    /// The encoded manifest of blob `hash`, as stored (checked when it was taken).
    pub fn manifest_bytes(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, BlobStoreError> {
        Ok(self.blob(hash)?.map(|b| b.manifest_bytes.clone()))
    }

    /// Stores sealed chunk `index` of blob `hash` after checking it against the manifest.
    /// Chunks are not synced one by one (a fetch writes hundreds) but every [`SYNC_EVERY`]
    /// bytes, and [`BlobStore::complete`] makes the whole blob durable, and a chunk a crash cut short fails its check when the
    /// blob is opened again, so it counts as missing.
    pub fn put_chunk(
        &self,
        hash: &[u8; 32],
        index: usize,
        sealed: &[u8],
    ) -> Result<(), BlobStoreError> {
        let blob = self.held_blob(hash)?;
        blob.manifest.check_chunk(index, sealed)?;
        blob.write(index, sealed)?;
        if blob.mark(index) {
            blob.data.sync_data()?;
        }
        Ok(())
    }

    /// Makes blob `hash` durable once it holds every chunk, and marks it complete.
    pub fn complete(&self, hash: &[u8; 32]) -> Result<(), BlobStoreError> {
        let blob = self.held_blob(hash)?;
        let missing = blob.missing().len();
        if missing > 0 {
            return Err(BlobStoreError::Incomplete { hash: hex_of(hash), missing });
        }
        let dir = self.blob_dir(hash);
        if !dir.join("complete").exists() {
            blob.data.sync_all()?;
            private_fs::write_atomic(&dir, "complete", b"")?;
            fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The plaintext of chunk `index` of blob `hash`, checked and opened under `key`.
    pub fn plain_chunk(
        &self,
        manifest: &Manifest,
        hash: &[u8; 32],
        key: &BlobKey,
        index: usize,
    ) -> Result<Vec<u8>, BlobStoreError> {
        let sealed = self
            .chunk(hash, index)?
            .ok_or(BlobStoreError::Incomplete { hash: hex_of(hash), missing: 1 })?;
        manifest.check_chunk(index, &sealed)?;
        Ok(blob::open_chunk(key, manifest.size, index, &sealed)?)
    }

    /// The bytes a blob of `size` plaintext bytes takes in the store (its chunks sealed, each
    /// at a page boundary), which quotas count.
    pub fn stored_size(size: u64) -> u64 {
        Layout::Aligned.len_for(size)
    }

    /// Sealed chunk `index` of blob `hash`, if held.
    pub fn chunk(&self, hash: &[u8; 32], index: usize) -> Result<Option<Vec<u8>>, BlobStoreError> {
        self.chunk_framed(hash, index, |_| Vec::new())
    }

    /// Whether blob `hash` is held whole. Cheap: it does not check chunks (a blob not opened
    /// yet counts as whole once it was marked complete).
    pub fn is_complete(&self, hash: &[u8; 32]) -> bool {
        match self.cache().get(hash) {
            Some(blob) => blob.held().count == blob.manifest.chunks.len(),
            None => self.blob_dir(hash).join("complete").exists(),
        }
    }

    /// Sealed chunk `index` of blob `hash`, if held, read into the end of what `header` makes
    /// of its length (a frame to send, without copying the chunk into it).
    pub fn chunk_framed(
        &self,
        hash: &[u8; 32],
        index: usize,
        header: impl FnOnce(usize) -> Vec<u8>,
    ) -> Result<Option<Vec<u8>>, BlobStoreError> {
        let blob = match self.blob(hash)? {
            Some(blob) if blob.holds(index) => blob,
            _ => return Ok(None),
        };
        let len = sealed_len(blob.manifest.size, index);
        let mut frame = header(len);
        let start = frame.len();
        frame.resize(start + len, 0);
        read_at(&blob.data, &mut frame[start..], blob.layout.offset(index))?;
        Ok(Some(frame))
    }

    /// The chunks of blob `hash` not held yet, in order (empty when the blob is complete).
    pub fn missing(&self, hash: &[u8; 32]) -> Result<Vec<usize>, BlobStoreError> {
        Ok(self.held_blob(hash)?.missing())
    }

    /// Seals the file at `src` under `key` into the store, one chunk in memory at a time, and
    /// returns its manifest (whose hash names it).
    pub fn seal_file(&self, key: &BlobKey, src: &Path) -> Result<Manifest, BlobStoreError> {
        let mut file = fs::File::open(src)?;
        let size = file.metadata()?.len();
        if size > blob::MAX_BLOB_SIZE {
            return Err(BlobError::TooLarge { size, max: blob::MAX_BLOB_SIZE }.into());
        }
        let chunks = blob::chunk_count(size);
        self.check_quota(Self::stored_size(size))?;
        let tmp = self.dir.join(format!(".sealing-{:016x}", rand::random::<u64>()));
        private_fs::create_dir(&tmp)?;
        let result = (|| {
            let layout = Layout::Aligned;
            let data = open_data(&tmp.join(layout.file()))?;
            let mut hashes = Vec::with_capacity(chunks);
            let mut plain = vec![0u8; CHUNK_SIZE];
            for index in 0..chunks {
                let len = (size - (index * CHUNK_SIZE) as u64).min(CHUNK_SIZE as u64) as usize;
                file.read_exact(&mut plain[..len]).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => BlobStoreError::Changed,
                    _ => e.into(),
                })?;
                let sealed = blob::seal_chunk(key, size, index, &plain[..len])?;
                write_at(&data, &sealed, layout.offset(index))?;
                hashes.push(blob::ChunkHash(sha256(&sealed)));
            }
            if file.read(&mut plain[..1])? != 0 {
                return Err(BlobStoreError::Changed);
            }
            let manifest = Manifest { v: blob::BLOB_VERSION, size, chunks: hashes };
            data.set_len(layout.len_for(manifest.size))?;
            data.sync_all()?;
            private_fs::write_atomic(&tmp, "manifest", &manifest.to_bytes())?;
            private_fs::write_atomic(&tmp, "complete", b"")?;
            fs::rename(&tmp, self.blob_dir(&manifest.hash()))?;
            Ok(manifest)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Checks and opens every chunk of complete blob `hash` under `key`, writing the plaintext
    /// to `dest` (through a temporary file renamed at the end); returns the bytes written.
    pub fn open_to(
        &self,
        hash: &[u8; 32],
        key: &BlobKey,
        dest: &Path,
    ) -> Result<u64, BlobStoreError> {
        let blob = self.held_blob(hash)?;
        let missing = blob.missing().len();
        if missing > 0 {
            return Err(BlobStoreError::Incomplete { hash: hex_of(hash), missing });
        }
        let manifest = &blob.manifest;
        let tmp = dest.with_extension(format!("kith-part-{:016x}", rand::random::<u64>()));
        let result = (|| {
            let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
            for index in 0..manifest.chunks.len() {
                let sealed = blob.read(index)?;
                manifest.check_chunk(index, &sealed)?;
                out.write_all(&blob::open_chunk(key, manifest.size, index, &sealed)?)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp, dest)?;
            Ok(manifest.size)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes blob `hash` and every chunk of it.
    pub fn remove(&self, hash: &[u8; 32]) -> Result<(), BlobStoreError> {
        self.cache().remove(hash);
        match fs::remove_dir_all(self.blob_dir(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Converts blob directory `dir` from a file per chunk (`<index>`) to one `data` file: the
/// chunk files of the right size are copied in (opening the blob checks them), the rest are
/// fetched again.
fn convert_chunk_files(dir: &Path, hash: &[u8; 32]) -> Result<(), BlobStoreError> {
    let manifest = Manifest::from_bytes_for(&fs::read(dir.join("manifest"))?, hash)?;
    let tmp = dir.join(".data.tmp");
    let data = open_data(&tmp)?;
    data.set_len(manifest.sealed_size())?;
    for index in 0..manifest.chunks.len() {
        let path = dir.join(index.to_string());
        if let Some(sealed) = read_if_any(&path)? {
            if sealed.len() == sealed_len(manifest.size, index) {
                write_at(&data, &sealed, index as u64 * SEALED_CHUNK)?;
            }
        }
    }
    data.sync_all()?;
    fs::rename(&tmp, dir.join("data"))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.parse::<u32>().is_ok() || (name.starts_with('.') && name.ends_with(".tmp")) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn a_sealed_file_opens_to_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path().join("blobs"), 1 << 30).expect("open");
        let src = dir.path().join("photo.jpg");
        let plain = plaintext(2 * CHUNK_SIZE + 123);
        fs::write(&src, &plain).expect("write");
        let key = BlobKey([3; 32]);
        let manifest = store.seal_file(&key, &src).expect("seal");
        let hash = manifest.hash();
        assert_eq!(store.missing(&hash).expect("missing"), Vec::<usize>::new());
        // Chunks at page boundaries: the two full ones take a page more each, the last one
        // whole pages.
        let file = 2 * SLOT + 4096;
        assert_eq!(Layout::Aligned.len_for(manifest.size), file);
        assert_eq!(store.used().expect("used"), file + manifest.to_bytes().len() as u64);
        let dest = dir.path().join("out.jpg");
        assert_eq!(store.open_to(&hash, &key, &dest).expect("open"), plain.len() as u64);
        assert_eq!(fs::read(&dest).expect("read"), plain);
        // The wrong key writes nothing.
        let wrong = dir.path().join("wrong.jpg");
        assert!(matches!(
            store.open_to(&hash, &BlobKey([4; 32]), &wrong),
            Err(BlobStoreError::Blob(BlobError::Open { index: 0 }))
        ));
        assert!(!wrong.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let blob_dir = dir.path().join("blobs").join(hex::encode(hash));
            for entry in fs::read_dir(&blob_dir).expect("dir") {
                let mode = entry.expect("entry").metadata().expect("meta").permissions().mode();
                assert_eq!(mode & 0o077, 0, "a blob file is readable by others");
            }
        }
    }

    #[test]
    fn a_fetch_resumes_after_a_restart_and_refuses_bad_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = BlobKey([5; 32]);
        let (manifest, sealed) = blob::seal(&key, &plaintext(3 * CHUNK_SIZE)).expect("seal");
        let hash = manifest.hash();
        let store = BlobStore::open(dir.path(), 1 << 30).expect("open");
        assert!(matches!(store.put_chunk(&hash, 0, &sealed[0]), Err(BlobStoreError::Unknown(_))));
        // A manifest that is not this blob's is refused.
        let (other, _) = blob::seal(&key, b"other").expect("seal");
        assert!(store.add_manifest(&hash, &other.to_bytes()).is_err());
        store.add_manifest(&hash, &manifest.to_bytes()).expect("manifest");
        assert_eq!(store.missing(&hash).expect("missing"), vec![0, 1, 2]);
        store.put_chunk(&hash, 1, &sealed[1]).expect("chunk 1");
        // A chunk at the wrong place, or corrupted, is refused and not stored.
        assert!(store.put_chunk(&hash, 0, &sealed[2]).is_err());
        let mut bad = sealed[0].clone();
        bad[10] ^= 1;
        assert!(matches!(
            store.put_chunk(&hash, 0, &bad),
            Err(BlobStoreError::Blob(BlobError::ChunkMismatch { index: 0 }))
        ));
        assert!(matches!(
            store.open_to(&hash, &key, &dir.path().join("x")),
            Err(BlobStoreError::Incomplete { missing: 2, .. })
        ));
        drop(store);
        let store = BlobStore::open(dir.path(), 1 << 30).expect("reopen");
        assert_eq!(store.missing(&hash).expect("missing"), vec![0, 2]);
        store.put_chunk(&hash, 0, &sealed[0]).expect("chunk 0");
        store.put_chunk(&hash, 2, &sealed[2]).expect("chunk 2");
        let dest = dir.path().join("out");
        store.open_to(&hash, &key, &dest).expect("open");
        assert_eq!(fs::read(&dest).expect("read"), plaintext(3 * CHUNK_SIZE));
        store.remove(&hash).expect("remove");
        assert!(store.manifest(&hash).expect("manifest").is_none());
    }

    #[test]
    fn a_chunk_cut_short_by_a_crash_is_missing_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = BlobKey([7; 32]);
        let (manifest, sealed) = blob::seal(&key, &plaintext(3 * CHUNK_SIZE + 5)).expect("seal");
        let hash = manifest.hash();
        let store = BlobStore::open(dir.path(), 1 << 30).expect("open");
        store.add_manifest(&hash, &manifest.to_bytes()).expect("manifest");
        for (i, chunk) in sealed.iter().enumerate() {
            store.put_chunk(&hash, i, chunk).expect("chunk");
        }
        assert_eq!(store.missing(&hash).expect("missing"), Vec::<usize>::new());
        // Where the file system takes writes past its cache, none was refused (a chunk out of
        // page alignment would be).
        let open = store.blob(&hash).expect("open").expect("held");
        assert!(open.direct.is_none() || !open.direct_refused.load(Ordering::Relaxed));
        drop(open);
        // Not marked complete yet: a crash now may leave any chunk half-written.
        let data = dir.path().join(hex::encode(hash)).join("chunks");
        let mut bytes = fs::read(&data).expect("data");
        bytes[2 * SLOT as usize + 1000] ^= 0x80;
        fs::write(&data, &bytes).expect("damage");
        drop(store);
        let store = BlobStore::open(dir.path(), 1 << 30).expect("reopen");
        assert_eq!(store.missing(&hash).expect("missing"), vec![2]);
        assert!(matches!(
            store.complete(&hash),
            Err(BlobStoreError::Incomplete { missing: 1, .. })
        ));
        assert!(store.chunk(&hash, 2).expect("chunk").is_none(), "a bad chunk is not served");
        store.put_chunk(&hash, 2, &sealed[2]).expect("chunk 2 again");
        store.complete(&hash).expect("complete");
        assert!(dir.path().join(hex::encode(hash)).join("complete").exists());
        let out = dir.path().join("out");
        store.open_to(&hash, &key, &out).expect("open");
        assert_eq!(fs::read(&out).expect("read"), plaintext(3 * CHUNK_SIZE + 5));
    }

    #[test]
    fn a_store_of_chunk_files_is_converted_when_it_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = BlobKey([8; 32]);
        let (manifest, sealed) = blob::seal(&key, &plaintext(3 * CHUNK_SIZE)).expect("seal");
        let hash = manifest.hash();
        // The layout of earlier versions: a file per chunk; chunk 1 was cut short.
        let blob_dir = dir.path().join(hex::encode(hash));
        fs::create_dir_all(&blob_dir).expect("dir");
        fs::write(blob_dir.join("manifest"), manifest.to_bytes()).expect("manifest");
        fs::write(blob_dir.join("0"), &sealed[0]).expect("chunk 0");
        fs::write(blob_dir.join("1"), &sealed[1][..100]).expect("chunk 1");
        fs::write(blob_dir.join("2"), &sealed[2]).expect("chunk 2");
        fs::write(blob_dir.join(".3.tmp"), b"half").expect("tmp");
        // A seal a crash cut short.
        fs::create_dir_all(dir.path().join(".sealing-0123")).expect("sealing");
        let store = BlobStore::open(dir.path(), 1 << 30).expect("open");
        assert!(!dir.path().join(".sealing-0123").exists());
        let mut left: Vec<String> = fs::read_dir(&blob_dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["data", "manifest"]);
        assert_eq!(store.missing(&hash).expect("missing"), vec![1]);
        // The converted blob keeps the packed layout of `data` (chunks not at page boundaries):
        // it is served and resumed through the page cache.
        assert_eq!(store.chunk(&hash, 2).expect("chunk").as_deref(), Some(&sealed[2][..]));
        store.put_chunk(&hash, 1, &sealed[1]).expect("chunk 1");
        assert!(!blob_dir.join("chunks").exists());
        store.complete(&hash).expect("complete");
        let out = dir.path().join("out");
        store.open_to(&hash, &key, &out).expect("open");
        assert_eq!(fs::read(&out).expect("read"), plaintext(3 * CHUNK_SIZE));
    }

    #[test]
    fn the_quota_refuses_a_blob_that_does_not_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path(), CHUNK_SIZE as u64).expect("open");
        let (manifest, _) =
            blob::seal(&BlobKey([6; 32]), &plaintext(CHUNK_SIZE + 1)).expect("seal");
        assert!(matches!(
            store.add_manifest(&manifest.hash(), &manifest.to_bytes()),
            Err(BlobStoreError::Quota { .. })
        ));
        let src = dir.path().join("big");
        fs::write(&src, plaintext(CHUNK_SIZE + 1)).expect("write");
        let sub = BlobStore::open(dir.path().join("blobs"), CHUNK_SIZE as u64).expect("open");
        assert!(matches!(
            sub.seal_file(&BlobKey([6; 32]), &src),
            Err(BlobStoreError::Quota { .. })
        ));
        assert_eq!(sub.used().expect("used"), 0);
    }
}
