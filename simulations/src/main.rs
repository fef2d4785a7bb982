//! `kith-sim`: network simulations and benchmarks of the real `kith-node` code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bench;
mod botbench;
mod events;
mod net;
mod plan;
mod plots;
mod proc_node;
mod report;
mod results;
mod run;
mod scenario;
mod shadow;
mod work;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Kith's network simulations and benchmarks: the real node code on a shaped network, with
/// metrics and plots (docs/simulations.md), and measured next to bare libp2p (docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "kith-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario: every node in this process, over an in-memory network shaped by the
    /// scenario (latency per region pair, bandwidth, loss, churn, partitions)
    ///
    /// Prints a summary table and writes results.json, timeseries.csv, latencies.csv,
    /// nodes.csv, events.jsonl and SVG plots (latency CDF per message kind, delivery ratio over
    /// time, bytes per node) into --out. The same seed gives the same topology and workload;
    /// timings vary from run to run, since real code runs in real time.
    Run {
        /// The scenario file (TOML; fields in docs/simulations.md)
        scenario: PathBuf,
        /// Seed of the topology and workload [default: the scenario's `seed`]
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the results [default: sim-results/<scenario>-seed<N>]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit with status 1 unless every message was delivered, none twice, and every group
        /// formed
        #[arg(long)]
        check: bool,
        /// Where the nodes' homes go while it runs [default: /dev/shm if usable, else the
        /// system's temporary directory]
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Write a configuration for the Shadow network simulator that runs the scenario with one
    /// real `kith-sim node` process per simulated host, over real TCP
    ///
    /// Writes shadow.yaml (Shadow 3.x), network.gml (one graph node per region, an edge per
    /// region pair), scenario.toml and meta.json into --out, and creates logs/ there for the
    /// nodes' event logs. Run `shadow shadow.yaml` in that directory, then `kith-sim report`
    /// on it. Shadow takes one latency per edge (a distribution becomes its mean) and limits
    /// bandwidth per host; its graph is static, so partitions are left out (with a warning);
    /// churn is done by the node processes.
    Shadow {
        /// The scenario file (TOML; fields in docs/simulations.md)
        scenario: PathBuf,
        /// Where to write the configuration
        #[arg(long)]
        out: PathBuf,
        /// Seed of the topology and workload [default: the scenario's `seed`]
        #[arg(long)]
        seed: Option<u64>,
        /// The kith-sim binary the hosts run [default: this one]
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Run one node of a scenario in this process, over real TCP (what each Shadow host runs)
    ///
    /// Computes the scenario's plan from the seed, starts node --index with keys derived from
    /// (seed, index), registers its user, forms or joins its groups, performs its own part of
    /// the workload at the planned times (counted from --start-at), leaves and comes back when
    /// the plan says so, and logs its events as JSON lines to --log. Exits 0 at the end of
    /// the drain; gives up (exit 1) 20 s after it.
    Node {
        /// The scenario file
        #[arg(long)]
        scenario: PathBuf,
        /// Seed of the topology and workload (the same in every process)
        #[arg(long)]
        seed: u64,
        /// Which node of the plan this is
        #[arg(long)]
        index: usize,
        /// When the workload starts, in unix milliseconds
        #[arg(long)]
        start_at: u64,
        /// Where to write the events (JSON lines)
        #[arg(long)]
        log: PathBuf,
        /// Where the node's home goes (as <work-dir>/n<index>)
        #[arg(long)]
        work_dir: PathBuf,
        /// Listen on 127.0.0.1:(P + index) and find peers there, to run every node on one
        /// machine [default: the Shadow host's own address, port 4100]
        #[arg(long, value_name = "P")]
        local_base_port: Option<u16>,
        /// How many seconds before --start-at group creators form their groups
        #[arg(long, default_value_t = shadow::GROUP_LEAD_SECS)]
        group_lead_secs: u64,
    },
    /// Turn the event logs of a Shadow run (or of `kith-sim node` processes) into results
    ///
    /// Reads scenario.toml, meta.json and logs/n<i>.jsonl of DIR and writes the files of
    /// `kith-sim run` (results.json, CSVs, events.jsonl, plots) into --out, then prints the
    /// summary table. Times are the processes' own clocks (simulated time under Shadow).
    Report {
        /// A directory written by `kith-sim shadow`
        dir: PathBuf,
        /// Where to write the results [default: DIR/results]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One pizzeria bot (`kith bot pizzeria`, the real binary) serving many users who each
    /// place an order at about the same time: orders completed, time to the first reply and
    /// to the order's confirmation (p50, p99), the bot's CPU and peak memory; with --kill, the
    /// bot is killed with SIGKILL once half the users have the menu and restarted, and the
    /// users' histories show whether any order was lost or any reply came twice.
    ///
    /// Users are DHT clients unless --users-serve-dht: the DHT is the bootstrap node and the
    /// bot, and each user holds a few connections, so a thousand of them fit on two cores
    BenchBot {
        /// Users
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Kill the bot mid-way (SIGKILL) and restart it
        #[arg(long)]
        kill: bool,
        /// The kith binary [default: the one next to kith-sim]
        #[arg(long, value_name = "PATH")]
        kith: Option<PathBuf>,
        /// Seconds the users have to complete their orders
        #[arg(long, default_value_t = 1200)]
        deadline: u64,
        /// Users serve the DHT too (Kademlia servers, as people's devices do): a real DHT of
        /// all of them, and setup that grows with their number (about 30 minutes for 1,000
        /// users on two cores)
        #[arg(long)]
        users_serve_dht: bool,
    },
    /// One process of users for `bench-bot` (started by it; not for direct use)
    #[command(hide = true)]
    BenchBotWorker {
        /// The bootstrap node
        #[arg(long)]
        boot: String,
        /// The first user's number
        #[arg(long)]
        first: usize,
        /// How many users
        #[arg(long)]
        count: usize,
        /// The users serve the DHT
        #[arg(long)]
        serve_dht: bool,
    },
    /// Measure Kith's hot paths next to bare rust-libp2p on loopback, in one process
    ///
    /// Direct messages at 1 and 64 in flight (messages per second, latency p50 and p99, and the
    /// ratio to a bare libp2p request-response exchange of the same size over the same TCP +
    /// Noise + Yamux stack); name registration and resolution in an in-process network of 100
    /// nodes; group fan-out to 100 members; an idle daemon's memory; reading the last 50
    /// messages of a 100,000-message conversation. Build with --release for meaningful figures.
    Bench {
        /// Print the results as JSON
        #[arg(long)]
        json: bool,
        /// Fewer messages and nodes, for a quick check (the figures are noisier)
        #[arg(long)]
        quick: bool,
        /// Only the file benchmark (Kith, a bare stream, bare request-response), printed as
        /// JSON: for profiling the attachment path
        #[arg(long)]
        file_only: bool,
        /// Only the direct-message benchmark (Kith and bare libp2p, 1 and 64 in flight),
        /// printed as JSON: for profiling the direct path
        #[arg(long, conflicts_with = "file_only")]
        direct_only: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { json, quick, file_only, direct_only } => {
            bench::run(json, quick, file_only, direct_only)
        }
        Command::BenchBotWorker { boot, first, count, serve_dht } => {
            botbench::worker(boot, first, count, serve_dht)
        }
        Command::BenchBot { users, kill, kith, deadline, users_serve_dht } => {
            botbench::run(botbench::Options {
                users,
                kill,
                kith: kith.unwrap_or_else(botbench::default_kith),
                deadline: std::time::Duration::from_secs(deadline),
                users_serve_dht,
            })
        }
        Command::Shadow { scenario, out, seed, binary } => {
            shadow::generate(shadow::ShadowOptions { scenario, out, seed, binary })
        }
        Command::Node {
            scenario,
            seed,
            index,
            start_at,
            log,
            work_dir,
            local_base_port,
            group_lead_secs,
        } => proc_node::run(proc_node::NodeOptions {
            scenario,
            seed,
            index,
            start_at,
            log,
            work_dir,
            local_base_port,
            group_lead_secs,
        }),
        Command::Report { dir, out } => report::report(report::ReportOptions { dir, out }),
        Command::Run { scenario, seed, out, check, work_dir } => {
            match run::run(run::RunOptions { scenario, seed, out, check, work_dir }) {
                Ok(true) => Ok(()),
                Ok(false) => return std::process::ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
