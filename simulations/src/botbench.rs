//! `kith-sim bench-bot`: one pizzeria bot process (`kith bot pizzeria`, the real binary)
//! serving many users who each place an order at about the same time, optionally killed with
//! `kill -9` and restarted once half of them got the menu. Users are nodes in this process, on
//! TCP, each on its own loopback address (127.1.X.Y, 50 per /24) so the bot's per-address
//! connection limits see many addresses, as they would in the field.
//!
//! Measured: orders completed; from each user's first message to the bot's first reply, and
//! from the filled form to the order's confirmation (p50, p99); the bot's CPU time and peak
//! memory (each process, from `/proc`); and, from the users' histories, that no order was lost
//! and no reply came twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use kith_node::home::Home;
use kith_node::mailbox::MailboxConfig;
use kith_node::network::TransportKind;
use kith_node::node::NodeEvent;
use kith_node::{Multiaddr, Node, NodeConfig};
use serde_json::json;

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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0);
    (ticks(11) + ticks(12), peak)
}

struct BotProcess {
    child: Child,
}

impl BotProcess {
    fn start(kith: &Path, home: &Path, boot: &Multiaddr, log: &Path) -> Result<BotProcess> {
        let _ = std::fs::remove_file(home.join("api.addr"));
        let log = std::fs::File::create(log)?;
        let child = Command::new(kith)
            .args(["--home"])
            .arg(home)
            .args(["bot", "pizzeria", "--name", "napoli", "--step", "5", "--concurrency", "64"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--pow-bits", "8"])
            .args(["--inbound-per-minute", "1000000", "--bootstrap", &boot.to_string()])
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

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

async fn user_node(base: &Path, i: usize, boot: &Multiaddr) -> Result<Node> {
    let name = format!("user{i:04}");
    let home = base.join(&name);
    Home::new(&home).init(&name, kith_node::now_ms())?;
    let ip = format!("127.1.{}.{}", i / 50, i % 50 + 2);
    let node = Node::start(NodeConfig {
        home,
        transport: TransportKind::Tcp,
        listen: vec![format!("/ip4/{ip}/tcp/0").parse()?],
        bootstrap: vec![boot.clone()],
        pow_bits: 8,
        mailbox: MailboxConfig::default(),
        media: kith_node::node::MediaConfig::default(),
        calls: kith_node::node::CallConfig::default(),
        accounts: kith_node::node::AccountsConfig {
            inbound_per_minute: None,
            ..Default::default()
        },
    })
    .await?;
    let mut tries = 0;
    loop {
        match node.register(&name).await {
            Ok(_) => break,
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!("{name}: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(node)
}

/// One user's order, timed: (first reply, confirmation after the form).
async fn order(node: &Node, menu_seen: &AtomicUsize) -> Result<(Duration, Duration)> {
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
                menu_seen.fetch_add(1, Ordering::Relaxed);
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
fn count(node: &Node, needle: &str) -> usize {
    node.messages(Some("@napoli"), 500)
        .map(|l| l.iter().filter(|m| m.text.as_deref().is_some_and(|t| t.contains(needle))).count())
        .unwrap_or(0)
}

/// Runs the benchmark and prints its results as JSON.
pub(crate) fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(bench(opts))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn bench(opts: Options) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let base = dir.path();
    let boot_home = base.join("boot");
    Home::new(&boot_home).init("boot", kith_node::now_ms())?;
    let boot = Node::start(NodeConfig {
        home: boot_home,
        transport: TransportKind::Tcp,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: vec![],
        pow_bits: 8,
        mailbox: MailboxConfig::default(),
        media: kith_node::node::MediaConfig::default(),
        calls: kith_node::node::CallConfig::default(),
        accounts: kith_node::node::AccountsConfig {
            inbound_per_minute: None,
            ..Default::default()
        },
    })
    .await?;
    let mut boot_addr: Option<Multiaddr> = None;
    for _ in 0..200 {
        if let Some(a) = boot.status().await?.listen_addrs.first() {
            boot_addr = Some(format!("{a}/p2p/{}", boot.peer_id()).parse()?);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let boot_addr = boot_addr.context("the bootstrap node did not listen")?;

    let bot_home = base.join("napoli");
    let init = Command::new(&opts.kith)
        .arg("--home")
        .arg(&bot_home)
        .args(["init", "--label", "bot"])
        .output()?;
    if !init.status.success() {
        bail!("kith init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let mut bot =
        Some(BotProcess::start(&opts.kith, &bot_home, &boot_addr, &base.join("bot-1.log"))?);

    let setup = Instant::now();
    eprintln!("starting {} users ...", opts.users);
    let users: Vec<Node> = futures::stream::iter(0..opts.users)
        .map(|i| {
            let (base, boot) = (base.to_path_buf(), boot_addr.clone());
            async move { user_node(&base, i, &boot).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    // Everyone has found the bot's record before the rush (not timed).
    for u in &users {
        let mut tries = 0;
        while u.resolve_fresh("napoli").await.is_err() {
            tries += 1;
            if tries > 60 {
                bail!("a user cannot resolve the bot");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("{} users up in {setup_s:.0} s; ordering", users.len());

    let menu_seen = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for u in &users {
        let (u, seen) = (u.clone(), menu_seen.clone());
        tasks.push(tokio::spawn(async move { order(&u, &seen).await }));
    }
    let mut usage_before_kill = (0.0, f64::NAN);
    let mut killed_at = None;
    if opts.kill {
        while menu_seen.load(Ordering::Relaxed) < opts.users / 2
            && started.elapsed() < opts.deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(b) = bot.take() {
            usage_before_kill = b.usage();
            b.kill();
        }
        killed_at = Some(started.elapsed().as_secs_f64());
        eprintln!(
            "killed the bot (SIGKILL) after {:.1} s; restarting",
            started.elapsed().as_secs_f64()
        );
        bot = Some(BotProcess::start(&opts.kith, &bot_home, &boot_addr, &base.join("bot-2.log"))?);
    }
    let mut first = Vec::new();
    let mut confirmed = Vec::new();
    let mut failed = 0usize;
    for t in tasks {
        let left = opts.deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, t).await {
            Ok(Ok(Ok((a, b)))) => {
                first.push(a);
                confirmed.push(b);
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!("an order failed: {e}");
                failed += 1;
            }
            _ => failed += 1,
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    // Late duplicates would arrive after the confirmation: give them a moment.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let usage_after = bot.as_ref().map_or((0.0, f64::NAN), BotProcess::usage);
    let mut twice = 0usize;
    let mut lost = 0usize;
    for u in &users {
        let welcomes = count(u, "Welcome to Pizzeria Napoli");
        let orders = count(u, " received: ");
        if orders == 0 {
            lost += 1;
        }
        if welcomes > 1 || orders > 1 {
            twice += 1;
        }
    }
    if let Some(b) = bot.take() {
        b.stop();
    }
    for u in users {
        let _ = u.shutdown().await;
    }
    let _ = boot.shutdown().await;
    Ok(json!({
        "users": opts.users,
        "killed_and_restarted": opts.kill,
        "killed_at_s": killed_at,
        "setup_s": setup_s,
        "orders_completed": confirmed.len(),
        "orders_failed_or_late": failed,
        "users_without_a_confirmed_order": lost,
        "users_with_a_reply_twice": twice,
        "wall_s": total_s,
        "first_reply_ms": {"p50": percentile(first.clone(), 0.5), "p99": percentile(first, 0.99)},
        "form_to_confirmation_ms": {"p50": percentile(confirmed.clone(), 0.5), "p99": percentile(confirmed, 0.99)},
        "bot_cpu_s": usage_before_kill.0 + usage_after.0,
        "bot_peak_rss_mib": {"before_kill": usage_before_kill.1, "last_process": usage_after.1},
    }))
}
