//! The libp2p swarm, owned by one task ([`EventLoop`]), and the cloneable [`Client`] the rest of
//! the node uses to talk to it over a bounded channel with oneshot replies.
//!
//! Protocols: Kademlia on `/kith/kad/1.0.0` (name records, verified on every PUT before they
//! are stored), request-response on `/kith/dm/1` (envelopes and their acknowledgements),
//! identify and ping. Connection limits come first in the behaviour so they are checked first.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use kith_protocol::envelope::{MAX_ACK, MAX_ENVELOPE};
use kith_protocol::mailbox::{MAX_MAILBOX_REQUEST, MAX_MAILBOX_RESPONSE};
use kith_protocol::name::{check_replaces, MAX_RECORD_SIZE};
use kith_protocol::{AckStatus, DeliveryAck, NameRecord, RecordPolicy};
use libp2p::kad::store::RecordStore;
use libp2p::metrics::{Metrics as P2pMetrics, Recorder, Registry};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, identify, kad, noise, ping, relay, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::error::NodeError;
use crate::metrics::Counters;

/// Kademlia protocol name: Kith's own DHT, never mixed with the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/kad/1.0.0");
/// Direct-message protocol name.
pub const DM_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/dm/1");
/// Group sync protocol name.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/sync/1");
/// Mailbox protocol name.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/mailbox/1");
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
/// Idle connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the routing table is refreshed (a Kademlia bootstrap).
pub const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How often connections are checked for use. Gossipsub holds a stream open on every
/// connection, which keeps libp2p from ever closing one as idle: without this check a node
/// ends up connected to every peer a DHT query ever reached (up to [`MAX_CONNECTIONS`]).
pub const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// Connections kept however idle (the most recently used ones), so the node stays in the DHT.
pub const MIN_CONNECTIONS: usize = 8;
/// A connection Kith never used (one a DHT query opened, ours or a peer's) is closed this long
/// after it opened; one that carried a direct message, a mailbox or sync request keeps
/// [`IDLE_TIMEOUT`] after its last use.
pub const DHT_ONLY_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// Everything that differs between the request-response protocols: one row per [`Proto`].
pub(crate) struct RrProtocol {
    /// Which protocol this row describes (its index in [`RR_PROTOCOLS`]).
    pub(crate) proto: Proto,
    /// The protocol name on the wire.
    pub(crate) name: StreamProtocol,
    /// Largest request frame.
    pub(crate) max_request: usize,
    /// Largest response frame.
    pub(crate) max_response: usize,
    /// The answer to a request when the node's event channel is full.
    pub(crate) busy: fn() -> Vec<u8>,
    /// The event an inbound request becomes.
    pub(crate) event: fn(PeerId, Vec<u8>, Reply) -> Event,
}

/// The request-response protocols, in [`Proto`] order.
pub(crate) static RR_PROTOCOLS: [RrProtocol; 4] = [
    RrProtocol {
        proto: Proto::Dm,
        name: DM_PROTOCOL,
        max_request: MAX_DM_REQUEST,
        max_response: MAX_DM_RESPONSE,
        busy: || DeliveryAck::new(AckStatus::Busy, Some("recipient is busy".into())).to_bytes(),
        event: |peer, bytes, reply| Event::InboundEnvelope { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Mailbox,
        name: MAILBOX_PROTOCOL,
        max_request: MAX_MAILBOX_REQUEST,
        max_response: MAX_MAILBOX_RESPONSE,
        busy: || {
            kith_protocol::mailbox::MailboxResponse::Refused { reason: "busy".into() }.to_bytes()
        },
        event: |peer, bytes, reply| Event::MailboxRequest { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Sync,
        name: SYNC_PROTOCOL,
        max_request: 4096,
        max_response: MAX_MAILBOX_RESPONSE,
        // An empty page with more to come: the requester stops on an empty page and asks
        // again on its next round.
        busy: || {
            kith_protocol::group::SyncResponse {
                v: kith_protocol::VERSION,
                envelopes: vec![],
                more: true,
            }
            .to_bytes()
        },
        event: |peer, bytes, reply| Event::SyncRequest { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Link,
        name: LINK_PROTOCOL,
        max_request: kith_protocol::link::MAX_LINK_REQUEST,
        max_response: kith_protocol::link::MAX_LINK_RESPONSE,
        busy: || kith_protocol::link::LinkResponse::Refused { reason: "busy".into() }.to_bytes(),
        event: |peer, bytes, reply| Event::LinkRequest { peer, bytes, reply },
    },
];

impl Proto {
    /// This protocol's row of [`RR_PROTOCOLS`].
    pub(crate) fn spec(self) -> &'static RrProtocol {
        let spec = &RR_PROTOCOLS[self as usize];
        debug_assert_eq!(spec.proto, self, "RR_PROTOCOLS is in Proto order");
        spec
    }
}

/// What the network reports to the node.
#[derive(Debug)]
pub enum Event {
    /// An envelope arrived; it must be answered with an encoded [`DeliveryAck`].
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

enum Command {
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    GetRecords {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>, String>>,
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

    /// Every record found for `key` (local and remote, unverified, possibly repeated).
    pub async fn get_records(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, NodeError> {
        self.call(|reply| Command::GetRecords { key, reply }).await?.map_err(NodeError::Dht)
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

    /// Dials an address (a bootstrap peer, say).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.call(|reply| Command::Dial { addr, reply }).await?.map_err(NodeError::Dht)
    }

    /// Kith's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Length-prefixed frames (4-byte big-endian length) with explicit size limits, for
/// `/kith/dm/1` and `/kith/mailbox/1`.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    /// A codec with these limits (the benchmark's bare libp2p exchange uses it too).
    pub fn new(max_request: usize, max_response: usize) -> Self {
        FrameCodec { max_request, max_response }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> std::io::Result<()> {
    if data.len() > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"));
    }
    let len = u32::try_from(data.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    dm: request_response::Behaviour<FrameCodec>,
    mailbox: request_response::Behaviour<FrameCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<FrameCodec>,
    link: request_response::Behaviour<FrameCodec>,
    relay: Toggle<relay::Behaviour>,
}

impl Behaviour {
    /// The request-response behaviour of `proto` (the one place that maps one to the other).
    fn rr(&mut self, proto: Proto) -> &mut request_response::Behaviour<FrameCodec> {
        match proto {
            Proto::Dm => &mut self.dm,
            Proto::Mailbox => &mut self.mailbox,
            Proto::Sync => &mut self.sync,
            Proto::Link => &mut self.link,
        }
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
}

fn behaviour(key: &libp2p::identity::Keypair, relay_server: bool) -> Behaviour {
    let peer_id = key.public().to_peer_id();
    let mut kcfg = kad::Config::new(KAD_PROTOCOL);
    kcfg.set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_query_timeout(QUERY_TIMEOUT)
        .set_max_packet_size(2 * MAX_RECORD_SIZE + 4096)
        .set_record_ttl(Some(Duration::from_millis(kith_protocol::name::MAX_RECORD_LIFETIME_MS)))
        .set_publication_interval(None)
        // A bootstrap looks up a key in every bucket (hundreds of peers contacted); libp2p's
        // default of every 5 minutes made it most of a simulated 1,000-node network's
        // connections. Normal lookups refresh the buckets they pass through anyway.
        .set_periodic_bootstrap_interval(Some(BOOTSTRAP_INTERVAL));
    if let Some(k) = NonZeroUsize::new(20) {
        kcfg.set_replication_factor(k);
    }
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: MAX_STORED_RECORDS,
            max_value_bytes: MAX_RECORD_SIZE,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kcfg);
    kad.set_mode(Some(kad::Mode::Server));
    let rr = |proto: Proto| {
        let spec = proto.spec();
        request_response::Behaviour::with_codec(
            FrameCodec { max_request: spec.max_request, max_response: spec.max_response },
            [(spec.name.clone(), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(DM_TIMEOUT)
                .with_max_concurrent_streams(MAX_DM_STREAMS),
        )
    };
    let dm = rr(Proto::Dm);
    let mailbox = rr(Proto::Mailbox);
    let relay = Toggle::from(
        relay_server.then(|| relay::Behaviour::new(peer_id, relay::Config::default())),
    );
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(MAX_CONNECTIONS))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
    );
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
            .with_agent_version(format!("kith/{}", env!("CARGO_PKG_VERSION"))),
    );
    let ping = ping::Behaviour::new(ping::Config::new());
    let sync = rr(Proto::Sync);
    let link = rr(Proto::Link);
    let gossipsub = gossip(key);
    Behaviour { limits, kad, dm, mailbox, identify, ping, gossipsub, sync, link, relay }
}

/// Gossipsub for group chats: messages are anonymous at the gossipsub layer (authenticity comes
/// from the device signature inside the ciphertext), ids are content hashes, every message is
/// validated by the node before it is forwarded, and peer scoring uses libp2p's defaults.
fn gossip(key: &libp2p::identity::Keypair) -> gossipsub::Behaviour {
    let _ = key;
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(kith_protocol::group::MAX_GROUP_ENVELOPE + 1024)
        .heartbeat_interval(Duration::from_millis(700))
        .message_id_fn(|m: &gossipsub::Message| {
            use sha2::Digest;
            gossipsub::MessageId::from(sha2::Sha256::digest(&m.data).to_vec())
        })
        .build();
    let mut g = match config {
        Ok(c) => gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, c),
        Err(e) => Err(e.to_string().leak() as &str),
    }
    .unwrap_or_else(|e| unreachable!("static gossipsub configuration is valid: {e}"));
    let _ = g.with_peer_score(
        gossipsub::PeerScoreParams::default(),
        gossipsub::PeerScoreThresholds::default(),
    );
    g
}

fn build_swarm(
    key: libp2p::identity::Keypair,
    transport: TransportKind,
    relay: bool,
) -> Result<Swarm<Behaviour>, NodeError> {
    let cfg = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_TIMEOUT);
    let err =
        |e: &dyn std::fmt::Display| NodeError::Config(format!("cannot build the network: {e}"));
    let b = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
    let swarm = match transport {
        TransportKind::Tcp => b
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| err(&e))?
            .with_behaviour(|k| behaviour(k, relay))
            .map_err(|e| err(&e))?
            .with_swarm_config(cfg)
            .build(),
        TransportKind::Memory => {
            use libp2p::core::{transport::MemoryTransport, upgrade::Version, Transport as _};
            b.with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })
            .map_err(|e| err(&e))?
            .with_behaviour(|k| behaviour(k, relay))
            .map_err(|e| err(&e))?
            .with_swarm_config(cfg)
            .build()
        }
        TransportKind::Custom(make) => b
            .with_other_transport(|key| make(key))
            .map_err(|e| err(&e))?
            .with_behaviour(|k| behaviour(k, relay))
            .map_err(|e| err(&e))?
            .with_swarm_config(cfg)
            .build(),
    };
    Ok(swarm)
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
    let mut swarm = build_swarm(key, config.transport, config.relay)?;
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
    let ev = EventLoop {
        swarm,
        commands: rx,
        events: etx,
        counters,
        p2p_metrics,
        policy: RecordPolicy { min_pow_bits: config.pow_bits },
        listen_addrs: Vec::new(),
        pending_put: HashMap::new(),
        pending_get: HashMap::new(),
        pending_send: HashMap::new(),
        pending_lookup: HashMap::new(),
        pending_dial: Vec::new(),
        pending_dials: HashMap::new(),
        last_used: HashMap::new(),
    };
    Ok((client, erx, ev))
}

type SendReply = oneshot::Sender<Result<Vec<u8>, String>>;
type GetReply = oneshot::Sender<Result<Vec<Vec<u8>>, String>>;
/// A request waiting for a lookup of its peer's addresses: protocol, peer, bytes, reply.
type Parked = (Proto, PeerId, Vec<u8>, SendReply);

/// The task that owns the swarm. Run it with [`EventLoop::run`]; it ends when every
/// [`Client`] is dropped.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    counters: Counters,
    p2p_metrics: P2pMetrics,
    policy: RecordPolicy,
    listen_addrs: Vec<Multiaddr>,
    pending_put: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>>,
    pending_get: HashMap<kad::QueryId, (Vec<Vec<u8>>, GetReply)>,
    pending_send: HashMap<(Proto, OutboundRequestId), SendReply>,
    /// Requests waiting for a lookup of their peer's addresses, each with its protocol.
    pending_lookup: HashMap<kad::QueryId, Vec<Parked>>,
    pending_dial: Vec<oneshot::Sender<Result<(), String>>>,
    pending_dials: HashMap<kad::QueryId, PeerId>,
    /// When each connected peer was last used by Kith (a request, an answer, a group message),
    /// and whether it ever was (else: when it connected).
    last_used: HashMap<PeerId, (Instant, bool)>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("peer_id", self.swarm.local_peer_id()).finish()
    }
}

fn now_ms() -> u64 {
    crate::now_ms()
}

impl EventLoop {
    /// Runs until every client is gone.
    pub async fn run(mut self) {
        let mut reap = tokio::time::interval(REAP_INTERVAL);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = reap.tick() => self.reap_idle(),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
            }
        }
        debug!("network task stopped");
    }

    fn pending(&self) -> usize {
        self.pending_put.len()
            + self.pending_get.len()
            + self.pending_lookup.len()
            + self.pending_dials.len()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::PutRecord { key, value, expires_at, reply } => {
                if self.pending() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many DHT queries in flight".into()));
                    return;
                }
                let mut record = kad::Record::new(key, value);
                record.expires = Some(instant_at(expires_at));
                match self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    Ok(id) => {
                        self.pending_put.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("local store refused the record: {e:?}")));
                    }
                }
            }
            Command::GetRecords { key, reply } => {
                if self.pending() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many DHT queries in flight".into()));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
                self.pending_get.insert(id, (Vec::new(), reply));
            }
            Command::Request { proto, peer, addrs, bytes, reply } => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                if self.pending_send.len() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many requests in flight".into()));
                } else if matches!(proto, Proto::Mailbox | Proto::Link)
                    || self.swarm.is_connected(&peer)
                {
                    self.send_request(proto, peer, bytes, reply);
                } else if self.pending() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many DHT queries in flight".into()));
                } else {
                    // Find the peer's addresses first; the request is sent when the lookup ends.
                    let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.pending_lookup.entry(id).or_default().push((proto, peer, bytes, reply));
                }
            }
            Command::Respond { reply: Reply(proto, channel), bytes } => {
                if self.swarm.behaviour_mut().rr(proto).send_response(channel, bytes).is_err() {
                    debug!("peer went away before the answer was sent");
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(NetStatus {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.listen_addrs.clone(),
                    connected_peers: self.swarm.connected_peers().count(),
                });
            }
            Command::Subscribe { topic, on } => {
                let t = gossipsub::IdentTopic::new(topic);
                let g = &mut self.swarm.behaviour_mut().gossipsub;
                let r = if on {
                    // Score params per topic, so rejected messages count against their forwarder.
                    let _ = g.set_topic_params(t.clone(), gossipsub::TopicScoreParams::default());
                    g.subscribe(&t).map(|_| ()).map_err(|e| e.to_string())
                } else {
                    g.unsubscribe(&t);
                    Ok(())
                };
                if let Err(e) = r {
                    warn!("cannot subscribe: {e}");
                }
            }
            Command::Publish { topic, data, reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(gossipsub::IdentTopic::new(topic), data);
                let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
            }
            Command::Validate { id, source, verdict } => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::DialPeer { peer } => {
                if !self.swarm.is_connected(&peer) && self.pending() < MAX_PENDING_QUERIES {
                    let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.pending_dials.insert(id, peer);
                }
            }
            Command::Dial { addr, reply } => {
                if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                if self.pending_dial.len() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many dials in flight".into()));
                    return;
                }
                match self.swarm.dial(addr) {
                    Ok(()) => self.pending_dial.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Closes connections that carry no group this node is in and were not used for
    /// [`IDLE_TIMEOUT`] (or, never used by Kith, opened [`DHT_ONLY_TIMEOUT`] ago), keeping the
    /// [`MIN_CONNECTIONS`] most recently used.
    fn reap_idle(&mut self) {
        let now = Instant::now();
        let g = &self.swarm.behaviour().gossipsub;
        let ours: Vec<&gossipsub::TopicHash> = g.topics().collect();
        let grouped: std::collections::HashSet<PeerId> = g
            .all_peers()
            .filter(|(_, topics)| topics.iter().any(|t| ours.contains(t)))
            .map(|(p, _)| *p)
            .collect();
        let mut idle: Vec<((Instant, bool), PeerId)> = self
            .swarm
            .connected_peers()
            .filter(|p| !grouped.contains(p))
            .map(|p| (self.last_used.get(p).copied().unwrap_or((now, false)), *p))
            .collect();
        let connected = self.swarm.connected_peers().count();
        // Most recently used first: those are the ones kept.
        idle.sort_by_key(|x| std::cmp::Reverse(x.0 .0));
        let keep = MIN_CONNECTIONS.saturating_sub(connected - idle.len());
        for ((used, by_kith), peer) in idle.into_iter().skip(keep) {
            let limit = if by_kith { IDLE_TIMEOUT } else { DHT_ONLY_TIMEOUT };
            if now.duration_since(used) >= limit {
                debug!(%peer, "closing an idle connection");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn touch(&mut self, peer: PeerId) {
        if let Some(t) = self.last_used.get_mut(&peer) {
            *t = (Instant::now(), true);
        }
    }

    fn send_request(&mut self, proto: Proto, peer: PeerId, bytes: Vec<u8>, reply: SendReply) {
        self.touch(peer);
        let id = self.swarm.behaviour_mut().rr(proto).send_request(&peer, bytes);
        self.pending_send.insert((proto, id), reply);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.p2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a);
                info!(%full, "listening");
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a);
                self.listen_addrs.retain(|a| a != &full);
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } => {
                self.last_used.entry(peer_id).or_insert((Instant::now(), false));
                for reply in self.pending_dial.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    // Never block the swarm: if the node is busy it will retry on its timer.
                    let _ = self.events.try_send(Event::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.last_used.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                for reply in self.pending_dial.drain(..) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => {
                self.p2p_metrics.record(&e);
                self.on_kad(e);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dm(e)) => self.on_rr(Proto::Dm, e),
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(e)) => self.on_rr(Proto::Mailbox, e),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_rr(Proto::Sync, e),
            SwarmEvent::Behaviour(BehaviourEvent::Link(e)) => self.on_rr(Proto::Link, e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.touch(propagation_source);
                let event = Event::GroupMessage {
                    source: propagation_source,
                    id: message_id,
                    data: message.data,
                };
                if let Err(mpsc::error::TrySendError::Full(Event::GroupMessage {
                    source,
                    id,
                    ..
                })) = self.events.try_send(event)
                {
                    self.counters.busy.inc();
                    self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &id,
                        &source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.p2p_metrics.record(&e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.p2p_metrics.record(&e),
            _ => {}
        }
    }

    fn on_get_record(&mut self, id: kad::QueryId, r: kad::GetRecordResult, last: bool) {
        match r {
            Ok(kad::GetRecordOk::FoundRecord(found)) => {
                if let Some((records, _)) = self.pending_get.get_mut(&id) {
                    if records.len() < 64 {
                        records.push(found.record.value);
                    }
                }
                if last {
                    self.finish_get(id, None);
                }
            }
            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => {
                self.finish_get(id, None)
            }
            Err(e) => {
                let err = match e {
                    kad::GetRecordError::NotFound { .. } => None,
                    other => Some(format!("{other:?}")),
                };
                self.finish_get(id, err);
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
            } => self.on_inbound_put(source, record),
            kad::Event::OutboundQueryProgressed { id, result, step, stats } => match result {
                kad::QueryResult::PutRecord(r) => {
                    if let Some(reply) = self.pending_put.remove(&id) {
                        let _ = reply.send(r.map(|_| ()).map_err(|e| match e {
                            kad::PutRecordError::QuorumFailed { .. } => "no peer stored the record (is this node connected to the network?)".to_owned(),
                            kad::PutRecordError::Timeout { .. } => "timed out storing the record".to_owned(),
                        }));
                    }
                }
                kad::QueryResult::GetRecord(r) if step.last || r.is_err() => {
                    self.counters.dht_lookups.inc();
                    self.counters.dht_lookup_requests.inc_by(u64::from(stats.num_requests()));
                    self.on_get_record(id, r, step.last);
                }
                kad::QueryResult::GetRecord(r) => self.on_get_record(id, r, step.last),
                kad::QueryResult::GetClosestPeers(r) => {
                    let peers = match r {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    for info in peers {
                        for addr in info.addrs {
                            self.swarm.add_peer_address(info.peer_id, addr);
                        }
                    }
                    if step.last {
                        if let Some(peer) = self.pending_dials.remove(&id) {
                            let _ = self.swarm.dial(peer);
                        }
                        for (proto, peer, bytes, reply) in
                            self.pending_lookup.remove(&id).unwrap_or_default()
                        {
                            self.send_request(proto, peer, bytes, reply);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn finish_get(&mut self, id: kad::QueryId, err: Option<String>) {
        if let Some((records, reply)) = self.pending_get.remove(&id) {
            let _ = match err {
                Some(e) if records.is_empty() => reply.send(Err(e)),
                _ => reply.send(Ok(records)),
            };
        }
    }

    /// A peer asks us to store a name record: verify it, check it against the one we hold, and
    /// store it only if it passes.
    fn on_inbound_put(&mut self, source: PeerId, mut record: kad::Record) {
        let now = now_ms();
        let new =
            match NameRecord::verify(&record.value, Some(record.key.as_ref()), now, &self.policy) {
                Ok(v) => v,
                Err(e) => {
                    self.counters.records_rejected.inc();
                    debug!(%source, "rejected name record: {e}");
                    return;
                }
            };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Some(held) = store.get(&record.key) {
            if let Ok(held) =
                NameRecord::verify(&held.value, Some(record.key.as_ref()), now, &self.policy)
            {
                if let Err(e) = check_replaces(&new, &held) {
                    self.counters.records_rejected.inc();
                    debug!(%source, "refused name record: {e}");
                    return;
                }
            }
        }
        record.expires = Some(instant_at(new.expires_at));
        if let Err(e) = store.put(record) {
            warn!("record store full or refused: {e:?}");
        }
    }

    fn on_rr(&mut self, proto: Proto, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        if let request_response::Event::Message { peer, .. } = &event {
            self.touch(*peer);
        }
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let reply = Reply(proto, channel);
                    let event = (proto.spec().event)(peer, request, reply);
                    if let Err(mpsc::error::TrySendError::Full(
                        Event::InboundEnvelope { reply, .. }
                        | Event::MailboxRequest { reply, .. }
                        | Event::SyncRequest { reply, .. }
                        | Event::LinkRequest { reply, .. },
                    )) = self.events.try_send(event)
                    {
                        self.counters.busy.inc();
                        let busy = (proto.spec().busy)();
                        let _ = self.swarm.behaviour_mut().rr(proto).send_response(reply.1, busy);
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending_send.remove(&(proto, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let request_response::OutboundFailure::Io(_) = error {
                    self.counters.frames_rejected.inc();
                }
                if let Some(reply) = self.pending_send.remove(&(proto, request_id)) {
                    let _ = reply.send(Err(format!("peer {peer} not reachable: {error}")));
                }
            }
            request_response::Event::InboundFailure {
                error: request_response::InboundFailure::Io(e),
                peer,
                ..
            } => {
                self.counters.frames_rejected.inc();
                debug!(%peer, "malformed frame: {e}");
            }
            _ => {}
        }
    }
}

/// The `Instant` corresponding to a wall-clock time in milliseconds (now if it has passed).
fn instant_at(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a test waits for anything before it fails.
    const WAIT: Duration = Duration::from_secs(10);

    type Started = (Client, mpsc::Receiver<Event>, PeerId, Registry);

    /// Starts an event loop on the memory transport and spawns it.
    fn start(listen: bool, bootstrap: Vec<Multiaddr>, event_capacity: usize) -> Started {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut registry = Registry::default();
        let config = NetworkConfig {
            transport: TransportKind::Memory,
            listen: if listen { vec!["/memory/0".parse().unwrap()] } else { vec![] },
            bootstrap,
            pow_bits: 8,
            relay: false,
        };
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
                Ok(Some(Event::PeerConnected(_))) => continue,
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

    /// Each row of the protocol table sits at its protocol's index, with the names and limits
    /// the wire has always had.
    #[test]
    fn the_protocol_table_keeps_names_and_limits() {
        let rows: Vec<_> = RR_PROTOCOLS
            .iter()
            .map(|r| (r.proto, r.name.as_ref().to_owned(), r.max_request, r.max_response))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Proto::Dm, "/kith/dm/1".to_owned(), MAX_DM_REQUEST, MAX_DM_RESPONSE),
                (
                    Proto::Mailbox,
                    "/kith/mailbox/1".to_owned(),
                    MAX_MAILBOX_REQUEST,
                    MAX_MAILBOX_RESPONSE
                ),
                (Proto::Sync, "/kith/sync/1".to_owned(), 4096, MAX_MAILBOX_RESPONSE),
                (
                    Proto::Link,
                    "/kith/link/1".to_owned(),
                    kith_protocol::link::MAX_LINK_REQUEST,
                    kith_protocol::link::MAX_LINK_RESPONSE
                ),
            ]
        );
        for p in [Proto::Dm, Proto::Mailbox, Proto::Sync, Proto::Link] {
            assert_eq!(p.spec().proto, p);
        }
        let dm = DeliveryAck::from_bytes(&(Proto::Dm.spec().busy)()).unwrap();
        assert_eq!(dm.status, AckStatus::Busy);
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
}
