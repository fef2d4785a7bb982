//! End to end, with the real binary: a business sends interactive messages through the local
//! API (buttons, a form), a person answers from the CLI with `kith reply`, the business sees
//! the structured answers, and a closed message takes no more (issue 21).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A call to `node`'s local API, as a bot in any language makes it.
fn api(node: &Node, path: &str, body: Value) -> Value {
    let home = node.home();
    let addr = std::fs::read_to_string(home.join("api.addr")).expect("api.addr");
    let token = std::fs::read_to_string(home.join("api.token")).expect("api.token");
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut r = agent
        .post(format!("http://{}{path}", addr.trim()))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .send_json(body)
        .expect("the API answers");
    let status = r.status();
    let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {path}: {status} {v}");
    v
}

fn message(node: &Node, id: &str) -> Value {
    node.kith(&["messages", "--json"])
        .ok()
        .json()
        .as_array()
        .and_then(|l| l.iter().find(|m| m["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_person_answers_buttons_and_a_form_from_the_cli() {
    let mut boot = Node::init("boot");
    let boot_addr = boot.start(None)["listen_addrs"][0].as_str().expect("addr").to_owned();
    let mut alice = Node::init("alice");
    let mut pizza = Node::init("pizza");
    for node in [&mut alice, &mut pizza] {
        node.start(Some(&boot_addr));
    }
    for node in [&alice, &pizza] {
        wait_until(&format!("{} to connect", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
        node.register(node.name);
    }
    alice.kith(&["send", "@pizza", "hungry", "--wait"]).ok();
    wait_until("pizza to know alice", WAIT, || {
        with_text(&pizza.messages(&["@alice"])?, "hungry").first().map(|_| ())
    });

    let buttons = api(
        &pizza,
        "/v1/interactive",
        json!({
            "to": "@alice", "text": "What would you like?",
            "element": {"buttons": [{"id": "marg", "label": "Margherita"}, {"id": "sal", "label": "Salami"}]},
        }),
    );
    let id = buttons["id"].as_str().expect("id").to_owned();
    wait_until("alice to see the buttons", WAIT, || {
        let out = alice.kith(&["messages", "@pizza"]).ok().stdout;
        out.contains("1) Margherita").then_some(())
    });
    alice.kith(&["reply", &id[..8], "3"]).fails_with("not one of");
    let answered = alice.kith(&["reply", &id[..8], "2"]).ok().stdout;
    assert!(answered.contains("answered"), "{answered}");
    wait_until("pizza to see alice's answer", WAIT, || {
        let m = message(&pizza, &id);
        (m["interactive"]["answers"][0]["choices"] == json!(["sal"])
            && m["interactive"]["answers"][0]["from"] == "alice")
            .then_some(())
    });

    // A form: the node checks the answer against its fields.
    let form = api(
        &pizza,
        "/v1/interactive",
        json!({
            "to": "@alice", "text": "Your order",
            "element": {"form": {"submit": "Order", "fields": [
                {"key": "name", "label": "Name", "kind": {"text": {"max_len": 40}}, "required": true},
                {"key": "count", "label": "How many", "kind": {"number": {"min": 1, "max": 9}}, "required": true},
            ]}},
            "expires_in_s": 600,
        }),
    );
    let form_id = form["id"].as_str().expect("id").to_owned();
    wait_until("alice to see the form", WAIT, || {
        alice.kith(&["messages", "@pizza"]).ok().stdout.contains("--form count=").then_some(())
    });
    alice
        .kith(&["reply", &form_id, "--form", "name=Alice", "--form", "count=12"])
        .fails_with("not within 1 to 9");
    alice.kith(&["reply", &form_id, "--form", "count=2"]).fails_with("Name is required");
    alice.kith(&["reply", &form_id, "--form", "name=Alice", "--form", "count=2"]).ok();
    wait_until("pizza to see the order", WAIT, || {
        let m = message(&pizza, &form_id);
        (m["interactive"]["answers"][0]["fields"] == json!([["count", "2"], ["name", "Alice"]]))
            .then_some(())
    });

    // Closed by its sender, the buttons take no more answers.
    api(&pizza, &format!("/v1/messages/{id}/update"), json!({"closed": true, "text": "Sold out"}));
    wait_until("alice to see the buttons closed", WAIT, || {
        (message(&alice, &id)["interactive"]["open"] == false).then_some(())
    });
    alice.kith(&["reply", &id, "1"]).fails_with("no more answers");
    let history = alice.kith(&["messages", "@pizza"]).ok().stdout;
    assert!(history.contains("Sold out") && history.contains("(closed)"), "{history}");
    drop(boot);
}
