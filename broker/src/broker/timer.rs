//! 5.x timer messages (`setDeliverTimeMs`, `setDelayTimeSec`, `setDelayTimeMs`): the
//! properties `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`.
//!
//! - On send (`timerWheelEnable`, default true): a delivery time in the future becomes
//!   `TIMER_OUT_MS` (rounded up to `timerPrecisionMs`, so never early), the destination
//!   goes to `REAL_TOPIC`/`REAL_QID`, and the message is stored in
//!   `rmq_sys_wheel_timer` queue 0. Further than `timerMaxDelaySec` ahead: refused with
//!   RocketMQ's MESSAGE_ILLEGAL remark. A time already past: stored as a plain message.
//! - The timer log is that queue: its ConsumeQueue entries carry the delivery time as
//!   tags code, so the wheel is rebuilt from 20-byte entries without reading records.
//!   The wheel itself (delivery time → message) is held in memory by a master, filled
//!   from the queue in order, and every `timerPrecisionMs` the due messages are copied
//!   to their real topic and queue.
//! - Progress, persisted every second in the consumer offsets of group
//!   `CID_RMQ_SYS_TIMER` on `rmq_sys_wheel_timer` (so slaves copy it): queue 0 = the
//!   oldest entry still waiting, queue 1 = how far the queue was read, queue 2 = the
//!   delivery time before which everything read was delivered. A restart or a promoted
//!   slave rebuilds the wheel from there; a message that fell due while the broker was
//!   down is delivered right after start. Delivery is at least once: a crash between a
//!   delivery and the next progress write repeats the deliveries of that last second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::Broker;
use crate::store::format::property;
use crate::store::{
    decode_record, encode_properties, now_ms, parse_properties, MessageToStore, TIMER_TOPIC,
};
use crate::sync::lock;

/// The group whose offsets on the timer topic are the service's progress.
pub const SYS_GROUP: &str = "CID_RMQ_SYS_TIMER";

/// Property names.
pub mod prop {
    /// The delivery time (ms) of a message waiting in the timer topic.
    pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
    /// When the timer service delivered it.
    pub const TIMER_DEQUEUE_MS: &str = "TIMER_DEQUEUE_MS";
    /// Cancels a timer message (5.x); not built.
    pub const TIMER_DEL_UNIQKEY: &str = "TIMER_DEL_UNIQKEY";
    pub use crate::broker::schedule::prop::{REAL_QID, REAL_TOPIC};
}

/// `timerPrecisionMs`, `timerMaxDelaySec`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Slot width: deliveries happen on multiples of it.
    pub precision_ms: i64,
    /// Longest accepted delay.
    pub max_delay_sec: i64,
}

/// RocketMQ's remark for a timer message it will not take.
#[must_use]
pub fn illegal_remark(max_delay_sec: i64) -> String {
    format!(
        "timer message illegal, the delay time should not be bigger than the max delay {}ms; \
         or if set del msg, the delay time should be bigger than the current time",
        max_delay_sec.saturating_mul(1000)
    )
}

/// What a send does with a message's timer properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    /// No timer property, or a time already past: store it as it is.
    Now,
    /// Rewritten into the timer topic, due at this time.
    Later(i64),
}

/// Rewrites a message with a future timer property into the timer topic.
///
/// # Errors
/// The remark of a refusal: a delay beyond `timerMaxDelaySec`, a property that is not
/// a number, a cancellation (`TIMER_DEL_UNIQKEY`, not built).
pub fn transform(m: &mut MessageToStore, now: i64, s: Settings) -> Result<Timing, String> {
    let mut props = parse_properties(&m.properties);
    let num = |k: &str| -> Result<Option<i64>, String> {
        props
            .get(k)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("timer property {k}={v} is not a number"))
            })
            .transpose()
    };
    let deliver = if let Some(at) = num(property::TIMER_DELIVER_MS)? {
        at
    } else if let Some(sec) = num(property::TIMER_DELAY_SEC)? {
        now.saturating_add(sec.saturating_mul(1000))
    } else if let Some(ms) = num(property::TIMER_DELAY_MS)? {
        now.saturating_add(ms)
    } else {
        return Ok(Timing::Now);
    };
    if props.contains_key(prop::TIMER_DEL_UNIQKEY) {
        return Err(
            "cancelling a timer message (TIMER_DEL_UNIQKEY) is not supported by this broker"
                .to_owned(),
        );
    }
    if deliver <= now {
        return Ok(Timing::Now);
    }
    if deliver - now > s.max_delay_sec.saturating_mul(1000) {
        return Err(illegal_remark(s.max_delay_sec));
    }
    let p = s.precision_ms.max(1);
    let out = deliver.saturating_add(p - 1) / p * p;
    props.insert(prop::TIMER_OUT_MS.into(), out.to_string());
    props.insert(prop::REAL_TOPIC.into(), m.topic.clone());
    props.insert(prop::REAL_QID.into(), m.queue_id.to_string());
    m.properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    m.topic = TIMER_TOPIC.into();
    m.queue_id = 0;
    Ok(Timing::Later(out))
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    /// (delivery time, queue offset) → CommitLog offset.
    wheel: BTreeMap<(i64, i64), u64>,
    /// Queue offsets still waiting.
    waiting: BTreeSet<i64>,
    /// Next queue offset to read into the wheel.
    read_to: i64,
    /// Everything read with a delivery time before this was delivered.
    delivered_before: i64,
}

/// Counters (runtime info).
#[derive(Debug, Default)]
pub struct Counters {
    /// Timer messages accepted.
    pub scheduled: AtomicU64,
    /// Timer messages delivered.
    pub delivered: AtomicU64,
}

/// The timer service's state.
#[derive(Debug, Default)]
pub struct Timers {
    state: Mutex<State>,
    /// What happened so far.
    pub counters: Counters,
}

impl Timers {
    /// Messages waiting in the wheel.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    fn is_ready(&self) -> bool {
        lock(&self.state).ready
    }
}

impl Broker {
    fn timer_progress(&self) -> Option<(i64, i64, i64)> {
        let st = lock(&self.timers.state);
        st.ready.then(|| {
            (
                st.waiting.first().copied().unwrap_or(st.read_to),
                st.read_to,
                st.delivered_before,
            )
        })
    }

    /// Records the timer progress in the offsets table (persisted with it).
    pub(super) fn persist_timer_progress(&self) {
        if let Some((oldest, read_to, before)) = self.timer_progress() {
            self.offsets.commit(SYS_GROUP, TIMER_TOPIC, 0, oldest);
            self.offsets.commit(SYS_GROUP, TIMER_TOPIC, 1, read_to);
            self.offsets.commit(SYS_GROUP, TIMER_TOPIC, 2, before);
        }
    }

    /// Rebuilds the wheel from the progress and the timer queue (a master starting or
    /// promoted).
    async fn rebuild_timers(&self) {
        let end = self.store.max_phy_offset();
        while self.store.dispatched_offset() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cq = self.store.consume_queue(TIMER_TOPIC, 0);
        let min = cq.as_ref().map_or(0, |c| c.min_offset());
        let q = |i| self.offsets.query(SYS_GROUP, TIMER_TOPIC, i);
        let from = q(0).unwrap_or(0).max(min);
        let read_mark = q(1).unwrap_or(0);
        let before = q(2).unwrap_or(0);
        let mut st = State {
            ready: true,
            read_to: from,
            delivered_before: before,
            ..State::default()
        };
        if let Some(cq) = &cq {
            loop {
                let entries = cq.entries(st.read_to, 4096);
                if entries.is_empty() {
                    break;
                }
                for e in entries {
                    let off = st.read_to;
                    st.read_to += 1;
                    let delivered = off < read_mark && e.tags_code < before;
                    if e.is_valid() && !delivered {
                        if let Ok(phys) = u64::try_from(e.commitlog_offset) {
                            st.wheel.insert((e.tags_code, off), phys);
                            st.waiting.insert(off);
                        }
                    }
                }
            }
        }
        let waiting = st.waiting.len();
        *lock(&self.timers.state) = st;
        info!(waiting, from, "timer wheel rebuilt");
    }

    /// Reads new timer-queue entries into the wheel.
    fn enqueue_timers(&self) {
        let Some(cq) = self.store.consume_queue(TIMER_TOPIC, 0) else {
            return;
        };
        let mut st = lock(&self.timers.state);
        let from = st.read_to.max(cq.min_offset());
        st.read_to = from;
        for e in cq.entries(from, 65_536) {
            let off = st.read_to;
            st.read_to += 1;
            if let (true, Ok(phys)) = (e.is_valid(), u64::try_from(e.commitlog_offset)) {
                st.wheel.insert((e.tags_code, off), phys);
                st.waiting.insert(off);
            }
        }
    }

    /// Delivers what is due (at most `max`); returns how many.
    fn deliver_due_timers(&self, max: usize) -> usize {
        let now = now_ms();
        let mut n = 0;
        loop {
            let next = {
                let st = lock(&self.timers.state);
                st.wheel
                    .first_key_value()
                    .map(|(k, v)| (*k, *v))
                    .filter(|((at, _), _)| *at <= now)
            };
            let Some(((at, off), phys)) = next.filter(|_| n < max) else {
                break;
            };
            if !self.deliver_timer(phys, now) {
                break;
            }
            n += 1;
            let mut st = lock(&self.timers.state);
            st.wheel.remove(&(at, off));
            st.waiting.remove(&off);
        }
        let mut st = lock(&self.timers.state);
        let first = st
            .wheel
            .first_key_value()
            .map_or(i64::MAX, |((at, _), _)| *at);
        st.delivered_before = first.min(now + 1).max(st.delivered_before);
        if n > 0 {
            self.data_appended();
            self.timers
                .counters
                .delivered
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }

    /// Copies one timer message to its real topic and queue; `false` when the store
    /// refused the copy (it stays due and is retried on the next tick).
    fn deliver_timer(&self, phys: u64, now: i64) -> bool {
        let Some(m) = self
            .store
            .read_message(phys)
            .and_then(|r| decode_record(&r).ok())
        else {
            warn!(phys, "timer message no longer in the store; dropped");
            return true;
        };
        let Some(msg) =
            super::schedule::destination_of(&m, &[], &[(prop::TIMER_DEQUEUE_MS, now.to_string())])
        else {
            warn!(phys, "timer message without REAL_TOPIC dropped");
            return true;
        };
        self.ensure_topic(&msg.topic, msg.queue_id);
        match self.store.append_messages(std::slice::from_ref(&msg)) {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, phys, "timer message could not be delivered; it stays due");
                false
            }
        }
    }
}

/// The service: rebuilds on becoming master, forgets on losing it; every tick reads
/// new entries and delivers what is due; progress every second.
pub fn spawn(b: &Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let b = Arc::clone(b);
    tokio::spawn(async move {
        let precision =
            Duration::from_millis(b.config.timer_precision_ms.clamp(10, 60_000).unsigned_abs());
        let tick = precision.min(Duration::from_millis(100));
        let mut last_persist = tokio::time::Instant::now();
        loop {
            if !b.is_master() {
                if b.timers.is_ready() {
                    *lock(&b.timers.state) = State::default();
                }
            } else if !b.timers.is_ready() {
                b.rebuild_timers().await;
            } else {
                b.enqueue_timers();
                let b2 = Arc::clone(&b);
                // Deliveries write to the store: off the async workers.
                let _ = tokio::task::spawn_blocking(move || b2.deliver_due_timers(200_000)).await;
                if last_persist.elapsed() >= Duration::from_secs(1) {
                    last_persist = tokio::time::Instant::now();
                    b.persist_timer_progress();
                }
            }
            tokio::time::sleep(tick).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        precision_ms: 1000,
        max_delay_sec: 259_200,
    };

    fn msg(props: &[(&str, &str)]) -> MessageToStore {
        MessageToStore {
            topic: "T".into(),
            queue_id: 3,
            properties: encode_properties(props.iter().copied()),
            ..MessageToStore::default()
        }
    }

    #[test]
    fn each_property_schedules_rounded_up_to_the_precision() {
        let now = 1_000_000_500;
        for (k, v, want) in [
            ("TIMER_DELIVER_MS", "1000005200", 1_000_006_000),
            ("TIMER_DELAY_SEC", "5", 1_000_006_000),
            ("TIMER_DELAY_MS", "4500", 1_000_005_000),
        ] {
            let mut m = msg(&[(k, v)]);
            assert_eq!(transform(&mut m, now, S), Ok(Timing::Later(want)), "{k}");
            assert_eq!((m.topic.as_str(), m.queue_id), (TIMER_TOPIC, 0));
            let p = parse_properties(&m.properties);
            assert_eq!(p["TIMER_OUT_MS"], want.to_string());
            assert_eq!(
                (p["REAL_TOPIC"].as_str(), p["REAL_QID"].as_str()),
                ("T", "3")
            );
        }
    }

    #[test]
    fn past_times_are_plain_and_far_ones_are_refused() {
        let now = 10_000;
        let mut m = msg(&[("TIMER_DELIVER_MS", "9000")]);
        assert_eq!(transform(&mut m, now, S), Ok(Timing::Now));
        assert_eq!(m.topic, "T");
        let mut far = msg(&[("TIMER_DELAY_SEC", "259201")]);
        assert_eq!(transform(&mut far, now, S), Err(illegal_remark(259_200)));
        let mut bad = msg(&[("TIMER_DELAY_SEC", "soon")]);
        assert!(transform(&mut bad, now, S).is_err());
        let mut cancel = msg(&[("TIMER_DELAY_SEC", "5"), ("TIMER_DEL_UNIQKEY", "k")]);
        assert!(transform(&mut cancel, now, S).is_err());
        let mut none = msg(&[("TAGS", "a")]);
        assert_eq!(transform(&mut none, now, S), Ok(Timing::Now));
    }
}
