//! ConsumeQueue verification at open: each queue is checked against the recovered
//! CommitLog, and a damaged one (a missing or short file, garbage entries, entries that
//! point at records of another queue, a tail the CommitLog shows is missing) is rebuilt
//! from the CommitLog, with a log line saying why. Nothing consumers could read before
//! is lost: the CommitLog is the source of truth, the ConsumeQueue only its index.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::*;

/// Entries checked against their CommitLog record: the first, the last, and every
/// `SAMPLE`th in between (each entry is checked for order and bounds regardless).
const SAMPLE: i64 = 1024;

impl StoreInner {
    /// Verifies every ConsumeQueue against the CommitLog `[min, end)`; `expected_next`
    /// holds, after a clean shutdown, each queue's next offset as the scanned part of
    /// the CommitLog shows it (a queue ending before it lost its tail). Returns how many
    /// queues were rebuilt.
    ///
    /// # Errors
    /// I/O errors while rebuilding.
    pub(super) fn verify_queues(
        &self,
        end: u64,
        expected_next: Option<&commitlog::QueueOffsetTable>,
        quarantined: &[(u64, u64)],
    ) -> Result<usize> {
        let mut rebuilt = 0;
        for cq in self.all_queues() {
            let expect = expected_next.and_then(|t| {
                t.get(cq.topic())
                    .and_then(|v| v.get(usize::try_from(cq.queue_id()).ok()?).copied())
            });
            if let Some(why) = self.queue_damage(&cq, end, expect, quarantined) {
                warn!(topic = %cq.topic(), queue = cq.queue_id(), reason = %why, "ConsumeQueue damaged; rebuilding it from the CommitLog");
                self.rebuild_queue(&cq, end)?;
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }

    /// Why `cq` cannot be trusted, if it cannot: [`queue_damage`] with every
    /// [`SAMPLE`]th entry compared with its record, then the tail the scan expects.
    fn queue_damage(
        &self,
        cq: &ConsumeQueue,
        end: u64,
        expect_next: Option<i64>,
        quarantined: &[(u64, u64)],
    ) -> Option<String> {
        if let Some(p) = queue_damage(&self.commitlog, cq, end, SAMPLE, quarantined) {
            return Some(p);
        }
        let max = cq.max_offset();
        match expect_next {
            Some(next) if next > max => Some(format!(
                "it ends at {max}, but the CommitLog holds this queue's messages up to {}",
                next - 1
            )),
            _ => None,
        }
    }

    /// Rewrites `cq` from the CommitLog records of its queue in `[min, end)`.
    fn rebuild_queue(&self, cq: &Arc<ConsumeQueue>, end: u64) -> Result<()> {
        let started = Instant::now();
        cq.destroy();
        let (topic, queue_id) = (cq.topic().to_owned(), cq.queue_id());
        let mut failure = None;
        let mut written = 0u64;
        self.commitlog
            .for_each_record(self.commitlog.min_offset(), end, |_, rec| {
                let Some(h) = RecordHead::parse(rec) else {
                    return true;
                };
                if h.topic != topic || h.queue_id != queue_id || !h.is_dispatched() {
                    return true;
                }
                match cq.put(h.queue_offset, self.cq_entry_for(&h)) {
                    Ok(()) => {
                        written += 1;
                        true
                    }
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            });
        if let Some(e) = failure {
            return Err(e);
        }
        cq.flush()?;
        info!(
            %topic,
            queue = queue_id,
            entries = written,
            elapsed_ms = started.elapsed().as_millis(),
            "ConsumeQueue rebuilt from the CommitLog"
        );
        Ok(())
    }
}

/// What is wrong with `cq` against `commitlog` (valid up to `end`), if anything: its
/// files (a gap, a wrong length); any entry out of order, outside the CommitLog or
/// pointing into `quarantined` bytes; and, for the first, the last and every `sample`th
/// entry, a record at its offset that is not that message (topic, queue, queue offset,
/// physical offset, size). Start-up samples; `ferrocket store check` passes 1.
pub(super) fn queue_damage(
    commitlog: &CommitLog,
    cq: &ConsumeQueue,
    end: u64,
    sample: i64,
    quarantined: &[(u64, u64)],
) -> Option<String> {
    if let Some(p) = cq.layout_problem() {
        return Some(p);
    }
    let (min, max) = (cq.min_offset(), cq.max_offset());
    let mut problem = None;
    let mut previous_end = 0u64;
    cq.for_each_entry(|k, e| {
        let phys = u64::try_from(e.commitlog_offset).unwrap_or(u64::MAX);
        let size = u64::try_from(e.size).unwrap_or(0);
        if !e.is_valid() || phys < previous_end || phys.saturating_add(size) > end {
            problem = Some(format!(
                "entry {k} is not a record of the CommitLog (offset {}, size {})",
                e.commitlog_offset, e.size
            ));
            return false;
        }
        if quarantined.iter().any(|(a, b)| phys >= *a && phys < *b) {
            problem = Some(format!("entry {k} points into quarantined bytes at {phys}"));
            return false;
        }
        previous_end = phys + size;
        if k == min || k == max - 1 || k % sample.max(1) == 0 {
            let matches = commitlog.read_record(phys).is_some_and(|rec| {
                rec.len() as u64 == size
                    && RecordHead::parse(&rec).is_some_and(|h| {
                        h.topic == cq.topic()
                            && h.queue_id == cq.queue_id()
                            && h.queue_offset == k
                            && u64::try_from(h.physical_offset).ok() == Some(phys)
                    })
            });
            if !matches {
                problem = Some(format!(
                    "entry {k} points at offset {phys}, which is not that message"
                ));
                return false;
            }
        }
        true
    });
    problem
}
