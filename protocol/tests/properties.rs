//! Property tests: every wire type round-trips, any changed byte of a signed or sealed value is
//! rejected, and no decoder panics on arbitrary input.

use kith_protocol::envelope::Recipient;
use kith_protocol::identity::{DeviceKeypair, IdentityKeypair, SignedPrekey, X25519Secret};
use kith_protocol::message::{Member, SessionId, Share};
use kith_protocol::name::{solve_pow, DeviceEntry, MailboxPeer};
use kith_protocol::{
    Content, ConversationId, DeviceCertificate, Envelope, Message, MessageId, NameRecord,
    ReceiptKind, RecordDraft, RecordPolicy, Text, UserId, VERSION,
};
use proptest::prelude::*;

fn id16() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}

fn short() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 éü🙂]{0,40}"
}

fn member() -> impl Strategy<Value = Member> {
    (id16(), any::<[u8; 32]>(), proptest::option::of(short()))
        .prop_map(|(u, identity, name)| Member { user: UserId(u), identity, name })
}

fn content() -> impl Strategy<Value = Content> {
    let mid = || id16().prop_map(MessageId);
    let cid = || id16().prop_map(ConversationId);
    let sid = || id16().prop_map(SessionId);
    prop_oneof![
        ".{0,200}".prop_map(|body| Content::Text(Text { body })),
        (mid(), ".{0,100}").prop_map(|(to, body)| Content::Reply { to, body }),
        (mid(), short(), any::<bool>()).prop_map(|(to, emoji, remove)| Content::Reaction {
            to,
            emoji,
            remove
        }),
        (mid(), ".{0,100}").prop_map(|(to, body)| Content::Edit { to, body }),
        mid().prop_map(|to| Content::Delete { to }),
        (any::<bool>(), proptest::collection::vec(mid(), 0..8)).prop_map(|(r, ids)| {
            Content::Receipt {
                kind: if r { ReceiptKind::Read } else { ReceiptKind::Delivered },
                ids,
            }
        }),
        any::<bool>().prop_map(|active| Content::Typing { active }),
        (
            -90.0f64..=90.0,
            -180.0f64..=180.0,
            proptest::option::of(0.0f32..1e6),
            proptest::option::of(short())
        )
            .prop_map(|(lat, lon, accuracy_m, label)| Content::Location {
                lat,
                lon,
                accuracy_m,
                label
            }),
        (sid(), 0u32..=10_000, -90.0f64..=90.0, -180.0f64..=180.0, 1u64.., any::<bool>()).prop_map(
            |(session, seq, lat, lon, until, stopped)| Content::LiveLocation {
                session,
                seq,
                lat,
                lon,
                accuracy_m: None,
                until,
                stopped
            }
        ),
        (
            any::<[u8; 32]>(),
            0..=kith_protocol::blob::MAX_BLOB_SIZE,
            "[a-z]{1,10}/[a-z]{1,10}",
            proptest::option::of(short()),
            any::<[u8; 32]>(),
            proptest::option::of(short()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(hash, size, mime, name, key, caption, preview, width)| {
                Content::Attachment(Box::new(kith_protocol::blob::Attachment {
                    hash,
                    size,
                    mime,
                    name,
                    key,
                    caption,
                    preview: preview.map(|bytes| kith_protocol::blob::Preview {
                        mime: "image/webp".into(),
                        bytes,
                    }),
                    width,
                    height: width,
                    duration_ms: None,
                    holders: vec![kith_protocol::name::MailboxPeer {
                        peer_id: vec![1, 2, 3],
                        addrs: vec!["/memory/1".into()],
                    }],
                }))
            }),
        (sid(), proptest::option::of(cid()), 0u8..9, any::<[u8; 32]>(), ".{0,300}").prop_map(
            |(call, group, which, to, sdp)| {
                use kith_protocol::call::{CallSignal, Signal};
                let signal = match which {
                    0 => Signal::Ring { video: to[0] % 2 == 0 },
                    1 => Signal::Join,
                    2 => Signal::Present,
                    3 => Signal::Decline,
                    4 => Signal::Busy,
                    5 => Signal::Refused { reason: sdp.chars().take(50).collect() },
                    6 => Signal::Offer { to, sdp },
                    7 => Signal::Answer { to, sdp },
                    _ => Signal::Leave,
                };
                Content::Call(Box::new(CallSignal { call, group, signal }))
            }
        ),
        (
            sid(),
            proptest::option::of(cid()),
            0u8..6,
            proptest::collection::vec(mid(), 1..5),
            any::<u64>()
        )
            .prop_map(|(session, group, which, queue, n)| {
                use kith_protocol::listen::{ListenControl, ListenOp, ListenSignal, ListenState};
                let op = match which {
                    0 => ListenOp::State(ListenState {
                        host: [n as u8; 32],
                        index: (n % queue.len() as u64) as u32,
                        queue,
                        playing: n % 2 == 0,
                        position_ms: n / 3,
                        at: n,
                        seq: n / 7,
                        stopped: n % 5 == 0,
                    }),
                    1 => ListenOp::Control(ListenControl::Seek { position_ms: n }),
                    2 => ListenOp::Control(ListenControl::Add { track: queue[0] }),
                    3 => ListenOp::Control(ListenControl::Play { at_ms: Some(n) }),
                    4 => ListenOp::Ping { nonce: n },
                    _ => ListenOp::Pong { nonce: n, host_time: n / 2 },
                };
                Content::Listen(Box::new(ListenSignal { session, group, op }))
            }),
        (sid(), any::<bool>(), 0u8..4, any::<u64>(), any::<u64>()).prop_map(
            |(call, video, o, started_at, duration_ms)| {
                use kith_protocol::call::{CallLog, CallOutcome};
                let outcome = [
                    CallOutcome::Missed,
                    CallOutcome::Declined,
                    CallOutcome::Busy,
                    CallOutcome::Ended,
                ][o as usize];
                Content::CallLog(CallLog { call, video, outcome, started_at, duration_ms })
            }
        ),
        (
            sid(),
            short(),
            any::<i64>(),
            "[A-Z]{3}",
            proptest::collection::vec((id16(), any::<i64>(), any::<bool>()), 0..5)
        )
            .prop_map(|(bill, description, total, currency, shares)| Content::BillSplit {
                bill,
                description,
                total,
                currency,
                shares: shares
                    .into_iter()
                    .map(|(u, amount, settled)| Share { user: UserId(u), amount, settled })
                    .collect(),
            }),
        (
            cid(),
            proptest::option::of(short()),
            proptest::collection::vec(member(), 0..4),
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::option::of((0u32..8, 2u32..=8)),
            proptest::option::of((1u32..4096, any::<u64>()))
        )
            .prop_map(|(group, title, members, epoch, epoch_key, part, hand_on)| {
                Content::GroupInvite {
                    group,
                    title,
                    members,
                    epoch,
                    epoch_key,
                    part: part.map(|(i, n)| kith_protocol::message::InvitePart {
                        index: i % n,
                        count: n,
                    }),
                    hand_on: hand_on
                        .map(|(from, sent_at)| kith_protocol::message::HandOn { from, sent_at }),
                }
            }),
        (cid(), member()).prop_map(|(group, member)| Content::GroupAdd { group, member }),
        cid().prop_map(|group| Content::GroupLeave { group }),
        (cid(), id16()).prop_map(|(group, u)| Content::GroupRemove { group, user: UserId(u) }),
        (cid(), any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(group, epoch, key)| Content::GroupKey { group, epoch, key }),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|record| Content::RecordUpdate { record }),
        proptest::collection::vec(any::<u8>(), 1..300)
            .prop_map(|envelope| Content::GroupCopy { envelope }),
        (short(), any::<u64>(), -840i16..=840, proptest::option::of(short()), any::<bool>())
            .prop_filter("a title", |(t, ..)| !t.trim().is_empty())
            .prop_map(|(title, start, zone, place, note)| {
                Content::Event(Box::new(kith_protocol::plan::Event {
                    note: note.then(|| place.clone().unwrap_or_default()),
                    title,
                    start,
                    zone,
                    place,
                }))
            }),
        (mid(), proptest::option::of((any::<u64>(), -840i16..=840)), any::<bool>()).prop_map(
            |(to, start, cancelled)| {
                Content::EventChange(Box::new(kith_protocol::plan::EventChange {
                    to,
                    title: None,
                    start,
                    place: Some("Stadtpark".into()),
                    cancelled,
                }))
            }
        ),
        (mid(), 0u8..3).prop_map(|(to, a)| {
            use kith_protocol::plan::{Answer, Rsvp};
            Content::Rsvp(Rsvp { to, answer: [Answer::Yes, Answer::Maybe, Answer::No][a as usize] })
        }),
        (mid(), proptest::collection::vec(any::<u8>(), 1..200), any::<bool>()).prop_map(
            |(to, doc, new)| {
                use kith_protocol::plan::{ListChange, ListDoc};
                if new {
                    Content::List(Box::new(ListDoc { title: "Shopping".into(), doc }))
                } else {
                    Content::ListChange(Box::new(ListChange { to, doc }))
                }
            }
        ),
        (id16(), 1i64..1_000_000_000, "[A-Z]{3}", proptest::collection::vec(id16(), 1..6), 0u8..3)
            .prop_map(|(payer, amount, currency, mut people, how)| {
                use kith_protocol::plan::{Expense, Split};
                people.sort_unstable();
                people.dedup();
                let users: Vec<UserId> = people.into_iter().map(UserId).collect();
                let split = match how {
                    0 => Split::Equal(users),
                    1 => Split::Shares(users.into_iter().map(|u| (u, 2)).collect()),
                    _ => {
                        let n = users.len() as i64;
                        let mut parts: Vec<(UserId, i64)> =
                            users.into_iter().map(|u| (u, amount / n)).collect();
                        parts[0].1 += amount % n;
                        Split::Exact(parts)
                    }
                };
                Content::Expense(Box::new(Expense {
                    description: "sausages".into(),
                    payer: UserId(payer),
                    amount,
                    currency,
                    split,
                }))
            }),
        (id16(), 1i64..1_000_000_000, proptest::option::of(mid())).prop_map(
            |(to, amount, request)| {
                Content::Payment(Box::new(kith_protocol::plan::Payment {
                    to: UserId(to),
                    amount,
                    currency: "EUR".into(),
                    request,
                }))
            }
        ),
        mid().prop_map(|to| Content::PaymentConfirm(kith_protocol::plan::PaymentConfirm { to })),
        (mid(), 0u8..4, any::<bool>(), proptest::option::of(any::<u64>())).prop_map(
            |(to, which, flag, expires)| {
                use kith_protocol::interactive::*;
                let c = |id: &str| Choice { id: id.into(), label: format!("{id}!") };
                let element = match which {
                    0 => Element::Buttons(vec![c("yes"), c("no")]),
                    1 => Element::Pick { many: flag, options: vec![c("a"), c("b"), c("c")] },
                    2 => Element::Form {
                        fields: vec![
                            Field {
                                key: "name".into(),
                                label: "Name".into(),
                                kind: FieldKind::Text { max_len: 64 },
                                required: true,
                            },
                            Field {
                                key: "n".into(),
                                label: "How many".into(),
                                kind: FieldKind::Number { min: Some(1), max: Some(9) },
                                required: flag,
                            },
                            Field {
                                key: "at".into(),
                                label: "When".into(),
                                kind: FieldKind::DateTime,
                                required: false,
                            },
                            Field {
                                key: "size".into(),
                                label: "Size".into(),
                                kind: FieldKind::Choice(vec![c("s"), c("l")]),
                                required: false,
                            },
                        ],
                        submit: "Order".into(),
                    },
                    _ => Element::Product(Box::new(Product {
                        title: "Margherita".into(),
                        description: None,
                        image: Some(to),
                        price: 950,
                        currency: "EUR".into(),
                        options: vec![c("add")],
                    })),
                };
                if flag && which == 3 {
                    Content::InteractiveAnswer(Box::new(InteractiveAnswer {
                        to,
                        choices: vec!["add".into()],
                        fields: vec![("name".into(), "x".into())],
                    }))
                } else if expires == Some(0) {
                    Content::InteractiveUpdate(Box::new(InteractiveUpdate {
                        to,
                        text: None,
                        element: Some(element),
                        closed: true,
                    }))
                } else {
                    Content::Interactive(Box::new(Interactive {
                        text: "Pick".into(),
                        element,
                        expires,
                    }))
                }
            }
        ),
        (id16(), proptest::option::of(short()), any::<bool>(), any::<u64>()).prop_map(
            |(u, name, blocked, at)| {
                Content::SyncBlock(kith_protocol::message::BlockNote {
                    user: UserId(u),
                    name,
                    blocked,
                    at,
                })
            }
        ),
        any::<bool>().prop_map(|subscribed| Content::Consent(
            kith_protocol::message::ConsentNote { subscribed }
        )),
        (proptest::option::of(id16()), proptest::option::of(1i64..1_000_000), short()).prop_map(
            |(payer, amount, reference)| {
                use kith_protocol::plan::{PayMethod, PayRequest};
                Content::PayRequest(Box::new(PayRequest {
                    payer: payer.map(UserId),
                    amount,
                    currency: "EUR".into(),
                    reference,
                    methods: vec![
                        PayMethod::Iban {
                            iban: "DE89370400440532013000".into(),
                            name: "Alice".into(),
                            bic: None,
                        },
                        PayMethod::Link("https://paypal.me/alice".into()),
                        PayMethod::Lightning("alice@example.org".into()),
                    ],
                }))
            }
        ),
        ("x-[a-z]{1,12}", proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(kind, body)| Content::Unsupported { kind, body }),
        (id16(), proptest::option::of(short()), short(), any::<u64>()).prop_map(
            |(peer, peer_name, body, sent_at)| {
                let me = UserId([9; 16]);
                let inner = Message {
                    v: kith_protocol::VERSION,
                    id: MessageId([7; 16]),
                    conversation: ConversationId::direct(&me, &UserId(peer)),
                    sender: me,
                    sent_at,
                    content: Content::Text(Text { body }),
                };
                Content::SelfSent { peer: UserId(peer), peer_name, message: inner.to_bytes() }
            }
        ),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (id16(), id16(), id16(), any::<u64>(), content()).prop_map(|(id, c, s, sent_at, content)| {
        Message {
            v: VERSION,
            id: MessageId(id),
            conversation: ConversationId(c),
            sender: UserId(s),
            sent_at,
            content,
        }
    })
}

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
    let cert = DeviceCertificate::issue(&id, &dev, &st, 1, "dev");
    Party { id, dev, st, prekey, cert }
}

const NOW: u64 = 1_700_000_000_000;
const POLICY: RecordPolicy = RecordPolicy { min_pow_bits: 4 };

fn record(p: &Party, name: &str, seq: u64, mailbox: bool) -> Vec<u8> {
    let prekey = SignedPrekey::sign(&p.dev, 1, &p.prekey, NOW, NOW + 10 * 86_400_000);
    let mailboxes = if mailbox {
        vec![MailboxPeer {
            peer_id: party(99).dev.peer_id().to_bytes(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        }]
    } else {
        vec![]
    };
    RecordDraft {
        name: name.into(),
        devices: vec![DeviceEntry { cert: p.cert.clone(), prekey }],
        mailboxes,
        seq,
        issued_at: NOW,
        expires_at: NOW + 86_400_000,
        pow_nonce: solve_pow(name, &p.id.public(), POLICY.min_pow_bits, 0),
        profile: None,
    }
    .sign(&p.id)
    .expect("valid name")
    .to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trips(m in message()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(Message::from_bytes(&bytes).expect("decodes"), m);
    }

    #[test]
    fn envelope_round_trips_and_opens(m in message()) {
        let alice = party(10);
        let bob = party(20);
        let mut m = m;
        m.sender = alice.id.user_id();
        let to = Recipient { device: bob.dev.public_bytes(), prekey_id: 1, prekey: bob.prekey.public() };
        let env = Envelope::seal(&alice.cert, &alice.st, &to, &m, Some("alice")).expect("seals");
        let back = Envelope::from_bytes(&env.to_bytes()).expect("decodes");
        prop_assert_eq!(&back, &env);
        let opened = back.open(&bob.dev.public_bytes(), |_| Some(bob.prekey.clone())).expect("opens");
        prop_assert_eq!(opened.message, m);
    }

    #[test]
    fn any_changed_envelope_byte_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let alice = party(10);
        let bob = party(20);
        let m = Message {
            v: VERSION, id: MessageId([1; 16]), conversation: ConversationId([2; 16]),
            sender: alice.id.user_id(), sent_at: 3,
            content: Content::Text(Text { body: "meet at noon".into() }),
        };
        let to = Recipient { device: bob.dev.public_bytes(), prekey_id: 1, prekey: bob.prekey.public() };
        let mut bytes = Envelope::seal(&alice.cert, &alice.st, &to, &m, Some("alice")).expect("seals").to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let opened = Envelope::from_bytes(&bytes).map_err(|_| ()).and_then(|env| {
            env.open(&bob.dev.public_bytes(), |id| (id == 1).then(|| bob.prekey.clone())).map_err(|_| ())
        });
        prop_assert!(opened.is_err(), "flipping bit {} of byte {} went unnoticed", bit, i);
    }

    #[test]
    fn name_record_round_trips(seq in any::<u64>(), mailbox in any::<bool>(), name in "[a-z][a-z0-9._-]{2,31}") {
        let p = party(40);
        let bytes = record(&p, &name, seq, mailbox);
        let v = NameRecord::verify(&bytes, Some(&kith_protocol::dht_key(&name)), NOW, &POLICY).expect("valid");
        prop_assert_eq!(v.name, name);
        prop_assert_eq!(v.seq, seq);
        prop_assert_eq!(v.user_id, p.id.user_id());
        prop_assert_eq!(v.devices[0].device.peer_id, p.dev.peer_id());
        prop_assert_eq!(v.mailboxes.len(), usize::from(mailbox));
    }

    #[test]
    fn any_changed_record_byte_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let p = party(40);
        let mut bytes = record(&p, "alice", 1, true);
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(NameRecord::verify(&bytes, Some(&kith_protocol::dht_key("alice")), NOW, &POLICY).is_err(),
            "flipping bit {} of byte {} went unnoticed", bit, i);
    }

    #[test]
    fn any_changed_certificate_byte_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let p = party(50);
        let mut bytes = p.cert.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let ok = DeviceCertificate::from_bytes(&bytes).map(|c| c.verify(Some(&p.id.public())));
        prop_assert!(!matches!(ok, Ok(Ok(_))), "flipping bit {} of byte {} went unnoticed", bit, i);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::from_bytes(&bytes);
        let _ = Envelope::from_bytes(&bytes);
        let _ = DeviceCertificate::from_bytes(&bytes);
        let _ = NameRecord::verify(&bytes, None, NOW, &POLICY);
        let _ = kith_protocol::link::LinkRequest::from_bytes(&bytes);
        let _ = kith_protocol::link::LinkResponse::from_bytes(&bytes);
        let _ = kith_protocol::link::LinkCode::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = m.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = Message::from_bytes(&bytes);
    }
}
