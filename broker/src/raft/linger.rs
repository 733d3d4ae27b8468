//! The proposer's group-commit wait under SYNC_FLUSH (used by [`super::node`]'s
//! proposer): after an entry of small sends is applied, the next entry waits briefly
//! for the producers it answered.

use std::time::{Duration, Instant};

/// An entry proposed and not yet applied: where it ends, its size, and how many
/// appends (send requests) it carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) end: u64,
    pub(super) bytes: u64,
    pub(super) requests: u64,
}

/// The proposer's group-commit wait (SYNC_FLUSH, one entry in flight). Without it, the
/// producers an entry answers send again while the next entry is already on its way,
/// so each of their sends waits about two rounds, and the producers split into two
/// halves that take turns. So when an entry of small sends (at least two, at most
/// [`LINGER_BYTES`]) is applied with nothing else in flight, the next entry waits until
/// as many appends have come in as that entry answered, at most [`MAX_LINGER`]. A wait
/// that runs out (the producers had other work) turns it off for the next
/// [`LINGER_REST`] entries, so producers that pause between sends pay it rarely.
/// Measured in `BENCHMARKS.md`.
#[derive(Debug, Default)]
pub(super) struct Linger {
    /// While holding: until when, the appends counted at the start, how many wanted.
    hold: Option<(Instant, u64, u64)>,
    /// Entries still to go without a wait after one ran out.
    rest: u32,
}

/// The longest a proposal waits for the producers the last entry answered (tokio's
/// timer rounds it up to its next millisecond).
const MAX_LINGER: Duration = Duration::from_millis(1);
/// Entries larger than this (batches) go on without a wait: their write and syncs
/// dominate a round, and overlapping them with arrivals was measured faster.
const LINGER_BYTES: u64 = 64 * 1024;
/// Entries proposed without a wait after a wait ran out.
const LINGER_REST: u32 = 8;

impl Linger {
    /// Entry `done` was applied and nothing else is in flight; `appends` so far.
    pub(super) fn applied(&mut self, done: InFlight, appends: u64, now: Instant) {
        if done.requests < 2 || done.bytes > LINGER_BYTES {
            self.hold = None;
        } else if self.rest > 0 {
            self.rest -= 1;
            self.hold = None;
        } else {
            self.hold = Some((now + MAX_LINGER, appends, done.requests));
        }
    }

    /// `None`: propose now; `Some(t)`: wait for more appends, at most until `t`.
    pub(super) fn hold(&mut self, appends: u64, now: Instant) -> Option<Instant> {
        let (until, base, want) = self.hold?;
        if appends.saturating_sub(base) >= want {
            self.hold = None;
            return None;
        }
        if now >= until {
            self.hold = None;
            self.rest = LINGER_REST;
            return None;
        }
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(requests: u64, bytes: u64) -> InFlight {
        InFlight {
            end: 0,
            bytes,
            requests,
        }
    }

    #[test]
    fn the_next_entry_waits_for_as_many_sends_as_the_last_answered() {
        let t0 = Instant::now();
        let mut l = Linger::default();
        l.applied(entry(3, 3 * 1100), 100, t0);
        assert_eq!(l.hold(100, t0), Some(t0 + MAX_LINGER));
        assert_eq!(
            l.hold(102, t0),
            Some(t0 + MAX_LINGER),
            "two of three are back"
        );
        assert_eq!(l.hold(103, t0), None, "all three are back");
        assert_eq!(l.hold(103, t0), None, "the wait is over once released");
        // The next small entry waits again.
        l.applied(entry(2, 2200), 103, t0);
        assert!(l.hold(103, t0).is_some());
    }

    #[test]
    fn single_sends_and_large_entries_go_on_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::default();
        l.applied(entry(1, 1100), 0, t0);
        assert_eq!(l.hold(0, t0), None, "one producer: nobody to wait for");
        l.applied(entry(8, LINGER_BYTES + 1), 0, t0);
        assert_eq!(
            l.hold(0, t0),
            None,
            "batches overlap their arrivals instead"
        );
        l.applied(entry(0, 0), 0, t0);
        assert_eq!(l.hold(0, t0), None);
    }

    #[test]
    fn a_wait_that_runs_out_rests_for_the_next_entries() {
        let t0 = Instant::now();
        let later = t0 + MAX_LINGER;
        let mut l = Linger::default();
        l.applied(entry(4, 4400), 10, t0);
        assert!(l.hold(11, t0).is_some());
        assert_eq!(l.hold(11, later), None, "the wait runs out at MAX_LINGER");
        for i in 0..LINGER_REST {
            l.applied(entry(4, 4400), 11, later);
            assert_eq!(
                l.hold(11, later),
                None,
                "entry {i} after the miss waits not"
            );
        }
        l.applied(entry(4, 4400), 11, later);
        assert!(l.hold(11, later).is_some(), "then it waits again");
    }
}
