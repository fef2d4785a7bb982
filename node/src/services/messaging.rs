//! Direct messages out: sealing content to every device of a user, queueing it durably (with a
//! copy to this user's other devices for what the history shows), and the delivery task that
//! sends each envelope, retries with backoff (`rules::outbox`) and falls back on the
//! recipient's mailboxes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::envelope::Recipient;
use kith_protocol::name::RecordDevice;
use kith_protocol::{
    AckStatus, Content, ConversationId, DeliveryAck, Envelope, Message, MessageId, UserId,
    VerifiedNameRecord, VERSION,
};
use libp2p::PeerId;
use rand::Rng;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rules::outbox::{self, Attempt};
use crate::services::mailbox_client::deposit;
use crate::store::{DeviceTarget, Direction, OutboxEntry, Status, StoredMessage};
use crate::views::{self, MessageView, NodeEvent};

/// Most envelope deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The messaging service.
#[derive(Clone, Debug)]
pub(crate) struct Messaging {
    pub(crate) ctx: Ctx,
    pub(crate) records: super::records::Records,
    pub(crate) outbox: super::outbox::Outbox,
    /// The last `sent_at` used, so each sender's times strictly increase.
    pub(crate) last_sent: Arc<Mutex<u64>>,
}

impl Messaging {
    pub(crate) fn new(
        ctx: Ctx,
        records: super::records::Records,
        outbox: super::outbox::Outbox,
    ) -> Result<Self, NodeError> {
        let last_sent = ctx.store.meta_get::<u64>("last_sent")?.unwrap_or(0);
        Ok(Messaging { ctx, records, outbox, last_sent: Arc::new(Mutex::new(last_sent)) })
    }
}

impl Messaging {
    /// The next `sent_at`: the clock, but always above the previous one.
    pub(crate) fn next_sent_at(&self) -> u64 {
        let now = self.ctx.now();
        let Ok(mut last) = self.last_sent.lock() else { return now };
        *last = now.max(*last + 1);
        let t = *last;
        drop(last);
        self.ctx.store.meta_set("last_sent", &t).or_warn("cannot store the last send time");
        t
    }

    /// Seals `content` to every device of `record`'s user and queues it durably; a message
    /// shown in the history is also copied to this user's other devices.
    pub(crate) async fn queue(
        &self,
        record: &VerifiedNameRecord,
        content: Content,
        in_history: bool,
    ) -> Result<MessageView, NodeError> {
        self.queue_to(record.user_id, &record.devices, &record.mailboxes, content, in_history).await
    }

    /// Seals `content` to `devices` of `user` and queues it durably.
    pub(crate) async fn queue_to(
        &self,
        user: UserId,
        devices: &[RecordDevice],
        mailboxes: &[kith_protocol::name::MailboxPeer],
        content: Content,
        in_history: bool,
    ) -> Result<MessageView, NodeError> {
        let me = self.ctx.user_id();
        let now = self.next_sent_at();
        let message = Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId::direct(&me, &user),
            sender: me,
            sent_at: now,
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        let name = self.ctx.name();
        let entry =
            self.outbox_entry(&message, user, devices, mailboxes, in_history, name.as_deref())?;
        // Copy what the history shows to this user's other devices, so every device shows the
        // same conversation.
        let copy = if in_history && user != me {
            let own = self.records.other_devices().await;
            if own.is_empty() {
                None
            } else {
                let names = views::names(&self.ctx.store, self.ctx.user_id())?;
                let wrapper = Message {
                    v: VERSION,
                    id: MessageId::random(&mut rand::rngs::OsRng),
                    conversation: ConversationId::direct(&me, &me),
                    sender: me,
                    sent_at: now,
                    content: Content::SelfSent {
                        peer: user,
                        peer_name: names.get(&user.0).cloned(),
                        message: message.to_bytes(),
                    },
                };
                let mine = self.records.my_mailboxes()?;
                Some((
                    StoredMessage::of(&wrapper, Direction::Out, me.0, Status::Queued, Vec::new()),
                    self.outbox_entry(&wrapper, me, &own, &mine, false, name.as_deref())?,
                ))
            }
        } else {
            None
        };
        let stored =
            StoredMessage::of(&message, Direction::Out, user.0, Status::Queued, message.to_bytes());
        self.ctx.store.insert_outgoing(&stored, &entry)?;
        if let Some((m, e)) = &copy {
            self.ctx.store.insert_outgoing(m, e)?;
        }
        self.ctx.store.flush().await?;
        let view = views::view(
            &self.ctx.store,
            self.ctx.user_id(),
            &stored,
            &views::names(&self.ctx.store, self.ctx.user_id())?,
        );
        if in_history {
            self.ctx.counters.messages_sent.inc();
            let _ = self.ctx.events.send(NodeEvent::Message(view.clone()));
        }
        self.outbox.wake_outbox.notify_one();
        Ok(view)
    }

    /// An outbox entry of `message` sealed to each of `devices` except this one.
    pub(crate) fn outbox_entry(
        &self,
        message: &Message,
        user: UserId,
        devices: &[RecordDevice],
        mailboxes: &[kith_protocol::name::MailboxPeer],
        in_history: bool,
        name: Option<&str>,
    ) -> Result<OutboxEntry, NodeError> {
        let mine = self.ctx.keys.device.public_bytes();
        let mut targets = Vec::with_capacity(devices.len());
        for d in devices.iter().filter(|d| d.device.device != mine) {
            let to =
                Recipient { device: d.device.device, prekey_id: d.prekey.id, prekey: d.prekey.key };
            let env =
                Envelope::seal(&self.ctx.keys.cert, &self.ctx.keys.static_key, &to, message, name)
                    .map_err(|e| NodeError::Internal(format!("cannot seal a message: {e}")))?;
            targets.push(DeviceTarget {
                device: d.device.device,
                peer_id: d.device.peer_id.to_bytes(),
                envelope: env.to_bytes(),
                done: false,
                attempts: 0,
                next_at: 0,
                last_error: None,
                deposited: false,
            });
        }
        Ok(OutboxEntry {
            id: message.id.0,
            recipient: user.0,
            targets,
            created_at: message.sent_at,
            mailboxes: mailboxes.iter().map(|m| (m.peer_id.clone(), m.addrs.clone())).collect(),
            in_history,
        })
    }

    /// Seals `content` to the user's other devices and queues it (not shown in the history).
    pub(crate) async fn send_to_own(&self, content: Content) {
        let devices = self.records.other_devices().await;
        if devices.is_empty() {
            return;
        }
        let mailboxes =
            self.records.my_mailboxes().or_warn("cannot read the mailboxes").unwrap_or_default();
        if let Err(e) =
            self.queue_to(self.ctx.user_id(), &devices, &mailboxes, content, false).await
        {
            warn!("cannot send to this user's other devices: {e}");
        }
    }

    pub(crate) async fn outbox_task(self) {
        let mut in_flight: HashSet<([u8; 16], usize)> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::channel::<(([u8; 16], usize), Attempt)>(MAX_IN_FLIGHT);
        loop {
            let now = self.ctx.now();
            let mut next = now + 1_000;
            let entries =
                self.ctx.store.outbox().or_warn("cannot read the outbox").unwrap_or_default();
            for e in &entries {
                for i in outbox::due(e, now) {
                    if in_flight.len() >= MAX_IN_FLIGHT || in_flight.contains(&(e.id, i)) {
                        continue;
                    }
                    let Ok(peer) = PeerId::from_bytes(&e.targets[i].peer_id) else { continue };
                    in_flight.insert((e.id, i));
                    let (net, tx, bytes, key) = (
                        self.ctx.net.clone(),
                        done_tx.clone(),
                        e.targets[i].envelope.clone(),
                        (e.id, i),
                    );
                    let mailboxes =
                        if e.targets[i].deposited { Vec::new() } else { e.mailboxes.clone() };
                    self.ctx.spawn(async move {
                        let direct = match net.send_envelope(peer, bytes.clone()).await {
                            Ok(Ok(answer)) => match DeliveryAck::from_bytes(&answer) {
                                Ok(a)
                                    if matches!(
                                        a.status,
                                        AckStatus::Stored | AckStatus::Duplicate
                                    ) =>
                                {
                                    Ok(())
                                }
                                Ok(a) => {
                                    Err(format!("{:?}: {}", a.status, a.reason.unwrap_or_default()))
                                }
                                Err(e) => Err(format!("malformed acknowledgement: {e}")),
                            },
                            Ok(Err(e)) => Err(e),
                            Err(e) => Err(e.to_string()),
                        };
                        let outcome = match direct {
                            Ok(()) => Attempt::Delivered,
                            Err(e) if mailboxes.is_empty() => Attempt::Failed(e),
                            Err(e) => match deposit(&net, &mailboxes, bytes).await {
                                Ok(()) => Attempt::Deposited(e),
                                Err(m) => Attempt::Failed(format!("{e}; mailbox: {m}")),
                            },
                        };
                        let _ = tx.send((key, outcome)).await;
                    });
                    if let Ok(Some(m)) = self.ctx.store.message(&e.id) {
                        if m.status == Status::Queued {
                            self.ctx.set_status(&e.id, Status::Sent);
                        }
                    }
                }
                if let Some(d) = outbox::next_due(e) {
                    next = next.min(d.max(now + 10));
                }
            }
            let sleep = tokio::time::sleep(Duration::from_millis(next.saturating_sub(now)));
            tokio::select! {
                _ = sleep => {}
                _ = self.outbox.wake_outbox.notified() => {}
                Some((key, outcome)) = done_rx.recv() => {
                    in_flight.remove(&key);
                    self.finish_attempt(key, outcome).await;
                    while let Ok((key, outcome)) = done_rx.try_recv() {
                        in_flight.remove(&key);
                        self.finish_attempt(key, outcome).await;
                    }
                }
            }
        }
    }

    pub(crate) async fn finish_attempt(&self, (id, i): ([u8; 16], usize), outcome: Attempt) {
        let _guard = self.outbox.outbox_lock.lock().await;
        let Ok(Some(mut e)) = self.ctx.store.outbox_entry(&id) else { return };
        if let Attempt::Deposited(err) | Attempt::Failed(err) = &outcome {
            debug!(id = %MessageId(id), "delivery attempt failed: {err}");
        }
        let jitter: f64 = rand::thread_rng().gen();
        let progress = outbox::finish_attempt(&mut e, i, outcome, self.ctx.now(), jitter);
        if let Err(err) = self.outbox.save_progress(&e, progress) {
            warn!(id = %MessageId(id), "cannot record a delivery attempt: {err}");
        }
    }
}
