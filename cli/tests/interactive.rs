//! End to end, with the real binary: a business sends interactive messages through the local
//! API (buttons, a form), a person answers from the CLI with `kith reply`, the business sees
//! the structured answers, and a closed message takes no more (issue 21).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A call to `node`'s local API, as a bot in any language makes it: its status and body.
fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let home = node.home();
    let addr = std::fs::read_to_string(home.join("api.addr")).expect("api.addr");
    let token = std::fs::read_to_string(home.join("api.token")).expect("api.token");
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let url = format!("http://{}{path}", addr.trim());
    let auth = format!("Bearer {}", token.trim());
    let answer = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b),
        (_, b) => agent.post(&url).header("Authorization", &auth).send_json(b.unwrap_or_default()),
    };
    let mut r = answer.expect("the API answers");
    let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    (r.status().as_u16(), v)
}

/// A POST to `node`'s local API that must succeed.
fn api(node: &Node, path: &str, body: Value) -> Value {
    let (status, v) = call(node, "POST", path, Some(body));
    assert!((200..300).contains(&status), "POST {path}: {status} {v}");
    v
}

/// A bot in any language, over HTTP: the inbox hands out each message until it is marked
/// done, state is kept per conversation and listed by prefix, and a person's node has no inbox.
#[test]
fn a_bot_over_http_reads_its_inbox_and_keeps_state() {
    let (_boot, _, [alice, echo]) = network_of(["alice", "echo"]);
    let (status, v) = call(&echo, "GET", "/v1/bot/inbox", None);
    assert_eq!((status, v["code"].as_str()), (409, Some("not_a_bot")), "{v}");
    echo.kith(&["profile", "set", "--kind", "bot", "--display-name", "Echo"]).ok();

    for text in ["one", "two"] {
        alice.kith(&["send", "@echo", text, "--wait"]).ok();
    }
    let inbox = wait_until("both messages in the inbox", WAIT, || {
        let (_, v) = call(&echo, "GET", "/v1/bot/inbox", None);
        (v.as_array()?.len() == 2).then_some(v)
    });
    // The texts of an inbox listing, in its order.
    let texts = |inbox: &Value| -> Vec<String> {
        let list = inbox.as_array().expect("a list");
        list.iter().map(|e| e["message"]["text"].as_str().expect("text").to_owned()).collect()
    };
    assert_eq!(texts(&inbox), ["one", "two"]);
    let first = &inbox[0];
    let conv = first["message"]["conversation"].as_str().expect("conversation").to_owned();
    let key = first["key"].as_u64().expect("key");

    // Handled: state kept, then marked done.
    for (k, v) in
        [("order:b", json!({"n": 2})), ("order:a", json!({"n": 1})), ("seen", json!(true))]
    {
        let (status, got) =
            call(&echo, "PUT", &format!("/v1/bot/state/{conv}/{k}"), Some(v.clone()));
        assert_eq!((status, got), (200, v));
    }
    let (_, orders) = call(&echo, "GET", &format!("/v1/bot/state/{conv}?prefix=order:"), None);
    assert_eq!(
        orders,
        json!([{"key": "order:a", "value": {"n": 1}}, {"key": "order:b", "value": {"n": 2}}])
    );
    let (status, _) = call(&echo, "DELETE", &format!("/v1/bot/state/{conv}/order:a"), None);
    assert_eq!(status, 204);
    let (status, _) = call(&echo, "GET", &format!("/v1/bot/state/{conv}/order:a"), None);
    assert_eq!(status, 404);
    let (_, all) = call(&echo, "GET", &format!("/v1/bot/state/{conv}"), None);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let (status, v) = call(&echo, "GET", "/v1/bot/state/nothex/seen", None);
    assert_eq!(status, 400, "{v}");

    let (_, done) = call(&echo, "POST", &format!("/v1/bot/inbox/{key}/done"), None);
    assert_eq!(done, json!({"key": key, "done": true}));
    let (_, again) = call(&echo, "POST", &format!("/v1/bot/inbox/{key}/done"), None);
    assert_eq!(again["done"], false);
    let (_, left) = call(&echo, "GET", "/v1/bot/inbox", None);
    assert_eq!(texts(&left), ["two"]);
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
    let (boot, _, [alice, pizza]) = network_of(["alice", "pizza"]);
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
