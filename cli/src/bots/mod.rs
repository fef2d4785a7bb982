//! Example bots that embed a node (`kith bot pizzeria`, `kith bot barber`): each is a
//! [`kith_node::bot::Bot`] run inside the daemon's process, which also serves the local API (so
//! `kith status` and the web app work against it). They register their name, publish their
//! profile, then handle every incoming message at least once (`docs/bots.md`).

pub mod barber;
pub mod pizzeria;
pub mod ratings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kith_node::bot::{self, Bot, BotConfig};
use kith_node::home::Home;
use kith_node::node::ProfileInput;
use kith_node::{Node, NodeError};
use kith_protocol::interactive::{Choice, Element, Interactive};
use kith_protocol::Content;

use crate::config::DaemonArgs;

/// What every embedded bot takes on the command line.
#[derive(Debug, clap::Args)]
pub struct BotArgs {
    /// The name to register for the bot (kept if it holds one already)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Handlers running at once
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds between an order's status updates (pizzeria) or how long before an appointment
    /// its reminder goes (barber, in minutes: 60 by default); shorter for demonstrations
    #[arg(long, value_name = "N")]
    pub step: Option<u64>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Runs the daemon of `home` with `bot` inside it, after registering `name` and publishing
/// `profile`; until SIGINT or SIGTERM.
pub fn run_embedded<B: Bot>(
    home: &Home,
    args: BotArgs,
    profile: ProfileInput,
    bot: Arc<B>,
    also: impl FnOnce(Node) + Send + 'static,
) -> Result<()> {
    let name = args.name.clone();
    let config = BotConfig { concurrency: args.concurrency.max(1), ..BotConfig::default() };
    crate::commands::daemon_with(home, args.daemon, move |node| {
        tokio::spawn(async move {
            if let Err(e) = start(&node, name.as_deref(), profile).await {
                tracing::error!("the bot cannot start: {e}");
                node.begin_shutdown();
                return;
            }
            also(node.clone());
            match bot::run(node.clone(), bot, config).await {
                Ok(stats) => tracing::info!(?stats, "the bot stopped"),
                Err(e) => {
                    tracing::error!("the bot stopped: {e}");
                    node.begin_shutdown();
                }
            }
        });
    })
}

/// Registers the name (retrying while the network forms) and publishes the profile.
async fn start(node: &Node, name: Option<&str>, profile: ProfileInput) -> Result<(), NodeError> {
    let mut stopping = node.stopping();
    if let Some(name) = name {
        let mut tries = 0;
        loop {
            match node.register(name).await {
                Ok(r) => {
                    tracing::info!(name = %r.name, "the bot's name is registered");
                    break;
                }
                Err(e @ (NodeError::NameTaken(_) | NodeError::InvalidName(_))) => return Err(e),
                Err(e) if tries >= 60 => return Err(e),
                Err(e) => {
                    tracing::info!("registering @{name}: {e}; trying again");
                    tries += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopping.changed() => return Err(NodeError::NetworkStopped),
                    }
                }
            }
        }
    }
    node.set_profile(Some(profile)).await?;
    Ok(())
}

/// Buttons.
pub fn buttons(text: &str, choices: &[(&str, &str)]) -> Content {
    let choices =
        choices.iter().map(|(id, label)| Choice { id: (*id).into(), label: (*label).into() });
    Content::Interactive(Box::new(Interactive {
        text: text.into(),
        element: Element::Buttons(choices.collect()),
        expires: None,
    }))
}

/// Money in minor units as `12.50`.
pub fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// What this bot's own interactive message `id` offered, if it is one.
pub fn offered(node: &Node, id: &kith_protocol::MessageId) -> Option<Interactive> {
    match node.stored_content(&id.0).ok()?? {
        Content::Interactive(i) => Some(*i),
        _ => None,
    }
}

/// The id of the all-zero conversation, under which a bot keeps what is not one
/// conversation's (orders, bookings, rating totals).
pub const GLOBAL: [u8; 16] = [0; 16];
