//! One call as this device sees it: who rings, who is in it, when it ends, and which signals
//! each event sends (`docs/protocol.md` 6.4). Pure: time comes in as `now`, and what the call
//! does comes out as [`Effect`]s for `services::calls` to carry out.
//!
//! - Every device of the callee rings; the first device of a user to join takes the call for
//!   that user: its `join` stops its own other devices ringing, and a later `join` from another
//!   device of the same user is refused by the devices already in the call.
//! - At most [`MAX_PARTICIPANTS`] devices take part (a full mesh of WebRTC connections).
//! - Between two devices in the call, the one with the smaller device key makes the WebRTC
//!   offer; the other answers a `join` with `present` so that the smaller one knows of it.
//! - A call nobody joins within the ring time ends as missed. Only the device that started the
//!   call writes its history entry (`call.log`), when the call ends for it.

use std::collections::{BTreeMap, BTreeSet};

use kith_protocol::call::{CallOutcome, Signal};

/// Most devices in one call, this one included.
pub const MAX_PARTICIPANTS: usize = 4;
/// How long a call rings before it is missed, by default, in ms.
pub const DEFAULT_RING_MS: u64 = 45_000;

/// Where a call stands on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// This device started the call; nobody has joined yet.
    Calling,
    /// Another device's call rings here.
    Ringing,
    /// This device is in the call.
    Active,
    /// Over, for this device.
    Ended,
}

impl Phase {
    /// The phase's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Calling => "calling",
            Phase::Ringing => "ringing",
            Phase::Active => "active",
            Phase::Ended => "ended",
        }
    }
}

/// Why a call ended for this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// This device hung up.
    HungUp,
    /// Everyone else left.
    Left,
    /// Nobody joined within the ring time (or, ringing here, nobody answered here).
    Missed,
    /// The caller hung up before anyone answered.
    Cancelled,
    /// The callee declined (or, ringing here, this user declined).
    Declined,
    /// Another device of this user took the call.
    AnsweredElsewhere,
    /// Another device of this user declined it.
    DeclinedElsewhere,
    /// Every device rung was in another call.
    Busy,
    /// No device of the callee could be reached.
    Unreachable,
    /// The call refused this device's `join`.
    Refused(String),
}

impl EndReason {
    /// The reason's name in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::Left => "left",
            EndReason::Missed => "missed",
            EndReason::Cancelled => "cancelled",
            EndReason::Declined => "declined",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::DeclinedElsewhere => "declined_elsewhere",
            EndReason::Busy => "busy",
            EndReason::Unreachable => "unreachable",
            EndReason::Refused(_) => "refused",
        }
    }
}

/// Whom a signal goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum To {
    /// Every device of every member of the conversation, this user's other devices included.
    Everyone,
    /// One device.
    Device([u8; 32]),
}

/// What an event makes the service do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a signal.
    Send(To, Signal),
    /// Hand an offer or answer from a device to the client running the media.
    Relay([u8; 32], Signal),
    /// The call's state changed (tell subscribers).
    Changed,
    /// Write the call's history entry (only on the device that started it).
    Log(CallOutcome),
}

/// A device that is (or was) in the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Its user.
    pub user: [u8; 16],
    /// When it joined, as this device learnt it.
    pub since: u64,
}

/// One call on this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// This user.
    pub me: [u8; 16],
    /// This device.
    pub device: [u8; 32],
    /// A video call.
    pub video: bool,
    /// Whether this device started it.
    pub outgoing: bool,
    /// The caller's user.
    pub caller: [u8; 16],
    /// A group call (else direct).
    pub group: bool,
    /// Where it stands.
    pub phase: Phase,
    /// When it started ringing here (or calling).
    pub started_at: u64,
    /// When it stops ringing.
    pub ring_until: u64,
    /// When this device's call first had someone else in it while this device was in it.
    pub answered_at: Option<u64>,
    /// When it ended here.
    pub ended_at: Option<u64>,
    /// Why.
    pub end: Option<EndReason>,
    /// The other devices in the call, as far as this device knows.
    pub participants: BTreeMap<[u8; 32], Participant>,
    /// Devices a `ring` is still out to (outgoing calls): neither reached-and-busy nor
    /// unreachable.
    pub rung: BTreeSet<[u8; 32]>,
    /// Some device rung answered `busy`.
    pub busy: bool,
    /// Users who declined.
    pub declined: BTreeSet<[u8; 16]>,
}

impl Call {
    /// A call this device starts; its `ring` and `join` go to everyone.
    pub fn outgoing(
        me: [u8; 16],
        device: [u8; 32],
        video: bool,
        group: bool,
        now: u64,
        ring_ms: u64,
    ) -> (Call, Vec<Effect>) {
        let call = Call {
            me,
            device,
            video,
            outgoing: true,
            caller: me,
            group,
            phase: Phase::Calling,
            started_at: now,
            ring_until: now.saturating_add(ring_ms),
            answered_at: None,
            ended_at: None,
            end: None,
            participants: BTreeMap::new(),
            rung: BTreeSet::new(),
            busy: false,
            declined: BTreeSet::new(),
        };
        (call, vec![Effect::Send(To::Everyone, Signal::Ring { video }), Effect::Changed])
    }

    /// A call that rings here: `ring` from `from` (a device of `caller`).
    #[allow(clippy::too_many_arguments)]
    pub fn incoming(
        me: [u8; 16],
        device: [u8; 32],
        caller: [u8; 16],
        from: [u8; 32],
        video: bool,
        group: bool,
        now: u64,
        ring_ms: u64,
    ) -> (Call, Vec<Effect>) {
        let mut participants = BTreeMap::new();
        participants.insert(from, Participant { user: caller, since: now });
        let call = Call {
            me,
            device,
            video,
            outgoing: false,
            caller,
            group,
            phase: Phase::Ringing,
            started_at: now,
            ring_until: now.saturating_add(ring_ms),
            answered_at: None,
            ended_at: None,
            end: None,
            participants,
            rung: BTreeSet::new(),
            busy: false,
            declined: BTreeSet::new(),
        };
        (call, vec![Effect::Changed])
    }

    /// Whether this device is in the call (started it or joined).
    pub fn joined(&self) -> bool {
        matches!(self.phase, Phase::Calling | Phase::Active)
    }

    /// The ring went out to these devices (outgoing calls).
    pub fn rang(&mut self, devices: impl IntoIterator<Item = [u8; 32]>) {
        self.rung.extend(devices);
    }

    /// The ring could not reach `device` (offline): when no device rung is left and nobody
    /// joined, the call ends as unreachable (or busy).
    pub fn unreachable(&mut self, device: [u8; 32], now: u64) -> Vec<Effect> {
        self.rung.remove(&device);
        self.check_nobody_left(now)
    }

    fn check_nobody_left(&mut self, now: u64) -> Vec<Effect> {
        if self.phase != Phase::Calling || !self.rung.is_empty() {
            return Vec::new();
        }
        let reason = if self.busy { EndReason::Busy } else { EndReason::Unreachable };
        self.finish(reason, now, true)
    }

    /// Ends the call here; `notify`: tell everyone this device left.
    fn finish(&mut self, reason: EndReason, now: u64, notify: bool) -> Vec<Effect> {
        let was_joined = self.joined();
        self.phase = Phase::Ended;
        self.end = Some(reason);
        self.ended_at = Some(now);
        let mut effects = Vec::new();
        if notify && was_joined {
            effects.push(Effect::Send(To::Everyone, Signal::Leave));
        }
        effects.push(Effect::Changed);
        if self.outgoing {
            effects.push(Effect::Log(self.outcome()));
        }
        effects
    }

    /// The outcome the history entry records.
    pub fn outcome(&self) -> CallOutcome {
        if self.answered_at.is_some() {
            CallOutcome::Ended
        } else if !self.declined.is_empty() {
            CallOutcome::Declined
        } else if self.busy && self.rung.is_empty() {
            CallOutcome::Busy
        } else {
            CallOutcome::Missed
        }
    }

    /// How long the call ran, from the first answer to its end (or `now`).
    pub fn duration(&self, now: u64) -> u64 {
        self.answered_at.map_or(0, |a| self.ended_at.unwrap_or(now).saturating_sub(a))
    }

    /// The call rang while this device is in another one: it answers `busy` and does not ring.
    pub fn busy_here(&mut self, now: u64) -> Vec<Effect> {
        let caller = self.participants.keys().next().copied();
        let mut effects = Vec::new();
        if let Some(d) = caller {
            effects.push(Effect::Send(To::Device(d), Signal::Busy));
        }
        effects.extend(self.finish(EndReason::Busy, now, false));
        effects
    }

    /// This device answers.
    pub fn join(&mut self, now: u64) -> Result<Vec<Effect>, &'static str> {
        if self.phase != Phase::Ringing {
            return Err("the call is not ringing here");
        }
        self.phase = Phase::Active;
        for p in self.participants.values_mut() {
            p.since = now;
        }
        if !self.participants.is_empty() {
            self.answered_at = Some(now);
        }
        Ok(vec![Effect::Send(To::Everyone, Signal::Join), Effect::Changed])
    }

    /// This user declines, from this device.
    pub fn decline(&mut self, now: u64) -> Result<Vec<Effect>, &'static str> {
        if self.phase != Phase::Ringing {
            return Err("the call is not ringing here");
        }
        let mut effects = vec![Effect::Send(To::Everyone, Signal::Decline)];
        effects.extend(self.finish(EndReason::Declined, now, false));
        Ok(effects)
    }

    /// This device hangs up (or cancels its call).
    pub fn hang_up(&mut self, now: u64) -> Result<Vec<Effect>, &'static str> {
        match self.phase {
            Phase::Ended => Err("the call has ended"),
            Phase::Ringing => self.decline(now),
            Phase::Calling | Phase::Active => Ok(self.finish(EndReason::HungUp, now, true)),
        }
    }

    /// Time passed: a call that rang too long is missed.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        if now < self.ring_until {
            return Vec::new();
        }
        match self.phase {
            Phase::Ringing => self.finish(EndReason::Missed, now, false),
            Phase::Calling => self.finish(EndReason::Missed, now, true),
            _ => Vec::new(),
        }
    }

    /// A signal from `from`, a device of `user`.
    pub fn on_signal(
        &mut self,
        user: [u8; 16],
        from: [u8; 32],
        signal: Signal,
        now: u64,
    ) -> Vec<Effect> {
        if self.phase == Phase::Ended || from == self.device {
            return Vec::new();
        }
        let own = user == self.me;
        match signal {
            Signal::Ring { .. } => Vec::new(),
            Signal::Join if own && self.phase == Phase::Ringing => {
                self.finish(EndReason::AnsweredElsewhere, now, false)
            }
            // Two devices of this user answered at once: the others in the call choose.
            Signal::Join if own => Vec::new(),
            Signal::Join => self.admit(user, from, now, true),
            Signal::Present => self.admit(user, from, now, false),
            Signal::Decline if own && self.phase == Phase::Ringing => {
                self.finish(EndReason::DeclinedElsewhere, now, false)
            }
            Signal::Decline => {
                if self.outgoing {
                    self.declined.insert(user);
                    if self.phase == Phase::Calling && !self.group {
                        return self.finish(EndReason::Declined, now, true);
                    }
                }
                Vec::new()
            }
            Signal::Busy => {
                self.busy = true;
                self.rung.remove(&from);
                self.check_nobody_left(now)
            }
            Signal::Refused { reason } => {
                self.participants.remove(&from);
                if self.phase == Phase::Active && !self.outgoing && self.participants.is_empty() {
                    return self.finish(EndReason::Refused(reason), now, false);
                }
                vec![Effect::Changed]
            }
            Signal::Offer { to, .. } | Signal::Answer { to, .. } if to != self.device => Vec::new(),
            s @ (Signal::Offer { .. } | Signal::Answer { .. }) => {
                if !self.joined() {
                    return Vec::new();
                }
                let mut effects = Vec::new();
                if !self.participants.contains_key(&from) {
                    effects = self.admit(user, from, now, false);
                    if !self.participants.contains_key(&from) {
                        return effects;
                    }
                }
                effects.push(Effect::Relay(from, s));
                effects
            }
            Signal::Leave => {
                if self.participants.remove(&from).is_none() {
                    return Vec::new();
                }
                if self.participants.is_empty() {
                    match self.phase {
                        Phase::Ringing => return self.finish(EndReason::Cancelled, now, false),
                        Phase::Active => return self.finish(EndReason::Left, now, false),
                        _ => {}
                    }
                }
                vec![Effect::Changed]
            }
        }
    }

    /// A device of another user is in the call: `join` (it announces itself) or `present`
    /// (it answers this device's `join`).
    fn admit(&mut self, user: [u8; 16], from: [u8; 32], now: u64, joining: bool) -> Vec<Effect> {
        if self.participants.contains_key(&from) && self.phase == Phase::Ringing {
            return Vec::new();
        }
        if self.joined() && !self.participants.contains_key(&from) {
            let taken = self.participants.values().any(|p| p.user == user);
            let reason = if taken {
                Some("another device of that user is in the call")
            } else if self.participants.len() + 1 >= MAX_PARTICIPANTS {
                Some("the call is full")
            } else {
                None
            };
            if let Some(reason) = reason {
                if !joining {
                    return Vec::new();
                }
                return vec![Effect::Send(
                    To::Device(from),
                    Signal::Refused { reason: reason.into() },
                )];
            }
        }
        let fresh = self.participants.insert(from, Participant { user, since: now }).is_none();
        let mut effects = Vec::new();
        if self.joined() {
            if self.answered_at.is_none() {
                self.answered_at = Some(now);
            }
            if self.phase == Phase::Calling {
                self.phase = Phase::Active;
            }
            // The smaller device key offers: tell a joining smaller device that this one is here.
            if joining && from < self.device {
                effects.push(Effect::Send(To::Device(from), Signal::Present));
            }
        }
        if fresh || joining {
            effects.push(Effect::Changed);
        }
        effects
    }

    /// The devices this device should make a WebRTC offer to: those in the call with a
    /// larger device key.
    pub fn offers_to(&self) -> Vec<[u8; 32]> {
        if !self.joined() {
            return Vec::new();
        }
        self.participants.keys().filter(|d| **d > self.device).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: [u8; 16] = [1; 16];
    const BOB: [u8; 16] = [2; 16];
    const CAROL: [u8; 16] = [3; 16];
    const A1: [u8; 32] = [10; 32];
    const B1: [u8; 32] = [20; 32];
    const B2: [u8; 32] = [21; 32];
    const C1: [u8; 32] = [5; 32];
    const D1: [u8; 32] = [40; 32];
    const E1: [u8; 32] = [50; 32];

    fn sends(effects: &[Effect]) -> Vec<(To, &'static str)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(to, s) => Some((to.clone(), s.name())),
                _ => None,
            })
            .collect()
    }

    fn logged(effects: &[Effect]) -> Option<CallOutcome> {
        effects.iter().find_map(|e| match e {
            Effect::Log(o) => Some(*o),
            _ => None,
        })
    }

    /// Alice calls Bob, who has two devices: both ring, the first to answer takes the call, the
    /// other stops ringing, and a late answer from the second is refused by Alice.
    #[test]
    fn the_first_device_to_answer_takes_the_call() {
        let (mut alice, fx) = Call::outgoing(ALICE, A1, true, false, 0, DEFAULT_RING_MS);
        assert_eq!(sends(&fx), vec![(To::Everyone, "ring")]);
        alice.rang([B1, B2]);
        let (mut b1, _) = Call::incoming(BOB, B1, ALICE, A1, true, false, 10, DEFAULT_RING_MS);
        let (mut b2, _) = Call::incoming(BOB, B2, ALICE, A1, true, false, 10, DEFAULT_RING_MS);
        assert_eq!((b1.phase, b2.phase), (Phase::Ringing, Phase::Ringing));

        let fx = b1.join(2_000).unwrap();
        assert_eq!(sends(&fx), vec![(To::Everyone, "join")]);
        // B2 hears B1's join: it stops ringing and logs nothing (it did not start the call).
        let fx = b2.on_signal(BOB, B1, Signal::Join, 2_010);
        assert_eq!((b2.phase, b2.end.clone()), (Phase::Ended, Some(EndReason::AnsweredElsewhere)));
        assert_eq!(logged(&fx), None);
        // Alice hears it: the call is active; B1 (larger key) waits for Alice's offer.
        let fx = alice.on_signal(BOB, B1, Signal::Join, 2_020);
        assert_eq!(alice.phase, Phase::Active);
        assert_eq!(sends(&fx), vec![]);
        assert_eq!(alice.offers_to(), vec![B1]);
        assert!(b1.offers_to().is_empty());
        // B2 answered too, a moment later: Alice refuses it.
        let fx = alice.on_signal(BOB, B2, Signal::Join, 2_030);
        assert!(matches!(&sends(&fx)[..], [(To::Device(d), "refused")] if *d == B2));
        assert_eq!(alice.participants.len(), 1);

        // Offers and answers reach the media client only when meant for this device.
        let offer = Signal::Offer { to: B1, sdp: "v=0".into() };
        let fx = b1.on_signal(ALICE, A1, offer.clone(), 2_100);
        assert_eq!(fx, vec![Effect::Relay(A1, offer.clone())]);
        assert_eq!(b2.on_signal(ALICE, A1, offer, 2_100), vec![]);

        // Bob hangs up after a minute: both end, Alice logs a call of 60 s.
        let fx = b1.hang_up(62_000).unwrap();
        assert_eq!(sends(&fx), vec![(To::Everyone, "leave")]);
        assert_eq!(logged(&fx), None);
        let fx = alice.on_signal(BOB, B1, Signal::Leave, 62_020);
        assert_eq!(alice.end, Some(EndReason::Left));
        assert_eq!(logged(&fx), Some(CallOutcome::Ended));
        assert_eq!(alice.duration(99_999), 60_000);
    }

    #[test]
    fn a_call_nobody_answers_is_missed_on_both_sides() {
        let (mut alice, _) = Call::outgoing(ALICE, A1, false, false, 0, 45_000);
        alice.rang([B1]);
        let (mut b1, _) = Call::incoming(BOB, B1, ALICE, A1, false, false, 100, 45_000);
        assert_eq!(alice.tick(44_999), vec![]);
        let fx = alice.tick(45_000);
        assert_eq!(alice.end, Some(EndReason::Missed));
        assert_eq!(sends(&fx), vec![(To::Everyone, "leave")]);
        assert_eq!(logged(&fx), Some(CallOutcome::Missed));
        // Bob's device hears the caller leave before its own ring time is up.
        let fx = b1.on_signal(ALICE, A1, Signal::Leave, 45_010);
        assert_eq!(b1.end, Some(EndReason::Cancelled));
        assert_eq!(logged(&fx), None);
        // Had it not heard, its own ring time ends it.
        let (mut b2, _) = Call::incoming(BOB, B2, ALICE, A1, false, false, 100, 45_000);
        assert_eq!(b2.tick(45_100).last(), Some(&Effect::Changed));
        assert_eq!(b2.end, Some(EndReason::Missed));
    }

    #[test]
    fn an_offline_or_busy_callee_ends_the_call_at_once() {
        let (mut alice, _) = Call::outgoing(ALICE, A1, false, false, 0, 45_000);
        alice.rang([B1, B2]);
        assert_eq!(alice.unreachable(B1, 10), vec![]);
        let fx = alice.unreachable(B2, 20);
        assert_eq!(alice.end, Some(EndReason::Unreachable));
        assert_eq!(logged(&fx), Some(CallOutcome::Missed));

        let (mut alice, _) = Call::outgoing(ALICE, A1, false, false, 0, 45_000);
        alice.rang([B1, B2]);
        alice.on_signal(BOB, B1, Signal::Busy, 10);
        let fx = alice.unreachable(B2, 20);
        assert_eq!(alice.end, Some(EndReason::Busy));
        assert_eq!(logged(&fx), Some(CallOutcome::Busy));
    }

    #[test]
    fn declining_on_one_device_stops_every_device_and_ends_a_direct_call() {
        let (mut alice, _) = Call::outgoing(ALICE, A1, true, false, 0, 45_000);
        alice.rang([B1, B2]);
        let (mut b1, _) = Call::incoming(BOB, B1, ALICE, A1, true, false, 0, 45_000);
        let (mut b2, _) = Call::incoming(BOB, B2, ALICE, A1, true, false, 0, 45_000);
        let fx = b1.decline(1_000).unwrap();
        assert_eq!(sends(&fx), vec![(To::Everyone, "decline")]);
        b2.on_signal(BOB, B1, Signal::Decline, 1_010);
        assert_eq!(b2.end, Some(EndReason::DeclinedElsewhere));
        let fx = alice.on_signal(BOB, B1, Signal::Decline, 1_020);
        assert_eq!(alice.end, Some(EndReason::Declined));
        assert_eq!(logged(&fx), Some(CallOutcome::Declined));
        assert!(b1.join(1_100).is_err(), "a declined call cannot be joined");
    }

    /// A group call: each pair of devices gets exactly one offerer, and a fifth device is
    /// refused.
    #[test]
    fn a_group_call_meshes_four_devices_and_refuses_a_fifth() {
        let ring = 45_000;
        let (mut a, _) = Call::outgoing(ALICE, A1, true, true, 0, ring);
        let (mut b, _) = Call::incoming(BOB, B1, ALICE, A1, true, true, 0, ring);
        let (mut c, _) = Call::incoming(CAROL, C1, ALICE, A1, true, true, 0, ring);
        let (mut d, _) = Call::incoming([4; 16], D1, ALICE, A1, true, true, 0, ring);
        let (mut e, _) = Call::incoming([5; 16], E1, ALICE, A1, true, true, 0, ring);
        // B joins; A and C hear it. A (smaller than B1) will offer; C only notes it.
        b.join(100).unwrap();
        a.on_signal(BOB, B1, Signal::Join, 110);
        c.on_signal(BOB, B1, Signal::Join, 110);
        // C joins: A and B hear; C1 is the smallest key, so both answer `present`.
        c.join(200).unwrap();
        let fx_a = a.on_signal(CAROL, C1, Signal::Join, 210);
        let fx_b = b.on_signal(CAROL, C1, Signal::Join, 210);
        assert_eq!(sends(&fx_a), vec![(To::Device(C1), "present")]);
        assert_eq!(sends(&fx_b), vec![(To::Device(C1), "present")]);
        c.on_signal(ALICE, A1, Signal::Present, 220);
        c.on_signal(BOB, B1, Signal::Present, 220);
        // D joins.
        d.join(300).unwrap();
        for (call, user, dev) in [(&mut a, ALICE, A1), (&mut b, BOB, B1), (&mut c, CAROL, C1)] {
            let fx = call.on_signal([4; 16], D1, Signal::Join, 310);
            assert!(sends(&fx).is_empty(), "D1 is the largest key: {user:?} {dev:?} offers");
        }
        // D learns of B and C from their offers.
        for (user, dev) in [(BOB, B1), (CAROL, C1)] {
            let fx = d.on_signal(user, dev, Signal::Offer { to: D1, sdp: "v=0".into() }, 320);
            assert!(matches!(fx.last(), Some(Effect::Relay(f, _)) if *f == dev));
        }
        let calls = [&a, &b, &c, &d];
        for call in calls {
            assert_eq!(call.participants.len(), 3, "{:?} sees the three others", call.device);
        }
        // Exactly one offer per pair.
        let mut pairs = BTreeSet::new();
        for call in calls {
            for to in call.offers_to() {
                assert!(pairs.insert((call.device.min(to), call.device.max(to))));
            }
        }
        assert_eq!(pairs.len(), 6);
        // E is a fifth device: refused by everyone in the call; it ends for E once no one is left.
        e.join(400).unwrap();
        let fx = a.on_signal([5; 16], E1, Signal::Join, 410);
        assert!(matches!(&sends(&fx)[..], [(To::Device(d), "refused")] if *d == E1));
        // E knew of A only (its ring): refused by A, it is alone, and its call ends.
        e.on_signal(ALICE, A1, Signal::Refused { reason: "the call is full".into() }, 420);
        assert_eq!(e.phase, Phase::Ended);
        assert_eq!(e.end, Some(EndReason::Refused("the call is full".into())));
        // The caller leaving does not end a group call for the others.
        a.hang_up(1_000).unwrap();
        b.on_signal(ALICE, A1, Signal::Leave, 1_010);
        assert_eq!(b.phase, Phase::Active);
        assert_eq!(b.participants.len(), 2);
    }

    #[test]
    fn signals_for_an_ended_call_or_from_itself_change_nothing() {
        let (mut alice, _) = Call::outgoing(ALICE, A1, false, false, 0, 45_000);
        assert_eq!(alice.on_signal(ALICE, A1, Signal::Join, 1), vec![]);
        alice.hang_up(5).unwrap();
        assert_eq!(alice.on_signal(BOB, B1, Signal::Join, 10), vec![]);
        assert!(alice.hang_up(20).is_err());
    }
}
