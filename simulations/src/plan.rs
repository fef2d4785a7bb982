//! The plan: a scenario and a seed turned into who is where and who does what when. It is a
//! pure function of the two, so the same seed gives the same topology and workload, in
//! `kith-sim run` and in every `kith-sim node` of a Shadow run alike.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// What a node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    User,
    Bootstrap,
    Mailbox,
}

/// One node of the plan.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct NodePlan {
    pub index: usize,
    pub role: Role,
    pub region: usize,
    /// The name a user registers.
    pub name: Option<String>,
    /// The mailbox node a user enrolls with.
    pub mailbox: Option<usize>,
    /// Bootstrap nodes it dials.
    pub bootstrap: Vec<usize>,
}

/// The kind of a message, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A direct message whose recipient was online when it was sent.
    DirectOnline,
    /// A direct message whose recipient was offline when it was sent (delivered through its
    /// mailbox, or by the sender's outbox when the recipient comes back).
    DirectMailbox,
    /// A group message.
    Group,
    /// A direct message carrying a file; delivered when the recipient holds the whole file.
    Media,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::DirectOnline, Kind::DirectMailbox, Kind::Group, Kind::Media];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DirectOnline => "direct_online",
            Kind::DirectMailbox => "direct_mailbox",
            Kind::Group => "group",
            Kind::Media => "media",
        }
    }
}

/// Something that happens at a time of the workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub(crate) enum Action {
    Lookup { from: usize, target: usize },
    Direct { id: u64, from: usize, to: usize, kind: Kind },
    Group { id: u64, group: usize, from: usize },
    Leave { node: usize },
    Return { node: usize },
    PartitionOpen { partition: usize },
    PartitionHeal { partition: usize },
}

/// A group, formed before the workload by its creator mentioning the others.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct GroupPlan {
    pub creator: usize,
    /// Every member, creator first.
    pub members: Vec<usize>,
}

/// A message of the workload and who must receive it.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub kind: Kind,
    /// The sender (not a recipient).
    pub from: usize,
    pub at_ms: u64,
    pub recipients: Vec<usize>,
}

/// Everything the workload does.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Plan {
    pub seed: u64,
    pub nodes: Vec<NodePlan>,
    pub groups: Vec<GroupPlan>,
    /// The isolated side of each partition (node indices).
    pub partitions: Vec<Vec<usize>>,
    /// Sorted by time (ms since the workload started).
    pub actions: Vec<(u64, Action)>,
}

/// How many bootstrap nodes each node dials.
const BOOTSTRAP_DIALS: usize = 2;

impl Plan {
    /// The plan of `scenario` under `seed`.
    pub fn new(s: &Scenario, seed: u64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let users = s.nodes as usize;
        let boots = s.bootstrap_nodes as usize;
        let mailboxes = s.mailbox_nodes as usize;
        let total: f64 = s.regions.iter().map(|r| r.weight).sum();
        let pick_region = |rng: &mut ChaCha8Rng| {
            let mut x = rng.gen_range(0.0..total);
            for (i, r) in s.regions.iter().enumerate() {
                if x < r.weight {
                    return i;
                }
                x -= r.weight;
            }
            s.regions.len() - 1
        };
        let mut nodes = Vec::with_capacity(users + boots + mailboxes);
        for i in 0..users + boots + mailboxes {
            let role = if i < users {
                Role::User
            } else if i < users + boots {
                Role::Bootstrap
            } else {
                Role::Mailbox
            };
            let region =
                if role == Role::User { pick_region(&mut rng) } else { i % s.regions.len() };
            let bootstrap = if role == Role::Bootstrap {
                // Each bootstrap node dials the first one; the first dials nobody.
                if i == users {
                    vec![]
                } else {
                    vec![users]
                }
            } else {
                (0..BOOTSTRAP_DIALS.min(boots)).map(|k| users + (i + k) % boots).collect()
            };
            nodes.push(NodePlan {
                index: i,
                role,
                region,
                name: (role == Role::User).then(|| format!("user{i}")),
                mailbox: (role == Role::User && mailboxes > 0)
                    .then(|| users + boots + i % mailboxes),
                bootstrap,
            });
        }
        let horizon = s.workload.duration_secs * 1000;
        let mut actions: Vec<(u64, Action)> = Vec::new();
        // Churn first: it decides who is online when.
        let mut offline: Vec<Vec<(u64, u64)>> = vec![Vec::new(); users];
        if let Some(c) = &s.churn {
            let n = ((users as f64) * c.fraction).round() as usize;
            let mut who: Vec<usize> = (0..users).collect();
            who.shuffle(&mut rng);
            for &node in who.iter().take(n) {
                let leave = rng.gen_range(c.start_secs * 1000..=c.end_secs * 1000);
                let back =
                    leave + rng.gen_range(c.offline_min_secs * 1000..=c.offline_max_secs * 1000);
                offline[node].push((leave, back));
                actions.push((leave, Action::Leave { node }));
                actions.push((back, Action::Return { node }));
            }
        }
        let online = |node: usize, t: u64| offline[node].iter().all(|&(a, b)| t < a || t >= b);
        let mut partitions = Vec::new();
        for (k, p) in s.partitions.iter().enumerate() {
            let side: Vec<usize> = if let Some(f) = p.fraction {
                let mut who: Vec<usize> = (0..users).collect();
                who.shuffle(&mut rng);
                let mut v: Vec<usize> =
                    who.into_iter().take(((users as f64) * f).round() as usize).collect();
                v.sort_unstable();
                v
            } else {
                nodes
                    .iter()
                    .filter(|n| {
                        p.regions
                            .iter()
                            .any(|r| s.regions.get(n.region).map(|x| &x.name) == Some(r))
                    })
                    .map(|n| n.index)
                    .collect()
            };
            partitions.push(side);
            actions.push((p.at_secs * 1000, Action::PartitionOpen { partition: k }));
            actions.push((p.heal_secs * 1000, Action::PartitionHeal { partition: k }));
        }
        let pick_online = |rng: &mut ChaCha8Rng, t: u64, among: &[usize]| -> Option<usize> {
            for _ in 0..64 {
                let c = among[rng.gen_range(0..among.len())];
                if online(c, t) {
                    return Some(c);
                }
            }
            among.iter().copied().find(|&c| online(c, t))
        };
        let everyone: Vec<usize> = (0..users).collect();
        let mut next_id = 1u64;
        for _ in 0..s.workload.lookups {
            let t = rng.gen_range(0..horizon);
            let Some(from) = pick_online(&mut rng, t, &everyone) else { continue };
            let mut target = rng.gen_range(0..users - 1);
            if target >= from {
                target += 1;
            }
            actions.push((t, Action::Lookup { from, target }));
        }
        for _ in 0..s.workload.direct_messages {
            let t = rng.gen_range(0..horizon);
            let Some(from) = pick_online(&mut rng, t, &everyone) else { continue };
            let mut to = rng.gen_range(0..users - 1);
            if to >= from {
                to += 1;
            }
            let kind = if online(to, t) { Kind::DirectOnline } else { Kind::DirectMailbox };
            actions.push((t, Action::Direct { id: next_id, from, to, kind }));
            next_id += 1;
        }
        for _ in 0..s.workload.media_messages {
            let t = rng.gen_range(0..horizon);
            let Some(from) = pick_online(&mut rng, t, &everyone) else { continue };
            let mut to = rng.gen_range(0..users - 1);
            if to >= from {
                to += 1;
            }
            actions.push((t, Action::Direct { id: next_id, from, to, kind: Kind::Media }));
            next_id += 1;
        }
        let mut groups = Vec::new();
        for g in &s.workload.groups {
            for _ in 0..g.count {
                let mut members = everyone.clone();
                members.shuffle(&mut rng);
                members.truncate(g.members as usize);
                let gi = groups.len();
                for _ in 0..g.messages {
                    let t = rng.gen_range(0..horizon);
                    let Some(from) = pick_online(&mut rng, t, &members) else { continue };
                    actions.push((t, Action::Group { id: next_id, group: gi, from }));
                    next_id += 1;
                }
                groups.push(GroupPlan { creator: members[0], members });
            }
        }
        // Stable: equal times keep their order of creation.
        actions.sort_by_key(|(t, _)| *t);
        Plan { seed, nodes, groups, partitions, actions }
    }

    /// Every message of the workload by id, with who must receive it.
    pub fn expected(&self) -> std::collections::BTreeMap<u64, Expected> {
        let mut out = std::collections::BTreeMap::new();
        for (t, a) in &self.actions {
            match a {
                Action::Direct { id, from, to, kind } => {
                    out.insert(
                        *id,
                        Expected { kind: *kind, from: *from, at_ms: *t, recipients: vec![*to] },
                    );
                }
                Action::Group { id, group, from } => {
                    let recipients = self
                        .groups
                        .get(*group)
                        .map(|g| g.members.iter().copied().filter(|m| m != from).collect())
                        .unwrap_or_default();
                    out.insert(
                        *id,
                        Expected { kind: Kind::Group, from: *from, at_ms: *t, recipients },
                    );
                }
                _ => {}
            }
        }
        out
    }

    /// Users count (user nodes come first).
    pub fn users(&self) -> usize {
        self.nodes.iter().filter(|n| n.role == Role::User).count()
    }
}

/// The text of a workload message: its id first, padded to `size` bytes.
pub(crate) fn message_text(id: u64, size: usize) -> String {
    let mut t = format!("sim:{id} ");
    while t.len() < size {
        t.push('x');
    }
    t
}

/// The workload id of a message text, if it is one.
pub(crate) fn message_id(text: &str) -> Option<u64> {
    text.strip_prefix("sim:")?.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::parse(
            r#"
name = "t"
nodes = 40
mailbox_nodes = 2
[[regions]]
name = "a"
[[regions]]
name = "b"
[workload]
duration_secs = 60
lookups = 20
direct_messages = 50
groups = [{ members = 5, count = 2, messages = 10 }]
[churn]
fraction = 0.25
start_secs = 5
end_secs = 30
offline_min_secs = 5
offline_max_secs = 20
[[partitions]]
at_secs = 10
heal_secs = 20
regions = ["a"]
"#,
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let s = scenario();
        let a = serde_json::to_string(&Plan::new(&s, 7)).unwrap();
        let b = serde_json::to_string(&Plan::new(&s, 7)).unwrap();
        let c = serde_json::to_string(&Plan::new(&s, 8)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_plan_has_the_workload_the_scenario_asks_for() {
        let s = scenario();
        let p = Plan::new(&s, 3);
        assert_eq!(p.nodes.len(), 44);
        assert_eq!(p.groups.len(), 2);
        let e = p.expected();
        assert_eq!(e.len(), 50 + 20);
        for (_, a) in &p.actions {
            if let Action::Direct { id, from, .. } | Action::Group { id, from, .. } = a {
                assert!(!e[id].recipients.contains(from));
            }
        }
        let leaves = p.actions.iter().filter(|(_, a)| matches!(a, Action::Leave { .. })).count();
        assert_eq!(leaves, 10);
        assert!(p.actions.windows(2).all(|w| w[0].0 <= w[1].0));
        // Senders are online when they send.
        for (t, a) in &p.actions {
            if let Action::Direct { from, .. } | Action::Group { from, .. } = a {
                let left =
                    p.actions.iter().any(|(lt, x)| *x == Action::Leave { node: *from } && lt <= t)
                        && !p
                            .actions
                            .iter()
                            .any(|(rt, x)| *x == Action::Return { node: *from } && rt <= t);
                assert!(!left, "node {from} sends at {t} while offline");
            }
        }
        assert!(p.partitions[0].iter().all(|&i| p.nodes[i].region == 0));
        assert_eq!(message_id(&message_text(42, 100)), Some(42));
        assert_eq!(message_text(42, 100).len(), 100);
    }
}
