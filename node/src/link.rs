//! Joining an identity as a new device (`kith init --link CODE`).
//!
//! The new device creates its own device and static keys and a first prekey, dials the device
//! that showed the code over libp2p (TCP or memory, Noise, Yamux; the Noise handshake
//! authenticates that device by the peer id in the code), sends the code's secret with its
//! public keys, and receives a certificate signed by the identity key and a snapshot of the
//! account: name, newest name record, contacts with their pinned keys, groups with their keys,
//! mailboxes, and (if asked) the message history, page by page. The home's key files are written
//! last, once everything else is stored and flushed, so a failed link leaves no identity behind.

use std::time::Duration;

use kith_protocol::codec;
use kith_protocol::link::{LinkCode, LinkRequest, LinkResponse};
use kith_protocol::mailbox::{MailboxRequest, MailboxResponse};
use kith_protocol::name::MailboxPeer;
use kith_protocol::{
    dht_key, DeviceCertificate, DeviceKeypair, IdentityPublic, NameRecord, RecordPolicy,
    SignedPrekey, X25519Secret,
};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use serde_bytes::ByteBuf;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::NodeError;
use crate::home::Home;
use crate::metrics::Counters;
use crate::network::{self, NetworkConfig, TransportKind};
use crate::node::PREKEY_LIFETIME_MS;
use crate::now_ms;
use crate::store::{Contact, GroupState, PrekeyEntry, Store, StoredMessage};

/// Largest stored value accepted in a snapshot.
const MAX_SNAPSHOT_VALUE: usize = 1024 * 1024;

/// How to join.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The link code shown by `kith device link`.
    pub code: String,
    /// This device's label ("laptop").
    pub label: String,
    /// Whether to copy the message history.
    pub history: bool,
    /// Transport (TCP for real use, memory for tests).
    pub transport: TransportKind,
    /// How long to wait for each answer of the other device.
    pub timeout: Duration,
}

/// What joining did.
#[derive(Clone, Debug, Serialize)]
pub struct JoinInfo {
    /// The user id of the identity joined.
    pub user_id: String,
    /// This device's peer id.
    pub peer_id: String,
    /// Safety number of the identity key.
    pub fingerprint: String,
    /// The registered name, if any.
    pub name: Option<String>,
    /// Contacts copied.
    pub contacts: usize,
    /// Groups copied.
    pub groups: usize,
    /// Messages copied.
    pub messages: usize,
}

fn link_err(what: impl std::fmt::Display) -> NodeError {
    NodeError::Link(what.to_string())
}

/// Joins the identity whose device showed `opts.code`, writing a new home at `home`.
/// `progress` is called with the number of history messages copied so far.
pub async fn join(
    home: &Home,
    opts: JoinOptions,
    progress: impl FnMut(usize),
) -> Result<JoinInfo, NodeError> {
    home.refuse_initialized()?;
    let code =
        LinkCode::parse(&opts.code).map_err(|e| link_err(format!("not a link code: {e}")))?;
    let peer = PeerId::from_bytes(&code.peer).map_err(|e| link_err(format!("link code: {e}")))?;
    let addrs: Vec<Multiaddr> = code.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let store_existed = home.store_path().exists();
    let result = run(home, &opts, code, peer, addrs, progress).await;
    if result.is_err() && !store_existed {
        let _ = std::fs::remove_dir_all(home.store_path());
    }
    result
}

async fn run(
    home: &Home,
    opts: &JoinOptions,
    code: LinkCode,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    progress: impl FnMut(usize),
) -> Result<JoinInfo, NodeError> {
    let keys = NewKeys::generate();
    let (net, swarm, drain) = start_network(&keys.device, opts)?;
    let other = OtherDevice { net, peer, addrs, timeout: opts.timeout };
    let result = async {
        let snapshot = request_snapshot(&other, &code, &keys, opts).await?;
        let store = write_snapshot(home, &keys, &snapshot)?;
        let messages =
            if opts.history { copy_history(&other, &code, &store, progress).await? } else { 0 };
        store.flush().await?;
        enroll_with_mailboxes(&other.net, &snapshot).await;
        drop(store);
        write_keys(home, &keys, snapshot, messages)
    }
    .await;
    swarm.abort();
    drain.abort();
    result
}

/// The keys this device makes for itself before asking to join.
struct NewKeys {
    device: DeviceKeypair,
    static_key: X25519Secret,
    prekey_secret: X25519Secret,
    prekey: SignedPrekey,
    /// When the prekey was made.
    now: u64,
}

impl NewKeys {
    fn generate() -> NewKeys {
        let mut rng = rand::rngs::OsRng;
        let device = DeviceKeypair::generate(&mut rng);
        let static_key = X25519Secret::generate(&mut rng);
        let now = now_ms();
        let prekey_secret = X25519Secret::generate(&mut rng);
        let prekey = SignedPrekey::sign(&device, 1, &prekey_secret, now, now + PREKEY_LIFETIME_MS);
        NewKeys { device, static_key, prekey_secret, prekey, now }
    }
}

/// Starts a network that only dials out, returning its client, the swarm task, and the task
/// that drops inbound requests.
fn start_network(
    device: &DeviceKeypair,
    opts: &JoinOptions,
) -> Result<(network::Client, JoinHandle<()>, JoinHandle<()>), NodeError> {
    let (net, mut events, event_loop) = network::new(
        device.to_libp2p(),
        NetworkConfig {
            transport: opts.transport.clone(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            pow_bits: 0,
            relay: false,
            limits: network::Limits::default(),
        },
        Counters::default(),
        &mut libp2p::metrics::Registry::default(),
    )?;
    let swarm = tokio::spawn(event_loop.run());
    // This device serves nothing while joining: inbound requests are dropped.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    Ok((net, swarm, drain))
}

/// The device that showed the code, as this one reaches it.
struct OtherDevice {
    net: network::Client,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    /// How long to wait for each answer.
    timeout: Duration,
}

impl OtherDevice {
    /// Sends `request` and returns the answer; a refusal is an error.
    async fn ask(&self, request: LinkRequest) -> Result<LinkResponse, NodeError> {
        let send = self.net.link_request(self.peer, self.addrs.clone(), request.to_bytes());
        let answer = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| link_err("the device that showed the code did not answer in time"))??
            .map_err(|e| link_err(format!("cannot reach the device that showed the code: {e}")))?;
        match LinkResponse::from_bytes(&answer) {
            Ok(LinkResponse::Refused { reason }) => Err(link_err(format!("refused: {reason}"))),
            Ok(r) => Ok(r),
            Err(e) => Err(link_err(format!("malformed answer: {e}"))),
        }
    }
}

/// The account as the other device sent it, with the certificate and name record checked.
struct Snapshot {
    cert: DeviceCertificate,
    identity: IdentityPublic,
    name: Option<String>,
    record: Option<ByteBuf>,
    contacts: Vec<ByteBuf>,
    groups: Vec<ByteBuf>,
    mailboxes: Vec<MailboxPeer>,
}

/// Asks to join with the code's secret and this device's public keys, and checks that the
/// certificate is for this device and the name record (if any) of the same identity.
async fn request_snapshot(
    other: &OtherDevice,
    code: &LinkCode,
    keys: &NewKeys,
    opts: &JoinOptions,
) -> Result<Snapshot, NodeError> {
    let joined = other
        .ask(LinkRequest::Join {
            secret: code.secret,
            device: keys.device.public_bytes(),
            static_key: keys.static_key.public(),
            label: opts.label.clone(),
            prekey: keys.prekey.clone(),
            history: opts.history,
        })
        .await?;
    let LinkResponse::Joined { cert, name, record, contacts, groups, mailboxes } = joined else {
        return Err(link_err("unexpected answer to the link request"));
    };
    let v = cert.verify(None).map_err(|e| link_err(format!("the certificate: {e}")))?;
    if v.device != keys.device.public_bytes() || v.static_key != keys.static_key.public() {
        return Err(link_err("the certificate is not for this device"));
    }
    let identity = v.identity;
    if let (Some(name), Some(record)) = (&name, &record) {
        let r = NameRecord::verify(
            record,
            Some(&dht_key(name)),
            now_ms(),
            &RecordPolicy { min_pow_bits: 0 },
        )
        .map_err(|e| link_err(format!("the name record: {e}")))?;
        if r.identity != identity {
            return Err(link_err("the name record is of another identity"));
        }
    }
    Ok(Snapshot { cert, identity, name, record, contacts, groups, mailboxes })
}

fn bad_snapshot(e: kith_protocol::DecodeError) -> NodeError {
    link_err(format!("snapshot: {e}"))
}

/// Creates the home's directory and store, and writes the prekey and the snapshot into it.
fn write_snapshot(home: &Home, keys: &NewKeys, snapshot: &Snapshot) -> Result<Store, NodeError> {
    home.create_dir()?;
    let store = Store::open(&home.store_path())?;
    store.put_prekey(&PrekeyEntry {
        id: 1,
        secret: *keys.prekey_secret.to_bytes(),
        signed: codec::to_vec(&keys.prekey),
        created_at: keys.now,
        expires_at: keys.now + PREKEY_LIFETIME_MS,
        replaced_at: None,
    })?;
    for c in &snapshot.contacts {
        let c: Contact = codec::from_stored_slice(c, MAX_SNAPSHOT_VALUE).map_err(bad_snapshot)?;
        store.put_contact(&c)?;
    }
    for g in &snapshot.groups {
        let g: GroupState =
            codec::from_stored_slice(g, MAX_SNAPSHOT_VALUE).map_err(bad_snapshot)?;
        store.put_group(&g)?;
    }
    if let Some(n) = &snapshot.name {
        store.meta_set("name", n)?;
    }
    if let Some(r) = &snapshot.record {
        store.meta_set("own_record", r)?;
    }
    store.meta_set("mailboxes", &snapshot.mailboxes)?;
    Ok(store)
}

/// Fetches the message history page by page into `store`, calling `progress` after each page;
/// returns the number of messages new to the store.
async fn copy_history(
    other: &OtherDevice,
    code: &LinkCode,
    store: &Store,
    mut progress: impl FnMut(usize),
) -> Result<usize, NodeError> {
    let mut messages = 0;
    let mut after: Option<ByteBuf> = None;
    loop {
        let page = other.ask(LinkRequest::History { secret: code.secret, after }).await?;
        let LinkResponse::History { messages: page, next } = page else {
            return Err(link_err("unexpected answer to a history request"));
        };
        for m in &page {
            let m: StoredMessage =
                codec::from_stored_slice(m, MAX_SNAPSHOT_VALUE).map_err(bad_snapshot)?;
            if store.insert_incoming(&m)? {
                messages += 1;
                remember_attachment(store, &m, other.peer)?;
            }
        }
        progress(messages);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(messages)
}

/// A file copied with the history: recorded as `available`, to be fetched on request from the
/// device it was copied from (one of this user's own, so allowed to serve it), its sender or,
/// in a group, the members. A group message's copy is its sealed envelope: it is opened with
/// the group's epoch key from the snapshot (a message of an epoch whose key the snapshot does
/// not hold, or that does not open and verify, is left without its file).
fn remember_attachment(store: &Store, m: &StoredMessage, from: PeerId) -> Result<(), NodeError> {
    if m.kind != "attachment" {
        return Ok(());
    }
    let message = if m.is_group() {
        let Ok(env) = kith_protocol::group::GroupEnvelope::from_bytes(&m.raw) else {
            return Ok(());
        };
        let Some(g) = store.group_shared(&env.group.0) else { return Ok(()) };
        let Ok(key) = crate::rules::group::epoch_key(&g, env.epoch) else { return Ok(()) };
        match env.open(&key) {
            Ok(opened) if opened.message.id.0 == m.id => opened.message,
            _ => return Ok(()),
        }
    } else {
        let Ok(message) = kith_protocol::Message::from_bytes(&m.raw) else { return Ok(()) };
        message
    };
    let kith_protocol::Content::Attachment(a) = &message.content else { return Ok(()) };
    let entry = crate::store::AttachmentEntry {
        message: m.id,
        conversation: m.conversation,
        peer: m.peer,
        group: m.is_group(),
        attachment: codec::to_vec(&**a),
        sender_device: from.to_bytes(),
        state: crate::store::BlobState::Available,
        error: None,
        saved_to: None,
        at: now_ms(),
        mailbox_held: false,
    };
    store.put_attachment(&a.hash, &entry)
}

/// Mailboxes hold mail for enrolled devices only: enrolls this one with each. Failures are
/// logged, not fatal.
async fn enroll_with_mailboxes(net: &network::Client, snapshot: &Snapshot) {
    for mb in &snapshot.mailboxes {
        let Ok(mpeer) = PeerId::from_bytes(&mb.peer_id) else { continue };
        let maddrs = mb.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let request = MailboxRequest::Enroll { cert: snapshot.cert.clone() }.to_bytes();
        match net.mailbox_request(mpeer, maddrs, request).await {
            Ok(Ok(a))
                if matches!(MailboxResponse::from_bytes(&a), Ok(MailboxResponse::Enrolled)) => {}
            other => warn!(peer = %mpeer, "could not enroll with a mailbox: {other:?}"),
        }
    }
}

/// Writes the home's key files, last: their presence marks the home initialized.
fn write_keys(
    home: &Home,
    keys: &NewKeys,
    snapshot: Snapshot,
    messages: usize,
) -> Result<JoinInfo, NodeError> {
    let info = home.write_device(
        None,
        &snapshot.identity,
        &keys.device,
        &keys.static_key,
        &snapshot.cert,
    )?;
    Ok(JoinInfo {
        user_id: info.user_id.to_string(),
        peer_id: info.peer_id,
        fingerprint: info.fingerprint,
        name: snapshot.name,
        contacts: snapshot.contacts.len(),
        groups: snapshot.groups.len(),
        messages,
    })
}
