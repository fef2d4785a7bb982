//! Encrypted, content-addressed blobs: the cryptography of attachments (no I/O).
//!
//! A file is cut into chunks of [`CHUNK_SIZE`] bytes of plaintext (the last one shorter, and an
//! empty file is one empty chunk). Each chunk is sealed with ChaCha20-Poly1305 under the blob's
//! own random key, with a nonce made of the chunk's index and a flag marking the last chunk (the
//! STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár): a chunk moved to another
//! place, a blob cut short after any chunk, or a chunk from another blob fails to open.
//!
//! The blob is named by its [`Manifest`]: the plaintext size and the SHA-256 of every sealed
//! chunk. The blob's hash ([`Manifest::hash`]) is the SHA-256 of the manifest's encoding, so a
//! node that knows only the hash can check a manifest it is given, then every chunk on its own as
//! it arrives ([`Manifest::check_chunk`]), before it holds the key. Nodes that store or relay a
//! blob see its hash, its size rounded to whole chunks and the sealed chunks; not the key, the
//! plaintext, its type or its name, which travel inside the end-to-end encrypted `attachment`
//! message.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroize;

use crate::codec;
use crate::error::DecodeError;

/// Plaintext bytes per chunk (256 KiB).
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Bytes a sealed chunk adds to its plaintext (the Poly1305 tag).
pub const TAG_SIZE: usize = 16;
/// The largest blob, in plaintext bytes (4 GiB).
pub const MAX_BLOB_SIZE: u64 = 4 << 30;
/// The most chunks a blob has ([`MAX_BLOB_SIZE`] / [`CHUNK_SIZE`]).
pub const MAX_CHUNKS: usize = (MAX_BLOB_SIZE / CHUNK_SIZE as u64) as usize;
/// The largest encoded manifest: 32 bytes per chunk and a few bytes of framing.
pub const MAX_MANIFEST_SIZE: usize = MAX_CHUNKS * 34 + 64;
/// Version of the blob format.
pub const BLOB_VERSION: u8 = 1;

/// A blob failed a check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The plaintext is larger than [`MAX_BLOB_SIZE`].
    #[error("a blob holds at most {max} bytes, this one has {size}")]
    TooLarge {
        /// The size given.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A chunk index outside the blob.
    #[error("chunk {index} is outside a blob of {chunks} chunks")]
    NoSuchChunk {
        /// The index asked for.
        index: usize,
        /// How many chunks the blob has.
        chunks: usize,
    },
    /// A sealed chunk is not the one the manifest names (corrupt, or from another blob).
    #[error("chunk {index} does not match the blob's manifest")]
    ChunkMismatch {
        /// The chunk's index.
        index: usize,
    },
    /// A chunk has the wrong length for its place in the blob.
    #[error("chunk {index} has {len} bytes, {expected} expected")]
    ChunkLength {
        /// The chunk's index.
        index: usize,
        /// Its length.
        len: usize,
        /// The length its place requires.
        expected: usize,
    },
    /// A chunk did not decrypt: wrong key, wrong place, or tampered with.
    #[error("chunk {index} does not open with this key at this place")]
    Open {
        /// The chunk's index.
        index: usize,
    },
    /// A manifest is not the one the blob's hash names.
    #[error("the manifest does not match the blob's hash")]
    ManifestMismatch,
    /// A manifest that does not decode, or breaks a rule.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A blob's symmetric key: random, fresh for every blob, sent only inside the end-to-end
/// encrypted `attachment` message.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobKey(pub [u8; 32]);

impl BlobKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        BlobKey(key)
    }
}

impl Drop for BlobKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobKey(..)")
    }
}

/// Sealed bytes of a blob of `size` plaintext bytes: the plaintext and a tag per chunk.
pub fn sealed_size(size: u64) -> u64 {
    size + (chunk_count(size) * TAG_SIZE) as u64
}

/// Plaintext bytes held in `chunks` whole chunks of a blob of `size` bytes (at most `size`:
/// the last chunk may be short).
pub fn bytes_in_chunks(chunks: usize, size: u64) -> u64 {
    (chunks as u64).saturating_mul(CHUNK_SIZE as u64).min(size)
}

/// How many chunks a blob of `size` plaintext bytes has (an empty blob has one, empty).
pub fn chunk_count(size: u64) -> usize {
    if size == 0 {
        1
    } else {
        size.div_ceil(CHUNK_SIZE as u64) as usize
    }
}

/// The plaintext length of chunk `index` of a blob of `size` bytes.
fn plain_len(size: u64, index: usize) -> usize {
    let start = index as u64 * CHUNK_SIZE as u64;
    size.saturating_sub(start).min(CHUNK_SIZE as u64) as usize
}

/// The nonce of chunk `index`: its index (8 bytes, big-endian), then 1 for the last chunk or 0,
/// then three zero bytes.
fn nonce(index: usize, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&(index as u64).to_be_bytes());
    n[8] = u8::from(last);
    Nonce::from(n)
}

/// The associated data of every chunk: the format version.
const AAD: &[u8] = b"kith blob v1";

/// Seals chunk `index` of a blob of `size` plaintext bytes. `plain` must have the length the
/// chunk's place requires (every chunk but the last holds [`CHUNK_SIZE`] bytes).
pub fn seal_chunk(
    key: &BlobKey,
    size: u64,
    index: usize,
    plain: &[u8],
) -> Result<Vec<u8>, BlobError> {
    check_size(size)?;
    let chunks = chunk_count(size);
    if index >= chunks {
        return Err(BlobError::NoSuchChunk { index, chunks });
    }
    let expected = plain_len(size, index);
    if plain.len() != expected {
        return Err(BlobError::ChunkLength { index, len: plain.len(), expected });
    }
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    cipher
        .encrypt(&nonce(index, index + 1 == chunks), Payload { msg: plain, aad: AAD })
        // Encryption fails only for plaintexts beyond ChaCha20's 256 GiB per nonce.
        .map_err(|_| BlobError::ChunkLength { index, len: plain.len(), expected })
}

/// Opens sealed chunk `index` of a blob of `size` plaintext bytes.
pub fn open_chunk(
    key: &BlobKey,
    size: u64,
    index: usize,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    check_size(size)?;
    let chunks = chunk_count(size);
    if index >= chunks {
        return Err(BlobError::NoSuchChunk { index, chunks });
    }
    let expected = plain_len(size, index) + TAG_SIZE;
    if sealed.len() != expected {
        return Err(BlobError::ChunkLength { index, len: sealed.len(), expected });
    }
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(&nonce(index, index + 1 == chunks), Payload { msg: sealed, aad: AAD })
        .map_err(|_| BlobError::Open { index })
}

fn check_size(size: u64) -> Result<(), BlobError> {
    if size > MAX_BLOB_SIZE {
        return Err(BlobError::TooLarge { size, max: MAX_BLOB_SIZE });
    }
    Ok(())
}

/// What names a blob: its plaintext size and the SHA-256 of each sealed chunk, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`BLOB_VERSION`].
    pub v: u8,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of each sealed chunk.
    pub chunks: Vec<ChunkHash>,
}

/// The SHA-256 of one sealed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHash(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Manifest {
    /// The manifest of sealed chunks already made (in order) for a blob of `size` bytes.
    pub fn new(size: u64, sealed: &[Vec<u8>]) -> Result<Self, BlobError> {
        let manifest = Manifest {
            v: BLOB_VERSION,
            size,
            chunks: sealed.iter().map(|c| ChunkHash(Sha256::digest(c).into())).collect(),
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// The blob's hash: SHA-256 of the manifest's encoding. The `attachment` message carries it.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a manifest received for the blob named `hash`, checking that it is that blob's.
    pub fn from_bytes_for(bytes: &[u8], hash: &[u8; 32]) -> Result<Self, BlobError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if &digest != hash {
            return Err(BlobError::ManifestMismatch);
        }
        let manifest: Manifest = codec::from_slice(bytes, MAX_MANIFEST_SIZE)?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), BlobError> {
        if self.v != BLOB_VERSION {
            return Err(
                DecodeError::UnsupportedVersion { found: self.v, supported: BLOB_VERSION }.into()
            );
        }
        check_size(self.size)?;
        let expected = chunk_count(self.size);
        if self.chunks.len() != expected {
            return Err(DecodeError::Invalid(format!(
                "a blob of {} bytes has {expected} chunks, the manifest lists {}",
                self.size,
                self.chunks.len()
            ))
            .into());
        }
        Ok(())
    }

    /// Checks a sealed chunk received for place `index`, without the key: a relay or a mailbox
    /// node stores only chunks that pass.
    pub fn check_chunk(&self, index: usize, sealed: &[u8]) -> Result<(), BlobError> {
        let chunks = self.chunks.len();
        let want = self.chunks.get(index).ok_or(BlobError::NoSuchChunk { index, chunks })?;
        let expected = plain_len(self.size, index) + TAG_SIZE;
        if sealed.len() != expected {
            return Err(BlobError::ChunkLength { index, len: sealed.len(), expected });
        }
        let got: [u8; 32] = Sha256::digest(sealed).into();
        if got != want.0 {
            return Err(BlobError::ChunkMismatch { index });
        }
        Ok(())
    }

    /// Sealed bytes of the whole blob (what a node stores for it).
    pub fn sealed_size(&self) -> u64 {
        sealed_size(self.size)
    }
}

/// Seals a whole plaintext held in memory: its manifest and its sealed chunks. (A node seals a
/// file chunk by chunk with [`seal_chunk`] instead, holding one chunk at a time.)
pub fn seal(key: &BlobKey, plain: &[u8]) -> Result<(Manifest, Vec<Vec<u8>>), BlobError> {
    let size = plain.len() as u64;
    check_size(size)?;
    let mut sealed = Vec::with_capacity(chunk_count(size));
    for index in 0..chunk_count(size) {
        let start = index * CHUNK_SIZE;
        let end = start + plain_len(size, index);
        sealed.push(seal_chunk(key, size, index, &plain[start..end])?);
    }
    let manifest = Manifest::new(size, &sealed)?;
    Ok((manifest, sealed))
}

/// Checks and opens every chunk of a blob, in order, returning its plaintext.
pub fn open(key: &BlobKey, manifest: &Manifest, sealed: &[Vec<u8>]) -> Result<Vec<u8>, BlobError> {
    let chunks = manifest.chunks.len();
    if sealed.len() != chunks {
        return Err(BlobError::NoSuchChunk { index: sealed.len().min(chunks), chunks });
    }
    let mut plain = Vec::with_capacity(manifest.size as usize);
    for (index, chunk) in sealed.iter().enumerate() {
        manifest.check_chunk(index, chunk)?;
        plain.extend_from_slice(&open_chunk(key, manifest.size, index, chunk)?);
    }
    Ok(plain)
}

/// Longest caption of an attachment, in bytes.
pub const MAX_CAPTION: usize = 4096;
/// Largest inline preview of an attachment (senders make theirs at most 8 KiB; 12 KiB are
/// accepted).
pub const MAX_PREVIEW: usize = 12 * 1024;
/// Most holders an attachment names.
pub const MAX_HOLDERS: usize = 4;
/// Most addresses per holder.
pub const MAX_HOLDER_ADDRS: usize = 8;
/// Image types a preview may have.
pub const PREVIEW_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// What an `attachment` message carries: the blob's name and key, what the file is, and where
/// else than at its sender it can be fetched. Travels only inside end-to-end encrypted messages.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The blob's hash: SHA-256 of its manifest ([`Manifest::hash`]).
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    /// Size of the plaintext in bytes.
    pub size: u64,
    /// MIME type (as the sender's client named it; never trusted to be right).
    pub mime: String,
    /// Original file name.
    pub name: Option<String>,
    /// The blob's key ([`BlobKey`]).
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
    /// A caption shown with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// A small image shown before the blob is fetched (a thumbnail, a video's poster frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Width in pixels of an image or video, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels of an image or video, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Duration in milliseconds of audio or video, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Peers besides the sending device that were asked to hold the blob (its sender's
    /// mailboxes), as mailbox peers are listed in name records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<crate::name::MailboxPeer>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("hash", &hex_short(&self.hash))
            .field("size", &self.size)
            .field("mime", &self.mime)
            .field("name", &self.name)
            .field("key", &"<secret>")
            .field("caption", &self.caption)
            .field("preview", &self.preview.as_ref().map(|p| p.bytes.len()))
            .field("holders", &self.holders.len())
            .finish()
    }
}

fn hex_short(hash: &[u8; 32]) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// An inline preview image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// One of [`PREVIEW_TYPES`].
    pub mime: String,
    /// The encoded image, at most [`MAX_PREVIEW`] bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Attachment {
    /// Checks sizes and ranges (run when a message is decoded).
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |what: String| Err(DecodeError::Invalid(what));
        let short = crate::message::MAX_SHORT;
        if self.mime.len() > short || self.name.as_ref().is_some_and(|n| n.len() > short) {
            return bad(format!("an attachment's type or name longer than {short} bytes"));
        }
        if self.size > MAX_BLOB_SIZE {
            return bad(format!("an attachment of {} bytes (at most {MAX_BLOB_SIZE})", self.size));
        }
        if self.caption.as_ref().is_some_and(|c| c.len() > MAX_CAPTION) {
            return bad(format!("a caption longer than {MAX_CAPTION} bytes"));
        }
        if let Some(p) = &self.preview {
            if p.bytes.len() > MAX_PREVIEW || !PREVIEW_TYPES.contains(&p.mime.as_str()) {
                return bad(format!(
                    "a preview must be JPEG, PNG or WebP of at most {MAX_PREVIEW} bytes"
                ));
            }
        }
        if self.holders.len() > MAX_HOLDERS
            || self.holders.iter().any(|h| {
                h.peer_id.len() > 64
                    || h.addrs.len() > MAX_HOLDER_ADDRS
                    || h.addrs.iter().any(|a| a.len() > short)
            })
        {
            return bad(format!(
                "at most {MAX_HOLDERS} holders of {MAX_HOLDER_ADDRS} addresses each"
            ));
        }
        Ok(())
    }

    /// The blob's key.
    pub fn blob_key(&self) -> BlobKey {
        BlobKey(self.key)
    }
}

/// Largest encoded [`BlobRequest`].
pub const MAX_BLOB_REQUEST: usize = 128;
/// Largest encoded [`BlobResponse`]: a whole manifest or a sealed chunk, and framing.
pub const MAX_BLOB_RESPONSE: usize = MAX_MANIFEST_SIZE + 1024;

/// A request for part of a blob, by its hash (the wire format of blob transfer, 6.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// The blob's manifest.
    Manifest {
        /// The blob's hash.
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
    },
    /// One sealed chunk.
    Chunk {
        /// The blob's hash.
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
        /// The chunk's index.
        index: u32,
    },
}

/// The answer to a [`BlobRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    /// The encoded manifest (checked by the asker against the hash).
    Manifest {
        /// The manifest's encoding.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// A sealed chunk (checked by the asker against the manifest).
    Chunk {
        /// The sealed chunk.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// This peer does not hold that part.
    NotFound,
    /// Refused, with a reason for people (not allowed, busy).
    Refused {
        /// Why.
        reason: String,
    },
}

impl BlobRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a request; a chunk index beyond [`MAX_CHUNKS`] is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body: BlobRequest = codec::from_frame(bytes, MAX_BLOB_REQUEST)?;
        if let BlobRequest::Chunk { index, .. } = body {
            if index as usize >= MAX_CHUNKS {
                return Err(DecodeError::Invalid(format!(
                    "chunk index {index} beyond {MAX_CHUNKS}"
                )));
            }
        }
        Ok(body)
    }
}

impl BlobResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::from_frame(bytes, MAX_BLOB_RESPONSE)
    }

    /// The first bytes of the encoding of `Chunk` with a chunk of `len` bytes: the encoding is
    /// this header, then the chunk. (The chunk is the last field of the frame, so a node
    /// serving one reads it from disk straight after the header, without a copy.)
    pub fn chunk_header(len: usize) -> Vec<u8> {
        let mut header = chunk_prefix();
        header.extend_from_slice(&byte_string_header(len as u64));
        header
    }

    /// The chunk in `frame`, if it is the encoding of `Chunk` (within
    /// [`MAX_BLOB_RESPONSE`]), without a copy; `None` for any other frame (decode those with
    /// [`BlobResponse::from_bytes`]). What it accepts is exactly what `from_bytes` decodes to a
    /// chunk.
    pub fn chunk_in(frame: &[u8]) -> Option<&[u8]> {
        if frame.len() > MAX_BLOB_RESPONSE {
            return None;
        }
        let rest = frame.strip_prefix(&chunk_prefix()[..])?;
        // A byte string's header of 1 to 9 bytes, whose length depends on the chunk's: the one
        // that announces exactly the bytes after it.
        [1, 2, 3, 5, 9].into_iter().find_map(|n| {
            let chunk = rest.get(n..)?;
            (rest[..n] == byte_string_header(chunk.len() as u64)[..]).then_some(chunk)
        })
    }
}

/// The encoding of `Chunk` up to its byte string's header (the same for every chunk).
fn chunk_prefix() -> Vec<u8> {
    let mut prefix = codec::to_frame(&BlobResponse::Chunk { bytes: Vec::new() });
    // The empty byte string's header (0x40) is the frame's last byte.
    prefix.pop();
    prefix
}

/// CBOR's shortest header of a byte string of `len` bytes (major type 2).
fn byte_string_header(len: u64) -> Vec<u8> {
    match len {
        0..=23 => vec![0x40 | len as u8],
        24..=0xff => vec![0x58, len as u8],
        0x100..=0xffff => [&[0x59][..], &(len as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[0x5a][..], &(len as u32).to_be_bytes()].concat(),
        _ => [&[0x5b][..], &len.to_be_bytes()].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn key(seed: u8) -> BlobKey {
        BlobKey([seed; 32])
    }

    #[test]
    fn a_chunk_frame_is_its_header_then_the_chunk() {
        for len in [0, 1, 23, 24, 255, 256, 65_535, 65_536, CHUNK_SIZE + TAG_SIZE] {
            let chunk: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = BlobResponse::Chunk { bytes: chunk.clone() }.to_bytes();
            let header = BlobResponse::chunk_header(len);
            assert_eq!(frame[..header.len()], header[..], "{len}");
            assert_eq!(frame[header.len()..], chunk[..], "{len}");
            assert_eq!(BlobResponse::chunk_in(&frame), Some(&chunk[..]), "{len}");
        }
        // Anything else is not a chunk: other answers, a chunk cut short or with a byte more.
        let frame = BlobResponse::Chunk { bytes: vec![7; 300] }.to_bytes();
        assert_eq!(BlobResponse::chunk_in(&frame[..frame.len() - 1]), None);
        assert_eq!(BlobResponse::chunk_in(&[&frame[..], &[0]].concat()), None);
        assert_eq!(BlobResponse::chunk_in(&BlobResponse::NotFound.to_bytes()), None);
        let manifest = BlobResponse::Manifest { bytes: vec![7; 300] }.to_bytes();
        assert_eq!(BlobResponse::chunk_in(&manifest), None);
    }

    proptest! {
        #[test]
        fn chunk_in_agrees_with_the_decoder(
            chunk in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<proptest::sample::Index>(),
            flip in 1..=255u8,
            cut in 0..3usize,
        ) {
            // A chunk's frame with one byte changed, or cut short.
            let mut frame = BlobResponse::Chunk { bytes: chunk }.to_bytes();
            let i = at.index(frame.len());
            frame[i] ^= flip;
            frame.truncate(frame.len() - cut);
            let decoded = match BlobResponse::from_bytes(&frame) {
                Ok(BlobResponse::Chunk { bytes }) => Some(bytes),
                _ => None,
            };
            prop_assert_eq!(BlobResponse::chunk_in(&frame).map(<[u8]>::to_vec), decoded);
        }

        #[test]
        fn chunk_in_takes_every_chunk_frame(chunk in proptest::collection::vec(any::<u8>(), 0..600)) {
            let frame = BlobResponse::Chunk { bytes: chunk.clone() }.to_bytes();
            prop_assert_eq!(BlobResponse::chunk_in(&frame), Some(&chunk[..]));
        }
    }

    #[test]
    fn transfer_frames_round_trip_and_keep_their_limits() {
        let reqs = [
            BlobRequest::Manifest { hash: [1; 32] },
            BlobRequest::Chunk { hash: [2; 32], index: (MAX_CHUNKS - 1) as u32 },
        ];
        for r in reqs {
            let bytes = r.to_bytes();
            assert!(bytes.len() <= MAX_BLOB_REQUEST);
            assert_eq!(BlobRequest::from_bytes(&bytes), Ok(r));
        }
        let beyond = BlobRequest::Chunk { hash: [2; 32], index: MAX_CHUNKS as u32 }.to_bytes();
        assert!(matches!(BlobRequest::from_bytes(&beyond), Err(DecodeError::Invalid(_))));
        // The largest chunk and the largest manifest fit a response.
        let chunk = BlobResponse::Chunk { bytes: vec![0; CHUNK_SIZE + TAG_SIZE] };
        assert_eq!(BlobResponse::from_bytes(&chunk.to_bytes()), Ok(chunk));
        let manifest = Manifest {
            v: BLOB_VERSION,
            size: MAX_BLOB_SIZE,
            chunks: vec![ChunkHash([0xff; 32]); MAX_CHUNKS],
        };
        assert!(manifest.to_bytes().len() <= MAX_MANIFEST_SIZE);
        let answer = BlobResponse::Manifest { bytes: manifest.to_bytes() };
        assert_eq!(BlobResponse::from_bytes(&answer.to_bytes()), Ok(answer));
        for r in [BlobResponse::NotFound, BlobResponse::Refused { reason: "not allowed".into() }] {
            assert_eq!(BlobResponse::from_bytes(&r.to_bytes()), Ok(r));
        }
    }

    #[test]
    fn chunk_counts_cover_the_edges() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64 + 1), 2);
        assert_eq!(chunk_count(MAX_BLOB_SIZE), MAX_CHUNKS);
    }

    #[test]
    fn a_blob_of_three_chunks_round_trips_and_its_hash_names_it() {
        let plain: Vec<u8> = (0..2 * CHUNK_SIZE + 1000).map(|i| (i % 251) as u8).collect();
        let k = BlobKey::generate(&mut OsRng);
        let (manifest, sealed) = seal(&k, &plain).expect("seal");
        assert_eq!(sealed.len(), 3);
        assert_eq!(manifest.sealed_size(), sealed.iter().map(|c| c.len() as u64).sum::<u64>());
        let received = Manifest::from_bytes_for(&manifest.to_bytes(), &manifest.hash())
            .expect("the manifest matches its hash");
        assert_eq!(open(&k, &received, &sealed).expect("open"), plain);
        // Another manifest is refused under this hash.
        let (other, _) = seal(&k, b"other").expect("seal");
        assert_eq!(
            Manifest::from_bytes_for(&other.to_bytes(), &manifest.hash()),
            Err(BlobError::ManifestMismatch)
        );
    }

    #[test]
    fn a_truncated_blob_does_not_open() {
        // Cut after the first chunk, with a manifest claiming the shorter size: the chunk was
        // sealed as "not last", so it does not open as the last one.
        let plain = vec![7u8; CHUNK_SIZE * 2];
        let k = key(1);
        let (_, sealed) = seal(&k, &plain).expect("seal");
        let cut = Manifest::new(CHUNK_SIZE as u64, &sealed[..1]).expect("manifest");
        assert_eq!(open(&k, &cut, &sealed[..1]), Err(BlobError::Open { index: 0 }));
    }

    #[test]
    fn swapped_chunks_do_not_open_even_under_a_matching_manifest() {
        let mut plain = vec![1u8; CHUNK_SIZE];
        plain.extend(vec![2u8; CHUNK_SIZE]);
        plain.extend(vec![3u8; 10]);
        let k = key(2);
        let (_, mut sealed) = seal(&k, &plain).expect("seal");
        sealed.swap(0, 1);
        let forged = Manifest::new(plain.len() as u64, &sealed).expect("manifest");
        assert_eq!(open(&k, &forged, &sealed), Err(BlobError::Open { index: 0 }));
    }

    #[test]
    fn a_chunk_from_another_place_or_blob_is_refused_before_the_key_is_needed() {
        let k = key(3);
        let (manifest, sealed) = seal(&k, &vec![9u8; CHUNK_SIZE + 5]).expect("seal");
        let (_, others) = seal(&k, &vec![8u8; CHUNK_SIZE + 5]).expect("seal");
        assert_eq!(manifest.check_chunk(0, &others[0]), Err(BlobError::ChunkMismatch { index: 0 }));
        assert!(matches!(manifest.check_chunk(1, &sealed[0]), Err(BlobError::ChunkLength { .. })));
        assert!(matches!(manifest.check_chunk(2, &sealed[0]), Err(BlobError::NoSuchChunk { .. })));
        assert_eq!(manifest.check_chunk(1, &sealed[1]), Ok(()));
    }

    #[test]
    fn limits_are_enforced() {
        let k = key(4);
        assert!(matches!(
            seal_chunk(&k, MAX_BLOB_SIZE + 1, 0, &[]),
            Err(BlobError::TooLarge { .. })
        ));
        assert!(matches!(seal_chunk(&k, 10, 0, &[0; 9]), Err(BlobError::ChunkLength { .. })));
        // A manifest whose chunk list does not fit its size is refused.
        let bad = Manifest { v: BLOB_VERSION, size: 10, chunks: vec![] };
        assert!(matches!(
            Manifest::from_bytes_for(&bad.to_bytes(), &bad.hash()),
            Err(BlobError::Decode(DecodeError::Invalid(_)))
        ));
        let future = Manifest { v: 2, size: 0, chunks: vec![ChunkHash([0; 32])] };
        assert!(matches!(
            Manifest::from_bytes_for(&future.to_bytes(), &future.hash()),
            Err(BlobError::Decode(DecodeError::UnsupportedVersion { .. }))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any plaintext round-trips under its key and not under another.
        #[test]
        fn round_trip(len in 0usize..(CHUNK_SIZE * 2 + 3), byte in any::<u8>(), seed in 1u8..255) {
            let plain = vec![byte; len];
            let k = key(seed);
            let (manifest, sealed) = seal(&k, &plain).unwrap();
            prop_assert_eq!(open(&k, &manifest, &sealed).unwrap(), plain);
            prop_assert_eq!(open(&key(seed ^ 0xff), &manifest, &sealed), Err(BlobError::Open { index: 0 }));
        }

        /// Flipping any bit of any sealed chunk is caught, by the manifest and by the key.
        #[test]
        fn tampering_is_caught(len in 1usize..4096, at in any::<usize>(), bit in 0u8..8) {
            let k = key(5);
            let (manifest, mut sealed) = seal(&k, &vec![0x5a; len]).unwrap();
            let i = at % sealed[0].len();
            sealed[0][i] ^= 1 << bit;
            prop_assert_eq!(manifest.check_chunk(0, &sealed[0]), Err(BlobError::ChunkMismatch { index: 0 }));
            prop_assert_eq!(open_chunk(&k, manifest.size, 0, &sealed[0]), Err(BlobError::Open { index: 0 }));
        }

        /// Manifest decoding never panics on arbitrary bytes named by their own hash.
        #[test]
        fn arbitrary_manifests_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            let _ = Manifest::from_bytes_for(&bytes, &hash);
        }
    }
}
