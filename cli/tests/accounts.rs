//! End to end, with the real binary (issue 21): a business publishes a profile with a domain,
//! which a person's node checks against a local web server; the business cannot write to the
//! person until the person writes to it, nor after the person unsubscribes; the person mutes
//! it, then reports and blocks it, and it can no longer reach the person.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A web server on 127.0.0.1 answering `GET /DOMAIN/kith.json` from `files` (404 otherwise),
/// for as long as the test runs.
fn well_known_server(files: Arc<Mutex<Vec<(String, String)>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            let body =
                files.lock().expect("lock").iter().find(|(p, _)| *p == path).map(|f| f.1.clone());
            let mut stream = stream;
            let answer = match body {
                Some(b) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn a_business_with_a_verified_domain_writes_only_with_consent() {
    let files = Arc::new(Mutex::new(Vec::new()));
    let port = well_known_server(files.clone());
    let check_url = format!("http://127.0.0.1:{port}/{{domain}}/kith.json");

    let mut boot = Node::init("boot");
    let boot_addr = boot.start(None)["listen_addrs"][0].as_str().expect("addr").to_owned();
    let mut alice = Node::init("alice");
    let mut shop = Node::init("napoli");
    let mut carol = Node::init("carol");
    alice.start_with(Some(&boot_addr), &["--domain-check-url", &check_url]);
    shop.start(Some(&boot_addr));
    carol.start(Some(&boot_addr));
    for node in [&alice, &shop, &carol] {
        wait_until(&format!("{} to connect", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
        node.register(node.name);
    }
    let shop_id = shop.status().expect("status")["user_id"].as_str().expect("id").to_owned();
    files
        .lock()
        .expect("lock")
        .push(("/napoli.example/kith.json".into(), format!("{{\"users\": [\"{shop_id}\"]}}")));

    // The business publishes its profile; a bad one is refused with the rule it breaks.
    shop.kith(&["profile", "set", "--kind", "business", "--hours", "someday 10:00-11:00"])
        .fails_with("unknown day");
    let p = shop
        .kith(&[
            "profile",
            "set",
            "--kind",
            "business",
            "--display-name",
            "Pizzeria Napoli",
            "--category",
            "pizzeria",
            "--hours",
            "tue-sun 11:00-22:00",
            "--domain",
            "napoli.example",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(p["kind"], "business", "{p}");
    assert_eq!(p["hours"].as_str().map(|h| h.matches(',').count()), Some(5), "{p}");

    let r = wait_until("alice to see the profile", WAIT, || {
        let r = alice.kith(&["resolve", "@napoli", "--json"]).ok().json();
        (r["kind"] == "business").then_some(r)
    });
    assert_eq!(r["profile"]["display_name"], "Pizzeria Napoli", "{r}");
    assert_eq!(r["profile"]["verification"]["status"], "verified", "{r}");
    let human = alice.kith(&["resolve", "@napoli"]).ok().stdout;
    assert!(human.contains("napoli.example (verified)"), "{human}");
    // An avatar: any peer fetches it from the business's device.
    let picture = shop.home().join("napoli.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&picture, &png).expect("write the picture");
    let not_a_picture = shop.home().join("notes.txt");
    std::fs::write(&not_a_picture, "hello").expect("write");
    shop.kith(&[
        "profile",
        "set",
        "--kind",
        "business",
        "--avatar",
        not_a_picture.to_str().expect("path"),
    ])
    .fails_with("JPEG, PNG or WebP");
    let picture_arg = picture.to_str().expect("path");
    shop.kith(&[
        "profile",
        "set",
        "--kind",
        "business",
        "--display-name",
        "Pizzeria Napoli",
        "--category",
        "pizzeria",
        "--hours",
        "tue-sun 11:00-22:00",
        "--domain",
        "napoli.example",
        "--avatar",
        picture_arg,
    ])
    .ok();
    let fetched = alice.home().join("napoli-avatar.png");
    let fetched_arg = fetched.to_str().expect("path").to_owned();
    wait_until("alice to fetch the avatar", WAIT, || {
        alice.kith(&["resolve", "@napoli", "--avatar", &fetched_arg]).status.success().then_some(())
    });
    assert_eq!(std::fs::read(&fetched).expect("the avatar"), png);
    let human = alice.kith(&["resolve", "@napoli"]).ok().stdout;
    assert!(human.contains("avatar:        image/png, 5008 bytes"), "{human}");

    let contacts = alice.kith(&["contacts"]).ok().stdout;
    assert!(contacts.contains("@napoli (Pizzeria Napoli) [business]"), "{contacts}");

    // No consent yet: the business's node refuses to write.
    shop.kith(&["send", "@alice", "hungry?"]).fails_with("has not written to you");
    // People write to each other freely.
    carol.kith(&["send", "@alice", "hi alice"]).ok();

    // Alice writes: now it may answer.
    alice.kith(&["send", "@napoli", "a menu please"]).ok();
    wait_until("the shop to have alice's message", WAIT, || {
        texts(&shop, "@alice").contains(&"a menu please".to_owned()).then_some(())
    });
    shop.kith(&["send", "@alice", "margherita 9.50"]).ok();
    wait_until("alice to have the menu", WAIT, || {
        texts(&alice, "@napoli").contains(&"margherita 9.50".to_owned()).then_some(())
    });

    // Muting keeps the messages and marks the conversation.
    let muted = alice.kith(&["mute", "@napoli", "--for", "8h"]).ok().stdout;
    assert!(muted.contains("muted until"), "{muted}");
    let list = alice.kith(&["conversations", "--json"]).ok().json();
    let shop_chat = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["members"].to_string().contains("napoli")).cloned())
        .expect("the conversation with the shop");
    assert_eq!(shop_chat["muted"], true, "{shop_chat}");
    alice.kith(&["unmute", "@napoli"]).ok();

    // Unsubscribed: the shop's node learns it and refuses to write again.
    alice.kith(&["unsubscribe", "@napoli"]).ok();
    wait_until("the shop to learn of the unsubscription", WAIT, || {
        let out = shop.kith(&["send", "@alice", "special offer"]);
        (!out.status.success() && out.stderr.contains("unsubscribed")).then_some(())
    });
    alice.kith(&["subscribe", "@napoli"]).ok();
    wait_until("the shop to learn of the subscription", WAIT, || {
        shop.kith(&["send", "@alice", "welcome back"]).status.success().then_some(())
    });
    wait_until("alice to have the welcome", WAIT, || {
        texts(&alice, "@napoli").contains(&"welcome back".to_owned()).then_some(())
    });

    // Reported and blocked: whatever it sends never shows.
    let rep =
        alice.kith(&["report", "@napoli", "--reason", "too many offers", "--json"]).ok().json();
    assert_eq!(rep["blocked"], true, "{rep}");
    assert!(rep["messages"].as_array().is_some_and(|m| m.len() >= 2), "{rep}");
    shop.kith(&["send", "@alice", "buy now", "--wait"]).ok();
    carol.kith(&["send", "@alice", "after the report", "--wait"]).ok();
    wait_until("alice to have carol's message", WAIT, || {
        texts(&alice, "@carol").contains(&"after the report".to_owned()).then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    assert!(!texts(&alice, "@napoli").contains(&"buy now".to_owned()));
    let reports = alice.kith(&["reports"]).ok().stdout;
    assert!(reports.contains("@napoli  too many offers"), "{reports}");

    // A domain that does not list the business shows as not verified, with why.
    shop.kith(&["profile", "set", "--kind", "business", "--domain", "other.example"]).ok();
    let r = wait_until("alice to see the new domain", WAIT, || {
        let r = alice.kith(&["resolve", "@napoli", "--json"]).ok().json();
        (r["profile"]["domain"] == "other.example").then_some(r)
    });
    assert_eq!(r["profile"]["verification"]["status"], "failed", "{r}");
    let why = r["profile"]["verification"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("404"), "{r}");
    drop(boot);
}
