//! Profiles, subscriptions, mutes and reports from the command line (`docs/cli.md`). Each
//! command is one call to the daemon's API.

use std::time::Duration;

use anyhow::{Context, Result};
use kith_node::home::Home;
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::{emit, emit_json};

/// What `kith profile set` was given.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// What you are: person, business or bot
    #[arg(long, default_value = "person", value_parser = ["person", "business", "bot"])]
    pub kind: String,
    /// The name to show (64 characters at most)
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    /// What you are or do (1024 bytes at most)
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A category, such as pizzeria or barber
    #[arg(long, value_name = "TEXT")]
    pub category: Option<String>,
    /// Opening hours, such as "mon-fri 11:00-22:00, sat 12:00-24:00" (your local time)
    #[arg(long, value_name = "HOURS")]
    pub hours: Option<String>,
    /// A postal address, one line
    #[arg(long, value_name = "TEXT")]
    pub address: Option<String>,
    /// A web site (http:// or https://)
    #[arg(long, value_name = "URL")]
    pub website: Option<String>,
    /// A picture to show (JPEG, PNG or WebP, at most 2 MiB); anyone may fetch it
    #[arg(long, value_name = "FILE")]
    pub avatar: Option<std::path::PathBuf>,
    /// A domain you hold: people's apps show it as verified once
    /// https://DOMAIN/.well-known/kith.json lists your user id ({"users": ["USER_ID"]})
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A profile as lines, for `kith profile` and `kith resolve`.
pub fn profile_lines(p: &Value) -> String {
    let mut out = vec![format!("kind:          {}", s(p, "kind").unwrap_or("person"))];
    for (key, label) in [
        ("display_name", "display name:  "),
        ("description", "description:   "),
        ("category", "category:      "),
        ("hours", "hours:         "),
        ("address", "address:       "),
        ("website", "website:       "),
    ] {
        if let Some(v) = s(p, key) {
            out.push(format!("{label}{}", v.replace('\n', " ")));
        }
    }
    if let Some(d) = s(p, "domain") {
        let check = match p.get("verification") {
            Some(v) if s(v, "status") == Some("verified") => "verified".to_owned(),
            Some(v) => format!("NOT VERIFIED: {}", s(v, "error").unwrap_or("unknown")),
            None => "claimed".to_owned(),
        };
        out.push(format!("domain:        {d} ({check})"));
    }
    if let Some(a) = p.get("avatar") {
        let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
        out.push(format!(
            "avatar:        {}, {size} bytes (kith resolve NAME --avatar FILE)",
            s(a, "mime").unwrap_or("?")
        ));
    }
    if let Some(r) = p.get("rating") {
        let avg = r.get("average").and_then(Value::as_f64).unwrap_or(0.0);
        let count = r.get("count").and_then(Value::as_u64).unwrap_or(0);
        out.push(format!("rating:        {avg:.1} of 5 from {count} ratings (as it counts them)"));
    }
    out.join("\n")
}

/// `kith profile`.
pub fn show(home: &Home, json: bool) -> Result<()> {
    let p = Client::from_home(home)?.get("/v1/profile", &[])?;
    if json {
        return emit_json(&p);
    }
    emit(profile_lines(&p))
}

/// `kith profile set`.
pub fn set(home: &Home, a: ProfileArgs, json: bool) -> Result<()> {
    let body = json!({
        "kind": a.kind,
        "display_name": a.display_name,
        "description": a.description,
        "category": a.category,
        "hours": a.hours,
        "address": a.address,
        "website": a.website,
        "domain": a.domain,
    });
    let client = Client::from_home(home)?;
    let mut p = put(&client, &body).context("cannot set the profile")?;
    if let Some(path) = &a.avatar {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        p = client
            .upload("/v1/profile/avatar", &[], "application/octet-stream", &mut file)
            .context("cannot set the avatar")?;
    }
    if json {
        return emit_json(&p);
    }
    emit(format!("profile published with your name record\n{}", profile_lines(&p)))
}

fn put(client: &Client, body: &Value) -> Result<Value> {
    client.put("/v1/profile", body)
}

/// `kith resolve NAME --avatar FILE`: fetches the avatar and writes it.
pub fn save_avatar(home: &Home, name: &str, out: &std::path::Path, json: bool) -> Result<()> {
    let name = name.trim().trim_start_matches('@');
    let (_, mut body) = Client::from_home(home)?
        .download(&format!("/v1/resolve/{name}/avatar"))
        .with_context(|| format!("cannot fetch the avatar of @{name}"))?;
    let mut file =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let n = std::io::copy(&mut body, &mut file)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if json {
        return Ok(());
    }
    emit(format!("avatar of @{name} ({n} bytes) written to {}", out.display()))
}

/// `kith profile clear`.
pub fn clear(home: &Home, json: bool) -> Result<()> {
    let p = Client::from_home(home)?.delete("/v1/profile").context("cannot clear the profile")?;
    if json {
        return emit_json(&p);
    }
    emit("profile removed from your name record")
}

/// `kith subscribe` / `kith unsubscribe`.
pub fn subscribe(home: &Home, name: &str, subscribed: bool, json: bool) -> Result<()> {
    let name = name.trim().trim_start_matches('@');
    let answer = Client::from_home(home)?
        .post("/v1/subscriptions", &json!({ "name": name, "subscribed": subscribed }))
        .with_context(|| {
            format!(
                "cannot {} @{name}",
                if subscribed { "subscribe to" } else { "unsubscribe from" }
            )
        })?;
    if json {
        return emit_json(&answer);
    }
    emit(if subscribed {
        format!("subscribed to @{name}: it may write to you until you unsubscribe")
    } else {
        format!("unsubscribed from @{name}: its messages are refused until you write to it again")
    })
}

/// `kith mute` / `kith unmute`.
pub fn mute(
    home: &Home,
    to: &str,
    how_long: Option<Duration>,
    muted: bool,
    json: bool,
) -> Result<()> {
    let answer = Client::from_home(home)?
        .post(
            "/v1/mutes",
            &json!({ "to": to, "muted": muted, "for_s": how_long.map(|d| d.as_secs()) }),
        )
        .with_context(|| format!("cannot {} {to}", if muted { "mute" } else { "unmute" }))?;
    if json {
        return emit_json(&answer);
    }
    match (muted, s(&answer, "until")) {
        (false, _) => emit(format!("{to} unmuted")),
        (true, Some(until)) => emit(format!("{to} muted until {until}")),
        (true, None) => emit(format!("{to} muted until you unmute it")),
    }
}

/// `kith report`.
pub fn report(home: &Home, name: &str, reason: &str, block: bool, json: bool) -> Result<()> {
    let name = name.trim().trim_start_matches('@');
    let answer = Client::from_home(home)?
        .post("/v1/reports", &json!({ "name": name, "reason": reason, "block": block }))
        .with_context(|| format!("cannot report @{name}"))?;
    if json {
        return emit_json(&answer);
    }
    let n = answer.get("messages").and_then(Value::as_array).map_or(0, Vec::len);
    emit(format!(
        "reported @{name} with {n} of its messages, kept on this node (kith reports){}",
        if block { "; blocked on all your devices" } else { "" }
    ))
}

/// `kith reports`.
pub fn reports(home: &Home, json: bool) -> Result<()> {
    let all = Client::from_home(home)?.get("/v1/reports", &[])?;
    if json {
        return emit_json(&all);
    }
    let list = all.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return emit("no reports");
    }
    let line = |r: &Value| {
        format!(
            "{}  @{}  {}  ({} messages{})",
            s(r, "at").unwrap_or(""),
            s(r, "name").unwrap_or("?"),
            s(r, "reason").unwrap_or("").replace('\n', " "),
            r.get("messages").and_then(Value::as_array).map_or(0, Vec::len),
            if r.get("blocked").and_then(Value::as_bool) == Some(true) { ", blocked" } else { "" }
        )
    };
    emit(list.iter().map(line).collect::<Vec<_>>().join("\n"))
}
