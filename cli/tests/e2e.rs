//! End-to-end tests of the `kith` binary: real daemons on loopback, driven through the CLI.
//!
//! Every child process binds 127.0.0.1 only, every wait has a deadline, and every daemon is
//! killed when its guard is dropped, also when a test fails (the daemon's log is then printed).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const KITH: &str = env!("CARGO_BIN_EXE_kith");
/// Longest any one CLI command may take (debug builds, a proof of work, DHT round trips).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a daemon may take to start serving its API.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(200);

/// What a finished command printed.
#[derive(Debug)]
struct Output {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Panics unless the command succeeded.
    #[track_caller]
    fn ok(self) -> Output {
        assert!(
            self.status.success(),
            "`{}` failed ({}): {}{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The standard output as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {:?}", self.what, self.stdout))
    }

    /// Panics unless the command failed with exit code 1 and a one-line `kith: ...` error that
    /// contains `needle`.
    #[track_caller]
    fn fails_with(&self, needle: &str) {
        assert_eq!(self.status.code(), Some(1), "`{}` should fail: {self:?}", self.what);
        let err = self.stderr.trim_end();
        assert!(err.starts_with("kith: "), "`{}`: stderr is not `kith: ...`: {err:?}", self.what);
        assert!(!err.contains('\n'), "`{}`: error is not one line: {err:?}", self.what);
        assert!(
            err.contains(needle),
            "`{}`: error does not mention {needle:?}: {err:?}",
            self.what
        );
    }
}

/// Runs `kith --home HOME ARGS...`, killing it if it takes longer than [`COMMAND_TIMEOUT`].
fn kith(home: &Path, args: &[&str]) -> Output {
    let what = format!("kith {}", args.join(" "));
    let mut child = command(home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` did not finish within {COMMAND_TIMEOUT:?}");
            }
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
    };
    let join = |h: thread::JoinHandle<String>| h.join().unwrap_or_default();
    Output { what, status, stdout: join(stdout), stderr: join(stderr) }
}

/// `kith --home HOME` with an environment that cannot interfere.
fn command(home: &Path) -> Command {
    let mut cmd = Command::new(KITH);
    cmd.arg("--home").arg(home).env_remove("KITH_HOME").env_remove("KITH_POW_BITS");
    cmd
}

/// Reads a pipe to its end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
#[track_caller]
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(POLL);
    }
}

/// The messages whose text is `text`.
fn with_text<'a>(messages: &'a Value, text: &str) -> Vec<&'a Value> {
    let list = messages.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().filter(|m| m["text"] == text).collect()
}

/// A running `kith daemon`; killed (and waited for) when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Sends SIGTERM and waits, bounded, for the daemon to exit.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => return status,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                None => panic!("the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- last lines of {} ---\n{}", self.log.display(), tail.join("\n"));
        }
    }
}

/// One node: a temporary home and, while it runs, its daemon.
struct Node {
    name: &'static str,
    // Declared before `dir`: the daemon is stopped before its directory is removed.
    daemon: Option<Daemon>,
    starts: u32,
    dir: TempDir,
}

impl Node {
    /// A new node with `kith init` done.
    fn init(name: &'static str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-e2e-{name}-"))
            .tempdir()
            .expect("tempdir");
        let node = Node { name, daemon: None, starts: 0, dir };
        let info = node.kith(&["init", "--label", name, "--json"]).ok().json();
        assert_eq!(info["user_id"].as_str().map(str::len), Some(32), "{info}");
        node
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn kith(&self, args: &[&str]) -> Output {
        kith(&self.home(), args)
    }

    /// `kith status --json`, or `None` if it fails.
    fn status(&self) -> Option<Value> {
        let out = self.kith(&["status", "--json"]);
        out.status.success().then(|| out.json())
    }

    /// Starts the daemon on loopback and waits until its API answers; returns its status.
    fn start(&mut self, bootstrap: Option<&str>) -> Value {
        assert!(self.daemon.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let log = self.dir.path().join(format!("daemon-{}.log", self.starts));
        let file = File::create(&log).expect("create log");
        let mut cmd = command(&self.home());
        cmd.args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--pow-bits",
            "8",
        ]);
        if let Some(addr) = bootstrap {
            cmd.args(["--bootstrap", addr]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .expect("spawn kith daemon");
        self.daemon = Some(Daemon { child, log });
        let api_addr = self.home().join("api.addr");
        wait_until(&format!("{}'s daemon to serve its API", self.name), START_TIMEOUT, || {
            let daemon = self.daemon.as_mut()?;
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{}'s daemon exited early ({status})", self.name);
            }
            if api_addr.exists() {
                self.status()
            } else {
                None
            }
        })
    }

    /// Stops the daemon with SIGTERM and checks that it exited cleanly and removed `api.addr`.
    fn stop(&mut self) {
        let daemon = self.daemon.take().expect("daemon running");
        let status = daemon.terminate();
        assert!(status.success(), "{}'s daemon exited with {status} after SIGTERM", self.name);
        assert!(
            !self.home().join("api.addr").exists(),
            "{}'s daemon left api.addr behind",
            self.name
        );
    }

    /// `kith messages [ARGS] --json`, or `None` if it fails.
    fn messages(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["messages"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.kith(&all);
        out.status.success().then(|| out.json())
    }

    /// Registers `name`, retrying while the network is still forming.
    fn register(&self, name: &str) {
        wait_until(&format!("{} to register @{name}", self.name), Duration::from_secs(60), || {
            let out = self.kith(&["register", name]);
            if !out.status.success() {
                eprintln!("{}: register {name}: {}", self.name, out.stderr.trim());
            }
            out.status.success().then_some(())
        });
    }
}

fn is_message_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn three_daemons_deliver_direct_and_queued_messages() {
    let mut boot = Node::init("boot");
    let boot_status = boot.start(None);
    let boot_addr = boot_status["listen_addrs"][0].as_str().expect("boot listens").to_owned();
    assert!(boot_addr.starts_with("/ip4/127.0.0.1/") && boot_addr.contains("/p2p/"), "{boot_addr}");

    let mut alice = Node::init("alice");
    alice.start(Some(&boot_addr));
    let mut bob = Node::init("bob");
    let bob_user = bob.start(Some(&boot_addr))["user_id"].as_str().expect("user_id").to_owned();
    for node in [&alice, &bob] {
        wait_until(&format!("{} to connect to a peer", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
    }

    alice.register("alice");
    bob.register("bob");
    assert_eq!(bob.status().expect("status")["name"], "bob");

    let record = wait_until("alice to resolve @bob", Duration::from_secs(30), || {
        let out = alice.kith(&["resolve", "@bob", "--json"]);
        out.status.success().then(|| out.json())
    });
    assert_eq!(record["user_id"], bob_user.as_str(), "{record}");

    alice.kith(&["send", "@nobody-here", "hi"]).fails_with("nobody-here");

    // Both online: delivered while `send --wait` waits.
    let out = alice.kith(&["send", "@bob", "hello", "bob", "--wait", "--timeout", "60"]).ok();
    assert!(is_message_id(out.stdout.trim()), "send printed {:?}", out.stdout);
    wait_until("bob to list 'hello bob' from alice", Duration::from_secs(20), || {
        let list = bob.messages(&[])?;
        let found = with_text(&list, "hello bob");
        assert!(found.len() <= 1, "'hello bob' listed twice: {list}");
        found.first().filter(|m| m["from"] == "alice").map(|_| ())
    });

    // Bob offline: the message waits in alice's outbox.
    bob.stop();
    let out = alice.kith(&["send", "@bob", "while you were away"]).ok();
    let away_id = out.stdout.trim().to_owned();
    assert!(is_message_id(&away_id), "send printed {:?}", out.stdout);
    let outbox = alice.status().expect("alice status")["outbox"].as_u64();
    assert!(outbox >= Some(1), "alice's outbox is {outbox:?}");

    // Bob back: the queued message arrives, once.
    bob.start(Some(&boot_addr));
    let list = wait_until("bob to receive the queued message", Duration::from_secs(90), || {
        bob.messages(&[]).filter(|list| !with_text(list, "while you were away").is_empty())
    });
    assert_eq!(with_text(&list, "while you were away").len(), 1, "{list}");
    assert_eq!(with_text(&list, "hello bob").len(), 1, "{list}");
    wait_until("alice to see the queued message delivered", Duration::from_secs(60), || {
        let list = alice.messages(&["@bob"])?;
        let m = list.as_array()?.iter().find(|m| m["id"] == away_id.as_str())?.clone();
        matches!(m["status"].as_str(), Some("delivered" | "read")).then_some(())
    });
    // Nothing was delivered twice meanwhile.
    let list = bob.messages(&[]).expect("bob's messages");
    assert_eq!(with_text(&list, "while you were away").len(), 1, "{list}");
}

#[test]
fn init_refuses_to_overwrite_an_identity() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    let out = kith(&home, &["init"]).ok();
    assert!(out.stdout.contains("safety number"), "{}", out.stdout);
    let token = std::fs::read_to_string(home.join("api.token")).expect("token");
    kith(&home, &["init", "--label", "other"]).fails_with("refusing to overwrite");
    assert_eq!(std::fs::read_to_string(home.join("api.token")).expect("token"), token);
}

#[test]
fn commands_without_a_daemon_say_so() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    kith(&home, &["status"]).fails_with("kith init");
    kith(&home, &["init", "--json"]).ok();
    kith(&home, &["status"]).fails_with("the daemon is not running");
    kith(&home, &["messages", "--json"]).fails_with("the daemon is not running");
    // A stale address of a daemon that is gone: the port refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    std::fs::write(home.join("api.addr"), format!("{addr}\n")).expect("write api.addr");
    kith(&home, &["status", "--json"]).fails_with("the daemon is not running");
}

#[test]
fn invalid_names_are_refused_with_the_rule() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    kith(&home, &["register", "A B"]).fails_with("lowercase ASCII letters, digits");
    kith(&home, &["resolve", "@x"]).fails_with("3 to 32 characters");
    kith(&home, &["send", "@-bob", "hi"]).fails_with("start with a letter or digit");
}

#[test]
fn usage_errors_exit_2_and_help_explains() {
    let dir = TempDir::new().expect("tempdir");
    let out = kith(dir.path(), &["send", "@bob"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let help = kith(dir.path(), &["daemon", "--help"]).ok().stdout;
    assert!(help.contains("127.0.0.1:0") && help.contains("--bootstrap"), "{help}");
    let help = kith(dir.path(), &["--help"]).ok().stdout;
    assert!(help.contains("Quick start") && help.contains("kith send @bob"), "{help}");
}

#[test]
fn daemon_settings_errors_are_one_line() {
    let dir = TempDir::new().expect("tempdir");
    let home = dir.path().join("home");
    let config = dir.path().join("kith.toml");
    std::fs::write(&config, "pow_bits = 8\nmailbox_max_mesages = 5\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let out = kith(&home, &["daemon", "--config", config]);
    out.fails_with("mailbox_max_mesages");
    out.fails_with("kith.toml");
    let out = kith(&home, &["daemon", "--mailbox", "--mailbox-allow", "nothex"]);
    out.fails_with("--mailbox-allow \"nothex\"");
}
