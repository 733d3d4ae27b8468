//! The Kubernetes permissions the operator uses, in one place. The chart's RBAC must
//! cover these (checked by `tests/chart.rs`), and the reconcile tests check that every
//! API call the reconcilers make is listed here.

/// One RBAC rule: API group, resource (with `/subresource`), verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource, e.g. `statefulsets` or `brokergroups/status`.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Whether the rule applies in the operator's own namespace only (the Lease).
    pub own_namespace: bool,
}

const fn p(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        own_namespace: false,
    }
}

/// Everything `ferrocket-operator run` calls. Server-side apply is `patch` (and `create`
/// when the object does not exist yet); controllers `list` and `watch` what they own.
pub const PERMISSIONS: &[Permission] = &[
    p("ferrocket.io", "nameservers", &["get", "list", "watch"]),
    p("ferrocket.io", "brokergroups", &["get", "list", "watch"]),
    p(
        "ferrocket.io",
        "nameservers/status",
        &["get", "patch", "update"],
    ),
    p(
        "ferrocket.io",
        "brokergroups/status",
        &["get", "patch", "update"],
    ),
    // `delete`: recreated (pods orphaned) when storage.size grows.
    p(
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The brokers' PVCs grow with storage.size.
    p("", "persistentvolumeclaims", &["list", "patch"]),
    p("", "services", &["get", "list", "watch", "create", "patch"]),
    // `update`: the roles ConfigMap is replaced with a resourceVersion precondition.
    p(
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch", "update"],
    ),
    // Each group's control Secret (`<group>-control`), applied by name.
    p("", "secrets", &["get", "create", "patch"]),
    // `patch`: the in-sync label; `delete`: outdated pods in a rolling update (OnDelete).
    p("", "pods", &["get", "list", "watch", "patch", "delete"]),
    p(
        "policy",
        "poddisruptionbudgets",
        &["get", "create", "patch"],
    ),
    p("events.k8s.io", "events", &["create", "patch"]),
    // `spec.networkPolicy`: `<group>-ports`, applied by name, deleted when the field goes.
    p(
        "networking.k8s.io",
        "networkpolicies",
        &["get", "create", "patch", "delete"],
    ),
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        own_namespace: true,
    },
];

/// Whether `(group, resource, verb)` is in [`PERMISSIONS`].
#[must_use]
pub fn allowed(group: &str, resource: &str, verb: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// [`PERMISSIONS`] as JSON (`ferrocket-operator permissions`).
#[must_use]
pub fn permissions_json() -> String {
    let rules: Vec<serde_json::Value> = PERMISSIONS
        .iter()
        .map(|p| {
            serde_json::json!({
                "apiGroup": p.group,
                "resource": p.resource,
                "verbs": p.verbs,
                "ownNamespace": p.own_namespace,
            })
        })
        .collect();
    serde_json::Value::Array(rules).to_string()
}
