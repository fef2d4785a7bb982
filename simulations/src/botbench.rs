//! `kith-sim bench-bot`: one pizzeria bot process (`kith bot pizzeria`, the real binary)
//! serving many users who each place an order at about the same time, optionally killed with
//! `kill -9` and restarted once half of them got the menu. Users are nodes in worker processes
//! of 100, on TCP, each listening on its own port of 127.0.0.1. Their dials all come from
//! 127.0.0.1, so every node here, the bot too, runs without the per-address connection limits
//! (which would refuse the 65th connection from one address) and with room for 4,096
//! connections: in the field, people come from many addresses.
//!
//! Users are DHT clients by default (`Limits::dht_server`): the DHT is the bootstrap node and
//! the bot, each user holds a few connections, and a thousand users set up in minutes. The bot
//! answers them over the connections they opened; after its restart they dial it again (a node
//! short of connections redials the peers it knows, within `REDIAL_MAX_MS`), since no lookup
//! finds a client. `--users-serve-dht` makes every user a DHT server as people's devices are:
//! a real DHT, whose setup grows with the number of users (the users' joins, not the bot).
//!
//! Measured: orders completed; from each user's first message to the bot's first reply, and
//! from the filled form to the order's confirmation (p50, p99); the bot's CPU time and peak
//! memory (each process, from `/proc`); and, from the users' histories, that no order was lost
//! and no reply came twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;

use crate::bench::{first_addr, node_limited};
use kith_node::network::TransportKind;
use kith_node::node::NodeEvent;
use kith_node::{Multiaddr, Node};
use serde_json::json;

/// Every node here dials from 127.0.0.1: no per-address limits, and room for everyone.
const LOOPBACK: kith_node::network::Limits =
    kith_node::network::Limits { max_connections: 4096, per_address: false, dht_server: true };

/// What `bench-bot` was asked.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Users.
    pub users: usize,
    /// Kill the bot with SIGKILL once half the users have the menu, and restart it.
    pub kill: bool,
    /// The `kith` binary.
    pub kith: PathBuf,
    /// How long the users have, after the start, to complete their orders.
    pub deadline: Duration,
    /// The users serve the DHT (else they are DHT clients).
    pub users_serve_dht: bool,
}

/// The `kith` binary next to this one, if there is one.
pub(crate) fn default_kith() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("kith")))
        .unwrap_or_else(|| PathBuf::from("kith"))
}

fn percentile(mut v: Vec<Duration>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

/// CPU seconds (user + system) and peak resident memory (MiB) of a process, from `/proc`.
fn proc_usage(pid: u32) -> (f64, f64) {
    let pid = pid.to_string();
    let (user, system) = crate::bench::cpu_times_of(&pid);
    (user + system, crate::bench::memory_mib(&pid, "VmHWM:"))
}

struct BotProcess {
    child: Child,
}

impl BotProcess {
    /// Starts the bot listening on `port` (the same each time, as a deployed daemon would:
    /// the users' nodes know that address).
    fn start(
        kith: &Path,
        home: &Path,
        boot: &Multiaddr,
        port: u16,
        log: &Path,
    ) -> Result<BotProcess> {
        let _ = std::fs::remove_file(home.join("api.addr"));
        let log = std::fs::File::create(log)?;
        let child = Command::new(kith)
            .args(["--home"])
            .arg(home)
            .args(["bot", "pizzeria", "--name", "napoli", "--step", "5", "--concurrency", "64"])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}"), "--api", "127.0.0.1:0"])
            .args(["--pow-bits", "8"])
            .args(["--inbound-per-minute", "1000000", "--bootstrap", &boot.to_string()])
            // Every user dials from 127.0.0.1 here; in the field they come from many addresses.
            .args(["--max-connections", "4096", "--no-address-limits"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", kith.display()))?;
        let addr = home.join("api.addr");
        for _ in 0..600 {
            if addr.exists() {
                return Ok(BotProcess { child });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the bot did not start within 30 s")
    }

    /// Its CPU seconds and peak memory so far.
    fn usage(&self) -> (f64, f64) {
        proc_usage(self.child.id())
    }

    fn kill(self) {
        // Dropped: killed.
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// A bench that ends early (an error) leaves no bot running.
impl Drop for BotProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn user_node(base: &Path, i: usize, boot: &Multiaddr, serve_dht: bool) -> Result<Node> {
    let name = format!("user{i:04}");
    // All on 127.0.0.1, where the kernel gives each its own port: a node dials from its
    // listening port (libp2p's port reuse), so two users listening on one port at different
    // addresses (127.1.0.2:P and 127.1.4.2:P) would dial the bot from the same 127.0.0.1:P,
    // and the second dial would fail with "address in use", at every try.
    let limits = kith_node::network::Limits { dht_server: serve_dht, ..LOOPBACK };
    let node = node_limited(base, &name, TransportKind::Tcp, vec![boot.clone()], limits).await?;
    // Joined first (a registration with no peer stores nothing), then registered, with
    // patience: 1,000 nodes join on two cores.
    let mut tries = 0;
    while node.status().await?.connected_peers == 0 {
        tries += 1;
        if tries > 600 {
            bail!("{name} (peer {}) did not connect within 60 s", node.peer_id());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tries = 0;
    loop {
        match node.register(&name).await {
            Ok(_) => break,
            Err(e) if tries < 60 => {
                tries += 1;
                tracing::debug!("{name}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => bail!("{name} cannot register: {e}"),
        }
    }
    Ok(node)
}

/// One user's order, timed: (first reply, confirmation after the form).
async fn order(node: &Node, on_menu: &(dyn Fn() + Sync)) -> Result<(Duration, Duration)> {
    let mut events = node.subscribe();
    let start = Instant::now();
    node.send_text("napoli", "hi").await?;
    let mut first = None;
    let (mut card, mut checkout, mut form) = (None, None, None);
    let mut form_at = None;
    let mut asked = (false, false, false);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(600), events.recv()).await;
        let v = match event {
            Ok(Ok(NodeEvent::Message(v))) if v.direction == "in" && v.from == "napoli" => v,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => bail!("no word from the bot for 10 minutes"),
        };
        if first.is_none() {
            first = Some(start.elapsed());
        }
        if let Some(i) = &v.interactive {
            if i.element["product"]["title"] == "Margherita" {
                card = Some(v.id.clone());
            } else if i.element["buttons"][0]["id"] == "checkout" {
                checkout = Some(v.id.clone());
            } else if !i.element["form"].is_null() {
                form = Some(v.id.clone());
            }
        }
        let text = v.text.clone().unwrap_or_default();
        if let (Some(c), false) = (&card, asked.0) {
            if checkout.is_some() {
                on_menu();
                node.interactions().answer(c, vec!["small".into()], vec![]).await?;
                asked.0 = true;
            }
        }
        if let (Some(b), true, false) = (&checkout, text.starts_with("Added."), asked.1) {
            node.interactions().answer(b, vec!["checkout".into()], vec![]).await?;
            asked.1 = true;
        }
        if let (Some(f), false) = (&form, asked.2) {
            let fields =
                vec![("name".into(), "Bench".into()), ("address".into(), "1 Loop Rd".into())];
            node.interactions().answer(f, vec![], fields).await?;
            form_at = Some(Instant::now());
            asked.2 = true;
        }
        if text.contains(" received: ") {
            let confirmed = form_at.map_or(Duration::ZERO, |t| t.elapsed());
            return Ok((first.unwrap_or_default(), confirmed));
        }
    }
}

/// How many messages from the bot in `node`'s history contain `needle`.
fn from_bot(node: &Node, needle: &str) -> usize {
    node.messages(Some("@napoli"), 500)
        .map(|l| l.iter().filter(|m| m.text.as_deref().is_some_and(|t| t.contains(needle))).count())
        .unwrap_or(0)
}

/// Runs the benchmark and prints its results as JSON.
/// Users per worker process: each user's node holds about 100 descriptors (its store, its
/// connections, both ends of those to other users in the same process), and a process may open
/// 20,000 here.
const USERS_PER_WORKER: usize = 100;

/// Runs the benchmark and prints its results as JSON.
pub(crate) fn run(opts: Options) -> Result<()> {
    // RUST_LOG=... shows the nodes' logs on standard error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(bench(opts))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A worker process: `count` users from number `first`, joined through `boot`. It prints
/// `ready` once they are registered and have found the bot; on `go` (standard input) each
/// orders, printing `menu` when it has the menu and `done FIRST_MS CONFIRM_MS` or `fail WHY`
/// at the end; on `check` it prints `check TWICE LOST` from the users' histories; it ends at
/// the end of its input.
pub(crate) fn worker(boot: String, first: usize, count: usize, serve_dht: bool) -> Result<()> {
    use std::io::BufRead;
    // RUST_LOG=... puts the users' logs in the worker's log file.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let boot: Multiaddr = boot.parse()?;
    let dir = tempfile::tempdir()?;
    let users = rt.block_on(async {
        let users: Vec<Node> = futures::stream::iter(first..first + count)
            .map(|i| {
                let (base, boot) = (dir.path().to_path_buf(), boot.clone());
                async move { user_node(&base, i, &boot, serve_dht).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        for u in &users {
            let mut tries = 0;
            while u.resolve_fresh("napoli").await.is_err() {
                tries += 1;
                if tries > 120 {
                    bail!("a user cannot resolve the bot");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok::<_, anyhow::Error>(users)
    })?;
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "go" => {
                for u in &users {
                    let u = u.clone();
                    rt.spawn(async move {
                        match order(&u, &|| println!("menu")).await {
                            Ok((a, b)) => println!("done {} {}", a.as_millis(), b.as_millis()),
                            Err(e) => println!("fail {}", e.to_string().replace('\n', " ")),
                        }
                    });
                }
            }
            "check" => {
                let (mut twice, mut lost) = (0, 0);
                for u in &users {
                    let orders = from_bot(u, " received: ");
                    lost += usize::from(orders == 0);
                    twice +=
                        usize::from(from_bot(u, "Welcome to Pizzeria Napoli") > 1 || orders > 1);
                }
                println!("check {twice} {lost}");
            }
            _ => {}
        }
    }
    rt.block_on(async {
        for u in users {
            let _ = u.shutdown().await;
        }
    });
    Ok(())
}

async fn bench(opts: Options) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir()?;
    let base = dir.path();
    let boot = node_limited(base, "boot", TransportKind::Tcp, vec![], LOOPBACK).await?;
    let boot_addr = first_addr(&boot)
        .await?
        .with_p2p(boot.peer_id())
        .map_err(|a| anyhow::anyhow!("the bootstrap node's address {a} has a peer id"))?;

    let bot_home = base.join("napoli");
    let init = Command::new(&opts.kith)
        .arg("--home")
        .arg(&bot_home)
        .args(["init", "--label", "bot"])
        .output()?;
    if !init.status.success() {
        bail!("kith init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut bot =
        Some(BotProcess::start(&opts.kith, &bot_home, &boot_addr, port, &base.join("bot-1.log"))?);

    let setup = Instant::now();
    eprintln!("starting {} users in processes of {USERS_PER_WORKER} ...", opts.users);
    // Every user prints at most a few lines; the reader threads wait when it is full.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
    let me = std::env::current_exe()?;
    let mut workers = Vec::new();
    let mut inputs = Vec::new();
    for first in (0..opts.users).step_by(USERS_PER_WORKER) {
        let count = USERS_PER_WORKER.min(opts.users - first);
        let log = std::fs::File::create(base.join(format!("worker-{first}.log")))?;
        let mut child = Command::new(&me)
            .args(["bench-bot-worker", "--boot", &boot_addr.to_string()])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(opts.users_serve_dht.then_some("--serve-dht"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        inputs.push(child.stdin.take().context("a worker's input")?);
        let out = child.stdout.take().context("a worker's output")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(format!("exit {first}"));
        });
        workers.push(child);
        // One worker's users join before the next worker starts: the joins do not pile up.
        while let Some(line) = rx.recv().await {
            if line == "ready" {
                break;
            }
            if line.starts_with("exit ") {
                let log = base.join(format!("worker-{first}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let why = text.lines().last().unwrap_or("no output").to_owned();
                // Kept for a look: the logs of every process (RUST_LOG sets what they hold).
                let kept = dir.keep();
                bail!(
                    "the worker of users {first}.. ended before they were ready: {why} (logs in {})",
                    kept.display()
                );
            }
        }
        eprintln!("{} users ready after {:.0} s", first + count, setup.elapsed().as_secs_f64());
    }
    drop(tx);
    let setup_s = setup.elapsed().as_secs_f64();
    let tell = |inputs: &mut Vec<std::process::ChildStdin>, what: &str| {
        for i in inputs.iter_mut() {
            let _ = writeln!(i, "{what}");
        }
    };

    let started = Instant::now();
    tell(&mut inputs, "go");
    let (mut menus, mut failed) = (0usize, 0usize);
    let (mut first, mut confirmed) = (Vec::new(), Vec::new());
    let mut usage_before_kill = (0.0, f64::NAN);
    let mut killed_at = None;
    while first.len() + failed < opts.users {
        let left = opts.deadline.saturating_sub(started.elapsed());
        let Ok(Some(line)) = tokio::time::timeout(left, rx.recv()).await else { break };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("menu") => menus += 1,
            Some("done") => {
                let mut ms = || words.next().and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
                first.push(Duration::from_millis(ms()));
                confirmed.push(Duration::from_millis(ms()));
            }
            Some("fail") => {
                eprintln!("an order failed: {line}");
                failed += 1;
            }
            _ => {}
        }
        if opts.kill && killed_at.is_none() && menus >= opts.users / 2 {
            if let Some(b) = bot.take() {
                usage_before_kill = b.usage();
                b.kill();
            }
            killed_at = Some(started.elapsed().as_secs_f64());
            eprintln!(
                "killed the bot (SIGKILL) after {:.1} s; restarting",
                started.elapsed().as_secs_f64()
            );
            bot = Some(BotProcess::start(
                &opts.kith,
                &bot_home,
                &boot_addr,
                port,
                &base.join("bot-2.log"),
            )?);
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    let late = opts.users - first.len() - failed;
    // Late duplicates would arrive after the confirmation: give them a moment.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let usage_after = bot.as_ref().map_or((0.0, f64::NAN), BotProcess::usage);
    tell(&mut inputs, "check");
    let (mut twice, mut lost, mut checked) = (0usize, 0usize, 0usize);
    while checked < workers.len() {
        let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await else {
            break;
        };
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["check", t, l] = w.as_slice() {
            twice += t.parse::<usize>().unwrap_or(0);
            lost += l.parse::<usize>().unwrap_or(0);
            checked += 1;
        }
    }
    drop(inputs);
    for mut w in workers {
        let _ = w.wait();
    }
    if let Some(b) = bot.take() {
        b.stop();
    }
    let _ = boot.shutdown().await;
    Ok(json!({
        "users": opts.users,
        "killed_and_restarted": opts.kill,
        "users_serve_dht": opts.users_serve_dht,
        "killed_at_s": killed_at,
        "setup_s": setup_s,
        "orders_completed": confirmed.len(),
        "orders_failed": failed,
        "orders_not_done_by_the_deadline": late,
        "users_without_a_confirmed_order": lost,
        "users_with_a_reply_twice": twice,
        "histories_checked_by_workers": checked,
        "wall_s": total_s,
        "first_reply_ms": {"p50": percentile(first.clone(), 0.5), "p99": percentile(first, 0.99)},
        "form_to_confirmation_ms": {"p50": percentile(confirmed.clone(), 0.5), "p99": percentile(confirmed, 0.99)},
        "bot_cpu_s": usage_before_kill.0 + usage_after.0,
        "bot_peak_rss_mib": {"before_kill": usage_before_kill.1, "last_process": usage_after.1},
    }))
}
