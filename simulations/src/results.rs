//! From events to results: the metrics, `results.json`, the CSV time series, the summary table
//! and the plots' data. `kith-sim run` and `kith-sim report` share this code, so a Shadow run
//! and an in-process run are measured the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::events::Event;
use crate::plan::{Kind, Plan, Role};
use crate::plots::PlotData;
use crate::scenario::Scenario;

/// Percentiles of a sample, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub(crate) struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Percentiles { count: v.len(), p50: at(50.0), p95: at(95.0), p99: at(99.0), max: at(100.0) }
    }
}

/// Delivery of one kind of message.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Delivery {
    /// Messages of this kind in the workload.
    pub messages: usize,
    /// Messages the sender's node refused at once.
    pub send_failed: usize,
    /// Recipients that should have shown them (one per recipient device).
    pub expected: usize,
    /// Of those, how many did.
    pub delivered: usize,
    /// `delivered / expected`.
    pub ratio: f64,
    /// From `send` returning to the recipient's node showing the message.
    pub latency_ms: Percentiles,
}

/// Name operations.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Lookups {
    pub attempted: usize,
    pub succeeded: usize,
    pub success_ratio: f64,
    pub latency_ms: Percentiles,
    /// Peers queried per DHT lookup, averaged over every lookup of the run (libp2p's
    /// `QueryStats::num_requests`; Kademlia's hop count is not exposed by libp2p).
    pub mean_peers_queried: f64,
}

/// Bytes on the (simulated) wire.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Traffic {
    /// Sent by every node over the whole run.
    pub total_sent: u64,
    /// Per node, sent (bytes).
    pub per_node_sent: Percentiles,
    /// Per node, received (bytes).
    pub per_node_received: Percentiles,
    /// Bytes sent by all nodes from the start of the workload to the end, per byte of message
    /// text delivered. Includes every protocol's traffic (DHT, pings, gossip, syncs).
    pub wire_bytes_per_payload_byte: Option<f64>,
    /// The same figure when the workload is only group messages: their amplification.
    pub group_amplification: Option<f64>,
    /// Peers each node was connected to at the end of the run.
    pub connections_per_node: Percentiles,
}

/// The simulation itself.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct RunInfo {
    pub mode: String,
    pub wall_secs: f64,
    pub setup_secs: f64,
    pub workload_secs: f64,
    pub drain_secs: f64,
    pub cpu_secs: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Peak resident memory divided by the number of nodes.
    pub rss_per_node_kib: Option<f64>,
    /// How late a timer of the simulator fired during the workload and drain (it sleeps
    /// [`LAG_PROBE_MS`] at a time). Every node shares the machine's cores: when they are busy,
    /// every timer and every delivery waits for them, and the latencies above include that
    /// wait. `None` for Shadow runs, whose clock is simulated.
    pub timer_lag_ms: Option<Percentiles>,
    /// `timer_lag_ms.p95` above [`SATURATED_LAG_MS`]: the run was CPU-bound, and its latencies
    /// measure the machine as much as Kith.
    pub cpu_bound: bool,
}

/// Period of the simulator's timer-lag probe.
pub(crate) const LAG_PROBE_MS: u64 = 100;
/// Timer lag (p95, ms) above which a run is reported as CPU-bound.
pub(crate) const SATURATED_LAG_MS: f64 = 20.0;

impl RunInfo {
    /// Sets the timer-lag figures from the probe's samples (ms late, each).
    pub fn set_timer_lag(&mut self, samples: Vec<f64>) {
        let p = Percentiles::of(samples);
        self.cpu_bound = p.count > 0 && p.p95 > SATURATED_LAG_MS;
        self.timer_lag_ms = Some(p);
    }
}

/// Everything `results.json` holds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Results {
    pub scenario: String,
    pub seed: u64,
    pub users: usize,
    pub bootstrap_nodes: usize,
    pub mailbox_nodes: usize,
    pub delivery: BTreeMap<String, Delivery>,
    /// Messages shown twice to the same user (must be 0).
    pub duplicates: usize,
    /// Deliveries that did not happen although the scenario makes them possible (every node
    /// is back and every partition healed before the workload ends).
    pub lost: usize,
    pub registrations: Lookups,
    pub lookups: Lookups,
    pub groups_formed: usize,
    pub groups_failed: usize,
    pub group_formation_ms: Percentiles,
    /// Group messages the members could prove they lacked at the end (gaps in a member
    /// device's sequence numbers), summed over members: what catch-up had not fetched yet.
    #[serde(default)]
    pub group_missing_provable: u64,
    pub traffic: Traffic,
    pub errors: usize,
    /// The first few errors, for the reader.
    pub error_samples: Vec<String>,
    pub run: RunInfo,
}

/// Results plus what the files beside them need.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub results: Results,
    timeseries: Vec<(f64, Kind, usize, usize)>,
    latencies: Vec<(u64, Kind, usize, f64)>,
    nodes: Vec<(usize, Role, String, u64, u64)>,
    /// Written to `events.jsonl` when not empty.
    pub events: Vec<Event>,
}

/// Computes the results of a run from its plan and events. `setup_bytes` is the traffic of
/// each node when the workload started (from `Traffic` events written then).
pub(crate) fn analyze(
    scenario: &Scenario,
    plan: &Plan,
    events: &[Event],
    setup_traffic: &HashMap<usize, u64>,
    run: RunInfo,
) -> Analysis {
    let expected = plan.expected();
    let mut sent_at: HashMap<u64, i64> = HashMap::new();
    let mut failed: HashSet<u64> = HashSet::new();
    let mut seen: HashMap<(u64, usize), i64> = HashMap::new();
    let mut duplicates = 0;
    let mut errors = Vec::new();
    let mut lookups = Vec::new();
    let mut registers = Vec::new();
    let mut formed = Vec::new();
    let mut traffic: BTreeMap<usize, (u64, u64, u64, u64)> = BTreeMap::new();
    let mut connections: BTreeMap<usize, usize> = BTreeMap::new();
    let mut missing_provable = 0u64;
    for e in events {
        match e {
            Event::Sent { t, id, .. } => {
                sent_at.insert(*id, *t);
            }
            Event::SendFailed { id, error, .. } => {
                failed.insert(*id);
                errors.push(format!("send {id}: {error}"));
            }
            Event::Received { t, node, id } => {
                if seen.insert((*id, *node), *t).is_some() {
                    duplicates += 1;
                }
            }
            Event::Lookup { ok, ms, .. } => lookups.push((*ok, *ms)),
            Event::Register { ok, ms, .. } => registers.push((*ok, *ms)),
            Event::GroupFormed { ok, ms, .. } => formed.push((*ok, *ms)),
            Event::Traffic { node, sent, received, dht_lookups, dht_lookup_requests } => {
                traffic.insert(*node, (*sent, *received, *dht_lookups, *dht_lookup_requests));
            }
            Event::Error { node, what, .. } => errors.push(format!("node {node}: {what}")),
            Event::Connections { node, peers, .. } => {
                connections.insert(*node, *peers);
            }
            Event::Missing { messages, .. } => missing_provable += messages,
            Event::Down { .. } | Event::Up { .. } => {}
        }
    }
    let mut delivery: BTreeMap<Kind, Delivery> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut lost = 0;
    let mut payload_delivered = 0u64;
    // (time delivered, kind) and (time sent, kind, recipients) for the time series.
    let mut deliveries_at: Vec<(i64, Kind)> = Vec::new();
    let mut expected_at: Vec<(i64, Kind, usize)> = Vec::new();
    for (id, x) in &expected {
        let d = delivery.entry(x.kind).or_default();
        d.messages += 1;
        d.expected += x.recipients.len();
        if failed.contains(id) {
            d.send_failed += 1;
        }
        let start = sent_at.get(id).copied().unwrap_or(x.at_ms as i64);
        expected_at.push((start, x.kind, x.recipients.len()));
        if seen.contains_key(&(*id, x.from)) {
            errors.push(format!("message {id} was shown to its own sender as incoming"));
        }
        for r in &x.recipients {
            match seen.get(&(*id, *r)) {
                Some(t) => {
                    d.delivered += 1;
                    let ms = (*t - start).max(0) as f64;
                    latencies.push((*id, x.kind, *r, ms));
                    deliveries_at.push((*t, x.kind));
                    payload_delivered += u64::from(scenario.workload.message_bytes);
                }
                None => lost += 1,
            }
        }
    }
    for (kind, d) in &mut delivery {
        d.ratio = if d.expected == 0 { 1.0 } else { d.delivered as f64 / d.expected as f64 };
        d.latency_ms =
            Percentiles::of(latencies.iter().filter(|l| l.1 == *kind).map(|l| l.3).collect());
    }
    let ops = |v: &[(bool, f64)]| {
        let ok: Vec<f64> = v.iter().filter(|x| x.0).map(|x| x.1).collect();
        Lookups {
            attempted: v.len(),
            succeeded: ok.len(),
            success_ratio: if v.is_empty() { 1.0 } else { ok.len() as f64 / v.len() as f64 },
            latency_ms: Percentiles::of(ok),
            mean_peers_queried: 0.0,
        }
    };
    let mut lookups = ops(&lookups);
    let (dl, dr) = traffic.values().fold((0u64, 0u64), |a, t| (a.0 + t.2, a.1 + t.3));
    lookups.mean_peers_queried = if dl == 0 { 0.0 } else { dr as f64 / dl as f64 };
    let total_sent: u64 = traffic.values().map(|t| t.0).sum();
    let workload_sent: u64 = traffic
        .iter()
        .map(|(n, t)| t.0.saturating_sub(setup_traffic.get(n).copied().unwrap_or(0)))
        .sum();
    let per_payload = (payload_delivered > 0 && !setup_traffic.is_empty())
        .then(|| workload_sent as f64 / payload_delivered as f64);
    let groups_only = scenario.workload.direct_messages == 0 && scenario.workload.lookups == 0;
    let nodes: Vec<(usize, Role, String, u64, u64)> = plan
        .nodes
        .iter()
        .map(|n| {
            let t = traffic.get(&n.index).copied().unwrap_or_default();
            let region = scenario.regions.get(n.region).map(|r| r.name.clone()).unwrap_or_default();
            (n.index, n.role, region, t.0, t.1)
        })
        .collect();
    // Cumulative delivery ratio over time: delivered by t / expected of messages sent by t.
    let end = deliveries_at
        .iter()
        .map(|d| d.0)
        .chain(expected_at.iter().map(|e| e.0))
        .max()
        .unwrap_or(0)
        .max((scenario.workload.duration_secs * 1000) as i64);
    let step = (end / 60).max(1000);
    let mut timeseries = Vec::new();
    let mut t = step;
    while t <= end + step {
        for kind in Kind::ALL {
            let exp: usize =
                expected_at.iter().filter(|e| e.1 == kind && e.0 <= t).map(|e| e.2).sum();
            let del = deliveries_at.iter().filter(|d| d.1 == kind && d.0 <= t).count();
            if expected_at.iter().any(|e| e.1 == kind) {
                timeseries.push((t as f64 / 1000.0, kind, exp, del));
            }
        }
        t += step;
    }
    let results = Results {
        scenario: scenario.name.clone(),
        seed: plan.seed,
        users: plan.users(),
        bootstrap_nodes: plan.nodes.iter().filter(|n| n.role == Role::Bootstrap).count(),
        mailbox_nodes: plan.nodes.iter().filter(|n| n.role == Role::Mailbox).count(),
        delivery: delivery.into_iter().map(|(k, d)| (k.as_str().to_owned(), d)).collect(),
        duplicates,
        lost,
        registrations: ops(&registers),
        lookups,
        groups_formed: formed.iter().filter(|f| f.0).count(),
        groups_failed: formed.iter().filter(|f| !f.0).count(),
        group_formation_ms: Percentiles::of(formed.iter().filter(|f| f.0).map(|f| f.1).collect()),
        group_missing_provable: missing_provable,
        traffic: Traffic {
            total_sent,
            per_node_sent: Percentiles::of(nodes.iter().map(|n| n.3 as f64).collect()),
            per_node_received: Percentiles::of(nodes.iter().map(|n| n.4 as f64).collect()),
            wire_bytes_per_payload_byte: per_payload,
            group_amplification: per_payload.filter(|_| groups_only),
            connections_per_node: Percentiles::of(
                connections.values().map(|&c| c as f64).collect(),
            ),
        },
        errors: errors.len(),
        error_samples: errors.into_iter().take(10).collect(),
        run,
    };
    Analysis { results, timeseries, latencies, nodes, events: Vec::new() }
}

impl Analysis {
    /// Writes `results.json`, `timeseries.csv`, `latencies.csv`, `nodes.csv` and the plots.
    pub fn write(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut written = Vec::new();
        let mut put = |name: &str, body: String| -> Result<(), String> {
            let p = dir.join(name);
            std::fs::write(&p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            written.push(p);
            Ok(())
        };
        put(
            "results.json",
            serde_json::to_string_pretty(&self.results).map_err(|e| e.to_string())? + "\n",
        )?;
        let mut ts = String::from("t_s,kind,expected,delivered,ratio\n");
        for (t, k, exp, del) in &self.timeseries {
            let ratio = if *exp == 0 { 1.0 } else { *del as f64 / *exp as f64 };
            let _ = writeln!(ts, "{t:.1},{},{exp},{del},{ratio:.4}", k.as_str());
        }
        put("timeseries.csv", ts)?;
        let mut lat = String::from("id,kind,recipient,latency_ms\n");
        for (id, k, r, ms) in &self.latencies {
            let _ = writeln!(lat, "{id},{},{r},{ms:.1}", k.as_str());
        }
        put("latencies.csv", lat)?;
        let mut nodes = String::from("node,role,region,bytes_sent,bytes_received\n");
        for (i, role, region, s, r) in &self.nodes {
            let role = match role {
                Role::User => "user",
                Role::Bootstrap => "bootstrap",
                Role::Mailbox => "mailbox",
            };
            let _ = writeln!(nodes, "{i},{role},{region},{s},{r}");
        }
        put("nodes.csv", nodes)?;
        if !self.events.is_empty() {
            put("events.jsonl", self.events.iter().map(|e| e.line() + "\n").collect())?;
        }
        let plots = crate::plots::write_plots(dir, &self.plot_data()).map_err(|e| e.to_string())?;
        written.extend(plots);
        Ok(written)
    }

    fn plot_data(&self) -> PlotData {
        let mut latencies_ms = Vec::new();
        let mut delivery_over_time = Vec::new();
        for kind in Kind::ALL {
            let l: Vec<f64> = self.latencies.iter().filter(|l| l.1 == kind).map(|l| l.3).collect();
            if !l.is_empty() {
                latencies_ms.push((kind.as_str().to_owned(), l));
            }
            let pts: Vec<(f64, f64)> = self
                .timeseries
                .iter()
                .filter(|p| p.1 == kind && p.2 > 0)
                .map(|p| (p.0, p.3 as f64 / p.2 as f64))
                .collect();
            if !pts.is_empty() {
                delivery_over_time.push((kind.as_str().to_owned(), pts));
            }
        }
        PlotData {
            latencies_ms,
            delivery_over_time,
            bytes_per_node: self.nodes.iter().map(|n| (format!("{}", n.0), n.3, n.4)).collect(),
            title: format!("{} (seed {})", self.results.scenario, self.results.seed),
        }
    }

    /// The summary table for the terminal.
    pub fn table(&self) -> String {
        let r = &self.results;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (seed {}): {} users, {} bootstrap, {} mailbox nodes",
            r.scenario, r.seed, r.users, r.bootstrap_nodes, r.mailbox_nodes
        );
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "kind",
            "messages",
            "expected",
            "delivered",
            "ratio",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms"
        );
        for (k, d) in &r.delivery {
            let l = &d.latency_ms;
            let _ = writeln!(
                s,
                "{:<16} {:>8} {:>10} {:>10} {:>7.4} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                k, d.messages, d.expected, d.delivered, d.ratio, l.p50, l.p95, l.p99, l.max
            );
        }
        for (what, o) in [("registrations", &r.registrations), ("lookups", &r.lookups)] {
            let _ = writeln!(
                s,
                "{:<16} {:>8} ok of {:<8} ratio {:.4}  p50 {:.1} ms  p99 {:.1} ms",
                what, o.succeeded, o.attempted, o.success_ratio, o.latency_ms.p50, o.latency_ms.p99
            );
        }
        let _ =
            writeln!(s, "peers queried per DHT lookup (mean): {:.1}", r.lookups.mean_peers_queried);
        if r.groups_formed + r.groups_failed > 0 {
            let _ = writeln!(
                s,
                "groups formed: {} of {} (slowest {:.0} ms); group messages members could prove \
                 missing at the end: {}",
                r.groups_formed,
                r.groups_formed + r.groups_failed,
                r.group_formation_ms.max,
                r.group_missing_provable
            );
        }
        let _ = writeln!(s, "duplicates shown to users: {}   lost: {}", r.duplicates, r.lost);
        let t = &r.traffic;
        let _ = writeln!(
            s,
            "bytes sent: {:.1} MiB in all, per node p50 {:.0} KiB, max {:.0} KiB; wire bytes per payload byte: {}",
            t.total_sent as f64 / 1048576.0,
            t.per_node_sent.p50 / 1024.0,
            t.per_node_sent.max / 1024.0,
            t.wire_bytes_per_payload_byte.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
        );
        let c = &t.connections_per_node;
        if c.count > 0 {
            let _ = writeln!(
                s,
                "connections per node at the end: p50 {:.0}, p95 {:.0}, max {:.0}",
                c.p50, c.p95, c.max
            );
        }
        let u = &r.run;
        let _ = writeln!(
            s,
            "run: {:.1} s wall (setup {:.1} s, workload {:.1} s, drain {:.1} s), cpu {}, peak memory {}",
            u.wall_secs,
            u.setup_secs,
            u.workload_secs,
            u.drain_secs,
            u.cpu_secs.map(|c| format!("{c:.1} s")).unwrap_or_else(|| "-".into()),
            u.peak_rss_mib
                .map(|m| format!(
                    "{m:.0} MiB ({:.0} KiB per node)",
                    u.rss_per_node_kib.unwrap_or(0.0)
                ))
                .unwrap_or_else(|| "-".into()),
        );
        if let Some(l) = u.timer_lag_ms.as_ref().filter(|l| l.count > 0) {
            let _ = writeln!(
                s,
                "timer lag during the workload and drain: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
                l.p50, l.p95, l.max
            );
            if u.cpu_bound {
                let _ = writeln!(
                    s,
                    "warning: this run was CPU-bound (timer lag p95 above {SATURATED_LAG_MS} ms): \
                     its latencies include waiting for the machine's cores; run fewer nodes \
                     or a lighter workload to measure Kith alone"
                );
            }
        }
        if r.errors > 0 {
            let _ = writeln!(s, "errors: {} (first: {})", r.errors, r.error_samples.join("; "));
        }
        s
    }

    /// The checks of `--check`: every delivery made, no duplicates. Returns what failed.
    pub fn check(&self) -> Vec<String> {
        let r = &self.results;
        let mut bad = Vec::new();
        for (k, d) in &r.delivery {
            if d.delivered < d.expected {
                bad.push(format!("{k}: delivery ratio {:.4} < 1", d.ratio));
            }
        }
        if r.duplicates > 0 {
            bad.push(format!("{} duplicates shown to users", r.duplicates));
        }
        if r.groups_failed > 0 {
            bad.push(format!("{} groups did not form", r.groups_failed));
        }
        bad
    }
}

/// This process's CPU time (user + system) and peak resident memory, from `/proc` (Linux).
pub(crate) fn process_usage() -> (Option<f64>, Option<f64>) {
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = s.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        // Linux reports these in clock ticks of 1/100 s (USER_HZ) on every common platform.
        Some((utime + stime) / 100.0)
    });
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    });
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max, p.count), (50.0, 95.0, 99.0, 100.0, 100));
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        assert_eq!(Percentiles::of(vec![3.0]).p50, 3.0);
    }

    #[test]
    fn deliveries_losses_and_duplicates_are_counted_from_events() {
        let s = Scenario::parse(
            "name = \"t\"\nnodes = 5\n[workload]\nduration_secs = 10\ndirect_messages = 3\ngroups = [{ members = 3, messages = 1 }]\n",
            "t.toml",
        )
        .unwrap();
        let plan = Plan::new(&s, 1);
        let exp = plan.expected();
        let mut events = Vec::new();
        let mut skipped = false;
        for (id, x) in &exp {
            events.push(Event::Sent { t: x.at_ms as i64, node: x.from, id: *id });
            for r in &x.recipients {
                if x.kind == Kind::Group && !skipped {
                    skipped = true;
                    continue;
                }
                events.push(Event::Received { t: x.at_ms as i64 + 40, node: *r, id: *id });
            }
        }
        let dup =
            events.iter().rev().find(|e| matches!(e, Event::Received { .. })).cloned().unwrap();
        events.push(dup);
        let a = analyze(&s, &plan, &events, &HashMap::new(), RunInfo::default());
        let r = &a.results;
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.delivery["group"].expected, 2);
        assert_eq!(r.delivery["group"].delivered, 1);
        assert_eq!(r.delivery["direct_online"].latency_ms.p50, 40.0);
        assert_eq!(a.check().len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let files = a.write(dir.path()).unwrap();
        assert!(files.iter().any(|f| f.ends_with("latency_cdf.svg")));
        let ts = std::fs::read_to_string(dir.path().join("timeseries.csv")).unwrap();
        assert!(ts.lines().last().unwrap().contains(",group,2,1,0.5000"), "{ts}");
    }

    #[test]
    fn a_run_whose_timers_fire_late_is_called_cpu_bound_in_its_table() {
        let s = Scenario::parse(
            "name = \"t\"\nnodes = 3\n[workload]\nduration_secs = 1\ndirect_messages = 1\n",
            "t.toml",
        )
        .unwrap();
        let plan = Plan::new(&s, 1);
        let mut quiet = RunInfo::default();
        quiet.set_timer_lag(vec![1.0; 100]);
        assert!(!quiet.cpu_bound);
        let a = analyze(&s, &plan, &[], &HashMap::new(), quiet);
        assert!(a.table().contains("timer lag during the workload and drain: p50 1.0 ms"));
        assert!(!a.table().contains("CPU-bound"));
        let mut busy = RunInfo::default();
        // 90 prompt timers and 10 that fired 250 ms late: p95 is late.
        busy.set_timer_lag((0..100).map(|i| if i < 90 { 1.0 } else { 250.0 }).collect());
        assert!(busy.cpu_bound);
        let a = analyze(&s, &plan, &[], &HashMap::new(), busy);
        assert!(a.table().contains("warning: this run was CPU-bound"), "{}", a.table());
        // A Shadow run has no probe: no line, no warning.
        let a = analyze(&s, &plan, &[], &HashMap::new(), RunInfo::default());
        assert!(!a.table().contains("timer lag"));
    }
}
