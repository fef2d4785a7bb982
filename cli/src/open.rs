//! `kith open`: from nothing to the web app. Initialises the home if it has no identity,
//! starts the daemon if none answers, and prints (and on a desktop opens) a one-time login link
//! to the web app the daemon serves (docs/web.md).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kith_node::home::Home;
use serde_json::json;

use crate::client::{self, Client};
use crate::commands::{emit, emit_json};

/// How long `kith open` waits for a daemon it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon's log, in the home, when `kith open` starts it.
const LOG_FILE: &str = "daemon.log";

pub fn open(home: &Home, no_browser: bool, json: bool) -> Result<()> {
    let initialized = !home.is_initialized();
    if initialized {
        let label = crate::commands::validate_label(None)?;
        home.init(&label, kith_node::now_ms())?;
        if !json {
            emit(format_args!(
                "Created a Kith identity in {}",
                client::shell_quote(&home.dir().display().to_string())
            ))?;
        }
    }
    let (client, started) = match running(home) {
        Some(client) => (client, None),
        None => {
            if !json {
                emit(format_args!("Starting the daemon (its log: {}) ...", log_path(home)))?;
            }
            let (client, pid) = start_daemon(home)?;
            (client, Some(pid))
        }
    };
    let login = client.post("/v1/web/login", &json!({}))?;
    let path = login["path"].as_str().context("the daemon answered no login path")?;
    let url = format!("{}{path}", client.base());
    let opened = !no_browser && open_browser(&url);
    if json {
        return emit_json(&json!({
            "url": url,
            "initialized": initialized,
            "daemon_started": started.is_some(),
            "daemon_pid": started,
            "browser_opened": opened,
        }));
    }
    emit(format_args!(
        "Open this link in a browser on this machine (it works once, within 2 minutes):\n  {url}{}",
        if opened { "\n(opening it in your browser)" } else { "" }
    ))
}

fn log_path(home: &Home) -> String {
    home.dir().join(LOG_FILE).display().to_string()
}

/// A client of the daemon of `home`, if one answers.
fn running(home: &Home) -> Option<Client> {
    let client = Client::from_home(home).ok()?;
    client.get("/v1/status", &[]).ok()?;
    Some(client)
}

/// Starts `kith daemon` on `home` in the background (its own process group, output to
/// `daemon.log` in the home) and waits until its API answers; its client and process id.
fn start_daemon(home: &Home) -> Result<(Client, u32)> {
    let exe = std::env::current_exe().context("cannot find the kith executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.dir().join(LOG_FILE))
        .with_context(|| format!("cannot open {}", log_path(home)))?;
    let mut command = Command::new(exe);
    command
        .arg("--home")
        .arg(home.dir())
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot open the daemon's log")?)
        .stderr(log);
    #[cfg(unix)]
    {
        // Not in the terminal's process group: Ctrl-C in it does not stop the daemon.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn().context("cannot start the daemon")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(client) = running(home) {
            return Ok((client, child.id()));
        }
        if let Some(status) = child.try_wait().context("cannot watch the daemon")? {
            bail!(
                "the daemon stopped at once ({status}): {}",
                last_line(&home.dir().join(LOG_FILE))
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not answer within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path(home)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last non-empty line of the file at `path`, for an error message.
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned))
        .unwrap_or_else(|| "it wrote nothing".into())
}

/// Asks the desktop to open `url` (`xdg-open` where a display is set, `open` on macOS);
/// whether that was started.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return false;
    };
    Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}
