//! `kith-sim shadow`: a configuration for the Shadow network simulator (shadow.github.io), in
//! which every node of a scenario is a real `kith-sim node` process on its own simulated host,
//! talking real TCP. `kith-sim report` turns the processes' logs into the usual results.
//!
//! What Shadow cannot express: its graph gives one latency per edge (a distribution becomes its
//! mean), limits each host's bandwidth (the scenario limits each connection), and is static
//! (partitions are left out; churn is done by the node processes themselves).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Role};
use crate::scenario::{Latency, Scenario};

/// Shadow's simulated clock starts at 2000-01-01T00:00:00Z: this, in unix milliseconds.
pub(crate) const SHADOW_EPOCH_MS: u64 = 946_684_800_000;
/// The TCP port every node listens on under Shadow (each host has its own address).
pub(crate) const SHADOW_PORT: u16 = 4100;
/// How long before the workload group creators form their groups, by default.
pub(crate) const GROUP_LEAD_SECS: u64 = 10;
/// Time after the drain before Shadow stops the simulation (the processes exit before).
const STOP_MARGIN_MS: u64 = 30_000;
/// When the first bootstrap node starts, the other bootstrap nodes, the mailbox nodes, and
/// the first user (simulated time, ms).
const FIRST_BOOTSTRAP_AT_MS: u64 = 1_000;
const BOOTSTRAP_AT_MS: u64 = 1_500;
const MAILBOX_AT_MS: u64 = 2_000;
const USERS_FROM_MS: u64 = 3_000;
/// Time the last user has to register before groups form.
const REGISTER_MS: u64 = 10_000;

/// The simulated address of node `i`'s host: 11.0.x.y, y in 1..=250.
pub(crate) fn host_ip(i: usize) -> Ipv4Addr {
    let x = (i / 250) as u32;
    let y = (i % 250) as u32 + 1;
    Ipv4Addr::from((11u32 << 24) | (x << 8) | y)
}

/// The name of node `i`'s host.
pub(crate) fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// Setup before the workload: 30 s plus 50 ms per node.
pub(crate) fn setup_ms(nodes: usize) -> u64 {
    30_000 + 50 * nodes as u64
}

/// When node `index` starts, in simulated ms since Shadow's start.
fn start_ms(plan: &Plan, index: usize, setup: u64) -> u64 {
    let Some(n) = plan.nodes.get(index) else { return USERS_FROM_MS };
    match n.role {
        Role::Bootstrap
            if plan.nodes.iter().position(|x| x.role == Role::Bootstrap) == Some(index) =>
        {
            FIRST_BOOTSTRAP_AT_MS
        }
        Role::Bootstrap => BOOTSTRAP_AT_MS,
        Role::Mailbox => MAILBOX_AT_MS,
        Role::User => {
            // Users spread evenly, the last one REGISTER_MS before groups form.
            let users = plan.users().max(1) as u64;
            let window =
                setup.saturating_sub(USERS_FROM_MS + GROUP_LEAD_SECS * 1000 + REGISTER_MS).max(1);
            USERS_FROM_MS + index as u64 * window / users
        }
    }
}

/// The mean of a latency distribution, in ms (Shadow takes one latency per edge).
pub(crate) fn mean_ms(l: &Latency) -> f64 {
    match *l {
        Latency::Fixed { ms } => ms,
        Latency::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
        Latency::Normal { mean_ms, min_ms, .. } => mean_ms.max(min_ms),
    }
}

/// What `kith-sim report` needs to know about a generated run (`meta.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub scenario: String,
    pub seed: u64,
    pub hosts: usize,
    /// Unix ms of the workload's time zero (in Shadow's simulated clock).
    #[serde(default)]
    pub start_at_ms: u64,
    #[serde(default)]
    pub setup_ms: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub drain_ms: u64,
    #[serde(default)]
    pub stop_time_secs: u64,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub binary: String,
    /// Partitions of the scenario that the configuration leaves out.
    #[serde(default)]
    pub partitions_left_out: usize,
    /// What differs from the scenario, for the reader.
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Serialize)]
struct Config {
    general: General,
    experimental: Experimental,
    network: Network,
    hosts: serde_yaml_ng::Mapping,
}

#[derive(Serialize)]
struct General {
    stop_time: String,
    /// Shadow's own seed is 32 bits.
    seed: u32,
    model_unblocked_syscall_latency: bool,
}

/// sled 0.34 initialises some globals with a spin loop (`Lazy`) that never yields: without
/// native preemption Shadow's simulated time never advances past it (seen at 1.000 s). With it,
/// Shadow interrupts a thread that ran too long without a syscall, at a cost in determinism:
/// where such a thread is preempted depends on the real machine's timing.
#[derive(Serialize)]
struct Experimental {
    native_preemption_enabled: bool,
}

#[derive(Serialize)]
struct Network {
    graph: Graph,
}

#[derive(Serialize)]
struct Graph {
    #[serde(rename = "type")]
    kind: String,
    file: GraphFile,
}

#[derive(Serialize)]
struct GraphFile {
    path: String,
}

#[derive(Serialize)]
struct Host {
    network_node_id: usize,
    ip_addr: String,
    processes: Vec<Process>,
}

#[derive(Serialize)]
struct Process {
    path: String,
    args: Vec<String>,
    start_time: String,
    expected_final_state: FinalState,
}

#[derive(Serialize)]
struct FinalState {
    exited: i32,
}

/// What `kith-sim shadow` was asked.
#[derive(Debug)]
pub(crate) struct ShadowOptions {
    pub scenario: PathBuf,
    pub out: PathBuf,
    pub seed: Option<u64>,
    pub binary: Option<PathBuf>,
}

/// Writes `shadow.yaml`, `network.gml`, `scenario.toml` and `meta.json` into `--out`.
pub(crate) fn generate(opts: ShadowOptions) -> Result<()> {
    let scenario = Scenario::load(&opts.scenario)?;
    let seed = opts.seed.unwrap_or(scenario.seed);
    let plan = Plan::new(&scenario, seed);
    let binary = match opts.binary {
        Some(b) => b,
        None => std::env::current_exe().context("cannot tell where kith-sim is; give --binary")?,
    };
    let binary = std::path::absolute(&binary)
        .with_context(|| format!("cannot make {} absolute", binary.display()))?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let out = opts
        .out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.out.display()))?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let total = plan.nodes.len();
    let setup = setup_ms(total);
    let duration = scenario.workload.duration_secs * 1000;
    let drain = scenario.drain_secs * 1000;
    let start_at = SHADOW_EPOCH_MS + setup;
    let stop_secs = (setup + duration + drain + STOP_MARGIN_MS).div_ceil(1000);

    let mut notes = vec![
        "Shadow takes one latency per graph edge (its `jitter` does nothing yet): each latency \
         distribution is replaced by its mean (at least 1 ms)"
            .to_owned(),
        "Shadow limits each host's bandwidth, the scenario each connection's: a region's hosts \
         get the bandwidth of the region's own link (1 Gbit when unlimited)"
            .to_owned(),
    ];
    if !scenario.partitions.is_empty() {
        let w = format!(
            "the scenario has {} partition(s); Shadow's network graph is static, so they are \
             left out of this configuration",
            scenario.partitions.len()
        );
        eprintln!("kith-sim: warning: {w}");
        notes.push(w);
    }

    let scenario_copy = out.join("scenario.toml");
    let text = std::fs::read_to_string(&opts.scenario)
        .with_context(|| format!("cannot read {}", opts.scenario.display()))?;
    std::fs::write(&scenario_copy, text)
        .with_context(|| format!("cannot write {}", scenario_copy.display()))?;

    let mut hosts = serde_yaml_ng::Mapping::new();
    for n in &plan.nodes {
        let i = n.index;
        let args: Vec<String> = vec![
            "node".into(),
            "--scenario".into(),
            scenario_copy.display().to_string(),
            "--seed".into(),
            seed.to_string(),
            "--index".into(),
            i.to_string(),
            "--start-at".into(),
            start_at.to_string(),
            "--log".into(),
            logs.join(format!("{}.jsonl", host_name(i))).display().to_string(),
            "--work-dir".into(),
            out.join("homes").display().to_string(),
        ];
        let host = Host {
            network_node_id: n.region,
            ip_addr: host_ip(i).to_string(),
            processes: vec![Process {
                path: binary.display().to_string(),
                args,
                start_time: format!("{} ms", start_ms(&plan, i, setup)),
                expected_final_state: FinalState { exited: 0 },
            }],
        };
        hosts.insert(
            serde_yaml_ng::Value::String(host_name(i)),
            serde_yaml_ng::to_value(host).context("cannot encode a host")?,
        );
    }
    let config = Config {
        general: General {
            stop_time: format!("{stop_secs} s"),
            seed: u32::try_from(seed).unwrap_or((seed ^ (seed >> 32)) as u32),
            model_unblocked_syscall_latency: true,
        },
        experimental: Experimental { native_preemption_enabled: true },
        network: Network {
            graph: Graph { kind: "gml".into(), file: GraphFile { path: "network.gml".into() } },
        },
        hosts,
    };
    let mut yaml = format!(
        "# Shadow 3.x configuration for scenario {:?}, seed {seed}, written by kith-sim shadow.\n\
         # Run: cd {} && shadow shadow.yaml; then: kith-sim report {}\n",
        scenario.name,
        out.display(),
        out.display()
    );
    for n in &notes {
        yaml.push_str(&format!("# Note: {n}.\n"));
    }
    yaml.push_str(&serde_yaml_ng::to_string(&config).context("cannot encode shadow.yaml")?);
    write(&out.join("shadow.yaml"), &yaml)?;
    write(&out.join("network.gml"), &gml(&scenario))?;

    let meta = Meta {
        scenario: scenario.name.clone(),
        seed,
        hosts: total,
        start_at_ms: start_at,
        setup_ms: setup,
        duration_ms: duration,
        drain_ms: drain,
        stop_time_secs: stop_secs,
        port: SHADOW_PORT,
        binary: binary.display().to_string(),
        partitions_left_out: scenario.partitions.len(),
        notes,
    };
    write(
        &out.join("meta.json"),
        &(serde_json::to_string_pretty(&meta).context("cannot encode meta.json")? + "\n"),
    )?;
    println!(
        "wrote {} ({total} hosts, {stop_secs} s simulated); run `shadow shadow.yaml` there, \
         then `kith-sim report {}`",
        out.join("shadow.yaml").display(),
        out.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The network graph: one node per region, an edge for every pair of regions (itself
/// included), undirected.
fn gml(s: &Scenario) -> String {
    let bw = |kbit: u64| {
        if kbit == 0 {
            "1 Gbit".to_owned()
        } else {
            format!("{kbit} Kbit")
        }
    };
    let mut g = String::from("graph [\n  directed 0\n");
    for (i, r) in s.regions.iter().enumerate() {
        let b = bw(s.shape(i, i).bandwidth_kbit);
        let label: String = r.name.chars().filter(|c| *c != '"' && *c != '\n').collect();
        g.push_str(&format!(
            "  node [\n    id {i}\n    label \"{label}\"\n    host_bandwidth_down \"{b}\"\n    \
             host_bandwidth_up \"{b}\"\n  ]\n"
        ));
    }
    for a in 0..s.regions.len() {
        for b in a..s.regions.len() {
            let shape = s.shape(a, b);
            // Whole microseconds (Shadow takes integers), at least 1 ms.
            let us = (mean_ms(&shape.latency) * 1000.0).round().max(1000.0) as u64;
            g.push_str(&format!(
                "  edge [\n    source {a}\n    target {b}\n    latency \"{us} us\"\n    \
                 packet_loss {:.6}\n  ]\n",
                shape.loss
            ));
        }
    }
    g.push_str("]\n");
    g
}

/// Checks that `dir` looks like `kith-sim shadow` output and reads its meta.json.
pub(crate) fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join("meta.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is {} a kith-sim shadow directory?)",
            path.display(),
            dir.display()
        )
    })?;
    let meta: Meta = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a kith-sim meta.json", path.display()))?;
    if meta.hosts == 0 {
        bail!("{}: no hosts", path.display());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_distinct_and_never_end_in_0_or_255() {
        let ips: std::collections::HashSet<Ipv4Addr> = (0..20_000).map(host_ip).collect();
        assert_eq!(ips.len(), 20_000);
        assert!(ips.iter().all(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255));
        assert_eq!(host_ip(0), Ipv4Addr::new(11, 0, 0, 1));
    }

    #[test]
    fn means_of_latency_distributions() {
        assert_eq!(mean_ms(&Latency::Uniform { min_ms: 40.0, max_ms: 60.0 }), 50.0);
        assert_eq!(mean_ms(&Latency::Fixed { ms: 7.0 }), 7.0);
        assert_eq!(mean_ms(&Latency::Normal { mean_ms: 30.0, stddev_ms: 5.0, min_ms: 0.0 }), 30.0);
    }
}
