//! `kith-sim shadow`, `kith-sim node` and `kith-sim report`, through the real binary: the
//! generated Shadow configuration, a real run of node processes on loopback, and the report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_yaml_ng::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kith-sim");

const TWO_REGIONS: &str = r#"
name = "two-regions"
nodes = 6
bootstrap_nodes = 2
mailbox_nodes = 1
[[regions]]
name = "eu"
[[regions]]
name = "us"
[[regions]]
name = "asia"
[default_link]
latency = { dist = "uniform", min_ms = 40, max_ms = 60 }
[[links]]
from = "eu"
to = "eu"
latency = { dist = "fixed", ms = 5 }
bandwidth_kbit = 20000
loss = 0.01
[workload]
duration_secs = 20
direct_messages = 5
"#;

const TINY: &str = r#"
name = "tiny"
nodes = 4
bootstrap_nodes = 1
mailbox_nodes = 1
pow_bits = 4
drain_secs = 5
[workload]
duration_secs = 8
direct_messages = 4
groups = [{ members = 3, messages = 2 }]
"#;

fn kith_sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("scenario-src.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn generate(dir: &Path, scenario: &str, seed: &str) -> (PathBuf, Output) {
    let src = write_scenario(dir, scenario);
    let out = dir.join("shadow");
    let o = kith_sim(&[
        "shadow",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
        "--binary",
        "/opt/kith/kith-sim",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (out, o)
}

fn yaml(dir: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("shadow.yaml")).unwrap()).unwrap()
}

fn args_of(host: &Value) -> Vec<String> {
    host["processes"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn arg_after(args: &[String], flag: &str) -> String {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[i + 1].clone()
}

#[test]
fn the_shadow_configuration_has_a_host_per_node_and_an_edge_per_region_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, out) = generate(tmp.path(), TWO_REGIONS, "7");
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "no warning without partitions");
    let y = yaml(&dir);
    let hosts = y["hosts"].as_mapping().unwrap();
    assert_eq!(hosts.len(), 6 + 2 + 1);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let start_at = meta["start_at_ms"].as_u64().unwrap();
    let setup = 30_000 + 50 * 9;
    assert_eq!(start_at, 946_684_800_000 + setup);
    assert_eq!(meta["seed"], 7);
    // stop_time: setup + 20 s workload + 30 s drain (the default) + 30 s margin.
    let stop = (setup + 20_000 + 30_000 + 30_000).div_ceil(1000);
    assert_eq!(y["general"]["stop_time"].as_str().unwrap(), format!("{stop} s"));
    assert_eq!(y["general"]["seed"], 7);
    assert_eq!(y["general"]["model_unblocked_syscall_latency"], true);
    // sled's spin-loop initialisation hangs a simulation without it.
    assert_eq!(y["experimental"]["native_preemption_enabled"], true);
    assert_eq!(y["network"]["graph"]["type"], "gml");
    assert_eq!(y["network"]["graph"]["file"]["path"], "network.gml");
    let mut ips = HashSet::new();
    let mut first_bootstrap_start = None;
    for i in 0..9 {
        let h = &hosts[format!("n{i}").as_str()];
        let region = h["network_node_id"].as_u64().unwrap();
        assert!(region < 3);
        assert!(ips.insert(h["ip_addr"].as_str().unwrap().to_owned()), "ip of n{i} is unique");
        let p = &h["processes"][0];
        assert_eq!(p["path"], "/opt/kith/kith-sim");
        assert_eq!(p["expected_final_state"]["exited"], 0);
        let args = args_of(h);
        assert_eq!(args[0], "node");
        assert_eq!(arg_after(&args, "--index"), i.to_string());
        assert_eq!(arg_after(&args, "--seed"), "7");
        assert_eq!(arg_after(&args, "--start-at"), start_at.to_string());
        assert_eq!(arg_after(&args, "--scenario"), dir.join("scenario.toml").to_str().unwrap());
        assert!(arg_after(&args, "--log").ends_with(&format!("logs/n{i}.jsonl")));
        let start: u64 =
            p["start_time"].as_str().unwrap().strip_suffix(" ms").unwrap().parse().unwrap();
        assert!(start < setup, "n{i} starts before the workload");
        if i == 6 {
            first_bootstrap_start = Some(start);
        } else {
            assert!(start > first_bootstrap_start.unwrap_or(0));
        }
    }
    assert!(dir.join("scenario.toml").is_file());
    assert!(dir.join("logs").is_dir());
    let gml = std::fs::read_to_string(dir.join("network.gml")).unwrap();
    assert_eq!(gml.matches("  node [").count(), 3);
    assert_eq!(gml.matches("  edge [").count(), 6, "3 pairs and 3 self-loops:\n{gml}");
    // eu-eu is fixed 5 ms with its own bandwidth and loss; other pairs take the mean 50 ms.
    assert!(
        gml.contains("source 0\n    target 0\n    latency \"5000 us\"\n    packet_loss 0.010000")
    );
    assert!(gml.contains("source 1\n    target 2\n    latency \"50000 us\""), "{gml}");
    assert!(gml.contains("host_bandwidth_up \"20000 Kbit\""));
    assert!(gml.contains("host_bandwidth_down \"1 Gbit\""));
    assert!(std::fs::read_to_string(dir.join("shadow.yaml")).unwrap().contains("mean"));

    // Partitions cannot be expressed: a warning, and meta.json says so.
    let tmp2 = tempfile::tempdir().unwrap();
    let with_partition = format!(
        "{}\n[[partitions]]\nat_secs = 2\nheal_secs = 5\nregions = [\"us\"]\n",
        TWO_REGIONS.replace("[workload]", "[workload]\nlookups = 1")
    );
    let (dir2, out2) = generate(tmp2.path(), &with_partition, "7");
    let err = String::from_utf8_lossy(&out2.stderr);
    assert!(err.contains("warning") && err.contains("partition"), "{err}");
    let meta2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir2.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta2["partitions_left_out"], 1);
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A base port with `n` free ports above it.
fn free_ports(n: u16) -> u16 {
    let mut base = 20_000 + (std::process::id() % 20_000) as u16;
    for _ in 0..100 {
        let free = (0..n).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        if free {
            return base;
        }
        base = 20_000 + (base - 20_000 + 97) % 20_000;
    }
    panic!("no {n} free ports");
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn node_processes_over_real_tcp_deliver_everything_and_report_reads_their_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = generate(tmp.path(), TINY, "3");
    let y = yaml(&dir);
    let hosts = y["hosts"].as_mapping().unwrap();
    let n = hosts.len();
    assert_eq!(n, 6);
    let base = free_ports(n as u16);
    let start_at = now_ms() + 12_000;
    let mut children = Kill(Vec::new());
    // Infrastructure (n4 bootstrap, n5 mailbox) first, then the users, like Shadow does.
    for i in [4, 5, 0, 1, 2, 3] {
        let mut args = args_of(&hosts[format!("n{i}").as_str()]);
        let k = args.iter().position(|a| a == "--start-at").unwrap();
        args[k + 1] = start_at.to_string();
        args.extend(["--local-base-port".into(), base.to_string()]);
        args.extend(["--group-lead-secs".into(), "5".into()]);
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.0.push(child);
        if i == 5 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut done = vec![None; n];
    while done.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "node processes still running after 50 s");
        for (k, c) in children.0.iter_mut().enumerate() {
            if done[k].is_none() {
                done[k] = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (k, c) in children.0.iter_mut().enumerate() {
        if !done[k].is_some_and(|s| s.success()) {
            let mut err = String::new();
            if let Some(mut e) = c.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            panic!("process {k} failed: {:?}\n{err}", done[k]);
        }
    }
    let o = kith_sim(&["report", dir.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{table}\n{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results/results.json")).unwrap())
            .unwrap();
    assert_eq!(r["run"]["mode"], "shadow");
    assert_eq!(r["duplicates"], 0, "{table}");
    assert_eq!(r["groups_formed"], 1, "{table}");
    assert_eq!(r["registrations"]["succeeded"], 4, "{table}");
    let delivery = r["delivery"].as_object().unwrap();
    assert!(delivery.contains_key("direct_online") && delivery.contains_key("group"), "{table}");
    for (kind, d) in delivery {
        assert_eq!(d["ratio"], 1.0, "{kind}: {table}");
    }
    assert!(r["traffic"]["total_sent"].as_u64().unwrap() > 0, "{table}");
    assert!(dir.join("results/latency_cdf.svg").is_file());
}

#[test]
fn report_names_the_file_and_line_of_a_bad_event_and_missing_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = generate(tmp.path(), TINY, "3");
    let o = kith_sim(&["report", dir.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no log for 6 of 6 hosts") && err.contains("n0"), "{err}");
    for i in 0..6 {
        let mut text = format!("{{\"ev\":\"down\",\"t\":1,\"node\":{i}}}\n");
        if i == 2 {
            text.push_str("{\"ev\":\"sent\",\"t\":\n");
        }
        std::fs::write(dir.join(format!("logs/n{i}.jsonl")), text).unwrap();
    }
    let o = kith_sim(&["report", dir.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("n2.jsonl:2:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
