//! `kith-sim run`: every node of a scenario in this process, real `kith-node` code over the
//! shaped in-memory network of `net`.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kith_node::home::Home;
use kith_node::mailbox::MailboxConfig;
use kith_node::{Multiaddr, Node, NodeConfig};
use libp2p::multiaddr::Protocol;
use libp2p::PeerId;
use tokio::time::Instant;

use crate::events::Event;
use crate::net::Net;
use crate::plan::{Action, Plan, Role};
use crate::results::{analyze, process_usage, RunInfo, LAG_PROBE_MS};
use crate::scenario::Scenario;
use crate::work::{self, Clock, Log};

/// Users started at once during setup.
const START_CONCURRENCY: usize = 16;
/// How long a node's leave waits for the user actions under way on it to return.
const LEAVE_WAIT: Duration = Duration::from_secs(30);

/// What `kith-sim run` was asked.
#[derive(Debug)]
pub(crate) struct RunOptions {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub check: bool,
    pub work_dir: Option<PathBuf>,
}

/// Runs a scenario; `Ok(false)` when `--check` found a failure.
pub(crate) fn run(opts: RunOptions) -> Result<bool> {
    let scenario = Scenario::load(&opts.scenario)?;
    let seed = opts.seed.unwrap_or(scenario.seed);
    let plan = Plan::new(&scenario, seed);
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sim-results/{}-seed{seed}", scenario.name)));
    let base = opts.work_dir.clone().unwrap_or_else(default_work_dir);
    let work = tempfile::Builder::new()
        .prefix("kith-sim-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a work directory in {}", base.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let analysis = rt.block_on(simulate(&scenario, &plan, work.path()))?;
    // Every node was shut down (its tasks ended with it); a proof of work still running on a
    // blocking thread is not waited for beyond this.
    rt.shutdown_timeout(Duration::from_secs(5));
    let files = analysis.write(&out).map_err(anyhow::Error::msg)?;
    std::fs::copy(&opts.scenario, out.join("scenario.toml"))
        .with_context(|| format!("cannot copy the scenario to {}", out.display()))?;
    print!("{}", analysis.table());
    println!("results in {} ({} files)", out.display(), files.len() + 2);
    if !opts.check {
        return Ok(true);
    }
    let failed = analysis.check();
    for f in &failed {
        eprintln!("check failed: {f}");
    }
    Ok(failed.is_empty())
}

/// Node homes go to memory when the machine has a tmpfs at `/dev/shm` (a thousand sled stores
/// fsyncing to disk would measure the disk, not Kith).
fn default_work_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_prefix(what.to_owned());
    if !std::io::stderr().is_terminal() {
        // No bar without a terminal: a line per phase instead, for logs of batch runs.
        eprintln!("kith-sim: {what}: 0/{len}");
    }
    b
}

/// Ends a phase's bar (and says so on a log).
fn done(b: &ProgressBar) {
    b.abandon();
    if !std::io::stderr().is_terminal() {
        eprintln!(
            "kith-sim: {}: {}/{} after {:.1} s",
            b.prefix(),
            b.position(),
            b.length().unwrap_or(0),
            b.elapsed().as_secs_f64()
        );
    }
}

struct Sim<'a> {
    scenario: &'a Scenario,
    plan: &'a Plan,
    net: Net,
    work: PathBuf,
    peers: Mutex<Vec<Option<PeerId>>>,
    nodes: Mutex<Vec<Option<Node>>>,
    /// DHT counters of node incarnations that have stopped.
    dht: Mutex<HashMap<usize, (u64, u64)>>,
    log: Arc<Log>,
    /// Per node: held (shared) by each user action under way on it, and (exclusively) by its
    /// leave, which so waits for the sends under way to return: a user leaves after their send
    /// returned, not in the middle of it (that made the node refuse the send because its network
    /// task was stopping, and the run count it as refused).
    busy: Vec<Arc<tokio::sync::RwLock<()>>>,
}

impl Sim<'_> {
    fn addr_of(&self, i: usize) -> Option<Multiaddr> {
        let peer = self.peers.lock().ok()?.get(i).copied().flatten()?;
        Some(self.net.addr(i).with(Protocol::P2p(peer)))
    }

    async fn start(&self, i: usize) -> Result<Node> {
        let p = &self.plan.nodes[i];
        let home = self.work.join(format!("n{i}"));
        let h = Home::new(&home);
        if !h.is_initialized() {
            h.init(&format!("sim-{i}"), kith_node::now_ms())
                .with_context(|| format!("node {i}: cannot create its home"))?;
        }
        let node = Node::start(NodeConfig {
            home,
            transport: self.net.transport(i),
            listen: vec![self.net.addr(i)],
            bootstrap: p.bootstrap.iter().filter_map(|&b| self.addr_of(b)).collect(),
            pow_bits: self.scenario.pow_bits,
            mailbox: MailboxConfig { enabled: p.role == Role::Mailbox, ..MailboxConfig::default() },
            media: kith_node::node::MediaConfig::default(),
            calls: kith_node::node::CallConfig::default(),
            // The simulator measures delivery, not the per-sender limit.
            accounts: kith_node::node::AccountsConfig {
                inbound_per_minute: None,
                ..Default::default()
            },
            limits: kith_node::network::Limits {
                dht_server: p.role != Role::User || self.scenario.users_serve_dht,
                ..Default::default()
            },
        })
        .await
        .with_context(|| format!("node {i} did not start"))?;
        if let Ok(mut peers) = self.peers.lock() {
            peers[i] = Some(node.peer_id());
        }
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes[i] = Some(node.clone());
        }
        Ok(node)
    }

    /// Starts a node that left again. A workload job that was using the old node (a send in
    /// progress) may hold its store for a moment after its shutdown: retry until it lets go.
    async fn restart(&self, i: usize) -> Result<Node> {
        let mut last = None;
        for _ in 0..50 {
            self.net.renew(i);
            match self.start(i).await {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("node {i} did not start")))
    }

    fn node(&self, i: usize) -> Option<Node> {
        self.nodes.lock().ok()?.get(i).cloned().flatten()
    }

    async fn stop(&self, i: usize) {
        if let Some(node) = self.take(i) {
            let _ = node.shutdown().await;
        }
    }

    /// Takes node `i` out of the run (it counts as down from now), adding its DHT counters so
    /// far to the node's; the caller shuts it down.
    fn take(&self, i: usize) -> Option<Node> {
        let node = self.nodes.lock().ok().and_then(|mut n| n.get_mut(i).and_then(Option::take))?;
        let c = node.network().counters();
        if let Ok(mut d) = self.dht.lock() {
            let e = d.entry(i).or_default();
            e.0 += c.dht_lookups.get();
            e.1 += c.dht_lookup_requests.get();
        }
        Some(node)
    }

    fn traffic_events(&self) -> Vec<Event> {
        (0..self.plan.nodes.len())
            .map(|i| {
                let (sent, received) = self.net.traffic(i);
                let mut dht =
                    self.dht.lock().ok().and_then(|d| d.get(&i).copied()).unwrap_or_default();
                if let Some(n) = self.node(i) {
                    let c = n.network().counters();
                    dht.0 += c.dht_lookups.get();
                    dht.1 += c.dht_lookup_requests.get();
                }
                Event::Traffic {
                    node: i,
                    sent,
                    received,
                    dht_lookups: dht.0,
                    dht_lookup_requests: dht.1,
                }
            })
            .collect()
    }
}

/// Peers each running node is connected to. Asked of many nodes at once: on a saturated
/// machine each answer waits for a core, and a thousand waits in a row took many minutes.
async fn connections(sim: &Sim<'_>) -> Vec<(usize, usize)> {
    futures::stream::iter(0..sim.plan.nodes.len())
        .map(|i| async move {
            let node = sim.node(i)?;
            node.status().await.ok().map(|s| (i, s.connected_peers))
        })
        .buffer_unordered(64)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

async fn wait_connected(node: &Node) {
    for _ in 0..200 {
        if node.status().await.map(|s| s.connected_peers > 0).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn simulate(
    scenario: &Scenario,
    plan: &Plan,
    work: &Path,
) -> Result<crate::results::Analysis> {
    let started = Instant::now();
    let total = plan.nodes.len();
    let sim = Sim {
        scenario,
        plan,
        net: Net::new(scenario, plan),
        work: work.to_path_buf(),
        peers: Mutex::new(vec![None; total]),
        nodes: Mutex::new(vec![None; total]),
        dht: Mutex::new(HashMap::new()),
        log: Arc::new(Log::memory()),
        busy: (0..total).map(|_| Arc::default()).collect(),
    };
    let setup_clock = Clock(started);
    // Infrastructure first: bootstrap nodes (each dials the first), then mailbox nodes.
    let pb = bar(total as u64, "nodes");
    for role in [Role::Bootstrap, Role::Mailbox] {
        for n in plan.nodes.iter().filter(|n| n.role == role) {
            sim.start(n.index).await?;
            pb.inc(1);
        }
    }
    let users: Vec<usize> =
        plan.nodes.iter().filter(|n| n.role == Role::User).map(|n| n.index).collect();
    let sim_ref = &sim;
    let mut starts = futures::stream::iter(users.iter().copied())
        .map(|i| async move {
            let node = sim_ref.start(i).await?;
            wait_connected(&node).await;
            let mailbox =
                plan.nodes[i].mailbox.and_then(|m| sim_ref.addr_of(m)).map(|a| a.to_string());
            work::register(&node, plan, i, mailbox, setup_clock, &sim_ref.log).await;
            anyhow::Ok(())
        })
        .buffer_unordered(START_CONCURRENCY);
    let mut started_users = 0;
    while let Some(r) = starts.next().await {
        r?;
        pb.inc(1);
        started_users += 1;
        if !std::io::stderr().is_terminal() && started_users % (users.len() / 10).max(1) == 0 {
            let c = connections(&sim).await;
            let mean = c.iter().map(|x| x.1).sum::<usize>() as f64 / c.len().max(1) as f64;
            eprintln!(
                "kith-sim: {started_users}/{} users up after {:.0} s, {mean:.0} connections per node",
                users.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(starts);
    done(&pb);
    // Groups, each formed by its creator mentioning the others.
    let mut groups: Vec<Option<String>> = Vec::new();
    let gb = bar(plan.groups.len() as u64, "groups");
    for (g, group) in plan.groups.iter().enumerate() {
        let t = Instant::now();
        let formed = match sim.node(group.creator) {
            Some(creator) => work::form_group(&creator, plan, g).await,
            None => Err("creator not running".to_owned()),
        };
        // The members' time to receive the group's state counts from when the creator's send
        // returned: resolving hundreds of mentioned names can take longer than the deadline.
        let t_sent = Instant::now();
        if !std::io::stderr().is_terminal() {
            eprintln!(
                "kith-sim: group {g}: the creator's send returned after {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
        let deadline = t_sent
            + Duration::from_secs(60)
            + Duration::from_millis(200 * group.members.len() as u64);
        let ok = match &formed {
            Ok(conv) => {
                // Members whose names did not resolve are not in the group: wait for those the
                // creator's group holds, and report the others.
                let planned = group.members.len();
                let want = sim
                    .node(group.creator)
                    .and_then(|c| c.members(conv).ok())
                    .map_or(planned, |m| m.len().min(planned));
                if want < planned {
                    sim.log.push(Event::Error {
                        t: setup_clock.now(),
                        node: group.creator,
                        what: format!(
                            "group {g}: formed with {want} of {planned} members (the other names \
                             did not resolve); the workload uses it as it is"
                        ),
                    });
                }
                // Each member is asked until it knows the group, not again after: reading a
                // 1,000-member state from every node five times a second was most of the
                // machine's work while a large group formed.
                let mut known = vec![false; group.members.len()];
                let mut reported = 0;
                loop {
                    for (k, &m) in known.iter_mut().zip(&group.members) {
                        if !*k {
                            *k = sim.node(m).is_some_and(|n| work::knows_group(&n, conv, want));
                        }
                    }
                    let joined = known.iter().filter(|&&k| k).count();
                    // Without a terminal, a line per tenth of the members: how the state spreads.
                    let step = (want / 10).max(1);
                    if !std::io::stderr().is_terminal() && joined / step > reported / step {
                        reported = joined;
                        eprintln!(
                            "kith-sim: group {g}: {joined}/{want} members know it {:.0} s after \
                             the creator's send returned",
                            t_sent.elapsed().as_secs_f64()
                        );
                    }
                    gb.set_message(format!(
                        "group {g}: {} members still joining",
                        want.saturating_sub(joined)
                    ));
                    if joined >= want {
                        break want == planned;
                    }
                    if Instant::now() > deadline {
                        sim.log.push(Event::Error {
                            t: setup_clock.now(),
                            node: group.creator,
                            what: format!(
                                "group {g}: {} of its {want} members had not joined after {:?}",
                                want - joined,
                                t.elapsed()
                            ),
                        });
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Err(e) => {
                sim.log.push(Event::Error {
                    t: setup_clock.now(),
                    node: group.creator,
                    what: format!("group {g} not formed: {e}"),
                });
                false
            }
        };
        sim.log.push(Event::GroupFormed {
            t: setup_clock.now(),
            group: g,
            ok,
            ms: t.elapsed().as_secs_f64() * 1e3,
        });
        // A group that formed only in part still carries the workload's messages: deliveries
        // to the members it lacks count as lost.
        groups.push(formed.ok());
        gb.inc(1);
    }
    done(&gb);
    let setup_secs = started.elapsed().as_secs_f64();
    let setup_traffic: HashMap<usize, u64> =
        (0..total).map(|i| (i, sim.net.traffic(i).0)).collect();

    // The workload.
    let clock = Clock(Instant::now());
    // How late timers fire from here to the end of the drain: the measure of how busy the
    // machine's cores are while the latencies are being measured.
    let lag: Arc<Mutex<Vec<f64>>> = Arc::default();
    let probe = tokio::spawn({
        let lag = lag.clone();
        async move {
            let period = Duration::from_millis(LAG_PROBE_MS);
            loop {
                let due = Instant::now() + period;
                tokio::time::sleep_until(due).await;
                let late = Instant::now().saturating_duration_since(due).as_secs_f64() * 1e3;
                if let Ok(mut v) = lag.lock() {
                    v.push(late);
                }
            }
        }
    });
    for &i in &users {
        if let Some(n) = sim.node(i) {
            work::watch(&n, i, clock, sim.log.clone());
        }
    }
    let duration = scenario.workload.duration_secs;
    let wb = bar(duration, "workload");
    let groups = Arc::new(groups);
    let mut running = Vec::new();
    let mut leaving: HashMap<usize, tokio::task::JoinHandle<()>> = HashMap::new();
    for (at, action) in &plan.actions {
        let due = clock.0 + Duration::from_millis(*at);
        tokio::time::sleep_until(due).await;
        wb.set_position((at / 1000).min(duration));
        match action {
            Action::Leave { node } => {
                // Down for the workload at once; shut down once the sends under way on it have
                // returned (at most LEAVE_WAIT later).
                sim.log.push(Event::Down { t: clock.now(), node: *node });
                if let Some(n) = sim.take(*node) {
                    let busy = sim.busy[*node].clone();
                    leaving.insert(
                        *node,
                        tokio::spawn(async move {
                            let _quiet = tokio::time::timeout(LEAVE_WAIT, busy.write()).await;
                            let _ = n.shutdown().await;
                        }),
                    );
                }
            }
            Action::Return { node } => match async {
                if let Some(left) = leaving.remove(node) {
                    let _ = left.await;
                }
                sim.restart(*node).await
            }
            .await
            {
                Ok(n) => {
                    work::watch(&n, *node, clock, sim.log.clone());
                    sim.log.push(Event::Up { t: clock.now(), node: *node });
                }
                Err(e) => sim.log.push(Event::Error {
                    t: clock.now(),
                    node: *node,
                    what: format!("did not come back: {e:#}"),
                }),
            },
            Action::PartitionOpen { partition } => sim.net.set_partition(*partition, true),
            Action::PartitionHeal { partition } => sim.net.set_partition(*partition, false),
            Action::Lookup { from, .. }
            | Action::Direct { from, .. }
            | Action::Group { from, .. } => {
                let Some(node) = sim.node(*from) else {
                    sim.log.push(Event::Error {
                        t: clock.now(),
                        node: *from,
                        what: format!("not running for {action:?}"),
                    });
                    continue;
                };
                let (action, log, groups) = (action.clone(), sim.log.clone(), groups.clone());
                let (scenario, plan) = (scenario.clone(), plan.clone());
                let Ok(busy) = sim.busy[*from].clone().try_read_owned() else {
                    sim.log.push(Event::Error {
                        t: clock.now(),
                        node: *from,
                        what: format!("leaving, not running {action:?}"),
                    });
                    continue;
                };
                running.push(tokio::spawn(async move {
                    let _busy = busy;
                    work::perform(&node, &action, &scenario, &plan, &groups, clock, &log).await;
                }));
            }
        }
    }
    tokio::time::sleep_until(clock.0 + Duration::from_secs(duration)).await;
    done(&wb);
    let workload_secs = clock.0.elapsed().as_secs_f64();

    // Drain: wait for the last deliveries.
    let drain_start = Instant::now();
    let expected = plan.expected();
    let want: usize = expected.values().map(|e| e.recipients.len()).sum();
    let db = bar(want as u64, "delivered");
    let mut got: HashSet<(u64, usize)> = HashSet::new();
    let mut seen_events = 0;
    loop {
        if let Log::Memory(v) = &*sim.log {
            if let Ok(v) = v.lock() {
                for e in &v[seen_events..] {
                    if let Event::Received { id, node, .. } = e {
                        if expected.get(id).is_some_and(|x| x.recipients.contains(node)) {
                            got.insert((*id, *node));
                        }
                    }
                }
                seen_events = v.len();
            }
        }
        db.set_position(got.len() as u64);
        if got.len() >= want || drain_start.elapsed() > Duration::from_secs(scenario.drain_secs) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done(&db);
    let drain_secs = drain_start.elapsed().as_secs_f64();
    probe.abort();
    let lag_samples: Vec<f64> = lag.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    for t in running {
        t.abort();
    }
    for (_, left) in leaving {
        let _ = left.await;
    }
    for (i, peers) in connections(&sim).await {
        sim.log.push(Event::Connections { t: clock.now(), node: i, peers });
    }
    for &i in &users {
        let groups = sim.node(i).and_then(|n| n.conversations().ok()).unwrap_or_default();
        let messages = groups.iter().filter_map(|c| c.missing).sum();
        if messages > 0 {
            sim.log.push(Event::Missing { t: clock.now(), node: i, messages });
        }
    }
    for e in sim.traffic_events() {
        sim.log.push(e);
    }
    let (cpu_secs, peak_rss_mib) = process_usage();
    let sb = bar(total as u64, "stopping");
    let stops = futures::stream::iter(0..total).map(|i| {
        let sim = &sim;
        async move { sim.stop(i).await }
    });
    let mut stops = stops.buffer_unordered(32);
    while stops.next().await.is_some() {
        sb.inc(1);
    }
    drop(stops);
    sb.finish_and_clear();
    let mut run = RunInfo {
        mode: "in-process".into(),
        wall_secs: started.elapsed().as_secs_f64(),
        setup_secs,
        workload_secs,
        drain_secs,
        cpu_secs,
        peak_rss_mib,
        rss_per_node_kib: peak_rss_mib.map(|m| m * 1024.0 / total as f64),
        timer_lag_ms: None,
        cpu_bound: false,
    };
    run.set_timer_lag(lag_samples);
    let events = sim.log.take();
    let mut analysis = analyze(scenario, plan, &events, &setup_traffic, run);
    analysis.events = events;
    Ok(analysis)
}
