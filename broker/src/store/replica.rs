//! The replication hooks used by HA (and later Raft): the CommitLog's bounds, raw reads
//! of `[from, to)`, raw appends at exactly the max offset (checked record by record),
//! moving an empty store to a master's oldest offset, and truncation.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::{debug, info};

use super::*;
use crate::sync::lock;

impl StoreInner {
    /// One past the last whole record in the CommitLog.
    pub(super) fn max_phy_offset(&self) -> u64 {
        self.commitlog.max_offset()
    }

    /// Start of the oldest CommitLog segment.
    pub(super) fn min_phy_offset(&self) -> u64 {
        self.commitlog.min_offset()
    }

    /// Bytes below this offset are on disk.
    pub(super) fn flushed_phy_offset(&self) -> u64 {
        self.commitlog.flushed_offset()
    }

    /// Offset confirmed by replication (set by HA/Raft; persisted in the checkpoint).
    pub(super) fn confirm_offset(&self) -> u64 {
        self.confirm_offset.load(Ordering::Acquire)
    }

    /// Records the replication-confirmed offset.
    pub(super) fn set_confirm_offset(&self, offset: u64) {
        self.confirm_offset.store(offset, Ordering::Release);
    }

    /// Raw CommitLog bytes from `from`, at most `max_len`, never past the written end
    /// or across a segment boundary.
    pub(super) fn read_raw(&self, from: u64, max_len: usize) -> Option<Bytes> {
        self.commitlog.read_raw(from, max_len)
    }

    /// Appends replicated bytes at exactly the max offset (whole records only; returns
    /// the bytes consumed) and dispatches them.
    ///
    /// # Errors
    /// [`StoreError::OffsetMismatch`], [`StoreError::InvalidRaw`], I/O errors.
    pub(super) fn append_raw(&self, offset: u64, data: &[u8]) -> Result<usize> {
        self.check_writable()?;
        let n = self.commitlog.append_raw(offset, data, |_, _| {})?;
        if n > 0 {
            self.wake_dispatcher();
        }
        Ok(n)
    }

    /// Makes an empty store begin at `offset` (a CommitLog segment boundary) instead of 0,
    /// so a new replica can follow a master whose oldest files retention already deleted
    /// (RocketMQ starts such a slave at a file boundary too). ConsumeQueues begin wherever
    /// the first replicated record of each queue puts them.
    ///
    /// # Errors
    /// [`StoreError::CannotStartAt`] when the store holds data or `offset` is not a
    /// segment boundary.
    pub(super) fn start_at(&self, offset: u64) -> Result<()> {
        let mut st = lock(&self.dispatch);
        let mut tail = self.commitlog.lock_tail();
        if tail.write_offset == offset {
            return Ok(());
        }
        let refuse = |reason: String| StoreError::CannotStartAt { offset, reason };
        if tail.write_offset != 0 || !self.commitlog.segments().is_empty() {
            return Err(refuse(format!(
                "the store is not empty (it ends at {})",
                tail.write_offset
            )));
        }
        if !offset.is_multiple_of(self.commitlog.segment_size()) {
            return Err(refuse(format!(
                "not a boundary of {}-byte segments (mappedFileSizeCommitLog must match the master's)",
                self.commitlog.segment_size()
            )));
        }
        info!(offset, "empty store starts at the master's oldest file");
        let ts = tail.last_store_timestamp;
        self.commitlog.set_recovered_end(&mut tail, offset, ts);
        drop(tail);
        st.reput_offset = offset;
        self.flushed_tx
            .send_modify(|s| s.offset = s.offset.max(offset));
        self.set_confirm_offset(offset);
        Ok(())
    }

    /// Empties the store and makes it begin at `offset` (a CommitLog segment
    /// boundary): every CommitLog segment, ConsumeQueue and IndexFile goes. A Raft
    /// member installing a snapshot whose oldest bytes it no longer holds on either
    /// side (the leader's retention deleted what follows its own end) starts over at
    /// the leader's oldest file, as a new member would.
    ///
    /// # Errors
    /// [`StoreError::CannotStartAt`] when `offset` is not a segment boundary; I/O errors.
    pub(super) fn reset_to(&self, offset: u64) -> Result<()> {
        if !offset.is_multiple_of(self.commitlog.segment_size()) {
            return Err(StoreError::CannotStartAt {
                offset,
                reason: format!(
                    "not a boundary of {}-byte segments (mappedFileSizeCommitLog must match the group's)",
                    self.commitlog.segment_size()
                ),
            });
        }
        let mut st = lock(&self.dispatch);
        let mut tail = self.commitlog.lock_tail();
        info!(
            offset,
            from = tail.write_offset,
            "emptying the store: it starts over at {offset}"
        );
        let lowest = self.commitlog.min_offset().min(tail.write_offset);
        self.commitlog
            .truncate_locked(&mut tail, lowest, commitlog::Truncation::InPlace)?;
        for cq in self.all_queues() {
            cq.destroy();
        }
        lock(&self.index).drop_from_phys(0);
        self.rebuild_queue_offsets(&mut tail);
        let ts = tail.last_store_timestamp;
        self.commitlog.set_recovered_end(&mut tail, offset, ts);
        drop(tail);
        st.reput_offset = offset;
        if self.dispatch_limit() != u64::MAX {
            self.dispatch_limit.store(offset, Ordering::Release);
        }
        self.flushed_tx.send_modify(|s| s.offset = offset);
        self.set_confirm_offset(offset);
        Ok(())
    }

    /// Drops everything at and after `offset`: CommitLog, ConsumeQueue entries and the
    /// IndexFiles that reach past it (re-indexed from the CommitLog).
    ///
    /// # Errors
    /// I/O errors.
    pub(super) fn truncate(&self, offset: u64) -> Result<()> {
        let mut st = lock(&self.dispatch);
        let mut tail = self.commitlog.lock_tail();
        if offset >= tail.write_offset {
            return Ok(());
        }
        let offset = offset.max(self.commitlog.min_offset());
        info!(offset, from = tail.write_offset, "truncating the store");
        self.commitlog
            .truncate_locked(&mut tail, offset, commitlog::Truncation::Rewrite)?;
        for cq in self.all_queues() {
            cq.truncate_phys(offset)?;
        }
        let mut reput = st.reput_offset.min(offset);
        if let Some(lowest) = lock(&self.index).drop_from_phys(offset as i64) {
            reput = reput.min(lowest.max(self.commitlog.min_offset() as i64) as u64);
        }
        self.rebuild_queue_offsets(&mut tail);
        drop(tail);
        st.reput_offset = reput;
        if self.dispatch_limit() != u64::MAX && self.dispatch_limit() > offset {
            self.dispatch_limit.store(offset, Ordering::Release);
        }
        self.dispatch_range(&mut st, offset.min(self.dispatch_limit()))?;
        self.flushed_tx
            .send_modify(|s| s.offset = s.offset.min(offset));
        if self.confirm_offset() > offset {
            self.set_confirm_offset(offset);
        }
        debug!(offset, "truncation done");
        Ok(())
    }
}
