//! ferrocket-operator: the `NameServer` and `BrokerGroup` custom resources (group
//! `ferrocket.io`), pure builders from spec to Kubernetes objects, the reconcilers that
//! apply them with server-side apply, leader election on a Lease, and metrics.

pub mod builders;
pub mod controller;
pub mod crd;
pub mod failover;
pub mod lease;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod run;
pub mod storage;
pub mod upgrade;

/// Every CRD as one multi-document YAML stream (what `ferrocket-operator crd` prints and
/// `crds/` holds).
///
/// # Errors
/// YAML serialization failures.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [crd::NameServer::crd(), crd::BrokerGroup::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
