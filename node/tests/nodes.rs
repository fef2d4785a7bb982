//! In-process integration tests: several real nodes over the memory transport.

use std::time::Duration;

use kith_node::home::Home;
use kith_node::mailbox::MailboxConfig;
use kith_node::network::TransportKind;
use kith_node::{Multiaddr, Node, NodeConfig, NodeError};
use kith_protocol::identity::{DeviceKeypair, IdentityKeypair, SignedPrekey, X25519Secret};
use kith_protocol::name::{claim_hash, DeviceEntry, RecordDraft};
use kith_protocol::{dht_key, AckStatus, DeliveryAck, DeviceCertificate};
use tempfile::TempDir;

const POW: u32 = 8;
/// How long calls ring in these tests.
const RING_MS: u64 = 4_000;

struct TestNode {
    node: Node,
    home: std::path::PathBuf,
    _dir: Option<TempDir>,
}

async fn start_with(
    home: &std::path::Path,
    bootstrap: Vec<Multiaddr>,
    mailbox: MailboxConfig,
) -> Node {
    Node::start(NodeConfig {
        home: home.to_owned(),
        transport: TransportKind::Memory,
        listen: vec!["/memory/0".parse().expect("addr")],
        bootstrap,
        pow_bits: POW,
        mailbox,
        media: kith_node::node::MediaConfig::default(),
        // Calls ring for 4 s here, so a missed call is quick to test.
        calls: kith_node::node::CallConfig { ring_ms: RING_MS, ..Default::default() },
        accounts: kith_node::node::AccountsConfig::default(),
        limits: kith_node::network::Limits::default(),
    })
    .await
    .expect("node starts")
}

/// A node in DHT client mode (it uses the DHT but does not serve it).
async fn spawn_client(bootstrap: Vec<Multiaddr>) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    Home::new(&home).init("test", kith_node::now_ms()).expect("init");
    let node = Node::start(NodeConfig {
        home: home.clone(),
        transport: TransportKind::Memory,
        listen: vec!["/memory/0".parse().expect("addr")],
        bootstrap,
        pow_bits: POW,
        mailbox: MailboxConfig::default(),
        media: kith_node::node::MediaConfig::default(),
        calls: kith_node::node::CallConfig::default(),
        accounts: kith_node::node::AccountsConfig::default(),
        limits: kith_node::network::Limits { dht_server: false, ..Default::default() },
    })
    .await
    .expect("node starts");
    TestNode { node, home, _dir: Some(dir) }
}

async fn start(home: &std::path::Path, bootstrap: Vec<Multiaddr>) -> Node {
    start_with(home, bootstrap, MailboxConfig::default()).await
}

async fn spawn_with(bootstrap: Vec<Multiaddr>, mailbox: MailboxConfig) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    Home::new(&home).init("test", kith_node::now_ms()).expect("init");
    let node = start_with(&home, bootstrap, mailbox).await;
    TestNode { node, home, _dir: Some(dir) }
}

async fn spawn(bootstrap: Vec<Multiaddr>) -> TestNode {
    spawn_with(bootstrap, MailboxConfig::default()).await
}

async fn addr(n: &Node) -> Multiaddr {
    for _ in 0..100 {
        let s = n.status().await.expect("status");
        if let Some(a) = s.listen_addrs.first() {
            return a.parse().expect("multiaddr");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node never listened");
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn network() -> (TestNode, TestNode, TestNode) {
    network_with(MailboxConfig::default()).await
}

async fn network_with(mailbox: MailboxConfig) -> (TestNode, TestNode, TestNode) {
    let boot = spawn_with(vec![], mailbox).await;
    let b = addr(&boot.node).await;
    let alice = spawn(vec![b.clone()]).await;
    let bob = spawn(vec![b]).await;
    for n in [&alice, &bob] {
        eventually(10, "connection to bootstrap", || async {
            (n.node.status().await.ok()?.connected_peers > 0).then_some(())
        })
        .await;
    }
    alice.node.register("alice").await.expect("alice registers");
    bob.node.register("bob").await.expect("bob registers");
    (boot, alice, bob)
}

async fn delivered(n: &Node, id: &str) -> bool {
    n.message(id).map(|m| m.status == "delivered").unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_resolve_send_and_ack() {
    let (_boot, alice, bob) = network().await;
    let r = alice.node.resolve("bob").await.expect("resolves");
    assert_eq!(r.user_id, bob.node.user_id().to_string());
    assert_eq!(r.devices.len(), 1);
    assert_eq!(r.devices[0].peer_id, bob.node.peer_id().to_string());

    let sent = alice.node.send_text("@bob", "hello bob").await.expect("queued");
    assert_eq!(sent.status, "queued");
    eventually(20, "delivery", || async { delivered(&alice.node, &sent.id).await.then_some(()) })
        .await;
    let got = bob.node.messages(None, 100).expect("history");
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("hello bob")).count(), 1);
    assert_eq!(got[0].direction, "in");
    // Bob learns alice's name from her signed record, after checking it.
    eventually(20, "sender name", || async {
        (bob.node.messages(None, 10).ok()?.first()?.from == "alice").then_some(())
    })
    .await;
    // And he can answer by name.
    let reply = bob.node.send_text("alice", "hi alice").await.expect("queued");
    eventually(20, "reply delivery", || async {
        delivered(&bob.node, &reply.id).await.then_some(())
    })
    .await;
    let conv = alice.node.messages(Some("bob"), 100).expect("conversation");
    assert_eq!(
        conv.iter().map(|m| m.text.clone().unwrap_or_default()).collect::<Vec<_>>(),
        vec!["hello bob", "hi alice"]
    );
}

/// A DHT client registers through the servers, its name resolves, and it talks with a server
/// node: it reaches the server by a lookup, and the server answers over that connection (no
/// lookup finds a client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_client_registers_and_talks_with_a_server() {
    let boot = spawn(vec![]).await;
    let b = addr(&boot.node).await;
    let alice = spawn(vec![b.clone()]).await;
    let bob = spawn_client(vec![b]).await;
    connect_and_register(&alice, "alice").await;
    connect_and_register(&bob, "bob").await;
    let r = alice.node.resolve("bob").await.expect("the client's name resolves");
    assert_eq!(r.user_id, bob.node.user_id().to_string());
    let sent = bob.node.send_text("@alice", "from a client").await.expect("queued");
    eventually(20, "delivery", || async { delivered(&bob.node, &sent.id).await.then_some(()) })
        .await;
    sees(20, "the message at alice", &alice.node, "bob", "from a client").await;
    let reply = alice.node.send_text("bob", "and back").await.expect("queued");
    eventually(20, "reply delivery", || async {
        delivered(&alice.node, &reply.id).await.then_some(())
    })
    .await;
}

/// The name a new sender claims is kept with its message and checked on request (what a bot
/// does after a restart); a message with no claim (one this node sent) has nothing to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_senders_claimed_name_is_checked_from_its_message() {
    let (_boot, alice, bob) = network().await;
    let sent = alice.node.send_text("@bob", "hello, who am I?").await.expect("queued");
    let got = eventually(20, "the message at bob", || async {
        bob.node.messages(None, 10).ok()?.into_iter().find(|m| m.id == sent.id)
    })
    .await;
    let id = kith_protocol::MessageId::parse(&got.id).expect("id").0;
    let named = bob.node.check_sender_name(&id).await.expect("checked");
    assert!(named, "alice's claimed name did not check out");
    assert_eq!(bob.node.messages(Some("alice"), 10).expect("by name")[0].from, "alice");
    let own = bob.node.send_text("alice", "you are alice").await.expect("queued");
    let own = kith_protocol::MessageId::parse(&own.id).expect("id").0;
    assert!(!bob.node.check_sender_name(&own).await.expect("nothing to check"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_invalid_names_are_clear_errors() {
    let (_boot, alice, _bob) = network().await;
    assert!(matches!(alice.node.register("A B").await, Err(NodeError::InvalidName(_))));
    assert!(matches!(alice.node.send_text("A B", "hi").await, Err(NodeError::InvalidName(_))));
    // A name no one has registered (yet) is not refused: the message waits, and says why.
    let waiting = alice.node.send_text("nobody", "hi").await.expect("accepted");
    assert_eq!((waiting.status, waiting.to.as_str()), ("waiting", "nobody"));
    let shown = alice.node.message(&waiting.id).expect("stored");
    let reason = shown.pending_reason.unwrap_or_default();
    assert!(reason.starts_with("waiting for @nobody: no one has registered"), "{reason}");
    let history = alice.node.messages(Some("nobody"), 10).expect("history");
    assert_eq!(history.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [waiting.id.as_str()]);
    assert_eq!(alice.node.status().await.expect("status").outbox, 1);
    // Withdrawn: nothing is left to deliver, and it cannot be withdrawn twice.
    let cancelled = alice.node.cancel(&waiting.id).await.expect("cancelled");
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(alice.node.status().await.expect("status").outbox, 0);
    assert!(matches!(alice.node.cancel(&waiting.id).await, Err(NodeError::NotAllowed(_))));
}

/// A message to a name that nobody holds yet is accepted, waits, and is delivered once the
/// name is registered (same id, now in the conversation with its holder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_name_registered_later_is_delivered() {
    let (boot, alice, _bob) = network().await;
    let sent = alice.node.send_text("carol", "see you soon").await.expect("accepted");
    assert_eq!(sent.status, "waiting");
    let carol = spawn(vec![addr(&boot.node).await]).await;
    connect_and_register(&carol, "carol").await;
    eventually(90, "the waiting message to be delivered", || async {
        delivered(&alice.node, &sent.id).await.then_some(())
    })
    .await;
    // Carol pins alice's name in the background once the message arrives.
    let got = eventually(30, "carol to list it with alice", || async {
        let got = carol.node.messages(Some("alice"), 10).ok()?;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("see you soon")).count(), 1);
    let all = carol.node.messages(None, 100).expect("history");
    assert_eq!(all.iter().filter(|m| m.text.as_deref() == Some("see you soon")).count(), 1);
    let mine = alice.node.messages(Some("carol"), 10).expect("history");
    assert_eq!(mine.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [sent.id.as_str()]);
    assert_eq!(mine[0].to, "carol");
    assert_eq!(alice.node.status().await.expect("status").outbox, 0);
}

/// A mention that does not resolve is not dropped silently: the sender learns who was not
/// invited and why, and the message still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_that_do_not_resolve_are_reported() {
    let (_boot, alice, _bob) = network().await;
    let sent = alice.node.send_message("bob", "hi, meet @nobody-here").await.expect("sent");
    assert_eq!(sent.not_invited.len(), 1, "{:?}", sent.not_invited);
    assert_eq!(sent.not_invited[0].name, "nobody-here");
    assert!(sent.not_invited[0].reason.contains("no one has registered"), "{:?}", sent.not_invited);
    assert!(!sent.message.to.starts_with('#'), "no group formed: {}", sent.message.to);
    let plain = alice.node.send_message("bob", "no mentions").await.expect("sent");
    assert!(plain.not_invited.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_history_and_outbox_delivers_once() {
    let (boot, alice, bob) = network().await;
    let first = alice.node.send_text("bob", "before").await.expect("queued");
    eventually(20, "delivery", || async { delivered(&alice.node, &first.id).await.then_some(()) })
        .await;

    let TestNode { node: bob_node, home: bob_home, _dir: _bob_dir } = bob;
    bob_node.shutdown().await.expect("bob stops");
    drop(bob_node);
    let away = alice.node.send_text("bob", "while you were away").await.expect("queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!delivered(&alice.node, &away.id).await);
    assert_eq!(alice.node.status().await.expect("status").outbox, 1);

    // Alice restarts too: her outbox must survive.
    let TestNode { node: alice_node, home: alice_home, _dir: _alice_dir } = alice;
    alice_node.shutdown().await.expect("alice stops");
    drop(alice_node);
    let b = addr(&boot.node).await;
    let alice2 = start(&alice_home, vec![b.clone()]).await;
    assert_eq!(alice2.status().await.expect("status").outbox, 1);
    let bob2 = start(&bob_home, vec![b]).await;
    assert!(bob2
        .messages(None, 10)
        .expect("history")
        .iter()
        .any(|m| m.text.as_deref() == Some("before")));
    eventually(60, "delivery after restart", || async {
        delivered(&alice2, &away.id).await.then_some(())
    })
    .await;
    let got = bob2.messages(None, 100).expect("history");
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("while you were away")).count(), 1);
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("before")).count(), 1);
    assert_eq!(alice2.status().await.expect("status").outbox, 0);
}

/// A counter of `n`'s metrics (`kith_NAME_total`).
fn counter(n: &Node, name: &str) -> u64 {
    let text = n.metrics_text();
    let prefix = format!("kith_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in\n{text}"))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The first message to a device starts a session and later ones are sealed in it, across
/// restarts; when the device loses the session (its home restored from a backup made before),
/// it answers `no_session`, and the sender seals the message again with Noise: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_replaced_without_losing_a_message() {
    let (boot, alice, bob) = network().await;
    let TestNode { node: bob_node, home: bob_home, _dir: bob_dir } = bob;
    bob_node.shutdown().await.expect("bob stops");
    drop(bob_node);
    let backup = bob_dir.as_ref().expect("dir").path().join("backup");
    copy_dir(&bob_home, &backup);
    let b = addr(&boot.node).await;
    let bob = start(&bob_home, vec![b.clone()]).await;

    for text in ["one", "two", "three"] {
        let m = alice.node.send_text("bob", text).await.expect("queued");
        eventually(20, "delivery", || async { delivered(&alice.node, &m.id).await.then_some(()) })
            .await;
    }
    // The first was sealed with Noise and started the session; bob's acknowledgement
    // confirmed it, so the next two were sealed in it.
    assert_eq!(counter(&alice.node, "sealed_noise"), 1);
    assert_eq!(counter(&alice.node, "sealed_session"), 2);
    // Bob answers in the same session, after a restart of both.
    let alice_home = alice.home.clone();
    let TestNode { node: alice_node, home: _, _dir: _alice_dir } = alice;
    alice_node.shutdown().await.expect("alice stops");
    drop(alice_node);
    bob.shutdown().await.expect("bob stops");
    drop(bob);
    let alice = start(&alice_home, vec![b.clone()]).await;
    let bob = start(&bob_home, vec![b.clone()]).await;
    let r = bob.send_text("alice", "answer").await.expect("queued");
    eventually(30, "answer", || async { delivered(&bob, &r.id).await.then_some(()) }).await;
    assert_eq!(counter(&bob, "sealed_session"), 1);
    assert_eq!(counter(&bob, "sealed_noise"), 0);
    let m = alice.send_text("bob", "four").await.expect("queued");
    eventually(30, "delivery", || async { delivered(&alice, &m.id).await.then_some(()) }).await;
    assert_eq!(counter(&alice, "sealed_session"), 1);

    // Bob's home goes back to before the session.
    bob.shutdown().await.expect("bob stops");
    drop(bob);
    std::fs::remove_dir_all(&bob_home).expect("rm");
    copy_dir(&backup, &bob_home);
    let bob = start(&bob_home, vec![b]).await;
    let lost = alice.send_text("bob", "five").await.expect("queued");
    eventually(60, "delivery after the lost session", || async {
        delivered(&alice, &lost.id).await.then_some(())
    })
    .await;
    assert_eq!(counter(&alice, "sessions_lost"), 1);
    let got = bob.messages(None, 100).expect("history");
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("five")).count(), 1);
    // And the new session carries the next one.
    let m = alice.send_text("bob", "six").await.expect("queued");
    eventually(30, "delivery", || async { delivered(&alice, &m.id).await.then_some(()) }).await;
    assert_eq!(counter(&alice, "sealed_session"), 3, "five (first try), four, six");
}

/// A record for `name` under a new identity, with a claim hash below `below` when given (more
/// work than a competitor's), expiring `lifetime_ms` from now. Returns the record and its
/// identity.
fn forge(name: &str, below: Option<[u8; 32]>, lifetime_ms: u64) -> (Vec<u8>, IdentityKeypair) {
    let id = IdentityKeypair::generate(&mut rand::rngs::OsRng);
    let dev = DeviceKeypair::generate(&mut rand::rngs::OsRng);
    let st = X25519Secret::generate(&mut rand::rngs::OsRng);
    let pk = X25519Secret::generate(&mut rand::rngs::OsRng);
    let bound = below.unwrap_or_else(|| {
        // Enough work for the network's policy.
        let mut b = [0xffu8; 32];
        b[0] = 0;
        b
    });
    let mut nonce = 0u64;
    while claim_hash(name, &id.public().to_bytes(), nonce) >= bound {
        nonce += 1;
    }
    let now = kith_node::now_ms();
    let record = RecordDraft {
        name: name.into(),
        devices: vec![DeviceEntry {
            cert: DeviceCertificate::issue(&id, &dev, &st, now, "evil"),
            prekey: SignedPrekey::sign(&dev, 1, &pk, now, now + 86_400_000 * 2),
        }],
        mailboxes: vec![],
        seq: 1,
        issued_at: now,
        expires_at: now + lifetime_ms,
        pow_nonce: nonce,
        profile: None,
    }
    .sign(&id)
    .expect("sign");
    (record.to_bytes(), id)
}

/// The identities of the valid copies of `name`'s record that `n` holds itself.
async fn held_by(n: &Node, name: &str) -> Vec<String> {
    let key = dht_key(name);
    let policy = kith_protocol::RecordPolicy { min_pow_bits: POW };
    let copies = n.network().get_records(key.to_vec()).await.unwrap_or_default();
    copies
        .iter()
        .filter(|c| c.from.is_none())
        .filter_map(|c| {
            kith_protocol::NameRecord::verify(&c.value, Some(&key), kith_node::now_ms(), &policy)
                .ok()
        })
        .map(|r| r.user_id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_name_cannot_be_outbid_and_its_holder_is_told() {
    let (boot, alice, bob) = network().await;
    let bob_id = bob.node.user_id().to_string();
    // Alice pins bob.
    alice.node.resolve("bob").await.expect("resolves");
    // Mallory cannot register a held name the ordinary way.
    let mallory = spawn(vec![addr(&boot.node).await]).await;
    assert!(matches!(mallory.node.register("bob").await, Err(NodeError::NameTaken(_))));

    // Mallory forges a competing claim with more work than bob's and pushes it into the DHT.
    let bob_claim = {
        let key = dht_key("bob");
        let raw = boot.node.network().get_records(key.to_vec()).await.expect("get");
        let policy = kith_protocol::RecordPolicy { min_pow_bits: POW };
        raw.iter()
            .filter_map(|c| {
                kith_protocol::NameRecord::verify(
                    &c.value,
                    Some(&key),
                    kith_node::now_ms(),
                    &policy,
                )
                .ok()
            })
            .map(|r| r.claim_hash)
            .min()
            .expect("bob's record")
    };
    let (forged, mallory_id) = forge("bob", Some(bob_claim), 86_400_000);
    let now = kith_node::now_ms();
    // Kademlia acknowledges a store before the receiver checks it: the put may well "succeed".
    let _ =
        mallory.node.network().put_record(dht_key("bob").to_vec(), forged, now + 86_400_000).await;

    // The nodes that hold bob's live record keep it (the incumbent rule)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(held_by(&boot.node, "bob").await, std::slice::from_ref(&bob_id));
    assert_eq!(held_by(&alice.node, "bob").await, std::slice::from_ref(&bob_id));
    assert!(boot.node.status().await.expect("status").rejected.records >= 1);
    // ... so a newcomer who never resolved bob gets bob, not mallory ...
    let carol = spawn(vec![addr(&boot.node).await]).await;
    let r = eventually(20, "carol to resolve bob", || async {
        carol.node.resolve_record("bob").await.ok()
    })
    .await;
    assert_eq!(r.user_id.to_string(), bob_id);
    // ... alice keeps bob without a key change ...
    let r = alice.node.resolve("bob").await.expect("bob still resolves");
    assert_eq!(r.user_id, bob_id);
    assert!(alice.node.contacts().expect("contacts").iter().all(|c| !c.key_changed));

    // ... and bob, reading its name back, finds mallory's claim and is told.
    let mut events = bob.node.subscribe();
    bob.node.republish().await.expect("republish");
    let status = bob.node.status().await.expect("status");
    assert!(status.name_served_by.is_some_and(|n| n >= 1), "{status:?}");
    let conflict = status.name_conflict.expect("bob's status shows the competing claim");
    assert_eq!(conflict.user_id, mallory_id.user_id().to_string());
    assert!(!conflict.wins, "fewer holders serve mallory's claim than bob's");
    let told = eventually(5, "a name_conflict event", || {
        let e = events.try_recv();
        async move {
            match e {
                Ok(kith_node::views::NodeEvent::NameConflict(c)) => Some(c),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(told.name, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_name_that_changed_hands_is_key_changed_until_trusted() {
    let (boot, alice, _bob) = network().await;
    // Mallory claims "dora" with a record that expires in a few seconds; alice pins it.
    let mallory = spawn(vec![addr(&boot.node).await]).await;
    let (forged, mallory_id) = forge("dora", None, 4_000);
    let now = kith_node::now_ms();
    let _ = mallory.node.network().put_record(dht_key("dora").to_vec(), forged, now + 4_000).await;
    let r =
        eventually(10, "alice to resolve dora", || async { alice.node.resolve("dora").await.ok() })
            .await;
    assert_eq!(r.user_id, mallory_id.user_id().to_string());
    // The record lapses, and someone else registers the name.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let erin = spawn(vec![addr(&boot.node).await]).await;
    eventually(20, "erin to register dora", || async { erin.node.register("dora").await.ok() })
        .await;
    // Alice is told, and sending to dora is refused, until she trusts the new key.
    let e = alice.node.resolve("dora").await.expect_err("the key changed");
    assert!(matches!(e, NodeError::KeyChanged { .. }), "{e}");
    assert!(matches!(alice.node.send_to("dora", "hi").await, Err(NodeError::KeyChanged { .. })));
    let c = alice.node.trust("dora").await.expect("trust");
    assert_eq!(c.user_id, erin.node.user_id().to_string());
    let r = alice.node.resolve("dora").await.expect("resolves after trust");
    assert_eq!(r.user_id, erin.node.user_id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_records_and_envelopes_are_rejected_and_counted() {
    let (boot, alice, bob) = network().await;
    // A record whose signature is broken.
    let bytes = {
        let key = dht_key("alice");
        let raw = alice.node.network().get_records(key.to_vec()).await.expect("get");
        let mut rec = raw.into_iter().next().expect("alice's record").value;
        let n = rec.len();
        rec[n - 5] ^= 0xff;
        rec
    };
    let before = boot.node.status().await.expect("status").rejected.records;
    let _ = bob
        .node
        .network()
        .put_record(dht_key("alice").to_vec(), bytes, kith_node::now_ms() + 60_000)
        .await;
    eventually(10, "rejection counted", || async {
        (boot.node.status().await.ok()?.rejected.records > before).then_some(())
    })
    .await;
    assert_eq!(
        alice.node.resolve("alice").await.expect("still resolves").user_id,
        alice.node.user_id().to_string()
    );

    // Garbage and tampered envelopes: rejected with a reason, counted, and bob keeps serving.
    let garbage =
        alice.node.network().send_envelope(bob.node.peer_id(), vec![0xa5; 300]).await.expect("net");
    let ack = DeliveryAck::from_bytes(&garbage.expect("answered")).expect("ack");
    assert_eq!(ack.status, AckStatus::Rejected);
    assert_eq!(bob.node.status().await.expect("status").rejected.envelopes, 1);
    let m = alice.node.send_text("bob", "still fine").await.expect("queued");
    eventually(20, "delivery after garbage", || async {
        delivered(&alice.node, &m.id).await.then_some(())
    })
    .await;
}

async fn status_of(n: &Node, id: &str) -> String {
    n.message(id).map(|m| m.status.to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_delivery_through_a_mailbox() {
    let (boot, alice, bob) =
        network_with(MailboxConfig { enabled: true, ..MailboxConfig::default() }).await;
    let mb = addr(&boot.node).await;
    bob.node.add_mailbox(&mb.to_string()).await.expect("bob enrolls");
    assert_eq!(bob.node.mailboxes().expect("list").len(), 1);
    let r = alice.node.resolve("bob").await.expect("resolves");
    assert_eq!(r.mailboxes, vec![boot.node.peer_id().to_string()]);

    // Bob goes offline; alice sends, the mailbox takes it; then alice goes offline too.
    let TestNode { node: bob_node, home: bob_home, _dir: _bob_dir } = bob;
    bob_node.shutdown().await.expect("stops");
    drop(bob_node);
    let m = alice.node.send_text("bob", "see you later").await.expect("queued");
    eventually(30, "deposit", || async {
        (status_of(&alice.node, &m.id).await == "stored").then_some(())
    })
    .await;
    let TestNode { node: alice_node, home: alice_home, _dir: _alice_dir } = alice;
    alice_node.shutdown().await.expect("stops");
    drop(alice_node);
    assert!(boot.node.metrics_text().contains("kith_mailbox_deposits_total 1"));

    // Bob comes back and finds it in his mailbox, once.
    let bob2 = start(&bob_home, vec![mb.clone()]).await;
    eventually(30, "fetch", || async {
        let got = bob2.messages(None, 10).ok()?;
        got.iter().any(|m| m.text.as_deref() == Some("see you later")).then_some(())
    })
    .await;
    // The mailbox forgets it once bob stored it.
    eventually(10, "mailbox emptied", || async {
        boot.node.metrics_text().contains("kith_mailbox_envelopes 0").then_some(())
    })
    .await;
    // Alice comes back and learns from bob's receipt that it was delivered.
    let alice2 = start(&alice_home, vec![mb]).await;
    eventually(60, "delivered", || async {
        (status_of(&alice2, &m.id).await == "delivered").then_some(())
    })
    .await;
    let got = bob2.messages(None, 10).expect("history");
    assert_eq!(got.iter().filter(|m| m.text.as_deref() == Some("see you later")).count(), 1);
}

/// A group message reaches a member who was offline through the member's mailbox, although
/// every other member is offline by the time it comes back (`group.copy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_waits_in_an_offline_members_mailbox() {
    let (boot, alice, bob) =
        network_with(MailboxConfig { enabled: true, ..MailboxConfig::default() }).await;
    let mb = addr(&boot.node).await;
    let carol = spawn(vec![mb.clone()]).await;
    eventually(10, "connection", || async {
        (carol.node.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    carol.node.register("carol").await.expect("carol registers");
    carol.node.add_mailbox(&mb.to_string()).await.expect("carol enrolls");
    let first = alice.node.send_to("bob", "picnic? @carol").await.expect("group formed");
    let conv = format!("#{}", first.conversation);
    for n in [&bob.node, &carol.node] {
        eventually(60, "joined", || async {
            has_text(n, &conv, "picnic? @carol").await.then_some(())
        })
        .await;
    }
    // Carol and bob go offline; alice posts and goes offline too.
    let TestNode { node: carol_node, home: carol_home, _dir: _carol_dir } = carol;
    carol_node.shutdown().await.expect("stops");
    drop(carol_node);
    let TestNode { node: bob_node, _dir: _bob_dir, .. } = bob;
    bob_node.shutdown().await.expect("stops");
    drop(bob_node);
    alice.node.send_to(&conv, "bring plates").await.expect("posted");
    eventually(60, "the copy deposited", || async {
        boot.node.metrics_text().contains("kith_mailbox_deposits_total 1").then_some(())
    })
    .await;
    let TestNode { node: alice_node, _dir: _alice_dir, .. } = alice;
    alice_node.shutdown().await.expect("stops");
    drop(alice_node);
    // Carol comes back, with no other member online: the mailbox has it.
    let carol2 = start(&carol_home, vec![mb]).await;
    eventually(60, "the group message from the mailbox", || async {
        has_text(&carol2, &conv, "bring plates").await.then_some(())
    })
    .await;
    assert_eq!(texts(&carol2, &conv).iter().filter(|t| *t == "bring plates").count(), 1);
    let direct = carol2.messages(Some("alice"), 100).expect("direct chat");
    assert!(direct.iter().all(|m| m.text.as_deref() != Some("bring plates")), "{direct:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_quota_keeps_the_message_in_the_outbox() {
    let cfg = MailboxConfig { enabled: true, max_messages: 1, ..MailboxConfig::default() };
    let (boot, alice, bob) = network_with(cfg).await;
    let mb = addr(&boot.node).await;
    bob.node.add_mailbox(&mb.to_string()).await.expect("bob enrolls");
    alice.node.resolve("bob").await.expect("resolves");
    let TestNode { node: bob_node, _dir: _bob_dir, .. } = bob;
    bob_node.shutdown().await.expect("stops");
    drop(bob_node);
    let first = alice.node.send_text("bob", "one").await.expect("queued");
    eventually(30, "deposit", || async {
        (status_of(&alice.node, &first.id).await == "stored").then_some(())
    })
    .await;
    let second = alice.node.send_text("bob", "two").await.expect("queued");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(status_of(&alice.node, &second.id).await, "stored");
    assert_eq!(alice.node.status().await.expect("status").outbox, 2);
    assert!(boot.node.metrics_text().contains("reason=\"quota\""), "{}", boot.node.metrics_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_refuses_users_off_its_allow_list_and_plain_nodes_refuse_enrollment() {
    let cfg = MailboxConfig {
        enabled: true,
        allow: vec![kith_protocol::UserId([0; 16])],
        ..MailboxConfig::default()
    };
    let (boot, alice, _bob) = network_with(cfg).await;
    // The mailbox's peer id at an address where nothing listens: refused, though alice is
    // connected to that peer through another address, and nothing is saved.
    let wrong: Multiaddr = addr(&boot.node)
        .await
        .iter()
        .map(|p| match p {
            libp2p::multiaddr::Protocol::Memory(_) => {
                libp2p::multiaddr::Protocol::Memory(u64::MAX - 7)
            }
            other => other,
        })
        .collect();
    let err = alice.node.add_mailbox(&wrong.to_string()).await.expect_err("unreachable");
    assert!(err.to_string().contains("cannot reach the mailbox at"), "{err}");
    assert!(alice.node.mailboxes().expect("list").is_empty());
    let err =
        alice.node.add_mailbox(&addr(&boot.node).await.to_string()).await.expect_err("refused");
    assert!(matches!(err, NodeError::Refused(_)), "{err}");
    let plain = spawn(vec![addr(&boot.node).await]).await;
    let err =
        alice.node.add_mailbox(&addr(&plain.node).await.to_string()).await.expect_err("refused");
    assert!(err.to_string().contains("not a mailbox"), "{err}");
    assert!(alice.node.mailboxes().expect("list").is_empty());
}

fn texts(n: &Node, conv: &str) -> Vec<String> {
    n.messages(Some(conv), 1000)
        .map(|m| m.into_iter().filter_map(|m| m.text).collect())
        .unwrap_or_default()
}

async fn has_text(n: &Node, conv: &str, text: &str) -> bool {
    texts(n, conv).iter().any(|t| t == text)
}

/// Waits for `n` to connect to someone, then registers `name`.
async fn connect_and_register(n: &TestNode, name: &str) {
    eventually(10, "connection", || async {
        (n.node.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    n.node.register(name).await.expect("registers");
}

/// Waits up to `secs` seconds for `text` to show in conversation `conv` on `n`.
async fn sees(secs: u64, what: &str, n: &Node, conv: &str, text: &str) {
    eventually(secs, what, || async { has_text(n, conv, text).await.then_some(()) }).await;
}

/// A direct chat first; then mentioning carol forms a group of three where everyone hears
/// everyone. Returns the group's short conversation name.
async fn form_group_by_mentioning_carol(alice: &Node, bob: &Node, carol: &Node) -> String {
    alice.send_text("bob", "just us").await.expect("direct");
    let first = alice.send_to("@bob", "hi @carol, welcome").await.expect("group formed");
    let gid = first.conversation.clone();
    let conv = format!("#{}", &gid[..8]);
    assert_ne!(gid, alice.messages(Some("bob"), 10).expect("direct")[0].conversation);
    let kinds: Vec<_> = alice
        .conversations()
        .expect("list")
        .into_iter()
        .map(|c| (c.kind, c.members.len()))
        .collect();
    assert!(kinds.contains(&("group", 3)), "{kinds:?}");
    for n in [bob, carol] {
        sees(30, "the first group message", n, &conv, "hi @carol, welcome").await;
    }
    // The 1:1 thread stays as it was.
    assert_eq!(texts(alice, "bob"), vec!["just us"]);
    // Everyone hears everyone.
    bob.send_to(&conv, "bob here").await.expect("bob posts");
    carol.send_to(&conv, "carol here").await.expect("carol posts");
    for n in [alice, bob, carol] {
        for t in ["bob here", "carol here"] {
            sees(30, t, n, &conv, t).await;
        }
    }
    conv
}

/// Mentioning dave in the group adds him; he sees messages from then on only.
async fn add_dave_by_mentioning_him(alice: &Node, carol: &Node, dave: &Node, conv: &str) {
    carol.send_to(conv, "and @dave too").await.expect("dave added");
    sees(30, "dave's first message", dave, conv, "and @dave too").await;
    assert!(
        !has_text(dave, conv, "bob here").await,
        "dave must not see messages from before he joined"
    );
    assert_eq!(alice.members(conv).expect("members").len(), 4);
}

/// Carol goes offline; alice and bob talk; carol comes back and catches up, once each.
/// Returns carol restarted.
async fn carol_catches_up_after_being_away(
    alice: &Node,
    bob: &Node,
    carol: TestNode,
    dave: &Node,
    conv: &str,
    bootstrap: Vec<Multiaddr>,
) -> TestNode {
    let TestNode { node: carol_node, home: carol_home, _dir: carol_dir } = carol;
    carol_node.shutdown().await.expect("stops");
    drop(carol_node);
    eventually(30, "dave to hold the newest epoch", || async {
        (dave.members(conv).ok()?.len() == 4).then_some(())
    })
    .await;
    alice.send_to(conv, "while carol was away 1").await.expect("posts");
    bob.send_to(conv, "while carol was away 2").await.expect("posts");
    let carol2 = start(&carol_home, bootstrap).await;
    for t in ["while carol was away 1", "while carol was away 2"] {
        sees(60, t, &carol2, conv, t).await;
    }
    let seen = texts(&carol2, conv);
    for t in ["while carol was away 1", "while carol was away 2", "hi @carol, welcome", "bob here"]
    {
        assert_eq!(seen.iter().filter(|s| *s == t).count(), 1, "{t}: {seen:?}");
    }
    // Every member device numbers its messages without a hole: once caught up, carol can prove
    // nothing missing.
    let id = conv.trim_start_matches('#');
    let all = carol2.conversations().expect("lists");
    assert_eq!(all.into_iter().find(|c| c.id.starts_with(id)).and_then(|c| c.missing), Some(0));
    TestNode { node: carol2, home: carol_home, _dir: carol_dir }
}

/// Alice removes dave (he joined after her): he stops receiving and cannot post; bob (who
/// joined after alice) may not remove her; everyone who stayed ends with the same history.
async fn alice_removes_dave(alice: &Node, bob: &Node, carol: &Node, dave: &Node, conv: &str) {
    let incoming = |n: &Node| {
        n.messages(Some(conv), 1000)
            .expect("history")
            .into_iter()
            .filter(|m| m.direction == "in")
            .count()
    };
    let before = incoming(dave);
    alice.remove_member(conv, "@dave").await.expect("removed");
    eventually(30, "dave to learn he was removed", || async {
        dave.send_to(conv, "still here?").await.is_err().then_some(())
    })
    .await;
    eventually(30, "bob to move to the new epoch", || async {
        (bob.members(conv).ok()?.len() == 3).then_some(())
    })
    .await;
    alice.send_to(conv, "after dave left").await.expect("posts");
    for n in [bob, carol] {
        sees(30, "message after the removal", n, conv, "after dave left").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!has_text(dave, conv, "after dave left").await);
    // At most the removal notice itself reached dave.
    assert!(incoming(dave) <= before + 1);
    // Bob joined after alice, so he may not remove her.
    assert!(bob.remove_member(conv, "alice").await.is_err());
    // Everyone who stayed shows the same messages in the same order.
    let a = texts(alice, conv);
    eventually(30, "the same history everywhere", || async {
        (texts(bob, conv) == a && texts(carol, conv) == a).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_form_by_mention_add_remove_and_catch_up() {
    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let carol = spawn(vec![b.clone()]).await;
    let dave = spawn(vec![b.clone()]).await;
    connect_and_register(&carol, "carol").await;
    connect_and_register(&dave, "dave").await;
    let conv = form_group_by_mentioning_carol(&alice.node, &bob.node, &carol.node).await;
    add_dave_by_mentioning_him(&alice.node, &carol.node, &dave.node, &conv).await;
    let carol = carol_catches_up_after_being_away(
        &alice.node,
        &bob.node,
        carol,
        &dave.node,
        &conv,
        vec![b],
    )
    .await;
    alice_removes_dave(&alice.node, &bob.node, &carol.node, &dave.node, &conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_group_messages_are_not_shown() {
    use kith_protocol::group::{topic, GroupEnvelope};
    use kith_protocol::{Content, ConversationId, Message, MessageId, Text};

    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let carol = spawn(vec![b.clone()]).await;
    eventually(10, "connection", || async {
        (carol.node.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    carol.node.register("carol").await.expect("registers");
    let first = alice.node.send_to("bob", "hello @carol").await.expect("group");
    let conv = format!("#{}", first.conversation);
    for n in [&bob.node, &carol.node] {
        eventually(30, "the first message", || async {
            has_text(n, &conv, "hello @carol").await.then_some(())
        })
        .await;
    }
    // Mallory is no member; she joins the topic through alice.
    let mallory = spawn(vec![b]).await;
    mallory.node.network().dial(addr(&alice.node).await).await.expect("dial");
    let group = ConversationId::parse(&first.conversation).expect("id");
    mallory.node.network().subscribe(topic(&group), true).await.expect("subscribe");
    let id = IdentityKeypair::generate(&mut rand::rngs::OsRng);
    let dev = DeviceKeypair::generate(&mut rand::rngs::OsRng);
    let cert = DeviceCertificate::issue(
        &id,
        &dev,
        &X25519Secret::generate(&mut rand::rngs::OsRng),
        1,
        "m",
    );
    let forged = Message {
        v: kith_protocol::VERSION,
        id: MessageId::random(&mut rand::rngs::OsRng),
        conversation: group,
        sender: id.user_id(),
        sent_at: kith_node::now_ms(),
        content: Content::Text(Text { body: "forged".into() }),
    };
    let forged =
        GroupEnvelope::seal(&mut rand::rngs::OsRng, &[7; 32], 1, (&cert, &dev), Some(1), &forged)
            .expect("seal")
            .to_bytes();
    let before = alice.node.status().await.expect("status").rejected.envelopes;
    eventually(20, "the forged message to be published", || async {
        mallory.node.network().publish(topic(&group), forged.clone()).await.ok()?.ok()
    })
    .await;
    eventually(20, "the forgery to be rejected", || async {
        (alice.node.status().await.ok()?.rejected.envelopes > before).then_some(())
    })
    .await;
    // A replay of a real message, captured and re-published by mallory.
    let raw = bob.node.group_envelopes(&conv, 10).expect("envelopes");
    let _ = mallory.node.network().publish(topic(&group), raw[0].clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&alice.node, &bob.node, &carol.node] {
        let t = texts(n, &conv);
        assert!(!t.iter().any(|x| x == "forged"), "{t:?}");
        assert_eq!(t.iter().filter(|x| *x == "hello @carol").count(), 1, "{t:?}");
    }
}

/// A bootstrap node and `size` nodes on it, each connected and registered as `name(i)`.
async fn registered(size: usize, name: impl Fn(usize) -> String) -> (TestNode, Vec<TestNode>) {
    let boot = spawn(vec![]).await;
    let b = addr(&boot.node).await;
    let mut nodes = Vec::with_capacity(size);
    for i in 0..size {
        let n = spawn(vec![b.clone()]).await;
        eventually(20, "connection", || async {
            (n.node.status().await.ok()?.connected_peers > 0).then_some(())
        })
        .await;
        n.node.register(&name(i)).await.expect("registers");
        nodes.push(n);
    }
    (boot, nodes)
}

/// A group of `KITH_GROUP_SIZE` members (default 100): formed by one message that mentions
/// everyone, then every member receives a message from the last one to join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_a_hundred() {
    let size: usize =
        std::env::var("KITH_GROUP_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let started = std::time::Instant::now();
    let (_boot, nodes) = registered(size, |i| format!("member{i:03}")).await;
    eprintln!("{size} nodes up and registered in {:?}", started.elapsed());
    let mention: Vec<String> = (2..size).map(|i| format!("@member{i:03}")).collect();
    let text = format!("welcome {}", mention.join(" "));
    let first = nodes[0].node.send_to("member001", &text).await.expect("group formed");
    let conv = format!("#{}", first.conversation);
    assert_eq!(nodes[0].node.members(&conv).expect("members").len(), size);
    let last = &nodes[size - 1].node;
    eventually(120, "the last member to join", || async {
        has_text(last, &conv, &text).await.then_some(())
    })
    .await;
    last.send_to(&conv, "hello everyone").await.expect("posts");
    for (i, n) in nodes.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !has_text(&n.node, &conv, "hello everyone").await {
            if tokio::time::Instant::now() > deadline {
                let status = n.node.status().await.ok();
                panic!(
                    "timed out waiting for member{i:03} to receive; it has {:?}, members: {:?}, \
                     connected peers: {:?}",
                    texts(&n.node, &conv),
                    n.node.members(&conv).map(|m| m.len()),
                    status.map(|s| s.connected_peers),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "group of {size}: formed and every member received a message in {:?}",
        started.elapsed()
    );
}

/// The new members of a group hand its state on to each other (a tree rooted at its
/// creator, `rules::group::hand_on_to`): once the creator's own children in the tree have the
/// state, the creator stops, and every other member still joins and gets the first message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_members_hand_the_group_state_on_without_its_creator() {
    let size = 20;
    let fanout = kith_node::services::groups::HAND_ON_FANOUT;
    let (_boot, mut nodes) = registered(size, |i| format!("hand{i:02}")).await;
    let mention: Vec<String> = (2..size).map(|i| format!("@hand{i:02}")).collect();
    let text = format!("barbecue on sunday {}", mention.join(" "));
    let first = nodes[0].node.send_to("hand01", &text).await.expect("group formed");
    let conv = format!("#{}", first.conversation);
    let joined = |n: &Node| n.members(&conv).map(|m| m.len() == size).unwrap_or(false);
    for n in &nodes[1..=fanout] {
        eventually(60, "the creator's children to join", || async {
            (joined(&n.node) && has_text(&n.node, &conv, &text).await).then_some(())
        })
        .await;
    }
    let creator = nodes.remove(0);
    creator.node.shutdown().await.expect("the creator stops");
    drop(creator);
    for (i, n) in nodes.iter().enumerate().skip(fanout) {
        eventually(90, &format!("hand{:02} to join and catch up", i + 1), || async {
            (joined(&n.node) && has_text(&n.node, &conv, &text).await).then_some(())
        })
        .await;
    }
}

async fn join(
    code: &str,
    home: &std::path::Path,
    label: &str,
    history: bool,
) -> Result<kith_node::link::JoinInfo, NodeError> {
    let options = kith_node::link::JoinOptions {
        code: code.to_owned(),
        label: label.to_owned(),
        history,
        transport: TransportKind::Memory,
        timeout: Duration::from_secs(20),
    };
    kith_node::link::join(&Home::new(home), options, |_| {}).await
}

async fn link(from: &Node, bootstrap: Vec<Multiaddr>, history: bool) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let code = from.link_start().await.expect("link code");
    let info = join(&code.code, &home, "laptop", history).await.expect("joins");
    assert_eq!(info.user_id, from.user_id().to_string());
    assert_eq!(from.link_status(&code.id).expect("state").state, "linked");
    // The same code again is refused.
    let again = join(&code.code, &dir.path().join("other"), "thief", false)
        .await
        .expect_err("a used code is refused");
    assert!(again.to_string().contains("not valid"), "{again}");
    assert!(!Home::new(dir.path().join("other")).is_initialized());
    let node = start(&home, bootstrap).await;
    TestNode { node, home, _dir: Some(dir) }
}

fn direct_texts(n: &Node, with: &str, direction: &str) -> Vec<String> {
    n.messages(Some(with), 1000)
        .map(|m| {
            m.into_iter().filter(|m| m.direction == direction).filter_map(|m| m.text).collect()
        })
        .unwrap_or_default()
}

/// Waits up to `secs` seconds for `text` among the `direction` messages of `n` with `with`.
async fn sees_direct(secs: u64, what: &str, n: &Node, with: &str, direction: &str, text: &str) {
    eventually(secs, what, || async {
        direct_texts(n, with, direction).contains(&text.to_owned()).then_some(())
    })
    .await;
}

/// A stale code is refused with a clear error.
async fn a_stale_code_is_refused(alice: &Node) {
    let stale = alice.link_start_with(1).await.expect("code");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let err = join(&stale.code, &dir.path().join("h"), "late", false)
        .await
        .expect_err("stale code refused");
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Links a laptop to alice with the history; the linked device holds no identity key.
async fn link_a_laptop(alice: &Node, bob: &Node, bootstrap: Vec<Multiaddr>) -> TestNode {
    let laptop = link(alice, bootstrap, true).await;
    assert_eq!(laptop.node.user_id(), alice.user_id());
    assert_eq!(laptop.node.name().as_deref(), Some("alice"));
    assert!(direct_texts(&laptop.node, "bob", "in").contains(&"before the laptop".to_owned()));
    assert!(matches!(laptop.node.register("alice2").await, Err(NodeError::NoIdentityKey)));
    let devices = alice.devices().await.expect("devices");
    assert_eq!(devices.len(), 2);
    assert_eq!(bob.resolve("alice").await.expect("resolves").devices.len(), 2);
    laptop
}

/// Bob's message reaches both of alice's devices; each device's own messages show as sent on
/// the other; reading on the phone marks the conversation read on the laptop too.
async fn direct_messages_reach_both_devices(alice: &Node, bob: &Node, laptop: &Node) {
    bob.send_text("alice", "to both of you").await.expect("sent");
    alice.send_text("bob", "from the phone").await.expect("sent");
    laptop.send_text("bob", "from the laptop").await.expect("sent");
    for (n, with, text, dir) in [
        (alice, "bob", "to both of you", "in"),
        (laptop, "bob", "to both of you", "in"),
        (laptop, "bob", "from the phone", "out"),
        (alice, "bob", "from the laptop", "out"),
        (bob, "alice", "from the phone", "in"),
        (bob, "alice", "from the laptop", "in"),
    ] {
        sees_direct(30, text, n, with, dir, text).await;
    }
    // The conversation list counts what is unread and names the last message.
    let chat_with_bob = |n: &Node| {
        let all = n.conversation_summaries().expect("summaries");
        all.into_iter().find(|c| c.conversation.members.contains(&"bob".to_owned()))
    };
    let before = chat_with_bob(alice).expect("the chat with bob is listed");
    assert!(before.unread >= 1, "{before:?}");
    assert!(before.last.is_some(), "{before:?}");
    assert!(alice.mark_read("@bob").await.expect("read") >= 2);
    assert_eq!(chat_with_bob(alice).expect("listed").unread, 0);
    eventually(30, "read state on the laptop", || async {
        let m = laptop.messages(Some("bob"), 100).ok()?;
        m.iter().filter(|m| m.direction == "in").all(|m| m.status == "read").then_some(())
    })
    .await;
    let on_phone = direct_texts(alice, "bob", "out");
    assert_eq!(on_phone.iter().filter(|t| *t == "from the laptop").count(), 1);
}

/// A group formed by bob reaches both of alice's devices; the laptop can post. Returns the
/// group's short conversation name.
async fn a_group_reaches_both_devices(
    alice: &Node,
    bob: &Node,
    carol: &Node,
    laptop: &Node,
) -> String {
    let first = bob.send_to("@alice", "hi @carol").await.expect("group");
    let conv = format!("#{}", &first.conversation[..8]);
    for n in [alice, laptop, carol] {
        sees(30, "group invite", n, &conv, "hi @carol").await;
    }
    laptop.send_to(&conv, "laptop in the group").await.expect("posts");
    for n in [alice, bob, carol] {
        sees(30, "laptop's post", n, &conv, "laptop in the group").await;
    }
    conv
}

/// Revokes the laptop: out of the record, no new direct or group messages, and its own
/// messages are refused.
async fn a_revoked_laptop_gets_nothing_new(
    alice: &Node,
    bob: &Node,
    carol: &Node,
    laptop: &Node,
    conv: &str,
) {
    let gone = alice.revoke_device(&laptop.peer_id().to_string()).await.expect("revokes");
    assert_eq!(gone.peer_id, laptop.peer_id().to_string());
    assert_eq!(alice.devices().await.expect("devices").len(), 1);
    assert_eq!(bob.resolve("alice").await.expect("resolves").devices.len(), 1);
    bob.send_text("alice", "after the revocation").await.expect("sent");
    alice.send_text("bob", "phone after the revocation").await.expect("sent");
    sees_direct(30, "the phone still gets messages", alice, "bob", "in", "after the revocation")
        .await;
    eventually(60, "a new epoch on carol", || async {
        let g = carol.conversations().ok()?;
        g.iter().any(|c| c.kind == "group").then_some(())
    })
    .await;
    // Give the rekey time to reach everyone, then post in the new epoch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    bob.send_to(conv, "group after the revocation").await.expect("posts");
    sees(30, "the phone sees the group", alice, conv, "group after the revocation").await;
    let refused = laptop.send_text("bob", "from a revoked laptop").await;
    // The laptop still holds the old epoch's key, whose messages members accept for a grace
    // period; bob holds the record without the laptop, so he refuses it anyway.
    laptop.send_to(conv, "laptop in the group after the revocation").await.expect("posts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!has_text(bob, conv, "laptop in the group after the revocation").await);
    let laptop_in = direct_texts(laptop, "bob", "in");
    assert!(!laptop_in.contains(&"after the revocation".to_owned()), "{laptop_in:?}");
    assert!(!direct_texts(laptop, "bob", "out").contains(&"phone after the revocation".to_owned()));
    assert!(!has_text(laptop, conv, "group after the revocation").await);
    if refused.is_ok() {
        assert!(!direct_texts(bob, "alice", "in").contains(&"from a revoked laptop".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_devices_share_conversations_and_revoked_ones_get_nothing_new() {
    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let carol = spawn(vec![b.clone()]).await;
    connect_and_register(&carol, "carol").await;
    bob.node.send_text("alice", "before the laptop").await.expect("sent");
    sees_direct(20, "first message", &alice.node, "bob", "in", "before the laptop").await;
    a_stale_code_is_refused(&alice.node).await;
    let laptop = link_a_laptop(&alice.node, &bob.node, vec![b]).await;
    direct_messages_reach_both_devices(&alice.node, &bob.node, &laptop.node).await;
    let conv =
        a_group_reaches_both_devices(&alice.node, &bob.node, &carol.node, &laptop.node).await;
    a_revoked_laptop_gets_nothing_new(&alice.node, &bob.node, &carol.node, &laptop.node, &conv)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_phrase_restores_the_identity_and_keeps_its_devices() {
    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let phrase = kith_node::home::Home::new(&alice.home)
        .load_keys()
        .ok()
        .and_then(|k| k.identity)
        .map(|k| kith_protocol::link::recovery_phrase(&k))
        .expect("phrase");
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("restored");
    let identity = kith_protocol::link::from_recovery_phrase(&phrase).expect("valid phrase");
    Home::new(&home).init_with(identity, "restored", kith_node::now_ms()).expect("init");
    let restored = start(&home, vec![b]).await;
    assert_eq!(restored.user_id(), alice.node.user_id());
    eventually(10, "connection", || async {
        (restored.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    restored.register("alice").await.expect("the same identity may take its name back");
    let r = bob.node.resolve("alice").await.expect("resolves");
    assert_eq!(r.devices.len(), 2, "the restored device is added next to the old one");
    // The old device's next record keeps the restored one (the newer record's list wins).
    alice.node.register("alice").await.expect("republishes");
    let r = bob.node.resolve("alice").await.expect("resolves");
    assert_eq!(r.devices.len(), 2, "the old device keeps the restored one listed");
    bob.node.send_text("alice", "to the restored one").await.expect("sent");
    eventually(30, "restored device receives", || async {
        direct_texts(&restored, "bob", "in")
            .contains(&"to the restored one".to_owned())
            .then_some(())
    })
    .await;
}

/// Sends one request over a new connection; returns the answer's status line and body.
async fn http(
    addr: std::net::SocketAddr,
    request: &str,
    token: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{request} HTTP/1.1\r\nHost: kith\r\nAuthorization: Bearer {token}\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

async fn http_get(addr: std::net::SocketAddr, path: &str, token: &str) -> std::io::Result<String> {
    Ok(http(addr, &format!("GET {path}"), token, "", "").await?.0)
}

/// Starts the API of `node` on a free loopback port with `token`; stop it with the sender.
fn serve_api(
    node: &Node,
    token: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), NodeError>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(kith_node::api::serve(node.clone(), listener, token.to_owned(), async {
            let _ = stop_rx.await;
        }));
    (addr, stop_tx, server)
}

/// A bad `limit=` is a JSON error like every other; a send retried with the same
/// `Idempotency-Key` creates one message, and the retry says it was replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_bad_queries_in_json_and_replays_idempotent_sends() {
    let n = spawn(vec![]).await;
    let (api, stop, server) = serve_api(&n.node, "t");
    let (status, body) = http(api, "GET /v1/messages?limit=abc", "t", "", "").await.expect("get");
    assert!(status.contains("400"), "{status}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).expect("a JSON error");
    assert_eq!(v["code"], "bad_request");

    let send = |key: &'static str| async move {
        let headers = format!("Idempotency-Key: {key}\r\n");
        http(api, "POST /v1/messages", "t", &headers, r#"{"to": "@carol", "text": "hi"}"#)
            .await
            .expect("post")
    };
    let (s1, b1) = send("retry-1").await;
    let (s2, b2) = send("retry-1").await;
    let (s3, b3) = send("retry-2").await;
    assert!(s1.contains("202") && s2.contains("200") && s3.contains("202"), "{s1} {s2} {s3}");
    let (v1, v2, v3): (serde_json::Value, serde_json::Value, serde_json::Value) = (
        serde_json::from_str(b1.trim()).expect("json"),
        serde_json::from_str(b2.trim()).expect("json"),
        serde_json::from_str(b3.trim()).expect("json"),
    );
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(v2["replayed"], true);
    assert_ne!(v1["id"], v3["id"]);
    let texts = n.node.messages(None, 100).expect("history");
    assert_eq!(texts.iter().filter(|m| m.text.as_deref() == Some("hi")).count(), 2);
    let (bad, _) = http(
        api,
        "POST /v1/messages",
        "t",
        "Idempotency-Key: \r\n",
        r#"{"to": "@carol", "text": "x"}"#,
    )
    .await
    .expect("post");
    assert!(bad.contains("400"), "{bad}");
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

/// Whether the server closed `s`: reading it reaches the end of the stream (or a reset) soon,
/// after whatever the server sent last.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Slow-loris connections (headers dribbled a byte at a time) and a flood of idle connections,
/// well beyond the API's connection limit, do not keep its owner out: each of the owner's
/// requests is answered within a second. A slow-loris connection is closed once its header
/// time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_its_owner_through_slow_loris_and_idle_floods() {
    use tokio::io::AsyncWriteExt;
    let n = spawn(vec![]).await;
    let token = "owner-token".to_owned();
    let (api, stop_tx, server) = serve_api(&n.node, &token);
    let started = tokio::time::Instant::now();
    // 100 slow-loris connections, each sending a byte of its headers every second.
    let mut loris = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(api).await.expect("connect");
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: k").await.expect("write");
        loris.push(s);
    }
    let dribble = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            closed = 0;
            for s in &mut loris {
                if s.write_all(b"x").await.is_err() {
                    closed += 1;
                }
            }
        }
        let mut ended = 0;
        for s in &mut loris {
            ended += usize::from(closed_by_server(s).await);
        }
        (closed, ended)
    });
    // 300 idle connections that never send anything.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tokio::net::TcpStream::connect(api).await {
            idle.push(s);
        }
    }
    // The owner is served throughout.
    for i in 0..10 {
        let answer =
            tokio::time::timeout(Duration::from_secs(1), http_get(api, "/v1/status", &token))
                .await
                .unwrap_or_else(|_| panic!("request {i} was not answered within a second"))
                .expect("request");
        assert!(answer.contains("200"), "request {i}: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Without the token: refused, as JSON.
    let answer = http_get(api, "/v1/status", "wrong").await.expect("request");
    assert!(answer.contains("401"), "{answer}");
    // The server closed what it could not keep: the idle connections beyond its limit (made
    // room for others) ...
    let mut idle_ended = 0;
    for s in &mut idle {
        idle_ended += usize::from(closed_by_server(s).await);
    }
    assert!(
        idle.len() - idle_ended <= kith_node::http::MAX_CONNECTIONS,
        "{} of {} idle connections still open",
        idle.len() - idle_ended,
        idle.len()
    );
    // ... and every slow-loris connection, by its header time at the latest.
    let (_, ended) = dribble.await.expect("dribble");
    assert!(started.elapsed() >= kith_node::http::HEADER_READ_TIMEOUT);
    assert_eq!(ended, 100, "every slow-loris connection was closed");
    drop(idle);
    let _ = stop_tx.send(());
    server.await.expect("server task").expect("server");
}

/// Reads one HTTP response (headers and a `Content-Length` body) from `s`; its status line,
/// or `None` if the server closed the connection first.
async fn read_response(s: &mut tokio::net::TcpStream) -> Option<String> {
    let whole = read_full_response(s).await?;
    whole.lines().next().map(str::to_owned)
}

/// Reads one HTTP response (with a `Content-Length` body) whole: head and body.
async fn read_full_response(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got[..end + 4 + len]).into_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&b[..n]);
    }
}

/// A request whose handler takes no body, with the body arriving after the headers, leaves
/// the kept-alive connection usable: the next request on it is answered. (hyper closes a
/// connection whose request body was dropped unread; the CLI then failed with "disconnected".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_after_its_headers_keeps_the_connection_alive() {
    use tokio::io::AsyncWriteExt;
    let n = spawn(vec![]).await;
    let token = "owner-token".to_owned();
    let (api, stop_tx, server) = serve_api(&n.node, &token);
    let mut s = tokio::net::TcpStream::connect(api).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let id = "00112233445566778899aabbccddeeff";
    let head = format!(
        "POST /v1/messages/{id}/download HTTP/1.1\r\nHost: kith\r\nAuthorization: Bearer \
         {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("headers");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"{}").await.expect("body");
    let first = read_response(&mut s).await.expect("the download's answer");
    assert!(first.contains("404"), "{first}");
    let next =
        format!("GET /v1/status HTTP/1.1\r\nHost: kith\r\nAuthorization: Bearer {token}\r\n\r\n");
    // The write may succeed even on a closed connection; the answer tells.
    let _ = s.write_all(next.as_bytes()).await;
    let second = read_response(&mut s).await;
    assert!(
        second.as_deref().is_some_and(|l| l.contains("200")),
        "the connection was closed after the first answer: {second:?}"
    );
    let _ = stop_tx.send(());
    server.await.expect("server task").expect("server");
}

/// Writes `len` pseudo-random bytes to a file under `dir` and returns its path.
fn random_file(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(len as u64).fill_bytes(&mut bytes);
    let path = dir.join(format!("file-{len}.bin"));
    std::fs::write(&path, &bytes).expect("write the file");
    path
}

fn file_meta(name: &str) -> kith_node::node::FileMeta {
    kith_node::node::FileMeta {
        name: Some(name.into()),
        mime: "application/octet-stream".into(),
        caption: Some("for you".into()),
        ..kith_node::node::FileMeta::default()
    }
}

/// The attachment state of message `id` on `n`.
fn blob_state(n: &Node, id: &str) -> String {
    n.message(id).ok().and_then(|m| m.attachment).map(|a| a.state.to_owned()).unwrap_or_default()
}

/// A file alice sends reaches bob as an attachment that downloads on request and saves
/// byte-identical; bob's other copy is the same file, and alice's shows it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reaches_a_contact_whole() {
    let (_boot, alice, bob) = network().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(dir.path(), 3 * 256 * 1024 + 1000);
    let sent = alice.node.send_file("@bob", &src, file_meta("data.bin")).await.expect("sent");
    let a = sent.attachment.expect("an attachment view");
    assert_eq!((a.state, a.size, a.name.as_deref()), ("complete", 787_432, Some("data.bin")));
    eventually(20, "delivery", || async { delivered(&alice.node, &sent.id).await.then_some(()) })
        .await;
    // Not an image: it waits for bob to ask.
    assert_eq!(blob_state(&bob.node, &sent.id), "available");
    let got = bob.node.message(&sent.id).expect("bob has it");
    assert_eq!(got.attachment.as_ref().and_then(|a| a.caption.as_deref()), Some("for you"));
    let out = dir.path().join("saved.bin");
    let n = bob.node.save_attachment(&sent.id, &out).await.expect("saved");
    assert_eq!(n, 787_432);
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&src).expect("read"));
    let view = bob.node.message(&sent.id).expect("view").attachment.expect("attachment");
    assert_eq!(view.state, "complete");
    assert_eq!(view.saved_to.as_deref(), Some(out.to_string_lossy().as_ref()));

    // A send refused after sealing (a file name over 256 bytes) leaves no blob behind.
    let blobs =
        |home: &std::path::Path| std::fs::read_dir(home.join("blobs")).map_or(0, Iterator::count);
    let before = blobs(&alice.home);
    let refused = alice.node.send_file("@bob", &src, file_meta(&"n".repeat(300))).await;
    assert!(matches!(refused, Err(NodeError::BadInput(_))), "{refused:?}");
    assert_eq!(blobs(&alice.home), before);

    // A photo comes with a preview and its size, and downloads by itself.
    let png = dir.path().join("sunset.png");
    image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(&png)
        .expect("a picture");
    let meta = kith_node::node::FileMeta { mime: "image/png".into(), ..file_meta("sunset.png") };
    let photo = alice.node.send_file("@bob", &png, meta).await.expect("sent");
    eventually(20, "the photo, downloaded by itself", || async {
        (blob_state(&bob.node, &photo.id) == "complete").then_some(())
    })
    .await;
    let a = bob.node.message(&photo.id).expect("view").attachment.expect("attachment");
    assert_eq!((a.width, a.height, a.preview), (Some(300), Some(200), true));
    let preview = bob.node.preview(&photo.id).expect("read").expect("a preview");
    assert_eq!(&preview.bytes[..2], &[0xff, 0xd8], "a JPEG");
}

/// A photo sent to bob while he is offline arrives after alice went offline too: her mailbox
/// holds the blob, bob fetches it from there, and the chunks alice's damaged copy serves (she
/// is back) are refused and fetched from the mailbox instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_comes_from_the_mailbox_and_a_bad_chunk_is_refused() {
    let (boot, alice, bob) =
        network_with(MailboxConfig { enabled: true, ..MailboxConfig::default() }).await;
    let mb = addr(&boot.node).await;
    alice.node.add_mailbox(&mb.to_string()).await.expect("alice enrolls");
    bob.node.add_mailbox(&mb.to_string()).await.expect("bob enrolls");
    alice.node.resolve("bob").await.expect("alice knows bob");
    let TestNode { node: bob_node, home: bob_home, _dir: _bob_dir } = bob;
    bob_node.shutdown().await.expect("stops");
    drop(bob_node);

    let dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(dir.path(), 5 * 256 * 1024);
    let meta = kith_node::node::FileMeta { mime: "image/jpeg".into(), ..file_meta("cat.jpg") };
    let sent = alice.node.send_file("@bob", &src, meta).await.expect("sent");
    eventually(60, "the mailbox holds the blob and the message", || async {
        let m = alice.node.message(&sent.id).ok()?;
        (m.status == "stored" && m.attachment?.held_by_mailbox).then_some(())
    })
    .await;
    let TestNode { node: alice_node, home: alice_home, _dir: _alice_dir } = alice;
    alice_node.shutdown().await.expect("stops");
    drop(alice_node);

    // Bob is back; alice is not. An image under the limit downloads by itself.
    let bob2 = start(&bob_home, vec![mb.clone()]).await;
    eventually(60, "the photo, from the mailbox", || async {
        (blob_state(&bob2, &sent.id) == "complete").then_some(())
    })
    .await;
    let out = dir.path().join("cat.jpg");
    bob2.save_attachment(&sent.id, &out).await.expect("saved");
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&src).expect("read"));

    // Alice is back with a damaged copy; bob forgets his and fetches it again, from alice (its
    // sender) and the mailbox.
    let hash = bob2.message(&sent.id).expect("view").attachment.expect("attachment").hash;
    // Every chunk of alice's copy is damaged: whichever she is asked for is refused.
    let data = alice_home.join("blobs").join(&hash).join("chunks");
    let mut bytes = std::fs::read(&data).expect("alice's copy");
    for i in 0..5 {
        // Chunks at page boundaries, 256 KiB + 4 KiB apart.
        bytes[i * (256 * 1024 + 4096) + 100] ^= 1;
    }
    std::fs::write(&data, &bytes).expect("damage it");
    let alice2 = start(&alice_home, vec![mb]).await;
    eventually(20, "alice connected", || async {
        (alice2.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    bob2.shutdown().await.expect("stops");
    drop(bob2);
    std::fs::remove_dir_all(bob_home.join("blobs").join(&hash)).expect("forget the blob");
    let bob3 = start(&bob_home, vec![addr(&boot.node).await]).await;
    eventually(20, "bob connected", || async {
        (bob3.status().await.ok()?.connected_peers > 0).then_some(())
    })
    .await;
    // A message delivered to alice first, so that her device is reachable when the fetch
    // starts (else every chunk may come from the mailbox, and none from her damaged copy).
    let hello = bob3.send_text("@alice", "back again").await.expect("sent");
    eventually(60, "bob's message delivered to alice", || async {
        delivered(&bob3, &hello.id).await.then_some(())
    })
    .await;
    bob3.download(&sent.id).await.expect("downloaded again");
    let out2 = dir.path().join("cat2.jpg");
    bob3.save_attachment(&sent.id, &out2).await.expect("saved");
    assert_eq!(std::fs::read(&out2).expect("read"), std::fs::read(&src).expect("read"));
    let rejected = bob3
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("kith_blob_chunks_rejected_total ")?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(rejected >= 1, "the damaged chunk was not refused");
}

/// A photo posted to a group of six reaches every member whole, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_posted_to_a_group_reaches_every_member() {
    let size = 6;
    let (_boot, nodes) = registered(size, |i| format!("pic{i:02}")).await;
    let mention: Vec<String> = (2..size).map(|i| format!("@pic{i:02}")).collect();
    let text = format!("photos tonight {}", mention.join(" "));
    let first = nodes[0].node.send_to("pic01", &text).await.expect("group formed");
    let conv = format!("#{}", first.conversation);
    for n in &nodes[1..] {
        sees(60, "the group's first message", &n.node, &conv, &text).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = random_file(dir.path(), 9 * 256 * 1024 + 77);
    let meta = kith_node::node::FileMeta { mime: "image/jpeg".into(), ..file_meta("party.jpg") };
    let sent = nodes[0].node.send_file(&conv, &src, meta).await.expect("posted");
    assert!(sent.to.starts_with('#'), "a group message: {sent:?}");
    for (i, n) in nodes.iter().enumerate().skip(1) {
        eventually(60, &format!("member {i} to hold the photo"), || async {
            (blob_state(&n.node, &sent.id) == "complete").then_some(())
        })
        .await;
        let out = dir.path().join(format!("party-{i}.jpg"));
        n.node.save_attachment(&sent.id, &out).await.expect("saved");
        assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&src).expect("read"));
    }
}

/// A file bob received before he linked a laptop (with the history), in a direct chat and in a
/// group, is fetched by the laptop on request; a file he sends from the phone later shows on the laptop too,
/// which fetches it from the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_fetches_old_and_new_files_from_the_users_other_device() {
    let (boot, alice, bob) = network().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let old = random_file(dir.path(), 2 * 256 * 1024 + 5);
    let sent = alice.node.send_file("@bob", &old, file_meta("old.bin")).await.expect("sent");
    eventually(20, "delivery", || async { delivered(&alice.node, &sent.id).await.then_some(()) })
        .await;
    bob.node.download(&sent.id).await.expect("bob's phone downloads it");
    // And one posted to a group (alice, bob and carol) before the laptop was linked.
    boot.node.register("carol").await.expect("carol registers");
    let first = alice.node.send_to("bob", "pictures @carol").await.expect("group formed");
    let conv = format!("#{}", first.conversation);
    sees(60, "the group's first message", &bob.node, &conv, "pictures @carol").await;
    let pic = random_file(dir.path(), 256 * 1024 + 3);
    let meta = kith_node::node::FileMeta { mime: "image/jpeg".into(), ..file_meta("group.jpg") };
    let posted = alice.node.send_file(&conv, &pic, meta).await.expect("posted");
    eventually(60, "bob's phone to hold the group's photo", || async {
        (blob_state(&bob.node, &posted.id) == "complete").then_some(())
    })
    .await;
    let laptop = link(&bob.node, vec![addr(&boot.node).await], true).await;
    assert_eq!(blob_state(&laptop.node, &sent.id), "available");
    let out = dir.path().join("old-on-laptop.bin");
    laptop.node.save_attachment(&sent.id, &out).await.expect("the laptop saves it");
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&old).expect("read"));
    let out = dir.path().join("group-on-laptop.jpg");
    laptop.node.save_attachment(&posted.id, &out).await.expect("the laptop saves the photo");
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&pic).expect("read"));

    let new = random_file(dir.path(), 256 * 1024 + 9);
    let mine = bob.node.send_file("@alice", &new, file_meta("new.bin")).await.expect("sent");
    eventually(30, "the laptop's copy of bob's file message", || async {
        laptop.node.message(&mine.id).ok().and_then(|m| m.attachment).map(|_| ())
    })
    .await;
    let out = dir.path().join("new-on-laptop.bin");
    laptop.node.save_attachment(&mine.id, &out).await.expect("the laptop saves it");
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&new).expect("read"));
}

/// Sends one request with a binary body over a new connection; returns the status line, the
/// headers (lowercased names) and the body.
async fn http_bytes(
    addr: std::net::SocketAddr,
    request: &str,
    headers: &str,
    body: &[u8],
) -> (String, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{request} HTTP/1.1\r\nHost: kith\r\nAuthorization: Bearer t\r\n{headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head, answer[split + 4..].to_vec())
}

/// Files through the API: a multipart upload with a poster frame (its preview and size), the
/// plaintext back with a byte range, and a file of a dangerous type served only as a sandboxed
/// download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_multipart_files_and_serves_ranges_safely() {
    let n = spawn(vec![]).await;
    let (api, stop, server) = serve_api(&n.node, "t");
    let clip: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut poster = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(64, 48, |x, _| image::Rgb([x as u8 * 4, 80, 160]))
        .write_to(&mut poster, image::ImageFormat::Png)
        .expect("a poster");
    let b = "kithboundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n\
             Content-Type: video/mp4\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&clip);
    body.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Disposition: form-data; name=\"poster\"; filename=\"p.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(poster.get_ref());
    body.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nour clip\r\n\
             --{b}--\r\n"
        )
        .as_bytes(),
    );
    let headers = format!("Content-Type: multipart/form-data; boundary={b}\r\n");
    let (status, _, answer) =
        http_bytes(api, "POST /v1/attachments?to=%40carol", &headers, &body).await;
    assert!(status.contains("202"), "{status}: {}", String::from_utf8_lossy(&answer));
    let m: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    let a = &m["attachment"];
    assert_eq!((a["name"].as_str(), a["mime"].as_str()), (Some("clip.mp4"), Some("video/mp4")));
    assert_eq!((a["preview"].as_bool(), a["width"].as_u64()), (Some(true), Some(64)));
    assert_eq!(a["caption"], "our clip");
    let id = m["id"].as_str().expect("id");

    let (status, head, part) =
        http_bytes(api, &format!("GET /v1/messages/{id}/file"), "Range: bytes=1000-1999\r\n", b"")
            .await;
    assert!(status.contains("206"), "{status}");
    assert_eq!(part, clip[1000..2000]);
    assert!(head.contains("content-range: bytes 1000-1999/300000"), "{head}");
    assert!(head.contains("content-type: video/mp4"), "{head}");
    let (status, _, whole) = http_bytes(api, &format!("GET /v1/messages/{id}/file"), "", b"").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(whole, clip);
    let (status, head, jpeg) =
        http_bytes(api, &format!("GET /v1/messages/{id}/preview"), "", b"").await;
    assert!(status.contains("200") && head.contains("image/jpeg"), "{status} {head}");
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);

    // A page from a peer is never served as a page.
    let page = b"<script>alert(1)</script>";
    let (status, _, answer) = http_bytes(
        api,
        "POST /v1/attachments?to=%40carol&name=x.html",
        "Content-Type: text/html\r\n",
        page,
    )
    .await;
    assert!(status.contains("202"), "{status}");
    let m: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    let id = m["id"].as_str().expect("id");
    let (_, head, _) = http_bytes(api, &format!("GET /v1/messages/{id}/file"), "", b"").await;
    assert!(head.contains("content-type: application/octet-stream"), "{head}");
    assert!(head.contains("content-security-policy: sandbox"), "{head}");
    assert!(head.contains("content-disposition: attachment"), "{head}");
    let (status, _, _) =
        http_bytes(api, &format!("GET /v1/messages/{id}/file"), "Range: bytes=900-\r\n", b"").await;
    assert!(status.contains("416"), "{status}");
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

/// The web app: its page and files with a strict CSP, a one-time login link that sets an
/// HttpOnly SameSite=Strict cookie, the cookie accepted by the API, and a request changing
/// something with the cookie refused unless it comes from the page's own origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_logs_in_once_and_refuses_other_origins() {
    use tokio::io::AsyncWriteExt;
    let n = spawn(vec![]).await;
    let token = "owner-token".to_owned();
    let (api, stop_tx, server) = serve_api(&n.node, &token);
    let host = api.to_string();
    let request = |text: String| async move {
        let mut s = tokio::net::TcpStream::connect(api).await.expect("connect");
        s.write_all(text.as_bytes()).await.expect("request");
        read_full_response(&mut s).await.expect("an answer")
    };
    // The page and its files, with the security headers, and no other host named in them.
    let page = request(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(lower.contains("x-frame-options: deny"));
    assert!(!page.contains("http://") && !page.contains("https://"), "{page}");
    for file in ["app.js", "calls.js", "listen.js"] {
        let js = request(format!("GET /app/{file} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
        assert!(js.starts_with("HTTP/1.1 200") && js.contains("text/javascript"), "{js}");
        assert!(!js.contains("http://") && !js.contains("https://"), "{file} names another host");
    }
    let missing = request(format!("GET /app/nope.js HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // Without the token, no login link; with it, one.
    let ask = |auth: &str| {
        format!(
            "POST /v1/web/login HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: \
             application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        )
    };
    let refused = request(ask("")).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let answer = request(ask(&format!("Authorization: Bearer {token}\r\n"))).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    let link: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
    let path = link["path"].as_str().expect("a path").to_owned();
    assert!(path.starts_with("/login?code="), "{path}");

    // The link logs in once.
    let login = request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie_line = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie")
        .to_owned();
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    let cookie = cookie_line
        .split_once(':')
        .and_then(|(_, v)| v.trim().split(';').next())
        .expect("the cookie")
        .to_owned();
    let again = request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    assert!(again.starts_with("HTTP/1.1 403"), "a link works once: {again}");

    // The cookie reads; a wrong one does not.
    let status =
        request(format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n"))
            .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        cookie.starts_with(&format!("kith_session_{}=", host.rsplit(':').next().expect("port")))
    );
    let name = cookie.split('=').next().expect("a name");
    let wrong =
        request(format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nCookie: {name}=00\r\n\r\n"))
            .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");

    // A change with the cookie: refused without an Origin or from another one, taken from the
    // page's own.
    let post = |origin: &str| {
        let body = r#"{"with": "@nobody"}"#;
        format!(
            "POST /v1/read HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n{origin}Content-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for origin in ["".to_owned(), "Origin: http://evil.example\r\n".to_owned()] {
        let refused = request(post(&origin)).await;
        assert!(
            refused.starts_with("HTTP/1.1 403") && refused.contains("cross_origin"),
            "{refused}"
        );
    }
    let same = request(post(&format!("Origin: http://{host}\r\n"))).await;
    assert!(!same.contains("cross_origin") && !same.starts_with("HTTP/1.1 401"), "{same}");
    let _ = stop_tx.send(());
    server.await.expect("server task").expect("server");
}

/// The current call `id` of `n`, once `ok` holds for it.
async fn call_state(
    n: &Node,
    id: &str,
    what: &str,
    ok: impl Fn(&kith_node::node::CallView) -> bool,
) -> kith_node::node::CallView {
    eventually(20, what, || async { n.call(id).ok().filter(|c| ok(c)) }).await
}

/// The `call_signal` event of call `id` on `rx`.
async fn relayed(
    rx: &mut tokio::sync::broadcast::Receiver<kith_node::node::NodeEvent>,
    id: &str,
) -> kith_node::node::CallSignalView {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(kith_node::node::NodeEvent::CallSignal(s)) if s.call == id => return s,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("a relayed signal")
}

fn call_logs(n: &Node, with: &str) -> Vec<String> {
    n.messages(Some(with), 100)
        .map(|m| m.into_iter().filter(|m| m.kind == "call.log").filter_map(|m| m.text).collect())
        .unwrap_or_default()
}

/// Alice calls Bob, who has a phone and a laptop: both ring, the phone answers and the laptop
/// stops ringing; offers and answers travel between the two devices in the call; a late
/// answer on the laptop is refused; hanging up ends it on both sides, and the call's entry is
/// in both histories. Then a call nobody answers is missed on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_every_device_and_the_first_answer_takes_it() {
    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let laptop = link(&bob.node, vec![b], false).await;
    eventually(20, "alice sees both of bob's devices", || async {
        (alice.node.resolve("bob").await.ok()?.devices.len() == 2).then_some(())
    })
    .await;

    let call = alice.node.start_call("@bob", true).await.expect("call starts");
    assert_eq!((call.state.as_str(), call.direction.as_str()), ("calling", "out"));
    for n in [&bob.node, &laptop.node] {
        call_state(n, &call.id, "ringing on each of bob's devices", |c| c.state == "ringing").await;
    }
    let mut bob_events = bob.node.subscribe();
    let mut alice_events = alice.node.subscribe();
    let answered = bob.node.accept_call(&call.id).expect("bob answers");
    assert_eq!(answered.state, "active");
    let ended =
        call_state(&laptop.node, &call.id, "the laptop stops ringing", |c| c.state == "ended")
            .await;
    assert_eq!(ended.end_reason.as_deref(), Some("answered_elsewhere"));
    assert!(laptop.node.accept_call(&call.id).is_err(), "an ended call cannot be answered");
    let active =
        call_state(&alice.node, &call.id, "alice's call active", |c| c.state == "active").await;
    assert_eq!(active.participants.len(), 1);
    let bob_device = active.participants[0].device.clone();
    assert_eq!(active.participants[0].user, "bob");

    // The device with the smaller key offers; the other answers.
    let (offerer, answerer, offer_rx, answer_rx, to_offerer, to_answerer) =
        if active.offers_to == vec![bob_device.clone()] {
            (
                &alice.node,
                &bob.node,
                &mut bob_events,
                &mut alice_events,
                active.device.clone(),
                bob_device,
            )
        } else {
            (
                &bob.node,
                &alice.node,
                &mut alice_events,
                &mut bob_events,
                bob_device,
                active.device.clone(),
            )
        };
    offerer.call_signal(&call.id, &to_answerer, "offer", "v=0 offer".into()).expect("offer");
    let got = relayed(offer_rx, &call.id).await;
    assert_eq!(
        (got.kind, got.sdp.as_str(), got.from_device.as_str()),
        ("offer", "v=0 offer", to_offerer.as_str())
    );
    answerer.call_signal(&call.id, &to_offerer, "answer", "v=0 answer".into()).expect("answer");
    let got = relayed(answer_rx, &call.id).await;
    assert_eq!((got.kind, got.sdp.as_str()), ("answer", "v=0 answer"));
    let err = alice.node.call_signal(&call.id, &"00".repeat(32), "offer", "x".into());
    assert!(err.is_err(), "a signal to a device outside the call is refused");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let hung = alice.node.hang_up(&call.id).expect("alice hangs up");
    assert_eq!(hung.end_reason.as_deref(), Some("hung_up"));
    let left = call_state(&bob.node, &call.id, "bob's call ends", |c| c.state == "ended").await;
    assert_eq!(left.end_reason.as_deref(), Some("left"));
    for (n, with) in [(&alice.node, "bob"), (&bob.node, "alice"), (&laptop.node, "alice")] {
        eventually(20, "the call's entry in the history", || async {
            let logs = call_logs(n, with);
            (logs.len() == 1 && logs[0].starts_with("Video call, 0:0")).then_some(())
        })
        .await;
    }
    let (_, history) = alice.node.calls().expect("calls");
    assert_eq!(history[0].id, call.id);
    assert!(history[0].duration_ms >= 1_000, "{:?}", history[0]);

    // Nobody answers: missed on both sides after the ring time.
    let missed = bob.node.start_call("@alice", false).await.expect("call starts");
    call_state(&alice.node, &missed.id, "ringing at alice", |c| c.state == "ringing").await;
    let over =
        call_state(&bob.node, &missed.id, "the call is missed", |c| c.state == "ended").await;
    assert_eq!(over.end_reason.as_deref(), Some("missed"));
    for (n, with) in [(&alice.node, "bob"), (&bob.node, "alice")] {
        eventually(20, "a missed call in the history", || async {
            call_logs(n, with).contains(&"Missed voice call".to_owned()).then_some(())
        })
        .await;
    }
    let at_alice = alice.node.call(&missed.id).expect("known");
    // The caller's leave, or alice's own ring time, whichever came first.
    let reason = at_alice.end_reason.as_deref();
    assert!(matches!(reason, Some("cancelled" | "missed")), "{reason:?}");
}

/// A group call: alice calls the group; bob and carol answer; every device sees the two others,
/// and each pair has exactly one device to make the offer. When alice leaves, bob and carol
/// stay in the call; the entry is in the group's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_meshes_the_members_who_answer() {
    let (boot, alice, bob) = network().await;
    let b = addr(&boot.node).await;
    let carol = spawn(vec![b]).await;
    connect_and_register(&carol, "carol").await;
    let conv = form_group_by_mentioning_carol(&alice.node, &bob.node, &carol.node).await;
    let call = alice.node.start_call(&conv, false).await.expect("group call starts");
    assert!(call.group);
    for n in [&bob.node, &carol.node] {
        call_state(n, &call.id, "ringing at each member", |c| c.state == "ringing").await;
    }
    bob.node.accept_call(&call.id).expect("bob answers");
    call_state(&alice.node, &call.id, "bob in alice's call", |c| c.participants.len() == 1).await;
    carol.node.accept_call(&call.id).expect("carol answers");
    // Carol knows alice from the ring and bob from his `join`, heard while she was ringing;
    // alice and bob hear hers.
    let mut views = Vec::new();
    for n in [&alice.node, &bob.node, &carol.node] {
        views.push(
            call_state(n, &call.id, "each device sees the two others", |c| {
                c.state == "active" && c.participants.len() == 2
            })
            .await,
        );
    }
    let mut pairs = std::collections::BTreeSet::new();
    for v in &views {
        for to in &v.offers_to {
            let pair = if v.device < *to {
                (v.device.clone(), to.clone())
            } else {
                (to.clone(), v.device.clone())
            };
            assert!(pairs.insert(pair), "two offers for one pair");
        }
    }
    assert_eq!(pairs.len(), 3, "one offerer per pair: {views:?}");

    alice.node.hang_up(&call.id).expect("alice leaves");
    for n in [&bob.node, &carol.node] {
        call_state(n, &call.id, "the others stay in the call", |c| {
            c.state == "active" && c.participants.len() == 1
        })
        .await;
    }
    for n in [&alice.node, &bob.node, &carol.node] {
        eventually(20, "the call's entry in the group", || async {
            texts(n, &conv).iter().any(|t| t.starts_with("Voice call, 0:0")).then_some(())
        })
        .await;
    }
}

/// Listening together: alice shares a song into a session; bob's node learns the session,
/// measures its clock against alice's (median of round trips), and his controls reach alice's
/// node, which sends the new state to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_session_is_shared_controlled_and_clocked() {
    let (_boot, alice, bob) = network().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let song = dir.path().join("song.wav");
    std::fs::write(&song, vec![128u8; 64 * 1024]).expect("song");
    let mut meta = file_meta("song.wav");
    meta.mime = "audio/wav".into();
    meta.duration_ms = Some(8_000);
    let sent = alice.node.send_file("@bob", &song, meta).await.expect("sent");
    eventually(20, "the song at bob's", || async { bob.node.message(&sent.id).ok().map(|_| ()) })
        .await;
    let refused = alice.node.start_listening("@bob", &["00".repeat(16)]).await;
    assert!(refused.is_err(), "a track must be a file of the conversation");
    let session = alice
        .node
        .start_listening("@bob", std::slice::from_ref(&sent.id))
        .await
        .expect("session starts");
    assert!(session.host && session.joined && !session.playing);
    assert_eq!(session.queue[0].name.as_deref(), Some("song.wav"));
    let seen = eventually(20, "the session at bob's", || async {
        bob.node.listening_session(&session.id).ok()
    })
    .await;
    assert!(!seen.host && !seen.joined && seen.offset_ms.is_none());

    // Bob joins: his node measures its offset to alice's clock (one machine here: about 0).
    bob.node.listen_join(&session.id, true).expect("joins");
    let clocked = eventually(20, "bob's clock estimate", || async {
        bob.node.listening_session(&session.id).ok().filter(|v| v.samples >= 3)
    })
    .await;
    let (offset, rtt) = (clocked.offset_ms.expect("offset"), clocked.rtt_ms.expect("rtt"));
    assert!(offset.unsigned_abs() <= rtt / 2 + 5, "offset {offset} ms, round trip {rtt} ms");

    // Bob presses play and seeks: alice's node applies both and both nodes hold its state.
    bob.node
        .listen_control(&session.id, kith_node::node::ListenControl::Play { at_ms: None })
        .expect("play");
    bob.node
        .listen_control(&session.id, kith_node::node::ListenControl::Seek { position_ms: 4_000 })
        .expect("seek");
    for n in [&alice.node, &bob.node] {
        let v = eventually(20, "the new state on both nodes", || async {
            n.listening_session(&session.id).ok().filter(|v| v.seq == 3)
        })
        .await;
        assert!(v.playing);
        assert_eq!(v.position_ms, 4_000);
    }
    let next = alice.node.listen_control(&session.id, kith_node::node::ListenControl::Next);
    assert!(next.is_err(), "no track after the last");
}

/// Replies, reactions, edits and deletes: each reaches the other side and is shown on the
/// message it names, not as a message of its own; only a message's sender edits or deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reactions_edits_and_deletes_show_on_their_message() {
    let (_boot, alice, bob) = network().await;
    let first = alice.node.send_text("@bob", "lunch at noon?").await.expect("sent");
    // Bob can answer once his node has checked who sent it (its sender's name).
    eventually(60, "the message at bob's, from alice by name", || async {
        (bob.node.message(&first.id).ok()?.from == "alice").then_some(())
    })
    .await;
    let reply = bob.node.reply(&first.id, "yes!").await.expect("reply");
    bob.node.react(&first.id, "+1", false).await.expect("react");
    assert!(bob.node.edit_message(&first.id, "forged").await.is_err(), "not bob's to edit");
    assert!(bob.node.delete_message(&first.id).await.is_err(), "not bob's to delete");
    alice.node.react(&first.id, "+1", false).await.expect("react");
    alice.node.edit_message(&first.id, "lunch at one?").await.expect("edit");
    let oops = alice.node.send_text("@bob", "wrong chat").await.expect("sent");
    alice.node.delete_message(&oops.id).await.expect("delete");
    for (n, with) in [(&alice.node, "bob"), (&bob.node, "alice")] {
        let page = eventually(60, "everything applied on both sides", || async {
            let page = n.messages(Some(with), 100).ok()?;
            let done = page.len() == 3
                && page[0].edited
                && page[0].reactions.first().is_some_and(|r| r.count == 2)
                && page[2].deleted;
            done.then_some(page)
        })
        .await;
        assert_eq!(page[0].text.as_deref(), Some("lunch at one?"));
        assert_eq!(page[0].reactions[0].emoji, "+1");
        assert!(page[0].reactions[0].mine);
        assert_eq!(page[1].id, reply.id);
        // The quote reads as the answered message does now (edited).
        let quoted = page[1].reply_to.as_ref().expect("the answered message");
        assert_eq!(
            (quoted.id.as_str(), quoted.text.as_deref()),
            (first.id.as_str(), Some("lunch at one?"))
        );
        assert_eq!(page[2].text, None);
    }
    // Taking a reaction back.
    bob.node.react(&first.id, "+1", true).await.expect("take back");
    eventually(60, "one reaction left", || async {
        let page = alice.node.messages(Some("bob"), 100).ok()?;
        (page[0].reactions[0].count == 1 && page[0].reactions[0].by == ["alice"]).then_some(())
    })
    .await;
}

/// A shared point reaches the other side with its label and a link to the map; a point off the
/// globe is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_location_reaches_the_other_side() {
    let (_boot, alice, bob) = network().await;
    let bad = alice.node.share_location("@bob", 91.0, 0.0, None, None).await;
    assert!(matches!(bad, Err(NodeError::BadInput(_))), "{bad:?}");
    let bad = alice.node.share_location("@bob", 10.0, 0.0, Some(-1.0), None).await;
    assert!(matches!(bad, Err(NodeError::BadInput(_))), "{bad:?}");
    let sent = alice
        .node
        .share_location("@bob", 53.5511, 9.9937, Some(25.0), Some("Stadtpark".into()))
        .await
        .expect("shared");
    let got = eventually(60, "the location at bob's", || async {
        bob.node.messages(Some("alice"), 10).ok()?.into_iter().find(|m| m.id == sent.id)
    })
    .await;
    assert_eq!(got.kind, "location");
    assert_eq!(got.text.as_deref(), Some("Location: Stadtpark (53.55110, 9.99370)"));
    let p = got.location.expect("the point");
    assert_eq!(
        (p.lat, p.lon, p.accuracy_m, p.label.as_deref()),
        (53.5511, 9.9937, Some(25.0), Some("Stadtpark"))
    );
    assert!(
        p.map_url.starts_with("https://www.openstreetmap.org/?mlat=53.551100&mlon=9.993700"),
        "{}",
        p.map_url
    );
}
