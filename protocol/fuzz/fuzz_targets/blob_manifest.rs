//! Fuzzes the decoders of blob transfer frames and of blob manifests (fetched from peers, checked against the hash the
//! `attachment` message names) and the chunk checks; whatever decodes must re-encode to the same
//! bytes.
#![no_main]

use kith_protocol::blob::{BlobRequest, BlobResponse, Manifest};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = BlobRequest::from_bytes(data) {
        assert_eq!(BlobRequest::from_bytes(&r.to_bytes()).ok().as_ref(), Some(&r));
    }
    if let Ok(r) = BlobResponse::from_bytes(data) {
        assert_eq!(BlobResponse::from_bytes(&r.to_bytes()).ok().as_ref(), Some(&r));
    }
    let hash: [u8; 32] = Sha256::digest(data).into();
    if let Ok(m) = Manifest::from_bytes_for(data, &hash) {
        assert_eq!(m.to_bytes(), data);
        assert_eq!(m.hash(), hash);
        let _ = m.check_chunk(0, data);
        let _ = m.check_chunk(m.chunks.len(), data);
    }
});
