//! [`Node`]: the façade the CLI's daemon, the API, the simulator and tests drive. It starts the
//! network and the node's tasks (the network event loop, the inbound path, the delivery task,
//! maintenance, mailbox fetching, group catch-up and, on mailbox nodes, housekeeping), and
//! answers every public call through the services ([`crate::services`]); it holds no state of
//! its own.

use std::path::PathBuf;

use kith_protocol::message::MAX_TEXT;
use kith_protocol::{normalize_name, Content, RecordPolicy, Text, UserId, VerifiedNameRecord};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, watch};

use crate::ctx::{Clock, Ctx, CtxInner};
use crate::error::NodeError;
use crate::home::Home;
use crate::mailbox::MailboxConfig;
use crate::metrics::{Counters, Metrics};
use crate::network::{self, Client, NetworkConfig, TransportKind};
use crate::now_ms;
pub use crate::rules::listen::Control as ListenControl;
pub use crate::services::accounts::{
    AccountsConfig, ConsentView, MuteView, ProfileInput, ProfileView, ReportView,
};
pub use crate::services::calls::{CallConfig, CallSignalView, CallView, IceServer};
use crate::services::conversations::{mentions, Conversation};
use crate::services::devices::{DeviceListView, LinkView};
pub use crate::services::listen::ListenView;
use crate::services::mailbox_client::MailboxView;
pub use crate::services::media::{FileMeta, MediaConfig};
use crate::services::Services;
use crate::store::Store;
use crate::tasks::Tasks;

pub use crate::services::conversations::MAX_HISTORY;

/// Longest idempotency key of a send (`Idempotency-Key` of `POST /v1/messages`).
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
pub use crate::services::messaging::MAX_IN_FLIGHT;
pub use crate::services::records::{
    MAX_RESOLVE_CACHE, PREKEY_GRACE_MS, PREKEY_LIFETIME_MS, PREKEY_ROTATION_MS, RECORD_LIFETIME_MS,
    REPUBLISH_INTERVAL, RESOLVE_CACHE_MS,
};
pub use crate::views::{
    ContactView, ConversationView, DeviceView, MessageView, NodeEvent, RegisterView, RejectedView,
    ResolveView, SentView, StatusView,
};

/// Capacity of the event broadcast to API subscribers; a slower subscriber misses events.
pub const EVENT_BROADCAST: usize = 1024;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The home directory (keys, store).
    pub home: PathBuf,
    /// Transport.
    pub transport: TransportKind,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Proof-of-work difficulty, in bits, required of every name record (and spent on ours).
    pub pow_bits: u32,
    /// Mailbox service (off unless enabled).
    pub mailbox: MailboxConfig,
    /// Attachments: limits, quota, download policy.
    pub media: MediaConfig,
    /// Calls: ring time, STUN and TURN servers.
    pub calls: CallConfig,
    /// Accounts: the per-sender inbound rate, where domains are checked.
    pub accounts: AccountsConfig,
    /// Connection limits.
    pub limits: network::Limits,
}

/// Most values [`Node::bot_states`] returns at once.
pub const MAX_BOT_SCAN: usize = 10_000;

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    s: Services,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("user_id", &self.s.ctx.user_id()).finish()
    }
}

impl Node {
    /// Opens the home's keys and store, starts the network and the node's tasks.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let home = Home::new(&config.home);
        let keys = home.load_keys()?;
        let store = Store::open(&home.store_path())?;
        let mut registry = libp2p::metrics::Registry::default();
        let counters = Counters::default();
        counters.register(&mut registry);
        let (net, events_rx, event_loop) = network::new(
            keys.device.to_libp2p(),
            NetworkConfig {
                transport: config.transport.clone(),
                listen: config.listen.clone(),
                bootstrap: config.bootstrap.clone(),
                pow_bits: config.pow_bits,
                relay: config.mailbox.enabled,
                limits: config.limits,
            },
            counters.clone(),
            &mut registry,
        )?;
        let ctx = Ctx::new(CtxInner {
            keys,
            store,
            net,
            policy: RecordPolicy { min_pow_bits: config.pow_bits },
            mailbox: config.mailbox.clone(),
            metrics: std::sync::Arc::new(Metrics::new(registry)),
            counters,
            events: broadcast::channel(EVENT_BROADCAST).0,
            tasks: Tasks::default(),
            shutdown: watch::channel(false).0,
            clock: Clock,
        });
        let blobs = crate::blobs::BlobStore::open(home.dir().join("blobs"), config.media.quota)?;
        // Uploads a stopped daemon left half-written (`POST /v1/attachments`) are of no use.
        if let Ok(stale) = std::fs::read_dir(home.dir().join("uploads")) {
            for entry in stale.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".part") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let s = Services::new(
            ctx,
            blobs,
            config.media.clone(),
            config.calls.clone(),
            config.accounts.clone(),
        )?;
        s.records.rotate_prekeys(now_ms())?;
        let ctx = &s.ctx;
        ctx.spawn(event_loop.run());
        ctx.spawn(s.clone().inbound_task(events_rx));
        ctx.spawn(s.messaging.clone().outbox_task());
        ctx.spawn(s.clone().maintainer_task());
        ctx.spawn(s.clone().fetch_task());
        ctx.spawn(s.groups.clone().group_task());
        ctx.spawn(s.calls.clone().calls_task());
        ctx.spawn(s.listen.clone().listen_task());
        if ctx.mailbox.enabled {
            ctx.spawn(s.mailbox_server.clone().mailbox_housekeeping());
        }
        s.media.resume_fetches()?;
        Ok(Node { s })
    }

    /// Stops every task of the node (the network, the workers, and whatever they started),
    /// waits until all have ended, then flushes the store.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.begin_shutdown();
        self.s.ctx.tasks.stop().await;
        self.s.ctx.store.flush().await
    }

    /// How many of the node's tasks are running (none once [`Node::shutdown`] returned).
    pub fn running_tasks(&self) -> usize {
        self.s.ctx.tasks.len()
    }

    /// The services, for tests inside the crate.
    #[cfg(test)]
    pub(crate) fn services(&self) -> &Services {
        &self.s
    }

    /// Signals that the node is stopping (event streams end); [`Node::shutdown`] does the rest.
    pub fn begin_shutdown(&self) {
        let _ = self.s.ctx.shutdown.send(true);
    }

    /// A receiver that turns `true` when the node starts stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.s.ctx.shutdown.subscribe()
    }

    /// How many times this node's store was flushed to disk since it started.
    pub fn store_flushes(&self) -> u64 {
        self.s.ctx.store.flushes_run()
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.s.ctx.metrics.render()
    }

    /// Subscribes to message and status events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.s.ctx.events.subscribe()
    }

    /// The network client (for tests and the simulator).
    pub fn network(&self) -> &Client {
        &self.s.ctx.net
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        self.s.ctx.user_id()
    }

    /// This device's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.s.ctx.peer_id()
    }

    /// The registered name, if any.
    pub fn name(&self) -> Option<String> {
        self.s.ctx.name()
    }

    /// The node's status.
    pub async fn status(&self) -> Result<StatusView, NodeError> {
        let ctx = &self.s.ctx;
        let net = ctx.net.status().await?;
        let c = &ctx.counters;
        let name_check = self.s.records.name_check();
        Ok(StatusView {
            peer_id: net.peer_id.to_string(),
            user_id: self.user_id().to_string(),
            name: self.name(),
            fingerprint: ctx.keys.identity_public.fingerprint(),
            listen_addrs: net.listen_addrs.iter().map(ToString::to_string).collect(),
            connected_peers: net.connected_peers,
            outbox: ctx.store.outbox_len(),
            rejected: RejectedView {
                records: c.records_rejected.get(),
                envelopes: c.envelopes_rejected.get(),
                frames: c.frames_rejected.get(),
                busy: c.busy.get(),
            },
            name_served_by: name_check.as_ref().map(|c| c.0),
            name_conflict: name_check.and_then(|c| c.1),
            version: env!("CARGO_PKG_VERSION"),
        })
    }

    /// Publishes this user's name record again now and reads it back from every closest peer
    /// (`kith status` then shows what it found); what the node does every hour by itself.
    pub async fn republish(&self) -> Result<(), NodeError> {
        self.s.records.republish().await
    }

    /// Claims `name`: fails if it is invalid or held by another identity.
    pub async fn register(&self, name: &str) -> Result<RegisterView, NodeError> {
        self.s.records.register(name).await
    }

    /// Resolves a name to a verified record, pinning its key on first use.
    pub async fn resolve_record(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        self.s.records.resolve_record(name).await
    }

    /// Resolves a name on the DHT now (no cache), pinning its key on first use.
    pub async fn resolve_fresh(&self, name: &str) -> Result<VerifiedNameRecord, NodeError> {
        self.s.records.resolve_fresh(name).await
    }

    /// Resolves a name for the API.
    pub async fn resolve(&self, name: &str) -> Result<ResolveView, NodeError> {
        let mut view = self.s.records.resolve(name).await?;
        let user = UserId::parse(&view.user_id).map_err(|e| NodeError::BadInput(e.to_string()))?;
        if let Some(p) = view.profile.as_mut() {
            if let Some(domain) = p.domain.clone() {
                p.verification = Some(self.s.accounts.verification(&domain, user).await);
            }
        }
        Ok(view)
    }

    /// This user's public profile (a person's, empty, when none was set).
    pub fn profile(&self) -> ProfileView {
        let p = self.s.accounts.own_profile().unwrap_or_default();
        crate::services::accounts::profile_view(&p)
    }

    /// Sets this user's public profile (`None` removes it) and publishes the name record that
    /// carries it.
    pub async fn set_profile(&self, input: Option<ProfileInput>) -> Result<ProfileView, NodeError> {
        self.s.accounts.set_profile(input).await
    }

    /// Makes the picture at `path` (JPEG, PNG or WebP, at most 2 MiB) this user's avatar and
    /// publishes it with the profile; any peer may fetch it.
    pub async fn set_avatar(&self, path: &std::path::Path) -> Result<ProfileView, NodeError> {
        self.s.accounts.set_avatar(path).await
    }

    /// The avatar of `name` (its type and bytes), fetched from one of its devices unless held.
    pub async fn avatar(&self, name: &str) -> Result<(String, Vec<u8>), NodeError> {
        let r = self.s.records.resolve_record(name).await?;
        self.s.accounts.avatar_of(&r).await
    }

    /// Subscribes to (or unsubscribes from) a business or bot `name`: whether it may write to
    /// this user. Writing to it subscribes too.
    pub async fn subscribe_to(
        &self,
        name: &str,
        subscribed: bool,
    ) -> Result<ConsentView, NodeError> {
        let record = self.s.records.resolve_record(name).await?;
        if record.user_id == self.s.ctx.user_id() {
            return Err(NodeError::BadInput("you cannot subscribe to yourself".into()));
        }
        let view = self.s.accounts.subscribe(&record, subscribed).await?;
        self.s.ctx.store.flush().await?;
        Ok(view)
    }

    /// Mutes `to` (`@name` or `#id`) for `how_long` (`None`: until unmuted): its messages
    /// arrive and are kept as before, with `muted` set on the conversation and its events so
    /// the apps do not notify.
    pub async fn mute(
        &self,
        to: &str,
        how_long: Option<std::time::Duration>,
    ) -> Result<MuteView, NodeError> {
        let id = self.conversation_of(to)?;
        let until = how_long.map(|d| self.s.ctx.now().saturating_add(d.as_millis() as u64));
        self.s.ctx.store.set_mute(&id, Some(until.unwrap_or(0)))?;
        self.s.ctx.store.flush().await?;
        Ok(MuteView { conversation: hex::encode(id), until: until.map(crate::rfc3339) })
    }

    /// Unmutes `to`.
    pub async fn unmute(&self, to: &str) -> Result<(), NodeError> {
        let id = self.conversation_of(to)?;
        self.s.ctx.store.set_mute(&id, None)?;
        self.s.ctx.store.flush().await
    }

    /// Conversations muted now.
    pub fn mutes(&self) -> Result<Vec<MuteView>, NodeError> {
        let now = self.s.ctx.now();
        Ok(self
            .s
            .ctx
            .store
            .mutes()?
            .into_iter()
            .filter(|(_, until)| *until == 0 || *until > now)
            .map(|(c, until)| MuteView {
                conversation: c,
                until: (until > 0).then(|| crate::rfc3339(until)),
            })
            .collect())
    }

    fn conversation_of(&self, to: &str) -> Result<[u8; 16], NodeError> {
        self.s
            .conversations
            .conversation_of(to)?
            .ok_or_else(|| NodeError::NotFound(format!("no conversation with {to} yet")))
    }

    /// Reports `name`: keeps the report on this node with the ids of its latest messages (there
    /// is no central moderator to send it to; `docs/bots.md`, "Reporting"), and, with `block`,
    /// blocks it on every device of this user.
    pub async fn report(
        &self,
        name: &str,
        reason: &str,
        block: bool,
    ) -> Result<ReportView, NodeError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 1024 {
            return Err(NodeError::BadInput("a report's reason is 1 to 1024 bytes".into()));
        }
        let name = normalize_name(name.trim().trim_start_matches('@'))?;
        let record = self.s.records.resolve_record(&name).await?;
        let user = record.user_id.0;
        let conversation =
            kith_protocol::ConversationId::direct(&self.s.ctx.user_id(), &record.user_id);
        let messages = self
            .s
            .ctx
            .store
            .messages(Some(&conversation.0), 200)?
            .into_iter()
            .filter(|m| m.sender == user)
            .rev()
            .take(20)
            .map(|m| hex::encode(m.id))
            .collect();
        if block {
            self.block(&name, true).await?;
        }
        let entry = crate::store::ReportEntry {
            user,
            name: Some(name),
            reason: reason.to_owned(),
            at: self.s.ctx.now(),
            messages,
            blocked: block,
        };
        self.s.ctx.store.add_report(entry.clone())?;
        self.s.ctx.store.flush().await?;
        self.s.ctx.counters.reports.inc();
        Ok(ReportView::from(&entry))
    }

    /// Reports made on this node, oldest first.
    pub fn reports(&self) -> Result<Vec<ReportView>, NodeError> {
        Ok(self.s.ctx.store.reports()?.iter().map(ReportView::from).collect())
    }

    /// Accepts the key `name` resolves to now, replacing the pinned one.
    pub async fn trust(&self, name: &str) -> Result<ContactView, NodeError> {
        self.s.records.trust(name).await
    }

    /// Pinned contacts.
    pub fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        self.s.records.contacts()
    }

    /// Sends `text` to `@name` or `#id`. In a direct chat, mentioning people who are not in it
    /// forms a group; in a group, it adds them.
    pub async fn send_to(&self, to: &str, text: &str) -> Result<MessageView, NodeError> {
        Ok(self.send_message(to, text).await?.message)
    }

    /// Like [`Node::send_to`], and tells which mentioned people could not be invited (their
    /// name does not resolve now) and why.
    pub async fn send_message(&self, to: &str, text: &str) -> Result<SentView, NodeError> {
        check_text(text)?;
        let to = self.s.conversations.target(to)?;
        if mentions(text).is_empty() {
            let message = self.s.conversations.send(&to, text_content(text)).await?;
            return Ok(SentView { message, not_invited: Vec::new() });
        }
        let group = match &to {
            Conversation::Group(id) => Some(*id),
            Conversation::Direct(_) => None,
        };
        let before = group.and_then(|g| self.s.ctx.store.group(&g).ok().flatten());
        let sent = self.s.conversations.send_mentioning(to, text).await?;
        // Members this mention added get the group's shared lists as they stand.
        if let (Some(id), Some(before)) = (group, before) {
            let after = self.s.ctx.store.group(&id)?;
            if after.is_some_and(|a| {
                a.members.iter().any(|m| !before.members.iter().any(|b| b.user == m.user))
            }) {
                self.s.plans.hand_over(id).await;
            }
        }
        Ok(sent)
    }

    /// [`Node::send_message`] made safe to retry: the first send with idempotency key `key`
    /// sends; a later one with the same key (within 24 hours) sends nothing and returns the
    /// message the first created, as it is now, and `true`. Keyed sends run one at a time.
    pub async fn send_message_once(
        &self,
        key: &str,
        to: &str,
        text: &str,
    ) -> Result<(SentView, bool), NodeError> {
        check_key(key)?;
        let _one_at_a_time = self.s.idempotent_sends.lock().await;
        let store = &self.s.ctx.store;
        if let Some(id) = store.idempotent_send(key, self.s.ctx.now())? {
            let message = self.message(&kith_protocol::MessageId(id).to_string())?;
            return Ok((SentView { message, not_invited: Vec::new() }, true));
        }
        // The message's id comes from the key, so a send that stored its message but crashed
        // before remembering the key is still found.
        let id = crate::ids::idempotent_id(&self.s.ctx.user_id(), key);
        if let Some(message) = self.stored_view(&id)? {
            return Ok((SentView { message, not_invited: Vec::new() }, true));
        }
        let sent = crate::ids::with_id(id, self.send_message(to, text)).await?;
        let id = kith_protocol::MessageId::parse(&sent.message.id)
            .map_err(|e| NodeError::BadInput(format!("message id: {e}")))?;
        store.put_idempotent_send(key, &id.0, self.s.ctx.now())?;
        store.flush().await?;
        Ok((sent, false))
    }

    /// Queues a text message to `to` (a name); returns once it is durably queued.
    pub async fn send_text(&self, to: &str, text: &str) -> Result<MessageView, NodeError> {
        check_text(text)?;
        self.send_content(to, text_content(text)).await
    }

    /// The stored message `id` and the conversation to answer it in (`#<conversation id>`).
    fn about(&self, id: &str) -> Result<(crate::store::StoredMessage, String), NodeError> {
        let m = self
            .s
            .ctx
            .store
            .message(&parse_id(id)?)?
            .ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        if m.waiting_for.is_some() || crate::views::ANNOTATIONS.contains(&m.kind.as_str()) {
            return Err(NodeError::BadInput(format!("message {id} cannot be answered or changed")));
        }
        if m.is_group() {
            let to = format!("#{}", kith_protocol::ConversationId(m.conversation));
            return Ok((m, to));
        }
        // A direct chat: answered by the other user's name, once this node has confirmed it
        // (a message from someone new is answerable when its sender's record was checked).
        let me = self.s.ctx.user_id();
        let names = crate::views::names_for(&self.s.ctx.store, me, &[m.peer])?;
        match names.get(&m.peer) {
            Some(name) if m.peer != me.0 => {
                let to = format!("@{name}");
                Ok((m, to))
            }
            _ => Err(NodeError::NotFound(format!(
                "the name of the other person in the chat of message {id} is not confirmed yet; \
                 try again in a moment"
            ))),
        }
    }

    /// Shares a point with `to` (`@name` or `#id`): latitude and longitude in degrees (checked),
    /// an accuracy radius in metres and a label (256 bytes at most), both optional.
    pub async fn share_location(
        &self,
        to: &str,
        lat: f64,
        lon: f64,
        accuracy_m: Option<f32>,
        label: Option<String>,
    ) -> Result<MessageView, NodeError> {
        if accuracy_m.is_some_and(|a| !a.is_finite() || a < 0.0) {
            return Err(NodeError::BadInput(
                "the accuracy must be a radius in metres, 0 or more".into(),
            ));
        }
        let label = label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
        let content = Content::Location { lat, lon, accuracy_m, label };
        content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        self.send_content(to, content).await
    }

    /// Blocks (or unblocks) `name` on this device and tells this user's other devices: from
    /// then on everything from that user (messages, group posts, calls, planning) is dropped
    /// unseen, and sending to them directly is refused. Answers the decision as listed.
    pub async fn block(&self, name: &str, blocked: bool) -> Result<BlockView, NodeError> {
        let name = kith_protocol::normalize_name(name.trim().trim_start_matches('@'))?;
        let user = match self.s.ctx.store.contact(&name)? {
            Some(c) => c.user_id,
            None => match crate::views::names(&self.s.ctx.store, self.s.ctx.user_id())?
                .into_iter()
                .find(|(_, n)| *n == name)
            {
                Some((u, _)) => u,
                None => self.s.records.resolve_record(&name).await?.user_id.0,
            },
        };
        if user == self.s.ctx.user_id().0 {
            return Err(NodeError::BadInput("you cannot block yourself".into()));
        }
        let at = self.s.ctx.now();
        let entry = crate::store::BlockEntry { blocked, name: Some(name.clone()), at };
        self.s.ctx.store.put_block(&user, entry)?;
        self.s.ctx.store.flush().await?;
        let note = kith_protocol::message::BlockNote {
            user: kith_protocol::UserId(user),
            name: Some(name.clone()),
            blocked,
            at,
        };
        self.s.messaging.send_to_own(Content::SyncBlock(note)).await;
        Ok(BlockView {
            name: Some(name),
            user_id: hex::encode(user),
            blocked,
            since: crate::rfc3339(at),
        })
    }

    /// Everyone this user blocked.
    pub fn blocked(&self) -> Result<Vec<BlockView>, NodeError> {
        Ok(self
            .s
            .ctx
            .store
            .blocks()?
            .into_iter()
            .filter(|(_, b)| b.blocked)
            .map(|(user, b)| BlockView {
                name: b.name,
                user_id: user,
                blocked: true,
                since: crate::rfc3339(b.at),
            })
            .collect())
    }

    /// Interactive messages: send, update, answer (buttons, lists, forms, product cards).
    pub fn interactions(&self) -> &crate::services::interactive::Interactions {
        &self.s.interactions
    }

    /// Planning together: events, shared lists, bills, payment requests, live location.
    pub fn plans(&self) -> &crate::services::plans::Plans {
        &self.s.plans
    }

    /// The conversation id (hex) of `@name` or `#id`, if there is one.
    pub fn conversation_id(&self, to: &str) -> Result<Option<String>, NodeError> {
        Ok(self.s.conversations.conversation_of(to)?.map(hex::encode))
    }

    /// Replies to message `id` in its conversation.
    pub async fn reply(&self, id: &str, text: &str) -> Result<MessageView, NodeError> {
        check_text(text)?;
        let (m, to) = self.about(id)?;
        let content = Content::Reply { to: kith_protocol::MessageId(m.id), body: text.to_owned() };
        self.send_content(&to, content).await
    }

    /// Gives (or, with `remove`, takes back) a reaction to message `id`, for everyone in its
    /// conversation.
    pub async fn react(
        &self,
        id: &str,
        emoji: &str,
        remove: bool,
    ) -> Result<MessageView, NodeError> {
        let emoji = emoji.trim();
        if emoji.is_empty() || emoji.len() > crate::rules::annotations::MAX_REACTION {
            return Err(NodeError::BadInput(format!(
                "a reaction is 1 to {} bytes",
                crate::rules::annotations::MAX_REACTION
            )));
        }
        let (m, to) = self.about(id)?;
        let content = Content::Reaction {
            to: kith_protocol::MessageId(m.id),
            emoji: emoji.to_owned(),
            remove,
        };
        self.send_content(&to, content).await
    }

    /// Replaces the text of this user's message `id` for everyone in its conversation.
    pub async fn edit_message(&self, id: &str, text: &str) -> Result<MessageView, NodeError> {
        check_text(text)?;
        let (m, to) = self.about(id)?;
        if m.sender != self.s.ctx.user_id().0 {
            return Err(NodeError::NotAllowed("you can edit only your own messages".into()));
        }
        if m.kind != "text" && m.kind != "reply" {
            return Err(NodeError::BadInput(format!("a {} message has no text to edit", m.kind)));
        }
        let content = Content::Edit { to: kith_protocol::MessageId(m.id), body: text.to_owned() };
        self.send_content(&to, content).await
    }

    /// Deletes this user's message `id` for everyone in its conversation.
    pub async fn delete_message(&self, id: &str) -> Result<MessageView, NodeError> {
        let (m, to) = self.about(id)?;
        if m.sender != self.s.ctx.user_id().0 {
            return Err(NodeError::NotAllowed("you can delete only your own messages".into()));
        }
        self.send_content(&to, Content::Delete { to: kith_protocol::MessageId(m.id) }).await
    }

    /// Sends a message with any content to `to` (`@name` or `#id`); returns once it is durably
    /// stored.
    pub async fn send_content(&self, to: &str, content: Content) -> Result<MessageView, NodeError> {
        let to = self.s.conversations.target(to)?;
        self.s.conversations.send(&to, content).await
    }

    /// Sends the file at `path` to `to` (`@name` or `#id`) as an attachment: seals it into the
    /// blob store, sends the `attachment` message, and asks this user's mailboxes to hold the
    /// blob. Returns once the message is durably stored.
    pub async fn send_file(
        &self,
        to: &str,
        path: &std::path::Path,
        meta: FileMeta,
    ) -> Result<MessageView, NodeError> {
        let target = self.s.conversations.target(to)?;
        if meta.caption.as_ref().is_some_and(|c| c.len() > kith_protocol::blob::MAX_CAPTION) {
            return Err(NodeError::BadInput(format!(
                "a caption is at most {} bytes",
                kith_protocol::blob::MAX_CAPTION
            )));
        }
        let a = self.s.media.seal(path, meta).await?;
        let hash = a.hash;
        let content = Content::Attachment(Box::new(a.clone()));
        let view = match self.s.conversations.send(&target, content).await {
            Ok(view) => view,
            Err(e) => {
                // Sealed under a fresh key for this message only: nothing else refers to it.
                if let Err(removed) = self.s.media.blobs.remove(&hash) {
                    tracing::warn!("cannot remove the blob of a file not sent: {removed}");
                }
                return Err(e);
            }
        };
        let id = kith_protocol::MessageId::parse(&view.id)
            .map_err(|e| NodeError::Internal(format!("message id: {e}")))?;
        if let Some(stored) = self.s.ctx.store.message(&id.0)? {
            self.s.media.record(&stored, &a, self.peer_id())?;
            self.s.ctx.store.flush().await?;
        }
        self.s.media.hold_at_mailboxes(hash);
        self.message(&view.id)
    }

    /// A fresh path (in an owner-only directory of the home) for a file being uploaded through
    /// the API before [`Node::send_file`] seals it; the caller removes it afterwards.
    pub fn upload_path(&self) -> Result<PathBuf, NodeError> {
        let dir = self.s.media.blobs.dir().with_file_name("uploads");
        crate::private_fs::create_dir(&dir).map_err(|e| NodeError::io(&dir, e))?;
        Ok(dir.join(format!("{:016x}.part", rand::random::<u64>())))
    }

    /// The media settings.
    pub fn media_config(&self) -> &MediaConfig {
        &self.s.media.config
    }

    /// Starts a call in a conversation (`@name` or `#group`): every device of the others
    /// rings. A client runs the media (`docs/api.md`, "Calls").
    pub async fn start_call(&self, to: &str, video: bool) -> Result<CallView, NodeError> {
        self.s.calls.start(to, video).await
    }

    /// Answers a call ringing on this device.
    pub fn accept_call(&self, id: &str) -> Result<CallView, NodeError> {
        self.s.calls.accept(id)
    }

    /// Declines a call ringing on this device (this user's other devices stop ringing too).
    pub fn decline_call(&self, id: &str) -> Result<CallView, NodeError> {
        self.s.calls.decline(id)
    }

    /// Leaves a call, or cancels it before anyone answered.
    pub fn hang_up(&self, id: &str) -> Result<CallView, NodeError> {
        self.s.calls.hang_up(id)
    }

    /// Sends this device's WebRTC `offer` or `answer` to another device in call `id`.
    pub fn call_signal(
        &self,
        id: &str,
        to: &str,
        kind: &str,
        sdp: String,
    ) -> Result<(), NodeError> {
        self.s.calls.relay(id, to, kind, sdp)
    }

    /// The calls ringing or running on this device, and its call history (ended calls, newest
    /// first).
    pub fn calls(&self) -> Result<(Vec<CallView>, Vec<CallView>), NodeError> {
        self.s.calls.list()
    }

    /// One call, current or in the history.
    pub fn call(&self, id: &str) -> Result<CallView, NodeError> {
        self.s.calls.get(id)
    }

    /// Starts a listening session in a conversation with these attachment messages (ids) as
    /// its queue; this device hosts it (`docs/api.md`, "Listening together").
    pub async fn start_listening(
        &self,
        to: &str,
        tracks: &[String],
    ) -> Result<ListenView, NodeError> {
        self.s.listen.start(to, tracks).await
    }

    /// The listening sessions this device knows.
    pub fn listening(&self) -> Result<Vec<ListenView>, NodeError> {
        self.s.listen.list()
    }

    /// One listening session.
    pub fn listening_session(&self, id: &str) -> Result<ListenView, NodeError> {
        self.s.listen.get(id)
    }

    /// A control of a listening session (applied here on its host, else sent to the host).
    pub fn listen_control(
        &self,
        id: &str,
        control: ListenControl,
    ) -> Result<ListenView, NodeError> {
        self.s.listen.control(id, control)
    }

    /// This device's page joins or leaves a listening session.
    pub fn listen_join(&self, id: &str, joined: bool) -> Result<ListenView, NodeError> {
        self.s.listen.join(id, joined)
    }

    /// The call settings (ring time, STUN and TURN servers).
    pub fn call_config(&self) -> &CallConfig {
        self.s.calls.config()
    }

    /// The inline preview of message `id`'s attachment: its MIME type and bytes.
    pub fn preview(&self, id: &str) -> Result<Option<kith_protocol::blob::Preview>, NodeError> {
        Ok(self.s.media.attachment(&parse_id(id)?)?.1.preview)
    }

    /// Starts fetching the attachment of message `id` (if it is not held whole) and returns the
    /// message as it stands.
    pub fn start_download(&self, id: &str) -> Result<MessageView, NodeError> {
        let mid = parse_id(id)?;
        let (_, a) = self.s.media.attachment(&mid)?;
        if !matches!(self.s.media.blobs.missing(&a.hash), Ok(m) if m.is_empty()) {
            self.s.media.start_fetch(a.hash);
        }
        self.message(id)
    }

    /// Fetches the attachment of message `id` if needed and waits until it is held whole.
    pub async fn download(&self, id: &str) -> Result<(), NodeError> {
        self.s.media.download(&parse_id(id)?).await
    }

    /// Writes the plaintext of message `id`'s attachment to `dest` (fetching it first if
    /// needed), and remembers where; returns the bytes written.
    pub async fn save_attachment(
        &self,
        id: &str,
        dest: &std::path::Path,
    ) -> Result<u64, NodeError> {
        let mid = parse_id(id)?;
        self.s.media.download(&mid).await?;
        let n = self.s.media.save_to(&mid, dest.to_owned()).await?;
        self.mark_saved(id, &dest.to_string_lossy())?;
        Ok(n)
    }

    /// Records that the attachment of message `id` was saved at `path` (by a client that read
    /// it through the API).
    pub fn mark_saved(&self, id: &str, path: &str) -> Result<(), NodeError> {
        if !self.s.ctx.store.set_saved(&parse_id(id)?, path)? {
            return Err(NodeError::NotFound(format!("message {id} carries no attachment")));
        }
        Ok(())
    }

    /// The attachment of message `id`, its blob's manifest (when held) and whether every chunk
    /// is held, for reading its plaintext with [`Node::read_attachment`].
    pub fn attachment(
        &self,
        id: &str,
    ) -> Result<
        (kith_protocol::blob::Attachment, Option<kith_protocol::blob::Manifest>, bool),
        NodeError,
    > {
        let (_, a) = self.s.media.attachment(&parse_id(id)?)?;
        let manifest = self.s.media.blobs.manifest(&a.hash)?;
        let complete = matches!(self.s.media.blobs.missing(&a.hash), Ok(m) if m.is_empty());
        Ok((a, manifest, complete))
    }

    /// The plaintext of chunk `index` of an attachment's blob (checked and opened).
    pub async fn read_attachment(
        &self,
        a: &kith_protocol::blob::Attachment,
        manifest: std::sync::Arc<kith_protocol::blob::Manifest>,
        index: usize,
    ) -> Result<Vec<u8>, NodeError> {
        let blobs = self.s.media.blobs.clone();
        let (hash, key) = (a.hash, a.blob_key());
        tokio::task::spawn_blocking(move || blobs.plain_chunk(&manifest, &hash, &key, index))
            .await
            .map_err(|e| NodeError::Internal(format!("a blob read failed: {e}")))?
            .map_err(NodeError::from)
    }

    /// The history, oldest first: the direct conversation with `with`, or everything.
    pub fn messages(
        &self,
        with: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageView>, NodeError> {
        self.s.conversations.messages(with, limit)
    }

    /// Marks the conversation with `@name` or `#id` read, here and on this user's other
    /// devices; returns how many messages became read here.
    pub async fn mark_read(&self, with: &str) -> Result<usize, NodeError> {
        self.s.conversations.mark_read(with).await
    }

    /// Withdraws an outgoing message not yet delivered to every device (or still waiting for its
    /// recipient's name to resolve): it is `cancelled` and no further delivery is tried.
    pub async fn cancel(&self, id: &str) -> Result<MessageView, NodeError> {
        if let Some(view) = self.s.groups.cancel_waiting(id).await? {
            return Ok(view);
        }
        self.s.messaging.cancel(id).await
    }

    /// One message by id (32 hex digits).
    pub fn message(&self, id: &str) -> Result<MessageView, NodeError> {
        self.s.conversations.message(id)
    }

    /// Sends `content` to `to` once: the message's id is derived from `key` and this user
    /// ([`crate::ids::idempotent_id`]); when a message of that id is stored already, nothing is
    /// sent and it is answered as it is now, with `true`. Safe across crashes (the id is
    /// stored with the message); two sends with one key at the same moment are the caller's to
    /// avoid ([`crate::bot`] never does; `POST /v1/messages` holds a lock).
    pub async fn send_content_once(
        &self,
        key: &str,
        to: &str,
        content: Content,
    ) -> Result<(MessageView, bool), NodeError> {
        self.send_once_with(key, self.send_content(to, content)).await
    }

    /// Runs `send` (one of this node's sends: a text, an interactive message, a payment
    /// request …) once for `key`, as [`Node::send_content_once`] does: the first message of the
    /// history it creates takes the id derived from `key`.
    pub async fn send_once_with<F>(
        &self,
        key: &str,
        send: F,
    ) -> Result<(MessageView, bool), NodeError>
    where
        F: std::future::Future<Output = Result<MessageView, NodeError>>,
    {
        check_key(key)?;
        let id = crate::ids::idempotent_id(&self.s.ctx.user_id(), key);
        if let Some(view) = self.stored_view(&id)? {
            return Ok((view, true));
        }
        Ok((crate::ids::with_id(id, send).await?, false))
    }

    /// For a message from a sender this node has no name for: looks up the name the sender
    /// claimed (kept with the message) once, and pins it if it is the sender's. Whether the
    /// sender is now named; a failed lookup is an error, to be tried again.
    pub async fn check_sender_name(&self, id: &[u8; 16]) -> Result<bool, NodeError> {
        let Some(m) = self.s.ctx.store.message(id)? else { return Ok(false) };
        let Some(name) = m.claimed_name else { return Ok(false) };
        self.s.records.check_claimed_name(UserId(m.sender), &name).await
    }

    /// A stored message as the history shows it, if there is one of that id.
    pub fn stored_view(&self, id: &[u8; 16]) -> Result<Option<MessageView>, NodeError> {
        match self.s.ctx.store.message(id)? {
            Some(m) => {
                Ok(Some(crate::views::view_of(&self.s.ctx.store, self.s.ctx.user_id(), &m)?))
            }
            None => Ok(None),
        }
    }

    /// The content of a stored message of a structured kind (interactive, planning), decoded.
    pub fn stored_content(&self, id: &[u8; 16]) -> Result<Option<Content>, NodeError> {
        Ok(self.s.ctx.store.message(id)?.and_then(|m| {
            kith_protocol::codec::from_slice(
                m.plan.as_deref()?,
                kith_protocol::message::MAX_MESSAGE_SIZE,
            )
            .ok()
        }))
    }

    /// Whether `conversation` is a group this device knows.
    pub fn is_group(&self, conversation: &[u8; 16]) -> Result<bool, NodeError> {
        Ok(self.s.ctx.store.group(conversation)?.is_some())
    }

    /// Whether incoming messages enter the bot inbox (a business's or bot's node).
    pub fn inbox_on(&self) -> bool {
        self.s.ctx.store.inbox_on()
    }

    /// Woken when a message enters the bot inbox.
    pub fn inbox_notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.s.ctx.store.inbox_notify()
    }

    /// Up to `limit` bot inbox entries after `after`, oldest first: (key, message id).
    pub fn inbox_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 16])>, NodeError> {
        self.s.ctx.store.inbox_after(after, limit)
    }

    /// Marks a bot inbox entry handled; answers whether it was there.
    pub fn inbox_done(&self, key: u64) -> Result<bool, NodeError> {
        let done = self.s.ctx.store.inbox_done(key)?;
        if done {
            self.s.ctx.counters.bot_handled.inc();
        }
        Ok(done)
    }

    /// Counts a message a bot gave up on.
    pub fn bot_gave_up(&self) {
        self.s.ctx.counters.bot_failed.inc();
    }

    /// A value a bot keeps for a conversation (JSON), if set.
    pub fn bot_state<T: serde::de::DeserializeOwned>(
        &self,
        conversation: &[u8; 16],
        key: &str,
    ) -> Result<Option<T>, NodeError> {
        match self.s.ctx.store.bot_get(conversation, key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::BadInput(format!("bot state {key:?}: {e}"))),
            None => Ok(None),
        }
    }

    /// The values a bot keeps for a conversation under keys starting with `prefix`, in key
    /// order: at most [`MAX_BOT_SCAN`] of them. One value per item (`order:ID`) keeps each
    /// small, where one value holding them all would reach its 64 KiB limit.
    pub fn bot_states<T: serde::de::DeserializeOwned>(
        &self,
        conversation: &[u8; 16],
        prefix: &str,
    ) -> Result<Vec<(String, T)>, NodeError> {
        let found = self.s.ctx.store.bot_scan(conversation, prefix, MAX_BOT_SCAN)?;
        found
            .into_iter()
            .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
                Ok(v) => Ok((key, v)),
                Err(e) => Err(NodeError::BadInput(format!("bot state {key:?}: {e}"))),
            })
            .collect()
    }

    /// Keeps (or with `None` removes) a value a bot keeps for a conversation (JSON, at most
    /// 64 KiB).
    pub fn set_bot_state<T: serde::Serialize>(
        &self,
        conversation: &[u8; 16],
        key: &str,
        value: Option<&T>,
    ) -> Result<(), NodeError> {
        if key.is_empty() || key.len() > 128 {
            return Err(NodeError::BadInput("a state key is 1 to 128 bytes".into()));
        }
        let bytes = value
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| NodeError::BadInput(format!("bot state {key:?}: {e}")))?;
        self.s.ctx.store.bot_set(conversation, key, bytes.as_deref())
    }

    /// Parses `@name` or `#id-prefix` (a unique prefix of a conversation id).
    pub fn target(&self, to: &str) -> Result<Conversation, NodeError> {
        self.s.conversations.target(to)
    }

    /// Direct conversations (one per contact) and groups.
    pub fn conversations(&self) -> Result<Vec<ConversationView>, NodeError> {
        self.s.conversations.conversations()
    }

    /// Every conversation with its last message and unread count, newest first.
    pub fn conversation_summaries(
        &self,
    ) -> Result<Vec<crate::views::ConversationSummary>, NodeError> {
        self.s.conversations.summaries()
    }

    /// The members of a conversation.
    pub fn members(&self, to: &str) -> Result<Vec<String>, NodeError> {
        self.s.conversations.members(to)
    }

    /// The stored group envelopes (ciphertext, as published) of a group, oldest first.
    pub fn group_envelopes(&self, to: &str, limit: usize) -> Result<Vec<Vec<u8>>, NodeError> {
        self.s.conversations.group_envelopes(to, limit)
    }

    /// Leaves a group: tells the members, forgets the key, stops listening.
    pub async fn leave(&self, to: &str) -> Result<(), NodeError> {
        let Conversation::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("only groups can be left".into()));
        };
        self.s.groups.leave(id).await
    }

    /// Removes `@name` from a group (allowed for members who joined after you).
    pub async fn remove_member(&self, to: &str, name: &str) -> Result<(), NodeError> {
        let Conversation::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("only group members can be removed".into()));
        };
        self.s.groups.remove_member(id, &normalize_name(name.trim_start_matches('@'))?).await
    }

    /// The user's devices, this one first.
    pub async fn devices(&self) -> Result<Vec<DeviceListView>, NodeError> {
        self.s.devices.devices().await
    }

    /// Creates a one-time link code for a new device, valid for
    /// [`crate::services::devices::LINK_CODE_TTL_MS`] (needs the identity key).
    pub async fn link_start(&self) -> Result<LinkView, NodeError> {
        self.s.devices.link_start().await
    }

    /// Like [`Node::link_start`], valid for `ttl_ms` (at most
    /// [`crate::services::devices::LINK_CODE_TTL_MS`]).
    pub async fn link_start_with(&self, ttl_ms: u64) -> Result<LinkView, NodeError> {
        self.s.devices.link_start_with(ttl_ms).await
    }

    /// The state of a link code.
    pub fn link_status(&self, id: &str) -> Result<LinkView, NodeError> {
        self.s.devices.link_status(id)
    }

    /// Revokes one of the user's other devices: drops it from the record, republishes, and
    /// starts a new epoch in every group so it holds no current group key.
    pub async fn revoke_device(&self, peer_id: &str) -> Result<DeviceListView, NodeError> {
        self.s.devices.revoke_device(peer_id).await
    }

    /// The mailboxes, for the API.
    pub fn mailboxes(&self) -> Result<Vec<MailboxView>, NodeError> {
        self.s.mailbox_client.mailboxes()
    }

    /// Enrolls this device with the mailbox at `addr` (ending in `/p2p/<peer id>`), lists it in
    /// the name record and republishes the record.
    pub async fn add_mailbox(&self, addr: &str) -> Result<MailboxView, NodeError> {
        self.s.mailbox_client.add_mailbox(addr).await
    }

    /// Removes a mailbox from the record and republishes it.
    pub async fn remove_mailbox(&self, peer_id: &str) -> Result<(), NodeError> {
        self.s.mailbox_client.remove_mailbox(peer_id).await
    }
}

fn parse_id(id: &str) -> Result<[u8; 16], NodeError> {
    kith_protocol::MessageId::parse(id)
        .map(|m| m.0)
        .map_err(|e| NodeError::BadInput(format!("message id {id:?}: {e}")))
}

fn check_text(text: &str) -> Result<(), NodeError> {
    if text.len() > MAX_TEXT {
        return Err(NodeError::BadInput(format!(
            "text of {} bytes exceeds the limit of {MAX_TEXT}",
            text.len()
        )));
    }
    if text.is_empty() {
        return Err(NodeError::BadInput("empty message".into()));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), NodeError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(NodeError::BadInput(format!(
            "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(())
}

pub(crate) fn text_content(text: &str) -> Content {
    Content::Text(Text { body: text.to_owned() })
}

/// Someone this user blocked (or unblocked).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlockView {
    /// Their name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Their user id.
    pub user_id: String,
    /// Blocked now.
    pub blocked: bool,
    /// Since when (RFC 3339).
    pub since: String,
}

/// A node of its own (memory transport, no bootstrap) in a new home under `dir`, for tests.
#[cfg(test)]
pub(crate) fn lone_node(dir: &std::path::Path, mailbox: bool) -> NodeConfig {
    Home::new(dir).init("test", now_ms()).expect("a new home");
    lone_node_again(dir, mailbox)
}

/// The node of [`lone_node`] started again from its home.
#[cfg(test)]
pub(crate) fn lone_node_again(dir: &std::path::Path, mailbox: bool) -> NodeConfig {
    NodeConfig {
        home: dir.to_path_buf(),
        transport: TransportKind::Memory,
        listen: vec!["/memory/0".parse().expect("a memory address")],
        bootstrap: vec![],
        pow_bits: 8,
        mailbox: MailboxConfig { enabled: mailbox, ..MailboxConfig::default() },
        media: MediaConfig::default(),
        calls: CallConfig::default(),
        accounts: AccountsConfig::default(),
        limits: network::Limits::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whatever the node started ends with it: once `shutdown` returns, no task holds the node,
    /// so its store can be opened again at once (the simulator's restarts rely on it).
    #[tokio::test]
    async fn shutdown_ends_every_task_and_releases_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = lone_node(dir.path(), true);
        let node = Node::start(config.clone()).await.unwrap();
        // A background job that would otherwise hold the node (and its store) for a long time,
        // like a lookup waiting on the DHT.
        let held = node.clone();
        node.services().ctx.spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        });
        assert!(node.running_tasks() >= 7, "the workers and the job: {}", node.running_tasks());
        node.shutdown().await.unwrap();
        assert_eq!(node.running_tasks(), 0);

        drop(node);
        // An upload the daemon was writing when it stopped is removed when it starts again.
        let stale = dir.path().join("uploads").join("0123456789abcdef.part");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"half a file").unwrap();
        let again = Node::start(config).await.expect("the store is free again");
        assert!(!stale.exists(), "a stale upload was left behind");
        again.shutdown().await.unwrap();
    }
}
