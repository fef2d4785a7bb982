//! Outbox decisions as plain functions of the entry and the time: when to retry a device,
//! what an attempt's result changes. The node runs them; tests and the simulator can too.

use crate::store::{OutboxEntry, Target};

/// Delay after the first failed attempt.
pub const BASE_BACKOFF_MS: u64 = 1_000;
/// Longest delay between attempts.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// The delay before attempt `attempts + 1`: doubling from [`BASE_BACKOFF_MS`] up to
/// [`MAX_BACKOFF_MS`], plus up to 25 % jitter (`jitter` in `[0, 1)`) so that many senders do not
/// retry in step.
pub fn backoff(attempts: u32, jitter: f64) -> u64 {
    let exp = BASE_BACKOFF_MS.saturating_mul(1u64 << attempts.min(16));
    let base = exp.min(MAX_BACKOFF_MS);
    let extra = (base as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as u64;
    base + extra
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
pub fn record_attempt(target: &mut Target, outcome: Result<(), String>, now: u64, jitter: f64) {
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

/// The earliest time any pending target is due, if any is pending.
pub fn next_due(entry: &OutboxEntry) -> Option<u64> {
    entry.targets.iter().filter(|t| !t.done).map(|t| t.next_at).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(peer: u8) -> Target {
        Target {
            device: [peer; 32],
            peer_id: vec![peer],
            envelope: vec![],
            done: false,
            attempts: 0,
            next_at: 0,
            last_error: None,
            deposited: false,
        }
    }

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
}
