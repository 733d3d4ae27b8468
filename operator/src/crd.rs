//! The custom resources: `NameServer` and `BrokerGroup` (`ferrocket.io/v1alpha1`).
//! The Rust types are the CRDs; `ferrocket-operator crd` prints them and `crds/` holds
//! that output (a test fails when they drift).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_one() -> i32 {
    1
}
fn default_ns_port() -> i32 {
    9876
}
fn default_cluster() -> String {
    "DefaultCluster".into()
}
fn default_storage_size() -> String {
    "20Gi".into()
}
fn default_metrics_port() -> i32 {
    9100
}
fn default_true() -> bool {
    true
}
fn default_grace() -> i32 {
    10
}

/// How a Service exposes the pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Cluster-internal.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

/// Where pods run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// A group of name servers.
// Several printer columns repeat `type_ = ...`, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "NameServer",
    namespaced,
    status = "NameServerStatus",
    doc = "A group of ferrocket name servers",
    shortname = "frns",
    derive = "Default",
    printcolumn(name = "READY", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NameServerSpec {
    /// Name server pods.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image (defaults to the operator's own ferrocket image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Listening port.
    #[serde(default = "default_ns_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Pod placement.
    #[serde(default, flatten)]
    pub placement: Placement,
    /// Client Service type.
    #[serde(default)]
    pub service_type: ServiceType,
    /// TLS on the name server port (`--tls-mode`, `--tls-cert`, `--tls-key`), from a
    /// `kubernetes.io/tls` Secret (what a cert-manager `Certificate` writes). Its
    /// certificate must name the pods' DNS names
    /// (`<name>-<i>.<name>-headless.<namespace>.svc`): brokers check them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NameServerTls>,
    /// Writes to the name servers (broker registration, KV config, write permissions,
    /// topic deletion) need an admin account of this `plain_acl.yml`
    /// (`namesrv --acl-file`); route reads stay open. Brokers sign theirs with
    /// `BrokerGroup.spec.nameServerCredentials`. A changed Secret is in force once the
    /// kubelet has updated the mounted file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclSpec>,
}

/// `spec.tls` of a `NameServer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServerTls {
    /// The Secret (in the same namespace) with `tls.crt` and `tls.key`.
    pub secret_name: String,
    /// `Enforcing` (TLS only; the default) or `Permissive` (TLS and plain clients).
    #[serde(default)]
    pub mode: TlsMode,
}

/// RocketMQ's `tls.server.mode`, as a CR field.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    /// TLS and plain connections on one port.
    Permissive,
    /// TLS only.
    #[default]
    Enforcing,
}

impl TlsMode {
    /// The value of `tls.server.mode` / `--tls-mode`.
    #[must_use]
    pub fn as_conf(self) -> &'static str {
        match self {
            TlsMode::Permissive => "permissive",
            TlsMode::Enforcing => "enforcing",
        }
    }
}

/// `spec.tls` of a `BrokerGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerTls {
    /// The Secret (in the group's namespace) with `tls.crt`, `tls.key` and `ca.crt`
    /// (the layout a cert-manager `Certificate` writes). The brokers serve `tls.crt`
    /// on the client, VIP, HA and DLedger ports; members check each other's
    /// certificates against `ca.crt` (chain only: they dial each other by pod IP).
    pub secret_name: String,
    /// `Enforcing` (TLS only; the default) or `Permissive` (TLS and plain).
    #[serde(default)]
    pub mode: TlsMode,
    /// The brokers reach the name servers over TLS too (`tls.enable`), checking their
    /// certificates, names included, against `ca.crt`: set it when the `NameServer` has
    /// `spec.tls` with a certificate from the same CA.
    #[serde(default)]
    pub name_server_tls: bool,
}

impl Default for NameServerSpec {
    fn default() -> Self {
        NameServerSpec {
            replicas: default_one(),
            image: None,
            resources: None,
            port: default_ns_port(),
            placement: Placement::default(),
            service_type: ServiceType::default(),
            tls: None,
            acl: None,
        }
    }
}

/// Observed state of a `NameServer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServerStatus {
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `host:port` of each name server.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `Available`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Which name servers a broker group registers with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NameServerRef {
    /// A `NameServer` in the same namespace.
    pub name: String,
}

/// How a broker group replicates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Replication {
    /// A send is acknowledged once a slave has it.
    SyncMaster,
    /// A send is acknowledged after the master's write.
    #[default]
    AsyncMaster,
    /// Raft-replicated CommitLog (`enableDLegerCommitLog`).
    Raft,
}

/// `flushDiskType`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FlushDiskType {
    /// Acknowledge once on disk.
    SyncFlush,
    /// Acknowledge once in the page cache.
    #[default]
    AsyncFlush,
}

/// The PVC of each broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Requested size, e.g. `20Gi`.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// Storage class (cluster default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the PVCs when the group is deleted (kept by default).
    #[serde(default)]
    pub delete_claims_on_delete: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: default_storage_size(),
            storage_class_name: None,
            delete_claims_on_delete: false,
        }
    }
}

/// Automatic master replacement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// Promote a slave when the master stays unready.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long the master may be unready first.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub unready_grace_seconds: i32,
    /// Promote a ready slave outside the last recorded in-sync replica set when no member
    /// is ready (it may lack acknowledged messages; an Event says so). Default false: the
    /// group waits, `Degraded` with reason `NoInSyncReplica`.
    #[serde(default)]
    pub allow_unclean: bool,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            enabled: true,
            unready_grace_seconds: default_grace(),
            allow_unclean: false,
        }
    }
}

/// One master and `replicas − 1` slaves sharing a broker name.
// Several printer columns repeat `type_ = ...`, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "BrokerGroup",
    namespaced,
    status = "BrokerGroupStatus",
    doc = "One ferrocket master and its slaves, sharing a broker name",
    shortname = "bg",
    derive = "Default",
    printcolumn(name = "READY", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "MASTER", type_ = "string", json_path = ".status.master"),
    printcolumn(name = "EPOCH", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "MODE", type_ = "string", json_path = ".spec.replication"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.replication != 'Raft' || (self.replicas >= 3 && self.replicas % 2 == 1)").message("Raft needs an odd replica count of at least 3"))]
#[x_kube(validation = Rule::new("has(self.nameServerRef) || has(self.nameServerAddress)").message("set nameServerRef or nameServerAddress"))]
#[serde(rename_all = "camelCase")]
pub struct BrokerGroupSpec {
    /// The `NameServer` to register with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server_ref: Option<NameServerRef>,
    /// Or explicit name server addresses (`host:port;host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server_address: Option<String>,
    /// `brokerClusterName`.
    #[serde(default = "default_cluster")]
    pub cluster_name: String,
    /// Pods: one master, the rest slaves.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Replication mode.
    #[serde(default)]
    pub replication: Replication,
    /// Flush mode.
    #[serde(default)]
    pub flush_disk_type: FlushDiskType,
    /// Store volume.
    #[serde(default)]
    pub storage: Storage,
    /// Extra `broker.conf` keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_config: BTreeMap<String, String>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Port of `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,
    /// Automatic failover.
    #[serde(default)]
    pub failover: Failover,
    /// The pod that should be master (e.g. `mygroup-0`). When another pod is master and
    /// this one is a ready, in-sync slave, the operator moves the master role to it with
    /// a planned switchover that loses nothing (at most one move per minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_master: Option<String>,
    /// Pod placement.
    #[serde(default, flatten)]
    pub placement: Placement,
    /// RocketMQ's plain ACL (ACL 1.0) on every broker of the group: the `plain_acl.yml`
    /// in a Secret, mounted into the pods (`aclEnable=true`, `aclFile`); a changed
    /// Secret is in force once the kubelet has updated the mounted file (the broker
    /// re-reads it every 500 ms). The operator signs with the group's control key,
    /// which brokers treat as an admin account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclSpec>,
    /// A NetworkPolicy `<group>-ports` for the group's pods: the HA and DLedger ports
    /// from the group's own pods only, the client, VIP and metrics ports from
    /// `clientFrom` (everyone when empty). Absent: no policy (removed if there was
    /// one). Needs a CNI that enforces NetworkPolicies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<GroupNetworkPolicy>,
    /// TLS on every port of the group's brokers (`tls.server.mode` and friends), from a
    /// Secret. With `Enforcing`, the operator reaches the brokers over TLS too: give it
    /// the CA (`--broker-tls-trust`, the chart's `brokerTlsTrust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTls>,
    /// The account the group's brokers sign their requests to the name servers with
    /// (`namesrvAccessKey`, `namesrvSecretFile`): an admin account of the name server's
    /// `spec.acl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server_credentials: Option<NameServerCredentials>,
    /// RocketMQ 5.3's ACL 2.0 on every broker of the group (`authenticationEnabled`,
    /// `authorizationEnabled`): users and policies managed with the AUTH requests
    /// (`ferrocket admin auth`, mqadmin). Not together with `acl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// `spec.auth`: ACL 2.0's switches and the Secret with its two identities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret (in the group's namespace) with two keys, each RocketMQ's JSON:
    /// `initAuthenticationUser` (`{"username":..,"password":..}`: the first Super user,
    /// created at start unless it exists) and `innerClientAuthenticationCredentials`
    /// (`{"accessKey":..,"secretKey":..}`: the brokers' own Super identity, which a
    /// slave's metadata sync signs with).
    pub secret_name: String,
    /// `authorizationEnabled` (true): check each request against the user's policies;
    /// false authenticates only.
    #[serde(default = "default_true")]
    pub authorization: bool,
}

/// `spec.nameServerCredentials`: an access key, and the Secret holding its secret key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServerCredentials {
    /// The access key (an admin account of the name server's ACL file).
    pub access_key: String,
    /// The Secret (in the group's namespace) holding the secret key.
    pub secret_name: String,
    /// Its key in the Secret.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "secretKey".into()
}

/// `spec.networkPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupNetworkPolicy {
    /// Who may reach the client, VIP and metrics ports (NetworkPolicy peers; include the
    /// operator's pod and the clients). Empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

/// Where a group's `plain_acl.yml` is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclSpec {
    /// The Secret (in the group's namespace) holding the file.
    pub secret_name: String,
    /// Its key in the Secret.
    #[serde(default = "default_acl_key")]
    pub key: String,
}

fn default_acl_key() -> String {
    "plain_acl.yml".into()
}

impl Default for BrokerGroupSpec {
    fn default() -> Self {
        BrokerGroupSpec {
            name_server_ref: None,
            name_server_address: None,
            cluster_name: default_cluster(),
            replicas: default_one(),
            replication: Replication::default(),
            flush_disk_type: FlushDiskType::default(),
            storage: Storage::default(),
            broker_config: BTreeMap::new(),
            resources: None,
            image: None,
            metrics_port: default_metrics_port(),
            failover: Failover::default(),
            preferred_master: None,
            placement: Placement::default(),
            acl: None,
            network_policy: None,
            tls: None,
            name_server_credentials: None,
            auth: None,
        }
    }
}

/// One broker pod as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerMemberStatus {
    /// Pod name.
    pub pod: String,
    /// `brokerId` (0 = master).
    pub broker_id: i64,
    /// `master` or `slave`.
    pub role: String,
    /// Pod readiness.
    pub ready: bool,
    /// Last known CommitLog max offset.
    #[serde(default)]
    pub max_offset: i64,
}

/// Observed state of a `BrokerGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerGroupStatus {
    /// The master pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Role epoch (bumped at every failover).
    #[serde(default)]
    pub epoch: i64,
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Every broker pod.
    #[serde(default)]
    pub brokers: Vec<BrokerMemberStatus>,
    /// `Available`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last failover happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<String>,
    /// The master's in-sync replica set as last recorded (slave pods that hold every
    /// acknowledged message): a failover promotes only one of them. Absent: never
    /// reported (any ready slave may be promoted); empty: none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state_set: Option<Vec<String>>,
    /// The master's epoch of that set.
    #[serde(default)]
    pub sync_state_set_epoch: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn sample_spec_parses_with_defaults() {
        let spec: BrokerGroupSpec = serde_yaml::from_str(
            "nameServerRef: { name: ns }\nreplicas: 3\nreplication: SyncMaster\nflushDiskType: AsyncFlush\nstorage: { size: 20Gi, storageClassName: standard }\n",
        )
        .unwrap();
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.replication, Replication::SyncMaster);
        assert_eq!(spec.cluster_name, "DefaultCluster");
        assert!(spec.failover.enabled);
        assert_eq!(spec.failover.unready_grace_seconds, 10);
        let ns: NameServerSpec = serde_yaml::from_str("replicas: 2\n").unwrap();
        assert_eq!((ns.replicas, ns.port), (2, 9876));
    }

    #[test]
    fn crds_carry_printer_columns_short_names_status_and_cel() {
        let bg = serde_json::to_string(&BrokerGroup::crd()).unwrap();
        for needle in [
            r#""name":"MASTER""#,
            r#""name":"EPOCH""#,
            r#""shortNames":["bg"]"#,
            r#""status":{}"#,
            "Raft needs an odd replica count of at least 3",
            r#""enum":["SyncMaster","AsyncMaster","Raft"]"#,
        ] {
            assert!(bg.contains(needle), "missing {needle}");
        }
        let ns = serde_json::to_string(&NameServer::crd()).unwrap();
        assert!(ns.contains(r#""name":"READY""#));
    }
}
