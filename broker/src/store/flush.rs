//! Flushing: the flush thread msyncs the CommitLog (every `flushIntervalCommitLog` under
//! ASYNC_FLUSH; on request, group commit, under SYNC_FLUSH) and, every
//! `flushIntervalConsumeQueue`, the ConsumeQueues, the index and the checkpoint. A failed
//! flush turns the store read-only and fails the waiting producers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::*;
use crate::sync::lock;

impl StoreInner {
    pub(super) fn flush_loop(&self) {
        let interval = Duration::from_millis(self.config.flush_interval_commit_log_ms.max(1));
        let cq_interval = Duration::from_millis(self.config.flush_interval_consume_queue_ms.max(1));
        let mut last_cq_flush = Instant::now();
        loop {
            self.flush_beat.beat();
            {
                let mut req = lock(&self.flush_request);
                if !*req && !self.shutdown.load(Ordering::Acquire) {
                    req = self
                        .flush_cv
                        .wait_timeout(req, interval)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                *req = false;
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.flush_commitlog() {
                self.fail(&e);
            }
            if last_cq_flush.elapsed() >= cq_interval {
                last_cq_flush = Instant::now();
                // ConsumeQueues, index and checkpoint can be rebuilt or re-written: a
                // failure there (no descriptor left, a full disk) is retried on the next
                // turn and clears by itself; it never makes the store read-only.
                let r = self.flush_logics_and_checkpoint();
                self.note_transient(r.err().as_ref());
            }
        }
    }

    /// Records the outcome of a retried, non-corrupting write (`None`: it worked).
    pub(super) fn note_transient(&self, e: Option<&StoreError>) {
        let mut t = lock(&self.transient);
        match (e, t.is_some()) {
            (Some(e), was) => {
                self.transient_failures.fetch_add(1, Ordering::Relaxed);
                if !was {
                    warn!(error = %e, "metadata flush failed (ConsumeQueue, index or checkpoint); retrying every interval");
                }
                *t = Some(e.to_string());
            }
            (None, true) => {
                info!("metadata flush works again");
                *t = None;
            }
            (None, false) => {}
        }
    }

    pub(super) fn fail(&self, e: &StoreError) {
        if !self.read_only.swap(true, Ordering::AcqRel) {
            error!(error = %e, "flush failed; the store is now read-only");
        }
        self.flushed_tx.send_modify(|s| s.failed = true);
    }

    /// Sets the observer told of every CommitLog flush's duration.
    pub(super) fn set_flush_observer(&self, o: FlushObserver) {
        *self
            .flush_observer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(o);
    }

    pub(super) fn flush_commitlog(&self) -> Result<()> {
        let before = self.commitlog.flushed_offset();
        let started = Instant::now();
        let (off, ts) = self.commitlog.flush()?;
        if off > before {
            if let Some(o) = self
                .flush_observer
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                o(started.elapsed());
            }
        }
        {
            let mut cp = lock(&self.checkpoint);
            cp.physic_msg_timestamp = ts.max(0);
            // What is on disk: recovery tells corruption below it from a torn tail.
            cp.master_flushed_offset = i64::try_from(off).unwrap_or(i64::MAX);
        }
        self.flushed_tx.send_if_modified(|s| {
            let changed = s.offset != off;
            s.offset = off;
            changed
        });
        Ok(())
    }

    pub(super) fn flush_logics_and_checkpoint(&self) -> Result<()> {
        let logics_ts = lock(&self.dispatch).last_store_timestamp;
        for cq in self.all_queues() {
            cq.flush()?;
        }
        lock(&self.index).flush()?;
        let mut cp = lock(&self.checkpoint);
        if logics_ts > 0 {
            cp.logics_msg_timestamp = logics_ts;
            cp.index_msg_timestamp = logics_ts;
        }
        cp.confirm_phy_offset = self.confirm_offset.load(Ordering::Acquire) as i64;
        cp.store(&self.config.checkpoint_path())
    }

    pub(super) fn flush_all(&self) -> Result<()> {
        // Let the dispatcher finish what is written.
        {
            let mut st = lock(&self.dispatch);
            let max = self.commitlog.max_offset();
            self.dispatch_range(&mut st, max)?;
        }
        self.flush_commitlog()?;
        self.flush_logics_and_checkpoint()
    }

    /// Waits until the CommitLog is flushed past `offset` (group commit: one flush
    /// serves every record appended before it).
    ///
    /// # Errors
    /// [`StoreError::FlushTimeout`] after `syncFlushTimeout`; [`StoreError::ReadOnly`]
    /// when the flush failed.
    pub(super) async fn wait_flushed(&self, offset: u64) -> Result<()> {
        let mut rx = self.flushed_tx.subscribe();
        if rx.borrow().offset >= offset {
            return Ok(());
        }
        {
            *lock(&self.flush_request) = true;
            self.flush_cv.notify_one();
        }
        let timeout = Duration::from_millis(self.config.sync_flush_timeout_ms);
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| s.offset >= offset || s.failed))
            .await
            .map(|r| r.map(|s| s.failed));
        match waited {
            Ok(Ok(true)) => Err(StoreError::ReadOnly),
            Ok(Ok(false)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::ShutDown),
            Err(_) => Err(StoreError::FlushTimeout {
                offset,
                timeout_ms: self.config.sync_flush_timeout_ms,
            }),
        }
    }

    /// The second half of a put: under SYNC_FLUSH, unless the batch's `WAIT` property is
    /// `false`, waits until the appended records are on disk.
    ///
    /// # Errors
    /// As [`StoreInner::wait_flushed`].
    pub(super) async fn await_durable(
        &self,
        msgs: &[MessageToStore],
        appended: &PutResult,
    ) -> Result<()> {
        if self.config.flush_disk_type == FlushDiskType::Sync && wait_requested(msgs) {
            self.wait_flushed(appended.end_offset).await?;
        }
        Ok(())
    }
}
