//! The simulated network: libp2p's in-process memory transport with every connection shaped by
//! the scenario's link model, under the real Noise and Yamux upgrades.
//!
//! The dialing side of each connection runs it through two pumps, one per direction, which
//! hold each chunk of bytes until it is due: the time to send it at the link's bandwidth
//! (queued behind earlier chunks), plus a latency drawn from the region pair's distribution,
//! plus a retransmission timeout (200 ms + the round trip) for every 1460-byte segment drawn
//! as lost. Chunks stay in order, as over TCP. While a partition separates two nodes, dials
//! between them fail and a connection that carries data across it is reset. Bytes are counted
//! per node in both directions.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use kith_node::network::TransportKind;
use kith_node::Multiaddr;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::memory::Channel;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::{upgrade::Version, ConnectedPoint, Transport as _};
use libp2p::multiaddr::Protocol;
use libp2p::{noise, yamux};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::plan::Plan;
use crate::scenario::{LinkShape, Scenario};

/// Size of one simulated TCP segment, for losses.
const SEGMENT: usize = 1460;
/// Largest chunk a pump moves at once.
const CHUNK: usize = 8 * 1024;
/// Chunks in flight per direction of a connection before the sender waits.
const IN_FLIGHT: usize = 256;
/// Memory-transport ports are `base + generation * nodes + node`; every network in the process
/// gets its own base. A node that comes back listens on a new port (its generation grows):
/// libp2p's memory transport never releases a port whose listener was dropped with its swarm.
static NEXT_BASE: AtomicU64 = AtomicU64::new(1 << 40);
/// Restarts of one node a network has room for.
const GENERATIONS: u64 = 1 << 12;

struct State {
    base: u64,
    seed: u64,
    region: Vec<usize>,
    /// `shapes[a][b]`: the link between regions a and b.
    shapes: Vec<Vec<LinkShape>>,
    sent: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    plan_partitions: Vec<Vec<usize>>,
    open: RwLock<Vec<usize>>,
    generation: Vec<AtomicU64>,
    connections: AtomicU64,
}

impl State {
    fn blocked(&self, a: usize, b: usize) -> bool {
        let open = self.open.read().map(|o| o.clone()).unwrap_or_default();
        open.iter().any(|&p| {
            self.plan_partitions.get(p).is_some_and(|side| {
                side.binary_search(&a).is_ok() != side.binary_search(&b).is_ok()
            })
        })
    }

    fn shape(&self, a: usize, b: usize) -> LinkShape {
        let (ra, rb) = (self.region[a], self.region[b]);
        self.shapes[ra][rb].clone()
    }
}

/// The shaped network of one simulation. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Net {
    state: Arc<State>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("nodes", &self.state.region.len()).finish()
    }
}

impl Net {
    pub fn new(scenario: &Scenario, plan: &Plan) -> Net {
        let n = plan.nodes.len() as u64;
        let base = NEXT_BASE.fetch_add((n + 1) * GENERATIONS, Ordering::Relaxed);
        let regions = scenario.regions.len();
        let shapes =
            (0..regions).map(|a| (0..regions).map(|b| scenario.shape(a, b)).collect()).collect();
        Net {
            state: Arc::new(State {
                base,
                seed: plan.seed,
                region: plan.nodes.iter().map(|x| x.region).collect(),
                shapes,
                sent: plan.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
                received: plan.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
                plan_partitions: plan.partitions.clone(),
                open: RwLock::new(Vec::new()),
                generation: plan.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
                connections: AtomicU64::new(0),
            }),
        }
    }

    /// The address node `i` listens on.
    pub fn addr(&self, i: usize) -> Multiaddr {
        let g = self.state.generation.get(i).map(|g| g.load(Ordering::Relaxed)).unwrap_or(0);
        let n = self.state.region.len() as u64;
        Multiaddr::empty().with(Protocol::Memory(self.state.base + g * n + i as u64))
    }

    /// Moves node `i` to a new address, for its next start.
    pub fn renew(&self, i: usize) {
        if let Some(g) = self.state.generation.get(i) {
            if g.load(Ordering::Relaxed) + 1 < GENERATIONS {
                g.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn node_of(&self, addr: &Multiaddr) -> Option<usize> {
        let n = self.state.region.len() as u64;
        addr.iter().find_map(|p| match p {
            Protocol::Memory(port) => port
                .checked_sub(self.state.base)
                .filter(|off| *off < n * GENERATIONS)
                .map(|off| (off % n) as usize),
            _ => None,
        })
    }

    /// Opens (`true`) or heals a partition of the plan.
    pub fn set_partition(&self, k: usize, open: bool) {
        if let Ok(mut o) = self.state.open.write() {
            o.retain(|&p| p != k);
            if open {
                o.push(k);
            }
        }
    }

    /// Bytes node `i` has sent and received.
    pub fn traffic(&self, i: usize) -> (u64, u64) {
        let get = |v: &Vec<AtomicU64>| v.get(i).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
        (get(&self.state.sent), get(&self.state.received))
    }

    /// The transport of node `me`.
    pub fn transport(&self, me: usize) -> TransportKind {
        let net = self.clone();
        TransportKind::Custom(Arc::new(move |key| {
            let net = net.clone();
            let t = MemoryTransport::default()
                .and_then(move |chan, endpoint| {
                    let net = net.clone();
                    async move { net.wrap(me, chan, &endpoint) }
                })
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed();
            Ok(t)
        }))
    }

    fn wrap(&self, me: usize, chan: Channel<Vec<u8>>, at: &ConnectedPoint) -> io::Result<Conn> {
        let ConnectedPoint::Dialer { address, .. } = at else {
            return Ok(Conn::Raw(chan));
        };
        let Some(peer) = self.node_of(address) else {
            return Ok(Conn::Raw(chan));
        };
        if self.state.blocked(me, peer) {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "partitioned"));
        }
        let k = self.state.connections.fetch_add(1, Ordering::Relaxed);
        let rng = |dir: u64| {
            ChaCha8Rng::seed_from_u64(
                self.state.seed ^ (k << 20) ^ ((me as u64) << 1) ^ ((peer as u64) << 32) ^ dir,
            )
        };
        // The pipe only hands bytes to the pumps (the delays are in their queues), so one
        // chunk of room is enough; its buffers stay allocated for the connection's life.
        let (app, pump) = tokio::io::duplex(CHUNK);
        let (app_rd, app_wr) = tokio::io::split(pump);
        let (net_rd, net_wr) = tokio::io::split(chan.compat());
        let st = self.state.clone();
        let out = direction(app_rd, net_wr, st.clone(), me, peer, rng(0));
        let back = direction(net_rd, app_wr, st, peer, me, rng(1));
        tokio::spawn(async move {
            // Either direction ending (closed, reset, or cut by a partition) ends both.
            tokio::select! {
                _ = out => {}
                _ = back => {}
            }
        });
        Ok(Conn::Shaped(app.compat()))
    }
}

/// Moves bytes from `src` to `dst` as the link from `from` to `to` would.
async fn direction<R, W>(
    mut src: R,
    mut dst: W,
    st: Arc<State>,
    from: usize,
    to: usize,
    mut rng: ChaCha8Rng,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let shape = st.shape(from, to);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut free = Instant::now();
        let mut last_due = Instant::now();
        loop {
            let n = match src.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if st.blocked(from, to) {
                break;
            }
            if let Some(c) = st.sent.get(from) {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            if let Some(c) = st.received.get(to) {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            let now = Instant::now();
            if shape.bandwidth_kbit > 0 {
                let secs = (n as f64 * 8.0) / (shape.bandwidth_kbit as f64 * 1000.0);
                free = free.max(now) + Duration::from_secs_f64(secs);
            } else {
                free = now;
            }
            let mut ms = shape.latency.sample(&mut rng);
            if shape.loss > 0.0 {
                for _ in 0..n.div_ceil(SEGMENT) {
                    if rng.gen_bool(shape.loss) {
                        ms += 200.0 + 2.0 * shape.latency.sample(&mut rng);
                    }
                }
            }
            let due = (free + Duration::from_secs_f64(ms.max(0.0) / 1000.0)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if dst.write_all(&chunk).await.is_err() || dst.flush().await.is_err() {
                break;
            }
        }
        let _ = dst.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A connection as the upgrades see it: shaped on the dialing side, raw on the listening side
/// (the dialer's pumps shape both directions).
enum Conn {
    Raw(Channel<Vec<u8>>),
    Shaped(Compat<tokio::io::DuplexStream>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Raw(c) => Pin::new(c).poll_read(cx, buf),
            Conn::Shaped(c) => Pin::new(c).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Raw(c) => Pin::new(c).poll_write(cx, buf),
            Conn::Shaped(c) => Pin::new(c).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Raw(c) => Pin::new(c).poll_flush(cx),
            Conn::Shaped(c) => Pin::new(c).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Raw(c) => Pin::new(c).poll_close(cx),
            Conn::Shaped(c) => Pin::new(c).poll_close(cx),
        }
    }
}
