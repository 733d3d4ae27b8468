//! `ferrocket namesrv`, `ferrocket broker` and `ferrocket dev`.
//!
//! Each server prints one line `ready <role> <addr>` on stdout once it accepts
//! connections, exits non-zero with a clear message on bad configuration, and shuts
//! down cleanly on SIGTERM or Ctrl-C (flush, persist offsets, unregister).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;

use crate::broker::config::parse_properties;
use crate::broker::{Broker, BrokerConfig, Listeners};
use crate::namesrv::NameServer;
use crate::remoting::{serve, ServerConfig};

/// `ferrocket namesrv`.
#[derive(Debug, clap::Args)]
pub struct NamesrvArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:9876")]
    pub listen: String,
    /// Port for `/metrics`, `/healthz` and `/readyz` (0 = off).
    #[arg(long, default_value_t = 0)]
    pub metrics_port: u16,
    /// Where the KV configuration is kept (RocketMQ's `kvConfigPath`; default
    /// `$HOME/namesrv/kvConfig.json`).
    #[arg(long)]
    pub kv_config_path: Option<PathBuf>,
    /// Take REGISTER_BROKER and UNREGISTER_BROKER from any address. By default a
    /// broker may only (un)register the address it connects from (any address over
    /// loopback), so a stranger cannot replace or remove a live broker's route.
    #[arg(long)]
    pub trust_any_broker_address: bool,
    /// A plain ACL file (RocketMQ's `plain_acl.yml` format): broker registration and
    /// every other write to the name server then need an admin account of it (or a
    /// global white address); route reads stay open. Re-read every 500 ms.
    #[arg(long)]
    pub acl_file: Option<PathBuf>,
    /// TLS on the name server's port (RocketMQ's `tls.server.mode`): disabled,
    /// permissive (TLS and plain) or enforcing (TLS only).
    #[arg(long, default_value = "disabled")]
    pub tls_mode: String,
    /// The certificate chain (PEM), with `--tls-mode`.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

/// `ferrocket broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// RocketMQ-style properties file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set brokerId=1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Roles file (mounted by the operator): `master=<pod>` and `epoch=<n>` lines.
    #[arg(long, requires = "pod_name")]
    pub roles_file: Option<PathBuf>,
    /// This pod's name (a StatefulSet name ending in `-<ordinal>`).
    #[arg(long)]
    pub pod_name: Option<String>,
    /// Open a damaged store anyway (`storeRepair=true`): an unexpected or missing
    /// CommitLog file, which otherwise stops the start, is moved to
    /// `<store>/quarantine/` with a warning naming it.
    #[arg(long)]
    pub repair: bool,
}

/// Applies a roles file: the pod it names as master gets `brokerId=0` (and a master role);
/// every other pod is a `SLAVE` with the stable id `ordinal + 1`. Returns the epoch.
///
/// # Errors
/// A roles file without `master`, a bad epoch, or a pod name without an ordinal.
pub fn apply_roles(
    props: &mut BTreeMap<String, String>,
    roles_text: &str,
    pod: &str,
) -> Result<i64> {
    let roles = parse_properties(roles_text);
    let Some(master) = roles.get("master") else {
        bail!("the roles file names no `master`");
    };
    let epoch: i64 = match roles.get("epoch") {
        Some(e) => e
            .parse()
            .with_context(|| format!("bad epoch `{e}` in the roles file"))?,
        None => 0,
    };
    let ordinal: i64 = pod
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .with_context(|| format!("pod name `{pod}` does not end in -<ordinal>"))?;
    // The role this group's master plays, kept for a later promotion.
    let master_role = match props.get("brokerRole").map(String::as_str) {
        Some("SYNC_MASTER") => "SYNC_MASTER",
        _ => "ASYNC_MASTER",
    };
    props
        .entry("masterRole".into())
        .or_insert_with(|| master_role.into());
    props.insert("slaveBrokerId".into(), (ordinal + 1).to_string());
    props.insert("roleEpoch".into(), epoch.to_string());
    if pod == master {
        props.insert("brokerId".into(), "0".into());
        props.insert("brokerRole".into(), master_role.into());
    } else {
        props.insert("brokerId".into(), (ordinal + 1).to_string());
        props.insert("brokerRole".into(), "SLAVE".into());
    }
    Ok(epoch)
}

/// `ferrocket dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Data directory.
    #[arg(long, default_value = "./ferrocket-data")]
    pub data_dir: PathBuf,
    /// Name server port.
    #[arg(long, default_value_t = 9876)]
    pub namesrv_port: u16,
    /// Broker port.
    #[arg(long, default_value_t = 10911)]
    pub broker_port: u16,
    /// Open a damaged store anyway, as `ferrocket broker --repair`.
    #[arg(long)]
    pub repair: bool,
}

fn ready(role: &str, addr: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {role} {addr}");
    let _ = out.flush();
}

/// A broker's ready line: `ready <role> <addr> ha=<host:haport>` (the HA address last,
/// so readers of the first three words are unaffected).
fn ready_broker(b: &Broker) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ready {} {} ha={}:{}",
        role_name(b),
        b.config.broker_addr(),
        b.config.broker_ip1,
        b.config.ha_listen_port
    );
    let _ = out.flush();
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn start_namesrv(
    listen: &str,
    kv_config_path: PathBuf,
    trust_any_broker_address: bool,
    acl: Option<Arc<crate::acl::Acl>>,
) -> Result<(Arc<NameServer>, TcpListener, String)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?.to_string();
    let ns = Arc::new(NameServer {
        kv: crate::namesrv::KvConfig::load(Some(kv_config_path)),
        trust_any_broker_address,
        acl,
        ..NameServer::default()
    });
    ns.spawn_expiry();
    Ok((ns, listener, addr))
}

/// Re-reads the name server's ACL file every 500 ms (an invalid new version keeps the
/// old one).
async fn watch_acl(acl: Arc<crate::acl::Acl>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match acl.reload_if_changed() {
            Ok(true) => {
                last.clear();
                tracing::info!(file = %acl.path().display(), "name server ACL file changed: reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                let t = e.to_string();
                if t != last {
                    tracing::warn!(error = %t, "ACL file changed but cannot be used; the previous version stays in force");
                    last = t;
                }
            }
        }
    }
}

/// Runs `ferrocket namesrv`.
///
/// # Errors
/// The address cannot be bound.
pub fn run_namesrv(args: NamesrvArgs) -> Result<()> {
    runtime()?.block_on(async {
        let kv = args.kv_config_path.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                .join("namesrv")
                .join("kvConfig.json")
        });
        let acl = match &args.acl_file {
            None => None,
            Some(f) => {
                let acl = Arc::new(
                    crate::acl::Acl::load(f).map_err(|e| anyhow::anyhow!("--acl-file: {e}"))?,
                );
                tokio::spawn(watch_acl(Arc::clone(&acl)));
                Some(acl)
            }
        };
        let (ns, listener, addr) =
            start_namesrv(&args.listen, kv, args.trust_any_broker_address, acl).await?;
        // Both listeners stop on the one shutdown signal.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = if args.metrics_port == 0 {
            None
        } else {
            let l = TcpListener::bind(("0.0.0.0", args.metrics_port))
                .await
                .with_context(|| format!("cannot listen on metrics port {}", args.metrics_port))?;
            let mut rx = stop_rx.clone();
            Some(crate::metrics::serve_http_on(l, ns.clone(), async move {
                let _ = rx.wait_for(|s| *s).await;
            }))
        };
        ready("namesrv", &addr);
        let tls = crate::broker::config::TlsSettings {
            server_mode: args
                .tls_mode
                .parse()
                .map_err(|e| anyhow::anyhow!("--tls-mode: {e}"))?,
            server_cert: args.tls_cert.clone(),
            server_key: args.tls_key.clone(),
            ..Default::default()
        }
        .server()
        .map_err(anyhow::Error::msg)?;
        let server = ServerConfig {
            tls: tls.map(Arc::new),
            ..ServerConfig::default()
        };
        serve(listener, ns, server, shutdown_signal()).await;
        let _ = stop_tx.send(true);
        if let Some(m) = metrics {
            let _ = m.await;
        }
        Ok(())
    })
}

/// Loads the properties file and `--set` overrides.
///
/// # Errors
/// An unreadable file or a `--set` without `=`.
pub fn load_properties(
    file: Option<&PathBuf>,
    sets: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut props = match file {
        Some(f) => parse_properties(
            &std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        None => BTreeMap::new(),
    };
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set needs KEY=VALUE, got `{s}`");
        };
        props.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(props)
}

async fn start_broker(mut config: BrokerConfig) -> Result<(Arc<Broker>, Listeners)> {
    let listeners = Listeners::bind(&mut config).await?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await?
        .context("cannot open the store")?;
    broker
        .start_raft()
        .await
        .context("cannot start the DLedger node")?;
    broker.register_all().await;
    Ok((broker, listeners))
}

fn role_name(b: &Broker) -> &'static str {
    if b.is_master() {
        "master"
    } else {
        "slave"
    }
}

/// Runs `ferrocket broker`.
///
/// # Errors
/// Bad configuration (the message names the key), an unusable store or port.
pub fn run_broker(args: BrokerArgs) -> Result<()> {
    let mut props = load_properties(args.config.as_ref(), &args.set)?;
    if args.repair {
        props.insert("storeRepair".into(), "true".into());
    }
    let raft = props
        .get("enableDLegerCommitLog")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if let (true, Some(pod)) = (raft, &args.pod_name) {
        // A Raft group's pods take their DLedger id from their ordinal (`n<ordinal>`,
        // the ids the operator renders in dLegerPeers); the group, not a roles file,
        // decides who leads.
        if !props.contains_key("dLegerSelfId") {
            let ordinal: u32 = pod
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .with_context(|| format!("pod name `{pod}` does not end in -<ordinal>"))?;
            props.insert("dLegerSelfId".into(), format!("n{ordinal}"));
        }
    } else if let (Some(file), Some(pod)) = (&args.roles_file, &args.pod_name) {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the roles file {}", file.display()))?;
        let epoch = apply_roles(&mut props, &text, pod)?;
        tracing::info!(pod = %pod, epoch, role = %props.get("brokerRole").map(String::as_str).unwrap_or("ASYNC_MASTER"), "roles applied");
    }
    let config = BrokerConfig::from_properties(&props)?;
    runtime()?.block_on(async {
        let (broker, listeners) = start_broker(config).await?;
        ready_broker(&broker);
        broker.run(listeners, shutdown_signal()).await;
        Ok(())
    })
}

/// Runs `ferrocket dev`: a name server and a broker in one process.
///
/// # Errors
/// Unusable ports or data directory.
pub fn run_dev(args: DevArgs) -> Result<()> {
    runtime()?.block_on(async {
        let (ns, ns_listener, ns_addr) = start_namesrv(
            &format!("127.0.0.1:{}", args.namesrv_port),
            args.data_dir.join("namesrv").join("kvConfig.json"),
            false,
            None,
        )
        .await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ns_task = tokio::spawn({
            let mut rx = stop_rx.clone();
            async move {
                serve(ns_listener, ns, ServerConfig::default(), async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            }
        });
        let mut props = BTreeMap::new();
        props.insert("namesrvAddr".to_string(), ns_addr.clone());
        props.insert("listenPort".to_string(), args.broker_port.to_string());
        props.insert(
            "storePathRootDir".to_string(),
            args.data_dir.join("store").to_string_lossy().into_owned(),
        );
        props.insert("autoCreateTopicEnable".to_string(), "true".to_string());
        if args.repair {
            props.insert("storeRepair".to_string(), "true".to_string());
        }
        let config = BrokerConfig::from_properties(&props)?;
        let (broker, listeners) = start_broker(config).await?;
        ready("namesrv", &ns_addr);
        ready_broker(&broker);
        broker.run(listeners, shutdown_signal()).await;
        let _ = stop_tx.send(true);
        let _ = ns_task.await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_file_assigns_master_and_stable_slave_ids() {
        let roles = "master=broker-a-1\nepoch=3\n";
        let mut p = BTreeMap::from([("brokerRole".to_string(), "SYNC_MASTER".to_string())]);
        assert_eq!(apply_roles(&mut p, roles, "broker-a-1").unwrap(), 3);
        assert_eq!(
            (p["brokerId"].as_str(), p["brokerRole"].as_str()),
            ("0", "SYNC_MASTER")
        );
        let mut p = BTreeMap::from([("brokerRole".to_string(), "SYNC_MASTER".to_string())]);
        apply_roles(&mut p, roles, "broker-a-0").unwrap();
        assert_eq!(
            (p["brokerId"].as_str(), p["brokerRole"].as_str()),
            ("1", "SLAVE")
        );
        let mut p = BTreeMap::new();
        apply_roles(&mut p, roles, "broker-a-2").unwrap();
        assert_eq!(p["brokerId"], "3");
        assert!(apply_roles(&mut BTreeMap::new(), "epoch=1", "x-0").is_err());
        assert!(apply_roles(&mut BTreeMap::new(), "master=a-0\nepoch=x", "a-0").is_err());
        assert!(apply_roles(&mut BTreeMap::new(), "master=a-0", "nodash").is_err());
    }
}
