//! What a simulated user does, shared by `kith-sim run` (all nodes in one process) and
//! `kith-sim node` (one node per process, under Shadow): the workload's actions on a real
//! `kith_node::Node`, and the events they produce.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use kith_node::node::NodeEvent;
use kith_node::Node;
use tokio::time::Instant;

use crate::events::Event;
use crate::plan::{message_id, message_text, Action, Kind, Plan};
use crate::scenario::Scenario;

/// Where events go: kept in memory, or written as JSON lines to a file.
#[derive(Debug)]
pub(crate) enum Log {
    Memory(Mutex<Vec<Event>>),
    File(Mutex<std::io::BufWriter<std::fs::File>>),
}

impl Log {
    pub fn memory() -> Log {
        Log::Memory(Mutex::new(Vec::new()))
    }

    pub fn push(&self, e: Event) {
        match self {
            Log::Memory(v) => {
                if let Ok(mut v) = v.lock() {
                    v.push(e);
                }
            }
            Log::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{}", e.line());
                    let _ = f.flush();
                }
            }
        }
    }

    /// The events kept in memory (empty for a file log).
    pub fn take(&self) -> Vec<Event> {
        match self {
            Log::Memory(v) => v.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default(),
            Log::File(_) => Vec::new(),
        }
    }
}

/// The workload's clock: milliseconds since it started (negative before).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> i64 {
        let now = Instant::now();
        if now >= self.0 {
            (now - self.0).as_millis() as i64
        } else {
            -((self.0 - now).as_millis() as i64)
        }
    }
}

/// The name of user `i`, with its `@`.
pub(crate) fn at_name(plan: &Plan, i: usize) -> String {
    format!("@{}", plan.nodes.get(i).and_then(|n| n.name.clone()).unwrap_or_default())
}

/// Logs every workload message `node` shows its user, until the node stops.
pub(crate) fn watch(node: &Node, index: usize, clock: Clock, log: std::sync::Arc<Log>) {
    let mut rx = node.subscribe();
    let mut stopping = node.stopping();
    let node_for_watch = node.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(NodeEvent::Message(m)) if m.direction == "in" => {
                        if let Some(id) = m.text.as_deref().and_then(message_id) {
                            log.push(Event::Received { t: clock.now(), node: index, id });
                        }
                    }
                    // A file is delivered when the recipient holds all of it.
                    Ok(NodeEvent::Transfer(x)) if x.state == "complete" => {
                        for mid in &x.messages {
                            let Ok(m) = node_for_watch.message(mid) else { continue };
                            let caption = m.attachment.and_then(|a| a.caption);
                            if let Some(id) = caption.as_deref().and_then(message_id) {
                                log.push(Event::Received { t: clock.now(), node: index, id });
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        log.push(Event::Error {
                            t: clock.now(),
                            node: index,
                            what: format!("event stream lagged: {n} events not seen"),
                        });
                    }
                    Err(_) => break,
                },
                _ = stopping.changed() => break,
            }
        }
    });
}

/// Registers user `i`'s name, enrolled with its mailbox (given as an address ending in
/// `/p2p/<peer id>`) first, so that the one record it publishes already lists the mailbox.
pub(crate) async fn register(
    node: &Node,
    plan: &Plan,
    i: usize,
    mailbox: Option<String>,
    clock: Clock,
    log: &Log,
) -> bool {
    if let Some(addr) = mailbox {
        if let Err(e) = node.add_mailbox(&addr).await {
            log.push(Event::Error { t: clock.now(), node: i, what: format!("mailbox: {e}") });
        }
    }
    let name = at_name(plan, i);
    let start = Instant::now();
    let mut result = Err(String::new());
    // A young network may not have enough peers for a put yet: retry a few times.
    for attempt in 0..5 {
        result = node.register(name.trim_start_matches('@')).await.map_err(|e| e.to_string());
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    log.push(Event::Register { t: clock.now(), node: i, ok: result.is_ok(), ms });
    if let Err(e) = &result {
        log.push(Event::Error { t: clock.now(), node: i, what: format!("register: {e}") });
        return false;
    }
    true
}

/// Forms group `g` from its creator's node: one message to the second member mentioning the
/// others. Returns the conversation (`#id`).
pub(crate) async fn form_group(creator: &Node, plan: &Plan, g: usize) -> Result<String, String> {
    let group = plan.groups.get(g).ok_or("no such group")?;
    let mut text = format!("group {g}:");
    for &m in group.members.iter().skip(2) {
        text.push(' ');
        text.push_str(&at_name(plan, m));
    }
    let second = group.members.get(1).ok_or("a group needs members")?;
    let first = creator.send_to(&at_name(plan, *second), &text).await.map_err(|e| e.to_string())?;
    Ok(format!("#{}", first.conversation))
}

/// Whether `node` knows every member of the group (by its member list).
pub(crate) fn knows_group(node: &Node, conversation: &str, members: usize) -> bool {
    node.members(conversation).map(|m| m.len() >= members).unwrap_or(false)
}

/// Performs one of the user actions of the workload (lookups and messages) on `node`.
pub(crate) async fn perform(
    node: &Node,
    action: &Action,
    scenario: &Scenario,
    plan: &Plan,
    groups: &[Option<String>],
    clock: Clock,
    log: &Log,
) {
    let size = scenario.workload.message_bytes as usize;
    // Latency counts from the moment the user pressed send.
    let t = clock.now();
    match action {
        Action::Lookup { from, target } => {
            let start = Instant::now();
            let r = node.resolve_fresh(&at_name(plan, *target)).await;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            log.push(Event::Lookup { t: clock.now(), node: *from, ok: r.is_ok(), ms });
        }
        Action::Direct { id, from, to, kind: Kind::Media } => {
            let bytes = scenario.workload.media_bytes as usize;
            let r = send_media(node, &at_name(plan, *to), *id, bytes).await;
            sent(log, t, *from, *id, r);
        }
        Action::Direct { id, from, to, .. } => {
            let r = node.send_text(&at_name(plan, *to), &message_text(*id, size)).await;
            sent(log, t, *from, *id, r.map(|_| ()).map_err(|e| e.to_string()));
        }
        Action::Group { id, group, from } => {
            let r = match groups.get(*group).and_then(|g| g.as_deref()) {
                Some(conv) => node
                    .send_to(conv, &message_text(*id, size))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("the group was not formed".to_owned()),
            };
            sent(log, t, *from, *id, r);
        }
        _ => {}
    }
}

/// Sends a photo of `bytes` bytes (its content made from `id`) whose caption carries the
/// workload id, from a temporary file removed afterwards.
async fn send_media(node: &Node, to: &str, id: u64, bytes: usize) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!(
        "kith-sim-media-{}-{}-{id}",
        std::process::id(),
        node.peer_id()
    ));
    let content: Vec<u8> = (0..bytes).map(|i| (i as u64 ^ id).wrapping_mul(31) as u8).collect();
    tokio::fs::write(&path, content).await.map_err(|e| format!("cannot write a file: {e}"))?;
    let meta = kith_node::node::FileMeta {
        name: Some(format!("sim-{id}.jpg")),
        mime: "image/jpeg".into(),
        caption: Some(message_text(id, 32)),
        ..Default::default()
    };
    let r = node.send_file(to, &path, meta).await.map(|_| ()).map_err(|e| e.to_string());
    let _ = tokio::fs::remove_file(&path).await;
    r
}

fn sent(log: &Log, t: i64, node: usize, id: u64, r: Result<(), String>) {
    log.push(match r {
        Ok(()) => Event::Sent { t, node, id },
        Err(error) => Event::SendFailed { t, node, id, error },
    });
}
