//! End to end, with the real binary: blocking someone drops everything they send, on every
//! device of the user who blocked them, without telling them (issue 21, consent and abuse).

mod support;

use std::thread;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_blocked_user_reaches_no_device_until_unblocked() {
    let (boot, boot_addr, [alice, bob, carol]) = network_of(["alice", "bob", "carol"]);
    let (mut linking, _out, code) = link_code(&bob, &[]);
    let mut laptop = Node::empty("laptop");
    laptop.kith(&["init", "--link", &code, "--label", "laptop"]).ok();
    assert!(wait_exit(&mut linking, Duration::from_secs(30)).success());
    laptop.start(Some(&boot_addr));

    alice.kith(&["send", "@bob", "hello bob", "--wait"]).ok();
    for node in [&bob, &laptop] {
        wait_until(&format!("{} to have alice's hello", node.name), WAIT, || {
            texts(node, "@alice").contains(&"hello bob".to_owned()).then_some(())
        });
    }

    // Bob blocks alice on his phone; his laptop learns it.
    let b = bob.kith(&["block", "@alice", "--json"]).ok().json();
    assert_eq!((b["name"].as_str(), b["blocked"].as_bool()), (Some("alice"), Some(true)), "{b}");
    wait_until("the laptop to know of the block", WAIT, || {
        let l = laptop.kith(&["blocked", "--json"]).ok().json();
        (l[0]["name"] == "alice").then_some(())
    });
    bob.kith(&["send", "@alice", "are you there?"]).fails_with("you blocked @alice");
    bob.kith(&["block", "@bob"]).fails_with("yourself");

    // A group carol forms with both: bob gets carol's posts, not alice's.
    let sent = carol.kith(&["send", "@bob", "party at mine @alice", "--json"]).ok().json();
    let group = sent["conversation"].as_str().expect("group").to_owned();
    let tag = format!("#{}", &group[..8]);
    wait_until("alice to join carol's group", WAIT, || {
        texts(&alice, &tag).contains(&"party at mine @alice".to_owned()).then_some(())
    });
    alice.kith(&["send", "@bob", "direct while blocked", "--wait"]).ok();
    alice.kith(&["send", &tag, "alice in the group"]).ok();
    carol.kith(&["send", &tag, "carol again"]).ok();
    for node in [&bob, &laptop] {
        wait_until(&format!("{} to have carol's second post", node.name), WAIT, || {
            texts(node, &tag).contains(&"carol again".to_owned()).then_some(())
        });
    }
    wait_until("carol to have alice's post", WAIT, || {
        texts(&carol, &tag).contains(&"alice in the group".to_owned()).then_some(())
    });
    thread::sleep(Duration::from_secs(3));
    for node in [&bob, &laptop] {
        let direct = texts(node, "@alice");
        assert!(!direct.contains(&"direct while blocked".to_owned()), "{}: {direct:?}", node.name);
        let in_group = texts(node, &tag);
        assert!(
            !in_group.contains(&"alice in the group".to_owned()),
            "{}: {in_group:?}",
            node.name
        );
    }

    // Unblocked from the laptop: alice reaches both devices again.
    laptop.kith(&["unblock", "@alice"]).ok();
    wait_until("the phone to know of the unblock", WAIT, || {
        let l = bob.kith(&["blocked", "--json"]).ok().json();
        l.as_array().is_some_and(Vec::is_empty).then_some(())
    });
    alice.kith(&["send", "@bob", "friends again?"]).ok();
    for node in [&bob, &laptop] {
        wait_until(&format!("{} to have alice's message", node.name), WAIT, || {
            texts(node, "@alice").contains(&"friends again?".to_owned()).then_some(())
        });
    }
    let human = bob.kith(&["blocked"]).ok().stdout;
    assert!(human.contains("nobody"), "{human}");
    drop(boot);
}
