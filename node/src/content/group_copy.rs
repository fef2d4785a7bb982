//! `group.copy`: a group message a member handed over directly (or through this device's
//! mailbox) because the group's topic might not reach this device. The envelope inside is
//! judged like one caught up through sync and stored in the group; the direct message carrying
//! it is not shown.

use kith_protocol::envelope::Opened;

use super::Accepted;
use crate::error::NodeError;
use crate::network::Verdict;
use crate::services::Services;
use crate::views::NewMessage;

/// Receives a group envelope handed over by `opened.sender`.
pub(crate) fn receive(
    s: &Services,
    opened: &Opened,
    envelope: &[u8],
) -> Result<Accepted, NodeError> {
    match s.groups.accept_group_envelope(envelope, true) {
        // The delivery receipt (for a copy fetched from a mailbox) goes to whoever handed it
        // over, for the direct message that carried it.
        Ok(Some(m)) => Ok(Accepted::New(Box::new(NewMessage {
            id: opened.message.id,
            sender: opened.sender.identity,
            known: true,
            sender_name: opened.sender_name.clone(),
            ..*m
        }))),
        // Already stored, or a group this device does not know (yet: it catches up once the
        // state arrives) or left.
        Err(Verdict::Ignore) | Err(Verdict::Accept) | Ok(None) => Ok(Accepted::Duplicate),
        Err(Verdict::Reject) => {
            Err(NodeError::BadInput("a group.copy whose group message does not verify".into()))
        }
    }
}
