//! `ferrocket-operator`: `run` (the controller), `render FILE` (the objects it would apply),
//! `crd` (the CRDs as YAML) and `version`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ferrocket_operator::builders::BuildConfig;
use ferrocket_operator::run::RunConfig;

#[derive(Parser)]
#[command(
    name = "ferrocket-operator",
    version,
    about = "Kubernetes operator for ferrocket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run {
        /// Namespaces to watch, comma separated (all when empty).
        #[arg(
            long,
            env = "WATCH_NAMESPACES",
            default_value = "",
            value_delimiter = ','
        )]
        watch_namespaces: Vec<String>,
        /// Address of `/metrics`, `/healthz` and `/readyz`.
        #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        /// Hold a Lease before reconciling (needed with more than one replica).
        #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
        leader_election: bool,
        /// Lease name.
        #[arg(long, default_value = "ferrocket-operator")]
        lease_name: String,
        /// Lease namespace (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the lease.
        #[arg(long, env = "POD_NAME", default_value = "ferrocket-operator")]
        identity: String,
        /// Lease duration in seconds.
        #[arg(long, default_value_t = 15)]
        lease_duration_seconds: u64,
        /// Image for NameServers and BrokerGroups that name none.
        #[arg(long, env = "FERROCKET_IMAGE")]
        default_image: Option<String>,
        /// A file holding the operator's control key: each group's brokers then accept
        /// role and permission changes only when signed with a key derived from it.
        #[arg(long, env = "FERROCKET_CONTROL_SECRET_FILE")]
        control_secret_file: Option<PathBuf>,
        /// A PEM file of the CA(s) that sign brokers' certificates (`spec.tls`): the
        /// operator then reaches brokers of groups with `spec.tls` over TLS, checking
        /// the chain (not the name: brokers are reached by pod IP).
        #[arg(long, env = "FERROCKET_BROKER_TLS_TRUST")]
        broker_tls_trust: Option<PathBuf>,
    },
    /// Print the objects the operator would apply for the resources in FILE.
    Render {
        /// YAML with NameServer and BrokerGroup documents.
        file: PathBuf,
        /// Image for resources that name none.
        #[arg(long)]
        default_image: Option<String>,
    },
    /// Print the CRDs.
    Crd,
    /// Print the Kubernetes permissions the operator uses (JSON).
    Permissions,
    /// Print the version.
    Version,
}

fn image(explicit: Option<String>) -> String {
    explicit.unwrap_or_else(|| BuildConfig::default().default_image)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", ferrocket_operator::crds_yaml()?),
        Command::Permissions => println!("{}", ferrocket_operator::rbac::permissions_json()),
        Command::Version => println!("ferrocket-operator {}", env!("CARGO_PKG_VERSION")),
        Command::Render {
            file,
            default_image,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let cfg = BuildConfig {
                default_image: image(default_image),
                control_key: None,
                raft_peer_signatures: true,
            };
            print!("{}", ferrocket_operator::render::render(&text, &cfg)?);
        }
        Command::Run {
            watch_namespaces,
            metrics_addr,
            leader_election,
            lease_name,
            lease_namespace,
            identity,
            lease_duration_seconds,
            default_image,
            control_secret_file,
            broker_tls_trust,
        } => {
            let broker_tls = match &broker_tls_trust {
                Some(f) => Some(
                    ferrocket::remoting::tls::TlsClient::load_peer(f, None)
                        .with_context(|| format!("--broker-tls-trust {}", f.display()))?,
                ),
                None => None,
            };
            let control_key = match &control_secret_file {
                Some(f) => {
                    let bytes = std::fs::read(f)
                        .with_context(|| format!("cannot read the control key {}", f.display()))?;
                    Some(
                        ferrocket_operator::builders::ControlKey::new(&bytes).with_context(
                            || format!("the control key file {} is empty", f.display()),
                        )?,
                    )
                }
                None => None,
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let cfg = RunConfig {
                watch_namespaces: watch_namespaces
                    .into_iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
                metrics_addr,
                leader_election,
                lease_name,
                lease_namespace,
                identity,
                lease_duration: Duration::from_secs(lease_duration_seconds.max(3)),
                default_image: image(default_image),
                control_key,
                broker_tls,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(ferrocket_operator::run::run(cfg))?;
        }
    }
    Ok(())
}
