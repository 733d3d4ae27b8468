//! Operator metrics (reconciles, failures, duration, leadership), served on `/metrics`
//! with `/healthz` and `/readyz` by the same HTTP endpoint as the brokers'.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    failovers: Family<Labels, Counter>,
    switchovers: Family<Labels, Counter>,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrocket_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram as fn() -> Histogram,
        );
        let failovers = Family::<Labels, Counter>::default();
        let switchovers = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconcile runs", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconcile runs that ended in an error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "failovers",
            "Masters replaced by the operator",
            failovers.clone(),
        );
        registry.register(
            "switchovers",
            "Planned master moves (label result: done or failed)",
            switchovers.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            failovers,
            switchovers,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

/// Times one reconcile; records the duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&vec![("kind".into(), self.kind.into())])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the guard drops.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, kind: &str, error: &str) {
        self.failures
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("error".into(), error.into()),
            ])
            .inc();
    }

    /// Counts a failover of `group`.
    pub fn failover(&self, namespace: &str, group: &str) {
        self.failovers
            .get_or_create(&vec![
                ("namespace".into(), namespace.into()),
                ("group".into(), group.into()),
            ])
            .inc();
    }

    /// Counts a planned switchover of `group` (`result`: `done` or `failed`).
    pub fn switchover(&self, namespace: &str, group: &str, result: &str) {
        self.switchovers
            .get_or_create(&vec![
                ("namespace".into(), namespace.into()),
                ("group".into(), group.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks the process ready (API client built, watches starting). Standby replicas are
    /// ready too, so a rolling update of the operator never waits on the lease.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Reconciles counted for `kind` so far.
    #[must_use]
    pub fn reconciles_of(&self, kind: &str) -> u64 {
        self.reconciles
            .get_or_create(&vec![("kind".into(), kind.into())])
            .get()
    }

    /// OpenMetrics text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `/metrics`, `/healthz` and `/readyz` (started) through the broker's HTTP endpoint.
impl ferrocket::metrics::Observable for Metrics {
    fn metrics(&self) -> String {
        self.encode()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
