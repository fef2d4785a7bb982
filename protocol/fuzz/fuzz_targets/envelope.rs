//! Fuzzes `Envelope::from_bytes` and, when that succeeds, `Envelope::open`.
//!
//! The receiving device and its prekey are fixed (derived from constant secrets), so an input
//! built from a real envelope sealed to that device (see `examples/seed_corpus.rs`) reaches the
//! Noise handshake, the `Sealed` decoding and the certificate checks. Each decoded envelope is
//! opened twice: once as the fixed device (the real recipient check), and once as whatever
//! device it names, so every decoded envelope runs the Noise `read_message` path.
#![no_main]

use kith_protocol::identity::{DeviceKeypair, X25519Secret};
use kith_protocol::Envelope;
use libfuzzer_sys::fuzz_target;

/// Secret of the receiving device's ed25519 key (shared with `examples/seed_corpus.rs`).
const DEVICE_SECRET: [u8; 32] = [0x22; 32];
/// Secret of the receiving device's prekey (shared with `examples/seed_corpus.rs`).
const PREKEY_SECRET: [u8; 32] = [0x24; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::from_bytes(data) else {
        return;
    };
    let device = DeviceKeypair::from_secret(&DEVICE_SECRET).public_bytes();
    let prekey = || Some(X25519Secret::from_bytes(PREKEY_SECRET));
    let _ = env.open(&device, |_| prekey());
    let _ = env.open(&env.recipient, |_| prekey());
    let _ = env.digest();
});
