//! Pure builders: from a `NameServer` or `BrokerGroup` spec to the objects the operator
//! applies. No API calls here; the reconciler and `ferrocket-operator render` share them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{
    BrokerGroup, BrokerGroupSpec, FlushDiskType, NameServer, Placement, Replication, ServiceType,
};

/// The field manager every server-side apply uses.
pub const FIELD_MANAGER: &str = "ferrocket-operator";
/// Broker remoting port (`listenPort`).
pub const BROKER_PORT: i32 = 10911;
/// Broker HA port (`haListenPort` = listenPort + 1).
pub const HA_PORT: i32 = BROKER_PORT + 1;
/// Broker VIP channel (listenPort − 2).
pub const VIP_PORT: i32 = BROKER_PORT - 2;
/// The DLedger (Raft) peer port of `replication: Raft` groups (RocketMQ's usual
/// `dLegerPeers` port).
pub const DLEDGER_PORT: i32 = 40911;
/// Name server metrics / probe port.
pub const NAMESRV_METRICS_PORT: i32 = 9100;
/// Where the store PVC is mounted.
pub const STORE_MOUNT: &str = "/data";
/// Where `broker.conf` is mounted.
pub const CONFIG_MOUNT: &str = "/etc/ferrocket";
/// Where the roles file is mounted.
pub const ROLES_MOUNT: &str = "/etc/ferrocket-roles";
/// Annotation carrying a hash of the rendered configuration (a change rolls the pods).
pub const CONFIG_HASH_ANNOTATION: &str = "ferrocket.io/config-hash";
/// `masterLeaseMs` rendered for groups of 3 or more brokers.
pub const MASTER_LEASE_MS: u64 = 5000;
/// The label the operator puts on the slaves of a SyncMaster group's recorded in-sync
/// set; the group's `<group>-in-sync` PodDisruptionBudget keeps one of them running.
pub const IN_SYNC_LABEL: &str = "ferrocket.io/in-sync";
/// UID and GID the containers run as (the image's non-root user).
pub const RUN_AS: i64 = 10001;
/// `broker.conf` keys the operator owns; `spec.brokerConfig` may not set them.
pub const RESERVED_BROKER_KEYS: &[&str] = &[
    "brokerClusterName",
    "brokerName",
    "brokerId",
    "brokerRole",
    "namesrvAddr",
    "listenPort",
    "haListenPort",
    "storePathRootDir",
    "storePathCommitLog",
    "brokerIP1",
    "metricsPort",
    "flushDiskType",
    "enableDLegerCommitLog",
    "dLegerGroup",
    "dLegerPeers",
    "dLegerSelfId",
    "controlSecretFile",
    "controlAccessKey",
    "haRequireSignature",
    "syncStateSetByController",
    "aclEnable",
    "aclFile",
    "tls.server.mode",
    "tlsMode",
    "tls.server.certPath",
    "tls.server.keyPath",
    "tls.client.trustCertPath",
    "tls.enable",
    "tlsEnable",
    "namesrvAccessKey",
    "namesrvSecretFile",
];

/// Operator-wide settings the builders need.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Image used when a resource names none.
    pub default_image: String,
    /// The operator's control key (`--control-secret-file`): each group gets a Secret
    /// `<group>-control` with a key derived from it, its brokers require role and
    /// permission changes signed with that key, and the operator signs with it.
    pub control_key: Option<ControlKey>,
    /// Whether a Raft group's members get `haRequireSignature` (with a control key).
    /// True for new groups; the controller keeps it off for a Raft group already
    /// running without it, whose members could not be rolled onto it one by one.
    pub raft_peer_signatures: bool,
}

/// The operator's control key. Each group's key is derived from it
/// ([`ControlKey::for_group`]), so a group's Secret signs for that group only.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlKey(Vec<u8>);

impl std::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlKey(<redacted>)")
    }
}

impl ControlKey {
    /// A key from its bytes; `None` when empty.
    #[must_use]
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let b = bytes.trim_ascii();
        (!b.is_empty()).then(|| ControlKey(b.to_vec()))
    }

    /// The secret key of group `namespace/name`: HMAC-SHA1 of `ferrocket-control/<ns>/<name>`
    /// under the operator's key, in base64.
    #[must_use]
    pub fn for_group(&self, namespace: &str, name: &str) -> String {
        ferrocket::auth::signature(
            format!("ferrocket-control/{namespace}/{name}").as_bytes(),
            &self.0,
        )
    }

    /// The credentials the operator signs group `namespace/name`'s requests with.
    #[must_use]
    pub fn credentials(&self, namespace: &str, name: &str) -> Option<ferrocket::auth::Credentials> {
        ferrocket::auth::Credentials::new(
            ferrocket::auth::DEFAULT_CONTROL_ACCESS_KEY,
            self.for_group(namespace, name).as_bytes(),
        )
        .ok()
    }
}

/// Where brokers find their control secret.
pub const CONTROL_MOUNT: &str = "/etc/ferrocket-control";
/// Where a group's ACL Secret is mounted (`spec.acl`; a name server's too).
pub const ACL_MOUNT: &str = "/etc/ferrocket-acl";
/// Where a group's ACL 2.0 Secret is mounted (`spec.auth`).
pub const AUTH_MOUNT: &str = "/etc/ferrocket-auth";
/// The keys `spec.auth` sets; `brokerConfig` may not set them then.
const AUTH_KEYS: &[&str] = &[
    "authenticationEnabled",
    "authorizationEnabled",
    "initAuthenticationUser",
    "initAuthenticationUserFile",
    "innerClientAuthenticationCredentials",
    "innerClientAuthenticationCredentialsFile",
];
/// Where a group's name-server credentials are mounted (`spec.nameServerCredentials`).
pub const NAMESRV_CREDENTIALS_MOUNT: &str = "/etc/ferrocket-namesrv-credentials";
/// Where a `spec.tls` Secret is mounted (brokers and name servers).
pub const TLS_MOUNT: &str = "/etc/ferrocket-tls";
/// The key of the control Secret holding the secret key.
pub const CONTROL_SECRET_KEY: &str = "secretKey";

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            default_image: format!("ferrocket/ferrocket:{}", env!("CARGO_PKG_VERSION")),
            control_key: None,
            raft_peer_signatures: true,
        }
    }
}

/// Why a spec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A field is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The spec asks for something this version does not run.
    #[error("{0}")]
    Unsupported(String),
}

impl SpecError {
    /// The condition reason.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::Invalid(_) => "InvalidSpec",
            SpecError::Unsupported(_) => "Unsupported",
        }
    }
}

/// Standard labels of every object belonging to `instance`.
#[must_use]
pub fn labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(instance, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        FIELD_MANAGER.to_string(),
    );
    l
}

/// The labels selecting the pods of `instance`.
#[must_use]
pub fn selector_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "ferrocket".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// `key=value,...` selector string for listing the pods of `instance`.
#[must_use]
pub fn selector_string(instance: &str, component: &str) -> String {
    selector_labels(instance, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn meta<K: Resource<DynamicType = ()>>(owner: &K, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: owner.meta().namespace.clone(),
        labels: Some(labels(&owner.name_any(), component)),
        owner_references: owner_ref(owner).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    // Objects rendered from a file have no uid yet: they get no owner reference.
    owner.controller_owner_ref(&())
}

/// Name of the headless Service of `name`.
#[must_use]
pub fn headless_name(name: &str) -> String {
    format!("{name}-hs")
}

/// The namespace of an object (`default` when unset).
#[must_use]
pub fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// `host:port` of each name server pod (stable DNS through the headless Service).
#[must_use]
pub fn namesrv_addresses(ns: &NameServer) -> Vec<String> {
    let name = ns.name_any();
    let namespace = namespace_of(ns);
    (0..ns.spec.replicas.max(0))
        .map(|i| {
            format!(
                "{name}-{i}.{}.{namespace}.svc:{}",
                headless_name(&name),
                ns.spec.port
            )
        })
        .collect()
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn service(
    meta: ObjectMeta,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    headless: bool,
    service_type: &ServiceType,
) -> Service {
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            cluster_ip: headless.then(|| "None".to_string()),
            // Replication and peers need each other's DNS before they are ready.
            publish_not_ready_addresses: headless.then_some(true),
            type_: Some(if headless {
                "ClusterIP".to_string()
            } else {
                format!("{service_type:?}")
            }),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn pdb(meta: ObjectMeta, selector: BTreeMap<String, String>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// `<group>-in-sync`: at least one pod labelled [`IN_SYNC_LABEL`] stays up, so a drain
/// waits rather than evict the last in-sync slave of a SyncMaster group (whose sends
/// need one). Selects nothing in other groups (the label is only set on SyncMaster).
fn in_sync_pdb(meta: ObjectMeta, mut selector: BTreeMap<String, String>) -> PodDisruptionBudget {
    selector.insert(IN_SYNC_LABEL.into(), "true".into());
    let mut budget = pdb(meta, selector);
    if let Some(spec) = budget.spec.as_mut() {
        spec.max_unavailable = None;
        spec.min_available = Some(IntOrString::Int(1));
    }
    budget
}

fn apply_placement(pod: &mut PodSpec, p: &Placement) {
    pod.node_selector.clone_from(&p.node_selector);
    pod.tolerations.clone_from(&p.tolerations);
    pod.affinity.clone_from(&p.affinity);
}

/// How long a broker pod waits before SIGTERM when deleted or evicted (`preStop`).
pub const PRE_STOP_SECONDS: i64 = 15;

/// Preferred pod anti-affinity across nodes (`kubernetes.io/hostname`) for the pods of
/// `name`; `spec.placement.affinity` replaces it.
fn spread_across_nodes(name: &str, component: &str) -> k8s_openapi::api::core::v1::Affinity {
    use k8s_openapi::api::core::v1::{
        Affinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(name, component)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// A stable hex digest of `text` (CRC-32 of the bytes), used to roll pods on config change.
#[must_use]
pub fn digest(text: &str) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(text.as_bytes());
    format!("{:08x}", h.finalize())
}

/// The StatefulSet spec both kinds share: stable pod names through the headless
/// Service, pods started in parallel, the instance's labels on the template.
fn statefulset_spec(
    name: &str,
    component: &str,
    replicas: i32,
    annotations: BTreeMap<String, String>,
    pod: PodSpec,
) -> StatefulSetSpec {
    StatefulSetSpec {
        replicas: Some(replicas),
        service_name: Some(headless_name(name)),
        pod_management_policy: Some("Parallel".into()),
        selector: LabelSelector {
            match_labels: Some(selector_labels(name, component)),
            ..LabelSelector::default()
        },
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(name, component)),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            }),
            spec: Some(pod),
        },
        ..StatefulSetSpec::default()
    }
}

/// Everything a `NameServer` becomes.
#[derive(Clone, Debug)]
pub struct NameServerObjects {
    /// Headless Service (pod DNS).
    pub headless: Service,
    /// Client Service.
    pub client: Service,
    /// The pods.
    pub statefulset: StatefulSet,
    /// Disruption budget.
    pub pdb: PodDisruptionBudget,
}

/// Builds the objects of a `NameServer`.
///
/// # Errors
/// An out-of-range spec (the CRD schema checks the same; `render` and tests do not go
/// through it).
pub fn build_nameserver(
    ns: &NameServer,
    cfg: &BuildConfig,
) -> Result<NameServerObjects, SpecError> {
    let s = &ns.spec;
    if !(1..=9).contains(&s.replicas) {
        return Err(SpecError::Invalid(format!(
            "replicas must be 1..9, got {}",
            s.replicas
        )));
    }
    if !(1..=65535).contains(&s.port) || s.port == NAMESRV_METRICS_PORT {
        return Err(SpecError::Invalid(format!(
            "port must be 1..65535 and not {NAMESRV_METRICS_PORT}, got {}",
            s.port
        )));
    }
    let name = ns.name_any();
    let sel = selector_labels(&name, "namesrv");
    let ports = vec![
        port("remoting", s.port),
        port("metrics", NAMESRV_METRICS_PORT),
    ];
    let headless = service(
        meta(ns, headless_name(&name), "namesrv"),
        sel.clone(),
        ports.clone(),
        true,
        &ServiceType::ClusterIP,
    );
    let client = service(
        meta(ns, name.clone(), "namesrv"),
        sel.clone(),
        ports,
        false,
        &s.service_type,
    );
    let container = Container {
        name: "namesrv".into(),
        image: Some(s.image.clone().unwrap_or_else(|| cfg.default_image.clone())),
        command: Some(vec!["ferrocket".into()]),
        args: Some(vec![
            "namesrv".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", s.port),
            "--metrics-port".into(),
            NAMESRV_METRICS_PORT.to_string(),
        ]),
        env: Some(vec![field_env("POD_NAME", "metadata.name")]),
        volume_mounts: Some(
            [
                s.tls.as_ref().map(|_| secret_mount("tls", TLS_MOUNT)),
                s.acl.as_ref().map(|_| secret_mount("acl", ACL_MOUNT)),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        )
        .filter(|m| !m.is_empty()),
        ports: Some(vec![
            container_port("remoting", s.port),
            container_port("metrics", NAMESRV_METRICS_PORT),
        ]),
        readiness_probe: Some(http_probe("/readyz", NAMESRV_METRICS_PORT, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", NAMESRV_METRICS_PORT, 10, 3)),
        resources: s.resources.clone(),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let mut container = container;
    if let (Some(tls), Some(args)) = (&s.tls, container.args.as_mut()) {
        args.extend([
            "--tls-mode".into(),
            tls.mode.as_conf().into(),
            "--tls-cert".into(),
            format!("{TLS_MOUNT}/tls.crt"),
            "--tls-key".into(),
            format!("{TLS_MOUNT}/tls.key"),
        ]);
    }
    if let (Some(acl), Some(args)) = (&s.acl, container.args.as_mut()) {
        args.extend(["--acl-file".into(), format!("{ACL_MOUNT}/{}", acl.key)]);
    }
    let mut pod = PodSpec {
        containers: vec![container],
        volumes: Some(
            [
                s.tls.as_ref().map(|t| secret_volume("tls", &t.secret_name)),
                s.acl.as_ref().map(|a| secret_volume("acl", &a.secret_name)),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        )
        .filter(|v| !v.is_empty()),
        security_context: Some(pod_security()),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    apply_placement(&mut pod, &s.placement);
    let statefulset = StatefulSet {
        metadata: meta(ns, name.clone(), "namesrv"),
        spec: Some(statefulset_spec(
            &name,
            "namesrv",
            s.replicas,
            BTreeMap::new(),
            pod,
        )),
        ..StatefulSet::default()
    };
    Ok(NameServerObjects {
        headless,
        client,
        statefulset,
        pdb: pdb(meta(ns, name, "namesrv"), sel),
    })
}

/// Everything a `BrokerGroup` becomes.
#[derive(Clone, Debug)]
pub struct BrokerGroupObjects {
    /// Headless Service (pod DNS, HA port).
    pub headless: Service,
    /// Client Service.
    pub client: Service,
    /// `broker.conf`.
    pub config: ConfigMap,
    /// The roles file (master pod and epoch).
    pub roles: ConfigMap,
    /// The pods and their PVCs.
    pub statefulset: StatefulSet,
    /// Disruption budget.
    pub pdb: PodDisruptionBudget,
    /// Disruption budget of the in-sync slaves (`<group>-in-sync`).
    pub in_sync_pdb: PodDisruptionBudget,
    /// The group's control Secret (only when the operator has a control key).
    pub control: Option<Secret>,
    /// `<group>-ports` (`spec.networkPolicy`).
    pub network_policy: Option<NetworkPolicy>,
}

/// `<group>-ports`: the HA and DLedger ports from the group's own pods only; the
/// client, VIP and metrics ports from `clientFrom` (everyone when empty).
fn network_policy(bg: &BrokerGroup, sel: &BTreeMap<String, String>) -> Option<NetworkPolicy> {
    let np = bg.spec.network_policy.as_ref()?;
    let tcp = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let selector = LabelSelector {
        match_labels: Some(sel.clone()),
        ..LabelSelector::default()
    };
    Some(NetworkPolicy {
        metadata: meta(bg, format!("{}-ports", bg.name_any()), "broker"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(selector),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![tcp(HA_PORT), tcp(DLEDGER_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: (!np.client_from.is_empty()).then(|| np.client_from.clone()),
                    ports: Some(vec![
                        tcp(BROKER_PORT),
                        tcp(VIP_PORT),
                        tcp(bg.spec.metrics_port),
                    ]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// Who is master, at which epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The master pod.
    pub master: String,
    /// The role epoch.
    pub epoch: i64,
}

impl Roles {
    /// The initial roles of a new group: ordinal 0 is master at epoch 1.
    #[must_use]
    pub fn initial(group: &str) -> Roles {
        Roles {
            master: format!("{group}-0"),
            epoch: 1,
        }
    }

    /// The roles recorded in a group's status, or the initial ones.
    #[must_use]
    pub fn of(bg: &BrokerGroup) -> Roles {
        let name = bg.name_any();
        match bg.status.as_ref() {
            Some(s) if s.master.is_some() && s.epoch > 0 => Roles {
                master: s.master.clone().unwrap_or_default(),
                epoch: s.epoch,
            },
            _ => Roles::initial(&name),
        }
    }

    /// The roles file text (`--roles-file`).
    #[must_use]
    pub fn file_text(&self) -> String {
        format!("master={}\nepoch={}\n", self.master, self.epoch)
    }
}

/// The brokerId of pod `pod` given the roles (master 0, others ordinal + 1), as the
/// broker computes it from the roles file.
#[must_use]
pub fn broker_id(pod: &str, roles: &Roles) -> i64 {
    if pod == roles.master {
        return 0;
    }
    pod_ordinal(pod).map_or(-1, |o| o + 1)
}

/// The Raft address of ordinal `i` of a Raft group: its pod's DNS name under the
/// headless Service, at the DLedger port.
#[must_use]
pub fn raft_peer(bg: &BrokerGroup, i: i64) -> String {
    let name = bg.name_any();
    format!(
        "{name}-{i}.{}.{}.svc:{DLEDGER_PORT}",
        headless_name(&name),
        namespace_of(bg)
    )
}

/// The ordinal of a StatefulSet pod name (`<set>-<ordinal>`).
#[must_use]
pub fn pod_ordinal(pod: &str) -> Option<i64> {
    pod.rsplit('-').next()?.parse().ok()
}

/// Checks a `BrokerGroup` spec beyond what one schema field can say.
///
/// # Errors
/// The first problem found.
pub fn validate_broker_group(spec: &BrokerGroupSpec) -> Result<(), SpecError> {
    if !(1..=9).contains(&spec.replicas) {
        return Err(SpecError::Invalid(format!(
            "replicas must be 1..9, got {}",
            spec.replicas
        )));
    }
    if spec.name_server_ref.is_none()
        && spec
            .name_server_address
            .as_deref()
            .is_none_or(|a| a.trim().is_empty())
    {
        return Err(SpecError::Invalid(
            "set nameServerRef or nameServerAddress".into(),
        ));
    }
    if spec.replication == Replication::Raft && (spec.replicas < 3 || spec.replicas % 2 == 0) {
        return Err(SpecError::Invalid(
            "Raft needs an odd replica count of at least 3".into(),
        ));
    }
    if spec.replication == Replication::SyncMaster && spec.replicas < 2 {
        return Err(SpecError::Invalid(
            "SyncMaster needs at least 2 replicas (a master acknowledges only what a slave holds)"
                .into(),
        ));
    }
    if !(1..=65535).contains(&spec.metrics_port)
        || [BROKER_PORT, HA_PORT, VIP_PORT].contains(&spec.metrics_port)
    {
        return Err(SpecError::Invalid(format!(
            "metricsPort must be 1..65535 and not a broker port ({VIP_PORT}, {BROKER_PORT}, {HA_PORT}), got {}",
            spec.metrics_port
        )));
    }
    if !valid_quantity(&spec.storage.size) {
        return Err(SpecError::Invalid(format!(
            "storage.size `{}` is not a quantity like 20Gi",
            spec.storage.size
        )));
    }
    if spec.auth.is_some() && spec.acl.is_some() {
        return Err(SpecError::Invalid(
            "acl (ACL 1.0) and auth (ACL 2.0) cannot both be set".into(),
        ));
    }
    for key in spec.broker_config.keys() {
        if spec.auth.is_some() && AUTH_KEYS.contains(&key.as_str()) {
            return Err(SpecError::Invalid(format!(
                "brokerConfig may not set `{key}` with spec.auth: the operator manages it"
            )));
        }
        if RESERVED_BROKER_KEYS.contains(&key.as_str()) {
            return Err(SpecError::Invalid(format!(
                "brokerConfig may not set `{key}`: the operator manages it"
            )));
        }
        if key.is_empty() || key.contains(['=', '\n', ' ', '#']) {
            return Err(SpecError::Invalid(format!(
                "brokerConfig key `{key}` is not a property name"
            )));
        }
    }
    if let Some(v) = spec.broker_config.values().find(|v| v.contains('\n')) {
        return Err(SpecError::Invalid(format!(
            "brokerConfig value `{v}` spans lines"
        )));
    }
    Ok(())
}

fn valid_quantity(q: &str) -> bool {
    quantity_bytes(q).is_some_and(|b| b > 0.0)
}

/// A storage quantity (`20Gi`, `500M`, `1.5Ti`, plain bytes) in bytes; `None` when it is
/// not one.
#[must_use]
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &q[digits.len()..];
    let mult = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    if digits.is_empty() {
        return None;
    }
    digits
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * mult)
}

/// The storage request of a StatefulSet's `store` claim template.
#[must_use]
pub fn claim_size(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("store"))?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// The `broker.conf` of a group (keys sorted; operator-owned keys first).
#[must_use]
pub fn broker_conf(bg: &BrokerGroup, namesrv_addr: &str, signed_control: bool) -> String {
    broker_conf_with(bg, namesrv_addr, signed_control, true)
}

/// [`broker_conf`]; `raft_signatures`: whether a Raft group's members challenge each
/// other (`haRequireSignature`, with the control key).
#[must_use]
pub fn broker_conf_with(
    bg: &BrokerGroup,
    namesrv_addr: &str,
    signed_control: bool,
    raft_signatures: bool,
) -> String {
    let s = &bg.spec;
    let role = match s.replication {
        Replication::SyncMaster => "SYNC_MASTER",
        Replication::AsyncMaster => "ASYNC_MASTER",
        // The group elects its leader: the role follows the Raft term.
        Replication::Raft => "",
    };
    let flush = match s.flush_disk_type {
        FlushDiskType::SyncFlush => "SYNC_FLUSH",
        FlushDiskType::AsyncFlush => "ASYNC_FLUSH",
    };
    let mut out = String::from("# Rendered by ferrocket-operator; edit the BrokerGroup instead.\n");
    let raft = s.replication == Replication::Raft;
    for (k, v) in [
        ("brokerClusterName", s.cluster_name.clone()),
        ("brokerName", bg.name_any()),
        ("namesrvAddr", namesrv_addr.to_string()),
        ("brokerRole", role.to_string()),
        ("flushDiskType", flush.to_string()),
        ("listenPort", BROKER_PORT.to_string()),
        ("haListenPort", HA_PORT.to_string()),
        ("storePathRootDir", format!("{STORE_MOUNT}/store")),
        ("metricsPort", s.metrics_port.to_string()),
        // The operator is the controller: in-sync members leave only once it recorded it.
        (
            "syncStateSetByController",
            if raft { "" } else { "true" }.to_string(),
        ),
    ] {
        if !v.is_empty() {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    if raft {
        // The peers by pod DNS name (the headless Service publishes them before they
        // are ready); each pod takes `dLegerSelfId=n<ordinal>` from its name.
        let name = bg.name_any();
        let peers: Vec<String> = (0..i64::from(s.replicas))
            .map(|i| format!("n{i}-{}", raft_peer(bg, i)))
            .collect();
        out.push_str(&format!(
            "enableDLegerCommitLog=true\ndLegerGroup={name}\ndLegerPeers={}\n",
            peers.join(";")
        ));
    }
    if signed_control {
        out.push_str(&format!(
            "controlSecretFile={CONTROL_MOUNT}/{CONTROL_SECRET_KEY}\n"
        ));
        // The HA port serves only the group's members (they answer its challenge with
        // the group's key). Safe to roll onto a running group: slaves restart first and
        // follow a master that does not challenge yet. A Raft group's members all serve
        // and dial each other, so a half-rolled group would refuse its own members:
        // there only for groups that start with it (`BuildConfig::raft_peer_signatures`).
        if !raft || raft_signatures {
            out.push_str("haRequireSignature=true\n");
        }
    }
    if let Some(acl) = &s.acl {
        out.push_str(&format!(
            "aclEnable=true\naclFile={ACL_MOUNT}/{}\n",
            acl.key
        ));
    }
    if let Some(a) = &s.auth {
        out.push_str(&format!(
            "authenticationEnabled=true\nauthorizationEnabled={}\n\
             initAuthenticationUserFile={AUTH_MOUNT}/initAuthenticationUser\n\
             innerClientAuthenticationCredentialsFile={AUTH_MOUNT}/innerClientAuthenticationCredentials\n",
            a.authorization
        ));
    }
    if let Some(c) = &s.name_server_credentials {
        out.push_str(&format!(
            "namesrvAccessKey={}\nnamesrvSecretFile={NAMESRV_CREDENTIALS_MOUNT}/{}\n",
            c.access_key, c.key
        ));
    }
    if let Some(tls) = &s.tls {
        out.push_str(&format!(
            "tls.server.mode={}\ntls.server.certPath={TLS_MOUNT}/tls.crt\n\
             tls.server.keyPath={TLS_MOUNT}/tls.key\ntls.client.trustCertPath={TLS_MOUNT}/ca.crt\n",
            tls.mode.as_conf()
        ));
        if tls.name_server_tls {
            out.push_str("tls.enable=true\n");
        }
    }
    if s.replicas >= 3 && s.replication != Replication::Raft {
        // The master lease: a master that hears from fewer slaves than make a majority
        // with it stops taking writes within 5 s — well before the operator can promote
        // anyone (readiness failures alone take 10 s). `brokerConfig` may change it.
        out.push_str(&format!(
            "masterLeaseMs={MASTER_LEASE_MS}\nmasterLeaseQuorum={}\n",
            s.replicas / 2
        ));
    }
    for (k, v) in &s.broker_config {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// How many pods the StatefulSet keeps: `replicas`, but never fewer than reach the
/// current master (after a failover the master may be a high ordinal; a scale-down
/// must not delete it). The reconciler reports the difference as `ScaleDownBlocked`.
#[must_use]
pub fn pod_count(replicas: i32, roles: &Roles) -> i32 {
    let master_ordinal = pod_ordinal(&roles.master)
        .and_then(|o| i32::try_from(o).ok())
        .unwrap_or(0);
    replicas.max(master_ordinal.saturating_add(1))
}

/// The roles ConfigMap of a group (mounted as the brokers' `--roles-file`).
#[must_use]
pub fn roles_config_map(bg: &BrokerGroup, roles: &Roles) -> ConfigMap {
    ConfigMap {
        metadata: meta(bg, format!("{}-roles", bg.name_any()), "broker"),
        data: Some(BTreeMap::from([("roles".to_string(), roles.file_text())])),
        ..ConfigMap::default()
    }
}

/// A user's Secret (`spec.acl`, `spec.tls`) mounted read-only at `path` — the
/// directory, not a subPath, so the kubelet's updates (a changed ACL, a renewed
/// certificate) reach the files the servers re-read.
fn secret_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(volume: &str, secret: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Builds the objects of a `BrokerGroup`. `namesrv_addr` is `host:port;host:port`.
///
/// # Errors
/// The spec fails [`validate_broker_group`].
pub fn build_broker_group(
    bg: &BrokerGroup,
    namesrv_addr: &str,
    roles: &Roles,
    cfg: &BuildConfig,
) -> Result<BrokerGroupObjects, SpecError> {
    let s = &bg.spec;
    validate_broker_group(s)?;
    let name = bg.name_any();
    if let Some(p) = &s.preferred_master {
        let ordinal = p
            .strip_prefix(&format!("{name}-"))
            .and_then(|o| o.parse::<i32>().ok());
        if !ordinal.is_some_and(|o| (0..s.replicas).contains(&o)) {
            return Err(SpecError::Invalid(format!(
                "preferredMaster `{p}` is not a pod of this group ({name}-0 .. {name}-{})",
                s.replicas - 1
            )));
        }
    }
    let sel = selector_labels(&name, "broker");
    let conf = broker_conf_with(
        bg,
        namesrv_addr,
        cfg.control_key.is_some(),
        cfg.raft_peer_signatures,
    );
    let config = ConfigMap {
        metadata: meta(bg, format!("{name}-config"), "broker"),
        data: Some(BTreeMap::from([("broker.conf".to_string(), conf.clone())])),
        ..ConfigMap::default()
    };
    let roles_cm = roles_config_map(bg, roles);
    let raft = s.replication == Replication::Raft;
    let mut svc_ports = vec![
        port("remoting", BROKER_PORT),
        port("vip", VIP_PORT),
        port("ha", HA_PORT),
        port("metrics", s.metrics_port),
    ];
    let mut container_ports = vec![
        container_port("remoting", BROKER_PORT),
        container_port("vip", VIP_PORT),
        container_port("ha", HA_PORT),
        container_port("metrics", s.metrics_port),
    ];
    if raft {
        svc_ports.push(port("dledger", DLEDGER_PORT));
        container_ports.push(container_port("dledger", DLEDGER_PORT));
    }
    let headless = service(
        meta(bg, headless_name(&name), "broker"),
        sel.clone(),
        svc_ports.clone(),
        true,
        &ServiceType::ClusterIP,
    );
    let client = service(
        meta(bg, name.clone(), "broker"),
        sel.clone(),
        vec![
            port("remoting", BROKER_PORT),
            port("metrics", s.metrics_port),
        ],
        false,
        &ServiceType::ClusterIP,
    );
    let container = Container {
        name: "broker".into(),
        image: Some(s.image.clone().unwrap_or_else(|| cfg.default_image.clone())),
        command: Some(vec!["ferrocket".into()]),
        args: Some(vec![
            "broker".into(),
            "--config".into(),
            format!("{CONFIG_MOUNT}/broker.conf"),
            "--roles-file".into(),
            format!("{ROLES_MOUNT}/roles"),
            "--pod-name".into(),
            "$(POD_NAME)".into(),
            "--set".into(),
            "brokerIP1=$(POD_IP)".into(),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(container_ports),
        // Recovery of a large store can take a while: the startup probe allows 10 minutes.
        startup_probe: Some(http_probe("/healthz", s.metrics_port, 5, 120)),
        readiness_probe: Some(http_probe("/readyz", s.metrics_port, 5, 2)),
        liveness_probe: Some(http_probe("/healthz", s.metrics_port, 10, 3)),
        resources: s.resources.clone(),
        security_context: Some(container_security()),
        // A deleted or evicted pod keeps running for a while before SIGTERM, so the
        // operator can move the master role off it with a lossless switchover first
        // (rolling updates, drains). The grace period covers it and the shutdown.
        lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
            pre_stop: Some(k8s_openapi::api::core::v1::LifecycleHandler {
                sleep: Some(k8s_openapi::api::core::v1::SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "store".into(),
                mount_path: STORE_MOUNT.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "roles".into(),
                mount_path: ROLES_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "control".into(),
                mount_path: CONTROL_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let mut container = container;
    if s.tls.is_some() {
        if let Some(m) = container.volume_mounts.as_mut() {
            m.push(secret_mount("tls", TLS_MOUNT));
        }
    }
    if s.acl.is_some() {
        if let Some(m) = container.volume_mounts.as_mut() {
            m.push(secret_mount("acl", ACL_MOUNT));
        }
    }
    if s.name_server_credentials.is_some() {
        if let Some(m) = container.volume_mounts.as_mut() {
            m.push(secret_mount(
                "namesrv-credentials",
                NAMESRV_CREDENTIALS_MOUNT,
            ));
        }
    }
    if s.auth.is_some() {
        if let Some(m) = container.volume_mounts.as_mut() {
            m.push(secret_mount("auth", AUTH_MOUNT));
        }
    }
    let cm_volume = |vol: &str, cm: String| Volume {
        name: vol.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: cm,
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        volumes: Some(vec![
            cm_volume("config", format!("{name}-config")),
            cm_volume("roles", format!("{name}-roles")),
            // Optional: an operator without a control key creates no Secret.
            Volume {
                name: "control".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(format!("{name}-control")),
                    optional: Some(true),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        security_context: Some(pod_security()),
        // SIGTERM flushes the CommitLog and persists offsets.
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    };
    if let (Some(tls), Some(v)) = (&s.tls, pod.volumes.as_mut()) {
        v.push(secret_volume("tls", &tls.secret_name));
    }
    if let (Some(acl), Some(v)) = (&s.acl, pod.volumes.as_mut()) {
        v.push(secret_volume("acl", &acl.secret_name));
    }
    if let (Some(c), Some(v)) = (&s.name_server_credentials, pod.volumes.as_mut()) {
        v.push(secret_volume("namesrv-credentials", &c.secret_name));
    }
    if let (Some(a), Some(v)) = (&s.auth, pod.volumes.as_mut()) {
        v.push(secret_volume("auth", &a.secret_name));
    }
    apply_placement(&mut pod, &s.placement);
    if pod.affinity.is_none() {
        // Brokers of one group on different nodes where the scheduler can: one node
        // failure then takes one replica.
        pod.affinity = Some(spread_across_nodes(&name, "broker"));
    }
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("store".into()),
            labels: Some(selector_labels(&name, "broker")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: s.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(s.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let retention = if s.storage.delete_claims_on_delete {
        "Delete"
    } else {
        "Retain"
    };
    // The roles file is deliberately not hashed: a failover must not roll every pod;
    // brokers change role through the role-change request.
    // `namesrvAddr` is left out: a name-server change reaches running brokers through
    // UPDATE_BROKER_CONFIG (the operator sends it), without restarting them.
    let hashed: String = conf
        .lines()
        .filter(|l| !l.starts_with("namesrvAddr="))
        .map(|l| format!("{l}\n"))
        .collect();
    let annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), digest(&hashed))]);
    let statefulset = StatefulSet {
        metadata: meta(bg, name.clone(), "broker"),
        spec: Some(StatefulSetSpec {
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    // Scaling down keeps a slave's data so scaling up again resumes it.
                    when_scaled: Some("Retain".into()),
                },
            ),
            // The operator replaces pods itself (crate::upgrade): slaves first, then a
            // switchover, then the old master — never the StatefulSet controller's
            // reverse-ordinal roll, which may restart the master first.
            // A Raft group elects its own leader: the StatefulSet controller rolls it,
            // one pod at a time, each ready before the next (the group keeps a
            // majority; a restarted leader costs one election).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(if raft { "RollingUpdate" } else { "OnDelete" }.into()),
                rolling_update: None,
            }),
            ..statefulset_spec(
                &name,
                "broker",
                pod_count(s.replicas, roles),
                annotations,
                pod,
            )
        }),
        ..StatefulSet::default()
    };
    Ok(BrokerGroupObjects {
        headless,
        client,
        config,
        roles: roles_cm,
        statefulset,
        control: cfg.control_key.as_ref().map(|k| Secret {
            metadata: meta(bg, format!("{name}-control"), "broker"),
            string_data: Some(BTreeMap::from([(
                CONTROL_SECRET_KEY.to_string(),
                k.for_group(&namespace_of(bg), &name),
            )])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        }),
        in_sync_pdb: in_sync_pdb(meta(bg, format!("{name}-in-sync"), "broker"), sel.clone()),
        network_policy: network_policy(bg, &sel),
        pdb: pdb(meta(bg, name, "broker"), sel),
    })
}

/// Every object of a group as JSON values in apply order (ConfigMaps before the pods
/// that mount them).
///
/// # Errors
/// Serialization failures (none expected for these types).
pub fn broker_group_values(o: &BrokerGroupObjects) -> serde_json::Result<Vec<serde_json::Value>> {
    Ok(vec![
        typed_value(&o.config)?,
        typed_value(&o.roles)?,
        typed_value(&o.headless)?,
        typed_value(&o.client)?,
        typed_value(&o.statefulset)?,
        typed_value(&o.pdb)?,
        typed_value(&o.in_sync_pdb)?,
    ])
}

/// Every object of a name server group as JSON values in apply order.
///
/// # Errors
/// Serialization failures (none expected for these types).
pub fn nameserver_values(o: &NameServerObjects) -> serde_json::Result<Vec<serde_json::Value>> {
    Ok(vec![
        typed_value(&o.headless)?,
        typed_value(&o.client)?,
        typed_value(&o.statefulset)?,
        typed_value(&o.pdb)?,
    ])
}

/// An object as JSON with its `apiVersion` and `kind` set.
///
/// # Errors
/// Serialization failures.
pub fn typed_value<K>(obj: &K) -> serde_json::Result<serde_json::Value>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let mut v = serde_json::to_value(obj)?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), K::api_version(&()).into_owned().into());
        m.insert("kind".into(), K::kind(&()).into_owned().into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BrokerGroupSpec, NameServerSpec};

    fn group(yaml: &str) -> BrokerGroup {
        let spec: BrokerGroupSpec = serde_yaml::from_str(yaml).unwrap();
        let mut bg = BrokerGroup::new("broker-a", spec);
        bg.metadata.namespace = Some("mq".into());
        bg.metadata.uid = Some("uid-1".into());
        bg
    }

    fn nameserver(replicas: i32) -> NameServer {
        let spec: NameServerSpec = serde_yaml::from_str(&format!("replicas: {replicas}")).unwrap();
        let mut ns = NameServer::new("namesrv", spec);
        ns.metadata.namespace = Some("mq".into());
        ns
    }

    fn container(sts: &StatefulSet) -> &Container {
        &sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    /// The pod template's volumes.
    fn pod_volumes(sts: &StatefulSet) -> Vec<Volume> {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .clone()
            .unwrap_or_default()
    }

    /// `bg`'s objects with name servers at `ns:9876`, the initial roles and the
    /// default build settings.
    fn built(bg: &BrokerGroup) -> BrokerGroupObjects {
        build_broker_group(
            bg,
            "ns:9876",
            &Roles::initial("broker-a"),
            &BuildConfig::default(),
        )
        .unwrap()
    }

    /// A `NameServer` `namesrv` in `mq` from `yaml`, built, with its container's args.
    fn built_nameserver(yaml: &str) -> (NameServerObjects, String) {
        let spec: NameServerSpec = serde_yaml::from_str(yaml).unwrap();
        let mut ns = NameServer::new("namesrv", spec);
        ns.metadata.namespace = Some("mq".into());
        let o = build_nameserver(&ns, &BuildConfig::default()).unwrap();
        let args = container(&o.statefulset).args.clone().unwrap().join(" ");
        (o, args)
    }

    #[test]
    fn namesrv_addr_lists_every_pod_dns_name() {
        assert_eq!(
            namesrv_addresses(&nameserver(2)).join(";"),
            "namesrv-0.namesrv-hs.mq.svc:9876;namesrv-1.namesrv-hs.mq.svc:9876"
        );
    }

    /// The operator's watches are label-selected (`run::owned_selector`): every object
    /// it applies must carry that label, or its changes would go unseen.
    #[test]
    fn every_applied_object_carries_the_label_the_watches_select() {
        let (key, value) = {
            let sel = crate::run::owned_selector();
            let (k, v) = sel.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        };
        let bg = group(
            "nameServerRef: {name: ns}\nreplicas: 3\nreplication: SyncMaster\nnetworkPolicy: {}\n",
        );
        let o = build_broker_group(
            &bg,
            "ns-0.ns-hs.mq.svc:9876",
            &Roles::initial("broker-a"),
            &BuildConfig::default(),
        )
        .unwrap();
        let ns = build_nameserver(&nameserver(2), &BuildConfig::default()).unwrap();
        let values = broker_group_values(&o)
            .unwrap()
            .into_iter()
            .chain(nameserver_values(&ns).unwrap());
        for v in values {
            assert_eq!(
                v["metadata"]["labels"][&key].as_str(),
                Some(value.as_str()),
                "{} {} lacks {key}={value}",
                v["kind"],
                v["metadata"]["name"]
            );
        }
    }

    #[test]
    fn sync_master_statefulset_has_store_claim_probes_args_and_security() {
        let bg = group("nameServerRef: {name: ns}\nreplicas: 3\nreplication: SyncMaster\nflushDiskType: SyncFlush\nstorage: {size: 50Gi, storageClassName: fast, deleteClaimsOnDelete: true}\nmetricsPort: 9300\n");
        let o = build_broker_group(
            &bg,
            "ns-0.ns-hs.mq.svc:9876",
            &Roles::initial("broker-a"),
            &BuildConfig::default(),
        )
        .unwrap();
        let sts = &o.statefulset;
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("broker-a-hs"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let cs = claim.spec.as_ref().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "50Gi"
        );
        let ret = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(
            (ret.when_deleted.as_deref(), ret.when_scaled.as_deref()),
            (Some("Delete"), Some("Retain"))
        );
        let c = container(sts);
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(
            args.contains("--roles-file /etc/ferrocket-roles/roles --pod-name $(POD_NAME)"),
            "{args}"
        );
        assert!(args.contains("--set brokerIP1=$(POD_IP)"));
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"POD_IP") && env.contains(&"POD_NAME"));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (ready.path.as_deref(), &ready.port),
            (Some("/readyz"), &IntOrString::Int(9300))
        );
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.read_only_root_filesystem, sc.run_as_non_root),
            (Some(true), Some(true))
        );
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("store", "/data"),
                ("config", CONFIG_MOUNT),
                ("roles", ROLES_MOUNT),
                ("control", CONTROL_MOUNT)
            ]
        );
        for obj in [
            &o.config.metadata,
            &o.roles.metadata,
            &o.headless.metadata,
            &o.client.metadata,
            &sts.metadata,
            &o.pdb.metadata,
        ] {
            let owner = &obj.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("BrokerGroup", "uid-1", Some(true))
            );
            assert_eq!(obj.namespace.as_deref(), Some("mq"));
        }
        let hs = o.headless.spec.as_ref().unwrap();
        assert_eq!(
            (hs.cluster_ip.as_deref(), hs.publish_not_ready_addresses),
            (Some("None"), Some(true))
        );
        let ports: Vec<i32> = hs.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [BROKER_PORT, VIP_PORT, HA_PORT, 9300]);
    }

    #[test]
    fn an_acl_group_mounts_its_secret_and_turns_acl_on() {
        let bg = group("nameServerRef: {name: ns}\nreplicas: 2\nacl: {secretName: broker-a-acl}\nbrokerConfig: {aclEnable: 'false'}\n");
        assert!(
            validate_broker_group(&bg.spec).is_err(),
            "aclEnable is the operator's to set"
        );
        let bg = group("nameServerRef: {name: ns}\nreplicas: 2\nacl: {secretName: broker-a-acl}\n");
        assert_eq!(bg.spec.acl.as_ref().unwrap().key, "plain_acl.yml");
        let conf = broker_conf(&bg, "ns:9876", true);
        assert!(
            conf.contains("aclEnable=true\naclFile=/etc/ferrocket-acl/plain_acl.yml\n"),
            "{conf}"
        );
        let o = built(&bg);
        let vols = pod_volumes(&o.statefulset);
        let vol = vols.iter().find(|v| v.name == "acl").unwrap();
        assert_eq!(
            vol.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("broker-a-acl")
        );
        let m = container(&o.statefulset)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "acl")
            .unwrap();
        assert_eq!(
            (m.mount_path.as_str(), m.read_only, m.sub_path.as_deref()),
            (ACL_MOUNT, Some(true), None)
        );
        // Without spec.acl: neither.
        let plain = group("nameServerRef: {name: ns}\nreplicas: 2\n");
        assert!(!broker_conf(&plain, "ns:9876", true).contains("aclEnable"));
    }

    /// `NameServer.spec.acl` puts writes to the name server behind an admin account
    /// (`--acl-file`, the Secret mounted); `BrokerGroup.spec.nameServerCredentials`
    /// makes the brokers sign their registrations with one.
    #[test]
    fn name_server_acl_and_broker_credentials_are_mounted_and_named() {
        let (o, args) = built_nameserver("replicas: 1\nacl: {secretName: ns-acl}");
        let c = container(&o.statefulset);
        assert!(
            args.ends_with("--acl-file /etc/ferrocket-acl/plain_acl.yml"),
            "{args}"
        );
        let mounts = c.volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            (mounts[0].mount_path.as_str(), mounts[0].read_only),
            (ACL_MOUNT, Some(true))
        );
        assert_eq!(
            pod_volumes(&o.statefulset)[0]
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some("ns-acl")
        );
        // Without it: no volume, no mount, no flag.
        let plain = build_nameserver(&nameserver(1), &BuildConfig::default()).unwrap();
        let c = container(&plain.statefulset);
        assert!(c.volume_mounts.is_none());
        assert!(!c.args.clone().unwrap().join(" ").contains("--acl-file"));

        let bg = group(
            "nameServerRef: {name: namesrv}\nreplicas: 2\nnameServerCredentials: {accessKey: broker-a, secretName: ns-creds}\n",
        );
        let conf = broker_conf(&bg, "ns:9876", false);
        assert!(
            conf.contains(
                "namesrvAccessKey=broker-a\nnamesrvSecretFile=/etc/ferrocket-namesrv-credentials/secretKey\n"
            ),
            "{conf}"
        );
        let o = built(&bg);
        let c = container(&o.statefulset);
        assert!(c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == NAMESRV_CREDENTIALS_MOUNT));
        assert!(pod_volumes(&o.statefulset).iter().any(|v| v
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
            == Some("ns-creds")));
        // The keys are the operator's to set.
        let bad = group("nameServerRef: {name: namesrv}\nbrokerConfig: {namesrvAccessKey: x}\n");
        assert!(validate_broker_group(&bad.spec).is_err());
    }

    /// `spec.auth` turns ACL 2.0 on with the Secret's two identities read from files;
    /// it excludes `spec.acl`, and its keys are then the operator's.
    #[test]
    fn acl2_reads_its_identities_from_the_mounted_secret() {
        let bg = group("nameServerRef: {name: ns}\nreplicas: 2\nauth: {secretName: g-auth}\n");
        let conf = broker_conf(&bg, "ns:9876", false);
        for line in [
            "authenticationEnabled=true",
            "authorizationEnabled=true",
            "initAuthenticationUserFile=/etc/ferrocket-auth/initAuthenticationUser",
            "innerClientAuthenticationCredentialsFile=/etc/ferrocket-auth/innerClientAuthenticationCredentials",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing {line} in\n{conf}");
        }
        assert!(!conf.contains("password"), "{conf}");
        let o = built(&bg);
        assert!(container(&o.statefulset)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "auth" && m.mount_path == AUTH_MOUNT));
        assert!(pod_volumes(&o.statefulset).iter().any(|v| v
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
            == Some("g-auth")));
        let authn_only =
            group("nameServerRef: {name: ns}\nauth: {secretName: g-auth, authorization: false}\n");
        assert!(broker_conf(&authn_only, "ns:9876", false).contains("authorizationEnabled=false\n"));
        for (yaml, want) in [
            (
                "nameServerRef: {name: ns}\nauth: {secretName: a}\nacl: {secretName: b}\n",
                "cannot both be set",
            ),
            (
                "nameServerRef: {name: ns}\nauth: {secretName: a}\nbrokerConfig: {authorizationEnabled: 'false'}\n",
                "the operator manages it",
            ),
        ] {
            let err = validate_broker_group(&group(yaml).spec).unwrap_err();
            assert!(err.to_string().contains(want), "{yaml}: {err}");
        }
        // Without spec.auth the keys stay the user's (ACL 2.0 by hand).
        assert!(validate_broker_group(
            &group("nameServerRef: {name: ns}\nbrokerConfig: {authenticationEnabled: 'true'}\n")
                .spec
        )
        .is_ok());
    }

    #[test]
    fn tls_mounts_the_secret_and_sets_rocketmqs_tls_keys() {
        let bg = group("nameServerRef: {name: ns}\nreplicas: 2\nbrokerConfig: {tls.server.mode: disabled}\ntls: {secretName: broker-a-tls}\n");
        assert!(
            validate_broker_group(&bg.spec).is_err(),
            "tls.server.mode is the operator's to set"
        );
        let bg = group(
            "nameServerRef: {name: ns}\nreplicas: 2\ntls: {secretName: broker-a-tls, nameServerTls: true}\n",
        );
        let conf = broker_conf(&bg, "ns:9876", true);
        for line in [
            "tls.server.mode=enforcing\n",
            "tls.server.certPath=/etc/ferrocket-tls/tls.crt\n",
            "tls.server.keyPath=/etc/ferrocket-tls/tls.key\n",
            "tls.client.trustCertPath=/etc/ferrocket-tls/ca.crt\n",
            "tls.enable=true\n",
        ] {
            assert!(conf.contains(line), "{line} missing from {conf}");
        }
        // The rendered file is one ferrocket takes.
        let props = ferrocket::broker::config::parse_properties(&conf);
        let parsed = ferrocket::broker::BrokerConfig::from_properties(&props).unwrap();
        assert_eq!(
            parsed.tls.server_mode,
            ferrocket::remoting::tls::TlsMode::Enforcing
        );
        let o = built(&bg);
        let pod = o.statefulset.spec.unwrap().template.spec.unwrap();
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            vol.secret.and_then(|s| s.secret_name).as_deref(),
            Some("broker-a-tls")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.name == "tls" && m.mount_path == TLS_MOUNT));
        // Permissive, name servers plain.
        let bg = group(
            "nameServerRef: {name: ns}\nreplicas: 2\ntls: {secretName: t, mode: Permissive}\n",
        );
        let conf = broker_conf(&bg, "ns:9876", true);
        assert!(conf.contains("tls.server.mode=permissive\n") && !conf.contains("tls.enable"));
        // The name server.
        let (o, args) = built_nameserver("replicas: 1\ntls: {secretName: ns-tls}");
        assert!(
            args.contains("--tls-mode enforcing --tls-cert /etc/ferrocket-tls/tls.crt --tls-key /etc/ferrocket-tls/tls.key"),
            "{args}"
        );
        assert_eq!(pod_volumes(&o.statefulset)[0].name, "tls");
    }

    #[test]
    fn a_network_policy_keeps_replication_ports_to_the_group() {
        let bg = group("nameServerRef: {name: ns}\nreplicas: 3\nnetworkPolicy: {clientFrom: [{podSelector: {matchLabels: {app: orders}}}]}\n");
        let o = built(&bg);
        let np = o.network_policy.unwrap();
        assert_eq!(np.metadata.name.as_deref(), Some("broker-a-ports"));
        let spec = np.spec.unwrap();
        let sel = spec.pod_selector.unwrap().match_labels.unwrap();
        let rules = spec.ingress.unwrap();
        let ports = |r: &NetworkPolicyIngressRule| -> Vec<i32> {
            r.ports
                .iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(n)) => Some(n),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(ports(&rules[0]), [HA_PORT, DLEDGER_PORT]);
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(
            from[0].pod_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&sel)
        );
        assert_eq!(
            ports(&rules[1]),
            [BROKER_PORT, VIP_PORT, bg.spec.metrics_port]
        );
        assert_eq!(
            rules[1].from.as_ref().unwrap()[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "orders"
        );
        // Empty clientFrom: the client ports from everyone; none without the field.
        let open = group("nameServerRef: {name: ns}\nreplicas: 1\nnetworkPolicy: {}\n");
        let o = build_broker_group(
            &open,
            "ns:9876",
            &Roles::initial("broker-a"),
            &BuildConfig::default(),
        )
        .unwrap();
        assert!(o.network_policy.unwrap().spec.unwrap().ingress.unwrap()[1]
            .from
            .is_none());
        let none = group("nameServerRef: {name: ns}\nreplicas: 1\n");
        let o = build_broker_group(
            &none,
            "ns:9876",
            &Roles::initial("broker-a"),
            &BuildConfig::default(),
        )
        .unwrap();
        assert!(o.network_policy.is_none());
    }

    #[test]
    fn broker_conf_carries_mode_flush_cluster_and_extra_keys() {
        let bg = group("nameServerAddress: a:9876;b:9876\nclusterName: C1\nreplicas: 2\nreplication: AsyncMaster\nbrokerConfig: {fileReservedTime: '12', autoCreateTopicEnable: 'false'}\n");
        let conf = broker_conf(&bg, "a:9876;b:9876", false);
        for line in [
            "brokerClusterName=C1",
            "brokerName=broker-a",
            "namesrvAddr=a:9876;b:9876",
            "brokerRole=ASYNC_MASTER",
            "flushDiskType=ASYNC_FLUSH",
            "listenPort=10911",
            "haListenPort=10912",
            "storePathRootDir=/data/store",
            "fileReservedTime=12",
            "autoCreateTopicEnable=false",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing {line} in\n{conf}");
        }
        let sync = group("nameServerAddress: a:9876\nreplicas: 2\nreplication: SyncMaster\nflushDiskType: SyncFlush\n");
        let conf = broker_conf(&sync, "a:9876", true);
        assert!(
            conf.contains("brokerRole=SYNC_MASTER\n")
                && conf.contains("flushDiskType=SYNC_FLUSH\n")
                && conf.contains("controlSecretFile=/etc/ferrocket-control/secretKey\n")
                && conf.contains("haRequireSignature=true\n")
        );
        // A new Raft group's members challenge each other; one already running without
        // it keeps running without (its members could not take it one by one).
        let raft = group("nameServerAddress: a:9876\nreplicas: 3\nreplication: Raft\n");
        let conf = broker_conf(&raft, "a:9876", true);
        assert!(conf.contains("haRequireSignature=true\n"), "{conf}");
        let conf = broker_conf_with(&raft, "a:9876", true, false);
        assert!(
            conf.contains("controlSecretFile=") && !conf.contains("haRequireSignature"),
            "{conf}"
        );
        // Without a control key there is no secret to answer with.
        assert!(!broker_conf(&raft, "a:9876", false).contains("haRequireSignature"));
        // Two brokers: no lease (the master would stop with its only slave).
        assert!(!conf.contains("masterLease"), "{conf}");
        // Three or five: a master lease with the majority's quorum.
        for (replicas, quorum) in [(3, 1), (5, 2)] {
            let g = group(&format!(
                "nameServerAddress: a:9876\nreplicas: {replicas}\nreplication: SyncMaster\n"
            ));
            let conf = broker_conf(&g, "a:9876", true);
            assert!(
                conf.contains("masterLeaseMs=5000\n")
                    && conf.contains(&format!("masterLeaseQuorum={quorum}\n")),
                "{conf}"
            );
        }
    }

    #[test]
    fn quantities_compare_across_units() {
        let gi = quantity_bytes("20Gi").unwrap();
        assert!(quantity_bytes("21474836480").unwrap() == gi);
        assert!(quantity_bytes("30G").unwrap() > gi);
        assert!(quantity_bytes("1.5Ti").unwrap() > quantity_bytes("1Ti").unwrap());
        for bad in ["", "Gi", "12Xi", "-1Gi", "abc"] {
            assert!(quantity_bytes(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn each_group_gets_its_own_control_key_and_secret() {
        let key = ControlKey::new(b"operator-key\n").expect("key");
        assert!(ControlKey::new(b" \n").is_none());
        assert!(!format!("{key:?}").contains("operator-key"));
        let a = key.for_group("ns", "a");
        assert_ne!(a, key.for_group("ns", "b"));
        assert_ne!(a, key.for_group("other", "a"));
        assert_eq!(
            a,
            ControlKey::new(b"operator-key")
                .expect("key")
                .for_group("ns", "a")
        );
        let bg = group("nameServerAddress: x:1\nreplicas: 2\n");
        let cfg = BuildConfig {
            control_key: Some(key.clone()),
            ..BuildConfig::default()
        };
        let o = build_broker_group(&bg, "x:1", &Roles::initial("g"), &cfg).expect("build");
        let secret = o.control.expect("a control Secret");
        let data = secret.string_data.expect("data");
        assert_eq!(
            data.get(CONTROL_SECRET_KEY),
            Some(&key.for_group(&namespace_of(&bg), &bg.name_any()))
        );
        let plain = build_broker_group(&bg, "x:1", &Roles::initial("g"), &BuildConfig::default())
            .expect("build");
        assert!(plain.control.is_none());
        let conf = plain.config.data.expect("conf")["broker.conf"].clone();
        assert!(!conf.contains("controlSecretFile"));
    }

    #[test]
    fn config_change_changes_the_pod_template_hash_but_roles_do_not() {
        let a = group("nameServerAddress: x:1\nreplicas: 2\n");
        let mut b = a.clone();
        b.spec
            .broker_config
            .insert("fileReservedTime".into(), "1".into());
        let hash = |bg: &BrokerGroup, roles: &Roles| {
            let o = build_broker_group(bg, "x:1", roles, &BuildConfig::default()).unwrap();
            o.statefulset
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let r1 = Roles::initial("broker-a");
        let r2 = Roles {
            master: "broker-a-1".into(),
            epoch: 2,
        };
        assert_ne!(hash(&a, &r1), hash(&b, &r1));
        assert_eq!(hash(&a, &r1), hash(&a, &r2));
        // A name-server change does not roll the brokers either (it is pushed to them).
        let with_ns = |ns: &str| {
            let o = build_broker_group(&a, ns, &r1, &BuildConfig::default()).unwrap();
            o.statefulset
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(with_ns("x:1"), with_ns("x:1;y:2"));
    }

    #[test]
    fn scale_down_never_deletes_the_master() {
        let after = Roles {
            master: "broker-a-2".into(),
            epoch: 2,
        };
        assert_eq!(pod_count(2, &after), 3);
        assert_eq!(pod_count(5, &after), 5);
        assert_eq!(pod_count(1, &Roles::initial("broker-a")), 1);
        let bg = group("nameServerAddress: x:1\nreplicas: 1\n");
        let o = build_broker_group(&bg, "x:1", &after, &BuildConfig::default()).unwrap();
        assert_eq!(o.statefulset.spec.unwrap().replicas, Some(3));
    }

    #[test]
    fn roles_and_broker_ids() {
        let r = Roles::initial("broker-a");
        assert_eq!(r.file_text(), "master=broker-a-0\nepoch=1\n");
        assert_eq!(broker_id("broker-a-0", &r), 0);
        assert_eq!(broker_id("broker-a-2", &r), 3);
        let after = Roles {
            master: "broker-a-1".into(),
            epoch: 2,
        };
        assert_eq!(broker_id("broker-a-1", &after), 0);
        assert_eq!(broker_id("broker-a-0", &after), 1);
        let mut bg = group("nameServerAddress: x:1\nreplicas: 3\n");
        assert_eq!(Roles::of(&bg), r);
        bg.status = Some(crate::crd::BrokerGroupStatus {
            master: Some("broker-a-2".into()),
            epoch: 4,
            ..Default::default()
        });
        assert_eq!(
            Roles::of(&bg),
            Roles {
                master: "broker-a-2".into(),
                epoch: 4
            }
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        let cases = [
            ("replicas: 3\n", "nameServerRef or nameServerAddress"),
            ("nameServerAddress: x:1\nreplicas: 0\n", "replicas must be"),
            (
                "nameServerAddress: x:1\nreplicas: 1\nreplication: SyncMaster\n",
                "at least 2 replicas",
            ),
            (
                "nameServerAddress: x:1\nreplicas: 4\nreplication: Raft\n",
                "odd replica count",
            ),
            (
                "nameServerAddress: x:1\nstorage: {size: lots}\n",
                "not a quantity",
            ),
            (
                "nameServerAddress: x:1\nbrokerConfig: {brokerRole: SLAVE}\n",
                "operator manages it",
            ),
            (
                "nameServerAddress: x:1\nmetricsPort: 10911\n",
                "metricsPort",
            ),
        ];
        for (yaml, want) in cases {
            let err = validate_broker_group(&group(yaml).spec).unwrap_err();
            assert!(err.to_string().contains(want), "{yaml}: {err}");
        }
        assert!(validate_broker_group(
            &group("nameServerAddress: x:1\nreplicas: 3\nreplication: Raft\n").spec
        )
        .is_ok());
        assert!(validate_broker_group(
            &group("nameServerAddress: x:1\nstorage: {size: 1.5Ti}\n").spec
        )
        .is_ok());
    }

    #[test]
    fn nameserver_objects() {
        let mut ns = nameserver(3);
        ns.spec.service_type = ServiceType::LoadBalancer;
        let o = build_nameserver(
            &ns,
            &BuildConfig {
                default_image: "img:1".into(),
                control_key: None,
                raft_peer_signatures: true,
            },
        )
        .unwrap();
        let c = container(&o.statefulset);
        assert_eq!(c.image.as_deref(), Some("img:1"));
        assert_eq!(
            c.args.as_ref().unwrap().join(" "),
            "namesrv --listen 0.0.0.0:9876 --metrics-port 9100"
        );
        assert_eq!(
            o.client.spec.as_ref().unwrap().type_.as_deref(),
            Some("LoadBalancer")
        );
        assert_eq!(o.statefulset.spec.as_ref().unwrap().replicas, Some(3));
        // Rendered from a file (no uid): no owner reference rather than a broken one.
        assert!(o.statefulset.metadata.owner_references.is_none());
        ns.spec.replicas = 0;
        assert!(build_nameserver(&ns, &BuildConfig::default()).is_err());
    }
}
