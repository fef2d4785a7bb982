//! `kith-sim node`: one node of a scenario as its own process, a real `kith_node::Node` over
//! real TCP, for Shadow (`kith-sim shadow`) or for a run of many processes on one machine
//! (`--local-base-port`). It computes the plan from the scenario and seed like every other
//! process, performs its own part of the workload at the planned times, and logs its events
//! as JSON lines for `kith-sim report`.
//!
//! Every node's keys derive from (seed, index), so any process knows any peer's id in advance.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use futures::{AsyncRead, AsyncWrite};
use kith_node::home::Home;
use kith_node::mailbox::MailboxConfig;
use kith_node::network::TransportKind;
use kith_node::{Multiaddr, Node, NodeConfig};
use kith_protocol::{DeviceCertificate, DeviceKeypair, IdentityKeypair, X25519Secret};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::{upgrade::Version, Transport as _};
use libp2p::multiaddr::Protocol;
use libp2p::{noise, tcp, yamux, PeerId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::events::Event;
use crate::plan::{Action, Plan, Role};
use crate::scenario::Scenario;
use crate::shadow::{host_ip, SHADOW_PORT};
use crate::work::{self, Clock, Log};

/// Time after the drain by which the process must have exited.
const HARD_DEADLINE_AFTER_DRAIN: Duration = Duration::from_secs(20);
/// Longest a node waits for its first connection before registering anyway.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// What `kith-sim node` was asked.
#[derive(Debug)]
pub(crate) struct NodeOptions {
    pub scenario: PathBuf,
    pub seed: u64,
    pub index: usize,
    pub start_at: u64,
    pub log: PathBuf,
    pub work_dir: PathBuf,
    pub local_base_port: Option<u16>,
    pub group_lead_secs: u64,
}

/// Runs one node of the scenario until the end of the drain.
pub(crate) fn run(opts: NodeOptions) -> Result<()> {
    let scenario = Scenario::load(&opts.scenario)?;
    let plan = Plan::new(&scenario, opts.seed);
    if opts.index >= plan.nodes.len() {
        bail!(
            "--index {} is out of range: the scenario has {} nodes",
            opts.index,
            plan.nodes.len()
        );
    }
    if let Some(p) = opts.local_base_port {
        if u32::from(p) + plan.nodes.len() as u32 > u32::from(u16::MAX) {
            bail!("--local-base-port {p} leaves no room for {} nodes", plan.nodes.len());
        }
    }
    if let Some(dir) = opts.log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::File::create(&opts.log)
        .with_context(|| format!("cannot create the log {}", opts.log.display()))?;
    let log = Arc::new(Log::File(Mutex::new(io::BufWriter::new(file))));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = rt.block_on(async {
        let start = instant_of(opts.start_at)?;
        let end = start
            + Duration::from_secs(scenario.workload.duration_secs)
            + Duration::from_secs(scenario.drain_secs);
        let hard = end + HARD_DEADLINE_AFTER_DRAIN;
        match tokio::time::timeout_at(hard, node_main(&opts, &scenario, &plan, start, log.clone()))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                log.push(Event::Error {
                    t: Clock(start).now(),
                    node: opts.index,
                    what: "hard deadline reached; exiting".into(),
                });
                bail!("node {}: still running at its hard deadline; gave up", opts.index)
            }
        }
    });
    if let Err(e) = &result {
        log.push(Event::Error { t: 0, node: opts.index, what: format!("{e:#}") });
    }
    // The node's own tasks ended with its shutdown; a proof of work still running on a
    // blocking thread is not waited for beyond this.
    rt.shutdown_timeout(Duration::from_secs(3));
    result
}

/// The tokio instant of a unix time in ms (by this process's wall clock, which is Shadow's
/// simulated clock under Shadow).
fn instant_of(unix_ms: u64) -> Result<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .context("the clock is before 1970")?;
    let now = Instant::now();
    if unix_ms >= now_ms {
        let ahead = unix_ms - now_ms;
        if ahead > 24 * 3600 * 1000 {
            bail!("--start-at {unix_ms} is more than a day ahead of the clock ({now_ms})");
        }
        Ok(now + Duration::from_millis(ahead))
    } else {
        now.checked_sub(Duration::from_millis(now_ms - unix_ms))
            .with_context(|| format!("--start-at {unix_ms} is too far in the past ({now_ms})"))
    }
}

/// The keys of node `index` under `seed`: the same in every process.
fn keys(seed: u64, index: usize) -> (IdentityKeypair, DeviceKeypair, X25519Secret) {
    // A stream of its own per node, apart from the plan's (stream 0 of the bare seed).
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_7468_6b65_7973);
    rng.set_stream(1 + index as u64);
    let identity = IdentityKeypair::generate(&mut rng);
    let device = DeviceKeypair::generate(&mut rng);
    let static_key = X25519Secret::generate(&mut rng);
    (identity, device, static_key)
}

/// The peer id of node `index` under `seed`.
pub(crate) fn peer_id(seed: u64, index: usize) -> PeerId {
    keys(seed, index).1.peer_id()
}

/// Creates node `index`'s home with its derived keys, or checks that an existing one holds
/// them.
fn ensure_home(dir: &Path, seed: u64, index: usize) -> Result<()> {
    let home = Home::new(dir);
    let want = peer_id(seed, index);
    if home.is_initialized() {
        let k = home.load_keys().with_context(|| format!("cannot load {}", dir.display()))?;
        if k.device.peer_id() != want {
            bail!("{} holds another node's keys (from another seed?); remove it", dir.display());
        }
        return Ok(());
    }
    let (identity, device, static_key) = keys(seed, index);
    let cert = DeviceCertificate::issue(
        &identity,
        &device,
        &static_key,
        kith_node::now_ms(),
        &format!("sim-{index}"),
    );
    home.write_device(Some(&identity), &identity.public(), &device, &static_key, &cert)
        .with_context(|| format!("cannot create the home {}", dir.display()))?;
    Ok(())
}

/// Where nodes listen: each host's own address under Shadow, or loopback ports.
#[derive(Clone, Copy, Debug)]
struct Addrs {
    seed: u64,
    local_base_port: Option<u16>,
}

impl Addrs {
    fn listen(&self, i: usize) -> Multiaddr {
        match self.local_base_port {
            Some(p) => Multiaddr::empty()
                .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
                .with(Protocol::Tcp(p.saturating_add(i as u16))),
            // The host's own address rather than 0.0.0.0: no interface watching needed.
            None => {
                Multiaddr::empty().with(Protocol::Ip4(host_ip(i))).with(Protocol::Tcp(SHADOW_PORT))
            }
        }
    }

    fn peer(&self, i: usize) -> Multiaddr {
        self.listen(i).with(Protocol::P2p(peer_id(self.seed, i)))
    }
}

/// Bytes this process's connections carried, over every incarnation of its node.
#[derive(Debug, Default)]
struct Bytes {
    sent: AtomicU64,
    received: AtomicU64,
}

/// TCP + Noise + Yamux like the daemon's, with the raw TCP bytes counted.
fn counting_tcp(bytes: Arc<Bytes>) -> TransportKind {
    TransportKind::Custom(Arc::new(move |key| {
        let bytes = bytes.clone();
        let t = NewPorts(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)))
            .map(move |stream, _| Counted { inner: stream, bytes: bytes.clone() })
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed();
        Ok(t)
    }))
}

/// A transport that dials from a new local port every time. libp2p-tcp's default binds each
/// dial socket to the listen port with `SO_REUSEPORT`, which Shadow does not support: every
/// such bind fails there with `EADDRINUSE` and no connection is ever made. (A NAT-traversal
/// concern only, which the simulator does not model.)
struct NewPorts<T>(T);

impl<T: libp2p::core::Transport + Unpin> libp2p::core::Transport for NewPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: libp2p::core::transport::ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::core::transport::TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: libp2p::core::transport::ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        mut opts: libp2p::core::transport::DialOpts,
    ) -> Result<Self::Dial, libp2p::core::transport::TransportError<Self::Error>> {
        opts.port_use = libp2p::core::transport::PortUse::New;
        self.0.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<libp2p::core::transport::TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

struct Counted {
    inner: tcp::tokio::TcpStream,
    bytes: Arc<Bytes>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.bytes.received.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.bytes.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// The running node and what outlives its incarnations.
struct Me<'a> {
    index: usize,
    scenario: &'a Scenario,
    plan: &'a Plan,
    addrs: Addrs,
    home: PathBuf,
    bytes: Arc<Bytes>,
    /// DHT counters of incarnations that have stopped.
    dht: (u64, u64),
}

impl Me<'_> {
    async fn start(&self) -> Result<Node> {
        let p = &self.plan.nodes[self.index];
        Node::start(NodeConfig {
            home: self.home.clone(),
            transport: counting_tcp(self.bytes.clone()),
            listen: vec![self.addrs.listen(self.index)],
            bootstrap: p.bootstrap.iter().map(|&b| self.addrs.peer(b)).collect(),
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
        .with_context(|| format!("node {} did not start", self.index))
    }

    async fn stop(&mut self, node: Node) {
        let c = node.network().counters();
        self.dht.0 += c.dht_lookups.get();
        self.dht.1 += c.dht_lookup_requests.get();
        let _ = node.shutdown().await;
    }

    fn traffic(&self, node: Option<&Node>) -> Event {
        let mut dht = self.dht;
        if let Some(n) = node {
            let c = n.network().counters();
            dht.0 += c.dht_lookups.get();
            dht.1 += c.dht_lookup_requests.get();
        }
        Event::Traffic {
            node: self.index,
            sent: self.bytes.sent.load(Ordering::Relaxed),
            received: self.bytes.received.load(Ordering::Relaxed),
            dht_lookups: dht.0,
            dht_lookup_requests: dht.1,
        }
    }
}

async fn wait_connected(node: &Node) {
    let until = Instant::now() + CONNECT_WAIT;
    while Instant::now() < until {
        if node.status().await.map(|s| s.connected_peers > 0).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The groups this node belongs to, by plan index: their conversations (`#id`) once known.
type Groups = Arc<Mutex<Vec<Option<String>>>>;

async fn node_main(
    opts: &NodeOptions,
    scenario: &Scenario,
    plan: &Plan,
    start: Instant,
    log: Arc<Log>,
) -> Result<()> {
    let i = opts.index;
    let clock = Clock(start);
    let duration = Duration::from_secs(scenario.workload.duration_secs);
    let end = start + duration + Duration::from_secs(scenario.drain_secs);
    let home = opts.work_dir.join(format!("n{i}"));
    ensure_home(&home, opts.seed, i)?;
    let mut me = Me {
        index: i,
        scenario,
        plan,
        addrs: Addrs { seed: opts.seed, local_base_port: opts.local_base_port },
        home,
        bytes: Arc::new(Bytes::default()),
        dht: (0, 0),
    };
    let p = &plan.nodes[i];
    let mut node = Some(me.start().await?);
    let groups: Groups = Arc::new(Mutex::new(vec![None; plan.groups.len()]));
    let mut tasks = Vec::new();
    if let (Role::User, Some(n)) = (p.role, node.clone()) {
        work::watch(&n, i, clock, log.clone());
        wait_connected(&n).await;
        let mailbox = p.mailbox.map(|m| me.addrs.peer(m).to_string());
        work::register(&n, plan, i, mailbox, clock, &log).await;
        let formed_at =
            start.checked_sub(Duration::from_secs(opts.group_lead_secs)).unwrap_or(start);
        for (g, group) in plan.groups.iter().enumerate() {
            if group.creator == i {
                let (n, log, plan) = (n.clone(), log.clone(), plan.clone());
                tasks.push(tokio::spawn(async move {
                    create_group(&n, &plan, g, formed_at, start, clock, &log).await;
                }));
            }
            if group.members.contains(&i) {
                let (n, log, plan, groups) = (n.clone(), log.clone(), plan.clone(), groups.clone());
                let until = start + duration;
                tasks.push(tokio::spawn(async move {
                    find_group(&n, &plan, g, i, formed_at, until, clock, &log, &groups).await;
                }));
            }
        }
    }

    // The workload: this node's own actions.
    tokio::time::sleep_until(start).await;
    log.push(me.traffic(node.as_ref()));
    for (at, action) in &plan.actions {
        let mine = match action {
            Action::Lookup { from, .. }
            | Action::Direct { from, .. }
            | Action::Group { from, .. } => *from == i,
            Action::Leave { node } | Action::Return { node } => *node == i,
            Action::PartitionOpen { .. } | Action::PartitionHeal { .. } => false,
        };
        if !mine {
            continue;
        }
        tokio::time::sleep_until(start + Duration::from_millis(*at)).await;
        match action {
            Action::Leave { .. } => {
                log.push(Event::Down { t: clock.now(), node: i });
                if let Some(n) = node.take() {
                    me.stop(n).await;
                }
            }
            Action::Return { .. } => {
                if node.is_none() {
                    let n = me.start().await?;
                    work::watch(&n, i, clock, log.clone());
                    node = Some(n);
                }
                log.push(Event::Up { t: clock.now(), node: i });
            }
            _ => {
                let Some(n) = node.clone() else {
                    log.push(Event::Error {
                        t: clock.now(),
                        node: i,
                        what: format!("not running for {action:?}"),
                    });
                    continue;
                };
                let snapshot: Vec<Option<String>> =
                    groups.lock().map(|g| g.clone()).unwrap_or_default();
                let (action, log, scenario, plan) =
                    (action.clone(), log.clone(), scenario.clone(), plan.clone());
                tasks.push(tokio::spawn(async move {
                    work::perform(&n, &action, &scenario, &plan, &snapshot, clock, &log).await;
                }));
            }
        }
    }

    // The drain: every process waits the whole of it (none can tell when all is delivered).
    tokio::time::sleep_until(end).await;
    for t in &tasks {
        t.abort();
    }
    log.push(me.traffic(node.as_ref()));
    if let Some(n) = node.take() {
        me.stop(n).await;
    }
    Ok(())
}

/// Forms group `g` at `formed_at`, once every member's name resolves (a mention that does not
/// resolve would leave that member out).
async fn create_group(
    node: &Node,
    plan: &Plan,
    g: usize,
    formed_at: Instant,
    start: Instant,
    clock: Clock,
    log: &Log,
) {
    tokio::time::sleep_until(formed_at).await;
    let Some(group) = plan.groups.get(g) else { return };
    let mut last = String::new();
    for &m in &group.members {
        if m == group.creator {
            continue;
        }
        loop {
            match node.resolve_fresh(&work::at_name(plan, m)).await {
                Ok(_) => break,
                Err(e) if Instant::now() < start => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    log.push(Event::Error {
                        t: clock.now(),
                        node: group.creator,
                        what: format!("group {g}: member {m} does not resolve: {e}"),
                    });
                    break;
                }
            }
        }
    }
    loop {
        match work::form_group(node, plan, g).await {
            Ok(_) => return,
            Err(e) if Instant::now() < start => {
                last = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                log.push(Event::Error {
                    t: clock.now(),
                    node: group.creator,
                    what: format!("group {g} not formed: {e} ({last})"),
                });
                return;
            }
        }
    }
}

/// Waits until this member knows group `g` with all its members, records its conversation,
/// and logs a `GroupFormed` of its own view (`kith-sim report` merges the members' views).
#[allow(clippy::too_many_arguments)]
async fn find_group(
    node: &Node,
    plan: &Plan,
    g: usize,
    me: usize,
    formed_at: Instant,
    until: Instant,
    clock: Clock,
    log: &Log,
    groups: &Groups,
) {
    tokio::time::sleep_until(formed_at).await;
    let Some(group) = plan.groups.get(g) else { return };
    let names: Vec<String> = group
        .members
        .iter()
        .map(|&m| work::at_name(plan, m).trim_start_matches('@').to_owned())
        .collect();
    let marker = format!("group {g}:");
    loop {
        if let Some(conv) = conversation_of_group(node, &names, &marker) {
            if work::knows_group(node, &conv, group.members.len()) {
                let ms = formed_at.elapsed().as_secs_f64() * 1e3;
                let t = clock.now();
                if let Ok(mut gs) = groups.lock() {
                    if let Some(slot) = gs.get_mut(g) {
                        *slot = Some(conv);
                    }
                }
                log.push(Event::GroupFormed { t, group: g, ok: t <= 0, ms });
                return;
            }
        }
        if Instant::now() >= until {
            log.push(Event::GroupFormed {
                t: clock.now(),
                group: g,
                ok: false,
                ms: formed_at.elapsed().as_secs_f64() * 1e3,
            });
            log.push(Event::Error {
                t: clock.now(),
                node: me,
                what: format!("group {g}: not joined by the end of the workload"),
            });
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The group conversation with exactly these members, told apart from another group of the
/// same members by its first message (`group {g}: ...`).
fn conversation_of_group(node: &Node, names: &[String], marker: &str) -> Option<String> {
    let convs = node.conversations().ok()?;
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort_unstable();
    let candidates: Vec<String> = convs
        .into_iter()
        .filter(|c| c.kind == "group" && c.active)
        .filter(|c| {
            let mut have: Vec<&str> = c.members.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == want
        })
        .map(|c| format!("#{}", c.id))
        .collect();
    let marked = candidates.iter().find(|c| {
        node.messages(Some(c), 50)
            .map(|ms| ms.iter().any(|m| m.text.as_deref().is_some_and(|t| t.starts_with(marker))))
            .unwrap_or(false)
    });
    match (marked, candidates.as_slice()) {
        (Some(c), _) => Some(c.clone()),
        (None, [one]) => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_a_function_of_seed_and_index() {
        assert_eq!(peer_id(1, 3), peer_id(1, 3));
        assert_ne!(peer_id(1, 3), peer_id(1, 4));
        assert_ne!(peer_id(1, 3), peer_id(2, 3));
    }

    #[test]
    fn a_home_with_the_derived_keys_is_reused_and_another_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("n2");
        ensure_home(&h, 5, 2).unwrap();
        ensure_home(&h, 5, 2).unwrap();
        assert_eq!(Home::new(&h).load_keys().unwrap().device.peer_id(), peer_id(5, 2));
        let e = ensure_home(&h, 6, 2).unwrap_err();
        assert!(e.to_string().contains("another node's keys"), "{e}");
    }
}
