//! Group membership rules (`docs/protocol.md`, 7.4): only members post; a member may remove the
//! members who joined after it; a state is adopted only from a current member, for a newer
//! epoch, dropping only members its sender may drop; an epoch this device moved on from
//! accepts messages for a grace period; after a leave, the remaining member with the lowest
//! user id rekeys; long member lists arrive in parts that are adopted once whole.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use kith_protocol::message::InvitePart;
use kith_protocol::Content;

use crate::store::{GroupMember, GroupState};

/// How long after moving to a new epoch messages of the previous one are still accepted.
pub const EPOCH_GRACE_MS: u64 = 60_000;
/// Group states arriving in parts kept at once, waiting for their other parts.
pub const MAX_PENDING_INVITES: usize = 64;
/// How long the parts of a group state wait for the others.
pub const INVITE_PARTS_TTL_MS: u64 = 10 * 60 * 1000;
/// Most group messages held for an epoch whose key has not arrived yet, over all groups.
pub const MAX_EARLY_MESSAGES: usize = 256;
/// How long such a message is held (then it is dropped: catch-up fetches it later).
pub const EARLY_MESSAGE_TTL_MS: u64 = 2 * 60 * 1000;

/// Why a group message is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Not for us now (unknown group, future epoch, duplicate): no penalty.
    Ignore,
    /// Invalid (forged, from a non-member, in a closed epoch): penalize the forwarder.
    Reject,
}

fn position(members: &[GroupMember], user: &[u8; 16]) -> Option<usize> {
    members.iter().position(|m| m.user == *user)
}

/// Whether `remover` may remove `target`: both are members and `target` joined later.
pub fn may_remove(members: &[GroupMember], remover: &[u8; 16], target: &[u8; 16]) -> bool {
    matches!((position(members, remover), position(members, target)), (Some(r), Some(t)) if t > r)
}

/// What to do with a whole group state sent by `sender`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adopt {
    /// A group this device does not know yet: join it.
    Join,
    /// A newer epoch of a known group: move to it.
    Advance,
    /// The state does not name this user, or not its sender.
    NotNamed,
    /// Not newer than the current epoch.
    Stale,
    /// Its sender is not a current member.
    NotAMember,
    /// It drops members its sender may not drop.
    Forbidden,
}

/// Decides whether to adopt a state (`members`, `epoch`) from `sender`, given the current one.
pub fn adopt(
    current: Option<&GroupState>,
    me: &[u8; 16],
    sender: &[u8; 16],
    members: &[GroupMember],
    epoch: u64,
) -> Adopt {
    if position(members, me).is_none() || position(members, sender).is_none() {
        return Adopt::NotNamed;
    }
    let Some(g) = current else { return Adopt::Join };
    if epoch <= g.epoch {
        return Adopt::Stale;
    }
    let Some(s_pos) = position(&g.members, sender) else { return Adopt::NotAMember };
    // Removals must follow the rule: later joiners, or members who announced a leave.
    let allowed = g.members.iter().enumerate().all(|(i, m)| {
        position(members, &m.user).is_some()
            || i > s_pos
            || g.leaving.iter().any(|l| l.as_slice() == m.user)
    });
    if allowed {
        Adopt::Advance
    } else {
        Adopt::Forbidden
    }
}

/// The key of `epoch`, if this device holds it.
pub fn key_of(g: &GroupState, epoch: u64) -> Option<[u8; 32]> {
    g.keys
        .iter()
        .find(|(e, _)| *e == epoch)
        .and_then(|(_, k)| <[u8; 32]>::try_from(k.as_slice()).ok())
}

/// The key to open a message of `epoch` with, or why it is dropped before opening.
pub fn epoch_key(g: &GroupState, epoch: u64) -> Result<[u8; 32], Drop> {
    if !g.active {
        return Err(Drop::Ignore);
    }
    key_of(g, epoch).ok_or(if epoch > g.epoch { Drop::Ignore } else { Drop::Reject })
}

/// Whether an opened message of `epoch` from `sender`, sent at `sent_at`, is accepted at `now`.
/// The sender must have been a member of the message's epoch, and an epoch this device has
/// moved on from accepts messages only for [`EPOCH_GRACE_MS`] (they may still be on their way),
/// so a removed member cannot keep posting under its last key. A message handed over by a
/// member's sync (`synced`) was accepted there; it only has to belong to the epoch's lifetime.
pub fn sender_allowed(
    g: &GroupState,
    epoch: u64,
    sender: &[u8; 16],
    sent_at: u64,
    now: u64,
    synced: bool,
) -> Result<(), Drop> {
    let e = g.epochs.iter().find(|e| e.epoch == epoch);
    let member = match e {
        Some(e) => e.members.iter().any(|u| u.as_slice() == sender),
        None => position(&g.members, sender).is_some(),
    };
    if !member {
        return Err(Drop::Reject);
    }
    let late = |ended: u64| {
        if synced {
            sent_at > ended + EPOCH_GRACE_MS
        } else {
            ended + EPOCH_GRACE_MS < now
        }
    };
    if e.and_then(|e| e.ended_at).is_some_and(late) {
        return Err(Drop::Reject);
    }
    Ok(())
}

/// Which `n` of a group's known member devices to ask for missed messages (never this
/// device): those `connected` (subscribed to the group's topic over an open connection) first,
/// all but one of them, then the others, each part a random choice. Asking connected devices
/// costs no new connection (a Noise handshake, at scale most of a node's work); the one
/// device from beyond them is how a gap that the connected ones share gets filled; at random, so
/// that every member does not ask the same first few, and a round that hit an unhelpful device
/// is followed by one that asks others.
pub fn sync_peers<R: rand::Rng>(
    peers: &[Vec<u8>],
    connected: &[Vec<u8>],
    me: &[u8],
    n: usize,
    rng: &mut R,
) -> Vec<Vec<u8>> {
    let near: Vec<&Vec<u8>> = connected.iter().filter(|p| p.as_slice() != me).collect();
    let far: Vec<&Vec<u8>> =
        peers.iter().filter(|p| p.as_slice() != me && !connected.contains(p)).collect();
    let pick = |from: &[&Vec<u8>], k: usize, rng: &mut R| -> Vec<Vec<u8>> {
        rand::seq::index::sample(rng, from.len(), k.min(from.len()))
            .into_iter()
            .map(|i| from[i].clone())
            .collect()
    };
    let mut chosen = pick(&near, n.saturating_sub(1).max(1).min(n), rng);
    let rest = n - chosen.len();
    chosen.extend(pick(&far, rest, rng));
    if chosen.len() < n {
        let more: Vec<&Vec<u8>> = near.into_iter().filter(|p| !chosen.contains(p)).collect();
        let k = n - chosen.len();
        chosen.extend(pick(&more, k, rng));
    }
    chosen
}

/// Which members (at most `n`, never `me`) this device dials so that the group's gossipsub
/// mesh can form: an order of its own (members sorted by a hash of `me` and their user id), so
/// that every member does not dial the same first few (which then prune their mesh to a dozen
/// and leave the rest outside it), while one device picks the same members each round (their
/// names stay in its resolve cache).
pub fn mesh_members<'a>(
    members: &'a [GroupMember],
    me: &[u8; 16],
    n: usize,
) -> Vec<&'a GroupMember> {
    use sha2::{Digest, Sha256};
    let rank = |m: &GroupMember| -> [u8; 32] {
        Sha256::new().chain_update(me).chain_update(m.user).finalize().into()
    };
    let mut others: Vec<([u8; 32], &GroupMember)> =
        members.iter().filter(|m| &m.user != me).map(|m| (rank(m), m)).collect();
    others.sort_by_key(|o| o.0);
    others.into_iter().take(n).map(|(_, m)| m).collect()
}

/// Fan-out of the tree a group state is handed on along (`hand_on_to`).
pub const HAND_ON_FANOUT: usize = 8;
/// When the sender of a handed-on state sends it itself to the new members beyond its own
/// children in the tree, in case a member on their way is offline (those who have it by then
/// get it twice, and ignore it).
pub const HAND_ON_FALLBACK_MS: u64 = 2 * 60 * 1000;
/// Oldest start of history a handed-on state may give a new member, before the time the
/// member who handed it on sent it.
pub const HAND_ON_MAX_AGE_MS: u64 = 60 * 60 * 1000;

/// The members (a range of indices into the member list) a holder of a group state hands it
/// on to. The new members, `from..len`, form a tree of fan-out `fanout` rooted at the state's
/// sender (`holder` `None`): the sender sends it to the first `fanout`, and the new member at
/// index `i` (`Some(i)`), once it joined, to its own children. Every new member is the child of
/// exactly one holder, and a state reaches n new members in about log_fanout(n) hops.
pub fn hand_on_to(
    from: usize,
    len: usize,
    holder: Option<usize>,
    fanout: usize,
) -> std::ops::Range<usize> {
    let position = match holder {
        None => 0,
        Some(i) if i >= from && i < len => i - from + 1,
        Some(_) => return 0..0,
    };
    let first = position.saturating_mul(fanout).saturating_add(from).min(len);
    first..first.saturating_add(fanout).min(len)
}

/// The members who announced a leave.
pub fn leaving(g: &GroupState) -> Vec<[u8; 16]> {
    g.leaving.iter().filter_map(|l| <[u8; 16]>::try_from(l.as_slice()).ok()).collect()
}

/// Who starts the new epoch after a leave: the remaining member with the lowest user id.
pub fn rekeyer(g: &GroupState) -> Option<[u8; 16]> {
    let leaving = leaving(g);
    g.members.iter().map(|m| m.user).filter(|u| !leaving.contains(u)).min()
}

/// The parts of one group state received so far.
#[derive(Debug)]
struct Pending {
    since: u64,
    count: u32,
    key: [u8; 32],
    parts: BTreeMap<u32, Content>,
}

/// What became of a part.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Kept; other parts are missing.
    Incomplete,
    /// The last part: every part, in order.
    Whole(Vec<Content>),
    /// It disagrees with the parts received before (count or key): dropped.
    Contradicts,
    /// [`MAX_PENDING_INVITES`] other states are waiting: dropped.
    Full,
}

/// Group messages that arrived before the key of their epoch (a rekey's messages can overtake
/// its key, which comes sealed to each member): held, bounded by [`MAX_EARLY_MESSAGES`] and
/// [`EARLY_MESSAGE_TTL_MS`], and handed back once the group reaches their epoch.
#[derive(Debug, Default)]
pub struct EarlyMessages {
    held: Vec<Early>,
}

#[derive(Debug)]
struct Early {
    group: [u8; 16],
    epoch: u64,
    at: u64,
    envelope: Vec<u8>,
}

impl EarlyMessages {
    /// Holds `envelope` of `group` at `epoch`, received at `now`; whether it was kept (not when
    /// full, nor a copy of one held).
    pub fn hold(&mut self, group: [u8; 16], epoch: u64, envelope: Vec<u8>, now: u64) -> bool {
        self.held.retain(|e| now.saturating_sub(e.at) < EARLY_MESSAGE_TTL_MS);
        if self.held.len() >= MAX_EARLY_MESSAGES || self.held.iter().any(|e| e.envelope == envelope)
        {
            return false;
        }
        self.held.push(Early { group, epoch, at: now, envelope });
        true
    }

    /// The held messages of `group` whose epoch is `epoch` or older (the group reached it), in
    /// the order they arrived; they are no longer held.
    pub fn release(&mut self, group: &[u8; 16], epoch: u64) -> Vec<Vec<u8>> {
        let (out, keep): (Vec<Early>, Vec<Early>) =
            self.held.drain(..).partition(|e| &e.group == group && e.epoch <= epoch);
        self.held = keep;
        out.into_iter().map(|e| e.envelope).collect()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Group states arriving in parts, by (group, epoch, sender's user id); bounded by
/// [`MAX_PENDING_INVITES`], each kept [`INVITE_PARTS_TTL_MS`].
#[derive(Debug, Default)]
pub struct InviteParts {
    pending: HashMap<([u8; 16], u64, [u8; 16]), Pending>,
}

impl InviteParts {
    /// Offers `content`, part `part` of the state of `group` at `epoch` with `epoch_key` sent by
    /// `sender`.
    pub fn offer(
        &mut self,
        (group, epoch, sender): ([u8; 16], u64, [u8; 16]),
        part: InvitePart,
        epoch_key: [u8; 32],
        content: Content,
        now: u64,
    ) -> Offer {
        let key = (group, epoch, sender);
        self.pending.retain(|_, p| now.saturating_sub(p.since) < INVITE_PARTS_TTL_MS);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING_INVITES {
            return Offer::Full;
        }
        let p = self.pending.entry(key).or_insert_with(|| Pending {
            since: now,
            count: part.count,
            key: epoch_key,
            parts: BTreeMap::new(),
        });
        if p.count != part.count || p.key != epoch_key {
            return Offer::Contradicts;
        }
        p.parts.insert(part.index, content);
        if p.parts.len() < p.count as usize {
            return Offer::Incomplete;
        }
        match self.pending.remove(&key) {
            Some(p) => Offer::Whole(p.parts.into_values().collect()),
            None => Offer::Incomplete,
        }
    }

    /// States waiting for parts.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no state waits for parts.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Group envelopes a device remembers having stored (by [`kith_protocol::group::envelope_digest`]),
/// so that one arriving again (a sync answer repeating what gossip brought) is dropped before
/// it is decrypted and its signatures checked.
pub const SEEN_ENVELOPES: usize = 4096;

/// The digests of the last [`SEEN_ENVELOPES`] envelopes stored, oldest forgotten first.
#[derive(Debug, Default)]
pub struct SeenEnvelopes {
    set: HashSet<[u8; 8]>,
    order: VecDeque<[u8; 8]>,
}

impl SeenEnvelopes {
    /// Whether an envelope with this digest was stored (and is still remembered).
    pub fn contains(&self, digest: &[u8; 8]) -> bool {
        self.set.contains(digest)
    }

    /// Remembers a stored envelope, forgetting the oldest beyond [`SEEN_ENVELOPES`].
    pub fn insert(&mut self, digest: [u8; 8]) {
        if self.set.insert(digest) {
            self.order.push_back(digest);
            if self.order.len() > SEEN_ENVELOPES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(u: u8) -> GroupMember {
        GroupMember { user: [u; 16], identity: [u; 32], name: Some(format!("m{u}")) }
    }

    fn group(members: &[u8], epoch: u64, now: u64) -> GroupState {
        GroupState::joined(
            [9; 16],
            members.iter().map(|u| member(*u)).collect(),
            epoch,
            [epoch as u8; 32],
            now,
        )
    }

    #[test]
    fn members_remove_only_later_joiners() {
        let m: Vec<GroupMember> = [1, 2, 3].map(member).to_vec();
        assert!(may_remove(&m, &[1; 16], &[3; 16]));
        assert!(!may_remove(&m, &[3; 16], &[1; 16]));
        assert!(!may_remove(&m, &[2; 16], &[2; 16]), "not oneself");
        assert!(!may_remove(&m, &[7; 16], &[3; 16]), "not a member");
    }

    #[test]
    fn a_state_is_adopted_only_when_its_sender_may_make_it() {
        let g = group(&[1, 2, 3], 4, 0);
        let m = |us: &[u8]| us.iter().map(|u| member(*u)).collect::<Vec<_>>();
        assert_eq!(adopt(None, &[2; 16], &[1; 16], &m(&[1, 2]), 1), Adopt::Join);
        assert_eq!(adopt(None, &[2; 16], &[1; 16], &m(&[1, 3]), 1), Adopt::NotNamed);
        assert_eq!(adopt(Some(&g), &[2; 16], &[1; 16], &m(&[1, 2]), 4), Adopt::Stale);
        assert_eq!(adopt(Some(&g), &[2; 16], &[1; 16], &m(&[1, 2]), 5), Adopt::Advance);
        assert_eq!(adopt(Some(&g), &[2; 16], &[3; 16], &m(&[2, 3]), 5), Adopt::Forbidden);
        assert_eq!(adopt(Some(&g), &[2; 16], &[7; 16], &m(&[1, 2, 3, 7]), 5), Adopt::NotAMember);
        let mut left = g.clone();
        left.leaving.push(vec![1; 16]);
        assert_eq!(adopt(Some(&left), &[2; 16], &[3; 16], &m(&[2, 3]), 5), Adopt::Advance);
    }

    #[test]
    fn closed_epochs_accept_messages_for_a_grace_period() {
        let mut g = group(&[1, 2, 3], 1, 0);
        g.members.retain(|m| m.user != [3; 16]);
        g.enter_epoch(2, [2; 32], 1_000);
        assert_eq!(epoch_key(&g, 1), Ok([1; 32]));
        assert_eq!(epoch_key(&g, 3), Err(Drop::Ignore), "a key on its way");
        assert_eq!(epoch_key(&g, 0), Err(Drop::Reject));
        assert_eq!(sender_allowed(&g, 2, &[3; 16], 1_500, 1_500, false), Err(Drop::Reject));
        assert_eq!(sender_allowed(&g, 1, &[3; 16], 1_500, 1_500, false), Ok(()));
        let after = 1_000 + EPOCH_GRACE_MS + 1;
        assert_eq!(sender_allowed(&g, 1, &[3; 16], 900, after, false), Err(Drop::Reject));
        assert_eq!(sender_allowed(&g, 1, &[3; 16], 900, after, true), Ok(()), "synced");
        assert_eq!(sender_allowed(&g, 1, &[3; 16], after, after, true), Err(Drop::Reject));
        g.active = false;
        assert_eq!(epoch_key(&g, 2), Err(Drop::Ignore), "left the group");
    }

    #[test]
    fn a_handed_on_state_reaches_every_new_member_once_in_few_hops() {
        for (from, len, fanout) in [(1, 1000, 8), (5, 6, 8), (3, 40, 2), (1, 2, 8), (7, 7, 8)] {
            let mut reached = vec![0u32; len];
            let mut depth = vec![0u32; len];
            for c in hand_on_to(from, len, None, fanout) {
                reached[c] += 1;
                depth[c] = 1;
            }
            for i in from..len {
                for c in hand_on_to(from, len, Some(i), fanout) {
                    assert!(c > i, "a child comes after its holder");
                    reached[c] += 1;
                    depth[c] = depth[i] + 1;
                }
            }
            assert!(reached[..from].iter().all(|&r| r == 0), "old members are not in the tree");
            assert!(reached[from..].iter().all(|&r| r == 1), "{from} {len} {fanout}: {reached:?}");
            let hops = depth.iter().max().copied().unwrap_or(0);
            let bound = ((len - from) as f64).log(fanout as f64).ceil() as u32 + 1;
            assert!(hops <= bound.max(1), "{hops} hops for {} new members", len - from);
        }
        assert_eq!(hand_on_to(1, 1000, None, 8), 1..9);
        assert_eq!(hand_on_to(1, 1000, Some(1), 8), 9..17);
        assert_eq!(hand_on_to(10, 1000, Some(3), 8), 0..0, "an old member hands nothing on");
    }

    #[test]
    fn sync_peers_are_a_random_few_and_never_this_device() {
        use rand::SeedableRng;
        let peers: Vec<Vec<u8>> = (0..20u8).map(|p| vec![p]).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let chosen = sync_peers(&peers, &[], &[3], 4, &mut rng);
            assert_eq!(chosen.len(), 4);
            assert!(!chosen.contains(&vec![3]), "not this device");
            let distinct: std::collections::HashSet<_> = chosen.iter().collect();
            assert_eq!(distinct.len(), 4, "no device twice");
            seen.extend(chosen);
        }
        assert_eq!(seen.len(), 19, "every other device is asked sometimes");
        assert_eq!(sync_peers(&peers[..2], &[], &[0], 4, &mut rng), vec![vec![1]]);
    }

    #[test]
    fn sync_peers_are_mostly_connected_ones_and_one_other() {
        use rand::SeedableRng;
        let peers: Vec<Vec<u8>> = (0..20u8).map(|p| vec![p]).collect();
        let connected: Vec<Vec<u8>> = (0..6u8).map(|p| vec![p]).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut far_seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let chosen = sync_peers(&peers, &connected, &[0], 4, &mut rng);
            assert_eq!(chosen.len(), 4);
            assert!(!chosen.contains(&vec![0]), "not this device");
            let far: Vec<_> = chosen.iter().filter(|p| !connected.contains(p)).collect();
            assert_eq!(far.len(), 1, "three connected ones and one other: {chosen:?}");
            far_seen.extend(far.into_iter().cloned());
        }
        assert_eq!(far_seen.len(), 14, "every device beyond the connected ones is asked sometimes");
        // Few connected: the others fill the round; none beyond: connected ones only.
        let one = sync_peers(&peers, &connected[..2], &[0], 4, &mut rng);
        assert_eq!(one.len(), 4);
        assert!(one.contains(&vec![1]));
        let only = sync_peers(&connected, &connected, &[0], 4, &mut rng);
        assert_eq!(only.len(), 4);
        assert!(only.iter().all(|p| connected.contains(p) && p != &vec![0]));
    }

    #[test]
    fn mesh_members_differ_between_devices_and_stay_put() {
        let g = group(&(0..60u8).collect::<Vec<_>>(), 1, 0);
        let pick = |me: u8| -> Vec<[u8; 16]> {
            mesh_members(&g.members, &[me; 16], 8).iter().map(|m| m.user).collect()
        };
        for me in [0, 1, 59] {
            let chosen = pick(me);
            assert_eq!(chosen.len(), 8);
            assert!(!chosen.contains(&[me; 16]), "never itself");
            assert_eq!(pick(me), chosen, "the same members each round");
        }
        // Across all members, the dials spread: no member is dialed by most of the others.
        let mut dialed = std::collections::HashMap::new();
        for me in 0..60u8 {
            for u in pick(me) {
                *dialed.entry(u).or_insert(0) += 1;
            }
        }
        assert!(dialed.len() > 40, "most members are dialed by someone: {}", dialed.len());
        assert!(dialed.values().all(|&c| c < 30), "no hub: {dialed:?}");
        // A small group: everyone else.
        assert_eq!(mesh_members(&g.members[..3], &[0; 16], 8).len(), 2);
    }

    #[test]
    fn the_lowest_remaining_member_rekeys() {
        let mut g = group(&[5, 2, 8], 1, 0);
        assert_eq!(rekeyer(&g), Some([2; 16]));
        g.leaving.push(vec![2; 16]);
        assert_eq!(rekeyer(&g), Some([5; 16]));
    }

    #[test]
    fn early_messages_wait_for_their_epoch_and_are_bounded() {
        let mut early = EarlyMessages::default();
        assert!(early.hold([1; 16], 3, vec![1], 0));
        assert!(early.hold([1; 16], 4, vec![2], 0));
        assert!(early.hold([2; 16], 3, vec![3], 0));
        assert!(!early.hold([1; 16], 3, vec![1], 1), "a copy");
        assert_eq!(early.release(&[1; 16], 2), Vec::<Vec<u8>>::new(), "not there yet");
        assert_eq!(early.release(&[1; 16], 3), vec![vec![1]]);
        assert_eq!(early.release(&[1; 16], 9), vec![vec![2]]);
        assert_eq!(early.len(), 1, "the other group's stays");
        // Expired messages go; the bound holds.
        assert!(early.hold([1; 16], 5, vec![4], EARLY_MESSAGE_TTL_MS));
        assert_eq!(early.len(), 1, "the old one expired");
        for i in 0..MAX_EARLY_MESSAGES as u32 {
            early.hold([1; 16], 5, i.to_be_bytes().to_vec(), EARLY_MESSAGE_TTL_MS);
        }
        assert_eq!(early.len(), MAX_EARLY_MESSAGES);
        assert!(!early.hold([1; 16], 5, vec![9, 9], EARLY_MESSAGE_TTL_MS), "full");
    }

    #[test]
    fn parts_are_whole_once_all_arrived_and_bounded() {
        let mut p = InviteParts::default();
        let part = |index| InvitePart { index, count: 2 };
        let c = |i: u8| Content::Text(kith_protocol::Text { body: format!("{i}") });
        let k = ([1; 16], 3, [2; 16]);
        assert_eq!(p.offer(k, part(1), [0; 32], c(1), 0), Offer::Incomplete);
        assert_eq!(p.offer(k, part(0), [5; 32], c(9), 0), Offer::Contradicts);
        assert_eq!(p.offer(k, part(0), [0; 32], c(0), 0), Offer::Whole(vec![c(0), c(1)]));
        assert!(p.is_empty());
        for g in 0..MAX_PENDING_INVITES as u8 {
            assert_eq!(
                p.offer(([g; 16], 1, [0; 16]), part(0), [0; 32], c(0), 0),
                Offer::Incomplete
            );
        }
        assert_eq!(p.offer(([200; 16], 1, [0; 16]), part(0), [0; 32], c(0), 1), Offer::Full);
        let later = INVITE_PARTS_TTL_MS;
        assert_eq!(
            p.offer(([200; 16], 1, [0; 16]), part(0), [0; 32], c(0), later),
            Offer::Incomplete
        );
        assert_eq!(p.len(), 1, "the expired ones are gone");
    }

    #[test]
    fn seen_envelopes_forget_the_oldest_beyond_the_limit() {
        let mut seen = SeenEnvelopes::default();
        let d = |i: usize| (i as u64).to_be_bytes();
        for i in 0..SEEN_ENVELOPES + 10 {
            seen.insert(d(i));
            seen.insert(d(i));
        }
        assert!(!seen.contains(&d(0)) && !seen.contains(&d(9)), "the oldest are forgotten");
        assert!(seen.contains(&d(10)) && seen.contains(&d(SEEN_ENVELOPES + 9)));
        assert_eq!(seen.order.len(), SEEN_ENVELOPES, "a repeated insert is not counted twice");
    }
}
