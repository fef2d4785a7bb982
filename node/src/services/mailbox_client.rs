//! The mailbox client: enrolling this device with mailboxes (listed in the name record),
//! depositing envelopes for devices that cannot be reached, and the fetch schedule (the
//! fetching itself is part of the inbound path, [`super::inbound`]).

use std::sync::Arc;
use std::time::Duration;

use kith_protocol::mailbox::{MailboxRequest, MailboxResponse};
use kith_protocol::name::MailboxPeer;
use kith_protocol::name::MAX_MAILBOXES;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::info;

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::network::Client;

/// How often a device fetches from its mailboxes even without a notice. A mailbox notifies a
/// device only if it can reach it: one that restarted no longer knows the device's address, and
/// the device does not notice the connection is gone, so this bounds how long a deposit waits.
pub const FETCH_INTERVAL: Duration = Duration::from_secs(60);

/// A mailbox as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MailboxView {
    /// Its peer id.
    pub peer_id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
}

fn view(m: &MailboxPeer) -> MailboxView {
    MailboxView {
        peer_id: PeerId::from_bytes(&m.peer_id).map(|p| p.to_string()).unwrap_or_default(),
        addrs: m.addrs.clone(),
    }
}

pub(crate) fn parse_addrs(addrs: &[String]) -> Vec<Multiaddr> {
    addrs.iter().filter_map(|a| a.parse().ok()).collect()
}

/// Deposits an envelope at the first of `mailboxes` that takes it.
pub(crate) async fn deposit(
    net: &Client,
    mailboxes: &[(Vec<u8>, Vec<String>)],
    envelope: Vec<u8>,
) -> Result<(), String> {
    let mut reasons = Vec::new();
    let request = MailboxRequest::Deposit { envelope }.to_bytes();
    for (peer, addrs) in mailboxes {
        let Ok(peer) = PeerId::from_bytes(peer) else { continue };
        match net.mailbox_request(peer, parse_addrs(addrs), request.clone()).await {
            Ok(Ok(answer)) => match MailboxResponse::from_bytes(&answer) {
                Ok(MailboxResponse::Deposited { .. }) => return Ok(()),
                Ok(MailboxResponse::Refused { reason }) => {
                    reasons.push(format!("{peer} refused: {reason}"))
                }
                Ok(other) => reasons.push(format!("{peer} answered {other:?}")),
                Err(e) => reasons.push(format!("{peer}: {e}")),
            },
            Ok(Err(e)) => reasons.push(e),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(if reasons.is_empty() { "no usable mailbox".into() } else { reasons.join("; ") })
}

/// The mailbox client service.
#[derive(Clone, Debug)]
pub(crate) struct MailboxClient {
    pub(crate) ctx: Ctx,
    pub(crate) records: super::records::Records,
    /// Wakes the fetch task (a mailbox's notice, a mailbox connected, a new mailbox).
    pub(crate) wake_fetch: Arc<Notify>,
}

impl MailboxClient {
    /// The mailboxes, for the API.
    pub(crate) fn mailboxes(&self) -> Result<Vec<MailboxView>, NodeError> {
        Ok(self.records.my_mailboxes()?.iter().map(view).collect())
    }

    /// Enrolls this device with the mailbox at `addr` (ending in `/p2p/<peer id>`), lists it in
    /// the name record and republishes the record.
    pub(crate) async fn add_mailbox(&self, addr: &str) -> Result<MailboxView, NodeError> {
        let addr: Multiaddr = addr
            .trim()
            .parse()
            .map_err(|e| NodeError::BadInput(format!("not a multiaddr: {e}")))?;
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(NodeError::BadInput(format!("{addr} must end in /p2p/<peer id>")));
        };
        // This very address must reach the peer: a connection to it through another address
        // (the DHT's) would otherwise enroll and save an address that does not work.
        self.ctx
            .net
            .dial(addr.clone())
            .await
            .map_err(|e| NodeError::Mailbox(format!("cannot reach the mailbox at {addr}: {e}")))?;
        let request = MailboxRequest::Enroll { cert: self.ctx.keys.cert.clone() }.to_bytes();
        let answer = self
            .ctx
            .net
            .mailbox_request(peer, vec![addr.clone()], request)
            .await?
            .map_err(|e| NodeError::Mailbox(format!("{peer} not reachable: {e}")))?;
        match MailboxResponse::from_bytes(&answer) {
            Ok(MailboxResponse::Enrolled) => {}
            Ok(MailboxResponse::Refused { reason }) => return Err(NodeError::Refused(reason)),
            Ok(other) => {
                return Err(NodeError::Mailbox(format!("unexpected answer from {peer}: {other:?}")))
            }
            Err(e) => return Err(NodeError::Mailbox(format!("malformed answer from {peer}: {e}"))),
        }
        let entry = MailboxPeer { peer_id: peer.to_bytes(), addrs: vec![addr.to_string()] };
        let mut list = self.records.my_mailboxes()?;
        list.retain(|m| m.peer_id != entry.peer_id);
        if list.len() >= MAX_MAILBOXES {
            return Err(NodeError::NotAllowed(format!(
                "at most {MAX_MAILBOXES} mailboxes; remove one first"
            )));
        }
        list.push(entry.clone());
        self.ctx.store.meta_set("mailboxes", &list)?;
        self.records.republish().await?;
        info!(%peer, "enrolled with a mailbox");
        self.wake_fetch.notify_one();
        Ok(view(&entry))
    }

    /// Removes a mailbox from the record and republishes it.
    pub(crate) async fn remove_mailbox(&self, peer_id: &str) -> Result<(), NodeError> {
        let mut list = self.records.my_mailboxes()?;
        let before = list.len();
        list.retain(|m| view(m).peer_id != peer_id.trim());
        if list.len() == before {
            return Err(NodeError::NotFound(format!("mailbox {peer_id}")));
        }
        self.ctx.store.meta_set("mailboxes", &list)?;
        self.records.republish().await
    }

    /// Whether `peer` is one of this user's mailboxes.
    pub(crate) fn is_my_mailbox(&self, peer: &PeerId) -> bool {
        let bytes = peer.to_bytes();
        self.records.my_mailboxes().map(|l| l.iter().any(|m| m.peer_id == bytes)).unwrap_or(false)
    }
}
