//! The libp2p behaviour (connection limits, Kademlia, the request-response protocols, identify,
//! ping, gossipsub, relay) and the swarm built from it.

use std::num::NonZeroUsize;
use std::time::Duration;

use kith_protocol::name::MAX_RECORD_SIZE;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, gossipsub, identify, kad, noise, ping, relay, tcp, yamux, Swarm};
use prometheus_client::metrics::counter::Counter;

use super::{
    FrameCodec, Proto, TransportKind, BLOB_TIMEOUT, BOOTSTRAP_INTERVAL, DM_TIMEOUT,
    IDENTIFY_VERSION, IDLE_TIMEOUT, KAD_PROTOCOL, MAX_CONNECTIONS_PER_PEER, MAX_DM_STREAMS,
    MAX_PENDING_INCOMING, MAX_STORED_RECORDS, QUERY_TIMEOUT,
};
use crate::error::NodeError;

/// The libp2p behaviour; connection limits come first so they are checked first.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    addresses: super::address_limits::Behaviour,
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    dm: request_response::Behaviour<FrameCodec>,
    mailbox: request_response::Behaviour<FrameCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    pub(super) gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<FrameCodec>,
    link: request_response::Behaviour<FrameCodec>,
    blob: request_response::Behaviour<FrameCodec>,
    relay: Toggle<relay::Behaviour>,
}

impl Behaviour {
    /// The request-response behaviour of `proto` (the one place that maps one to the other).
    pub(super) fn rr(&mut self, proto: Proto) -> &mut request_response::Behaviour<FrameCodec> {
        match proto {
            Proto::Dm => &mut self.dm,
            Proto::Mailbox => &mut self.mailbox,
            Proto::Sync => &mut self.sync,
            Proto::Link => &mut self.link,
            Proto::Blob => &mut self.blob,
        }
    }
}

fn behaviour(
    key: &libp2p::identity::Keypair,
    relay_server: bool,
    limits_of: super::Limits,
    rejected: &Counter,
) -> Behaviour {
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
    kad.set_mode(Some(if limits_of.dht_server { kad::Mode::Server } else { kad::Mode::Client }));
    let rr = |proto: Proto| {
        let spec = proto.spec();
        request_response::Behaviour::with_codec(
            FrameCodec::new(spec.max_request, spec.max_response).counting(rejected.clone()),
            [(spec.name.clone(), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(if proto == Proto::Blob { BLOB_TIMEOUT } else { DM_TIMEOUT })
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
            .with_max_established(Some(limits_of.max_connections))
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
    let blob = rr(Proto::Blob);
    let gossipsub = gossip(key);
    let addresses = super::address_limits::Behaviour::new(limits_of.per_address);
    Behaviour {
        limits,
        addresses,
        kad,
        dm,
        mailbox,
        identify,
        ping,
        gossipsub,
        sync,
        link,
        blob,
        relay,
    }
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

pub(super) fn build_swarm(
    key: libp2p::identity::Keypair,
    transport: TransportKind,
    relay: bool,
    limits: super::Limits,
    rejected: Counter,
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
            .with_behaviour(|k| behaviour(k, relay, limits, &rejected))
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
            .with_behaviour(|k| behaviour(k, relay, limits, &rejected))
            .map_err(|e| err(&e))?
            .with_swarm_config(cfg)
            .build()
        }
        TransportKind::Custom(make) => b
            .with_other_transport(|key| make(key))
            .map_err(|e| err(&e))?
            .with_behaviour(|k| behaviour(k, relay, limits, &rejected))
            .map_err(|e| err(&e))?
            .with_swarm_config(cfg)
            .build(),
    };
    Ok(swarm)
}
