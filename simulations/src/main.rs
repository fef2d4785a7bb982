//! `kith-sim`: benchmarks (and, later, simulations) of the real `kith-node` code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bench;

use clap::{Parser, Subcommand};

/// Kith's benchmarks: the real node code, measured next to bare libp2p in the same run.
#[derive(Debug, Parser)]
#[command(name = "kith-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
