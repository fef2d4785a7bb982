//! Group messages for member devices the group's topic may not reach: in a small group, a
//! message this device posts is also handed, as a direct `group.copy` message, to each member
//! device that is not connected and subscribed to the topic here (gossipsub reaches those
//! directly). It goes through the outbox like any direct message: retried, and deposited with
//! the device's mailbox when the device is offline.

use kith_protocol::group::topic;
use kith_protocol::message::MAX_GROUP_COPY;
use kith_protocol::{Content, ConversationId};
use libp2p::PeerId;
use tracing::{debug, warn};

use super::Groups;
use crate::store::GroupState;

/// Largest group whose messages are also copied to unreached member devices; larger groups
/// rely on catching up (`/kith/sync/1`) from the members who have them.
pub const GROUP_COPY_MAX_MEMBERS: usize = 16;

impl Groups {
    /// Hands `envelope` (just posted to `g`) to the member devices not reached through the
    /// topic, in the background.
    pub(crate) fn copy_to_unreached(&self, g: &GroupState, envelope: Vec<u8>) {
        if g.members.len() > GROUP_COPY_MAX_MEMBERS || envelope.len() > MAX_GROUP_COPY {
            return;
        }
        let node = self.clone();
        let g = g.clone();
        self.ctx.spawn(async move { node.copy_now(&g, envelope).await });
    }

    async fn copy_now(&self, g: &GroupState, envelope: Vec<u8>) {
        let reached: Vec<PeerId> =
            self.ctx.net.topic_peers(topic(&ConversationId(g.id))).await.unwrap_or_default();
        let unreached = |p: &PeerId| *p != self.ctx.peer_id() && !reached.contains(p);
        let content = Content::GroupCopy { envelope };
        let me = self.ctx.user_id().0;
        for m in g.members.iter().filter(|m| m.user != me) {
            let Some(name) = &m.name else { continue };
            let r = match self.records.pinned_or_resolved(name).await {
                Ok(r) if r.identity.to_bytes() == m.identity => r,
                Ok(_) => continue,
                Err(e) => {
                    debug!(%name, "no copy of a group message: {e}");
                    continue;
                }
            };
            let devices: Vec<_> =
                r.devices.iter().filter(|d| unreached(&d.device.peer_id)).cloned().collect();
            if devices.is_empty() {
                continue;
            }
            let queued = self
                .messaging
                .queue_to(r.user_id, &devices, &r.mailboxes, content.clone(), false)
                .await;
            if let Err(e) = queued {
                warn!(%name, "cannot queue a copy of a group message: {e}");
            }
        }
        // This user's other devices are members too.
        self.messaging.send_to_own_where(content, |d| unreached(&d.device.peer_id)).await;
    }
}
