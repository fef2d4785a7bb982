//! Mailboxes, both sides: the client (enrolling, depositing for others, fetching one's own mail,
//! delivery receipts) and the service run by `kith daemon --mailbox`.

use std::time::Duration;

use kith_protocol::mailbox::{
    MailId, MailItem, MailboxRequest, MailboxResponse, MAX_FETCH, MAX_MAILBOX_RESPONSE,
};
use kith_protocol::name::{MailboxPeer, MAX_MAILBOXES};
use kith_protocol::{Content, Envelope, IdentityPublic, MessageId, ReceiptKind};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::error::{NodeError, OrWarn};
use crate::network::Client;
use crate::node::{Accepted, Node};
use crate::now_ms;
use crate::store::{DepositRefusal, HeldEnvelope};

/// How often a device fetches from its mailboxes even without a notice.
pub const FETCH_INTERVAL: Duration = Duration::from_secs(300);
/// How often a mailbox node expires old envelopes and recounts what it holds.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

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

/// The ed25519 device key behind a peer id, if it is one.
pub(crate) fn device_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    pk.try_into_ed25519().ok().map(|k| k.to_bytes())
}

fn parse_addrs(addrs: &[String]) -> Vec<Multiaddr> {
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

impl Node {
    /// The mailboxes listed in this user's record.
    pub(crate) fn my_mailboxes(&self) -> Result<Vec<MailboxPeer>, NodeError> {
        Ok(self.inner.store.meta_get::<Vec<MailboxPeer>>("mailboxes")?.unwrap_or_default())
    }

    /// The mailboxes, for the API.
    pub fn mailboxes(&self) -> Result<Vec<MailboxView>, NodeError> {
        Ok(self.my_mailboxes()?.iter().map(view).collect())
    }

    /// Enrolls this device with the mailbox at `addr` (ending in `/p2p/<peer id>`), lists it in
    /// the name record and republishes the record.
    pub async fn add_mailbox(&self, addr: &str) -> Result<MailboxView, NodeError> {
        let addr: Multiaddr = addr
            .trim()
            .parse()
            .map_err(|e| NodeError::BadInput(format!("not a multiaddr: {e}")))?;
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(NodeError::BadInput(format!("{addr} must end in /p2p/<peer id>")));
        };
        let request = MailboxRequest::Enroll { cert: self.inner.keys.cert.clone() }.to_bytes();
        let answer = self
            .inner
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
        let mut list = self.my_mailboxes()?;
        list.retain(|m| m.peer_id != entry.peer_id);
        if list.len() >= MAX_MAILBOXES {
            return Err(NodeError::NotAllowed(format!(
                "at most {MAX_MAILBOXES} mailboxes; remove one first"
            )));
        }
        list.push(entry.clone());
        self.inner.store.meta_set("mailboxes", &list)?;
        self.republish().await?;
        info!(%peer, "enrolled with a mailbox");
        self.inner.wake_fetch.notify_one();
        Ok(view(&entry))
    }

    /// Removes a mailbox from the record and republishes it.
    pub async fn remove_mailbox(&self, peer_id: &str) -> Result<(), NodeError> {
        let mut list = self.my_mailboxes()?;
        let before = list.len();
        list.retain(|m| view(m).peer_id != peer_id.trim());
        if list.len() == before {
            return Err(NodeError::NotFound(format!("mailbox {peer_id}")));
        }
        self.inner.store.meta_set("mailboxes", &list)?;
        self.republish().await
    }

    async fn republish(&self) -> Result<(), NodeError> {
        // A linked device cannot sign the record; the device holding the identity key lists
        // the mailbox (this device is enrolled with it either way).
        if self.inner.keys.identity.is_none() {
            return self.inner.store.flush().await;
        }
        if let Some(name) = self.name() {
            let _guard = self.inner.publish_lock.lock().await;
            self.publish(&name).await?;
            self.inner.store.meta_set("published_at", &now_ms())?;
        }
        self.inner.store.flush().await
    }

    /// Whether `peer` is one of this user's mailboxes.
    pub(crate) fn is_my_mailbox(&self, peer: &PeerId) -> bool {
        let bytes = peer.to_bytes();
        self.my_mailboxes().map(|l| l.iter().any(|m| m.peer_id == bytes)).unwrap_or(false)
    }

    /// Fetches from the mailboxes at start, every [`FETCH_INTERVAL`], on a mailbox's notice and
    /// when a mailbox connects.
    pub(crate) async fn fetch_task(self) {
        loop {
            let mailboxes = self.my_mailboxes().or_warn("cannot read the mailboxes");
            for mb in mailboxes.unwrap_or_default() {
                match self.fetch_from(&mb).await {
                    Ok(0) => {}
                    Ok(n) => info!(n, "fetched messages from a mailbox"),
                    Err(e) => debug!("fetching from a mailbox failed: {e}"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FETCH_INTERVAL) => {}
                _ = self.inner.wake_fetch.notified() => {}
            }
        }
    }

    /// Fetches everything waiting at one mailbox: stores it, flushes, then deletes it there.
    async fn fetch_from(&self, mb: &MailboxPeer) -> Result<usize, NodeError> {
        let peer = PeerId::from_bytes(&mb.peer_id).map_err(|e| NodeError::Corrupt {
            path: "store/meta/mailboxes".into(),
            what: e.to_string(),
        })?;
        let addrs = parse_addrs(&mb.addrs);
        let mut total = 0;
        loop {
            let request = MailboxRequest::Fetch { max: MAX_FETCH }.to_bytes();
            let answer = self
                .inner
                .net
                .mailbox_request(peer, addrs.clone(), request)
                .await?
                .map_err(NodeError::Mailbox)?;
            let (items, more) = match MailboxResponse::from_bytes(&answer) {
                Ok(MailboxResponse::Envelopes { items, more }) => (items, more),
                Ok(MailboxResponse::Refused { reason }) => return Err(NodeError::Refused(reason)),
                Ok(other) => {
                    return Err(NodeError::Mailbox(format!("unexpected answer: {other:?}")))
                }
                Err(e) => return Err(NodeError::Mailbox(format!("malformed answer: {e}"))),
            };
            let mut fresh = Vec::new();
            let mut ids = Vec::with_capacity(items.len());
            for MailItem { id, envelope } in items {
                match self.accept_envelope(&envelope) {
                    Ok(Accepted::New(m)) => fresh.push(m),
                    Ok(_) => {}
                    Err(e) => {
                        self.inner.counters.envelopes_rejected.inc();
                        debug!("rejected an envelope from the mailbox: {e}");
                    }
                }
                ids.push(id);
            }
            // Only what is durably stored here is deleted there.
            self.inner.store.flush().await?;
            total += fresh.len();
            for m in fresh {
                self.announce(m, true);
            }
            if !ids.is_empty() {
                let request = MailboxRequest::Delete { ids }.to_bytes();
                self.inner
                    .net
                    .mailbox_request(peer, addrs.clone(), request)
                    .await?
                    .map_err(NodeError::Mailbox)?;
            }
            if !more {
                return Ok(total);
            }
        }
    }

    /// Sends a delivery receipt for a message that came through a mailbox, once the sender's
    /// name resolves to the key that sealed it.
    pub(crate) fn send_receipt(&self, sender: IdentityPublic, name: String, id: MessageId) {
        let node = self.clone();
        self.spawn(async move {
            match node.resolve_record(&name).await {
                Ok(r) if r.identity == sender => {
                    let receipt = Content::Receipt { kind: ReceiptKind::Delivered, ids: vec![id] };
                    if let Err(e) = node.queue(&r, receipt, false).await {
                        warn!("cannot queue a delivery receipt: {e}");
                    }
                }
                Ok(_) => debug!(%name, "not sending a receipt: the name belongs to another key"),
                Err(e) => debug!(%name, "not sending a receipt yet: {e}"),
            }
        });
    }

    /// Tells a device that envelopes wait for it here (best effort).
    pub(crate) fn notify_device(&self, device: [u8; 32]) {
        let Ok(peer) = kith_protocol::identity::peer_id_of(&device) else { return };
        let net = self.inner.net.clone();
        self.spawn(async move {
            let _ = net.mailbox_request(peer, Vec::new(), MailboxRequest::Notify.to_bytes()).await;
        });
    }

    /// Answers a mailbox request. Returns the answer and, for a new deposit, the device to
    /// notify once it is flushed.
    pub(crate) fn mailbox_request(
        &self,
        peer: PeerId,
        bytes: &[u8],
    ) -> (MailboxResponse, Option<[u8; 32]>) {
        let c = &self.inner.counters;
        let refuse = |reason: &str, label: &str| {
            c.mailbox_refused(label);
            (MailboxResponse::Refused { reason: reason.to_owned() }, None)
        };
        let request = match MailboxRequest::from_bytes(bytes) {
            Ok(r) => r,
            Err(e) => return refuse(&format!("malformed request: {e}"), "malformed"),
        };
        if let MailboxRequest::Notify = request {
            if self.is_my_mailbox(&peer) {
                self.inner.wake_fetch.notify_one();
            }
            return (MailboxResponse::Ok, None);
        }
        let cfg = &self.inner.mailbox;
        if !cfg.enabled {
            return refuse("this node is not a mailbox", "not_a_mailbox");
        }
        let store = &self.inner.store;
        let failed = |e: NodeError| {
            warn!("mailbox store error: {e}");
            c.mailbox_refused("internal");
            (
                MailboxResponse::Refused {
                    reason: "the mailbox could not store it; try later".into(),
                },
                None,
            )
        };
        match request {
            MailboxRequest::Enroll { cert } => {
                let v = match cert.verify(None) {
                    Ok(v) => v,
                    Err(e) => return refuse(&format!("invalid certificate: {e}"), "invalid"),
                };
                if v.peer_id != peer {
                    return refuse("the certificate is not the connecting device's", "invalid");
                }
                let user = v.identity.user_id();
                if !cfg.allow.is_empty() && !cfg.allow.contains(&user) {
                    return refuse(
                        &format!("user {user} is not allowed on this mailbox"),
                        "not_allowed",
                    );
                }
                match store.enroll(&v.device, &user.0) {
                    Ok(()) => (MailboxResponse::Enrolled, None),
                    Err(e) => failed(e),
                }
            }
            MailboxRequest::Deposit { envelope } => {
                if !self.within_rate(peer) {
                    return refuse(
                        &format!(
                            "rate limited: at most {} deposits a minute",
                            cfg.deposits_per_minute
                        ),
                        "rate_limited",
                    );
                }
                let env = match Envelope::from_bytes(&envelope) {
                    Ok(e) => e,
                    Err(e) => return refuse(&format!("not an envelope: {e}"), "malformed"),
                };
                match store.enrolled_user(&env.recipient) {
                    Ok(Some(user))
                        if !cfg.allow.is_empty()
                            && !cfg.allow.contains(&kith_protocol::UserId(user)) =>
                    {
                        return refuse(
                            "the recipient is no longer allowed on this mailbox",
                            "not_allowed",
                        )
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return refuse(
                            "the recipient device is not enrolled with this mailbox",
                            "not_enrolled",
                        )
                    }
                    Err(e) => return failed(e),
                }
                let held = HeldEnvelope { id: env.digest(), envelope, deposited_at: now_ms() };
                match store.deposit(&env.recipient, &held, cfg.max_messages, cfg.max_bytes) {
                    Ok(Ok(new)) => {
                        if new {
                            c.mailbox_deposits.inc();
                            c.mailbox_envelopes.inc();
                            c.mailbox_bytes.inc_by(held.envelope.len() as i64);
                        }
                        (
                            MailboxResponse::Deposited { duplicate: !new },
                            new.then_some(env.recipient),
                        )
                    }
                    Ok(Err(DepositRefusal::Messages)) => refuse(
                        &format!(
                            "over quota: the recipient already has {} messages waiting",
                            cfg.max_messages
                        ),
                        "quota",
                    ),
                    Ok(Err(DepositRefusal::Bytes)) => refuse(
                        &format!(
                            "over quota: the recipient already has {} bytes waiting",
                            cfg.max_bytes
                        ),
                        "quota",
                    ),
                    Err(e) => failed(e),
                }
            }
            MailboxRequest::Fetch { max } => {
                let Some(device) = device_of(&peer) else {
                    return refuse("not a device", "invalid");
                };
                let max = max.clamp(1, MAX_FETCH) as usize;
                match store.held(&device, max, MAX_MAILBOX_RESPONSE - 64 * 1024) {
                    Ok((items, more)) => {
                        c.mailbox_fetches.inc();
                        let items = items
                            .into_iter()
                            .map(|h| MailItem { id: MailId(h.id), envelope: h.envelope })
                            .collect();
                        (MailboxResponse::Envelopes { items, more }, None)
                    }
                    Err(e) => failed(e),
                }
            }
            MailboxRequest::Delete { ids } => {
                let Some(device) = device_of(&peer) else {
                    return refuse("not a device", "invalid");
                };
                let ids: Vec<[u8; 16]> = ids.into_iter().map(|i| i.0).collect();
                match store.release(&device, &ids) {
                    Ok(count) => {
                        self.recount_mailbox();
                        (MailboxResponse::Deleted { count }, None)
                    }
                    Err(e) => failed(e),
                }
            }
            MailboxRequest::Notify => (MailboxResponse::Ok, None),
        }
    }

    fn within_rate(&self, peer: PeerId) -> bool {
        let Ok(mut table) = self.inner.deposit_rate.lock() else { return false };
        table.allow(peer, now_ms())
    }

    fn recount_mailbox(&self) {
        if let Ok((n, bytes)) = self.inner.store.mailbox_totals() {
            self.inner.counters.mailbox_envelopes.set(n as i64);
            self.inner.counters.mailbox_bytes.set(bytes as i64);
        }
    }

    /// Expires envelopes past the retention time and recounts, every [`HOUSEKEEPING_INTERVAL`].
    pub(crate) async fn mailbox_housekeeping(self) {
        loop {
            let cutoff = now_ms().saturating_sub(self.inner.mailbox.retention.as_millis() as u64);
            match self.inner.store.expire_held(cutoff) {
                Ok(0) => {}
                Ok(n) => info!(n, "expired envelopes past the retention time"),
                Err(e) => warn!("mailbox expiry failed: {e}"),
            }
            self.recount_mailbox();
            tokio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        }
    }
}
