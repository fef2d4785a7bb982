//! What reactions, edits and deletes make of the message they name (`docs/protocol.md` 5):
//! pure, from the message's sender and the annotations stored for it, whatever order they
//! arrived in.
//!
//! - A reaction is one user's emoji on a message; the same user's later reaction with the same
//!   emoji and `remove` takes it back. A user may give several different emoji.
//! - An edit replaces the text; only the message's own sender may edit it, and the edit sent
//!   last (sender's clock) wins.
//! - A delete removes the text and the file for everyone; only the message's sender may, and
//!   it cannot be undone.

use std::collections::BTreeMap;

/// Longest emoji (or short text) a reaction carries, in bytes.
pub const MAX_REACTION: usize = 64;

/// An annotation of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An emoji; `remove` takes it back.
    Reaction {
        /// The emoji.
        emoji: String,
        /// Takes the reaction back.
        remove: bool,
    },
    /// A new text.
    Edit {
        /// The text.
        body: String,
    },
    /// Deleted for everyone.
    Delete,
}

/// One annotation, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// Its sender.
    pub sender: [u8; 16],
    /// When it was sent (the sender's clock).
    pub sent_at: u64,
    /// What it does.
    pub kind: Kind,
}

/// A message as its annotations leave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotated {
    /// The text the last valid edit gives, if any.
    pub edited: Option<String>,
    /// Deleted by its sender.
    pub deleted: bool,
    /// Each emoji with the users who gave it, in the order first given.
    pub reactions: Vec<(String, Vec<[u8; 16]>)>,
}

/// Applies `annotations` to a message sent by `sender`.
pub fn apply(sender: [u8; 16], annotations: &[Annotation]) -> Annotated {
    let mut sorted: Vec<&Annotation> = annotations.iter().collect();
    sorted.sort_by_key(|a| a.sent_at);
    let mut out = Annotated::default();
    // (emoji, user) → given; and the order emoji were first given in.
    let mut given: BTreeMap<(String, [u8; 16]), bool> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for a in sorted {
        match &a.kind {
            Kind::Reaction { emoji, remove } => {
                if !order.contains(emoji) {
                    order.push(emoji.clone());
                }
                given.insert((emoji.clone(), a.sender), !remove);
            }
            Kind::Edit { body } if a.sender == sender => out.edited = Some(body.clone()),
            Kind::Delete if a.sender == sender => out.deleted = true,
            Kind::Edit { .. } | Kind::Delete => {}
        }
    }
    for emoji in order {
        let users: Vec<[u8; 16]> =
            given.iter().filter(|((e, _), on)| *e == emoji && **on).map(|((_, u), _)| *u).collect();
        if !users.is_empty() {
            out.reactions.push((emoji, users));
        }
    }
    if out.deleted {
        out.edited = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: [u8; 16] = [1; 16];
    const BOB: [u8; 16] = [2; 16];
    const CAROL: [u8; 16] = [3; 16];

    fn react(sender: [u8; 16], sent_at: u64, emoji: &str, remove: bool) -> Annotation {
        Annotation { sender, sent_at, kind: Kind::Reaction { emoji: emoji.into(), remove } }
    }

    #[test]
    fn reactions_count_each_user_once_and_can_be_taken_back() {
        let list = [
            react(BOB, 10, "+1", false),
            react(CAROL, 11, "+1", false),
            react(BOB, 12, "+1", false),
            react(BOB, 13, "wow", false),
            react(CAROL, 14, "+1", true),
        ];
        let a = apply(ALICE, &list);
        assert_eq!(a.reactions, vec![("+1".into(), vec![BOB]), ("wow".into(), vec![BOB])]);
        // The same annotations in another order of arrival give the same result.
        let mut shuffled = list.to_vec();
        shuffled.reverse();
        assert_eq!(apply(ALICE, &shuffled), a);
    }

    #[test]
    fn only_the_sender_edits_or_deletes_and_the_last_edit_wins() {
        let edit = |sender, sent_at, body: &str| Annotation {
            sender,
            sent_at,
            kind: Kind::Edit { body: body.into() },
        };
        let list = [edit(ALICE, 20, "second"), edit(ALICE, 10, "first"), edit(BOB, 30, "forged")];
        assert_eq!(apply(ALICE, &list).edited.as_deref(), Some("second"));
        let forged = Annotation { sender: BOB, sent_at: 40, kind: Kind::Delete };
        assert!(!apply(ALICE, std::slice::from_ref(&forged)).deleted);
        let mut list = list.to_vec();
        list.push(Annotation { sender: ALICE, sent_at: 5, kind: Kind::Delete });
        let a = apply(ALICE, &list);
        assert!(a.deleted);
        assert_eq!(a.edited, None, "a deleted message shows no text, even an edit sent later");
    }
}
