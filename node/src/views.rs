//! What the node shows: messages, status, names, contacts and conversations as the API and the
//! CLI see them, the events subscribers receive, and how a stored message becomes a view.

use std::collections::HashMap;

use kith_protocol::{ConversationId, IdentityPublic, MessageId, UserId};
use serde::Serialize;

use crate::error::NodeError;
use crate::rfc3339;
use crate::store::{Contact, Direction, Status, Store, StoredMessage};

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
    /// A read-back of this user's name found another identity's record for it.
    NameConflict(NameConflictView),
    /// An attachment's blob is being fetched (progress), or its fetch ended.
    Transfer(TransferView),
    /// A call rang, changed or ended.
    Call(Box<crate::services::calls::CallView>),
    /// An offer or answer for this device's part in a call.
    CallSignal(crate::services::calls::CallSignalView),
    /// A listening session started, changed, or this device's clock estimate moved.
    Listen(Box<crate::services::listen::ListenView>),
}

/// How an attachment's fetch stands, as the event stream reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TransferView {
    /// The blob's hash, hex.
    pub hash: String,
    /// The messages that carry it.
    pub messages: Vec<String>,
    /// `downloading`, `complete` or `failed`.
    pub state: &'static str,
    /// Plaintext bytes held so far (whole chunks).
    pub bytes_held: u64,
    /// The plaintext size.
    pub size: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An attachment as the API shows it with its message.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AttachmentView {
    /// The blob's hash, hex.
    pub hash: String,
    /// The file name its sender gave.
    pub name: Option<String>,
    /// The MIME type its sender gave.
    pub mime: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// The caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Width and height in pixels, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Duration in milliseconds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Whether an inline preview came with it (`GET /v1/messages/{id}/preview`).
    pub preview: bool,
    /// `available`, `downloading`, `complete`, `failed` or `evicted`.
    pub state: &'static str,
    /// While downloading: plaintext bytes held so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_held: Option<u64>,
    /// Why the last fetch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where it was last saved, as the saver reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<String>,
    /// For an attachment this device sent: one of the user's mailboxes holds it whole (its
    /// recipients can fetch it while this device is offline).
    pub held_by_mailbox: bool,
}

/// Another identity's claim on this user's name, as the last read-back found it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NameConflictView {
    /// The name.
    pub name: String,
    /// The other claim's user id.
    pub user_id: String,
    /// Its safety number.
    pub fingerprint: String,
    /// How many DHT holders returned it.
    pub holders: usize,
    /// Whether a resolver handed the same copies would pick it over this user's record.
    pub wins: bool,
    /// When it was found, RFC 3339.
    pub seen_at: String,
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
    /// For an `attachment`: the file and where its blob stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<AttachmentView>>,
    /// For a `reply`: the message it answers (in history listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Box<ReplyRef>>,
    /// Reactions to it, each emoji with who gave it (in history listings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
    /// Its sender edited it (`text` is the newest text).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// Its sender deleted it for everyone (no `text`, no `attachment`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// For a `location`: the point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<LocationView>>,
    /// For an `interactive` message: what it offers now and the answers that fit it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Box<crate::services::interactive::InteractiveView>>,
    /// Not shown in the history on its own (an answer to an event, a list's edit, a payment's
    /// confirmation, a live location's update): only the event stream carries it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// A shared point, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LocationView {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f32>,
    /// A label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The point on OpenStreetMap (a link a person may open; nothing loads it by itself).
    pub map_url: String,
}

// The coordinates are never NaN (checked when the message was decoded), so equality is total.
impl Eq for LocationView {}

impl LocationView {
    fn of(p: &crate::store::Point) -> Self {
        LocationView {
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
            label: p.label.clone(),
            map_url: format!(
                "https://www.openstreetmap.org/?mlat={lat:.6}&mlon={lon:.6}#map=16/{lat:.6}/{lon:.6}",
                lat = p.lat,
                lon = p.lon
            ),
        }
    }
}

/// The message a reply answers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReplyRef {
    /// Its id.
    pub id: String,
    /// Its sender.
    pub from: String,
    /// Its text (the first 200 bytes), if it has some and is not deleted.
    pub text: Option<String>,
}

/// One emoji given to a message.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReactionView {
    /// The emoji.
    pub emoji: String,
    /// How many people gave it.
    pub count: usize,
    /// Who (names, else user ids).
    pub by: Vec<String>,
    /// This user is one of them.
    pub mine: bool,
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
    /// Other peers that served this user's name record when it was last read back after
    /// publishing (`None` before the first read-back, or with no name).
    pub name_served_by: Option<usize>,
    /// Another identity's record for this user's name, if the last read-back found one.
    pub name_conflict: Option<NameConflictView>,
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
    /// `person`, `business` or `bot`, as its record declares.
    pub kind: String,
    /// Its public profile, with its domain checked, when the record carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::services::accounts::ProfileView>,
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
    /// `person`, `business` or `bot`, as its pinned record declares.
    pub kind: String,
    /// Its display name, when its record carries a profile with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
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
    /// Other peers that served the record when it was read back just after it was stored.
    pub served_by: usize,
    /// What to tell the user when the read-back was not what it should be (no other peer
    /// serves the record yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A conversation as the API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ConversationView {
    /// Conversation id.
    pub id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// Members: names when known, else user ids.
    pub members: Vec<String>,
    /// For a group: whether this user is still a member.
    pub active: bool,
    /// For a group: how many of its messages this device can prove it lacks (a number missing
    /// in a member device's sequence), still being caught up on. Absent for direct chats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<u64>,
}

/// A conversation with its last message and how many of its recent messages are unread, as
/// `GET /v1/conversations` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ConversationSummary {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: ConversationView,
    /// Its last message, if any.
    pub last: Option<MessageView>,
    /// Incoming messages not read yet, among its last [`UNREAD_WINDOW`].
    pub unread: usize,
    /// Muted now (its messages arrive; the apps do not notify).
    pub muted: bool,
}

/// How many of a conversation's last messages its unread count looks at.
pub const UNREAD_WINDOW: usize = 100;

/// A message just sent, and the people its text mentioned who could not be invited.
#[derive(Clone, Debug, Serialize)]
pub struct SentView {
    /// The message.
    pub message: MessageView,
    /// Mentions that did not become invitations (the name does not resolve now).
    pub not_invited: Vec<NotInvitedView>,
}

/// A mention that did not become an invitation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NotInvitedView {
    /// The name mentioned.
    pub name: String,
    /// Why it was not invited (the name is not registered, the DHT did not answer, ...).
    pub reason: String,
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

pub(crate) fn contact_view(c: &Contact) -> ContactView {
    let fingerprint =
        IdentityPublic::from_bytes(&c.identity).map(|k| k.fingerprint()).unwrap_or_default();
    let profile = kith_protocol::name::profile_of(&c.record);
    ContactView {
        name: c.name.clone(),
        user_id: UserId(c.user_id).to_string(),
        fingerprint,
        key_changed: c.changed_to.is_some(),
        kind: profile.as_ref().map_or("person", |p| p.kind.as_str()).to_owned(),
        display_name: profile.and_then(|p| p.display_name),
    }
}

pub(crate) fn view_of(
    store: &Store,
    me: UserId,
    m: &StoredMessage,
) -> Result<MessageView, NodeError> {
    Ok(view(store, me, m, &names_for(store, me, &[m.sender, m.peer])?))
}

pub(crate) fn names(store: &Store, me: UserId) -> Result<HashMap<[u8; 16], String>, NodeError> {
    let pinned = store.contacts()?.into_iter().map(|c| (c.user_id, c.name)).collect();
    Ok(names_with(store, me, pinned, |_| true))
}

/// The names of `users` only (those a message view shows): a view no longer copies the names
/// of every member of every group.
pub(crate) fn names_for(
    store: &Store,
    me: UserId,
    users: &[[u8; 16]],
) -> Result<HashMap<[u8; 16], String>, NodeError> {
    // Of several names pinned to one user, the last in name order, as for `names`.
    let mut pinned = HashMap::new();
    for u in users {
        if let Some(n) = store.names_pinned_to(u)?.pop() {
            pinned.insert(*u, n);
        }
    }
    Ok(names_with(store, me, pinned, |u| users.contains(u)))
}

/// `pinned` (the contacts' names wanted), this user's own name, and group members' names.
fn names_with(
    store: &Store,
    me: UserId,
    mut names: HashMap<[u8; 16], String>,
    wanted: impl Fn(&[u8; 16]) -> bool,
) -> HashMap<[u8; 16], String> {
    if let Some(n) = store.meta_get::<String>("name").ok().flatten() {
        names.insert(me.0, n);
    }
    // Group members' names as their group lists them, where no pinned contact names them.
    for g in store.groups_shared() {
        for m in g.members.iter().filter(|m| wanted(&m.user)) {
            if let Some(n) = &m.name {
                names.entry(m.user).or_insert_with(|| n.clone());
            }
        }
    }
    names
}

pub(crate) fn pending_reason(store: &Store, m: &StoredMessage) -> Option<String> {
    if m.direction != Direction::Out || matches!(m.status, Status::Delivered | Status::Read) {
        return None;
    }
    if m.is_group() {
        return (m.status == Status::Waiting).then(|| {
            let until = rfc3339(m.sent_at.saturating_add(crate::rules::outbox::WAITING_LIMIT_MS));
            format!("waiting for the group's state to reach this device (until {until})")
        });
    }
    let entry = store.outbox_entry(&m.id).ok().flatten()?;
    if let Some(w) = &entry.waiting {
        let why = w.last_error.as_deref().unwrap_or("not looked up yet");
        let until = rfc3339(w.since.saturating_add(crate::rules::outbox::WAITING_LIMIT_MS));
        return Some(format!("waiting for @{}: {why} (retried until {until})", w.name));
    }
    entry.targets.iter().filter(|t| !t.done).find_map(|t| t.last_error.clone())
}

pub(crate) fn view(
    store: &Store,
    me: UserId,
    m: &StoredMessage,
    names: &HashMap<[u8; 16], String>,
) -> MessageView {
    let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
    let me = me.0;
    let group = m.is_group();
    let (from, to) = match m.direction {
        _ if group => (show(&m.sender), format!("#{}", ConversationId(m.conversation))),
        Direction::Out => match &m.waiting_for {
            Some(name) => (show(&me), name.clone()),
            None => (show(&me), show(&m.peer)),
        },
        Direction::In => (show(&m.sender), show(&me)),
    };
    let interactive = if m.kind == "interactive" {
        crate::services::interactive::view_of(store, m, crate::now_ms(), names)
    } else {
        None
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
        kind: m.kind.clone(),
        sent_at: rfc3339(m.sent_at),
        status: m.status.as_str(),
        pending_reason: pending_reason(store, m),
        attachment: if m.kind == "attachment" { attachment_view(store, &m.id) } else { None },
        reply_to: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        location: m.point.as_ref().map(|p| Box::new(LocationView::of(p))),
        hidden: m.hidden,
        // An interactive message reads as its sender's last update says.
        text: interactive.as_ref().map(|i| i.text.clone()).or_else(|| m.text.clone()),
        interactive,
    }
}

/// The kinds that say something about another message and are shown on it, not on their own.
pub(crate) const ANNOTATIONS: [&str; 3] = ["reaction", "edit", "delete"];

/// A page of the history: the messages of `stored` (oldest first) with the reactions, edits
/// and deletes among them applied to the messages they name (`rules::annotations`), replies
/// with the message they answer; the annotations themselves are not listed.
pub(crate) fn page(
    store: &Store,
    me: UserId,
    stored: &[StoredMessage],
    names: &HashMap<[u8; 16], String>,
) -> Vec<MessageView> {
    use crate::rules::annotations::{self, Annotation, Kind};
    let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
    let mut notes: HashMap<[u8; 16], Vec<Annotation>> = HashMap::new();
    for m in stored.iter().filter(|m| ANNOTATIONS.contains(&m.kind.as_str())) {
        let Some(target) = m.target else { continue };
        let kind = match m.kind.as_str() {
            "reaction" => {
                Kind::Reaction { emoji: m.text.clone().unwrap_or_default(), remove: m.removed }
            }
            "edit" => Kind::Edit { body: m.text.clone().unwrap_or_default() },
            _ => Kind::Delete,
        };
        notes.entry(target).or_default().push(Annotation {
            sender: m.sender,
            sent_at: m.sent_at,
            kind,
        });
    }
    let excerpt = |t: &str| {
        let mut end = t.len().min(200);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t[..end].to_owned()
    };
    stored
        .iter()
        .filter(|m| !ANNOTATIONS.contains(&m.kind.as_str()))
        .map(|m| {
            let mut v = view(store, me, m, names);
            if let Some(list) = notes.get(&m.id) {
                let a = annotations::apply(m.sender, list);
                if a.deleted {
                    v.deleted = true;
                    v.text = None;
                    v.attachment = None;
                    v.location = None;
                } else if let Some(text) = a.edited {
                    v.edited = true;
                    v.text = Some(text);
                }
                v.reactions = a
                    .reactions
                    .into_iter()
                    .map(|(emoji, users)| ReactionView {
                        emoji,
                        count: users.len(),
                        mine: users.contains(&me.0),
                        by: users.iter().map(show).collect(),
                    })
                    .collect();
            }
            if let Some(target) = m.target.filter(|_| m.kind == "reply") {
                v.reply_to = store.message(&target).ok().flatten().map(|t| {
                    // The answered message as it reads now, when its changes are on this page.
                    let now = notes.get(&t.id).map(|list| annotations::apply(t.sender, list));
                    let text = match now {
                        Some(a) if a.deleted => None,
                        Some(a) => a.edited.or(t.text),
                        None => t.text,
                    };
                    Box::new(ReplyRef {
                        id: MessageId(t.id).to_string(),
                        from: show(&t.sender),
                        text: text.as_deref().map(excerpt),
                    })
                });
            }
            v
        })
        .collect()
}

/// The attachment of message `id`, as the API shows it.
pub(crate) fn attachment_view(store: &Store, id: &[u8; 16]) -> Option<Box<AttachmentView>> {
    let e = store.attachment(id).ok().flatten()?;
    let a = e.attachment().ok()?;
    // Whole chunks held.
    let bytes_held =
        store.progress(&a.hash).map(|(held, _)| kith_protocol::blob::bytes_in_chunks(held, a.size));
    Some(Box::new(AttachmentView {
        hash: hex::encode(a.hash),
        name: a.name,
        mime: a.mime,
        size: a.size,
        caption: a.caption,
        width: a.width,
        height: a.height,
        duration_ms: a.duration_ms,
        preview: a.preview.is_some(),
        state: e.state.as_str(),
        bytes_held: bytes_held.filter(|_| e.state == crate::store::BlobState::Downloading),
        error: e.error,
        saved_to: e.saved_to,
        held_by_mailbox: e.mailbox_held,
    }))
}
