//! Recovery at open: from the checkpoint (clean shutdown) or from the newest segment older
//! than the checkpoint (a crash), every record is checked (magic, size, CRC with
//! `checkCRCOnRecover` or after a crash); the tail is cut at the first bad record, the
//! ConsumeQueues and IndexFiles are trimmed to the end, and dispatch resumes where they
//! stop.

use std::sync::Arc;

use tracing::{error, info, warn};

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
        // Bytes below the checkpoint's flushed offset were on disk before the last
        // checkpoint: damage there is not a torn write but corruption. It is quarantined
        // (the intact records after it are kept); only damage past it is a torn tail.
        let flushed = u64::try_from(cp.master_flushed_offset).unwrap_or(0);
        let mut quarantined: Vec<(u64, u64)> = Vec::new();
        let mut from = start;
        let (end, bad) = loop {
            let (end, bad) = self.commitlog.scan(from, check_crc, |_, rec| {
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
            let damaged = match &bad {
                Some((at, _)) => Some(*at),
                // Zeros where flushed records were.
                None if end < flushed => Some(end),
                None => None,
            };
            let Some(at) = damaged.filter(|at| *at < flushed) else {
                break (end, bad);
            };
            if self.config.recovery_mode == RecoveryMode::AbsoluteConsistency
                || quarantined.last().is_some_and(|(q, _)| *q >= at)
            {
                break (end, bad);
            }
            let reason = bad.as_ref().map_or_else(
                || "zeros inside flushed data".to_owned(),
                |(_, e)| e.to_string(),
            );
            match self.quarantine(at, &reason)? {
                Some(to) => {
                    quarantined.push((at, to));
                    from = at;
                }
                None => break (end, bad),
            }
        };
        self.recovery.quarantined = quarantined.clone();
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
        self.recovery.queues_rebuilt =
            self.verify_queues(end, (!abnormal).then_some(&scanned), &quarantined)?;
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
            let to = end.min(self.dispatch_limit());
            if let Err(e) = self.dispatch_range(&mut st, to) {
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

    /// Moves the damaged bytes at `at` (up to where intact records resume) to
    /// `quarantine/`, with a line in `quarantine/REPORT`, and puts a placeholder of the
    /// same length in their place: a rolled-back record of `rmq_sys_QUARANTINE` (never
    /// dispatched or indexed) or, when nothing intact follows in the segment, an
    /// end-of-segment filler. Returns the end of the quarantined range; `None` when
    /// nothing intact follows in the last segment (a tail: the caller truncates).
    fn quarantine(&self, at: u64, reason: &str) -> Result<Option<u64>> {
        let seg_end = match self.commitlog.segment_for(at) {
            Some(s) => s.end_offset(),
            None => return Ok(None),
        };
        let last_segment = self
            .commitlog
            .segments()
            .last()
            .is_none_or(|s| s.end_offset() == seg_end);
        let placeholder_min = placeholder(0, at)?.len() as u64;
        let mut to = self.commitlog.resync_after(at);
        while let Some(t) = to {
            if t - at >= placeholder_min {
                break;
            }
            to = self.commitlog.resync_after(t);
        }
        let (to, filler) = match to {
            Some(t) => {
                let body = usize::try_from(t - at - placeholder_min).unwrap_or(0);
                (t, placeholder(body, at)?)
            }
            None if last_segment => return Ok(None),
            None => {
                let mut blank = Vec::with_capacity(8);
                blank.extend_from_slice(
                    &i32::try_from(seg_end - at)
                        .unwrap_or(i32::MAX)
                        .to_be_bytes(),
                );
                blank.extend_from_slice(&format::BLANK_MAGIC_CODE.to_be_bytes());
                (seg_end, blank)
            }
        };
        let dir = self.config.quarantine_dir();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let bytes = self.commitlog.raw_range(at, to).unwrap_or_default();
        let file = dir.join(format!("commitlog-{at:020}-{to:020}.bin"));
        std::fs::write(&file, &bytes).map_err(|e| StoreError::io(&file, e))?;
        let report = dir.join("REPORT");
        let line = format!(
            "{} CommitLog [{at}, {to}) ({} bytes) quarantined to {}: {reason}\n",
            commitlog::now_ms(),
            to - at,
            file.display()
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&report)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
            .map_err(|e| StoreError::io(&report, e))?;
        self.commitlog.overwrite(at, &filler)?;
        error!(from = at, to, %reason, file = %file.display(), "corrupt CommitLog bytes inside flushed data quarantined; the records after them are kept");
        Ok(Some(to))
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

/// The topic of the placeholder that takes the place of quarantined bytes.
pub const QUARANTINE_TOPIC: &str = "rmq_sys_QUARANTINE";

/// A rolled-back (never dispatched, never indexed) record of [`QUARANTINE_TOPIC`] with a
/// `body`-byte zero body, placed at `at`.
fn placeholder(body: usize, at: u64) -> Result<Vec<u8>> {
    let m = MessageToStore {
        topic: QUARANTINE_TOPIC.into(),
        sys_flag: format::sys_flag::TRANSACTION_ROLLBACK,
        body: bytes::Bytes::from(vec![0u8; body]),
        ..MessageToStore::default()
    };
    let mut rec = message::encode_record(&m, usize::MAX).map_err(StoreError::Message)?;
    rec.assign(
        0,
        i64::try_from(at).unwrap_or(i64::MAX),
        commitlog::now_ms(),
    );
    Ok(rec.bytes)
}
