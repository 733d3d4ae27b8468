//! Reconcile tests against an in-memory Kubernetes API (`kube-fake-client`): the real
//! reconcile functions and server-side apply calls, no cluster.

use std::sync::Arc;
use std::time::Duration;

use ferrocket_operator::builders::{BuildConfig, CONFIG_HASH_ANNOTATION};
use ferrocket_operator::controller::{reconcile_broker_group, reconcile_nameserver, Context};
use ferrocket_operator::crd::{BrokerGroup, BrokerGroupSpec, NameServer, NameServerSpec};
use ferrocket_operator::lease::LeaseLock;
use ferrocket_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition, PodStatus, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_fake_client::ClientBuilder;

const NS: &str = "mq";

fn nameserver() -> NameServer {
    let spec: NameServerSpec = serde_yaml::from_str("replicas: 2\n").unwrap();
    let mut ns = NameServer::new("namesrv", spec);
    ns.metadata.namespace = Some(NS.into());
    ns
}

fn group(yaml: &str) -> BrokerGroup {
    let spec: BrokerGroupSpec = serde_yaml::from_str(yaml).unwrap();
    let mut bg = BrokerGroup::new("broker-a", spec);
    bg.metadata.namespace = Some(NS.into());
    bg
}

async fn client(objects: (NameServer, Option<BrokerGroup>)) -> Client {
    let mut b = ClientBuilder::new()
        .with_resource::<NameServer>()
        .with_resource::<BrokerGroup>()
        .with_status_subresource::<NameServer>()
        .with_status_subresource::<BrokerGroup>()
        .with_status_subresource::<StatefulSet>()
        .with_object(objects.0);
    if let Some(bg) = objects.1 {
        b = b.with_object(bg);
    }
    b.build().await.unwrap()
}

fn ctx(client: &Client) -> Arc<Context> {
    Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        BuildConfig {
            default_image: "ferrocket:test".into(),
            control_key: None,
            raft_peer_signatures: true,
        },
        "test",
    ))
}

async fn reconcile(client: &Client) -> BrokerGroup {
    let api: Api<BrokerGroup> = Api::namespaced(client.clone(), NS);
    let bg = api.get("broker-a").await.unwrap();
    reconcile_broker_group(Arc::new(bg), ctx(client))
        .await
        .unwrap();
    api.get("broker-a").await.unwrap()
}

fn condition(bg: &BrokerGroup, type_: &str) -> (String, String) {
    let c = bg
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone())
}

async fn add_pod(client: &Client, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some(NS.into());
    pod.metadata.labels = Some(ferrocket_operator::builders::labels("broker-a", "broker"));
    pod.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    match pods.get_opt(name).await.unwrap() {
        Some(_) => {
            let status = serde_json::json!({ "status": pod.status });
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
        None => {
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
    }
}

#[tokio::test]
async fn create_makes_every_object_with_owner_references_and_initial_roles() {
    let c = client((
        nameserver(),
        Some(group(
            "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\n",
        )),
    ))
    .await;
    let bg = reconcile(&c).await;
    let uid = bg.uid().unwrap();
    let st = bg.status.clone().unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-0"), 1));
    assert_eq!(condition(&bg, "Available").0, "False");
    assert_eq!(condition(&bg, "Degraded").0, "False");

    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let o = &meta.owner_references.as_ref().expect("owner reference")[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("BrokerGroup", uid.as_str(), Some(true))
        );
    };
    let sts: StatefulSet = Api::namespaced(c.clone(), NS)
        .get("broker-a")
        .await
        .unwrap();
    owned(&sts.metadata);
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(3));
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let conf = cms.get("broker-a-config").await.unwrap();
    owned(&conf.metadata);
    let text = &conf.data.unwrap()["broker.conf"];
    assert!(
        text.contains(
            "namesrvAddr=namesrv-0.namesrv-hs.mq.svc:9876;namesrv-1.namesrv-hs.mq.svc:9876\n"
        ),
        "{text}"
    );
    assert!(text.contains("brokerRole=SYNC_MASTER\n"));
    let roles = cms.get("broker-a-roles").await.unwrap();
    owned(&roles.metadata);
    assert_eq!(roles.data.unwrap()["roles"], "master=broker-a-0\nepoch=1\n");
    let svcs: Api<Service> = Api::namespaced(c.clone(), NS);
    owned(&svcs.get("broker-a").await.unwrap().metadata);
    owned(&svcs.get("broker-a-hs").await.unwrap().metadata);
    let pdb: PodDisruptionBudget = Api::namespaced(c.clone(), NS)
        .get("broker-a")
        .await
        .unwrap();
    owned(&pdb.metadata);

    let events: Api<Event> = Api::namespaced(c.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Created".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn ready_pods_update_status_and_conditions() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 3\n")),
    ))
    .await;
    reconcile(&c).await;
    add_pod(&c, "broker-a-0", true).await;
    add_pod(&c, "broker-a-1", true).await;
    add_pod(&c, "broker-a-2", false).await;
    let bg = reconcile(&c).await;
    let st = bg.status.clone().unwrap();
    assert_eq!(st.ready_replicas, 2);
    assert_eq!(
        condition(&bg, "Available"),
        ("True".into(), "MasterReady".into())
    );
    assert_eq!(condition(&bg, "Progressing").0, "True");
    let members: Vec<(String, i64, String, bool)> = st
        .brokers
        .iter()
        .map(|b| (b.pod.clone(), b.broker_id, b.role.clone(), b.ready))
        .collect();
    assert_eq!(
        members,
        [
            ("broker-a-0".into(), 0, "master".into(), true),
            ("broker-a-1".into(), 2, "slave".into(), true),
            ("broker-a-2".into(), 3, "slave".into(), false),
        ]
    );
    assert_eq!(st.observed_generation, bg.metadata.generation);

    // The master goes unready: Available turns False and a warning Event is recorded.
    add_pod(&c, "broker-a-0", false).await;
    let bg = reconcile(&c).await;
    assert_eq!(
        condition(&bg, "Available"),
        ("False".into(), "MasterNotReady".into())
    );
    let events: Api<Event> = Api::namespaced(c.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"Available".to_string())
            && reasons.contains(&"MasterNotReady".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn spec_change_patches_the_statefulset_and_config() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 2\n")),
    ))
    .await;
    reconcile(&c).await;
    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let before = stss.get("broker-a").await.unwrap();
    let hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let api: Api<BrokerGroup> = Api::namespaced(c.clone(), NS);
    let patch = serde_json::json!({"spec": {"replicas": 3, "image": "ferrocket:2", "brokerConfig": {"fileReservedTime": "24"}}});
    api.patch("broker-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    reconcile(&c).await;
    let after = stss.get("broker-a").await.unwrap();
    let spec = after.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("ferrocket:2")
    );
    assert_ne!(
        hash(&before),
        hash(&after),
        "a broker.conf change rolls the pods"
    );
    let conf: ConfigMap = Api::namespaced(c.clone(), NS)
        .get("broker-a-config")
        .await
        .unwrap();
    assert!(conf.data.unwrap()["broker.conf"].contains("fileReservedTime=24\n"));
}

#[tokio::test]
async fn invalid_spec_is_degraded_and_creates_nothing() {
    let c = client((
        nameserver(),
        Some(group(
            "nameServerRef: {name: namesrv}\nreplicas: 3\nbrokerConfig: {brokerRole: SLAVE}\n",
        )),
    ))
    .await;
    let bg = reconcile(&c).await;
    assert_eq!(
        condition(&bg, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    let msg = bg
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("brokerRole"), "{msg}");
    assert!(Api::<StatefulSet>::namespaced(c.clone(), NS)
        .get_opt("broker-a")
        .await
        .unwrap()
        .is_none());
    assert!(Api::<ConfigMap>::namespaced(c.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(Api::<Service>::namespaced(c.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // A reference to a missing NameServer is Degraded too, until it exists.
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: elsewhere}\nreplicas: 2\n")),
    ))
    .await;
    let bg = reconcile(&c).await;
    assert_eq!(condition(&bg, "Degraded").0, "True");
    assert!(Api::<StatefulSet>::namespaced(c.clone(), NS)
        .get_opt("broker-a")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn nameserver_reconcile_creates_objects_and_reports_addresses() {
    let c = client((nameserver(), None)).await;
    let api: Api<NameServer> = Api::namespaced(c.clone(), NS);
    let ns = api.get("namesrv").await.unwrap();
    let context = ctx(&c);
    reconcile_nameserver(Arc::new(ns), Arc::clone(&context))
        .await
        .unwrap();
    assert_eq!(context.metrics.reconciles_of("NameServer"), 1);
    let sts: StatefulSet = Api::namespaced(c.clone(), NS).get("namesrv").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(2));
    assert!(Api::<Service>::namespaced(c.clone(), NS)
        .get_opt("namesrv-hs")
        .await
        .unwrap()
        .is_some());
    let ns = api.get("namesrv").await.unwrap();
    let st = ns.status.unwrap();
    assert_eq!(
        st.addresses,
        [
            "namesrv-0.namesrv-hs.mq.svc:9876",
            "namesrv-1.namesrv-hs.mq.svc:9876"
        ]
    );
    assert_eq!(st.ready_replicas, 0);
}

#[tokio::test]
async fn lease_is_held_by_one_candidate_and_passes_on_release_or_expiry() {
    let c = ClientBuilder::new().build().await.unwrap();
    let api: Api<Lease> = Api::namespaced(c.clone(), "ops");
    let a = LeaseLock::new(
        api.clone(),
        "ferrocket-operator",
        "a",
        Duration::from_secs(1),
    );
    let b = LeaseLock::new(
        api.clone(),
        "ferrocket-operator",
        "b",
        Duration::from_secs(1),
    );
    assert!(
        a.renew_deadline() < a.duration(),
        "a leader stops before its lease can expire"
    );
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b must not take a live lease"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    a.release().await.unwrap();
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "b takes a released lease"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap());
    // b stops renewing: after the lease duration a takes over.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a takes an expired lease"
    );
    let lease = api.get("ferrocket-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("a"));
    assert_eq!(lease.lease_transitions, Some(2));
}

#[test]
fn samples_render_to_every_object() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let text = ["nameserver.yaml", "broker-group.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
        .collect::<String>();
    let out = ferrocket_operator::render::render(&text, &BuildConfig::default()).unwrap();
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "Service",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "PodDisruptionBudget"
        ]
    );
    assert!(out.contains("brokerRole=SYNC_MASTER"));
    let err = ferrocket_operator::render::render("kind: Deployment\n", &BuildConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("not NameServer or BrokerGroup"));
    let err = ferrocket_operator::render::render(
        &text.replace("name: namesrv\nspec", "name: other\nspec"),
        &BuildConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not in the file"), "{err}");
}

type CallLog = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// What RBAC sees of a request: (API group, resource[/subresource], verb).
fn classify(method: &http::Method, uri: &http::Uri) -> (String, String, String) {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.first() {
        Some(&"api") => ("", &segs[2..]),
        _ => (segs[1], &segs[3..]),
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest {
        [r, _name, sub] => format!("{r}/{sub}"),
        [r, ..] => r.to_string(),
        [] => String::new(),
    };
    let named = rest.len() >= 2;
    let watch = uri.query().is_some_and(|q| q.contains("watch=true"));
    let verb = match (method.as_str(), named, watch) {
        ("GET", _, true) => "watch",
        ("GET", true, _) => "get",
        ("GET", false, _) => "list",
        ("POST", ..) => "create",
        ("PATCH", ..) => "patch",
        ("PUT", ..) => "update",
        ("DELETE", ..) => "delete",
        (m, ..) => m,
    };
    (group.to_string(), resource, verb.to_string())
}

fn recording(inner: Client, log: CallLog) -> Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push(classify(req.method(), req.uri()));
            inner.send(req).await
        }
    });
    Client::new(svc, "default")
}

#[tokio::test]
async fn every_api_call_is_covered_by_the_rbac_list() {
    let log: CallLog = Arc::default();
    let c = recording(
        client((
            nameserver(),
            Some(group(
                "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\n",
            )),
        ))
        .await,
        Arc::clone(&log),
    );
    reconcile(&c).await;
    add_pod(&c, "broker-a-0", true).await;
    reconcile(&c).await;
    let ns = Api::<NameServer>::namespaced(c.clone(), NS)
        .get("namesrv")
        .await
        .unwrap();
    reconcile_nameserver(Arc::new(ns), ctx(&c)).await.unwrap();
    let bad = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 0\n")),
    ))
    .await;
    reconcile(&recording(bad, Arc::clone(&log))).await;
    let lock = LeaseLock::new(
        Api::namespaced(c.clone(), "ops"),
        "l",
        "me",
        Duration::from_secs(5),
    );
    lock.try_acquire_or_renew().await.unwrap();
    lock.try_acquire_or_renew().await.unwrap();
    let calls = log.lock().unwrap().clone();
    // The test's own pod writes are not the operator's.
    let calls: Vec<_> = calls
        .into_iter()
        .filter(|(_, r, v)| !(r.starts_with("pods") && v != "list"))
        .collect();
    assert!(calls.len() > 20, "{calls:?}");
    for (g, r, v) in &calls {
        assert!(
            ferrocket_operator::rbac::allowed(g, r, v),
            "{v} {g}/{r} is not in rbac::PERMISSIONS"
        );
    }
    for needle in [
        ("apps", "statefulsets", "patch"),
        ("ferrocket.io", "brokergroups/status", "update"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(
            calls
                .iter()
                .any(|(g, r, v)| (g.as_str(), r.as_str(), v.as_str()) == needle),
            "{needle:?} not seen"
        );
    }
}

/// Broker calls answered from a table, recording what was asked.
#[derive(Default)]
struct FakeAdmin {
    views: std::sync::Mutex<
        std::collections::HashMap<String, ferrocket_operator::failover::BrokerView>,
    >,
    calls: std::sync::Mutex<Vec<String>>,
    refuse_switchover: std::sync::atomic::AtomicBool,
    no_in_sync_report: std::sync::atomic::AtomicBool,
}

impl FakeAdmin {
    fn set(&self, addr: &str, is_master: bool, epoch: i64, offset: u64) {
        self.views.lock().unwrap().insert(
            addr.into(),
            ferrocket_operator::failover::BrokerView {
                is_master,
                epoch,
                known_epoch: epoch,
                confirm_offset: offset,
                max_offset: offset,
                ha_addr: addr.replace(":10911", ":10912"),
                follow_problem: None,
                master_behind: false,
                in_sync: Vec::new(),
                in_sync_leaving: Vec::new(),
                sync_set_epoch: 0,
                namesrv_addr: String::new(),
                raft_members: Vec::new(),
            },
        );
    }
    fn set_raft_members(&self, ids: &[&str]) {
        for v in self.views.lock().unwrap().values_mut() {
            v.raft_members = ids.iter().map(|s| (*s).to_owned()).collect();
        }
    }
    fn set_master(&self, addr: &str, is_master: bool, epoch: i64) {
        if let Some(v) = self.views.lock().unwrap().get_mut(addr) {
            v.is_master = is_master;
            v.epoch = epoch;
        }
    }
    fn set_problem(&self, addr: &str, problem: &str) {
        if let Some(v) = self.views.lock().unwrap().get_mut(addr) {
            v.follow_problem = Some(problem.into());
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    /// The broker at `addr` stops answering (killed, frozen).
    fn gone(&self, addr: &str) {
        self.views.lock().unwrap().remove(addr);
    }
    /// The master at `addr` reports exactly `members` as its in-sync set.
    fn report_in_sync(&self, addr: &str, members: &[&str]) {
        self.no_in_sync_report
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(v) = self.views.lock().unwrap().get_mut(addr) {
            v.in_sync = members.iter().map(|m| (*m).to_string()).collect();
        }
    }
}

impl ferrocket_operator::failover::BrokerAdmin for FakeAdmin {
    /// A Raft group's leader at `leader`: members change in every view; a transfer
    /// makes `n<k>` (at 10.0.0.k) master in the next term.
    fn raft_change<'a>(
        &'a self,
        leader: &'a str,
        change: &'a ferrocket_operator::failover::RaftChange,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>, String>> {
        use ferrocket_operator::failover::RaftChange;
        self.calls
            .lock()
            .unwrap()
            .push(format!("raft {leader} {change:?}"));
        let mut views = self.views.lock().unwrap();
        let mut members = views
            .get(leader)
            .map(|v| v.raft_members.clone())
            .unwrap_or_default();
        match change {
            RaftChange::Add { id, .. } => members.push(id.clone()),
            RaftChange::Remove { id } => members.retain(|m| m != id),
            RaftChange::Transfer { to } => {
                let term = views.get(leader).map_or(0, |v| v.epoch) + 1;
                let to_addr = format!("10.0.0.{}:10911", to.trim_start_matches('n'));
                for (addr, v) in views.iter_mut() {
                    v.is_master = *addr == to_addr;
                    v.epoch = term;
                }
            }
        }
        for v in views.values_mut() {
            v.raft_members = members.clone();
        }
        Box::pin(async move { Ok(members) })
    }
    fn set_namesrv_addr<'a>(
        &'a self,
        addr: &'a str,
        namesrv_addr: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("namesrv {addr} {namesrv_addr}"));
        if let Some(v) = self.views.lock().unwrap().get_mut(addr) {
            v.namesrv_addr = namesrv_addr.to_string();
        }
        Box::pin(async { Ok(()) })
    }
    fn confirm_sync_state_set<'a>(
        &'a self,
        addr: &'a str,
        epoch: i64,
        members: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("confirm {addr} epoch {epoch} members {members:?}"));
        if let Some(v) = self.views.lock().unwrap().get_mut(addr) {
            v.in_sync = members.to_vec();
            v.in_sync_leaving.clear();
            v.sync_set_epoch += 1;
        }
        Box::pin(async { Ok(()) })
    }
    fn switch_over<'a>(
        &'a self,
        from: &'a str,
        from_id: i64,
        to: &'a str,
        followers: &'a [(String, i64)],
        epoch: i64,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>, String>> {
        let f: Vec<&str> = followers.iter().map(|(a, _)| a.as_str()).collect();
        self.calls.lock().unwrap().push(format!(
            "switchover {from} (id {from_id}) -> {to} epoch {epoch} followers {f:?}"
        ));
        if self
            .refuse_switchover
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let e = format!("{to} did not catch up");
            return Box::pin(async move { Err(e) });
        }
        let offset = |a: &str| {
            self.views
                .lock()
                .unwrap()
                .get(a)
                .map_or(0, |v| v.max_offset)
        };
        self.set(to, true, epoch, offset(to));
        self.set(from, false, epoch, offset(from));
        let mut done = vec![from.to_string()];
        for (a, _) in followers {
            self.set(a, false, epoch, offset(a));
            done.push(a.clone());
        }
        Box::pin(async move { Ok(done) })
    }
    fn state(
        &self,
        addr: &str,
    ) -> futures::future::BoxFuture<'_, Result<ferrocket_operator::failover::BrokerView, String>>
    {
        let views = self.views.lock().unwrap();
        let r = views
            .get(addr)
            .cloned()
            .map(|mut v| {
                // A healthy master: every slave of its epoch is in its in-sync set.
                if v.is_master
                    && v.in_sync.is_empty()
                    && !self
                        .no_in_sync_report
                        .load(std::sync::atomic::Ordering::Relaxed)
                {
                    let mut set: Vec<String> = views
                        .iter()
                        .filter(|(a, o)| a.as_str() != addr && !o.is_master && o.epoch == v.epoch)
                        .map(|(a, _)| a.clone())
                        .collect();
                    set.sort();
                    v.in_sync = set;
                }
                v
            })
            .ok_or_else(|| format!("{addr} unreachable"));
        Box::pin(async move { r })
    }
    fn promote(
        &self,
        addr: &str,
        epoch: i64,
    ) -> futures::future::BoxFuture<'_, Result<ferrocket_operator::failover::BrokerView, String>>
    {
        self.calls
            .lock()
            .unwrap()
            .push(format!("promote {addr} {epoch}"));
        let offset = self
            .views
            .lock()
            .unwrap()
            .get(addr)
            .map_or(0, |v| v.max_offset);
        self.set(addr, true, epoch, offset);
        let r = self
            .views
            .lock()
            .unwrap()
            .get(addr)
            .cloned()
            .ok_or_else(|| "gone".to_string());
        Box::pin(async move { r })
    }
    fn follow(
        &self,
        addr: &str,
        master: &str,
        master_ha: &str,
        broker_id: i64,
        epoch: i64,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        self.calls.lock().unwrap().push(format!(
            "follow {addr} -> {master} ({master_ha}) id {broker_id} epoch {epoch}"
        ));
        let offset = self
            .views
            .lock()
            .unwrap()
            .get(addr)
            .map_or(0, |v| v.max_offset);
        self.set(addr, false, epoch, offset);
        Box::pin(async move { Ok(()) })
    }
}

async fn set_pod(client: &Client, name: &str, ready: bool, since_secs_ago: i64) {
    add_pod(client, name, ready).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ordinal = name.rsplit('-').next().unwrap();
    let since = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(since_secs_ago);
    let status = serde_json::json!({"status": {
        "podIP": format!("10.0.0.{ordinal}"),
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": since.to_string()}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn reconcile_with(client: &Client, admin: &Arc<FakeAdmin>) -> BrokerGroup {
    let api: Api<BrokerGroup> = Api::namespaced(client.clone(), NS);
    let bg = api.get("broker-a").await.unwrap();
    let context = Arc::new(
        Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            BuildConfig::default(),
            "test",
        )
        .with_admin(Arc::clone(admin) as Arc<dyn ferrocket_operator::failover::BrokerAdmin>),
    );
    reconcile_broker_group(Arc::new(bg), context).await.unwrap();
    api.get("broker-a").await.unwrap()
}

#[tokio::test]
async fn master_unready_past_grace_fails_over_to_the_best_slave_and_the_old_master_converges() {
    let c = client((nameserver(), Some(group("nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\nfailover: {unreadyGraceSeconds: 10}\n")))).await;
    let admin = Arc::new(FakeAdmin::default());
    admin.set("10.0.0.0:10911", true, 1, 1000);
    admin.set("10.0.0.1:10911", false, 1, 400);
    admin.set("10.0.0.2:10911", false, 1, 900);
    reconcile_with(&c, &admin).await;
    for p in ["broker-a-0", "broker-a-1", "broker-a-2"] {
        set_pod(&c, p, true, 100).await;
    }
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(condition(&bg, "Available").0, "True");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    let offsets: Vec<i64> = bg
        .status
        .as_ref()
        .unwrap()
        .brokers
        .iter()
        .map(|b| b.max_offset)
        .collect();
    assert_eq!(
        offsets,
        [1000, 400, 900],
        "max offsets come from the brokers"
    );

    // Unready for 3 s of a 10 s grace: nothing changes.
    set_pod(&c, "broker-a-0", false, 3).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        bg.status.as_ref().unwrap().master.as_deref(),
        Some("broker-a-0")
    );
    assert!(admin.calls().is_empty());

    // Past the grace, and its broker no longer answers the operator's probe: the slave
    // with the highest confirmed offset (broker-a-2) is promoted.
    set_pod(&c, "broker-a-0", false, 30).await;
    admin.gone("10.0.0.0:10911");
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.clone().unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-2"), 2));
    assert!(st.last_failover_time.is_some());
    assert_eq!(
        admin.calls(),
        [
            "promote 10.0.0.2:10911 2".to_string(),
            "follow 10.0.0.1:10911 -> 10.0.0.2:10911 (10.0.0.2:10912) id 2 epoch 2".to_string(),
        ]
    );
    let roles: ConfigMap = Api::namespaced(c.clone(), NS)
        .get("broker-a-roles")
        .await
        .unwrap();
    assert_eq!(roles.data.unwrap()["roles"], "master=broker-a-2\nepoch=2\n");
    let events: Api<Event> = Api::namespaced(c.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"FailedOver".to_string()), "{reasons:?}");

    // Next look: the new master is ready, the group is Available again.
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        condition(&bg, "Available"),
        ("True".into(), "MasterReady".into())
    );
    let roles_now: Vec<(String, String, i64)> = bg
        .status
        .unwrap()
        .brokers
        .iter()
        .map(|b| (b.pod.clone(), b.role.clone(), b.broker_id))
        .collect();
    assert_eq!(roles_now[2], ("broker-a-2".into(), "master".into(), 0));

    // The old master comes back claiming master at epoch 1 (a store from before the
    // role record): the recorded master is re-asserted at a new epoch (3) and every
    // other broker, the old master included, follows it.
    admin.set("10.0.0.0:10911", true, 1, 1000);
    set_pod(&c, "broker-a-0", true, 0).await;
    reconcile_with(&c, &admin).await;
    let calls = admin.calls();
    assert_eq!(
        calls[calls.len() - 3..],
        [
            "promote 10.0.0.2:10911 3".to_string(),
            "follow 10.0.0.0:10911 -> 10.0.0.2:10911 (10.0.0.2:10912) id 1 epoch 3".to_string(),
            "follow 10.0.0.1:10911 -> 10.0.0.2:10911 (10.0.0.2:10912) id 2 epoch 3".to_string(),
        ]
    );
    let n = admin.calls().len();
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(admin.calls().len(), n, "converged: no more calls");
    assert_eq!(bg.status.unwrap().epoch, 3);
}

#[tokio::test]
async fn no_ready_slave_is_degraded_and_changes_nothing() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 3\n")),
    ))
    .await;
    let admin = Arc::new(FakeAdmin::default());
    admin.set("10.0.0.1:10911", false, 1, 400);
    reconcile_with(&c, &admin).await;
    set_pod(&c, "broker-a-0", false, 60).await;
    set_pod(&c, "broker-a-1", false, 60).await;
    set_pod(&c, "broker-a-2", true, 60).await; // ready, but its broker does not answer
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        condition(&bg, "Degraded"),
        ("True".into(), "NoReadySlave".into())
    );
    let st = bg.status.unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-0"), 1));
    assert!(admin.calls().is_empty());
}

#[tokio::test]
async fn a_stale_view_of_the_group_cannot_record_a_failover() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 2\n")),
    ))
    .await;
    let admin = Arc::new(FakeAdmin::default());
    admin.set("10.0.0.1:10911", false, 1, 400);
    reconcile_with(&c, &admin).await;
    set_pod(&c, "broker-a-0", false, 60).await;
    set_pod(&c, "broker-a-1", true, 60).await;
    let api: Api<BrokerGroup> = Api::namespaced(c.clone(), NS);
    let stale = api.get("broker-a").await.unwrap();
    // Someone else writes the group in between (another operator replica, a user).
    let patch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    api.patch("broker-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let context = Arc::new(
        Context::new(
            c.clone(),
            Arc::new(Metrics::default()),
            BuildConfig::default(),
            "test",
        )
        .with_admin(Arc::clone(&admin) as Arc<dyn ferrocket_operator::failover::BrokerAdmin>),
    );
    let err = reconcile_broker_group(Arc::new(stale), context)
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "conflict", "{err}");
    assert!(
        admin.calls().is_empty(),
        "no broker is promoted without the record"
    );
    assert_eq!(api.get("broker-a").await.unwrap().status.unwrap().epoch, 1);
}
/// The whole `ferrocket-operator run` (lease, watches, controllers, shutdown) over the
/// in-memory API.
#[tokio::test]
async fn run_takes_the_lease_reconciles_from_watches_and_releases_on_shutdown() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 2\n")),
    ))
    .await;
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = ferrocket_operator::run::RunConfig {
        watch_namespaces: vec![NS.into()],
        metrics_addr,
        leader_election: true,
        lease_name: "ferrocket-operator".into(),
        lease_namespace: NS.into(),
        identity: "replica-a".into(),
        lease_duration: Duration::from_secs(5),
        default_image: "ferrocket:test".into(),
        control_key: None,
        broker_tls: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(ferrocket_operator::run::run_with_client(
        c.clone(),
        cfg,
        async move {
            let _ = stopped.await;
        },
    ));
    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stss.get_opt("broker-a").await.unwrap().is_none()
        || stss.get_opt("namesrv").await.unwrap().is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the controllers never created the StatefulSets"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease: Lease = Api::namespaced(c.clone(), NS)
        .get("ferrocket-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
    let bg = Api::<BrokerGroup>::namespaced(c.clone(), NS)
        .get("broker-a")
        .await
        .unwrap();
    assert_eq!(bg.status.unwrap().master.as_deref(), Some("broker-a-0"));
    // The metrics endpoint answers with the reconciles counted and the leader gauge set.
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
            .await
            .unwrap();
        out
    };
    let text = get("/metrics").await;
    assert!(
        text.contains("ferrocket_operator_reconciles_total{kind=\"BrokerGroup\"}"),
        "{text}"
    );
    assert!(text.contains("ferrocket_operator_leader 1"), "{text}");
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("shuts down")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    // Released on a clean shutdown, so a standby takes over at once.
    let lease: Lease = Api::namespaced(c.clone(), NS)
        .get("ferrocket-operator")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

async fn reasons(c: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(c.clone(), NS);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn patch_spec(c: &Client, spec: serde_json::Value) {
    let api: Api<BrokerGroup> = Api::namespaced(c.clone(), NS);
    api.patch(
        "broker-a",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

/// A group from `yaml` whose three brokers report `views` (is master, epoch, offset),
/// reconciled once, with every pod then ready.
async fn three_ready(yaml: &str, views: [(bool, i64, u64); 3]) -> (Client, Arc<FakeAdmin>) {
    let c = client((nameserver(), Some(group(yaml)))).await;
    let admin = Arc::new(FakeAdmin::default());
    for (i, (m, e, o)) in views.into_iter().enumerate() {
        admin.set(&format!("10.0.0.{i}:10911"), m, e, o);
    }
    reconcile_with(&c, &admin).await;
    for p in ["broker-a-0", "broker-a-1", "broker-a-2"] {
        set_pod(&c, p, true, 100).await;
    }
    (c, admin)
}

/// A SyncMaster group of three whose brokers all hold offset 1000 at epoch 1, every pod
/// ready.
async fn in_step_sync_three() -> (Client, Arc<FakeAdmin>) {
    three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 1000)],
    )
    .await
}

#[tokio::test]
async fn preferred_master_moves_the_master_with_a_switchover() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 990)],
    )
    .await;
    reconcile_with(&c, &admin).await;
    assert!(admin.calls().is_empty());

    // A pod outside the group is refused with a clear reason.
    patch_spec(&c, serde_json::json!({"preferredMaster": "broker-a-7"})).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(condition(&bg, "Degraded").0, "True");
    assert!(admin.calls().is_empty());

    patch_spec(&c, serde_json::json!({"preferredMaster": "broker-a-1"})).await;
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.clone().unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-1"), 2));
    assert_eq!(
        admin.calls(),
        [
            r#"switchover 10.0.0.0:10911 (id 1) -> 10.0.0.1:10911 epoch 2 followers ["10.0.0.2:10911"]"#
        ]
    );
    let roles: ConfigMap = Api::namespaced(c.clone(), NS)
        .get("broker-a-roles")
        .await
        .unwrap();
    assert_eq!(roles.data.unwrap()["roles"], "master=broker-a-1\nepoch=2\n");
    assert!(reasons(&c).await.contains(&"SwitchedOver".to_string()));
    // Converged: the preferred pod is master; nothing more is asked.
    settled(&c, &admin, 1).await;
}

/// Reconciles once more: no broker call beyond the `calls` made so far, master ready.
async fn settled(c: &Client, admin: &Arc<FakeAdmin>, calls: usize) {
    let bg = reconcile_with(c, admin).await;
    assert_eq!(admin.calls().len(), calls, "{:?}", admin.calls());
    assert_eq!(
        condition(&bg, "Available"),
        ("True".into(), "MasterReady".into())
    );
}

#[tokio::test]
async fn a_refused_switchover_keeps_the_old_master_at_a_newer_epoch_and_waits() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 1000)],
    )
    .await;
    admin
        .refuse_switchover
        .store(true, std::sync::atomic::Ordering::Relaxed);
    patch_spec(&c, serde_json::json!({"preferredMaster": "broker-a-2"})).await;
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.clone().unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-0"), 3));
    assert!(reasons(&c).await.contains(&"SwitchoverFailed".to_string()));
    // The next look re-asserts the old master at epoch 3 everywhere, and does not try
    // again within the cooldown.
    reconcile_with(&c, &admin).await;
    let calls = admin.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    // The correction's epoch is above the record (3) and every report.
    assert_eq!(calls[1], "promote 10.0.0.0:10911 4");
    assert!(calls[2..]
        .iter()
        .all(|c| c.starts_with("follow ") && c.ends_with("epoch 4")));
    reconcile_with(&c, &admin).await;
    assert_eq!(admin.calls().len(), 4, "{:?}", admin.calls());
}

#[tokio::test]
async fn a_scale_down_blocked_by_the_master_switches_it_to_a_kept_pod() {
    let c = client((
        nameserver(),
        Some(group("nameServerRef: {name: namesrv}\nreplicas: 3\n")),
    ))
    .await;
    let admin = Arc::new(FakeAdmin::default());
    reconcile_with(&c, &admin).await;
    // After an earlier failover, broker-a-2 is master at epoch 2.
    let api: Api<BrokerGroup> = Api::namespaced(c.clone(), NS);
    let long_ago = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(600))
    .to_string();
    api.patch_status(
        "broker-a",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"status": {"master": "broker-a-2", "epoch": 2, "lastFailoverTime": long_ago}})),
    )
    .await
    .unwrap();
    admin.set("10.0.0.0:10911", false, 2, 800);
    admin.set("10.0.0.1:10911", false, 2, 800);
    admin.set("10.0.0.2:10911", true, 2, 800);
    for p in ["broker-a-0", "broker-a-1", "broker-a-2"] {
        set_pod(&c, p, true, 100).await;
    }
    reconcile_with(&c, &admin).await;
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());

    patch_spec(&c, serde_json::json!({"replicas": 2})).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        admin.calls(),
        [
            r#"switchover 10.0.0.2:10911 (id 3) -> 10.0.0.0:10911 epoch 3 followers ["10.0.0.1:10911"]"#
        ]
    );
    assert_eq!(bg.status.unwrap().master.as_deref(), Some("broker-a-0"));
    // With the master inside the smaller group, the StatefulSet shrinks.
    reconcile_with(&c, &admin).await;
    let sts: StatefulSet = Api::namespaced(c.clone(), NS)
        .get("broker-a")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(2));
}

#[tokio::test]
async fn a_slave_that_cannot_follow_degrades_the_group_with_its_reason() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\n",
        [(true, 1, 9000), (false, 1, 9000), (false, 1, 100)],
    )
    .await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(condition(&bg, "Degraded").0, "False");
    admin.set_problem(
        "10.0.0.2:10911",
        "our CommitLog ends at 100, before the master's oldest file at 4096",
    );
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        condition(&bg, "Degraded"),
        ("True".into(), "SlaveCannotFollow".into())
    );
    let msg = bg
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(
        msg.starts_with("broker-a-2: our CommitLog ends at 100"),
        "{msg}"
    );
    let warned = |r: Vec<String>| r.iter().filter(|x| *x == "SlaveCannotFollow").count();
    assert_eq!(warned(reasons(&c).await), 1);
    reconcile_with(&c, &admin).await;
    assert_eq!(
        warned(reasons(&c).await),
        1,
        "one Event, not one per reconcile"
    );
    // Nothing is changed on the brokers for it: emptying a store is the user's call.
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

/// Issue 13: a lost status (restored from a backup, recreated by hand) falls back to
/// "broker-a-0 at epoch 1". The operator takes the roles from the brokers instead (a
/// broker reports master at epoch 5), never writes the roles ConfigMap back, and the
/// next role change uses an epoch above every report.
#[tokio::test]
async fn a_lost_status_is_rebuilt_from_the_brokers_and_never_reuses_an_epoch() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\n",
        [(false, 5, 1000), (true, 5, 1000), (false, 5, 1000)],
    )
    .await;
    let api: Api<BrokerGroup> = Api::namespaced(c.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    // The roles ConfigMap the kubelet mounts says broker-a-1 at epoch 5; the status is lost.
    let mut cm = cms.get("broker-a-roles").await.unwrap();
    cm.data = Some(std::collections::BTreeMap::from([(
        "roles".to_string(),
        "master=broker-a-1\nepoch=5\n".to_string(),
    )]));
    cms.replace("broker-a-roles", &PostParams::default(), &cm)
        .await
        .unwrap();
    let mut bg = api.get("broker-a").await.unwrap();
    bg.status = Some(Default::default());
    api.replace_status("broker-a", &PostParams::default(), &bg)
        .await
        .unwrap();
    // First look: the initial roles go in, the ConfigMap is left alone (it is newer),
    // then broker-a-1's report (master, epoch 5) is adopted.
    reconcile_with(&c, &admin).await;
    let roles = cms.get("broker-a-roles").await.unwrap();
    assert_eq!(roles.data.unwrap()["roles"], "master=broker-a-1\nepoch=5\n");
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-1"), 5));
    assert!(
        admin
            .calls()
            .iter()
            .all(|c| !c.contains("epoch 2") && !c.ends_with(" 2")),
        "no broker was told to move back: {:?}",
        admin.calls()
    );
    // A failover now uses epoch 6.
    set_pod(&c, "broker-a-1", false, 60).await;
    admin.gone("10.0.0.1:10911");
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.unwrap();
    assert_eq!(st.epoch, 6, "{:?}", admin.calls());
    assert!(admin
        .calls()
        .iter()
        .any(|c| c.starts_with("promote ") && c.ends_with(" 6")));
}

/// Issue 13: the operator records the master's in-sync set; a member that stopped
/// catching up leaves only after the smaller set is recorded (status first, then the
/// master is told); a failover promotes only a recorded member, even over a slave with
/// more bytes; with no member ready the group waits (`NoInSyncReplica`) unless
/// `allowUnclean`.
#[tokio::test]
async fn failover_promotes_only_a_recorded_in_sync_member() {
    let (c, admin) = in_step_sync_three().await;
    admin.report_in_sync("10.0.0.0:10911", &["10.0.0.1:10911", "10.0.0.2:10911"]);
    admin
        .views
        .lock()
        .unwrap()
        .get_mut("10.0.0.0:10911")
        .unwrap()
        .sync_set_epoch = 4;
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.unwrap();
    assert_eq!(
        (st.sync_state_set.clone(), st.sync_state_set_epoch),
        (
            Some(vec!["broker-a-1".to_string(), "broker-a-2".to_string()]),
            4
        )
    );
    // broker-a-1 stops catching up: the smaller set is recorded, then confirmed.
    admin
        .views
        .lock()
        .unwrap()
        .get_mut("10.0.0.0:10911")
        .unwrap()
        .in_sync_leaving = vec!["10.0.0.1:10911".into()];
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        bg.status.unwrap().sync_state_set,
        Some(vec!["broker-a-2".to_string()])
    );
    assert_eq!(
        admin.calls().last().unwrap(),
        r#"confirm 10.0.0.0:10911 epoch 4 members ["10.0.0.2:10911"]"#
    );
    // broker-a-1 got further meanwhile (more bytes than broker-a-2), then the master dies.
    admin.set("10.0.0.1:10911", false, 1, 5000);
    set_pod(&c, "broker-a-0", false, 60).await;
    admin.gone("10.0.0.0:10911");
    // The member is down too: nobody safe to promote.
    set_pod(&c, "broker-a-2", false, 60).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        condition(&bg, "Degraded"),
        ("True".into(), "NoInSyncReplica".into())
    );
    assert!(!admin.calls().iter().any(|c| c.starts_with("promote")));
    // The member is back: it is promoted, not the slave with more bytes.
    set_pod(&c, "broker-a-2", true, 60).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(bg.status.unwrap().master.as_deref(), Some("broker-a-2"));
    assert!(admin
        .calls()
        .iter()
        .any(|c| c == "promote 10.0.0.2:10911 2"));
}

#[tokio::test]
async fn allow_unclean_promotes_outside_the_set_and_says_so() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: SyncMaster\nfailover: {allowUnclean: true}\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 900)],
    )
    .await;
    admin.report_in_sync("10.0.0.0:10911", &["10.0.0.1:10911"]);
    reconcile_with(&c, &admin).await;
    set_pod(&c, "broker-a-0", false, 60).await;
    set_pod(&c, "broker-a-1", false, 60).await;
    admin.gone("10.0.0.0:10911");
    admin.gone("10.0.0.1:10911");
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(bg.status.unwrap().master.as_deref(), Some("broker-a-2"));
    assert!(reasons(&c).await.contains(&"UncleanFailover".to_string()));
}

/// Issue 13: a larger `storage.size` grows every PVC and recreates the StatefulSet
/// (orphaning the pods) with the new claim template; `Progressing` says
/// `ExpandingStorage` until the PVCs report the new capacity. A smaller size is refused
/// (`StorageNotExpandable`) and nothing changes; failover keeps working meanwhile.
#[tokio::test]
async fn a_larger_storage_size_grows_the_pvcs_and_recreates_the_statefulset() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\nstorage: {size: 20Gi}\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 1000)],
    )
    .await;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(c.clone(), NS);
    for i in 0..3 {
        let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim =
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": format!("store-broker-a-{i}"),
                    "namespace": NS,
                    "labels": ferrocket_operator::builders::selector_labels("broker-a", "broker"),
                },
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
                "status": {"capacity": {"storage": "20Gi"}},
            }))
            .unwrap();
        pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    }
    let sts_api: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let size = |sts: &StatefulSet| ferrocket_operator::builders::claim_size(sts).unwrap();
    assert_eq!(size(&sts_api.get("broker-a").await.unwrap()), "20Gi");

    patch_spec(&c, serde_json::json!({"storage": {"size": "30Gi"}})).await;
    let bg = reconcile_with(&c, &admin).await;
    for i in 0..3 {
        let p = pvcs.get(&format!("store-broker-a-{i}")).await.unwrap();
        let req = p.spec.unwrap().resources.unwrap().requests.unwrap();
        assert_eq!(req["storage"].0, "30Gi");
    }
    assert_eq!(size(&sts_api.get("broker-a").await.unwrap()), "30Gi");
    assert_eq!(
        condition(&bg, "Progressing"),
        ("True".into(), "ExpandingStorage".into())
    );
    assert!(reasons(&c).await.contains(&"StorageExpanding".to_string()));

    // Shrinking is refused with a reason; the StatefulSet keeps its claim size.
    patch_spec(&c, serde_json::json!({"storage": {"size": "10Gi"}})).await;
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        condition(&bg, "Degraded"),
        ("True".into(), "StorageNotExpandable".into())
    );
    assert_eq!(size(&sts_api.get("broker-a").await.unwrap()), "30Gi");
    // The failover decision still runs: the master dies, a slave is promoted.
    set_pod(&c, "broker-a-0", false, 60).await;
    admin.gone("10.0.0.0:10911");
    let bg = reconcile_with(&c, &admin).await;
    assert_ne!(bg.status.unwrap().master.as_deref(), Some("broker-a-0"));
}

/// Issue 13: a name-server change reaches running brokers through UPDATE_BROKER_CONFIG
/// (they report `namesrvAddr`), without a new pod template.
#[tokio::test]
async fn a_name_server_change_is_pushed_to_running_brokers() {
    let (c, admin) = three_ready(
        "nameServerAddress: ns-a:9876\nreplicas: 3\n",
        [(true, 1, 1000), (false, 1, 1000), (false, 1, 1000)],
    )
    .await;
    for v in admin.views.lock().unwrap().values_mut() {
        v.namesrv_addr = "ns-a:9876".into();
    }
    reconcile_with(&c, &admin).await;
    assert!(admin.calls().iter().all(|c| !c.starts_with("namesrv")));
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let template = |s: StatefulSet| s.spec.unwrap().template.metadata.unwrap().annotations;
    let before = template(sts.get("broker-a").await.unwrap());
    patch_spec(
        &c,
        serde_json::json!({"nameServerAddress": "ns-a:9876;ns-b:9876"}),
    )
    .await;
    reconcile_with(&c, &admin).await;
    let pushed: Vec<String> = admin
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("namesrv"))
        .collect();
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    assert!(pushed.iter().all(|c| c.ends_with(" ns-a:9876;ns-b:9876")));
    assert_eq!(
        template(sts.get("broker-a").await.unwrap()),
        before,
        "no roll"
    );
    // Converged: nothing more is pushed.
    reconcile_with(&c, &admin).await;
    assert_eq!(
        admin
            .calls()
            .iter()
            .filter(|c| c.starts_with("namesrv"))
            .count(),
        3
    );
}

/// What the StatefulSet controller does: reports `update` as its update revision for
/// the current spec.
async fn set_update_revision(c: &Client, update: &str) {
    let api: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let sts = api.get("broker-a").await.unwrap();
    let status = serde_json::json!({"status": {
        "observedGeneration": sts.metadata.generation,
        "replicas": 3,
        "updateRevision": update,
    }});
    api.patch_status("broker-a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// A pod (re)created by the StatefulSet controller from `revision`, ready.
async fn pod_from(c: &Client, name: &str, revision: &str) {
    set_pod(c, name, true, 100).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let patch = serde_json::json!({"metadata": {"labels": {"controller-revision-hash": revision}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn pod_names(c: &Client) -> Vec<String> {
    pod_names_with(c, "").await
}

/// The pods matching a label selector (`""`: all), sorted.
async fn pod_names_with(c: &Client, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// Issue 13 §1.7: a new pod template rolls slaves first (one at a time, only while every
/// pod is ready), then switches the master over to an updated in-sync slave, then
/// replaces the old master — never the master first.
#[tokio::test]
async fn a_new_template_replaces_slaves_first_then_moves_the_master_then_restarts_it() {
    let (c, admin) = in_step_sync_three().await;
    let sts: StatefulSet = Api::namespaced(c.clone(), NS)
        .get("broker-a")
        .await
        .unwrap();
    assert_eq!(
        sts.spec.unwrap().update_strategy.unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    for p in ["broker-a-0", "broker-a-1", "broker-a-2"] {
        pod_from(&c, p, "r1").await;
    }
    set_update_revision(&c, "r1").await;
    reconcile_with(&c, &admin).await;
    assert_eq!(
        pod_names(&c).await.len(),
        3,
        "nothing outdated, nothing deleted"
    );

    // The image changes: the StatefulSet controller reports revision r2.
    set_update_revision(&c, "r2").await;
    reconcile_with(&c, &admin).await;
    assert_eq!(pod_names(&c).await, ["broker-a-0", "broker-a-1"]);
    assert!(reasons(&c).await.contains(&"UpgradingPod".to_string()));
    // While it is away nothing else is replaced.
    reconcile_with(&c, &admin).await;
    assert_eq!(pod_names(&c).await, ["broker-a-0", "broker-a-1"]);
    pod_from(&c, "broker-a-2", "r2").await;
    reconcile_with(&c, &admin).await;
    assert_eq!(pod_names(&c).await, ["broker-a-0", "broker-a-2"]);
    pod_from(&c, "broker-a-1", "r2").await;
    // Every slave is updated: the master moves to one of them with a switchover.
    let bg = reconcile_with(&c, &admin).await;
    assert_eq!(
        pod_names(&c).await.len(),
        3,
        "the master is not deleted as master"
    );
    assert_eq!(
        admin.calls(),
        [
            r#"switchover 10.0.0.0:10911 (id 1) -> 10.0.0.1:10911 epoch 2 followers ["10.0.0.2:10911"]"#
        ]
    );
    assert_eq!(bg.status.unwrap().master.as_deref(), Some("broker-a-1"));
    // Then the old master, a slave now, is replaced.
    reconcile_with(&c, &admin).await;
    assert_eq!(pod_names(&c).await, ["broker-a-1", "broker-a-2"]);
    pod_from(&c, "broker-a-0", "r2").await;
    settled(&c, &admin, 1).await;
    assert_eq!(pod_names(&c).await.len(), 3);
}

/// Issue 13 §1.7: the slaves of a SyncMaster group's in-sync set carry a label that the
/// `<group>-in-sync` budget (minAvailable 1) selects, so a drain waits rather than evict
/// the last one; a slave that left the set loses the label.
#[tokio::test]
async fn the_in_sync_slaves_are_labelled_for_their_disruption_budget() {
    let (c, admin) = in_step_sync_three().await;
    reconcile_with(&c, &admin).await;
    let pdb: PodDisruptionBudget = Api::namespaced(c.clone(), NS)
        .get("broker-a-in-sync")
        .await
        .unwrap();
    let spec = pdb.spec.unwrap();
    assert_eq!(
        spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["ferrocket.io/in-sync"],
        "true"
    );
    let labelled = |c: Client| async move { pod_names_with(&c, "ferrocket.io/in-sync=true").await };
    assert_eq!(labelled(c.clone()).await, ["broker-a-1", "broker-a-2"]);
    admin.report_in_sync("10.0.0.0:10911", &["10.0.0.1:10911"]);
    reconcile_with(&c, &admin).await;
    assert_eq!(labelled(c.clone()).await, ["broker-a-1"]);
}

/// `replication: Raft`: the group elects its own leader. The operator never promotes or
/// re-points anyone (even with the recorded master unready past the grace); the status
/// follows the member that reports leading the highest term; a replica change (a
/// membership change) is refused and the StatefulSet keeps its size.
#[tokio::test]
async fn a_raft_group_reports_the_elected_leader_and_changes_membership_with_replicas() {
    let (c, admin) = three_ready(
        "nameServerRef: {name: namesrv}\nreplicas: 3\nreplication: Raft\nfailover: {unreadyGraceSeconds: 1}\n",
        [(false, 2, 1000), (true, 2, 1000), (false, 2, 1000)],
    )
    .await;
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.clone().unwrap();
    assert_eq!(st.master.as_deref(), Some("broker-a-1"));
    assert_eq!(st.epoch, 2);
    assert_eq!(condition(&bg, "Available").0, "True");
    let roles: Vec<(String, i64)> = st
        .brokers
        .iter()
        .map(|b| (b.role.clone(), b.broker_id))
        .collect();
    assert_eq!(
        roles,
        [
            ("slave".into(), 1),
            ("master".into(), 0),
            ("slave".into(), 3)
        ]
    );
    let conf: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let text = conf.get("broker-a-config").await.unwrap().data.unwrap()["broker.conf"].clone();
    assert!(text.contains("enableDLegerCommitLog=true"), "{text}");
    assert!(text.contains("dLegerPeers=n0-broker-a-0."), "{text}");
    assert!(reasons(&c).await.contains(&"LeaderElected".to_string()));

    // The leader dies and the other two elect n2 at term 3: reported, nothing sent.
    set_pod(&c, "broker-a-1", false, 100).await;
    admin.set("10.0.0.1:10911", false, 2, 1000);
    admin.set("10.0.0.2:10911", true, 3, 1000);
    let bg = reconcile_with(&c, &admin).await;
    let st = bg.status.clone().unwrap();
    assert_eq!((st.master.as_deref(), st.epoch), (Some("broker-a-2"), 3));
    assert!(
        admin.calls.lock().unwrap().is_empty(),
        "the operator changed roles in a Raft group: {:?}",
        admin.calls.lock().unwrap()
    );

    // Five replicas: the StatefulSet grows, then each new running member is added
    // through the leader, one per reconcile, with the peer address of its pod.
    admin.set_raft_members(&["n0", "n1", "n2"]);
    patch_spec(&c, serde_json::json!({"replicas": 5})).await;
    reconcile_with(&c, &admin).await;
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
    let size = || async { sts.get("broker-a").await.unwrap().spec.unwrap().replicas };
    assert_eq!(size().await, Some(5));
    assert!(admin.calls.lock().unwrap().is_empty(), "no pod to add yet");
    let text = conf.get("broker-a-config").await.unwrap().data.unwrap()["broker.conf"].clone();
    assert!(text.contains(";n4-broker-a-4.broker-a-hs."), "{text}");
    for i in [3, 4] {
        admin.set(&format!("10.0.0.{i}:10911"), false, 3, 1000);
        set_pod(&c, &format!("broker-a-{i}"), true, 100).await;
    }
    reconcile_with(&c, &admin).await;
    reconcile_with(&c, &admin).await;
    reconcile_with(&c, &admin).await;
    let calls = admin.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains(r#"Add { id: "n3", peer: "broker-a-3.broker-a-hs."#),
        "{calls:?}"
    );
    assert!(
        calls[0].starts_with("raft 10.0.0.2:10911 "),
        "sent to the leader: {calls:?}"
    );
    assert!(calls[1].contains(r#"Add { id: "n4""#), "{calls:?}");
    assert!(reasons(&c).await.contains(&"MemberAdded".to_string()));

    // Back to three while n4 leads: leadership moves to a staying member first, then
    // n4 and n3 leave; only then does the StatefulSet shrink.
    admin.calls.lock().unwrap().clear();
    for i in 0..5 {
        admin.set_master(&format!("10.0.0.{i}:10911"), i == 4, 4);
    }
    patch_spec(&c, serde_json::json!({"replicas": 3})).await;
    reconcile_with(&c, &admin).await;
    assert_eq!(
        size().await,
        Some(5),
        "members still in the group keep their pods"
    );
    reconcile_with(&c, &admin).await;
    assert_eq!(size().await, Some(5));
    reconcile_with(&c, &admin).await;
    reconcile_with(&c, &admin).await;
    let calls = admin.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].contains(r#"Transfer { to: "n0" }"#), "{calls:?}");
    assert!(calls[1].contains(r#"Remove { id: "n4" }"#), "{calls:?}");
    assert!(calls[2].contains(r#"Remove { id: "n3" }"#), "{calls:?}");
    assert_eq!(size().await, Some(3), "shrunk once the membership had");
    let text = conf.get("broker-a-config").await.unwrap().data.unwrap()["broker.conf"].clone();
    assert!(!text.contains("n3-"), "{text}");
}
