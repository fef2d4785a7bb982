//! The one inbound path: envelopes from peers (direct) and from mailboxes are opened, their
//! sender's device checked, handed to their content kind ([`crate::content`]), stored, flushed
//! once per batch, and only then acknowledged; group messages go to the groups service for a
//! verdict; mailbox, sync and link requests to their services; a new connection wakes whatever
//! waits for that peer.

use kith_protocol::mailbox::{MailItem, MailboxRequest, MailboxResponse, MAX_FETCH};
use kith_protocol::name::MailboxPeer;
use kith_protocol::ReceiptKind;
use kith_protocol::{
    AckStatus, Content, ConversationId, DeliveryAck, Envelope, IdentityPublic, MessageId, Opened,
};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::content::{self, Accepted};
use crate::error::{NodeError, OrWarn};
use crate::network::Event;
use crate::services::mailbox_client::{parse_addrs, FETCH_INTERVAL};
use crate::services::sessions::OpenError;
use crate::services::Services;
use crate::views::NewMessage;
use crate::views::NodeEvent;

impl Services {
    /// Opens an envelope, checks its sender's device, and receives it by kind. A `direct` one
    /// (from a peer, not fetched from this user's mailbox) counts toward its sender's rate.
    ///
    /// Also answers the session this device now holds with the sender, if any: the sender
    /// seals its next messages in it. What opening changed of the session is written only once
    /// the message is stored, so a message refused for now (busy) opens again when retried.
    pub(crate) fn accept_envelope(
        &self,
        bytes: &[u8],
        direct: bool,
    ) -> Result<(Accepted, Option<[u8; 16]>), NodeError> {
        let bad = |e: String| NodeError::BadInput(e);
        let env = Envelope::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        let sessions = &self.outbox.sessions;
        let (opened, change) = match sessions.open(&env) {
            Ok(o) => o,
            // The key of a message opened before: it is stored already.
            Err(OpenError::Opened) => return Ok((Accepted::Duplicate, env.session_id())),
            Err(OpenError::NoSession) => return Err(NodeError::NoSession),
            Err(OpenError::Bad(e)) => return Err(bad(e)),
        };
        let accepted = self.accept_opened(opened, direct)?;
        let session = change.as_ref().map(|c| c.id());
        if let Some(change) = change {
            // The message is stored: a session that could not be written is stepped again
            // when the sender next seals in it, or replaced.
            if let Err(e) = sessions.keep(change, &env) {
                warn!("cannot write a session's new state: {e}");
            }
        }
        Ok((accepted, session))
    }

    fn accept_opened(&self, opened: Opened, direct: bool) -> Result<Accepted, NodeError> {
        let bad = |e: String| NodeError::BadInput(e);
        let m = &opened.message;
        self.records.device_allowed(&opened.sender).map_err(bad)?;
        if direct && !self.accounts.allow_inbound(m.sender.0) {
            return Err(NodeError::Busy("too many messages from this user; retry later".into()));
        }
        if m.conversation != ConversationId::direct(&m.sender, &self.ctx.user_id()) {
            return Err(bad("message is not for a conversation this device knows".into()));
        }
        content::receive(self, opened)
    }

    /// A connection to `peer` was established: wake whatever waits for it.
    pub(crate) async fn peer_connected(&self, peer: PeerId) {
        if self.mailbox_client.is_my_mailbox(&peer) {
            self.mailbox_client.wake_fetch.notify_one();
        }
        if self.groups.is_group_peer(&peer) {
            self.groups.wake_sync.notify_one();
        }
        self.outbox.peer_connected(&peer).await;
    }
}

impl Services {
    pub(crate) async fn inbound_task(self, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(64);
        loop {
            batch.clear();
            if rx.recv_many(&mut batch, 64).await == 0 {
                return;
            }
            // Store the whole batch, flush once, then answer: an ack always means durable.
            let mut replies = Vec::with_capacity(batch.len());
            let mut fresh = Vec::new();
            let mut notify = Vec::new();
            // Group messages stored in this batch: forwarded already, announced after the flush.
            let mut gossip = Vec::new();
            for event in batch.drain(..) {
                match event {
                    Event::InboundEnvelope { peer, bytes, reply } => {
                        let ack = match self.accept_envelope(&bytes, true) {
                            Ok((Accepted::New(a), session)) => {
                                fresh.push(a);
                                DeliveryAck::new(AckStatus::Stored, None).with_session(session)
                            }
                            Ok((Accepted::Duplicate, session)) => {
                                DeliveryAck::new(AckStatus::Duplicate, None).with_session(session)
                            }
                            Ok((Accepted::Applied, session)) => {
                                DeliveryAck::new(AckStatus::Stored, None).with_session(session)
                            }
                            Err(NodeError::NoSession) => {
                                debug!(%peer, "envelope of a session this device does not hold");
                                DeliveryAck::new(AckStatus::NoSession, None)
                            }
                            Err(NodeError::Busy(why)) => {
                                self.ctx.counters.envelopes_limited.inc();
                                debug!(%peer, "envelope over its sender's rate: {why}");
                                DeliveryAck::new(AckStatus::Busy, Some(why))
                            }
                            Err(e) => {
                                self.ctx.counters.envelopes_rejected.inc();
                                debug!(%peer, "rejected envelope: {e}");
                                DeliveryAck::new(AckStatus::Rejected, Some(e.to_string()))
                            }
                        };
                        replies.push((reply, ack.to_bytes()));
                    }
                    Event::MailboxRequest { peer, bytes, reply } => {
                        let (answer, deposited_for) =
                            self.mailbox_server.mailbox_request(peer, &bytes);
                        notify.extend(deposited_for);
                        replies.push((reply, answer.to_bytes()));
                    }
                    Event::LinkRequest { peer, bytes, reply } => {
                        self.ctx.spawn(self.devices.clone().answer_link(peer, bytes, reply));
                    }
                    Event::BlobRequest { peer, bytes, reply } => {
                        let media = self.media.clone();
                        self.ctx.spawn(async move { media.serve(peer, bytes, reply).await });
                    }
                    Event::SyncRequest { peer, bytes, reply } => {
                        replies.push((reply, self.groups.answer_sync(peer, &bytes).to_bytes()));
                    }
                    Event::GroupMessage { source, id, data } => {
                        let (verdict, fresh) = self.groups.accept_gossip(&data);
                        let _ = self.ctx.net.validate(id, source, verdict).await;
                        gossip.extend(fresh);
                    }
                    Event::PeerConnected(peer) => self.peer_connected(peer).await,
                    // The DHT nodes that held this user's record may have restarted meanwhile.
                    Event::Rejoined => self.records.republish_soon(),
                }
            }
            if replies.is_empty() && gossip.is_empty() {
                continue;
            }
            if let Err(e) = self.ctx.store.flush().await {
                warn!("store flush failed, not acknowledging: {e}");
                gossip.clear();
                continue;
            }
            for m in gossip.drain(..) {
                self.groups.announce_gossip(m);
            }
            for (reply, bytes) in replies {
                let _ = self.ctx.net.respond(reply, bytes).await;
            }
            for a in fresh {
                self.announce(a, false);
            }
            for device in notify {
                self.mailbox_server.notify_device(device);
            }
        }
    }

    /// Publishes a newly stored incoming message to subscribers, learns the sender's name, and
    /// (for mail fetched from a mailbox) sends a delivery receipt.
    pub(crate) fn announce(&self, a: Box<NewMessage>, receipt: bool) {
        let _ = self.ctx.events.send(NodeEvent::Message(a.view));
        self.ctx.counters.messages_received.inc();
        if let Some(name) = a.sender_name {
            if receipt {
                self.send_receipt(a.sender, name, a.id);
            } else if !a.known {
                self.records.learn_name(a.sender.user_id(), name);
            }
        }
    }

    /// Fetches from the mailboxes at start, every [`FETCH_INTERVAL`], on a mailbox's notice and
    /// when a mailbox connects.
    pub(crate) async fn fetch_task(self) {
        loop {
            let mailboxes = self.records.my_mailboxes().or_warn("cannot read the mailboxes");
            for mb in mailboxes.unwrap_or_default() {
                match self.fetch_from(&mb).await {
                    Ok(0) => {}
                    Ok(n) => info!(n, "fetched messages from a mailbox"),
                    Err(e) => debug!("fetching from a mailbox failed: {e}"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FETCH_INTERVAL) => {}
                _ = self.mailbox_client.wake_fetch.notified() => {}
            }
        }
    }

    /// Fetches everything waiting at one mailbox: stores it, flushes, then deletes it there.
    pub(crate) async fn fetch_from(&self, mb: &MailboxPeer) -> Result<usize, NodeError> {
        let peer = PeerId::from_bytes(&mb.peer_id).map_err(|e| NodeError::Corrupt {
            path: "store/meta/mailboxes".into(),
            what: e.to_string(),
        })?;
        let addrs = parse_addrs(&mb.addrs);
        let mut total = 0;
        loop {
            let request = MailboxRequest::Fetch { max: MAX_FETCH }.to_bytes();
            let answer = self
                .ctx
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
                match self.accept_envelope(&envelope, false) {
                    Ok((Accepted::New(m), _)) => fresh.push(m),
                    Ok(_) => {}
                    Err(e) => {
                        self.ctx.counters.envelopes_rejected.inc();
                        debug!("rejected an envelope from the mailbox: {e}");
                    }
                }
                ids.push(id);
            }
            // Only what is durably stored here is deleted there.
            self.ctx.store.flush().await?;
            total += fresh.len();
            for m in fresh {
                self.announce(m, true);
            }
            if !ids.is_empty() {
                let request = MailboxRequest::Delete { ids }.to_bytes();
                self.ctx
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
        self.ctx.spawn(async move {
            match node.records.resolve_record(&name).await {
                Ok(r) if r.identity == sender => {
                    let receipt = Content::Receipt { kind: ReceiptKind::Delivered, ids: vec![id] };
                    if let Err(e) = node.messaging.queue(&r, receipt, false).await {
                        warn!("cannot queue a delivery receipt: {e}");
                    }
                }
                Ok(_) => debug!(%name, "not sending a receipt: the name belongs to another key"),
                Err(e) => debug!(%name, "not sending a receipt yet: {e}"),
            }
        });
    }
}
