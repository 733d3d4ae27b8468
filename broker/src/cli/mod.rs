//! The `ferrocket` command line.

pub mod admin;
pub mod net_bench;
pub mod report;
pub mod servers;
pub mod store_bench;
pub mod store_check;

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
    /// Run a name server.
    Namesrv(servers::NamesrvArgs),
    /// Run a broker.
    Broker(servers::BrokerArgs),
    /// Run a name server and a broker in one process (local development).
    Dev(servers::DevArgs),
    /// Admin verbs (topics, cluster, send, consume).
    Admin(admin::AdminArgs),
    /// Offline store tools.
    Store {
        #[command(subcommand)]
        what: StoreCommand,
    },
    /// Benchmarks.
    Bench {
        /// Name server address (produce, consume).
        #[arg(long, global = true, default_value = "127.0.0.1:9876")]
        namesrv: String,
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Check a store directory offline: every record's CRC, every ConsumeQueue entry
    /// against its record, the metadata files; exits non-zero on damage.
    Check(store_check::StoreCheckArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append to and read from the message store directly (no network).
    Store(store_bench::StoreBenchArgs),
    /// Open a store directory (e.g. after `kill -9`) and report the recovery time.
    Recover(store_bench::RecoverBenchArgs),
    /// Send load to a topic through the name server's route.
    Produce(net_bench::NetBenchArgs),
    /// Pull every queue of a topic.
    Consume(net_bench::NetBenchArgs),
    /// Connection set-up cost: a request on each of `--count` new connections (plain,
    /// or TLS with `--tls-trust`: the handshake's cost), then on one reused connection.
    Connect(net_bench::ConnectBenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROCKET_LOG")
        // openraft narrates every vote and replication step at info: its warnings and
        // errors are kept, the rest is ferrocket's own (`DLedger role` lines).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
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
        Command::Namesrv(a) => servers::run_namesrv(a),
        Command::Broker(a) => servers::run_broker(a),
        Command::Dev(a) => servers::run_dev(a),
        Command::Admin(a) => admin::run(a),
        Command::Store {
            what: StoreCommand::Check(a),
        } => store_check::run(a),
        Command::Bench { namesrv, what } => match what {
            BenchCommand::Store(args) => store_bench::run(args),
            BenchCommand::Recover(args) => store_bench::run_recover(args),
            BenchCommand::Produce(args) => net_bench::produce(&namesrv, args),
            BenchCommand::Consume(args) => net_bench::consume(&namesrv, args),
            BenchCommand::Connect(args) => net_bench::connect(args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
