//! `kith daemon`: the node, its API, and a clean shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use libp2p::Multiaddr;
use tracing::info;

use crate::error::NodeError;
use crate::home::Home;
use crate::network::TransportKind;
use crate::node::{Node, NodeConfig};

/// Everything `kith daemon` is configured with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The home directory.
    pub home: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to bootstrap from (full multiaddrs ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Where the local API listens (a loopback address).
    pub api: SocketAddr,
    /// Minimum proof-of-work difficulty of name records, in bits.
    pub pow_bits: u32,
    /// Mailbox service policy (off unless `enabled`).
    pub mailbox: crate::mailbox::MailboxConfig,
    /// Attachments: limits, quota, download policy.
    pub media: crate::node::MediaConfig,
    /// Calls: ring time, STUN and TURN servers.
    pub calls: crate::node::CallConfig,
    /// Accounts: the per-sender inbound rate, where domains are checked.
    pub accounts: crate::node::AccountsConfig,
    /// Connection limits.
    pub limits: crate::network::Limits,
}

/// Runs the daemon until `shutdown` completes, then shuts down cleanly: the API stops taking
/// requests, the node's tasks stop, the store is flushed and `api.addr` is removed.
pub async fn run<F>(config: DaemonConfig, shutdown: F) -> Result<(), NodeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    run_with(config, shutdown, |_| ()).await
}

/// [`run`], calling `started` with the node once it runs and its API serves: a process that
/// embeds a node (a bot, `crate::bot`) starts its own tasks there; they should end when the
/// node stops (`Node::stopping`).
pub async fn run_with<F, S>(config: DaemonConfig, shutdown: F, started: S) -> Result<(), NodeError>
where
    F: Future<Output = ()> + Send + 'static,
    S: FnOnce(Node),
{
    if !config.api.ip().is_loopback() {
        return Err(NodeError::Config(format!(
            "the API must listen on a loopback address (127.0.0.1 or ::1), not {}",
            config.api.ip()
        )));
    }
    let home = Home::new(&config.home);
    let token = home.api_token()?;
    let node = Node::start(NodeConfig {
        home: config.home.clone(),
        transport: TransportKind::Tcp,
        listen: config.listen.clone(),
        bootstrap: config.bootstrap.clone(),
        pow_bits: config.pow_bits,
        mailbox: config.mailbox.clone(),
        media: config.media.clone(),
        calls: config.calls.clone(),
        accounts: config.accounts.clone(),
        limits: config.limits,
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(config.api).await.map_err(|e| {
        NodeError::Config(format!("cannot listen for the API on {}: {e}", config.api))
    })?;
    let addr = listener.local_addr().map_err(|e| NodeError::io(home.dir(), e))?;
    home.write_api_addr(addr)?;
    info!(%addr, peer_id = %node.peer_id(), user_id = %node.user_id(), "kith daemon running");
    started(node.clone());
    let stopping = node.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    let served = crate::api::serve(node.clone(), listener, token, shutdown).await;
    info!("shutting down");
    home.remove_api_addr();
    let stopped = node.shutdown().await;
    served.and(stopped)
}
