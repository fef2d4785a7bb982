//! Linking new devices to this identity (link codes, answering `/kith/link/1` with a snapshot
//! and history pages), revoking devices, and the list of the user's devices. The identity holder
//! keeps the list of the other devices (store `meta/devices`) and lists them in the name record
//! it signs ([`super::records`]).

use std::sync::{Arc, Mutex};

use kith_protocol::codec::to_vec;
use kith_protocol::identity::peer_id_of;
use kith_protocol::link::{LinkCode, LinkRequest, LinkResponse, MAX_LINK_ADDRS};
use kith_protocol::name::DeviceEntry;
use kith_protocol::name::MAX_DEVICES;
use kith_protocol::{DeviceCertificate, SignedPrekey};
use libp2p::PeerId;
use rand::RngCore;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::network::Reply;
use crate::rfc3339;
use crate::services::records::PUBLISHED_AT;

/// How long a link code is valid.
pub const LINK_CODE_TTL_MS: u64 = 5 * 60 * 1000;
/// Most link codes waiting at once on one device.
pub const MAX_PENDING_LINKS: usize = 8;
/// After a device is linked, it may page through the history for this long.
pub const LINK_HISTORY_WINDOW_MS: u64 = 30 * 60 * 1000;
/// Target size of one page of history sent to a linked device.
pub const HISTORY_PAGE_BYTES: usize = 1024 * 1024;
/// Room kept in a link answer for the certificate, the record and the mailboxes.
const SNAPSHOT_MARGIN: usize = 64 * 1024;

/// The devices service.
#[derive(Clone, Debug)]
pub(crate) struct Devices {
    pub(crate) ctx: Ctx,
    pub(crate) records: super::records::Records,
    pub(crate) outbox: super::outbox::Outbox,
    pub(crate) groups: super::groups::Groups,
    /// Link codes shown by this device (bounded by [`MAX_PENDING_LINKS`]).
    pub(crate) links: Arc<Mutex<Vec<PendingLink>>>,
}
/// A link code waiting for its device.
#[derive(Clone, Debug)]
pub(crate) struct PendingLink {
    id: String,
    code: String,
    secret: [u8; 16],
    expires_at: u64,
    /// The device it linked, and when.
    linked: Option<(PeerId, u64)>,
}

/// A link code and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkView {
    /// Id of this link attempt (to ask for its state).
    pub id: String,
    /// The code to enter on the new device.
    pub code: String,
    /// When the code expires, RFC 3339.
    pub expires_at: String,
    /// `pending`, `linked` or `expired`.
    pub state: &'static str,
    /// The peer id of the linked device, once linked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// One of the user's devices.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceListView {
    /// Its peer id.
    pub peer_id: String,
    /// Its label.
    pub label: String,
    /// When its certificate was issued, RFC 3339.
    pub linked_at: String,
    /// Whether it is the device answering.
    pub this_device: bool,
}

fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PendingLink {
    fn view(&self, now: u64) -> LinkView {
        LinkView {
            id: self.id.clone(),
            code: self.code.clone(),
            expires_at: rfc3339(self.expires_at),
            state: match self.linked {
                Some(_) => "linked",
                None if now >= self.expires_at => "expired",
                None => "pending",
            },
            device: self.linked.map(|(p, _)| p.to_string()),
        }
    }
}

/// An address as text without its trailing `/p2p/<peer id>` (a link code carries the peer id
/// once).
fn without_peer_id(a: &libp2p::Multiaddr) -> String {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
        a.pop();
    }
    a.to_string()
}

impl Devices {
    /// Creates a one-time link code for a new device, valid for [`LINK_CODE_TTL_MS`] (needs the
    /// identity key).
    pub(crate) async fn link_start(&self) -> Result<LinkView, NodeError> {
        self.link_start_with(LINK_CODE_TTL_MS).await
    }

    /// Like [`Devices::link_start`], valid for `ttl_ms` (at most [`LINK_CODE_TTL_MS`]).
    pub(crate) async fn link_start_with(&self, ttl_ms: u64) -> Result<LinkView, NodeError> {
        if ttl_ms == 0 || ttl_ms > LINK_CODE_TTL_MS {
            return Err(NodeError::BadInput(format!(
                "a link code lives between 1 ms and {} s",
                LINK_CODE_TTL_MS / 1000
            )));
        }
        if self.ctx.keys.identity.is_none() {
            return Err(NodeError::NoIdentityKey);
        }
        if self.records.linked_entries()?.len() + 1 >= MAX_DEVICES {
            return Err(NodeError::Link(format!(
                "an identity has at most {MAX_DEVICES} devices; revoke one first"
            )));
        }
        let status = self.ctx.net.status().await?;
        let addrs: Vec<String> =
            status.listen_addrs.iter().take(MAX_LINK_ADDRS).map(without_peer_id).collect();
        if addrs.is_empty() {
            return Err(NodeError::Link("this device listens on no address".into()));
        }
        let mut secret = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let code = LinkCode {
            v: kith_protocol::VERSION,
            peer: self.ctx.peer_id().to_bytes(),
            addrs,
            secret,
        }
        .to_text();
        let now = self.ctx.now();
        let link = PendingLink {
            id: hex::encode(id),
            code,
            secret,
            expires_at: now + ttl_ms,
            linked: None,
        };
        let mut links = self.links.lock().map_err(|_| NodeError::Link("internal lock".into()))?;
        links.retain(|l| now < l.expires_at + LINK_HISTORY_WINDOW_MS);
        if links.iter().filter(|l| l.linked.is_none() && now < l.expires_at).count()
            >= MAX_PENDING_LINKS
        {
            return Err(NodeError::Link(format!(
                "{MAX_PENDING_LINKS} link codes are already waiting; try again in a few minutes"
            )));
        }
        let view = link.view(now);
        links.push(link);
        Ok(view)
    }

    /// The state of a link code.
    pub(crate) fn link_status(&self, id: &str) -> Result<LinkView, NodeError> {
        let links = self.links.lock().map_err(|_| NodeError::Link("internal lock".into()))?;
        links
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.view(self.ctx.now()))
            .ok_or_else(|| NodeError::NotFound(format!("link {id}")))
    }

    /// Answers a link request (in its own task: linking republishes the record).
    pub(crate) async fn answer_link(self, peer: PeerId, bytes: Vec<u8>, reply: Reply) {
        let answer = match self.link_request(peer, &bytes).await {
            Ok(a) => a,
            Err(e) => {
                debug!(%peer, "link refused: {e}");
                LinkResponse::Refused { reason: e.to_string() }
            }
        };
        let mut bytes = answer.to_bytes();
        if bytes.len() > kith_protocol::link::MAX_LINK_RESPONSE {
            warn!(len = bytes.len(), "the account's state is too large to link a device");
            bytes = LinkResponse::Refused {
                reason: format!(
                    "this account's contacts and groups take {} bytes, more than the {} a link \
                     carries",
                    bytes.len(),
                    kith_protocol::link::MAX_LINK_RESPONSE
                ),
            }
            .to_bytes();
        }
        let _ = self.ctx.net.respond(reply, bytes).await;
    }

    /// Answers a `/kith/link/1` request: a new device joining, or paging through the history.
    pub(crate) async fn link_request(
        &self,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<LinkResponse, NodeError> {
        match LinkRequest::from_bytes(bytes).map_err(|e| NodeError::Link(e.to_string()))? {
            LinkRequest::Join { secret, device, static_key, label, prekey, history: _ } => {
                self.link_join(peer, secret, device, static_key, label, prekey).await
            }
            LinkRequest::History { secret, after } => self.link_history(peer, secret, after),
        }
    }

    /// Whether a link code with `secret` matches `ok`.
    fn code_matches(
        &self,
        secret: &[u8; 16],
        ok: impl Fn(&PendingLink) -> bool,
    ) -> Result<(), NodeError> {
        let links = self.links.lock().map_err(|_| invalid_code())?;
        if links.iter().any(|l| ct_eq(&l.secret, secret) && ok(l)) {
            Ok(())
        } else {
            Err(invalid_code())
        }
    }

    async fn link_join(
        &self,
        peer: PeerId,
        secret: [u8; 16],
        device: [u8; 32],
        static_key: [u8; 32],
        label: String,
        prekey: SignedPrekey,
    ) -> Result<LinkResponse, NodeError> {
        let now = self.ctx.now();
        let identity = self.ctx.keys.identity.as_ref().ok_or(NodeError::NoIdentityKey)?;
        self.code_matches(&secret, |l| l.linked.is_none() && now < l.expires_at)?;
        let device_peer = peer_id_of(&device).map_err(|e| NodeError::Link(e.to_string()))?;
        if device_peer != peer {
            return Err(NodeError::Link("the device key is not the key of the connection".into()));
        }
        prekey
            .verify(&device, now)
            .map_err(|e| NodeError::Link(format!("the device's prekey: {e}")))?;
        let mut list = self.records.linked_entries()?;
        if list.len() + 1 >= MAX_DEVICES {
            return Err(NodeError::Link(format!("at most {MAX_DEVICES} devices")));
        }
        // The snapshot must fit one answer; check before anything is changed.
        let (contacts, groups) = self.snapshot()?;
        // Claim the code before anything slow: a second request with it fails.
        self.claim_code(&secret, peer, now)?;
        let cert = DeviceCertificate::issue_for(identity, device, static_key, now, &label);
        list.retain(|e| e.cert.verify(None).map_or(true, |c| c.device != device));
        list.push(DeviceEntry { cert: cert.clone(), prekey });
        let store = &self.ctx.store;
        store.meta_set("devices", &list)?;
        let mut revoked: Vec<[u8; 32]> = store.meta_get("revoked")?.unwrap_or_default();
        revoked.retain(|d| *d != device);
        store.meta_set("revoked", &revoked)?;
        let name = self.ctx.name();
        let record = match &name {
            Some(name) => self.publish_after_link(name).await,
            None => None,
        };
        store.flush().await?;
        info!(%peer, %label, "linked a new device");
        let mailboxes = self.records.my_mailboxes()?;
        Ok(LinkResponse::Joined { cert, name, record, contacts, groups, mailboxes })
    }

    /// The contacts and groups a new device receives, checked to fit one link answer.
    fn snapshot(&self) -> Result<(Vec<ByteBuf>, Vec<ByteBuf>), NodeError> {
        let store = &self.ctx.store;
        let contacts: Vec<ByteBuf> =
            store.contacts()?.iter().map(|c| ByteBuf::from(to_vec(c))).collect();
        let groups: Vec<ByteBuf> =
            store.groups()?.iter().map(|g| ByteBuf::from(to_vec(g))).collect();
        let size: usize = contacts.iter().chain(&groups).map(|b| b.len() + 8).sum();
        if size + SNAPSHOT_MARGIN > kith_protocol::link::MAX_LINK_RESPONSE {
            return Err(NodeError::Link(format!(
                "this account's contacts and groups take {size} bytes, more than a link carries \
                 ({} bytes)",
                kith_protocol::link::MAX_LINK_RESPONSE - SNAPSHOT_MARGIN
            )));
        }
        Ok((contacts, groups))
    }

    /// Marks the unused code with `secret` as used by `peer`.
    fn claim_code(&self, secret: &[u8; 16], peer: PeerId, now: u64) -> Result<(), NodeError> {
        let mut links = self.links.lock().map_err(|_| invalid_code())?;
        let l = links
            .iter_mut()
            .find(|l| ct_eq(&l.secret, secret) && l.linked.is_none() && now < l.expires_at)
            .ok_or_else(invalid_code)?;
        l.linked = Some((peer, now));
        Ok(())
    }

    /// Republishes the record with the new device (a failure is retried later) and returns
    /// the newest own record for the new device.
    async fn publish_after_link(&self, name: &str) -> Option<ByteBuf> {
        let _guard = self.records.publish_lock.lock().await;
        match self.records.publish(name).await {
            Ok(_) => {
                self.ctx.store.meta_set("published_at", &self.ctx.now()).or_warn(PUBLISHED_AT);
            }
            Err(e) => warn!("republishing after linking failed (retried later): {e}"),
        }
        self.records.own_record().await.map(|r| ByteBuf::from(r.bytes))
    }

    /// A page of history for a device linked with `secret` less than
    /// [`LINK_HISTORY_WINDOW_MS`] ago.
    fn link_history(
        &self,
        peer: PeerId,
        secret: [u8; 16],
        after: Option<ByteBuf>,
    ) -> Result<LinkResponse, NodeError> {
        let now = self.ctx.now();
        self.code_matches(&secret, |l| {
            l.linked.is_some_and(|(p, at)| p == peer && now < at + LINK_HISTORY_WINDOW_MS)
        })?;
        let (messages, next) = self
            .ctx
            .store
            .history_page(after.as_ref().map(|a| a.as_slice()), HISTORY_PAGE_BYTES)?;
        Ok(LinkResponse::History {
            messages: messages.into_iter().map(ByteBuf::from).collect(),
            next: next.map(ByteBuf::from),
        })
    }

    /// Revokes one of the user's other devices: drops it from the record, republishes, and
    /// starts a new epoch in every group so it holds no current group key.
    pub(crate) async fn revoke_device(&self, peer_id: &str) -> Result<DeviceListView, NodeError> {
        if self.ctx.keys.identity.is_none() {
            return Err(NodeError::NoIdentityKey);
        }
        let peer: PeerId = peer_id
            .trim()
            .parse()
            .map_err(|e| NodeError::NotFound(format!("{peer_id} is not a peer id: {e}")))?;
        if peer == self.ctx.peer_id() {
            return Err(NodeError::NotAllowed(
                "this is the device you are using; revoke it from another device".into(),
            ));
        }
        let mut list = self.records.linked_entries()?;
        let found = list.iter().position(|e| e.cert.verify(None).is_ok_and(|c| c.peer_id == peer));
        let Some(pos) = found else {
            return Err(NodeError::NotFound(format!("{peer} is not one of your devices")));
        };
        let entry = list.remove(pos);
        let cert = entry.cert.verify(None).map_err(|e| NodeError::Corrupt {
            path: "store/meta/devices".into(),
            what: e.to_string(),
        })?;
        let mut revoked: Vec<[u8; 32]> = self.ctx.store.meta_get("revoked")?.unwrap_or_default();
        if !revoked.contains(&cert.device) {
            revoked.push(cert.device);
        }
        self.ctx.store.meta_set("devices", &list)?;
        self.ctx.store.meta_set("revoked", &revoked)?;
        self.ctx.store.flush().await?;
        let mut keep: Vec<[u8; 32]> =
            list.iter().filter_map(|e| e.cert.verify(None).ok().map(|c| c.device)).collect();
        keep.push(self.ctx.keys.device.public_bytes());
        self.outbox.drop_targets(self.ctx.user_id().0, &keep).await;
        if let Some(name) = self.ctx.name() {
            let _guard = self.records.publish_lock.lock().await;
            self.records.publish(&name).await?;
            self.ctx.store.meta_set("published_at", &self.ctx.now())?;
        }
        for g in self.ctx.store.groups()?.into_iter().filter(|g| g.active) {
            if let Err(e) = self.groups.rekey(g).await {
                warn!("rekeying a group after a revocation failed: {e}");
            }
        }
        self.ctx.store.flush().await?;
        // Contacts and members hold a cached copy of the record that still lists the device:
        // push them the new one.
        let messaging = self.groups.messaging.clone();
        self.ctx.spawn(async move { messaging.push_own_record().await });
        info!(%peer, "revoked a device");
        Ok(DeviceListView {
            peer_id: peer.to_string(),
            label: cert.label,
            linked_at: rfc3339(cert.created_at),
            this_device: false,
        })
    }

    /// The user's devices, this one first.
    pub(crate) async fn devices(&self) -> Result<Vec<DeviceListView>, NodeError> {
        let mine =
            self.ctx.keys.cert.verify(Some(&self.ctx.keys.identity_public)).map_err(|e| {
                NodeError::Corrupt { path: "device.cert".into(), what: e.to_string() }
            })?;
        let view = |d: &kith_protocol::VerifiedDevice, this: bool| DeviceListView {
            peer_id: d.peer_id.to_string(),
            label: d.label.clone(),
            linked_at: rfc3339(d.created_at),
            this_device: this,
        };
        let mut out = vec![view(&mine, true)];
        out.extend(self.records.other_devices().await.iter().map(|d| view(&d.device, false)));
        Ok(out)
    }
}

fn invalid_code() -> NodeError {
    NodeError::Link("the link code is not valid: expired, already used, or mistyped".into())
}
