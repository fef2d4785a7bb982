//! Names and records: this device's prekeys, registering and publishing the name record (with
//! every device and mailbox of the user), resolving names with trust on first use
//! (`rules::trust`), the records last seen of contacts and of this user, and whether a sending
//! device is (still) listed (`rules::devices`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::name::{
    compare_records, select_record, solve_pow, DeviceEntry, MailboxPeer, RecordDevice, RecordDraft,
};
use kith_protocol::profile::Profile;
use kith_protocol::{
    dht_key, normalize_name, IdentityPublic, NameRecord, RecordPolicy, SenderDevice, SignedPrekey,
    UserId, VerifiedNameRecord, X25519Secret,
};
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rfc3339;
use crate::rules;
use crate::rules::{prekeys, trust};
use crate::store::{Contact, PrekeyEntry};
use crate::views::{
    contact_view, ContactView, DeviceView, NameConflictView, RegisterView, ResolveView,
};

/// How long a published name record is valid.
pub const RECORD_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// How often the name record is republished.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a resolved record is reused without asking the DHT again.
pub const RESOLVE_CACHE_MS: u64 = 30_000;
/// Most names kept in the resolution cache (it is cleared when full).
pub const MAX_RESOLVE_CACHE: usize = 4096;
/// How long the own name record is reused before asking the DHT again (linked devices).
pub const OWN_RECORD_CACHE_MS: u64 = 30_000;
/// Names resolved at once when forming or changing a group.
pub const RESOLVE_CONCURRENCY: usize = 16;
pub use crate::rules::devices::RECORD_RECHECK_MS;
pub use crate::rules::prekeys::{PREKEY_GRACE_MS, PREKEY_LIFETIME_MS, PREKEY_ROTATION_MS};

/// What a failed write of the last publication time is logged as.
pub(crate) const PUBLISHED_AT: &str = "cannot store when the record was published";

/// Contacts' records as last verified, by user id: (checked against the DHT at, name, record);
/// bounded by [`MAX_RESOLVE_CACHE`].
pub(crate) type KnownRecords = HashMap<[u8; 16], (u64, String, Option<VerifiedNameRecord>)>;

/// What the last read-back of this user's name found: how many other peers serve the record,
/// and another identity's claim if there is one.
pub(crate) type NameCheck = (usize, Option<NameConflictView>);

fn user_bytes(u: &UserId) -> [u8; 16] {
    u.0
}

/// The records service.
#[derive(Clone, Debug)]
pub(crate) struct Records {
    pub(crate) ctx: Ctx,
    pub(crate) outbox: super::outbox::Outbox,
    /// Recently resolved records by name: (when, record).
    pub(crate) resolved: Arc<Mutex<HashMap<String, (u64, VerifiedNameRecord)>>>,
    /// Contacts' records as last verified (see [`KnownRecords`]).
    pub(crate) known: Arc<Mutex<KnownRecords>>,
    /// The newest own name record and when it was found.
    pub(crate) own_record: Arc<Mutex<Option<(u64, VerifiedNameRecord)>>>,
    /// Serializes registration and republishing.
    pub(crate) publish_lock: Arc<tokio::sync::Mutex<()>>,
    /// What the last read-back of this user's name found: other peers serving the record, and
    /// another identity's claim.
    pub(crate) name_check: Arc<Mutex<Option<NameCheck>>>,
    /// Senders whose names are being checked ([`Records::learn_name`]), at most
    /// [`MAX_LEARNING`].
    pub(crate) learning: Arc<Mutex<std::collections::HashSet<[u8; 16]>>>,
}

/// Lookups of a sender's name [`Records::learn_name`] makes before it waits for the sender's
/// next message: the first at once, the others after the outbox's backoff (1 s, 2 s, 4 s …).
pub const LEARN_TRIES: u32 = 6;
/// Senders whose names are checked at once; a message from one more is not checked (its next
/// one will be).
pub const MAX_LEARNING: usize = 1024;

impl Records {
    pub(crate) fn new(ctx: Ctx, outbox: super::outbox::Outbox) -> Self {
        Records {
            ctx,
            outbox,
            resolved: Arc::default(),
            known: Arc::default(),
            own_record: Arc::default(),
            publish_lock: Arc::default(),
            name_check: Arc::default(),
            learning: Arc::default(),
        }
    }
}

impl Records {
    /// Creates a prekey if none is current, marks replaced ones, deletes those past their grace
    /// period. Returns whether a new prekey was created.
    pub(crate) fn rotate_prekeys(&self, now: u64) -> Result<bool, NodeError> {
        let store = &self.ctx.store;
        let all = store.prekeys()?;
        let plan = prekeys::rotation(&all, now);
        for id in &plan.delete {
            store.delete_prekey(*id)?;
        }
        let Some(id) = plan.create else { return Ok(false) };
        let secret = X25519Secret::generate(&mut rand::rngs::OsRng);
        let signed =
            SignedPrekey::sign(&self.ctx.keys.device, id, &secret, now, now + PREKEY_LIFETIME_MS);
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

    pub(crate) fn current_prekey(&self) -> Result<(SignedPrekey, u64), NodeError> {
        let p = self
            .ctx
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

    pub(crate) async fn pow_nonce(&self, name: &str) -> Result<u64, NodeError> {
        let bits = self.ctx.policy.min_pow_bits;
        if let Some((n, b, nonce)) = self.ctx.store.meta_get::<(String, u32, u64)>("pow")? {
            if n == name && b >= bits {
                return Ok(nonce);
            }
        }
        let identity = self.ctx.keys.identity_public;
        let owned = name.to_owned();
        let nonce = tokio::task::spawn_blocking(move || solve_pow(&owned, &identity, bits, 0))
            .await
            .map_err(|e| NodeError::Config(format!("proof of work failed: {e}")))?;
        self.ctx.store.meta_set("pow", &(name.to_owned(), bits, nonce))?;
        Ok(nonce)
    }

    /// Signs and publishes the name record listing every device of this user (needs the
    /// identity key).
    pub(crate) async fn publish(&self, name: &str) -> Result<u64, NodeError> {
        let found = self.fetch_valid(name).await.ok();
        self.publish_after(name, found).await
    }

    /// [`Records::publish`] with the records of `name` just fetched from the DHT.
    pub(crate) async fn publish_after(
        &self,
        name: &str,
        found: Option<Vec<VerifiedNameRecord>>,
    ) -> Result<u64, NodeError> {
        let identity = self.ctx.keys.identity.as_ref().ok_or(NodeError::NoIdentityKey)?;
        let me = self.ctx.keys.identity_public;
        // The newest own record anywhere: a device restored from its recovery phrase continues
        // the sequence numbers, and keeps the devices listed there.
        let latest =
            found.and_then(|v| v.into_iter().filter(|r| r.identity == me).max_by(compare_records));
        let local_seq = self.ctx.store.meta_get::<u64>("seq")?.unwrap_or(0);
        let seq = local_seq.max(latest.as_ref().map_or(0, |r| r.seq)) + 1;
        let now = self.ctx.now();
        let my_device = self.ctx.keys.device.public_bytes();
        let revoked: Vec<[u8; 32]> = self.ctx.store.meta_get("revoked")?.unwrap_or_default();
        // A newer record signed by another device holding the identity key wins: its list is
        // the base, plus devices linked here since it was issued.
        let mut others = match (self.ctx.store.meta_get::<Vec<DeviceEntry>>("devices")?, &latest) {
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
        self.ctx.store.meta_set("devices", &others)?;
        let (prekey, prekey_expires) = self.current_prekey()?;
        let mut expires_at = (now + RECORD_LIFETIME_MS).min(prekey_expires - 1);
        for e in &others {
            if let Some(p) =
                e.cert.verify(None).ok().and_then(|c| e.prekey.verify(&c.device, now).ok())
            {
                expires_at = expires_at.min(p.expires_at - 1);
            }
        }
        let mut devices = vec![DeviceEntry { cert: self.ctx.keys.cert.clone(), prekey }];
        devices.extend(others);
        // The profile, like the device list: a newer record signed elsewhere carries the one
        // set there.
        let profile = match &latest {
            Some(r) if r.seq > local_seq => {
                self.ctx.store.set_own_profile(&r.profile)?;
                r.profile.clone()
            }
            _ => self.ctx.store.own_profile()?,
        };
        let record = RecordDraft {
            name: name.to_owned(),
            devices,
            mailboxes: self.my_mailboxes()?,
            seq,
            issued_at: now,
            expires_at,
            pow_nonce: self.pow_nonce(name).await?,
            profile,
        }
        .sign(identity)?;
        let bytes = record.to_bytes();
        let verified = NameRecord::verify(&bytes, Some(&dht_key(name)), now, &self.ctx.policy)
            .map_err(|e| NodeError::Config(format!("own record does not verify: {e}")))?;
        self.ctx.store.meta_set("seq", &seq)?;
        self.ctx.net.put_record(dht_key(name).to_vec(), bytes, expires_at).await?;
        self.remember_own_record(&verified);
        Ok(seq)
    }

    /// Sets this user's public profile (`None` removes it) and publishes a new record carrying
    /// it; the user must hold a name and the identity key.
    pub(crate) async fn set_profile(
        &self,
        profile: Option<Profile>,
    ) -> Result<VerifiedNameRecord, NodeError> {
        if let Some(p) = &profile {
            p.check().map_err(|e| NodeError::BadInput(e.to_string()))?;
        }
        let name = self.ctx.name().ok_or_else(|| {
            NodeError::NotAllowed(
                "register a name first: a profile is part of the name record".into(),
            )
        })?;
        let _guard = self.publish_lock.lock().await;
        let previous = self.ctx.store.own_profile()?;
        self.ctx.store.set_own_profile(&profile)?;
        if let Err(e) = self.publish(&name).await {
            self.ctx.store.set_own_profile(&previous)?;
            return Err(e);
        }
        self.ctx.store.flush().await?;
        let own = self.own_record.lock().ok().and_then(|o| o.as_ref().map(|x| x.1.clone()));
        own.ok_or_else(|| NodeError::Config("own record missing after publishing".into()))
    }

    /// Claims `name`: fails if it is invalid or held by another identity. After storing the
    /// record, reads it back: a competing claim that resolvers would pick fails the
    /// registration (`name_taken`); no other peer serving the record yet is reported in the
    /// answer's `warning`.
    pub(crate) async fn register(&self, name: &str) -> Result<RegisterView, NodeError> {
        let name = normalize_name(name)?;
        let _guard = self.publish_lock.lock().await;
        let me = self.ctx.keys.identity_public;
        let records = self.fetch_valid(&name).await.unwrap_or_default();
        if records.iter().any(|r| r.identity != me) {
            return Err(NodeError::NameTaken(name));
        }
        let seq = self.publish_after(&name, Some(records)).await?;
        self.ctx.store.meta_set("name", &name)?;
        self.ctx.store.flush().await?;
        let check = self.read_back(&name, seq, false).await;
        let winner = check.as_ref().filter(|c| !c.mine_wins).and_then(|c| c.competitor.as_ref());
        if let Some(c) = winner {
            warn!(%name, other = %c.record.user_id, "another identity's claim wins the name");
            return Err(NodeError::NameTaken(name));
        }
        let served_by = check.as_ref().map_or(0, |c| c.served_by);
        let warning = (served_by == 0).then(|| {
            "no other peer served the record when it was read back; it is republished \
             every hour and when the node connects again"
                .to_owned()
        });
        info!(%name, seq, served_by, "registered");
        Ok(RegisterView { name, user_id: self.ctx.user_id().to_string(), seq, served_by, warning })
    }

    /// Reads this user's name back from the DHT after publishing `seq` (from every closest peer
    /// when `thorough`), remembers what it found for `kith status`, and reports another
    /// identity's claim (a warning in the log and a `name_conflict` event). `None` when the
    /// lookup failed.
    pub(crate) async fn read_back(
        &self,
        name: &str,
        seq: u64,
        thorough: bool,
    ) -> Option<rules::names::ReadBack> {
        let copies = match self.fetch_copies(name, thorough).await {
            Ok(c) => c,
            Err(e) => {
                warn!(%name, "cannot read the name record back: {e}");
                return None;
            }
        };
        let check = rules::names::read_back(&self.ctx.keys.identity_public, seq, &copies);
        let conflict = check.competitor.as_ref().map(|c| NameConflictView {
            name: name.to_owned(),
            user_id: c.record.user_id.to_string(),
            fingerprint: c.record.identity.fingerprint(),
            holders: c.holders,
            wins: !check.mine_wins,
            seen_at: rfc3339(self.ctx.now()),
        });
        if let Some(c) = &conflict {
            warn!(
                %name,
                other = %c.user_id,
                holders = c.holders,
                wins = c.wins,
                "another identity claims this user's name; this node keeps publishing its own record"
            );
            let _ = self.ctx.events.send(crate::views::NodeEvent::NameConflict(c.clone()));
        }
        if check.served_by == 0 {
            warn!(%name, seq, "no other peer serves this user's name record");
        }
        if let Ok(mut last) = self.name_check.lock() {
            *last = Some((check.served_by, conflict));
        }
        Some(check)
    }

    /// The valid copies of `name`'s record a lookup found, one per holder (repeats kept: a
    /// resolver counts holders, `select_record`).
    pub(crate) async fn fetch_valid(
        &self,
        name: &str,
    ) -> Result<Vec<VerifiedNameRecord>, NodeError> {
        Ok(self.fetch_copies(name, false).await?.into_iter().map(|c| c.record).collect())
    }

    /// [`Records::fetch_valid`], saying which copies came from other peers; from every closest
    /// peer when `all`.
    async fn fetch_copies(
        &self,
        name: &str,
        all: bool,
    ) -> Result<Vec<rules::names::Copy>, NodeError> {
        let key = dht_key(name);
        let raw = if all {
            self.ctx.net.get_all_records(key.to_vec()).await?
        } else {
            self.ctx.net.get_records(key.to_vec()).await?
        };
        let now = self.ctx.now();
        let mut valid = Vec::new();
        for copy in raw {
            match NameRecord::verify(&copy.value, Some(&key), now, &self.ctx.policy) {
                Ok(record) => {
                    valid.push(rules::names::Copy { remote: copy.from.is_some(), record })
                }
                Err(e) => {
                    self.ctx.counters.records_rejected.inc();
                    debug!(name, "ignoring invalid record: {e}");
                }
            }
        }
        Ok(valid)
    }

    /// Resolves a name to a verified record, pinning its key on first use.
    pub(crate) async fn resolve_record(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let now = self.ctx.now();
        // A record resolved moments ago is still good: sending a burst of messages must not
        // cost a DHT lookup each.
        if let Ok(cache) = self.resolved.lock() {
            if let Some((at, r)) = cache.get(&name) {
                if now < at + RESOLVE_CACHE_MS && now < r.expires_at {
                    return Ok(r.clone());
                }
            }
        }
        self.resolve_fresh(&name).await
    }

    /// Resolves a name on the DHT now (no cache), pinning its key on first use.
    pub(crate) async fn resolve_fresh(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let now = self.ctx.now();
        let r = self.resolve_uncached(&name, now).await?;
        self.note_record(&r);
        self.cache_resolved(name, now, &r);
        Ok(r)
    }

    pub(crate) async fn resolve_uncached(
        &self,
        name: &str,
        now: u64,
    ) -> Result<VerifiedNameRecord, NodeError> {
        let name = name.to_owned();
        let store = &self.ctx.store;
        let fetched = self.fetch_valid(&name).await;
        let contact = store.contact(&name)?;
        let pinned = trust::Pinned {
            identity: contact.as_ref().map(|c| c.identity),
            stored: contact.as_ref().and_then(|c| {
                NameRecord::verify(&c.record, Some(&dht_key(&name)), now, &self.ctx.policy).ok()
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

    /// Resolves a name for the API. A pinned name that now resolves to another key is
    /// `key_changed`, even while the pinned key's record is still found (messages keep going to
    /// the pinned key meanwhile).
    pub(crate) async fn resolve(&self, name: &str) -> Result<ResolveView, NodeError> {
        let r = self.resolve_fresh(name).await?;
        if let Some(contact) = self.ctx.store.contact(&r.name)? {
            if let Some(now) = contact.changed_to.as_ref() {
                let now = <[u8; 32]>::try_from(now.as_slice())
                    .ok()
                    .and_then(|k| IdentityPublic::from_bytes(&k).ok())
                    .map_or_else(|| hex::encode(now), |k| k.user_id().to_string());
                return Err(NodeError::KeyChanged {
                    name: r.name.clone(),
                    pinned: UserId(contact.user_id).to_string(),
                    now,
                });
            }
        }
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
            kind: r.profile.as_ref().map_or("person", |p| p.kind.as_str()).to_owned(),
            profile: r.profile.as_ref().map(crate::services::accounts::profile_view),
        })
    }

    /// Accepts the key `name` resolves to now, replacing the pinned one.
    pub(crate) async fn trust(&self, name: &str) -> Result<ContactView, NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let valid = self.fetch_valid(&name).await?;
        let winner = select_record(valid).ok_or_else(|| NodeError::NameNotFound(name.clone()))?;
        if let Ok(mut cache) = self.resolved.lock() {
            cache.remove(&name);
        }
        let contact = Contact {
            name: name.clone(),
            user_id: user_bytes(&winner.user_id),
            identity: winner.identity.to_bytes(),
            record: winner.bytes.clone(),
            pinned_at: self.ctx.now(),
            changed_to: None,
        };
        self.ctx.store.put_contact(&contact)?;
        self.ctx.store.flush().await?;
        Ok(contact_view(&contact))
    }

    /// Pinned contacts.
    pub(crate) fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        Ok(self.ctx.store.contacts()?.iter().map(contact_view).collect())
    }

    /// The identity holder's list of the user's other devices.
    pub(crate) fn linked_entries(&self) -> Result<Vec<DeviceEntry>, NodeError> {
        Ok(self.ctx.store.meta_get::<Vec<DeviceEntry>>("devices")?.unwrap_or_default())
    }

    pub(crate) fn verify_entry(&self, e: &DeviceEntry, now: u64) -> Option<RecordDevice> {
        let device = e.cert.verify(Some(&self.ctx.keys.identity_public)).ok()?;
        let prekey = e.prekey.verify(&device.device, now).ok()?;
        Some(RecordDevice { device, prekey })
    }

    /// The newest own name record: cached, else from the DHT, else the last one seen.
    pub(crate) async fn own_record(&self) -> Option<VerifiedNameRecord> {
        let name = self.ctx.name()?;
        let now = self.ctx.now();
        if let Ok(own) = self.own_record.lock() {
            if let Some((at, r)) = own.as_ref() {
                if now < at + OWN_RECORD_CACHE_MS && now < r.expires_at {
                    return Some(r.clone());
                }
            }
        }
        let me = self.ctx.keys.identity_public;
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

    pub(crate) fn stored_own_record(&self, name: &str, now: u64) -> Option<VerifiedNameRecord> {
        let bytes = self.ctx.store.meta_get::<ByteBuf>("own_record").ok().flatten()?;
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        NameRecord::verify(&bytes, Some(&dht_key(name)), now, &any_pow)
            .ok()
            .filter(|r| r.identity == self.ctx.keys.identity_public)
    }

    /// Caches the newest own record (after publishing it, or finding it).
    pub(crate) fn remember_own_record(&self, r: &VerifiedNameRecord) {
        self.ctx
            .store
            .meta_set("own_record", &ByteBuf::from(r.bytes.clone()))
            .or_warn("cannot store the own name record");
        if let Ok(mut own) = self.own_record.lock() {
            *own = Some((self.ctx.now(), r.clone()));
        }
    }

    /// The user's devices other than this one.
    pub(crate) async fn other_devices(&self) -> Vec<RecordDevice> {
        let me = self.ctx.keys.device.public_bytes();
        let now = self.ctx.now();
        if self.ctx.keys.identity.is_some() {
            let list =
                self.linked_entries().or_warn("cannot read the device list").unwrap_or_default();
            return list.iter().filter_map(|e| self.verify_entry(e, now)).collect();
        }
        match self.own_record().await {
            Some(r) => r.devices.into_iter().filter(|d| d.device.device != me).collect(),
            None => Vec::new(),
        }
    }

    /// Whether `device` (an ed25519 device key) is one of user `user`'s, by the newest record
    /// this node holds of that user (this user's own devices: [`Records::is_own_device`]).
    pub(crate) fn is_device_of(&self, user: [u8; 16], device: &[u8; 32]) -> bool {
        if user == self.ctx.user_id().0 {
            return self.is_own_device(device);
        }
        self.known_record(user, self.ctx.now())
            .and_then(|(_, _, r)| r)
            .is_some_and(|r| r.devices.iter().any(|d| &d.device.device == device))
    }

    /// Whether `device` is one of this user's devices and not revoked: this one, one the
    /// identity holder linked, or one the newest own record lists.
    pub(crate) fn is_own_device(&self, device: &[u8; 32]) -> bool {
        if *device == self.ctx.keys.device.public_bytes() {
            return true;
        }
        let revoked: Vec<[u8; 32]> =
            self.ctx.store.meta_get("revoked").ok().flatten().unwrap_or_default();
        if revoked.contains(device) {
            return false;
        }
        let now = self.ctx.now();
        let linked = self.linked_entries().unwrap_or_default();
        if linked
            .iter()
            .filter_map(|e| self.verify_entry(e, now))
            .any(|d| &d.device.device == device)
        {
            return true;
        }
        let own = self.own_record.lock().ok().and_then(|o| o.as_ref().map(|x| x.1.clone()));
        let own = own.or_else(|| self.ctx.name().and_then(|n| self.stored_own_record(&n, now)));
        own.is_some_and(|r| r.devices.iter().any(|d| &d.device.device == device))
    }

    /// Whether a message from `sender` may be accepted: its device must be listed in the newest
    /// record of its user this node knows, or have been certified after that record was issued
    /// (a device linked since). A device missing from a record issued after its certificate was
    /// revoked. Users this node holds no record of are accepted (first contact).
    pub(crate) fn device_allowed(&self, sender: &SenderDevice) -> Result<(), String> {
        self.check_device(sender, true)
    }

    /// [`Records::device_allowed`] against the records held, with no lookup started: for group
    /// messages, where every member receiving one message would otherwise refresh its sender
    /// at once. A member holding a record pushed or fetched after a revocation refuses the
    /// revoked device's messages.
    pub(crate) fn device_allowed_held(&self, sender: &SenderDevice) -> Result<(), String> {
        self.check_device(sender, false)
    }

    fn check_device(&self, sender: &SenderDevice, refresh: bool) -> Result<(), String> {
        let now = self.ctx.now();
        if sender.user_id == self.ctx.user_id() {
            let store = &self.ctx.store;
            let revoked: Vec<[u8; 32]> =
                store.meta_get("revoked").map_err(|e| e.to_string())?.unwrap_or_default();
            let linked = match self.ctx.keys.identity {
                Some(_) => Some(self.linked_entries().map_err(|e| e.to_string())?),
                None => None,
            };
            let own = self.own_record.lock().ok().and_then(|o| o.as_ref().map(|x| x.1.clone()));
            let own = own.or_else(|| self.ctx.name().and_then(|n| self.stored_own_record(&n, now)));
            let view = rules::devices::OwnDevices {
                this_device: self.ctx.keys.device.public_bytes(),
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
        if refresh && verdict.refresh {
            // Marked as checked now, so a burst of messages starts one lookup.
            if let Ok(mut known) = self.known.lock() {
                if let Some(k) = known.get_mut(&sender.user_id.0) {
                    k.0 = now;
                }
            }
            let node = self.clone();
            self.ctx.spawn(async move {
                if let Err(e) = node.resolve_fresh(&name).await {
                    debug!(%name, "refreshing a contact's record failed: {e}");
                }
            });
        }
        verdict.allowed
    }

    /// The newest record this node knows of a contact's user id: (when it was last checked
    /// against the DHT, the name, the verified record). `None` if the user is no contact.
    pub(crate) fn known_record(
        &self,
        user: [u8; 16],
        now: u64,
    ) -> Option<(u64, String, Option<VerifiedNameRecord>)> {
        if let Some(k) = self.known.lock().ok()?.get(&user) {
            return Some(k.clone());
        }
        // From the store's index of pinned names: a group message from a non-contact used to
        // read every contact.
        let name = self.ctx.store.names_pinned_to(&user).ok()?.into_iter().next()?;
        let c = self.ctx.store.contact(&name).ok()??;
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        let r = NameRecord::verify(&c.record, Some(&dht_key(&c.name)), now, &any_pow).ok();
        let entry = (0, c.name, r);
        let mut known = self.known.lock().ok()?;
        if known.len() >= MAX_RESOLVE_CACHE {
            known.clear();
        }
        known.insert(user, entry.clone());
        Some(entry)
    }

    /// Remembers a record just resolved on the DHT, for [`Records::device_allowed`].
    /// When the record lists other devices than before, queued messages stop waiting for the
    /// devices it no longer lists.
    pub(crate) fn note_record(&self, r: &VerifiedNameRecord) {
        let devices = |r: &VerifiedNameRecord| -> Vec<[u8; 32]> {
            r.devices.iter().map(|d| d.device.device).collect()
        };
        let Ok(mut known) = self.known.lock() else { return };
        let before = known.get(&r.user_id.0).and_then(|k| k.2.as_ref()).map(devices);
        if known.len() >= MAX_RESOLVE_CACHE {
            known.clear();
        }
        known.insert(r.user_id.0, (self.ctx.now(), r.name.clone(), Some(r.clone())));
        drop(known);
        let now = devices(r);
        if before.is_some_and(|b| b.iter().any(|d| !now.contains(d))) {
            let node = self.clone();
            let user = r.user_id.0;
            self.ctx.spawn(async move { node.outbox.drop_targets(user, &now).await });
        }
    }

    /// A contact pushed its newest record (`record.update`): when [`trust::pushed_record`]
    /// accepts it, it replaces the copy pinned with the contact, the resolve cache and the
    /// devices known for its user at once, so nothing more is sealed to a device it dropped.
    pub(crate) fn on_record_update(
        &self,
        sender: &SenderDevice,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let now = self.ctx.now();
        // No DHT key to check it against: the key is derived from the record's own name.
        let new = NameRecord::verify(bytes, None, now, &self.ctx.policy)
            .map_err(|e| NodeError::BadInput(format!("record.update: {e}")))?;
        let (name, key) = (new.name.clone(), dht_key(&new.name));
        let contact = self.ctx.store.contact(&name)?;
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        let held = contact
            .as_ref()
            .and_then(|c| NameRecord::verify(&c.record, Some(&key), now, &any_pow).ok());
        let pinned = contact.as_ref().map(|c| c.identity);
        let sender_key = sender.identity.to_bytes();
        if let Err(why) = trust::pushed_record(&sender_key, pinned, held.as_ref(), &new) {
            debug!(%name, "ignoring a pushed record: {why}");
            return Ok(());
        }
        let Some(mut contact) = contact else { return Ok(()) };
        contact.record = new.bytes.clone();
        self.ctx.store.put_contact(&contact)?;
        self.note_record(&new);
        self.cache_resolved(name.clone(), now, &new);
        info!(%name, seq = new.seq, devices = new.devices.len(), "a contact pushed a new record");
        Ok(())
    }

    /// The record pinned with contact `name` if it still verifies now, else a lookup: enough to
    /// seal to or dial a contact's devices without a DHT lookup each time (a record that drops
    /// a device is pushed to its contacts, `record.update`).
    pub(crate) async fn pinned_or_resolved(
        &self,
        name: &str,
    ) -> Result<VerifiedNameRecord, NodeError> {
        let any_pow = RecordPolicy { min_pow_bits: 0 };
        let now = self.ctx.now();
        let pinned =
            self.ctx.store.contact(name)?.and_then(|c| {
                NameRecord::verify(&c.record, Some(&dht_key(name)), now, &any_pow).ok()
            });
        match pinned {
            Some(r) => Ok(r),
            None => self.resolve_record(name).await,
        }
    }

    /// Remembers `r`, resolved or pushed at `now`, as the record of `name` for sends within
    /// [`RESOLVE_CACHE_MS`].
    fn cache_resolved(&self, name: String, now: u64, r: &VerifiedNameRecord) {
        if let Ok(mut cache) = self.resolved.lock() {
            if cache.len() >= MAX_RESOLVE_CACHE {
                cache.clear();
            }
            cache.insert(name, (now, r.clone()));
        }
    }

    /// A device of this user announced a new prekey: list it in the record (identity holder).
    pub(crate) fn on_device_prekey(&self, sender: &SenderDevice, prekey: &SignedPrekey) {
        if self.ctx.keys.identity.is_none() || sender.user_id != self.ctx.user_id() {
            return;
        }
        let Ok(new) = prekey.verify(&sender.device, self.ctx.now()) else { return };
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
        if changed && self.ctx.store.meta_set("devices", &list).is_ok() {
            info!(peer = %sender.peer_id, "a linked device has a new prekey; republishing");
            self.republish_soon();
        }
    }

    /// Republishes the name record in the background.
    pub(crate) fn republish_soon(&self) {
        let node = self.clone();
        self.ctx.spawn(async move {
            if let Some(name) = node.ctx.name() {
                let _guard = node.publish_lock.lock().await;
                match node.publish(&name).await {
                    Ok(seq) => {
                        node.ctx
                            .store
                            .meta_set("published_at", &node.ctx.now())
                            .or_warn(PUBLISHED_AT);
                        node.ctx.store.flush().await.or_warn("cannot flush the store");
                        node.read_back(&name, seq, true).await;
                    }
                    Err(e) => warn!("republishing the name record failed: {e}"),
                }
            }
        });
    }

    /// The mailboxes listed in this user's record.
    pub(crate) fn my_mailboxes(&self) -> Result<Vec<MailboxPeer>, NodeError> {
        Ok(self.ctx.store.meta_get::<Vec<MailboxPeer>>("mailboxes")?.unwrap_or_default())
    }

    pub(crate) async fn republish(&self) -> Result<(), NodeError> {
        // A linked device cannot sign the record; the device holding the identity key lists
        // the mailbox (this device is enrolled with it either way).
        if self.ctx.keys.identity.is_none() {
            return self.ctx.store.flush().await;
        }
        if let Some(name) = self.ctx.name() {
            let _guard = self.publish_lock.lock().await;
            let seq = self.publish(&name).await?;
            self.ctx.store.meta_set("published_at", &self.ctx.now())?;
            self.ctx.store.flush().await?;
            self.read_back(&name, seq, true).await;
            return Ok(());
        }
        self.ctx.store.flush().await
    }

    /// What the last read-back of this user's name found (for `kith status`).
    pub(crate) fn name_check(&self) -> Option<NameCheck> {
        self.name_check.lock().ok().and_then(|c| c.clone())
    }

    /// Resolves names [`RESOLVE_CONCURRENCY`] at a time (a group of hundreds would otherwise
    /// wait for hundreds of DHT lookups in a row), returned in the order given. A lookup that
    /// ends starts the next at once, whatever the others: one slow lookup (up to the 20 s query
    /// timeout) does not hold up the names after it.
    pub(crate) async fn resolve_many(
        &self,
        names: Vec<String>,
    ) -> Vec<(String, Result<VerifiedNameRecord, NodeError>)> {
        use futures::StreamExt;
        type Resolved = (String, Result<VerifiedNameRecord, NodeError>);
        let mut out: Vec<(usize, Resolved)> = futures::stream::iter(names.into_iter().enumerate())
            .map(|(i, n)| async move {
                let r = self.resolve_record(&n).await;
                (i, (n, r))
            })
            .buffer_unordered(RESOLVE_CONCURRENCY)
            .collect()
            .await;
        out.sort_unstable_by_key(|x| x.0);
        out.into_iter().map(|x| x.1).collect()
    }

    pub(crate) fn republish_due(&self) -> bool {
        let last = self.ctx.store.meta_get::<u64>("published_at").ok().flatten().unwrap_or(0);
        last + REPUBLISH_INTERVAL.as_millis() as u64 <= self.ctx.now()
    }

    /// The sender of a message named itself: resolve that name in the background and pin it if
    /// it resolves to the sender's key. A lookup that fails (a slow DHT, a node just restarted)
    /// is tried again, [`LEARN_TRIES`] times in all: a bot answers a sender by name, and
    /// waiting for the sender's next message could mean waiting for ever.
    pub(crate) fn learn_name(&self, sender: UserId, name: String) {
        let Ok(name) = normalize_name(&name) else { return };
        if self.ctx.store.contact(&name).ok().flatten().is_some() {
            return;
        }
        let key = user_bytes(&sender);
        {
            let Ok(mut learning) = self.learning.lock() else { return };
            if learning.len() >= MAX_LEARNING || !learning.insert(key) {
                return;
            }
        }
        let node = self.clone();
        self.ctx.spawn(async move {
            for attempt in 0..LEARN_TRIES {
                if attempt > 0 {
                    let wait = crate::rules::outbox::backoff(attempt - 1, 0.0);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                match node.check_claimed_name(sender, &name).await {
                    Ok(_) => break,
                    Err(e) => debug!(attempt, "could not check the sender's name: {e}"),
                }
            }
            if let Ok(mut learning) = node.learning.lock() {
                learning.remove(&key);
            }
        });
    }

    /// Looks `name` up once and pins it if it resolves to `sender`'s key. `Ok(true)`: pinned
    /// (now or before); `Ok(false)`: the name is another user's (a sender that lied).
    pub(crate) async fn check_claimed_name(
        &self,
        sender: UserId,
        name: &str,
    ) -> Result<bool, NodeError> {
        let name = normalize_name(name).map_err(|e| NodeError::BadInput(e.to_string()))?;
        if let Some(c) = self.ctx.store.contact(&name)? {
            return Ok(c.user_id == user_bytes(&sender));
        }
        let valid = self.fetch_valid(&name).await?;
        let Some(r) = select_record(valid).filter(|r| r.user_id == sender) else {
            return Ok(false);
        };
        self.ctx.store.put_contact(&Contact {
            name: name.clone(),
            user_id: user_bytes(&r.user_id),
            identity: r.identity.to_bytes(),
            record: r.bytes.clone(),
            pinned_at: self.ctx.now(),
            changed_to: None,
        })?;
        info!(%name, "learned the name of a sender");
        Ok(true)
    }
}
