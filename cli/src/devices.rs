//! `kith device ...`, `kith identity export`, and `kith init --link` / `--recover`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kith_node::home::Home;
use kith_node::link::JoinOptions;
use kith_node::network::TransportKind;
use kith_node::NodeError;
use kith_protocol::link::{from_recovery_phrase, recovery_phrase, LinkCode};
use serde_json::{json, Value};

use crate::client::{shell_quote, ApiError, Client};
use crate::commands::{emit, emit_json, show, validate_label};
use crate::output;

/// How often `kith device link` asks the daemon whether the code was used.
const POLL: Duration = Duration::from_millis(300);

/// `kith device link`: shows a one-time code (and its QR code) and waits until a device used it
/// or it expired.
pub fn link(home: &Home, json: bool, expires: Option<u64>) -> Result<()> {
    let client = Client::from_home(home)?;
    let body = match expires {
        Some(secs) => json!({ "ttl_secs": secs }),
        None => json!({}),
    };
    let started = client.post("/v1/devices/link", &body).map_err(|e| {
        if e.downcast_ref::<ApiError>().is_some_and(|e| e.code == "no_identity_key") {
            e.context("only a device holding the identity key can link new devices")
        } else {
            e.context("cannot create a link code")
        }
    })?;
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (id, code) = (text(&started, "id"), text(&started, "code"));
    if json {
        emit_line(&json!({ "code": code, "id": id, "expires_at": started.get("expires_at") }))?;
    } else {
        let qr = qr_text(&code).unwrap_or_default();
        let dir = shell_quote(&home.dir().display().to_string());
        emit(format_args!(
            "{qr}\nOn the new device, run:\n\n  kith --home DIR init --link {code}\n\n\
             The code works once, until {} (this device: {dir}). Waiting for the new device...",
            text(&started, "expires_at")
        ))?;
    }
    loop {
        std::thread::sleep(POLL);
        let state = client.get(&format!("/v1/devices/link/{id}"), &[])?;
        match state.get("state").and_then(Value::as_str) {
            Some("linked") => {
                if json {
                    return emit_line(&state);
                }
                return emit(format_args!(
                    "Linked device {}. It now receives your messages; `kith device list` shows \
                     all your devices.",
                    text(&state, "device")
                ));
            }
            Some("expired") => {
                if json {
                    emit_line(&state)?;
                }
                bail!("the link code expired before a device used it; run `kith device link` again")
            }
            _ => {}
        }
    }
}

/// One JSON object on one line (the `--json` output of `kith device link` is two such lines).
fn emit_line(value: &Value) -> Result<()> {
    emit(serde_json::to_string(value).context("cannot format JSON")?)
}

/// A QR code of `text` for the terminal (two rows of modules per line).
fn qr_text(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// `kith read TARGET`.
pub fn read(home: &Home, with: &str, json: bool) -> Result<()> {
    let answer = Client::from_home(home)?.post("/v1/read", &json!({ "with": with }))?;
    if json {
        return emit_json(&answer);
    }
    let n = answer.get("read").and_then(Value::as_u64).unwrap_or(0);
    emit(format_args!("marked {n} messages read"))
}

/// `kith device list`.
pub fn list(home: &Home, json: bool) -> Result<()> {
    show(home, "/v1/devices", json, output::devices)
}

/// `kith device revoke PEER_ID`.
pub fn revoke(home: &Home, peer_id: &str, json: bool) -> Result<()> {
    let peer_id = peer_id.trim();
    if peer_id.is_empty() || !peer_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("invalid peer id {peer_id:?} (`kith device list` shows your devices' peer ids)");
    }
    let answer =
        match Client::from_home(home)?.post(&format!("/v1/devices/{peer_id}/revoke"), &json!({})) {
            Ok(a) => a,
            Err(e) => {
                let code = e.downcast_ref::<ApiError>().map(|e| e.code.clone()).unwrap_or_default();
                return Err(match code.as_str() {
                    "not_found" => anyhow::anyhow!(
                        "{peer_id} is not one of your other devices (see `kith device list`)"
                    ),
                    "no_identity_key" => {
                        e.context("only a device holding the identity key can revoke devices")
                    }
                    _ => e.context(format!("cannot revoke {peer_id}")),
                });
            }
        };
    if json {
        return emit_json(&answer);
    }
    emit(format_args!(
        "Revoked {peer_id}: it is no longer in your name record, receives no new messages or \
         group keys, and others refuse what it sends once they have your new record."
    ))
}

/// `kith identity export`: the recovery phrase of the identity key.
pub fn export(home: &Home, json: bool) -> Result<()> {
    let keys = home.load_keys()?;
    let Some(identity) = keys.identity else {
        return Err(NodeError::NoIdentityKey.into());
    };
    let phrase = recovery_phrase(&identity);
    if json {
        return emit_json(
            &json!({ "phrase": phrase, "user_id": keys.identity_public.user_id().to_string() }),
        );
    }
    eprintln!(
        "Anyone with these words can act as you. Write them down, keep them offline, and never \
         type them anywhere but `kith init --recover`."
    );
    emit(phrase)
}

/// `kith init --link CODE`: joins the identity of the device that showed the code.
pub fn init_link(
    home: &Home,
    code: &str,
    label: Option<String>,
    history: bool,
    json: bool,
) -> Result<()> {
    let label = validate_label(label)?;
    LinkCode::parse(code).map_err(|e| anyhow::anyhow!("not a Kith link code: {e}"))?;
    if home.is_initialized() {
        return Err(NodeError::AlreadyInitialized(home.dir().to_path_buf()).into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let show = !json && io::stderr().is_terminal();
    let progress = move |n: usize| {
        if show {
            eprint!("\rcopied {n} messages");
        }
    };
    let info = runtime.block_on(kith_node::link::join(
        home,
        JoinOptions {
            code: code.to_owned(),
            label,
            history,
            transport: TransportKind::Tcp,
            timeout: Duration::from_secs(60),
        },
        progress,
    ));
    if show && history {
        eprintln!();
    }
    let info = info.context("cannot link this device")?;
    if json {
        return emit_json(&serde_json::to_value(&info)?);
    }
    let dir = shell_quote(&home.dir().display().to_string());
    emit(format_args!(
        "Linked this device to {} (user id {})\n\
         peer id:       {}\n\
         safety number: {}\n\
         copied:        {} contacts, {} groups, {} messages\n\
         Next: run the daemon with `kith --home {dir} daemon`.",
        info.name.as_deref().unwrap_or("an identity without a name"),
        info.user_id,
        info.peer_id,
        info.fingerprint,
        info.contacts,
        info.groups,
        info.messages
    ))
}

/// `kith init --recover`: restores the identity key from its recovery phrase (read from
/// standard input) with a new device key.
pub fn init_recover(home: &Home, label: Option<String>, json: bool) -> Result<()> {
    let label = validate_label(label)?;
    if home.is_initialized() {
        return Err(NodeError::AlreadyInitialized(home.dir().to_path_buf()).into());
    }
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprint!("Recovery phrase (24 words): ");
        let _ = io::stderr().flush();
    }
    let mut phrase = String::new();
    stdin.lock().read_line(&mut phrase).context("cannot read the recovery phrase")?;
    let identity = from_recovery_phrase(&phrase).map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = home.init_with(identity, &label, kith_node::now_ms())?;
    if json {
        return emit_json(&json!({
            "user_id": info.user_id.to_string(),
            "peer_id": info.peer_id,
            "fingerprint": info.fingerprint,
        }));
    }
    let dir = shell_quote(&home.dir().display().to_string());
    emit(format_args!(
        "Restored the identity {} on a new device\n\
         peer id:       {}\n\
         safety number: {}\n\
         Next: run `kith --home {dir} daemon`, then `kith --home {dir} register NAME` with your \
         name: the new record lists this device next to your others (revoke a lost one with \
         `kith device revoke PEER_ID`).",
        info.user_id, info.peer_id, info.fingerprint
    ))
}
