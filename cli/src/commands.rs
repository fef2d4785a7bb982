//! What each command does.

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kith_node::home::Home;
use kith_node::{Multiaddr, NodeError};
use kith_protocol::identity::MAX_DEVICE_LABEL;
use kith_protocol::message::MAX_TEXT;
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
    let label = validate_label(label)?;
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

/// The device label given, or the host name.
pub(crate) fn validate_label(label: Option<String>) -> Result<String> {
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
    Ok(label)
}

/// `kith daemon`: runs until SIGINT or SIGTERM.
pub fn daemon(home: &Home, args: DaemonArgs) -> Result<()> {
    daemon_with(home, args, |_| ())
}

/// `kith daemon`, calling `started` with the node once it runs (an embedded bot starts there).
pub fn daemon_with(
    home: &Home,
    args: DaemonArgs,
    started: impl FnOnce(kith_node::Node),
) -> Result<()> {
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
        kith_node::daemon::run_with(config, shutdown, started).await.map_err(anyhow::Error::from)
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
    show(home, "/v1/status", json, output::status)
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
    if let Some(w) = answer.get("warning").and_then(Value::as_str) {
        eprintln!("warning: @{name}: {}", crate::client::one_line(w));
    }
    emit(format_args!("registered @{name} (user id {user_id})"))
}

/// `kith resolve NAME`.
pub fn resolve(home: &Home, name: &str, json: bool) -> Result<()> {
    let name = parse_name(name)?;
    show(home, &format!("/v1/resolve/{name}"), json, output::resolved)
}

/// `kith send TARGET TEXT...`; `wait` is the `--timeout` of `--wait`, in seconds.
pub fn send(
    home: &Home,
    to: &str,
    words: &[String],
    file: Option<&str>,
    wait: Option<u64>,
    json: bool,
) -> Result<()> {
    let target = Target::parse(to)?;
    let (text, mut answer) = match file {
        Some(path) => {
            let caption = words.join(" ");
            let client = Client::from_home(home)?;
            let answer = crate::media::upload(&client, &target.api(), path, &caption, json)
                .map_err(|e| conversation_hint(e, &target))?;
            (caption, answer)
        }
        None => {
            let text = match words {
                [] => read_message(&mut io::stdin().lock(), io::stdin().is_terminal())?,
                [dash] if dash == "-" => read_message(&mut io::stdin().lock(), false)?,
                _ => words.join(" "),
            };
            if text.trim().is_empty() {
                bail!("the message is empty");
            }
            let client = Client::from_home(home)?;
            let answer = client
                .post("/v1/messages", &json!({ "to": target.api(), "text": text }))
                .map_err(|e| conversation_hint(e, &target))?;
            (text, answer)
        }
    };
    let client = Client::from_home(home)?;
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .context("the daemon's answer carries no valid message id")?
        .to_owned();
    if !json {
        emit(&id)?;
    }
    // A message to '#ID', or one whose mention formed a group, may be a group message.
    let group = match &target {
        Target::Conversation(_) => group_of(&client, &id),
        Target::Name(_) if text.contains('@') => group_of(&client, &id),
        Target::Name(_) => None,
    };
    if let (Target::Name(name), Some(group)) = (&target, &group) {
        let short = short_id(group);
        let members = client
            .get(&format!("/v1/conversations/{group}/members"), &[])
            .ok()
            .and_then(|m| m.as_array().map(|m| output::list(m, ", ")))
            .unwrap_or_default();
        eprintln!(
            "mentioning someone who is not in your chat with @{name} started the group \
             #{short} ({members}); see it with `kith messages '#{short}'`"
        );
    }
    for n in answer.get("not_invited").and_then(Value::as_array).into_iter().flatten() {
        eprintln!(
            "@{} was not invited: {}",
            field(n, "name").unwrap_or("?"),
            field(n, "reason").unwrap_or("the name does not resolve")
        );
    }
    let mut status = answer.get("status").and_then(Value::as_str).unwrap_or("queued").to_owned();
    if status == "waiting" && group.is_some() {
        eprintln!(
            "this device does not know the group {target} yet (its state has not arrived): the \
             message waits for it and is posted once it arrives (for 7 days); `kith cancel {id}` \
             withdraws it"
        );
    } else if status == "waiting" {
        eprintln!(
            "{target} does not resolve yet (not registered, or not found now): the message waits \
             and is retried for 7 days; `kith cancel {id}` withdraws it"
        );
    }
    let mut reason: Option<String> = None;
    match wait {
        Some(_) if group.is_some() => eprintln!(
            "not waiting: the members of a group do not acknowledge its messages; \
             they get it when they are online"
        ),
        Some(secs) => {
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
                        undelivered_reason(&target.to_string(), &status, reason.as_deref())
                    );
                }
                std::thread::sleep(left.min(POLL_INTERVAL));
                let message = client.get(&format!("/v1/messages/{id}"), &[])?;
                if let Some(s) = message.get("status").and_then(Value::as_str) {
                    status = s.to_owned();
                }
                reason = message.get("pending_reason").and_then(Value::as_str).map(str::to_owned);
            }
            if !json {
                eprintln!("{status}: every device of {target} acknowledged it");
            }
        }
        None => {}
    }
    if json {
        answer["status"] = json!(status);
        emit_json(&answer)?;
    }
    Ok(())
}

/// Reads a message from standard input: at most [`MAX_TEXT`] bytes of UTF-8, one trailing
/// newline dropped. A terminal is refused (the user forgot the text, or a pipe).
fn read_message(input: &mut impl Read, terminal: bool) -> Result<String> {
    if terminal {
        bail!("no message: give the text after the name, or pipe it on standard input");
    }
    let mut bytes = Vec::new();
    input
        .take(MAX_TEXT as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the message from standard input")?;
    if bytes.len() > MAX_TEXT {
        bail!("the message on standard input is over the limit of {MAX_TEXT} bytes");
    }
    let mut text =
        String::from_utf8(bytes).context("the message on standard input is not UTF-8 text")?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// The conversation id of message `id` if it went to a group (its `to` is `#<group id>`).
/// `None` also when the daemon cannot say: this only adds notes.
fn group_of(client: &Client, id: &str) -> Option<String> {
    let m = client.get(&format!("/v1/messages/{id}"), &[]).ok()?;
    field(&m, "to").filter(|to| to.starts_with('#'))?;
    field(&m, "conversation").map(str::to_owned)
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
        "waiting" => format!(
            "{to} does not resolve yet{why}; the message stays stored and is sent once the name \
             resolves (for 7 days)"
        ),
        other => format!("its status is {other:?}{why}; {later}"),
    }
}

/// `kith cancel MESSAGE_ID`.
pub fn cancel(home: &Home, id: &str, json: bool) -> Result<()> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("invalid message id {id:?}: 32 hex digits, as `kith send` printed it");
    }
    let answer = Client::from_home(home)?
        .post(&format!("/v1/messages/{id}/cancel"), &json!({}))
        .with_context(|| format!("cannot cancel message {id}"))?;
    if json {
        return emit_json(&answer);
    }
    emit(format_args!("cancelled {id}"))
}

/// `kith location TARGET --lat --lon`.
pub fn location(
    home: &Home,
    to: &str,
    lat: f64,
    lon: f64,
    accuracy: Option<f32>,
    label: Option<String>,
    json: bool,
) -> Result<()> {
    let target = Target::parse(to)?;
    let body = json!({ "to": target.api(), "lat": lat, "lon": lon, "accuracy_m": accuracy, "label": label });
    let m = Client::from_home(home)?
        .post("/v1/locations", &body)
        .with_context(|| format!("cannot share a location with {target}"))?;
    if json {
        return emit_json(&m);
    }
    emit(format_args!("{}", m.get("id").and_then(Value::as_str).unwrap_or("?")))
}

/// `kith reply`: a text reply, or the answer to an interactive message.
pub fn reply(
    home: &Home,
    id: &str,
    text: Option<String>,
    form: &[String],
    json: bool,
) -> Result<()> {
    let client = Client::from_home(home)?;
    let id = crate::media::message_id(&client, id, |_| true)?;
    let m = client.get(&format!("/v1/messages/{id}"), &[])?;
    if field(&m, "kind") != Some("interactive") {
        if !form.is_empty() {
            bail!("--form answers an interactive form; message {} is not one", &id[..8]);
        }
        let text = text.unwrap_or_default();
        return annotate(home, &id, "reply", &json!({ "text": text }), json);
    }
    let element = &m["interactive"]["element"];
    let options = element
        .get("buttons")
        .or_else(|| element.pointer("/pick/options"))
        .or_else(|| element.pointer("/product/options"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut choices = Vec::new();
    for token in text.as_deref().unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let by_number =
            token.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| options.get(i));
        let found = by_number.or_else(|| {
            options.iter().find(|o| {
                field(o, "id") == Some(token)
                    || field(o, "label").is_some_and(|l| l.eq_ignore_ascii_case(token))
            })
        });
        let Some(o) = found else {
            bail!(
                "{token:?} is not one of the message's {} choices (`kith messages` numbers them)",
                options.len()
            );
        };
        choices.push(field(o, "id").unwrap_or("").to_owned());
    }
    let mut fields = serde_json::Map::new();
    for f in form {
        let (k, v) = f.split_once('=').with_context(|| format!("{f:?} is not KEY=VALUE"))?;
        fields.insert(k.trim().to_owned(), Value::String(v.to_owned()));
    }
    let answer = client
        .post(
            &format!("/v1/messages/{id}/answer"),
            &json!({ "choices": choices, "fields": fields }),
        )
        .with_context(|| format!("cannot answer message {}", &id[..8]))?;
    if json {
        return emit_json(&answer);
    }
    emit(format_args!("answered {}: {}", &id[..8], field(&answer, "text").unwrap_or("")))
}

/// `kith block` and `kith unblock`.
pub fn block(home: &Home, name: &str, blocked: bool, json: bool) -> Result<()> {
    let name = parse_name(name)?;
    let answer = Client::from_home(home)?
        .post("/v1/blocks", &json!({ "name": name, "blocked": blocked }))
        .with_context(|| format!("cannot {} @{name}", if blocked { "block" } else { "unblock" }))?;
    if json {
        return emit_json(&answer);
    }
    emit(format_args!("{} @{name}", if blocked { "blocked" } else { "unblocked" }))
}

/// `kith blocked`.
pub fn blocked(home: &Home, json: bool) -> Result<()> {
    let all = Client::from_home(home)?.get("/v1/blocks", &[])?;
    if json {
        return emit_json(&all);
    }
    let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return emit("you blocked nobody");
    }
    let line = |b: &Value| {
        let who = field(b, "name").map(|n| format!("@{n}")).unwrap_or_default();
        format!(
            "{who} {} since {}",
            field(b, "user_id").unwrap_or(""),
            field(b, "since").unwrap_or("")
        )
    };
    emit(list.iter().map(line).collect::<Vec<_>>().join("\n"))
}

/// `kith reply`, `react`, `edit`, `delete`: `what` is the route after the message's id.
pub fn annotate(home: &Home, id: &str, what: &str, body: &Value, json: bool) -> Result<()> {
    let client = Client::from_home(home)?;
    let id = crate::media::message_id(&client, id, |_| true)?;
    let answer = if what == "reply" {
        let m = client.get(&format!("/v1/messages/{id}"), &[])?;
        let to = format!("#{}", m.get("conversation").and_then(Value::as_str).unwrap_or_default());
        let text = body.get("text").cloned().unwrap_or_default();
        client.post("/v1/messages", &json!({ "to": to, "text": text, "reply_to": id }))
    } else {
        client.post(&format!("/v1/messages/{id}/{what}"), body)
    }
    .with_context(|| format!("cannot {what} message {}", &id[..8]))?;
    if json {
        return emit_json(&answer);
    }
    let done = match what {
        "reply" => "replied to",
        "react" if body.get("remove") == Some(&json!(true)) => "took back your reaction to",
        "react" => "reacted to",
        "edit" => "edited",
        _ => "deleted",
    };
    emit(format_args!("{done} {}", &id[..8]))
}

/// `kith messages [@NAME|#ID]`.
pub fn messages(
    home: &Home,
    with: Option<&str>,
    json: bool,
    follow: bool,
    limit: Option<u32>,
    ids: bool,
) -> Result<()> {
    let with = with.map(Target::parse).transpose()?;
    let client = Client::from_home(home)?;
    // Subscribe before reading the history, so that nothing falls between the two.
    let events = if follow { Some(client.events()?) } else { None };
    let history = history(&client, with.as_ref(), limit)?;
    // Listing everything, a group message is marked with its group.
    let line = |m: &Value| {
        let text = output::message(m, with.is_none());
        match m.get("id").and_then(Value::as_str).and_then(|id| id.get(..8)) {
            Some(short) if ids => format!("{short} {text}"),
            _ => text,
        }
    };
    let Some(events) = events else {
        if json {
            return emit_json(&Value::Array(history));
        }
        if history.is_empty() {
            match &with {
                Some(Target::Name(name)) => eprintln!("no messages with @{name} yet"),
                Some(target) => eprintln!("no messages in {target} yet"),
                None => eprintln!("no messages yet"),
            }
        }
        return history.iter().try_for_each(|m| emit(line(m)));
    };
    let print = |m: &Value| if json { emit(m) } else { emit(line(m)) };
    let mut filter = Filter::new(&client, with.as_ref())?;
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

/// `kith conversations`.
pub fn conversations(home: &Home, json: bool) -> Result<()> {
    show(home, "/v1/conversations", json, output::conversations)
}

/// `kith members #ID`.
pub fn members(home: &Home, conversation: &str, json: bool) -> Result<()> {
    let id = parse_conversation(conversation)?;
    let list = Client::from_home(home)?
        .get(&format!("/v1/conversations/{id}/members"), &[])
        .map_err(|e| conversation_hint(e, &Target::Conversation(id.clone())))?;
    if json {
        return emit_json(&list);
    }
    let list = list.as_array().context("the daemon's member list is not a JSON array")?;
    emit(output::list(list, "\n"))
}

/// `kith leave #ID`.
pub fn leave(home: &Home, conversation: &str) -> Result<()> {
    let id = parse_conversation(conversation)?;
    Client::from_home(home)?
        .post(&format!("/v1/conversations/{id}/leave"), &json!({}))
        .map_err(|e| conversation_hint(e, &Target::Conversation(id.clone())))
        .with_context(|| format!("cannot leave #{id}"))?;
    emit(format_args!("left the group #{id}"))
}

/// `kith remove #ID @NAME`.
pub fn remove(home: &Home, conversation: &str, name: &str) -> Result<()> {
    let id = parse_conversation(conversation)?;
    let name = parse_name(name)?;
    Client::from_home(home)?
        .post(&format!("/v1/conversations/{id}/remove"), &json!({ "name": name }))
        .map_err(|e| conversation_hint(e, &Target::Conversation(id.clone())))
        .with_context(|| format!("cannot remove @{name} from #{id}"))?;
    emit(format_args!("removed @{name} from the group #{id}"))
}

/// `kith contacts`.
pub fn contacts(home: &Home, json: bool) -> Result<()> {
    show(home, "/v1/contacts", json, output::contacts)
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

/// `kith chat @NAME|#ID`.
pub fn chat(home: &Home, with: &str) -> Result<()> {
    let target = Target::parse(with)?;
    let client = Client::from_home(home)?;
    let events = client.events()?;
    let history = history(&client, Some(&target), Some(CHAT_HISTORY))?;
    let mut filter = Filter::new(&client, Some(&target))?;
    for m in &history {
        filter.remember(m);
        emit(output::message(m, false))?;
    }
    // The conversation(s) shown: a line that forms a group goes elsewhere, which is then said.
    let shown = filter.conversations.clone().unwrap_or_default();
    let whom = match &target {
        Target::Name(name) => format!("with @{name}"),
        Target::Conversation(id) => {
            let members = client
                .get(&format!("/v1/conversations/{id}/members"), &[])
                .ok()
                .and_then(|m| m.as_array().map(|m| output::list(m, ", ")))
                .unwrap_or_default();
            format!("in #{id} ({members})")
        }
    };
    eprintln!(
        "-- chatting {whom}: type a message and press Enter; @name in a line invites that \
         person; /quit or Ctrl-D leaves --"
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
            if filter.accept(&m) && incoming && emit(output::message(&m, false)).is_err() {
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
        match client.post("/v1/messages", &json!({ "to": target.api(), "text": text })) {
            Ok(answer) => {
                let conversation = field(&answer, "conversation").unwrap_or_default();
                if !shown.is_empty() && !shown.contains(conversation) {
                    let short = short_id(conversation);
                    eprintln!(
                        "-- that line mentioned someone new and started the group #{short}; \
                         continue there with `kith chat '#{short}'` --"
                    );
                }
            }
            // The daemon refused this message (say, the name is unknown): say so, go on.
            Err(e) if e.is::<ApiError>() => {
                eprintln!("kith: {}", conversation_hint(e, &target));
            }
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
                Some("mailbox") => " (is it running, and is its port reachable from here?)",
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
    show(home, "/v1/mailboxes", json, output::mailboxes)
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
fn history(client: &Client, with: Option<&Target>, limit: Option<u32>) -> Result<Vec<Value>> {
    let mut query = Vec::new();
    if let Some(target) = with {
        query.push(("with", target.api()));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    match client.get("/v1/messages", &query) {
        Ok(Value::Array(list)) => Ok(list),
        Ok(_) => bail!("the daemon's message list is not a JSON array"),
        Err(e) => Err(match with {
            Some(target) => conversation_hint(e, target),
            None => e,
        }),
    }
}

/// A conversation named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `@name`: the direct chat with this (normalized) name.
    Name(String),
    /// `#ID`: the conversation whose id starts with these (lowercase hex) digits.
    Conversation(String),
}

impl Target {
    /// `@name`, `name` or `#ID`.
    pub(crate) fn parse(input: &str) -> Result<Target> {
        if input.trim().starts_with('#') {
            parse_conversation(input).map(Target::Conversation)
        } else {
            parse_name(input).map(Target::Name)
        }
    }

    /// As the API takes it in `to` and `with`.
    pub(crate) fn api(&self) -> String {
        match self {
            Target::Name(name) => name.clone(),
            Target::Conversation(id) => format!("#{id}"),
        }
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(name) => write!(f, "@{name}"),
            Target::Conversation(id) => write!(f, "#{id}"),
        }
    }
}

/// Validates a conversation id (prefix) given as `#ID` or `ID`; answers the lowercase digits.
fn parse_conversation(input: &str) -> Result<String> {
    let trimmed = input.trim();
    if trimmed.starts_with('@') {
        bail!(
            "expected a conversation id like '#3fa2b1c0', not the name {input:?} \
             (`kith conversations` lists the ids)"
        );
    }
    let id = trimmed.strip_prefix('#').unwrap_or(trimmed).to_ascii_lowercase();
    if id.is_empty() {
        bail!("the conversation id after '#' is missing (`kith conversations` lists the ids)");
    }
    if id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "invalid conversation id {input:?}: expected up to 32 hex digits, like '#3fa2b1c0' \
             (`kith conversations` lists the ids)"
        );
    }
    Ok(id)
}

/// The first 8 digits of a conversation id, as `kith conversations` shows it.
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Adds where the ids are listed to the daemon's "no such conversation" errors.
fn conversation_hint(e: anyhow::Error, target: &Target) -> anyhow::Error {
    let unknown = e
        .downcast_ref::<ApiError>()
        .is_some_and(|a| a.code == "not_found" && matches!(target, Target::Conversation(_)))
        && e.to_string().contains("conversation");
    if unknown {
        anyhow::anyhow!("{e} (`kith conversations` lists them)")
    } else {
        e
    }
}

/// Picks, from the event stream, the messages not shown yet that belong to the conversation.
#[derive(Debug)]
struct Filter {
    /// The ids of the conversation shown; `None` lets every message pass.
    conversations: Option<HashSet<String>>,
    /// While the id of a direct chat is unknown: the name and user id of the other person,
    /// matched against `from` and `to` of direct messages.
    party: Vec<String>,
    seen: HashSet<String>,
}

impl Filter {
    fn new(client: &Client, with: Option<&Target>) -> Result<Filter> {
        let Some(target) = with else {
            return Ok(Filter { conversations: None, party: Vec::new(), seen: HashSet::new() });
        };
        let list = client.get("/v1/conversations", &[])?;
        let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
        let conversations: HashSet<String> = list
            .iter()
            .filter(|c| match target {
                Target::Conversation(prefix) => {
                    field(c, "id").is_some_and(|id| id.starts_with(prefix.as_str()))
                }
                Target::Name(name) => {
                    field(c, "kind") == Some("direct")
                        && c.get("members")
                            .and_then(Value::as_array)
                            .is_some_and(|m| m.iter().any(|m| m.as_str() == Some(name)))
                }
            })
            .filter_map(|c| field(c, "id").map(str::to_owned))
            .collect();
        let party = match target {
            Target::Name(name) if conversations.is_empty() => {
                // `from` and `to` are user ids while the daemon does not know the name.
                let contacts = client.get("/v1/contacts", &[])?;
                let user_id = contacts.as_array().into_iter().flatten().find_map(|c| {
                    (field(c, "name") == Some(name)).then(|| field(c, "user_id")).flatten()
                });
                [name.as_str()].into_iter().chain(user_id).map(str::to_owned).collect()
            }
            Target::Name(_) => Vec::new(),
            Target::Conversation(prefix) => {
                if conversations.is_empty() {
                    bail!(
                        "no conversation starts with #{prefix} (`kith conversations` lists them)"
                    );
                }
                Vec::new()
            }
        };
        Ok(Filter { conversations: Some(conversations), party, seen: HashSet::new() })
    }

    /// Records a message of the conversation that is already shown.
    fn remember(&mut self, m: &Value) {
        if let (Some(c), Some(conversations)) = (field(m, "conversation"), &mut self.conversations)
        {
            conversations.insert(c.to_owned());
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
        // An answer, a list's edit, a live location's update: not a line of its own.
        if m.get("hidden") == Some(&Value::Bool(true)) {
            return false;
        }
        if let Some(conversations) = &self.conversations {
            let in_conversation =
                field(m, "conversation").is_some_and(|c| conversations.contains(c));
            // A group message names the group in `to`, never a person.
            let direct = !field(m, "to").is_some_and(|to| to.starts_with('#'));
            let with_party = direct
                && ["from", "to"]
                    .iter()
                    .any(|f| field(m, f).is_some_and(|v| self.party.iter().any(|p| p == v)));
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
pub(crate) fn emit(text: impl Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to standard output")
}

/// Prints a JSON value, pretty.
/// GETs `path` from the daemon and prints the answer: as JSON with `--json`, else with `human`.
pub(crate) fn show(home: &Home, path: &str, json: bool, human: fn(&Value) -> String) -> Result<()> {
    let answer = Client::from_home(home)?.get(path, &[])?;
    if json {
        emit_json(&answer)
    } else {
        emit(human(&answer))
    }
}

pub(crate) fn emit_json(value: &Value) -> Result<()> {
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
    fn a_message_is_read_from_standard_input_within_its_limit() {
        let read = |input: &[u8]| read_message(&mut &input[..], false).map_err(|e| e.to_string());
        assert_eq!(read(b"hello\nworld\n").as_deref(), Ok("hello\nworld"));
        assert_eq!(read(b"crlf\r\n").as_deref(), Ok("crlf"));
        assert_eq!(read(&vec![b'a'; MAX_TEXT]).map(|t| t.len()), Ok(MAX_TEXT));
        assert!(read(&vec![b'a'; MAX_TEXT + 1]).unwrap_err().contains("over the limit"));
        assert!(read(&[0xff, 0xfe]).unwrap_err().contains("not UTF-8"));
        let terminal = read_message(&mut &b""[..], true).expect_err("a terminal").to_string();
        assert!(terminal.contains("pipe it on standard input"), "{terminal}");
    }

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
            conversations: Some(HashSet::new()),
            party: vec!["bob".into()],
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
        // Bob writing in a group is not the direct chat with bob.
        assert!(!f.accept(&json!({"id": "6", "conversation": "g1", "from": "bob", "to": "#g1"})));
    }

    #[test]
    fn filter_of_a_group_takes_only_the_group() {
        let mut f = Filter {
            conversations: Some(HashSet::from(["g1".to_owned()])),
            party: Vec::new(),
            seen: HashSet::new(),
        };
        assert!(f.accept(&json!({"id": "1", "conversation": "g1", "from": "bob", "to": "#g1"})));
        assert!(!f.accept(&json!({"id": "1", "conversation": "g1", "from": "bob", "to": "#g1"})));
        assert!(!f.accept(&json!({"id": "2", "conversation": "d1", "from": "bob", "to": "alice"})));
        let mut all = Filter { conversations: None, party: Vec::new(), seen: HashSet::new() };
        assert!(all.accept(&json!({"id": "3", "conversation": "d1"})));
    }

    #[test]
    fn targets_are_names_or_conversation_ids() {
        assert_eq!(Target::parse("@Bob").expect("name"), Target::Name("bob".into()));
        assert_eq!(Target::parse("#3FA2").expect("id"), Target::Conversation("3fa2".into()));
        assert_eq!(Target::parse("#3fa2").expect("id").api(), "#3fa2");
        assert_eq!(Target::parse("bob").expect("name").to_string(), "@bob");
        assert_eq!(parse_conversation("3fa2b1c0").expect("bare id"), "3fa2b1c0");
        let err = |input: &str| format!("{:#}", parse_conversation(input).expect_err(input));
        assert!(err("#").contains("missing"), "{}", err("#"));
        assert!(err("#xyz").contains("hex digits"), "{}", err("#xyz"));
        assert!(err(&format!("#{}", "a".repeat(33))).contains("up to 32"));
        assert!(err("@bob").contains("not the name"), "{}", err("@bob"));
        assert!(format!("{:#}", Target::parse("#g!").expect_err("bad")).contains("hex"));
    }

    #[test]
    fn unknown_conversations_point_to_the_list() {
        let api = |code: &str, message: &str| -> anyhow::Error {
            ApiError { code: code.into(), message: message.into() }.into()
        };
        let conv = Target::Conversation("ab".into());
        let e = conversation_hint(
            api("not_found", "not found: no conversation starts with #ab"),
            &conv,
        );
        assert!(e.to_string().ends_with("(`kith conversations` lists them)"), "{e}");
        let e = conversation_hint(api("not_found", "no one has registered the name \"x\""), &conv);
        assert!(!e.to_string().contains("kith conversations"), "{e}");
        let e = conversation_hint(
            api("not_found", "no conversation with bob"),
            &Target::Name("bob".into()),
        );
        assert!(e.is::<ApiError>(), "{e}");
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
