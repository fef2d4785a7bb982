//! The node: names, resolution with trust on first use, direct messages, the outbox.
//!
//! [`Node::start`] spawns four tasks: the network event loop, the inbound handler (opens
//! envelopes, stores them durably, then acknowledges), the outbox worker (sends, retries with
//! backoff and at once when a peer connects) and the maintainer (rotates prekeys, republishes the
//! name record). Everything else calls methods on the cloneable [`Node`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::envelope::Recipient;
use kith_protocol::message::MAX_TEXT;
use kith_protocol::name::{
    compare_records, select_record, solve_pow, DeviceEntry, RecordDevice, RecordDraft,
};
use kith_protocol::{
    dht_key, normalize_name, AckStatus, Content, ConversationId, DeliveryAck, Envelope,
    IdentityPublic, Message, MessageId, NameRecord, RecordPolicy, SignedPrekey, Text, UserId,
    VerifiedNameRecord, X25519Secret, VERSION,
};
use libp2p::{Multiaddr, PeerId};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tracing::{debug, info, warn};

use crate::error::{NodeError, OrWarn};
use crate::home::{Home, Keys};
use crate::mailbox::MailboxConfig;
use crate::metrics::{Counters, Metrics};
use crate::network::{self, Client, Event, NetworkConfig, TransportKind};
use crate::rules::outbox::{self, Attempt, Progress};
use crate::rules::{prekeys, trust};
use crate::store::{
    Contact, Direction, OutboxEntry, PrekeyEntry, Status, Store, StoredMessage, Target,
};
use crate::tasks::Tasks;
use crate::{now_ms, rfc3339};

/// How long a published name record is valid.
pub const RECORD_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// How often the name record is republished.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(3600);
pub use crate::rules::prekeys::{PREKEY_GRACE_MS, PREKEY_LIFETIME_MS, PREKEY_ROTATION_MS};
/// Most envelope deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Capacity of the event broadcast to API subscribers; a slower subscriber misses events.
pub const EVENT_BROADCAST: usize = 1024;
/// How long a resolved record is reused without asking the DHT again.
pub const RESOLVE_CACHE_MS: u64 = 30_000;
/// Most names kept in the resolution cache (it is cleared when full).
pub const MAX_RESOLVE_CACHE: usize = 4096;
/// Most messages one history request returns.
pub const MAX_HISTORY: usize = 10_000;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The home directory (keys, store).
    pub home: PathBuf,
    /// Transport.
    pub transport: TransportKind,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Proof-of-work difficulty, in bits, required of every name record (and spent on ours).
    pub pow_bits: u32,
    /// Mailbox service (off unless enabled).
    pub mailbox: MailboxConfig,
}

/// Something the node reports to API subscribers.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A message arrived or was queued.
    Message(MessageView),
    /// An outgoing message changed status.
    Status {
        /// Message id.
        id: String,
        /// The new status.
        status: &'static str,
    },
}

/// A message as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// Conversation id.
    pub conversation: String,
    /// `in` or `out`.
    pub direction: &'static str,
    /// Sender: name when known, else user id.
    pub from: String,
    /// Recipient: name when known, else user id.
    pub to: String,
    /// Text, for text-bearing kinds.
    pub text: Option<String>,
    /// Content kind.
    pub kind: String,
    /// Sender's time, RFC 3339.
    pub sent_at: String,
    /// Status.
    pub status: &'static str,
    /// For an outgoing message not yet delivered: why the last attempt to reach a device
    /// failed (offline, a mailbox over quota, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

/// The node's status as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    /// This device's peer id.
    pub peer_id: String,
    /// The user id.
    pub user_id: String,
    /// The registered name.
    pub name: Option<String>,
    /// Safety number of the identity key.
    pub fingerprint: String,
    /// Listen addresses ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    /// Number of connected peers.
    pub connected_peers: usize,
    /// Outgoing messages not yet acknowledged by every recipient device.
    pub outbox: usize,
    /// What the node rejected from the network.
    pub rejected: RejectedView,
    /// Kith version.
    pub version: &'static str,
}

/// Rejection counters.
#[derive(Clone, Debug, Serialize)]
pub struct RejectedView {
    /// Name records refused.
    pub records: u64,
    /// Envelopes refused.
    pub envelopes: u64,
    /// Malformed or oversized frames.
    pub frames: u64,
    /// Envelopes answered busy.
    pub busy: u64,
}

/// A device in a resolved record.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceView {
    /// Peer id.
    pub peer_id: String,
    /// Label.
    pub label: String,
}

/// A resolved name.
#[derive(Clone, Debug, Serialize)]
pub struct ResolveView {
    /// The name.
    pub name: String,
    /// User id.
    pub user_id: String,
    /// Safety number.
    pub fingerprint: String,
    /// Record sequence number.
    pub seq: u64,
    /// Record expiry, RFC 3339.
    pub expires_at: String,
    /// Devices.
    pub devices: Vec<DeviceView>,
    /// Mailbox peer ids.
    pub mailboxes: Vec<String>,
}

/// A contact.
#[derive(Clone, Debug, Serialize)]
pub struct ContactView {
    /// Name.
    pub name: String,
    /// Pinned user id.
    pub user_id: String,
    /// Safety number of the pinned key.
    pub fingerprint: String,
    /// Whether the name now resolves to another key.
    pub key_changed: bool,
}

/// The answer to a registration.
#[derive(Clone, Debug, Serialize)]
pub struct RegisterView {
    /// The name.
    pub name: String,
    /// User id.
    pub user_id: String,
    /// Record sequence number.
    pub seq: u64,
}

pub(crate) struct Inner {
    pub(crate) keys: Keys,
    pub(crate) store: Store,
    pub(crate) net: Client,
    pub(crate) policy: RecordPolicy,
    pub(crate) mailbox: MailboxConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) counters: Counters,
    /// Deposits per sending peer in the current minute (mailbox nodes); bounded.
    pub(crate) deposit_rate: Mutex<crate::rules::mailbox::RateTable<PeerId>>,
    /// The last `sent_at` used, so each sender's times strictly increase.
    pub(crate) last_sent: Mutex<u64>,
    pub(crate) wake_fetch: Notify,
    pub(crate) wake_sync: Notify,
    /// Recently resolved records by name: (when, record).
    pub(crate) resolved: Mutex<HashMap<String, (u64, VerifiedNameRecord)>>,
    /// Contacts' records as last verified, by user id: (checked against the DHT at, name,
    /// record); bounded by [`MAX_RESOLVE_CACHE`].
    pub(crate) known: Mutex<crate::devices::KnownRecords>,
    /// The newest own name record and when it was found.
    pub(crate) own_record: Mutex<Option<(u64, VerifiedNameRecord)>>,
    /// Link codes shown by this device (bounded by [`crate::devices::MAX_PENDING_LINKS`]).
    pub(crate) links: Mutex<Vec<crate::devices::PendingLink>>,
    /// Group states arriving in parts (long member lists), until they are whole.
    pub(crate) invite_parts: Mutex<crate::rules::group::InviteParts>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) wake_outbox: Notify,
    wake_maintainer: Notify,
    /// Serializes read-modify-write of outbox entries.
    pub(crate) outbox_lock: tokio::sync::Mutex<()>,
    /// Serializes registration and republishing.
    pub(crate) publish_lock: tokio::sync::Mutex<()>,
    /// Every task of this node (see [`crate::tasks`]).
    pub(crate) tasks: Tasks,
    shutdown: watch::Sender<bool>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("user_id", &self.inner.keys.identity_public.user_id()).finish()
    }
}

fn user_bytes(u: &UserId) -> [u8; 16] {
    u.0
}

impl Node {
    /// Opens the home's keys and store, starts the network and the node's tasks.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let home = Home::new(&config.home);
        let keys = home.load_keys()?;
        let store = Store::open(&home.store_path())?;
        let mut registry = libp2p::metrics::Registry::default();
        let counters = Counters::default();
        counters.register(&mut registry);
        let (net, events_rx, event_loop) = network::new(
            keys.device.to_libp2p(),
            NetworkConfig {
                transport: config.transport.clone(),
                listen: config.listen.clone(),
                bootstrap: config.bootstrap.clone(),
                pow_bits: config.pow_bits,
                relay: config.mailbox.enabled,
            },
            counters.clone(),
            &mut registry,
        )?;
        let last_sent = store.meta_get::<u64>("last_sent")?.unwrap_or(0);
        let (events, _) = broadcast::channel(EVENT_BROADCAST);
        let (shutdown, _) = watch::channel(false);
        let node = Node {
            inner: Arc::new(Inner {
                keys,
                store,
                net,
                policy: RecordPolicy { min_pow_bits: config.pow_bits },
                mailbox: config.mailbox.clone(),
                metrics: Arc::new(Metrics::new(registry)),
                counters,
                deposit_rate: Mutex::new(crate::rules::mailbox::RateTable::new(
                    config.mailbox.deposits_per_minute,
                )),
                last_sent: Mutex::new(last_sent),
                wake_fetch: Notify::new(),
                wake_sync: Notify::new(),
                resolved: Mutex::new(HashMap::new()),
                own_record: Mutex::new(None),
                known: Mutex::new(HashMap::new()),
                links: Mutex::new(Vec::new()),
                invite_parts: Mutex::new(Default::default()),
                events,
                wake_outbox: Notify::new(),
                wake_maintainer: Notify::new(),
                outbox_lock: tokio::sync::Mutex::new(()),
                publish_lock: tokio::sync::Mutex::new(()),
                tasks: Tasks::default(),
                shutdown,
            }),
        };
        node.rotate_prekeys(now_ms())?;
        let tasks = &node.inner.tasks;
        tasks.spawn(event_loop.run());
        tasks.spawn(node.clone().inbound_task(events_rx));
        tasks.spawn(node.clone().outbox_task());
        tasks.spawn(node.clone().maintainer_task());
        tasks.spawn(node.clone().fetch_task());
        tasks.spawn(node.clone().group_task());
        if node.inner.mailbox.enabled {
            tasks.spawn(node.clone().mailbox_housekeeping());
        }
        Ok(node)
    }

    /// Stops every task of the node (the network, the workers, and whatever they started),
    /// waits until all have ended, then flushes the store.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.begin_shutdown();
        self.inner.tasks.stop().await;
        self.inner.store.flush().await
    }

    /// Runs `task` as one of the node's tasks: it ends, at the latest, on
    /// [`Node::shutdown`].
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task);
    }

    /// How many of the node's tasks are running (none once [`Node::shutdown`] returned).
    pub fn running_tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Signals that the node is stopping (event streams end); [`Node::shutdown`] does the rest.
    pub fn begin_shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// A receiver that turns `true` when the node starts stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }

    /// Subscribes to message and status events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The network client (for tests and the simulator).
    pub fn network(&self) -> &Client {
        &self.inner.net
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        self.inner.keys.identity_public.user_id()
    }

    /// This device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.keys.device.peer_id()
    }

    /// The registered name, if any.
    pub fn name(&self) -> Option<String> {
        self.inner.store.meta_get::<String>("name").ok().flatten()
    }

    /// The node's status.
    pub async fn status(&self) -> Result<StatusView, NodeError> {
        let net = self.inner.net.status().await?;
        let s = &self.inner.counters;
        Ok(StatusView {
            peer_id: net.peer_id.to_string(),
            user_id: self.user_id().to_string(),
            name: self.name(),
            fingerprint: self.inner.keys.identity_public.fingerprint(),
            listen_addrs: net.listen_addrs.iter().map(ToString::to_string).collect(),
            connected_peers: net.connected_peers,
            outbox: self.inner.store.outbox_len(),
            rejected: RejectedView {
                records: s.records_rejected.get(),
                envelopes: s.envelopes_rejected.get(),
                frames: s.frames_rejected.get(),
                busy: s.busy.get(),
            },
            version: env!("CARGO_PKG_VERSION"),
        })
    }

    // ---------------------------------------------------------------- prekeys and records

    /// Creates a prekey if none is current, marks replaced ones, deletes those past their grace
    /// period. Returns whether a new prekey was created.
    fn rotate_prekeys(&self, now: u64) -> Result<bool, NodeError> {
        let store = &self.inner.store;
        let all = store.prekeys()?;
        let plan = prekeys::rotation(&all, now);
        for id in &plan.delete {
            store.delete_prekey(*id)?;
        }
        let Some(id) = plan.create else { return Ok(false) };
        let secret = X25519Secret::generate(&mut rand::rngs::OsRng);
        let signed =
            SignedPrekey::sign(&self.inner.keys.device, id, &secret, now, now + PREKEY_LIFETIME_MS);
        store.put_prekey(&PrekeyEntry {
            id,
            secret: *secret.to_bytes(),
            signed: kith_protocol::codec::to_vec(&signed),
            created_at: now,
            expires_at: now + PREKEY_LIFETIME_MS,
            replaced_at: None,
        })?;
        for mut p in all.into_iter().filter(|p| plan.replace.contains(&p.id)) {
            p.replaced_at = Some(now);
            store.put_prekey(&p)?;
        }
        info!(id, "new prekey");
        Ok(true)
    }

    fn current_prekey(&self) -> Result<(SignedPrekey, u64), NodeError> {
        let p = self
            .inner
            .store
            .prekeys()?
            .into_iter()
            .filter(|p| p.replaced_at.is_none())
            .max_by_key(|p| p.id)
            .ok_or_else(|| NodeError::Config("no current prekey".into()))?;
        let signed: SignedPrekey =
            kith_protocol::codec::from_slice(&p.signed, 4096).map_err(|e| NodeError::Corrupt {
                path: PathBuf::from("store/prekeys"),
                what: e.to_string(),
            })?;
        Ok((signed, p.expires_at))
    }

    async fn pow_nonce(&self, name: &str) -> Result<u64, NodeError> {
        let bits = self.inner.policy.min_pow_bits;
        if let Some((n, b, nonce)) = self.inner.store.meta_get::<(String, u32, u64)>("pow")? {
            if n == name && b >= bits {
                return Ok(nonce);
            }
        }
        let identity = self.inner.keys.identity_public;
        let owned = name.to_owned();
        let nonce = tokio::task::spawn_blocking(move || solve_pow(&owned, &identity, bits, 0))
            .await
            .map_err(|e| NodeError::Config(format!("proof of work failed: {e}")))?;
        self.inner.store.meta_set("pow", &(name.to_owned(), bits, nonce))?;
        Ok(nonce)
    }

    /// Signs and publishes the name record listing every device of this user (needs the
    /// identity key).
    pub(crate) async fn publish(&self, name: &str) -> Result<u64, NodeError> {
        let found = self.fetch_valid(name).await.ok();
        self.publish_after(name, found).await
    }

    /// [`Node::publish`] with the records of `name` just fetched from the DHT.
    async fn publish_after(
        &self,
        name: &str,
        found: Option<Vec<VerifiedNameRecord>>,
    ) -> Result<u64, NodeError> {
        let identity = self.inner.keys.identity.as_ref().ok_or(NodeError::NoIdentityKey)?;
        let me = self.inner.keys.identity_public;
        // The newest own record anywhere: a device restored from its recovery phrase continues
        // the sequence numbers, and keeps the devices listed there.
        let latest =
            found.and_then(|v| v.into_iter().filter(|r| r.identity == me).max_by(compare_records));
        let local_seq = self.inner.store.meta_get::<u64>("seq")?.unwrap_or(0);
        let seq = local_seq.max(latest.as_ref().map_or(0, |r| r.seq)) + 1;
        let now = now_ms();
        let my_device = self.inner.keys.device.public_bytes();
        let revoked: Vec<[u8; 32]> = self.inner.store.meta_get("revoked")?.unwrap_or_default();
        // A newer record signed by another device holding the identity key wins: its list is
        // the base, plus devices linked here since it was issued.
        let mut others = match (self.inner.store.meta_get::<Vec<DeviceEntry>>("devices")?, &latest)
        {
            (Some(list), Some(r)) if r.seq > local_seq => {
                let mut base = r.device_entries();
                for e in list {
                    let newer = e.cert.verify(None).is_ok_and(|c| c.created_at > r.issued_at);
                    if newer && !base.iter().any(|b| b.cert == e.cert) {
                        base.push(e);
                    }
                }
                base
            }
            (Some(list), _) => list,
            (None, Some(r)) => r.device_entries(),
            (None, None) => Vec::new(),
        };
        // Entries whose prekey has expired would make the record invalid: leave them out until
        // their device sends a new one.
        others.retain(|e| {
            e.cert
                .verify(Some(&me))
                .is_ok_and(|c| c.device != my_device && !revoked.contains(&c.device))
                && e.cert
                    .verify(None)
                    .ok()
                    .and_then(|c| e.prekey.verify(&c.device, now).ok())
                    .is_some()
        });
        self.inner.store.meta_set("devices", &others)?;
        let (prekey, prekey_expires) = self.current_prekey()?;
        let mut expires_at = (now + RECORD_LIFETIME_MS).min(prekey_expires - 1);
        for e in &others {
            if let Some(p) =
                e.cert.verify(None).ok().and_then(|c| e.prekey.verify(&c.device, now).ok())
            {
                expires_at = expires_at.min(p.expires_at - 1);
            }
        }
        let mut devices = vec![DeviceEntry { cert: self.inner.keys.cert.clone(), prekey }];
        devices.extend(others);
        let record = RecordDraft {
            name: name.to_owned(),
            devices,
            mailboxes: self.my_mailboxes()?,
            seq,
            issued_at: now,
            expires_at,
            pow_nonce: self.pow_nonce(name).await?,
        }
        .sign(identity)?;
        let bytes = record.to_bytes();
        let verified = NameRecord::verify(&bytes, Some(&dht_key(name)), now, &self.inner.policy)
            .map_err(|e| NodeError::Config(format!("own record does not verify: {e}")))?;
        self.inner.store.meta_set("seq", &seq)?;
        self.inner.net.put_record(dht_key(name).to_vec(), bytes, expires_at).await?;
        self.remember_own_record(&verified);
        Ok(seq)
    }

    /// Claims `name`: fails if it is invalid or held by another identity.
    pub async fn register(&self, name: &str) -> Result<RegisterView, NodeError> {
        let name = normalize_name(name)?;
        let _guard = self.inner.publish_lock.lock().await;
        let me = self.inner.keys.identity_public;
        let records = self.fetch_valid(&name).await.unwrap_or_default();
        if records.iter().any(|r| r.identity != me) {
            return Err(NodeError::NameTaken(name));
        }
        let seq = self.publish_after(&name, Some(records)).await?;
        self.inner.store.meta_set("name", &name)?;
        self.inner.store.flush().await?;
        info!(%name, seq, "registered");
        Ok(RegisterView { name, user_id: self.user_id().to_string(), seq })
    }

    pub(crate) async fn fetch_valid(
        &self,
        name: &str,
    ) -> Result<Vec<VerifiedNameRecord>, NodeError> {
        let key = dht_key(name);
        let raw = self.inner.net.get_records(key.to_vec()).await?;
        let now = now_ms();
        let mut valid: Vec<VerifiedNameRecord> = Vec::new();
        for bytes in raw {
            match NameRecord::verify(&bytes, Some(&key), now, &self.inner.policy) {
                Ok(v) if !valid.iter().any(|x| x.bytes == v.bytes) => valid.push(v),
                Ok(_) => {}
                Err(e) => {
                    self.inner.counters.records_rejected.inc();
                    debug!(name, "ignoring invalid record: {e}");
                }
            }
        }
        Ok(valid)
    }

    /// Resolves a name to a verified record, pinning its key on first use.
    pub async fn resolve_record(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let now = now_ms();
        // A record resolved moments ago is still good: sending a burst of messages must not
        // cost a DHT lookup each.
        if let Ok(cache) = self.inner.resolved.lock() {
            if let Some((at, r)) = cache.get(&name) {
                if now < at + RESOLVE_CACHE_MS && now < r.expires_at {
                    return Ok(r.clone());
                }
            }
        }
        self.resolve_fresh(&name).await
    }

    /// Resolves a name on the DHT now (no cache), pinning its key on first use.
    pub async fn resolve_fresh(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let now = now_ms();
        let r = self.resolve_uncached(&name, now).await?;
        self.note_record(&r);
        if let Ok(mut cache) = self.inner.resolved.lock() {
            if cache.len() >= MAX_RESOLVE_CACHE {
                cache.clear();
            }
            cache.insert(name, (now, r.clone()));
        }
        Ok(r)
    }

    async fn resolve_uncached(
        &self,
        name: &str,
        now: u64,
    ) -> Result<VerifiedNameRecord, NodeError> {
        let name = name.to_owned();
        let store = &self.inner.store;
        let fetched = self.fetch_valid(&name).await;
        let contact = store.contact(&name)?;
        let pinned = trust::Pinned {
            identity: contact.as_ref().map(|c| c.identity),
            stored: contact.as_ref().and_then(|c| {
                NameRecord::verify(&c.record, Some(&dht_key(&name)), now, &self.inner.policy).ok()
            }),
        };
        let (fetched, dht_error) = match fetched {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        match (trust::decide(&pinned, fetched), contact) {
            (trust::Decision::Fallback(r), _) => Ok(r),
            (trust::Decision::Unreachable, _) => {
                Err(dht_error.unwrap_or_else(|| NodeError::Dht("no answer".into())))
            }
            (trust::Decision::NotFound, _) => Err(NodeError::NameNotFound(name)),
            (trust::Decision::PinFirst(winner), _) => {
                store.put_contact(&Contact {
                    name: name.clone(),
                    user_id: user_bytes(&winner.user_id),
                    identity: winner.identity.to_bytes(),
                    record: winner.bytes.clone(),
                    pinned_at: now,
                    changed_to: None,
                })?;
                info!(%name, user_id = %winner.user_id, "pinned new contact");
                Ok(winner)
            }
            (trust::Decision::UsePinned { record, changed_to }, Some(mut contact)) => {
                if changed_to.is_some() {
                    warn!(%name, "the name now resolves to a different key than the pinned one");
                }
                contact.changed_to = changed_to.map(|k| k.to_vec());
                contact.record = record.bytes.clone();
                store.put_contact(&contact)?;
                Ok(record)
            }
            (trust::Decision::KeyChanged { winner, changed_to }, Some(mut contact)) => {
                warn!(%name, "the name now resolves to a different key than the pinned one");
                contact.changed_to = Some(changed_to.to_vec());
                store.put_contact(&contact)?;
                Err(NodeError::KeyChanged {
                    name,
                    pinned: UserId(contact.user_id).to_string(),
                    now: winner.user_id.to_string(),
                })
            }
            // The rule decides on a pin only when there is one.
            (trust::Decision::UsePinned { record, .. }, None) => Ok(record),
            (trust::Decision::KeyChanged { .. }, None) => Err(NodeError::NameNotFound(name)),
        }
    }

    /// Resolves a name for the API.
    pub async fn resolve(&self, name: &str) -> Result<ResolveView, NodeError> {
        let r = self.resolve_fresh(name).await?;
        Ok(ResolveView {
            name: r.name.clone(),
            user_id: r.user_id.to_string(),
            fingerprint: r.identity.fingerprint(),
            seq: r.seq,
            expires_at: rfc3339(r.expires_at),
            devices: r
                .devices
                .iter()
                .map(|d| DeviceView {
                    peer_id: d.device.peer_id.to_string(),
                    label: d.device.label.clone(),
                })
                .collect(),
            mailboxes: r
                .mailboxes
                .iter()
                .filter_map(|m| PeerId::from_bytes(&m.peer_id).ok().map(|p| p.to_string()))
                .collect(),
        })
    }

    /// Accepts the key `name` resolves to now, replacing the pinned one.
    pub async fn trust(&self, name: &str) -> Result<ContactView, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let valid = self.fetch_valid(&name).await?;
        let winner = select_record(valid).ok_or_else(|| NodeError::NameNotFound(name.clone()))?;
        if let Ok(mut cache) = self.inner.resolved.lock() {
            cache.remove(&name);
        }
        let contact = Contact {
            name: name.clone(),
            user_id: user_bytes(&winner.user_id),
            identity: winner.identity.to_bytes(),
            record: winner.bytes.clone(),
            pinned_at: now_ms(),
            changed_to: None,
        };
        self.inner.store.put_contact(&contact)?;
        self.inner.store.flush().await?;
        Ok(contact_view(&contact))
    }

    /// Pinned contacts.
    pub fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        Ok(self.inner.store.contacts()?.iter().map(contact_view).collect())
    }

    // ---------------------------------------------------------------- messages

    /// Queues a text message to `to` (a name); returns once it is durably queued.
    pub async fn send_text(&self, to: &str, text: &str) -> Result<MessageView, NodeError> {
        if text.len() > MAX_TEXT {
            return Err(NodeError::BadInput(format!(
                "text of {} bytes exceeds the limit of {MAX_TEXT}",
                text.len()
            )));
        }
        if text.is_empty() {
            return Err(NodeError::BadInput("empty message".into()));
        }
        self.send_content(to, Content::Text(Text { body: text.to_owned() })).await
    }

    /// Queues a message with any content to `to`.
    pub async fn send_content(&self, to: &str, content: Content) -> Result<MessageView, NodeError> {
        let record = self.resolve_record(to).await?;
        self.queue(&record, content, true).await
    }

    /// The next `sent_at`: the clock, but always above the previous one.
    pub(crate) fn next_sent_at(&self) -> u64 {
        let now = now_ms();
        let Ok(mut last) = self.inner.last_sent.lock() else { return now };
        *last = now.max(*last + 1);
        let t = *last;
        drop(last);
        self.inner.store.meta_set("last_sent", &t).or_warn("cannot store the last send time");
        t
    }

    /// Seals `content` to every device of `record`'s user and queues it durably; a message
    /// shown in the history is also copied to this user's other devices.
    pub(crate) async fn queue(
        &self,
        record: &VerifiedNameRecord,
        content: Content,
        in_history: bool,
    ) -> Result<MessageView, NodeError> {
        self.queue_to(record.user_id, &record.devices, &record.mailboxes, content, in_history).await
    }

    /// Seals `content` to `devices` of `user` and queues it durably.
    pub(crate) async fn queue_to(
        &self,
        user: UserId,
        devices: &[RecordDevice],
        mailboxes: &[kith_protocol::name::MailboxPeer],
        content: Content,
        in_history: bool,
    ) -> Result<MessageView, NodeError> {
        let me = self.user_id();
        let now = self.next_sent_at();
        let message = Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId::direct(&me, &user),
            sender: me,
            sent_at: now,
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        let name = self.name();
        let entry =
            self.outbox_entry(&message, user, devices, mailboxes, in_history, name.as_deref())?;
        // Copy what the history shows to this user's other devices, so every device shows the
        // same conversation.
        let copy = if in_history && user != me {
            let own = self.other_devices().await;
            if own.is_empty() {
                None
            } else {
                let names = self.names()?;
                let wrapper = Message {
                    v: VERSION,
                    id: MessageId::random(&mut rand::rngs::OsRng),
                    conversation: ConversationId::direct(&me, &me),
                    sender: me,
                    sent_at: now,
                    content: Content::SelfSent {
                        peer: user,
                        peer_name: names.get(&user.0).cloned(),
                        message: message.to_bytes(),
                    },
                };
                let mine = self.my_mailboxes()?;
                Some((
                    StoredMessage::of(&wrapper, Direction::Out, me.0, Status::Queued, Vec::new()),
                    self.outbox_entry(&wrapper, me, &own, &mine, false, name.as_deref())?,
                ))
            }
        } else {
            None
        };
        let stored =
            StoredMessage::of(&message, Direction::Out, user.0, Status::Queued, message.to_bytes());
        self.inner.store.insert_outgoing(&stored, &entry)?;
        if let Some((m, e)) = &copy {
            self.inner.store.insert_outgoing(m, e)?;
        }
        self.inner.store.flush().await?;
        let view = self.view(&stored, &self.names()?);
        if in_history {
            self.inner.counters.messages_sent.inc();
            let _ = self.inner.events.send(NodeEvent::Message(view.clone()));
        }
        self.inner.wake_outbox.notify_one();
        Ok(view)
    }

    /// An outbox entry of `message` sealed to each of `devices` except this one.
    fn outbox_entry(
        &self,
        message: &Message,
        user: UserId,
        devices: &[RecordDevice],
        mailboxes: &[kith_protocol::name::MailboxPeer],
        in_history: bool,
        name: Option<&str>,
    ) -> Result<OutboxEntry, NodeError> {
        let mine = self.inner.keys.device.public_bytes();
        let mut targets = Vec::with_capacity(devices.len());
        for d in devices.iter().filter(|d| d.device.device != mine) {
            let to =
                Recipient { device: d.device.device, prekey_id: d.prekey.id, prekey: d.prekey.key };
            let env = Envelope::seal(
                &self.inner.keys.cert,
                &self.inner.keys.static_key,
                &to,
                message,
                name,
            )
            .map_err(|e| NodeError::Internal(format!("cannot seal a message: {e}")))?;
            targets.push(Target {
                device: d.device.device,
                peer_id: d.device.peer_id.to_bytes(),
                envelope: env.to_bytes(),
                done: false,
                attempts: 0,
                next_at: 0,
                last_error: None,
                deposited: false,
            });
        }
        Ok(OutboxEntry {
            id: message.id.0,
            recipient: user.0,
            targets,
            created_at: message.sent_at,
            mailboxes: mailboxes.iter().map(|m| (m.peer_id.clone(), m.addrs.clone())).collect(),
            in_history,
        })
    }

    /// The history, oldest first: the direct conversation with `with`, or everything.
    pub fn messages(
        &self,
        with: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageView>, NodeError> {
        let limit = limit.clamp(1, MAX_HISTORY);
        let conv = match with {
            Some(w) => match self.conversation_of(w)? {
                Some(c) => Some(c),
                // Someone never talked to has an empty conversation, not an error.
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let names = self.names()?;
        Ok(self
            .inner
            .store
            .messages(conv.as_ref(), limit)?
            .iter()
            .map(|m| self.view(m, &names))
            .collect())
    }

    /// The conversation id of `@name` or `#id`; `None` for a name never talked to.
    fn conversation_of(&self, with: &str) -> Result<Option<[u8; 16]>, NodeError> {
        if with.trim().starts_with('#') {
            return Ok(Some(match self.target(with)? {
                crate::group::Target::Group(id) => id,
                crate::group::Target::Direct(name) => {
                    let c = self.inner.store.contact(&name)?.ok_or_else(|| {
                        NodeError::NotFound(format!("no conversation with {name}"))
                    })?;
                    ConversationId::direct(&self.user_id(), &UserId(c.user_id)).0
                }
            }));
        }
        let name = normalize_name(with.trim().trim_start_matches('@'))?;
        let Some(c) = self.inner.store.contact(&name)? else { return Ok(None) };
        Ok(Some(ConversationId::direct(&self.user_id(), &UserId(c.user_id)).0))
    }

    /// Marks the conversation with `@name` or `#id` read, here and on this user's other
    /// devices; returns how many messages became read here.
    pub async fn mark_read(&self, with: &str) -> Result<usize, NodeError> {
        let Some(conv) = self.conversation_of(with)? else { return Ok(0) };
        let until = self.inner.store.messages(Some(&conv), 1)?.last().map_or(0, |m| m.sent_at);
        let n = self.mark_read_here(&conv, until)?;
        self.inner.store.flush().await?;
        self.send_to_own(Content::SyncRead { conversation: ConversationId(conv), until }).await;
        Ok(n)
    }

    /// Marks incoming messages of `conv` sent at or before `until` read on this device.
    pub(crate) fn mark_read_here(&self, conv: &[u8; 16], until: u64) -> Result<usize, NodeError> {
        let mut n = 0;
        for m in self.inner.store.messages(Some(conv), MAX_HISTORY)? {
            if m.direction == Direction::In && m.status == Status::Received && m.sent_at <= until {
                self.set_status(&m.id, Status::Read);
                n += 1;
            }
        }
        Ok(n)
    }

    /// One message by id (32 hex digits).
    pub fn message(&self, id: &str) -> Result<MessageView, NodeError> {
        let id = MessageId::parse(id).map_err(|e| NodeError::NotFound(e.to_string()))?;
        let m = self
            .inner
            .store
            .message(&id.0)?
            .ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        Ok(self.view(&m, &self.names()?))
    }

    pub(crate) fn view_of(&self, m: &StoredMessage) -> Result<MessageView, NodeError> {
        Ok(self.view(m, &self.names()?))
    }

    fn names(&self) -> Result<HashMap<[u8; 16], String>, NodeError> {
        let mut names: HashMap<[u8; 16], String> =
            self.inner.store.contacts()?.into_iter().map(|c| (c.user_id, c.name)).collect();
        if let Some(n) = self.name() {
            names.insert(self.user_id().0, n);
        }
        // Group members' names as their group lists them, where no pinned contact names them.
        for g in self.inner.store.groups()? {
            for m in g.members {
                if let Some(n) = m.name {
                    names.entry(m.user).or_insert(n);
                }
            }
        }
        Ok(names)
    }

    fn pending_reason(&self, m: &StoredMessage) -> Option<String> {
        if m.direction != Direction::Out || matches!(m.status, Status::Delivered | Status::Read) {
            return None;
        }
        let entry = self.inner.store.outbox_entry(&m.id).ok().flatten()?;
        entry.targets.iter().filter(|t| !t.done).find_map(|t| t.last_error.clone())
    }

    fn view(&self, m: &StoredMessage, names: &HashMap<[u8; 16], String>) -> MessageView {
        let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
        let me = self.user_id().0;
        let group = m.peer == m.conversation;
        let (from, to) = match m.direction {
            _ if group => (show(&m.sender), format!("#{}", ConversationId(m.conversation))),
            Direction::Out => (show(&me), show(&m.peer)),
            Direction::In => (show(&m.sender), show(&me)),
        };
        MessageView {
            id: MessageId(m.id).to_string(),
            conversation: ConversationId(m.conversation).to_string(),
            direction: match m.direction {
                Direction::In => "in",
                Direction::Out => "out",
            },
            from,
            to,
            text: m.text.clone(),
            kind: m.kind.clone(),
            sent_at: rfc3339(m.sent_at),
            status: m.status.as_str(),
            pending_reason: self.pending_reason(m),
        }
    }

    // ---------------------------------------------------------------- inbound

    async fn inbound_task(self, mut rx: mpsc::Receiver<Event>) {
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
            for event in batch.drain(..) {
                match event {
                    Event::InboundEnvelope { peer, bytes, reply } => {
                        let ack = match self.accept_envelope(&bytes) {
                            Ok(Accepted::New(a)) => {
                                fresh.push(a);
                                DeliveryAck::new(AckStatus::Stored, None)
                            }
                            Ok(Accepted::Duplicate) => DeliveryAck::new(AckStatus::Duplicate, None),
                            Ok(Accepted::Receipt) => DeliveryAck::new(AckStatus::Stored, None),
                            Err(e) => {
                                self.inner.counters.envelopes_rejected.inc();
                                debug!(%peer, "rejected envelope: {e}");
                                DeliveryAck::new(AckStatus::Rejected, Some(e.to_string()))
                            }
                        };
                        replies.push((reply, ack.to_bytes()));
                    }
                    Event::MailboxRequest { peer, bytes, reply } => {
                        let (answer, deposited_for) = self.mailbox_request(peer, &bytes);
                        notify.extend(deposited_for);
                        replies.push((reply, answer.to_bytes()));
                    }
                    Event::LinkRequest { peer, bytes, reply } => {
                        self.spawn(self.clone().answer_link(peer, bytes, reply));
                    }
                    Event::SyncRequest { peer, bytes, reply } => {
                        replies.push((reply, self.answer_sync(peer, &bytes).to_bytes()));
                    }
                    Event::GroupMessage { source, id, data } => {
                        let verdict = self.on_gossip(&data).await;
                        let _ = self.inner.net.validate(id, source, verdict).await;
                    }
                    Event::PeerConnected(peer) => self.peer_connected(peer).await,
                }
            }
            if replies.is_empty() {
                continue;
            }
            if let Err(e) = self.inner.store.flush().await {
                warn!("store flush failed, not acknowledging: {e}");
                continue;
            }
            for (reply, bytes) in replies {
                let _ = self.inner.net.respond(reply, bytes).await;
            }
            for a in fresh {
                self.announce(a, false);
            }
            for device in notify {
                self.notify_device(device);
            }
        }
    }

    /// Publishes a newly stored incoming message to subscribers, learns the sender's name, and
    /// (for mail fetched from a mailbox) sends a delivery receipt.
    pub(crate) fn announce(&self, a: Box<NewMessage>, receipt: bool) {
        let _ = self.inner.events.send(NodeEvent::Message(a.view));
        self.inner.counters.messages_received.inc();
        if let Some(name) = a.sender_name {
            if receipt {
                self.send_receipt(a.sender, name, a.id);
            } else if !a.known {
                self.learn_name(a.sender.user_id(), name);
            }
        }
    }

    /// Opens and stores an envelope (receipts update the outbox instead).
    pub(crate) fn accept_envelope(&self, bytes: &[u8]) -> Result<Accepted, NodeError> {
        let bad = |e: String| NodeError::BadInput(e);
        let env = Envelope::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        let store = &self.inner.store;
        let opened = env
            .open(&self.inner.keys.device.public_bytes(), |id| {
                store.prekey(id).ok().flatten().map(|p| X25519Secret::from_bytes(p.secret))
            })
            .map_err(|e| bad(e.to_string()))?;
        let me = self.user_id();
        let m = &opened.message;
        self.device_allowed(&opened.sender).map_err(bad)?;
        if m.conversation != ConversationId::direct(&m.sender, &me) {
            return Err(bad("message is not for a conversation this device knows".into()));
        }
        match &m.content {
            Content::SelfSent { .. } | Content::DevicePrekey { .. } | Content::SyncRead { .. }
                if m.sender != me =>
            {
                return Err(bad(format!("{} from another user", m.content.kind())));
            }
            Content::SelfSent { peer, peer_name, message } => {
                return self.accept_copy(m, *peer, peer_name.clone(), message);
            }
            Content::DevicePrekey { prekey } => {
                self.on_device_prekey(&opened.sender, prekey);
                return Ok(Accepted::Receipt);
            }
            Content::SyncRead { conversation, until } => {
                self.mark_read_here(&conversation.0, *until)?;
                return Ok(Accepted::Receipt);
            }
            _ => {}
        }
        if let Content::Receipt { kind: kith_protocol::ReceiptKind::Delivered, ids } = &m.content {
            self.receipt_received(&opened.sender.device, ids);
            return Ok(Accepted::Receipt);
        }
        if let Content::GroupInvite { .. } = &m.content {
            self.on_group_state(&opened.sender.identity, &m.content);
            return Ok(Accepted::Receipt);
        }
        if store.message(&m.id.0)?.is_some() {
            return Ok(Accepted::Duplicate);
        }
        let stored =
            StoredMessage::of(m, Direction::In, m.sender.0, Status::Received, m.to_bytes());
        if !store.insert_incoming(&stored)? {
            return Ok(Accepted::Duplicate);
        }
        let names = self.names()?;
        Ok(Accepted::New(Box::new(NewMessage {
            view: self.view(&stored, &names),
            id: m.id,
            sent_at: m.sent_at,
            sender: opened.sender.identity,
            known: names.contains_key(&m.sender.0),
            sender_name: names.get(&m.sender.0).cloned().or(opened.sender_name),
        })))
    }

    /// A copy of a message this user sent from another device.
    fn accept_copy(
        &self,
        outer: &Message,
        peer: UserId,
        peer_name: Option<String>,
        bytes: &[u8],
    ) -> Result<Accepted, NodeError> {
        let bad = |e: String| NodeError::BadInput(e);
        let inner = Message::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        let me = self.user_id();
        if inner.sender != me || inner.conversation != ConversationId::direct(&me, &peer) {
            return Err(bad("a copy of a message that is not this user's".into()));
        }
        let store = &self.inner.store;
        if store.message(&inner.id.0)?.is_some() {
            return Ok(Accepted::Duplicate);
        }
        let stored =
            StoredMessage::of(&inner, Direction::Out, peer.0, Status::Sent, inner.to_bytes());
        if !store.insert_incoming(&stored)? {
            return Ok(Accepted::Duplicate);
        }
        let names = self.names()?;
        if let Some(name) = peer_name.filter(|_| !names.contains_key(&peer.0)) {
            self.learn_name(peer, name);
        }
        Ok(Accepted::New(Box::new(NewMessage {
            view: self.view(&stored, &names),
            id: outer.id,
            sent_at: inner.sent_at,
            sender: self.inner.keys.identity_public,
            known: true,
            sender_name: None,
        })))
    }

    /// A recipient device reports messages as durably stored (they reached it through a mailbox).
    fn receipt_received(&self, device: &[u8; 32], ids: &[MessageId]) {
        let node = self.clone();
        let (device, ids) = (*device, ids.to_vec());
        self.spawn(async move {
            let _guard = node.inner.outbox_lock.lock().await;
            for id in ids {
                let Ok(Some(mut e)) = node.inner.store.outbox_entry(&id.0) else { continue };
                let progress = outbox::apply_receipt(&mut e, &device);
                if let Err(err) = node.save_progress(&e, progress) {
                    warn!("cannot record a delivery receipt: {err}");
                }
            }
            if let Err(err) = node.inner.store.flush().await {
                warn!("cannot flush delivery receipts: {err}");
            }
        });
    }

    /// The sender of a message named itself: resolve that name in the background and pin it if
    /// it resolves to the sender's key.
    fn learn_name(&self, sender: UserId, name: String) {
        let node = self.clone();
        self.spawn(async move {
            let Ok(name) = normalize_name(&name) else { return };
            if node.inner.store.contact(&name).ok().flatten().is_some() {
                return;
            }
            match node.fetch_valid(&name).await {
                Ok(valid) => {
                    if let Some(r) = select_record(valid).filter(|r| r.user_id == sender) {
                        let saved = node.inner.store.put_contact(&Contact {
                            name: name.clone(),
                            user_id: user_bytes(&r.user_id),
                            identity: r.identity.to_bytes(),
                            record: r.bytes.clone(),
                            pinned_at: now_ms(),
                            changed_to: None,
                        });
                        if saved.or_warn("cannot pin the name of a sender").is_some() {
                            info!(%name, "learned the name of a sender");
                        }
                    }
                }
                Err(e) => debug!("could not check the sender's name: {e}"),
            }
        });
    }

    // ---------------------------------------------------------------- outbox

    async fn peer_connected(&self, peer: PeerId) {
        if self.is_my_mailbox(&peer) {
            self.inner.wake_fetch.notify_one();
        }
        if self.is_group_peer(&peer) {
            self.inner.wake_sync.notify_one();
        }
        let bytes = peer.to_bytes();
        let _guard = self.inner.outbox_lock.lock().await;
        let mut woke = false;
        let entries = self.inner.store.outbox().or_warn("cannot read the outbox");
        for mut e in entries.unwrap_or_default() {
            if outbox::peer_connected(&mut e, &bytes) {
                self.inner.store.put_outbox(&e).or_warn("cannot update the outbox");
                woke = true;
            }
        }
        if woke {
            self.inner.wake_outbox.notify_one();
        }
    }

    async fn outbox_task(self) {
        let mut in_flight: HashSet<([u8; 16], usize)> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::channel::<(([u8; 16], usize), Attempt)>(MAX_IN_FLIGHT);
        loop {
            let now = now_ms();
            let mut next = now + 1_000;
            let entries =
                self.inner.store.outbox().or_warn("cannot read the outbox").unwrap_or_default();
            for e in &entries {
                for i in outbox::due(e, now) {
                    if in_flight.len() >= MAX_IN_FLIGHT || in_flight.contains(&(e.id, i)) {
                        continue;
                    }
                    let Ok(peer) = PeerId::from_bytes(&e.targets[i].peer_id) else { continue };
                    in_flight.insert((e.id, i));
                    let (net, tx, bytes, key) = (
                        self.inner.net.clone(),
                        done_tx.clone(),
                        e.targets[i].envelope.clone(),
                        (e.id, i),
                    );
                    let mailboxes =
                        if e.targets[i].deposited { Vec::new() } else { e.mailboxes.clone() };
                    self.spawn(async move {
                        let direct = match net.send_envelope(peer, bytes.clone()).await {
                            Ok(Ok(answer)) => match DeliveryAck::from_bytes(&answer) {
                                Ok(a)
                                    if matches!(
                                        a.status,
                                        AckStatus::Stored | AckStatus::Duplicate
                                    ) =>
                                {
                                    Ok(())
                                }
                                Ok(a) => {
                                    Err(format!("{:?}: {}", a.status, a.reason.unwrap_or_default()))
                                }
                                Err(e) => Err(format!("malformed acknowledgement: {e}")),
                            },
                            Ok(Err(e)) => Err(e),
                            Err(e) => Err(e.to_string()),
                        };
                        let outcome = match direct {
                            Ok(()) => Attempt::Delivered,
                            Err(e) if mailboxes.is_empty() => Attempt::Failed(e),
                            Err(e) => match crate::mail::deposit(&net, &mailboxes, bytes).await {
                                Ok(()) => Attempt::Deposited(e),
                                Err(m) => Attempt::Failed(format!("{e}; mailbox: {m}")),
                            },
                        };
                        let _ = tx.send((key, outcome)).await;
                    });
                    if let Ok(Some(m)) = self.inner.store.message(&e.id) {
                        if m.status == Status::Queued {
                            self.set_status(&e.id, Status::Sent);
                        }
                    }
                }
                if let Some(d) = outbox::next_due(e) {
                    next = next.min(d.max(now + 10));
                }
            }
            let sleep = tokio::time::sleep(Duration::from_millis(next.saturating_sub(now)));
            tokio::select! {
                _ = sleep => {}
                _ = self.inner.wake_outbox.notified() => {}
                Some((key, outcome)) = done_rx.recv() => {
                    in_flight.remove(&key);
                    self.finish_attempt(key, outcome).await;
                    while let Ok((key, outcome)) = done_rx.try_recv() {
                        in_flight.remove(&key);
                        self.finish_attempt(key, outcome).await;
                    }
                }
            }
        }
    }

    async fn finish_attempt(&self, (id, i): ([u8; 16], usize), outcome: Attempt) {
        let _guard = self.inner.outbox_lock.lock().await;
        let Ok(Some(mut e)) = self.inner.store.outbox_entry(&id) else { return };
        if let Attempt::Deposited(err) | Attempt::Failed(err) = &outcome {
            debug!(id = %MessageId(id), "delivery attempt failed: {err}");
        }
        let jitter: f64 = rand::thread_rng().gen();
        let progress = outbox::finish_attempt(&mut e, i, outcome, now_ms(), jitter);
        if let Err(err) = self.save_progress(&e, progress) {
            warn!(id = %MessageId(id), "cannot record a delivery attempt: {err}");
        }
    }

    /// Writes what a rule decided about an outbox entry (the caller holds `outbox_lock`).
    pub(crate) fn save_progress(
        &self,
        e: &OutboxEntry,
        progress: Progress,
    ) -> Result<(), NodeError> {
        let store = &self.inner.store;
        match progress {
            Progress::Unchanged => {}
            Progress::Pending { stored } => {
                store.put_outbox(e)?;
                if stored {
                    self.set_status(&e.id, Status::Stored);
                }
            }
            Progress::Complete => {
                store.remove_outbox(&e.id)?;
                self.set_status(&e.id, Status::Delivered);
            }
            Progress::Empty => store.remove_outbox(&e.id)?,
        }
        Ok(())
    }

    pub(crate) fn set_status(&self, id: &[u8; 16], status: Status) {
        if let Ok(Some(_)) = self.inner.store.set_status(id, status) {
            let _ = self.inner.events.send(NodeEvent::Status {
                id: MessageId(*id).to_string(),
                status: status.as_str(),
            });
        }
    }

    // ---------------------------------------------------------------- maintenance

    async fn maintainer_task(self) {
        // Give bootstrap connections a moment before the first republish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut failures = 0u32;
        // The first pass always republishes: the DHT may have lost the record while this node
        // was away.
        let mut first = true;
        loop {
            let rotated = self.rotate_prekeys(now_ms()).unwrap_or(false);
            let due = std::mem::take(&mut first) || rotated || failures > 0 || self.republish_due();
            let mut wait = REPUBLISH_INTERVAL;
            if due {
                if let Some(name) = self.name() {
                    let _guard = self.inner.publish_lock.lock().await;
                    let published = if self.inner.keys.identity.is_some() {
                        self.publish(&name).await
                    } else {
                        self.keep_own_record(&name, rotated).await
                    };
                    match published {
                        Ok(seq) => {
                            failures = 0;
                            self.inner
                                .store
                                .meta_set("published_at", &now_ms())
                                .or_warn(crate::devices::PUBLISHED_AT);
                            debug!(seq, "republished the name record");
                        }
                        Err(e) => {
                            failures += 1;
                            wait = Duration::from_millis(outbox::backoff(failures + 2, 0.0));
                            warn!("republishing the name record failed: {e}");
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake_maintainer.notified() => {}
            }
        }
    }

    /// On a linked device (no identity key): announces a new prekey to the device that signs
    /// the record, and stores the newest own record in the DHT again so it stays reachable.
    async fn keep_own_record(&self, name: &str, rotated: bool) -> Result<u64, NodeError> {
        if rotated {
            let (prekey, _) = self.current_prekey()?;
            self.send_to_own(Content::DevicePrekey { prekey }).await;
        }
        let r = self.own_record().await.ok_or_else(|| NodeError::NameNotFound(name.to_owned()))?;
        // Mailboxes added on another device: enroll this one too, so they hold its mail.
        let mine = self.my_mailboxes()?;
        for mb in r.mailboxes.iter().filter(|m| !mine.iter().any(|x| x.peer_id == m.peer_id)) {
            let Ok(peer) = PeerId::from_bytes(&mb.peer_id) else { continue };
            let Some(addr) = mb.addrs.iter().find(|a| a.ends_with(&peer.to_string())) else {
                continue;
            };
            if let Err(e) = self.add_mailbox(addr).await {
                warn!(%peer, "cannot enroll with a mailbox of this user: {e}");
            }
        }
        self.inner.net.put_record(dht_key(name).to_vec(), r.bytes.clone(), r.expires_at).await?;
        Ok(r.seq)
    }

    fn republish_due(&self) -> bool {
        let last = self.inner.store.meta_get::<u64>("published_at").ok().flatten().unwrap_or(0);
        last + REPUBLISH_INTERVAL.as_millis() as u64 <= now_ms()
    }
}

/// What became of an inbound envelope.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// A new message, stored.
    New(Box<NewMessage>),
    /// Already stored.
    Duplicate,
    /// A delivery receipt; the outbox was updated.
    Receipt,
}

/// A newly stored incoming message.
#[derive(Debug)]
pub(crate) struct NewMessage {
    pub(crate) view: MessageView,
    pub(crate) id: MessageId,
    /// The sender's time (milliseconds).
    pub(crate) sent_at: u64,
    pub(crate) sender: IdentityPublic,
    /// Whether the sender's name was already known.
    pub(crate) known: bool,
    /// The sender's name: known, or as claimed in the envelope.
    pub(crate) sender_name: Option<String>,
}

fn contact_view(c: &Contact) -> ContactView {
    let fingerprint =
        IdentityPublic::from_bytes(&c.identity).map(|k| k.fingerprint()).unwrap_or_default();
    ContactView {
        name: c.name.clone(),
        user_id: UserId(c.user_id).to_string(),
        fingerprint,
        key_changed: c.changed_to.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the node started ends with it: once `shutdown` returns, no task holds the node,
    /// so its store can be opened again at once (the simulator's restarts rely on it).
    #[tokio::test]
    async fn shutdown_ends_every_task_and_releases_the_store() {
        let dir = tempfile::tempdir().unwrap();
        crate::home::Home::new(dir.path()).init("test", now_ms()).unwrap();
        let config = NodeConfig {
            home: dir.path().to_path_buf(),
            transport: TransportKind::Memory,
            listen: vec!["/memory/0".parse().unwrap()],
            bootstrap: vec![],
            pow_bits: 8,
            mailbox: MailboxConfig { enabled: true, ..MailboxConfig::default() },
        };
        let node = Node::start(config.clone()).await.unwrap();
        // A background job that would otherwise hold the node (and its store) for a long time,
        // like a lookup waiting on the DHT.
        let held = node.clone();
        node.spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        });
        assert!(node.running_tasks() >= 7, "the workers and the job: {}", node.running_tasks());
        node.shutdown().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
        assert_eq!(Arc::strong_count(&node.inner), 1, "only this handle is left");
        drop(node);
        let again = Node::start(config).await.expect("the store is free again");
        again.shutdown().await.unwrap();
    }
}
