//! Criterion benchmarks of the protocol's hot paths: sealing and opening envelopes, signing and
//! verifying name records, the proof of work, and the message codec.
//!
//! Run with `cargo bench -p kith-protocol`; a quick pass is
//! `cargo bench -p kith-protocol -- --warm-up-time 1 --measurement-time 2`.
//!
//! `pow/solve_16_bits` solves a 16-bit proof of work from a different start nonce on every
//! iteration, so its mean is the mean cost of a fresh solve: 2^16 = 65,536 claim hashes expected
//! (the number of hashes is geometric, so single iterations vary about as much as the mean).
//! Hashes per second = 65,536 / mean time; `pow/claim_hash` measures one hash directly.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use kith_protocol::envelope::Recipient;
use kith_protocol::identity::{DeviceKeypair, IdentityKeypair, SignedPrekey, X25519Secret};
use kith_protocol::name::{claim_hash, solve_pow, DeviceEntry};
use kith_protocol::{
    dht_key, Content, ConversationId, DeviceCertificate, Envelope, Message, MessageId, NameRecord,
    RecordDraft, RecordPolicy, Text, VERSION,
};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const DAY: u64 = 86_400_000;
/// Low enough that `name_record/verify` measures the checks, not the setup's proof of work.
const RECORD_POW_BITS: u32 = 8;
const POW_BITS: u32 = 16;

struct Party {
    id: IdentityKeypair,
    dev: DeviceKeypair,
    st: X25519Secret,
    prekey: X25519Secret,
    cert: DeviceCertificate,
}

fn party(seed: u8) -> Party {
    let id = IdentityKeypair::from_secret(&[seed; 32]);
    let dev = DeviceKeypair::from_secret(&[seed.wrapping_add(1); 32]);
    let st = X25519Secret::from_bytes([seed.wrapping_add(2); 32]);
    let prekey = X25519Secret::from_bytes([seed.wrapping_add(3); 32]);
    let cert = DeviceCertificate::issue(&id, &dev, &st, T0, "laptop");
    Party { id, dev, st, prekey, cert }
}

/// A text message whose body is 100 bytes.
fn text_message(from: &Party) -> Message {
    let body = String::from(
        "Meet me at noon by the fountain in the park; bring the tickets, the map and a coat. \
         See you there :)",
    );
    assert_eq!(body.len(), 100);
    Message {
        v: VERSION,
        id: MessageId([1; 16]),
        conversation: ConversationId([2; 16]),
        sender: from.id.user_id(),
        sent_at: T0,
        content: Content::Text(Text { body }),
    }
}

fn envelope(c: &mut Criterion) {
    let alice = party(10);
    let bob = party(20);
    let to =
        Recipient { device: bob.dev.public_bytes(), prekey_id: 1, prekey: bob.prekey.public() };
    let msg = text_message(&alice);
    let env = Envelope::seal(&alice.cert, &alice.st, &to, &msg, Some("alice")).expect("seals");
    let bob_device = bob.dev.public_bytes();
    assert!(env.open(&bob_device, |_| Some(bob.prekey.clone())).is_ok());

    let mut g = c.benchmark_group("envelope");
    g.bench_function("seal", |b| {
        b.iter(|| {
            Envelope::seal(&alice.cert, &alice.st, black_box(&to), black_box(&msg), Some("alice"))
        })
    });
    g.bench_function("open", |b| {
        b.iter(|| black_box(&env).open(&bob_device, |_| Some(bob.prekey.clone())))
    });
    g.finish();
}

/// Sessions: starting one (both sides: the sender's sealing and the recipient's opening of the
/// envelope that starts it), then a message's sealing and opening in it.
fn session(c: &mut Criterion) {
    let alice = party(10);
    let bob = party(20);
    let bob_device = bob.dev.public_bytes();
    let to = Recipient { device: bob_device, prekey_id: 1, prekey: bob.prekey.public() };
    let msg = text_message(&alice);
    let mut rng = rand_core::OsRng;
    let start = |rng: &mut rand_core::OsRng| {
        let (env, a) = Envelope::seal_starting_session(
            rng,
            &alice.cert,
            &alice.st,
            &to,
            &msg,
            Some("alice"),
            T0,
        )
        .expect("seals");
        let (_, b) = env
            .open_accepting_session(rng, &bob_device, |_| Some(bob.prekey.clone()), T0)
            .expect("opens");
        (a, b.expect("a session"))
    };
    let (mut a, b) = start(&mut rng);
    // The first message in the session, opened below (from a copy of bob's state each time).
    let env = Envelope::seal_in_session(&mut a, &bob_device, &msg, Some("alice")).expect("seals");
    assert!(env.open_in_session(&mut rng, &bob_device, &mut b.clone(), T0).is_ok());

    let mut g = c.benchmark_group("session");
    g.bench_function("start", |bn| bn.iter(|| start(&mut rng)));
    g.bench_function("seal", |bn| {
        bn.iter(|| Envelope::seal_in_session(&mut a, &bob_device, black_box(&msg), Some("alice")))
    });
    g.bench_function("open", |bn| {
        bn.iter_batched(
            || b.clone(),
            |mut b| black_box(&env).open_in_session(&mut rand_core::OsRng, &bob_device, &mut b, T0),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn name_record(c: &mut Criterion) {
    let alice = party(30);
    let prekey = SignedPrekey::sign(&alice.dev, 1, &alice.prekey, T0, T0 + 7 * DAY);
    let draft = RecordDraft {
        name: "alice".into(),
        devices: vec![DeviceEntry { cert: alice.cert.clone(), prekey }],
        mailboxes: vec![],
        seq: 1,
        issued_at: T0,
        expires_at: T0 + DAY,
        pow_nonce: solve_pow("alice", &alice.id.public(), RECORD_POW_BITS, 0),
        profile: None,
    };
    let bytes = draft.clone().sign(&alice.id).expect("valid name").to_bytes();
    let key = dht_key("alice");
    let now = T0 + 3_600_000;
    let policy = RecordPolicy { min_pow_bits: RECORD_POW_BITS };
    assert!(NameRecord::verify(&bytes, Some(&key), now, &policy).is_ok());

    let mut g = c.benchmark_group("name_record");
    g.bench_function("sign", |b| {
        b.iter_batched(|| draft.clone(), |d| d.sign(&alice.id), BatchSize::SmallInput)
    });
    g.bench_function("verify", |b| {
        b.iter(|| NameRecord::verify(black_box(&bytes), Some(&key), now, &policy))
    });
    g.finish();
}

fn pow(c: &mut Criterion) {
    let id = IdentityKeypair::from_secret(&[40; 32]);
    let identity = id.public();
    let identity_bytes = identity.to_bytes();

    let mut g = c.benchmark_group("pow");
    // The counters live outside the `bench_function` closures, which criterion calls again for
    // every sample: each iteration of the whole run gets a nonce or start of its own.
    let mut nonce = 0u64;
    g.bench_function("claim_hash", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            claim_hash(black_box("alice"), &identity_bytes, nonce)
        })
    });
    // Each iteration takes about ten milliseconds: few samples, flat sampling.
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    // Searches start 2^32 nonces apart, so no two iterations share any work.
    let mut start = 0u64;
    g.bench_function("solve_16_bits", |b| {
        b.iter(|| {
            start = start.wrapping_add(1 << 32);
            solve_pow(black_box("alice"), &identity, POW_BITS, start)
        })
    });
    g.finish();
}

fn message(c: &mut Criterion) {
    let alice = party(50);
    let msg = text_message(&alice);
    let bytes = msg.to_bytes();
    assert_eq!(Message::from_bytes(&bytes).as_ref(), Ok(&msg));

    let mut g = c.benchmark_group("message");
    g.bench_function("encode", |b| b.iter(|| black_box(&msg).to_bytes()));
    g.bench_function("decode", |b| b.iter(|| Message::from_bytes(black_box(&bytes))));
    g.finish();
}

/// Sealing and opening one full attachment chunk (256 KiB), and checking it against its
/// manifest without the key: the CPU a sender, a recipient and a relay spend per chunk.
fn blob(c: &mut Criterion) {
    use kith_protocol::blob::{self, BlobKey, CHUNK_SIZE};
    let key = BlobKey([9; 32]);
    let size = 2 * CHUNK_SIZE as u64;
    let plain = vec![0x42u8; CHUNK_SIZE];
    let (manifest, sealed) = blob::seal(&key, &vec![0x42u8; 2 * CHUNK_SIZE]).expect("seal");
    let mut g = c.benchmark_group("blob");
    g.throughput(criterion::Throughput::Bytes(CHUNK_SIZE as u64));
    g.bench_function("seal_chunk", |b| {
        b.iter(|| blob::seal_chunk(&key, size, 0, black_box(&plain)).expect("seal"))
    });
    g.bench_function("open_chunk", |b| {
        b.iter(|| blob::open_chunk(&key, size, 0, black_box(&sealed[0])).expect("open"))
    });
    g.bench_function("check_chunk", |b| {
        b.iter(|| manifest.check_chunk(0, black_box(&sealed[0])).expect("check"))
    });
    g.finish();
}

criterion_group!(benches, envelope, session, name_record, pow, message, blob);
criterion_main!(benches);
