//! The mailbox service of `kith daemon --mailbox`: enrollment, deposits within quotas and the
//! rate limit (`rules::mailbox`), fetching and deleting by the enrolled device, retention, and
//! telling a device that mail waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::Envelope;
use libp2p::PeerId;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules;

use kith_protocol::mailbox::{
    MailId, MailItem, MailboxRequest, MailboxResponse, MAX_FETCH, MAX_MAILBOX_RESPONSE,
};

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
        let c = &self.ctx.counters;
        let refuse = |reason: &str, label: &str| {
            c.mailbox_refused(label);
            (MailboxResponse::Refused { reason: reason.to_owned() }, None)
        };
        let request = match MailboxRequest::from_bytes(bytes) {
            Ok(r) => r,
            Err(e) => return refuse(&format!("malformed request: {e}"), "malformed"),
        };
        if let MailboxRequest::Notify = request {
            if self.mailbox_client.is_my_mailbox(&peer) {
                self.mailbox_client.wake_fetch.notify_one();
            }
            return (MailboxResponse::Ok, None);
        }
        let cfg = &self.ctx.mailbox;
        if !cfg.enabled {
            return refuse("this node is not a mailbox", "not_a_mailbox");
        }
        let store = &self.ctx.store;
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
                let held =
                    HeldEnvelope { id: env.digest(), envelope, deposited_at: self.ctx.now() };
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
            tokio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        }
    }
}
