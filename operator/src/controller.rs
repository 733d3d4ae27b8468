//! The reconcilers: apply what the builders say with server-side apply, observe pods, and
//! write status, conditions and Events.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{info, instrument, warn};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::builders::{
    self, broker_id, build_broker_group, build_nameserver, namespace_of, BuildConfig, Roles,
    SpecError, FIELD_MANAGER,
};
use crate::crd::{
    BrokerGroup, BrokerGroupStatus, BrokerMemberStatus, NameServer, NameServerStatus, Replication,
};
use crate::failover::{
    decide, BrokerAdmin, Correction, Decision, Member, Observed, RaftChange, RemotingAdmin,
    SwitchoverPlan,
};
use crate::metrics::Metrics;
use crate::storage::StorageState;
use crate::upgrade::{PodRevision, Step, REVISION_LABEL};

/// Finds a broker pod's remoting address.
pub type BrokerAddrFn = Arc<dyn Fn(&Pod) -> Option<String> + Send + Sync>;

/// The pod IP and the broker port.
#[must_use]
pub fn default_broker_addr(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .filter(|ip| !ip.is_empty())
        .map(|ip| format!("{ip}:{}", builders::BROKER_PORT))
}

/// How often a healthy object is looked at again even without a change.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized.
    #[error("serialize: {0}")]
    Json(#[from] serde_json::Error),
    /// An object came without a name.
    #[error("object has no name")]
    NoName,
}

impl Error {
    /// Short label for the failure metric.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Json(_) => "serialize",
            Error::NoName => "no_name",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Builder settings (default image).
    pub build: BuildConfig,
    /// Broker role calls.
    pub admin: Arc<dyn BrokerAdmin>,
    /// A broker pod's remoting address (default: pod IP and port 10911).
    pub broker_addr: BrokerAddrFn,
    /// `admin` was replaced (tests): used for every group.
    custom_admin: bool,
    /// Per group: the production calls, signed with the group's control key.
    signed_admins: Mutex<HashMap<String, Arc<dyn BrokerAdmin>>>,
    /// TLS to brokers of groups with `spec.tls` (`--broker-tls-trust`).
    broker_tls: Option<ferrocket::remoting::tls::TlsClient>,
    failures: Mutex<HashMap<String, u32>>,
    absent_since: Mutex<HashMap<String, Timestamp>>,
}

impl Context {
    /// A context over `client`.
    #[must_use]
    pub fn new(client: Client, metrics: Arc<Metrics>, build: BuildConfig, instance: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance.into()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            build,
            admin: Arc::new(RemotingAdmin::default()),
            broker_addr: Arc::new(default_broker_addr),
            custom_admin: false,
            signed_admins: Mutex::new(HashMap::new()),
            broker_tls: None,
            failures: Mutex::new(HashMap::new()),
            absent_since: Mutex::new(HashMap::new()),
        }
    }

    /// Reaches brokers of groups with `spec.tls` over TLS with `tls`.
    #[must_use]
    pub fn with_broker_tls(mut self, tls: Option<ferrocket::remoting::tls::TlsClient>) -> Self {
        self.broker_tls = tls;
        self
    }

    /// Replaces how a pod's broker address is found (tests on loopback ports).
    #[must_use]
    pub fn with_broker_addr(mut self, f: BrokerAddrFn) -> Self {
        self.broker_addr = f;
        self
    }

    /// Replaces the broker calls (tests use a fake).
    #[must_use]
    pub fn with_admin(mut self, admin: Arc<dyn BrokerAdmin>) -> Self {
        self.admin = admin;
        self.custom_admin = true;
        self
    }

    /// The broker calls for group `bg`: signed with its control key when the operator
    /// has one, over TLS when the group has `spec.tls` and the operator a trust file
    /// (and the calls were not replaced).
    pub fn admin_for(&self, bg: &BrokerGroup) -> Arc<dyn BrokerAdmin> {
        if self.custom_admin {
            return Arc::clone(&self.admin);
        }
        let tls = self.broker_tls.clone().filter(|_| bg.spec.tls.is_some());
        let key = self.build.control_key.as_ref();
        if key.is_none() && tls.is_none() {
            return Arc::clone(&self.admin);
        }
        let (ns, name) = (namespace_of(bg), bg.name_any());
        let mut admins = self
            .signed_admins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = format!("{ns}/{name}/{}", tls.is_some());
        let admin = admins.entry(entry).or_insert_with(|| {
            let admin = match key.and_then(|k| k.credentials(&ns, &name)) {
                Some(c) => RemotingAdmin::signing(c),
                None => RemotingAdmin::default(),
            };
            Arc::new(match tls {
                Some(t) => admin.with_tls(t),
                None => admin,
            })
        });
        Arc::clone(admin)
    }

    fn reset_backoff(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// The delay before retrying `key` after its `n`th consecutive failure: 1 s doubling up
    /// to 5 minutes.
    fn backoff(&self, key: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff_delay(n)
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }
}

/// 1 s doubling per consecutive failure, at most 5 minutes.
#[must_use]
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs((1u64 << exp).min(300))
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        std::any::type_name::<K>(),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Applies one object with server-side apply under the operator's field manager.
///
/// # Errors
/// API or serialization failures.
pub async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = obj.meta().name.clone().ok_or(Error::NoName)?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let value = builders::typed_value(obj)?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await?)
}

async fn apply_status<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Builds a condition, keeping `lastTransitionTime` when the status did not change.
#[must_use]
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// `Degraded=False`, reason `AsExpected`.
fn not_degraded(previous: &[Condition], generation: Option<i64>) -> Condition {
    condition(
        previous,
        "Degraded",
        false,
        "AsExpected",
        String::new(),
        generation,
    )
}

fn condition_is(conds: &[Condition], type_: &str, status: bool) -> bool {
    let want = if status { "True" } else { "False" };
    conds.iter().any(|c| c.type_ == type_ && c.status == want)
}

/// Whether a pod's `Ready` condition is true.
#[must_use]
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The next step of a roll to the StatefulSet's update revision. A revision from before
/// the controller saw the latest spec is harmless: the plan replaces one slave at a time
/// while every pod is ready, and moves the master only by a lossless switchover.
fn upgrade_step(
    bg: &BrokerGroup,
    sts: Option<&StatefulSet>,
    pods: &[Pod],
    members: &[Member],
    roles: &Roles,
    in_sync: &Option<Vec<String>>,
) -> Step {
    let Some(sts) = sts else {
        return Step::Idle;
    };
    let Some(status) = sts.status.as_ref() else {
        return Step::Idle;
    };
    let revisions: Vec<PodRevision> = pods
        .iter()
        .map(|p| {
            let name = p.name_any();
            PodRevision {
                ready: members
                    .iter()
                    .any(|m| m.pod == name && m.ready && !m.terminating),
                revision: p.labels().get(REVISION_LABEL).cloned(),
                pod: name,
            }
        })
        .collect();
    let want = usize::try_from(builders::pod_count(bg.spec.replicas, roles)).unwrap_or(0);
    crate::upgrade::plan(
        status.update_revision.as_deref(),
        &revisions,
        want,
        &roles.master,
        in_sync.as_deref(),
    )
}

/// Puts [`builders::IN_SYNC_LABEL`] on the slaves of a SyncMaster group's in-sync set
/// (and takes it off the others), so the `<group>-in-sync` budget keeps one running.
async fn label_in_sync(
    client: &Client,
    bg: &BrokerGroup,
    pods: &[Pod],
    roles: &Roles,
    in_sync: &Option<Vec<String>>,
) {
    let sync_master = bg.spec.replication == Replication::SyncMaster;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(bg));
    for p in pods {
        let name = p.name_any();
        let want = sync_master
            && name != roles.master
            && in_sync.as_ref().is_some_and(|s| s.contains(&name));
        let has = p.labels().get(builders::IN_SYNC_LABEL).map(String::as_str) == Some("true");
        if want == has {
            continue;
        }
        let value = if want {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {builders::IN_SYNC_LABEL: value}}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(pod = %name, error = %e, "could not label the in-sync set; will retry");
        }
    }
}

async fn list_pods(
    client: &Client,
    namespace: &str,
    instance: &str,
    component: &str,
) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut items = pods
        .list(&ListParams::default().labels(&builders::selector_string(instance, component)))
        .await?
        .items;
    items.sort_by_key(|p| builders::pod_ordinal(&p.name_any()).unwrap_or(i64::MAX));
    Ok(items)
}

/// Reconciles one `NameServer`.
///
/// # Errors
/// API failures (retried by [`error_policy`]).
#[instrument(skip_all, fields(kind = "NameServer", namespace = ns.meta().namespace.as_deref().unwrap_or(""), name = %ns.name_any()))]
pub async fn reconcile_nameserver(ns: Arc<NameServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile("NameServer");
    let namespace = namespace_of(ns.as_ref());
    let name = ns.name_any();
    let generation = ns.metadata.generation;
    let previous = ns.status.clone().unwrap_or_default();
    let objects = match build_nameserver(&ns, &ctx.build) {
        Ok(o) => o,
        Err(e) => {
            let status = NameServerStatus {
                conditions: reject(&ctx, ns.as_ref(), &previous.conditions, &e, generation).await,
                observed_generation: generation,
                ..previous
            };
            apply_status::<NameServer>(&ctx.client, &namespace, &name, &status).await?;
            return Ok(Action::await_change());
        }
    };
    apply(&ctx.client, &namespace, &objects.headless).await?;
    apply(&ctx.client, &namespace, &objects.client).await?;
    apply(&ctx.client, &namespace, &objects.statefulset).await?;
    apply(&ctx.client, &namespace, &objects.pdb).await?;
    let pods = list_pods(&ctx.client, &namespace, &name, "namesrv").await?;
    let ready = i32::try_from(pods.iter().filter(|p| pod_ready(p)).count()).unwrap_or(i32::MAX);
    let want = ns.spec.replicas;
    let conds = vec![
        condition(
            &previous.conditions,
            "Available",
            ready > 0,
            if ready > 0 { "PodsReady" } else { "NoPodReady" },
            format!("{ready}/{want} name servers ready"),
            generation,
        ),
        condition(
            &previous.conditions,
            "Progressing",
            ready != want,
            if ready == want {
                "Stable"
            } else {
                "RollingOut"
            },
            format!("{ready}/{want} name servers ready"),
            generation,
        ),
        not_degraded(&previous.conditions, generation),
    ];
    if ready > 0 && !condition_is(&previous.conditions, "Available", true) {
        ctx.event(
            ns.as_ref(),
            EventType::Normal,
            "Available",
            format!("{ready}/{want} name servers ready"),
        )
        .await;
    }
    let status = NameServerStatus {
        ready_replicas: ready,
        addresses: builders::namesrv_addresses(&ns),
        conditions: conds,
        observed_generation: generation,
    };
    if status != previous {
        apply_status::<NameServer>(&ctx.client, &namespace, &name, &status).await?;
    }
    ctx.reset_backoff(&key_of(ns.as_ref()));
    Ok(Action::requeue(RESYNC))
}

fn degraded_conditions(
    previous: &[Condition],
    e: &SpecError,
    generation: Option<i64>,
) -> Vec<Condition> {
    vec![
        condition(
            previous,
            "Available",
            condition_is(previous, "Available", true),
            "Unchanged",
            String::new(),
            generation,
        ),
        condition(
            previous,
            "Progressing",
            false,
            e.reason(),
            "the spec cannot be applied".into(),
            generation,
        ),
        condition(
            previous,
            "Degraded",
            true,
            e.reason(),
            e.to_string(),
            generation,
        ),
    ]
}

/// A rejected spec: logged, a Warning Event the first time this message is seen, and the
/// conditions that say so.
async fn reject<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    previous: &[Condition],
    e: &SpecError,
    generation: Option<i64>,
) -> Vec<Condition> {
    warn!(reason = e.reason(), message = %e, "spec rejected");
    let already = previous
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message == e.to_string());
    if !already {
        ctx.event(obj, EventType::Warning, e.reason(), e.to_string())
            .await;
    }
    degraded_conditions(previous, e, generation)
}

/// Resolves `namesrvAddr` for a group: the explicit address, or the pod DNS names of the
/// referenced `NameServer`. `Ok(None)` when the reference names no existing object.
///
/// # Errors
/// API failures.
pub async fn resolve_namesrv(client: &Client, bg: &BrokerGroup) -> Result<Option<String>, Error> {
    if let Some(addr) = bg
        .spec
        .name_server_address
        .as_deref()
        .filter(|a| !a.trim().is_empty())
    {
        return Ok(Some(addr.trim().to_string()));
    }
    let Some(r) = bg.spec.name_server_ref.as_ref() else {
        return Ok(None);
    };
    let api: Api<NameServer> = Api::namespaced(client.clone(), &namespace_of(bg));
    Ok(api
        .get_opt(&r.name)
        .await?
        .map(|ns| builders::namesrv_addresses(&ns).join(";")))
}

/// Whether a Raft group's members challenge each other: a new group (no rendered
/// `broker.conf` yet) starts with it; a running one keeps what its members run with
/// (they cannot take it one at a time: each would refuse the others).
#[must_use]
pub fn raft_peer_signatures(current: Option<&ConfigMap>) -> bool {
    current
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("broker.conf"))
        .is_none_or(|conf| conf.lines().any(|l| l.trim() == "haRequireSignature=true"))
}

/// Reconciles one `BrokerGroup`.
///
/// # Errors
/// API failures (retried by [`error_policy`]).
#[instrument(skip_all, fields(kind = "BrokerGroup", namespace = bg.meta().namespace.as_deref().unwrap_or(""), name = %bg.name_any()))]
pub async fn reconcile_broker_group(
    bg: Arc<BrokerGroup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile("BrokerGroup");
    let namespace = namespace_of(bg.as_ref());
    let name = bg.name_any();
    let generation = bg.metadata.generation;
    let previous = bg.status.clone().unwrap_or_default();
    let roles = Roles::of(&bg);
    let mut waiting_for_namesrv = false;
    let mut namesrv_addr = None;
    // A Raft group shrinks only once its membership has: until then the StatefulSet
    // (and every pod's dLegerPeers) keeps the current size.
    let render = raft_render_size(&ctx, &bg, &roles).await?;
    let built = match builders::validate_broker_group(&bg.spec) {
        Err(e) => Err(e),
        Ok(()) => match resolve_namesrv(&ctx.client, &bg).await? {
            Some(addr) => {
                let mut build = ctx.build.clone();
                if bg.spec.replication == crate::crd::Replication::Raft {
                    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
                    build.raft_peer_signatures = raft_peer_signatures(
                        cms.get_opt(&format!("{name}-config")).await?.as_ref(),
                    );
                }
                let b = build_broker_group(&render, &addr, &roles, &build);
                namesrv_addr = Some(addr);
                b
            }
            None => {
                waiting_for_namesrv = true;
                Err(SpecError::Invalid(format!(
                    "NameServer `{}` not found in namespace {namespace}",
                    bg.spec
                        .name_server_ref
                        .as_ref()
                        .map_or("", |r| r.name.as_str())
                )))
            }
        },
    };
    let objects = match built {
        Ok(o) => o,
        Err(e) => {
            let status = BrokerGroupStatus {
                conditions: reject(&ctx, bg.as_ref(), &previous.conditions, &e, generation).await,
                observed_generation: generation,
                ..previous
            };
            replace_status_if_current(&ctx.client, bg.as_ref(), status).await?;
            // A missing NameServer may appear later; a bad spec waits for an edit.
            return Ok(if waiting_for_namesrv {
                Action::requeue(RESYNC)
            } else {
                Action::await_change()
            });
        }
    };
    // The roles go into the status before any pod can read them: the status is the
    // source of truth, the ConfigMap a copy.
    let first = previous.master.is_none();
    let mut bg = bg;
    let mut previous = previous;
    if first {
        let status = BrokerGroupStatus {
            master: Some(roles.master.clone()),
            epoch: roles.epoch,
            ..previous.clone()
        };
        // resourceVersion-checked: a stale cache that lacks the status gets 409.
        let updated = replace_status_if_current(&ctx.client, bg.as_ref(), status).await?;
        previous = updated.status.clone().unwrap_or_default();
        bg = Arc::new(updated);
        ctx.event(
            bg.as_ref(),
            EventType::Normal,
            "Created",
            format!(
                "{} brokers, master {} at epoch {}",
                bg.spec.replicas, roles.master, roles.epoch
            ),
        )
        .await;
    }
    // A failed apply (e.g. a StatefulSet field the API server refuses to change) must
    // not skip the failover decision below: the first error is kept, the decision
    // runs, and the error is returned (and retried) afterwards.
    let mut apply_error: Option<Error> = None;
    let mut keep = |r: Result<(), Error>| {
        if let Err(e) = r {
            warn!(error = %e, "apply failed; the failover decision still runs");
            apply_error.get_or_insert(e);
        }
    };
    keep(
        apply(&ctx.client, &namespace, &objects.config)
            .await
            .map(drop),
    );
    keep(
        ensure_roles(&ctx.client, bg.as_ref(), &roles)
            .await
            .map(drop),
    );
    if let Some(secret) = &objects.control {
        keep(apply(&ctx.client, &namespace, secret).await.map(drop));
    }
    keep(
        apply(&ctx.client, &namespace, &objects.headless)
            .await
            .map(drop),
    );
    keep(
        apply(&ctx.client, &namespace, &objects.client)
            .await
            .map(drop),
    );
    // A larger storage.size: the PVCs grow first, then the StatefulSet (whose claim
    // template cannot change) is recreated around the running pods.
    let storage = match crate::storage::expand(&ctx.client, bg.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            keep(Err(e));
            StorageState::Same
        }
    };
    if let StorageState::Expanded { from, to } = &storage {
        ctx.event(
            bg.as_ref(),
            EventType::Normal,
            "StorageExpanding",
            format!("PVCs growing from {from} to {to}; StatefulSet recreated with the new claim size (pods kept)"),
        )
        .await;
    }
    let sts = if matches!(storage, StorageState::Refused(_)) {
        None
    } else {
        match apply::<StatefulSet>(&ctx.client, &namespace, &objects.statefulset).await {
            Ok(s) => Some(s),
            Err(e) => {
                keep(Err(e));
                None
            }
        }
    };
    keep(apply(&ctx.client, &namespace, &objects.pdb).await.map(drop));
    keep(
        apply(&ctx.client, &namespace, &objects.in_sync_pdb)
            .await
            .map(drop),
    );
    match &objects.network_policy {
        Some(np) => keep(apply(&ctx.client, &namespace, np).await.map(drop)),
        None => {
            // `spec.networkPolicy` removed (or never set): no `<group>-ports`.
            let api: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
                Api::namespaced(ctx.client.clone(), &namespace);
            match api
                .delete(&format!("{name}-ports"), &DeleteParams::default())
                .await
            {
                Ok(_) => info!(group = %name, "NetworkPolicy removed (spec.networkPolicy is gone)"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => keep(Err(e.into())),
            }
        }
    }

    let pods = list_pods(&ctx.client, &namespace, &name, "broker").await?;
    let members = observe_members(&ctx, &bg, &pods, &roles).await;
    if bg.spec.replication == Replication::Raft {
        // The group elects its own leader: no failover, switchover or in-sync set here;
        // the status reports the leader and term the brokers say.
        let status = raft_status(&ctx, bg.as_ref(), &previous, &pods, &members, generation).await;
        if status != previous {
            replace_status_if_current(&ctx.client, bg.as_ref(), status).await?;
        }
        // Membership follows `replicas` through the leader, one change at a time.
        let changing = raft_membership(&ctx, bg.as_ref(), &members).await;
        if let Some(e) = apply_error {
            return Err(e);
        }
        ctx.reset_backoff(&key_of(bg.as_ref()));
        return Ok(Action::requeue(Duration::from_secs(if changing {
            2
        } else {
            10
        })));
    }
    // A broker claiming master at an epoch above the record holds a role the
    // operator gave it (role changes are signed); the record is behind (a stale read,
    // a lost status): adopt it before deciding anything.
    if let Some(newer) = newer_master(&roles, &members) {
        warn!(recorded = %roles.master, recorded_epoch = roles.epoch, master = %newer.master, epoch = newer.epoch, "a broker holds a newer role than the record; adopting it");
        record_roles(&ctx, bg.as_ref(), &newer, false).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let admin = ctx.admin_for(bg.as_ref());
    // Name servers changed (scaled, replaced): running brokers are told, not restarted.
    if let Some(want) = &namesrv_addr {
        for m in &members {
            let (Some(a), Some(b)) = (&m.addr, &m.broker) else {
                continue;
            };
            if !b.namesrv_addr.is_empty() && b.namesrv_addr != *want {
                match admin.set_namesrv_addr(a, want).await {
                    Ok(()) => {
                        info!(pod = %m.pod, from = %b.namesrv_addr, to = %want, "broker pointed at the new name servers")
                    }
                    Err(e) => {
                        warn!(pod = %m.pod, error = %e, "could not update namesrvAddr; will retry")
                    }
                }
            }
        }
    }
    // The master's in-sync replica set, recorded as pods. A member that stopped catching
    // up leaves only once the smaller set is recorded here: the status first
    // (resourceVersion-checked), then the master is told.
    let mut in_sync_now = (
        previous.sync_state_set.clone(),
        previous.sync_state_set_epoch,
    );
    if let Some((maddr, mv)) = members
        .iter()
        .find(|m| m.pod == roles.master && m.ready)
        .and_then(|m| Some((m.addr.clone()?, m.broker.clone()?)))
        .filter(|(_, v)| v.is_master && v.epoch == roles.epoch)
    {
        let pods = |addrs: &[String]| -> Vec<String> {
            let mut p: Vec<String> = members
                .iter()
                .filter(|m| m.addr.as_ref().is_some_and(|a| addrs.contains(a)))
                .map(|m| m.pod.clone())
                .collect();
            p.sort();
            p
        };
        if !mv.in_sync_leaving.is_empty() {
            let keep: Vec<String> = mv
                .in_sync
                .iter()
                .filter(|a| !mv.in_sync_leaving.contains(a))
                .cloned()
                .collect();
            let mut status = previous.clone();
            status.sync_state_set = Some(pods(&keep));
            status.sync_state_set_epoch = mv.sync_set_epoch;
            warn!(leaving = ?mv.in_sync_leaving, keep = ?keep, "in-sync members stopped catching up; recording the smaller set");
            replace_status_if_current(&ctx.client, bg.as_ref(), status).await?;
            if let Err(e) = admin
                .confirm_sync_state_set(&maddr, mv.sync_set_epoch, &keep)
                .await
            {
                warn!(error = %e, "in-sync set confirmation failed; will retry");
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        in_sync_now = (Some(pods(&mv.in_sync)), mv.sync_set_epoch);
    }
    // A new pod template: the operator replaces pods itself (OnDelete), slaves first.
    let upgrade = upgrade_step(&bg, sts.as_ref(), &pods, &members, &roles, &in_sync_now.0);
    let mut observed = Observed {
        master: roles.master.clone(),
        epoch: roles.epoch,
        enabled: bg.spec.failover.enabled,
        grace: Duration::from_secs(
            u64::try_from(bg.spec.failover.unready_grace_seconds).unwrap_or(10),
        ),
        members: members.clone(),
        preferred: match &bg.spec.preferred_master {
            Some(p) => vec![p.clone()],
            // A scale-down the master blocks: any pod the smaller group keeps will do.
            None if builders::pod_count(bg.spec.replicas, &roles) > bg.spec.replicas => {
                (0..bg.spec.replicas)
                    .map(|o| format!("{name}-{o}"))
                    .collect()
            }
            None => Vec::new(),
        },
        last_move: previous
            .last_failover_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok()),
        in_sync: previous.sync_state_set.clone(),
        allow_unclean: bg.spec.failover.allow_unclean,
    };
    if let Step::MoveMaster(candidates) = &upgrade {
        // Every slave runs the new template: the master moves to one of them (a
        // lossless switchover), then it is replaced as a slave.
        observed.preferred.clone_from(candidates);
    }
    let mut action = Action::requeue(RESYNC);
    let mut no_candidate = None;
    match decide(&observed, Timestamp::now()) {
        Decision::Steady => {}
        Decision::Wait { remaining } => {
            action = Action::requeue(remaining.min(RESYNC) + Duration::from_millis(200));
        }
        Decision::Promote {
            new_master,
            addr,
            epoch,
            step_down,
            followers,
            reason,
            unclean,
        } => {
            if unclean {
                ctx.event(
                    bg.as_ref(),
                    EventType::Warning,
                    "UncleanFailover",
                    format!("{new_master} is not in the last recorded in-sync set; messages acknowledged only by its members may be lost: {reason}"),
                )
                .await;
            }
            let promotion = Promotion {
                new_master: &new_master,
                addr: &addr,
                epoch,
                step_down: step_down.as_ref(),
                followers: &followers,
            };
            fail_over(&ctx, admin.as_ref(), &bg, &members, &promotion, &reason).await?;
            // Look again with the new roles recorded.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Decision::Switchover(plan) => {
            switch_over(&ctx, admin.as_ref(), &bg, &plan).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Decision::NoCandidate { reason } => {
            warn!(%reason, "cannot fail over");
            no_candidate = Some(("NoReadySlave", reason));
            action = Action::requeue(Duration::from_secs(2));
        }
        Decision::NoInSyncReplica { reason } => {
            warn!(%reason, "cannot fail over safely");
            no_candidate = Some(("NoInSyncReplica", reason));
            action = Action::requeue(Duration::from_secs(2));
        }
        Decision::Correct {
            epoch,
            master_addr,
            followers,
            fixes,
        } => {
            correct_roles(
                &ctx,
                admin.as_ref(),
                &bg,
                &roles,
                epoch,
                &master_addr,
                &followers,
                &fixes,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    label_in_sync(&ctx.client, &bg, &pods, &roles, &in_sync_now.0).await;
    match &upgrade {
        Step::Delete(pod) if no_candidate.is_none() => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            match api.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(%pod, "replacing an outdated pod");
                    ctx.event(
                        bg.as_ref(),
                        EventType::Normal,
                        "UpgradingPod",
                        format!("{pod} deleted to be recreated from the new template"),
                    )
                    .await;
                }
                Err(e) => warn!(%pod, error = %e, "could not delete an outdated pod; will retry"),
            }
            action = Action::requeue(Duration::from_secs(2));
        }
        Step::Wait(why) => {
            info!(%why, "rolling update waits");
            action = Action::requeue(Duration::from_secs(2));
        }
        _ => {}
    }
    let old_offsets: HashMap<&str, i64> = previous
        .brokers
        .iter()
        .map(|b| (b.pod.as_str(), b.max_offset))
        .collect();
    let brokers: Vec<BrokerMemberStatus> = members
        .iter()
        .filter(|m| pods.iter().any(|p| p.name_any() == m.pod))
        .map(|m| BrokerMemberStatus {
            broker_id: broker_id(&m.pod, &roles),
            role: if m.pod == roles.master {
                "master"
            } else {
                "slave"
            }
            .into(),
            ready: m.ready,
            max_offset: m
                .broker
                .as_ref()
                .map(|b| i64::try_from(b.max_offset).unwrap_or(i64::MAX))
                .or_else(|| old_offsets.get(m.pod.as_str()).copied())
                .unwrap_or(0),
            pod: m.pod.clone(),
        })
        .collect();
    let ready = i32::try_from(brokers.iter().filter(|b| b.ready).count()).unwrap_or(i32::MAX);
    let want = bg.spec.replicas;
    let master_ready = brokers.iter().any(|b| b.pod == roles.master && b.ready);
    // Slaves that cannot follow (a log that ends before the master's oldest file needs
    // its PVC emptied; a master of an older epoch is refused) degrade the group.
    let stuck: Vec<String> = members
        .iter()
        .filter(|m| m.pod != roles.master)
        .filter_map(|m| {
            let p = m.broker.as_ref()?.follow_problem.as_ref()?;
            Some(format!("{}: {p}", m.pod))
        })
        .collect();
    let degraded = match &no_candidate {
        Some((kind, reason)) => Some((*kind, reason.clone())),
        None if matches!(storage, StorageState::Refused(_)) => match &storage {
            StorageState::Refused(why) => Some(("StorageNotExpandable", why.clone())),
            _ => None,
        },
        None if !stuck.is_empty() => Some(("SlaveCannotFollow", stuck.join("; "))),
        None => apply_error.as_ref().map(|e| {
            (
                "ApplyFailed",
                format!("applying the group's objects failed: {e}"),
            )
        }),
    };
    let rolled = sts.as_ref().is_some_and(|sts| {
        sts.status.as_ref().is_none_or(|s| {
            s.observed_generation == sts.metadata.generation
                && s.updated_replicas.unwrap_or(0) == want
        })
    });
    let blocked = builders::pod_count(want, &roles) > want;
    let growing = match &storage {
        StorageState::Refused(_) => false,
        _ => crate::storage::growing(&ctx.client, bg.as_ref()).await,
    };
    let progressing = ready != want || !rolled || blocked || growing;
    let conds = vec![
        condition(
            &previous.conditions,
            "Available",
            master_ready,
            if master_ready {
                "MasterReady"
            } else {
                "MasterNotReady"
            },
            format!(
                "master {} {}ready",
                roles.master,
                if master_ready { "" } else { "not " }
            ),
            generation,
        ),
        condition(
            &previous.conditions,
            "Progressing",
            progressing,
            if blocked {
                "ScaleDownBlocked"
            } else if growing {
                "ExpandingStorage"
            } else if progressing {
                "RollingOut"
            } else {
                "Stable"
            },
            if blocked {
                format!(
                    "{ready} brokers ready; scaling to {want} would delete the master {} (kept {} pods)",
                    roles.master,
                    builders::pod_count(want, &roles)
                )
            } else {
                format!("{ready}/{want} brokers ready")
            },
            generation,
        ),
        match &degraded {
            None => not_degraded(&previous.conditions, generation),
            Some((reason, message)) => condition(
                &previous.conditions,
                "Degraded",
                true,
                reason,
                message.clone(),
                generation,
            ),
        },
    ];
    if let Some((reason, message)) = &degraded {
        let already = previous
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == *reason);
        if !already {
            ctx.event(bg.as_ref(), EventType::Warning, reason, message.clone())
                .await;
        }
    }
    if master_ready && !condition_is(&previous.conditions, "Available", true) {
        info!(master = %roles.master, "group available");
        ctx.event(
            bg.as_ref(),
            EventType::Normal,
            "Available",
            format!("master {} ready, {ready}/{want} brokers", roles.master),
        )
        .await;
    } else if !master_ready && condition_is(&previous.conditions, "Available", true) {
        ctx.event(
            bg.as_ref(),
            EventType::Warning,
            "MasterNotReady",
            format!("master {} is not ready", roles.master),
        )
        .await;
    }
    let status = BrokerGroupStatus {
        master: Some(roles.master.clone()),
        epoch: roles.epoch,
        ready_replicas: ready,
        brokers,
        conditions: conds,
        observed_generation: generation,
        last_failover_time: previous.last_failover_time.clone(),
        sync_state_set: in_sync_now.0,
        sync_state_set_epoch: in_sync_now.1,
    };
    if status != previous {
        // The roles in it (master, epoch) are the ones read: written back only when
        // the object read is still current (a concurrent failover wins).
        replace_status_if_current(&ctx.client, bg.as_ref(), status).await?;
    }
    if let Some(e) = apply_error {
        return Err(e);
    }
    ctx.reset_backoff(&key_of(bg.as_ref()));
    Ok(action)
}

/// The member that leads a Raft group: the one reporting master at the highest term.
fn raft_leader(members: &[Member]) -> Option<&Member> {
    members
        .iter()
        .filter(|m| m.broker.as_ref().is_some_and(|b| b.is_master))
        .max_by_key(|m| m.broker.as_ref().map_or(0, |b| b.epoch))
}

/// The ordinals in a Raft group's committed membership (`n3` → 3), as its leader
/// reports them; None when no leader reports one.
fn raft_ordinals(members: &[Member]) -> Option<Vec<i64>> {
    let b = raft_leader(members)?.broker.as_ref()?;
    if b.raft_members.is_empty() {
        return None;
    }
    Some(
        b.raft_members
            .iter()
            .filter_map(|id| id.strip_prefix('n').and_then(|n| n.parse().ok()))
            .collect(),
    )
}

/// The group to render: `bg`, or (a Raft group whose `replicas` went down while its
/// membership still holds the higher ordinals) `bg` at the StatefulSet's current size,
/// so no member is stopped, and no pod's `dLegerPeers` loses itself, before the
/// leader removed it.
async fn raft_render_size(
    ctx: &Context,
    bg: &Arc<BrokerGroup>,
    roles: &Roles,
) -> Result<Arc<BrokerGroup>, Error> {
    if bg.spec.replication != Replication::Raft {
        return Ok(Arc::clone(bg));
    }
    let namespace = namespace_of(bg.as_ref());
    let current = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&bg.name_any())
        .await?
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas);
    let Some(current) = current.filter(|n| *n > bg.spec.replicas) else {
        return Ok(Arc::clone(bg));
    };
    let pods = list_pods(&ctx.client, &namespace, &bg.name_any(), "broker").await?;
    let members = observe_members(ctx, bg, &pods, roles).await;
    let want = i64::from(bg.spec.replicas);
    let done = raft_ordinals(&members).is_some_and(|ids| ids.iter().all(|i| *i < want));
    if done {
        return Ok(Arc::clone(bg));
    }
    let mut keep = (**bg).clone();
    keep.spec.replicas = current;
    Ok(Arc::new(keep))
}

/// One step of a Raft group's membership towards `replicas`, through its leader:
/// a leader among the ordinals to go hands leadership to a staying member; then the
/// highest ordinal to go is removed; then a running pod not yet a member is added
/// (a learner until it holds the log, then a voter). Whether a change was made or is
/// still needed.
async fn raft_membership(ctx: &Context, bg: &BrokerGroup, members: &[Member]) -> bool {
    let want = i64::from(bg.spec.replicas);
    let (Some(leader), Some(ids)) = (raft_leader(members), raft_ordinals(members)) else {
        return false;
    };
    let Some(leader_addr) = leader.addr.clone() else {
        return false;
    };
    let leader_ordinal = leader.slave_id - 1;
    let change = if let Some(&extra) = ids.iter().filter(|i| **i >= want).max() {
        if leader_ordinal >= want {
            let Some(to) = ids
                .iter()
                .filter(|i| **i < want)
                .find(|i| members.iter().any(|m| m.slave_id == **i + 1 && m.ready))
            else {
                return true;
            };
            RaftChange::Transfer {
                to: format!("n{to}"),
            }
        } else {
            RaftChange::Remove {
                id: format!("n{extra}"),
            }
        }
    } else if let Some(i) = (0..want).find(|i| {
        !ids.contains(i)
            && members
                .iter()
                .any(|m| m.slave_id == *i + 1 && m.broker.is_some() && !m.terminating)
    }) {
        RaftChange::Add {
            id: format!("n{i}"),
            peer: builders::raft_peer(bg, i),
        }
    } else {
        // Pods still to start (scaling up), or nothing to do.
        return ids.len() as i64 != want;
    };
    let admin = ctx.admin_for(bg);
    match admin.raft_change(&leader_addr, &change).await {
        Ok(now) => {
            let (reason, what) = match &change {
                RaftChange::Add { id, .. } => ("MemberAdded", format!("{id} joined")),
                RaftChange::Remove { id } => ("MemberRemoved", format!("{id} left")),
                RaftChange::Transfer { to } => {
                    ("LeaderTransferred", format!("leadership handed to {to}"))
                }
            };
            info!(?change, members = ?now, "Raft membership change");
            ctx.event(
                bg,
                EventType::Normal,
                reason,
                format!("{what}; members {}", now.join(",")),
            )
            .await;
        }
        Err(e) => {
            warn!(?change, error = %e, "Raft membership change failed");
            ctx.event(
                bg,
                EventType::Warning,
                "MembershipChangeFailed",
                format!("{change:?}: {e}"),
            )
            .await;
        }
    }
    true
}

/// The status of a Raft group: the leader (the member registered as master at the
/// highest term) and its term, each pod's role as its broker reports it.
async fn raft_status(
    ctx: &Context,
    bg: &BrokerGroup,
    previous: &BrokerGroupStatus,
    pods: &[Pod],
    members: &[Member],
    generation: Option<i64>,
) -> BrokerGroupStatus {
    let leader = raft_leader(members);
    let term = leader
        .and_then(|m| m.broker.as_ref())
        .map_or(previous.epoch, |b| b.epoch);
    let brokers: Vec<BrokerMemberStatus> = members
        .iter()
        .filter(|m| pods.iter().any(|p| p.name_any() == m.pod))
        .map(|m| {
            let leads = leader.is_some_and(|l| l.pod == m.pod);
            BrokerMemberStatus {
                broker_id: if leads { 0 } else { m.slave_id },
                role: if leads { "master" } else { "slave" }.into(),
                ready: m.ready,
                max_offset: m
                    .broker
                    .as_ref()
                    .map_or(0, |b| i64::try_from(b.max_offset).unwrap_or(i64::MAX)),
                pod: m.pod.clone(),
            }
        })
        .collect();
    let ready = i32::try_from(brokers.iter().filter(|b| b.ready).count()).unwrap_or(i32::MAX);
    let want = bg.spec.replicas;
    let leader_ready = leader.is_some_and(|l| l.ready);
    let leader_pod = leader.map(|l| l.pod.clone());
    if leader_pod.is_some() && leader_pod != previous.master {
        ctx.event(
            bg,
            EventType::Normal,
            "LeaderElected",
            format!(
                "{} leads term {term} (elected by the group)",
                leader_pod.as_deref().unwrap_or_default()
            ),
        )
        .await;
    }
    let conds = vec![
        condition(
            &previous.conditions,
            "Available",
            leader_ready,
            if leader_ready {
                "LeaderReady"
            } else {
                "NoLeader"
            },
            match &leader_pod {
                Some(p) => format!("{p} leads term {term}"),
                None => "no member reports leading a term".into(),
            },
            generation,
        ),
        condition(
            &previous.conditions,
            "Progressing",
            ready != want,
            if ready != want {
                "RollingOut"
            } else {
                "Stable"
            },
            format!("{ready}/{want} brokers ready"),
            generation,
        ),
        not_degraded(&previous.conditions, generation),
    ];
    BrokerGroupStatus {
        master: leader_pod.or_else(|| previous.master.clone()),
        epoch: term,
        ready_replicas: ready,
        brokers,
        conditions: conds,
        observed_generation: generation,
        last_failover_time: previous.last_failover_time.clone(),
        sync_state_set: None,
        sync_state_set_epoch: 0,
    }
}

/// Each pod as the failover decision sees it: readiness, since when unready, and what
/// its broker reports. A recorded master without a pod counts as unready since the
/// operator first noticed.
async fn observe_members(
    ctx: &Context,
    bg: &BrokerGroup,
    pods: &[Pod],
    roles: &Roles,
) -> Vec<Member> {
    let now = Timestamp::now();
    let key = format!("{}/{}", namespace_of(bg), bg.name_any());
    let mut members: Vec<Member> = pods
        .iter()
        .map(|p| {
            let pod = p.name_any();
            let ready = pod_ready(p);
            let unready_since = if ready {
                None
            } else if let Some(t) = &p.metadata.deletion_timestamp {
                Some(t.0)
            } else {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status != "True"))
                    .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
                    .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            };
            let addr = (ctx.broker_addr)(p);
            let slave_id = builders::pod_ordinal(&pod).map_or(1, |o| o + 1);
            Member {
                pod,
                ready,
                unready_since,
                addr,
                broker: None,
                slave_id,
                terminating: p.metadata.deletion_timestamp.is_some(),
            }
        })
        .collect();
    {
        let mut absent = ctx.absent_since.lock().unwrap_or_else(|p| p.into_inner());
        if members.iter().any(|m| m.pod == roles.master) {
            absent.remove(&key);
        } else {
            let since = *absent.entry(key).or_insert(now);
            members.push(Member {
                pod: roles.master.clone(),
                ready: false,
                unready_since: Some(since),
                addr: None,
                broker: None,
                slave_id: 1,
                terminating: false,
            });
        }
    }
    let admin = ctx.admin_for(bg);
    let views = futures::future::join_all(members.iter().map(|m| async {
        match &m.addr {
            Some(a) => admin.state(a).await.ok(),
            None => None,
        }
    }))
    .await;
    for (m, v) in members.iter_mut().zip(views) {
        m.broker = v;
    }
    members
}

/// What a promotion does (see [`fail_over`]).
struct Promotion<'a> {
    new_master: &'a str,
    addr: &'a str,
    epoch: i64,
    step_down: Option<&'a (String, i64)>,
    followers: &'a [(String, i64)],
}

/// Carries out a promotion: the new roles go into the status first (with the
/// resourceVersion read, so a concurrent writer makes this fail and retry), then the
/// roles ConfigMap; then, fencing first, the old master (when it still answers) is told
/// to follow the new master at the new epoch, the new master is promoted, and the
/// other slaves follow it.
async fn fail_over(
    ctx: &Context,
    admin: &dyn BrokerAdmin,
    bg: &BrokerGroup,
    members: &[Member],
    p: &Promotion<'_>,
    reason: &str,
) -> Result<(), Error> {
    let namespace = namespace_of(bg);
    let name = bg.name_any();
    let old = Roles::of(bg);
    let epoch = p.epoch;
    warn!(from = %old.master, to = %p.new_master, epoch, %reason, "failing over");
    let roles = Roles {
        master: p.new_master.to_string(),
        epoch,
    };
    record_roles(ctx, bg, &roles, true).await?;
    if let Some((old_addr, old_id)) = p.step_down {
        let ha = members
            .iter()
            .find(|m| m.pod == p.new_master)
            .and_then(|m| m.broker.as_ref())
            .map(|b| b.ha_addr.clone())
            .unwrap_or_default();
        match admin.follow(old_addr, p.addr, &ha, *old_id, epoch).await {
            Ok(()) => info!(old = %old_addr, epoch, "old master stepped down"),
            Err(e) => {
                warn!(old = %old_addr, error = %e, "old master did not step down; its name server refusal fences it")
            }
        }
    }
    match admin.fail_over(p.addr, p.followers, epoch).await {
        Ok(repointed) => info!(master = %p.addr, epoch, ?repointed, "promoted"),
        Err(e) => warn!(broker = %p.addr, error = %e, "promotion request failed; will retry"),
    }
    ctx.metrics.failover(&namespace, &name);
    ctx.event(
        bg,
        EventType::Warning,
        "FailedOver",
        format!("{} promoted at epoch {epoch}: {reason}", p.new_master),
    )
    .await;
    Ok(())
}

/// A broker reporting itself master at an epoch above the record (and above any other
/// such broker): the roles the record should hold.
fn newer_master(recorded: &Roles, members: &[Member]) -> Option<Roles> {
    members
        .iter()
        .filter_map(|m| Some((m, m.broker.as_ref()?)))
        .filter(|(_, b)| b.is_master && b.epoch > recorded.epoch)
        .max_by_key(|(_, b)| b.epoch)
        .map(|(m, b)| Roles {
            master: m.pod.clone(),
            epoch: b.epoch,
        })
}

/// Records `roles` in the status (optimistic concurrency on the resourceVersion of
/// `bg`) and the roles ConfigMap (only forward, also resourceVersion-checked); returns
/// the updated object. `moved`: the master role moved (sets `lastFailoverTime`).
async fn record_roles(
    ctx: &Context,
    bg: &BrokerGroup,
    roles: &Roles,
    moved: bool,
) -> Result<BrokerGroup, Error> {
    let mut status = bg.status.clone().unwrap_or_default();
    if status.epoch != roles.epoch {
        // A new epoch starts a new in-sync set on the master: nobody is a member until
        // the master reports it.
        status.sync_state_set = Some(Vec::new());
        status.sync_state_set_epoch = 0;
    }
    status.master = Some(roles.master.clone());
    status.epoch = roles.epoch;
    if moved {
        status.last_failover_time = Some(Timestamp::now().to_string());
    }
    let updated = replace_status_if_current(&ctx.client, bg, status).await?;
    ensure_roles(&ctx.client, bg, roles).await?;
    Ok(updated)
}

/// Writes `status` with `bg`'s resourceVersion as a precondition: a stale read or a
/// concurrent writer (another operator replica) gets 409 and the reconcile retries
/// from fresh state, so a cached object never undoes a recorded failover.
async fn replace_status_if_current(
    client: &Client,
    bg: &BrokerGroup,
    status: BrokerGroupStatus,
) -> Result<BrokerGroup, Error> {
    let mut updated = bg.clone();
    updated.status = Some(status);
    let api: Api<BrokerGroup> = Api::namespaced(client.clone(), &namespace_of(bg));
    Ok(api
        .replace_status(&bg.name_any(), &PostParams::default(), &updated)
        .await?)
}

/// The roles a roles ConfigMap holds.
fn roles_in(cm: &ConfigMap) -> Option<Roles> {
    let text = cm.data.as_ref()?.get("roles")?;
    let mut master = None;
    let mut epoch = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("master", v)) => master = Some(v.trim().to_string()),
            Some(("epoch", v)) => epoch = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some(Roles {
        master: master?,
        epoch: epoch?,
    })
}

/// Makes the roles ConfigMap hold `roles` without ever moving it back: created when
/// missing; replaced (resourceVersion precondition) only when it holds an older epoch;
/// left alone when it holds a newer one (the caller's record is stale: the next
/// reconcile adopts the newer roles from the brokers).
async fn ensure_roles(client: &Client, bg: &BrokerGroup, roles: &Roles) -> Result<(), Error> {
    let namespace = namespace_of(bg);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let want = builders::roles_config_map(bg, roles);
    let name = format!("{}-roles", bg.name_any());
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some(cm) => match roles_in(&cm) {
            Some(have) if have.epoch > roles.epoch => {
                warn!(configmap = %name, have = have.epoch, record = roles.epoch, "roles ConfigMap is newer than the record; left alone");
            }
            Some(have) if have == *roles => {}
            _ => {
                let mut next = want;
                next.metadata.resource_version = cm.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &next).await?;
            }
        },
    }
    Ok(())
}

/// Carries out a planned switchover: the new roles are recorded first (as for a
/// failover), then the brokers switch. If the brokers refuse (the slave did not catch
/// up, a broker is unreachable) nothing changed on them: the old master is recorded
/// again at the next epoch, so the role corrections re-assert it everywhere, and the
/// cooldown keeps the next attempt a minute away.
async fn switch_over(
    ctx: &Context,
    admin: &dyn BrokerAdmin,
    bg: &BrokerGroup,
    p: &SwitchoverPlan,
) -> Result<(), Error> {
    let namespace = namespace_of(bg);
    let name = bg.name_any();
    info!(from = %p.from, to = %p.to, epoch = p.epoch, reason = %p.reason, "switching over");
    let recorded = record_roles(
        ctx,
        bg,
        &Roles {
            master: p.to.clone(),
            epoch: p.epoch,
        },
        true,
    )
    .await?;
    match admin
        .switch_over(&p.from_addr, p.from_id, &p.to_addr, &p.followers, p.epoch)
        .await
    {
        Ok(repointed) => {
            info!(master = %p.to_addr, epoch = p.epoch, ?repointed, "switched over");
            ctx.metrics.switchover(&namespace, &name, "done");
            ctx.event(
                bg,
                EventType::Normal,
                "SwitchedOver",
                format!(
                    "master moved from {} to {} at epoch {}: {}",
                    p.from, p.to, p.epoch, p.reason
                ),
            )
            .await;
        }
        Err(e) => {
            warn!(error = %e, "switchover refused; keeping the old master");
            ctx.metrics.switchover(&namespace, &name, "failed");
            record_roles(
                ctx,
                &recorded,
                &Roles {
                    master: p.from.clone(),
                    epoch: p.epoch + 1,
                },
                true,
            )
            .await?;
            ctx.event(
                bg,
                EventType::Warning,
                "SwitchoverFailed",
                format!("{} stays master (epoch {}): {e}", p.from, p.epoch + 1),
            )
            .await;
        }
    }
    Ok(())
}

/// Brings brokers in line with the recorded roles: the recorded master is asserted at
/// a new epoch (recorded first, resourceVersion-checked), then every other broker
/// follows it at that epoch.
#[allow(clippy::too_many_arguments)]
async fn correct_roles(
    ctx: &Context,
    admin: &dyn BrokerAdmin,
    bg: &BrokerGroup,
    roles: &Roles,
    epoch: i64,
    master_addr: &str,
    followers: &[(String, i64)],
    fixes: &[Correction],
) -> Result<(), Error> {
    info!(?fixes, master = %roles.master, epoch, "brokers disagree with the record; re-asserting it at a new epoch");
    record_roles(
        ctx,
        bg,
        &Roles {
            master: roles.master.clone(),
            epoch,
        },
        false,
    )
    .await?;
    match admin.fail_over(master_addr, followers, epoch).await {
        Ok(done) => info!(epoch, ?done, "roles corrected"),
        Err(e) => warn!(error = %e, "role correction failed; will retry"),
    }
    ctx.event(
        bg,
        EventType::Normal,
        "RolesCorrected",
        format!(
            "{} re-asserted as master at epoch {epoch} ({} broker(s) disagreed)",
            roles.master,
            fixes.len()
        ),
    )
    .await;
    Ok(())
}

/// What to do after a failed reconcile: count it and retry with exponential backoff.
pub fn error_policy<K: Resource>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    warn!(kind, name = obj.meta().name.as_deref().unwrap_or(""), error = %err, "reconcile failed");
    ctx.metrics.failure(kind, err.metric_label());
    Action::requeue(ctx.backoff(&key_of(obj.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(50), Duration::from_secs(300));
    }

    #[test]
    fn condition_keeps_transition_time_while_status_holds() {
        let first = condition(&[], "Available", true, "MasterReady", "x".into(), Some(1));
        let again = condition(
            std::slice::from_ref(&first),
            "Available",
            true,
            "MasterReady",
            "y".into(),
            Some(2),
        );
        assert_eq!(first.last_transition_time, again.last_transition_time);
        assert_eq!(again.observed_generation, Some(2));
        let flipped = condition(
            std::slice::from_ref(&first),
            "Available",
            false,
            "MasterNotReady",
            "z".into(),
            Some(2),
        );
        assert_eq!(flipped.status, "False");
        assert!(flipped.last_transition_time.0 >= first.last_transition_time.0);
    }

    #[test]
    fn a_raft_group_keeps_the_peer_signatures_it_runs_with() {
        let cm = |conf: &str| ConfigMap {
            data: Some(std::collections::BTreeMap::from([(
                "broker.conf".to_string(),
                conf.to_string(),
            )])),
            ..ConfigMap::default()
        };
        assert!(raft_peer_signatures(None), "a new group starts with them");
        assert!(raft_peer_signatures(Some(&cm(
            "enableDLegerCommitLog=true\nhaRequireSignature=true\n"
        ))));
        assert!(!raft_peer_signatures(Some(&cm(
            "enableDLegerCommitLog=true\ncontrolSecretFile=/x\n"
        ))));
    }
}
