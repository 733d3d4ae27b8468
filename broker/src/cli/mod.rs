//! The `ferrocket` command line.

pub mod store_bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ferrocket: a RocketMQ-compatible message broker.
#[derive(Debug, Parser)]
#[command(name = "ferrocket", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append to and read from the message store directly (no network).
    Store(store_bench::StoreBenchArgs),
    /// Open a store directory (e.g. after `kill -9`) and report the recovery time.
    Recover(store_bench::RecoverBenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROCKET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench {
            what: BenchCommand::Store(args),
        } => store_bench::run(args),
        Command::Bench {
            what: BenchCommand::Recover(args),
        } => store_bench::run_recover(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
