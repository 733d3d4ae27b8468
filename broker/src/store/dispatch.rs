//! Dispatch: turning CommitLog records into ConsumeQueue and IndexFile entries.
//!
//! The dispatcher follows the CommitLog from its reput offset to the published max
//! offset. Writing a ConsumeQueue entry at the record's own queue offset makes
//! re-dispatch after a crash idempotent. The dispatch thread (`dispatch_loop`) and
//! `dispatch_range` live here with the record head they read.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

use super::format::{property, sys_flag, tags_code, CqEntry, RecordView};
use super::{lock, Arrival, ArrivalListener, DispatchState, Result, SCHEDULE_TOPIC, TIMER_TOPIC};

/// The fields of a record the dispatcher and the queue-offset table need, borrowed from
/// the record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead<'a> {
    /// Record size.
    pub size: usize,
    /// Queue id.
    pub queue_id: i32,
    /// Logical offset in its queue.
    pub queue_offset: i64,
    /// CommitLog offset.
    pub physical_offset: i64,
    /// `MessageSysFlag` bits.
    pub sys_flag: i32,
    /// Store time, ms.
    pub store_timestamp: i64,
    /// Topic.
    pub topic: &'a str,
    /// Raw property string.
    pub properties: &'a str,
}

impl<'a> RecordHead<'a> {
    /// The head of a whole record; `None` when the bytes are not a valid record
    /// ([`RecordView::parse`]).
    pub fn parse(rec: &'a [u8]) -> Option<Self> {
        let v = RecordView::parse(rec).ok()?;
        Some(RecordHead {
            size: v.size(),
            queue_id: v.queue_id(),
            queue_offset: v.queue_offset(),
            physical_offset: v.physical_offset(),
            sys_flag: v.sys_flag(),
            store_timestamp: v.store_timestamp(),
            topic: v.topic(),
            properties: v.properties(),
        })
    }

    /// Prepared and rollback transaction records stay out of the ConsumeQueue.
    pub fn is_dispatched(&self) -> bool {
        let t = self.sys_flag & sys_flag::TRANSACTION_TYPE_MASK;
        t != sys_flag::TRANSACTION_PREPARED && t != sys_flag::TRANSACTION_ROLLBACK
    }

    /// Rollback records are not indexed.
    pub fn is_indexed(&self) -> bool {
        self.sys_flag & sys_flag::TRANSACTION_TYPE_MASK != sys_flag::TRANSACTION_ROLLBACK
    }

    /// One property, without allocating.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        find_property(self.properties, name)
    }

    /// The ConsumeQueue entry for this record.
    pub fn cq_entry(&self) -> CqEntry {
        CqEntry {
            commitlog_offset: self.physical_offset,
            size: self.size as i32,
            tags_code: tags_code(self.property(property::TAGS)),
        }
    }

    /// The index keys: each entry of `KEYS` and the `UNIQ_KEY`.
    pub fn index_keys(&self) -> impl Iterator<Item = &'a str> {
        self.property(property::KEYS)
            .into_iter()
            .flat_map(|k| k.split(' '))
            .chain(self.property(property::UNIQ_KEY))
            .filter(|k| !k.is_empty())
    }
}

/// Finds one property in an encoded property string.
pub fn find_property<'a>(props: &'a str, name: &str) -> Option<&'a str> {
    props
        .split(property::PROPERTY_SEPARATOR)
        .filter_map(|seg| seg.split_once(property::NAME_VALUE_SEPARATOR))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl super::StoreInner {
    /// Dispatches records from the reput offset to `to`. Stops at the first I/O error
    /// (to be retried) and leaves the reput offset there.
    pub(super) fn dispatch_range(&self, st: &mut DispatchState, to: u64) -> Result<()> {
        let mut failure = None;
        let listener = self
            .listener
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reached = self
            .commitlog
            .for_each_record(st.reput_offset, to, |off, rec| {
                match self.dispatch_one(rec, listener.as_ref()) {
                    Ok(ts) => {
                        st.last_store_timestamp = ts.unwrap_or(st.last_store_timestamp);
                        true
                    }
                    Err(e) => {
                        failure = Some((off, e));
                        false
                    }
                }
            });
        st.reput_offset = reached;
        match failure {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// The ConsumeQueue entry of a record: its offset, size and tags code — for delayed
    /// and timer messages, their delivery time.
    pub(super) fn cq_entry_for(&self, h: &RecordHead) -> CqEntry {
        let mut entry = h.cq_entry();
        if h.topic == SCHEDULE_TOPIC {
            let delay = usize::try_from(h.queue_id)
                .ok()
                .and_then(|q| self.delay_levels_ms.get(q).copied())
                .unwrap_or(0);
            entry.tags_code = h.store_timestamp.saturating_add(delay);
        } else if h.topic == TIMER_TOPIC {
            entry.tags_code = h
                .property("TIMER_OUT_MS")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
        entry
    }

    pub(super) fn dispatch_one(
        &self,
        rec: &[u8],
        listener: Option<&ArrivalListener>,
    ) -> Result<Option<i64>> {
        let Some(h) = RecordHead::parse(rec) else {
            warn!("undecodable record skipped by dispatch");
            return Ok(None);
        };
        if h.is_dispatched() {
            let cq = self.find_or_create_queue(h.topic, h.queue_id)?;
            let entry = self.cq_entry_for(&h);
            cq.put(h.queue_offset, entry)?;
            if let Some(l) = listener {
                l(&Arrival {
                    topic: h.topic.to_owned(),
                    queue_id: h.queue_id,
                    max_offset: cq.max_offset(),
                    tags_code: entry.tags_code,
                });
            }
        }
        if self.config.message_index_enable && h.is_indexed() {
            let mut idx = lock(&self.index);
            for key in h.index_keys() {
                idx.put(h.topic, key, h.physical_offset, h.store_timestamp)?;
            }
        }
        Ok(Some(h.store_timestamp))
    }

    pub(super) fn dispatch_loop(&self) {
        loop {
            self.dispatch_beat.beat();
            let stop = self.shutdown.load(Ordering::Acquire);
            let max = self.commitlog.max_offset().min(self.dispatch_limit());
            let mut st = lock(&self.dispatch);
            if st.reput_offset < max {
                if let Err(e) = self.dispatch_range(&mut st, max) {
                    if stop {
                        // Shutting down: the next start re-dispatches from the checkpoint,
                        // so a failure that does not go away (a full disk) must not hold
                        // the shutdown forever.
                        error!(error = %e, offset = st.reput_offset, "dispatch failed at shutdown; the next start redoes it");
                        return;
                    }
                    if !self.dispatch_blocked.swap(true, Ordering::AcqRel) {
                        error!(error = %e, offset = st.reput_offset, "dispatch failed; sends are refused until it works again (retrying every second)");
                    }
                    *lock(&self.dispatch_problem) = Some(e.to_string());
                    drop(st);
                    std::thread::sleep(Duration::from_secs(1));
                } else if self.dispatch_blocked.swap(false, Ordering::AcqRel) {
                    info!(
                        offset = st.reput_offset,
                        "dispatch works again; sends accepted"
                    );
                    *lock(&self.dispatch_problem) = None;
                }
                continue;
            }
            if stop {
                return;
            }
            self.dispatcher_idle.store(true, Ordering::Release);
            // Re-check after announcing idleness so an append between the two is seen.
            if self.commitlog.max_offset().min(self.dispatch_limit()) == st.reput_offset {
                let _ = self
                    .dispatch_cv
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| drop(g));
            }
            self.dispatcher_idle.store(false, Ordering::Release);
        }
    }

    /// How far the dispatcher may go (`u64::MAX` unless in Raft mode).
    pub(super) fn dispatch_limit(&self) -> u64 {
        self.dispatch_limit.load(Ordering::Acquire)
    }

    /// Raft mode: lets the dispatcher go up to `offset` (the end of the committed
    /// entries), recorded as the confirm offset the checkpoint keeps.
    pub(super) fn set_dispatch_limit(&self, offset: u64) {
        self.dispatch_limit.store(offset, Ordering::Release);
        self.set_confirm_offset(offset);
        self.wake_dispatcher();
    }

    pub(super) fn wake_dispatcher(&self) {
        if self.dispatcher_idle.load(Ordering::Acquire) {
            let _g = lock(&self.dispatch);
            self.dispatch_cv.notify_one();
        }
    }

    /// Sets the listener told of every new ConsumeQueue entry.
    pub(super) fn set_arrival_listener(&self, l: ArrivalListener) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(l);
    }

    /// How far the dispatcher has built ConsumeQueue and index entries.
    pub(super) fn dispatched_offset(&self) -> u64 {
        lock(&self.dispatch).reput_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::message::{encode_properties, encode_record, MessageToStore};

    #[test]
    fn head_matches_full_decode() {
        let m = MessageToStore {
            topic: "Orders".into(),
            queue_id: 5,
            properties: encode_properties([
                ("TAGS", "TagA"),
                ("KEYS", "k1 k2"),
                ("UNIQ_KEY", "U1"),
            ]),
            body: bytes::Bytes::from_static(b"body"),
            ..MessageToStore::default()
        };
        let mut enc = encode_record(&m, 1 << 20).unwrap();
        enc.assign(9, 1000, 77);
        let h = RecordHead::parse(&enc.bytes).unwrap();
        assert_eq!(h.topic, "Orders");
        assert_eq!(
            (h.queue_id, h.queue_offset, h.physical_offset),
            (5, 9, 1000)
        );
        assert_eq!(h.store_timestamp, 77);
        assert_eq!(h.cq_entry().tags_code, 2_598_919);
        assert_eq!(h.index_keys().collect::<Vec<_>>(), vec!["k1", "k2", "U1"]);
        assert!(h.is_dispatched());
        for cut in 0..enc.bytes.len() {
            let _ = RecordHead::parse(&enc.bytes[..cut]);
        }
    }
}
