//! Outbox decisions as plain functions of the entry and the time: when to retry a device,
//! what an attempt's result, a delivery receipt or a new device list changes. The node runs
//! them; tests and the simulator can too.

use crate::store::{DeviceTarget, OutboxEntry, Waiting};

/// Delay after the first failed attempt.
pub const BASE_BACKOFF_MS: u64 = 1_000;
/// Longest delay between attempts.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// How long a message to a name that does not resolve is kept trying (then it fails).
pub const WAITING_LIMIT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Longest delay between two lookups of a name that does not resolve.
pub const MAX_LOOKUP_BACKOFF_MS: u64 = 10 * 60 * 1000;
/// A new connection makes a waiting name's lookup due, but no sooner than this after the last.
pub const MIN_LOOKUP_GAP_MS: u64 = 5_000;

/// The delay before attempt `attempts + 1`: doubling from [`BASE_BACKOFF_MS`] up to
/// [`MAX_BACKOFF_MS`], plus up to 25 % jitter (`jitter` in `[0, 1)`) so that many senders do not
/// retry in step.
pub fn backoff(attempts: u32, jitter: f64) -> u64 {
    backoff_up_to(attempts, MAX_BACKOFF_MS, jitter)
}

/// [`BASE_BACKOFF_MS`] doubled `attempts` times, at most `cap`, plus up to 25 % jitter.
fn backoff_up_to(attempts: u32, cap: u64, jitter: f64) -> u64 {
    let base = BASE_BACKOFF_MS.saturating_mul(1u64 << attempts.min(20)).min(cap);
    base + (base as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64
}

/// Indices of the targets due for an attempt at `now`.
pub fn due(entry: &OutboxEntry, now: u64) -> Vec<usize> {
    entry
        .targets
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.done && t.next_at <= now)
        .map(|(i, _)| i)
        .collect()
}

/// Records the outcome of an attempt on a target.
pub fn record_attempt(
    target: &mut DeviceTarget,
    outcome: Result<(), String>,
    now: u64,
    jitter: f64,
) {
    match outcome {
        Ok(()) => {
            target.done = true;
            target.last_error = None;
        }
        Err(e) => {
            target.next_at = now + backoff(target.attempts, jitter);
            target.attempts = target.attempts.saturating_add(1);
            target.last_error = Some(e);
        }
    }
}

/// Makes every pending target on `peer` due now (the peer just connected).
pub fn peer_connected(entry: &mut OutboxEntry, peer: &[u8]) -> bool {
    let mut changed = false;
    for t in entry.targets.iter_mut().filter(|t| !t.done && t.peer_id == peer) {
        t.next_at = 0;
        changed = true;
    }
    changed
}

/// Whether every target acknowledged.
pub fn complete(entry: &OutboxEntry) -> bool {
    entry.targets.iter().all(|t| t.done)
}

/// The earliest time any pending target (or the lookup of a waiting name) is due, if any.
pub fn next_due(entry: &OutboxEntry) -> Option<u64> {
    let targets = entry.targets.iter().filter(|t| !t.done).map(|t| t.next_at);
    targets.chain(entry.waiting.as_ref().map(|w| w.next_at)).min()
}

/// Whether the recipient's name of a waiting entry is due for a lookup at `now`.
pub fn lookup_due(entry: &OutboxEntry, now: u64) -> bool {
    entry.waiting.as_ref().is_some_and(|w| w.next_at <= now)
}

/// What to do after a lookup of a waiting name failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Try again at the entry's new `next_at`.
    Retry,
    /// [`WAITING_LIMIT_MS`] passed since the message was queued: it fails.
    GiveUp,
}

/// Records a failed lookup that started at `started` and ended at `now`: the next one waits
/// twice as long as the last (from [`BASE_BACKOFF_MS`] up to [`MAX_LOOKUP_BACKOFF_MS`], plus
/// up to 25 % jitter), until [`WAITING_LIMIT_MS`] after the message was queued.
pub fn lookup_failed(
    w: &mut Waiting,
    error: String,
    started: u64,
    now: u64,
    jitter: f64,
) -> Lookup {
    w.attempts = w.attempts.saturating_add(1);
    w.last_try = started;
    w.last_error = Some(error);
    if now >= w.since.saturating_add(WAITING_LIMIT_MS) {
        return Lookup::GiveUp;
    }
    w.next_at = now + backoff_up_to(w.attempts, MAX_LOOKUP_BACKOFF_MS, jitter);
    Lookup::Retry
}

/// A peer connected: the network may now reach the name's record, so look it up soon (but not
/// sooner than [`MIN_LOOKUP_GAP_MS`] after the last lookup). Whether anything changed.
pub fn lookup_on_connect(entry: &mut OutboxEntry, now: u64) -> bool {
    let Some(w) = entry.waiting.as_mut() else { return false };
    let soon = now.max(w.last_try.saturating_add(MIN_LOOKUP_GAP_MS));
    if soon < w.next_at {
        w.next_at = soon;
        return true;
    }
    false
}

/// The result of one delivery attempt to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The device acknowledged it.
    Delivered,
    /// The device was not reached (the reason), but a mailbox now holds it.
    Deposited(String),
    /// Neither.
    Failed(String),
    /// The device does not hold the session the envelope was sealed in; the caller sealed it
    /// again (with Noise, starting a new session): due at once, not counted as a failure.
    Resealed,
}

/// What became of an outbox entry after a change, so the caller knows what to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing changed.
    Unchanged,
    /// Some devices are still pending: store the entry. `stored` when every pending device's
    /// copy is held by a mailbox (the message is then `stored`).
    Pending {
        /// Every device either acknowledged or has its envelope in a mailbox.
        stored: bool,
    },
    /// Every device acknowledged: remove the entry; the message is `delivered`.
    Complete,
    /// No device is left to deliver to (all were dropped): remove the entry, status unchanged.
    Empty,
}

fn progress(entry: &OutboxEntry) -> Progress {
    if entry.targets.is_empty() {
        Progress::Empty
    } else if complete(entry) {
        Progress::Complete
    } else {
        Progress::Pending { stored: entry.targets.iter().all(|t| t.done || t.deposited) }
    }
}

/// Records the outcome of an attempt on target `index` (an index that no longer exists changes
/// nothing). A deposit keeps the device pending: it is tried directly at the usual pace until
/// it, or its delivery receipt, answers.
pub fn finish_attempt(
    entry: &mut OutboxEntry,
    index: usize,
    outcome: Attempt,
    now: u64,
    jitter: f64,
) -> Progress {
    let Some(t) = entry.targets.get_mut(index) else { return Progress::Unchanged };
    let result = match outcome {
        Attempt::Delivered => Ok(()),
        Attempt::Deposited(err) => {
            t.deposited = true;
            Err(err)
        }
        Attempt::Failed(err) => Err(err),
        Attempt::Resealed => {
            t.next_at = now;
            t.deposited = false;
            t.last_error = Some("the device lost its session; sealed again".into());
            return progress(entry);
        }
    };
    record_attempt(t, result, now, jitter);
    progress(entry)
}

/// A delivery receipt from `device` (the message reached it through a mailbox).
pub fn apply_receipt(entry: &mut OutboxEntry, device: &[u8; 32]) -> Progress {
    let mut changed = false;
    for t in entry.targets.iter_mut().filter(|t| t.device == *device && !t.done) {
        t.done = true;
        changed = true;
    }
    if changed {
        progress(entry)
    } else {
        Progress::Unchanged
    }
}

/// The recipient's record now lists only `keep`: stop waiting for the other devices (revoked
/// or replaced).
pub fn keep_devices(entry: &mut OutboxEntry, keep: &[[u8; 32]]) -> Progress {
    if entry.targets.iter().all(|t| keep.contains(&t.device)) {
        return Progress::Unchanged;
    }
    entry.targets.retain(|t| keep.contains(&t.device));
    progress(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::harness::fixtures::device_target as target;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0, 0.0), 1_000);
        assert_eq!(backoff(1, 0.0), 2_000);
        assert_eq!(backoff(5, 0.0), 32_000);
        assert_eq!(backoff(6, 0.0), 60_000);
        assert_eq!(backoff(40, 0.0), 60_000);
        assert_eq!(backoff(0, 0.999_999), 1_249);
    }

    #[test]
    fn attempts_schedule_and_connect_resets() {
        let mut e = OutboxEntry {
            id: [0; 16],
            recipient: [0; 16],
            targets: vec![target(1), target(2)],
            created_at: 0,
            mailboxes: vec![],
            in_history: true,
            waiting: None,
            plain: None,
        };
        assert_eq!(due(&e, 0), vec![0, 1]);
        record_attempt(&mut e.targets[0], Ok(()), 0, 0.0);
        record_attempt(&mut e.targets[1], Err("offline".into()), 100, 0.0);
        assert_eq!(due(&e, 100), Vec::<usize>::new());
        assert_eq!(next_due(&e), Some(1_100));
        assert!(!complete(&e));
        assert!(peer_connected(&mut e, &[2]));
        assert_eq!(due(&e, 100), vec![1]);
        record_attempt(&mut e.targets[1], Ok(()), 200, 0.0);
        assert!(complete(&e));
        assert_eq!(next_due(&e), None);
    }

    fn entry(targets: Vec<DeviceTarget>) -> OutboxEntry {
        OutboxEntry {
            id: [0; 16],
            recipient: [0; 16],
            targets,
            created_at: 0,
            mailboxes: vec![],
            in_history: true,
            waiting: None,
            plain: None,
        }
    }

    #[test]
    fn a_deposit_keeps_the_device_pending_and_marks_the_message_stored() {
        let mut e = entry(vec![target(1), target(2)]);
        let p = finish_attempt(&mut e, 0, Attempt::Delivered, 0, 0.0);
        assert_eq!(p, Progress::Pending { stored: false });
        let p = finish_attempt(&mut e, 1, Attempt::Deposited("offline".into()), 10, 0.0);
        assert_eq!(p, Progress::Pending { stored: true });
        assert!(!e.targets[1].done);
        assert_eq!(e.targets[1].next_at, 1_010, "still retried directly");
        assert_eq!(finish_attempt(&mut e, 7, Attempt::Delivered, 20, 0.0), Progress::Unchanged);
        assert_eq!(apply_receipt(&mut e, &[2; 32]), Progress::Complete);
        assert_eq!(apply_receipt(&mut e, &[2; 32]), Progress::Unchanged, "a second receipt");
    }

    #[test]
    fn a_failed_attempt_is_retried_with_backoff_and_remembers_why() {
        let mut e = entry(vec![target(1)]);
        let p = finish_attempt(&mut e, 0, Attempt::Failed("unreachable".into()), 5_000, 0.5);
        assert_eq!(p, Progress::Pending { stored: false });
        assert_eq!(e.targets[0].next_at, 5_000 + 1_125);
        assert_eq!(e.targets[0].last_error.as_deref(), Some("unreachable"));
        assert_eq!(e.targets[0].attempts, 1);
    }

    #[test]
    fn dropping_devices_completes_or_empties_an_entry() {
        let mut e = entry(vec![target(1), target(2)]);
        assert_eq!(keep_devices(&mut e, &[[1; 32], [2; 32]]), Progress::Unchanged);
        record_attempt(&mut e.targets[0], Ok(()), 0, 0.0);
        assert_eq!(keep_devices(&mut e, &[[1; 32]]), Progress::Complete, "only the done one");
        let mut e = entry(vec![target(3)]);
        assert_eq!(keep_devices(&mut e, &[[1; 32]]), Progress::Empty);
        assert!(e.targets.is_empty());
    }

    fn waiting(since: u64) -> Waiting {
        Waiting {
            name: "carol".into(),
            since,
            attempts: 0,
            last_try: 0,
            next_at: since,
            last_error: None,
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_looked_up_with_backoff_for_a_week() {
        let mut e = entry(vec![]);
        e.waiting = Some(waiting(1_000));
        assert!(lookup_due(&e, 1_000));
        let w = e.waiting.as_mut().expect("waiting");
        assert_eq!(lookup_failed(w, "not found".into(), 1_000, 1_500, 0.0), Lookup::Retry);
        assert_eq!(w.next_at, 1_500 + 2_000);
        for _ in 0..30 {
            assert_eq!(lookup_failed(w, "not found".into(), 1_500, 1_500, 0.0), Lookup::Retry);
        }
        assert_eq!(w.next_at, 1_500 + MAX_LOOKUP_BACKOFF_MS, "capped");
        assert_eq!(next_due(&e), Some(1_500 + MAX_LOOKUP_BACKOFF_MS));
        let w = e.waiting.as_mut().expect("waiting");
        let late = 1_000 + WAITING_LIMIT_MS;
        assert_eq!(lookup_failed(w, "not found".into(), late, late, 0.0), Lookup::GiveUp);
        assert_eq!(w.last_error.as_deref(), Some("not found"));
    }

    #[test]
    fn a_new_connection_brings_the_lookup_forward_but_not_too_often() {
        let mut e = entry(vec![]);
        let mut w = waiting(0);
        w.last_try = 10_000;
        w.next_at = 600_000;
        e.waiting = Some(w);
        assert!(lookup_on_connect(&mut e, 12_000));
        assert_eq!(e.waiting.as_ref().map(|w| w.next_at), Some(15_000), "5 s after the last");
        assert!(!lookup_on_connect(&mut e, 13_000), "already due then");
        assert!(!lookup_on_connect(&mut e, 14_000));
        let mut plain = entry(vec![target(1)]);
        assert!(!lookup_on_connect(&mut plain, 0));
    }
}
