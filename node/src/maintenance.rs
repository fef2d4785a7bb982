//! The maintenance task: rotating prekeys and keeping the name record published (on the device
//! holding the identity key, signing a new one; on a linked device, announcing its new prekey and
//! storing the newest record again), with backoff after failures.

use std::time::Duration;

use kith_protocol::{dht_key, Content};
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::error::{NodeError, OrWarn};
use crate::rules::outbox;
use crate::services::records::{PUBLISHED_AT, REPUBLISH_INTERVAL};
use crate::services::Services;

impl Services {
    pub(crate) async fn maintainer_task(self) {
        // Give bootstrap connections a moment before the first republish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut failures = 0u32;
        // The first pass always republishes: the DHT may have lost the record while this node
        // was away.
        let mut first = true;
        loop {
            let rotated = self.records.rotate_prekeys(self.ctx.now()).unwrap_or(false);
            let due = std::mem::take(&mut first)
                || rotated
                || failures > 0
                || self.records.republish_due();
            let mut wait = REPUBLISH_INTERVAL;
            if due {
                if let Some(name) = self.ctx.name() {
                    let _guard = self.records.publish_lock.lock().await;
                    let published = if self.ctx.keys.identity.is_some() {
                        self.records.publish(&name).await
                    } else {
                        self.keep_own_record(&name, rotated).await
                    };
                    match published {
                        Ok(seq) => {
                            failures = 0;
                            self.ctx
                                .store
                                .meta_set("published_at", &self.ctx.now())
                                .or_warn(PUBLISHED_AT);
                            debug!(seq, "republished the name record");
                        }
                        Err(e) => {
                            failures += 1;
                            wait = Duration::from_millis(outbox::backoff(failures + 2, 0.0));
                            warn!("republishing the name record failed: {e}");
                        }
                    }
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// On a linked device (no identity key): announces a new prekey to the device that signs
    /// the record, and stores the newest own record in the DHT again so it stays reachable.
    pub(crate) async fn keep_own_record(
        &self,
        name: &str,
        rotated: bool,
    ) -> Result<u64, NodeError> {
        if rotated {
            let (prekey, _) = self.records.current_prekey()?;
            self.messaging.send_to_own(Content::DevicePrekey { prekey }).await;
        }
        let r = self
            .records
            .own_record()
            .await
            .ok_or_else(|| NodeError::NameNotFound(name.to_owned()))?;
        // Mailboxes added on another device: enroll this one too, so they hold its mail.
        let mine = self.records.my_mailboxes()?;
        for mb in r.mailboxes.iter().filter(|m| !mine.iter().any(|x| x.peer_id == m.peer_id)) {
            let Ok(peer) = PeerId::from_bytes(&mb.peer_id) else { continue };
            let Some(addr) = mb.addrs.iter().find(|a| a.ends_with(&peer.to_string())) else {
                continue;
            };
            if let Err(e) = self.mailbox_client.add_mailbox(addr).await {
                warn!(%peer, "cannot enroll with a mailbox of this user: {e}");
            }
        }
        self.ctx.net.put_record(dht_key(name).to_vec(), r.bytes.clone(), r.expires_at).await?;
        Ok(r.seq)
    }
}
