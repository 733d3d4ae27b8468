//! `ferrocket-operator run`: leader election, the two controllers, metrics and graceful
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::builders::BuildConfig;
use crate::controller::{error_policy, reconcile_broker_group, reconcile_nameserver, Context};
use crate::crd::{BrokerGroup, NameServer};
use crate::lease::LeaseLock;
use crate::metrics::Metrics;

/// Settings of `ferrocket-operator run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch; all when empty.
    pub watch_namespaces: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Take a Lease before reconciling (on for more than one operator replica).
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Image for resources that name none.
    pub default_image: String,
    /// The control key role changes are signed with (see [`crate::builders::ControlKey`]).
    pub control_key: Option<crate::builders::ControlKey>,
    /// The CA the operator checks brokers' certificates with when their group has
    /// `spec.tls` (`--broker-tls-trust`); without it the operator reaches them plain.
    pub broker_tls: Option<ferrocket::remoting::tls::TlsClient>,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The metrics port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Another replica took the lease.
    #[error("lost the leader lease")]
    LostLease,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn pod_owner<K: kube::Resource<DynamicType = ()>>(
    pod: &Pod,
    component: &str,
) -> Option<ObjectRef<K>> {
    let labels = pod.labels();
    if labels
        .get("app.kubernetes.io/component")
        .map(String::as_str)
        != Some(component)
    {
        return None;
    }
    let instance = labels.get("app.kubernetes.io/instance")?;
    Some(ObjectRef::new(instance).within(pod.namespace().as_deref().unwrap_or("default")))
}

/// The label selector of every object the operator creates and watches.
#[must_use]
pub fn owned_selector() -> String {
    format!(
        "app.kubernetes.io/managed-by={}",
        crate::builders::FIELD_MANAGER
    )
}

/// Runs both controllers over one namespace (or all) until `stop` fires.
async fn controllers(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    let ns = namespace.as_deref();
    let pods_cfg = watcher::Config::default().labels("app.kubernetes.io/name=ferrocket");
    // What the operator owns carries `app.kubernetes.io/managed-by=ferrocket-operator`
    // (`builders::labels`): its watches list and receive only those objects, not every
    // ConfigMap, Service and StatefulSet of the namespaces it watches.
    let owned = watcher::Config::default().labels(&owned_selector());
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let brokers = Controller::new(api::<BrokerGroup>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .watches(api::<Pod>(&client, ns), pods_cfg.clone(), |p| {
            pod_owner::<BrokerGroup>(&p, "broker")
        })
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(reconcile_broker_group, error_policy, Arc::clone(&ctx))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "broker group controller event");
            }
        });
    let nameservers = Controller::new(api::<NameServer>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), owned)
        .watches(api::<Pod>(&client, ns), pods_cfg, |p| {
            pod_owner::<NameServer>(&p, "namesrv")
        })
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile_nameserver, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "name server controller event");
            }
        });
    futures::join!(brokers, nameservers);
}

/// Runs the operator until SIGTERM (or until it loses the lease, which is an error so the
/// Deployment restarts it as a standby).
///
/// # Errors
/// See [`RunError`].
pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    run_with_client(client, cfg, ferrocket::cli::servers::shutdown_signal()).await
}

/// [`run`] over a given client and shutdown trigger (tests use an in-memory API).
///
/// # Errors
/// See [`RunError`].
pub async fn run_with_client(
    client: Client,
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let _server = ferrocket::metrics::serve_http(cfg.metrics_addr, metrics.clone())
        .await
        .map_err(|source| RunError::Listen {
            addr: cfg.metrics_addr,
            source,
        })?;
    tracing::info!(metrics = %cfg.metrics_addr, namespaces = ?cfg.watch_namespaces, "operator starting");
    metrics.set_ready(true);
    let shutdown = Box::pin(shutdown);
    let lock = cfg.leader_election.then(|| {
        LeaseLock::new(
            Api::<Lease>::namespaced(client.clone(), &cfg.lease_namespace),
            &cfg.lease_name,
            &cfg.identity,
            cfg.lease_duration,
        )
    });
    let shutdown = if let Some(lock) = &lock {
        tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "waiting for the leader lease");
        match select(Box::pin(lock.acquire(Duration::from_secs(2))), shutdown).await {
            Either::Left(((), rest)) => rest,
            Either::Right(_) => return Ok(()),
        }
    } else {
        shutdown
    };
    metrics.set_leader(true);
    tracing::info!("leading: controllers starting");
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Arc::clone(&metrics),
            BuildConfig {
                default_image: cfg.default_image.clone(),
                control_key: cfg.control_key.clone(),
                raft_peer_signatures: true,
            },
            &cfg.identity,
        )
        .with_broker_tls(cfg.broker_tls.clone()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let namespaces: Vec<Option<String>> = if cfg.watch_namespaces.is_empty() {
        vec![None]
    } else {
        cfg.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let all = futures::future::join_all(
        namespaces
            .into_iter()
            .map(|ns| controllers(client.clone(), ns, Arc::clone(&ctx), stop_rx.clone())),
    );
    let lost = async {
        match &lock {
            Some(l) => l.hold().await,
            None => std::future::pending().await,
        }
    };
    let mut all = Box::pin(all);
    let mut finished = false;
    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        () = lost => Err(RunError::LostLease),
        _ = &mut all => { finished = true; Ok(()) }
    };
    let _ = stop_tx.send(true);
    if !finished {
        // A lost lease stops everything at once: another replica may lead already, and
        // a reconcile still running here could act on what it read before. On SIGTERM
        // in-flight reconciles may finish, but only for a third of the lease (it is no
        // longer renewed, and must not expire while they run).
        let grace = match (&outcome, &lock) {
            (Err(_), _) => Duration::ZERO,
            (Ok(()), Some(l)) => l.duration() / 3,
            (Ok(()), None) => Duration::from_secs(20),
        };
        let _ = tokio::time::timeout(grace, all).await;
    }
    metrics.set_leader(false);
    if let (Some(l), Ok(())) = (&lock, &outcome) {
        if let Err(e) = l.release().await {
            tracing::warn!(error = %e, "cannot release the lease");
        }
    }
    tracing::info!("operator stopped");
    outcome
}
