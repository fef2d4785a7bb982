//! Listening together: the shared playback state of a session and the clock offset a listener
//! estimates to the session's host (`docs/protocol.md` 6.5). Pure: times come in as
//! arguments, in ms of the clock of the device that runs the rule.
//!
//! The host's device holds the state; every change (play, pause, seek, next, a track added,
//! stop) makes a new state with a higher `seq`, stamped with the host's clock: "at host time
//! `at`, track `index` was at `position_ms`, playing or not". A listener turns that into a
//! position now with its offset to the host's clock, estimated from round trips (the median of
//! several, as NTP's clock filter does with its samples).

use std::collections::VecDeque;

pub use kith_protocol::listen::ListenControl as Control;

/// Most tracks in a session's queue.
pub const MAX_QUEUE: usize = 64;
/// Round-trip samples a listener keeps for its offset estimate.
pub const MAX_SAMPLES: usize = 16;
/// Pings a listener sends when it joins (then one every [`RESYNC_MS`]).
pub const PINGS_ON_JOIN: usize = 5;
/// How often a joined listener measures its offset again.
pub const RESYNC_MS: u64 = 30_000;

/// A session's playback, as its host last set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Playback {
    /// The tracks: attachment messages, in order.
    pub queue: Vec<[u8; 16]>,
    /// The current track's place in the queue.
    pub index: u32,
    /// Playing (else paused).
    pub playing: bool,
    /// The current track's position at host time `at`.
    pub position_ms: u64,
    /// Host time (ms since the Unix epoch, the host's clock) the position was true at.
    pub at: u64,
    /// Increases with every change; the highest wins.
    pub seq: u64,
    /// The session ended.
    pub stopped: bool,
}

impl Playback {
    /// A new session, paused at the start of its first track.
    pub fn new(queue: Vec<[u8; 16]>, now: u64) -> Result<Playback, &'static str> {
        if queue.is_empty() {
            return Err("a session needs a track");
        }
        if queue.len() > MAX_QUEUE {
            return Err("too many tracks (64 at most)");
        }
        Ok(Playback {
            queue,
            index: 0,
            playing: false,
            position_ms: 0,
            at: now,
            seq: 1,
            stopped: false,
        })
    }

    /// The current track's position at host time `t`.
    pub fn position_at(&self, t: u64) -> u64 {
        if self.playing {
            self.position_ms.saturating_add(t.saturating_sub(self.at))
        } else {
            self.position_ms
        }
    }

    /// The current track.
    pub fn track(&self) -> Option<[u8; 16]> {
        self.queue.get(self.index as usize).copied()
    }

    /// Applies a member's control at host time `now`.
    pub fn apply(&mut self, control: &Control, now: u64) -> Result<(), &'static str> {
        if self.stopped {
            return Err("the session has ended");
        }
        let here = self.position_at(now);
        match control {
            Control::Play { at_ms } => {
                self.position_ms = at_ms.unwrap_or(here);
                self.playing = true;
            }
            Control::Pause => {
                self.position_ms = here;
                self.playing = false;
            }
            Control::Seek { position_ms } => self.position_ms = *position_ms,
            Control::Next => {
                if self.index as usize + 1 >= self.queue.len() {
                    return Err("this is the last track");
                }
                self.index += 1;
                self.position_ms = 0;
            }
            Control::Add { track } => {
                if self.queue.len() >= MAX_QUEUE {
                    return Err("the queue is full (64 tracks)");
                }
                self.queue.push(track.0);
                self.position_ms = here;
            }
            Control::Stop => {
                self.stopped = true;
                self.playing = false;
                self.position_ms = here;
            }
        }
        self.at = now;
        self.seq += 1;
        Ok(())
    }

    /// Whether `other` should replace this state (it is newer).
    pub fn replaced_by(&self, other: &Playback) -> bool {
        other.seq > self.seq
    }
}

/// One round trip to the host: sent at `t0`, the host's clock read `host`, back at `t1` (this
/// device's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    offset: i64,
    rtt: u64,
}

/// A listener's estimate of the host's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockSync {
    samples: VecDeque<Sample>,
}

impl ClockSync {
    /// Records a round trip. A reply that came back before it was sent is ignored.
    pub fn add(&mut self, t0: u64, host: u64, t1: u64) {
        if t1 < t0 {
            return;
        }
        let rtt = t1 - t0;
        let midpoint = t0 as i128 + i128::from(rtt / 2);
        let offset = (i128::from(host) - midpoint).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { offset, rtt });
    }

    /// Host clock minus this clock, and the round trip, each the median of the samples; `None`
    /// before the first.
    pub fn estimate(&self) -> Option<(i64, u64)> {
        if self.samples.is_empty() {
            return None;
        }
        let mut offsets: Vec<i64> = self.samples.iter().map(|s| s.offset).collect();
        let mut rtts: Vec<u64> = self.samples.iter().map(|s| s.rtt).collect();
        offsets.sort_unstable();
        rtts.sort_unstable();
        Some((offsets[offsets.len() / 2], rtts[rtts.len() / 2]))
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No sample yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_protocol::MessageId;

    const T1: [u8; 16] = [1; 16];
    const T2: [u8; 16] = [2; 16];

    #[test]
    fn play_pause_seek_and_next_move_the_position_as_a_listener_expects() {
        let mut p = Playback::new(vec![T1], 1_000).unwrap();
        assert_eq!((p.playing, p.position_at(5_000), p.seq), (false, 0, 1));
        p.apply(&Control::Play { at_ms: None }, 2_000).unwrap();
        assert_eq!(p.position_at(2_000), 0);
        assert_eq!(p.position_at(12_500), 10_500);
        p.apply(&Control::Pause, 12_000).unwrap();
        assert_eq!(p.position_at(60_000), 10_000, "paused: the position stays");
        p.apply(&Control::Seek { position_ms: 30_000 }, 13_000).unwrap();
        assert_eq!(p.position_at(20_000), 30_000);
        p.apply(&Control::Play { at_ms: None }, 14_000).unwrap();
        assert_eq!(p.position_at(15_000), 31_000);
        assert_eq!(p.apply(&Control::Next, 15_000), Err("this is the last track"));
        p.apply(&Control::Add { track: MessageId(T2) }, 16_000).unwrap();
        assert_eq!(p.position_at(17_000), 33_000, "adding a track does not disturb playback");
        p.apply(&Control::Next, 18_000).unwrap();
        assert_eq!((p.track(), p.position_at(18_500), p.playing), (Some(T2), 500, true));
        let before = p.clone();
        p.apply(&Control::Stop, 19_000).unwrap();
        assert!(p.stopped && !p.playing);
        assert!(before.replaced_by(&p) && !p.replaced_by(&before));
        assert_eq!(p.apply(&Control::Play { at_ms: None }, 20_000), Err("the session has ended"));
    }

    #[test]
    fn a_queue_is_bounded_and_not_empty() {
        assert!(Playback::new(vec![], 0).is_err());
        assert!(Playback::new(vec![T1; MAX_QUEUE + 1], 0).is_err());
        let mut p = Playback::new(vec![T1; MAX_QUEUE], 0).unwrap();
        assert!(p.apply(&Control::Add { track: MessageId(T2) }, 1).is_err());
    }

    /// The host's clock runs 5 s ahead; round trips take 20 to 400 ms, one way or the other
    /// slower: the median lands within a few ms of the truth where one sample would not.
    #[test]
    fn the_median_of_round_trips_finds_the_host_clock() {
        let truth: i64 = 5_000;
        let mut sync = ClockSync::default();
        assert_eq!(sync.estimate(), None);
        // (there, back): one-way delays of each round trip.
        let trips = [(10, 10), (12, 8), (300, 20), (9, 11), (10, 390), (11, 9), (10, 12)];
        let mut t0 = 100_000u64;
        for (there, back) in trips {
            let host = (t0 + there) as i64 + truth;
            sync.add(t0, host as u64, t0 + there + back);
            t0 += 1_000;
        }
        let (offset, rtt) = sync.estimate().unwrap();
        assert!((offset - truth).abs() <= 2, "offset {offset}");
        assert_eq!(rtt, 20);
        // A reply from before the ping is ignored; old samples leave.
        sync.add(10, 0, 5);
        assert_eq!(sync.len(), trips.len());
        for _ in 0..MAX_SAMPLES {
            sync.add(t0, t0 + 100, t0);
        }
        assert_eq!(sync.estimate(), Some((100, 0)));
    }
}
