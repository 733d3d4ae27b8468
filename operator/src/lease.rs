//! Leader election on a `coordination.k8s.io/v1` Lease, through kube's API.
//!
//! A candidate holds the lease while it renews it within `leaseDurationSeconds`; any
//! other candidate takes it over once a renewal is that late. Every write carries the
//! `resourceVersion` it read, so two candidates racing for an expired lease cannot both
//! win: the API server refuses the second write with 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

/// One candidate for a lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseLock {
    /// A candidate named `identity` for lease `name`.
    #[must_use]
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseLock {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// This candidate's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How long a lease lasts without renewal.
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Acquires the lease or renews it. `Ok(true)` while this candidate holds it.
    ///
    /// # Errors
    /// API failures other than a lost race (which is `Ok(false)`).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity && !holder.is_empty() {
            let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            let expires = spec
                .renew_time
                .as_ref()
                .map(|t| t.0 + SignedDuration::from_secs(held_for));
            if expires.is_some_and(|e| e > now) {
                return Ok(false);
            }
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        } else if holder.is_empty() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(MicroTime(now));
        // `replace` sends the resourceVersion read above: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown) so a standby takes over at once.
    ///
    /// # Errors
    /// API failures.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the lease, retrying every `retry`.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => tracing::debug!(lease = %self.name, "lease held by another replica"),
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease request failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// How long the holder may go without a successful renewal before it stops
    /// leading: two thirds of the duration (client-go's 10 s of 15), so it stops before
    /// another replica can take the lease over.
    #[must_use]
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Renews every third of the lease duration (retrying every second after a
    /// failure); returns when the lease is lost: another holder, or no successful
    /// renewal within [`LeaseLock::renew_deadline`] (each attempt is bounded by what is
    /// left of it, so a hung API call cannot keep a stale leader running).
    pub async fn hold(&self) {
        let period = self.duration / 3;
        let retry = Duration::from_secs(1).min(period);
        let deadline = self.renew_deadline();
        let mut last_ok = tokio::time::Instant::now();
        let mut wait = period;
        loop {
            tokio::time::sleep(wait).await;
            let left = deadline.saturating_sub(last_ok.elapsed());
            if left.is_zero() {
                tracing::warn!(lease = %self.name, "no renewal within the renew deadline; stepping down");
                return;
            }
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_ok = tokio::time::Instant::now();
                    wait = period;
                }
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.name, "lease taken by another replica");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                    wait = retry;
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "lease renewal timed out; stepping down");
                    return;
                }
            }
        }
    }
}
