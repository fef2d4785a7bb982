//! Who may write to whom: a business or a bot writes to a person only with the person's
//! consent (`docs/bots.md`, "Consent"). A person consents by writing to it (from any of the
//! person's devices) or subscribing, and withdraws by unsubscribing; the later decision wins.
//! Each node keeps the decisions it has seen: a person's node its own, a business's or bot's
//! node those of the people who wrote to it.

use kith_protocol::profile::AccountKind;

use crate::store::ConsentEntry;

/// What changes a consent decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// This node sent a message shown in the history to the user (on this or another device).
    Sent,
    /// This node received a message shown in the history from the user.
    Received,
    /// A `consent` note, sent or received: subscribed or not.
    Note(bool),
}

/// The decision `act` at `at` makes, on a node whose holder is of kind `me`; `None` when it
/// changes nothing.
///
/// On a person's node only the person's own acts count (what a business sends proves nothing
/// of the person's will); on a business's or bot's node only what the person sent does.
pub fn decide(me: AccountKind, act: Act, at: u64) -> Option<ConsentEntry> {
    let entry = |granted: bool, how: &str| ConsentEntry { granted, at, how: how.to_owned() };
    match (me.needs_consent(), act) {
        (false, Act::Sent) | (true, Act::Received) => Some(entry(true, "wrote")),
        (false, Act::Received) | (true, Act::Sent) => None,
        (_, Act::Note(true)) => Some(entry(true, "subscribed")),
        (_, Act::Note(false)) => Some(entry(false, "unsubscribed")),
    }
}

/// Whether a message of a kind shown in the history from a sender of kind `sender` is
/// accepted, given the consent held about the sender. A person's messages always are (block
/// them to stop them); a business's or bot's only with consent.
pub fn may_receive(sender: AccountKind, consent: Option<&ConsentEntry>) -> Result<(), String> {
    if !sender.needs_consent() || consent.is_some_and(|c| c.granted) {
        return Ok(());
    }
    Err(match consent {
        Some(_) => format!("this person unsubscribed from this {}", sender.as_str()),
        None => format!("this person has not written to this {} or subscribed", sender.as_str()),
    })
}

/// Whether this node, held by an account of kind `me`, may send a message shown in the history
/// directly to a person, given the consent it holds about the person.
pub fn may_send(me: AccountKind, to: &str, consent: Option<&ConsentEntry>) -> Result<(), String> {
    if !me.needs_consent() || consent.is_some_and(|c| c.granted) {
        return Ok(());
    }
    Err(match consent {
        Some(_) => format!("@{to} unsubscribed; a {} may not write to them", me.as_str()),
        None => format!(
            "@{to} has not written to you or subscribed; a {} writes to a person only after that",
            me.as_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountKind::{Bot, Business, Person};

    #[test]
    fn a_person_consents_by_writing_and_subscribing_never_by_being_written_to() {
        assert!(decide(Person, Act::Sent, 1).is_some_and(|c| c.granted));
        assert_eq!(decide(Person, Act::Received, 1), None);
        assert!(decide(Person, Act::Note(true), 1).is_some_and(|c| c.granted));
        assert!(decide(Person, Act::Note(false), 1).is_some_and(|c| !c.granted));
    }

    #[test]
    fn a_business_learns_consent_from_what_the_person_sent_only() {
        assert!(decide(Business, Act::Received, 1).is_some_and(|c| c.granted));
        assert_eq!(decide(Bot, Act::Sent, 1), None, "its own messages prove nothing");
        assert!(decide(Bot, Act::Note(false), 1).is_some_and(|c| !c.granted));
    }

    #[test]
    fn businesses_need_consent_people_do_not() {
        let yes = decide(Person, Act::Sent, 1);
        let no = decide(Person, Act::Note(false), 2);
        assert!(may_receive(Person, None).is_ok());
        assert!(may_receive(Business, None).is_err());
        assert!(may_receive(Bot, yes.as_ref()).is_ok());
        assert!(may_receive(Bot, no.as_ref()).unwrap_err().contains("unsubscribed"));
        assert!(may_send(Person, "bob", None).is_ok());
        assert!(may_send(Business, "bob", None).unwrap_err().contains("has not written"));
        assert!(may_send(Business, "bob", decide(Business, Act::Received, 1).as_ref()).is_ok());
    }
}
