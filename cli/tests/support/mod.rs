//! Shared by the end-to-end tests: run the real `kith` binary, with bounded waits, and daemons
//! that are always killed.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const KITH: &str = env!("CARGO_BIN_EXE_kith");
/// Longest any one CLI command may take (debug builds, a proof of work, DHT round trips).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a daemon may take to start serving its API.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(200);

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Output {
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
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {:?}", self.what, self.stdout))
    }

    /// Panics unless the command failed with exit code 1 and a one-line `kith: ...` error that
    /// contains `needle`.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) {
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
pub fn kith(home: &Path, args: &[&str]) -> Output {
    kith_with(home, args, None)
}

/// [`kith`] with `input` on its standard input.
pub fn kith_input(home: &Path, args: &[&str], input: &str) -> Output {
    kith_with(home, args, Some(input))
}

fn kith_with(home: &Path, args: &[&str], input: Option<&str>) -> Output {
    let what = format!("kith {}", args.join(" "));
    let mut child = command(home)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("writing to {what}: {e}"));
    }
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
pub fn command(home: &Path) -> Command {
    let mut cmd = Command::new(KITH);
    cmd.arg("--home").arg(home).env_remove("KITH_HOME").env_remove("KITH_POW_BITS");
    cmd
}

/// Reads a pipe to its end on a thread.
pub fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
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
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(POLL);
    }
}

/// The texts of the conversation with `with` on `node`, oldest first (none when it cannot be
/// read).
pub fn texts(node: &Node, with: &str) -> Vec<String> {
    node.messages(&[with])
        .and_then(|l| {
            l.as_array()
                .map(|a| a.iter().filter_map(|m| m["text"].as_str().map(str::to_owned)).collect())
        })
        .unwrap_or_default()
}

/// A bootstrap node and `names` started against it, each connected and registered under its
/// name: the bootstrap node, its address, and the nodes in the order of `names`.
pub fn network_of<const N: usize>(names: [&'static str; N]) -> (Node, String, [Node; N]) {
    let mut boot = Node::init("boot");
    let addr = boot.start(None)["listen_addrs"][0].as_str().expect("addr").to_owned();
    let mut nodes = names.map(Node::init);
    for node in &mut nodes {
        node.start(Some(&addr));
    }
    for node in &nodes {
        wait_until(&format!("{} to connect", node.name), START_TIMEOUT, || {
            node.status().filter(|s| s["connected_peers"].as_u64() >= Some(1))
        });
        node.register(node.name);
    }
    (boot, addr, nodes)
}

/// The messages whose text is `text`.
pub fn with_text<'a>(messages: &'a Value, text: &str) -> Vec<&'a Value> {
    let list = messages.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().filter(|m| m["text"] == text).collect()
}

/// A running `kith daemon`; killed (and waited for) when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Sends SIGTERM and waits, bounded, for the daemon to exit.
    pub fn terminate(mut self) -> ExitStatus {
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
pub struct Node {
    pub name: &'static str,
    // Declared before `dir`: the daemon is stopped before its directory is removed.
    pub daemon: Option<Daemon>,
    pub starts: u32,
    pub dir: TempDir,
}

impl Node {
    /// A new node with `kith init` done.
    pub fn init(name: &'static str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-e2e-{name}-"))
            .tempdir()
            .expect("tempdir");
        let node = Node { name, daemon: None, starts: 0, dir };
        let info = node.kith(&["init", "--label", name, "--json"]).ok().json();
        assert_eq!(info["user_id"].as_str().map(str::len), Some(32), "{info}");
        node
    }

    /// A node with an empty home (for `kith init --link` or `--recover`).
    pub fn empty(name: &'static str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-e2e-{name}-"))
            .tempdir()
            .expect("tempdir");
        Node { name, daemon: None, starts: 0, dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn kith(&self, args: &[&str]) -> Output {
        kith(&self.home(), args)
    }

    /// `kith` on this node's home with `input` on standard input.
    pub fn kith_input(&self, args: &[&str], input: &str) -> Output {
        kith_input(&self.home(), args, input)
    }

    /// `kith status --json`, or `None` if it fails.
    pub fn status(&self) -> Option<Value> {
        let out = self.kith(&["status", "--json"]);
        out.status.success().then(|| out.json())
    }

    /// Starts the daemon on loopback and waits until its API answers; returns its status.
    pub fn start(&mut self, bootstrap: Option<&str>) -> Value {
        self.start_with(bootstrap, &[])
    }

    /// Like [`Node::start`], with extra daemon arguments.
    pub fn start_with(&mut self, bootstrap: Option<&str>, extra: &[&str]) -> Value {
        self.start_as(&["daemon"], bootstrap, extra)
    }

    /// Like [`Node::start_with`], running `command` (`daemon`, or an embedded bot such as
    /// `bot pizzeria`) with the daemon's flags.
    pub fn start_as(&mut self, run: &[&str], bootstrap: Option<&str>, extra: &[&str]) -> Value {
        assert!(self.daemon.is_none(), "{} is already running", self.name);
        self.starts += 1;
        // A crashed daemon leaves its api.addr behind; never talk to that one.
        let _ = std::fs::remove_file(self.home().join("api.addr"));
        let log = self.dir.path().join(format!("daemon-{}.log", self.starts));
        let file = File::create(&log).expect("create log");
        let mut cmd = command(&self.home());
        cmd.args(run);
        cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--pow-bits", "8"]);
        if let Some(addr) = bootstrap {
            cmd.args(["--bootstrap", addr]);
        }
        cmd.args(extra);
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

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|d| d.child.id())
    }

    /// Whether the daemon is running.
    pub fn running(&self) -> bool {
        self.daemon.is_some()
    }

    /// Stops the daemon with SIGTERM and checks that it exited cleanly and removed `api.addr`.
    pub fn stop(&mut self) {
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
    pub fn messages(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["messages"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.kith(&all);
        out.status.success().then(|| out.json())
    }

    /// Registers `name`, retrying while the network is still forming.
    pub fn register(&self, name: &str) {
        wait_until(&format!("{} to register @{name}", self.name), Duration::from_secs(60), || {
            let out = self.kith(&["register", name]);
            if !out.status.success() {
                eprintln!("{}: register {name}: {}", self.name, out.stderr.trim());
            }
            out.status.success().then_some(())
        });
    }
}

pub fn is_message_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A mailbox node on a loopback port, and alice and bob started through it and registered:
/// (the mailbox, its address ending in `/p2p/<peer id>`, alice, bob).
pub fn mailbox_alice_bob() -> (Node, String, Node, Node) {
    let mut mailbox = Node::init("mailbox");
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let mb = mailbox.start_with(None, &["--listen", &listen, "--mailbox"]);
    let mb_addr = format!("{listen}/p2p/{}", mb["peer_id"].as_str().expect("peer id"));
    let mut alice = Node::init("alice");
    alice.start(Some(&mb_addr));
    let mut bob = Node::init("bob");
    bob.start(Some(&mb_addr));
    alice.register("alice");
    bob.register("bob");
    (mailbox, mb_addr, alice, bob)
}

/// Starts `kith device link --json` on `node`: the running command, its output and the code.
pub fn link_code(
    node: &Node,
    extra: &[&str],
) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>, String) {
    use std::io::BufRead;
    let mut child = command(&node.home())
        .args(["device", "link", "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kith device link");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let first: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let code = first["code"].as_str().expect("code").to_owned();
    (child, out, code)
}

/// Waits for `child` to exit within `within` (killed and a panic otherwise).
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}
