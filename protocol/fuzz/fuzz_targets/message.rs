//! Fuzzes `Message::from_bytes`: CBOR decoding, the per-kind content bodies and the limit checks.
//!
//! Besides "never panics", it checks that whatever decodes re-encodes to bytes that decode again
//! to the same encoding (compared as bytes, so a NaN float does not count as a difference).
#![no_main]

use kith_protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_bytes(data) else {
        return;
    };
    let encoded = msg.to_bytes();
    let again = match Message::from_bytes(&encoded) {
        Ok(m) => m,
        Err(e) => panic!("a decoded message does not decode after re-encoding: {e}"),
    };
    assert_eq!(again.to_bytes(), encoded, "re-encoding is not stable");
});
