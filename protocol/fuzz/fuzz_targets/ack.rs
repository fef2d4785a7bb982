//! Fuzzes `DeliveryAck::from_bytes`, the decoder of `/kith/dm/1` responses; whatever decodes
//! must re-encode and decode to the same value.
#![no_main]

use kith_protocol::DeliveryAck;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ack) = DeliveryAck::from_bytes(data) {
        let again = DeliveryAck::from_bytes(&ack.to_bytes()).ok();
        assert_eq!(again.as_ref(), Some(&ack));
    }
});
