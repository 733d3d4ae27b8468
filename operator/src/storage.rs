//! Storage growth: a larger `storage.size` grows every PVC of the group, then the
//! StatefulSet (whose claim template is immutable) is recreated around the running pods.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::info;

use crate::builders::{self, namespace_of};
use crate::controller::Error;
use crate::crd::BrokerGroup;

/// What [`expand`] found.
pub(crate) enum StorageState {
    /// The claim template matches `storage.size` (or there is no StatefulSet yet).
    Same,
    /// The PVCs were asked to grow and the StatefulSet was deleted (orphaning the pods)
    /// to be recreated with the new template.
    Expanded {
        /// The old size.
        from: String,
        /// The new size.
        to: String,
    },
    /// The size cannot change that way (a shrink, or a StorageClass without expansion).
    Refused(String),
}

/// Grows the group's PVCs to `storage.size` when it is larger than the StatefulSet's
/// claim template, then deletes the StatefulSet with `propagationPolicy: Orphan` so the
/// next apply recreates it with the new template while the pods keep running (the
/// claim template of a StatefulSet is immutable).
pub(crate) async fn expand(client: &Client, bg: &BrokerGroup) -> Result<StorageState, Error> {
    let namespace = namespace_of(bg);
    let name = bg.name_any();
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let Some(current) = sts_api.get_opt(&name).await? else {
        return Ok(StorageState::Same);
    };
    let want = bg.spec.storage.size.clone();
    let Some(have) = builders::claim_size(&current) else {
        return Ok(StorageState::Same);
    };
    let (Some(w), Some(h)) = (
        builders::quantity_bytes(&want),
        builders::quantity_bytes(&have),
    ) else {
        return Ok(StorageState::Same);
    };
    if w == h {
        return Ok(StorageState::Same);
    }
    if w < h {
        return Ok(StorageState::Refused(format!(
            "storage.size cannot shrink from {have} to {want}: PVCs only grow"
        )));
    }
    let pvcs = pvc_api(client, bg);
    for pvc in group_pvcs(&pvcs, bg).await? {
        let pvc_name = pvc.name_any();
        let requested = requested_bytes(&pvc);
        if requested.is_some_and(|r| r >= w) {
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": want}}}});
        if let Err(e) = pvcs
            .patch(&pvc_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Typically: the StorageClass does not allow volume expansion.
            return Ok(StorageState::Refused(format!(
                "PVC {pvc_name} cannot grow to {want}: {e}"
            )));
        }
        info!(pvc = %pvc_name, from = %have, to = %want, "PVC asked to grow");
    }
    sts_api
        .delete(
            &name,
            &kube::api::DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..kube::api::DeleteParams::default()
            },
        )
        .await?;
    info!(statefulset = %name, from = %have, to = %want, "StatefulSet deleted (pods orphaned) to be recreated with the new claim size");
    Ok(StorageState::Expanded {
        from: have,
        to: want,
    })
}

type Pvc = k8s_openapi::api::core::v1::PersistentVolumeClaim;

fn pvc_api(client: &Client, bg: &BrokerGroup) -> Api<Pvc> {
    Api::namespaced(client.clone(), &namespace_of(bg))
}

/// What a PVC requests, in bytes.
fn requested_bytes(p: &Pvc) -> Option<f64> {
    p.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| builders::quantity_bytes(&q.0))
}

/// The group's broker PVCs (selected by the pods' labels).
async fn group_pvcs(pvcs: &Api<Pvc>, bg: &BrokerGroup) -> Result<Vec<Pvc>, Error> {
    let selector = builders::selector_labels(&bg.name_any(), "broker")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Whether some PVC of the group has a capacity below what it requests (a resize in
/// progress).
pub(crate) async fn growing(client: &Client, bg: &BrokerGroup) -> bool {
    let Ok(list) = group_pvcs(&pvc_api(client, bg), bg).await else {
        return false;
    };
    list.iter().any(|p| {
        let req = requested_bytes(p);
        let cap = p
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .and_then(|q| builders::quantity_bytes(&q.0));
        matches!((req, cap), (Some(r), Some(c)) if c < r)
    })
}
