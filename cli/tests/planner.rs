//! End to end, with the real binary: the planning assistant (`kith bot planner`, issue 21's
//! example bot) is mentioned into a group and plans what it was asked.

mod support;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn mentioning_the_planner_proposes_the_event_and_starts_two_lists() {
    let (boot, _, [alice, bob, planner]) = network_of(["alice", "bob", "planner"]);
    let mut bot = command(&planner.home())
        .args(["bot", "planner"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith bot planner");
    let mut out = std::io::BufReader::new(bot.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a first line");
    assert!(first.contains("@planner is listening"), "{first}");

    let sent = alice
        .kith(&["send", "@bob", "@planner barbecue saturday 18:00 Stadtpark", "--json"])
        .ok()
        .json();
    let group = sent["conversation"].as_str().expect("a group").to_owned();
    let tag = format!("#{}", &group[..8]);
    let events = wait_until("bob to see the planner's event", WAIT, || {
        let out = bob.kith(&["events", &tag, "--json"]);
        let v = out.status.success().then(|| out.json())?;
        (v[0]["by"] == "planner").then_some(v)
    });
    assert_eq!(events[0]["title"], "Barbecue", "{events}");
    assert_eq!(events[0]["place"], "Stadtpark", "{events}");
    assert!(events[0]["start"].as_str().is_some_and(|s| s.contains("T18:00:00")), "{events}");
    let lists = wait_until("bob to see the planner's two lists", WAIT, || {
        let v = bob.kith(&["lists", &tag, "--json"]).ok().json();
        (v.as_array().map(Vec::len) == Some(2)).then_some(v)
    });
    let kinds: Vec<&str> =
        lists.as_array().expect("lists").iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["shopping", "todo"], "{lists}");
    wait_until("the planner's answer in the group", WAIT, || {
        let m = bob.messages(&[&tag])?;
        m.as_array()?
            .iter()
            .any(|m| {
                m["from"] == "planner"
                    && m["text"].as_str().is_some_and(|t| t.starts_with("Barbecue on"))
            })
            .then_some(())
    });

    // A request it cannot read gets a one-line explanation, not silence.
    alice.kith(&["send", &tag, "@planner something nice"]).ok();
    wait_until("the planner's explanation", WAIT, || {
        let m = alice.messages(&[&tag])?;
        m.as_array()?
            .iter()
            .any(|m| {
                m["from"] == "planner" && m["text"].as_str().is_some_and(|t| t.contains("say when"))
            })
            .then_some(())
    });
    let _ = bot.kill();
    let _ = bot.wait();
    drop(boot);
}
