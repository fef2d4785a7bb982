//! Fuzzes `Session::from_bytes`, the decoder of a stored session state (a store is disk input):
//! whatever decodes must re-encode and decode to the same state.
#![no_main]

use kith_protocol::session::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Session::from_bytes(data) {
        let again = Session::from_bytes(&s.to_bytes()).ok();
        assert!(again.as_ref() == Some(&s));
    }
});
