//! The blob store: sealed attachment chunks on disk, addressed by blob hash.
//!
//! Blobs live in files, not in sled's values (a photo would otherwise be rewritten by every
//! compaction). The layout under the store's directory is `<hash hex>/manifest` and
//! `<hash hex>/<index>` for each sealed chunk held, each file written to a temporary name and
//! renamed, so a crash leaves whole chunks or none. A blob being fetched is a directory with its
//! manifest and the chunks received so far: [`BlobStore::missing`] says what a fetch still
//! needs, after any restart. Every chunk is checked against the manifest before it is written;
//! the manifest is checked against the blob's hash. Files are readable by their owner only.
//!
//! The store sees sealed chunks only; the key is the caller's ([`BlobStore::seal_file`] takes
//! it to seal, [`BlobStore::open_to`] to write the plaintext out). These calls block: async
//! callers run them with `spawn_blocking`. The media service (`services::media`) drives it.

use std::fs;
use std::io::{Read, Write};

use crate::private_fs;
use std::path::{Path, PathBuf};

use kith_protocol::blob::{self, BlobError, BlobKey, Manifest, CHUNK_SIZE};
use thiserror::Error;

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
}

fn hex_of(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

impl BlobStore {
    /// Opens (creating it owner-only) the store at `dir`, taking at most `quota` sealed bytes.
    pub fn open(dir: impl Into<PathBuf>, quota: u64) -> Result<Self, BlobStoreError> {
        let dir = dir.into();
        private_fs::create_dir(&dir)?;
        Ok(BlobStore { dir, quota })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_dir(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(hex_of(hash))
    }

    /// Sealed bytes held, over every blob (complete or not).
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
        if let Some(held) = self.manifest(hash)? {
            return Ok(held);
        }
        self.check_quota(manifest.sealed_size())?;
        let dir = self.blob_dir(hash);
        private_fs::create_dir(&dir)?;
        private_fs::write_atomic(&dir, "manifest", bytes)?;
        Ok(manifest)
    }

    fn check_quota(&self, wanted: u64) -> Result<(), BlobStoreError> {
        let used = self.used()?;
        if used.saturating_add(wanted) > self.quota {
            return Err(BlobStoreError::Quota { quota: self.quota, used, wanted });
        }
        Ok(())
    }

    /// The manifest of blob `hash`, if held. A stored manifest that no longer matches its hash
    /// (a damaged disk) is an error, not a blob.
    pub fn manifest(&self, hash: &[u8; 32]) -> Result<Option<Manifest>, BlobStoreError> {
        match fs::read(self.blob_dir(hash).join("manifest")) {
            Ok(bytes) => Ok(Some(Manifest::from_bytes_for(&bytes, hash)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn held_manifest(&self, hash: &[u8; 32]) -> Result<Manifest, BlobStoreError> {
        self.manifest(hash)?.ok_or_else(|| BlobStoreError::Unknown(hex_of(hash)))
    }

    /// Stores sealed chunk `index` of blob `hash` after checking it against the manifest.
    pub fn put_chunk(
        &self,
        hash: &[u8; 32],
        index: usize,
        sealed: &[u8],
    ) -> Result<(), BlobStoreError> {
        let manifest = self.held_manifest(hash)?;
        manifest.check_chunk(index, sealed)?;
        Ok(private_fs::write_atomic(&self.blob_dir(hash), &index.to_string(), sealed)?)
    }

    /// [`BlobStore::put_chunk`] with the blob's manifest in hand (a fetch holds it).
    pub fn put_checked(
        &self,
        manifest: &Manifest,
        hash: &[u8; 32],
        index: usize,
        sealed: &[u8],
    ) -> Result<(), BlobStoreError> {
        manifest.check_chunk(index, sealed)?;
        // Not synced one by one (a fetch writes hundreds): `sync` makes the whole blob durable
        // once it is complete, and `missing` counts a chunk file of the wrong size as missing.
        Ok(private_fs::write_renamed(&self.blob_dir(hash), &index.to_string(), sealed, false)?)
    }

    /// Makes every file of blob `hash` durable (after a fetch wrote its chunks unsynced).
    pub fn sync(&self, hash: &[u8; 32]) -> Result<(), BlobStoreError> {
        let dir = self.blob_dir(hash);
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::File::open(entry.path())?.sync_all()?;
            }
        }
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }

    /// The encoded manifest of blob `hash`, as stored (checked when it was taken).
    pub fn manifest_bytes(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, BlobStoreError> {
        match fs::read(self.blob_dir(hash).join("manifest")) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
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

    /// Sealed chunk `index` of blob `hash`, if held.
    pub fn chunk(&self, hash: &[u8; 32], index: usize) -> Result<Option<Vec<u8>>, BlobStoreError> {
        match fs::read(self.blob_dir(hash).join(index.to_string())) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The chunks of blob `hash` not held yet, in order (empty when the blob is complete).
    pub fn missing(&self, hash: &[u8; 32]) -> Result<Vec<usize>, BlobStoreError> {
        Ok(self.missing_of(hash, &self.held_manifest(hash)?))
    }

    fn missing_of(&self, hash: &[u8; 32], manifest: &Manifest) -> Vec<usize> {
        let dir = self.blob_dir(hash);
        let sealed_len = |i: usize| {
            let start = (i * CHUNK_SIZE) as u64;
            manifest.size.saturating_sub(start).min(CHUNK_SIZE as u64) + blob::TAG_SIZE as u64
        };
        (0..manifest.chunks.len())
            .filter(|&i| {
                fs::metadata(dir.join(i.to_string())).map_or(true, |m| m.len() != sealed_len(i))
            })
            .collect()
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
        self.check_quota(blob::sealed_size(size))?;
        let tmp = self.dir.join(format!(".sealing-{:016x}", rand::random::<u64>()));
        private_fs::create_dir(&tmp)?;
        let result = (|| {
            let mut hashes = Vec::with_capacity(chunks);
            let mut plain = vec![0u8; CHUNK_SIZE];
            for index in 0..chunks {
                let len = (size - (index * CHUNK_SIZE) as u64).min(CHUNK_SIZE as u64) as usize;
                file.read_exact(&mut plain[..len]).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => BlobStoreError::Changed,
                    _ => e.into(),
                })?;
                let sealed = blob::seal_chunk(key, size, index, &plain[..len])?;
                private_fs::write_atomic(&tmp, &index.to_string(), &sealed)?;
                hashes.push(blob::ChunkHash(sha256(&sealed)));
            }
            if file.read(&mut plain[..1])? != 0 {
                return Err(BlobStoreError::Changed);
            }
            let manifest = Manifest { v: blob::BLOB_VERSION, size, chunks: hashes };
            private_fs::write_atomic(&tmp, "manifest", &manifest.to_bytes())?;
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
        let manifest = self.held_manifest(hash)?;
        let missing = self.missing_of(hash, &manifest);
        if !missing.is_empty() {
            return Err(BlobStoreError::Incomplete { hash: hex_of(hash), missing: missing.len() });
        }
        let tmp = dest.with_extension(format!("kith-part-{:016x}", rand::random::<u64>()));
        let result = (|| {
            let mut out = fs::File::create(&tmp)?;
            for index in 0..manifest.chunks.len() {
                let sealed = self
                    .chunk(hash, index)?
                    .ok_or(BlobStoreError::Incomplete { hash: hex_of(hash), missing: 1 })?;
                manifest.check_chunk(index, &sealed)?;
                out.write_all(&blob::open_chunk(key, manifest.size, index, &sealed)?)?;
            }
            out.sync_all()?;
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
        match fs::remove_dir_all(self.blob_dir(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
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
        assert_eq!(
            store.used().expect("used"),
            manifest.sealed_size() + manifest.to_bytes().len() as u64
        );
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
