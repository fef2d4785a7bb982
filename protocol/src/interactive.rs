//! Interactive messages (`docs/protocol.md` 6.7): buttons and quick replies, a pick-one or
//! pick-many list, a small form, a product card; the structured answer a person gives to one;
//! and the sender's update that replaces or closes its own, so stale buttons cannot be pressed.
//! Sealed and delivered like any message. Whether an answer fits the message it answers (an
//! offered choice, a valid form, not closed or expired) is the node's check
//! (`node/src/rules/interactive.rs`).

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::message::{MessageId, MAX_SHORT};

/// Most choices of buttons, a list or a product card; most fields of a form.
pub const MAX_CHOICES: usize = 16;
/// Longest choice id or form field key, in bytes.
pub const MAX_KEY: usize = 64;
/// Longest text of an interactive message, and longest answer to a text field, in bytes.
pub const MAX_BODY: usize = 4096;

/// One choice: an id the answer names, a label people see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Its id (1 to 64 bytes), unique in its message.
    pub id: String,
    /// What it says.
    pub label: String,
}

/// What a form field takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Text of at most `max_len` bytes (at most 4096).
    Text {
        /// Most bytes.
        max_len: u16,
    },
    /// A whole number, within the bounds given.
    Number {
        /// Smallest.
        min: Option<i64>,
        /// Largest.
        max: Option<i64>,
    },
    /// A date and time, RFC 3339 with an offset.
    DateTime,
    /// One of these.
    Choice(Vec<Choice>),
}

/// A form field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Its key (1 to 64 bytes), unique in the form.
    pub key: String,
    /// What it asks.
    pub label: String,
    /// What it takes.
    pub kind: FieldKind,
    /// Must be answered.
    pub required: bool,
}

/// A product card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its name.
    pub title: String,
    /// More about it.
    pub description: Option<String>,
    /// A picture: an `attachment` message of the same conversation.
    pub image: Option<MessageId>,
    /// Price in minor units.
    pub price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// What can be done with it ("Add to cart", sizes): the answer picks one.
    pub options: Vec<Choice>,
}

/// What an interactive message offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Element {
    /// Buttons (quick replies): the answer picks one.
    Buttons(Vec<Choice>),
    /// A list: the answer picks one, or with `many` one or more.
    Pick {
        /// More than one may be picked.
        many: bool,
        /// The options.
        options: Vec<Choice>,
    },
    /// A form: the answer gives its fields' values.
    Form {
        /// The fields.
        fields: Vec<Field>,
        /// The submit button's label.
        submit: String,
    },
    /// A product card.
    Product(Box<Product>),
}

/// `interactive`: a message with something to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    /// The message's text.
    pub text: String,
    /// What it offers.
    pub element: Element,
    /// After this time (ms since the epoch, the sender's clock) it takes no answer.
    pub expires: Option<u64>,
}

/// `interactive.update`: the sender replaces what its own interactive message offers, or
/// closes it. Fields left `None` stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveUpdate {
    /// The `interactive` message.
    pub to: MessageId,
    /// A new text.
    pub text: Option<String>,
    /// A new element.
    pub element: Option<Element>,
    /// It takes no more answers.
    pub closed: bool,
}

/// `interactive.answer`: a person's answer to an interactive message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveAnswer {
    /// The `interactive` message.
    pub to: MessageId,
    /// The ids of the choices picked (buttons, list, product).
    pub choices: Vec<String>,
    /// A form's values, by field key.
    pub fields: Vec<(String, String)>,
}

fn bad(what: String) -> DecodeError {
    DecodeError::Invalid(what)
}

fn key(k: &str, what: &str) -> Result<(), DecodeError> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(bad(format!("a {what} of {} bytes (1 to {MAX_KEY})", k.len())));
    }
    Ok(())
}

fn label(l: &str) -> Result<(), DecodeError> {
    if l.len() > MAX_SHORT {
        return Err(bad(format!("a label longer than {MAX_SHORT} bytes")));
    }
    Ok(())
}

fn choices(c: &[Choice], at_least: usize) -> Result<(), DecodeError> {
    if c.len() < at_least || c.len() > MAX_CHOICES {
        return Err(bad(format!("{} choices ({at_least} to {MAX_CHOICES})", c.len())));
    }
    for (i, x) in c.iter().enumerate() {
        key(&x.id, "choice id")?;
        label(&x.label)?;
        if c[..i].iter().any(|y| y.id == x.id) {
            return Err(bad(format!("the choice id {:?} twice", x.id)));
        }
    }
    Ok(())
}

impl Element {
    /// Checks sizes and ids.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Element::Buttons(c) => choices(c, 1),
            Element::Pick { options, .. } => choices(options, 1),
            Element::Form { fields, submit } => {
                label(submit)?;
                if fields.is_empty() || fields.len() > MAX_CHOICES {
                    return Err(bad(format!("{} form fields (1 to {MAX_CHOICES})", fields.len())));
                }
                for (i, f) in fields.iter().enumerate() {
                    key(&f.key, "field key")?;
                    label(&f.label)?;
                    if fields[..i].iter().any(|g| g.key == f.key) {
                        return Err(bad(format!("the field key {:?} twice", f.key)));
                    }
                    match &f.kind {
                        FieldKind::Text { max_len } if usize::from(*max_len) > MAX_BODY => {
                            return Err(bad(format!("a text field of up to {max_len} bytes")))
                        }
                        FieldKind::Number { min: Some(a), max: Some(b) } if a > b => {
                            return Err(bad(
                                "a number field whose minimum is above its maximum".into()
                            ))
                        }
                        FieldKind::Choice(c) => choices(c, 1)?,
                        _ => {}
                    }
                }
                Ok(())
            }
            Element::Product(p) => {
                if p.title.trim().is_empty() {
                    return Err(bad("a product without a title".into()));
                }
                label(&p.title)?;
                if p.description.as_ref().is_some_and(|d| d.len() > MAX_BODY) {
                    return Err(bad(format!("a product description over {MAX_BODY} bytes")));
                }
                crate::plan::check_amount(p.price)?;
                crate::plan::check_currency(&p.currency)?;
                choices(&p.options, 0)
            }
        }
    }
}

impl Interactive {
    /// Checks sizes and the element.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.text.len() > MAX_BODY {
            return Err(bad(format!("an interactive text over {MAX_BODY} bytes")));
        }
        self.element.validate()
    }
}

impl InteractiveUpdate {
    /// Checks sizes and the element.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.text.as_ref().is_some_and(|t| t.len() > MAX_BODY) {
            return Err(bad(format!("an interactive text over {MAX_BODY} bytes")));
        }
        match &self.element {
            Some(e) => e.validate(),
            None if self.text.is_none() && !self.closed => {
                Err(bad("an interactive update that changes nothing".into()))
            }
            None => Ok(()),
        }
    }
}

impl InteractiveAnswer {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.choices.len() > MAX_CHOICES || self.fields.len() > MAX_CHOICES {
            return Err(bad(format!("an answer with more than {MAX_CHOICES} choices or fields")));
        }
        if self.choices.is_empty() && self.fields.is_empty() {
            return Err(bad("an empty answer".into()));
        }
        for c in &self.choices {
            key(c, "choice id")?;
        }
        for (k, v) in &self.fields {
            key(k, "field key")?;
            if v.len() > MAX_BODY {
                return Err(bad(format!("a field value over {MAX_BODY} bytes")));
            }
        }
        Ok(())
    }
}
