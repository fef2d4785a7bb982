//! Fuzzes `NameRecord::verify`: the record and body decoding, name validation, the signature,
//! the device and mailbox lists, the validity window and the proof-of-work check.
//!
//! The policy asks for no proof of work, so the work check never stops an input early. Each
//! input is verified twice: without a DHT key and under the key of the name "alice" (the name
//! the seed corpus records carry).
#![no_main]

use kith_protocol::{dht_key, NameRecord, RecordPolicy};
use libfuzzer_sys::fuzz_target;

/// "Now" for the validity window: 2026-01-01T00:00:00Z plus one hour.
const NOW: u64 = 1_767_225_600_000 + 3_600_000;
const POLICY: RecordPolicy = RecordPolicy { min_pow_bits: 0 };

fuzz_target!(|data: &[u8]| {
    let key = dht_key("alice");
    let _ = NameRecord::verify(data, None, NOW, &POLICY);
    let _ = NameRecord::verify(data, Some(&key), NOW, &POLICY);
});
