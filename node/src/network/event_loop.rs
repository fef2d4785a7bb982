//! [`EventLoop`]: the one task that owns the swarm, serving the client's commands and turning
//! swarm events into the node's [`Event`]s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kith_protocol::name::check_replaces;
use kith_protocol::{NameRecord, RecordPolicy};
use libp2p::kad::store::RecordStore;
use libp2p::metrics::{Metrics as P2pMetrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{gossipsub, identify, kad, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{
    Command, Event, FoundCopy, NetStatus, Proto, Reply, SendReply, Verdict, DHT_ONLY_TIMEOUT,
    GROUP_PEERS_KEPT, IDLE_TIMEOUT, KAD_PROTOCOL, MAX_PENDING_QUERIES, MIN_CONNECTIONS,
    REAP_INTERVAL, REDIAL_KNOWN,
};
use crate::metrics::Counters;
use crate::rules::redial::Redial;

type GetReply = oneshot::Sender<Result<Vec<FoundCopy>, String>>;
/// A lookup under way: the copies found so far, how many of them are valid, whether it asks
/// every closest peer (not only until the quorum), the reply.
type PendingGet = (Vec<FoundCopy>, usize, bool, GetReply);
/// A request waiting for a lookup of its peer's addresses: protocol, peer, bytes, reply.
type Parked = (Proto, PeerId, Vec<u8>, SendReply);

/// The task that owns the swarm. Run it with [`EventLoop::run`]; it ends when every
/// [`Client`](super::Client) is dropped.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    counters: Counters,
    p2p_metrics: P2pMetrics,
    policy: RecordPolicy,
    listen_addrs: Vec<Multiaddr>,
    pending_put: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>>,
    /// Lookups under way: the records found so far, how many of them are valid, the reply.
    pending_get: HashMap<kad::QueryId, PendingGet>,
    pending_send: HashMap<(Proto, OutboundRequestId), SendReply>,
    /// Requests waiting for a lookup of their peer's addresses, each with its protocol.
    pending_lookup: HashMap<kad::QueryId, Vec<Parked>>,
    /// Dials by address (`Client::dial`), by connection: each hears of its own connection only.
    pending_dial: HashMap<ConnectionId, oneshot::Sender<Result<(), String>>>,
    pending_dials: HashMap<kad::QueryId, PeerId>,
    /// When each connected peer was last used by Kith (a request, an answer, a group message),
    /// and whether it ever was (else: when it connected).
    last_used: HashMap<PeerId, (Instant, bool)>,
    /// The configured bootstrap peers, redialed while the node has no connection at all.
    pub(super) bootstrap: Vec<Multiaddr>,
    /// Whether a check found the node without any connection (cleared by the next one).
    isolated: bool,
    /// When each bootstrap or known peer may be dialed again (`rules::redial`).
    redial: Redial<PeerId>,
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
    /// An event loop over `swarm`, with nothing pending.
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        counters: Counters,
        p2p_metrics: P2pMetrics,
        policy: RecordPolicy,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            counters,
            p2p_metrics,
            policy,
            listen_addrs: Vec::new(),
            pending_put: HashMap::new(),
            pending_get: HashMap::new(),
            pending_send: HashMap::new(),
            pending_lookup: HashMap::new(),
            pending_dial: HashMap::new(),
            pending_dials: HashMap::new(),
            last_used: HashMap::new(),
            bootstrap: Vec::new(),
            isolated: false,
            redial: Redial::default(),
        }
    }

    /// Runs until every client is gone.
    pub async fn run(mut self) {
        // Not at once: the bootstrap dials made at start are still under way.
        let mut reap =
            tokio::time::interval_at(tokio::time::Instant::now() + REAP_INTERVAL, REAP_INTERVAL);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = reap.tick() => {
                    self.reap_idle();
                    self.redial_if_too_few();
                }
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
            Command::GetRecords { key, all, reply } => {
                if self.pending() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err("too many DHT queries in flight".into()));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
                self.pending_get.insert(id, (Vec::new(), 0, all, reply));
            }
            Command::Request { proto, peer, addrs, bytes, reply } => {
                self.request(proto, peer, addrs, bytes, reply)
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
                    routing_peers: self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .kbuckets()
                        .map(|b| b.num_entries())
                        .sum(),
                });
            }
            Command::TopicPeers { topic, reply } => {
                let hash = gossipsub::IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Subscribe { topic, on } => self.subscribe(topic, on),
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
            Command::Dial { addr, reply } => self.dial(addr, reply),
        }
    }

    /// Sends a request now if the peer is connected (or the protocol dials by address), else
    /// after a DHT lookup of the peer's addresses.
    fn request(
        &mut self,
        proto: Proto,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bytes: Vec<u8>,
        reply: SendReply,
    ) {
        let has_addrs = !addrs.is_empty();
        for addr in addrs {
            self.swarm.add_peer_address(peer, addr);
        }
        if self.pending_send.len() >= MAX_PENDING_QUERIES {
            let _ = reply.send(Err("too many requests in flight".into()));
        } else if matches!(proto, Proto::Mailbox | Proto::Link)
            || (proto == Proto::Blob && has_addrs)
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

    /// Joins (or, with `on == false`, leaves) a gossipsub topic.
    fn subscribe(&mut self, topic: String, on: bool) {
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

    /// Dials an address; `reply` hears when a connection is established or fails.
    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<(), String>>) {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if self.pending_dial.len() >= MAX_PENDING_QUERIES {
            let _ = reply.send(Err("too many dials in flight".into()));
            return;
        }
        // An address dial, even to a peer already connected: it proves this address reaches
        // the peer named in its /p2p part (another peer there fails with a wrong peer id).
        let opts = DialOpts::from(addr);
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dial.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    /// With fewer than [`MIN_CONNECTIONS`] connections, dial peers again: up to
    /// [`REDIAL_KNOWN`] of the routing table that are not connected and the bootstrap peers
    /// (these first when the node has no connection at all), no more at a time than the
    /// connections missing, each with a growing wait (`rules::redial`). Without this a node cut
    /// off once (its bootstrap peers restarting, say) stays cut off.
    fn redial_if_too_few(&mut self) {
        let connected = self.swarm.connected_peers().count();
        let isolated = connected == 0;
        if isolated && !self.isolated && !self.bootstrap.is_empty() {
            info!("no connection to any peer: dialing the bootstrap peers again");
        }
        self.isolated = isolated;
        let missing = MIN_CONNECTIONS.saturating_sub(connected);
        let bootstrap: Vec<PeerId> = self
            .bootstrap
            .iter()
            .filter_map(|a| match a.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            })
            .collect();
        let mut known: Vec<PeerId> = Vec::new();
        if missing > 0 {
            let table: Vec<PeerId> = self
                .swarm
                .behaviour_mut()
                .kad
                .kbuckets()
                .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                .collect();
            known = table
                .into_iter()
                .filter(|p| !bootstrap.contains(p) && !self.swarm.is_connected(p))
                .take(REDIAL_KNOWN)
                .collect();
        }
        // Cut off: the configured peers first. Short of connections: spread the dials over the
        // network rather than all nodes dialing the same few bootstrap peers.
        let peers: Vec<PeerId> = if isolated {
            bootstrap.into_iter().chain(known).collect()
        } else {
            known.into_iter().chain(bootstrap).collect()
        };
        let swarm = &self.swarm;
        let due = self.redial.due(now_ms(), missing, &peers, |p| swarm.is_connected(p));
        for peer in due {
            let addrs: Vec<Multiaddr> = self
                .bootstrap
                .iter()
                .filter(|a| matches!(a.iter().last(), Some(Protocol::P2p(p)) if p == peer))
                .cloned()
                .collect();
            // A bootstrap peer by its configured address; a known peer by the addresses the
            // routing table holds.
            let opts = if addrs.is_empty() {
                DialOpts::peer_id(peer).build()
            } else {
                DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .build()
            };
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "cannot dial a known peer again: {e}");
            }
        }
        self.redial.retain(&peers);
    }

    /// Closes connections that were not used for [`IDLE_TIMEOUT`] (or, never used by Kith,
    /// opened [`DHT_ONLY_TIMEOUT`] ago), keeping the [`MIN_CONNECTIONS`] most recently used and,
    /// for each group this node is in, up to [`GROUP_PEERS_KEPT`] members subscribed to it: its
    /// gossipsub mesh first, then the most recently used. Before this limit, a node kept every
    /// connection to any member of its groups, so in a group of hundreds every connection a DHT
    /// query opened to a member stayed open (200 per node at the end of `group-300`).
    fn reap_idle(&mut self) {
        let now = Instant::now();
        let g = &self.swarm.behaviour().gossipsub;
        let mut grouped: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
        for topic in g.topics() {
            let mesh: Vec<PeerId> = g.mesh_peers(topic).copied().collect();
            let mut others: Vec<(Instant, PeerId)> = g
                .all_peers()
                .filter(|(p, topics)| topics.contains(&topic) && !mesh.contains(p))
                .map(|(p, _)| (self.last_used.get(p).map_or(now, |u| u.0), *p))
                .collect();
            others.sort_by_key(|x| std::cmp::Reverse(x.0));
            let others = others.into_iter().map(|x| x.1);
            grouped.extend(mesh.iter().copied().chain(others).take(GROUP_PEERS_KEPT));
        }
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
            SwarmEvent::ConnectionEstablished {
                peer_id, num_established, connection_id, ..
            } => {
                self.last_used.entry(peer_id).or_insert((Instant::now(), false));
                if let Some(reply) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    // Never block the swarm: if the node is busy it will retry on its timer.
                    let _ = self.events.try_send(Event::PeerConnected(peer_id));
                }
                if std::mem::take(&mut self.isolated) {
                    info!(%peer_id, "connected again after a time without any connection");
                    let _ = self.events.try_send(Event::Rejoined);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.last_used.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { error, connection_id, .. } => {
                if let Some(reply) = self.pending_dial.remove(&connection_id) {
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
            SwarmEvent::Behaviour(BehaviourEvent::Blob(e)) => self.on_rr(Proto::Blob, e),
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
                let record = found.record;
                let valid = NameRecord::verify(
                    &record.value,
                    Some(record.key.as_ref()),
                    now_ms(),
                    &self.policy,
                )
                .is_ok();
                let mut enough = false;
                if let Some((records, valid_seen, all, _)) = self.pending_get.get_mut(&id) {
                    if records.len() < 64 {
                        records.push(FoundCopy { from: found.peer, value: record.value });
                    }
                    // Valid copies from LOOKUP_QUORUM holders end the lookup: waiting for every
                    // one of the closest peers (one slow one holds it up to QUERY_TIMEOUT) is
                    // what made lookups take tens of seconds on a busy network.
                    *valid_seen += usize::from(valid);
                    enough = !*all && *valid_seen >= super::LOOKUP_QUORUM;
                }
                if last {
                    self.finish_get(id, None);
                } else if enough {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
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
                // A bootstrap is a lookup of this node's own id, then one of a random key in
                // every bucket farther than its closest neighbour: hundreds of peers over new
                // connections. Only the first few refreshes run (see BOOTSTRAP_REFRESHES).
                kad::QueryResult::Bootstrap(_)
                    if !step.last && step.count.get() > super::BOOTSTRAP_REFRESHES =>
                {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn finish_get(&mut self, id: kad::QueryId, err: Option<String>) {
        if let Some((records, _, _, reply)) = self.pending_get.remove(&id) {
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
                        | Event::LinkRequest { reply, .. }
                        | Event::BlobRequest { reply, .. },
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
                if let Some(reply) = self.pending_send.remove(&(proto, request_id)) {
                    let _ = reply.send(Err(format!("peer {peer} not reachable: {error}")));
                }
            }
            request_response::Event::InboundFailure {
                error: request_response::InboundFailure::Io(e),
                peer,
                ..
            } => {
                // A frame refused as it was read is counted by the codec.
                debug!(%peer, "inbound stream failed: {e}");
            }
            _ => {}
        }
    }
}

/// The `Instant` corresponding to a wall-clock time in milliseconds (now if it has passed).
fn instant_at(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms()))
}
