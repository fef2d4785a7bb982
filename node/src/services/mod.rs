//! The node's services. Each owns its own state and reaches the others only downwards:
//!
//! ```text
//!   mailbox_server ──> mailbox_client ──┐
//!   devices ──> groups ──> messaging ──> records ──> outbox ──> ctx
//!   conversations ──┘──────────┘
//! ```
//!
//! - [`outbox`]: the durable outbox (its lock, what a rule decided, receipts, dropped devices).
//! - [`records`]: prekeys, the name record, resolution with trust on first use, device lists.
//! - [`messaging`]: sealing and queueing direct messages, the delivery task.
//! - [`groups`]: group chats: forming, member changes and epochs, posting, validation, sync.
//! - [`conversations`]: conversations as the user names them, the history, read marks.
//! - [`devices`]: linking and revoking devices.
//! - [`mailbox_client`], [`mailbox_server`]: both sides of mailboxes.
//! - [`media`]: attachments: sealing, recording, serving, fetching blobs, mailbox custody.
//! - [`calls`]: call signalling between devices, ringing, call history.
//! - [`listen`]: listening together: a session's playback, controls, clock offsets.
//! - [`interactive`]: interactive messages: sending, updating, answering, showing.
//! - [`plans`]: planning together: events, shared lists, bills, payment requests, live
//!   location, folded from the conversation's messages.
//! - [`accounts`]: this user's profile, others' profiles with their domain checked, consent
//!   between people and businesses or bots, the per-sender inbound rate, mutes, reports.
//! - [`sessions`]: Double Ratchet sessions with other devices: which seals a message, opening,
//!   acknowledgements, lost sessions, revocation (held by the outbox service).
//! - [`signals`]: ephemeral signals (calls, listening) sealed to devices and sent once.
//!
//! [`Services`] holds one of each; the inbound path ([`crate::inbound`]), the maintenance task
//! ([`crate::maintenance`]) and the [`crate::Node`] façade drive them.

pub mod accounts;
pub mod calls;
pub mod conversations;
pub mod devices;
pub mod groups;
pub mod interactive;
pub mod listen;
pub mod mailbox_client;
pub mod mailbox_server;
pub mod media;
pub mod messaging;
pub mod outbox;
pub mod plans;
pub mod records;
pub mod sessions;
pub mod signals;

use std::sync::{Arc, Mutex};

use crate::ctx::Ctx;
use crate::error::NodeError;

/// One of each service, sharing one context. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Services {
    pub(crate) ctx: Ctx,
    pub(crate) outbox: outbox::Outbox,
    pub(crate) records: records::Records,
    pub(crate) messaging: messaging::Messaging,
    pub(crate) groups: groups::Groups,
    pub(crate) conversations: conversations::Conversations,
    pub(crate) devices: devices::Devices,
    pub(crate) mailbox_client: mailbox_client::MailboxClient,
    pub(crate) mailbox_server: mailbox_server::MailboxServer,
    pub(crate) media: media::Media,
    pub(crate) calls: calls::Calls,
    pub(crate) listen: listen::Listen,
    pub(crate) plans: plans::Plans,
    pub(crate) interactions: interactive::Interactions,
    pub(crate) accounts: accounts::Accounts,
    /// Held by a send with an idempotency key from its check of the key to its recording.
    pub(crate) idempotent_sends: Arc<tokio::sync::Mutex<()>>,
}

impl Services {
    /// Builds every service over `ctx`.
    pub(crate) fn new(
        ctx: Ctx,
        blobs: crate::blobs::BlobStore,
        media_config: media::MediaConfig,
        call_config: calls::CallConfig,
        accounts_config: accounts::AccountsConfig,
    ) -> Result<Self, NodeError> {
        let outbox = outbox::Outbox::new(ctx.clone());
        let records = records::Records::new(ctx.clone(), outbox.clone());
        let messaging = messaging::Messaging::new(ctx.clone(), records.clone(), outbox.clone())?;
        let media = media::Media::new(ctx.clone(), records.clone(), blobs, media_config);
        let groups =
            groups::Groups::new(ctx.clone(), records.clone(), messaging.clone(), media.clone());
        let accounts = accounts::Accounts::new(
            ctx.clone(),
            records.clone(),
            messaging.clone(),
            media.clone(),
            accounts_config,
        );
        let conversations = conversations::Conversations {
            ctx: ctx.clone(),
            accounts: accounts.clone(),
            messaging: messaging.clone(),
            groups: groups.clone(),
            records: records.clone(),
        };
        let signals = signals::Signals { ctx: ctx.clone(), conversations: conversations.clone() };
        let calls = calls::Calls::new(ctx.clone(), signals.clone(), call_config);
        let listen = listen::Listen::new(ctx.clone(), signals);
        let plans = plans::Plans::new(ctx.clone(), conversations.clone());
        let interactions =
            interactive::Interactions { ctx: ctx.clone(), conversations: conversations.clone() };
        let devices = devices::Devices {
            ctx: ctx.clone(),
            records: records.clone(),
            outbox: outbox.clone(),
            groups: groups.clone(),
            links: Arc::default(),
        };
        let mailbox_client = mailbox_client::MailboxClient {
            ctx: ctx.clone(),
            records: records.clone(),
            wake_fetch: Arc::default(),
        };
        let mailbox_server = mailbox_server::MailboxServer {
            ctx: ctx.clone(),
            mailbox_client: mailbox_client.clone(),
            media: media.clone(),
            deposit_rate: Arc::new(Mutex::new(crate::rules::mailbox::RateTable::new(
                ctx.mailbox.deposits_per_minute,
            ))),
        };
        Ok(Services {
            ctx,
            outbox,
            records,
            messaging,
            groups,
            conversations,
            devices,
            mailbox_client,
            mailbox_server,
            media,
            calls,
            listen,
            plans,
            interactions,
            accounts,
            idempotent_sends: Arc::default(),
        })
    }
}
