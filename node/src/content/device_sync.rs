//! What the user's other devices tell this one, refused from anyone else:
//! - `sync.sent`: a copy of a direct message this user sent from another device, stored as an
//!   outgoing message with status `sent` and shown like one;
//! - `sync.read`: the user read a conversation on another device (handled by the conversations
//!   service);
//! - `device.prekey`: a linked device's new prekey, listed in the record by the identity holder
//!   (handled by the records service).

use kith_protocol::{Content, ConversationId, Message, UserId};

use super::Accepted;
use crate::error::NodeError;
use crate::rules::consent::Act;
use crate::services::Services;
use crate::store::{Direction, Status, StoredMessage};
use crate::views::{self, NewMessage};

/// Whether only this user's own devices may send `content`.
pub(crate) fn own_only(content: &Content) -> bool {
    matches!(
        content,
        Content::SelfSent { .. }
            | Content::DevicePrekey { .. }
            | Content::SyncRead { .. }
            | Content::SyncBlock(_)
    )
}

/// A copy (`sync.sent`, in `outer`) of a message this user sent to `peer` from another device.
pub(crate) fn receive_copy(
    s: &Services,
    outer: &Message,
    peer: UserId,
    peer_name: Option<String>,
    bytes: &[u8],
    sender: libp2p::PeerId,
) -> Result<Accepted, NodeError> {
    let bad = |e: String| NodeError::BadInput(e);
    let inner = Message::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    let me = s.ctx.user_id();
    if inner.sender != me || inner.conversation != ConversationId::direct(&me, &peer) {
        return Err(bad("a copy of a message that is not this user's".into()));
    }
    let store = &s.ctx.store;
    if store.message(&inner.id.0)?.is_some() {
        return Ok(Accepted::Duplicate);
    }
    let act = match &inner.content {
        Content::Consent(c) => Act::Note(c.subscribed),
        _ => Act::Sent,
    };
    s.accounts.note(peer.0, act, inner.sent_at)?;
    let stored = StoredMessage::of(&inner, Direction::Out, peer.0, Status::Sent, inner.to_bytes());
    if !store.insert_incoming(&stored)? {
        return Ok(Accepted::Duplicate);
    }
    if let Content::Attachment(a) = &inner.content {
        s.media.record(&stored, a, sender)?;
    }
    let names = views::names(&s.ctx.store, s.ctx.user_id())?;
    if let Some(name) = peer_name.filter(|_| !names.contains_key(&peer.0)) {
        s.records.learn_name(peer, name);
    }
    Ok(Accepted::New(Box::new(NewMessage {
        view: views::view(&s.ctx.store, s.ctx.user_id(), &stored, &names),
        id: outer.id,
        sent_at: inner.sent_at,
        sender: s.ctx.keys.identity_public,
        known: true,
        sender_name: None,
    })))
}
