//! Reads: messages of a queue (zero-copy views of the mapped CommitLog), by physical
//! offset, by key; queue offsets by time; min and max offsets.

use bytes::Bytes;

use super::*;
use crate::sync::lock;

impl StoreInner {
    /// Reads up to `max_count` messages (and about `max_bytes`) from a queue, starting
    /// at `offset`, keeping those whose tags code passes `filter`.
    pub(super) fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        filter: impl super::MessageFilter,
    ) -> GetMessageResult {
        let mut res = GetMessageResult {
            status: GetMessageStatus::NoMatchedLogicQueue,
            messages: Vec::new(),
            queue_offsets: Vec::new(),
            next_begin_offset: 0,
            min_offset: 0,
            max_offset: 0,
        };
        let Some(cq) = self.consume_queue(topic, queue_id) else {
            return res;
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        res.min_offset = min;
        res.max_offset = max;
        if max == 0 {
            res.status = GetMessageStatus::NoMessageInQueue;
            return res;
        }
        if offset < min {
            res.status = GetMessageStatus::OffsetTooSmall;
            res.next_begin_offset = min;
            return res;
        }
        if offset == max {
            res.status = GetMessageStatus::OffsetOverflowOne;
            res.next_begin_offset = offset;
            return res;
        }
        if offset > max {
            res.status = GetMessageStatus::OffsetOverflowBadly;
            res.next_begin_offset = max;
            return res;
        }
        // Scan a bounded number of entries so a selective filter cannot stall a pull.
        let scan = max_count.max(1).saturating_mul(4).max(800);
        let min_phys = self.commitlog.min_offset();
        let mut next = offset;
        let mut bytes = 0usize;
        let mut missing = false;
        for (i, e) in cq.entries(offset, scan).into_iter().enumerate() {
            let k = offset + i as i64;
            if !e.is_valid() || (e.commitlog_offset as u64) < min_phys {
                missing = true;
                next = k + 1;
                continue;
            }
            if !filter.by_tags_code(e.tags_code) {
                next = k + 1;
                continue;
            }
            if !res.messages.is_empty() && bytes + e.size as usize > max_bytes {
                break;
            }
            let Some(rec) = self.commitlog.read_record(e.commitlog_offset as u64) else {
                missing = true;
                next = k + 1;
                continue;
            };
            if !filter.by_record(&rec) {
                next = k + 1;
                continue;
            }
            bytes += rec.len();
            res.messages.push(rec);
            res.queue_offsets.push(k);
            next = k + 1;
            if res.messages.len() >= max_count {
                break;
            }
        }
        res.next_begin_offset = next;
        res.status = if !res.messages.is_empty() {
            GetMessageStatus::Found
        } else if missing {
            GetMessageStatus::OffsetFoundNull
        } else {
            GetMessageStatus::NoMatchedMessage
        };
        res
    }

    /// The record at a CommitLog offset (VIEW_MESSAGE_BY_ID), zero-copy.
    pub(super) fn read_message(&self, physical_offset: u64) -> Option<Bytes> {
        // Offsets come from clients (VIEW_MESSAGE_BY_ID, END_TRANSACTION): only a whole
        // message record that says it starts here counts — not bytes in the middle of
        // one that happen to parse, nor a filler.
        let rec = self.commitlog.read_record(physical_offset)?;
        let head = RecordHead::parse(&rec)?;
        (u64::try_from(head.physical_offset).ok() == Some(physical_offset)).then_some(rec)
    }

    /// Messages of `topic` whose `KEYS` or `UNIQ_KEY` holds `key`, stored within
    /// `[begin_ms, end_ms]`, at most `max`, newest first. Index hits are checked against
    /// the record, so hash collisions and stale entries never leak through.
    pub(super) fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Vec<Bytes> {
        let offsets =
            lock(&self.index).query(topic, key, max.saturating_mul(4).max(max), begin_ms, end_ms);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for off in offsets {
            if out.len() >= max {
                break;
            }
            let Ok(off) = u64::try_from(off) else {
                continue;
            };
            if !seen.insert(off) {
                continue;
            }
            let Some(rec) = self.commitlog.read_record(off) else {
                continue;
            };
            let matches = RecordHead::parse(&rec)
                .is_some_and(|h| h.topic == topic && h.index_keys().any(|k| k == key));
            if matches {
                out.push(rec);
            }
        }
        out
    }

    pub(super) fn queue_store_time(&self, cq: &ConsumeQueue, k: i64) -> Option<i64> {
        let e = cq.get(k)?;
        let rec = self
            .commitlog
            .read_record(u64::try_from(e.commitlog_offset).ok()?)?;
        store_timestamp_of(&rec)
    }

    /// The queue offset for a store time (binary search over the queue).
    pub(super) fn search_offset_by_time(
        &self,
        topic: &str,
        queue_id: i32,
        ts: i64,
        boundary: BoundaryType,
    ) -> i64 {
        let Some(cq) = self.consume_queue(topic, queue_id) else {
            return 0;
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        if min >= max {
            return max;
        }
        // Smallest k with time(k) >= ts (Lower) or > ts (Upper, then step back).
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = self.queue_store_time(&cq, mid).unwrap_or(i64::MIN);
            let go_right = match boundary {
                BoundaryType::Lower => t < ts,
                BoundaryType::Upper => t <= ts,
            };
            if go_right {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match boundary {
            BoundaryType::Lower => lo,
            BoundaryType::Upper => (lo - 1).max(min),
        }
    }

    /// Store time of the oldest message still in a queue.
    pub(super) fn earliest_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.consume_queue(topic, queue_id)?;
        self.queue_store_time(&cq, cq.min_offset())
    }

    /// Store time of the newest message in a queue.
    pub(super) fn last_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.consume_queue(topic, queue_id)?;
        self.queue_store_time(&cq, cq.max_offset() - 1)
    }

    /// Min offset of a queue.
    pub(super) fn min_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.consume_queue(topic, queue_id)
            .map(|c| c.min_offset())
            .unwrap_or(0)
    }

    /// Max offset of a queue (one past the last entry).
    pub(super) fn max_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.consume_queue(topic, queue_id)
            .map(|c| c.max_offset())
            .unwrap_or(0)
    }

    /// Topics and queue ids that have a ConsumeQueue.
    pub(super) fn queue_ids(&self) -> Vec<(String, i32)> {
        self.all_queues()
            .iter()
            .map(|q| (q.topic().to_owned(), q.queue_id()))
            .collect()
    }
}
