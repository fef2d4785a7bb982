//! Bots that embed a node: [`run`] hands every message a business's or bot's node receives to
//! a [`Bot`], at least once, across restarts and crashes, with replies sent at most once.
//!
//! - **At least once.** A business's or bot's node puts every incoming message it stores in
//!   its inbox, in the same write as the message (`Store::insert_incoming`), before the sender
//!   is told it arrived. [`run`] takes messages from the inbox oldest first, and removes one
//!   only once its handler returned `Ok`; a handler that fails is tried again with backoff, up
//!   to [`BotConfig::max_attempts`] times. After a crash or `kill -9`, the messages whose
//!   handling did not finish are handled again.
//! - **Replies at most once.** Every message a handler sends through its [`Turn`] has an id
//!   derived from the incoming message's id and the reply's place in the handler
//!   ([`crate::ids`]): handled again, the handler's replies are found already sent and are not
//!   sent twice. A handler's own state changes ([`Turn::set_state`]) should be keyed by what
//!   they are about (an order by the message that placed it) so doing them twice is harmless.
//! - **Concurrency with back-pressure.** Up to [`BotConfig::concurrency`] handlers run at once;
//!   messages of one conversation are handled one at a time, in order. What waits, waits in the
//!   inbox on disk, not in memory.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kith_protocol::Content;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::NodeError;
use crate::node::Node;
use crate::views::MessageView;

/// How a bot runs.
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// Handlers running at once, at most.
    pub concurrency: usize,
    /// Tries of one message before it is given up (logged and counted in `bot_failed`).
    pub max_attempts: u32,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig { concurrency: 64, max_attempts: 8 }
    }
}

/// Inbox entries read at once.
const READ_AHEAD: usize = 1024;
/// The first retry of a failed handler waits this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A bot: what to do with one incoming message.
pub trait Bot: Send + Sync + 'static {
    /// Handles the message of `turn`. `Ok` removes it from the inbox; an error has it tried
    /// again later.
    fn handle(&self, turn: Turn) -> impl Future<Output = Result<(), NodeError>> + Send;
}

/// One incoming message being handled, and the ways to answer it.
#[derive(Debug)]
pub struct Turn {
    node: Node,
    message: MessageView,
    conversation: [u8; 16],
    replies: AtomicU32,
}

impl Turn {
    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The message.
    pub fn message(&self) -> &MessageView {
        &self.message
    }

    /// The structured answer this message is, if it answers an interactive message: which
    /// message, and the choices or form values.
    pub fn answer(&self) -> Option<kith_protocol::interactive::InteractiveAnswer> {
        let id = kith_protocol::MessageId::parse(&self.message.id).ok()?;
        match self.node.stored_content(&id.0).ok()?? {
            Content::InteractiveAnswer(a) => Some(*a),
            _ => None,
        }
    }

    /// Where to answer: `#<group id>` for a group, `@sender` for a direct chat. Fails while
    /// the sender's name is not known yet (the node learns it moments after the first
    /// message), which has the message handled again shortly.
    pub fn target(&self) -> Result<String, NodeError> {
        if self.node.is_group(&self.conversation)? {
            return Ok(format!("#{}", self.message.conversation));
        }
        // A view shows a sender it has no name for as its user id.
        let known = |from: &str| kith_protocol::UserId::parse(from).is_err();
        if known(&self.message.from) {
            return Ok(format!("@{}", self.message.from));
        }
        // Named since the message was read (the runner checks the name the sender claimed
        // before it hands the message out)?
        let id = kith_protocol::MessageId::parse(&self.message.id)
            .map_err(|e| NodeError::BadInput(e.to_string()))?;
        match self.node.stored_view(&id.0)? {
            Some(m) if known(&m.from) => Ok(format!("@{}", m.from)),
            _ => Err(NodeError::NotFound("the sender's name is not known yet".into())),
        }
    }

    /// Answers with a text in the message's conversation (once, however often the message is
    /// handled).
    pub async fn reply(&self, text: &str) -> Result<MessageView, NodeError> {
        self.send(&self.target()?, crate::node::text_content(text)).await
    }

    /// Answers with any content in the message's conversation (once).
    pub async fn reply_content(&self, content: Content) -> Result<MessageView, NodeError> {
        self.send(&self.target()?, content).await
    }

    /// Sends `content` to `to` (`@name` or `#id`), once: the n-th send of this handler has an
    /// id derived from the incoming message's id and n.
    pub async fn send(&self, to: &str, content: Content) -> Result<MessageView, NodeError> {
        let n = self.replies.fetch_add(1, Ordering::Relaxed);
        let key = format!("bot:{}:{n}", self.message.id);
        Ok(self.node.send_content_once(&key, to, content).await?.0)
    }

    /// Runs one of the node's sends once (an interactive message, a payment request …): the
    /// first history message it creates has the id of this handler's next send.
    pub async fn once<F>(&self, send: F) -> Result<MessageView, NodeError>
    where
        F: Future<Output = Result<MessageView, NodeError>>,
    {
        let n = self.replies.fetch_add(1, Ordering::Relaxed);
        let key = format!("bot:{}:{n}", self.message.id);
        Ok(self.node.send_once_with(&key, send).await?.0)
    }

    /// A value this bot keeps for the conversation (JSON), if set.
    pub fn state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, NodeError> {
        self.node.bot_state(&self.conversation, key)
    }

    /// Keeps a value for the conversation (`None` removes it); written to disk with the next
    /// flush (every reply flushes).
    pub fn set_state<T: Serialize>(&self, key: &str, value: Option<&T>) -> Result<(), NodeError> {
        self.node.set_bot_state(&self.conversation, key, value)
    }
}

/// One inbox entry waiting to be handled.
#[derive(Clone, Copy, Debug)]
struct Item {
    key: u64,
    id: [u8; 16],
    attempts: u32,
    not_before: Instant,
}

/// What [`run`] did, when it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BotStats {
    /// Messages handled.
    pub handled: u64,
    /// Handler failures (each retried, or given up).
    pub failures: u64,
    /// Messages given up after [`BotConfig::max_attempts`] tries.
    pub given_up: u64,
}

/// The message `id` as the history shows it once the name its sender claimed checked out
/// (`None`: not named, or the lookup failed and the next try looks again).
async fn named_view(node: &Node, id: &str) -> Option<MessageView> {
    let id = kith_protocol::MessageId::parse(id).ok()?.0;
    match node.check_sender_name(&id).await {
        Ok(true) => node.stored_view(&id).ok().flatten(),
        Ok(false) => None,
        Err(e) => {
            debug!("cannot check the sender's name yet: {e}");
            None
        }
    }
}

/// Runs `bot` on every message in `node`'s inbox, and every one that arrives, until the node
/// stops. The node's profile must declare a business or a bot (its inbox is on only then).
pub async fn run<B: Bot>(
    node: Node,
    bot: Arc<B>,
    config: BotConfig,
) -> Result<BotStats, NodeError> {
    if !node.inbox_on() {
        return Err(NodeError::NotAllowed(
            "a bot's node must declare a business or a bot in its profile (kith profile set \
             --kind bot), which turns its inbox on"
                .into(),
        ));
    }
    let notify = node.inbox_notify();
    let mut stopping = node.stopping();
    let (done_tx, mut done_rx) =
        mpsc::channel::<(Item, [u8; 16], Result<(), NodeError>)>(config.concurrency.max(1));
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut last: Option<u64> = None;
    let mut running = 0usize;
    let mut busy: HashSet<[u8; 16]> = HashSet::new();
    let mut stats = BotStats::default();
    loop {
        // Newly arrived entries.
        if pending.len() < READ_AHEAD {
            for (key, id) in node.inbox_after(last, READ_AHEAD)? {
                last = Some(key);
                pending.push_back(Item { key, id, attempts: 0, not_before: Instant::now() });
            }
        }
        // Start what may start: a free slot, its conversation idle, its backoff over.
        let now = Instant::now();
        let mut next_retry: Option<Instant> = None;
        let mut i = 0;
        while i < pending.len() && running < config.concurrency.max(1) {
            let item = pending[i];
            let Some(message) = node.stored_view(&item.id)? else {
                // Gone from the history (deleted): nothing to handle.
                node.inbox_done(item.key)?;
                pending.remove(i);
                continue;
            };
            let mut conversation = [0u8; 16];
            if hex::decode_to_slice(&message.conversation, &mut conversation).is_err() {
                node.inbox_done(item.key)?;
                pending.remove(i);
                continue;
            }
            if item.not_before > now {
                next_retry = Some(next_retry.map_or(item.not_before, |t| t.min(item.not_before)));
                i += 1;
                continue;
            }
            if !busy.insert(conversation) {
                i += 1;
                continue;
            }
            pending.remove(i);
            running += 1;
            let (node, bot, done) = (node.clone(), bot.clone(), done_tx.clone());
            let retried = item.attempts > 0;
            tokio::spawn(async move {
                // Tried before, from a sender this node still has no name for (its first
                // message came as the bot restarted, say, and the lookup made when it arrived
                // was lost): check the name it claimed, kept with the message, so the handler
                // can answer by name. On a first try the lookup made on arrival is under way.
                let mut message = message;
                if retried && kith_protocol::UserId::parse(&message.from).is_ok() {
                    if let Some(named) = named_view(&node, &message.id).await {
                        message = named;
                    }
                }
                let turn = Turn { node, message, conversation, replies: AtomicU32::new(0) };
                let result = bot.handle(turn).await;
                let _ = done.send((item, conversation, result)).await;
            });
        }
        let retry = async {
            match next_retry {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = retry => {}
            Some((item, conversation, result)) = done_rx.recv() => {
                running -= 1;
                busy.remove(&conversation);
                finish(&node, &config, &mut pending, &mut stats, item, result)?;
            }
            _ = stopping.changed() => break,
        }
    }
    // Let the handlers under way finish; what they leave is handled after the restart.
    while running > 0 {
        match tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await {
            Ok(Some((item, _, result))) => {
                running -= 1;
                finish(&node, &config, &mut pending, &mut stats, item, result)?;
            }
            _ => break,
        }
    }
    Ok(stats)
}

fn finish(
    node: &Node,
    config: &BotConfig,
    pending: &mut VecDeque<Item>,
    stats: &mut BotStats,
    mut item: Item,
    result: Result<(), NodeError>,
) -> Result<(), NodeError> {
    match result {
        Ok(()) => {
            stats.handled += 1;
            node.inbox_done(item.key)?;
        }
        Err(e) => {
            stats.failures += 1;
            item.attempts += 1;
            if item.attempts >= config.max_attempts {
                warn!(
                    key = item.key,
                    "a bot gave up on a message after {} tries: {e}", item.attempts
                );
                stats.given_up += 1;
                node.bot_gave_up();
                node.inbox_done(item.key)?;
            } else {
                let wait = FIRST_BACKOFF.saturating_mul(1 << item.attempts.min(7)).min(MAX_BACKOFF);
                debug!(key = item.key, "a bot's handler failed, again in {wait:?}: {e}");
                item.not_before = Instant::now() + wait;
                pending.push_back(item);
            }
        }
    }
    Ok(())
}
