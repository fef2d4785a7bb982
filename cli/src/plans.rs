//! Planning together from the command line: live location, events, shared lists, bills and
//! payment requests (`docs/cli.md`). Each command is one or two calls to the daemon's API.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use kith_node::home::Home;
use kith_node::rules::currency;
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::{emit, emit_json, Target};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// An event's time as given: RFC 3339 with an offset, or a local date and time
/// (`2027-06-12T18:00`, `2027-06-12 18:00`) in this machine's time zone.
pub fn parse_at(at: &str) -> Result<String> {
    use chrono::TimeZone;
    let at = at.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at)
        .or_else(|_| chrono::DateTime::parse_from_str(at, "%Y-%m-%dT%H:%M%:z"))
    {
        return Ok(t.to_rfc3339());
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(at, f) {
            let Some(t) = chrono::Local.from_local_datetime(&n).earliest() else {
                bail!("{at} does not exist in this time zone (a clock change); give an offset");
            };
            return Ok(t.to_rfc3339());
        }
    }
    bail!("{at:?} is not a time: give 2027-06-12T18:00 (local) or 2027-06-12T18:00+02:00")
}

/// `lat,lon[,accuracy]`.
pub fn parse_fix(line: &str) -> Result<(f64, f64, Option<f32>)> {
    let parts: Vec<&str> = line.split(',').map(str::trim).collect();
    let num = |s: &str, what: &str| -> Result<f64> {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .with_context(|| format!("{what} {s:?} is not a number"))
    };
    match parts[..] {
        [lat, lon] => Ok((num(lat, "latitude")?, num(lon, "longitude")?, None)),
        [lat, lon, acc] => {
            Ok((num(lat, "latitude")?, num(lon, "longitude")?, Some(num(acc, "accuracy")? as f32)))
        }
        _ => bail!("{line:?} is not lat,lon[,accuracy]"),
    }
}

/// `kith location TARGET --live DURATION`: positions from standard input, one `lat,lon[,acc]`
/// line each, until the input ends (then sharing stops) or the time is up.
pub fn live(home: &Home, to: &str, duration: std::time::Duration, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let client = Client::from_home(home)?;
    // Lines are read on a thread of their own, so that the session's end ends the command
    // even while no line comes.
    let (tx, lines) = std::sync::mpsc::sync_channel::<std::io::Result<String>>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut session: Option<String> = None;
    let mut ends: Option<std::time::Instant> = None;
    loop {
        let next = match ends {
            None => lines.recv().ok(),
            Some(at) => {
                match lines.recv_timeout(at.saturating_duration_since(std::time::Instant::now())) {
                    Ok(l) => Some(l),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if !json {
                            emit("the live location ended")?;
                        }
                        return Ok(());
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        let Some(line) = next else { break };
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (lat, lon, accuracy) = match parse_fix(&line) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("kith: skipped a line: {e}");
                continue;
            }
        };
        match &session {
            None => {
                let body = json!({ "to": target.api(), "seconds": duration.as_secs(), "lat": lat, "lon": lon, "accuracy_m": accuracy });
                let answer = client
                    .post("/v1/locations/live", &body)
                    .with_context(|| format!("cannot share a live location with {target}"))?;
                if json {
                    emit_json(&answer)?;
                } else {
                    emit(format_args!(
                        "sharing your location with {target} until {} (session {})",
                        answer
                            .pointer("/message/text")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .trim_start_matches("Live location until "),
                        s(&answer, "session")
                    ))?;
                }
                session = Some(s(&answer, "session").to_owned());
                ends = Some(std::time::Instant::now() + duration);
            }
            Some(id) => {
                let body = json!({ "lat": lat, "lon": lon, "accuracy_m": accuracy });
                if let Err(e) = client.post(&format!("/v1/locations/live/{id}"), &body) {
                    if format!("{e:#}").contains("no live location") {
                        if !json {
                            emit("the live location ended")?;
                        }
                        return Ok(());
                    }
                    eprintln!("kith: a position was not taken: {e:#}");
                }
            }
        }
    }
    match session {
        Some(id) => {
            let _ = client.post("/v1/locations/stop", &json!({ "session": id }));
            if !json {
                emit("stopped sharing your location")?;
            }
            Ok(())
        }
        None => bail!("no position on standard input (lines of lat,lon[,accuracy])"),
    }
}

/// `kith location`: a point, live positions from standard input, or `stop`.
#[allow(clippy::too_many_arguments)]
pub fn location(
    home: &Home,
    to: &str,
    stop_target: Option<String>,
    live_for: Option<std::time::Duration>,
    (lat, lon): (Option<f64>, Option<f64>),
    accuracy: Option<f32>,
    label: Option<String>,
    json: bool,
) -> Result<()> {
    if to.trim() == "stop" {
        return stop(home, stop_target.as_deref(), json);
    }
    if let Some(t) = stop_target {
        bail!("unexpected {t:?}: only `kith location stop` takes a second target");
    }
    if let Some(d) = live_for {
        return live(home, to, d, json);
    }
    let (Some(lat), Some(lon)) = (lat, lon) else {
        bail!("give --lat and --lon (or --live DURATION, reading positions from standard input)");
    };
    crate::commands::location(home, to, lat, lon, accuracy, label, json)
}

/// `kith location stop [TARGET]`.
pub fn stop(home: &Home, to: Option<&str>, json: bool) -> Result<()> {
    let to = to.map(Target::parse).transpose()?;
    let answer = Client::from_home(home)?
        .post("/v1/locations/stop", &json!({ "to": to.as_ref().map(Target::api) }))
        .context("cannot stop sharing")?;
    if json {
        return emit_json(&answer);
    }
    match answer.get("stopped").and_then(Value::as_u64).unwrap_or(0) {
        0 => emit("no live location is shared from this device"),
        n => emit(format_args!("stopped {n} live location{}", if n == 1 { "" } else { "s" })),
    }
}

/// `kith locations TARGET`.
pub fn locations(home: &Home, to: &str, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let all = Client::from_home(home)?.get("/v1/locations", &[("with", target.api())])?;
    if json {
        return emit_json(&all);
    }
    let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return emit(format_args!("nobody shared a location with {target}"));
    }
    let mut out = String::new();
    for l in list {
        let state = match (l.get("session").is_some(), l.get("ended").and_then(Value::as_bool)) {
            (true, Some(true)) => "live, ended".to_owned(),
            (true, _) => format!("live until {}", s(l, "until")),
            _ => "point".to_owned(),
        };
        let age = l.get("age_s").and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "{}: {:.5}, {:.5} ({}, {} ago) {}\n",
            s(l, "sharer"),
            l.pointer("/latest/lat").and_then(Value::as_f64).unwrap_or(0.0),
            l.pointer("/latest/lon").and_then(Value::as_f64).unwrap_or(0.0),
            state,
            humantime::format_duration(std::time::Duration::from_secs(age)),
            s(l, "map_url")
        ));
    }
    emit(out.trim_end())
}

/// `kith event`: propose (a conversation and a title) or change (an event's id).
#[allow(clippy::too_many_arguments)]
pub fn event(
    home: &Home,
    target: &str,
    title: Option<String>,
    at: Option<String>,
    place: Option<String>,
    note: Option<String>,
    new_title: Option<String>,
    cancel: bool,
    json: bool,
) -> Result<()> {
    match title {
        Some(title) => {
            if new_title.is_some() || cancel {
                bail!(
                    "--title and --cancel change an event: give its id instead of a conversation"
                );
            }
            let Some(at) = at else { bail!("a new event needs --at TIME") };
            propose(home, target, &title, &at, place, note, json)
        }
        None if target.trim_start().starts_with(['#', '@']) => {
            bail!("a new event needs a title: kith event {target} \"Barbecue\" --at TIME")
        }
        None => change(home, target, new_title, at.as_deref(), place, cancel, json),
    }
}

/// `kith event TARGET TITLE --at ...`.
pub fn propose(
    home: &Home,
    to: &str,
    title: &str,
    at: &str,
    place: Option<String>,
    note: Option<String>,
    json: bool,
) -> Result<()> {
    let target = Target::parse(to)?;
    let body = json!({ "to": target.api(), "title": title, "at": parse_at(at)?, "place": place, "note": note });
    let m = Client::from_home(home)?
        .post("/v1/plans/events", &body)
        .with_context(|| format!("cannot propose an event to {target}"))?;
    if json {
        return emit_json(&m);
    }
    emit(format_args!("{} {}", short(s(&m, "id")), s(&m, "text")))
}

/// `kith event EVENT --at/--place/--title/--cancel`.
pub fn change(
    home: &Home,
    event: &str,
    title: Option<String>,
    at: Option<&str>,
    place: Option<String>,
    cancel: bool,
    json: bool,
) -> Result<()> {
    let client = Client::from_home(home)?;
    let id = crate::media::message_id(&client, event, |m| s(m, "kind") == "event")?;
    let at = at.map(parse_at).transpose()?;
    let body = json!({ "title": title, "at": at, "place": place, "cancelled": cancel });
    let m = client
        .post(&format!("/v1/plans/events/{id}"), &body)
        .with_context(|| format!("cannot change event {}", short(&id)))?;
    if json {
        return emit_json(&m);
    }
    emit(s(&m, "text"))
}

fn event_line(e: &Value) -> String {
    let mut line = format!("{} {} at {}", short(s(e, "id")), s(e, "title"), s(e, "start"));
    if let Some(p) = e.get("place").and_then(Value::as_str) {
        line.push_str(&format!(", {p}"));
    }
    if e.get("cancelled") == Some(&Value::Bool(true)) {
        line.push_str(" (cancelled)");
    }
    line.push_str(&format!(" — by {}", s(e, "by")));
    for a in ["yes", "maybe", "no"] {
        let who: Vec<&str> = e
            .pointer(&format!("/answers/{a}"))
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !who.is_empty() {
            line.push_str(&format!("\n  {a}: {}", who.join(", ")));
        }
    }
    line
}

/// `kith rsvp EVENT ANSWER`.
pub fn rsvp(home: &Home, event: &str, answer: &str, json: bool) -> Result<()> {
    let client = Client::from_home(home)?;
    let id = crate::media::message_id(&client, event, |m| s(m, "kind") == "event")?;
    let e = client
        .post(&format!("/v1/plans/events/{id}/rsvp"), &json!({ "answer": answer }))
        .with_context(|| format!("cannot answer event {}", short(&id)))?;
    if json {
        return emit_json(&e);
    }
    emit(event_line(&e))
}

/// `kith events TARGET`.
pub fn events(home: &Home, to: &str, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let all = Client::from_home(home)?.get("/v1/plans/events", &[("with", target.api())])?;
    if json {
        return emit_json(&all);
    }
    let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return emit(format_args!("no events in {target}"));
    }
    emit(list.iter().map(event_line).collect::<Vec<_>>().join("\n"))
}

/// What `kith list LIST ACTION` does.
#[derive(Debug, clap::Subcommand)]
pub enum ListAction {
    /// Make a new list in the conversation LIST names (@NAME or '#ID')
    New {
        /// Its title
        title: String,
        /// A to-do list (default: a shopping list)
        #[arg(long)]
        todo: bool,
    },
    /// Add an item
    Add {
        /// The item
        text: String,
        /// Who it is for (@NAME)
        #[arg(long = "for", value_name = "@NAME")]
        assignee: Option<String>,
    },
    /// Tick an item off (its id, or its text)
    Done {
        /// The item
        item: String,
    },
    /// Tick an item back on
    Undo {
        /// The item
        item: String,
    },
    /// Rename an item
    Rename {
        /// The item
        item: String,
        /// Its new text
        text: String,
    },
    /// Give an item to someone (or to nobody, without @NAME)
    Assign {
        /// The item
        item: String,
        /// Who
        #[arg(value_name = "@NAME")]
        assignee: Option<String>,
    },
    /// Remove an item
    Remove {
        /// The item
        item: String,
    },
}

fn list_text(l: &Value) -> String {
    let mut out =
        format!("{} {} ({}, by {})", short(s(l, "id")), s(l, "title"), s(l, "kind"), s(l, "by"));
    let items = l.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        out.push_str("\n  (empty)");
    }
    for i in items {
        let done = if i.get("done") == Some(&Value::Bool(true)) { "x" } else { " " };
        out.push_str(&format!("\n  [{done}] {} {}", s(i, "id"), s(i, "text")));
        if let Some(f) = i.get("for").and_then(Value::as_str) {
            out.push_str(&format!(" (for {f})"));
        }
    }
    out
}

/// `kith list LIST [ACTION]`.
pub fn list(home: &Home, list: &str, action: Option<ListAction>, json: bool) -> Result<()> {
    let client = Client::from_home(home)?;
    let answer = if let Some(ListAction::New { title, todo }) = &action {
        let target = Target::parse(list)?;
        let body = json!({ "to": target.api(), "title": title, "kind": if *todo { "todo" } else { "shopping" } });
        let m = client
            .post("/v1/plans/lists", &body)
            .with_context(|| format!("cannot make a list in {target}"))?;
        client.get(&format!("/v1/plans/lists/{}", s(&m, "id")), &[])?
    } else {
        let id = list_id(&client, list)?;
        let edit = match action {
            None => None,
            Some(ListAction::New { .. }) => unreachable!("handled above"),
            Some(ListAction::Add { text, assignee }) => {
                Some(json!({ "op": "add", "text": text, "for": assignee }))
            }
            Some(ListAction::Done { item }) => {
                Some(json!({ "op": "done", "item": item, "done": true }))
            }
            Some(ListAction::Undo { item }) => {
                Some(json!({ "op": "done", "item": item, "done": false }))
            }
            Some(ListAction::Rename { item, text }) => {
                Some(json!({ "op": "rename", "item": item, "text": text }))
            }
            Some(ListAction::Assign { item, assignee }) => {
                Some(json!({ "op": "assign", "item": item, "for": assignee }))
            }
            Some(ListAction::Remove { item }) => Some(json!({ "op": "remove", "item": item })),
        };
        match edit {
            None => client.get(&format!("/v1/plans/lists/{id}"), &[])?,
            Some(e) => client
                .post(&format!("/v1/plans/lists/{id}"), &e)
                .with_context(|| format!("cannot change list {}", short(&id)))?,
        }
    };
    if json {
        return emit_json(&answer);
    }
    emit(list_text(&answer))
}

/// A list's id from its first digits: its `list` message, or (for a list handed over to a
/// member who joined its group later) the lists of each group.
fn list_id(client: &Client, prefix: &str) -> Result<String> {
    match crate::media::message_id(client, prefix, |m| s(m, "kind") == "list") {
        Ok(id) => Ok(id),
        Err(e) if format!("{e}").starts_with("no message") => {
            let prefix = prefix.trim().to_ascii_lowercase();
            let mut found = Vec::new();
            for c in client
                .get("/v1/conversations", &[])?
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if s(c, "kind") != "group" {
                    continue;
                }
                let lists =
                    client.get("/v1/plans/lists", &[("with", format!("#{}", s(c, "id")))])?;
                for l in lists.as_array().map(Vec::as_slice).unwrap_or_default() {
                    if s(l, "id").starts_with(&prefix) {
                        found.push(s(l, "id").to_owned());
                    }
                }
            }
            match &found[..] {
                [one] => Ok(one.clone()),
                [] => bail!(
                    "no list has an id starting with {prefix} (`kith lists TARGET` shows them)"
                ),
                _ => {
                    bail!("{} lists have ids starting with {prefix}; give more digits", found.len())
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// `kith lists TARGET`.
pub fn lists(home: &Home, to: &str, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let all = Client::from_home(home)?.get("/v1/plans/lists", &[("with", target.api())])?;
    if json {
        return emit_json(&all);
    }
    let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return emit(format_args!("no lists in {target}"));
    }
    emit(list.iter().map(list_text).collect::<Vec<_>>().join("\n"))
}

/// What `kith bills TARGET ACTION` does.
#[derive(Debug, clap::Subcommand)]
pub enum BillAction {
    /// Record an expense: who paid how much for whom
    ///
    /// Example: kith bills '#3fa2' add "Sausages" 45.00 EUR --paid-by @bob --among @alice,@bob
    Add {
        /// What for
        description: String,
        /// How much, in the currency's units ("45.50"; a ',' also works as the decimal point)
        amount: String,
        /// ISO 4217 code (EUR, USD, JPY, ...)
        currency: String,
        /// Who paid [default: you]
        #[arg(long, value_name = "@NAME")]
        paid_by: Option<String>,
        /// Split equally among these [default: everyone in the conversation]
        #[arg(long, value_delimiter = ',', value_name = "@NAME,...")]
        among: Vec<String>,
        /// Split by whole shares: @alice=2,@bob=1
        #[arg(long, value_delimiter = ',', value_name = "@NAME=N,...", conflicts_with_all = ["among", "exact"])]
        shares: Vec<String>,
        /// Split by exact amounts that add up: @alice=30.00,@bob=15.00
        #[arg(long, value_delimiter = ',', value_name = "@NAME=AMOUNT,...", conflicts_with_all = ["among", "shares"])]
        exact: Vec<String>,
    },
    /// Record that you paid someone (counts once they confirm)
    Paid {
        /// Who you paid
        #[arg(value_name = "@NAME")]
        payee: String,
        /// How much
        amount: String,
        /// ISO 4217 code
        currency: String,
    },
    /// Confirm a payment made to you
    Confirm {
        /// The payment's message id (or its first 8 digits)
        #[arg(value_name = "PAYMENT")]
        id: String,
    },
    /// Ask to be paid, and say how (IBAN, Lightning, a payment link)
    Request {
        /// Who is asked [default: anyone]
        #[arg(value_name = "@NAME")]
        payer: Option<String>,
        /// How much [default: what each owes you]
        #[arg(long)]
        amount: Option<String>,
        /// ISO 4217 code
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// The reference a transfer should carry
        #[arg(long, default_value = "")]
        reference: String,
        /// Your IBAN (shown to the payer as an EPC "GiroCode" QR for euros)
        #[arg(long, requires = "name")]
        iban: Option<String>,
        /// The account holder's name, with --iban
        #[arg(long)]
        name: Option<String>,
        /// Your bank's BIC, with --iban
        #[arg(long, requires = "iban")]
        bic: Option<String>,
        /// A Lightning invoice or address
        #[arg(long)]
        lightning: Option<String>,
        /// A payment link (https://, e.g. PayPal.me)
        #[arg(long)]
        link: Option<String>,
    },
    /// Show a payment request with its QR codes (the EPC "GiroCode" a banking app scans, a
    /// Lightning invoice, a link)
    Show {
        /// The request's message id (or its first 8 digits)
        #[arg(value_name = "REQUEST")]
        id: String,
    },
    /// Mark a payment request as paid: records the payment (its sender then confirms it)
    Pay {
        /// The request's message id (or its first 8 digits)
        #[arg(value_name = "REQUEST")]
        id: String,
    },
}

fn named_amounts(
    items: &[String],
    cur: &str,
    parse: bool,
) -> Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for i in items {
        let (name, v) = i.split_once('=').with_context(|| format!("{i:?} is not @NAME=VALUE"))?;
        let v: Value = if parse {
            json!(currency::parse_amount(v, cur)?)
        } else {
            json!(v
                .trim()
                .parse::<u32>()
                .with_context(|| format!("{v:?} is not a whole number of shares"))?)
        };
        out.insert(name.trim().to_owned(), v);
    }
    Ok(out)
}

fn bills_text(b: &Value) -> String {
    let mut out = String::new();
    let currencies =
        b.get("currencies").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for c in currencies {
        out.push_str(&format!("{}:\n", s(c, "currency")));
        if let Some(bal) = c.get("balances").and_then(Value::as_object) {
            for (who, a) in bal {
                let minor = a.get("minor").and_then(Value::as_i64).unwrap_or(0);
                let what = if minor > 0 { "is owed" } else { "owes" };
                out.push_str(&format!("  {who} {what} {}\n", s(a, "text").trim_start_matches('-')));
            }
        }
        let transfers =
            c.get("transfers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if transfers.is_empty() {
            out.push_str("  settled\n");
        }
        for t in transfers {
            out.push_str(&format!(
                "  → {} pays {} {}\n",
                s(t, "from"),
                s(t, "to"),
                t.pointer("/amount/text").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    if currencies.is_empty() {
        out.push_str("no expenses yet\n");
    }
    let pending: Vec<&Value> = b
        .get("payments")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter(|p| p.get("confirmed") != Some(&Value::Bool(true))).collect())
        .unwrap_or_default();
    for p in pending {
        out.push_str(&format!(
            "payment {} from {} to {} of {}: waiting for {} to confirm\n",
            short(s(p, "id")),
            s(p, "from"),
            s(p, "to"),
            p.pointer("/amount/text").and_then(Value::as_str).unwrap_or(""),
            s(p, "to")
        ));
    }
    for r in b.get("requests").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let amount = r
            .pointer("/amount/text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("what you owe in {}", s(r, "currency")));
        out.push_str(&format!("request {} from {}: {amount}", short(s(r, "id")), s(r, "from")));
        if !s(r, "reference").is_empty() {
            out.push_str(&format!(", reference {:?}", s(r, "reference")));
        }
        out.push('\n');
        for m in r.get("methods").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            out.push_str(&format!("  {}\n", s(m, "text")));
        }
    }
    for x in b.get("rejected").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        out.push_str(&format!("left out {}: {}\n", short(s(x, "id")), s(x, "reason")));
    }
    out.trim_end().to_owned()
}

fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

/// `kith bills TARGET [ACTION]`.
pub fn bills(home: &Home, to: &str, action: Option<BillAction>, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let client = Client::from_home(home)?;
    let sent = match action {
        None => None,
        Some(BillAction::Add {
            description,
            amount,
            currency: cur,
            paid_by,
            among,
            shares,
            exact,
        }) => {
            let cur = cur.to_ascii_uppercase();
            let split = json!({
                "equal": among,
                "shares": named_amounts(&shares, &cur, false)?,
                "exact": named_amounts(&exact, &cur, true)?,
            });
            let body = json!({ "to": target.api(), "description": description, "amount": currency::parse_amount(&amount, &cur)?, "currency": cur, "paid_by": paid_by, "split": split });
            Some(client.post("/v1/plans/expenses", &body).context("cannot record the expense")?)
        }
        Some(BillAction::Paid { payee, amount, currency: cur }) => {
            let cur = cur.to_ascii_uppercase();
            let body = json!({ "to": target.api(), "payee": payee, "amount": currency::parse_amount(&amount, &cur)?, "currency": cur });
            Some(client.post("/v1/plans/payments", &body).context("cannot record the payment")?)
        }
        Some(BillAction::Confirm { id }) => {
            let id = crate::media::message_id(&client, &id, |m| s(m, "kind") == "payment")?;
            Some(
                client
                    .post(&format!("/v1/plans/payments/{id}/confirm"), &json!({}))
                    .context("cannot confirm the payment")?,
            )
        }
        Some(BillAction::Request {
            payer,
            amount,
            currency: cur,
            reference,
            iban,
            name,
            bic,
            lightning,
            link,
        }) => {
            let cur = cur.to_ascii_uppercase();
            let amount = amount.map(|a| currency::parse_amount(&a, &cur)).transpose()?;
            let body = json!({ "to": target.api(), "payer": payer, "amount": amount, "currency": cur, "reference": reference, "iban": iban, "name": name, "bic": bic, "lightning": lightning, "link": link });
            Some(client.post("/v1/plans/requests", &body).context("cannot send the request")?)
        }
        Some(BillAction::Show { id }) => return show_request(home, to, &id, json),
        Some(BillAction::Pay { id }) => {
            let id = crate::media::message_id(&client, &id, |m| s(m, "kind") == "pay.request")?;
            let answer = client
                .post(&format!("/v1/plans/requests/{id}/pay"), &json!({}))
                .context("cannot mark the request paid")?;
            Some(answer)
        }
    };
    if let Some(m) = sent {
        if json {
            return emit_json(&m);
        }
        return emit(format_args!("{} {}", short(s(&m, "id")), s(&m, "text")));
    }
    let b = client.get("/v1/plans/bills", &[("with", target.api())])?;
    if json {
        return emit_json(&b);
    }
    emit(bills_text(&b))
}

/// `kith bills TARGET show REQUEST`: a request with its QR codes, for a payer's banking app.
pub fn show_request(home: &Home, to: &str, id: &str, json: bool) -> Result<()> {
    let target = Target::parse(to)?;
    let client = Client::from_home(home)?;
    let id = crate::media::message_id(&client, id, |m| s(m, "kind") == "pay.request")?;
    let b = client.get("/v1/plans/bills", &[("with", target.api())])?;
    let r = b
        .get("requests")
        .and_then(Value::as_array)
        .and_then(|rs| rs.iter().find(|r| s(r, "id") == id))
        .with_context(|| format!("no request {} in {target}", short(&id)))?;
    if json {
        return emit_json(r);
    }
    for m in r.get("methods").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        emit(s(m, "text"))?;
        if let Some(code) = m.get("qr").and_then(Value::as_str).and_then(qr) {
            emit(code)?;
        }
    }
    Ok(())
}
