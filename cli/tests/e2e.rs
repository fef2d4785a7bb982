//! End-to-end tests of the `kith` binary: real daemons on loopback, driven through the CLI.
//!
//! Every child process binds 127.0.0.1 only, every wait has a deadline, and every daemon is
//! killed when its guard is dropped, also when a test fails (the daemon's log is then printed).

mod support;

use std::time::Duration;

use support::*;
use tempfile::TempDir;

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

    alice.kith(&["send", "@nobody-here", "hi"]).fails_with("nobody-here");

    // Both online: delivered while `send --wait` waits.
    let out = alice.kith(&["send", "@bob", "hello", "bob", "--wait", "--timeout", "60"]).ok();
    assert!(is_message_id(out.stdout.trim()), "send printed {:?}", out.stdout);
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
    let out = kith(dir.path(), &["send", "@bob"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
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
    let mb_port = free_port();
    let mut mailbox = Node::init("mailbox");
    let listen = format!("/ip4/127.0.0.1/tcp/{mb_port}");
    let mb = mailbox.start_with(None, &["--listen", &listen, "--mailbox"]);
    let mb_addr = format!("{listen}/p2p/{}", mb["peer_id"].as_str().expect("peer id"));
    let mut alice = Node::init("alice");
    alice.start(Some(&mb_addr));
    let mut bob = Node::init("bob");
    bob.start(Some(&mb_addr));
    alice.register("alice");
    bob.register("bob");
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
