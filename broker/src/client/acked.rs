//! An acknowledged-writes checker for fault tests: record the id of every message a
//! broker acknowledged (SEND_OK), feed in everything consumed after the faults, and get
//! the counts: acknowledged, lost (acknowledged but never consumed), duplicated
//! (consumed more than once), and unacknowledged extras (stored though the send failed
//! or timed out, which RocketMQ allows).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The outcome of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Messages acknowledged.
    pub acked: usize,
    /// Acknowledged messages not consumed.
    pub lost: usize,
    /// Consumed ids seen more than once (counting each extra copy).
    pub duplicated: usize,
    /// Consumed ids that were never acknowledged.
    pub unacked_delivered: usize,
    /// Up to 10 lost ids, for the failure message.
    pub lost_sample: Vec<String>,
}

impl std::fmt::Display for AckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked {}, lost {}, duplicated {}, delivered without ack {}",
            self.acked, self.lost, self.duplicated, self.unacked_delivered
        )
    }
}

/// Thread-safe record of acknowledged ids.
#[derive(Debug, Default)]
pub struct AckedLog {
    acked: Mutex<HashSet<String>>,
    attempted: Mutex<usize>,
}

impl AckedLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an attempt (acknowledged or not).
    pub fn attempted(&self) {
        *self.attempted.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Records an acknowledged id.
    pub fn acked(&self, id: impl Into<String>) {
        self.acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into());
    }

    /// Sends attempted so far.
    #[must_use]
    pub fn attempts(&self) -> usize {
        *self.attempted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acknowledged so far.
    #[must_use]
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Compares with what was consumed.
    #[must_use]
    pub fn check<'a>(&self, consumed: impl IntoIterator<Item = &'a str>) -> AckReport {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in consumed {
            *seen.entry(id).or_default() += 1;
        }
        let mut lost: Vec<String> = acked
            .iter()
            .filter(|id| !seen.contains_key(id.as_str()))
            .cloned()
            .collect();
        lost.sort();
        AckReport {
            acked: acked.len(),
            lost: lost.len(),
            duplicated: seen.values().map(|n| n - 1).sum(),
            unacked_delivered: seen.keys().filter(|id| !acked.contains(**id)).count(),
            lost_sample: lost.into_iter().take(10).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_duplicated_and_extras() {
        let log = AckedLog::new();
        for id in ["a", "b", "c"] {
            log.attempted();
            log.acked(id);
        }
        log.attempted();
        let r = log.check(["a", "a", "c", "x"]);
        assert_eq!(
            (r.acked, r.lost, r.duplicated, r.unacked_delivered),
            (3, 1, 1, 1)
        );
        assert_eq!(r.lost_sample, ["b"]);
        assert_eq!(log.attempts(), 4);
        assert_eq!(log.check(["a", "b", "c"]).lost, 0);
    }
}
