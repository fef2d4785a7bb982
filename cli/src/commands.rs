//! What each command does.

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kith_node::home::Home;
use kith_node::{Multiaddr, NodeError};
use kith_protocol::identity::MAX_DEVICE_LABEL;
use serde_json::{json, Value};

use crate::client::{shell_quote, ApiError, Client};
use crate::config::DaemonArgs;
use crate::output;

/// How often `send --wait` asks for the status of the message.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How many messages `chat` shows when it starts.
const CHAT_HISTORY: u32 = 20;

/// `kith init`.
pub fn init(home: &Home, label: Option<String>, json: bool) -> Result<()> {
    let label = match label {
        Some(label) => label.trim().to_owned(),
        None => hostname(),
    };
    if label.is_empty() {
        bail!("the device label is empty");
    }
    if label.len() > MAX_DEVICE_LABEL {
        bail!(
            "the device label is {} bytes long; at most {MAX_DEVICE_LABEL} are allowed",
            label.len()
        );
    }
    let info = home.init(&label, kith_node::now_ms())?;
    if json {
        return emit_json(&json!({
            "user_id": info.user_id.to_string(),
            "peer_id": info.peer_id,
            "fingerprint": info.fingerprint,
        }));
    }
    let dir = shell_quote(&home.dir().display().to_string());
    emit(format_args!(
        "Created a Kith identity in {dir}\n\
         user id:       {}\n\
         peer id:       {}\n\
         safety number: {}\n\
         Next: run the daemon with `kith --home {dir} daemon`, then claim a name with \
         `kith --home {dir} register NAME`.",
        info.user_id, info.peer_id, info.fingerprint
    ))
}

/// `kith daemon`: runs until SIGINT or SIGTERM.
pub fn daemon(home: &Home, args: DaemonArgs) -> Result<()> {
    let resolved = args.resolve(home.dir())?;
    if !home.is_initialized() {
        return Err(NodeError::NotInitialized(home.dir().to_path_buf()).into());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    if let Some(file) = &resolved.file {
        tracing::info!(file = %file.display(), "read the config file");
    }
    let config = resolved.config;
    if resolved.unused_mailbox_settings {
        tracing::warn!(
            "mailbox settings are given but the mailbox is off (--mailbox, mailbox = true)"
        );
    }
    if config.mailbox.enabled {
        let m = &config.mailbox;
        let who = if m.allow.is_empty() {
            "any user".to_owned()
        } else {
            format!("{} allowed user(s)", m.allow.len())
        };
        tracing::info!(
            max_messages = m.max_messages,
            max_bytes = m.max_bytes,
            retention_days = m.retention.as_secs() / (24 * 3600),
            deposits_per_minute = m.deposits_per_minute,
            "serving as a mailbox for {who}"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
        kith_node::daemon::run(config, shutdown).await.map_err(anyhow::Error::from)
    })
}

/// Completes on the first SIGINT or SIGTERM. Must be called inside the runtime.
fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let which = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!("received {which}, shutting down");
    })
}

/// `kith status`.
pub fn status(home: &Home, json: bool) -> Result<()> {
    let status = Client::from_home(home)?.get("/v1/status", &[])?;
    if json {
        emit_json(&status)
    } else {
        emit(output::status(&status))
    }
}

/// `kith register NAME`.
pub fn register(home: &Home, name: &str, json: bool) -> Result<()> {
    let name = parse_name(name)?;
    let answer = match Client::from_home(home)?.post("/v1/register", &json!({ "name": name })) {
        Ok(answer) => answer,
        Err(e) if e.downcast_ref::<ApiError>().is_some_and(|e| e.code == "dht") => {
            return Err(e.context(format!(
                "cannot register @{name} (is the daemon connected to other peers? see `kith status`)"
            )));
        }
        Err(e) => return Err(e.context(format!("cannot register @{name}"))),
    };
    if json {
        return emit_json(&answer);
    }
    let user_id = answer.get("user_id").and_then(Value::as_str).unwrap_or("?");
    emit(format_args!("registered @{name} (user id {user_id})"))
}

/// `kith resolve NAME`.
pub fn resolve(home: &Home, name: &str, json: bool) -> Result<()> {
    let name = parse_name(name)?;
    let record = Client::from_home(home)?.get(&format!("/v1/resolve/{name}"), &[])?;
    if json {
        emit_json(&record)
    } else {
        emit(output::resolved(&record))
    }
}

/// `kith send @NAME TEXT...`; `wait` is the `--timeout` of `--wait`, in seconds.
pub fn send(home: &Home, to: &str, words: &[String], wait: Option<u64>, json: bool) -> Result<()> {
    let to = parse_name(to)?;
    let text = words.join(" ");
    if text.trim().is_empty() {
        bail!("the message is empty");
    }
    let client = Client::from_home(home)?;
    let mut answer = client.post("/v1/messages", &json!({ "to": to, "text": text }))?;
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .context("the daemon's answer carries no valid message id")?
        .to_owned();
    if !json {
        emit(&id)?;
    }
    let mut status = answer.get("status").and_then(Value::as_str).unwrap_or("queued").to_owned();
    let mut reason: Option<String> = None;
    if let Some(secs) = wait {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !matches!(status.as_str(), "delivered" | "read") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if json {
                    answer["status"] = json!(status);
                    emit_json(&answer)?;
                }
                bail!(
                    "not delivered after {secs}s: {}",
                    undelivered_reason(&to, &status, reason.as_deref())
                );
            }
            std::thread::sleep(left.min(POLL_INTERVAL));
            let message = client.get(&format!("/v1/messages/{id}"), &[])?;
            if let Some(s) = message.get("status").and_then(Value::as_str) {
                status = s.to_owned();
            }
            reason = message.get("pending_reason").and_then(Value::as_str).map(str::to_owned);
        }
    }
    if json {
        answer["status"] = json!(status);
        emit_json(&answer)?;
    }
    Ok(())
}

fn undelivered_reason(to: &str, status: &str, last_error: Option<&str>) -> String {
    let later = "the message stays queued and will be delivered when they come online";
    let why = last_error
        .map(|e| format!(" (last attempt: {})", e.replace('\n', " ")))
        .unwrap_or_default();
    match status {
        "queued" => format!("{to}'s devices are offline{why}; {later}"),
        "sent" => format!("{to}'s devices have not acknowledged it yet{why}; {later}"),
        "stored" => {
            format!("{to}'s mailbox holds it until one of their devices fetches it; {later}")
        }
        other => format!("its status is {other:?}{why}; {later}"),
    }
}

/// `kith messages [@NAME]`.
pub fn messages(
    home: &Home,
    with: Option<&str>,
    json: bool,
    follow: bool,
    limit: Option<u32>,
) -> Result<()> {
    let with = with.map(parse_name).transpose()?;
    let client = Client::from_home(home)?;
    // Subscribe before reading the history, so that nothing falls between the two.
    let events = if follow { Some(client.events()?) } else { None };
    let history = history(&client, with.as_deref(), limit)?;
    let Some(events) = events else {
        if json {
            return emit_json(&Value::Array(history));
        }
        if history.is_empty() {
            match &with {
                Some(name) => eprintln!("no messages with @{name} yet"),
                None => eprintln!("no messages yet"),
            }
        }
        return history.iter().try_for_each(|m| emit(output::message(m)));
    };
    let print = |m: &Value| if json { emit(m) } else { emit(output::message(m)) };
    let mut filter = Filter::new(&client, with)?;
    for m in &history {
        filter.remember(m);
        print(m)?;
    }
    for event in events {
        let event = event?;
        if event.kind != "message" {
            continue;
        }
        let m = event.json()?;
        if filter.accept(&m) {
            print(&m)?;
        }
    }
    bail!("the daemon closed the event stream (has it stopped?)")
}

/// `kith contacts`.
pub fn contacts(home: &Home, json: bool) -> Result<()> {
    let list = Client::from_home(home)?.get("/v1/contacts", &[])?;
    if json {
        emit_json(&list)
    } else {
        emit(output::contacts(&list))
    }
}

/// `kith trust NAME`.
pub fn trust(home: &Home, name: &str, json: bool) -> Result<()> {
    let name = parse_name(name)?;
    let contact = Client::from_home(home)?.post("/v1/trust", &json!({ "name": name }))?;
    if json {
        return emit_json(&contact);
    }
    let fingerprint = contact.get("fingerprint").and_then(Value::as_str).unwrap_or("?");
    emit(format_args!("now trusting the current key of @{name} (safety number {fingerprint})"))
}

/// `kith chat @NAME`.
pub fn chat(home: &Home, with: &str) -> Result<()> {
    let name = parse_name(with)?;
    let client = Client::from_home(home)?;
    let events = client.events()?;
    let history = history(&client, Some(&name), Some(CHAT_HISTORY))?;
    let mut filter = Filter::new(&client, Some(name.clone()))?;
    for m in &history {
        filter.remember(m);
        emit(output::message(m))?;
    }
    eprintln!(
        "-- chatting with @{name}: type a message and press Enter; /quit or Ctrl-D leaves --"
    );
    std::thread::spawn(move || {
        for event in events {
            let m = match event.and_then(|e| {
                if e.kind == "message" {
                    e.json().map(Some)
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("kith: {}", crate::client::one_line(&format!("{e:#}")));
                    return;
                }
            };
            // What we send ourselves is already on the screen, as typed.
            let incoming = m.get("direction").and_then(Value::as_str) != Some("out");
            if filter.accept(&m) && incoming && emit(output::message(&m)).is_err() {
                return;
            }
        }
        eprintln!("kith: the daemon closed the event stream (has it stopped?)");
    });
    for line in io::stdin().lock().lines() {
        let line = line.context("cannot read standard input")?;
        let text = line.trim_end_matches('\r');
        match text.trim() {
            "" => continue,
            "/quit" => break,
            _ => {}
        }
        match client.post("/v1/messages", &json!({ "to": name, "text": text })) {
            Ok(_) => {}
            // The daemon refused this message (say, the name is unknown): say so, go on.
            Err(e) if e.is::<ApiError>() => eprintln!("kith: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `kith mailbox add MULTIADDR`.
pub fn mailbox_add(home: &Home, addr: &Multiaddr, json: bool) -> Result<()> {
    let addr = addr.to_string();
    let Some(peer_id) = peer_id_of(&addr) else {
        bail!(
            "the mailbox address {addr} does not end in /p2p/<peer id> (the peer id `kith status` \
             shows on the mailbox node)"
        );
    };
    let client = Client::from_home(home)?;
    let answer = match client.post("/v1/mailboxes", &json!({ "addr": addr })) {
        Ok(answer) => answer,
        Err(e) => {
            let hint = match e.downcast_ref::<ApiError>().map(|e| e.code.as_str()) {
                Some("refused") => " (it serves only the users on its allow list)",
                Some("dht") => " (is it running, and is its port reachable from here?)",
                _ => "",
            };
            return Err(e.context(format!("cannot enroll with mailbox {peer_id}{hint}")));
        }
    };
    if json {
        return emit_json(&answer);
    }
    let peer_id = answer.get("peer_id").and_then(Value::as_str).unwrap_or(peer_id);
    emit(format_args!("enrolled with mailbox {peer_id}"))
}

/// `kith mailbox list`.
pub fn mailbox_list(home: &Home, json: bool) -> Result<()> {
    let list = Client::from_home(home)?.get("/v1/mailboxes", &[])?;
    if json {
        emit_json(&list)
    } else {
        emit(output::mailboxes(&list))
    }
}

/// `kith mailbox remove PEER_ID`.
pub fn mailbox_remove(home: &Home, input: &str) -> Result<()> {
    let input = input.trim();
    let peer_id = if input.starts_with('/') { peer_id_of(input) } else { Some(input) }
        .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        .with_context(|| format!("invalid peer id {input:?}"))?;
    match Client::from_home(home)?.delete(&format!("/v1/mailboxes/{peer_id}")) {
        Ok(_) => {}
        Err(e) if e.downcast_ref::<ApiError>().is_some_and(|e| e.code == "not_found") => {
            bail!("mailbox {peer_id} is not in your name record (see `kith mailbox list`)")
        }
        Err(e) => return Err(e.context(format!("cannot remove mailbox {peer_id}"))),
    }
    emit(format_args!("removed mailbox {peer_id}"))
}

/// The peer id at the end of a multiaddr (`.../p2p/<peer id>`), if it has one.
fn peer_id_of(addr: &str) -> Option<&str> {
    let mut parts = addr.trim_end_matches('/').rsplit('/');
    let peer_id = parts.next()?;
    (parts.next() == Some("p2p") && !peer_id.is_empty()).then_some(peer_id)
}

/// `GET /v1/messages`, checked to be a list.
fn history(client: &Client, with: Option<&str>, limit: Option<u32>) -> Result<Vec<Value>> {
    let mut query = Vec::new();
    if let Some(name) = with {
        query.push(("with", name.to_owned()));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    match client.get("/v1/messages", &query)? {
        Value::Array(list) => Ok(list),
        _ => bail!("the daemon's message list is not a JSON array"),
    }
}

/// Picks, from the event stream, the messages not shown yet that belong to the conversation.
#[derive(Debug)]
struct Filter {
    /// The name and, when it is a known contact, its user id; `None` lets every message pass.
    party: Option<Vec<String>>,
    conversations: HashSet<String>,
    seen: HashSet<String>,
}

impl Filter {
    fn new(client: &Client, with: Option<String>) -> Result<Filter> {
        let party = match with {
            None => None,
            Some(name) => {
                // `from` and `to` are user ids while the daemon does not know the name.
                let contacts = client.get("/v1/contacts", &[])?;
                let user_id = contacts.as_array().into_iter().flatten().find_map(|c| {
                    (c.get("name").and_then(Value::as_str) == Some(&name))
                        .then(|| c.get("user_id").and_then(Value::as_str))
                        .flatten()
                        .map(str::to_owned)
                });
                Some([name].into_iter().chain(user_id).collect())
            }
        };
        Ok(Filter { party, conversations: HashSet::new(), seen: HashSet::new() })
    }

    /// Records a message of the conversation that is already shown.
    fn remember(&mut self, m: &Value) {
        if let Some(c) = field(m, "conversation") {
            self.conversations.insert(c.to_owned());
        }
        if let Some(id) = field(m, "id") {
            self.seen.insert(id.to_owned());
        }
    }

    /// Whether to show `m`; if so, it is remembered.
    fn accept(&mut self, m: &Value) -> bool {
        if field(m, "id").is_some_and(|id| self.seen.contains(id)) {
            return false;
        }
        if let Some(party) = &self.party {
            let in_conversation =
                field(m, "conversation").is_some_and(|c| self.conversations.contains(c));
            let with_party = ["from", "to"]
                .iter()
                .any(|f| field(m, f).is_some_and(|v| party.iter().any(|p| p == v)));
            if !in_conversation && !with_party {
                return false;
            }
        }
        self.remember(m);
        true
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// Validates and normalizes a name given on the command line, with or without a leading '@'.
fn parse_name(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let bare = trimmed.strip_prefix('@').unwrap_or(trimmed);
    kith_protocol::normalize_name(bare).with_context(|| format!("invalid name {input:?}"))
}

/// This machine's host name, the default device label.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= MAX_DEVICE_LABEL)
        .unwrap_or_else(|| "device".to_owned())
}

/// Prints one line (or block) to standard output, flushed, so that pipes see it at once.
fn emit(text: impl Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to standard output")
}

/// Prints a JSON value, pretty.
fn emit_json(value: &Value) -> Result<()> {
    emit(serde_json::to_string_pretty(value).context("cannot format JSON")?)
}

/// Whether the error is standard output being closed by its reader.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_an_at_sign_and_are_normalized() {
        assert_eq!(parse_name("@Bob").expect("valid"), "bob");
        assert_eq!(parse_name(" alice ").expect("valid"), "alice");
        let err = format!("{:#}", parse_name("A B").expect_err("invalid"));
        assert!(
            err.contains("invalid name \"A B\"") && err.contains("lowercase ASCII letters"),
            "{err}"
        );
    }

    #[test]
    fn filter_keeps_the_conversation_and_drops_repeats() {
        let mut f = Filter {
            party: Some(vec!["bob".into()]),
            conversations: HashSet::new(),
            seen: HashSet::new(),
        };
        f.remember(&json!({"id": "1", "conversation": "c1"}));
        assert!(!f.accept(&json!({"id": "1", "conversation": "c1"})));
        assert!(f.accept(&json!({"id": "2", "conversation": "c1", "from": "x"})));
        assert!(
            !f.accept(&json!({"id": "3", "conversation": "c2", "from": "carol", "to": "alice"}))
        );
        assert!(f.accept(&json!({"id": "4", "conversation": "c3", "from": "alice", "to": "bob"})));
        assert!(f.accept(&json!({"id": "5", "conversation": "c3", "from": "alice", "to": "b0b1d"})));
    }

    #[test]
    fn peer_ids_are_taken_from_the_end_of_an_address() {
        assert_eq!(peer_id_of("/ip4/203.0.113.7/tcp/4011/p2p/12D3KooWx"), Some("12D3KooWx"));
        assert_eq!(peer_id_of("/ip4/203.0.113.7/tcp/4011"), None);
        assert_eq!(peer_id_of("/p2p/"), None);
    }

    #[test]
    fn undelivered_reason_names_the_recipient() {
        assert!(undelivered_reason("bob", "queued", None).starts_with("bob's devices are offline"));
    }
}
