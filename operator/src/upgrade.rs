//! Rolling a broker group to a new pod template (image, resources, config) in the order
//! that loses nothing: the StatefulSet uses `updateStrategy: OnDelete`, and the operator
//! deletes outdated pods itself — one at a time, only while every pod is ready — slaves
//! first, then moves the master to an updated in-sync slave with a switchover, then
//! deletes the old master (a slave by then). The StatefulSet controller recreates each
//! deleted pod from the new template.

/// The label the StatefulSet controller puts on each pod: the revision it was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// One pod of the group as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRevision {
    /// Pod name.
    pub pod: String,
    /// Its `controller-revision-hash` label.
    pub revision: Option<String>,
    /// Ready and not being deleted.
    pub ready: bool,
}

/// The next step of a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the StatefulSet's update revision (or it is not known yet).
    Idle,
    /// Outdated pods remain, but the group is not whole: wait (why).
    Wait(String),
    /// Delete this outdated slave (the StatefulSet recreates it updated).
    Delete(String),
    /// Only the master is outdated: switch it over to one of these updated in-sync
    /// slaves first (most wanted first).
    MoveMaster(Vec<String>),
}

/// The next step for `pods` (the group wants `want` pods) towards `update_revision`,
/// with `master` the recorded master and `in_sync` its recorded in-sync set (None: no
/// set recorded, any slave will do).
#[must_use]
pub fn plan(
    update_revision: Option<&str>,
    pods: &[PodRevision],
    want: usize,
    master: &str,
    in_sync: Option<&[String]>,
) -> Step {
    let Some(target) = update_revision else {
        return Step::Idle;
    };
    let outdated = |p: &PodRevision| p.revision.as_deref() != Some(target);
    if !pods.iter().any(outdated) {
        return Step::Idle;
    }
    if pods.len() < want {
        return Step::Wait(format!(
            "{} of {want} pods exist; waiting before replacing the next",
            pods.len()
        ));
    }
    if let Some(p) = pods.iter().find(|p| !p.ready) {
        return Step::Wait(format!(
            "{} is not ready; waiting before replacing the next",
            p.pod
        ));
    }
    let member = |p: &PodRevision| in_sync.is_some_and(|s| s.contains(&p.pod));
    let ordinal = |p: &PodRevision| crate::builders::pod_ordinal(&p.pod).unwrap_or(0);
    // Slaves first: those outside the in-sync set before its members (a member's
    // restart shrinks the set), then the highest ordinal first, as StatefulSets roll.
    let next_slave = pods
        .iter()
        .filter(|p| p.pod != master && outdated(p))
        .min_by_key(|p| (member(p), std::cmp::Reverse(ordinal(p))));
    if let Some(p) = next_slave {
        return Step::Delete(p.pod.clone());
    }
    // Only the master is outdated.
    if pods.len() == 1 {
        // Nobody to hand over to: the one broker restarts on its PVC.
        return Step::Delete(master.to_string());
    }
    let mut candidates: Vec<&PodRevision> = pods
        .iter()
        .filter(|p| p.pod != master && (in_sync.is_none() || member(p)))
        .collect();
    candidates.sort_by_key(|p| ordinal(p));
    if candidates.is_empty() {
        return Step::Wait(format!(
            "no updated slave is in {master}'s in-sync set yet; waiting before moving the master"
        ));
    }
    Step::MoveMaster(candidates.into_iter().map(|p| p.pod.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rev: &str, ready: bool) -> PodRevision {
        PodRevision {
            pod: name.into(),
            revision: Some(rev.into()),
            ready,
        }
    }

    #[test]
    fn slaves_first_then_the_master_moves_then_restarts() {
        let set = vec!["g-1".to_string(), "g-2".to_string()];
        let at = |revs: [&str; 3], master: &str| {
            let pods: Vec<PodRevision> = revs
                .iter()
                .enumerate()
                .map(|(i, r)| pod(&format!("g-{i}"), r, true))
                .collect();
            plan(Some("new"), &pods, 3, master, Some(&set))
        };
        assert_eq!(at(["new", "new", "new"], "g-0"), Step::Idle);
        assert_eq!(at(["old", "old", "old"], "g-0"), Step::Delete("g-2".into()));
        assert_eq!(at(["old", "old", "new"], "g-0"), Step::Delete("g-1".into()));
        assert_eq!(
            at(["old", "new", "new"], "g-0"),
            Step::MoveMaster(vec!["g-1".into(), "g-2".into()])
        );
        // After the switchover the old master is an outdated slave.
        assert_eq!(at(["old", "new", "new"], "g-1"), Step::Delete("g-0".into()));
        // A slave outside the in-sync set goes before members.
        let pods = [
            pod("g-0", "old", true),
            pod("g-1", "old", true),
            pod("g-2", "old", true),
        ];
        assert_eq!(
            plan(Some("new"), &pods, 3, "g-0", Some(&["g-2".to_string()])),
            Step::Delete("g-1".into())
        );
    }

    #[test]
    fn nothing_is_replaced_while_the_group_is_not_whole() {
        let pods = [
            pod("g-0", "old", true),
            pod("g-1", "new", false),
            pod("g-2", "old", true),
        ];
        assert!(matches!(
            plan(Some("new"), &pods, 3, "g-0", None),
            Step::Wait(_)
        ));
        let pods = [pod("g-0", "old", true), pod("g-2", "old", true)];
        assert!(matches!(
            plan(Some("new"), &pods, 3, "g-0", None),
            Step::Wait(_)
        ));
        assert_eq!(plan(None, &pods, 3, "g-0", None), Step::Idle);
        // No updated slave in the set: the master waits.
        let pods = [pod("g-0", "old", true), pod("g-1", "new", true)];
        assert!(matches!(
            plan(Some("new"), &pods, 2, "g-0", Some(&[])),
            Step::Wait(_)
        ));
        // One broker: it restarts.
        assert_eq!(
            plan(Some("new"), &[pod("g-0", "old", true)], 1, "g-0", None),
            Step::Delete("g-0".into())
        );
    }
}
