//! Writes a seed corpus of valid encodings into `corpus/<target>/`, so the fuzzers start from
//! inputs that pass the signature and AEAD checks they could never forge on their own.
//!
//! Run from `protocol/fuzz`: `cargo run --example seed_corpus`. Existing files are overwritten.

use std::fs;
use std::path::Path;

use kith_protocol::blob;
use kith_protocol::envelope::Recipient;
use kith_protocol::identity::{DeviceKeypair, IdentityKeypair, SignedPrekey, X25519Secret};
use kith_protocol::message::{Member, SessionId, Share};
use kith_protocol::name::{solve_pow, DeviceEntry, MailboxPeer};
use kith_protocol::{
    dht_key, Content, ConversationId, DeviceCertificate, Envelope, Message, MessageId, NameRecord,
    ReceiptKind, RecordDraft, RecordPolicy, Text, UserId, VERSION,
};

/// 2026-01-01T00:00:00Z; the `name_record` target verifies one hour later.
const T0: u64 = 1_767_225_600_000;
const DAY: u64 = 86_400_000;

/// The receiving device of the `envelope` target (same secrets as in `fuzz_targets/envelope.rs`).
const BOB_DEVICE: [u8; 32] = [0x22; 32];
const BOB_PREKEY: [u8; 32] = [0x24; 32];

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus directory");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    println!("{target}/seed-{name}: {} bytes", bytes.len());
}

fn contents(sender: UserId) -> Vec<(&'static str, Content)> {
    let member = Member { user: sender, identity: [7; 32], name: Some("alice".into()) };
    vec![
        ("text", Content::Text(Text { body: "meet at noon by the fountain".into() })),
        ("reply", Content::Reply { to: MessageId([1; 16]), body: "ok".into() }),
        (
            "reaction",
            Content::Reaction { to: MessageId([1; 16]), emoji: "👍".into(), remove: false },
        ),
        ("edit", Content::Edit { to: MessageId([1; 16]), body: "meet at one".into() }),
        ("delete", Content::Delete { to: MessageId([1; 16]) }),
        (
            "receipt",
            Content::Receipt {
                kind: ReceiptKind::Read,
                ids: vec![MessageId([1; 16]), MessageId([2; 16])],
            },
        ),
        ("typing", Content::Typing { active: true }),
        (
            "location",
            Content::Location {
                lat: 48.8584,
                lon: 2.2945,
                accuracy_m: Some(12.5),
                label: Some("the tower".into()),
            },
        ),
        (
            "live_location",
            Content::LiveLocation {
                session: SessionId([3; 16]),
                seq: 4,
                lat: -33.86,
                lon: 151.21,
                accuracy_m: None,
                until: T0 + DAY,
                stopped: false,
            },
        ),
        (
            "attachment",
            Content::Attachment(Box::new(kith_protocol::blob::Attachment {
                hash: [8; 32],
                size: 123_456,
                mime: "image/png".into(),
                name: Some("cat.png".into()),
                key: [9; 32],
                caption: Some("the cat".into()),
                preview: Some(kith_protocol::blob::Preview {
                    mime: "image/webp".into(),
                    bytes: vec![0x52, 0x49, 0x46, 0x46],
                }),
                width: Some(640),
                height: Some(480),
                duration_ms: None,
                holders: vec![],
            })),
        ),
        (
            "bill",
            Content::BillSplit {
                bill: SessionId([4; 16]),
                description: "dinner".into(),
                total: 9_000,
                currency: "EUR".into(),
                shares: vec![Share { user: sender, amount: 4_500, settled: true }],
            },
        ),
        (
            "group_invite",
            Content::GroupInvite {
                group: ConversationId([5; 16]),
                title: Some("climbing".into()),
                members: vec![member.clone()],
                epoch: 1,
                epoch_key: [10; 32],
                part: None,
                hand_on: Some(kith_protocol::message::HandOn { from: 1, sent_at: 7 }),
            },
        ),
        ("group_add", Content::GroupAdd { group: ConversationId([5; 16]), member }),
        ("group_leave", Content::GroupLeave { group: ConversationId([5; 16]) }),
        ("group_remove", Content::GroupRemove { group: ConversationId([5; 16]), user: sender }),
        (
            "group_key",
            Content::GroupKey { group: ConversationId([5; 16]), epoch: 2, key: [11; 32] },
        ),
        (
            "call_offer",
            Content::Call(Box::new(kith_protocol::call::CallSignal {
                call: SessionId([12; 16]),
                group: None,
                signal: kith_protocol::call::Signal::Offer { to: [13; 32], sdp: "v=0\r\n".into() },
            })),
        ),
        (
            "call_ring",
            Content::Call(Box::new(kith_protocol::call::CallSignal {
                call: SessionId([12; 16]),
                group: Some(ConversationId([5; 16])),
                signal: kith_protocol::call::Signal::Ring { video: true },
            })),
        ),
        (
            "call_log",
            Content::CallLog(kith_protocol::call::CallLog {
                call: SessionId([12; 16]),
                video: false,
                outcome: kith_protocol::call::CallOutcome::Ended,
                started_at: T0,
                duration_ms: 61_000,
            }),
        ),
        (
            "listen_state",
            Content::Listen(Box::new(kith_protocol::listen::ListenSignal {
                session: SessionId([14; 16]),
                group: None,
                op: kith_protocol::listen::ListenOp::State(kith_protocol::listen::ListenState {
                    host: [15; 32],
                    queue: vec![MessageId([1; 16]), MessageId([2; 16])],
                    index: 1,
                    playing: true,
                    position_ms: 30_000,
                    at: T0,
                    seq: 4,
                    stopped: false,
                }),
            })),
        ),
        (
            "listen_pong",
            Content::Listen(Box::new(kith_protocol::listen::ListenSignal {
                session: SessionId([14; 16]),
                group: Some(ConversationId([5; 16])),
                op: kith_protocol::listen::ListenOp::Pong { nonce: 7, host_time: T0 },
            })),
        ),
        (
            "event",
            Content::Event(Box::new(kith_protocol::plan::Event {
                title: "Barbecue".into(),
                start: T0,
                zone: 120,
                place: Some("Stadtpark, Hamburg".into()),
                note: None,
            })),
        ),
        (
            "rsvp",
            Content::Rsvp(kith_protocol::plan::Rsvp {
                to: MessageId([1; 16]),
                answer: kith_protocol::plan::Answer::Maybe,
            }),
        ),
        (
            "list_change",
            Content::ListChange(Box::new(kith_protocol::plan::ListChange {
                to: MessageId([1; 16]),
                doc: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
            })),
        ),
        (
            "expense",
            Content::Expense(Box::new(kith_protocol::plan::Expense {
                description: "Sausages".into(),
                payer: UserId([3; 16]),
                amount: 4500,
                currency: "EUR".into(),
                split: kith_protocol::plan::Split::Exact(vec![
                    (UserId([3; 16]), 1500),
                    (UserId([4; 16]), 3000),
                ]),
            })),
        ),
        (
            "pay_request",
            Content::PayRequest(Box::new(kith_protocol::plan::PayRequest {
                payer: None,
                amount: Some(2125),
                currency: "EUR".into(),
                reference: "BBQ".into(),
                methods: vec![kith_protocol::plan::PayMethod::Iban {
                    iban: "DE89370400440532013000".into(),
                    name: "Alice".into(),
                    bic: None,
                }],
            })),
        ),
        ("unsupported", Content::Unsupported { kind: "x-poll".into(), body: vec![0xa0] }),
    ]
}

fn main() {
    let alice_id = IdentityKeypair::from_secret(&[0x11; 32]);
    let alice_dev = DeviceKeypair::from_secret(&[0x12; 32]);
    let alice_static = X25519Secret::from_bytes([0x13; 32]);
    let alice_prekey = X25519Secret::from_bytes([0x14; 32]);
    let cert = DeviceCertificate::issue(&alice_id, &alice_dev, &alice_static, T0, "laptop");
    cert.verify(None).expect("seed certificate verifies");
    write("device_cert", "laptop", &cert.to_bytes());

    for (label, len) in [("empty", 0), ("small", 1000), ("two_chunks", blob::CHUNK_SIZE + 1)] {
        let (manifest, _) = blob::seal(&blob::BlobKey([0x15; 32]), &vec![0x16; len]).expect("seal");
        write("blob_manifest", label, &manifest.to_bytes());
        let answer = blob::BlobResponse::Manifest { bytes: manifest.to_bytes() };
        write("blob_manifest", &format!("response_{label}"), &answer.to_bytes());
    }
    let ask = blob::BlobRequest::Chunk { hash: [0x17; 32], index: 1 };
    write("blob_manifest", "request_chunk", &ask.to_bytes());

    let bob_dev = DeviceKeypair::from_secret(&BOB_DEVICE);
    let bob_prekey = X25519Secret::from_bytes(BOB_PREKEY);
    let to =
        Recipient { device: bob_dev.public_bytes(), prekey_id: 1, prekey: bob_prekey.public() };
    for (kind, content) in contents(alice_id.user_id()) {
        let msg = Message {
            v: VERSION,
            id: MessageId([0x41; 16]),
            conversation: ConversationId([0x42; 16]),
            sender: alice_id.user_id(),
            sent_at: T0,
            content,
        };
        write("message", kind, &msg.to_bytes());
        let env = Envelope::seal(&cert, &alice_static, &to, &msg, Some("alice")).expect("seal");
        // The seed must get through every check of the `envelope` target's first `open`.
        let opened = env.open(&bob_dev.public_bytes(), |_| Some(bob_prekey.clone()));
        assert_eq!(opened.expect("seed envelope opens").message, msg);
        write("envelope", kind, &env.to_bytes());
    }

    // Sessions: an envelope that starts one, a message in it, and the stored states of both
    // sides (the `session_state` target).
    let mut rng = rand_core::OsRng;
    let hello = Message {
        v: VERSION,
        id: MessageId([0x43; 16]),
        conversation: ConversationId([0x42; 16]),
        sender: alice_id.user_id(),
        sent_at: T0,
        content: Content::Text(Text { body: "hello".into() }),
    };
    let (start, mut alice_session) = Envelope::seal_starting_session(
        &mut rng,
        &cert,
        &alice_static,
        &to,
        &hello,
        Some("alice"),
        T0,
    )
    .expect("seal");
    let (_, bob_session) = start
        .open_accepting_session(&mut rng, &bob_dev.public_bytes(), |_| Some(bob_prekey.clone()), T0)
        .expect("seed session starts");
    let next = Envelope::seal_in_session(&mut alice_session, &bob_dev.public_bytes(), &hello, None)
        .expect("seal");
    write("envelope", "session-start", &start.to_bytes());
    write("envelope", "session-message", &next.to_bytes());
    write("session_state", "initiator", &alice_session.to_bytes());
    write("session_state", "recipient", &bob_session.expect("a session").to_bytes());

    let prekey = SignedPrekey::sign(&alice_dev, 1, &alice_prekey, T0, T0 + 7 * DAY);
    let mailbox = MailboxPeer {
        peer_id: bob_dev.peer_id().to_bytes(),
        addrs: vec!["/ip4/192.0.2.1/tcp/4001".into()],
    };
    for (label, mailboxes) in [("alice", vec![]), ("alice_mailbox", vec![mailbox])] {
        let record = RecordDraft {
            name: "alice".into(),
            devices: vec![DeviceEntry { cert: cert.clone(), prekey: prekey.clone() }],
            mailboxes,
            seq: 1,
            issued_at: T0,
            expires_at: T0 + DAY,
            pow_nonce: solve_pow("alice", &alice_id.public(), 8, 0),
            profile: None,
        }
        .sign(&alice_id)
        .expect("valid name");
        // The seed must verify under the `name_record` target's time, key and policy.
        let policy = RecordPolicy { min_pow_bits: 0 };
        NameRecord::verify(&record.to_bytes(), Some(&dht_key("alice")), T0 + 3_600_000, &policy)
            .expect("seed record verifies");
        write("name_record", label, &record.to_bytes());
    }
}
