//! End to end, with the real binary: four friends plan a barbecue in a group (issue 20). Alice
//! has a phone and a laptop; dave is offline while the shopping list is edited and the bills are
//! recorded, and catches up afterwards. An event with answers and a change of time; live
//! locations from bob and carol that end on time; a shopping list edited concurrently; three
//! expenses in two currencies, the proposed settlement, a payment request with its GiroCode,
//! payments recorded and confirmed; every balance zero on every device at the end.

mod support;

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Longest a group message may take to reach a member (gossip, or a sync from a member).
const GROUP_WAIT: Duration = Duration::from_secs(90);

fn json(node: &Node, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    node.kith(&all).ok().json()
}

/// Waits until `check` holds for what `args` prints (as JSON) on `node`.
#[track_caller]
fn wait_json(node: &Node, what: &str, args: &[&str], check: impl Fn(&Value) -> bool) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    wait_until(&format!("{}: {what}", node.name), GROUP_WAIT, || {
        let out = node.kith(&all);
        out.status.success().then(|| out.json()).filter(|v| check(v))
    })
}

fn items(list: &Value) -> Vec<(String, bool, Option<String>)> {
    let mut out: Vec<(String, bool, Option<String>)> = list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["text"].as_str().unwrap_or("").to_owned(),
                        i["done"] == true,
                        i["for"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn transfers(bills: &Value, currency: &str) -> Vec<(String, String, i64)> {
    let c =
        bills["currencies"].as_array().and_then(|c| c.iter().find(|c| c["currency"] == currency));
    let mut out: Vec<(String, String, i64)> = c
        .and_then(|c| c["transfers"].as_array())
        .map(|t| {
            t.iter()
                .map(|t| {
                    (
                        t["from"].as_str().unwrap_or("").to_owned(),
                        t["to"].as_str().unwrap_or("").to_owned(),
                        t["amount"]["minor"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn settled(bills: &Value) -> bool {
    bills["currencies"].as_array().is_some_and(|c| {
        c.len() == 2
            && c.iter().all(|c| {
                c["balances"].as_object().is_some_and(|b| b.is_empty())
                    && c["transfers"].as_array().is_some_and(|t| t.is_empty())
            })
    })
}

/// Shares a live location from `node` for `seconds`, feeding `fixes` one every 6 s; the
/// command keeps its input open until the session is over.
fn share_live(
    node: &Node,
    tag: &str,
    seconds: u64,
    fixes: Vec<&'static str>,
) -> thread::JoinHandle<String> {
    let mut child = command(&node.home())
        .args(["location", tag, "--live", &format!("{seconds}s")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith location --live");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let err = drain(child.stderr.take());
    thread::spawn(move || {
        let mut out = std::io::BufReader::new(stdout);
        for (i, fix) in fixes.iter().enumerate() {
            writeln!(stdin, "{fix}").expect("write a position");
            if i == 0 {
                let mut first = String::new();
                out.read_line(&mut first).expect("first line");
                assert!(first.contains("sharing your location"), "{first}");
            }
            thread::sleep(Duration::from_secs(6));
        }
        // Past the end: the next position is refused and the command ends by itself.
        thread::sleep(Duration::from_secs(seconds.saturating_sub(6 * fixes.len() as u64) + 2));
        let _ = writeln!(stdin, "53.55,9.99");
        let status = wait_exit(&mut child, Duration::from_secs(30));
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        assert!(
            status.success(),
            "kith location --live: {status}: {rest} {}",
            err.join().unwrap_or_default()
        );
        rest
    })
}

#[test]
fn four_friends_plan_a_barbecue() {
    let started = Instant::now();
    let mut boot = Node::init("boot");
    let boot_addr = boot.start(None)["listen_addrs"][0].as_str().expect("boot listens").to_owned();
    let mut alice = Node::init("alice");
    let mut bob = Node::init("bob");
    let mut carol = Node::init("carol");
    let mut dave = Node::init("dave");
    let mut erin = Node::init("erin");
    for node in [&mut alice, &mut bob, &mut carol, &mut dave, &mut erin] {
        node.start(Some(&boot_addr));
    }
    for node in [&alice, &bob, &carol, &dave, &erin] {
        wait_until(&format!("{} to connect", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
    }
    for node in [&alice, &bob, &carol, &dave, &erin] {
        node.register(node.name);
    }
    // Alice's laptop joins her identity before the group forms.
    let (mut linking, _out, code) = link_code(&alice, &[]);
    let mut laptop = Node::empty("laptop");
    laptop.kith(&["init", "--link", &code, "--label", "laptop"]).ok();
    assert!(wait_exit(&mut linking, Duration::from_secs(30)).success());
    laptop.start(Some(&boot_addr));

    // The group forms from a chat by mentioning.
    let sent = json(&alice, &["send", "@bob", "barbecue on saturday? @carol @dave"]);
    let group = sent["conversation"].as_str().expect("conversation").to_owned();
    let tag = format!("#{}", &group[..8]);
    let tag = tag.as_str();
    for node in [&bob, &carol, &dave, &laptop] {
        wait_until(&format!("{} to join the group", node.name), GROUP_WAIT, || {
            node.messages(&[tag])
                .filter(|l| !with_text(l, "barbecue on saturday? @carol @dave").is_empty())
        });
    }

    // An event, answers, and a change of time that everyone sees.
    let ev = json(
        &alice,
        &[
            "event",
            tag,
            "Barbecue",
            "--at",
            "2027-06-12T18:00+02:00",
            "--place",
            "Stadtpark, Hamburg",
        ],
    );
    let ev_id = ev["id"].as_str().expect("event id").to_owned();
    for node in [&bob, &carol, &dave, &laptop] {
        wait_json(node, "the event", &["events", tag], |v| v[0]["id"] == ev_id.as_str());
    }
    json(&bob, &["rsvp", &ev_id, "yes"]);
    json(&carol, &["rsvp", &ev_id, "maybe"]);
    json(&dave, &["rsvp", &ev_id, "no"]);
    let wrong = dave.kith(&["rsvp", &ev_id, "perhaps"]);
    assert!(wrong.status.code() == Some(2) && wrong.stderr.contains("invalid value"), "{wrong:?}");
    bob.kith(&["event", &ev_id, "--at", "2027-06-12T20:00+02:00"])
        .fails_with("only the one who proposed");
    alice.kith(&["event", &ev_id, "--at", "2027-06-12T19:00+02:00"]).ok();
    json(&dave, &["rsvp", &ev_id, "yes"]);
    for node in [&alice, &bob, &carol, &dave, &laptop] {
        let e = wait_json(node, "the answers and the new time", &["events", tag], |v| {
            v[0]["changes"] == 1 && v[0]["answers"]["yes"].as_array().is_some_and(|a| a.len() == 2)
        });
        assert_eq!(e[0]["start"], "2027-06-12T19:00:00+02:00", "{e}");
        assert_eq!(e[0]["answers"]["maybe"], serde_json::json!(["carol"]), "{e}");
        assert_eq!(e[0]["place"], "Stadtpark, Hamburg", "{e}");
    }
    let history = bob.messages(&[tag]).expect("bob's history");
    assert!(
        history.as_array().is_some_and(|h| h
            .iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.starts_with("Event changed")))),
        "the change shows in the history: {history}"
    );
    assert!(
        history.as_array().is_some_and(|h| h.iter().all(|m| m["kind"] != "rsvp")),
        "answers are not messages of their own: {history}"
    );

    // A shopping list; dave goes offline; alice and carol add at the same time.
    let list = json(&bob, &["list", tag, "new", "Shopping"]);
    let list_id = list["id"].as_str().expect("list id").to_owned();
    for node in [&alice, &carol, &dave, &laptop] {
        wait_json(node, "the list", &["lists", tag], |v| v[0]["id"] == list_id.as_str());
    }
    dave.stop();
    let adds: Vec<thread::JoinHandle<()>> =
        [(&alice, "sausages", Some("@bob")), (&carol, "bread", None)]
            .into_iter()
            .map(|(node, item, who)| {
                let home = node.home();
                let list_id = list_id.clone();
                thread::spawn(move || {
                    let mut args = vec!["list".to_owned(), list_id, "add".into(), item.into()];
                    if let Some(w) = who {
                        args.extend(["--for".to_owned(), w.to_owned()]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    kith(&home, &args).ok();
                })
            })
            .collect();
    for a in adds {
        a.join().expect("an add");
    }
    laptop.kith(&["list", &list_id, "add", "charcoal"]).ok();
    wait_json(&bob, "every item", &["list", &list_id], |v| items(v).len() == 3);
    bob.kith(&["list", &list_id, "done", "sausages"]).ok();
    carol.kith(&["list", &list_id, "rename", "bread", "rolls"]).ok();
    bob.kith(&["list", &list_id, "done", "nothing-like-it"]).fails_with("no item");

    // Bob and carol share where they are, live, for 20 s.
    let bob_live = share_live(&bob, tag, 20, vec!["53.5600,9.9800,10", "53.5605,9.9810,8"]);
    let carol_live = share_live(&carol, tag, 20, vec!["53.5500,10.0000"]);
    let shared = wait_json(&alice, "two live locations", &["locations", tag], |v| {
        v.as_array().is_some_and(|l| {
            l.iter().filter(|l| l["session"].is_string() && l["ended"] == false).count() == 2
        })
    });
    assert!(shared.to_string().contains("openstreetmap.org"), "{shared}");

    // Three expenses in two currencies, recorded while dave is away.
    json(&alice, &["bills", tag, "add", "Sausages", "45.00", "EUR"]);
    json(&bob, &["bills", tag, "add", "Drinks", "30", "EUR", "--among", "@alice,@bob,@carol"]);
    json(
        &carol,
        &["bills", tag, "add", "Souvenirs", "3000", "JPY", "--exact", "@alice=1000,@dave=2000"],
    );
    carol.kith(&["bills", tag, "add", "Boat", "12.345", "EUR"]).fails_with("decimals");
    carol.kith(&["bills", tag, "add", "Boat", "12", "XYZ"]).fails_with("ISO 4217");
    carol
        .kith(&["bills", tag, "add", "Boat", "10", "EUR", "--exact", "@alice=3,@bob=3"])
        .fails_with("add up");
    // The proposed settlement: alice +23.75, bob +8.75, carol -21.25, dave -11.25 EUR;
    // carol +3000, alice -1000, dave -2000 JPY.
    let eur = vec![
        ("carol".to_owned(), "alice".to_owned(), 2125),
        ("dave".to_owned(), "alice".to_owned(), 250),
        ("dave".to_owned(), "bob".to_owned(), 875),
    ];
    let jpy = vec![
        ("alice".to_owned(), "carol".to_owned(), 1000),
        ("dave".to_owned(), "carol".to_owned(), 2000),
    ];
    for node in [&alice, &bob, &carol, &laptop] {
        let b = wait_json(node, "three expenses", &["bills", tag], |v| {
            v["expenses"].as_array().is_some_and(|e| e.len() == 3)
        });
        assert_eq!(transfers(&b, "EUR"), eur, "{}: {b}", node.name);
        assert_eq!(transfers(&b, "JPY"), jpy, "{}: {b}", node.name);
    }
    let human = bob.kith(&["bills", tag]).ok().stdout;
    assert!(
        human.contains("carol pays alice 21.25 EUR") && human.contains("dave pays carol 2000 JPY"),
        "{human}"
    );

    // Alice asks to be paid by SEPA transfer; carol sees the GiroCode and marks it paid.
    let req = json(
        &alice,
        &[
            "bills",
            tag,
            "request",
            "--iban",
            "DE89 3704 0044 0532 0130 00",
            "--name",
            "Alice Example",
            "--reference",
            "BBQ",
        ],
    );
    let req_id = req["id"].as_str().expect("request id").to_owned();
    alice
        .kith(&["bills", tag, "request", "--iban", "DE89370400440532013001", "--name", "A"])
        .fails_with("check digits");
    let b = wait_json(&carol, "the request", &["bills", tag], |v| {
        v["requests"][0]["id"] == req_id.as_str()
    });
    let qr = b["requests"][0]["methods"][0]["qr"].as_str().expect("a GiroCode");
    assert!(
        qr.starts_with("BCD\n002\n1\nSCT\n\nAlice Example\nDE89370400440532013000\n"),
        "{qr:?}"
    );
    let shown = carol.kith(&["bills", tag, "show", &req_id]).ok().stdout;
    assert!(shown.contains("IBAN DE89370400440532013000") && shown.contains('█'), "{shown}");
    carol.kith(&["bills", tag, "pay", &req_id]).ok();
    alice.kith(&["bills", tag, "pay", &req_id]).fails_with("your own request");
    laptop.kith(&["bills", tag, "paid", "@carol", "1000", "JPY"]).ok();

    // The live locations end on time, on every device that was online.
    for handle in [bob_live, carol_live] {
        handle.join().expect("a live location");
    }
    for node in [&alice, &laptop, &bob, &carol] {
        wait_json(node, "both live locations ended", &["locations", tag], |v| {
            v.as_array().is_some_and(|l| {
                l.iter().filter(|l| l["session"].is_string() && l["ended"] == true).count() == 2
            })
        });
    }

    // Dave comes back and catches up: the list, the expenses, the ended live locations.
    dave.start(Some(&boot_addr));
    let l = wait_json(&dave, "the edited list", &["list", &list_id], |v| items(v).len() == 3);
    assert_eq!(
        items(&l),
        vec![
            ("charcoal".to_owned(), false, None),
            ("rolls".to_owned(), false, None),
            ("sausages".to_owned(), true, Some("bob".to_owned())),
        ],
        "{l}"
    );
    let b = wait_json(&dave, "the expenses", &["bills", tag], |v| {
        v["expenses"].as_array().is_some_and(|e| e.len() == 3)
    });
    assert_eq!(transfers(&b, "EUR"), eur, "{b}");
    dave.kith(&["bills", tag, "paid", "@bob", "8.75", "EUR"]).ok();
    dave.kith(&["bills", tag, "paid", "@alice", "2.50", "EUR"]).ok();
    dave.kith(&["bills", tag, "paid", "@carol", "2000", "JPY"]).ok();
    dave.kith(&["bills", tag, "paid", "@dave", "1", "EUR"]).fails_with("someone else");

    // Each confirms what they were paid; only the one paid may.
    let confirm_all = |node: &Node, from: &[&str]| {
        let b = wait_json(node, "the payments to confirm", &["bills", tag], |v| {
            v["payments"].as_array().is_some_and(|p| {
                from.iter().all(|f| p.iter().any(|p| p["from"] == *f && p["to"] == node_user(node)))
            })
        });
        for p in b["payments"].as_array().expect("payments") {
            if p["to"] == node_user(node) && p["confirmed"] == false {
                node.kith(&["bills", tag, "confirm", p["id"].as_str().expect("id")]).ok();
            }
        }
    };
    confirm_all(&alice, &["carol", "dave"]);
    confirm_all(&bob, &["dave"]);
    confirm_all(&carol, &["alice", "dave"]);
    let b = json(&bob, &["bills", tag]);
    let others = b["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .find(|p| p["to"] != "bob")
        .cloned()
        .expect("a payment to someone else");
    bob.kith(&["bills", tag, "confirm", others["id"].as_str().expect("id")])
        .fails_with("only the one paid");

    // Every balance is zero on every device, and every device has every list edit.
    for node in [&alice, &laptop, &bob, &carol, &dave] {
        let b = wait_json(node, "everything settled", &["bills", tag], settled);
        assert_eq!(b["payments"].as_array().map(Vec::len), Some(5), "{}: {b}", node.name);
        let l = wait_json(node, "the list", &["list", &list_id], |v| items(v).len() == 3);
        assert_eq!(
            items(&l)[2],
            ("sausages".to_owned(), true, Some("bob".to_owned())),
            "{}: {l}",
            node.name
        );
        let e = json(node, &["events", tag]);
        assert_eq!(e[0]["start"], "2027-06-12T19:00:00+02:00", "{}: {e}", node.name);
    }
    wait_json(&dave, "both live locations ended", &["locations", tag], |v| {
        v.as_array().is_some_and(|l| l.iter().filter(|l| l["ended"] == true).count() == 2)
    });

    // Erin joins later: the shared list is handed over to her, and she edits it.
    alice.kith(&["send", tag, "welcome @erin"]).ok();
    let l = wait_json(&erin, "the list handed over", &["lists", tag], |v| {
        v[0]["id"] == list_id.as_str() && items(&v[0]).len() == 3
    });
    assert_eq!(items(&l[0]), items(&json(&alice, &["list", &list_id])), "{l}");
    erin.kith(&["list", &list_id[..8], "done", "charcoal"]).ok();
    wait_json(&bob, "erin's tick", &["list", &list_id], |v| {
        items(v)[0] == ("charcoal".to_owned(), true, None)
    });
    eprintln!("the barbecue took {:?}", started.elapsed());
    drop(boot);
}

/// The name a node's user goes by in this test (the laptop is alice's).
fn node_user(node: &Node) -> &'static str {
    if node.name == "laptop" {
        "alice"
    } else {
        node.name
    }
}

#[test]
fn planning_commands_check_their_input() {
    let mut alice = Node::init("alice");
    alice.start(None);
    alice.kith(&["location", "@bob", "--lat", "91", "--lon", "0"]).fails_with("latitude");
    alice.kith(&["location", "@bob"]).fails_with("--lat and --lon");
    alice.kith_input(&["location", "@bob", "--live", "1h"], "").fails_with("no position");
    alice.kith_input(&["location", "@bob", "--live", "9h"], "53.5,10\n").fails_with("8 hours");
    alice.kith(&["location", "stop"]).ok();
    alice.kith(&["event", "#12345678", "--at", "2027-06-12T18:00"]).fails_with("needs a title");
    alice.kith(&["event", "@bob", "BBQ", "--at", "tomorrow"]).fails_with("not a time");
    alice.kith(&["bills", "@bob", "add", "x", "0", "EUR"]).fails_with("more than 0");
    alice.kith(&["bills", "@bob", "add", "x", "1.2.3", "EUR"]).fails_with("an amount is digits");
    alice.kith(&["rsvp", "12345678", "yes"]).fails_with("no message");
}
