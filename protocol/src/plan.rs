//! Planning together (`docs/protocol.md` 6.6): events and their answers, shared lists,
//! expenses, payments and payment requests. Each is an ordinary message of its conversation,
//! sealed and delivered like text; a receiver checks the fields here (sizes, ranges, sums) and
//! the node checks the rest against the conversation (who is a member, who may change what).
//!
//! Live location uses `live_location` ([`crate::Content::LiveLocation`]); a single point
//! `location`.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::identity::UserId;
use crate::message::{MessageId, MAX_LIST, MAX_SHORT};

/// Longest note of an event, in bytes.
pub const MAX_NOTE: usize = 2048;
/// Largest saved list document a `list` or `list.change` carries, in bytes.
pub const MAX_LIST_DOC: usize = 48 * 1024;
/// The largest amount of one expense, payment or request, in minor units (10^15).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
/// Most payment methods one request offers.
pub const MAX_METHODS: usize = 4;
/// Largest time-zone offset of an event, in minutes either side of UTC (UTC+14:00).
pub const MAX_ZONE: i16 = 14 * 60;
/// Longest IBAN account holder's name or payment link a request carries, in bytes (a
/// 70-character name may take 280).
pub const MAX_METHOD_FIELD: usize = 512;
/// The most updates one live-location session sends (8 hours at one every 5 s, and some).
pub const MAX_LIVE_SEQ: u32 = 10_000;

/// `event`: a proposal of a time and a place. Its message id names the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What ("Barbecue").
    pub title: String,
    /// When it starts, milliseconds since the Unix epoch (UTC).
    pub start: u64,
    /// The proposer's offset from UTC at that time, in minutes, to show it in their zone.
    pub zone: i16,
    /// Where, as text.
    pub place: Option<String>,
    /// Anything else.
    pub note: Option<String>,
}

/// `event.change`: the event's proposer changes its title, time or place, or cancels it.
/// Fields left `None` stay as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventChange {
    /// The event (its `event` message).
    pub to: MessageId,
    /// A new title.
    pub title: Option<String>,
    /// A new start time and offset.
    pub start: Option<(u64, i16)>,
    /// A new place.
    pub place: Option<String>,
    /// The event is called off.
    pub cancelled: bool,
}

/// An answer to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Going.
    Yes,
    /// Perhaps.
    Maybe,
    /// Not going.
    No,
}

impl Answer {
    /// Its name: `yes`, `maybe`, `no`.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Yes => "yes",
            Answer::Maybe => "maybe",
            Answer::No => "no",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Answer> {
        match s {
            "yes" | "going" => Some(Answer::Yes),
            "maybe" => Some(Answer::Maybe),
            "no" | "not-going" => Some(Answer::No),
            _ => None,
        }
    }
}

/// `rsvp`: the sender's answer to an event; a later answer replaces an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rsvp {
    /// The event.
    pub to: MessageId,
    /// The answer.
    pub answer: Answer,
}

/// `list`: a new shared list. Its message id names the list; `doc` is the list's whole CRDT
/// document (Automerge), `docs/protocol.md` 6.6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDoc {
    /// The list's title.
    pub title: String,
    /// The saved document.
    #[serde(with = "serde_bytes")]
    pub doc: Vec<u8>,
}

/// `list.change`: the sender's whole document of a list after its edit; a receiver merges it
/// into its own (merging is commutative and idempotent, so order and repeats do not matter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListChange {
    /// The list (its `list` message).
    pub to: MessageId,
    /// The saved document.
    #[serde(with = "serde_bytes")]
    pub doc: Vec<u8>,
}

/// How an expense is split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// In equal parts among these people.
    Equal(Vec<UserId>),
    /// In proportion to whole shares.
    Shares(Vec<(UserId, u32)>),
    /// Exact amounts in minor units, adding up to the expense.
    Exact(Vec<(UserId, i64)>),
}

/// `expense`: someone paid for something, for some people of the conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expense {
    /// What for.
    pub description: String,
    /// Who paid (the sender records it; it may be someone else of the conversation).
    pub payer: UserId,
    /// How much, in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Among whom.
    pub split: Split,
}

/// `payment`: the sender paid someone; counts once the one paid confirms it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Who was paid.
    pub to: UserId,
    /// How much, in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The request it answers, if any.
    pub request: Option<MessageId>,
}

/// `payment.confirm`: the one paid confirms a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentConfirm {
    /// The `payment` message.
    pub to: MessageId,
}

/// One way to be paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayMethod {
    /// A SEPA transfer to an IBAN (shown as an EPC "GiroCode" for euros).
    Iban {
        /// The IBAN.
        iban: String,
        /// The account holder.
        name: String,
        /// The bank's BIC, if given.
        bic: Option<String>,
    },
    /// A Lightning invoice (BOLT 11) or address.
    Lightning(String),
    /// A payment link (`https://`).
    Link(String),
}

/// `pay.request`: the sender asks to be paid, and says how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    /// Who is asked; `None`: anyone of the conversation.
    pub payer: Option<UserId>,
    /// How much, in minor units; `None`: what the payer owes.
    pub amount: Option<i64>,
    /// ISO 4217 code.
    pub currency: String,
    /// The reference a transfer should carry.
    pub reference: String,
    /// How to pay.
    pub methods: Vec<PayMethod>,
}

fn short(s: &str, what: &str) -> Result<(), DecodeError> {
    if s.len() > MAX_SHORT {
        return Err(DecodeError::Invalid(format!("{what} longer than {MAX_SHORT} bytes")));
    }
    Ok(())
}

fn field(s: &str, what: &str) -> Result<(), DecodeError> {
    if s.len() > MAX_METHOD_FIELD {
        return Err(DecodeError::Invalid(format!("{what} longer than {MAX_METHOD_FIELD} bytes")));
    }
    Ok(())
}

fn title(s: &str, what: &str) -> Result<(), DecodeError> {
    if s.trim().is_empty() {
        return Err(DecodeError::Invalid(format!("an empty {what}")));
    }
    short(s, what)
}

/// Checks an amount in minor units: 1 to [`MAX_AMOUNT`].
pub fn check_amount(a: i64) -> Result<(), DecodeError> {
    if a <= 0 || a > MAX_AMOUNT {
        return Err(DecodeError::Invalid(format!(
            "an amount must be 1 to {MAX_AMOUNT} minor units, not {a}"
        )));
    }
    Ok(())
}

/// Checks the form of a currency code: three capital letters (whether ISO 4217 knows it is the
/// node's check).
pub fn check_currency(c: &str) -> Result<(), DecodeError> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(DecodeError::Invalid(format!(
            "{c:?} is not a currency code (three capital letters, ISO 4217)"
        )));
    }
    Ok(())
}

fn zone(z: i16) -> Result<(), DecodeError> {
    if !(-MAX_ZONE..=MAX_ZONE).contains(&z) {
        return Err(DecodeError::Invalid(format!("a time-zone offset of {z} minutes")));
    }
    Ok(())
}

fn doc(d: &[u8]) -> Result<(), DecodeError> {
    if d.is_empty() || d.len() > MAX_LIST_DOC {
        return Err(DecodeError::Invalid(format!(
            "a list document of {} bytes (1 to {MAX_LIST_DOC})",
            d.len()
        )));
    }
    Ok(())
}

impl Event {
    /// Checks sizes and ranges.
    pub fn validate(&self) -> Result<(), DecodeError> {
        title(&self.title, "event title")?;
        zone(self.zone)?;
        if let Some(p) = &self.place {
            short(p, "place")?;
        }
        if self.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
            return Err(DecodeError::Invalid(format!("a note longer than {MAX_NOTE} bytes")));
        }
        Ok(())
    }
}

impl EventChange {
    /// Checks sizes and ranges.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let Some(t) = &self.title {
            title(t, "event title")?;
        }
        if let Some((_, z)) = self.start {
            zone(z)?;
        }
        if let Some(p) = &self.place {
            short(p, "place")?;
        }
        if self.title.is_none() && self.start.is_none() && self.place.is_none() && !self.cancelled {
            return Err(DecodeError::Invalid("an event change that changes nothing".into()));
        }
        Ok(())
    }
}

impl ListDoc {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        title(&self.title, "list title")?;
        doc(&self.doc)
    }
}

impl ListChange {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        doc(&self.doc)
    }
}

impl Split {
    /// Checks the split of `amount`: 1 to [`MAX_LIST`] different people, shares above 0, exact
    /// amounts that add up.
    pub fn validate(&self, amount: i64) -> Result<(), DecodeError> {
        let users: Vec<&UserId> = match self {
            Split::Equal(u) => u.iter().collect(),
            Split::Shares(s) => s.iter().map(|(u, _)| u).collect(),
            Split::Exact(e) => e.iter().map(|(u, _)| u).collect(),
        };
        if users.is_empty() || users.len() > MAX_LIST {
            return Err(DecodeError::Invalid(format!("a split among 1 to {MAX_LIST} people")));
        }
        let mut sorted: Vec<[u8; 16]> = users.iter().map(|u| u.0).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(DecodeError::Invalid("a split names someone twice".into()));
        }
        match self {
            Split::Shares(s) if s.iter().any(|(_, n)| *n == 0) => {
                Err(DecodeError::Invalid("a share of 0".into()))
            }
            Split::Exact(e) => {
                let mut sum: i128 = 0;
                for (_, a) in e {
                    if *a < 0 || *a > MAX_AMOUNT {
                        return Err(DecodeError::Invalid(format!("an exact part of {a}")));
                    }
                    sum += i128::from(*a);
                }
                if sum != i128::from(amount) {
                    return Err(DecodeError::Invalid(format!(
                        "the exact parts add up to {sum}, not {amount}"
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Expense {
    /// Checks sizes, the amount, the currency's form and the split.
    pub fn validate(&self) -> Result<(), DecodeError> {
        title(&self.description, "description")?;
        check_amount(self.amount)?;
        check_currency(&self.currency)?;
        self.split.validate(self.amount)
    }
}

impl Payment {
    /// Checks the amount and the currency's form.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_amount(self.amount)?;
        check_currency(&self.currency)
    }
}

impl PayRequest {
    /// Checks sizes, the amount and the currency's form (each method's own form is the node's
    /// check: IBAN checksum, invoice, link).
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let Some(a) = self.amount {
            check_amount(a)?;
        }
        check_currency(&self.currency)?;
        short(&self.reference, "reference")?;
        if self.methods.is_empty() || self.methods.len() > MAX_METHODS {
            return Err(DecodeError::Invalid(format!(
                "a payment request offers 1 to {MAX_METHODS} methods"
            )));
        }
        for m in &self.methods {
            match m {
                PayMethod::Iban { iban, name, bic } => {
                    short(iban, "IBAN")?;
                    field(name, "name")?;
                    if let Some(b) = bic {
                        short(b, "BIC")?;
                    }
                }
                PayMethod::Lightning(s) if s.len() > 2048 => {
                    return Err(DecodeError::Invalid("a Lightning invoice over 2048 bytes".into()))
                }
                PayMethod::Link(s) => field(s, "payment link")?,
                PayMethod::Lightning(_) => {}
            }
        }
        Ok(())
    }
}

/// Checks a live-location update's numbers beyond the point itself.
pub fn check_live(seq: u32, accuracy_m: Option<f32>, until: u64) -> Result<(), DecodeError> {
    if seq > MAX_LIVE_SEQ {
        return Err(DecodeError::Invalid(format!(
            "a live-location update numbered {seq} (at most {MAX_LIVE_SEQ})"
        )));
    }
    if accuracy_m.is_some_and(|a| !a.is_finite() || a < 0.0) {
        return Err(DecodeError::Invalid("an accuracy that is not a radius".into()));
    }
    if until == 0 {
        return Err(DecodeError::Invalid("a live location without an end time".into()));
    }
    Ok(())
}
