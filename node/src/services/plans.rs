//! Planning together (`docs/protocol.md` 6.6): events, shared lists, bills and payment
//! requests, and live location. Everything travels as ordinary messages of the conversation
//! (sealed, queued, copied to the user's other devices, caught up from mailboxes and group
//! sync, copied with the history to a newly linked device); what a conversation planned is the
//! fold ([`crate::rules::plan::fold`]) of its planning messages, read from the store when asked.
//! The only state of its own is a live-location session this device is sharing (in memory: a
//! restart ends it; receivers show it ended at its end time).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::message::SessionId;
use kith_protocol::plan::{
    Answer, Event, EventChange, Expense, ListChange, ListDoc, PayMethod, PayRequest, Payment,
    PaymentConfirm, Rsvp, Split,
};
use kith_protocol::{Content, ConversationId, MessageId, UserId};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::warn;

use super::conversations::{Conversation, Conversations};
use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules::lists::{ListKind, ListState, Op, SharedList};
use crate::rules::plan::{self, Board, Entry, LiveState};
use crate::rules::{currency, payment};
use crate::store::StoredMessage;
use crate::views::{self, MessageView};

/// The shortest live-location session (10 s; the CLI offers 15 min, 1 h and 8 h).
pub const MIN_LIVE: Duration = Duration::from_secs(10);
/// The longest live-location session (8 h).
pub const MAX_LIVE: Duration = Duration::from_secs(8 * 3600);
/// Live positions are sent at most this often; a position that did not change is not sent.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Most live-location sessions this device shares at once.
pub const MAX_SHARING: usize = 16;
/// Positions of a track the API returns at most (the newest).
pub const MAX_TRACK: usize = 2_000;

fn bad(e: impl std::fmt::Display) -> NodeError {
    NodeError::BadInput(e.to_string())
}

/// A position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: Option<f32>,
}

impl Position {
    fn check(&self) -> Result<(), NodeError> {
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            return Err(bad("latitude must be -90 to 90 and longitude -180 to 180"));
        }
        if self.accuracy_m.is_some_and(|a| !a.is_finite() || a < 0.0) {
            return Err(bad("the accuracy must be a radius in metres, 0 or more"));
        }
        Ok(())
    }
}

struct Sharing {
    to: Conversation,
    conversation: [u8; 16],
    until: u64,
    seq: u32,
    latest: Position,
    sent: Position,
    last_sent_at: u64,
    stop: bool,
    wake: Arc<Notify>,
}

/// The planning service.
#[derive(Clone)]
pub struct Plans {
    ctx: Ctx,
    conversations: Conversations,
    edits: Arc<tokio::sync::Mutex<()>>,
    sharing: Arc<Mutex<HashMap<[u8; 16], Sharing>>>,
}

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plans").finish_non_exhaustive()
    }
}

// ---- Views ----

/// An event, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    /// The `event` message's id.
    pub id: String,
    /// The conversation.
    pub conversation: String,
    /// Who proposed it.
    pub by: String,
    /// Title.
    pub title: String,
    /// Start, RFC 3339 in the proposer's offset.
    pub start: String,
    /// Start, ms since the epoch.
    pub start_ms: u64,
    /// Place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Called off.
    pub cancelled: bool,
    /// Changes applied since it was proposed.
    pub changes: u32,
    /// Who answered what: `yes`, `maybe`, `no`.
    pub answers: BTreeMap<String, Vec<String>>,
    /// This user's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mine: Option<String>,
}

/// One item of a list.
#[derive(Clone, Debug, Serialize)]
pub struct ItemView {
    /// Its id (8 hex digits).
    pub id: String,
    /// Its text.
    pub text: String,
    /// Ticked off.
    pub done: bool,
    /// Who it is for.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

/// A shared list, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ListView {
    /// The `list` message's id.
    pub id: String,
    /// The conversation.
    pub conversation: String,
    /// Who made it.
    pub by: String,
    /// Title.
    pub title: String,
    /// `shopping` or `todo`.
    pub kind: String,
    /// Items not removed, oldest first.
    pub items: Vec<ItemView>,
    /// Documents merged (the first and every change seen).
    pub versions: usize,
    /// Changes that could not be merged, with why (over a limit of the list, or not a list's
    /// document); every member's device leaves out the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

/// An amount.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AmountView {
    /// Minor units.
    pub minor: i128,
    /// ISO 4217 code.
    pub currency: String,
    /// For people: "12.50 EUR".
    pub text: String,
}

impl AmountView {
    fn of(minor: i128, currency: &str) -> Self {
        AmountView {
            minor,
            currency: currency.to_owned(),
            text: currency::format_amount_i128(minor, currency),
        }
    }
}

/// A transfer that settles balances.
#[derive(Clone, Debug, Serialize)]
pub struct TransferView {
    /// Who pays.
    pub from: String,
    /// Who is paid.
    pub to: String,
    /// How much.
    pub amount: AmountView,
}

/// One currency of a book.
#[derive(Clone, Debug, Serialize)]
pub struct CurrencyView {
    /// ISO 4217 code.
    pub currency: String,
    /// Each person's balance: owed (+) or owing (-); people at 0 are left out.
    pub balances: BTreeMap<String, AmountView>,
    /// The proposed transfers.
    pub transfers: Vec<TransferView>,
}

/// An expense.
#[derive(Clone, Debug, Serialize)]
pub struct ExpenseView {
    /// Its message id.
    pub id: String,
    /// What for.
    pub description: String,
    /// Who paid.
    pub paid_by: String,
    /// How much.
    pub amount: AmountView,
    /// Each person's part.
    pub parts: BTreeMap<String, AmountView>,
    /// Who recorded it.
    pub by: String,
}

/// A payment.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentView {
    /// Its message id.
    pub id: String,
    /// Who paid.
    pub from: String,
    /// Who was paid.
    pub to: String,
    /// How much.
    pub amount: AmountView,
    /// The one paid confirmed it (only then does it count).
    pub confirmed: bool,
    /// The request it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A way to pay, as a payer's client shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MethodView {
    /// `iban`, `lightning` or `link`.
    pub kind: String,
    /// For people: "IBAN DE89 … (Alice)".
    pub text: String,
    /// What a QR code of it holds: the EPC "GiroCode" payload of a SEPA transfer (euros only),
    /// a `lightning:` URI, or the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    /// A link to open, when there is one (`lightning:` URI, the payment link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// A payment request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    /// Its message id.
    pub id: String,
    /// Who asks to be paid.
    pub from: String,
    /// Who is asked (absent: anyone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// How much, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<AmountView>,
    /// Currency.
    pub currency: String,
    /// The reference for a transfer.
    pub reference: String,
    /// How to pay.
    pub methods: Vec<MethodView>,
    /// Payments recorded against it.
    pub payments: Vec<String>,
}

/// What a conversation owes itself.
#[derive(Clone, Debug, Serialize)]
pub struct BillsView {
    /// The conversation.
    pub conversation: String,
    /// Per currency.
    pub currencies: Vec<CurrencyView>,
    /// Expenses, oldest first.
    pub expenses: Vec<ExpenseView>,
    /// Payments, oldest first.
    pub payments: Vec<PaymentView>,
    /// Requests, oldest first.
    pub requests: Vec<RequestView>,
    /// Entries left out, with why (every member's device leaves out the same).
    pub rejected: Vec<RejectedView>,
}

/// An entry left out.
#[derive(Clone, Debug, Serialize)]
pub struct RejectedView {
    /// Its message id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// One position of a live location.
#[derive(Clone, Debug, Serialize)]
pub struct FixView {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Accuracy radius, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f32>,
    /// When (RFC 3339).
    pub at: String,
}

/// A shared location: the latest point of a sharer.
#[derive(Clone, Debug, Serialize)]
pub struct SharedLocationView {
    /// Who.
    pub sharer: String,
    /// The newest position.
    pub latest: FixView,
    /// Its age, seconds.
    pub age_s: u64,
    /// The point on OpenStreetMap.
    pub map_url: String,
    /// A live session's id (absent for a single point).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When a live session ends (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Whether the live session is over (stopped, or past its end).
    pub ended: bool,
    /// Positions in the track of a live session.
    pub updates: usize,
    /// The message that started it (or the point's message).
    pub message: String,
}

/// A live session's track.
#[derive(Clone, Debug, Serialize)]
pub struct TrackView {
    /// The session.
    pub session: String,
    /// Who.
    pub sharer: String,
    /// When it ends (RFC 3339).
    pub until: String,
    /// Over.
    pub ended: bool,
    /// The positions, oldest first (the newest [`MAX_TRACK`]).
    pub track: Vec<FixView>,
}

/// How an expense is split, as a client gives it: names (`@bob`) and amounts in minor units.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Equal parts among these (default: everyone in the conversation).
    #[serde(default)]
    pub equal: Vec<String>,
    /// Whole shares per person.
    #[serde(default)]
    pub shares: BTreeMap<String, u32>,
    /// Exact minor units per person.
    #[serde(default)]
    pub exact: BTreeMap<String, i64>,
}

/// How to be paid, as a client gives it.
#[derive(Clone, Debug, Default)]
pub struct MethodsSpec {
    /// IBAN.
    pub iban: Option<String>,
    /// The account holder (required with an IBAN).
    pub name: Option<String>,
    /// BIC.
    pub bic: Option<String>,
    /// A Lightning invoice or address.
    pub lightning: Option<String>,
    /// A payment link (https).
    pub link: Option<String>,
}

fn hexid(id: &[u8; 16]) -> String {
    hex::encode(id)
}

fn map_url(lat: f64, lon: f64) -> String {
    format!("https://www.openstreetmap.org/?mlat={lat:.6}&mlon={lon:.6}#map=16/{lat:.6}/{lon:.6}")
}

/// An RFC 3339 time at `ms` in the offset `zone` (minutes).
pub fn time_in(ms: u64, zone: i16) -> String {
    let off = chrono::FixedOffset::east_opt(i32::from(zone) * 60)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&off).format("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The stored message `id` of kind `kind`, and the conversation to answer it in.
pub(crate) fn message_and_conversation(
    ctx: &Ctx,
    id: &str,
    kind: &str,
) -> Result<(StoredMessage, Conversation), NodeError> {
    let mid = MessageId::parse(id).map_err(|e| bad(format!("message id {id:?}: {e}")))?;
    let m = ctx
        .store
        .message(&mid.0)?
        .filter(|m| m.kind == kind)
        .ok_or_else(|| NodeError::NotFound(format!("no {kind} {id}")))?;
    if m.waiting_for.is_some() {
        return Err(bad(format!("{kind} {id} is not sent yet: its recipient's name is not found")));
    }
    let to = if m.is_group() {
        Conversation::Group(m.conversation)
    } else {
        let name = ctx.store.name_of(&m.peer)?.ok_or_else(|| {
            NodeError::NotFound(format!(
                "the other person of {kind} {id}: their name is not confirmed yet"
            ))
        })?;
        Conversation::Direct(name)
    };
    Ok((m, to))
}

/// Whether a content is folded by [`crate::rules::plan`] (its encoded form is kept).
pub(crate) fn is_plan(c: &Content) -> bool {
    matches!(
        c,
        Content::Event(_)
            | Content::EventChange(_)
            | Content::Rsvp(_)
            | Content::List(_)
            | Content::ListChange(_)
            | Content::Expense(_)
            | Content::Payment(_)
            | Content::PaymentConfirm(_)
            | Content::PayRequest(_)
            | Content::LiveLocation { .. }
            | Content::Delete { .. }
            | Content::Interactive(_)
            | Content::InteractiveUpdate(_)
            | Content::InteractiveAnswer(_)
    )
}

/// The line the history shows for a planning kind.
pub(crate) fn summary(c: &Content) -> Option<String> {
    let money = |a: i64, c: &str| currency::format_amount(a, c);
    Some(match c {
        Content::Event(e) => {
            let mut s = format!("Event: {}, {}", e.title, time_in(e.start, e.zone));
            if let Some(p) = &e.place {
                s.push_str(&format!(", {p}"));
            }
            s
        }
        Content::EventChange(c) if c.cancelled => "Event cancelled".into(),
        Content::EventChange(c) => {
            let mut parts = Vec::new();
            if let Some(t) = &c.title {
                parts.push(t.clone());
            }
            if let Some((start, zone)) = c.start {
                parts.push(format!("now {}", time_in(start, zone)));
            }
            if let Some(p) = &c.place {
                parts.push(format!("at {p}"));
            }
            format!("Event changed: {}", parts.join(", "))
        }
        Content::Rsvp(r) => format!("Answered {}", r.answer.as_str()),
        Content::List(l) => format!("List: {}", l.title),
        Content::ListChange(_) => "List changed".into(),
        Content::Expense(e) => {
            format!("Expense: {}, {}", e.description, money(e.amount, &e.currency))
        }
        Content::Payment(p) => format!("Payment: {}", money(p.amount, &p.currency)),
        Content::PaymentConfirm(_) => "Payment confirmed".into(),
        Content::PayRequest(r) => match r.amount {
            Some(a) => format!("Payment request: {} ({})", money(a, &r.currency), r.reference),
            None => format!("Payment request in {} ({})", r.currency, r.reference),
        },
        Content::LiveLocation { until, stopped: false, .. } => {
            format!("Live location until {}", time_in(*until, 0))
        }
        Content::LiveLocation { .. } => "Live location stopped".into(),
        Content::Interactive(i) => i.text.clone(),
        Content::InteractiveUpdate(_) => "Updated".into(),
        Content::InteractiveAnswer(a) if a.fields.is_empty() => {
            format!("Answered: {}", a.choices.join(", "))
        }
        Content::InteractiveAnswer(a) => {
            let fields: Vec<String> = a.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("Answered: {}", fields.join(", "))
        }
        _ => return None,
    })
}

impl Plans {
    pub(crate) fn new(ctx: Ctx, conversations: Conversations) -> Self {
        Plans { ctx, conversations, edits: Arc::default(), sharing: Arc::default() }
    }

    fn me(&self) -> [u8; 16] {
        self.ctx.user_id().0
    }

    /// The conversation `to` (`@name` or `#id`) names, and its id when it has one.
    fn resolve(&self, to: &str) -> Result<(Conversation, Option<[u8; 16]>), NodeError> {
        let target = self.conversations.target(to)?;
        let id = match &target {
            Conversation::Group(id) => Some(*id),
            Conversation::Direct(name) => self
                .ctx
                .store
                .contact(name)?
                .map(|c| ConversationId::direct(&UserId(c.user_id), &self.ctx.user_id()).0),
        };
        Ok((target, id))
    }

    /// The conversation of a stored planning message, to answer it in.
    fn conversation_of_message(
        &self,
        id: &str,
        kind: &str,
    ) -> Result<(StoredMessage, Conversation), NodeError> {
        message_and_conversation(&self.ctx, id, kind)
    }

    /// The users of a conversation: for a group its members and anyone whose message its
    /// history holds (the group accepted them as members when they sent it); for a direct chat
    /// the two users.
    fn people(
        &self,
        to: &Conversation,
        entries: &[StoredMessage],
    ) -> Result<BTreeSet<[u8; 16]>, NodeError> {
        let mut people: BTreeSet<[u8; 16]> = [self.me()].into_iter().collect();
        match to {
            Conversation::Group(id) => {
                if let Some(g) = self.ctx.store.group(id)? {
                    people.extend(g.members.iter().map(|m| m.user));
                }
                people.extend(entries.iter().map(|m| m.sender));
            }
            Conversation::Direct(name) => {
                if let Some(c) = self.ctx.store.contact(name)? {
                    people.insert(c.user_id);
                }
            }
        }
        Ok(people)
    }

    /// The board of a conversation, with its people.
    fn board_of(
        &self,
        to: &Conversation,
        conv: Option<[u8; 16]>,
    ) -> Result<(Board, BTreeSet<[u8; 16]>), NodeError> {
        let stored = match conv {
            Some(c) => self.ctx.store.plan_messages(&c)?,
            None => Vec::new(),
        };
        let people = self.people(to, &stored)?;
        let entries: Vec<Entry> = stored
            .iter()
            .filter_map(|m| {
                let bytes = m.plan.as_deref()?;
                match kith_protocol::codec::from_slice::<Content>(
                    bytes,
                    kith_protocol::message::MAX_MESSAGE_SIZE,
                ) {
                    Ok(content) => {
                        Some(Entry { id: m.id, sender: m.sender, sent_at: m.sent_at, content })
                    }
                    Err(e) => {
                        warn!("a stored planning message does not decode: {e}");
                        None
                    }
                }
            })
            .collect();
        Ok((plan::fold(&entries, &people), people))
    }

    fn names(&self) -> Result<HashMap<[u8; 16], String>, NodeError> {
        views::names(&self.ctx.store, self.ctx.user_id())
    }

    fn conv_label(to: &Conversation, conv: Option<[u8; 16]>) -> String {
        match (to, conv) {
            (Conversation::Group(id), _) => format!("#{}", hexid(id)),
            (Conversation::Direct(name), _) => format!("@{name}"),
        }
    }

    /// A person of the conversation by name (`@bob`, `bob`, or `me`).
    fn person(
        &self,
        name: &str,
        people: &BTreeSet<[u8; 16]>,
        names: &HashMap<[u8; 16], String>,
    ) -> Result<[u8; 16], NodeError> {
        let n = name.trim().trim_start_matches('@').to_ascii_lowercase();
        if n == "me" {
            return Ok(self.me());
        }
        people
            .iter()
            .find(|u| {
                names.get(*u).is_some_and(|x| x.eq_ignore_ascii_case(&n))
                    || UserId(**u).to_string() == n
            })
            .copied()
            .ok_or_else(|| NodeError::NotFound(format!("@{n} is not in this conversation")))
    }

    // ---- Events ----

    /// Proposes an event in `to`.
    pub async fn propose_event(
        &self,
        to: &str,
        title: &str,
        start: u64,
        zone: i16,
        place: Option<String>,
        note: Option<String>,
    ) -> Result<MessageView, NodeError> {
        let (target, _) = self.resolve(to)?;
        let e = Event {
            title: title.trim().to_owned(),
            start,
            zone,
            place: clean(place),
            note: clean(note),
        };
        e.validate().map_err(bad)?;
        self.conversations.send(&target, Content::Event(Box::new(e))).await
    }

    /// Changes (or cancels) an event this user proposed.
    pub async fn change_event(
        &self,
        event: &str,
        title: Option<String>,
        start: Option<(u64, i16)>,
        place: Option<String>,
        cancelled: bool,
    ) -> Result<MessageView, NodeError> {
        let (m, target) = self.conversation_of_message(event, "event")?;
        if m.sender != self.me() {
            return Err(NodeError::NotAllowed(
                "only the one who proposed an event changes it".into(),
            ));
        }
        let c = EventChange {
            to: MessageId(m.id),
            title: clean(title),
            start,
            place: clean(place),
            cancelled,
        };
        c.validate().map_err(bad)?;
        self.conversations.send(&target, Content::EventChange(Box::new(c))).await
    }

    /// Answers an event.
    pub async fn rsvp(&self, event: &str, answer: Answer) -> Result<EventView, NodeError> {
        let (m, target) = self.conversation_of_message(event, "event")?;
        self.conversations
            .send(&target, Content::Rsvp(Rsvp { to: MessageId(m.id), answer }))
            .await?;
        self.event(&hexid(&m.id))
    }

    /// One event as it stands.
    pub fn event(&self, id: &str) -> Result<EventView, NodeError> {
        let (m, target) = self.conversation_of_message(id, "event")?;
        self.events_of(&target, Some(m.conversation))?
            .into_iter()
            .find(|e| e.id == hexid(&m.id))
            .ok_or_else(|| NodeError::NotFound(format!("event {id}")))
    }

    /// The events of a conversation.
    pub fn events(&self, to: &str) -> Result<Vec<EventView>, NodeError> {
        let (target, conv) = self.resolve(to)?;
        self.events_of(&target, conv)
    }

    fn events_of(
        &self,
        to: &Conversation,
        conv: Option<[u8; 16]>,
    ) -> Result<Vec<EventView>, NodeError> {
        let (board, _) = self.board_of(to, conv)?;
        let names = self.names()?;
        let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
        let label = Self::conv_label(to, conv);
        Ok(board
            .events
            .iter()
            .map(|e| {
                let mut answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (u, a) in &e.answers {
                    answers.entry(a.as_str().to_owned()).or_default().push(show(u));
                }
                EventView {
                    id: hexid(&e.id),
                    conversation: label.clone(),
                    by: show(&e.by),
                    title: e.title.clone(),
                    start: time_in(e.start, e.zone),
                    start_ms: e.start,
                    place: e.place.clone(),
                    note: e.note.clone(),
                    cancelled: e.cancelled,
                    changes: e.changes,
                    answers,
                    mine: e.answers.get(&self.me()).map(|a| a.as_str().to_owned()),
                }
            })
            .collect())
    }

    // ---- Lists ----

    fn actor(&self) -> [u8; 32] {
        self.ctx.keys.device.public_bytes()
    }

    /// Makes a new shared list in `to`.
    pub async fn new_list(
        &self,
        to: &str,
        title: &str,
        kind: ListKind,
    ) -> Result<MessageView, NodeError> {
        let (target, _) = self.resolve(to)?;
        let mut list =
            SharedList::new(&self.actor(), title.trim(), kind, self.ctx.now()).map_err(bad)?;
        let l = ListDoc { title: title.trim().to_owned(), doc: list.save() };
        l.validate().map_err(bad)?;
        self.conversations.send(&target, Content::List(Box::new(l))).await
    }

    /// Edits a list: merges every document of it seen here, applies the edit, and sends the
    /// result. Edits on this device run one at a time.
    pub async fn edit_list(&self, list: &str, edit: ListEdit) -> Result<ListView, NodeError> {
        let _one = self.edits.lock().await;
        let (list_id, conversation, target) = self.locate_list(list)?;
        let (board, people) = self.board_of(&target, Some(conversation))?;
        let entry = board
            .lists
            .iter()
            .find(|l| l.id == list_id)
            .ok_or_else(|| NodeError::NotFound(format!("list {list}")))?;
        let mut doc = self.merged(entry)?;
        let names = self.names()?;
        let state = doc.state();
        let item = |key: &str| find_item(&state, key);
        let assignee = |who: &Option<String>| -> Result<Option<[u8; 16]>, NodeError> {
            who.as_deref().map(|w| self.person(w, &people, &names)).transpose()
        };
        let op = match &edit {
            ListEdit::Add { text, assignee: who } => Op::Add {
                id: crate::rules::lists::item_id(rand::random()),
                text: text.trim().to_owned(),
                assignee: assignee(who)?,
            },
            ListEdit::Rename { item: key, text } => {
                Op::Rename { id: item(key)?, text: text.trim().to_owned() }
            }
            ListEdit::Done { item: key, done } => Op::Done { id: item(key)?, done: *done },
            ListEdit::Assign { item: key, assignee: who } => {
                Op::Assign { id: item(key)?, assignee: assignee(who)? }
            }
            ListEdit::Remove { item: key } => Op::Remove { id: item(key)? },
        };
        doc.apply(&op, self.ctx.now()).map_err(bad)?;
        let c = ListChange { to: MessageId(list_id), doc: doc.save() };
        c.validate().map_err(bad)?;
        self.conversations.send(&target, Content::ListChange(Box::new(c))).await?;
        self.list_of(&target, conversation, &list_id)
    }

    fn merged(&self, entry: &plan::ListEntry) -> Result<SharedList, NodeError> {
        Ok(self.merged_counting(entry)?.0)
    }

    /// The list's documents merged, and the reasons of those that could not be (over a limit,
    /// not a list document).
    fn merged_counting(
        &self,
        entry: &plan::ListEntry,
    ) -> Result<(SharedList, Vec<String>), NodeError> {
        let mut docs = entry.docs.iter();
        let first =
            docs.next().ok_or_else(|| NodeError::Internal("a list without a document".into()))?;
        let mut doc = SharedList::load(first, &self.actor())
            .map_err(|e| bad(format!("the list's document: {e}")))?;
        let mut left_out = Vec::new();
        for d in docs {
            if let Err(e) = doc.merge_bytes(d) {
                warn!("a change of a shared list left out: {e}");
                left_out.push(e.to_string());
            }
        }
        Ok((doc, left_out))
    }

    /// Sends every shared list of a group, as it stands here, to the group: members just added
    /// get them (they receive no message sent before they joined). A `list.change` of a list a
    /// member does not know makes the list known to it.
    pub(crate) async fn hand_over(&self, group: [u8; 16]) {
        let _one = self.edits.lock().await;
        let to = Conversation::Group(group);
        let lists = match self.board_of(&to, Some(group)) {
            Ok((board, _)) => board.lists,
            Err(e) => {
                warn!("cannot read the group's lists to hand them over: {e}");
                return;
            }
        };
        for l in &lists {
            let doc = match self.merged(l) {
                Ok(mut d) => d.save(),
                Err(e) => {
                    warn!("a shared list cannot be handed over: {e}");
                    continue;
                }
            };
            let c = Content::ListChange(Box::new(ListChange { to: MessageId(l.id), doc }));
            if let Err(e) = self.conversations.send(&to, c).await {
                warn!("cannot hand a shared list over: {e}");
            }
        }
    }

    /// One list as it stands.
    pub fn list(&self, id: &str) -> Result<ListView, NodeError> {
        let (list, conversation, target) = self.locate_list(id)?;
        self.list_of(&target, conversation, &list)
    }

    /// A list's id, its conversation's id and the conversation: from its `list` message, or for
    /// a list handed over to a member who joined later, from the group whose history holds a
    /// change of it.
    fn locate_list(&self, id: &str) -> Result<([u8; 16], [u8; 16], Conversation), NodeError> {
        match self.conversation_of_message(id, "list") {
            Ok((m, target)) => Ok((m.id, m.conversation, target)),
            Err(NodeError::NotFound(why)) => {
                let mid = MessageId::parse(id).map_err(|e| bad(format!("list id {id:?}: {e}")))?;
                for g in self.ctx.store.groups_shared() {
                    let changes = self.ctx.store.plan_messages(&g.id)?;
                    if changes.iter().any(|m| m.kind == "list.change" && m.target == Some(mid.0)) {
                        return Ok((mid.0, g.id, Conversation::Group(g.id)));
                    }
                }
                Err(NodeError::NotFound(why))
            }
            Err(e) => Err(e),
        }
    }

    fn list_of(
        &self,
        to: &Conversation,
        conv: [u8; 16],
        id: &[u8; 16],
    ) -> Result<ListView, NodeError> {
        self.lists_of(to, Some(conv))?
            .into_iter()
            .find(|l| l.id == hexid(id))
            .ok_or_else(|| NodeError::NotFound(format!("list {}", hexid(id))))
    }

    /// The lists of a conversation.
    pub fn lists(&self, to: &str) -> Result<Vec<ListView>, NodeError> {
        let (target, conv) = self.resolve(to)?;
        self.lists_of(&target, conv)
    }

    fn lists_of(
        &self,
        to: &Conversation,
        conv: Option<[u8; 16]>,
    ) -> Result<Vec<ListView>, NodeError> {
        let (board, _) = self.board_of(to, conv)?;
        let names = self.names()?;
        let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
        let mut out = Vec::new();
        for l in &board.lists {
            let (doc, left_out) = match self.merged_counting(l) {
                Ok(d) => d,
                Err(e) => {
                    warn!("a shared list cannot be read: {e}");
                    continue;
                }
            };
            let state = doc.state();
            out.push(ListView {
                id: hexid(&l.id),
                conversation: Self::conv_label(to, conv),
                by: show(&l.by),
                title: state.title.clone(),
                kind: state.kind.to_string(),
                items: state
                    .items
                    .iter()
                    .map(|i| ItemView {
                        id: i.id.clone(),
                        text: i.text.clone(),
                        done: i.done,
                        assignee: i.assignee.as_ref().map(show),
                    })
                    .collect(),
                versions: l.docs.len() - left_out.len(),
                left_out,
            });
        }
        Ok(out)
    }

    // ---- Bills ----

    /// Records an expense in `to`: `amount` minor units of `currency`, paid by `paid_by`
    /// (default: this user), split as `split` says (default: equally among everyone).
    pub async fn add_expense(
        &self,
        to: &str,
        description: &str,
        amount: i64,
        currency_code: &str,
        paid_by: Option<&str>,
        split: SplitSpec,
    ) -> Result<MessageView, NodeError> {
        let (target, conv) = self.resolve(to)?;
        let stored = match conv {
            Some(c) => self.ctx.store.plan_messages(&c)?,
            None => Vec::new(),
        };
        let people = self.people(&target, &stored)?;
        let names = self.names()?;
        let who = |n: &str| self.person(n, &people, &names).map(UserId);
        let payer = match paid_by {
            Some(p) => who(p)?,
            None => UserId(self.me()),
        };
        let kinds = [!split.equal.is_empty(), !split.shares.is_empty(), !split.exact.is_empty()];
        let split = match kinds {
            [false, false, false] => Split::Equal(people.iter().map(|u| UserId(*u)).collect()),
            [true, false, false] => {
                Split::Equal(split.equal.iter().map(|n| who(n)).collect::<Result<_, _>>()?)
            }
            [false, true, false] => Split::Shares(
                split
                    .shares
                    .iter()
                    .map(|(n, s)| Ok((who(n)?, *s)))
                    .collect::<Result<_, NodeError>>()?,
            ),
            [false, false, true] => {
                Split::Exact(split.exact.iter().map(|(n, a)| Ok((who(n)?, *a))).collect::<Result<
                    _,
                    NodeError,
                >>(
                )?)
            }
            _ => return Err(bad("split equally, by shares or by exact amounts: one of them")),
        };
        let e = Expense {
            description: description.trim().to_owned(),
            payer,
            amount,
            currency: currency_code.to_owned(),
            split,
        };
        e.validate().map_err(bad)?;
        plan::check_expense(&e, &people).map_err(bad)?;
        self.conversations.send(&target, Content::Expense(Box::new(e))).await
    }

    /// Records that this user paid `payee` in `to`.
    pub async fn record_payment(
        &self,
        to: &str,
        payee: &str,
        amount: i64,
        currency_code: &str,
        request: Option<[u8; 16]>,
    ) -> Result<MessageView, NodeError> {
        let (target, conv) = self.resolve(to)?;
        let stored = match conv {
            Some(c) => self.ctx.store.plan_messages(&c)?,
            None => Vec::new(),
        };
        let people = self.people(&target, &stored)?;
        let names = self.names()?;
        let payee = self.person(payee, &people, &names)?;
        let p = Payment {
            to: UserId(payee),
            amount,
            currency: currency_code.to_owned(),
            request: request.map(MessageId),
        };
        p.validate().map_err(bad)?;
        plan::check_payment(&p, self.me(), &people).map_err(bad)?;
        self.conversations.send(&target, Content::Payment(Box::new(p))).await
    }

    /// Confirms a payment made to this user.
    pub async fn confirm_payment(&self, id: &str) -> Result<MessageView, NodeError> {
        let (m, target) = self.conversation_of_message(id, "payment")?;
        let Some(Content::Payment(p)) = decode(&m) else {
            return Err(NodeError::NotFound(format!("payment {id}")));
        };
        if p.to.0 != self.me() {
            return Err(NodeError::NotAllowed("only the one paid confirms a payment".into()));
        }
        self.conversations
            .send(&target, Content::PaymentConfirm(PaymentConfirm { to: MessageId(m.id) }))
            .await
    }

    /// Asks to be paid in `to`.
    pub async fn request_payment(
        &self,
        to: &str,
        payer: Option<&str>,
        amount: Option<i64>,
        currency_code: &str,
        reference: &str,
        methods: MethodsSpec,
    ) -> Result<MessageView, NodeError> {
        let (target, conv) = self.resolve(to)?;
        let stored = match conv {
            Some(c) => self.ctx.store.plan_messages(&c)?,
            None => Vec::new(),
        };
        let people = self.people(&target, &stored)?;
        let names = self.names()?;
        let payer = payer.map(|p| self.person(p, &people, &names).map(UserId)).transpose()?;
        let mut list = Vec::new();
        if let Some(iban) = methods.iban {
            let name =
                methods.name.ok_or_else(|| bad("an IBAN needs the account holder's name"))?;
            list.push(PayMethod::Iban {
                iban: payment::check_iban(&iban).map_err(bad)?,
                name: payment::check_name(&name).map_err(bad)?,
                bic: methods.bic.map(|b| payment::check_bic(&b)).transpose().map_err(bad)?,
            });
        }
        if let Some(l) = methods.lightning {
            list.push(PayMethod::Lightning(payment::check_lightning(&l).map_err(bad)?));
        }
        if let Some(l) = methods.link {
            list.push(PayMethod::Link(payment::check_link(&l).map_err(bad)?));
        }
        if list.is_empty() {
            return Err(bad("say how to be paid: an IBAN with a name, a Lightning invoice or address, or a payment link"));
        }
        let r = PayRequest {
            payer,
            amount,
            currency: currency_code.to_owned(),
            reference: payment::check_reference(reference).map_err(bad)?,
            methods: list,
        };
        r.validate().map_err(bad)?;
        plan::check_request(&r, self.me(), &people).map_err(bad)?;
        self.conversations.send(&target, Content::PayRequest(Box::new(r))).await
    }

    /// Marks a payment request as paid: records a payment of its amount (or, when it names
    /// none, of what this user owes its sender in its currency by the proposed transfers).
    pub async fn pay_request(&self, id: &str) -> Result<MessageView, NodeError> {
        let (m, target) = self.conversation_of_message(id, "pay.request")?;
        let Some(Content::PayRequest(r)) = decode(&m) else {
            return Err(NodeError::NotFound(format!("payment request {id}")));
        };
        if m.sender == self.me() {
            return Err(bad("that is your own request"));
        }
        if r.payer.is_some_and(|p| p.0 != self.me()) {
            return Err(NodeError::NotAllowed("that request asks someone else".into()));
        }
        let (board, _) = self.board_of(&target, Some(m.conversation))?;
        if let Some((_, why)) = board.rejected.iter().find(|(id, _)| *id == m.id) {
            return Err(bad(format!("that request is left out: {why}")));
        }
        let amount = match r.amount {
            Some(a) => a,
            None => {
                let owed: i128 = board
                    .book
                    .transfers
                    .get(&r.currency)
                    .map(|t| {
                        t.iter()
                            .filter(|(f, to, _)| *f == self.me() && *to == m.sender)
                            .map(|t| t.2)
                            .sum()
                    })
                    .unwrap_or(0);
                i64::try_from(owed).ok().filter(|a| *a > 0).ok_or_else(|| {
                    bad(format!("you owe its sender nothing in {} by the book; record a payment with an amount", r.currency))
                })?
            }
        };
        let to = match &target {
            Conversation::Group(g) => format!("#{}", hexid(g)),
            Conversation::Direct(n) => format!("@{n}"),
        };
        let payee =
            self.ctx.store.name_of(&m.sender)?.unwrap_or_else(|| UserId(m.sender).to_string());
        self.record_payment(&to, &payee, amount, &r.currency, Some(m.id)).await
    }

    /// The book of a conversation.
    pub fn bills(&self, to: &str) -> Result<BillsView, NodeError> {
        let (target, conv) = self.resolve(to)?;
        let (board, _) = self.board_of(&target, conv)?;
        let names = self.names()?;
        let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
        let b = &board.book;
        let currencies = b
            .balances
            .iter()
            .map(|(cur, people)| CurrencyView {
                currency: cur.clone(),
                balances: people.iter().map(|(u, v)| (show(u), AmountView::of(*v, cur))).collect(),
                transfers: b
                    .transfers
                    .get(cur)
                    .map(|t| {
                        t.iter()
                            .map(|(f, to, a)| TransferView {
                                from: show(f),
                                to: show(to),
                                amount: AmountView::of(*a, cur),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let expenses = b
            .expenses
            .iter()
            .map(|x| ExpenseView {
                id: hexid(&x.id),
                description: x.expense.description.clone(),
                paid_by: show(&x.expense.payer.0),
                amount: AmountView::of(x.expense.amount.into(), &x.expense.currency),
                parts: x
                    .parts
                    .iter()
                    .map(|(u, a)| (show(u), AmountView::of((*a).into(), &x.expense.currency)))
                    .collect(),
                by: show(&x.by),
            })
            .collect();
        let payments = b
            .payments
            .iter()
            .map(|p| PaymentView {
                id: hexid(&p.id),
                from: show(&p.from),
                to: show(&p.payment.to.0),
                amount: AmountView::of(p.payment.amount.into(), &p.payment.currency),
                confirmed: p.confirmed,
                request: p.payment.request.map(|r| hexid(&r.0)),
            })
            .collect();
        let requests = b
            .requests
            .iter()
            .map(|r| RequestView {
                id: hexid(&r.id),
                from: show(&r.from),
                payer: r.request.payer.map(|p| show(&p.0)),
                amount: r.request.amount.map(|a| AmountView::of(a.into(), &r.request.currency)),
                currency: r.request.currency.clone(),
                reference: r.request.reference.clone(),
                methods: r.request.methods.iter().map(|m| method_view(m, &r.request)).collect(),
                payments: r.payments.iter().map(hexid).collect(),
            })
            .collect();
        Ok(BillsView {
            conversation: Self::conv_label(&target, conv),
            currencies,
            expenses,
            payments,
            requests,
            rejected: board
                .rejected
                .iter()
                .map(|(id, why)| RejectedView { id: hexid(id), reason: why.clone() })
                .collect(),
        })
    }

    // ---- Live location ----

    /// Starts sharing this device's position live in `to` for `duration` (10 s to 8 h);
    /// answers the session id and the message that shows it.
    pub async fn start_live(
        &self,
        to: &str,
        duration: Duration,
        at: Position,
    ) -> Result<(String, MessageView), NodeError> {
        at.check()?;
        if !(MIN_LIVE..=MAX_LIVE).contains(&duration) {
            return Err(bad("a live location lasts 10 seconds to 8 hours"));
        }
        let (target, conv) = self.resolve(to)?;
        if self.sharing.lock().map_err(|_| NodeError::Internal("lock".into()))?.len() >= MAX_SHARING
        {
            return Err(bad(format!(
                "{MAX_SHARING} live locations are shared already; stop one first"
            )));
        }
        let session: [u8; 16] = rand::random();
        let now = self.ctx.now();
        let until = now.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let content = live_content(session, 0, at, until, false);
        let view = self.conversations.send(&target, content).await?;
        let conversation = match (conv, MessageId::parse(&view.id)) {
            (Some(c), _) => c,
            (None, Ok(id)) => {
                self.ctx.store.message(&id.0)?.map(|m| m.conversation).unwrap_or_default()
            }
            (None, Err(_)) => [0; 16],
        };
        let wake = Arc::new(Notify::new());
        self.sharing.lock().map_err(|_| NodeError::Internal("lock".into()))?.insert(
            session,
            Sharing {
                to: target,
                conversation,
                until,
                seq: 0,
                latest: at,
                sent: at,
                last_sent_at: now,
                stop: false,
                wake: wake.clone(),
            },
        );
        let me = self.clone();
        self.ctx.spawn(async move { me.live_task(session, wake).await });
        Ok((hexid(&session), view))
    }

    /// A new position of a live session this device shares; sent within [`LIVE_INTERVAL`]
    /// if it changed.
    pub fn update_live(&self, session: &str, at: Position) -> Result<(), NodeError> {
        at.check()?;
        let id = parse_session(session)?;
        let mut all = self.sharing.lock().map_err(|_| NodeError::Internal("lock".into()))?;
        let s = all.get_mut(&id).ok_or_else(|| {
            NodeError::NotFound(format!("no live location {session} is shared from this device"))
        })?;
        s.latest = at;
        s.wake.notify_one();
        Ok(())
    }

    /// Stops live sessions: one, those of a conversation, or all; answers how many.
    pub fn stop_live(&self, session: Option<&str>, to: Option<&str>) -> Result<usize, NodeError> {
        let id = session.map(parse_session).transpose()?;
        let conv = match to {
            Some(t) => Some(self.resolve(t)?.1.unwrap_or_default()),
            None => None,
        };
        let mut n = 0;
        let mut all = self.sharing.lock().map_err(|_| NodeError::Internal("lock".into()))?;
        for (k, s) in all.iter_mut() {
            if id.is_none_or(|i| i == *k) && conv.is_none_or(|c| c == s.conversation) && !s.stop {
                s.stop = true;
                s.wake.notify_one();
                n += 1;
            }
        }
        if n == 0 && id.is_some() {
            return Err(NodeError::NotFound(
                "no such live location is shared from this device".into(),
            ));
        }
        Ok(n)
    }

    async fn live_task(self, session: [u8; 16], wake: Arc<Notify>) {
        loop {
            let now = self.ctx.now();
            let step = {
                let Ok(mut all) = self.sharing.lock() else { return };
                let Some(s) = all.get_mut(&session) else { return };
                let interval = u64::try_from(LIVE_INTERVAL.as_millis()).unwrap_or(5_000);
                if s.stop || now >= s.until {
                    s.seq = s.seq.saturating_add(1);
                    let last = live_content(session, s.seq, s.latest, s.until, true);
                    let to = s.to.clone();
                    all.remove(&session);
                    Step::Last(to, last)
                } else if s.latest != s.sent && now >= s.last_sent_at + interval {
                    s.seq = s.seq.saturating_add(1);
                    s.sent = s.latest;
                    s.last_sent_at = now;
                    Step::Send(s.to.clone(), live_content(session, s.seq, s.latest, s.until, false))
                } else if s.latest != s.sent {
                    Step::Wait(s.last_sent_at + interval - now)
                } else {
                    Step::Wait(s.until - now)
                }
            };
            match step {
                Step::Last(to, content) => {
                    if let Err(e) = self.conversations.send(&to, content).await {
                        warn!("cannot send the end of a live location: {e}");
                    }
                    return;
                }
                Step::Send(to, content) => {
                    if let Err(e) = self.conversations.send(&to, content).await {
                        warn!("cannot send a live location: {e}");
                    }
                }
                Step::Wait(ms) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = wake.notified() => {}
                    }
                }
            }
        }
    }

    /// The latest point of each sharer in a conversation: single points and live sessions.
    pub fn locations(&self, to: &str) -> Result<Vec<SharedLocationView>, NodeError> {
        let (target, conv) = self.resolve(to)?;
        let (board, _) = self.board_of(&target, conv)?;
        let names = self.names()?;
        let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
        let now = self.ctx.now();
        let mut latest: BTreeMap<[u8; 16], SharedLocationView> = BTreeMap::new();
        let mut put = |sharer: [u8; 16], v: SharedLocationView, at: u64| {
            let newer =
                latest.get(&sharer).is_none_or(|old| old.age_s >= now.saturating_sub(at) / 1000);
            if newer {
                latest.insert(sharer, v);
            }
        };
        // Single points, from the history.
        if let Some(c) = conv {
            for m in
                self.ctx.store.messages(Some(&c), crate::services::conversations::MAX_HISTORY)?
            {
                if let (Some(p), "location") = (&m.point, m.kind.as_str()) {
                    let v = SharedLocationView {
                        sharer: show(&m.sender),
                        latest: FixView {
                            lat: p.lat,
                            lon: p.lon,
                            accuracy_m: p.accuracy_m,
                            at: crate::rfc3339(m.sent_at),
                        },
                        age_s: now.saturating_sub(m.sent_at) / 1000,
                        map_url: map_url(p.lat, p.lon),
                        session: None,
                        until: None,
                        ended: false,
                        updates: 1,
                        message: hexid(&m.id),
                    };
                    put(m.sender, v, m.sent_at);
                }
            }
        }
        for l in &board.lives {
            if let Some(f) = l.latest() {
                put(l.sharer, live_view(l, f, now, &show), f.at);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The track of a live session.
    pub fn track(&self, to: &str, session: &str) -> Result<TrackView, NodeError> {
        let id = parse_session(session)?;
        let (target, conv) = self.resolve(to)?;
        let (board, _) = self.board_of(&target, conv)?;
        let names = self.names()?;
        let l = board
            .lives
            .iter()
            .find(|l| l.session == id)
            .ok_or_else(|| NodeError::NotFound(format!("live location {session}")))?;
        let skip = l.track.len().saturating_sub(MAX_TRACK);
        Ok(TrackView {
            session: hexid(&l.session),
            sharer: names.get(&l.sharer).cloned().unwrap_or_else(|| UserId(l.sharer).to_string()),
            until: crate::rfc3339(l.until),
            ended: l.ended(self.ctx.now()),
            track: l
                .track
                .iter()
                .skip(skip)
                .map(|f| FixView {
                    lat: f.lat,
                    lon: f.lon,
                    accuracy_m: f.accuracy_m,
                    at: crate::rfc3339(f.at),
                })
                .collect(),
        })
    }
}

enum Step {
    Last(Conversation, Content),
    Send(Conversation, Content),
    Wait(u64),
}

fn live_view(
    l: &LiveState,
    f: &plan::Fix,
    now: u64,
    show: &impl Fn(&[u8; 16]) -> String,
) -> SharedLocationView {
    SharedLocationView {
        sharer: show(&l.sharer),
        latest: FixView {
            lat: f.lat,
            lon: f.lon,
            accuracy_m: f.accuracy_m,
            at: crate::rfc3339(f.at),
        },
        age_s: now.saturating_sub(f.at) / 1000,
        map_url: map_url(f.lat, f.lon),
        session: Some(hexid(&l.session)),
        until: Some(crate::rfc3339(l.until)),
        ended: l.ended(now),
        updates: l.track.len(),
        message: hexid(&l.message),
    }
}

fn live_content(session: [u8; 16], seq: u32, at: Position, until: u64, stopped: bool) -> Content {
    Content::LiveLocation {
        session: SessionId(session),
        seq,
        lat: at.lat,
        lon: at.lon,
        accuracy_m: at.accuracy_m,
        until,
        stopped,
    }
}

fn parse_session(s: &str) -> Result<[u8; 16], NodeError> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(s.trim(), &mut id)
        .map_err(|_| bad(format!("{s:?} is not a live-location session id (32 hex digits)")))?;
    Ok(id)
}

fn clean(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn decode(m: &StoredMessage) -> Option<Content> {
    kith_protocol::codec::from_slice(m.plan.as_deref()?, kith_protocol::message::MAX_MESSAGE_SIZE)
        .ok()
}

/// An item by its id, a unique prefix of it, or its text (case aside).
fn find_item(state: &ListState, key: &str) -> Result<String, NodeError> {
    let k = key.trim().to_lowercase();
    let by_text: Vec<&str> =
        state.items.iter().filter(|i| i.text.to_lowercase() == k).map(|i| i.id.as_str()).collect();
    if let [one] = by_text[..] {
        return Ok(one.to_owned());
    }
    let by_id: Vec<&str> =
        state.items.iter().filter(|i| i.id.starts_with(&k)).map(|i| i.id.as_str()).collect();
    match by_id[..] {
        [one] => Ok(one.to_owned()),
        [] if by_text.is_empty() => {
            Err(NodeError::NotFound(format!("no item {key:?} in the list")))
        }
        _ => Err(bad(format!("{key:?} names more than one item; give its id"))),
    }
}

fn method_view(m: &PayMethod, r: &PayRequest) -> MethodView {
    match m {
        PayMethod::Iban { iban, name, bic } => {
            let qr = payment::epc_payload(
                name,
                iban,
                bic.as_deref(),
                r.amount,
                &r.currency,
                &r.reference,
            )
            .ok();
            MethodView { kind: "iban".into(), text: format!("IBAN {iban} ({name})"), qr, uri: None }
        }
        PayMethod::Lightning(l) => MethodView {
            kind: "lightning".into(),
            text: format!("Lightning {l}"),
            qr: Some(payment::lightning_uri(l)),
            uri: Some(payment::lightning_uri(l)),
        },
        PayMethod::Link(l) => MethodView {
            kind: "link".into(),
            text: l.clone(),
            qr: Some(l.clone()),
            uri: Some(l.clone()),
        },
    }
}

/// An edit of a list, as a client asks for it (items by id, id prefix or text; people by name).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ListEdit {
    /// Add an item.
    Add {
        /// Its text.
        text: String,
        /// Who it is for.
        #[serde(default, rename = "for")]
        assignee: Option<String>,
    },
    /// Rename an item.
    Rename {
        /// The item.
        item: String,
        /// The new text.
        text: String,
    },
    /// Tick an item off, or back on.
    Done {
        /// The item.
        item: String,
        /// Ticked off (default true).
        #[serde(default = "yes")]
        done: bool,
    },
    /// Give an item to someone, or to nobody.
    Assign {
        /// The item.
        item: String,
        /// Who (absent: nobody).
        #[serde(default, rename = "for")]
        assignee: Option<String>,
    },
    /// Remove an item.
    Remove {
        /// The item.
        item: String,
    },
}

fn yes() -> bool {
    true
}
