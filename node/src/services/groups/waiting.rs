//! Messages to a group whose state has not reached this device yet (a member still joining, or
//! this user's device the state was not forwarded to yet): stored as `waiting`, sealed and
//! posted once the state arrives, `failed` after [`WAITING_LIMIT_MS`], cancellable meanwhile.

use kith_protocol::{Content, ConversationId, Message, MessageId};
use tracing::{info, warn};

use super::Groups;
use crate::error::{NodeError, OrWarn};
use crate::rules::outbox::WAITING_LIMIT_MS;
use crate::store::{Direction, GroupState, GroupWaiting, Status, StoredMessage};
use crate::views::{self, MessageView, NodeEvent};

/// Most messages waiting for group states at once, over all groups.
pub const MAX_GROUP_WAITING: usize = 1024;

impl Groups {
    /// Stores a message to group `group`, whose state this device does not hold yet; it is
    /// posted when the state arrives.
    pub(crate) async fn queue_waiting(
        &self,
        group: [u8; 16],
        content: Content,
    ) -> Result<MessageView, NodeError> {
        let store = &self.ctx.store;
        if store.group_waiting_len() >= MAX_GROUP_WAITING {
            return Err(NodeError::Busy(format!(
                "{MAX_GROUP_WAITING} messages already wait for their group's state"
            )));
        }
        let message = self.new_message(group, content)?;
        // Nothing to show other members before it is sealed: the history entry keeps no raw
        // bytes (sync answers skip waiting messages).
        let stored =
            StoredMessage::of(&message, Direction::Out, group, Status::Waiting, Vec::new());
        let w = GroupWaiting {
            group,
            id: message.id.0,
            message: message.to_bytes(),
            since: message.sent_at,
        };
        store.insert_group_waiting(&stored, &w)?;
        store.flush().await?;
        info!(group = %ConversationId(group), id = %message.id, "the group is not known here yet; the message waits for its state");
        let view = views::view_of(store, self.ctx.user_id(), &stored)?;
        self.ctx.counters.messages_sent.inc();
        let _ = self.ctx.events.send(NodeEvent::Message(view.clone()));
        Ok(view)
    }

    /// The state of `g` arrived: seals and posts the messages waiting for it, oldest first,
    /// each sent now (so that members judge it by the epoch it is sealed in).
    pub(crate) async fn release_waiting(&self, g: &GroupState) {
        let store = &self.ctx.store;
        let Some(mut waiting) = store.group_waiting(Some(&g.id)).or_warn("cannot read waiting")
        else {
            return;
        };
        waiting.sort_by_key(|w| w.since);
        for w in waiting {
            let old = match store.message(&w.id) {
                Ok(Some(old)) => old,
                _ => {
                    store
                        .end_group_waiting(&w.group, &w.id, Status::Failed)
                        .or_warn("cannot end a waiting message");
                    continue;
                }
            };
            let mut message = match Message::from_bytes(&w.message) {
                Ok(m) => m,
                Err(e) => {
                    warn!("a message waiting for its group does not decode: {e}");
                    let ended = store.end_group_waiting(&w.group, &w.id, Status::Failed);
                    if ended.or_warn("cannot end a waiting message") == Some(true) {
                        self.ctx.status_changed(&w.id, Status::Failed);
                    }
                    continue;
                }
            };
            message.sent_at = self.messaging.next_sent_at();
            let bytes = match self.seal(g, &message) {
                Ok(b) => b,
                Err(e) => return warn!("cannot seal a waiting group message: {e}"),
            };
            let new = self.group_stored(&message, Direction::Out, bytes.clone());
            match store.release_group_waiting(&old, &new) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return warn!("cannot release a waiting group message: {e}"),
            }
            if store.flush().await.is_err() {
                return;
            }
            info!(group = %ConversationId(g.id), id = %message.id, "posted a message that waited for the group's state");
            self.ctx.status_changed(&message.id.0, Status::Sent);
            self.publish(g, bytes.clone()).await;
            self.copy_to_unreached(g, bytes);
        }
    }

    /// Fails messages that waited [`WAITING_LIMIT_MS`] for a group's state.
    pub(crate) fn expire_waiting(&self, now: u64) {
        let Some(waiting) = self.ctx.store.group_waiting(None).or_warn("cannot read waiting")
        else {
            return;
        };
        for w in waiting.iter().filter(|w| now.saturating_sub(w.since) > WAITING_LIMIT_MS) {
            warn!(group = %ConversationId(w.group), "giving up a message: the group's state never arrived");
            if self
                .ctx
                .store
                .end_group_waiting(&w.group, &w.id, Status::Failed)
                .or_warn("cannot fail a message")
                == Some(true)
            {
                self.ctx.status_changed(&w.id, Status::Failed);
            }
        }
    }

    /// Withdraws message `id` if it waits for its group's state (`None`: it does not).
    pub(crate) async fn cancel_waiting(&self, id: &str) -> Result<Option<MessageView>, NodeError> {
        let Ok(id) = MessageId::parse(id) else { return Ok(None) };
        let store = &self.ctx.store;
        let Some(m) = store.message(&id.0)? else { return Ok(None) };
        if !(m.is_group() && m.status == Status::Waiting && m.direction == Direction::Out) {
            return Ok(None);
        }
        if !store.end_group_waiting(&m.conversation, &m.id, Status::Cancelled)? {
            return Ok(None);
        }
        store.flush().await?;
        self.ctx.status_changed(&id.0, Status::Cancelled);
        let m =
            store.message(&id.0)?.ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        Ok(Some(views::view_of(store, self.ctx.user_id(), &m)?))
    }
}

#[cfg(test)]
mod tests {
    use kith_protocol::message::Member;
    use kith_protocol::{IdentityKeypair, UserId};

    use super::*;
    use crate::node::Node;
    use crate::now_ms;

    /// A send to a group whose state has not arrived is stored as `waiting` (its envelope
    /// not shown to syncing members), posted sealed once the state arrives; a cancelled one
    /// is never posted.
    #[tokio::test]
    async fn a_send_to_a_group_still_joining_waits_for_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(crate::node::lone_node(dir.path(), false)).await.unwrap();
        let s = node.services().clone();
        let group = ConversationId([8; 16]);
        let to = format!("#{group}");
        let first = node.send_to(&to, "hello before the state").await.unwrap();
        assert_eq!(first.status, "waiting");
        assert_eq!(first.conversation, group.to_string());
        let second = node.send_to(&to, "never posted").await.unwrap();
        assert_eq!(node.cancel(&second.id).await.unwrap().status, "cancelled");
        assert!(node.cancel(&second.id).await.is_err(), "nothing left to cancel");
        // A prefix of an unknown group is still an error: only a whole id can wait.
        assert!(node.send_to(&to[..9], "x").await.is_err());

        let sender = IdentityKeypair::generate(&mut rand::rngs::OsRng).public();
        let members = vec![
            Member { user: sender.user_id(), identity: sender.to_bytes(), name: None },
            Member {
                user: UserId(node.user_id().0),
                identity: s.ctx.keys.identity_public.to_bytes(),
                name: None,
            },
        ];
        let state = Content::GroupInvite {
            group,
            title: None,
            members,
            epoch: 1,
            epoch_key: [3; 32],
            part: None,
            hand_on: None,
        };
        s.groups.on_group_state(&sender, s.ctx.peer_id(), &state, now_ms());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let id = MessageId::parse(&first.id).unwrap().0;
        loop {
            let m = s.ctx.store.message(&id).unwrap().expect("kept");
            if m.status == Status::Sent {
                let env = kith_protocol::group::GroupEnvelope::from_bytes(&m.raw).unwrap();
                let opened = env.open(&[3; 32]).unwrap();
                assert_eq!(opened.message.content.text(), Some("hello before the state"));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never posted");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let cancelled = s.ctx.store.message(&MessageId::parse(&second.id).unwrap().0).unwrap();
        assert_eq!(cancelled.unwrap().status, Status::Cancelled);
        assert!(s.ctx.store.group_waiting(None).unwrap().is_empty());
        node.shutdown().await.unwrap();
    }

    /// A message that waited longer than the limit fails.
    #[tokio::test]
    async fn a_message_waiting_too_long_for_its_group_fails() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(crate::node::lone_node(dir.path(), false)).await.unwrap();
        let s = node.services().clone();
        let sent = node.send_to(&format!("#{}", ConversationId([9; 16])), "x").await.unwrap();
        s.groups.expire_waiting(now_ms() + WAITING_LIMIT_MS / 2);
        assert_eq!(node.message(&sent.id).unwrap().status, "waiting");
        s.groups.expire_waiting(now_ms() + WAITING_LIMIT_MS + 1);
        assert_eq!(node.message(&sent.id).unwrap().status, "failed");
        node.shutdown().await.unwrap();
    }
}
