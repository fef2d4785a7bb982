//! Prometheus metrics: libp2p's swarm metrics (prefix `libp2p_`) and Kith's own (`kith_`).

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a rejection counter.
pub type ReasonLabels = Vec<(String, String)>;

/// Kith's counters and gauges. Cloning shares the underlying values.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Name records refused (on PUT or when read).
    pub records_rejected: Counter,
    /// Envelopes that did not open or broke a rule.
    pub envelopes_rejected: Counter,
    /// Envelopes sealed with Noise (a first message to a device, or one not in a session yet).
    pub sealed_noise: Counter,
    /// Envelopes sealed in a Double Ratchet session.
    pub sealed_session: Counter,
    /// Devices that answered `no_session` (they lost a session): the message was sealed again.
    pub sessions_lost: Counter,
    /// Direct envelopes answered `busy` because their sender was over its rate.
    pub envelopes_limited: Counter,
    /// Reports made by this node's user.
    pub reports: Counter,
    /// Messages a bot handled.
    pub bot_handled: Counter,
    /// Messages a bot gave up on.
    pub bot_failed: Counter,
    /// Malformed or oversized frames.
    pub frames_rejected: Counter,
    /// Inbound envelopes answered busy.
    pub busy: Counter,
    /// Messages stored from other users.
    pub messages_received: Counter,
    /// Messages queued by this user.
    pub messages_sent: Counter,
    /// Envelopes held by this mailbox.
    pub mailbox_envelopes: Gauge,
    /// Bytes held by this mailbox.
    pub mailbox_bytes: Gauge,
    /// Deposits accepted by this mailbox.
    pub mailbox_deposits: Counter,
    /// Fetches served by this mailbox.
    pub mailbox_fetches: Counter,
    /// Mailbox requests refused, by reason.
    pub mailbox_rejections: Family<ReasonLabels, Counter>,
    /// DHT record lookups (GET queries) finished.
    pub dht_lookups: Counter,
    /// Peers queried by those lookups, in all (libp2p's `QueryStats::num_requests`).
    pub dht_lookup_requests: Counter,
    /// Blob manifests and chunks from peers that failed their check.
    pub blob_chunks_rejected: Counter,
    /// Sealed blob bytes served to peers.
    pub blob_bytes_served: Counter,
    /// Sealed blob bytes fetched from peers (chunks that passed their check).
    pub blob_bytes_fetched: Counter,
}

impl Counters {
    /// Registers every counter under `kith_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kith");
        r.register("records_rejected", "Name records refused", self.records_rejected.clone());
        r.register("envelopes_rejected", "Envelopes refused", self.envelopes_rejected.clone());
        r.register(
            "sealed_noise",
            "Envelopes sealed with Noise (not in a session yet)",
            self.sealed_noise.clone(),
        );
        r.register(
            "sealed_session",
            "Envelopes sealed in a Double Ratchet session",
            self.sealed_session.clone(),
        );
        r.register(
            "sessions_lost",
            "Devices that answered no_session; the message was sealed again",
            self.sessions_lost.clone(),
        );
        r.register(
            "envelopes_limited",
            "Direct envelopes answered busy: their sender was over its rate",
            self.envelopes_limited.clone(),
        );
        r.register("reports", "Reports made by this node's user", self.reports.clone());
        r.register("bot_handled", "Messages a bot handled", self.bot_handled.clone());
        r.register("bot_failed", "Messages a bot gave up on", self.bot_failed.clone());
        r.register(
            "frames_rejected",
            "Malformed or oversized frames",
            self.frames_rejected.clone(),
        );
        r.register("busy", "Inbound envelopes answered busy", self.busy.clone());
        r.register(
            "blob_chunks_rejected",
            "Blob manifests and chunks from peers that failed their check",
            self.blob_chunks_rejected.clone(),
        );
        r.register(
            "blob_bytes_fetched",
            "Sealed blob bytes fetched from peers",
            self.blob_bytes_fetched.clone(),
        );
        r.register(
            "blob_bytes_served",
            "Sealed blob bytes served to peers",
            self.blob_bytes_served.clone(),
        );
        r.register("dht_lookups", "DHT record lookups finished", self.dht_lookups.clone());
        r.register(
            "dht_lookup_requests",
            "Peers queried by DHT record lookups",
            self.dht_lookup_requests.clone(),
        );
        r.register(
            "messages_received",
            "Messages stored from other users",
            self.messages_received.clone(),
        );
        r.register("messages_sent", "Messages queued by this user", self.messages_sent.clone());
        r.register(
            "mailbox_envelopes",
            "Envelopes held by this mailbox",
            self.mailbox_envelopes.clone(),
        );
        r.register(
            "mailbox_bytes",
            "Bytes of envelopes held by this mailbox",
            self.mailbox_bytes.clone(),
        );
        r.register(
            "mailbox_deposits",
            "Deposits accepted by this mailbox",
            self.mailbox_deposits.clone(),
        );
        r.register(
            "mailbox_fetches",
            "Fetches served by this mailbox",
            self.mailbox_fetches.clone(),
        );
        r.register(
            "mailbox_rejections",
            "Mailbox requests refused",
            self.mailbox_rejections.clone(),
        );
    }

    /// Counts a refused mailbox request.
    pub fn mailbox_refused(&self, reason: &str) {
        self.mailbox_rejections
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }
}

/// The registry, shared between the node and the API.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl Metrics {
    /// Wraps a filled registry.
    pub fn new(registry: Registry) -> Self {
        Metrics { registry: Mutex::new(registry) }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}
