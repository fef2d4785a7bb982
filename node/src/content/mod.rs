//! Content kinds, one module each: how a kind is validated, what receiving it does, and how it
//! is shown. Every direct envelope, once opened and its sender's device checked
//! ([`crate::inbound`]), comes to [`receive`]; group messages go through
//! [`crate::services::groups`], whose control kinds (`group.leave`, `group.remove`) are
//! handled there.
//!
//! - [`shown`]: kinds shown in the history (text, and any kind not listed below): stored once,
//!   announced.
//! - [`receipt`]: `receipt` (delivered): marks a device done in the outbox.
//! - [`group_state`]: `group.invite`: join a group or move to its new epoch.
//! - [`group_copy`]: `group.copy`: a group message handed over directly; stored in the group.
//! - [`device_sync`]: `sync.sent`, `sync.read`, `device.prekey`: what the user's other devices
//!   tell this one; refused from anyone else.
//! - [`record_update`]: `record.update`: a contact's newest name record, pushed when it revokes
//!   a device.
//! - `sync.block`: a block or unblock made on another device of this user (the later wins);
//!   anything from a blocked user, of any kind, is dropped here before the match.
//! - `consent`: a person subscribing to or unsubscribing from this business or bot; before
//!   the match, a business's or bot's messages are refused without the person's consent
//!   (`rules::consent`), and a person's messages to a business or bot consent.
//! - `call`: a call signal, handed to [`crate::services::calls`]; never stored. Its history
//!   entry, `call.log`, is shown like text.
//!
//! Validation of the fields is the protocol's (`kith_protocol::Content::validate`, run when a
//! message is decoded); how a kind is shown is `store::StoredMessage::of` (its kind and text)
//! and [`crate::views`].
//!
//! Adding a kind: its wire form and `validate` in `protocol/src/message.rs`; a module here with
//! its `receive`, and one arm in [`receive`]; sending it is `Node::send_content`.

pub(crate) mod device_sync;
pub(crate) mod group_copy;
pub(crate) mod group_state;
pub(crate) mod receipt;
pub(crate) mod record_update;
pub(crate) mod shown;

use kith_protocol::envelope::Opened;
use kith_protocol::{Content, ReceiptKind};

use crate::error::NodeError;
use crate::rules::consent::Act;
use crate::services::Services;
use crate::views::NewMessage;

/// What became of an inbound envelope.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// A new message, stored.
    New(Box<NewMessage>),
    /// Already stored.
    Duplicate,
    /// Not a message of the history (a receipt, a group state, a device's note): applied.
    Applied,
}

/// Whether `content` is something a person sees or hears (shown in the history, a call, a
/// listening session): what a business or bot may send only with consent, and what, sent to
/// a business or bot, consents.
fn from_a_person(content: &Content) -> bool {
    !matches!(
        content,
        Content::Receipt { .. }
            | Content::RecordUpdate { .. }
            | Content::GroupCopy { .. }
            | Content::GroupInvite { .. }
            | Content::Consent(_)
    ) && !device_sync::own_only(content)
}

/// Receives an opened envelope from a device allowed to send it.
pub(crate) fn receive(s: &Services, opened: Opened) -> Result<Accepted, NodeError> {
    let me = s.ctx.user_id();
    let m = &opened.message;
    if device_sync::own_only(&m.content) && m.sender != me {
        return Err(NodeError::BadInput(format!("{} from another user", m.content.kind())));
    }
    // Someone this user blocked: dropped without a trace, acknowledged like anything stored
    // (the sender cannot tell; no delivery receipt goes back).
    if m.sender != me && s.ctx.store.is_blocked(&m.sender.0)? {
        s.ctx.counters.envelopes_rejected.inc();
        return Ok(Accepted::Applied);
    }
    if m.sender != me {
        match &m.content {
            Content::Consent(c) => {
                s.accounts.note(m.sender.0, Act::Note(c.subscribed), m.sent_at)?;
                return Ok(Accepted::Applied);
            }
            c if from_a_person(c) => {
                s.accounts.check_receive(m.sender.0)?;
                s.accounts.note(m.sender.0, Act::Received, s.ctx.now())?;
            }
            _ => {}
        }
    }
    match &m.content {
        Content::SelfSent { peer, peer_name, message } => device_sync::receive_copy(
            s,
            m,
            *peer,
            peer_name.clone(),
            message,
            opened.sender.peer_id,
        ),
        Content::DevicePrekey { prekey } => {
            s.records.on_device_prekey(&opened.sender, prekey);
            Ok(Accepted::Applied)
        }
        Content::SyncRead { conversation, until } => {
            s.conversations.mark_read_here(&conversation.0, *until)?;
            Ok(Accepted::Applied)
        }
        Content::SyncBlock(b) => {
            let entry =
                crate::store::BlockEntry { blocked: b.blocked, name: b.name.clone(), at: b.at };
            s.ctx.store.put_block(&b.user.0, entry)?;
            Ok(Accepted::Applied)
        }
        Content::Receipt { kind: ReceiptKind::Delivered, ids } => {
            receipt::receive(s, &opened.sender.device, ids);
            Ok(Accepted::Applied)
        }
        Content::RecordUpdate { record } => {
            record_update::receive(s, &opened.sender, record)?;
            Ok(Accepted::Applied)
        }
        Content::GroupCopy { envelope } => group_copy::receive(s, &opened, envelope),
        Content::Listen(signal) => {
            s.listen.receive(&opened.sender, opened.sender_name.as_deref(), m.sent_at, signal);
            Ok(Accepted::Applied)
        }
        Content::Call(signal) => {
            s.calls.receive(&opened.sender, opened.sender_name.as_deref(), m.sent_at, signal);
            Ok(Accepted::Applied)
        }
        Content::GroupInvite { .. } => {
            group_state::receive(s, &opened.sender, &m.content, m.sent_at);
            Ok(Accepted::Applied)
        }
        _ => shown::receive(s, opened),
    }
}
