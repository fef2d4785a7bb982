//! The mailbox service of `kith daemon --mailbox`: enrollment, deposits within quotas and the
//! rate limit (`rules::mailbox`), fetching and deleting by the enrolled device, retention, and
//! telling a device that mail waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::mailbox::{
    MailId, MailItem, MailboxRequest, MailboxResponse, MAX_FETCH, MAX_MAILBOX_RESPONSE,
};
use kith_protocol::{DeviceCertificate, Envelope, UserId};
use libp2p::PeerId;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules;
use crate::store::{DepositRefusal, HeldEnvelope};

/// How often a mailbox node expires old envelopes and recounts what it holds.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// The ed25519 device key behind a peer id, if it is one.
pub(crate) fn device_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    pk.try_into_ed25519().ok().map(|k| k.to_bytes())
}

/// The mailbox service.
#[derive(Clone, Debug)]
pub(crate) struct MailboxServer {
    pub(crate) ctx: Ctx,
    pub(crate) mailbox_client: super::mailbox_client::MailboxClient,
    pub(crate) media: super::media::Media,
    /// Deposits per sending peer in the current minute; bounded.
    pub(crate) deposit_rate: Arc<Mutex<rules::mailbox::RateTable<PeerId>>>,
}

impl MailboxServer {
    /// Tells a device that envelopes wait for it here (best effort).
    pub(crate) fn notify_device(&self, device: [u8; 32]) {
        let Ok(peer) = kith_protocol::identity::peer_id_of(&device) else { return };
        let net = self.ctx.net.clone();
        self.ctx.spawn(async move {
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
        match self.answer(peer, bytes) {
            Ok(answer) => answer,
            Err(r) => {
                self.ctx.counters.mailbox_refused(r.label);
                (MailboxResponse::Refused { reason: r.reason }, None)
            }
        }
    }

    fn answer(&self, peer: PeerId, bytes: &[u8]) -> Answer {
        let request = MailboxRequest::from_bytes(bytes)
            .map_err(|e| refusal(format!("malformed request: {e}"), "malformed"))?;
        if let MailboxRequest::Notify = request {
            if self.mailbox_client.is_my_mailbox(&peer) {
                self.mailbox_client.wake_fetch.notify_one();
            }
            return Ok((MailboxResponse::Ok, None));
        }
        if !self.ctx.mailbox.enabled {
            return Err(refusal("this node is not a mailbox", "not_a_mailbox"));
        }
        match request {
            MailboxRequest::Enroll { cert } => self.enroll(peer, &cert),
            MailboxRequest::Deposit { envelope } => self.deposit(peer, envelope),
            MailboxRequest::Fetch { max } => self.fetch(peer, max),
            MailboxRequest::Delete { ids } => self.delete(peer, ids),
            MailboxRequest::Notify => Ok((MailboxResponse::Ok, None)),
            MailboxRequest::HoldBlob { hash } => self.hold_blob(peer, hash),
        }
    }

    fn hold_blob(&self, peer: PeerId, hash: [u8; 32]) -> Answer {
        let device = device_of(&peer).ok_or_else(|| refusal("not a device", "invalid"))?;
        let user = self.ctx.store.enrolled_user(&device).map_err(failed)?.ok_or_else(|| {
            refusal("the device is not enrolled with this mailbox", "not_enrolled")
        })?;
        Ok((self.media.hold(peer, user, hash).map_err(failed)?, None))
    }

    fn enroll(&self, peer: PeerId, cert: &DeviceCertificate) -> Answer {
        let v = cert
            .verify(None)
            .map_err(|e| refusal(format!("invalid certificate: {e}"), "invalid"))?;
        if v.peer_id != peer {
            return Err(refusal("the certificate is not the connecting device's", "invalid"));
        }
        let user = v.identity.user_id();
        let allow = &self.ctx.mailbox.allow;
        if !allow.is_empty() && !allow.contains(&user) {
            return Err(refusal(
                format!("user {user} is not allowed on this mailbox"),
                "not_allowed",
            ));
        }
        self.ctx.store.enroll(&v.device, &user.0).map_err(failed)?;
        Ok((MailboxResponse::Enrolled, None))
    }

    fn deposit(&self, peer: PeerId, envelope: Vec<u8>) -> Answer {
        let cfg = &self.ctx.mailbox;
        if !self.within_rate(peer) {
            let reason =
                format!("rate limited: at most {} deposits a minute", cfg.deposits_per_minute);
            return Err(refusal(reason, "rate_limited"));
        }
        let env = Envelope::from_bytes(&envelope)
            .map_err(|e| refusal(format!("not an envelope: {e}"), "malformed"))?;
        let store = &self.ctx.store;
        match store.enrolled_user(&env.recipient).map_err(failed)? {
            Some(user) if !cfg.allow.is_empty() && !cfg.allow.contains(&UserId(user)) => {
                return Err(refusal(
                    "the recipient is no longer allowed on this mailbox",
                    "not_allowed",
                ))
            }
            Some(_) => {}
            None => {
                return Err(refusal(
                    "the recipient device is not enrolled with this mailbox",
                    "not_enrolled",
                ))
            }
        }
        let held = HeldEnvelope { id: env.digest(), envelope, deposited_at: self.ctx.now() };
        match store
            .deposit(&env.recipient, &held, cfg.max_messages, cfg.max_bytes)
            .map_err(failed)?
        {
            Ok(new) => {
                if new {
                    let c = &self.ctx.counters;
                    c.mailbox_deposits.inc();
                    c.mailbox_envelopes.inc();
                    c.mailbox_bytes.inc_by(held.envelope.len() as i64);
                }
                Ok((MailboxResponse::Deposited { duplicate: !new }, new.then_some(env.recipient)))
            }
            Err(DepositRefusal::Messages) => Err(refusal(
                format!(
                    "over quota: the recipient already has {} messages waiting",
                    cfg.max_messages
                ),
                "quota",
            )),
            Err(DepositRefusal::Bytes) => Err(refusal(
                format!("over quota: the recipient already has {} bytes waiting", cfg.max_bytes),
                "quota",
            )),
        }
    }

    fn fetch(&self, peer: PeerId, max: u32) -> Answer {
        let device = device_of(&peer).ok_or_else(|| refusal("not a device", "invalid"))?;
        let max = max.clamp(1, MAX_FETCH) as usize;
        let (items, more) =
            self.ctx.store.held(&device, max, MAX_MAILBOX_RESPONSE - 64 * 1024).map_err(failed)?;
        self.ctx.counters.mailbox_fetches.inc();
        let items = items
            .into_iter()
            .map(|h| MailItem { id: MailId(h.id), envelope: h.envelope })
            .collect();
        Ok((MailboxResponse::Envelopes { items, more }, None))
    }

    fn delete(&self, peer: PeerId, ids: Vec<MailId>) -> Answer {
        let device = device_of(&peer).ok_or_else(|| refusal("not a device", "invalid"))?;
        let ids: Vec<[u8; 16]> = ids.into_iter().map(|i| i.0).collect();
        let count = self.ctx.store.release(&device, &ids).map_err(failed)?;
        self.recount_mailbox();
        Ok((MailboxResponse::Deleted { count }, None))
    }

    pub(crate) fn within_rate(&self, peer: PeerId) -> bool {
        let Ok(mut table) = self.deposit_rate.lock() else { return false };
        table.allow(peer, self.ctx.now())
    }

    pub(crate) fn recount_mailbox(&self) {
        if let Ok((n, bytes)) = self.ctx.store.mailbox_totals() {
            self.ctx.counters.mailbox_envelopes.set(n as i64);
            self.ctx.counters.mailbox_bytes.set(bytes as i64);
        }
    }

    /// Expires envelopes past the retention time and recounts, every [`HOUSEKEEPING_INTERVAL`].
    pub(crate) async fn mailbox_housekeeping(self) {
        loop {
            let cutoff =
                self.ctx.now().saturating_sub(self.ctx.mailbox.retention.as_millis() as u64);
            match self.ctx.store.expire_held(cutoff) {
                Ok(0) => {}
                Ok(n) => info!(n, "expired envelopes past the retention time"),
                Err(e) => warn!("mailbox expiry failed: {e}"),
            }
            self.recount_mailbox();
            self.media.expire_held(self.ctx.now());
            tokio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        }
    }
}

/// An answer to a mailbox request, and the device to notify of a new deposit.
type Answer = Result<(MailboxResponse, Option<[u8; 32]>), Refusal>;

/// Why the mailbox refuses a request: the reason the peer is told, and the metrics label.
#[derive(Debug)]
struct Refusal {
    reason: String,
    label: &'static str,
}

fn refusal(reason: impl Into<String>, label: &'static str) -> Refusal {
    Refusal { reason: reason.into(), label }
}

/// A store failure: logged here; the peer is told to try later.
fn failed(e: NodeError) -> Refusal {
    warn!("mailbox store error: {e}");
    refusal("the mailbox could not store it; try later", "internal")
}
