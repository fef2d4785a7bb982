//! Checks the test vectors printed in `docs/protocol.md` against this implementation.
//!
//! The document holds fenced blocks tagged `vector`; each is a list of `key: hex-or-text` lines
//! whose first line is `vector: NAME`. This module recomputes every value from the inputs the
//! block names and compares. Run with `KITH_PRINT_VECTORS=1` to print the blocks this
//! implementation produces.

use std::collections::BTreeMap;

use crate::envelope::{Envelope, Recipient};
use crate::identity::{
    DeviceCertificate, DeviceKeypair, IdentityKeypair, SignedPrekey, X25519Secret,
};
use crate::message::{Content, ConversationId, Message, MessageId, Text};
use crate::name::{claim_hash, dht_key, leading_zero_bits, solve_pow, DeviceEntry, RecordDraft};
use crate::{NameRecord, RecordPolicy, VERSION};

const DOC: &str = include_str!("../../docs/protocol.md");

type Block = Vec<(String, String)>;

fn parse_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in doc.lines() {
        let t = line.trim();
        if t == "```vector" {
            current = Some(Vec::new());
        } else if t == "```" {
            if let Some(b) = current.take() {
                blocks.push(b);
            }
        } else if let Some(b) = current.as_mut() {
            if let Some((k, v)) = t.split_once(':') {
                b.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    blocks
}

fn arr32(hexs: &str) -> [u8; 32] {
    let mut a = [0u8; 32];
    hex::decode_to_slice(hexs, &mut a).expect("32-byte hex in vector");
    a
}

// Fixed inputs shared by the vectors.
const ALICE_IDENTITY: [u8; 32] = [0x11; 32];
const ALICE_DEVICE: [u8; 32] = [0x12; 32];
const ALICE_STATIC: [u8; 32] = [0x13; 32];
const ALICE_PREKEY: [u8; 32] = [0x14; 32];
const BOB_IDENTITY: [u8; 32] = [0x21; 32];
const BOB_DEVICE: [u8; 32] = [0x22; 32];
const BOB_STATIC: [u8; 32] = [0x23; 32];
const EPHEMERAL: [u8; 32] = [0x31; 32];
const BLOB_KEY: [u8; 32] = [0x51; 32];
const RATCHET: [u8; 32] = [0x32; 32];
const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: u64 = 86_400_000;
const POW_BITS: u32 = 8;

fn computed() -> Vec<Block> {
    let kv = |pairs: &[(&str, String)]| -> Block {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    };
    let alice = IdentityKeypair::from_secret(&ALICE_IDENTITY);
    let alice_dev = DeviceKeypair::from_secret(&ALICE_DEVICE);
    let alice_static = X25519Secret::from_bytes(ALICE_STATIC);
    let alice_prekey = X25519Secret::from_bytes(ALICE_PREKEY);
    let bob = IdentityKeypair::from_secret(&BOB_IDENTITY);
    let bob_dev = DeviceKeypair::from_secret(&BOB_DEVICE);
    let bob_static = X25519Secret::from_bytes(BOB_STATIC);

    let alice_cert = DeviceCertificate::issue(&alice, &alice_dev, &alice_static, T0, "laptop");
    let alice_spk = SignedPrekey::sign(&alice_dev, 1, &alice_prekey, T0, T0 + 14 * DAY);
    let nonce = solve_pow("alice", &alice.public(), POW_BITS, 0);
    let claim = claim_hash("alice", &alice.public().to_bytes(), nonce);
    let record = RecordDraft {
        name: "alice".into(),
        devices: vec![DeviceEntry { cert: alice_cert.clone(), prekey: alice_spk.clone() }],
        mailboxes: vec![],
        seq: 1,
        issued_at: T0,
        expires_at: T0 + DAY,
        pow_nonce: nonce,
        profile: None,
    }
    .sign(&alice)
    .expect("valid name");

    let bob_cert = DeviceCertificate::issue(&bob, &bob_dev, &bob_static, T0, "phone");
    let message = Message {
        v: VERSION,
        id: MessageId([0x41; 16]),
        conversation: ConversationId::direct(&alice.user_id(), &bob.user_id()),
        sender: bob.user_id(),
        sent_at: T0 + 1000,
        content: Content::Text(Text { body: "hi alice".into() }),
    };
    let to =
        Recipient { device: alice_dev.public_bytes(), prekey_id: 1, prekey: alice_prekey.public() };
    let envelope = Envelope::seal_inner(
        &bob_cert,
        &bob_static,
        &to,
        &message,
        Some("bob"),
        Some(&EPHEMERAL),
        None,
    )
    .expect("seals")
    .0;

    // The same message, starting a session (ratchet key fixed too), then a second message in
    // that session.
    let ratchet = X25519Secret::from_bytes(RATCHET);
    let init = crate::session::SessionInit { ratchet: ratchet.public() };
    let (starting, keys) = Envelope::seal_inner(
        &bob_cert,
        &bob_static,
        &to,
        &message,
        Some("bob"),
        Some(&EPHEMERAL),
        Some(init),
    )
    .expect("seals");
    let keys = keys.expect("handshake keys");
    let mut session =
        crate::session::Session::initiate(&keys, (RATCHET, ratchet.public()), &to.prekey, T0);
    let again = second_message(&message);
    let in_session =
        Envelope::seal_in_session(&mut session, &alice_dev.public_bytes(), &again, Some("bob"))
            .expect("seals");

    // A blob of two chunks: 256 KiB + 10 bytes of `i mod 251`.
    let plain: Vec<u8> = (0..crate::blob::CHUNK_SIZE + 10).map(|i| (i % 251) as u8).collect();
    let (manifest, sealed) =
        crate::blob::seal(&crate::blob::BlobKey(BLOB_KEY), &plain).expect("seals");

    vec![
        kv(&[
            ("vector", "identity".into()),
            ("identity-secret", hex::encode(ALICE_IDENTITY)),
            ("identity-public", hex::encode(alice.public().to_bytes())),
            ("user-id", alice.user_id().to_string()),
            ("safety-number", alice.public().fingerprint()),
            ("device-secret", hex::encode(ALICE_DEVICE)),
            ("peer-id", alice_dev.peer_id().to_string()),
        ]),
        kv(&[
            ("vector", "name-key".into()),
            ("name", "alice".into()),
            ("dht-key", hex::encode(dht_key("alice"))),
        ]),
        kv(&[
            ("vector", "proof-of-work".into()),
            ("name", "alice".into()),
            ("identity-public", hex::encode(alice.public().to_bytes())),
            ("bits", POW_BITS.to_string()),
            ("nonce", nonce.to_string()),
            ("claim-hash", hex::encode(claim)),
        ]),
        kv(&[
            ("vector", "device-certificate".into()),
            ("static-secret", hex::encode(ALICE_STATIC)),
            ("created-at", T0.to_string()),
            ("label", "laptop".into()),
            ("certificate", hex::encode(alice_cert.to_bytes())),
        ]),
        kv(&[
            ("vector", "name-record".into()),
            ("prekey-secret", hex::encode(ALICE_PREKEY)),
            ("prekey-id", "1".into()),
            ("prekey-expires-at", (T0 + 14 * DAY).to_string()),
            ("seq", "1".into()),
            ("issued-at", T0.to_string()),
            ("expires-at", (T0 + DAY).to_string()),
            ("record", hex::encode(record.to_bytes())),
        ]),
        kv(&[("vector", "message".into()), ("message", hex::encode(message.to_bytes()))]),
        kv(&[
            ("vector", "envelope".into()),
            ("sender-identity-secret", hex::encode(BOB_IDENTITY)),
            ("sender-device-secret", hex::encode(BOB_DEVICE)),
            ("sender-static-secret", hex::encode(BOB_STATIC)),
            ("ephemeral-secret", hex::encode(EPHEMERAL)),
            ("envelope", hex::encode(envelope.to_bytes())),
        ]),
        kv(&[
            ("vector", "session".into()),
            ("ratchet-secret", hex::encode(RATCHET)),
            ("starting-envelope", hex::encode(starting.to_bytes())),
            ("session-id", hex::encode(session.id())),
            ("second-message", hex::encode(again.to_bytes())),
            ("session-envelope", hex::encode(in_session.to_bytes())),
        ]),
        kv(&[
            ("vector", "blob".into()),
            ("key", hex::encode(BLOB_KEY)),
            ("plaintext-size", plain.len().to_string()),
            ("manifest", hex::encode(manifest.to_bytes())),
            ("blob-hash", hex::encode(manifest.hash())),
            ("last-sealed-chunk", hex::encode(&sealed[1])),
        ]),
    ]
}

/// The message of the `session` vector sealed in the session: id `42..42`, 1 s after the
/// first, text `hi again`.
fn second_message(first: &Message) -> Message {
    Message {
        id: MessageId([0x42; 16]),
        sent_at: first.sent_at + 1000,
        content: Content::Text(Text { body: "hi again".into() }),
        ..first.clone()
    }
}

#[test]
fn documented_vectors_match() {
    let mine = computed();
    if std::env::var_os("KITH_PRINT_VECTORS").is_some() {
        for b in &mine {
            println!("```vector");
            for (k, v) in b {
                println!("{k}: {v}");
            }
            println!("```\n");
        }
    }
    let documented = parse_blocks(DOC);
    assert_eq!(documented.len(), mine.len(), "docs/protocol.md should hold {} vectors", mine.len());
    for (doc, mine) in documented.iter().zip(&mine) {
        let d: BTreeMap<_, _> = doc.iter().cloned().collect();
        for (k, v) in mine {
            assert_eq!(d.get(k), Some(v), "vector {:?}, field {k}", d.get("vector"));
        }
    }
}

#[test]
fn documented_record_and_envelope_verify() {
    let blocks = parse_blocks(DOC);
    let field = |name: &str, key: &str| -> String {
        blocks
            .iter()
            .find(|b| b.iter().any(|(k, v)| k == "vector" && v == name))
            .and_then(|b| b.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("vector {name} has no {key}"))
    };
    let record = hex::decode(field("name-record", "record")).expect("hex");
    let v = NameRecord::verify(
        &record,
        Some(&dht_key("alice")),
        T0 + 1,
        &RecordPolicy { min_pow_bits: POW_BITS },
    )
    .expect("documented record verifies");
    assert!(leading_zero_bits(&v.claim_hash) >= POW_BITS);
    let env = Envelope::from_bytes(&hex::decode(field("envelope", "envelope")).expect("hex"))
        .expect("decodes");
    let alice_dev = DeviceKeypair::from_secret(&ALICE_DEVICE);
    let opened = env
        .open(&alice_dev.public_bytes(), |id| {
            (id == 1)
                .then(|| X25519Secret::from_bytes(arr32(&field("name-record", "prekey-secret"))))
        })
        .expect("documented envelope opens");
    assert_eq!(opened.message.content.text(), Some("hi alice"));
    assert_eq!(opened.sender.user_id, IdentityKeypair::from_secret(&BOB_IDENTITY).user_id());

    // The session: alice accepts it from the starting envelope and opens the second one in it.
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let starting =
        Envelope::from_bytes(&hex::decode(field("session", "starting-envelope")).expect("hex"))
            .expect("decodes");
    let prekey = X25519Secret::from_bytes(arr32(&field("name-record", "prekey-secret")));
    let (first, session) = starting
        .open_accepting_session(&mut rng, &alice_dev.public_bytes(), |_| Some(prekey), T0)
        .expect("documented starting envelope opens");
    let mut session = session.expect("it starts a session");
    assert_eq!(hex::encode(session.id()), field("session", "session-id"));
    let second =
        Envelope::from_bytes(&hex::decode(field("session", "session-envelope")).expect("hex"))
            .expect("decodes");
    let (m, name) = second
        .open_in_session(&mut rng, &alice_dev.public_bytes(), &mut session, T0)
        .expect("documented session envelope opens");
    assert_eq!(m, second_message(&first.message));
    assert_eq!(name.as_deref(), Some("bob"));
}
