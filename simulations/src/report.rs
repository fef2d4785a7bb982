//! `kith-sim report`: the logs of a run of `kith-sim node` processes (under Shadow, or on one
//! machine) turned into the same results files as `kith-sim run` writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::events::{self, Event};
use crate::plan::Plan;
use crate::results::{analyze, RunInfo};
use crate::scenario::Scenario;
use crate::shadow::{host_name, read_meta};

/// What `kith-sim report` was asked.
#[derive(Debug)]
pub(crate) struct ReportOptions {
    pub dir: PathBuf,
    pub out: Option<PathBuf>,
}

/// Reads the logs of `dir` and writes the results into `--out` (default `dir/results`).
pub(crate) fn report(opts: ReportOptions) -> Result<()> {
    let dir = &opts.dir;
    let meta = read_meta(dir)?;
    let scenario = Scenario::load(&dir.join("scenario.toml"))?;
    let plan = Plan::new(&scenario, meta.seed);
    if meta.hosts != plan.nodes.len() {
        bail!(
            "{}: {} hosts, but the scenario has {} nodes (was scenario.toml changed?)",
            dir.join("meta.json").display(),
            meta.hosts,
            plan.nodes.len()
        );
    }
    let events = read_logs(dir, plan.nodes.len())?;
    // Each node logs its traffic when the workload starts and again at the end.
    let mut traffic: HashMap<usize, Vec<u64>> = HashMap::new();
    for e in &events {
        if let Event::Traffic { node, sent, .. } = e {
            traffic.entry(*node).or_default().push(*sent);
        }
    }
    let setup_traffic: HashMap<usize, u64> =
        traffic.into_iter().filter(|(_, v)| v.len() >= 2).map(|(n, v)| (n, v[0])).collect();
    let events = merge_group_events(&plan, events);
    let secs = |ms: u64| ms as f64 / 1000.0;
    let run = RunInfo {
        mode: "shadow".into(),
        // Simulated time: the processes' own clocks.
        wall_secs: secs(meta.setup_ms + meta.duration_ms + meta.drain_ms),
        setup_secs: secs(meta.setup_ms),
        workload_secs: secs(meta.duration_ms),
        drain_secs: secs(meta.drain_ms),
        cpu_secs: None,
        peak_rss_mib: None,
        rss_per_node_kib: None,
        timer_lag_ms: None,
        cpu_bound: false,
    };
    let mut analysis = analyze(&scenario, &plan, &events, &setup_traffic, run);
    analysis.events = events;
    let out = opts.out.clone().unwrap_or_else(|| dir.join("results"));
    let files = analysis.write(&out).map_err(anyhow::Error::msg)?;
    print!("{}", analysis.table());
    if meta.partitions_left_out > 0 {
        println!(
            "note: the scenario's {} partition(s) were left out of the Shadow run",
            meta.partitions_left_out
        );
    }
    println!("results in {} ({} files)", out.display(), files.len());
    Ok(())
}

/// Every node's events, from `dir/logs/n<i>.jsonl`.
fn read_logs(dir: &Path, nodes: usize) -> Result<Vec<Event>> {
    let logs = dir.join("logs");
    let mut missing = Vec::new();
    let mut events = Vec::new();
    for i in 0..nodes {
        let path = logs.join(format!("{}.jsonl", host_name(i)));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(host_name(i));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        events
            .extend(events::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?);
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        bail!(
            "no log for {} of {nodes} hosts in {} ({}{}); did the run finish?",
            missing.len(),
            logs.display(),
            shown.join(", "),
            if missing.len() > shown.len() { ", ..." } else { "" }
        );
    }
    Ok(events)
}

/// The merged view of the members' `GroupFormed` events: one per group, formed when every
/// member saw it formed in time, after the slowest member's time.
pub(crate) fn merge_group_events(plan: &Plan, events: Vec<Event>) -> Vec<Event> {
    let mut views: HashMap<usize, Vec<(i64, bool, f64)>> = HashMap::new();
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for e in events {
        match e {
            Event::GroupFormed { t, group, ok, ms } => {
                views.entry(group).or_default().push((t, ok, ms));
            }
            other => out.push(other),
        }
    }
    for (g, group) in plan.groups.iter().enumerate() {
        let v = views.remove(&g).unwrap_or_default();
        let ok = v.len() == group.members.len() && v.iter().all(|x| x.1);
        let t = v.iter().map(|x| x.0).max().unwrap_or(0);
        let ms = v.iter().map(|x| x.2).fold(0.0, f64::max);
        out.push(Event::GroupFormed { t, group: g, ok, ms });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_views_merge_into_one_event_per_group() {
        let s = Scenario::parse(
            "name = \"t\"\nnodes = 5\n[workload]\nduration_secs = 10\ngroups = [{ members = 3, count = 2, messages = 1 }]\n",
            "t.toml",
        )
        .unwrap();
        let plan = Plan::new(&s, 1);
        let mut evs = Vec::new();
        for ms in [10.0, 30.0, 20.0] {
            evs.push(Event::GroupFormed { t: -5, group: 0, ok: true, ms });
        }
        evs.push(Event::GroupFormed { t: -5, group: 1, ok: true, ms: 1.0 });
        evs.push(Event::GroupFormed { t: 2, group: 1, ok: false, ms: 9.0 });
        evs.push(Event::Sent { t: 1, node: 0, id: 1 });
        let out = merge_group_events(&plan, evs);
        assert!(out.contains(&Event::Sent { t: 1, node: 0, id: 1 }));
        assert!(out.contains(&Event::GroupFormed { t: -5, group: 0, ok: true, ms: 30.0 }));
        assert!(out.contains(&Event::GroupFormed { t: 2, group: 1, ok: false, ms: 9.0 }));
        assert_eq!(out.len(), 3);
    }
}
