//! A group's messages in: judging and storing what arrives on its topic, answering and asking
//! for missed messages (`/kith/sync/1`), and rekeying after a leave.

use kith_protocol::group::{
    envelope_digest, topic, GroupEnvelope, SyncRequest, SyncResponse, MAX_SYNC_KNOWN,
    MAX_SYNC_RESPONSE,
};
use kith_protocol::{Content, ConversationId, VERSION};
use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::{verdict, Groups, SYNC_PEERS};
use crate::error::OrWarn;
use crate::network::Verdict;
use crate::rules::group::{self as rule};
use crate::store::{Direction, GroupState, Status};
use crate::views::NewMessage;
use crate::views::{self, NodeEvent};

impl Groups {
    /// Judges a message from a group topic, stores it if valid, flushes, announces it (the
    /// inbound task does the same in batches).
    #[cfg(test)]
    pub(crate) async fn on_gossip(&self, data: &[u8]) -> Verdict {
        let (verdict, fresh) = self.accept_gossip(data);
        if let Some(m) = fresh {
            if self.ctx.store.flush().await.is_err() {
                return Verdict::Ignore;
            }
            self.announce_gossip(m);
        }
        verdict
    }

    /// Judges and stores a gossiped group message, without flushing: the verdict lets
    /// gossipsub forward it at once (no other node waits for this one's disk; a member that
    /// loses it in a crash gets it again by sync, its gap proven by the sender's numbers). The
    /// new message, to announce once a flush covers it ([`Groups::announce_gossip`]).
    pub(crate) fn accept_gossip(&self, data: &[u8]) -> (Verdict, Option<Box<NewMessage>>) {
        match self.accept_group_envelope(data, false) {
            Ok(Some(m)) => (Verdict::Accept, Some(m)),
            Ok(None) => (Verdict::Ignore, None),
            Err(v) => {
                if v == Verdict::Reject {
                    self.ctx.counters.envelopes_rejected.inc();
                }
                (v, None)
            }
        }
    }

    /// Tells subscribers of a gossiped message stored and flushed.
    pub(crate) fn announce_gossip(&self, m: Box<NewMessage>) {
        let _ = self.ctx.events.send(NodeEvent::Message(m.view));
        self.ctx.counters.messages_received.inc();
    }

    /// The group reached `g.epoch`: judges and stores the messages that arrived before its key.
    pub(crate) async fn release_early(&self, g: &GroupState) {
        let held = match self.early.lock() {
            Ok(mut early) => early.release(&g.id, g.epoch),
            Err(_) => return,
        };
        let mut fresh = Vec::new();
        for envelope in held {
            if let Ok(Some(m)) = self.accept_group_envelope(&envelope, false) {
                fresh.push(m);
            }
        }
        if fresh.is_empty() {
            return;
        }
        if let Err(e) = self.ctx.store.flush().await {
            return warn!("cannot flush group messages that arrived before their key: {e}");
        }
        info!(group = %ConversationId(g.id), n = fresh.len(), "stored messages that came before their key");
        for m in fresh {
            let _ = self.ctx.events.send(NodeEvent::Message(m.view));
            self.ctx.counters.messages_received.inc();
        }
    }

    /// Validates and stores a group envelope. `Ok(None)`: a duplicate. `Err`: the verdict.
    pub(crate) fn accept_group_envelope(
        &self,
        data: &[u8],
        synced: bool,
    ) -> Result<Option<Box<NewMessage>>, Verdict> {
        let digest = envelope_digest(data);
        if self.seen.lock().is_ok_and(|s| s.contains(&digest)) {
            return Ok(None);
        }
        let env = GroupEnvelope::from_bytes(data).map_err(|_| Verdict::Reject)?;
        let store = &self.ctx.store;
        let Some(g) = store.group_shared(&env.group.0) else { return Err(Verdict::Ignore) };
        let key = match rule::epoch_key(&g, env.epoch) {
            Ok(key) => key,
            Err(d) => {
                // Ahead of the key: held until the group reaches that epoch.
                if g.active && env.epoch > g.epoch {
                    if let Ok(mut early) = self.early.lock() {
                        early.hold(g.id, env.epoch, data.to_vec(), self.ctx.now());
                    }
                }
                return Err(verdict(d));
            }
        };
        let opened = env.open(&key).map_err(|e| {
            debug!("rejected a group message: {e}");
            Verdict::Reject
        })?;
        // A device its user revoked, once this node holds a record saying so: refused whatever
        // the epoch (the grace of a closed epoch is for members, not for revoked devices).
        self.records.device_allowed_held(&opened.sender).map_err(|e| {
            debug!("ignoring a group message from a device not allowed: {e}");
            // Ignored, not rejected: the member forwarding it may not know of the revocation.
            Verdict::Ignore
        })?;
        let m = &opened.message;
        rule::sender_allowed(&g, env.epoch, &m.sender.0, m.sent_at, self.ctx.now(), synced)
            .map_err(|d| {
                debug!("rejected a group message from a non-member or in a closed epoch");
                verdict(d)
            })?;
        // Held from here on (stored now, stored before, or dropped as from a blocked member):
        // its number closes a gap, or proves one.
        if let Some(seq) = opened.seq.filter(|_| opened.sender.peer_id != self.ctx.peer_id()) {
            let device = opened.sender.peer_id.to_bytes();
            store
                .record_group_seq(&g.id, &device, seq, self.ctx.now())
                .or_warn("cannot record a group message's number");
        }
        let seen = || {
            if let Ok(mut s) = self.seen.lock() {
                s.insert(digest);
            }
        };
        if matches!(store.message(&m.id.0), Ok(Some(_))) {
            seen();
            return Err(Verdict::Ignore);
        }
        let me = self.ctx.user_id();
        // A member this user blocked: not stored here, still passed on to the other members.
        if m.sender != me && store.is_blocked(&m.sender.0).unwrap_or(false) {
            seen();
            return Err(Verdict::Accept);
        }
        let direction = if m.sender == me { Direction::Out } else { Direction::In };
        let stored = self.group_stored(m, direction, data.to_vec());
        match store.insert_incoming(&stored) {
            Ok(true) => seen(),
            Ok(false) => {
                seen();
                return Err(Verdict::Ignore);
            }
            Err(_) => return Err(Verdict::Ignore),
        }
        // Membership control messages, signed by their sender inside the ciphertext.
        match &m.content {
            Content::GroupLeave { .. } => {
                let mut g = (*g).clone();
                g.leaving.push(m.sender.0.to_vec());
                store.put_group(&g).or_warn("cannot record a leave");
                self.rekey_after_leave(g);
            }
            Content::GroupRemove { user, .. }
                if *user == me && rule::may_remove(&g.members, &m.sender.0, &me.0) =>
            {
                let mut g = (*g).clone();
                g.active = false;
                store.put_group(&g).or_warn("cannot record a removal");
                let net = self.ctx.net.clone();
                let t = topic(&env.group);
                self.ctx.spawn(async move {
                    let _ = net.subscribe(t, false).await;
                });
            }
            Content::Attachment(a) => {
                self.media
                    .record(&stored, a, opened.sender.peer_id)
                    .or_warn("cannot record a group attachment");
            }
            _ => {}
        }
        self.remember_peer(&g.id, &opened.sender.peer_id);
        let view = views::view_of(&self.ctx.store, self.ctx.user_id(), &stored)
            .map_err(|_| Verdict::Ignore)?;
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
    pub(crate) fn rekey_after_leave(&self, g: GroupState) {
        if rule::rekeyer(&g) != Some(self.ctx.user_id().0) {
            return;
        }
        let leaving = rule::leaving(&g);
        let node = self.clone();
        self.ctx.spawn(async move {
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
        let Some(g) = self.ctx.store.group_shared(&req.group.0) else { return empty };
        if !g.members.iter().any(|m| m.user == cert.identity.user_id().0) {
            return empty;
        }
        let Ok(msgs) = self.ctx.store.messages_since(&req.group.0, req.since, 4096) else {
            return empty;
        };
        let known: std::collections::HashSet<&[u8]> = req.known.chunks_exact(8).collect();
        let mut size = 0;
        let mut envelopes = Vec::new();
        // A message still waiting for this device to hold the group's state has no envelope.
        let unknown = |m: &crate::store::StoredMessage| {
            m.status != Status::Waiting && !known.contains(&envelope_digest(&m.raw)[..])
        };
        for m in msgs.into_iter().filter(unknown) {
            if size + m.raw.len() + 64 > MAX_SYNC_RESPONSE - 1024 {
                return SyncResponse { v: VERSION, envelopes, more: true };
            }
            size += m.raw.len() + 16;
            envelopes.push(serde_bytes::ByteBuf::from(m.raw));
        }
        SyncResponse { v: VERSION, envelopes, more: false }
    }

    /// The digests of the group envelopes this device holds, sent at or after `since`: the
    /// newest [`MAX_SYNC_KNOWN`], for a sync request's `known`.
    fn known_since(&self, group: &[u8; 16], since: u64) -> Vec<u8> {
        let Ok(msgs) = self.ctx.store.messages_since(group, since, 4096) else {
            return Vec::new();
        };
        let held = msgs.iter().filter(|m| m.status != Status::Waiting && !m.raw.is_empty());
        let held: Vec<_> = held.collect();
        let newest = &held[held.len().saturating_sub(MAX_SYNC_KNOWN)..];
        newest.iter().flat_map(|m| envelope_digest(&m.raw)).collect()
    }

    /// Asks some member devices for group messages this device missed; stores each once. Then,
    /// while it can prove it lacks some (gaps in a device's sequence numbers), asks the devices
    /// that sent them, then up to [`SYNC_PEERS`] more member devices.
    pub(crate) async fn sync_group(&self, g: &GroupState) {
        if !g.active {
            return;
        }
        let me = self.ctx.peer_id().to_bytes();
        let t = topic(&ConversationId(g.id));
        let connected: Vec<Vec<u8>> = self
            .ctx
            .net
            .topic_peers(t)
            .await
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_bytes())
            .collect();
        let chosen =
            rule::sync_peers(&g.peers, &connected, &me, SYNC_PEERS, &mut rand::thread_rng());
        let mut asked: Vec<Vec<u8>> = Vec::new();
        let mut fresh = 0;
        for peer in chosen {
            fresh += self.sync_with(g, &peer).await;
            asked.push(peer);
        }
        // The devices whose numbers are missing.
        let gaps = || -> Vec<Vec<u8>> {
            let gaps = self.ctx.store.group_gaps(&g.id, self.ctx.now()).unwrap_or_default();
            gaps.into_iter().map(|(device, _)| device).collect()
        };
        // Gaps left: first those devices (each holds its own messages), then other members.
        let senders: Vec<Vec<u8>> = gaps().into_iter().filter(|d| !asked.contains(d)).collect();
        for peer in senders.into_iter().take(SYNC_PEERS) {
            fresh += self.sync_with(g, &peer).await;
            asked.push(peer);
        }
        if !gaps().is_empty() {
            let fresh_only = |from: &[Vec<u8>]| -> Vec<Vec<u8>> {
                from.iter().filter(|p| !asked.contains(p)).cloned().collect()
            };
            let (others, near) = (fresh_only(&g.peers), fresh_only(&connected));
            let more = rule::sync_peers(&others, &near, &me, SYNC_PEERS, &mut rand::thread_rng());
            for peer in more {
                fresh += self.sync_with(g, &peer).await;
                if gaps().is_empty() {
                    break;
                }
            }
        }
        if fresh > 0 {
            self.ctx.store.flush().await.or_warn("cannot flush synced messages");
            info!(group = %ConversationId(g.id), fresh, "caught up on group messages");
        }
    }

    /// Asks one member device (`peer`, binary) for the group messages since this device joined
    /// that it does not hold; returns how many new ones it stored.
    async fn sync_with(&self, g: &GroupState, peer: &[u8]) -> usize {
        let Ok(peer) = PeerId::from_bytes(peer) else { return 0 };
        let mut fresh = 0;
        let mut since = g.joined_at.saturating_sub(60_000);
        loop {
            let req = SyncRequest {
                v: VERSION,
                group: ConversationId(g.id),
                since,
                cert: self.ctx.keys.cert.clone(),
                known: self.known_since(&g.id, since),
            };
            let Ok(Ok(answer)) = self.ctx.net.sync_request(peer, req.to_bytes()).await else {
                break;
            };
            let Ok(resp) = SyncResponse::from_bytes(&answer) else { break };
            let mut last = since;
            for e in &resp.envelopes {
                if let Ok(Some(m)) = self.accept_group_envelope(e, true) {
                    fresh += 1;
                    last = last.max(m.sent_at);
                    let _ = self.ctx.events.send(NodeEvent::Message(m.view));
                }
            }
            if !resp.more || resp.envelopes.is_empty() || last <= since {
                break;
            }
            since = last;
        }
        fresh
    }
}
