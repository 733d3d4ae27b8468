//! ferrocket-operator: CRD types (`NameServer`, `BrokerGroup`, group `ferrocket.io`).
//! The reconcilers, builders and failover come in the operator and failover issues.

pub mod crd;

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
