//! `group.invite`: a group's state (members, epoch, key), sealed to each member, possibly in
//! parts. Adopted under the membership rules (`rules::group::adopt`); not shown in the history.

use kith_protocol::{Content, IdentityPublic};

use crate::services::Services;

/// Receives a group state sent by `sender` at `sent_at` (by its clock).
pub(crate) fn receive(s: &Services, sender: &IdentityPublic, content: &Content, sent_at: u64) {
    s.groups.on_group_state(sender, content, sent_at);
}
