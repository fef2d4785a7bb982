//! `kith-sim`: network simulations and benchmarks of the real `kith-node` code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bench;
mod events;
mod net;
mod plan;
mod plots;
mod results;
mod run;
mod scenario;
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
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { json, quick } => bench::run(json, quick),
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
