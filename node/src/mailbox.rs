//! Mailbox service: holds sealed envelopes for enrolled devices while they are offline.

use std::time::Duration;

use kith_protocol::UserId;

/// Policy and limits of a mailbox node (`kith daemon --mailbox`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Whether this node serves as a mailbox.
    pub enabled: bool,
    /// If not empty, only these users may enroll devices; otherwise anyone may.
    pub allow: Vec<UserId>,
    /// Most envelopes held for one recipient device.
    pub max_messages: u64,
    /// Most bytes of envelopes held for one recipient device.
    pub max_bytes: u64,
    /// How long an envelope is kept before it expires.
    pub retention: Duration,
    /// Most deposits one sending peer may make per minute.
    pub deposits_per_minute: u32,
}

/// Default number of envelopes held per recipient device.
pub const DEFAULT_MAX_MESSAGES: u64 = 10_000;
/// Default bytes held per recipient device: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default retention: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default deposits per sending peer per minute.
pub const DEFAULT_DEPOSITS_PER_MINUTE: u32 = 120;

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            enabled: false,
            allow: Vec::new(),
            max_messages: DEFAULT_MAX_MESSAGES,
            max_bytes: DEFAULT_MAX_BYTES,
            retention: DEFAULT_RETENTION,
            deposits_per_minute: DEFAULT_DEPOSITS_PER_MINUTE,
        }
    }
}
