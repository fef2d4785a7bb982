//! The libp2p swarm, owned by one task ([`EventLoop`]), and the cloneable [`Client`] the rest of
//! the node uses to talk to it over a bounded channel with oneshot replies.
//!
//! Protocols: Kademlia on `/kith/kad/1.0.0` (name records, verified on every PUT before they
//! are stored), request-response on `/kith/dm/1` (envelopes and their acknowledgements),
//! identify and ping. Connection limits come first in the behaviour so they are checked first.
//!
//! - `address_limits`: connection limits per IP address and per subnet.
//! - `codec`: [`FrameCodec`], the length-prefixed frames of every request-response protocol.
//! - `protocols`: the table of the request-response protocols (name, limits, busy answer, event).
//! - `behaviour`: the libp2p behaviour and the swarm built from it.
//! - `event_loop`: [`EventLoop`], the task that owns the swarm, and its handlers.

pub mod address_limits;
mod behaviour;
mod codec;
mod event_loop;
mod protocols;

use std::sync::Arc;
use std::time::Duration;

use kith_protocol::envelope::{MAX_ACK, MAX_ENVELOPE};
use kith_protocol::RecordPolicy;
use libp2p::metrics::{Metrics as P2pMetrics, Registry};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::{gossipsub, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::NodeError;
use crate::metrics::Counters;

use behaviour::build_swarm;
pub use codec::FrameCodec;
pub use event_loop::EventLoop;

/// Kademlia protocol name: Kith's own DHT, never mixed with the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/kad/1.0.0");
/// Direct-message protocol name.
pub const DM_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/dm/1");
/// Group sync protocol name.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/sync/1");
/// Mailbox protocol name.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/mailbox/1");
/// Blob transfer protocol name.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/blob/1");
/// Timeout of a blob request (one chunk of 256 KiB).
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Device linking protocol name.
pub const LINK_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/link/1");
/// Identify protocol version string.
pub const IDENTIFY_VERSION: &str = "/kith/1.0.0";

/// Capacity of the command channel from clients to the event loop.
pub const COMMAND_CAPACITY: usize = 256;
/// Capacity of the event channel from the event loop to the node; when full, inbound envelopes
/// are answered `busy` and the sender retries.
pub const EVENT_CAPACITY: usize = 256;
/// Most established connections in total.
pub const MAX_CONNECTIONS: u32 = 512;
/// Most established connections per peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Most pending incoming connections.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Most concurrent direct-message streams per connection.
pub const MAX_DM_STREAMS: usize = 64;
/// Largest direct-message request (one encoded envelope).
pub const MAX_DM_REQUEST: usize = MAX_ENVELOPE;
/// Largest direct-message response (one encoded acknowledgement).
pub const MAX_DM_RESPONSE: usize = MAX_ACK;
/// Most name records a node stores for others.
pub const MAX_STORED_RECORDS: usize = 20_000;
/// Most queries (puts, gets, lookups) in flight at once.
pub const MAX_PENDING_QUERIES: usize = 1_024;
/// Timeout of a direct-message request.
pub const DM_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of a DHT query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Valid copies of a name record a lookup waits for before it ends (it ends sooner when every
/// closest peer answered). The newest of them wins (`rules::trust`); a record its holder updated
/// moments ago may be missed until the next lookup, which is why revocations are also pushed.
pub const LOOKUP_QUORUM: usize = 3;
/// Idle connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the routing table is refreshed (a Kademlia bootstrap).
pub const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Bucket refreshes a Kademlia bootstrap runs after the lookup of the node's own id (which
/// fills the buckets near it): lookups of random keys in the nearest buckets beyond the closest
/// neighbour's. libp2p's bootstrap refreshes every such bucket, about ten lookups and hundreds
/// of new connections; the farther buckets, which hold most of the network, fill from the peers
/// later lookups meet, and a lookup converges from any of them.
pub const BOOTSTRAP_REFRESHES: usize = 2;
/// How often connections are checked for use. Gossipsub holds a stream open on every
/// connection, which keeps libp2p from ever closing one as idle: without this check a node
/// ends up connected to every peer a DHT query ever reached (up to [`MAX_CONNECTIONS`]).
/// A node with fewer than [`MIN_CONNECTIONS`] also dials known peers again then (with a growing
/// wait per peer, `rules::redial`).
pub const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// Peers of the routing table (not connected) a node with fewer than [`MIN_CONNECTIONS`]
/// considers dialing again each time it checks, beside its bootstrap peers; it dials no more
/// than the connections it lacks, with a growing wait per peer (`rules::redial`).
pub const REDIAL_KNOWN: usize = 8;
/// Connections kept however idle (the most recently used ones), so the node stays in the DHT.
pub const MIN_CONNECTIONS: usize = 8;
/// Connections to members of a group kept however idle, per group: its gossipsub mesh (at most
/// 12 peers) first, then the most recently used members subscribed to it. Groups of up to 17
/// members keep every member connected, as gossipsub and group copies expect.
pub const GROUP_PEERS_KEPT: usize = 16;
/// A connection Kith never used (one a DHT query opened, ours or a peer's) is closed this long
/// after it opened; one that carried a direct message, a mailbox or sync request keeps
/// [`IDLE_TIMEOUT`] after its last use.
pub const DHT_ONLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A copy of a DHT record, as one holder returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCopy {
    /// The peer that returned it; `None` for this node's own store.
    pub from: Option<PeerId>,
    /// The record's value.
    pub value: Vec<u8>,
}

/// A transport built by the caller from the node's key: authenticated and multiplexed, ready
/// for the swarm. The simulator uses it for its shaped in-memory network.
pub type CustomTransport = Arc<
    dyn Fn(
            &libp2p::identity::Keypair,
        ) -> Result<
            libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
            Box<dyn std::error::Error + Send + Sync>,
        > + Send
        + Sync,
>;

/// Which transport the swarm uses.
#[derive(Clone)]
pub enum TransportKind {
    /// TCP + Noise + Yamux.
    Tcp,
    /// In-process memory transport + Noise + Yamux, for tests and simulations.
    Memory,
    /// A transport of the caller's (see [`CustomTransport`]).
    Custom(CustomTransport),
}

impl std::fmt::Debug for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "Tcp",
            TransportKind::Memory => "Memory",
            TransportKind::Custom(_) => "Custom",
        })
    }
}

/// A snapshot of the network state.
#[derive(Clone, Debug)]
pub struct NetStatus {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// Listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
    /// Number of connected peers.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table (DHT servers this node knows).
    pub routing_peers: usize,
}

/// The reply handle of an inbound request; answer it with [`Client::respond`].
#[derive(Debug)]
pub struct Reply(Proto, ResponseChannel<Vec<u8>>);

/// Which request-response protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `/kith/dm/1`.
    Dm,
    /// `/kith/mailbox/1`.
    Mailbox,
    /// `/kith/sync/1`.
    Sync,
    /// `/kith/link/1`.
    Link,
    /// `/kith/blob/1`.
    Blob,
}

/// What the network reports to the node.
#[derive(Debug)]
pub enum Event {
    /// An envelope arrived; it must be answered with an encoded
    /// [`DeliveryAck`](kith_protocol::DeliveryAck).
    InboundEnvelope {
        /// The peer it came from.
        peer: PeerId,
        /// The encoded envelope.
        bytes: Vec<u8>,
        /// Where to send the acknowledgement.
        reply: Reply,
    },
    /// A mailbox request arrived; it must be answered with an encoded mailbox response.
    MailboxRequest {
        /// The peer it came from (authenticated by the transport).
        peer: PeerId,
        /// The encoded request.
        bytes: Vec<u8>,
        /// Where to send the answer.
        reply: Reply,
    },
    /// A group sync request arrived; it must be answered.
    SyncRequest {
        /// The requesting peer.
        peer: PeerId,
        /// The encoded request.
        bytes: Vec<u8>,
        /// Where to send the answer.
        reply: Reply,
    },
    /// A device asks to be linked (or for history); it must be answered with an encoded
    /// [`kith_protocol::link::LinkResponse`].
    LinkRequest {
        /// The requesting peer (authenticated by the transport).
        peer: PeerId,
        /// The encoded request.
        bytes: Vec<u8>,
        /// Where to send the answer.
        reply: Reply,
    },
    /// A blob request arrived; it must be answered with an encoded
    /// [`kith_protocol::blob::BlobResponse`].
    BlobRequest {
        /// The requesting peer (authenticated by the transport).
        peer: PeerId,
        /// The encoded request.
        bytes: Vec<u8>,
        /// Where to send the answer.
        reply: Reply,
    },
    /// A message arrived on a group topic; it must be judged with [`Client::validate`].
    GroupMessage {
        /// The peer that forwarded it.
        source: PeerId,
        /// Gossipsub's id of it (a content hash).
        id: gossipsub::MessageId,
        /// The encoded group envelope.
        data: Vec<u8>,
    },
    /// A connection to a peer was established.
    PeerConnected(PeerId),
    /// The node had no connection at all for a while (its bootstrap peers were down, or it was
    /// cut off) and has one again: what it published may have been lost meanwhile.
    Rejoined,
}

/// The verdict on a group message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Not for us now (unknown group, future epoch, duplicate): drop without penalty.
    Ignore,
    /// Invalid (forged, tampered, from a non-member): drop and penalize the forwarder.
    Reject,
}

/// Where the answer to an outgoing request goes: its bytes, or why there are none.
type SendReply = oneshot::Sender<Result<Vec<u8>, String>>;

enum Command {
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    GetRecords {
        key: Vec<u8>,
        /// Ask every closest peer, not only until [`LOOKUP_QUORUM`] valid copies came.
        all: bool,
        reply: oneshot::Sender<Result<Vec<FoundCopy>, String>>,
    },
    Request {
        proto: Proto,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bytes: Vec<u8>,
        reply: SendReply,
    },
    Respond {
        reply: Reply,
        bytes: Vec<u8>,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    TopicPeers {
        topic: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Subscribe {
        topic: String,
        on: bool,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Validate {
        id: gossipsub::MessageId,
        source: PeerId,
        verdict: Verdict,
    },
    DialPeer {
        peer: PeerId,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A cloneable handle to the network task.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    counters: Counters,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::PutRecord { .. } => "PutRecord",
            Command::GetRecords { .. } => "GetRecords",
            Command::Request { .. } => "Request",
            Command::Respond { .. } => "Respond",
            Command::Status { .. } => "Status",
            Command::TopicPeers { .. } => "TopicPeers",
            Command::Dial { .. } => "Dial",
            Command::Subscribe { .. } => "Subscribe",
            Command::Publish { .. } => "Publish",
            Command::Validate { .. } => "Validate",
            Command::DialPeer { .. } => "DialPeer",
        })
    }
}

impl Client {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NodeError::NetworkStopped)?;
        rx.await.map_err(|_| NodeError::NetworkStopped)
    }

    /// Stores a record on the DHT; succeeds once at least one peer stored it.
    pub async fn put_record(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: u64,
    ) -> Result<(), NodeError> {
        self.call(|reply| Command::PutRecord { key, value, expires_at, reply })
            .await?
            .map_err(NodeError::Dht)
    }

    /// Every copy of a record found for `key`, one per holder (this node's own store first,
    /// when it holds one), unverified.
    pub async fn get_records(&self, key: Vec<u8>) -> Result<Vec<FoundCopy>, NodeError> {
        self.call(|reply| Command::GetRecords { key, all: false, reply })
            .await?
            .map_err(NodeError::Dht)
    }

    /// [`Client::get_records`] from every closest peer that answers (it does not end at
    /// [`LOOKUP_QUORUM`] valid copies): how a name's holder checks what the network serves.
    pub async fn get_all_records(&self, key: Vec<u8>) -> Result<Vec<FoundCopy>, NodeError> {
        self.call(|reply| Command::GetRecords { key, all: true, reply })
            .await?
            .map_err(NodeError::Dht)
    }

    /// Sends an envelope to a peer and returns its raw answer; `Err` text says why not.
    pub async fn send_envelope(
        &self,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, NodeError> {
        self.call(|reply| Command::Request {
            proto: Proto::Dm,
            peer,
            addrs: Vec::new(),
            bytes,
            reply,
        })
        .await
    }

    /// Sends a mailbox request to a peer, at `addrs` if it is not connected, and returns its raw
    /// answer; `Err` text says why not.
    pub async fn mailbox_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bytes: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, NodeError> {
        self.call(|reply| Command::Request { proto: Proto::Mailbox, peer, addrs, bytes, reply })
            .await
    }

    /// Sends a link request to a peer at `addrs`.
    pub async fn link_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bytes: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, NodeError> {
        self.call(|reply| Command::Request { proto: Proto::Link, peer, addrs, bytes, reply }).await
    }

    /// Sends a blob request to a peer, at `addrs` if it is not connected (found on the DHT when
    /// there are none).
    pub async fn blob_request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bytes: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, NodeError> {
        self.call(|reply| Command::Request { proto: Proto::Blob, peer, addrs, bytes, reply }).await
    }

    /// Sends a group sync request to a peer.
    pub async fn sync_request(
        &self,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> Result<Result<Vec<u8>, String>, NodeError> {
        self.call(|reply| Command::Request {
            proto: Proto::Sync,
            peer,
            addrs: Vec::new(),
            bytes,
            reply,
        })
        .await
    }

    /// Subscribes to (or, with `on == false`, leaves) a gossipsub topic.
    pub async fn subscribe(&self, topic: String, on: bool) -> Result<(), NodeError> {
        self.tx.send(Command::Subscribe { topic, on }).await.map_err(|_| NodeError::NetworkStopped)
    }

    /// Publishes on a topic; `Err` text says why not (no subscribed peer connected, say).
    pub async fn publish(
        &self,
        topic: String,
        data: Vec<u8>,
    ) -> Result<Result<(), String>, NodeError> {
        self.call(|reply| Command::Publish { topic, data, reply }).await
    }

    /// Reports the verdict on a group message to gossipsub.
    pub async fn validate(
        &self,
        id: gossipsub::MessageId,
        source: PeerId,
        verdict: Verdict,
    ) -> Result<(), NodeError> {
        self.tx
            .send(Command::Validate { id, source, verdict })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    /// Connects to a peer by id, finding its addresses on the DHT if needed.
    pub async fn dial_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        self.tx.send(Command::DialPeer { peer }).await.map_err(|_| NodeError::NetworkStopped)
    }

    /// Answers an inbound request with encoded bytes.
    pub async fn respond(&self, reply: Reply, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.tx.send(Command::Respond { reply, bytes }).await.map_err(|_| NodeError::NetworkStopped)
    }

    /// The network's state.
    pub async fn status(&self) -> Result<NetStatus, NodeError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The connected peers subscribed to a gossipsub topic: a message published on it reaches
    /// each of them directly (a node publishes its own messages to all of them).
    pub async fn topic_peers(&self, topic: String) -> Result<Vec<PeerId>, NodeError> {
        self.call(|reply| Command::TopicPeers { topic, reply }).await
    }

    /// Dials an address (a bootstrap peer, say).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.call(|reply| Command::Dial { addr, reply }).await?.map_err(NodeError::Network)
    }

    /// Kith's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// How to build the network.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Transport.
    pub transport: TransportKind,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to bootstrap from; each address must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Minimum proof of work of name records accepted for storage.
    pub pow_bits: u32,
    /// Serve as a libp2p relay (v2) for others.
    pub relay: bool,
    /// Connection limits.
    pub limits: Limits,
}

/// How many connections a node keeps, and whether it serves the DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established connections at most (all peers, both directions).
    pub max_connections: u32,
    /// Whether the per-address and per-subnet limits (`address_limits`) apply. Off only for
    /// many nodes on one machine's loopback (simulations, benchmarks), where every dial comes
    /// from 127.0.0.1.
    pub per_address: bool,
    /// Whether this node answers other nodes' DHT queries (Kademlia server mode, the default).
    /// A client only asks: it does not advertise the DHT protocol, so no other node adds it to
    /// its routing table, stores records on it or routes lookups through it, and it keeps only
    /// the connections it uses. Its name still publishes and resolves through the servers, but
    /// no lookup finds its addresses: a peer reaches it only over a connection the client
    /// opened (answering a message it sent). For benchmarks that run a thousand users on one
    /// machine; not offered in the CLI.
    pub dht_server: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: MAX_CONNECTIONS, per_address: true, dht_server: true }
    }
}

/// Creates the network: the client handle, the stream of events, and the event loop to spawn.
pub fn new(
    key: libp2p::identity::Keypair,
    config: NetworkConfig,
    counters: Counters,
    registry: &mut Registry,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), NodeError> {
    with_event_capacity(key, config, counters, registry, EVENT_CAPACITY)
}

/// [`new`] with an event channel of `event_capacity` (tests fill it to see the busy answers).
pub(crate) fn with_event_capacity(
    key: libp2p::identity::Keypair,
    config: NetworkConfig,
    counters: Counters,
    registry: &mut Registry,
    event_capacity: usize,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), NodeError> {
    let mut swarm = build_swarm(
        key,
        config.transport,
        config.relay,
        config.limits,
        counters.frames_rejected.clone(),
    )?;
    let p2p_metrics = P2pMetrics::new(registry);
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Config(format!("cannot listen on {addr}: {e}")))?;
    }
    for addr in &config.bootstrap {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(NodeError::Config(format!(
                "bootstrap address {addr} must end in /p2p/<peer id>"
            )));
        };
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        swarm.add_peer_address(peer, addr.clone());
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, "cannot dial bootstrap peer: {e}");
        }
    }
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (etx, erx) = mpsc::channel(event_capacity);
    let client = Client { tx, counters: counters.clone() };
    let policy = RecordPolicy { min_pow_bits: config.pow_bits };
    let mut ev = EventLoop::new(swarm, rx, etx, counters, p2p_metrics, policy);
    ev.bootstrap = config.bootstrap.clone();
    Ok((client, erx, ev))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// How long a test waits for anything before it fails.
    const WAIT: Duration = Duration::from_secs(10);

    type Started = (Client, mpsc::Receiver<Event>, PeerId, Registry);

    /// Starts an event loop on the memory transport and spawns it.
    fn start(listen: bool, bootstrap: Vec<Multiaddr>, event_capacity: usize) -> Started {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let listen = if listen { vec!["/memory/0".parse().unwrap()] } else { vec![] };
        start_keyed(key, listen, bootstrap, event_capacity)
    }

    /// [`start`] with a given key and listen addresses.
    fn start_keyed(
        key: libp2p::identity::Keypair,
        listen: Vec<Multiaddr>,
        bootstrap: Vec<Multiaddr>,
        event_capacity: usize,
    ) -> Started {
        start_on(TransportKind::Memory, key, listen, bootstrap, event_capacity)
    }

    /// [`start_keyed`] on a given transport.
    fn start_on(
        transport: TransportKind,
        key: libp2p::identity::Keypair,
        listen: Vec<Multiaddr>,
        bootstrap: Vec<Multiaddr>,
        event_capacity: usize,
    ) -> Started {
        start_limited(transport, key, listen, bootstrap, event_capacity, Limits::default())
    }

    /// [`start_on`] with given limits.
    fn start_limited(
        transport: TransportKind,
        key: libp2p::identity::Keypair,
        listen: Vec<Multiaddr>,
        bootstrap: Vec<Multiaddr>,
        event_capacity: usize,
        limits: Limits,
    ) -> Started {
        let peer = key.public().to_peer_id();
        let mut registry = Registry::default();
        let config =
            NetworkConfig { transport, listen, bootstrap, pow_bits: 8, relay: false, limits };
        let (client, events, event_loop) =
            with_event_capacity(key, config, Counters::default(), &mut registry, event_capacity)
                .unwrap();
        tokio::spawn(event_loop.run());
        (client, events, peer, registry)
    }

    /// Polls `client`'s status until `ok` holds, failing after [`WAIT`].
    async fn wait_status(
        client: &Client,
        what: &str,
        ok: impl Fn(&NetStatus) -> bool,
    ) -> NetStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = client.status().await.unwrap();
            if ok(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first listen address of a started loop.
    async fn address(client: &Client) -> Multiaddr {
        wait_status(client, "a listen address", |s| !s.listen_addrs.is_empty()).await.listen_addrs
            [0]
        .clone()
    }

    /// The next event that is not a new connection.
    async fn next_request(events: &mut mpsc::Receiver<Event>) -> Event {
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Some(Event::PeerConnected(_) | Event::Rejoined)) => continue,
                Ok(Some(event)) => return event,
                Ok(None) => panic!("the event loop stopped"),
                Err(_) => panic!("no request arrived within {WAIT:?}"),
            }
        }
    }

    /// How many Kademlia bootstrap steps the loop behind `registry` has finished.
    fn bootstrap_steps(registry: &Registry) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "libp2p_kad_query_result_duration_seconds_count{type=\"Bootstrap\"} ",
                )
            })
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Waits until the loop behind `registry` has bootstrapped and no further step followed for
    /// a quarter of a second (the steps of one bootstrap follow each other at once).
    async fn wait_bootstrapped(registry: &Registry) {
        let deadline = Instant::now() + WAIT;
        let (mut seen, mut since) = (0, Instant::now());
        loop {
            let steps = bootstrap_steps(registry);
            if steps != seen {
                (seen, since) = (steps, Instant::now());
            } else if seen > 0 && since.elapsed() >= Duration::from_millis(250) {
                return;
            }
            assert!(Instant::now() < deadline, "no finished bootstrap ({seen} steps)");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// No server adds a DHT client to its routing table, while the servers know each other
    /// and the client knows them (`nodes.rs` has clients registering and messaging).
    #[tokio::test]
    async fn a_dht_client_uses_the_dht_without_serving_it() {
        let (s, _s_events, s_peer, _) = start(true, vec![], EVENT_CAPACITY);
        let s_addr = address(&s).await.with_p2p(s_peer).unwrap();
        let client = Limits { dht_server: false, ..Limits::default() };
        let key = libp2p::identity::Keypair::generate_ed25519();
        let listen = vec!["/memory/0".parse().unwrap()];
        let (c, _c_events, _, _) =
            start_limited(TransportKind::Memory, key, listen, vec![s_addr.clone()], 64, client);
        let (d, _d_events, _, _) = start(true, vec![s_addr], EVENT_CAPACITY);
        wait_status(&s, "S connected to C and D", |s| s.connected_peers == 2).await;
        wait_status(&s, "S knows D", |s| s.routing_peers >= 1).await;
        wait_status(&d, "D knows S", |s| s.routing_peers >= 1).await;
        wait_status(&c, "C knows S", |s| s.routing_peers >= 1).await;
        // Identify has run on both of S's connections by now (it is how S learnt D): give a
        // slower exchange with C a moment more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.status().await.unwrap().routing_peers, 1, "S added the client to its table");
        assert_eq!(d.status().await.unwrap().routing_peers, 1, "D added the client to its table");
    }

    /// A sync request to a peer this node is not connected to is found through the DHT and
    /// arrives on `/kith/sync/1`, not as a direct message.
    #[tokio::test]
    async fn a_sync_request_to_an_unconnected_peer_stays_a_sync_request() {
        let (b, _b_events, b_peer, _) = start(true, vec![], EVENT_CAPACITY);
        let b_addr = address(&b).await.with_p2p(b_peer).unwrap();
        // A listens nowhere, so B cannot hand A's address to C (nor C's bootstrap reach A).
        let (a, _a_events, _, a_registry) = start(false, vec![b_addr.clone()], EVENT_CAPACITY);
        wait_status(&a, "A connected to B", |s| s.connected_peers == 1).await;
        // A's own bootstrap must be over before B knows C, or it would connect A to C.
        wait_bootstrapped(&a_registry).await;
        let (c, mut c_events, c_peer, _) = start(true, vec![b_addr], EVENT_CAPACITY);
        wait_status(&c, "C connected to B", |s| s.connected_peers == 1).await;
        wait_status(&b, "B connected to A and C", |s| s.connected_peers == 2).await;

        let deadline = Instant::now() + WAIT;
        let (request, answer) = loop {
            assert_eq!(a.status().await.unwrap().connected_peers, 1, "A is connected to C already");
            let mut answer = tokio::spawn({
                let a = a.clone();
                async move { a.sync_request(c_peer, b"since 0".to_vec()).await }
            });
            tokio::select! {
                event = next_request(&mut c_events) => break (event, answer),
                r = &mut answer => {
                    // B may not have learnt C's address yet (identify): look again.
                    let e = r.unwrap().unwrap().unwrap_err();
                    assert!(Instant::now() < deadline, "C never reached: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let Event::SyncRequest { peer, bytes, reply } = request else {
            panic!("expected a SyncRequest, got {request:?}");
        };
        assert_eq!(bytes, b"since 0");
        assert_ne!(peer, b_peer);
        c.respond(reply, b"page".to_vec()).await.unwrap();
        let got = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap().unwrap().unwrap();
        assert_eq!(got, b"page");
    }

    /// A node whose event channel is full answers a sync request with an empty page that has
    /// `more` set, which the requester decodes as a sync response.
    #[tokio::test]
    async fn a_busy_node_answers_a_sync_request_with_a_sync_response() {
        use kith_protocol::group::SyncResponse;
        let (c, c_events, c_peer, _) = start(true, vec![], 1);
        let c_addr = address(&c).await.with_p2p(c_peer).unwrap();
        let (a, _a_events, _, _) = start(false, vec![c_addr], EVENT_CAPACITY);
        wait_status(&a, "A connected to C", |s| s.connected_peers == 1).await;
        // Nobody reads C's events: the first (A's connection) fills the channel.
        let deadline = Instant::now() + WAIT;
        while c_events.is_empty() {
            assert!(Instant::now() < deadline, "C reported no event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answer = tokio::time::timeout(WAIT, a.sync_request(c_peer, b"since 0".to_vec()))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let page = SyncResponse::from_bytes(&answer)
            .unwrap_or_else(|e| panic!("the busy answer is not a SyncResponse: {e}"));
        assert!(page.more);
        assert!(page.envelopes.is_empty());
        drop(c_events);
    }

    /// A node whose only bootstrap peer restarts three times in a few seconds (and then stays
    /// up) connects to it again, with nothing else to make it dial.
    /// (TCP on loopback: a memory transport never frees a port its swarm listened on.)
    #[tokio::test]
    async fn a_node_reconnects_after_its_bootstrap_peer_restarts_repeatedly() {
        let tcp = || TransportKind::Tcp;
        let b_key = libp2p::identity::Keypair::generate_ed25519();
        let b_peer = b_key.public().to_peer_id();
        let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let b = start_on(tcp(), b_key.clone(), vec![any_port], vec![], 64);
        let b_listen =
            wait_status(&b.0, "B listening", |s| !s.listen_addrs.is_empty()).await.listen_addrs[0]
                .clone();
        let b_addr = b_listen.clone().with(Protocol::P2p(b_peer));
        let (a, _a_events, _, _) = start_on(
            tcp(),
            libp2p::identity::Keypair::generate_ed25519(),
            vec![],
            vec![b_addr],
            64,
        );
        wait_status(&a, "A connected to B", |s| s.connected_peers == 1).await;
        drop(b);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let b = start_on(tcp(), b_key.clone(), vec![b_listen.clone()], vec![], 64);
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(b);
        }
        wait_status(&a, "A cut off", |s| s.connected_peers == 0).await;
        let (_b, _b_events, _, _) = start_on(tcp(), b_key, vec![b_listen], vec![], 64);
        let deadline = Instant::now()
            + Duration::from_millis(crate::rules::redial::REDIAL_MAX_MS)
            + REAP_INTERVAL
            + WAIT;
        while a.status().await.unwrap().connected_peers == 0 {
            assert!(Instant::now() < deadline, "never reconnected to the restarted peer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// About 70 silent TCP connections from one address (a handful of sockets, each holding a
    /// pending slot for the 10 s handshake timeout) do not keep a new peer out.
    #[tokio::test]
    async fn silent_sockets_from_one_place_do_not_lock_new_peers_out() {
        let tcp = |key: libp2p::identity::Keypair| {
            let mut registry = Registry::default();
            let config = NetworkConfig {
                transport: TransportKind::Tcp,
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap: vec![],
                pow_bits: 8,
                relay: false,
                limits: Limits::default(),
            };
            let (client, events, event_loop) =
                with_event_capacity(key, config, Counters::default(), &mut registry, 64).unwrap();
            tokio::spawn(event_loop.run());
            (client, events)
        };
        let (a, _a_events) = tcp(libp2p::identity::Keypair::generate_ed25519());
        let a_addr =
            wait_status(&a, "A listening", |s| !s.listen_addrs.is_empty()).await.listen_addrs[0]
                .clone();
        let port = a_addr
            .iter()
            .find_map(|p| match p {
                Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap();
        // The silent sockets come from 127.0.1.1, another /24 than the peer's 127.0.0.1.
        let mut silent = Vec::new();
        for _ in 0..70 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.1.1:0".parse().unwrap()).unwrap();
            if let Ok(s) = socket.connect(([127, 0, 0, 1], port).into()).await {
                silent.push(s);
            }
        }
        assert!(silent.len() >= 64, "only {} silent sockets connected", silent.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (b, _b_events) = tcp(libp2p::identity::Keypair::generate_ed25519());
        let dialed = tokio::time::timeout(Duration::from_secs(5), b.dial(a_addr)).await;
        assert!(matches!(dialed, Ok(Ok(()))), "the new peer was kept out: {dialed:?}");
        drop(silent);
    }

    /// A node whose only bootstrap peer was down when it started connects once that peer is
    /// up, with nothing else to make it dial, and tells the node it rejoined.
    #[tokio::test]
    async fn a_node_without_connections_dials_its_bootstrap_peers_again() {
        let b_key = libp2p::identity::Keypair::generate_ed25519();
        let b_peer = b_key.public().to_peer_id();
        let port = rand::random::<u64>() | (1 << 40);
        let b_listen: Multiaddr = format!("/memory/{port}").parse().unwrap();
        let b_addr = b_listen.clone().with(Protocol::P2p(b_peer));
        let (a, mut a_events, _, _) = start(false, vec![b_addr], 64);
        // The first dial fails: nothing listens there yet.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.status().await.unwrap().connected_peers, 0);
        let (_b, _b_events, _, _) = start_keyed(b_key, vec![b_listen], vec![], 64);
        let deadline = Instant::now() + REAP_INTERVAL * 2 + WAIT;
        while a.status().await.unwrap().connected_peers == 0 {
            assert!(Instant::now() < deadline, "never dialed the bootstrap peer again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            match tokio::time::timeout(WAIT, a_events.recv()).await {
                Ok(Some(Event::Rejoined)) => break,
                Ok(Some(_)) => continue,
                other => panic!("no Rejoined event: {other:?}"),
            }
        }
    }
}
