//! Recovery at open: from the checkpoint (clean shutdown) or from the newest segment older
//! than the checkpoint (a crash), every record is checked (magic, size, CRC with
//! `checkCRCOnRecover` or after a crash); the tail is cut at the first bad record, the
//! ConsumeQueues and IndexFiles are trimmed to the end, and dispatch resumes where they
//! stop.

use std::sync::Arc;

use tracing::{info, warn};

use super::*;
use crate::sync::lock;

impl StoreInner {
    pub(super) fn recover(&mut self, abnormal: bool, cp: &Checkpoint) -> Result<()> {
        let segs = self.commitlog.segments();
        let check_crc = abnormal || self.config.check_crc_on_recover;
        let start = if segs.is_empty() {
            0
        } else if abnormal {
            // Newest segment whose first record is older than the checkpoint minus 3 s.
            let safe = cp.physic_msg_timestamp.min(cp.logics_msg_timestamp) - 3000;
            let mut chosen = segs[0].start_offset();
            for s in segs.iter().rev() {
                // The segment's first record, read whole (its size field first).
                let ts = s
                    .read(0, 4)
                    .ok()
                    .and_then(|b| usize::try_from(i32::from_be_bytes(b.try_into().ok()?)).ok())
                    .and_then(|size| s.read(0, size).ok())
                    .and_then(store_timestamp_of);
                if let Some(ts) = ts {
                    if ts > 0 && ts <= safe {
                        chosen = s.start_offset();
                        break;
                    }
                }
            }
            chosen
        } else {
            segs.last().map(|s| s.start_offset()).unwrap_or(0)
        };
        let mut last_ts = 0i64;
        // Queue offsets seen in the scan: they count even if dispatch cannot finish now.
        let mut scanned = commitlog::QueueOffsetTable::new();
        let (end, bad) = self.commitlog.scan(start, check_crc, |_, rec| {
            if let Some(h) = RecordHead::parse(rec) {
                last_ts = h.store_timestamp;
                if h.is_dispatched() {
                    commitlog::raise_queue_offset(
                        &mut scanned,
                        h.topic,
                        h.queue_id,
                        h.queue_offset + 1,
                    );
                }
            }
        });
        if let Some((at, e)) = &bad {
            if self.config.recovery_mode == RecoveryMode::AbsoluteConsistency {
                return Err(StoreError::Corrupt {
                    path: self.config.commitlog_dir(),
                    reason: format!("bad record at {at}: {e}"),
                });
            }
            warn!(offset = at, reason = %e, "CommitLog tail is torn or corrupt; truncating there");
        }
        {
            let mut tail = self.commitlog.lock_tail();
            self.commitlog
                .truncate_locked(&mut tail, end, commitlog::Truncation::InPlace)?;
            if last_ts == 0 {
                last_ts = cp.physic_msg_timestamp;
            }
            self.commitlog.set_recovered_end(&mut tail, end, last_ts);
        }
        let min_phys = self.commitlog.min_offset();

        // ConsumeQueues: drop entries past the end; find where dispatch must resume.
        let queues: Vec<Arc<ConsumeQueue>> = self.all_queues();
        for cq in &queues {
            cq.truncate_phys(end)?;
            cq.delete_below_phys(min_phys);
        }
        // Damaged queues are rebuilt from the CommitLog before dispatch resumes. After a
        // clean shutdown every scanned record was dispatched, so a queue ending before
        // the scan's last offset for it lost its tail.
        self.recovery.queues_rebuilt = self.verify_queues(end, (!abnormal).then_some(&scanned))?;
        let mut reput = min_phys;
        for cq in &queues {
            if let Some(e) = cq.last_entry() {
                reput = reput.max(e.commitlog_offset as u64 + e.size as u64);
            }
        }
        if abnormal {
            reput = reput.min(start);
        }
        reput = reput.min(end);
        // IndexFiles: rebuild any whose entries reach past the resume point.
        if let Some(lowest) = lock(&self.index).drop_from_phys(reput as i64) {
            reput = reput.min(lowest.max(min_phys as i64) as u64);
        }
        info!(
            from = reput,
            to = end,
            "dispatching CommitLog records to ConsumeQueue and index"
        );
        {
            let mut st = lock(&self.dispatch);
            st.reput_offset = reput;
            if let Err(e) = self.dispatch_range(&mut st, end) {
                // The dispatch thread retries; reads of these records wait for it.
                warn!(error = %e, offset = st.reput_offset, "dispatch during recovery failed");
            }
        }
        {
            let mut tail = self.commitlog.lock_tail();
            self.rebuild_queue_offsets(&mut tail);
            for (topic, qs) in &scanned {
                for (q, next) in qs.iter().enumerate() {
                    commitlog::raise_queue_offset(&mut tail.queue_offsets, topic, q as i32, *next);
                }
            }
        }
        self.recovery.scanned_from = start;
        self.recovery.end_offset = end;
        self.recovery.truncated_reason = bad.map(|(at, e)| format!("at {at}: {e}"));
        self.recovery.redispatched_from = reput;
        Ok(())
    }

    /// Resets the next queue offsets from the ConsumeQueues' max offsets.
    pub(super) fn rebuild_queue_offsets(&self, tail: &mut commitlog::Tail) {
        tail.queue_offsets.clear();
        for cq in self.all_queues() {
            let v = tail.queue_offsets.entry(cq.topic().to_owned()).or_default();
            let q = cq.queue_id().max(0) as usize;
            if v.len() <= q {
                v.resize(q + 1, 0);
            }
            v[q] = cq.max_offset();
        }
    }
}
