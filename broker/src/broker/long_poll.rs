//! Long polling: pulls that found nothing wait here until the dispatcher reports a new
//! ConsumeQueue entry past their offset (no sleeping, no periodic re-check), or until
//! their suspend timeout.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The longest a pull is ever held, whatever the client asks and whatever
/// `brokerSuspendMaxTimeMillis` says (both come from outside: a pull header and
/// UPDATE_BROKER_CONFIG).
pub const MAX_SUSPEND: std::time::Duration = std::time::Duration::from_secs(3600);

/// When a pull that asked to be held `requested_ms` gives up, on a broker that holds
/// pulls at most `broker_max_ms`: the smaller of the two, never more than
/// [`MAX_SUSPEND`], and never an overflow.
#[must_use]
pub fn suspend_deadline(
    now: tokio::time::Instant,
    requested_ms: u64,
    broker_max_ms: u64,
) -> tokio::time::Instant {
    let wait = std::time::Duration::from_millis(requested_ms.min(broker_max_ms)).min(MAX_SUSPEND);
    now.checked_add(wait).unwrap_or(now)
}

type Waiters = HashMap<String, HashMap<i32, Vec<(i64, oneshot::Sender<()>)>>>;

/// Suspended pulls by topic and queue.
#[derive(Debug, Default)]
pub struct PullHold {
    waiters: Mutex<Waiters>,
    count: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

impl PullHold {
    /// Registers a pull waiting for an entry at or after `offset`.
    pub fn wait(&self, topic: &str, queue_id: i32, offset: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = lock(&self.waiters);
        if self.closed.load(Ordering::Acquire) {
            // Shutting down: the pull answers at once instead of being held.
            return rx;
        }
        w.entry(topic.to_owned())
            .or_default()
            .entry(queue_id)
            .or_default()
            .push((offset, tx));
        self.count.fetch_add(1, Ordering::Relaxed);
        rx
    }

    /// The queue's max offset is now `max_offset`: wake the pulls it satisfies.
    pub fn notify(&self, topic: &str, queue_id: i32, max_offset: i64) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut w = lock(&self.waiters);
        let Some(queues) = w.get_mut(topic) else {
            return;
        };
        let Some(list) = queues.get_mut(&queue_id) else {
            return;
        };
        let mut woken = 0;
        list.retain_mut(|(offset, tx)| {
            let ready = *offset < max_offset || tx.is_closed();
            if ready {
                let sender = std::mem::replace(tx, oneshot::channel().0);
                let _ = sender.send(());
                woken += 1;
            }
            !ready
        });
        if list.is_empty() {
            queues.remove(&queue_id);
        }
        if queues.is_empty() {
            w.remove(topic);
        }
        self.count.fetch_sub(woken, Ordering::Relaxed);
    }

    /// Shutdown: wakes every held pull (each answers with what it has, usually
    /// PULL_NOT_FOUND) and holds no new one.
    pub fn wake_all(&self) {
        let mut w = lock(&self.waiters);
        self.closed.store(true, Ordering::Release);
        for (_, queues) in w.drain() {
            for (_, list) in queues {
                for (_, tx) in list {
                    let _ = tx.send(());
                }
            }
        }
        self.count.store(0, Ordering::Relaxed);
    }

    /// Number of suspended pulls (a metric).
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_satisfied_waiters() {
        let h = PullHold::default();
        let a = h.wait("T", 0, 5);
        let mut b = h.wait("T", 0, 9);
        let mut c = h.wait("T", 1, 0);
        h.notify("T", 0, 6);
        a.await.unwrap();
        assert!(b.try_recv().is_err());
        assert!(c.try_recv().is_err());
        assert_eq!(h.waiting(), 2);
        h.notify("T", 0, 10);
        b.await.unwrap();
        assert_eq!(h.waiting(), 1);
    }

    #[tokio::test]
    async fn wake_all_answers_held_pulls_and_holds_no_more() {
        let h = PullHold::default();
        let a = h.wait("T", 0, 5);
        h.wake_all();
        a.await.unwrap();
        assert_eq!(h.waiting(), 0);
        // A pull registered after shutdown is not held (its sender is gone).
        assert!(h.wait("T", 0, 5).await.is_err());
    }

    #[test]
    fn deadlines_are_bounded_and_never_overflow() {
        use std::time::Duration;
        let now = tokio::time::Instant::now();
        assert_eq!(
            suspend_deadline(now, 1000, 30_000),
            now + Duration::from_secs(1)
        );
        assert_eq!(
            suspend_deadline(now, 60_000, 30_000),
            now + Duration::from_secs(30)
        );
        assert_eq!(suspend_deadline(now, u64::MAX, u64::MAX), now + MAX_SUSPEND);
        assert_eq!(suspend_deadline(now, 0, u64::MAX), now);
    }
}
