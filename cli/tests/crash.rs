//! Crash recovery: the sender, the mailbox and the recipient are killed with SIGKILL at random
//! moments while messages flow, and restarted. Afterwards every message whose `kith send` was
//! acknowledged must be shown to the recipient exactly once, in the order it was sent, the
//! sender must show it `delivered` (or `read`) once its outbox is empty, and every store must
//! have reopened cleanly (each restart must serve its API again).
//!
//! `KITH_CRASH_ITERATIONS` (default 50) sets the number of messages, each followed by a chance
//! of a crash; `KITH_CRASH_SEED` replays a run (the seed is printed).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Peer {
    node: Node,
    listen: String,
    bootstrap: Option<String>,
    extra: Vec<&'static str>,
}

impl Peer {
    fn start(&mut self) {
        let mut args: Vec<&str> = vec!["--listen", &self.listen];
        args.extend(self.extra.iter().copied());
        self.node.start_with(self.bootstrap.as_deref(), &args);
    }
}

/// The three nodes of the test: a mailbox, a sender and a recipient.
struct Peers {
    mailbox: Peer,
    alice: Peer,
    bob: Peer,
}

impl Peers {
    /// Starts the mailbox, then alice and bob bootstrapping from it; registers alice and bob,
    /// gives bob the mailbox, and waits until alice sees it.
    fn start() -> Peers {
        // Fixed ports, so a restarted node is found where it was.
        let port = |p: u16| format!("/ip4/127.0.0.1/tcp/{p}");
        let mut mailbox = Peer {
            node: Node::init("mailbox"),
            listen: port(free_port()),
            bootstrap: None,
            extra: vec!["--mailbox"],
        };
        mailbox.start();
        let mb_peer =
            mailbox.node.status().expect("status")["peer_id"].as_str().expect("peer id").to_owned();
        let mb_addr = format!("{}/p2p/{mb_peer}", mailbox.listen);
        let mut alice = Peer {
            node: Node::init("alice"),
            listen: port(free_port()),
            bootstrap: Some(mb_addr.clone()),
            extra: vec![],
        };
        let mut bob = Peer {
            node: Node::init("bob"),
            listen: port(free_port()),
            bootstrap: Some(mb_addr.clone()),
            extra: vec![],
        };
        alice.start();
        bob.start();
        alice.node.register("alice");
        bob.node.register("bob");
        bob.node.kith(&["mailbox", "add", &mb_addr]).ok();
        wait_until("alice to see bob's mailbox", Duration::from_secs(60), || {
            let out = alice.node.kith(&["resolve", "bob", "--json"]);
            (out.status.success()
                && out.json()["mailboxes"].as_array().is_some_and(|m| !m.is_empty()))
            .then_some(())
        });
        Peers { mailbox, alice, bob }
    }

    /// Mailbox, alice, bob: the order crash victims are numbered in.
    fn all(&mut self) -> [&mut Peer; 3] {
        [&mut self.mailbox, &mut self.alice, &mut self.bob]
    }

    /// Restarts every node that is down.
    fn start_stopped(&mut self) {
        for p in self.all() {
            if !p.node.running() {
                p.start();
            }
        }
    }
}

/// The number of messages and the generator, from the environment or a fresh seed (printed).
fn iterations_and_rng() -> (u64, Rng) {
    let iterations = env_u64("KITH_CRASH_ITERATIONS").unwrap_or(50);
    let seed = env_u64("KITH_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }) | 1;
    eprintln!("crash test: {iterations} iterations, KITH_CRASH_SEED={seed}");
    (iterations, Rng(seed))
}

/// Alice sends `text` to bob; a quarter of the time, one of the three is killed while the send
/// is under way (and reaped; it is restarted before the next message). Returns the send's
/// output.
fn send_maybe_killing_one(
    peers: &mut Peers,
    rng: &mut Rng,
    crashes: &mut [u32; 3],
    text: &str,
) -> Output {
    let during = (rng.below(4) == 0).then(|| {
        let victim = rng.below(3) as usize;
        let pid = [&peers.mailbox, &peers.alice, &peers.bob][victim].node.pid().expect("running");
        let delay = Duration::from_millis(rng.below(40));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        });
        (victim, killer)
    });
    let out = peers.alice.node.kith(&["send", "@bob", text]);
    if let Some((victim, killer)) = during {
        let _ = killer.join();
        crashes[victim] += 1;
        // Reap it; it is restarted before the next message.
        peers.all().into_iter().nth(victim).expect("victim").node.kill();
    }
    out
}

/// Half of the time, crashes one of the three after a random moment, while the message is
/// being delivered; it is restarted at once or before the next message.
fn maybe_crash_one_while_delivering(peers: &mut Peers, rng: &mut Rng, crashes: &mut [u32; 3]) {
    if rng.below(2) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        let victim = rng.below(3) as usize;
        crashes[victim] += 1;
        let p = peers.all().into_iter().nth(victim).expect("victim");
        p.node.kill();
        if rng.below(2) == 0 {
            p.start();
        }
    }
}

/// Sends `iterations` messages from alice to bob with crashes in between, restarts whatever is
/// down at the end, and returns the texts whose send was acknowledged.
fn send_while_crashing(peers: &mut Peers, rng: &mut Rng, iterations: u64) -> Vec<String> {
    let started = Instant::now();
    let mut acked: Vec<String> = Vec::new();
    let mut crashes = [0u32; 3];
    for i in 0..iterations {
        // A node left down by the previous crash comes back now.
        peers.start_stopped();
        let text = format!("crash-{i:04}");
        let out = send_maybe_killing_one(peers, rng, &mut crashes, &text);
        if out.status.success() {
            acked.push(text);
        } else {
            eprintln!("send {i} not acknowledged: {}", out.stderr.trim());
        }
        maybe_crash_one_while_delivering(peers, rng, &mut crashes);
    }
    peers.start_stopped();
    eprintln!(
        "{} of {iterations} sends acknowledged; crashes: mailbox {}, alice {}, bob {}; {:?}",
        acked.len(),
        crashes[0],
        crashes[1],
        crashes[2],
        started.elapsed()
    );
    assert!(
        acked.len() as u64 * 2 >= iterations,
        "too few sends were acknowledged to test anything"
    );
    acked
}

/// Bob shows every acknowledged message exactly once, in the order alice sent them, in the
/// whole history and in the conversation with alice.
fn bob_shows_each_acknowledged_message_once_in_order(peers: &Peers, acked: &[String]) {
    let bob = &peers.bob.node;
    let shown_now = || -> Option<Vec<String>> {
        let messages = bob.messages(&["--limit", "10000"])?;
        Some(
            messages
                .as_array()?
                .iter()
                .filter_map(|m| m["text"].as_str())
                .filter(|t| t.starts_with("crash-"))
                .map(str::to_owned)
                .collect(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let shown = loop {
        if let Some(shown) = shown_now().filter(|s| acked.iter().all(|a| s.contains(a))) {
            break shown;
        }
        if Instant::now() > deadline {
            // What alice knows of each message bob lacks, for the failure report.
            let missing: Vec<&String> =
                acked.iter().filter(|a| !shown_now().unwrap_or_default().contains(a)).collect();
            let sent = peers.alice.node.messages(&["@bob", "--limit", "10000"]);
            let about: Vec<&serde_json::Value> = sent
                .as_ref()
                .and_then(|m| m.as_array())
                .map(|m| {
                    m.iter()
                        .filter(|m| missing.iter().any(|t| m["text"].as_str() == Some(t)))
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "timed out after 240 s waiting for bob to show every acknowledged message; \
                 missing {missing:?}; alice has {about:?}; alice's status {:?}; bob's {:?}",
                peers.alice.node.status(),
                bob.status()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for a in acked {
        assert_eq!(
            shown.iter().filter(|s| *s == a).count(),
            1,
            "{a} shown more than once: {shown:?}"
        );
    }
    // Per-sender order: alice's messages appear in the order she sent them, in the whole
    // history and in the conversation.
    let mut sorted = shown.clone();
    sorted.sort();
    assert_eq!(shown, sorted, "bob shows alice's messages out of order");
    let conversation: Vec<String> = bob
        .messages(&["@alice", "--limit", "10000"])
        .expect("conversation")
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(conversation, sorted, "the conversation with alice is out of order or incomplete");
}

#[test]
fn crashes_lose_nothing_that_was_acknowledged() {
    let (iterations, mut rng) = iterations_and_rng();
    let mut peers = Peers::start();
    let acked = send_while_crashing(&mut peers, &mut rng, iterations);
    bob_shows_each_acknowledged_message_once_in_order(&peers, &acked);

    // And alice learns that every one of them was delivered.
    wait_until("alice's outbox to empty", Duration::from_secs(240), || {
        (peers.alice.node.status()?["outbox"].as_u64()? == 0).then_some(())
    });

    // With the outbox empty, every acknowledged message is `delivered` (or `read`) at alice:
    // none stays `sent` or `stored` (a crash between removing the outbox entry and setting the
    // status once left it so).
    assert_final_statuses(&peers.alice.node, &acked);

    // Every store closes and reopens cleanly, and the statuses survive it.
    for p in peers.all() {
        p.node.stop();
        p.start();
    }
    assert_final_statuses(&peers.alice.node, &acked);
}

/// Each of `acked` is shown once at alice, `delivered` or `read`.
fn assert_final_statuses(alice: &Node, acked: &[String]) {
    let sent = alice.messages(&["@bob", "--limit", "10000"]).expect("alice's conversation");
    let sent = sent.as_array().expect("array");
    for text in acked {
        let statuses: Vec<&str> = sent
            .iter()
            .filter(|m| m["text"].as_str() == Some(text))
            .filter_map(|m| m["status"].as_str())
            .collect();
        assert!(
            matches!(statuses.as_slice(), ["delivered"] | ["read"]),
            "{text}: statuses at alice {statuses:?}, expected one `delivered` or `read`"
        );
    }
}
