//! Direct messages out: sealing content to every device of a user, queueing it durably (with a
//! copy to this user's other devices for what the history shows), and the delivery task that
//! sends each envelope, retries with backoff (`rules::outbox`) and falls back on the
//! recipient's mailboxes.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::name::RecordDevice;
use kith_protocol::{
    AckStatus, Content, ConversationId, DeliveryAck, Envelope, Message, MessageId, UserId,
    VerifiedNameRecord, VERSION,
};
use libp2p::PeerId;
use rand::Rng;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rules::outbox::{self, Attempt};
use crate::services::mailbox_client::deposit;
use crate::services::sessions::SealTo;
use crate::store::{DeviceTarget, Direction, OutboxEntry, Status, StoredMessage, Waiting, LOOKUP};
use crate::views::{self, MessageView, NodeEvent};

/// Most envelope deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most contacts and group members a new record is pushed to after a revocation (the others
/// see it when their cached copy expires, within 30 s of their next send).
pub const MAX_RECORD_PUSH: usize = 1024;

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
        self.queue_not_before(user, devices, mailboxes, content, in_history, 0).await
    }

    /// Like [`Messaging::queue_to`], first tried at `not_before` (0: now; else also when the
    /// recipient's device connects, if sooner): a fallback for a delivery others are expected
    /// to make first.
    pub(crate) async fn queue_not_before(
        &self,
        user: UserId,
        devices: &[RecordDevice],
        mailboxes: &[kith_protocol::name::MailboxPeer],
        content: Content,
        in_history: bool,
        not_before: u64,
    ) -> Result<MessageView, NodeError> {
        let me = self.ctx.user_id();
        let now = self.next_sent_at();
        let message = Message {
            v: VERSION,
            id: if in_history {
                crate::ids::message_id()
            } else {
                MessageId::random(&mut rand::rngs::OsRng)
            },
            conversation: ConversationId::direct(&me, &user),
            sender: me,
            sent_at: now,
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        let name = self.ctx.name();
        let mut entry =
            self.outbox_entry(&message, user, devices, mailboxes, in_history, name.as_deref())?;
        for t in &mut entry.targets {
            t.next_at = not_before;
        }
        // Copy what the history shows to this user's other devices, so every device shows the
        // same conversation.
        let copy = if in_history { self.copy_to_own(&message, user).await? } else { None };
        let stored =
            StoredMessage::of(&message, Direction::Out, user.0, Status::Queued, message.to_bytes());
        self.ctx.store.insert_outgoing(&stored, &entry)?;
        if let Some((m, e)) = &copy {
            self.ctx.store.insert_outgoing(m, e)?;
        }
        self.ctx.store.flush().await?;
        let view = views::view_of(&self.ctx.store, self.ctx.user_id(), &stored)?;
        if in_history {
            self.ctx.counters.messages_sent.inc();
            let _ = self.ctx.events.send(NodeEvent::Message(view.clone()));
        }
        self.outbox.wake_outbox.notify_one();
        Ok(view)
    }

    /// A `sync.sent` copy of `message` (to `user`) for this user's other devices, if any.
    async fn copy_to_own(
        &self,
        message: &Message,
        user: UserId,
    ) -> Result<Option<(StoredMessage, OutboxEntry)>, NodeError> {
        let me = self.ctx.user_id();
        if user == me {
            return Ok(None);
        }
        let own = self.records.other_devices().await;
        if own.is_empty() {
            return Ok(None);
        }
        let names = views::names(&self.ctx.store, me)?;
        let wrapper = Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId::direct(&me, &me),
            sender: me,
            sent_at: message.sent_at,
            content: Content::SelfSent {
                peer: user,
                peer_name: names.get(&user.0).cloned(),
                message: message.to_bytes(),
            },
        };
        let mine = self.records.my_mailboxes()?;
        let name = self.ctx.name();
        Ok(Some((
            StoredMessage::of(&wrapper, Direction::Out, me.0, Status::Queued, Vec::new()),
            self.outbox_entry(&wrapper, me, &own, &mine, false, name.as_deref())?,
        )))
    }

    /// Stores a message to `name`, whose record could not be found now (`why`), and keeps
    /// looking the name up (`rules::outbox::lookup_failed`): it is sealed and delivered once
    /// the name resolves. Until then it lives under a placeholder conversation of the name.
    pub(crate) async fn queue_waiting(
        &self,
        name: &str,
        content: Content,
        why: &NodeError,
    ) -> Result<MessageView, NodeError> {
        let now = self.next_sent_at();
        let message = Message {
            v: VERSION,
            id: crate::ids::message_id(),
            conversation: ConversationId(waiting_conversation(name)),
            sender: self.ctx.user_id(),
            sent_at: now,
            content,
        };
        message.content.validate().map_err(|e| NodeError::BadInput(e.to_string()))?;
        let mut stored = StoredMessage::of(
            &message,
            Direction::Out,
            [0; 16],
            Status::Waiting,
            message.to_bytes(),
        );
        stored.waiting_for = Some(name.to_owned());
        let mut waiting = Waiting {
            name: name.to_owned(),
            since: now,
            attempts: 0,
            last_try: now,
            next_at: now,
            last_error: None,
        };
        outbox::lookup_failed(&mut waiting, why.to_string(), now, now, rand::thread_rng().gen());
        let entry = OutboxEntry {
            id: message.id.0,
            recipient: [0; 16],
            targets: Vec::new(),
            created_at: now,
            mailboxes: Vec::new(),
            in_history: true,
            waiting: Some(waiting),
            plain: None,
        };
        self.ctx.store.insert_outgoing(&stored, &entry)?;
        self.ctx.store.flush().await?;
        info!(%name, id = %message.id, "the recipient's name does not resolve yet; the message waits");
        let view = views::view_of(&self.ctx.store, self.ctx.user_id(), &stored)?;
        self.ctx.counters.messages_sent.inc();
        let _ = self.ctx.events.send(NodeEvent::Message(view.clone()));
        self.outbox.wake_outbox.notify_one();
        Ok(view)
    }

    /// The name of a waiting message resolved to `record`: seal the message to its devices,
    /// move it to the real conversation and deliver it like any other (the caller holds the
    /// outbox lock).
    async fn resolve_waiting(
        &self,
        id: [u8; 16],
        record: &VerifiedNameRecord,
    ) -> Result<(), NodeError> {
        let store = &self.ctx.store;
        let Some(old) = store.message(&id)? else { return store.remove_outbox(&id) };
        let mut message = Message::from_bytes(&old.raw)
            .map_err(|e| NodeError::Internal(format!("a waiting message does not decode: {e}")))?;
        message.conversation = ConversationId::direct(&self.ctx.user_id(), &record.user_id);
        let name = self.ctx.name();
        let entry = self.outbox_entry(
            &message,
            record.user_id,
            &record.devices,
            &record.mailboxes,
            true,
            name.as_deref(),
        )?;
        let new = StoredMessage::of(
            &message,
            Direction::Out,
            record.user_id.0,
            Status::Queued,
            message.to_bytes(),
        );
        store.resolve_waiting(&old, &new, &entry)?;
        if let Some((m, e)) = self.copy_to_own(&message, record.user_id).await? {
            store.insert_outgoing(&m, &e)?;
        }
        store.flush().await?;
        info!(name = %record.name, id = %message.id, "a waiting message's recipient resolved");
        self.ctx.set_status(&id, Status::Queued);
        self.outbox.wake_outbox.notify_one();
        Ok(())
    }

    /// A lookup of a waiting message's name, started at `started`, ended.
    async fn finish_lookup(
        &self,
        id: [u8; 16],
        started: u64,
        result: Result<VerifiedNameRecord, NodeError>,
    ) {
        let _guard = self.outbox.outbox_lock.lock().await;
        // Cancelled (or resolved) meanwhile: nothing to do.
        let Ok(Some(mut e)) = self.ctx.store.outbox_entry(&id) else { return };
        let Some(w) = e.waiting.as_mut() else { return };
        let error = match result {
            Ok(record) => match self.resolve_waiting(id, &record).await {
                Ok(()) => return,
                Err(err) => err,
            },
            Err(err) => err,
        };
        let jitter: f64 = rand::thread_rng().gen();
        match outbox::lookup_failed(w, error.to_string(), started, self.ctx.now(), jitter) {
            outbox::Lookup::Retry => {
                debug!(name = %w.name, "the recipient's name does not resolve yet: {error}");
                self.ctx.store.put_outbox(&e).or_warn("cannot update a waiting message");
            }
            outbox::Lookup::GiveUp => {
                warn!(name = %w.name, "giving up a message: the recipient's name never resolved");
                if self.ctx.store.end_outgoing(&id, Status::Failed).or_warn("cannot fail a message")
                    == Some(true)
                {
                    self.ctx.set_status(&id, Status::Failed);
                }
            }
        }
    }

    /// Withdraws an outgoing message that is not delivered yet: its remaining deliveries (or
    /// lookups) stop and it is `cancelled`. Devices that already have it keep it.
    pub(crate) async fn cancel(&self, id: &str) -> Result<MessageView, NodeError> {
        let id = MessageId::parse(id).map_err(|e| NodeError::NotFound(e.to_string()))?;
        let store = &self.ctx.store;
        let _guard = self.outbox.outbox_lock.lock().await;
        let m =
            store.message(&id.0)?.ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        if m.direction != Direction::Out {
            return Err(NodeError::NotAllowed("only messages you sent can be cancelled".into()));
        }
        if !store.end_outgoing(&id.0, Status::Cancelled)? {
            return Err(NodeError::NotAllowed(format!(
                "message {id} is {}: nothing is left to cancel",
                m.status.as_str()
            )));
        }
        store.flush().await?;
        self.ctx.set_status(&id.0, Status::Cancelled);
        let m =
            store.message(&id.0)?.ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        views::view_of(store, self.ctx.user_id(), &m)
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
        let mut in_session = false;
        for d in devices.iter().filter(|d| d.device.device != mine) {
            let to = SealTo::of(user, d);
            let env = self.outbox.sessions.seal(&to, message, name)?;
            let sessioned = env.session.is_some();
            in_session |= sessioned;
            targets.push(DeviceTarget {
                device: d.device.device,
                peer_id: d.device.peer_id.to_bytes(),
                envelope: env.to_bytes(),
                done: false,
                attempts: 0,
                next_at: 0,
                last_error: None,
                deposited: false,
                prekey: sessioned.then(|| (d.prekey.id, serde_bytes::ByteArray::new(d.prekey.key))),
            });
        }
        Ok(OutboxEntry {
            id: message.id.0,
            recipient: user.0,
            targets,
            created_at: message.sent_at,
            mailboxes: mailboxes.iter().map(|m| (m.peer_id.clone(), m.addrs.clone())).collect(),
            in_history,
            waiting: None,
            plain: in_session.then(|| message.to_bytes()),
        })
    }

    /// Seals `content` to the user's other devices and queues it (not shown in the history).
    pub(crate) async fn send_to_own(&self, content: Content) {
        self.send_to_own_where(content, |_| true).await
    }

    /// [`Messaging::send_to_own`], to those of this user's other devices that `keep` names.
    pub(crate) async fn send_to_own_where(
        &self,
        content: Content,
        keep: impl Fn(&RecordDevice) -> bool,
    ) {
        let devices: Vec<RecordDevice> =
            self.records.other_devices().await.into_iter().filter(|d| keep(d)).collect();
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

    /// Pushes this user's newest record (`record.update`) to every contact and every member of
    /// an active group, each once (at most [`MAX_RECORD_PUSH`]), so that they stop sealing to a
    /// device it dropped at once rather than when their cached copy expires. Sealed to the
    /// devices of the copy pinned with the contact, else of a lookup.
    pub(crate) async fn push_own_record(&self) {
        let Some(own) = self.records.own_record().await else { return };
        let me = self.ctx.user_id().0;
        let contacts = self.ctx.store.contacts().or_warn("cannot read the contacts");
        let mut names: BTreeSet<String> = contacts
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.user_id != me)
            .map(|c| c.name)
            .collect();
        let groups = self.ctx.store.groups().or_warn("cannot read the groups");
        for g in groups.unwrap_or_default().into_iter().filter(|g| g.active) {
            names.extend(g.members.into_iter().filter(|m| m.user != me).filter_map(|m| m.name));
        }
        let mut pushed = 0;
        for name in names.into_iter().take(MAX_RECORD_PUSH) {
            let record = match self.records.pinned_or_resolved(&name).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(%name, "not pushing the new record: {e}");
                    continue;
                }
            };
            if record.user_id.0 == me {
                continue;
            }
            let content = Content::RecordUpdate { record: own.bytes.clone() };
            match self.queue(&record, content, false).await {
                Ok(_) => pushed += 1,
                Err(e) => warn!(%name, "cannot push the new record: {e}"),
            }
        }
        info!(pushed, "pushed the new record to contacts and group members");
    }

    /// The delivery task: starts every due delivery (at most [`MAX_IN_FLIGHT`] at once) and
    /// every due lookup of a waiting name, records what they return, sleeps until the next is
    /// due or it is woken (a new entry, a peer connected).
    pub(crate) async fn outbox_task(self) {
        let mut in_flight: HashSet<([u8; 16], usize)> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(MAX_IN_FLIGHT);
        loop {
            let now = self.ctx.now();
            // Only what is due is read from the store; deliveries under way are left out (their
            // end wakes this loop), so a delivery in flight does not make it spin.
            let free = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let due = self.ctx.store.outbox_due(now, free, |k| in_flight.contains(k));
            let mut entry: Option<OutboxEntry> = None;
            for (id, i) in due.now {
                if entry.as_ref().is_none_or(|e| e.id != id) {
                    entry = self
                        .ctx
                        .store
                        .outbox_entry(&id)
                        .or_warn("cannot read the outbox")
                        .flatten();
                }
                let Some(e) = &entry else { continue };
                if i == LOOKUP {
                    if outbox::lookup_due(e, now) {
                        in_flight.insert((id, i));
                        self.start_lookup(e, now, done_tx.clone());
                    }
                } else if outbox::due(e, now).contains(&i)
                    && self.start_delivery(e, i, done_tx.clone())
                {
                    in_flight.insert((id, i));
                }
            }
            // Every few seconds at least, in case a writer of the outbox did not wake it.
            let next = due.next.map_or(now + 5_000, |d| d.max(now + 10)).min(now + 5_000);
            let sleep = tokio::time::sleep(Duration::from_millis(next.saturating_sub(now)));
            tokio::select! {
                _ = sleep => {}
                _ = self.outbox.wake_outbox.notified() => {}
                Some(done) = done_rx.recv() => {
                    // Every attempt that ended meanwhile, recorded together: the messages they
                    // complete end in one store transaction.
                    let mut deliveries = Vec::new();
                    let mut next = Some(done);
                    while let Some(done) = next.take().or_else(|| done_rx.try_recv().ok()) {
                        match done {
                            Done::Delivery(key, outcome) => {
                                in_flight.remove(&key);
                                deliveries.push((key, outcome));
                            }
                            Done::Lookup(id, started, result) => {
                                in_flight.remove(&(id, LOOKUP));
                                self.finish_lookup(id, started, *result).await;
                            }
                        }
                    }
                    self.finish_attempts(deliveries).await;
                }
            }
        }
    }

    /// Starts delivering target `i` of `e` (directly, else through the recipient's mailboxes);
    /// whether it started.
    fn start_delivery(&self, e: &OutboxEntry, i: usize, done: mpsc::Sender<Done>) -> bool {
        let Ok(peer) = PeerId::from_bytes(&e.targets[i].peer_id) else { return false };
        let (net, bytes, key) = (self.ctx.net.clone(), e.targets[i].envelope.clone(), (e.id, i));
        let mailboxes = if e.targets[i].deposited { Vec::new() } else { e.mailboxes.clone() };
        let (sessions, device) = (self.outbox.sessions.clone(), e.targets[i].device);
        self.ctx.spawn(async move {
            let direct = match net.send_envelope(peer, bytes.clone()).await {
                Ok(Ok(answer)) => match DeliveryAck::from_bytes(&answer) {
                    Ok(a) if matches!(a.status, AckStatus::Stored | AckStatus::Duplicate) => {
                        if let Some(id) = a.session {
                            sessions.acknowledged(&device, &id);
                        }
                        Ok(())
                    }
                    Ok(a) if a.status == AckStatus::NoSession => {
                        let _ = done.send(Done::Delivery(key, Attempt::Resealed)).await;
                        return;
                    }
                    Ok(a) => Err(format!("{:?}: {}", a.status, a.reason.unwrap_or_default())),
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
            let _ = done.send(Done::Delivery(key, outcome)).await;
        });
        if let Ok(Some(m)) = self.ctx.store.message(&e.id) {
            if m.status == Status::Queued {
                self.ctx.set_status(&e.id, Status::Sent);
            }
        }
        true
    }

    /// Starts a lookup of a waiting entry's name.
    fn start_lookup(&self, e: &OutboxEntry, now: u64, done: mpsc::Sender<Done>) {
        let Some(name) = e.waiting.as_ref().map(|w| w.name.clone()) else { return };
        let (records, id) = (self.records.clone(), e.id);
        self.ctx.spawn(async move {
            let result = records.resolve_fresh(&name).await;
            let _ = done.send(Done::Lookup(id, now, Box::new(result))).await;
        });
    }

    /// Records the outcomes of delivery attempts; the messages they complete end together.
    async fn finish_attempts(&self, attempts: Vec<(([u8; 16], usize), Attempt)>) {
        if attempts.is_empty() {
            return;
        }
        let _guard = self.outbox.outbox_lock.lock().await;
        let mut ended = Vec::new();
        for (key, outcome) in attempts {
            self.record_attempt(key, outcome, &mut ended);
        }
        if let Err(err) = self.outbox.end_delivered(&ended) {
            warn!("cannot record deliveries: {err}");
        }
    }

    /// One attempt's outcome (the caller holds the outbox lock); a message it completes is added
    /// to `ended`.
    fn record_attempt(
        &self,
        (id, i): ([u8; 16], usize),
        outcome: Attempt,
        ended: &mut Vec<[u8; 16]>,
    ) {
        let Ok(Some(mut e)) = self.ctx.store.outbox_entry(&id) else { return };
        if let Attempt::Deposited(err) | Attempt::Failed(err) = &outcome {
            debug!(id = %MessageId(id), "delivery attempt failed: {err}");
        }
        if outcome == Attempt::Resealed {
            if let Err(err) = self.reseal(&mut e, i) {
                warn!(id = %MessageId(id), "cannot seal a message again for a lost session: {err}");
                let jitter: f64 = rand::thread_rng().gen();
                let failed = Attempt::Failed(format!("the device lost its session: {err}"));
                let progress = outbox::finish_attempt(&mut e, i, failed, self.ctx.now(), jitter);
                if let Err(err) = self.outbox.save_progress_deferred(&e, progress, ended) {
                    warn!(id = %MessageId(id), "cannot record a delivery attempt: {err}");
                }
                return;
            }
            outbox::finish_attempt(&mut e, i, Attempt::Resealed, self.ctx.now(), 0.0);
            // The new envelope leaves once it (and the session it started) is on disk.
            if let Err(err) = self.ctx.store.put_outbox_resealed(&e) {
                warn!(id = %MessageId(id), "cannot record a message sealed again: {err}");
            }
            let store = self.ctx.store.clone();
            let wake = self.outbox.wake_outbox.clone();
            self.ctx.spawn(async move {
                if store.flush().await.is_ok() {
                    wake.notify_one();
                }
            });
            return;
        }
        let jitter: f64 = rand::thread_rng().gen();
        let progress = outbox::finish_attempt(&mut e, i, outcome, self.ctx.now(), jitter);
        if let Err(err) = self.outbox.save_progress_deferred(&e, progress, ended) {
            warn!(id = %MessageId(id), "cannot record a delivery attempt: {err}");
        }
        // Not flushed here: a crash that loses this write loses the entry's removal and the
        // status together (one transaction), so the message is sent again and the recipient
        // answers `duplicate`, which ends it as delivered. A flush per acknowledgement would
        // cost a disk sync per message.
    }
}

impl Messaging {
    /// Target `i` of `e` answered that it does not hold the session its envelope was sealed
    /// in: forget that session and seal the message to it again with Noise (which starts a new
    /// one), from the copy of the message the entry keeps.
    fn reseal(&self, e: &mut OutboxEntry, i: usize) -> Result<(), NodeError> {
        let internal = |what: &str| NodeError::Internal(what.to_owned());
        let t = e.targets.get(i).ok_or_else(|| internal("no such target"))?;
        let plain = e.plain.as_deref().ok_or_else(|| internal("no copy of the message kept"))?;
        let (prekey_id, prekey) = t.prekey.ok_or_else(|| internal("no prekey kept"))?;
        let old = Envelope::from_bytes(&t.envelope).map_err(|x| internal(&x.to_string()))?;
        let message = Message::from_bytes(plain).map_err(|x| internal(&x.to_string()))?;
        let sessions = &self.outbox.sessions;
        let to = sessions
            .lost(&t.device, &old, (prekey_id, *prekey))?
            .ok_or_else(|| internal("not sealed in a session this device holds"))?;
        let name = self.ctx.name();
        let env = sessions.seal(&to, &message, name.as_deref())?;
        let t = &mut e.targets[i];
        t.envelope = env.to_bytes();
        t.prekey = env.session.is_some().then_some((prekey_id, prekey));
        Ok(())
    }
}

/// What a finished background job of the delivery task reports.
enum Done {
    /// A delivery attempt to target `.0.1` of message `.0.0`.
    Delivery(([u8; 16], usize), Attempt),
    /// A lookup of a waiting message's name, started at `.1`.
    Lookup([u8; 16], u64, Box<Result<VerifiedNameRecord, NodeError>>),
}

/// The placeholder conversation of messages waiting for `name` to resolve.
pub(crate) fn waiting_conversation(name: &str) -> [u8; 16] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"kith/v1/waiting-for")
        .chain_update([0u8])
        .chain_update(name.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}
