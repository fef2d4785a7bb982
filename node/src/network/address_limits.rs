//! Connection limits per remote address and per subnet, so that a handful of silent sockets
//! from one place cannot take every slot of the global limits (`connection_limits`: 64 pending
//! incoming, 512 established) and lock everyone else out.
//!
//! A subnet is an IPv4 /24 or an IPv6 /48. Pending limits apply to incoming connections still
//! in their handshake (a silent socket holds such a slot for the 10 s handshake timeout);
//! established limits are checked for incoming connections and count both directions.
//! Connections without an IP address (the in-memory transport) are not limited here.
//!
//! [`AddressLimits`] is the rule, pure and tested on its own; [`Behaviour`] applies it in the
//! swarm.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, DialFailure, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Most incoming connections in their handshake from one IP address.
pub const MAX_PENDING_PER_IP: usize = 8;
/// Most incoming connections in their handshake from one subnet (IPv4 /24, IPv6 /48).
pub const MAX_PENDING_PER_SUBNET: usize = 16;
/// Most established connections with one IP address (an incoming one beyond it is refused).
pub const MAX_ESTABLISHED_PER_IP: usize = 64;
/// Most established connections with one subnet.
pub const MAX_ESTABLISHED_PER_SUBNET: usize = 128;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// [`MAX_PENDING_PER_IP`] reached for this address.
    #[error("too many pending connections from {0}")]
    PendingPerIp(IpAddr),
    /// [`MAX_PENDING_PER_SUBNET`] reached for this address's subnet.
    #[error("too many pending connections from the subnet of {0}")]
    PendingPerSubnet(IpAddr),
    /// [`MAX_ESTABLISHED_PER_IP`] reached for this address.
    #[error("too many connections with {0}")]
    EstablishedPerIp(IpAddr),
    /// [`MAX_ESTABLISHED_PER_SUBNET`] reached for this address's subnet.
    #[error("too many connections with the subnet of {0}")]
    EstablishedPerSubnet(IpAddr),
}

/// The subnet an address is counted in: its first 24 bits (IPv4) or 48 bits (IPv6).
fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// The counts behind the limits, keyed by connection.
#[derive(Debug)]
pub struct AddressLimits<K> {
    pending: HashMap<K, IpAddr>,
    established: HashMap<K, IpAddr>,
}

impl<K> Default for AddressLimits<K> {
    fn default() -> Self {
        AddressLimits { pending: HashMap::new(), established: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy> AddressLimits<K> {
    fn count(map: &HashMap<K, IpAddr>, ip: IpAddr) -> (usize, usize) {
        let net = subnet(ip);
        map.values().fold((0, 0), |(same, near), other| {
            (same + usize::from(*other == ip), near + usize::from(subnet(*other) == net))
        })
    }

    /// An incoming connection from `ip` starts its handshake: admitted (and counted) or refused.
    pub fn admit_pending(&mut self, key: K, ip: IpAddr) -> Result<(), Refusal> {
        let (same, near) = Self::count(&self.pending, ip);
        if same >= MAX_PENDING_PER_IP {
            return Err(Refusal::PendingPerIp(ip));
        }
        if near >= MAX_PENDING_PER_SUBNET {
            return Err(Refusal::PendingPerSubnet(ip));
        }
        self.pending.insert(key, ip);
        Ok(())
    }

    /// Whether an incoming connection from `ip` may be established (it leaves the pending
    /// count either way).
    pub fn check_established(&mut self, key: K, ip: IpAddr) -> Result<(), Refusal> {
        self.pending.remove(&key);
        let (same, near) = Self::count(&self.established, ip);
        if same >= MAX_ESTABLISHED_PER_IP {
            return Err(Refusal::EstablishedPerIp(ip));
        }
        if near >= MAX_ESTABLISHED_PER_SUBNET {
            return Err(Refusal::EstablishedPerSubnet(ip));
        }
        Ok(())
    }

    /// A connection with `ip` was established (either direction).
    pub fn established(&mut self, key: K, ip: IpAddr) {
        self.pending.remove(&key);
        self.established.insert(key, ip);
    }

    /// A connection ended, or failed before it was established.
    pub fn gone(&mut self, key: K) {
        self.pending.remove(&key);
        self.established.remove(&key);
    }
}

/// The IP address in a multiaddress, if it has one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Applies [`AddressLimits`] to the swarm's connections.
#[derive(Debug)]
pub struct Behaviour {
    limits: AddressLimits<ConnectionId>,
    /// Off: no connection is refused here (many nodes on one machine's loopback).
    on: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::new(true)
    }
}

impl Behaviour {
    /// The limits, applied when `on`.
    pub fn new(on: bool) -> Self {
        Behaviour { limits: AddressLimits::default(), on }
    }
}

fn denied(r: Refusal) -> ConnectionDenied {
    tracing::debug!("connection refused: {r}");
    ConnectionDenied::new(r)
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote).filter(|_| self.on) {
            Some(ip) => self.limits.admit_pending(connection_id, ip).map_err(denied),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = ip_of(remote).filter(|_| self.on) {
            self.limits.check_established(connection_id, ip).map_err(denied)?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let Some(ip) = ip_of(e.endpoint.get_remote_address()) {
                    self.limits.established(e.connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.limits.gone(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn one_address_cannot_hold_every_pending_slot() {
        let mut l = AddressLimits::default();
        for k in 0..MAX_PENDING_PER_IP {
            l.admit_pending(k, ip("10.0.0.1")).expect("admitted");
        }
        assert_eq!(
            l.admit_pending(100, ip("10.0.0.1")),
            Err(Refusal::PendingPerIp(ip("10.0.0.1")))
        );
        // Its neighbours fill the subnet's share, then the subnet is full too.
        for k in 0..(MAX_PENDING_PER_SUBNET - MAX_PENDING_PER_IP) {
            l.admit_pending(200 + k, ip("10.0.0.2")).expect("admitted");
        }
        assert_eq!(
            l.admit_pending(300, ip("10.0.0.3")),
            Err(Refusal::PendingPerSubnet(ip("10.0.0.3")))
        );
        // Anyone else still gets in.
        l.admit_pending(400, ip("10.0.1.1")).expect("another subnet");
        l.admit_pending(401, ip("2001:db8::1")).expect("IPv6");
        // A handshake that ends (failed or established) frees its slot.
        l.gone(0);
        l.admit_pending(500, ip("10.0.0.1")).expect("a slot was freed");
        l.check_established(1, ip("10.0.0.1")).expect("established");
        l.admit_pending(501, ip("10.0.0.1")).expect("another slot was freed");
    }

    #[test]
    fn established_connections_are_limited_per_address_and_subnet() {
        let mut l = AddressLimits::default();
        for k in 0..MAX_ESTABLISHED_PER_IP {
            l.established(k, ip("192.0.2.7"));
        }
        assert_eq!(
            l.check_established(1000, ip("192.0.2.7")),
            Err(Refusal::EstablishedPerIp(ip("192.0.2.7")))
        );
        for k in 0..(MAX_ESTABLISHED_PER_SUBNET - MAX_ESTABLISHED_PER_IP) {
            l.established(2000 + k, ip("192.0.2.8"));
        }
        assert_eq!(
            l.check_established(3000, ip("192.0.2.9")),
            Err(Refusal::EstablishedPerSubnet(ip("192.0.2.9")))
        );
        l.check_established(4000, ip("198.51.100.1")).expect("another subnet");
        l.gone(0);
        l.check_established(5000, ip("192.0.2.9")).expect("a connection closed");
    }

    #[test]
    fn ipv6_subnets_are_48_bits() {
        assert_eq!(subnet(ip("2001:db8:1:2::1")), subnet(ip("2001:db8:1:ffff::9")));
        assert_ne!(subnet(ip("2001:db8:1::1")), subnet(ip("2001:db8:2::1")));
        assert_eq!(ip_of(&"/memory/5".parse().expect("addr")), None);
        assert_eq!(ip_of(&"/ip4/1.2.3.4/tcp/1".parse().expect("addr")), Some(ip("1.2.3.4")));
    }
}
