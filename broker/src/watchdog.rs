//! Heartbeats of the loops a broker cannot live without, for `/healthz`.
//!
//! Each loop calls [`Heartbeat::beat`] once per turn; [`Heartbeat::stalled`] says how
//! long ago the last beat was when that exceeds the loop's limit. A loop blocked in a
//! system call (an `msync` on a hung disk, a runtime whose workers are all stuck) stops
//! beating, `/healthz` answers 503 naming it, and the kubelet's liveness probe restarts
//! the process (the operator then sees a dead master and fails over).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn ms_since_base(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base()).as_millis()).unwrap_or(u64::MAX)
}

/// One loop's heartbeat.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    limit: Duration,
    /// Milliseconds since the process base of the last beat (0: never, counted from
    /// creation).
    last: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat for loop `name`, stalled when silent longer than `limit`.
    #[must_use]
    pub fn new(name: &'static str, limit: Duration) -> Self {
        Heartbeat {
            name,
            limit,
            last: AtomicU64::new(ms_since_base(Instant::now())),
        }
    }

    /// The loop's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records a turn of the loop now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Records a turn of the loop at `t`.
    pub fn beat_at(&self, t: Instant) {
        self.last.fetch_max(ms_since_base(t), Ordering::Relaxed);
    }

    /// How long the loop has been silent at `now`, when longer than its limit.
    #[must_use]
    pub fn stalled_at(&self, now: Instant) -> Option<Duration> {
        let silent = Duration::from_millis(
            ms_since_base(now).saturating_sub(self.last.load(Ordering::Relaxed)),
        );
        (silent > self.limit).then_some(silent)
    }

    /// [`Heartbeat::stalled_at`] now.
    #[must_use]
    pub fn stalled(&self) -> Option<Duration> {
        self.stalled_at(Instant::now())
    }
}

/// The `/healthz` verdict over `beats`: `Err` names every stalled loop.
///
/// # Errors
/// One or more loops stalled.
pub fn verdict<'a>(beats: impl IntoIterator<Item = &'a Heartbeat>) -> Result<(), String> {
    let stuck: Vec<String> = beats
        .into_iter()
        .filter_map(|h| {
            h.stalled()
                .map(|d| format!("{} silent for {} ms", h.name(), d.as_millis()))
        })
        .collect();
    if stuck.is_empty() {
        Ok(())
    } else {
        Err(stuck.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_stalled_only_past_its_limit() {
        let h = Heartbeat::new("flush", Duration::from_secs(10));
        let t0 = Instant::now();
        h.beat_at(t0);
        assert_eq!(h.stalled_at(t0 + Duration::from_secs(9)), None);
        let late = h.stalled_at(t0 + Duration::from_secs(11)).expect("stalled");
        assert!(late >= Duration::from_secs(10), "{late:?}");
        // A beat brings it back; an older beat never moves it back.
        h.beat_at(t0 + Duration::from_secs(11));
        h.beat_at(t0);
        assert_eq!(h.stalled_at(t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn the_verdict_names_every_stalled_loop() {
        let ok = Heartbeat::new("requests", Duration::from_secs(60));
        let stuck = Heartbeat::new("flush", Duration::from_millis(0));
        stuck.beat_at(base());
        std::thread::sleep(Duration::from_millis(5));
        assert!(verdict([&ok]).is_ok());
        let e = verdict([&ok, &stuck]).expect_err("flush is stalled");
        assert!(e.starts_with("flush silent for"), "{e}");
    }
}
