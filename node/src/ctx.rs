//! The context every service shares: this device's keys, the store, the network client, the
//! record policy, metrics, the event broadcast, the node's tasks and its clock. Cheap to clone.
//! It owns no feature state: each service keeps its own.

use std::ops::Deref;
use std::sync::Arc;

use kith_protocol::{MessageId, RecordPolicy, UserId};
use libp2p::PeerId;
use tokio::sync::{broadcast, watch};

use crate::error::OrWarn;
use crate::home::Keys;
use crate::mailbox::MailboxConfig;
use crate::metrics::{Counters, Metrics};
use crate::network::Client;
use crate::store::{Status, Store};
use crate::tasks::Tasks;
use crate::views::NodeEvent;

/// Where the node's time comes from. Every service reads the time through [`Ctx::now`], and
/// every rule (`crate::rules`) takes it as an argument, so the clock is swapped in one place.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Clock;

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn now(&self) -> u64 {
        crate::now_ms()
    }
}

/// The shared context.
#[derive(Clone, Debug)]
pub(crate) struct Ctx(Arc<CtxInner>);

/// What [`Ctx`] holds.
#[derive(Debug)]
pub(crate) struct CtxInner {
    pub(crate) keys: Keys,
    pub(crate) store: Store,
    pub(crate) net: Client,
    pub(crate) policy: RecordPolicy,
    /// The mailbox service's configuration (off unless enabled).
    pub(crate) mailbox: MailboxConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) counters: Counters,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Every task of this node (see [`crate::tasks`]).
    pub(crate) tasks: Tasks,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) clock: Clock,
}

impl Deref for Ctx {
    type Target = CtxInner;
    fn deref(&self) -> &CtxInner {
        &self.0
    }
}

impl Ctx {
    pub(crate) fn new(inner: CtxInner) -> Self {
        Ctx(Arc::new(inner))
    }

    /// This user's id.
    pub(crate) fn user_id(&self) -> UserId {
        self.keys.identity_public.user_id()
    }

    /// This device's peer id.
    pub(crate) fn peer_id(&self) -> PeerId {
        self.keys.device.peer_id()
    }

    /// The registered name, if any.
    pub(crate) fn name(&self) -> Option<String> {
        self.store.meta_get::<String>("name").or_warn("cannot read the name").flatten()
    }

    /// The time now, in milliseconds since the Unix epoch.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Runs `task` as one of the node's tasks: it ends, at the latest, on shutdown.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Sets a stored message's status and tells subscribers when it changed.
    pub(crate) fn set_status(&self, id: &[u8; 16], status: Status) {
        if let Some(Some(_)) = self.store.set_status(id, status).or_warn("cannot set a status") {
            self.status_changed(id, status);
        }
    }

    /// Tells subscribers that a message's stored status is now `status`.
    pub(crate) fn status_changed(&self, id: &[u8; 16], status: Status) {
        let _ = self
            .events
            .send(NodeEvent::Status { id: MessageId(*id).to_string(), status: status.as_str() });
    }
}
