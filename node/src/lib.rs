//! `kith-node`: the Kith node as a library, driven by the `kith` command and by the simulator.
//!
//! - [`home`]: the home directory: key files, API token and address.
//! - [`store`]: the sled store; the only module that touches sled.
//! - [`network`]: the libp2p swarm, owned by one task, and its cloneable [`network::Client`].
//! - [`node`]: names, resolution with trust on first use, direct messages, outbox.
//! - [`group`]: group chats over gossipsub: forming by mention, epochs, validation, sync.
//! - [`devices`]: one identity on several devices: device list, linking, revocation, copies.
//! - [`link`]: joining an identity as a new device (`kith init --link`).
//! - [`mail`]: mailboxes: enrolling, depositing, fetching, and the mailbox service.
//! - [`mailbox`]: mailbox policy and limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`rules`]: the rules as pure functions of their inputs and `now` (outbox retries, trust
//!   on first use, device lists, group membership and epochs, mailbox rate, prekey rotation).
//! - [`api`]: the local HTTP/JSON API.
//! - [`daemon`]: wires everything together for `kith daemon`.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod daemon;
pub mod devices;
pub mod error;
pub mod group;
pub mod home;
pub mod link;
pub mod mail;
pub mod mailbox;
pub mod metrics;
pub mod network;
pub mod node;
pub mod rules;
pub mod store;
mod tasks;

pub use error::NodeError;
pub use libp2p::Multiaddr;
pub use mail::MailboxView;
pub use node::{Node, NodeConfig};

/// The default address of the local API.
pub const DEFAULT_API: &str = "127.0.0.1:7390";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 (UTC, seconds precision).
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
