//! The store's public API: every method of [`MessageStore`] the broker, replication and
//! tools may call, each handing off to the part of the store that owns it (`read.rs`,
//! `replica.rs`, `flush.rs`, ...). Nothing else of the store is reachable from outside.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

/// The store's public API: what the broker, HA and tools may call.
impl MessageStore {
    /// Delay of each level in ms (level 1 first).
    pub fn delay_levels_ms(&self) -> &[i64] {
        self.inner.delay_levels_ms()
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        self.inner.config()
    }

    /// What recovery did at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.inner.recovery_report()
    }

    /// The CommitLog.
    pub fn commitlog(&self) -> &CommitLog {
        self.inner.commitlog()
    }

    /// The ConsumeQueue of a queue, if it exists.
    pub fn consume_queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.inner.consume_queue(topic, queue_id)
    }

    /// Sets the listener told of every new ConsumeQueue entry.
    pub fn set_arrival_listener(&self, l: ArrivalListener) {
        self.inner.set_arrival_listener(l)
    }

    /// Sets the observer told of every CommitLog flush's duration.
    pub fn set_flush_observer(&self, o: FlushObserver) {
        self.inner.set_flush_observer(o)
    }

    /// Fraction of the store's filesystem in use.
    pub fn disk_used_ratio(&self) -> Option<f64> {
        self.inner.disk_used_ratio()
    }

    /// Retention: deletes CommitLog segments older than `fileReservedTime` (with
    /// `disk_pressure`, also the oldest segment whatever its age), then the
    /// ConsumeQueue and IndexFiles that only point below the new min offset.
    pub fn delete_expired_files(&self, now_ms: i64, disk_pressure: bool) -> RetentionReport {
        self.inner.delete_expired_files(now_ms, disk_pressure)
    }

    /// Appends one message. Under SYNC_FLUSH (and unless its `WAIT` property is
    /// `false`) the future resolves once the record is on disk.
    ///
    /// # Errors
    /// [`StoreError::Message`] for a message that cannot be stored, [`StoreError::DiskFull`],
    /// [`StoreError::FlushTimeout`] (stored, not confirmed on disk), [`StoreError::ReadOnly`].
    pub async fn put_message(&self, msg: MessageToStore) -> Result<PutResult> {
        self.inner.put_message(msg).await
    }

    /// Appends a batch for one topic and queue: contiguous records with consecutive
    /// queue offsets, written in one step.
    ///
    /// # Errors
    /// As [`MessageStore::put_message`]; an empty batch or mixed queues are refused.
    pub async fn put_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        self.inner.put_messages(msgs).await
    }

    /// The second half of a put: under SYNC_FLUSH, unless the batch's `WAIT` property is
    /// `false`, waits until the appended records are on disk.
    ///
    /// # Errors
    /// As [`MessageStore::wait_flushed`].
    pub async fn await_durable(&self, msgs: &[MessageToStore], appended: &PutResult) -> Result<()> {
        self.inner.await_durable(msgs, appended).await
    }

    /// Appends without waiting for a flush (the synchronous half of a put).
    ///
    /// # Errors
    /// As [`MessageStore::put_messages`], without the flush outcomes.
    pub fn append_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        self.inner.append_messages(msgs)
    }

    /// Raft mode: the dispatcher may build ConsumeQueue and index entries up to
    /// `offset` (the end of the committed entries); kept as the confirm offset.
    pub fn set_dispatch_limit(&self, offset: u64) {
        self.inner.set_dispatch_limit(offset)
    }

    /// How far the dispatcher has built ConsumeQueue and index entries.
    pub fn dispatched_offset(&self) -> u64 {
        self.inner.dispatched_offset()
    }

    /// Waits until the CommitLog is flushed past `offset` (group commit: one flush
    /// serves every record appended before it).
    ///
    /// # Errors
    /// [`StoreError::FlushTimeout`] after `syncFlushTimeout`; [`StoreError::ReadOnly`]
    /// when the flush failed.
    pub async fn wait_flushed(&self, offset: u64) -> Result<()> {
        self.inner.wait_flushed(offset).await
    }

    /// Reads up to `max_count` messages (and about `max_bytes`) from a queue, starting
    /// at `offset`, keeping those `filter` passes (by tags code, then by record; a
    /// closure over the tags code is a filter).
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        filter: impl super::MessageFilter,
    ) -> GetMessageResult {
        self.inner
            .get_messages(topic, queue_id, offset, max_count, max_bytes, filter)
    }

    /// The record at a CommitLog offset (VIEW_MESSAGE_BY_ID), zero-copy.
    pub fn read_message(&self, physical_offset: u64) -> Option<Bytes> {
        self.inner.read_message(physical_offset)
    }

    /// Messages of `topic` whose `KEYS` or `UNIQ_KEY` holds `key`, stored within
    /// `[begin_ms, end_ms]`, at most `max`, newest first. Index hits are checked against
    /// the record, so hash collisions and stale entries never leak through.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Vec<Bytes> {
        self.inner.query_by_key(topic, key, max, begin_ms, end_ms)
    }

    /// The queue offset for a store time (binary search over the queue).
    pub fn search_offset_by_time(
        &self,
        topic: &str,
        queue_id: i32,
        ts: i64,
        boundary: BoundaryType,
    ) -> i64 {
        self.inner
            .search_offset_by_time(topic, queue_id, ts, boundary)
    }

    /// Store time of the oldest message still in a queue.
    pub fn earliest_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        self.inner.earliest_store_time(topic, queue_id)
    }

    /// Store time of the newest message in a queue.
    pub fn last_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        self.inner.last_store_time(topic, queue_id)
    }

    /// Min offset of a queue.
    pub fn min_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner.min_offset_in_queue(topic, queue_id)
    }

    /// Max offset of a queue (one past the last entry).
    pub fn max_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner.max_offset_in_queue(topic, queue_id)
    }

    /// Topics and queue ids that have a ConsumeQueue.
    pub fn queue_ids(&self) -> Vec<(String, i32)> {
        self.inner.queue_ids()
    }

    /// Deletes a topic's ConsumeQueues (the CommitLog keeps its records until retention).
    pub fn delete_topic(&self, topic: &str) {
        self.inner.delete_topic(topic)
    }

    /// One past the last whole record in the CommitLog.
    pub fn max_phy_offset(&self) -> u64 {
        self.inner.max_phy_offset()
    }

    /// Start of the oldest CommitLog segment.
    pub fn min_phy_offset(&self) -> u64 {
        self.inner.min_phy_offset()
    }

    /// Bytes below this offset are on disk.
    pub fn flushed_phy_offset(&self) -> u64 {
        self.inner.flushed_phy_offset()
    }

    /// Offset confirmed by replication (set by HA/Raft; persisted in the checkpoint).
    pub fn confirm_offset(&self) -> u64 {
        self.inner.confirm_offset()
    }

    /// Records the replication-confirmed offset.
    pub fn set_confirm_offset(&self, offset: u64) {
        self.inner.set_confirm_offset(offset)
    }

    /// Raw CommitLog bytes from `from`, at most `max_len`, never past the written end
    /// or across a segment boundary.
    pub fn read_raw(&self, from: u64, max_len: usize) -> Option<Bytes> {
        self.inner.read_raw(from, max_len)
    }

    /// Appends replicated bytes at exactly the max offset (whole records only; returns
    /// the bytes consumed) and dispatches them.
    ///
    /// # Errors
    /// [`StoreError::OffsetMismatch`], [`StoreError::InvalidRaw`], I/O errors.
    pub fn append_raw(&self, offset: u64, data: &[u8]) -> Result<usize> {
        self.inner.append_raw(offset, data)
    }

    /// Makes an empty store begin at `offset` (a CommitLog segment boundary) instead of 0,
    /// so a new replica can follow a master whose oldest files retention already deleted
    /// (RocketMQ starts such a slave at a file boundary too). ConsumeQueues begin wherever
    /// the first replicated record of each queue puts them.
    ///
    /// # Errors
    /// [`StoreError::CannotStartAt`] when the store holds data or `offset` is not a
    /// segment boundary.
    pub fn start_at(&self, offset: u64) -> Result<()> {
        self.inner.start_at(offset)
    }

    /// Empties the store and makes it begin at `offset` (a CommitLog segment boundary).
    ///
    /// # Errors
    /// [`StoreError::CannotStartAt`] when `offset` is not a segment boundary; I/O errors.
    pub fn reset_to(&self, offset: u64) -> Result<()> {
        self.inner.reset_to(offset)
    }

    /// Every queue's next queue offset counting only its records below `phys` (those
    /// with none there left out): what a member starting over at `phys` must not
    /// assign again.
    pub fn queue_offsets_before(&self, phys: u64) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for cq in self.inner.all_queues() {
            let mut k = cq.max_offset();
            while k > cq.min_offset() {
                match cq.get(k - 1) {
                    Some(e) if e.is_valid() && e.commitlog_offset as u64 >= phys => k -= 1,
                    _ => break,
                }
            }
            if k > 0 {
                out.push((cq.topic().to_owned(), cq.queue_id(), k));
            }
        }
        out
    }

    /// Raises queues' next queue offsets (a store that started over: queue offsets its
    /// group already assigned before its oldest byte are never assigned again).
    pub fn raise_queue_offsets(&self, next: &[(String, i32, i64)]) {
        let mut tail = self.inner.commitlog.lock_tail();
        for (topic, q, n) in next {
            super::commitlog::raise_queue_offset(&mut tail.queue_offsets, topic, *q, *n);
        }
    }

    /// Raft mode: retention deletes no CommitLog segment reaching past `offset` (the
    /// first byte the Raft log still refers to). The floor only rises.
    pub fn raise_retention_floor(&self, offset: u64) {
        self.inner
            .retention_floor
            .fetch_max(offset, std::sync::atomic::Ordering::AcqRel);
    }

    /// Drops everything at and after `offset`: CommitLog, ConsumeQueue entries and the
    /// IndexFiles that reach past it (re-indexed from the CommitLog).
    ///
    /// # Errors
    /// I/O errors.
    pub fn truncate(&self, offset: u64) -> Result<()> {
        self.inner.truncate(offset)
    }

    /// Holds client appends back (a Raft leadership transfer) or lets them in again,
    /// without moving the generation: nothing written is replaced.
    pub fn pause_appends(&self, paused: bool) {
        self.inner.commitlog.pause_appends(paused);
    }

    /// Allows (a master) or refuses (a slave, a master being demoted) client appends;
    /// replicated appends ([`MessageStore::append_raw`]) are not affected.
    pub fn set_accept_appends(&self, accept: bool) {
        self.inner.commitlog.set_accept_appends(accept);
    }

    /// Whether a failed CommitLog flush made the store refuse writes (until restart:
    /// the page cache may have dropped what the flush could not write).
    pub fn is_read_only(&self) -> bool {
        self.inner
            .read_only
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether appends are accepted now: not read-only, dispatch not blocked.
    pub fn takes_writes(&self) -> bool {
        !self.is_read_only() && self.dispatch_blocked().is_none()
    }

    /// Why records cannot be dispatched now (sends are refused meanwhile), if so.
    pub fn dispatch_blocked(&self) -> Option<String> {
        self.inner
            .dispatch_blocked
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| {
                crate::sync::lock(&self.inner.dispatch_problem)
                    .clone()
                    .unwrap_or_default()
            })
    }

    /// The retried write that is failing now (ConsumeQueue, index or checkpoint flush),
    /// if one is; and how many such failures there were since start.
    pub fn transient_problem(&self) -> (Option<String>, u64) {
        (
            crate::sync::lock(&self.inner.transient).clone(),
            self.inner
                .transient_failures
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The CommitLog's generation: it moves when appends are refused or the log is cut,
    /// so a [`PutResult::generation`] older than it may name replaced bytes.
    pub fn generation(&self) -> u64 {
        self.inner.commitlog.generation()
    }
}
