//! The scenario file: what a simulation runs. Every field is explained in
//! `docs/simulations.md`; this module parses and checks it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Most nodes of one scenario (user, bootstrap and mailbox nodes together).
pub(crate) const MAX_NODES: u32 = 20_000;
/// Most workload items (messages and lookups) of one scenario.
pub(crate) const MAX_ACTIONS: u32 = 1_000_000;
/// Longest workload.
pub(crate) const MAX_DURATION_SECS: u64 = 24 * 3600;

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A scenario, as written in its TOML file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    /// Short name, used in titles and file names.
    pub name: String,
    /// What the scenario is about.
    #[serde(default)]
    pub description: String,
    /// Seed used when `--seed` is not given.
    #[serde(default = "one")]
    pub seed: u64,
    /// Number of user nodes (each registers a name `user<N>`).
    pub nodes: u32,
    /// Bootstrap nodes (no user, always online, never partitioned away from each other).
    #[serde(default = "two")]
    pub bootstrap_nodes: u32,
    /// Mailbox nodes (`--mailbox` nodes, always online); users enroll with them round robin.
    #[serde(default)]
    pub mailbox_nodes: u32,
    /// Proof of work of name records, in bits (the daemon's default is 22).
    #[serde(default = "eight")]
    pub pow_bits: u32,
    /// How long to wait after the workload for the last deliveries.
    #[serde(default = "thirty")]
    pub drain_secs: u64,
    /// Whether user nodes serve the DHT (Kademlia server mode). False makes them DHT clients,
    /// as devices behind NATs are: they use the DHT but are not in its routing tables, so no
    /// lookup finds their addresses and messages reach them through their mailboxes or over
    /// connections they opened.
    #[serde(default = "yes")]
    pub users_serve_dht: bool,
    /// Regions; user nodes are spread over them by weight. Default: one region "all".
    #[serde(default)]
    pub regions: Vec<Region>,
    /// Link shape used for region pairs that `links` does not name.
    #[serde(default)]
    pub default_link: LinkShape,
    /// Link shapes per region pair (symmetric).
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// What the users do.
    pub workload: Workload,
    /// Nodes leaving and coming back.
    #[serde(default)]
    pub churn: Option<Churn>,
    /// Partitions that open and heal.
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

fn one() -> u64 {
    1
}
fn two() -> u32 {
    2
}
fn eight() -> u32 {
    8
}
fn thirty() -> u64 {
    30
}
fn yes() -> bool {
    true
}

/// A region.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Region {
    /// Its name.
    pub name: String,
    /// Relative share of the user nodes.
    #[serde(default = "weight_one")]
    pub weight: f64,
}

fn weight_one() -> f64 {
    1.0
}

/// One-way latency of a link, drawn per chunk of data sent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Latency {
    /// Always `ms`.
    Fixed { ms: f64 },
    /// Uniform between `min_ms` and `max_ms`.
    Uniform { min_ms: f64, max_ms: f64 },
    /// Normal, cut at `min_ms` (default 0).
    Normal {
        mean_ms: f64,
        stddev_ms: f64,
        #[serde(default)]
        min_ms: f64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed { ms: 5.0 }
    }
}

impl Latency {
    /// Draws one latency, in milliseconds.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> f64 {
        match *self {
            Latency::Fixed { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    rng.gen_range(min_ms..max_ms)
                } else {
                    min_ms
                }
            }
            Latency::Normal { mean_ms, stddev_ms, min_ms } => {
                // Box-Muller: two uniforms give one standard normal.
                let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
                let u2: f64 = rng.gen_range(0.0..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (mean_ms + stddev_ms * z).max(min_ms)
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && (0.0..=60_000.0).contains(&v);
        let fine = match *self {
            Latency::Fixed { ms } => ok(ms),
            Latency::Uniform { min_ms, max_ms } => ok(min_ms) && ok(max_ms) && min_ms <= max_ms,
            Latency::Normal { mean_ms, stddev_ms, min_ms } => {
                ok(mean_ms) && ok(stddev_ms) && ok(min_ms)
            }
        };
        if fine {
            Ok(())
        } else {
            Err(format!("latency {self:?} must be finite, between 0 and 60000 ms, min <= max"))
        }
    }
}

/// How a link behaves.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkShape {
    /// One-way latency.
    #[serde(default)]
    pub latency: Latency,
    /// Bandwidth of each direction of each connection, in kbit/s; 0 means unlimited.
    #[serde(default)]
    pub bandwidth_kbit: u64,
    /// Probability that a 1460-byte segment is lost; a lost segment arrives one
    /// retransmission timeout (200 ms + the round trip) late, as over TCP.
    #[serde(default)]
    pub loss: f64,
}

impl LinkShape {
    fn check(&self) -> Result<(), String> {
        self.latency.check()?;
        if !(0.0..0.5).contains(&self.loss) {
            return Err(format!("loss {} must be in [0, 0.5)", self.loss));
        }
        Ok(())
    }
}

/// The shape of the links between two regions (both directions).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkSpec {
    /// One region.
    pub from: String,
    /// The other (may be the same, for links inside a region).
    pub to: String,
    #[serde(default)]
    pub latency: Latency,
    #[serde(default)]
    pub bandwidth_kbit: u64,
    #[serde(default)]
    pub loss: f64,
}

/// What the users do during the workload.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workload {
    /// Length of the workload; messages and lookups are spread uniformly over it.
    pub duration_secs: u64,
    /// Name lookups (a random online user resolves a random other user's name).
    #[serde(default)]
    pub lookups: u32,
    /// Direct messages (a random online user to a random other user, online or not).
    #[serde(default)]
    pub direct_messages: u32,
    /// Size of each message's text, in bytes.
    #[serde(default = "hundred")]
    pub message_bytes: u32,
    /// Direct messages carrying a file (a photo: it downloads by itself), from a random online
    /// user to a random other user; delivered once the recipient holds the whole file.
    #[serde(default)]
    pub media_messages: u32,
    /// Size of each file, in bytes.
    #[serde(default = "mebibyte")]
    pub media_bytes: u32,
    /// Groups, formed before the workload starts.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

fn hundred() -> u32 {
    100
}

fn mebibyte() -> u32 {
    1 << 20
}

/// Groups of one size.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    /// Members of each group, creator included (random users).
    pub members: u32,
    /// How many such groups.
    #[serde(default = "count_one")]
    pub count: u32,
    /// Messages posted to each group during the workload, each by a random online member.
    pub messages: u32,
}

fn count_one() -> u32 {
    1
}

/// Nodes leaving and coming back: each churning node leaves once at a random time in
/// `[start_secs, end_secs]` and comes back after a random time in
/// `[offline_min_secs, offline_max_secs]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Churn {
    /// Share of the user nodes that churn (0..=1).
    pub fraction: f64,
    pub start_secs: u64,
    pub end_secs: u64,
    pub offline_min_secs: u64,
    pub offline_max_secs: u64,
}

/// A partition: from `at_secs` to `heal_secs`, one side cannot reach the other (new dials
/// fail; a connection that carries data across it is reset).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Partition {
    pub at_secs: u64,
    pub heal_secs: u64,
    /// The isolated side: every node of these regions...
    #[serde(default)]
    pub regions: Vec<String>,
    /// ...or this share of the user nodes, drawn at random (0..1).
    #[serde(default)]
    pub fraction: Option<f64>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a scenario; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if s.regions.is_empty() {
            s.regions.push(Region { name: "all".into(), weight: 1.0 });
        }
        s.check().map_err(ScenarioError::Invalid)?;
        Ok(s)
    }

    /// Every node, users first: user nodes, then bootstrap, then mailbox nodes.
    pub fn total_nodes(&self) -> u32 {
        self.nodes + self.bootstrap_nodes + self.mailbox_nodes
    }

    fn region_index(&self, name: &str) -> Result<usize, String> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| format!("unknown region {name:?}"))
    }

    /// The link shape between two regions.
    pub fn shape(&self, a: usize, b: usize) -> LinkShape {
        let name = |i: usize| self.regions.get(i).map(|r| r.name.as_str()).unwrap_or("");
        let (na, nb) = (name(a), name(b));
        self.links
            .iter()
            .find(|l| (l.from == na && l.to == nb) || (l.from == nb && l.to == na))
            .map(|l| LinkShape {
                latency: l.latency.clone(),
                bandwidth_kbit: l.bandwidth_kbit,
                loss: l.loss,
            })
            .unwrap_or_else(|| self.default_link.clone())
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("name must be non-empty letters, digits, - or _".into());
        }
        if self.nodes < 2 {
            return Err("nodes must be at least 2".into());
        }
        if self.bootstrap_nodes < 1 {
            return Err("bootstrap_nodes must be at least 1".into());
        }
        if self.total_nodes() > MAX_NODES {
            return Err(format!("at most {MAX_NODES} nodes in all"));
        }
        if self.pow_bits > 24 {
            return Err("pow_bits must be at most 24".into());
        }
        if self.regions.iter().any(|r| !(r.weight.is_finite() && r.weight >= 0.0))
            || self.regions.iter().map(|r| r.weight).sum::<f64>() <= 0.0
        {
            return Err("region weights must be non-negative and not all zero".into());
        }
        for (i, r) in self.regions.iter().enumerate() {
            if self.regions[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("region {:?} is named twice", r.name));
            }
        }
        self.default_link.check().map_err(|e| format!("default_link: {e}"))?;
        for l in &self.links {
            self.region_index(&l.from)?;
            self.region_index(&l.to)?;
            LinkShape {
                latency: l.latency.clone(),
                bandwidth_kbit: l.bandwidth_kbit,
                loss: l.loss,
            }
            .check()
            .map_err(|e| format!("link {} - {}: {e}", l.from, l.to))?;
        }
        let w = &self.workload;
        if w.duration_secs == 0 || w.duration_secs > MAX_DURATION_SECS {
            return Err(format!("workload.duration_secs must be 1..={MAX_DURATION_SECS}"));
        }
        if !(16..=16_000).contains(&w.message_bytes) {
            return Err("workload.message_bytes must be 16..=16000".into());
        }
        let mut actions = u64::from(w.lookups) + u64::from(w.direct_messages);
        for g in &w.groups {
            if g.members < 3 || g.members > self.nodes {
                return Err(format!(
                    "a group needs 3 to {} members (the user nodes), not {}",
                    self.nodes, g.members
                ));
            }
            actions += u64::from(g.count) * u64::from(g.messages);
        }
        if actions > u64::from(MAX_ACTIONS) {
            return Err(format!("at most {MAX_ACTIONS} messages and lookups"));
        }
        if let Some(c) = &self.churn {
            if !(0.0..=1.0).contains(&c.fraction) {
                return Err("churn.fraction must be in [0, 1]".into());
            }
            if c.start_secs > c.end_secs || c.offline_min_secs > c.offline_max_secs {
                return Err("churn: start_secs <= end_secs and offline_min <= offline_max".into());
            }
            if c.end_secs + c.offline_max_secs > w.duration_secs {
                return Err("churn: every node must be back before the workload ends \
                     (end_secs + offline_max_secs <= workload.duration_secs)"
                    .into());
            }
        }
        for p in &self.partitions {
            if p.at_secs >= p.heal_secs || p.heal_secs > w.duration_secs {
                return Err("partition: at_secs < heal_secs <= workload.duration_secs".into());
            }
            match (&p.regions.is_empty(), p.fraction) {
                (false, None) => {
                    for r in &p.regions {
                        self.region_index(r)?;
                    }
                }
                (true, Some(f)) if f > 0.0 && f < 1.0 => {}
                _ => return Err("partition: give either regions or a fraction in (0, 1)".into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
nodes = 10
[workload]
duration_secs = 10
direct_messages = 5
"#;

    #[test]
    fn a_minimal_scenario_gets_defaults() {
        let s = Scenario::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(s.regions.len(), 1);
        assert_eq!(s.bootstrap_nodes, 2);
        assert_eq!(s.default_link.latency, Latency::Fixed { ms: 5.0 });
        assert_eq!(s.total_nodes(), 12);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_clear_errors() {
        let e = Scenario::parse(&format!("{MINIMAL}\nbogus = 1\n"), "t.toml").unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        let bad = MINIMAL.replace("nodes = 10", "nodes = 10\n[churn]\nfraction = 0.5\nstart_secs = 1\nend_secs = 8\noffline_min_secs = 1\noffline_max_secs = 5");
        let e = Scenario::parse(&bad, "t.toml").unwrap_err();
        assert!(e.to_string().contains("back before the workload ends"), "{e}");
        let bad = MINIMAL.replace(
            "nodes = 10",
            "nodes = 10\n[[partitions]]\nat_secs = 1\nheal_secs = 5\nregions = [\"mars\"]",
        );
        let e = Scenario::parse(&bad, "t.toml").unwrap_err();
        assert!(e.to_string().contains("mars"), "{e}");
    }

    #[test]
    fn link_shapes_are_symmetric_and_fall_back_to_the_default() {
        let text = r#"
name = "t"
nodes = 10
[[regions]]
name = "eu"
[[regions]]
name = "us"
[[links]]
from = "eu"
to = "us"
latency = { dist = "uniform", min_ms = 40, max_ms = 60 }
loss = 0.01
[workload]
duration_secs = 10
"#;
        let s = Scenario::parse(text, "t.toml").unwrap();
        assert_eq!(s.shape(1, 0).loss, 0.01);
        assert_eq!(s.shape(0, 1), s.shape(1, 0));
        assert_eq!(s.shape(0, 0), LinkShape::default());
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let v = s.shape(0, 1).latency.sample(&mut rng);
            assert!((40.0..60.0).contains(&v));
        }
    }
}
