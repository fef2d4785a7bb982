//! End-to-end tests of the `kith` binary: real daemons on loopback, driven through the CLI.
//!
//! Every child process binds 127.0.0.1 only, every wait has a deadline, and every daemon is
//! killed when its guard is dropped, also when a test fails (the daemon's log is then printed).

mod support;

use std::fs::File;
use std::io::Write;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tempfile::TempDir;

/// Longest a group message may take to reach a member (gossip, or a sync from a member).
const GROUP_WAIT: Duration = Duration::from_secs(60);

#[test]
fn three_daemons_deliver_direct_and_queued_messages() {
    let mut boot = Node::init("boot");
    let boot_status = boot.start(None);
    let boot_addr = boot_status["listen_addrs"][0].as_str().expect("boot listens").to_owned();
    assert!(boot_addr.starts_with("/ip4/127.0.0.1/") && boot_addr.contains("/p2p/"), "{boot_addr}");

    let mut alice = Node::init("alice");
    alice.start(Some(&boot_addr));
    let mut bob = Node::init("bob");
    let bob_user = bob.start(Some(&boot_addr))["user_id"].as_str().expect("user_id").to_owned();
    for node in [&alice, &bob] {
        wait_until(&format!("{} to connect to a peer", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
    }

    alice.register("alice");
    bob.register("bob");
    assert_eq!(bob.status().expect("status")["name"], "bob");

    let record = wait_until("alice to resolve @bob", Duration::from_secs(30), || {
        let out = alice.kith(&["resolve", "@bob", "--json"]);
        out.status.success().then(|| out.json())
    });
    assert_eq!(record["user_id"], bob_user.as_str(), "{record}");

    waiting_messages_are_delivered_or_cancelled(&alice, &boot_addr);

    // Both online: delivered while `send --wait` waits.
    let out = alice.kith(&["send", "@bob", "hello", "bob", "--wait", "--timeout", "60"]).ok();
    assert!(is_message_id(out.stdout.trim()), "send printed {:?}", out.stdout);
    assert!(out.stderr.contains("delivered: every device of @bob acknowledged it"), "{out:?}");
    // The text can come from standard input.
    let out = alice.kith_input(&["send", "@bob"], "from a pipe\nsecond line\n").ok();
    assert!(is_message_id(out.stdout.trim()), "send printed {:?}", out.stdout);
    wait_until("bob to list the piped message", Duration::from_secs(20), || {
        with_text(&bob.messages(&[])?, "from a pipe\nsecond line").first().map(|_| ())
    });
    wait_until("bob to list 'hello bob' from alice", Duration::from_secs(20), || {
        let list = bob.messages(&[])?;
        let found = with_text(&list, "hello bob");
        assert!(found.len() <= 1, "'hello bob' listed twice: {list}");
        found.first().filter(|m| m["from"] == "alice").map(|_| ())
    });

    // Bob offline: the message waits in alice's outbox.
    bob.stop();
    let out = alice.kith(&["send", "@bob", "while you were away"]).ok();
    let away_id = out.stdout.trim().to_owned();
    assert!(is_message_id(&away_id), "send printed {:?}", out.stdout);
    let outbox = alice.status().expect("alice status")["outbox"].as_u64();
    assert!(outbox >= Some(1), "alice's outbox is {outbox:?}");

    // Bob back: the queued message arrives, once.
    bob.start(Some(&boot_addr));
    let list = wait_until("bob to receive the queued message", Duration::from_secs(90), || {
        bob.messages(&[]).filter(|list| !with_text(list, "while you were away").is_empty())
    });
    assert_eq!(with_text(&list, "while you were away").len(), 1, "{list}");
    assert_eq!(with_text(&list, "hello bob").len(), 1, "{list}");
    wait_until("alice to see the queued message delivered", Duration::from_secs(60), || {
        let list = alice.messages(&["@bob"])?;
        let m = list.as_array()?.iter().find(|m| m["id"] == away_id.as_str())?.clone();
        matches!(m["status"].as_str(), Some("delivered" | "read")).then_some(())
    });
    // Nothing was delivered twice meanwhile.
    let list = bob.messages(&[]).expect("bob's messages");
    assert_eq!(with_text(&list, "while you were away").len(), 1, "{list}");

    // Bob answers "hello bob" and reacts to it, naming it by its first digits; alice edits it
    // and deletes another; bob cannot edit alice's message.
    let hello = with_text(&list, "hello bob")[0]["id"].as_str().expect("an id").to_owned();
    let short = &hello[..8];
    bob.kith(&["reply", short, "hello to you"]).ok();
    bob.kith(&["react", short, "+1"]).ok();
    bob.kith(&["edit", short, "forged"]).fails_with("only your own");
    alice.kith(&["edit", &hello, "hello bob, again"]).ok();
    alice.kith(&["delete", &away_id]).ok();
    alice
        .kith(&[
            "location",
            "@bob",
            "--lat",
            "53.5511",
            "--lon",
            "-9.9937",
            "--label",
            "the fountain",
        ])
        .ok();
    alice
        .kith(&["location", "@bob", "--lat", "95", "--lon", "0"])
        .fails_with("latitude or longitude out of range");
    for (node, with) in [(&alice, "@bob"), (&bob, "@alice")] {
        wait_until(
            "the reply, reaction, edit and delete on both sides",
            Duration::from_secs(30),
            || {
                let out = node.kith(&["messages", with, "--ids"]).ok().stdout;
                let done = out.contains(&format!("{short} ["))
                    && out.contains("alice: Location: the fountain (53.55110, -9.99370)")
                    && out.contains("alice: hello bob, again (edited) [+1 1]")
                    && out.contains("bob: (to alice: \"hello bob, again\") hello to you")
                    && out.contains("alice: <deleted>");
                done.then_some(())
            },
        );
    }
}

/// A message to a name nobody holds yet is accepted and waits: `kith cancel` withdraws one, and
/// another is delivered once its name is registered.
fn waiting_messages_are_delivered_or_cancelled(alice: &Node, boot_addr: &str) {
    let out = alice.kith(&["send", "@nobody-here", "hi"]).ok();
    let id = out.stdout.trim().to_owned();
    assert!(out.stderr.contains("@nobody-here does not resolve yet"), "{out:?}");
    let shown = alice.kith(&["cancel", &id]).ok();
    assert_eq!(shown.stdout.trim(), format!("cancelled {id}"));
    alice.kith(&["cancel", &id]).fails_with("nothing is left to cancel");

    let out = alice.kith(&["send", "@carol", "registered later"]).ok();
    let id = out.stdout.trim().to_owned();
    let mut carol = Node::init("carol");
    carol.start(Some(boot_addr));
    wait_until("carol to connect to a peer", START_TIMEOUT, || {
        carol.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
    });
    carol.register("carol");
    wait_until("the waiting message to be delivered", Duration::from_secs(90), || {
        let list = alice.messages(&["@carol"])?;
        let m = list.as_array()?.iter().find(|m| m["id"] == id.as_str())?.clone();
        matches!(m["status"].as_str(), Some("delivered" | "read")).then_some(())
    });
    let list = carol.messages(&[]).expect("carol's messages");
    assert_eq!(with_text(&list, "registered later").len(), 1, "{list}");
    carol.stop();
}

/// A message to a contact never seen before, sent while the sender is cut off (its only
/// bootstrap peer is down, and that peer lost the DHT records it held when it stopped), waits,
/// and is delivered once the network is back.
#[test]
fn a_message_sent_while_cut_off_is_delivered_after_the_network_heals() {
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let mut boot = Node::init("boot");
    boot.start_with(None, &["--listen", &listen]);
    let boot_peer = boot.status().expect("status")["peer_id"].as_str().expect("peer").to_owned();
    let boot_addr = format!("{listen}/p2p/{boot_peer}");
    let mut carol = Node::init("carol");
    carol.start(Some(&boot_addr));
    wait_until("carol to connect to a peer", START_TIMEOUT, || {
        carol.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
    });
    carol.register("carol");
    boot.stop();
    let mut alice = Node::init("alice");
    alice.start(Some(&boot_addr));
    let out = alice.kith(&["send", "@carol", "across the partition"]).ok();
    assert!(out.stderr.contains("@carol does not resolve yet"), "{out:?}");
    let id = out.stdout.trim().to_owned();
    boot.start_with(None, &["--listen", &listen]);
    wait_until(
        "the message to be delivered after the network healed",
        Duration::from_secs(150),
        || {
            let list = alice.messages(&["@carol"])?;
            let m = list.as_array()?.iter().find(|m| m["id"] == id.as_str())?.clone();
            matches!(m["status"].as_str(), Some("delivered" | "read")).then_some(())
        },
    );
    let list = carol.messages(&[]).expect("carol's messages");
    assert_eq!(with_text(&list, "across the partition").len(), 1, "{list}");
    for n in [&mut alice, &mut carol, &mut boot] {
        n.stop();
    }
}

#[test]
fn init_refuses_to_overwrite_an_identity() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    let out = kith(&home, &["init"]).ok();
    assert!(out.stdout.contains("safety number"), "{}", out.stdout);
    let token = std::fs::read_to_string(home.join("api.token")).expect("token");
    kith(&home, &["init", "--label", "other"]).fails_with("refusing to overwrite");
    assert_eq!(std::fs::read_to_string(home.join("api.token")).expect("token"), token);
}

#[test]
fn commands_without_a_daemon_say_so() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    kith(&home, &["status"]).fails_with("kith init");
    kith(&home, &["init", "--json"]).ok();
    kith(&home, &["status"]).fails_with("the daemon is not running");
    kith(&home, &["messages", "--json"]).fails_with("the daemon is not running");
    // A stale address of a daemon that is gone: the port refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    std::fs::write(home.join("api.addr"), format!("{addr}\n")).expect("write api.addr");
    kith(&home, &["status", "--json"]).fails_with("the daemon is not running");
}

#[test]
fn invalid_names_are_refused_with_the_rule() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    kith(&home, &["register", "A B"]).fails_with("lowercase ASCII letters, digits");
    kith(&home, &["resolve", "@x"]).fails_with("3 to 32 characters");
    kith(&home, &["send", "@-bob", "hi"]).fails_with("start with a letter or digit");
}

#[test]
fn usage_errors_exit_2_and_help_explains() {
    let dir = TempDir::new().expect("tempdir");
    let out = kith(dir.path(), &["send"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Without TEXT the message comes from standard input; an empty one is refused.
    kith(dir.path(), &["send", "@bob"]).fails_with("the message is empty");
    let help = kith(dir.path(), &["daemon", "--help"]).ok().stdout;
    assert!(help.contains("127.0.0.1:0") && help.contains("--bootstrap"), "{help}");
    let help = kith(dir.path(), &["--help"]).ok().stdout;
    assert!(help.contains("Quick start") && help.contains("kith send @bob"), "{help}");
}

#[test]
fn daemon_settings_errors_are_one_line() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    let config = dir.path().join("kith.toml");
    std::fs::write(&config, "pow_bits = 8\nmailbox_max_mesages = 5\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let out = kith(&home, &["daemon", "--config", config]);
    out.fails_with("mailbox_max_mesages");
    out.fails_with("kith.toml");
    let out = kith(&home, &["daemon", "--mailbox", "--mailbox-allow", "nothex"]);
    out.fails_with("--mailbox-allow \"nothex\"");
}

#[test]
fn store_problems_are_one_line_errors_naming_the_store() {
    let mut node = Node::init("store");
    node.start(None);
    // A second daemon on the same home finds the store locked.
    node.kith(&["daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .fails_with("is in use by another process");
    node.stop();
    // A store whose data was lost is refused, not silently started empty.
    std::fs::write(node.home().join("store/db"), vec![0x5a; 4096]).expect("damage the store");
    let out = node.kith(&["daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"]);
    out.fails_with("is damaged");
    assert!(out.stderr.contains("store"), "{}", out.stderr);
}

#[test]
fn a_mailbox_holds_messages_while_everyone_is_offline() {
    let (_mailbox, mb_addr, mut alice, mut bob) = mailbox_alice_bob();
    let enrolled = bob.kith(&["mailbox", "add", &mb_addr]).ok();
    assert!(enrolled.stdout.contains("enrolled"), "{}", enrolled.stdout);
    let listed = bob.kith(&["mailbox", "list", "--json"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    wait_until("alice to see bob's mailbox", Duration::from_secs(60), || {
        let out = alice.kith(&["resolve", "bob", "--json"]);
        (out.status.success() && out.json()["mailboxes"].as_array().is_some_and(|m| m.len() == 1))
            .then_some(())
    });

    // Bob goes offline; alice sends; the mailbox holds it; alice goes offline too.
    bob.stop();
    let id = alice.kith(&["send", "@bob", "held for you"]).ok().stdout.trim().to_owned();
    assert!(is_message_id(&id), "{id}");
    wait_until("the message to be stored at the mailbox", Duration::from_secs(60), || {
        let m = alice.kith(&["messages", "@bob", "--json"]).ok().json();
        with_text(&m, "held for you").first().is_some_and(|m| m["status"] == "stored").then_some(())
    });
    alice.stop();

    // Bob comes back and gets it from his mailbox, exactly once.
    bob.start(Some(&mb_addr));
    wait_until("bob to fetch the message", Duration::from_secs(60), || {
        let m = bob.messages(&[])?;
        (!with_text(&m, "held for you").is_empty()).then_some(())
    });
    // Alice comes back and learns it was delivered.
    alice.start(Some(&mb_addr));
    wait_until("alice to see it delivered", Duration::from_secs(120), || {
        let m = alice.messages(&["@bob"])?;
        with_text(&m, "held for you")
            .first()
            .is_some_and(|m| m["status"] == "delivered")
            .then_some(())
    });
    let m = bob.messages(&[]).expect("bob's messages");
    assert_eq!(with_text(&m, "held for you").len(), 1, "{m}");
}

/// Waits until `node` lists every `(author, text)` in the conversation `tag` (`#prefix`), then
/// checks that each is there exactly once, in that conversation. The sender shows as a user id
/// until the daemon has resolved that member's name, so the wait is also for the name.
#[track_caller]
fn wait_for_texts(node: &Node, tag: &str, expected: &[(&str, &str)]) -> Value {
    let what = format!("{} to see {expected:?} in {tag}", node.name);
    let list = wait_until(&what, GROUP_WAIT, || {
        node.messages(&[tag]).filter(|l| {
            expected.iter().all(|(author, t)| with_text(l, t).iter().any(|m| m["from"] == *author))
        })
    });
    for (_, text) in expected {
        let found = with_text(&list, text);
        assert_eq!(found.len(), 1, "{}: {text:?} is not listed exactly once: {list}", node.name);
    }
    let group = &tag[1..];
    for m in list.as_array().expect("array") {
        let c = m["conversation"].as_str().unwrap_or_default();
        assert!(c.starts_with(group), "{}: {tag} lists a message of {c}: {list}", node.name);
        assert_eq!(m["to"], format!("#{c}"), "{}: a group message's `to`: {m}", node.name);
    }
    list
}

/// The entry of conversation `id` in `node`'s `kith conversations --json`.
#[track_caller]
fn conversation(node: &Node, id: &str) -> Value {
    let list = node.kith(&["conversations", "--json"]).ok().json();
    let found = list.as_array().expect("array").iter().find(|c| c["id"] == id).cloned();
    found.unwrap_or_else(|| panic!("{} does not list {id}: {list}", node.name))
}

/// `kith members TAG --json` as names, or `None` if it fails.
fn members(node: &Node, tag: &str) -> Option<Vec<String>> {
    let out = node.kith(&["members", tag, "--json"]);
    let list = out.status.success().then(|| out.json())?;
    Some(list.as_array()?.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
}

/// Alice, bob, carol and dave, each started from `boot_addr`, connected and registered under
/// their own name.
fn four_registered_people(boot_addr: &str) -> [Node; 4] {
    let mut alice = Node::init("alice");
    let mut bob = Node::init("bob");
    let mut carol = Node::init("carol");
    let mut dave = Node::init("dave");
    for node in [&mut alice, &mut bob, &mut carol, &mut dave] {
        node.start(Some(boot_addr));
    }
    for node in [&alice, &bob, &carol, &dave] {
        wait_until(&format!("{} to connect to a peer", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
    }
    for node in [&alice, &bob, &carol, &dave] {
        node.register(node.name);
    }
    [alice, bob, carol, dave]
}

/// Alice mentions carol in her chat with bob: a group of the three forms, and each of them
/// sees the others' posts. Returns the group's id.
fn alice_mentions_carol_to_form_a_group(alice: &Node, bob: &Node, carol: &Node) -> String {
    let out = alice.kith(&["send", "@bob", "hi @carol", "--json"]).ok();
    let sent = out.json();
    let group = sent["conversation"].as_str().expect("conversation").to_owned();
    assert!(is_message_id(&group), "{sent}");
    let tag = format!("#{}", &group[..8]);
    let tag = tag.as_str();
    assert!(out.stderr.contains(&format!("started the group {tag}")), "{}", out.stderr);
    let listed = conversation(alice, &group);
    assert_eq!(listed["kind"], "group", "{listed}");
    assert_eq!(listed["active"], true, "{listed}");
    assert_eq!(listed["members"].as_array().map(Vec::len), Some(3), "{listed}");
    let human = alice.kith(&["conversations"]).ok().stdout;
    assert!(human.lines().any(|l| l.starts_with(&group[..8]) && l.contains("group")), "{human}");
    // The direct chat stays as it was.
    let direct = alice.messages(&["@bob"]).expect("alice's chat with bob");
    assert!(with_text(&direct, "hi @carol").is_empty(), "{direct}");

    for node in [bob, carol] {
        wait_for_texts(node, tag, &[("alice", "hi @carol")]);
    }
    // Group messages are not acknowledged: --wait does not wait for them.
    let out = bob.kith(&["send", tag, "bob here", "--wait"]).ok();
    assert!(is_message_id(out.stdout.trim()) && out.stderr.contains("not waiting"), "{out:?}");
    carol.kith(&["send", tag, "carol here"]).ok();
    let all = [("alice", "hi @carol"), ("bob", "bob here"), ("carol", "carol here")];
    for node in [alice, bob, carol] {
        wait_for_texts(node, tag, &all);
    }
    group
}

/// Carol types a line into `kith chat TAG` and quits; the chat must succeed and say where it
/// chats.
fn carol_types_in_the_chat(carol: &Node, tag: &str) {
    let mut chat = command(&carol.home())
        .args(["chat", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith chat");
    let chat_stderr = drain(chat.stderr.take());
    let mut stdin = chat.stdin.take().expect("chat stdin");
    stdin.write_all(b"typed in the chat\n/quit\n").expect("type into the chat");
    drop(stdin);
    let mut chat = Daemon { child: chat, log: carol.dir.path().join("chat.log") };
    let status =
        wait_until("carol's chat to end", COMMAND_TIMEOUT, || chat.child.try_wait().ok()?);
    let chat_stderr = chat_stderr.join().unwrap_or_default();
    assert!(status.success(), "kith chat {tag} failed ({status}): {chat_stderr}");
    assert!(chat_stderr.contains(&format!("chatting in {tag}")), "{chat_stderr}");
}

/// Bob follows the group: a direct message to him is not part of it; a line that carol types
/// in `kith chat '#ID'` is.
fn bob_follows_the_group(alice: &Node, bob: &Node, carol: &Node, group: &str, tag: &str) {
    let follow_log = bob.dir.path().join("follow.jsonl");
    let follow = command(&bob.home())
        .args(["messages", tag, "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(File::create(&follow_log).expect("create follow log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kith messages --follow");
    let _follow = Daemon { child: follow, log: follow_log.clone() };
    let followed = || std::fs::read_to_string(&follow_log).unwrap_or_default();
    wait_until("bob's follow to print the history", COMMAND_TIMEOUT, || {
        followed().contains("carol here").then_some(())
    });
    alice.kith(&["send", "@bob", "just between us"]).ok();
    wait_until("bob to get the direct message", GROUP_WAIT, || {
        bob.messages(&["@alice"]).filter(|l| !with_text(l, "just between us").is_empty())
    });
    carol_types_in_the_chat(carol, tag);
    wait_until("bob's follow to print the chat line", GROUP_WAIT, || {
        followed().contains("typed in the chat").then_some(())
    });
    let lines: Vec<Value> = followed()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.iter().all(|m| m["conversation"] == group), "{lines:?}");
    assert_eq!(lines.iter().filter(|m| m["text"] == "typed in the chat").count(), 1, "{lines:?}");
    drop(_follow);
}

/// Carol mentions dave in the group: he joins, and sees only what is posted from then on.
fn carol_mentions_dave_to_add_him(people: &[Node; 4], tag: &str) {
    let [alice, bob, carol, dave] = people;
    carol.kith(&["send", tag, "welcome @dave"]).ok();
    let seen = wait_for_texts(dave, tag, &[("carol", "welcome @dave")]);
    assert!(with_text(&seen, "hi @carol").is_empty(), "dave sees a message from before: {seen}");
    for node in [alice, bob, carol, dave] {
        let names = wait_until(&format!("{} to list 4 members", node.name), GROUP_WAIT, || {
            members(node, tag).filter(|m| m.len() == 4)
        });
        assert_eq!(names, ["alice", "bob", "carol", "dave"], "{}", node.name);
    }
    let human = carol.kith(&["members", tag]).ok().stdout;
    assert_eq!(human.lines().collect::<Vec<_>>(), ["alice", "bob", "carol", "dave"], "{human}");
}

/// Only members who joined later may be removed: alice removes dave, who then reads nothing
/// new and, once he learns of it, can no longer post.
fn alice_removes_dave(people: &[Node; 4], group: &str, tag: &str) {
    let [alice, bob, carol, dave] = people;
    bob.kith(&["remove", tag, "@alice"]).fails_with("joined before you");
    let out = alice.kith(&["remove", tag, "@dave"]).ok();
    assert!(out.stdout.contains("removed @dave"), "{}", out.stdout);
    assert_eq!(members(alice, tag).expect("members").len(), 3);
    alice.kith(&["send", tag, "after dave"]).ok();
    for node in [bob, carol] {
        wait_for_texts(node, tag, &[("alice", "after dave")]);
    }
    thread::sleep(Duration::from_secs(2));
    let seen = dave.messages(&[tag]).expect("dave's messages");
    assert!(with_text(&seen, "after dave").is_empty(), "dave read a later message: {seen}");
    // Dave learns of his removal asynchronously; then he can no longer post.
    let refused = wait_until("dave's post to be refused", GROUP_WAIT, || {
        let out = dave.kith(&["send", tag, "x"]);
        (!out.status.success()).then_some(out)
    });
    refused.fails_with("no longer a member");
    assert_eq!(conversation(dave, group)["active"], false);
}

/// Bob is away while two messages are posted; back, he gets both, once.
fn bob_catches_up_after_being_away(people: &mut [Node; 4], tag: &str, boot_addr: &str) {
    let [alice, bob, carol, _] = people;
    bob.stop();
    alice.kith(&["send", tag, "while bob was away 1"]).ok();
    carol.kith(&["send", tag, "while bob was away 2"]).ok();
    bob.start(Some(boot_addr));
    let away = [("alice", "while bob was away 1"), ("carol", "while bob was away 2")];
    wait_for_texts(bob, tag, &away);
    thread::sleep(Duration::from_secs(2));
    wait_for_texts(bob, tag, &away);
}

/// Carol leaves: the group stays listed, inactive, and she can no longer post.
fn carol_leaves(carol: &Node, group: &str, tag: &str) {
    let out = carol.kith(&["leave", tag]).ok();
    assert!(out.stdout.contains("left"), "{}", out.stdout);
    let listed = conversation(carol, group);
    assert_eq!(listed["active"], false, "{listed}");
    assert!(carol.kith(&["conversations"]).ok().stdout.contains("(left)"));
    carol.kith(&["send", tag, "still here?"]).fails_with("no longer a member");
}

#[test]
fn four_people_form_a_group_by_mentioning_and_manage_it() {
    let started = Instant::now();
    let mut boot = Node::init("boot");
    let boot_status = boot.start(None);
    let boot_addr = boot_status["listen_addrs"][0].as_str().expect("boot listens").to_owned();
    let mut people = four_registered_people(&boot_addr);
    let [alice, bob, carol, _] = &people;
    let group = alice_mentions_carol_to_form_a_group(alice, bob, carol);
    let tag = format!("#{}", &group[..8]);
    bob_follows_the_group(alice, bob, carol, &group, &tag);
    carol_mentions_dave_to_add_him(&people, &tag);
    alice_removes_dave(&people, &group, &tag);
    bob_catches_up_after_being_away(&mut people, &tag, &boot_addr);
    carol_leaves(&people[2], &group, &tag);
    eprintln!("the group test took {:?}", started.elapsed());
}

#[test]
fn group_commands_explain_themselves_and_check_ids() {
    let dir = TempDir::new().expect("tempdir");
    let help = kith(dir.path(), &["send", "--help"]).ok().stdout;
    assert!(help.contains("#ID") && help.contains("invites that person"), "{help}");
    let help = kith(dir.path(), &["chat", "--help"]).ok().stdout;
    assert!(help.contains("#ID") && help.contains("new group"), "{help}");
    for command in ["conversations", "members", "leave", "remove"] {
        let help = kith(dir.path(), &[command, "--help"]).ok().stdout;
        assert!(help.to_lowercase().contains("group"), "{command}: {help}");
    }
    let home = dir.path().join("home");
    kith(&home, &["members", "#zz"]).fails_with("hex digits");
    kith(&home, &["leave", "@bob"]).fails_with("not the name");
    kith(&home, &["send", "#", "hi"]).fails_with("missing");
    kith(&home, &["messages", "#12g"]).fails_with("hex digits");
    assert_eq!(kith(&home, &["remove", "#12"]).status.code(), Some(2));
    let mut node = Node::init("nogroup");
    node.start(None);
    node.kith(&["members", "#0123456789"]).fails_with("`kith conversations` lists them");
    node.kith(&["send", "#0123456789", "hi"]).fails_with("no conversation starts with #0123456789");
    node.kith(&["leave", "0123456789"]).fails_with("cannot leave #0123456789");
    let out = node.kith(&["conversations"]).ok();
    assert!(out.stdout.starts_with("no conversations"), "{}", out.stdout);
    assert_eq!(node.kith(&["conversations", "--json"]).ok().json(), serde_json::json!([]));
}

/// Starts `kith device link --json` on `node` and returns the child and the code it printed.
fn texts_with(node: &Node, with: &str, direction: &str) -> Vec<String> {
    let list = node.messages(&[with]).unwrap_or(Value::Null);
    list.as_array()
        .map(|l| {
            l.iter()
                .filter(|m| m["direction"] == direction)
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_linked_device_shares_conversations_until_it_is_revoked() {
    use std::io::BufRead;
    let mut boot = Node::init("boot");
    let boot_addr = boot.start(None)["listen_addrs"][0].as_str().expect("addr").to_owned();
    let mut alice = Node::init("alice");
    let alice_user = alice.start(Some(&boot_addr))["user_id"].as_str().expect("id").to_owned();
    let mut bob = Node::init("bob");
    bob.start(Some(&boot_addr));
    for node in [&alice, &bob] {
        wait_until(&format!("{} to connect", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
    }
    alice.register("alice");
    bob.register("bob");
    bob.kith(&["send", "@alice", "before the laptop", "--wait"]).ok();

    // Link a laptop with the history; `device link` returns once it is linked.
    let (mut linking, mut out, code) = link_code(&alice, &[]);
    let mut laptop = Node::empty("laptop");
    let joined = laptop
        .kith(&["init", "--link", &code, "--history", "--label", "laptop", "--json"])
        .ok()
        .json();
    assert_eq!(joined["user_id"], alice_user.as_str(), "{joined}");
    assert_eq!(joined["name"], "alice", "{joined}");
    assert!(joined["messages"].as_u64() >= Some(1), "{joined}");
    let mut line = String::new();
    out.read_line(&mut line).expect("second line");
    let done: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(done["state"], "linked", "{done}");
    assert!(wait_exit(&mut linking, Duration::from_secs(10)).success());

    // The same code again, and a stale one, are refused with a clear error.
    let thief = Node::empty("thief");
    thief.kith(&["init", "--link", &code]).fails_with("not valid");
    assert!(!thief.home().join("identity.pub").exists(), "a refused link leaves no identity");
    let (mut stale_cmd, _out, stale) = link_code(&alice, &["--expires", "1"]);
    assert!(!wait_exit(&mut stale_cmd, Duration::from_secs(10)).success(), "an expired code fails");
    thief.kith(&["init", "--link", &stale]).fails_with("expired");
    thief.kith(&["init", "--link", "kithlink1nonsense"]).fails_with("link code");

    let laptop_peer = laptop.start(Some(&boot_addr))["peer_id"].as_str().expect("peer").to_owned();
    assert!(texts_with(&laptop, "@bob", "in").contains(&"before the laptop".to_owned()));
    let devices = alice.kith(&["device", "list", "--json"]).ok().json();
    assert_eq!(devices.as_array().map(Vec::len), Some(2), "{devices}");
    laptop.kith(&["identity", "export"]).fails_with("identity key");
    let resolved = bob.kith(&["resolve", "alice", "--json"]).ok().json();
    assert_eq!(resolved["devices"].as_array().map(Vec::len), Some(2), "{resolved}");

    bob.kith(&["send", "@alice", "to both of you"]).ok();
    alice.kith(&["send", "@bob", "from the phone"]).ok();
    laptop.kith(&["send", "@bob", "from the laptop"]).ok();
    for (node, with, text, dir) in [
        (&alice, "@bob", "to both of you", "in"),
        (&laptop, "@bob", "to both of you", "in"),
        (&laptop, "@bob", "from the phone", "out"),
        (&alice, "@bob", "from the laptop", "out"),
        (&bob, "@alice", "from the laptop", "in"),
    ] {
        wait_until(&format!("{} to show {text:?}", node.name), Duration::from_secs(60), || {
            texts_with(node, with, dir).contains(&text.to_owned()).then_some(())
        });
    }

    // Reading on the phone shows on the laptop.
    let read = alice.kith(&["read", "@bob", "--json"]).ok().json();
    assert!(read["read"].as_u64() >= Some(2), "{read}");
    wait_until("the laptop to show bob's messages read", Duration::from_secs(30), || {
        let list = laptop.messages(&["@bob"])?;
        let incoming: Vec<&Value> =
            list.as_array()?.iter().filter(|m| m["direction"] == "in").collect();
        incoming.iter().all(|m| m["status"] == "read").then_some(())
    });

    // Revoke the laptop: it receives nothing new. Bob's copy of alice's record lists both
    // devices and is fresh (he would use it for 30 s); alice pushes him the new one, so his
    // message 5 s after the revocation is sealed to the phone only.
    let resolved = bob.kith(&["resolve", "alice", "--json"]).ok().json();
    assert_eq!(resolved["devices"].as_array().map(Vec::len), Some(2), "{resolved}");
    let revoked = alice.kith(&["device", "revoke", &laptop_peer, "--json"]).ok().json();
    assert_eq!(revoked["peer_id"], laptop_peer.as_str(), "{revoked}");
    alice.kith(&["device", "revoke", &laptop_peer]).fails_with("not one of your");
    thread::sleep(Duration::from_secs(5));
    bob.kith(&["send", "@alice", "after the revocation", "--wait"]).ok();
    let resolved = bob.kith(&["resolve", "alice", "--json"]).ok().json();
    assert_eq!(resolved["devices"].as_array().map(Vec::len), Some(1), "{resolved}");
    alice.kith(&["send", "@bob", "phone after the revocation", "--wait"]).ok();
    wait_until("alice to receive after the revocation", Duration::from_secs(30), || {
        texts_with(&alice, "@bob", "in").contains(&"after the revocation".to_owned()).then_some(())
    });
    thread::sleep(Duration::from_secs(3));
    assert!(!texts_with(&laptop, "@bob", "in").contains(&"after the revocation".to_owned()));
    assert!(!texts_with(&laptop, "@bob", "out").contains(&"phone after the revocation".to_owned()));
    drop(boot);
}

#[test]
fn a_recovery_phrase_restores_the_identity() {
    let alice = Node::init("alice");
    let phrase = alice.kith(&["identity", "export"]).ok().stdout;
    assert_eq!(phrase.split_whitespace().count(), 24, "{phrase:?}");
    let user = alice.kith(&["identity", "export", "--json"]).ok().json()["user_id"].clone();
    let restored = Node::empty("restored");
    let mut child = command(&restored.home())
        .args(["init", "--recover", "--label", "new phone", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(phrase.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["user_id"], user, "{info}");
    // A wrong phrase is a clear error, and nothing is written.
    let other = Node::empty("other");
    let mut child = command(&other.home())
        .args(["init", "--recover"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let wrong = phrase.replacen(phrase.split_whitespace().next().unwrap_or(""), "zzzz", 1);
    child.stdin.take().expect("stdin").write_all(wrong.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovery phrase"), "{out:?}");
    assert!(!other.home().join("identity.pub").exists());
}
