//! Ephemeral signals between devices (calls, listening sessions): content sealed to each device
//! and sent once, straight to it, with a short timeout; no outbox, no mailbox. A device that
//! cannot be reached misses the signal (the sender may be told, `Outgoing::unreachable`).
//!
//! Each session (a call, a listening session) gets one sender task, which resolves the records
//! of the conversation's members once and then sends its signals in the order they were queued.

use std::sync::Arc;
use std::time::Duration;

use kith_protocol::name::RecordDevice;
use kith_protocol::{Content, ConversationId, Message, MessageId, UserId, VERSION};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules::call::To;
use crate::services::conversations::Conversations;

/// How long a send of one signal to one device may take (dial included).
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Signals a session may have waiting to be sent.
pub const QUEUE: usize = 64;
/// How long the sender waits for one signal's sends before it goes on with the next: signals
/// keep their order while devices answer quickly, and an unreachable device does not hold the
/// next one up for long.
const IN_ORDER_WAIT: Duration = Duration::from_secs(2);

/// A signal sent longer ago than this (sender's clock against this device's) is ignored: a
/// replayed or long-delayed `ring` does not ring.
pub const MAX_SIGNAL_AGE_MS: u64 = 120_000;

/// Whether a signal sent at `sent_at` (sender's clock) is recent enough at `now` to act on.
pub(crate) fn fresh(sent_at: u64, now: u64) -> bool {
    sent_at.saturating_add(MAX_SIGNAL_AGE_MS) >= now
}

/// The conversation a session signal from another user's device belongs to: its id, as
/// shown (`@name`, `#group`), and its members (user, name if known).
pub(crate) struct Origin {
    pub(crate) conversation: [u8; 16],
    pub(crate) to: String,
    pub(crate) members: Vec<([u8; 16], Option<String>)>,
}

/// Called with a device a signal could not reach.
pub(crate) type Unreachable = Arc<dyn Fn([u8; 32]) + Send + Sync>;

/// One signal to send.
pub(crate) struct Outgoing {
    /// To whom.
    pub(crate) to: To,
    /// What.
    pub(crate) content: Content,
    /// Not to this user's own other devices (a call's ring).
    pub(crate) skip_own: bool,
    /// Told of each device the signal did not reach.
    pub(crate) unreachable: Option<Unreachable>,
}

impl Outgoing {
    /// `content` to `to`, this user's other devices included.
    pub(crate) fn new(to: To, content: Content) -> Self {
        Outgoing { to, content, skip_own: false, unreachable: None }
    }
}

/// The devices of one user signals go to.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) user: UserId,
    pub(crate) devices: Vec<RecordDevice>,
}

/// A signal sealed to one device: (device, its peer, the envelope).
type Sealed = ([u8; 32], libp2p::PeerId, Vec<u8>);

/// The signal sender.
#[derive(Clone, Debug)]
pub(crate) struct Signals {
    pub(crate) ctx: Ctx,
    pub(crate) conversations: Conversations,
}

impl Signals {
    /// The records of `members` (user, name if known), each as held or resolved by name (a
    /// record found by a name must be that user's), and this user's other devices.
    pub(crate) async fn member_targets(
        &self,
        members: &[([u8; 16], Option<String>)],
    ) -> Vec<Target> {
        let me = self.ctx.user_id();
        let records = &self.conversations.records;
        let mut targets = Vec::new();
        for (user, name) in members {
            if *user == me.0 {
                continue;
            }
            let held = records.known_record(*user, self.ctx.now()).and_then(|(_, _, r)| r);
            let r = match (held, name) {
                (Some(r), _) => Some(r),
                (None, Some(n)) => records.pinned_or_resolved(n).await.ok(),
                (None, None) => None,
            };
            if let Some(r) = r.filter(|r| r.user_id.0 == *user) {
                targets.push(Target { user: r.user_id, devices: r.devices });
            }
        }
        targets.push(Target { user: me, devices: records.other_devices().await });
        targets
    }

    /// Where a session signal from `sender` belongs: `group` (which must be known here, active,
    /// and have the sender as a member), else the direct chat with the sender (named as this
    /// device knows the sender, else by `claimed`, the name its envelope gives, which is
    /// checked when it is looked up). `None`: a signal to ignore.
    pub(crate) fn origin(
        &self,
        sender: &kith_protocol::SenderDevice,
        claimed: Option<&str>,
        group: Option<[u8; 16]>,
    ) -> Option<Origin> {
        let me = self.ctx.user_id();
        match group {
            Some(g) => {
                let state = self.ctx.store.group_shared(&g)?;
                if !state.active || !state.members.iter().any(|m| m.user == sender.user_id.0) {
                    debug!("ignoring a signal for a group from outside it");
                    return None;
                }
                // Calls and listening sessions are for small groups: a member of a large one
                // cannot make every member look up every other's record.
                if state.members.len() > crate::services::calls::MAX_CALL_GROUP {
                    debug!(
                        "ignoring a session signal for a group of {} members",
                        state.members.len()
                    );
                    return None;
                }
                let members = state.members.iter().map(|m| (m.user, m.name.clone())).collect();
                Some(Origin { conversation: g, to: format!("#{}", ConversationId(g)), members })
            }
            None => {
                let known = crate::views::names_for(&self.ctx.store, me, &[sender.user_id.0])
                    .ok()
                    .and_then(|n| n.get(&sender.user_id.0).cloned());
                let to =
                    known.as_ref().map_or_else(|| sender.user_id.to_string(), |n| format!("@{n}"));
                let name = known.or_else(|| claimed.map(str::to_owned));
                let conversation = ConversationId::direct(&me, &sender.user_id).0;
                Some(Origin { conversation, to, members: vec![(sender.user_id.0, name)] })
            }
        }
    }

    /// Starts a sender task for `targets` (this user's other devices are added if missing).
    pub(crate) fn sender(&self, mut targets: Vec<Target>) -> mpsc::Sender<Outgoing> {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
        let signals = self.clone();
        self.ctx.spawn(async move {
            let me = signals.ctx.user_id();
            if !targets.iter().any(|t| t.user == me) {
                let own = signals.conversations.records.other_devices().await;
                targets.push(Target { user: me, devices: own });
            }
            while let Some(out) = rx.recv().await {
                signals.send(&targets, out).await;
            }
        });
        tx
    }

    /// A sender task whose targets are looked up first (`members`: user, name if known).
    pub(crate) fn sender_resolving(
        &self,
        members: Vec<([u8; 16], Option<String>)>,
    ) -> mpsc::Sender<Outgoing> {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
        let signals = self.clone();
        self.ctx.spawn(async move {
            let targets = signals.member_targets(&members).await;
            let out = signals.sender(targets);
            while let Some(s) = rx.recv().await {
                if out.send(s).await.is_err() {
                    return;
                }
            }
        });
        tx
    }

    async fn send(&self, targets: &[Target], out: Outgoing) {
        let me = self.ctx.user_id();
        let mut sends = Vec::new();
        let mut flush = false;
        for t in targets {
            if out.skip_own && t.user == me {
                continue;
            }
            let devices: Vec<RecordDevice> = t
                .devices
                .iter()
                .filter(|d| match &out.to {
                    To::Everyone => true,
                    To::Device(x) => d.device.device == *x,
                })
                .cloned()
                .collect();
            if devices.is_empty() {
                continue;
            }
            match self.seal(t.user, &devices, out.content.clone()) {
                Ok((envelopes, in_session)) => {
                    sends.extend(envelopes);
                    flush |= in_session;
                }
                Err(e) => warn!("cannot seal a signal: {e}"),
            }
        }
        // An envelope sealed in a session leaves only once the session's step is on disk (a
        // crash before that would seal the next message under the same key).
        if flush {
            if let Err(e) = self.ctx.store.flush().await {
                warn!("cannot flush sessions before sending a signal: {e}");
                return;
            }
        }
        let mut handles = Vec::new();
        for (device, peer, bytes) in sends {
            let (ctx, unreachable) = (self.ctx.clone(), out.unreachable.clone());
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.ctx.spawn(async move {
                let sent =
                    tokio::time::timeout(SIGNAL_TIMEOUT, ctx.net.send_envelope(peer, bytes)).await;
                // A device that lost the session answers `no_session`: the signal did not
                // reach it (the next queued message starts a new session).
                let lost = |a: &[u8]| {
                    kith_protocol::DeliveryAck::from_bytes(a)
                        .is_ok_and(|a| a.status == kith_protocol::AckStatus::NoSession)
                };
                if !matches!(&sent, Ok(Ok(Ok(a))) if !lost(a)) {
                    debug!(%peer, "a signal did not reach a device");
                    if let Some(f) = unreachable {
                        f(device);
                    }
                }
                let _ = tx.send(());
            });
            handles.push(rx);
        }
        let _ = tokio::time::timeout(IN_ORDER_WAIT, futures::future::join_all(handles)).await;
    }

    /// `content` sealed to each of `devices` (of `user`).
    fn seal(
        &self,
        user: UserId,
        devices: &[RecordDevice],
        content: Content,
    ) -> Result<(Vec<Sealed>, bool), NodeError> {
        let me = self.ctx.user_id();
        let message = Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId::direct(&me, &user),
            sender: me,
            sent_at: self.ctx.now(),
            content,
        };
        let name = self.ctx.name();
        let entry = self.conversations.messaging.outbox_entry(
            &message,
            user,
            devices,
            &[],
            false,
            name.as_deref(),
        )?;
        let in_session = entry.plain.is_some();
        let sealed = (entry.targets.into_iter())
            .filter_map(|t| {
                let peer = libp2p::PeerId::from_bytes(&t.peer_id).ok()?;
                Some((t.device, peer, t.envelope))
            })
            .collect();
        Ok((sealed, in_session))
    }
}
