//! Kinds shown in the history (text, and every kind not handled elsewhere): stored once under
//! the direct conversation with the sender, then announced by the inbound path. Shown as
//! `StoredMessage::of` extracts their kind and text.

use kith_protocol::envelope::Opened;

use super::Accepted;
use crate::error::NodeError;
use crate::services::Services;
use crate::store::{Direction, Status, StoredMessage};
use crate::views::{self, NewMessage};

/// Stores a message for the history; a duplicate is recognised by its id.
pub(crate) fn receive(s: &Services, opened: Opened) -> Result<Accepted, NodeError> {
    let store = &s.ctx.store;
    let m = &opened.message;
    if store.message(&m.id.0)?.is_some() {
        return Ok(Accepted::Duplicate);
    }
    let mut stored =
        StoredMessage::of(m, Direction::In, m.sender.0, Status::Received, m.to_bytes());
    let names = views::names_for(&s.ctx.store, s.ctx.user_id(), &[m.sender.0, stored.peer])?;
    if !names.contains_key(&m.sender.0) {
        stored.claimed_name = opened.sender_name.clone();
    }
    if !store.insert_incoming(&stored)? {
        return Ok(Accepted::Duplicate);
    }
    if let kith_protocol::Content::Attachment(a) = &m.content {
        s.media.record(&stored, a, opened.sender.peer_id)?;
    }
    Ok(Accepted::New(Box::new(NewMessage {
        view: views::view(&s.ctx.store, s.ctx.user_id(), &stored, &names),
        id: m.id,
        sent_at: m.sent_at,
        sender: opened.sender.identity,
        known: names.contains_key(&m.sender.0),
        sender_name: names.get(&m.sender.0).cloned().or(opened.sender_name),
    })))
}
