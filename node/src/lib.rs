//! `kith-node`: the Kith node as a library, driven by the `kith` command and by the simulator.
//!
//! Dependencies run one way, top to bottom:
//!
//! - [`node`]: [`Node`], the façade: starts the network and the tasks, answers every public
//!   call through the services.
//! - `inbound` and `maintenance`: the inbound path (direct envelopes, mailbox fetches, group
//!   messages, requests) and the republishing task, over the services.
//! - `content`: one module per content kind: what receiving it does.
//! - [`services`]: names and records, messaging and the outbox, groups, conversations, devices,
//!   both sides of mailboxes; each owns its own state.
//! - `ctx`: what every service shares (keys, store, network client, clock, events, tasks).
//! - [`rules`]: the rules as pure functions of their inputs and `now` (outbox retries, trust
//!   on first use, device lists, group membership and epochs, mailbox rate, prekey rotation).
//! - [`network`]: the libp2p swarm, owned by one task, and its cloneable [`network::Client`].
//! - [`store`]: the sled store; the only module that touches sled.
//! - [`views`]: what the API shows; [`error`]: typed errors.
//! - Beside them: [`home`] (key files, API token and address), [`link`] (joining an identity
//!   as a new device), [`mailbox`] (mailbox policy and limits), [`metrics`], [`api`] (the local
//!   HTTP/JSON API), [`http`] (its server, with connection limits) and [`daemon`] (everything
//!   wired together for `kith daemon`).
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod blobs;
pub mod bot;
mod content;
mod ctx;
pub mod daemon;
pub mod error;
pub mod home;
pub mod http;
pub mod ids;
mod inbound;
pub mod link;
pub mod mailbox;
mod maintenance;
pub mod metrics;
pub mod network;
pub mod node;
pub mod preview;
mod private_fs;
pub mod rules;
pub mod services;
pub mod store;
mod tasks;
pub mod views;
pub mod web;

pub use error::NodeError;
pub use libp2p::Multiaddr;
pub use node::{Node, NodeConfig};
pub use services::mailbox_client::MailboxView;

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
