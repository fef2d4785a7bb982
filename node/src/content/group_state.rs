//! `group.invite`: a group's state (members, epoch, key), sealed to each member, possibly in
//! parts. Adopted under the membership rules (`rules::group::adopt`); not shown in the history.

use kith_protocol::{Content, SenderDevice};

use crate::services::Services;

/// Receives a group state sent by device `sender` at `sent_at` (by its clock).
pub(crate) fn receive(s: &Services, sender: &SenderDevice, content: &Content, sent_at: u64) {
    s.groups.on_group_state(&sender.identity, sender.peer_id, content, sent_at);
}
