//! The durable outbox: the lock that serializes read-modify-write of its entries, writing what
//! a rule (`rules::outbox`) decided, stopping waiting for devices a record no longer lists,
//! delivery receipts, and waking the delivery task. Delivery itself is
//! [`super::messaging::Messaging::outbox_task`].

use std::sync::Arc;

use kith_protocol::MessageId;
use libp2p::PeerId;
use tokio::sync::Notify;
use tracing::warn;

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rules;
use crate::rules::outbox::{self, Progress};
use crate::store::{OutboxEntry, Status};

/// The outbox service.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    pub(crate) ctx: Ctx,
    /// Serializes read-modify-write of outbox entries.
    pub(crate) outbox_lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the delivery task (a new entry, a peer connected).
    pub(crate) wake_outbox: Arc<Notify>,
    /// The sessions envelopes are sealed in.
    pub(crate) sessions: super::sessions::Sessions,
}

impl Outbox {
    pub(crate) fn new(ctx: Ctx) -> Self {
        let sessions = super::sessions::Sessions::new(ctx.clone());
        Outbox { ctx, outbox_lock: Arc::default(), wake_outbox: Arc::default(), sessions }
    }

    /// A peer connected: make every pending delivery to it due now, and the lookups of names
    /// that do not resolve yet due soon.
    pub(crate) async fn peer_connected(&self, peer: &PeerId) {
        let bytes = peer.to_bytes();
        let _guard = self.outbox_lock.lock().await;
        let mut woke = false;
        let now = self.ctx.now();
        for id in self.ctx.store.outbox_ids_for_peer(&bytes) {
            let entry = self.ctx.store.outbox_entry(&id).or_warn("cannot read the outbox");
            let Some(mut e) = entry.flatten() else { continue };
            // Both run: one marks deliveries to this peer due, the other a waiting lookup.
            let delivery = outbox::peer_connected(&mut e, &bytes);
            if delivery | outbox::lookup_on_connect(&mut e, now) {
                self.ctx.store.put_outbox(&e).or_warn("cannot update the outbox");
                woke = true;
            }
        }
        if woke {
            self.wake_outbox.notify_one();
        }
    }
}

impl Outbox {
    /// Writes what a rule decided about an outbox entry (the caller holds `outbox_lock`).
    pub(crate) fn save_progress(
        &self,
        e: &OutboxEntry,
        progress: Progress,
    ) -> Result<(), NodeError> {
        let mut ended = Vec::new();
        self.save_progress_deferred(e, progress, &mut ended)?;
        self.end_delivered(&ended)
    }

    /// [`Outbox::save_progress`], except that an entry every device acknowledged is added to
    /// `ended` for [`Outbox::end_delivered`] to end with others in one write.
    pub(crate) fn save_progress_deferred(
        &self,
        e: &OutboxEntry,
        progress: Progress,
        ended: &mut Vec<[u8; 16]>,
    ) -> Result<(), NodeError> {
        let store = &self.ctx.store;
        match progress {
            Progress::Unchanged => {}
            // The entry and the status change in one transaction: a crash between two writes
            // once left a delivered message `sent` forever with its entry gone.
            Progress::Pending { stored: false } => store.put_outbox(e)?,
            Progress::Pending { stored: true } => {
                store.put_outbox_with_status(e, Status::Stored)?;
                self.ctx.status_changed(&e.id, Status::Stored);
            }
            Progress::Complete => {
                if !ended.contains(&e.id) {
                    ended.push(e.id);
                }
            }
            Progress::Empty => store.remove_outbox(&e.id)?,
        }
        Ok(())
    }

    /// Ends the outbox entries of messages every device acknowledged: one transaction removes
    /// them and marks them `delivered` (the caller holds `outbox_lock`).
    pub(crate) fn end_delivered(&self, ids: &[[u8; 16]]) -> Result<(), NodeError> {
        for id in self.ctx.store.end_outgoing_many(ids, Status::Delivered)? {
            self.ctx.status_changed(&id, Status::Delivered);
        }
        Ok(())
    }

    /// Removes, from queued messages to `user`, the devices not in `keep` (revoked or
    /// replaced); a message then complete is `delivered` to every device the user still has.
    pub(crate) async fn drop_targets(&self, user: [u8; 16], keep: &[[u8; 32]]) {
        let _guard = self.outbox_lock.lock().await;
        // A revoked device's sessions go first: nothing more is sealed to it.
        if let Err(e) = self.sessions.drop_devices(&user, keep) {
            warn!("cannot delete the sessions of revoked devices: {e}");
        }
        for id in self.ctx.store.outbox_ids_to(&user) {
            let mut e = match self.ctx.store.outbox_entry(&id) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    warn!("cannot read the outbox to drop revoked devices: {e}");
                    continue;
                }
            };
            let progress = rules::outbox::keep_devices(&mut e, keep);
            if let Err(err) = self.save_progress(&e, progress) {
                warn!("cannot drop revoked devices from a queued message: {err}");
            }
        }
        if let Err(e) = self.ctx.store.flush().await {
            warn!("cannot flush the outbox: {e}");
        }
    }

    /// A recipient device reports messages as durably stored (they reached it through a mailbox).
    pub(crate) fn receipt_received(&self, device: &[u8; 32], ids: &[MessageId]) {
        let node = self.clone();
        let (device, ids) = (*device, ids.to_vec());
        self.ctx.spawn(async move {
            let _guard = node.outbox_lock.lock().await;
            for id in ids {
                let Ok(Some(mut e)) = node.ctx.store.outbox_entry(&id.0) else { continue };
                let progress = outbox::apply_receipt(&mut e, &device);
                if let Err(err) = node.save_progress(&e, progress) {
                    warn!("cannot record a delivery receipt: {err}");
                }
            }
            if let Err(err) = node.ctx.store.flush().await {
                warn!("cannot flush delivery receipts: {err}");
            }
        });
    }
}
