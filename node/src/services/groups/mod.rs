//! Group chats over gossipsub.
//!
//! A group forms when a message in a direct chat mentions `@name` of someone who is not in it:
//! the sender creates a group (a random id, epoch 1 with a random key) of both participants and
//! the people mentioned, sends each member the group's state in a sealed direct message
//! (`group.invite`), and posts the message to the group. Mentioning a non-member in a group adds
//! them. Every membership change starts a new epoch whose key reaches the remaining members only
//! in sealed direct messages. Rules (`docs/protocol.md`, 7.4): only members post; a member may
//! remove the members who joined after it; after a leave, the remaining member with the lowest
//! user id rekeys.

mod copies;
mod sync;
mod waiting;
pub use copies::GROUP_COPY_MAX_MEMBERS;
pub use waiting::MAX_GROUP_WAITING;

use std::sync::{Arc, Mutex};

use kith_protocol::group::{topic, GroupEnvelope};
use kith_protocol::message::{HandOn, InvitePart, Member};
use kith_protocol::{
    normalize_name, Content, ConversationId, IdentityPublic, Message, UserId, VerifiedNameRecord,
    VERSION,
};
use libp2p::PeerId;
use rand::RngCore;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::network::Verdict;
use crate::rules;
use crate::rules::group::{self as rule, key_of, Adopt, Offer};
use crate::store::{Direction, GroupMember, GroupState, Status, StoredMessage};
use crate::views::{self, MessageView, NodeEvent};

/// Most member devices a node keeps connections to, per group, for the gossipsub mesh.
pub const MESH_DIALS: usize = 8;
pub use crate::rules::group::{
    EPOCH_GRACE_MS, HAND_ON_FALLBACK_MS, HAND_ON_FANOUT, INVITE_PARTS_TTL_MS, MAX_PENDING_INVITES,
};
/// Most member devices a group remembers.
pub const MAX_GROUP_PEERS: usize = 256;
/// Most member devices asked for missed messages per sync round.
pub const SYNC_PEERS: usize = 4;
/// How often every active group catches up even when nothing wakes it. A member outside the
/// gossipsub mesh can miss a message's gossip (the gossip cache holds ids for three heartbeats,
/// about 2 s); this bounds how long such a message takes to reach it.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Least time between two catch-up rounds (a member device connecting wakes one).
pub const SYNC_GAP: std::time::Duration = std::time::Duration::from_secs(10);
/// Members per `group.invite` part: a longer member list is split (about 80 bytes a member,
/// so a part stays well under the 60 KiB message limit).
pub const INVITE_PART_MEMBERS: usize = 512;
/// Most members of a group: what [`kith_protocol::message::MAX_INVITE_PARTS`] parts hold.
pub const MAX_GROUP_MEMBERS: usize =
    INVITE_PART_MEMBERS * kith_protocol::message::MAX_INVITE_PARTS as usize;

/// Who sent a group state, and when (by the sender's clock).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StateFrom<'a> {
    pub(crate) sender: &'a IdentityPublic,
    /// The device that sent it: a member device that holds the group's messages.
    pub(crate) device: PeerId,
    pub(crate) sent_at: u64,
}

/// The groups service.
#[derive(Clone, Debug)]
pub(crate) struct Groups {
    pub(crate) ctx: Ctx,
    pub(crate) records: super::records::Records,
    pub(crate) messaging: super::messaging::Messaging,
    /// Attachments posted to groups are recorded there.
    pub(crate) media: super::media::Media,
    /// Group states arriving in parts (long member lists), until they are whole.
    pub(crate) invite_parts: Arc<Mutex<rules::group::InviteParts>>,
    /// Group messages that arrived before their epoch's key.
    pub(crate) early: Arc<Mutex<rules::group::EarlyMessages>>,
    /// Wakes the group task (a member device connected).
    pub(crate) wake_sync: Arc<Notify>,
    /// Envelopes stored lately, dropped unopened when they come again.
    pub(crate) seen: Arc<Mutex<rules::group::SeenEnvelopes>>,
}

impl Groups {
    pub(crate) fn new(
        ctx: Ctx,
        records: super::records::Records,
        messaging: super::messaging::Messaging,
        media: super::media::Media,
    ) -> Self {
        Groups {
            ctx,
            records,
            messaging,
            media,
            invite_parts: Arc::default(),
            early: Arc::default(),
            wake_sync: Arc::default(),
            seen: Arc::default(),
        }
    }
}

fn too_many(members: usize) -> Result<(), NodeError> {
    if members > MAX_GROUP_MEMBERS {
        return Err(NodeError::NotAllowed(format!(
            "a group has at most {MAX_GROUP_MEMBERS} members, not {members}"
        )));
    }
    Ok(())
}

fn verdict(d: rule::Drop) -> Verdict {
    match d {
        rule::Drop::Ignore => Verdict::Ignore,
        rule::Drop::Reject => Verdict::Reject,
    }
}

fn member_of(r: &VerifiedNameRecord) -> GroupMember {
    GroupMember { user: r.user_id.0, identity: r.identity.to_bytes(), name: Some(r.name.clone()) }
}

fn wire_member(m: &GroupMember) -> Member {
    Member { user: UserId(m.user), identity: m.identity, name: m.name.clone() }
}

fn state_member(m: &Member) -> GroupMember {
    GroupMember { user: m.user.0, identity: m.identity, name: m.name.clone() }
}

impl Groups {
    pub(crate) fn group_state(&self, id: &[u8; 16]) -> Result<GroupState, NodeError> {
        self.ctx
            .store
            .group(id)?
            .ok_or_else(|| NodeError::NotFound(format!("group {}", ConversationId(*id))))
    }

    pub(crate) async fn form_group(
        &self,
        peer: &VerifiedNameRecord,
        invited: &[VerifiedNameRecord],
    ) -> Result<GroupState, NodeError> {
        let me = GroupMember {
            user: self.ctx.user_id().0,
            identity: self.ctx.keys.identity_public.to_bytes(),
            name: self.ctx.name(),
        };
        let mut members = vec![me, member_of(peer)];
        members.extend(invited.iter().map(member_of));
        too_many(members.len())?;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let g = GroupState::joined(
            ConversationId::random(&mut rand::rngs::OsRng).0,
            members,
            1,
            key,
            self.ctx.now(),
        );
        self.ctx.store.put_group(&g)?;
        self.ctx.store.flush().await?;
        info!(group = %ConversationId(g.id), members = g.members.len(), "formed a group");
        self.join_topic(&g).await;
        // Everyone but this user is new: they hand the state on to each other.
        self.send_state(&g, invited.iter().chain([peer]), Some(1)).await;
        Ok(g)
    }

    /// Starts a new epoch with `added` in and `removed` out, and sends the new state to every
    /// remaining member in sealed direct messages.
    pub(crate) async fn change_members(
        &self,
        mut g: GroupState,
        added: &[VerifiedNameRecord],
        removed: &[[u8; 16]],
    ) -> Result<GroupState, NodeError> {
        g.members.retain(|m| !removed.contains(&m.user));
        too_many(g.members.len() + added.len())?;
        let new_from = (!added.is_empty()).then_some(g.members.len());
        g.members.extend(added.iter().map(member_of));
        g.leaving.retain(|l| !removed.iter().any(|r| r.as_slice() == l.as_slice()));
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        g.enter_epoch(g.epoch + 1, key, self.ctx.now());
        self.ctx.store.put_group(&g)?;
        self.ctx.store.flush().await?;
        self.send_state(&g, added, new_from).await;
        Ok(g)
    }

    /// Starts a new epoch with the same members (after a device of this user was revoked).
    pub(crate) async fn rekey(&self, g: GroupState) -> Result<GroupState, NodeError> {
        self.change_members(g, &[], &[]).await
    }

    /// Sends the group's current state and key to every member (except this user), sealed, and
    /// to this user's other devices. Members with a record in `known` (resolved moments ago, when they
    /// were mentioned) are not resolved again: forming a group of hundreds would otherwise cost
    /// every lookup twice. With `new_from`, the members from that index on are new: they hand
    /// the state on to each other (`rules::group::hand_on_to`), so this device sends it to the
    /// first [`HAND_ON_FANOUT`] of them now and to the others only as a fallback, after
    /// [`HAND_ON_FALLBACK_MS`].
    pub(crate) async fn send_state<'a>(
        &self,
        g: &GroupState,
        known: impl IntoIterator<Item = &'a VerifiedNameRecord>,
        new_from: Option<usize>,
    ) {
        let Some(key) = key_of(g, g.epoch) else { return };
        let now = self.ctx.now();
        let len = g.members.len();
        let hand_on = new_from
            .filter(|&from| from > 0 && from < len)
            .map(|from| HandOn { from: from as u32, sent_at: now });
        let members: Vec<Member> = g.members.iter().map(wire_member).collect();
        let count = members.len().div_ceil(INVITE_PART_MEMBERS).max(1);
        let parts: Vec<Content> = members
            .chunks(INVITE_PART_MEMBERS)
            .enumerate()
            .map(|(i, chunk)| Content::GroupInvite {
                group: ConversationId(g.id),
                title: None,
                members: chunk.to_vec(),
                epoch: g.epoch,
                epoch_key: key,
                part: (count > 1).then_some(InvitePart { index: i as u32, count: count as u32 }),
                hand_on,
            })
            .collect();
        // New members beyond this device's children in the tree get it only as a fallback.
        let later = |i: usize| {
            hand_on.is_some_and(|h| {
                let from = h.from as usize;
                i >= from && !rule::hand_on_to(from, len, None, HAND_ON_FANOUT).contains(&i)
            })
        };
        let (later_to, now_to): (Vec<_>, Vec<_>) =
            g.members.iter().enumerate().partition(|(i, _)| later(*i));
        let members_of = |v: Vec<(usize, &GroupMember)>| -> Vec<GroupMember> {
            v.into_iter().map(|(_, m)| m.clone()).collect()
        };
        let (now_to, later_to) = (members_of(now_to), members_of(later_to));
        let known: Vec<&VerifiedNameRecord> = known.into_iter().collect();
        self.deliver_state(&parts, &now_to, &known, 0).await;
        for content in &parts {
            self.messaging.send_to_own(content.clone()).await;
        }
        self.deliver_state(&parts, &later_to, &known, now + HAND_ON_FALLBACK_MS).await;
    }

    /// Queues the parts of a group state to each member of `to` (not this user) whose name
    /// still resolves to the identity the member list gives, first tried at `not_before` (0:
    /// now).
    async fn deliver_state(
        &self,
        parts: &[Content],
        to: &[GroupMember],
        known: &[&VerifiedNameRecord],
        not_before: u64,
    ) {
        let me = self.ctx.user_id().0;
        let identities: std::collections::HashMap<&str, [u8; 32]> =
            to.iter().filter_map(|m| m.name.as_deref().map(|n| (n, m.identity))).collect();
        let mut records: Vec<(String, Result<VerifiedNameRecord, NodeError>)> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let known: std::collections::HashMap<&str, &VerifiedNameRecord> =
            known.iter().map(|r| (r.name.as_str(), *r)).collect();
        for m in to.iter().filter(|m| m.user != me) {
            let Some(name) = m.name.clone() else { continue };
            match known.get(name.as_str()).filter(|r| r.user_id.0 == m.user) {
                Some(r) => records.push((name, Ok((*r).clone()))),
                None => names.push(name),
            }
        }
        records.extend(self.records.resolve_many(names).await);
        for (name, r) in records {
            let Some(identity) = identities.get(name.as_str()) else { continue };
            match r {
                Ok(r) if r.identity.to_bytes() == *identity => {
                    for content in parts {
                        let queued = self
                            .messaging
                            .queue_not_before(
                                r.user_id,
                                &r.devices,
                                &r.mailboxes,
                                content.clone(),
                                false,
                                not_before,
                            )
                            .await;
                        if let Err(e) = queued {
                            warn!(%name, "cannot send the group state: {e}");
                        }
                    }
                }
                Ok(_) => {
                    warn!(%name, "not sending the group key: the name now belongs to another key")
                }
                Err(e) => warn!(%name, "cannot send the group state: {e}"),
            }
        }
    }

    /// This device joined a group whose new members hand its state on (`hand_on`): sends it on
    /// to this user's children in the tree.
    async fn hand_on(&self, g: &GroupState, hand_on: HandOn, parts: &[Content]) {
        let me = self.ctx.user_id().0;
        let Some(i) = g.members.iter().position(|m| m.user == me) else { return };
        let children =
            rule::hand_on_to(hand_on.from as usize, g.members.len(), Some(i), HAND_ON_FANOUT);
        if children.is_empty() {
            return;
        }
        debug!(group = %ConversationId(g.id), n = children.len(), "handing the group state on");
        self.deliver_state(parts, &g.members[children], &[], 0).await;
    }

    /// Seals, stores and publishes a message to the group.
    pub(crate) async fn post(
        &self,
        g: &GroupState,
        content: Content,
    ) -> Result<MessageView, NodeError> {
        let message = self.new_message(g.id, content)?;
        let bytes = self.seal(g, &message)?;
        let stored = self.group_stored(&message, Direction::Out, bytes.clone());
        self.ctx.store.insert_incoming(&stored)?;
        self.ctx.store.flush().await?;
        let view = views::view_of(&self.ctx.store, self.ctx.user_id(), &stored)?;
        let _ = self.ctx.events.send(NodeEvent::Message(view.clone()));
        self.ctx.counters.messages_sent.inc();
        self.publish(g, bytes.clone()).await;
        self.copy_to_unreached(g, bytes);
        Ok(view)
    }

    /// A new message from this user to group `group`, its content checked.
    pub(crate) fn new_message(
        &self,
        group: [u8; 16],
        content: Content,
    ) -> Result<Message, NodeError> {
        let message = Message {
            v: VERSION,
            id: crate::ids::message_id(),
            conversation: ConversationId(group),
            sender: self.ctx.user_id(),
            sent_at: self.messaging.next_sent_at(),
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        Ok(message)
    }

    /// The group envelope of `message`, sealed with the current epoch's key and numbered with
    /// this device's next sequence number for the group.
    pub(crate) fn seal(&self, g: &GroupState, message: &Message) -> Result<Vec<u8>, NodeError> {
        let key = key_of(g, g.epoch)
            .ok_or_else(|| NodeError::Internal("no key for the current epoch".into()))?;
        let seq = self.ctx.store.next_group_seq(&g.id)?;
        let env = GroupEnvelope::seal(
            &mut rand::rngs::OsRng,
            &key,
            g.epoch,
            (&self.ctx.keys.cert, &self.ctx.keys.device),
            Some(seq),
            message,
        )
        .map_err(|e| NodeError::Internal(format!("cannot seal a group message: {e}")))?;
        Ok(env.to_bytes())
    }

    /// Publishes a stored envelope on the group's topic.
    pub(crate) async fn publish(&self, g: &GroupState, envelope: Vec<u8>) {
        // Members not reachable now get it when they sync.
        if let Ok(Err(e)) = self.ctx.net.publish(topic(&ConversationId(g.id)), envelope).await {
            debug!("group message not published now ({e}); members will sync it");
        }
    }

    pub(crate) fn group_stored(
        &self,
        m: &Message,
        direction: Direction,
        raw: Vec<u8>,
    ) -> StoredMessage {
        let status = if direction == Direction::Out { Status::Sent } else { Status::Received };
        StoredMessage::of(m, direction, m.conversation.0, status, raw)
    }

    /// Leaves group `id`: tells the members, forgets the key, stops listening.
    pub(crate) async fn leave(&self, id: [u8; 16]) -> Result<(), NodeError> {
        let mut g = self.group_state(&id)?;
        if !g.active {
            return Err(NodeError::NotAllowed("you already left this group".into()));
        }
        self.post(&g, Content::GroupLeave { group: ConversationId(id) }).await?;
        g.active = false;
        self.ctx.store.put_group(&g)?;
        self.ctx.store.flush().await?;
        let _ = self.ctx.net.subscribe(topic(&ConversationId(id)), false).await;
        Ok(())
    }

    /// Removes `@name` from a group (allowed for members who joined after you).
    pub(crate) async fn remove_member(&self, id: [u8; 16], name: &str) -> Result<(), NodeError> {
        let name = normalize_name(name.trim_start_matches('@'))?;
        let g = self.group_state(&id)?;
        if !g.active {
            return Err(NodeError::NotAllowed("you are no longer a member of this group".into()));
        }
        let Some(target) = g.members.iter().position(|m| m.name.as_deref() == Some(name.as_str()))
        else {
            return Err(NodeError::NotFound(format!("{name} is not a member of this group")));
        };
        let user = g.members[target].user;
        if !rule::may_remove(&g.members, &self.ctx.user_id().0, &user) {
            return Err(NodeError::NotAllowed(format!(
                "you may remove only members who joined after you; {name} joined before you"
            )));
        }
        self.post(&g, Content::GroupRemove { group: ConversationId(id), user: UserId(user) })
            .await?;
        self.change_members(g, &[], &[user]).await?;
        Ok(())
    }

    pub(crate) async fn join_topic(&self, g: &GroupState) {
        let _ = self.ctx.net.subscribe(topic(&ConversationId(g.id)), true).await;
        self.connect_members(g).await;
    }

    /// Connects to some member devices so the gossipsub mesh of the group can form.
    pub(crate) async fn connect_members(&self, g: &GroupState) {
        // Connected to enough members already: no dial (each redial of a member the idle
        // check closed would cost a handshake every round).
        let t = topic(&ConversationId(g.id));
        let connected = self.ctx.net.topic_peers(t).await.map_or(0, |p| p.len());
        let mut dialed = connected.min(MESH_DIALS);
        // Twice as many candidates as dials: a member whose name does not resolve is skipped.
        for m in rule::mesh_members(&g.members, &self.ctx.user_id().0, 2 * MESH_DIALS) {
            if dialed >= MESH_DIALS {
                break;
            }
            let Some(name) = &m.name else { continue };
            // The copy pinned with the contact names its devices well enough to dial them; a
            // DHT lookup (seconds each under load) only for a member never resolved, so a
            // round stays quick.
            if let Ok(r) = self.records.pinned_or_resolved(name).await {
                for d in r.devices.iter().take(1) {
                    let _ = self.ctx.net.dial_peer(d.device.peer_id).await;
                    self.remember_peer(&g.id, &d.device.peer_id);
                    dialed += 1;
                }
            }
        }
    }

    pub(crate) fn remember_peer(&self, id: &[u8; 16], peer: &PeerId) {
        if let Some(g) = self.ctx.store.group_shared(id) {
            let bytes = peer.to_bytes();
            // Bounded: member devices beyond this are found again through the DHT.
            if !g.peers.contains(&bytes) && g.peers.len() < MAX_GROUP_PEERS {
                let mut g = (*g).clone();
                g.peers.push(bytes);
                self.ctx.store.put_group(&g).or_warn("cannot save a group");
            }
        }
    }

    /// A sealed `group.invite` arrived from `sender`, who sent it at `sent_at` (by its clock):
    /// join the group, or move to its new epoch.
    pub(crate) fn on_group_state(
        &self,
        sender: &IdentityPublic,
        device: PeerId,
        content: &Content,
        sent_at: u64,
    ) {
        let from = StateFrom { sender, device, sent_at };
        let Content::GroupInvite { group, members, epoch, epoch_key, part, .. } = content else {
            return;
        };
        let Some(part) = part else {
            self.adopt_state(from, group, members, *epoch, epoch_key, vec![content.clone()]);
            return;
        };
        // One part of a long member list: keep it until every part of this state is here.
        let offer = {
            let Ok(mut pending) = self.invite_parts.lock() else { return };
            let key = (group.0, *epoch, sender.user_id().0);
            pending.offer(key, *part, *epoch_key, content.clone(), self.ctx.now())
        };
        let parts = match offer {
            Offer::Whole(parts) => parts,
            Offer::Incomplete => return,
            Offer::Full => {
                return warn!(group = %group, "too many group states arriving in parts: dropping one")
            }
            Offer::Contradicts => {
                return warn!(group = %group, "ignoring a group state part that contradicts the others")
            }
        };
        let mut all = Vec::new();
        for c in &parts {
            if let Content::GroupInvite { members, .. } = c {
                all.extend(members.iter().cloned());
            }
        }
        self.adopt_state(from, group, &all, *epoch, epoch_key, parts);
    }

    /// Adopts a whole group state (joins the group, or moves to its new epoch); `parts` is the
    /// state as it arrived, passed on to this user's other devices.
    pub(crate) fn adopt_state(
        &self,
        StateFrom { sender, device, sent_at }: StateFrom<'_>,
        group: &ConversationId,
        members: &[Member],
        epoch: u64,
        epoch_key: &[u8; 32],
        parts: Vec<Content>,
    ) {
        let me = self.ctx.user_id();
        let sender_id = sender.user_id();
        let new_members: Vec<GroupMember> = members.iter().map(state_member).collect();
        let hand_on = parts.iter().find_map(|c| match c {
            Content::GroupInvite { hand_on, .. } => *hand_on,
            _ => None,
        });
        let mut joined = false;
        let store = &self.ctx.store;
        let current = match store.group(&group.0) {
            Ok(g) => g,
            Err(e) => return warn!(group = %group, "cannot read the group: {e}"),
        };
        let state = match (
            rule::adopt(current.as_ref(), &me.0, &sender_id.0, &new_members, epoch),
            current,
        ) {
            (Adopt::Join, _) => {
                // History starts when the state was sent (not when it arrived, which may be
                // minutes later in a large group): catching up then fetches what was posted
                // meanwhile. Only this epoch's messages open with its key.
                // A state handed on: when its first sender sent it (within bounds).
                let first_sent = hand_on.map_or(sent_at, |h| {
                    h.sent_at.clamp(sent_at.saturating_sub(rule::HAND_ON_MAX_AGE_MS), sent_at)
                });
                let joined_at = first_sent.min(self.ctx.now());
                joined = true;
                GroupState::joined(group.0, new_members, epoch, *epoch_key, joined_at)
            }
            (Adopt::Advance, Some(mut g)) => {
                g.members = new_members;
                g.enter_epoch(epoch, *epoch_key, self.ctx.now());
                g.active = true;
                g
            }
            (Adopt::Forbidden, _) => {
                return warn!(group = %group, "ignoring a group change that removes members its sender may not remove");
            }
            (verdict, _) => return debug!(group = %group, ?verdict, "ignoring a group state"),
        };
        if store.put_group(&state).is_err() {
            return;
        }
        info!(group = %group, epoch, "group state updated");
        // The device that sent the state holds the group's messages: catch up from it at once,
        // before finding other members (each a DHT lookup) for the mesh.
        if device != self.ctx.peer_id() {
            self.remember_peer(&state.id, &device);
        }
        let state = store.group(&state.id).ok().flatten().unwrap_or(state);
        let node = self.clone();
        // A member's copy may have missed this user's newest devices: pass it on to them.
        let forward = if sender_id != me { parts } else { Vec::new() };
        self.ctx.spawn(async move {
            node.ctx.store.flush().await.or_warn("cannot flush a group state");
            // Joining a group whose new members hand its state on: on to this one's children,
            // alongside catching up (finding them may take DHT lookups).
            if let (true, Some(h)) = (joined && sender_id != me, hand_on) {
                let (relay, state, parts) = (node.clone(), state.clone(), forward.clone());
                node.ctx.spawn(async move { relay.hand_on(&state, h, &parts).await });
            }
            for content in forward {
                node.messaging.send_to_own(content).await;
            }
            node.release_early(&state).await;
            node.release_waiting(&state).await;
            node.sync_group(&state).await;
            node.join_topic(&state).await;
            // Reload: joining learned the members' devices.
            let state = node.ctx.store.group(&state.id).ok().flatten().unwrap_or(state);
            node.sync_group(&state).await;
        });
    }

    /// At start: listen on every active group, connect to members, catch up; then again every
    /// [`SYNC_INTERVAL`], and when a member device connects (at most every [`SYNC_GAP`]).
    pub(crate) async fn group_task(self) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        loop {
            self.expire_waiting(self.ctx.now());
            let groups = self.ctx.store.groups().or_warn("cannot read the groups");
            for g in groups.unwrap_or_default().into_iter().filter(|g| g.active) {
                // Catch up from the member devices already known first: finding more (a DHT
                // lookup for a member never resolved) must not hold up what the others have.
                let _ = self.ctx.net.subscribe(topic(&ConversationId(g.id)), true).await;
                self.sync_group(&g).await;
                self.connect_members(&g).await;
            }
            // A connection woke this round, and catching up opens connections that wake the
            // members at their other end: at most one round per SYNC_GAP, or a large group
            // keeps every member syncing without pause.
            tokio::time::sleep(SYNC_GAP).await;
            tokio::select! {
                _ = tokio::time::sleep(SYNC_INTERVAL.saturating_sub(SYNC_GAP)) => {}
                _ = self.wake_sync.notified() => {}
            }
        }
    }

    /// Whether `peer` is a known device of a member of an active group.
    pub(crate) fn is_group_peer(&self, peer: &PeerId) -> bool {
        let bytes = peer.to_bytes();
        self.ctx.store.groups_shared().iter().any(|g| g.active && g.peers.contains(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Node;
    use crate::now_ms;

    /// A state of 1,100 members arrives in three parts: nothing is adopted until the last,
    /// a part contradicting the others is dropped, and the whole list is kept in order.
    #[tokio::test]
    async fn a_long_member_list_is_adopted_once_every_part_is_here() {
        use kith_protocol::IdentityKeypair;
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(crate::node::lone_node(dir.path(), false)).await.unwrap();
        let s = node.services().clone();
        let sender = IdentityKeypair::generate(&mut rand::rngs::OsRng).public();
        let member = |user: [u8; 16], identity: [u8; 32], name: String| Member {
            user: UserId(user),
            identity,
            name: Some(name),
        };
        let mut members = vec![
            member(sender.user_id().0, sender.to_bytes(), "sender".into()),
            member(node.user_id().0, s.ctx.keys.identity_public.to_bytes(), "me".into()),
        ];
        for i in 0..1098u32 {
            let mut u = [0u8; 16];
            u[..4].copy_from_slice(&i.to_be_bytes());
            members.push(member(u, [7; 32], format!("m{i}")));
        }
        let group = ConversationId([5; 16]);
        let part = |i: usize, key: [u8; 32]| Content::GroupInvite {
            group,
            title: None,
            members: members.chunks(INVITE_PART_MEMBERS).nth(i).unwrap().to_vec(),
            epoch: 3,
            epoch_key: key,
            part: Some(InvitePart { index: i as u32, count: 3 }),
            hand_on: None,
        };
        for c in [part(2, [1; 32]), part(0, [1; 32]), part(1, [9; 32])] {
            c.validate().unwrap();
            s.groups.on_group_state(&sender, s.ctx.peer_id(), &c, now_ms());
            assert!(s.ctx.store.group(&group.0).unwrap().is_none());
        }
        s.groups.on_group_state(&sender, s.ctx.peer_id(), &part(1, [1; 32]), now_ms());
        let g = s.ctx.store.group(&group.0).unwrap().expect("adopted");
        assert_eq!(g.members.len(), 1100);
        assert_eq!(g.members[1099].name.as_deref(), Some("m1097"));
        assert_eq!(g.epoch, 3);
        assert!(s.groups.invite_parts.lock().unwrap().is_empty());
        node.shutdown().await.unwrap();
    }

    /// A message of an epoch whose key has not arrived is held, and stored once the state of
    /// that epoch arrives (a rekey's messages can overtake its key).
    #[tokio::test]
    async fn a_message_ahead_of_its_key_is_stored_when_the_key_arrives() {
        let j = Joined::start().await;
        let s = j.node.services().clone();
        let (id, env) = j.sealed(2, [2; 32], 1, "ahead of its key");
        assert_eq!(s.groups.on_gossip(&env).await, Verdict::Ignore);
        assert!(s.ctx.store.message(&id.0).unwrap().is_none());
        assert_eq!(s.groups.early.lock().unwrap().len(), 1);
        let from = j.device.peer_id();
        s.groups.on_group_state(&j.sender.public(), from, &j.state(2, [2; 32]), now_ms());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.ctx.store.message(&id.0).unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(s.groups.early.lock().unwrap().is_empty());
        j.node.shutdown().await.unwrap();
    }

    /// A lone node that is a member of group `[7; 16]` (epoch 1, key `[1; 32]`) with one other
    /// user, whose device seals messages to it.
    struct Joined {
        node: Node,
        sender: kith_protocol::identity::IdentityKeypair,
        device: kith_protocol::identity::DeviceKeypair,
        cert: kith_protocol::identity::DeviceCertificate,
        group: ConversationId,
        _dir: tempfile::TempDir,
    }

    impl Joined {
        async fn start() -> Joined {
            use kith_protocol::identity::{DeviceCertificate, DeviceKeypair, IdentityKeypair};
            use kith_protocol::X25519Secret;
            let dir = tempfile::tempdir().unwrap();
            let node = Node::start(crate::node::lone_node(dir.path(), false)).await.unwrap();
            let s = node.services().clone();
            let rng = &mut rand::rngs::OsRng;
            let sender = IdentityKeypair::generate(rng);
            let device = DeviceKeypair::generate(rng);
            let cert = DeviceCertificate::issue(
                &sender,
                &device,
                &X25519Secret::generate(rng),
                1,
                "phone",
            );
            let group = ConversationId([7; 16]);
            let j = Joined { node, sender, device, cert, group, _dir: dir };
            let from = j.device.peer_id();
            s.groups.on_group_state(&j.sender.public(), from, &j.state(1, [1; 32]), now_ms());
            j
        }

        /// The group's state at `epoch` with `key`, as the other user sends it.
        fn state(&self, epoch: u64, key: [u8; 32]) -> Content {
            let member = |user: UserId, identity: [u8; 32]| Member { user, identity, name: None };
            let s = self.node.services();
            let members = vec![
                member(self.sender.public().user_id(), self.sender.public().to_bytes()),
                member(self.node.user_id(), s.ctx.keys.identity_public.to_bytes()),
            ];
            Content::GroupInvite {
                group: self.group,
                title: None,
                members,
                epoch,
                epoch_key: key,
                part: None,
                hand_on: None,
            }
        }

        /// The other device's message number `seq` saying `body`, sealed (epoch 1).
        fn envelope(&self, seq: u64, body: &str) -> Vec<u8> {
            self.sealed(1, [1; 32], seq, body).1
        }

        /// The other device's message number `seq` saying `body`, sealed for `epoch` with `key`.
        fn sealed(
            &self,
            epoch: u64,
            key: [u8; 32],
            seq: u64,
            body: &str,
        ) -> (kith_protocol::MessageId, Vec<u8>) {
            use kith_protocol::group::GroupEnvelope;
            use kith_protocol::{Message, MessageId, Text, VERSION};
            let message = Message {
                v: VERSION,
                id: MessageId::random(&mut rand::rngs::OsRng),
                conversation: self.group,
                sender: self.sender.public().user_id(),
                sent_at: now_ms(),
                content: Content::Text(Text { body: body.into() }),
            };
            let pair = (&self.cert, &self.device);
            let env =
                GroupEnvelope::seal(&mut rand::rngs::OsRng, &key, epoch, pair, Some(seq), &message)
                    .unwrap();
            (message.id, env.to_bytes())
        }

        fn missing(&self) -> Option<u64> {
            let all = self.node.services().conversations.conversations().unwrap();
            all.into_iter().find(|c| c.kind == "group").and_then(|c| c.missing)
        }
    }

    /// A sync answer leaves out what the asker says it holds; an envelope stored once is
    /// dropped unopened when it comes again.
    #[tokio::test]
    async fn a_sync_answer_leaves_out_what_the_asker_holds() {
        use kith_protocol::group::{envelope_digest, SyncRequest};
        use kith_protocol::VERSION;
        let j = Joined::start().await;
        let s = j.node.services().clone();
        let mut envelopes = Vec::new();
        for (seq, body) in [(1, "one"), (2, "two")] {
            let bytes = j.envelope(seq, body);
            assert_eq!(s.groups.on_gossip(&bytes).await, Verdict::Accept);
            envelopes.push(bytes);
        }
        assert!(s.groups.seen.lock().unwrap().contains(&envelope_digest(&envelopes[0])));
        assert_eq!(s.groups.on_gossip(&envelopes[0]).await, Verdict::Ignore, "seen before");
        let ask = |known: Vec<u8>| {
            let req =
                SyncRequest { v: VERSION, group: j.group, since: 0, cert: j.cert.clone(), known };
            s.groups.answer_sync(j.device.peer_id(), &req.to_bytes())
        };
        assert_eq!(ask(Vec::new()).envelopes.len(), 2);
        let answer = ask(envelope_digest(&envelopes[0]).to_vec());
        assert_eq!(answer.envelopes.len(), 1);
        assert_eq!(answer.envelopes[0].as_ref(), envelopes[1].as_slice());
        assert!(!answer.more);
        let both: Vec<u8> = envelopes.iter().flat_map(|e| envelope_digest(e)).collect();
        assert!(ask(both).envelopes.is_empty());
        j.node.shutdown().await.unwrap();
    }

    /// A member proves the messages of a device it lacks by the numbers around them, however
    /// they arrive (gossip or sync), and the count survives a restart.
    #[tokio::test]
    async fn a_member_counts_the_messages_it_can_prove_missing() {
        let j = Joined::start().await;
        let s = j.node.services().clone();
        assert_eq!(j.missing(), Some(0));
        for seq in [1, 4, 6] {
            assert_eq!(s.groups.on_gossip(&j.envelope(seq, "x")).await, Verdict::Accept);
        }
        assert_eq!(j.missing(), Some(3), "2, 3 and 5");
        let third = j.envelope(3, "three");
        assert!(matches!(s.groups.accept_group_envelope(&third, true), Ok(Some(_))));
        assert_eq!(j.missing(), Some(2));
        // The same message again changes nothing.
        assert!(!matches!(s.groups.accept_group_envelope(&third, true), Ok(Some(_))));
        assert_eq!(j.missing(), Some(2));
        s.ctx.store.flush().await.unwrap();
        drop(s);
        let Joined { node, sender, device, cert, group, _dir } = j;
        node.shutdown().await.unwrap();
        drop(node);
        let node = Node::start(crate::node::lone_node_again(_dir.path(), false)).await.unwrap();
        let j = Joined { node, sender, device, cert, group, _dir };
        assert_eq!(j.missing(), Some(2), "kept across a restart");
        for seq in [2, 5] {
            let s = j.node.services().clone();
            assert_eq!(s.groups.on_gossip(&j.envelope(seq, "late")).await, Verdict::Accept);
        }
        assert_eq!(j.missing(), Some(0));
        j.node.shutdown().await.unwrap();
    }
}
