//! Messages and their content types.
//!
//! A [`Message`] is what a user sends: an id, the conversation it belongs to, the sender, a
//! timestamp and a [`Content`]. On the wire a content is a pair `{kind, body}` where `body` is
//! the CBOR encoding of the kind's own structure, so a receiver that does not know a kind keeps
//! it as [`Content::Unsupported`] instead of rejecting the whole message.

use std::fmt;

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::blob::Attachment;
use crate::call::{CallLog, CallSignal};
use crate::codec;
use crate::error::DecodeError;
use crate::identity::UserId;

/// Largest encoded message, in bytes (it must fit one envelope with its sender certificate).
pub const MAX_MESSAGE_SIZE: usize = 60 * 1024;
/// Largest group envelope a `group.copy` carries (it must fit a direct message).
pub const MAX_GROUP_COPY: usize = 56 * 1024;
/// Longest text body, in bytes.
pub const MAX_TEXT: usize = 32 * 1024;
/// Longest short string field (emoji, mime type, currency, labels, file names), in bytes.
pub const MAX_SHORT: usize = 256;
/// Most entries in a list field (receipt ids, bill shares, group members).
pub const MAX_LIST: usize = 1024;
/// Most parts of one `group.invite` state: a member list too long for one message is sent as
/// up to this many parts, each a message of its own.
pub const MAX_INVITE_PARTS: u32 = 8;

/// Domain separation prefix of direct conversation ids.
pub const DOMAIN_DIRECT: &[u8] = b"kith/v1/direct";

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random<R: rand_core::RngCore>(rng: &mut R) -> Self {
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
                $name(id)
            }

            /// Parses the 32-hex-digit form.
            pub fn parse(s: &str) -> Result<Self, DecodeError> {
                let mut id = [0u8; 16];
                hex::decode_to_slice(s, &mut id).map_err(|_| {
                    DecodeError::Invalid(format!("{} must be 32 hex digits: {s:?}", stringify!($name)))
                })?;
                Ok($name(id))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

id_type!(
    /// Identifies a message; chosen at random by the sender, used to deduplicate.
    MessageId
);
id_type!(
    /// Identifies a conversation: derived for a direct chat, random for a group.
    ConversationId
);
id_type!(
    /// Identifies a bill split or a live-location session.
    SessionId
);

impl ConversationId {
    /// The id of the direct conversation between two users, the same whichever side computes
    /// it: the first 16 bytes of `SHA-256("kith/v1/direct" || 0x00 || min(a,b) || max(a,b))`.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let digest = Sha256::new()
            .chain_update(DOMAIN_DIRECT)
            .chain_update([0u8])
            .chain_update(lo.0)
            .chain_update(hi.0)
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        ConversationId(id)
    }
}

/// A message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Format version, [`VERSION`](crate::VERSION).
    pub v: u8,
    /// Message id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// The sending user.
    pub sender: UserId,
    /// When it was sent, milliseconds since the Unix epoch (the sender's clock).
    pub sent_at: u64,
    /// What it says.
    pub content: Content,
}

impl Message {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a message and checks every field against the protocol's limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: Message = codec::from_slice(bytes, MAX_MESSAGE_SIZE)?;
        crate::check_version(msg.v)?;
        msg.content.validate()?;
        Ok(msg)
    }
}

/// Delivery or read receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The messages were stored on a device of the recipient.
    Delivered,
    /// The recipient has seen the messages.
    Read,
}

/// A member of a group, as named in group control messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's user id.
    pub user: UserId,
    /// The member's identity public key.
    #[serde(with = "serde_bytes")]
    pub identity: [u8; 32],
    /// The member's name, when known.
    pub name: Option<String>,
}

/// Which part of a split `group.invite` this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitePart {
    /// 0-based index of this part.
    pub index: u32,
    /// Number of parts (2 to [`MAX_INVITE_PARTS`]).
    pub count: u32,
}

/// How a group state travels to the members it adds: down a tree over the new members (those
/// from `from` in the member list), rooted at the state's sender, each member handing it on
/// to its children once it joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOn {
    /// Index in the member list of the first new member.
    pub from: u32,
    /// When the state's sender sent it (its clock): the new members' history starts there,
    /// however long the state took to reach them.
    pub sent_at: u64,
}

/// One share of a bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Who owes it.
    pub user: UserId,
    /// Amount in minor units of the bill's currency (cents).
    pub amount: i64,
    /// Whether it has been settled.
    pub settled: bool,
}

/// A block or unblock, as the user's devices tell each other (`sync.block`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockNote {
    /// Who.
    pub user: UserId,
    /// Their name, when known.
    pub name: Option<String>,
    /// Blocked (else unblocked).
    pub blocked: bool,
    /// When, by the deciding device's clock (ms): of two notes about one user, the later wins.
    pub at: u64,
}

/// A person subscribing to, or unsubscribing from, a business or bot (`consent`): whether it
/// may write to the person (`docs/protocol.md` 6.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentNote {
    /// Subscribed (else unsubscribed).
    pub subscribed: bool,
}

/// Plain text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The text.
    pub body: String,
}

/// The content of a message. Each variant has a wire `kind` string, given in its doc.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// `text`: plain text.
    Text(Text),
    /// `reply`: text replying to an earlier message.
    Reply {
        /// The message replied to.
        to: MessageId,
        /// The reply's text.
        body: String,
    },
    /// `reaction`: an emoji reaction to a message, or its removal.
    Reaction {
        /// The message reacted to.
        to: MessageId,
        /// The emoji.
        emoji: String,
        /// True to take the reaction back.
        remove: bool,
    },
    /// `edit`: a new text for an earlier message of the same sender.
    Edit {
        /// The message edited.
        to: MessageId,
        /// The new text.
        body: String,
    },
    /// `delete`: the sender deletes an earlier message for everyone.
    Delete {
        /// The message deleted.
        to: MessageId,
    },
    /// `receipt`: delivery or read receipt for messages.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// The messages concerned.
        ids: Vec<MessageId>,
    },
    /// `typing`: the sender started or stopped typing.
    Typing {
        /// True while typing.
        active: bool,
    },
    /// `location`: a point.
    Location {
        /// Latitude in degrees, -90 to 90.
        lat: f64,
        /// Longitude in degrees, -180 to 180.
        lon: f64,
        /// Accuracy radius in metres, if known.
        accuracy_m: Option<f32>,
        /// A label ("the café").
        label: Option<String>,
    },
    /// `live_location`: one update of a live-location session.
    LiveLocation {
        /// The session this update belongs to.
        session: SessionId,
        /// Update counter within the session.
        seq: u32,
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
        /// Accuracy radius in metres, if known.
        accuracy_m: Option<f32>,
        /// When the session ends, milliseconds since the Unix epoch.
        until: u64,
        /// True for the last update (sharing stopped).
        stopped: bool,
    },
    /// `attachment`: a reference to an encrypted blob stored elsewhere (`docs/protocol.md` 6.3).
    Attachment(Box<Attachment>),
    /// `bill`: a bill split among people, or an update of its settlement state.
    BillSplit {
        /// Identifies the bill across updates.
        bill: SessionId,
        /// What it was for.
        description: String,
        /// Total in minor units.
        total: i64,
        /// ISO 4217 currency code (three capital letters).
        currency: String,
        /// Who owes what, and whether each share is settled.
        shares: Vec<Share>,
    },
    /// `group.invite`: sent in a sealed envelope to a new member.
    GroupInvite {
        /// The group conversation.
        group: ConversationId,
        /// Its title.
        title: Option<String>,
        /// All members including the invitee.
        members: Vec<Member>,
        /// The current epoch number.
        epoch: u64,
        /// The current epoch key.
        epoch_key: [u8; 32],
        /// `Some` when the member list is split over several invites: this part's place.
        /// `members` then holds this part's slice of the list, in order.
        part: Option<InvitePart>,
        /// `Some` when the members who are new in this state hand it on to each other (a
        /// tree, `docs/protocol.md` 7.4) instead of all getting it from its sender.
        hand_on: Option<HandOn>,
    },
    /// `group.add`: a member was added (announced to the group).
    GroupAdd {
        /// The group.
        group: ConversationId,
        /// The new member.
        member: Member,
    },
    /// `group.leave`: the sender leaves the group.
    GroupLeave {
        /// The group.
        group: ConversationId,
    },
    /// `group.remove`: the sender removes a member.
    GroupRemove {
        /// The group.
        group: ConversationId,
        /// The removed member.
        user: UserId,
    },
    /// `group.key`: a new epoch key, sent in sealed envelopes to the remaining members.
    GroupKey {
        /// The group.
        group: ConversationId,
        /// The new epoch.
        epoch: u64,
        /// The epoch key.
        key: [u8; 32],
    },
    /// `sync.sent`: a copy of a direct message this user sent from one device, for the user's
    /// other devices (sent to the user's own devices only).
    SelfSent {
        /// The other user of the conversation.
        peer: UserId,
        /// That user's name, when known.
        peer_name: Option<String>,
        /// The encoded [`Message`] as it was sent.
        message: Vec<u8>,
    },
    /// `record.update`: the sender's newest signed name record, pushed to contacts and group
    /// members when it drops a device (a revocation), so they stop sealing to that device at
    /// once instead of when their cached copy expires. The receiver checks it like a record
    /// from the DHT and that it is the sender's own.
    RecordUpdate {
        /// The record, as published (`NameRecord` bytes).
        record: Vec<u8>,
    },
    /// `group.copy`: a group message handed to a member device that the sender could not
    /// reach over the group's topic, as a direct message (so it goes through the member's
    /// mailbox when the device is offline). The envelope is the group envelope as published;
    /// the receiver judges it like one caught up through sync. Not shown as a message of the
    /// direct chat.
    GroupCopy {
        /// The group envelope (at most [`MAX_GROUP_COPY`] bytes).
        envelope: Vec<u8>,
    },
    /// `device.prekey`: a device announces its new signed prekey to the user's other devices,
    /// so a device holding the identity key can list it in the name record.
    DevicePrekey {
        /// The prekey, signed by the sending device's key.
        prekey: crate::identity::SignedPrekey,
    },
    /// `sync.read`: the user read a conversation on another device, up to a time.
    SyncRead {
        /// The conversation.
        conversation: ConversationId,
        /// Incoming messages sent at or before this time (sender's clock) are read.
        until: u64,
    },
    /// `interactive`: buttons, a list, a form or a product card to answer (6.7).
    Interactive(Box<crate::interactive::Interactive>),
    /// `interactive.update`: the sender replaces or closes its interactive message.
    InteractiveUpdate(Box<crate::interactive::InteractiveUpdate>),
    /// `interactive.answer`: a person's answer to an interactive message.
    InteractiveAnswer(Box<crate::interactive::InteractiveAnswer>),
    /// `sync.block`: the user blocked or unblocked someone on another device (sent to the
    /// user's own devices only).
    SyncBlock(BlockNote),
    /// `consent`: a person subscribes to a business or bot, or unsubscribes (6.8); never shown.
    Consent(ConsentNote),
    /// `call`: a call signal (`docs/protocol.md` 6.4); never shown, never queued for long.
    Call(Box<CallSignal>),
    /// `call.log`: the history entry of a call, sent by its caller when it ends.
    CallLog(CallLog),
    /// `listen`: a signal of a listening session (`docs/protocol.md` 6.5); never shown.
    Listen(Box<crate::listen::ListenSignal>),
    /// `event`: a proposed time and place (`docs/protocol.md` 6.6).
    Event(Box<crate::plan::Event>),
    /// `event.change`: the proposer changes or cancels an event.
    EventChange(Box<crate::plan::EventChange>),
    /// `rsvp`: an answer to an event.
    Rsvp(crate::plan::Rsvp),
    /// `list`: a new shared list with its document.
    List(Box<crate::plan::ListDoc>),
    /// `list.change`: a list's document after an edit.
    ListChange(Box<crate::plan::ListChange>),
    /// `expense`: someone paid for some people.
    Expense(Box<crate::plan::Expense>),
    /// `payment`: the sender paid someone.
    Payment(Box<crate::plan::Payment>),
    /// `payment.confirm`: the one paid confirms a payment.
    PaymentConfirm(crate::plan::PaymentConfirm),
    /// `pay.request`: the sender asks to be paid.
    PayRequest(Box<crate::plan::PayRequest>),
    /// A kind this implementation does not know; kept as received.
    Unsupported {
        /// The wire kind.
        kind: String,
        /// The undecoded body.
        body: Vec<u8>,
    },
}

/// The wire form of a content: its kind and the CBOR encoding of its fields.
#[derive(Serialize, Deserialize)]
struct WireContent {
    kind: String,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

// Per-kind bodies. Field names are part of the wire format (docs/protocol.md).
#[derive(Serialize, Deserialize)]
struct ReplyW {
    to: MessageId,
    body: String,
}
#[derive(Serialize, Deserialize)]
struct ReactionW {
    to: MessageId,
    emoji: String,
    remove: bool,
}
#[derive(Serialize, Deserialize)]
struct TargetW {
    to: MessageId,
}
#[derive(Serialize, Deserialize)]
struct ReceiptW {
    kind: ReceiptKind,
    ids: Vec<MessageId>,
}
#[derive(Serialize, Deserialize)]
struct TypingW {
    active: bool,
}
#[derive(Serialize, Deserialize)]
struct LocationW {
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
    label: Option<String>,
}
#[derive(Serialize, Deserialize)]
struct LiveLocationW {
    session: SessionId,
    seq: u32,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
    until: u64,
    stopped: bool,
}
#[derive(Serialize, Deserialize)]
struct BillW {
    bill: SessionId,
    description: String,
    total: i64,
    currency: String,
    shares: Vec<Share>,
}
#[derive(Serialize, Deserialize)]
struct GroupInviteW {
    group: ConversationId,
    title: Option<String>,
    members: Vec<Member>,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    epoch_key: [u8; 32],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<InvitePart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hand_on: Option<HandOn>,
}
#[derive(Serialize, Deserialize)]
struct GroupAddW {
    group: ConversationId,
    member: Member,
}
#[derive(Serialize, Deserialize)]
struct GroupW {
    group: ConversationId,
}
#[derive(Serialize, Deserialize)]
struct GroupRemoveW {
    group: ConversationId,
    user: UserId,
}
#[derive(Serialize, Deserialize)]
struct SelfSentW {
    peer: UserId,
    peer_name: Option<String>,
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
}
#[derive(Serialize, Deserialize)]
struct SyncReadW {
    conversation: ConversationId,
    until: u64,
}
#[derive(Serialize, Deserialize)]
struct RecordUpdateW {
    #[serde(with = "serde_bytes")]
    record: Vec<u8>,
}
#[derive(Serialize, Deserialize)]
struct GroupCopyW {
    #[serde(with = "serde_bytes")]
    envelope: Vec<u8>,
}
#[derive(Serialize, Deserialize)]
struct DevicePrekeyW {
    prekey: crate::identity::SignedPrekey,
}
#[derive(Serialize, Deserialize)]
struct GroupKeyW {
    group: ConversationId,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    key: [u8; 32],
}

impl Content {
    /// The wire kind of this content.
    pub fn kind(&self) -> &str {
        match self {
            Content::Text(_) => "text",
            Content::Reply { .. } => "reply",
            Content::Reaction { .. } => "reaction",
            Content::Edit { .. } => "edit",
            Content::Delete { .. } => "delete",
            Content::Receipt { .. } => "receipt",
            Content::Typing { .. } => "typing",
            Content::Location { .. } => "location",
            Content::LiveLocation { .. } => "live_location",
            Content::Attachment(_) => "attachment",
            Content::BillSplit { .. } => "bill",
            Content::GroupInvite { .. } => "group.invite",
            Content::GroupAdd { .. } => "group.add",
            Content::GroupLeave { .. } => "group.leave",
            Content::GroupRemove { .. } => "group.remove",
            Content::GroupKey { .. } => "group.key",
            Content::SelfSent { .. } => "sync.sent",
            Content::DevicePrekey { .. } => "device.prekey",
            Content::RecordUpdate { .. } => "record.update",
            Content::GroupCopy { .. } => "group.copy",
            Content::SyncRead { .. } => "sync.read",
            Content::SyncBlock(_) => "sync.block",
            Content::Consent(_) => "consent",
            Content::Interactive(_) => "interactive",
            Content::InteractiveUpdate(_) => "interactive.update",
            Content::InteractiveAnswer(_) => "interactive.answer",
            Content::Call(_) => "call",
            Content::CallLog(_) => "call.log",
            Content::Listen(_) => "listen",
            Content::Event(_) => "event",
            Content::EventChange(_) => "event.change",
            Content::Rsvp(_) => "rsvp",
            Content::List(_) => "list",
            Content::ListChange(_) => "list.change",
            Content::Expense(_) => "expense",
            Content::Payment(_) => "payment",
            Content::PaymentConfirm(_) => "payment.confirm",
            Content::PayRequest(_) => "pay.request",
            Content::Unsupported { kind, .. } => kind,
        }
    }

    /// Plain text of the content, for text-bearing kinds.
    pub fn text(&self) -> Option<&str> {
        match self {
            Content::Text(Text { body })
            | Content::Reply { body, .. }
            | Content::Edit { body, .. } => Some(body),
            _ => None,
        }
    }

    /// A line for the history of a kind that has no text of its own (a call's entry).
    pub fn summary(&self) -> Option<String> {
        match self {
            Content::CallLog(l) => Some(l.summary()),
            Content::Location { lat, lon, label, .. } => Some(match label {
                Some(l) => format!("Location: {l} ({lat:.5}, {lon:.5})"),
                None => format!("Location: {lat:.5}, {lon:.5}"),
            }),
            _ => self.text().map(str::to_owned),
        }
    }

    /// Checks sizes and ranges; called by [`Message::from_bytes`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        let short = |s: &str, what: &str| {
            if s.len() > MAX_SHORT {
                Err(DecodeError::Invalid(format!("{what} longer than {MAX_SHORT} bytes")))
            } else {
                Ok(())
            }
        };
        let list = |n: usize, what: &str| {
            if n > MAX_LIST {
                Err(DecodeError::Invalid(format!("more than {MAX_LIST} {what}")))
            } else {
                Ok(())
            }
        };
        let point = |lat: f64, lon: f64| {
            if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
                Ok(())
            } else {
                Err(DecodeError::Invalid("latitude or longitude out of range".into()))
            }
        };
        if let Some(body) = self.text() {
            if body.len() > MAX_TEXT {
                return Err(DecodeError::Invalid(format!("text longer than {MAX_TEXT} bytes")));
            }
        }
        match self {
            Content::Reaction { emoji, .. } => short(emoji, "emoji"),
            Content::Receipt { ids, .. } => list(ids.len(), "receipt ids"),
            Content::Location { lat, lon, label, accuracy_m } => {
                point(*lat, *lon)?;
                if accuracy_m.is_some_and(|a| !a.is_finite() || a < 0.0) {
                    return Err(DecodeError::Invalid("an accuracy that is not a radius".into()));
                }
                label.as_deref().map_or(Ok(()), |l| short(l, "label"))
            }
            Content::LiveLocation { lat, lon, seq, accuracy_m, until, .. } => {
                point(*lat, *lon)?;
                crate::plan::check_live(*seq, *accuracy_m, *until)
            }
            Content::Attachment(a) => a.validate(),
            Content::Call(c) => c.validate(),
            Content::Listen(l) => l.validate(),
            Content::Event(e) => e.validate(),
            Content::EventChange(e) => e.validate(),
            Content::List(l) => l.validate(),
            Content::ListChange(l) => l.validate(),
            Content::Expense(e) => e.validate(),
            Content::Payment(p) => p.validate(),
            Content::PayRequest(r) => r.validate(),
            Content::SyncBlock(b) => b.name.as_deref().map_or(Ok(()), |n| short(n, "name")),
            Content::Interactive(i) => i.validate(),
            Content::InteractiveUpdate(u) => u.validate(),
            Content::InteractiveAnswer(a) => a.validate(),
            Content::BillSplit { description, currency, shares, .. } => {
                short(description, "description")?;
                list(shares.len(), "shares")?;
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(DecodeError::Invalid(
                        "currency must be three capital letters (ISO 4217)".into(),
                    ));
                }
                Ok(())
            }
            Content::GroupInvite { members, title, part, hand_on, .. } => {
                list(members.len(), "members")?;
                let most = MAX_INVITE_PARTS * MAX_LIST as u32;
                if hand_on.is_some_and(|h| h.from == 0 || h.from >= most) {
                    return Err(DecodeError::Invalid(
                        "hand_on.from must name a member after the first".into(),
                    ));
                }
                if let Some(p) = part {
                    if !(2..=MAX_INVITE_PARTS).contains(&p.count) || p.index >= p.count {
                        return Err(DecodeError::Invalid(format!(
                            "invite part {} of {} (2 to {MAX_INVITE_PARTS} parts)",
                            p.index, p.count
                        )));
                    }
                }
                title.as_deref().map_or(Ok(()), |t| short(t, "title"))
            }
            Content::SelfSent { peer_name, message, .. } => {
                peer_name.as_deref().map_or(Ok(()), |n| short(n, "name"))?;
                // One level only: the copy of a copy is refused before it is looked into.
                let inner: Message = codec::from_slice(message, MAX_MESSAGE_SIZE)?;
                crate::check_version(inner.v)?;
                if matches!(inner.content, Content::SelfSent { .. }) {
                    return Err(DecodeError::Invalid("a sync.sent inside a sync.sent".into()));
                }
                inner.content.validate()
            }
            Content::Unsupported { kind, .. } => short(kind, "kind"),
            Content::RecordUpdate { record } if record.len() > crate::name::MAX_RECORD_SIZE => {
                Err(DecodeError::Invalid(format!(
                    "a record longer than {} bytes",
                    crate::name::MAX_RECORD_SIZE
                )))
            }
            Content::GroupCopy { envelope }
                if envelope.is_empty() || envelope.len() > MAX_GROUP_COPY =>
            {
                Err(DecodeError::Invalid(format!(
                    "a group.copy envelope of {} bytes (1 to {MAX_GROUP_COPY})",
                    envelope.len()
                )))
            }
            _ => Ok(()),
        }
    }

    fn to_wire(&self) -> WireContent {
        let body = match self.clone() {
            Content::Text(t) => codec::to_vec(&t),
            Content::Reply { to, body } => codec::to_vec(&ReplyW { to, body }),
            Content::Reaction { to, emoji, remove } => {
                codec::to_vec(&ReactionW { to, emoji, remove })
            }
            Content::Edit { to, body } => codec::to_vec(&ReplyW { to, body }),
            Content::Delete { to } => codec::to_vec(&TargetW { to }),
            Content::Receipt { kind, ids } => codec::to_vec(&ReceiptW { kind, ids }),
            Content::Typing { active } => codec::to_vec(&TypingW { active }),
            Content::Location { lat, lon, accuracy_m, label } => {
                codec::to_vec(&LocationW { lat, lon, accuracy_m, label })
            }
            Content::LiveLocation { session, seq, lat, lon, accuracy_m, until, stopped } => {
                codec::to_vec(&LiveLocationW { session, seq, lat, lon, accuracy_m, until, stopped })
            }
            Content::Attachment(a) => codec::to_vec(&a),
            Content::BillSplit { bill, description, total, currency, shares } => {
                codec::to_vec(&BillW { bill, description, total, currency, shares })
            }
            Content::GroupInvite { group, title, members, epoch, epoch_key, part, hand_on } => {
                codec::to_vec(&GroupInviteW {
                    group,
                    title,
                    members,
                    epoch,
                    epoch_key,
                    part,
                    hand_on,
                })
            }
            Content::GroupAdd { group, member } => codec::to_vec(&GroupAddW { group, member }),
            Content::GroupLeave { group } => codec::to_vec(&GroupW { group }),
            Content::GroupRemove { group, user } => codec::to_vec(&GroupRemoveW { group, user }),
            Content::GroupKey { group, epoch, key } => {
                codec::to_vec(&GroupKeyW { group, epoch, key })
            }
            Content::SelfSent { peer, peer_name, message } => {
                codec::to_vec(&SelfSentW { peer, peer_name, message })
            }
            Content::DevicePrekey { prekey } => codec::to_vec(&DevicePrekeyW { prekey }),
            Content::RecordUpdate { record } => codec::to_vec(&RecordUpdateW { record }),
            Content::GroupCopy { envelope } => codec::to_vec(&GroupCopyW { envelope }),
            Content::SyncRead { conversation, until } => {
                codec::to_vec(&SyncReadW { conversation, until })
            }
            Content::Call(c) => codec::to_vec(&c),
            Content::CallLog(l) => codec::to_vec(&l),
            Content::Listen(l) => codec::to_vec(&l),
            Content::Event(e) => codec::to_vec(&e),
            Content::EventChange(e) => codec::to_vec(&e),
            Content::Rsvp(r) => codec::to_vec(&r),
            Content::List(l) => codec::to_vec(&l),
            Content::ListChange(l) => codec::to_vec(&l),
            Content::Expense(e) => codec::to_vec(&e),
            Content::Payment(p) => codec::to_vec(&p),
            Content::PaymentConfirm(c) => codec::to_vec(&c),
            Content::PayRequest(r) => codec::to_vec(&r),
            Content::SyncBlock(b) => codec::to_vec(&b),
            Content::Consent(c) => codec::to_vec(&c),
            Content::Interactive(i) => codec::to_vec(&i),
            Content::InteractiveUpdate(u) => codec::to_vec(&u),
            Content::InteractiveAnswer(a) => codec::to_vec(&a),
            Content::Unsupported { body, .. } => body,
        };
        WireContent { kind: self.kind().to_owned(), body }
    }

    fn from_wire(w: WireContent) -> Result<Self, DecodeError> {
        let b = &w.body;
        let m = MAX_MESSAGE_SIZE;
        Ok(match w.kind.as_str() {
            "text" => Content::Text(codec::from_slice(b, m)?),
            "reply" => {
                let ReplyW { to, body } = codec::from_slice(b, m)?;
                Content::Reply { to, body }
            }
            "reaction" => {
                let ReactionW { to, emoji, remove } = codec::from_slice(b, m)?;
                Content::Reaction { to, emoji, remove }
            }
            "edit" => {
                let ReplyW { to, body } = codec::from_slice(b, m)?;
                Content::Edit { to, body }
            }
            "delete" => {
                let TargetW { to } = codec::from_slice(b, m)?;
                Content::Delete { to }
            }
            "receipt" => {
                let ReceiptW { kind, ids } = codec::from_slice(b, m)?;
                Content::Receipt { kind, ids }
            }
            "typing" => {
                let TypingW { active } = codec::from_slice(b, m)?;
                Content::Typing { active }
            }
            "location" => {
                let LocationW { lat, lon, accuracy_m, label } = codec::from_slice(b, m)?;
                Content::Location { lat, lon, accuracy_m, label }
            }
            "live_location" => {
                let LiveLocationW { session, seq, lat, lon, accuracy_m, until, stopped } =
                    codec::from_slice(b, m)?;
                Content::LiveLocation { session, seq, lat, lon, accuracy_m, until, stopped }
            }
            "attachment" => Content::Attachment(Box::new(codec::from_slice(b, m)?)),
            "bill" => {
                let BillW { bill, description, total, currency, shares } = codec::from_slice(b, m)?;
                Content::BillSplit { bill, description, total, currency, shares }
            }
            "group.invite" => {
                let GroupInviteW { group, title, members, epoch, epoch_key, part, hand_on } =
                    codec::from_slice(b, m)?;
                Content::GroupInvite { group, title, members, epoch, epoch_key, part, hand_on }
            }
            "group.add" => {
                let GroupAddW { group, member } = codec::from_slice(b, m)?;
                Content::GroupAdd { group, member }
            }
            "group.leave" => {
                let GroupW { group } = codec::from_slice(b, m)?;
                Content::GroupLeave { group }
            }
            "group.remove" => {
                let GroupRemoveW { group, user } = codec::from_slice(b, m)?;
                Content::GroupRemove { group, user }
            }
            "group.key" => {
                let GroupKeyW { group, epoch, key } = codec::from_slice(b, m)?;
                Content::GroupKey { group, epoch, key }
            }
            "sync.sent" => {
                let SelfSentW { peer, peer_name, message } = codec::from_slice(b, m)?;
                Content::SelfSent { peer, peer_name, message }
            }
            "sync.read" => {
                let SyncReadW { conversation, until } = codec::from_slice(b, m)?;
                Content::SyncRead { conversation, until }
            }
            "device.prekey" => {
                let DevicePrekeyW { prekey } = codec::from_slice(b, m)?;
                Content::DevicePrekey { prekey }
            }
            "record.update" => {
                let RecordUpdateW { record } = codec::from_slice(b, m)?;
                Content::RecordUpdate { record }
            }
            "group.copy" => {
                let GroupCopyW { envelope } = codec::from_slice(b, m)?;
                Content::GroupCopy { envelope }
            }
            "call" => Content::Call(Box::new(codec::from_slice(b, m)?)),
            "call.log" => Content::CallLog(codec::from_slice(b, m)?),
            "listen" => Content::Listen(Box::new(codec::from_slice(b, m)?)),
            "event" => Content::Event(Box::new(codec::from_slice(b, m)?)),
            "event.change" => Content::EventChange(Box::new(codec::from_slice(b, m)?)),
            "rsvp" => Content::Rsvp(codec::from_slice(b, m)?),
            "list" => Content::List(Box::new(codec::from_slice(b, m)?)),
            "list.change" => Content::ListChange(Box::new(codec::from_slice(b, m)?)),
            "expense" => Content::Expense(Box::new(codec::from_slice(b, m)?)),
            "payment" => Content::Payment(Box::new(codec::from_slice(b, m)?)),
            "payment.confirm" => Content::PaymentConfirm(codec::from_slice(b, m)?),
            "pay.request" => Content::PayRequest(Box::new(codec::from_slice(b, m)?)),
            "sync.block" => Content::SyncBlock(codec::from_slice(b, m)?),
            "consent" => Content::Consent(codec::from_slice(b, m)?),
            "interactive" => Content::Interactive(Box::new(codec::from_slice(b, m)?)),
            "interactive.update" => Content::InteractiveUpdate(Box::new(codec::from_slice(b, m)?)),
            "interactive.answer" => Content::InteractiveAnswer(Box::new(codec::from_slice(b, m)?)),
            _ => Content::Unsupported { kind: w.kind, body: w.body },
        })
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireContent::deserialize(d)?;
        Content::from_wire(w).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VERSION;

    fn msg(content: Content) -> Message {
        Message {
            v: VERSION,
            id: MessageId([1; 16]),
            conversation: ConversationId([2; 16]),
            sender: UserId([3; 16]),
            sent_at: 42,
            content,
        }
    }

    #[test]
    fn unknown_kind_decodes_as_unsupported() {
        let m = msg(Content::Unsupported { kind: "poll".into(), body: vec![0xa0] });
        let back = Message::from_bytes(&m.to_bytes()).expect("decodes");
        assert_eq!(back.content.kind(), "poll");
        assert!(matches!(back.content, Content::Unsupported { .. }));
    }

    #[test]
    fn limits_are_enforced() {
        let long = msg(Content::Text(Text { body: "x".repeat(MAX_TEXT + 1) }));
        assert!(matches!(Message::from_bytes(&long.to_bytes()), Err(DecodeError::Invalid(_))));
        let far = msg(Content::Location { lat: 91.0, lon: 0.0, accuracy_m: None, label: None });
        assert!(Message::from_bytes(&far.to_bytes()).is_err());
        let nan = msg(Content::Location { lat: f64::NAN, lon: 0.0, accuracy_m: None, label: None });
        assert!(Message::from_bytes(&nan.to_bytes()).is_err());
        let bill = msg(Content::BillSplit {
            bill: SessionId([0; 16]),
            description: "pizza".into(),
            total: 3000,
            currency: "eur".into(),
            shares: vec![],
        });
        assert!(Message::from_bytes(&bill.to_bytes()).is_err());
    }

    #[test]
    fn direct_conversation_is_symmetric() {
        let a = UserId([1; 16]);
        let b = UserId([2; 16]);
        assert_eq!(ConversationId::direct(&a, &b), ConversationId::direct(&b, &a));
        assert_ne!(ConversationId::direct(&a, &b), ConversationId::direct(&a, &a));
    }
}
