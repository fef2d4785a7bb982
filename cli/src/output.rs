//! Human-readable forms of the daemon's answers. The `--json` forms print the answers as they
//! are; these read them leniently, so a missing field shows as `?` instead of failing.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::one_line;

/// A string field, or `?`.
fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("?")
}

/// A number field as text, or `?`.
fn number(v: &Value, field: &str) -> String {
    v.get(field).and_then(Value::as_u64).map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// `2026-11-22T10:00:00Z` as `2026-11-22 10:00:00Z` (times stay in UTC).
fn time(rfc3339: &str) -> String {
    rfc3339.replacen('T', " ", 1)
}

/// The choices or fields an interactive message offers, numbered, one a line (`kith reply ID
/// N` answers with the N-th choice; `--form KEY=VALUE` fills a form).
pub fn offers(i: &Value) -> String {
    let e = &i["element"];
    let numbered = |list: &Value| -> Vec<String> {
        list.as_array()
            .map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(n, c)| format!("  {}) {}", n + 1, text(c, "label")))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut lines: Vec<String> = Vec::new();
    if let Some(b) = e.get("buttons") {
        lines = numbered(b);
    } else if let Some(p) = e.get("pick") {
        lines = numbered(&p["options"]);
        if p["many"] == true {
            lines.push("  (pick one or more: kith reply ID 1,3)".into());
        }
    } else if let Some(p) = e.get("product") {
        let price = p["price"].as_i64().unwrap_or(0);
        let cur = text(p, "currency");
        lines.push(format!(
            "  {}: {}",
            text(p, "title"),
            kith_node::rules::currency::format_amount(price, cur)
        ));
        lines.extend(numbered(&p["options"]));
    } else if let Some(f) = e.get("form") {
        for field in f["fields"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let required = if field["required"] == true { ", required" } else { "" };
            let kind = field["kind"]
                .as_object()
                .and_then(|k| k.keys().next().cloned())
                .unwrap_or_else(|| field["kind"].as_str().unwrap_or("text").to_owned());
            lines.push(format!(
                "  --form {}=… ({}: {kind}{required})",
                text(field, "key"),
                text(field, "label")
            ));
        }
    }
    if i["open"] != true {
        lines.push("  (closed)".into());
    }
    if lines.is_empty() {
        String::new()
    } else {
        format!("\n{}", lines.join("\n"))
    }
}

/// One message: `[time] from: text  (status)`; with `show_conversation`, a group message as
/// `[time] #3fa2b1c0 from: text  (status)`.
pub fn message(m: &Value, show_conversation: bool) -> String {
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or("non-text");
    let id = m.get("id").and_then(Value::as_str).unwrap_or("?");
    let file = m.get("attachment").filter(|a| a.is_object()).map(|a| attachment(a, id));
    let body = m.get("text").and_then(Value::as_str).or(file.as_deref()).map_or_else(
        || match kind {
            "group.leave" => "<left the group>".to_owned(),
            "group.remove" => "<removed a member from the group>".to_owned(),
            _ => format!("<{kind} message>"),
        },
        str::to_owned,
    );
    let body = if m.get("deleted").and_then(Value::as_bool) == Some(true) {
        "<deleted>".to_owned()
    } else if m.get("edited").and_then(Value::as_bool) == Some(true) {
        format!("{body} (edited)")
    } else {
        body
    };
    // A reply starts with what it answers; reactions follow the text.
    let quote = m.get("reply_to").filter(|r| r.is_object()).map_or_else(String::new, |r| {
        let said: String =
            r.get("text").and_then(Value::as_str).unwrap_or("…").chars().take(40).collect();
        format!("(to {}: \"{said}\") ", text(r, "from"))
    });
    let reactions = m.get("reactions").and_then(Value::as_array).map_or_else(String::new, |list| {
        let each: Vec<String> =
            list.iter().map(|r| format!("{} {}", text(r, "emoji"), number(r, "count"))).collect();
        if each.is_empty() {
            String::new()
        } else {
            format!(" [{}]", each.join(", "))
        }
    });
    let offers = m.get("interactive").filter(|i| i.is_object()).map_or_else(String::new, offers);
    let body = format!("{quote}{body}{reactions}{offers}");
    // Keep one message on one line per line of its text, indenting continuation lines.
    let body = body.lines().collect::<Vec<_>>().join("\n    ");
    let group = match m.get("to").and_then(Value::as_str) {
        Some(to) if show_conversation && to.starts_with('#') => {
            format!("{} ", to.get(..9).unwrap_or(to))
        }
        _ => String::new(),
    };
    format!(
        "[{}] {group}{}: {}  ({})",
        time(text(m, "sent_at")),
        text(m, "from"),
        body,
        text(m, "status")
    )
}

/// An attachment: `[file cat.jpg, 1.2 MiB, downloading 40 %] caption`.
fn attachment(a: &Value, id: &str) -> String {
    let short = id.get(..8).unwrap_or(id);
    let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
    let state = match a.get("state").and_then(Value::as_str).unwrap_or("?") {
        "downloading" => {
            let held = a.get("bytes_held").and_then(Value::as_u64).unwrap_or(0);
            format!("downloading {} %", held.saturating_mul(100) / size.max(1))
        }
        "failed" => format!(
            "failed: {}; `kith save {short}` tries again",
            a.get("error").and_then(Value::as_str).unwrap_or("?")
        ),
        "available" | "evicted" => format!("not downloaded; `kith save {short}` fetches it"),
        "complete" => match a.get("saved_to").and_then(Value::as_str) {
            Some(path) => format!("saved at {path}"),
            None => format!("downloaded; `kith save {short}` writes it"),
        },
        other => other.to_owned(),
    };
    let caption = a.get("caption").and_then(Value::as_str).map(|c| format!(" {c}"));
    format!(
        "[file {}, {}, {state}]{}",
        a.get("name").and_then(Value::as_str).unwrap_or("(no name)"),
        crate::media::size(size),
        caption.unwrap_or_default()
    )
}

/// Strings of a JSON array joined by `sep`; other values as JSON.
pub fn list(items: &[Value], sep: &str) -> String {
    let items: Vec<String> =
        items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
    items.join(sep)
}

/// `GET /v1/conversations`: one line each, `3fa2b1c0  group   alice, bob, carol  (left)`.
pub fn conversations(all: &Value) -> String {
    let all = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if all.is_empty() {
        return "no conversations yet (start one with `kith send @NAME TEXT`)".to_owned();
    }
    let lines: Vec<String> = all
        .iter()
        .map(|c| {
            let id = text(c, "id");
            let members = c
                .get("members")
                .and_then(Value::as_array)
                .map_or_else(String::new, |m| list(m, ", "));
            let left = if c.get("active").and_then(Value::as_bool) == Some(false) {
                "  (left)"
            } else {
                ""
            };
            let unread = match c.get("unread").and_then(Value::as_u64) {
                Some(n) if n > 0 => format!("  ({n} unread)"),
                _ => String::new(),
            };
            let missing = match c.get("missing").and_then(Value::as_u64) {
                Some(n) if n > 0 => format!("  ({n} missing, catching up)"),
                _ => String::new(),
            };
            format!(
                "{}  {:<6}  {members}{left}{unread}{missing}",
                id.get(..8).unwrap_or(id),
                text(c, "kind")
            )
        })
        .collect();
    lines.join("\n")
}

/// `GET /v1/status`.
pub fn status(s: &Value) -> String {
    let mut out = String::new();
    let name = match s.get("name").and_then(Value::as_str) {
        Some(name) => format!("@{name}"),
        None => "(none yet; claim one with `kith register NAME`)".to_owned(),
    };
    let _ = writeln!(out, "name:            {name}");
    if let Some(c) = s.get("name_conflict").filter(|c| !c.is_null()) {
        let verdict = if c.get("wins").and_then(Value::as_bool) == Some(true) {
            "and resolvers pick it over yours"
        } else {
            "fewer peers serve it than yours"
        };
        let _ = writeln!(
            out,
            "WARNING:         another identity (user id {}) claims @{} at {} DHT peer(s), {verdict}; this node keeps publishing its own record",
            text(c, "user_id"),
            text(c, "name"),
            number(c, "holders"),
        );
    }
    if s.get("name_served_by").and_then(Value::as_u64) == Some(0) {
        let _ = writeln!(
            out,
            "WARNING:         no other peer served your name record when it was last read back"
        );
    }
    let _ = writeln!(out, "user id:         {}", text(s, "user_id"));
    let _ = writeln!(out, "peer id:         {}", text(s, "peer_id"));
    if let Some(fp) = s.get("fingerprint").and_then(Value::as_str) {
        let _ = writeln!(out, "safety number:   {fp}");
    }
    let addrs: Vec<&str> = s
        .get("listen_addrs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if addrs.is_empty() {
        let _ = writeln!(out, "listening on:    (nothing yet)");
    }
    for (i, addr) in addrs.iter().enumerate() {
        let label = if i == 0 { "listening on:" } else { "" };
        let _ = writeln!(out, "{label:<17}{addr}");
    }
    let _ = writeln!(out, "connected peers: {}", number(s, "connected_peers"));
    let _ = write!(out, "outbox:          {} message(s) not yet delivered", number(s, "outbox"));
    if let Some(v) = s.get("version").and_then(Value::as_str) {
        let _ = write!(out, "\nversion:         {v}");
    }
    out
}

/// `GET /v1/resolve/{name}`.
pub fn resolved(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name:          @{}", text(r, "name"));
    let _ = writeln!(out, "user id:       {}", text(r, "user_id"));
    let _ = writeln!(out, "safety number: {}", text(r, "fingerprint"));
    let _ = writeln!(
        out,
        "record:        seq {}, expires {}",
        number(r, "seq"),
        time(text(r, "expires_at"))
    );
    let devices = r.get("devices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let _ = write!(out, "devices:       {}", devices.len());
    for d in devices {
        let _ = write!(out, "\n  {} ({})", text(d, "peer_id"), one_line(text(d, "label")));
    }
    match r.get("profile") {
        Some(p) => {
            let _ = write!(out, "\n{}", crate::accounts::profile_lines(p));
        }
        None => {
            let _ = write!(out, "\nkind:          person (no profile)");
        }
    }
    out
}

/// `GET /v1/contacts`.
pub fn contacts(list: &Value) -> String {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return "no contacts yet (a name becomes a contact when you first resolve it)".to_owned();
    }
    let lines: Vec<String> = list
        .iter()
        .map(|c| {
            let warning = if c.get("key_changed").and_then(Value::as_bool) == Some(true) {
                "  KEY CHANGED: verify the new safety number, then `kith trust NAME`"
            } else {
                ""
            };
            let kind = match text(c, "kind") {
                "" | "person" => String::new(),
                k => format!(" [{k}]"),
            };
            let shown = c
                .get("display_name")
                .and_then(Value::as_str)
                .map(|d| format!(" ({})", one_line(d)))
                .unwrap_or_default();
            format!(
                "@{}{shown}{kind}  {}  safety number {}{warning}",
                text(c, "name"),
                text(c, "user_id"),
                text(c, "fingerprint")
            )
        })
        .collect();
    lines.join("\n")
}

/// `GET /v1/mailboxes`: one line per mailbox, its peer id and addresses.
pub fn devices(list: &Value) -> String {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let lines: Vec<String> = items
        .iter()
        .map(|d| {
            let this = if d.get("this_device").and_then(Value::as_bool) == Some(true) {
                "  (this device)"
            } else {
                ""
            };
            format!(
                "{}  {}  linked {}{this}",
                text(d, "peer_id"),
                text(d, "label"),
                time(text(d, "linked_at"))
            )
        })
        .collect();
    lines.join("\n")
}

pub fn mailboxes(list: &Value) -> String {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return "no mailboxes (enroll with one with `kith mailbox add MULTIADDR`)".to_owned();
    }
    let lines: Vec<String> = list
        .iter()
        .map(|m| {
            let addrs: Vec<&str> = m
                .get("addrs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if addrs.is_empty() {
                text(m, "peer_id").to_owned()
            } else {
                format!("{}  {}", text(m, "peer_id"), addrs.join(" "))
            }
        })
        .collect();
    lines.join("\n")
}

/// `kith calls`: one line per call, those ringing or running first.
pub fn calls(all: &Value) -> String {
    let line = |c: &Value| {
        let state = match c.get("end_reason").and_then(Value::as_str) {
            Some(why) => why.replace('_', " "),
            None => text(c, "state").to_owned(),
        };
        let length = c
            .get("duration_ms")
            .and_then(Value::as_u64)
            .filter(|d| *d > 0)
            .map_or_else(String::new, |ms| format!("  {}:{:02}", ms / 60_000, ms / 1000 % 60));
        let kind =
            if c.get("video").and_then(Value::as_bool) == Some(true) { "video" } else { "voice" };
        let way = if text(c, "direction") == "out" { "to" } else { "from" };
        let who = if way == "to" { text(c, "to") } else { text(c, "caller") };
        format!("{}  {kind} {way} {who}  {state}{length}", time(text(c, "started_at")))
    };
    let list = |field: &str| -> Vec<String> {
        all.get(field)
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |l| l.iter().map(line).collect())
    };
    let (current, history) = (list("current"), list("history"));
    if current.is_empty() && history.is_empty() {
        return "no calls yet (place one from a chat in the web app: `kith open`)".to_owned();
    }
    let mut out = Vec::new();
    if !current.is_empty() {
        out.push("now:".to_owned());
        out.extend(current);
    }
    if !history.is_empty() {
        out.push("history:".to_owned());
        out.extend(history);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_line() {
        let m = json!({"id": "x", "from": "alice", "text": "hi\nthere", "sent_at": "2026-11-22T10:00:00Z", "status": "delivered"});
        assert_eq!(message(&m, true), "[2026-11-22 10:00:00Z] alice: hi\n    there  (delivered)");
        let g = json!({"from": "bob", "to": "#3fa2b1c0d4e5f60718293a4b5c6d7e8f", "text": "yo",
                       "sent_at": "t", "status": "received"});
        assert_eq!(message(&g, true), "[t] #3fa2b1c0 bob: yo  (received)");
        assert_eq!(message(&g, false), "[t] bob: yo  (received)");
        let file = json!({"id": "0123456789abcdef", "from": "bob", "kind": "attachment", "sent_at": "t", "status": "received",
            "attachment": {"name": "cat.jpg", "size": 2_097_152, "state": "downloading",
                           "bytes_held": 524_288, "caption": "look"}});
        assert_eq!(
            message(&file, false),
            "[t] bob: [file cat.jpg, 2.0 MiB, downloading 25 %] look  (received)"
        );
        let saved = json!({"from": "bob", "sent_at": "t", "status": "received",
            "attachment": {"name": "a.pdf", "size": 10, "state": "complete", "saved_to": "/x/a.pdf"}});
        assert_eq!(
            message(&saved, false),
            "[t] bob: [file a.pdf, 10 B, saved at /x/a.pdf]  (received)"
        );
        let leave =
            json!({"from": "carol", "kind": "group.leave", "sent_at": "t", "status": "sent"});
        assert_eq!(message(&leave, false), "[t] carol: <left the group>  (sent)");
    }

    #[test]
    fn conversation_lines() {
        let list = json!([
            {"id": "0011223344556677", "kind": "direct", "members": ["alice", "bob"], "active": true},
            {"id": "3fa2b1c0d4e5f607", "kind": "group", "members": ["alice", "bob", "carol"], "active": false},
            {"id": "77aa", "kind": "group", "members": ["bob"], "active": true, "missing": 2, "unread": 1},
        ]);
        assert_eq!(
            conversations(&list),
            "00112233  direct  alice, bob\n3fa2b1c0  group   alice, bob, carol  (left)\n\
             77aa  group   bob  (1 unread)  (2 missing, catching up)"
        );
        assert!(conversations(&json!([])).starts_with("no conversations"));
        assert_eq!(conversations(&json!([{}])), "?  ?       ");
    }

    #[test]
    fn missing_fields_do_not_fail() {
        assert_eq!(message(&json!({}), true), "[?] ?: <non-text message>  (?)");
        assert!(status(&json!({"name": null})).contains("kith register"));
        assert!(contacts(&json!([])).starts_with("no contacts"));
        assert!(resolved(&json!({"devices": [{"peer_id": "p", "label": "laptop"}]}))
            .contains("p (laptop)"));
        assert!(mailboxes(&json!([])).starts_with("no mailboxes"));
        assert_eq!(
            mailboxes(&json!([{"peer_id": "p", "addrs": ["/a", "/b"]}, {"peer_id": "q"}])),
            "p  /a /b\nq"
        );
    }
}
