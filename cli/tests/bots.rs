//! End to end, with the real binaries: the example bots of issue 21, each embedding its node.
//! A pizza is ordered from product cards, a cart and a form, asked to be paid, moved through
//! its statuses across a `kill -9` of the bot (each update arrives once), and rated, and the
//! rating shows in the pizzeria's profile; two people press the same barber's slot at the same
//! moment and only one gets it.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(90);

fn list(node: &Node, with: &str) -> Vec<Value> {
    node.messages(&[with]).and_then(|l| l.as_array().cloned()).unwrap_or_default()
}

fn count_text(node: &Node, with: &str, needle: &str) -> usize {
    list(node, with)
        .iter()
        .filter(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
        .count()
}

fn wait_text(node: &Node, with: &str, needle: &str) -> Value {
    wait_until(&format!("{} to see {needle:?}", node.name), WAIT, || {
        list(node, with)
            .into_iter()
            .find(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
    })
}

/// The newest interactive message from `with` whose element is of `kind` (and, for a
/// product, of that title).
fn interactive(node: &Node, with: &str, kind: &str, title: Option<&str>) -> Value {
    wait_until(&format!("{} to get a {kind}", node.name), WAIT, || {
        list(node, with).into_iter().rev().find(|m| {
            let e = &m["interactive"]["element"][kind];
            !e.is_null() && title.is_none_or(|t| e["title"] == t) && m["direction"] == "in"
        })
    })
}

fn id_of(m: &Value) -> String {
    m["id"].as_str().expect("id").to_owned()
}

fn network() -> (Node, String) {
    let mut boot = Node::init("boot");
    let addr = boot.start(None)["listen_addrs"][0].as_str().expect("addr").to_owned();
    (boot, addr)
}

fn person(name: &'static str, boot: &str) -> Node {
    let mut n = Node::init(name);
    n.start(Some(boot));
    wait_until(&format!("{name} to connect"), START_TIMEOUT, || {
        n.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
    });
    n.register(name);
    n
}

fn wait_business(node: &Node, name: &str) {
    wait_until(&format!("{} to find @{name} as a business", node.name), WAIT, || {
        let out = node.kith(&["resolve", name, "--json"]);
        (out.status.success() && out.json()["kind"] == "business").then_some(())
    });
}

#[test]
fn a_pizza_is_ordered_paid_delivered_once_across_a_crash_and_rated() {
    let (boot, addr) = network();
    let pizzeria = ["bot", "pizzeria", "--name", "napoli", "--step", "3"];
    let mut napoli = Node::init("napoli");
    napoli.start_as(&pizzeria, Some(&addr), &[]);
    let alice = person("alice", &addr);
    wait_business(&alice, "napoli");

    alice.kith(&["send", "@napoli", "hi"]).ok();
    wait_text(&alice, "@napoli", "Welcome to Pizzeria Napoli");
    let card = interactive(&alice, "@napoli", "product", Some("Margherita"));
    let added = alice.kith(&["reply", &id_of(&card), "large"]).ok().stdout;
    assert!(added.contains("answered"), "{added}");
    wait_text(&alice, "@napoli", "Cart: Margherita (large) 11.00; total EUR 11.00");
    let checkout = interactive(&alice, "@napoli", "buttons", None);
    alice.kith(&["reply", &id_of(&checkout), "checkout"]).ok();
    let form = interactive(&alice, "@napoli", "form", None);
    alice
        .kith(&["reply", &id_of(&form), "--form", "address=Main St 1"])
        .fails_with("Name is required");
    alice
        .kith(&["reply", &id_of(&form), "--form", "name=Alice", "--form", "address=Main St 1"])
        .ok();
    let received = wait_text(&alice, "@napoli", "received: Margherita (large) 11.00");
    let short = received["text"].as_str().expect("text")[6..14].to_owned();

    // The bot crashes while the order is under way, and starts again.
    napoli.kill();
    thread::sleep(Duration::from_secs(1));
    napoli.start_as(&pizzeria, Some(&addr), &[]);

    wait_text(&alice, "@napoli", &format!("Order {short}: delivered."));
    for status in ["baking", "out for delivery", "delivered"] {
        let n = count_text(&alice, "@napoli", &format!("Order {short}: {status}."));
        assert_eq!(n, 1, "{status} arrived {n} times");
    }
    let all = list(&alice, "@napoli");
    let asks: Vec<&Value> = all.iter().filter(|m| m["kind"] == "pay.request").collect();
    assert_eq!(asks.len(), 1, "{all:?}");
    assert_eq!(count_text(&alice, "@napoli", "Welcome to Pizzeria Napoli"), 1);

    // Rated: five stars and a comment; the aggregate reaches the profile.
    let rate = wait_text(&alice, "@napoli", "How was your pizza");
    alice.kith(&["reply", &id_of(&rate), "stars:5"]).ok();
    wait_text(&alice, "@napoli", "Anything to add?");
    alice.kith(&["send", "@napoli", "great crust"]).ok();
    wait_text(&alice, "@napoli", "Noted, thank you");
    let p = wait_until("the rating to be published", WAIT, || {
        let r = alice.kith(&["resolve", "@napoli", "--json"]).ok().json();
        (r["profile"]["rating"]["count"] == 1).then_some(r)
    });
    assert_eq!(p["profile"]["rating"]["average"], 5.0, "{p}");
    drop(boot);
}

#[test]
fn two_people_press_the_same_slot_and_one_gets_it() {
    let (boot, addr) = network();
    let mut tony = Node::init("tony");
    tony.start_as(
        &[
            "bot",
            "barber",
            "--name",
            "tony",
            "--open",
            "00:00-24:00",
            "--slot-minutes",
            "1",
            "--step",
            "10",
        ],
        Some(&addr),
        &[],
    );
    let alice = person("alice", &addr);
    let bob = person("bob", &addr);
    wait_business(&alice, "tony");
    wait_business(&bob, "tony");
    for p in [&alice, &bob] {
        p.kith(&["send", "@tony", "a haircut please"]).ok();
    }
    let offers: Vec<Value> =
        [&alice, &bob].iter().map(|p| interactive(p, "@tony", "buttons", None)).collect();
    let slots = |m: &Value| -> Vec<String> {
        m["interactive"]["element"]["buttons"]
            .as_array()
            .map(|b| b.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (a, b) = (slots(&offers[0]), slots(&offers[1]));
    // A slot both were offered, a few minutes ahead so it is still to come when pressed.
    let common: Vec<&String> =
        a.iter().filter(|s| s.starts_with("slot:") && b.contains(s)).collect();
    let slot = common.get(3).copied().expect("common slots").clone();
    let presses: Vec<_> = [(&alice, &offers[0]), (&bob, &offers[1])]
        .into_iter()
        .map(|(p, offer)| {
            let home = p.home();
            let (id, slot) = (id_of(offer), slot.clone());
            thread::spawn(move || kith(&home, &["reply", &id, &slot]).ok())
        })
        .collect();
    for p in presses {
        p.join().expect("press");
    }
    let outcome = |p: &Node| -> bool {
        wait_until(&format!("{} to hear back", p.name), WAIT, || {
            let booked = count_text(p, "@tony", "Booked:");
            let taken = count_text(p, "@tony", "just taken");
            (booked + taken > 0).then_some(booked > 0)
        })
    };
    let (alice_got, bob_got) = (outcome(&alice), outcome(&bob));
    assert!(alice_got ^ bob_got, "exactly one booking: alice {alice_got}, bob {bob_got}");
    let winner = if alice_got { &alice } else { &bob };
    // The appointment is within the reminder's lead: the reminder comes once.
    wait_text(winner, "@tony", "Reminder: your appointment");
    winner.kith(&["send", "@tony", "cancel"]).ok();
    wait_text(winner, "@tony", "Cancelled your booking");
    assert_eq!(count_text(winner, "@tony", "Reminder: your appointment"), 1);
    drop(boot);
}
