//! Interactive messages (`docs/protocol.md` 6.7): sending one (a bot or business, through the
//! API or as a library), updating or closing one's own, answering one with a structured reply,
//! and how each shows: what it offers now and the answers that fit it. Like the planning kinds,
//! they are ordinary messages of the conversation whose content the store keeps (`plan`); the
//! update is hidden from listings.

use kith_protocol::interactive::{Interactive, InteractiveAnswer, InteractiveUpdate};
use kith_protocol::{Content, MessageId, UserId};
use serde::Serialize;

use super::conversations::Conversations;
use super::plans::message_and_conversation;
use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules::interactive::{self as rule, Current};
use crate::store::{Store, StoredMessage};
use crate::views::MessageView;

/// Most answers a view of an interactive message lists (the newest).
pub const MAX_ANSWERS_SHOWN: usize = 200;

fn bad(e: impl std::fmt::Display) -> NodeError {
    NodeError::BadInput(e.to_string())
}

/// The interactive service.
#[derive(Clone, Debug)]
pub struct Interactions {
    pub(crate) ctx: Ctx,
    pub(crate) conversations: Conversations,
}

/// One answer, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AnswerView {
    /// The answer's message id.
    pub id: String,
    /// Who answered.
    pub from: String,
    /// The choices picked (ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// A form's values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// An interactive message as it stands.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InteractiveView {
    /// Its text now.
    pub text: String,
    /// What it offers now, as the protocol has it (`{"buttons": [...]}`, `{"pick": {...}}`,
    /// `{"form": {...}}`, `{"product": {...}}`).
    pub element: serde_json::Value,
    /// Whether it takes answers now.
    pub open: bool,
    /// When it stops taking answers (RFC 3339), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The answers that fit it, oldest first (the newest 200).
    pub answers: Vec<AnswerView>,
}

fn decode(m: &StoredMessage) -> Option<Content> {
    kith_protocol::codec::from_slice(m.plan.as_deref()?, kith_protocol::message::MAX_MESSAGE_SIZE)
        .ok()
}

/// The answers to an interactive message, each with its stored message.
type Answers = Vec<(StoredMessage, InteractiveAnswer)>;

/// The current state of interactive message `m` and the answers that fit it, from the
/// conversation's stored messages.
fn state(store: &Store, m: &StoredMessage) -> Result<Option<(Current, Answers)>, NodeError> {
    let Some(Content::Interactive(first)) = decode(m) else { return Ok(None) };
    let related: Vec<StoredMessage> = store
        .plan_messages(&m.conversation)?
        .into_iter()
        .filter(|r| r.target == Some(m.id))
        .collect();
    let mut updates: Vec<(u64, [u8; 16], InteractiveUpdate)> = Vec::new();
    let mut answers = Vec::new();
    for r in related {
        match decode(&r) {
            Some(Content::InteractiveUpdate(u)) if r.sender == m.sender => {
                updates.push((r.sent_at, r.id, *u))
            }
            Some(Content::InteractiveAnswer(a)) => answers.push((r, *a)),
            _ => {}
        }
    }
    updates.sort_by_key(|(at, id, _)| (*at, *id));
    let current = rule::current(&first, updates.iter().map(|(at, _, u)| (*at, u)));
    // An answer counts when it was made while the message was open and fits what it offers.
    answers.retain(|(r, a)| {
        current.open(r.sent_at) && rule::check_answer(&current.element, a).is_ok()
    });
    answers.sort_by_key(|(r, _)| (r.sent_at, r.id));
    Ok(Some((current, answers)))
}

/// The view of interactive message `m` (`None` for another kind).
pub(crate) fn view_of(
    store: &Store,
    m: &StoredMessage,
    now: u64,
    names: &std::collections::HashMap<[u8; 16], String>,
) -> Option<Box<InteractiveView>> {
    let (current, answers) = state(store, m).ok().flatten()?;
    let show = |u: &[u8; 16]| names.get(u).cloned().unwrap_or_else(|| UserId(*u).to_string());
    let skip = answers.len().saturating_sub(MAX_ANSWERS_SHOWN);
    Some(Box::new(InteractiveView {
        text: current.text.clone(),
        element: serde_json::to_value(&current.element).unwrap_or(serde_json::Value::Null),
        open: current.open(now),
        expires: current.expires.map(crate::rfc3339),
        answers: answers
            .into_iter()
            .skip(skip)
            .map(|(r, a)| AnswerView {
                id: hex::encode(r.id),
                from: show(&r.sender),
                choices: a.choices,
                fields: a.fields,
            })
            .collect(),
    }))
}

impl Interactions {
    /// Sends an interactive message to `to` (`@name` or `#id`); `expires_in` from now.
    pub async fn send(
        &self,
        to: &str,
        text: &str,
        element: kith_protocol::interactive::Element,
        expires_in: Option<std::time::Duration>,
    ) -> Result<MessageView, NodeError> {
        let target = self.conversations.target(to)?;
        let expires = expires_in.map(|d| {
            self.ctx.now().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        let i = Interactive { text: text.to_owned(), element, expires };
        i.validate().map_err(bad)?;
        self.conversations.send(&target, Content::Interactive(Box::new(i))).await
    }

    /// Replaces what this user's interactive message `id` offers, or closes it.
    pub async fn update(
        &self,
        id: &str,
        text: Option<String>,
        element: Option<kith_protocol::interactive::Element>,
        closed: bool,
    ) -> Result<MessageView, NodeError> {
        let (m, target) = message_and_conversation(&self.ctx, id, "interactive")?;
        if m.sender != self.ctx.user_id().0 {
            return Err(NodeError::NotAllowed(
                "only its sender updates an interactive message".into(),
            ));
        }
        let u = InteractiveUpdate { to: MessageId(m.id), text, element, closed };
        u.validate().map_err(bad)?;
        self.conversations.send(&target, Content::InteractiveUpdate(Box::new(u))).await
    }

    /// Answers interactive message `id`: choices by id, or a form's fields. Refused when it is
    /// closed or expired, or when the answer does not fit what it offers.
    pub async fn answer(
        &self,
        id: &str,
        choices: Vec<String>,
        fields: Vec<(String, String)>,
    ) -> Result<MessageView, NodeError> {
        let (m, target) = message_and_conversation(&self.ctx, id, "interactive")?;
        let Some((current, _)) = state(&self.ctx.store, &m)? else {
            return Err(NodeError::NotFound(format!("interactive message {id}")));
        };
        if !current.open(self.ctx.now()) {
            return Err(NodeError::NotAllowed(
                "this message takes no more answers (closed or expired)".into(),
            ));
        }
        let a = InteractiveAnswer { to: MessageId(m.id), choices, fields };
        a.validate().map_err(bad)?;
        rule::check_answer(&current.element, &a).map_err(bad)?;
        self.conversations.send(&target, Content::InteractiveAnswer(Box::new(a))).await
    }
}
