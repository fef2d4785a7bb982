//! Fuzzes the decoders of `/kith/link/1` frames and of link codes; whatever decodes must
//! re-encode and decode to the same value.
#![no_main]

use kith_protocol::link::{LinkCode, LinkRequest, LinkResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LinkRequest::from_bytes(data) {
        assert_eq!(LinkRequest::from_bytes(&r.to_bytes()).ok().as_ref(), Some(&r));
    }
    if let Ok(r) = LinkResponse::from_bytes(data) {
        assert_eq!(LinkResponse::from_bytes(&r.to_bytes()).ok().as_ref(), Some(&r));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = LinkCode::parse(text) {
            assert_eq!(LinkCode::parse(&code.to_text()).ok().as_ref(), Some(&code));
        }
    }
});
