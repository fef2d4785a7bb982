//! Fuzzes `DeviceCertificate::from_bytes` and then `verify(None)`: the body decoding, the label
//! limit, the identity and device keys (including the libp2p peer id) and the signature.
#![no_main]

use kith_protocol::DeviceCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = DeviceCertificate::from_bytes(data) {
        let _ = cert.verify(None);
        let _ = cert.to_bytes();
    }
});
