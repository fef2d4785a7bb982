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

use std::collections::HashSet;

use kith_protocol::group::{topic, GroupEnvelope, SyncRequest, SyncResponse, MAX_SYNC_RESPONSE};
use kith_protocol::message::{InvitePart, Member};
use kith_protocol::{
    normalize_name, Content, ConversationId, IdentityPublic, Message, MessageId, Text, UserId,
    VerifiedNameRecord, VERSION,
};
use libp2p::PeerId;
use rand::RngCore;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::error::{NodeError, OrWarn};
use crate::network::Verdict;
use crate::node::{MessageView, NewMessage, Node, NodeEvent};
use crate::now_ms;
use crate::rules::group::{self as rule, key_of, Adopt, Offer};
use crate::store::{Direction, GroupMember, GroupState, Status, StoredMessage};

/// Most member devices a node keeps connections to, per group, for the gossipsub mesh.
pub const MESH_DIALS: usize = 8;
pub use crate::rules::group::{EPOCH_GRACE_MS, INVITE_PARTS_TTL_MS, MAX_PENDING_INVITES};
/// Most member devices a group remembers.
pub const MAX_GROUP_PEERS: usize = 256;
/// Most member devices asked for missed messages per sync round.
pub const SYNC_PEERS: usize = 4;
/// Members per `group.invite` part: a longer member list is split (about 80 bytes a member,
/// so a part stays well under the 60 KiB message limit).
pub const INVITE_PART_MEMBERS: usize = 512;
/// Most members of a group: what [`kith_protocol::message::MAX_INVITE_PARTS`] parts hold.
pub const MAX_GROUP_MEMBERS: usize =
    INVITE_PART_MEMBERS * kith_protocol::message::MAX_INVITE_PARTS as usize;
/// Names resolved at once when forming or changing a group.
pub const RESOLVE_CONCURRENCY: usize = 16;

/// A conversation as the API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ConversationView {
    /// Conversation id.
    pub id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// Members: names when known, else user ids.
    pub members: Vec<String>,
    /// For a group: whether this user is still a member.
    pub active: bool,
}

fn too_many(members: usize) -> Result<(), NodeError> {
    if members > MAX_GROUP_MEMBERS {
        return Err(NodeError::NotAllowed(format!(
            "a group has at most {MAX_GROUP_MEMBERS} members, not {members}"
        )));
    }
    Ok(())
}

/// A conversation named by the user: `@name` or `#id-prefix`.
#[derive(Clone, Debug)]
pub enum Target {
    /// A direct chat with this name.
    Direct(String),
    /// A group.
    Group([u8; 16]),
}

/// Names mentioned in a text (`@name`, normalized; invalid ones are skipped).
pub fn mentions(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let Some(rest) = word.strip_prefix('@') else { continue };
        let rest =
            rest.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        if let Ok(n) = normalize_name(rest) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
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

impl Node {
    /// Parses `@name` or `#id-prefix` (a unique prefix of a conversation id).
    pub fn target(&self, to: &str) -> Result<Target, NodeError> {
        let to = to.trim();
        let Some(prefix) = to.strip_prefix('#') else {
            return Ok(Target::Direct(normalize_name(to.trim_start_matches('@'))?));
        };
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() {
            return Err(NodeError::NotFound("empty conversation id".into()));
        }
        let found: Vec<ConversationView> =
            self.conversations()?.into_iter().filter(|c| c.id.starts_with(&prefix)).collect();
        match found.as_slice() {
            [one] if one.kind == "group" => Ok(Target::Group(
                ConversationId::parse(&one.id).map_err(|e| NodeError::NotFound(e.to_string()))?.0,
            )),
            [one] => Ok(Target::Direct(
                one.members
                    .iter()
                    .find(|m| Some(m.as_str()) != self.name().as_deref())
                    .cloned()
                    .unwrap_or_default(),
            )),
            [] => Err(NodeError::NotFound(format!("no conversation starts with #{prefix}"))),
            _ => Err(NodeError::NotFound(format!(
                "#{prefix} matches {} conversations; give more digits",
                found.len()
            ))),
        }
    }

    /// Direct conversations (one per contact) and groups.
    pub fn conversations(&self) -> Result<Vec<ConversationView>, NodeError> {
        let me = self.user_id();
        let my_name = self.name().unwrap_or_else(|| me.to_string());
        let mut out: Vec<ConversationView> = self
            .inner
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.user_id != me.0)
            .map(|c| ConversationView {
                id: ConversationId::direct(&me, &UserId(c.user_id)).to_string(),
                kind: "direct",
                members: vec![my_name.clone(), c.name],
                active: true,
            })
            .collect();
        for g in self.inner.store.groups()? {
            out.push(ConversationView {
                id: ConversationId(g.id).to_string(),
                kind: "group",
                members: g
                    .members
                    .iter()
                    .map(|m| m.name.clone().unwrap_or_else(|| UserId(m.user).to_string()))
                    .collect(),
                active: g.active,
            });
        }
        Ok(out)
    }

    /// The members of a conversation.
    pub fn members(&self, to: &str) -> Result<Vec<String>, NodeError> {
        let id = match self.target(to)? {
            Target::Group(id) => id,
            Target::Direct(name) => {
                return Ok(vec![self.name().unwrap_or_else(|| self.user_id().to_string()), name]);
            }
        };
        let g = self.group_state(&id)?;
        Ok(g.members
            .iter()
            .map(|m| m.name.clone().unwrap_or_else(|| UserId(m.user).to_string()))
            .collect())
    }

    fn group_state(&self, id: &[u8; 16]) -> Result<GroupState, NodeError> {
        self.inner
            .store
            .group(id)?
            .ok_or_else(|| NodeError::NotFound(format!("group {}", ConversationId(*id))))
    }

    /// Sends `text` to `@name` or `#id`. In a direct chat, mentioning people who are not in it
    /// forms a group; in a group, it adds them.
    pub async fn send_to(&self, to: &str, text: &str) -> Result<MessageView, NodeError> {
        let named = mentions(text);
        match self.target(to)? {
            Target::Direct(name) => {
                let me = self.name();
                let others: Vec<String> =
                    named.into_iter().filter(|n| *n != name && Some(n) != me.as_ref()).collect();
                let mut invited = Vec::new();
                for (n, r) in self.resolve_many(others).await {
                    match r {
                        Ok(r) if r.user_id != self.user_id() => invited.push(r),
                        Ok(_) => {}
                        Err(e) => debug!(name = %n, "mention does not resolve: {e}"),
                    }
                }
                if invited.is_empty() {
                    return self.send_text(&name, text).await;
                }
                let peer = self.resolve_record(&name).await?;
                let g = self.form_group(&peer, &invited).await?;
                self.post(&g, Content::Text(Text { body: text.to_owned() })).await
            }
            Target::Group(id) => {
                let mut g = self.group_state(&id)?;
                if !g.active {
                    return Err(NodeError::NotAllowed(
                        "you are no longer a member of this group".into(),
                    ));
                }
                let mut new = Vec::new();
                let named: Vec<String> = named
                    .into_iter()
                    .filter(|n| !g.members.iter().any(|m| m.name.as_deref() == Some(n.as_str())))
                    .collect();
                for (n, r) in self.resolve_many(named).await {
                    match r {
                        Ok(r) if !g.members.iter().any(|m| m.user == r.user_id.0) => new.push(r),
                        Ok(_) => {}
                        Err(e) => debug!(name = %n, "mention does not resolve: {e}"),
                    }
                }
                if !new.is_empty() {
                    g = self.change_members(g, &new, &[]).await?;
                }
                self.post(&g, Content::Text(Text { body: text.to_owned() })).await
            }
        }
    }

    async fn form_group(
        &self,
        peer: &VerifiedNameRecord,
        invited: &[VerifiedNameRecord],
    ) -> Result<GroupState, NodeError> {
        let me = GroupMember {
            user: self.user_id().0,
            identity: self.inner.keys.identity_public.to_bytes(),
            name: self.name(),
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
            now_ms(),
        );
        self.inner.store.put_group(&g)?;
        self.inner.store.flush().await?;
        info!(group = %ConversationId(g.id), members = g.members.len(), "formed a group");
        self.join_topic(&g).await;
        self.send_state(&g, &g.members, invited.iter().chain([peer])).await;
        Ok(g)
    }

    /// Starts a new epoch with `added` in and `removed` out, and sends the new state to every
    /// remaining member in sealed direct messages.
    async fn change_members(
        &self,
        mut g: GroupState,
        added: &[VerifiedNameRecord],
        removed: &[[u8; 16]],
    ) -> Result<GroupState, NodeError> {
        g.members.retain(|m| !removed.contains(&m.user));
        too_many(g.members.len() + added.len())?;
        g.members.extend(added.iter().map(member_of));
        g.leaving.retain(|l| !removed.iter().any(|r| r.as_slice() == l.as_slice()));
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        g.enter_epoch(g.epoch + 1, key, now_ms());
        self.inner.store.put_group(&g)?;
        self.inner.store.flush().await?;
        self.send_state(&g, &g.members, added).await;
        Ok(g)
    }

    /// Starts a new epoch with the same members (after a device of this user was revoked).
    pub(crate) async fn rekey(&self, g: GroupState) -> Result<GroupState, NodeError> {
        self.change_members(g, &[], &[]).await
    }

    /// Sends the group's current state and key to `to` (except this user), sealed, and to this
    /// user's other devices. Members with a record in `known` (resolved moments ago, when they
    /// were mentioned) are not resolved again: forming a group of hundreds would otherwise cost
    /// every lookup twice.
    async fn send_state<'a>(
        &self,
        g: &GroupState,
        to: &[GroupMember],
        known: impl IntoIterator<Item = &'a VerifiedNameRecord>,
    ) {
        let Some(key) = key_of(g, g.epoch) else { return };
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
            })
            .collect();
        let me = self.user_id().0;
        let identities: std::collections::HashMap<&str, [u8; 32]> =
            to.iter().filter_map(|m| m.name.as_deref().map(|n| (n, m.identity))).collect();
        let mut records: Vec<(String, Result<VerifiedNameRecord, NodeError>)> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let known: std::collections::HashMap<&str, &VerifiedNameRecord> =
            known.into_iter().map(|r| (r.name.as_str(), r)).collect();
        for m in to.iter().filter(|m| m.user != me) {
            let Some(name) = m.name.clone() else { continue };
            match known.get(name.as_str()).filter(|r| r.user_id.0 == m.user) {
                Some(r) => records.push((name, Ok((*r).clone()))),
                None => names.push(name),
            }
        }
        records.extend(self.resolve_many(names).await);
        for (name, r) in records {
            let Some(identity) = identities.get(name.as_str()) else { continue };
            match r {
                Ok(r) if r.identity.to_bytes() == *identity => {
                    for content in &parts {
                        if let Err(e) = self.queue(&r, content.clone(), false).await {
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
        for content in parts {
            self.send_to_own(content).await;
        }
    }

    /// Resolves names [`RESOLVE_CONCURRENCY`] at a time (a group of hundreds would otherwise
    /// wait for hundreds of DHT lookups in a row), in the order given.
    async fn resolve_many(
        &self,
        names: Vec<String>,
    ) -> Vec<(String, Result<VerifiedNameRecord, NodeError>)> {
        use futures::StreamExt;
        futures::stream::iter(names)
            .map(|n| async move {
                let r = self.resolve_record(&n).await;
                (n, r)
            })
            .buffered(RESOLVE_CONCURRENCY)
            .collect()
            .await
    }

    /// Seals, stores and publishes a message to the group.
    async fn post(&self, g: &GroupState, content: Content) -> Result<MessageView, NodeError> {
        let key = key_of(g, g.epoch)
            .ok_or_else(|| NodeError::Internal("no key for the current epoch".into()))?;
        let message = Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId(g.id),
            sender: self.user_id(),
            sent_at: self.next_sent_at(),
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        let env = GroupEnvelope::seal(
            &mut rand::rngs::OsRng,
            &key,
            g.epoch,
            &self.inner.keys.cert,
            &self.inner.keys.device,
            &message,
        )
        .map_err(|e| NodeError::Internal(format!("cannot seal a group message: {e}")))?;
        let bytes = env.to_bytes();
        let stored = self.group_stored(&message, Direction::Out, bytes.clone());
        self.inner.store.insert_incoming(&stored)?;
        self.inner.store.flush().await?;
        let view = self.view_of(&stored)?;
        let _ = self.inner.events.send(NodeEvent::Message(view.clone()));
        self.inner.counters.messages_sent.inc();
        // Members not reachable now get it when they sync.
        if let Ok(Err(e)) = self.inner.net.publish(topic(&ConversationId(g.id)), bytes).await {
            debug!("group message not published now ({e}); members will sync it");
        }
        Ok(view)
    }

    fn group_stored(&self, m: &Message, direction: Direction, raw: Vec<u8>) -> StoredMessage {
        let status = if direction == Direction::Out { Status::Sent } else { Status::Received };
        StoredMessage::of(m, direction, m.conversation.0, status, raw)
    }

    /// Leaves a group: tells the members, forgets the key, stops listening.
    pub async fn leave(&self, to: &str) -> Result<(), NodeError> {
        let Target::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("only groups can be left".into()));
        };
        let mut g = self.group_state(&id)?;
        if !g.active {
            return Err(NodeError::NotAllowed("you already left this group".into()));
        }
        self.post(&g, Content::GroupLeave { group: ConversationId(id) }).await?;
        g.active = false;
        self.inner.store.put_group(&g)?;
        self.inner.store.flush().await?;
        let _ = self.inner.net.subscribe(topic(&ConversationId(id)), false).await;
        Ok(())
    }

    /// Removes `@name` from a group (allowed for members who joined after you).
    pub async fn remove_member(&self, to: &str, name: &str) -> Result<(), NodeError> {
        let Target::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("only group members can be removed".into()));
        };
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
        if !rule::may_remove(&g.members, &self.user_id().0, &user) {
            return Err(NodeError::NotAllowed(format!(
                "you may remove only members who joined after you; {name} joined before you"
            )));
        }
        self.post(&g, Content::GroupRemove { group: ConversationId(id), user: UserId(user) })
            .await?;
        self.change_members(g, &[], &[user]).await?;
        Ok(())
    }

    async fn join_topic(&self, g: &GroupState) {
        let _ = self.inner.net.subscribe(topic(&ConversationId(g.id)), true).await;
        self.connect_members(g).await;
    }

    /// Connects to some member devices so the gossipsub mesh of the group can form.
    async fn connect_members(&self, g: &GroupState) {
        let mut dialed = 0;
        for m in &g.members {
            if dialed >= MESH_DIALS || m.user == self.user_id().0 {
                continue;
            }
            let Some(name) = &m.name else { continue };
            if let Ok(r) = self.resolve_record(name).await {
                for d in r.devices.iter().take(1) {
                    let _ = self.inner.net.dial_peer(d.device.peer_id).await;
                    self.remember_peer(&g.id, &d.device.peer_id);
                    dialed += 1;
                }
            }
        }
    }

    fn remember_peer(&self, id: &[u8; 16], peer: &PeerId) {
        if let Ok(Some(mut g)) = self.inner.store.group(id) {
            let bytes = peer.to_bytes();
            // Bounded: member devices beyond this are found again through the DHT.
            if !g.peers.contains(&bytes) && g.peers.len() < MAX_GROUP_PEERS {
                g.peers.push(bytes);
                self.inner.store.put_group(&g).or_warn("cannot save a group");
            }
        }
    }

    /// A sealed `group.invite` arrived from `sender`: join the group, or move to its new epoch.
    pub(crate) fn on_group_state(&self, sender: &IdentityPublic, content: &Content) {
        let Content::GroupInvite { group, members, epoch, epoch_key, part, .. } = content else {
            return;
        };
        let Some(part) = part else {
            self.adopt_state(sender, group, members, *epoch, epoch_key, vec![content.clone()]);
            return;
        };
        // One part of a long member list: keep it until every part of this state is here.
        let offer = {
            let Ok(mut pending) = self.inner.invite_parts.lock() else { return };
            let key = (group.0, *epoch, sender.user_id().0);
            pending.offer(key, *part, *epoch_key, content.clone(), now_ms())
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
        self.adopt_state(sender, group, &all, *epoch, epoch_key, parts);
    }

    /// Adopts a whole group state (joins the group, or moves to its new epoch); `parts` is the
    /// state as it arrived, passed on to this user's other devices.
    fn adopt_state(
        &self,
        sender: &IdentityPublic,
        group: &ConversationId,
        members: &[Member],
        epoch: u64,
        epoch_key: &[u8; 32],
        parts: Vec<Content>,
    ) {
        let me = self.user_id();
        let sender_id = sender.user_id();
        let new_members: Vec<GroupMember> = members.iter().map(state_member).collect();
        let store = &self.inner.store;
        let current = match store.group(&group.0) {
            Ok(g) => g,
            Err(e) => return warn!(group = %group, "cannot read the group: {e}"),
        };
        let state = match (
            rule::adopt(current.as_ref(), &me.0, &sender_id.0, &new_members, epoch),
            current,
        ) {
            (Adopt::Join, _) => {
                GroupState::joined(group.0, new_members, epoch, *epoch_key, now_ms())
            }
            (Adopt::Advance, Some(mut g)) => {
                g.members = new_members;
                g.enter_epoch(epoch, *epoch_key, now_ms());
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
        let node = self.clone();
        // A member's copy may have missed this user's newest devices: pass it on to them.
        let forward = if sender_id != me { parts } else { Vec::new() };
        self.spawn(async move {
            node.inner.store.flush().await.or_warn("cannot flush a group state");
            for content in forward {
                node.send_to_own(content).await;
            }
            node.join_topic(&state).await;
            // Reload: joining learned the members' devices.
            let state = node.inner.store.group(&state.id).ok().flatten().unwrap_or(state);
            node.sync_group(&state).await;
        });
    }

    /// Judges a message from a group topic, stores it if valid.
    pub(crate) async fn on_gossip(&self, data: &[u8]) -> Verdict {
        match self.accept_group_envelope(data, false) {
            Ok(Some(m)) => {
                if self.inner.store.flush().await.is_err() {
                    return Verdict::Ignore;
                }
                let _ = self.inner.events.send(NodeEvent::Message(m.view.clone()));
                self.inner.counters.messages_received.inc();
                Verdict::Accept
            }
            Ok(None) => Verdict::Ignore,
            Err(v) => {
                if v == Verdict::Reject {
                    self.inner.counters.envelopes_rejected.inc();
                }
                v
            }
        }
    }

    /// Validates and stores a group envelope. `Ok(None)`: a duplicate. `Err`: the verdict.
    pub(crate) fn accept_group_envelope(
        &self,
        data: &[u8],
        synced: bool,
    ) -> Result<Option<Box<NewMessage>>, Verdict> {
        let env = GroupEnvelope::from_bytes(data).map_err(|_| Verdict::Reject)?;
        let store = &self.inner.store;
        let Ok(Some(mut g)) = store.group(&env.group.0) else { return Err(Verdict::Ignore) };
        let key = rule::epoch_key(&g, env.epoch).map_err(verdict)?;
        let opened = env.open(&key).map_err(|e| {
            debug!("rejected a group message: {e}");
            Verdict::Reject
        })?;
        let m = &opened.message;
        rule::sender_allowed(&g, env.epoch, &m.sender.0, m.sent_at, now_ms(), synced).map_err(
            |d| {
                debug!("rejected a group message from a non-member or in a closed epoch");
                verdict(d)
            },
        )?;
        if matches!(store.message(&m.id.0), Ok(Some(_))) {
            return Err(Verdict::Ignore);
        }
        let me = self.user_id();
        let direction = if m.sender == me { Direction::Out } else { Direction::In };
        let stored = self.group_stored(m, direction, data.to_vec());
        match store.insert_incoming(&stored) {
            Ok(true) => {}
            Ok(false) => return Err(Verdict::Ignore),
            Err(_) => return Err(Verdict::Ignore),
        }
        // Membership control messages, signed by their sender inside the ciphertext.
        match &m.content {
            Content::GroupLeave { .. } => {
                g.leaving.push(m.sender.0.to_vec());
                store.put_group(&g).or_warn("cannot record a leave");
                self.rekey_after_leave(g.clone());
            }
            Content::GroupRemove { user, .. }
                if *user == me && rule::may_remove(&g.members, &m.sender.0, &me.0) =>
            {
                g.active = false;
                store.put_group(&g).or_warn("cannot record a removal");
                let net = self.inner.net.clone();
                let t = topic(&env.group);
                self.spawn(async move {
                    let _ = net.subscribe(t, false).await;
                });
            }
            _ => {}
        }
        self.remember_peer(&g.id, &opened.sender.peer_id);
        let view = self.view_of(&stored).map_err(|_| Verdict::Ignore)?;
        Ok(Some(Box::new(NewMessage {
            view,
            id: m.id,
            sent_at: m.sent_at,
            sender: opened.sender.identity,
            known: true,
            sender_name: None,
        })))
    }

    /// After a member announced its leave, the remaining member with the lowest user id starts
    /// a new epoch without it.
    fn rekey_after_leave(&self, g: GroupState) {
        if rule::rekeyer(&g) != Some(self.user_id().0) {
            return;
        }
        let leaving = rule::leaving(&g);
        let node = self.clone();
        self.spawn(async move {
            if let Err(e) = node.change_members(g, &[], &leaving).await {
                warn!("rekeying after a leave failed: {e}");
            }
        });
    }

    /// Answers a sync request from a member device.
    pub(crate) fn answer_sync(&self, peer: PeerId, bytes: &[u8]) -> SyncResponse {
        let empty = SyncResponse { v: VERSION, envelopes: Vec::new(), more: false };
        let Ok(req) = SyncRequest::from_bytes(bytes) else { return empty };
        let Ok(cert) = req.cert.verify(None) else { return empty };
        if cert.peer_id != peer {
            return empty;
        }
        let Ok(Some(g)) = self.inner.store.group(&req.group.0) else { return empty };
        if !g.members.iter().any(|m| m.user == cert.identity.user_id().0) {
            return empty;
        }
        let Ok(msgs) = self.inner.store.messages_since(&req.group.0, req.since, 4096) else {
            return empty;
        };
        let mut size = 0;
        let mut envelopes = Vec::new();
        for m in msgs {
            if size + m.raw.len() + 64 > MAX_SYNC_RESPONSE - 1024 {
                return SyncResponse { v: VERSION, envelopes, more: true };
            }
            size += m.raw.len() + 16;
            envelopes.push(serde_bytes::ByteBuf::from(m.raw));
        }
        SyncResponse { v: VERSION, envelopes, more: false }
    }

    /// Asks some member devices for group messages this device missed; stores each once.
    pub(crate) async fn sync_group(&self, g: &GroupState) {
        if !g.active {
            return;
        }
        let mut fresh = 0;
        let peers: Vec<PeerId> = g
            .peers
            .iter()
            .filter_map(|p| PeerId::from_bytes(p).ok())
            .filter(|p| *p != self.peer_id())
            .take(SYNC_PEERS)
            .collect();
        for peer in peers {
            let mut since = g.joined_at.saturating_sub(60_000);
            loop {
                let req = SyncRequest {
                    v: VERSION,
                    group: ConversationId(g.id),
                    since,
                    cert: self.inner.keys.cert.clone(),
                };
                let Ok(Ok(answer)) = self.inner.net.sync_request(peer, req.to_bytes()).await else {
                    break;
                };
                let Ok(resp) = SyncResponse::from_bytes(&answer) else { break };
                let mut last = since;
                for e in &resp.envelopes {
                    if let Ok(Some(m)) = self.accept_group_envelope(e, true) {
                        fresh += 1;
                        last = last.max(m.sent_at);
                        let _ = self.inner.events.send(NodeEvent::Message(m.view));
                    }
                }
                if !resp.more || resp.envelopes.is_empty() || last <= since {
                    break;
                }
                since = last;
            }
        }
        if fresh > 0 {
            self.inner.store.flush().await.or_warn("cannot flush synced messages");
            info!(group = %ConversationId(g.id), fresh, "caught up on group messages");
        }
    }

    /// At start: listen on every active group, connect to members, catch up; then again every
    /// few minutes and when woken.
    pub(crate) async fn group_task(self) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        loop {
            let groups = self.inner.store.groups().or_warn("cannot read the groups");
            for g in groups.unwrap_or_default().into_iter().filter(|g| g.active) {
                self.join_topic(&g).await;
                let g = self.inner.store.group(&g.id).ok().flatten().unwrap_or(g);
                self.sync_group(&g).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(120)) => {}
                _ = self.inner.wake_sync.notified() => {}
            }
        }
    }

    /// The stored group envelopes (ciphertext, as published) of a group, oldest first.
    pub fn group_envelopes(&self, to: &str, limit: usize) -> Result<Vec<Vec<u8>>, NodeError> {
        let Target::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("not a group".into()));
        };
        Ok(self.inner.store.messages(Some(&id), limit)?.into_iter().map(|m| m.raw).collect())
    }

    /// Whether `peer` is a known device of a member of an active group.
    pub(crate) fn is_group_peer(&self, peer: &PeerId) -> bool {
        let bytes = peer.to_bytes();
        let known: HashSet<Vec<u8>> = self
            .inner
            .store
            .groups()
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g.active)
            .flat_map(|g| g.peers)
            .collect();
        known.contains(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_and_normalized() {
        assert_eq!(
            mentions("hi @Carol, meet @dave! and @bob@x @ab"),
            vec!["carol".to_owned(), "dave".to_owned()]
        );
        assert!(mentions("no mentions here").is_empty());
    }

    /// A state of 1,100 members arrives in three parts: nothing is adopted until the last,
    /// a part contradicting the others is dropped, and the whole list is kept in order.
    #[tokio::test]
    async fn a_long_member_list_is_adopted_once_every_part_is_here() {
        use kith_protocol::IdentityKeypair;
        let dir = tempfile::tempdir().unwrap();
        crate::home::Home::new(dir.path()).init("test", now_ms()).unwrap();
        let node = Node::start(crate::NodeConfig {
            home: dir.path().to_path_buf(),
            transport: crate::network::TransportKind::Memory,
            listen: vec!["/memory/0".parse().unwrap()],
            bootstrap: vec![],
            pow_bits: 8,
            mailbox: crate::mailbox::MailboxConfig::default(),
        })
        .await
        .unwrap();
        let sender = IdentityKeypair::generate(&mut rand::rngs::OsRng).public();
        let member = |user: [u8; 16], identity: [u8; 32], name: String| Member {
            user: UserId(user),
            identity,
            name: Some(name),
        };
        let mut members = vec![
            member(sender.user_id().0, sender.to_bytes(), "sender".into()),
            member(node.user_id().0, node.inner.keys.identity_public.to_bytes(), "me".into()),
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
        };
        for c in [part(2, [1; 32]), part(0, [1; 32]), part(1, [9; 32])] {
            c.validate().unwrap();
            node.on_group_state(&sender, &c);
            assert!(node.inner.store.group(&group.0).unwrap().is_none());
        }
        node.on_group_state(&sender, &part(1, [1; 32]));
        let g = node.inner.store.group(&group.0).unwrap().expect("adopted");
        assert_eq!(g.members.len(), 1100);
        assert_eq!(g.members[1099].name.as_deref(), Some("m1097"));
        assert_eq!(g.epoch, 3);
        assert!(node.inner.invite_parts.lock().unwrap().is_empty());
        node.shutdown().await.unwrap();
    }
}
