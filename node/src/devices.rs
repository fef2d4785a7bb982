//! One identity on several devices: the device list, linking new devices, revoking devices,
//! and the copies each device sends to the user's other devices.
//!
//! The device that holds the identity key keeps the list of the user's other devices (store
//! `meta/devices`) and lists them all in the name record it signs. A linked device holds only
//! the identity public key; it learns its siblings from the newest own name record (cached for
//! [`OWN_RECORD_CACHE_MS`]) and keeps that record alive in the DHT.

use kith_protocol::codec::to_vec;
use kith_protocol::identity::peer_id_of;
use kith_protocol::link::{LinkCode, LinkRequest, LinkResponse, MAX_LINK_ADDRS};
use kith_protocol::name::{compare_records, DeviceEntry, RecordDevice, MAX_DEVICES};
use kith_protocol::{
    dht_key, Content, DeviceCertificate, NameRecord, RecordPolicy, SenderDevice, SignedPrekey,
    VerifiedNameRecord,
};
use libp2p::PeerId;
use rand::RngCore;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tracing::{debug, info, warn};

use crate::error::{NodeError, OrWarn};
use crate::network::Reply;
use crate::node::Node;
use crate::rules;
use crate::{now_ms, rfc3339};

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
/// How long the own name record is reused before asking the DHT again (linked devices).
pub const OWN_RECORD_CACHE_MS: u64 = 30_000;
pub use crate::rules::devices::RECORD_RECHECK_MS;

/// What a failed write of the last publication time is logged as.
pub(crate) const PUBLISHED_AT: &str = "cannot store when the record was published";

/// See `Inner::known`.
pub(crate) type KnownRecords =
    std::collections::HashMap<[u8; 16], (u64, String, Option<VerifiedNameRecord>)>;

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

impl Node {
    /// The identity holder's list of the user's other devices.
    pub(crate) fn linked_entries(&self) -> Result<Vec<DeviceEntry>, NodeError> {
        Ok(self.inner.store.meta_get::<Vec<DeviceEntry>>("devices")?.unwrap_or_default())
    }

    fn verify_entry(&self, e: &DeviceEntry, now: u64) -> Option<RecordDevice> {
        let device = e.cert.verify(Some(&self.inner.keys.identity_public)).ok()?;
        let prekey = e.prekey.verify(&device.device, now).ok()?;
        Some(RecordDevice { device, prekey })
    }

    /// The newest own name record: cached, else from the DHT, else the last one seen.
    pub(crate) async fn own_record(&self) -> Option<VerifiedNameRecord> {
        let name = self.name()?;
        let now = now_ms();
        if let Ok(own) = self.inner.own_record.lock() {
            if let Some((at, r)) = own.as_ref() {
                if now < at + OWN_RECORD_CACHE_MS && now < r.expires_at {
                    return Some(r.clone());
                }
            }
        }
        let me = self.inner.keys.identity_public;
        let fetched = self
            .fetch_valid(&name)
            .await
            .ok()
            .and_then(|v| v.into_iter().filter(|r| r.identity == me).max_by(compare_records));
        let stored = self.stored_own_record(&name, now);
        let best = match (fetched, stored) {
            (Some(a), Some(b)) => Some(if compare_records(&a, &b).is_ge() { a } else { b }),
            (a, b) => a.or(b),
        }?;
        self.remember_own_record(&best);
        Some(best)
    }

    fn stored_own_record(&self, name: &str, now: u64) -> Option<VerifiedNameRecord> {
        let bytes = self.inner.store.meta_get::<ByteBuf>("own_record").ok().flatten()?;
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        NameRecord::verify(&bytes, Some(&dht_key(name)), now, &any_pow)
            .ok()
            .filter(|r| r.identity == self.inner.keys.identity_public)
    }

    /// Caches the newest own record (after publishing it, or finding it).
    pub(crate) fn remember_own_record(&self, r: &VerifiedNameRecord) {
        self.inner
            .store
            .meta_set("own_record", &ByteBuf::from(r.bytes.clone()))
            .or_warn("cannot store the own name record");
        if let Ok(mut own) = self.inner.own_record.lock() {
            *own = Some((now_ms(), r.clone()));
        }
    }

    /// The user's devices other than this one.
    pub(crate) async fn other_devices(&self) -> Vec<RecordDevice> {
        let me = self.inner.keys.device.public_bytes();
        let now = now_ms();
        if self.inner.keys.identity.is_some() {
            let list =
                self.linked_entries().or_warn("cannot read the device list").unwrap_or_default();
            return list.iter().filter_map(|e| self.verify_entry(e, now)).collect();
        }
        match self.own_record().await {
            Some(r) => r.devices.into_iter().filter(|d| d.device.device != me).collect(),
            None => Vec::new(),
        }
    }

    /// The user's devices, this one first.
    pub async fn devices(&self) -> Result<Vec<DeviceListView>, NodeError> {
        let mine =
            self.inner.keys.cert.verify(Some(&self.inner.keys.identity_public)).map_err(|e| {
                NodeError::Corrupt { path: "device.cert".into(), what: e.to_string() }
            })?;
        let view = |d: &kith_protocol::VerifiedDevice, this: bool| DeviceListView {
            peer_id: d.peer_id.to_string(),
            label: d.label.clone(),
            linked_at: rfc3339(d.created_at),
            this_device: this,
        };
        let mut out = vec![view(&mine, true)];
        out.extend(self.other_devices().await.iter().map(|d| view(&d.device, false)));
        Ok(out)
    }

    /// Whether a message from `sender` may be accepted: its device must be listed in the newest
    /// record of its user this node knows, or have been certified after that record was issued
    /// (a device linked since). A device missing from a record issued after its certificate was
    /// revoked. Users this node holds no record of are accepted (first contact).
    pub(crate) fn device_allowed(&self, sender: &SenderDevice) -> Result<(), String> {
        let now = now_ms();
        if sender.user_id == self.user_id() {
            let store = &self.inner.store;
            let revoked: Vec<[u8; 32]> =
                store.meta_get("revoked").map_err(|e| e.to_string())?.unwrap_or_default();
            let linked = match self.inner.keys.identity {
                Some(_) => Some(self.linked_entries().map_err(|e| e.to_string())?),
                None => None,
            };
            let own =
                self.inner.own_record.lock().ok().and_then(|o| o.as_ref().map(|x| x.1.clone()));
            let own = own.or_else(|| self.name().and_then(|n| self.stored_own_record(&n, now)));
            let view = rules::devices::OwnDevices {
                this_device: self.inner.keys.device.public_bytes(),
                revoked: &revoked,
                linked: linked.as_deref(),
                own_record: own.as_ref(),
            };
            return rules::devices::own_device_allowed(&view, sender);
        }
        let Some((checked_at, name, record)) = self.known_record(sender.user_id.0, now) else {
            return Ok(());
        };
        let known = rules::devices::KnownContact { checked_at, record: record.as_ref() };
        let verdict = rules::devices::contact_device_allowed(&known, sender, now);
        if verdict.refresh {
            // Marked as checked now, so a burst of messages starts one lookup.
            if let Ok(mut known) = self.inner.known.lock() {
                if let Some(k) = known.get_mut(&sender.user_id.0) {
                    k.0 = now;
                }
            }
            let node = self.clone();
            self.spawn(async move {
                if let Err(e) = node.resolve_fresh(&name).await {
                    debug!(%name, "refreshing a contact's record failed: {e}");
                }
            });
        }
        verdict.allowed
    }

    /// The newest record this node knows of a contact's user id: (when it was last checked
    /// against the DHT, the name, the verified record). `None` if the user is no contact.
    fn known_record(
        &self,
        user: [u8; 16],
        now: u64,
    ) -> Option<(u64, String, Option<VerifiedNameRecord>)> {
        if let Some(k) = self.inner.known.lock().ok()?.get(&user) {
            return Some(k.clone());
        }
        let c = self.inner.store.contacts().ok()?.into_iter().find(|c| c.user_id == user)?;
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        let r = NameRecord::verify(&c.record, Some(&dht_key(&c.name)), now, &any_pow).ok();
        let entry = (0, c.name, r);
        let mut known = self.inner.known.lock().ok()?;
        if known.len() >= crate::node::MAX_RESOLVE_CACHE {
            known.clear();
        }
        known.insert(user, entry.clone());
        Some(entry)
    }

    /// Remembers a record just resolved on the DHT, for [`Node::device_allowed`].
    /// When the record lists other devices than before, queued messages stop waiting for the
    /// devices it no longer lists.
    pub(crate) fn note_record(&self, r: &VerifiedNameRecord) {
        let devices = |r: &VerifiedNameRecord| -> Vec<[u8; 32]> {
            r.devices.iter().map(|d| d.device.device).collect()
        };
        let Ok(mut known) = self.inner.known.lock() else { return };
        let before = known.get(&r.user_id.0).and_then(|k| k.2.as_ref()).map(devices);
        if known.len() >= crate::node::MAX_RESOLVE_CACHE {
            known.clear();
        }
        known.insert(r.user_id.0, (now_ms(), r.name.clone(), Some(r.clone())));
        drop(known);
        let now = devices(r);
        if before.is_some_and(|b| b.iter().any(|d| !now.contains(d))) {
            let node = self.clone();
            let user = r.user_id.0;
            self.spawn(async move { node.drop_targets(user, &now).await });
        }
    }

    /// Removes, from queued messages to `user`, the devices not in `keep` (revoked or
    /// replaced); a message then complete is `delivered` to every device the user still has.
    pub(crate) async fn drop_targets(&self, user: [u8; 16], keep: &[[u8; 32]]) {
        let _guard = self.inner.outbox_lock.lock().await;
        let entries = match self.inner.store.outbox() {
            Ok(entries) => entries,
            Err(e) => return warn!("cannot read the outbox to drop revoked devices: {e}"),
        };
        for mut e in entries.into_iter().filter(|e| e.recipient == user) {
            let progress = rules::outbox::keep_devices(&mut e, keep);
            if let Err(err) = self.save_progress(&e, progress) {
                warn!("cannot drop revoked devices from a queued message: {err}");
            }
        }
        if let Err(e) = self.inner.store.flush().await {
            warn!("cannot flush the outbox: {e}");
        }
    }

    /// A device of this user announced a new prekey: list it in the record (identity holder).
    pub(crate) fn on_device_prekey(&self, sender: &SenderDevice, prekey: &SignedPrekey) {
        if self.inner.keys.identity.is_none() || sender.user_id != self.user_id() {
            return;
        }
        let Ok(new) = prekey.verify(&sender.device, now_ms()) else { return };
        let Ok(mut list) = self.linked_entries() else { return };
        let mut changed = false;
        for e in list.iter_mut() {
            let same = e.cert.verify(None).is_ok_and(|c| c.device == sender.device);
            let older = e.prekey.verify(&sender.device, 0).map_or(true, |p| p.id != new.id);
            if same && older {
                e.prekey = prekey.clone();
                changed = true;
            }
        }
        if changed && self.inner.store.meta_set("devices", &list).is_ok() {
            info!(peer = %sender.peer_id, "a linked device has a new prekey; republishing");
            self.republish_soon();
        }
    }

    /// Republishes the name record in the background.
    pub(crate) fn republish_soon(&self) {
        let node = self.clone();
        self.spawn(async move {
            if let Some(name) = node.name() {
                let _guard = node.inner.publish_lock.lock().await;
                match node.publish(&name).await {
                    Ok(_) => {
                        node.inner.store.meta_set("published_at", &now_ms()).or_warn(PUBLISHED_AT);
                        node.inner.store.flush().await.or_warn("cannot flush the store");
                    }
                    Err(e) => warn!("republishing the name record failed: {e}"),
                }
            }
        });
    }

    // ------------------------------------------------------------------------------ linking

    /// Creates a one-time link code for a new device, valid for [`LINK_CODE_TTL_MS`] (needs the
    /// identity key).
    pub async fn link_start(&self) -> Result<LinkView, NodeError> {
        self.link_start_with(LINK_CODE_TTL_MS).await
    }

    /// Like [`Node::link_start`], valid for `ttl_ms` (at most [`LINK_CODE_TTL_MS`]).
    pub async fn link_start_with(&self, ttl_ms: u64) -> Result<LinkView, NodeError> {
        if ttl_ms == 0 || ttl_ms > LINK_CODE_TTL_MS {
            return Err(NodeError::BadInput(format!(
                "a link code lives between 1 ms and {} s",
                LINK_CODE_TTL_MS / 1000
            )));
        }
        if self.inner.keys.identity.is_none() {
            return Err(NodeError::NoIdentityKey);
        }
        if self.linked_entries()?.len() + 1 >= MAX_DEVICES {
            return Err(NodeError::Link(format!(
                "an identity has at most {MAX_DEVICES} devices; revoke one first"
            )));
        }
        let status = self.inner.net.status().await?;
        let addrs: Vec<String> =
            status.listen_addrs.iter().take(MAX_LINK_ADDRS).map(without_peer_id).collect();
        if addrs.is_empty() {
            return Err(NodeError::Link("this device listens on no address".into()));
        }
        let mut secret = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let code =
            LinkCode { v: kith_protocol::VERSION, peer: self.peer_id().to_bytes(), addrs, secret }
                .to_text();
        let now = now_ms();
        let link = PendingLink {
            id: hex::encode(id),
            code,
            secret,
            expires_at: now + ttl_ms,
            linked: None,
        };
        let mut links =
            self.inner.links.lock().map_err(|_| NodeError::Link("internal lock".into()))?;
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
    pub fn link_status(&self, id: &str) -> Result<LinkView, NodeError> {
        let links = self.inner.links.lock().map_err(|_| NodeError::Link("internal lock".into()))?;
        links
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.view(now_ms()))
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
        let _ = self.inner.net.respond(reply, bytes).await;
    }

    async fn link_request(&self, peer: PeerId, bytes: &[u8]) -> Result<LinkResponse, NodeError> {
        let request = LinkRequest::from_bytes(bytes).map_err(|e| NodeError::Link(e.to_string()))?;
        let now = now_ms();
        let invalid = || {
            NodeError::Link("the link code is not valid: expired, already used, or mistyped".into())
        };
        match request {
            LinkRequest::Join { secret, device, static_key, label, prekey, history: _ } => {
                let identity = self.inner.keys.identity.as_ref().ok_or(NodeError::NoIdentityKey)?;
                {
                    let links = self.inner.links.lock().map_err(|_| invalid())?;
                    let ok = links.iter().any(|l| {
                        ct_eq(&l.secret, &secret) && l.linked.is_none() && now < l.expires_at
                    });
                    if !ok {
                        return Err(invalid());
                    }
                }
                let device_peer =
                    peer_id_of(&device).map_err(|e| NodeError::Link(e.to_string()))?;
                if device_peer != peer {
                    return Err(NodeError::Link(
                        "the device key is not the key of the connection".into(),
                    ));
                }
                prekey
                    .verify(&device, now)
                    .map_err(|e| NodeError::Link(format!("the device's prekey: {e}")))?;
                let mut list = self.linked_entries()?;
                if list.len() + 1 >= MAX_DEVICES {
                    return Err(NodeError::Link(format!("at most {MAX_DEVICES} devices")));
                }
                // The snapshot must fit one answer; check before anything is changed.
                let store = &self.inner.store;
                let contacts: Vec<ByteBuf> =
                    store.contacts()?.iter().map(|c| ByteBuf::from(to_vec(c))).collect();
                let groups: Vec<ByteBuf> =
                    store.groups()?.iter().map(|g| ByteBuf::from(to_vec(g))).collect();
                let size: usize = contacts.iter().chain(&groups).map(|b| b.len() + 8).sum();
                if size + SNAPSHOT_MARGIN > kith_protocol::link::MAX_LINK_RESPONSE {
                    return Err(NodeError::Link(format!(
                        "this account's contacts and groups take {size} bytes, more than a link \
                         carries ({} bytes)",
                        kith_protocol::link::MAX_LINK_RESPONSE - SNAPSHOT_MARGIN
                    )));
                }
                // Claim the code before anything slow: a second request with it fails.
                {
                    let mut links = self.inner.links.lock().map_err(|_| invalid())?;
                    let Some(l) = links.iter_mut().find(|l| {
                        ct_eq(&l.secret, &secret) && l.linked.is_none() && now < l.expires_at
                    }) else {
                        return Err(invalid());
                    };
                    l.linked = Some((peer, now));
                }
                let cert = DeviceCertificate::issue_for(identity, device, static_key, now, &label);
                list.retain(|e| e.cert.verify(None).map_or(true, |c| c.device != device));
                list.push(DeviceEntry { cert: cert.clone(), prekey });
                self.inner.store.meta_set("devices", &list)?;
                let mut revoked: Vec<[u8; 32]> =
                    self.inner.store.meta_get("revoked")?.unwrap_or_default();
                revoked.retain(|d| *d != device);
                self.inner.store.meta_set("revoked", &revoked)?;
                let name = self.name();
                let mut record = None;
                if let Some(name) = &name {
                    let _guard = self.inner.publish_lock.lock().await;
                    match self.publish(name).await {
                        Ok(_) => {
                            self.inner
                                .store
                                .meta_set("published_at", &now_ms())
                                .or_warn(PUBLISHED_AT);
                        }
                        Err(e) => warn!("republishing after linking failed (retried later): {e}"),
                    }
                    record = self.own_record().await.map(|r| ByteBuf::from(r.bytes));
                }
                self.inner.store.flush().await?;
                info!(%peer, %label, "linked a new device");
                Ok(LinkResponse::Joined {
                    cert,
                    name,
                    record,
                    contacts,
                    groups,
                    mailboxes: self.my_mailboxes()?,
                })
            }
            LinkRequest::History { secret, after } => {
                {
                    let links = self.inner.links.lock().map_err(|_| invalid())?;
                    let ok = links.iter().any(|l| {
                        ct_eq(&l.secret, &secret)
                            && l.linked.is_some_and(|(p, at)| {
                                p == peer && now < at + LINK_HISTORY_WINDOW_MS
                            })
                    });
                    if !ok {
                        return Err(invalid());
                    }
                }
                let (messages, next) = self
                    .inner
                    .store
                    .history_page(after.as_ref().map(|a| a.as_slice()), HISTORY_PAGE_BYTES)?;
                Ok(LinkResponse::History {
                    messages: messages.into_iter().map(ByteBuf::from).collect(),
                    next: next.map(ByteBuf::from),
                })
            }
        }
    }

    /// Revokes one of the user's other devices: drops it from the record, republishes, and
    /// starts a new epoch in every group so it holds no current group key.
    pub async fn revoke_device(&self, peer_id: &str) -> Result<DeviceListView, NodeError> {
        if self.inner.keys.identity.is_none() {
            return Err(NodeError::NoIdentityKey);
        }
        let peer: PeerId = peer_id
            .trim()
            .parse()
            .map_err(|e| NodeError::NotFound(format!("{peer_id} is not a peer id: {e}")))?;
        if peer == self.peer_id() {
            return Err(NodeError::NotAllowed(
                "this is the device you are using; revoke it from another device".into(),
            ));
        }
        let mut list = self.linked_entries()?;
        let found = list.iter().position(|e| e.cert.verify(None).is_ok_and(|c| c.peer_id == peer));
        let Some(pos) = found else {
            return Err(NodeError::NotFound(format!("{peer} is not one of your devices")));
        };
        let entry = list.remove(pos);
        let cert = entry.cert.verify(None).map_err(|e| NodeError::Corrupt {
            path: "store/meta/devices".into(),
            what: e.to_string(),
        })?;
        let mut revoked: Vec<[u8; 32]> = self.inner.store.meta_get("revoked")?.unwrap_or_default();
        if !revoked.contains(&cert.device) {
            revoked.push(cert.device);
        }
        self.inner.store.meta_set("devices", &list)?;
        self.inner.store.meta_set("revoked", &revoked)?;
        self.inner.store.flush().await?;
        let mut keep: Vec<[u8; 32]> =
            list.iter().filter_map(|e| e.cert.verify(None).ok().map(|c| c.device)).collect();
        keep.push(self.inner.keys.device.public_bytes());
        self.drop_targets(self.user_id().0, &keep).await;
        if let Some(name) = self.name() {
            let _guard = self.inner.publish_lock.lock().await;
            self.publish(&name).await?;
            self.inner.store.meta_set("published_at", &now_ms())?;
        }
        for g in self.inner.store.groups()?.into_iter().filter(|g| g.active) {
            if let Err(e) = self.rekey(g).await {
                warn!("rekeying a group after a revocation failed: {e}");
            }
        }
        self.inner.store.flush().await?;
        info!(%peer, "revoked a device");
        Ok(DeviceListView {
            peer_id: peer.to_string(),
            label: cert.label,
            linked_at: rfc3339(cert.created_at),
            this_device: false,
        })
    }

    /// Seals `content` to the user's other devices and queues it (not shown in the history).
    pub(crate) async fn send_to_own(&self, content: Content) {
        let devices = self.other_devices().await;
        if devices.is_empty() {
            return;
        }
        let mailboxes =
            self.my_mailboxes().or_warn("cannot read the mailboxes").unwrap_or_default();
        if let Err(e) = self.queue_to(self.user_id(), &devices, &mailboxes, content, false).await {
            warn!("cannot send to this user's other devices: {e}");
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
