//! The message store: CommitLog, ConsumeQueue, IndexFile, checkpoint, recovery, flush
//! and retention, in RocketMQ's file formats. It knows nothing of the network.
//!
//! Threads: a flush thread (msync of the CommitLog: periodic under ASYNC_FLUSH, group
//! commit on demand under SYNC_FLUSH; ConsumeQueue, index and checkpoint every
//! `flushIntervalConsumeQueue`), a dispatch thread (builds ConsumeQueue and IndexFile
//! entries and fires the arrival listener), and a housekeeping thread (retention).
//! Producers append under the tail lock (a memory copy), then wait on a `watch` of the
//! flushed offset when they asked for SYNC_FLUSH.

pub mod checkpoint;
pub mod commitlog;
pub mod config;
pub mod consume_queue;
pub mod dispatch;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod format;
pub mod index;
pub mod mapped_file;
pub mod message;
pub mod metadata;

use crate::sync::lock;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

pub use checkpoint::Checkpoint;
pub use commitlog::{now_ms, AppendResult, CommitLog};
pub use config::{parse_delay_levels, FlushDiskType, RecoveryMode, StoreConfig};

/// The topic delayed messages wait in (queue = level − 1).
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
pub use consume_queue::ConsumeQueue;
pub use dispatch::{find_property, RecordHead};
pub use error::{Result, StoreError};
pub use format::CqEntry;
pub use index::IndexService;
pub use message::{
    decode_record, encode_properties, encode_record, parse_properties, MessageToStore,
    StoredMessage,
};

use message::POS_BORN_HOST;

/// A new ConsumeQueue entry, as told to the arrival listener (long polling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// The queue's max offset after this entry.
    pub max_offset: i64,
    /// Tags code of the entry.
    pub tags_code: i64,
}

/// Called by the dispatcher for every new ConsumeQueue entry.
pub type ArrivalListener = Arc<dyn Fn(&Arrival) + Send + Sync>;

/// Told how long each CommitLog flush that wrote something took (metrics).
pub type FlushObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Where a put landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Physical offset of each message.
    pub physical_offsets: Vec<u64>,
    /// Queue offset of the first message.
    pub queue_offset: i64,
    /// Store timestamp.
    pub store_timestamp: i64,
    /// Offset one past the last message.
    pub end_offset: u64,
}

/// Outcome of a read from a queue (RocketMQ's `GetMessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMessageStatus {
    /// Messages returned.
    Found,
    /// Entries were scanned but none matched the filter.
    NoMatchedMessage,
    /// The queue has never had a message.
    NoMessageInQueue,
    /// The offset is below the queue's min offset.
    OffsetTooSmall,
    /// The offset equals the max offset (caught up).
    OffsetOverflowOne,
    /// The offset is past the max offset.
    OffsetOverflowBadly,
    /// No such queue.
    NoMatchedLogicQueue,
    /// Entries point at CommitLog data that is gone (retention).
    OffsetFoundNull,
}

/// Messages read from a queue.
#[derive(Debug, Clone)]
pub struct GetMessageResult {
    /// What happened.
    pub status: GetMessageStatus,
    /// Whole stored records, as zero-copy views of the mapped CommitLog.
    pub messages: Vec<Bytes>,
    /// Queue offset of each message.
    pub queue_offsets: Vec<i64>,
    /// Where the next read should start.
    pub next_begin_offset: i64,
    /// Queue min offset.
    pub min_offset: i64,
    /// Queue max offset (one past the last entry).
    pub max_offset: i64,
}

impl GetMessageResult {
    /// Total bytes of the returned records.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(Bytes::len).sum()
    }
}

/// Whether a send asks to be acknowledged only once durable (its `WAIT` property is not
/// `false`): the rule for both the disk flush and a SYNC_MASTER's slave.
pub fn wait_requested(msgs: &[MessageToStore]) -> bool {
    msgs.first()
        .is_none_or(|m| find_property(&m.properties, "WAIT") != Some("false"))
}

/// Which side of a timestamp [`MessageStore::search_offset_by_time`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundaryType {
    /// The first message stored at or after the time.
    Lower,
    /// The last message stored at or before the time.
    Upper,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// CommitLog segments deleted.
    pub commitlog_segments: usize,
    /// ConsumeQueue files deleted.
    pub consume_queue_files: usize,
    /// IndexFiles deleted.
    pub index_files: usize,
}

/// What recovery did at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous run did not shut down cleanly.
    pub abnormal: bool,
    /// CommitLog offset where scanning started.
    pub scanned_from: u64,
    /// Recovered end of the CommitLog.
    pub end_offset: u64,
    /// Why the scan stopped before the written bytes ended, if it did.
    pub truncated_reason: Option<String>,
    /// CommitLog offset from which records were dispatched again.
    pub redispatched_from: u64,
    /// Time recovery took.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct FlushState {
    offset: u64,
    failed: bool,
}

struct DispatchState {
    reput_offset: u64,
    last_store_timestamp: i64,
}

/// Shared state of the store; the background threads hold it too.
pub struct StoreInner {
    config: StoreConfig,
    commitlog: CommitLog,
    queues: RwLock<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>>,
    index: Mutex<IndexService>,
    dispatch: Mutex<DispatchState>,
    dispatch_cv: Condvar,
    dispatcher_idle: AtomicBool,
    flush_request: Mutex<bool>,
    flush_cv: Condvar,
    housekeeping: (Mutex<()>, Condvar),
    flushed_tx: watch::Sender<FlushState>,
    read_only: AtomicBool,
    shutdown: AtomicBool,
    listener: RwLock<Option<ArrivalListener>>,
    flush_observer: RwLock<Option<FlushObserver>>,
    confirm_offset: AtomicU64,
    checkpoint: Mutex<Checkpoint>,
    recovery: RecoveryReport,
    delay_levels_ms: Vec<i64>,
    _lock_file: File,
}

/// The store handle. Dropping the last handle shuts the store down cleanly.
pub struct MessageStore {
    inner: Arc<StoreInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::ops::Deref for MessageStore {
    type Target = StoreInner;
    fn deref(&self) -> &StoreInner {
        &self.inner
    }
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("root", &self.config.store_path_root_dir)
            .field("max_offset", &self.commitlog.max_offset())
            .finish()
    }
}

fn lock_store_dir(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Corrupt {
            path,
            reason: "the store is in use by another process".into(),
        });
    }
    Ok(f)
}

fn load_queues(
    root: &Path,
    file_size: u64,
) -> Result<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>> {
    let mut out: HashMap<String, HashMap<i32, Arc<ConsumeQueue>>> = HashMap::new();
    let topics = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(root, e)),
    };
    for t in topics.filter_map(|e| e.ok()) {
        if !t.path().is_dir() {
            continue;
        }
        let topic = t.file_name().to_string_lossy().into_owned();
        let Ok(qs) = std::fs::read_dir(t.path()) else {
            continue;
        };
        for q in qs.filter_map(|e| e.ok()) {
            let Ok(qid) = q.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cq = ConsumeQueue::open(root, &topic, qid, file_size)?;
            out.entry(topic.clone())
                .or_default()
                .insert(qid, Arc::new(cq));
        }
    }
    Ok(out)
}

fn store_timestamp_of(rec: &[u8]) -> Option<i64> {
    let sys = i32::from_be_bytes(rec.get(36..40)?.try_into().ok()?);
    let p = POS_BORN_HOST
        + if sys & format::sys_flag::BORNHOST_V6 != 0 {
            20
        } else {
            8
        };
    Some(i64::from_be_bytes(rec.get(p..p + 8)?.try_into().ok()?))
}

impl MessageStore {
    /// Opens the store under `config.store_path_root_dir`, recovering from a crash if the
    /// `abort` file says the last run did not shut down cleanly, and starts the
    /// background threads.
    ///
    /// # Errors
    /// Invalid configuration, I/O errors, the directory in use by another process, or
    /// (with [`RecoveryMode::AbsoluteConsistency`]) a corrupt tail.
    pub fn open(config: StoreConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let started = Instant::now();
        let root = config.store_path_root_dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        let lock_file = lock_store_dir(&root)?;
        let abnormal = config.abort_path().exists();
        let commitlog = CommitLog::open(
            &config.commitlog_dir(),
            config.mapped_file_size_commit_log,
            config.disk_space_warning_level_ratio,
            config.flush_disk_type == FlushDiskType::Sync,
        )?;
        let checkpoint = Checkpoint::load(&config.checkpoint_path());
        let queues = load_queues(
            &config.consume_queue_dir(),
            config.mapped_file_size_consume_queue,
        )?;
        let index = IndexService::open(
            &config.index_dir(),
            config.max_hash_slot_num,
            config.max_index_num,
        )?;
        let (flushed_tx, _) = watch::channel(FlushState::default());

        let mut inner = StoreInner {
            commitlog,
            queues: RwLock::new(queues),
            index: Mutex::new(index),
            dispatch: Mutex::new(DispatchState {
                reput_offset: 0,
                last_store_timestamp: 0,
            }),
            dispatch_cv: Condvar::new(),
            dispatcher_idle: AtomicBool::new(false),
            flush_request: Mutex::new(false),
            flush_cv: Condvar::new(),
            housekeeping: (Mutex::new(()), Condvar::new()),
            flushed_tx,
            read_only: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            listener: RwLock::new(None),
            flush_observer: RwLock::new(None),
            confirm_offset: AtomicU64::new(0),
            checkpoint: Mutex::new(checkpoint),
            recovery: RecoveryReport {
                abnormal,
                scanned_from: 0,
                end_offset: 0,
                truncated_reason: None,
                redispatched_from: 0,
                elapsed: Duration::ZERO,
            },
            _lock_file: lock_file,
            delay_levels_ms: parse_delay_levels(&config.message_delay_level).unwrap_or_default(),
            config,
        };
        inner.recover(abnormal, &checkpoint)?;
        inner.recovery.elapsed = started.elapsed();
        let end = inner.commitlog.max_offset();
        inner.flushed_tx.send_replace(FlushState {
            offset: end,
            failed: false,
        });
        inner.confirm_offset.store(
            (checkpoint.confirm_phy_offset.max(0) as u64).min(end),
            Ordering::Release,
        );

        let abort = inner.config.abort_path();
        File::create(&abort).map_err(|e| StoreError::io(&abort, e))?;
        mapped_file::sync_dir(&root).map_err(|e| StoreError::io(&root, e))?;
        info!(
            root = %root.display(),
            abnormal,
            end_offset = end,
            elapsed_ms = inner.recovery.elapsed.as_millis() as u64,
            "store opened"
        );

        let inner = Arc::new(inner);
        let mut threads = Vec::new();
        for (name, f) in [
            ("ferrocket-flush", StoreInner::flush_loop as fn(&StoreInner)),
            ("ferrocket-dispatch", StoreInner::dispatch_loop),
            ("ferrocket-housekeeping", StoreInner::housekeeping_loop),
        ] {
            let i = Arc::clone(&inner);
            let h = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&i))
                .map_err(|e| StoreError::io(&root, e))?;
            threads.push(h);
        }
        Ok(Arc::new(MessageStore {
            inner,
            threads: Mutex::new(threads),
        }))
    }

    /// Stops the threads, flushes everything, writes the checkpoint and removes the
    /// `abort` file. Idempotent.
    pub fn shutdown(&self) {
        if self.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let _g = lock(&self.flush_request);
            self.flush_cv.notify_all();
        }
        {
            let _g = lock(&self.dispatch);
            self.dispatch_cv.notify_all();
        }
        {
            let _g = lock(&self.housekeeping.0);
            self.housekeeping.1.notify_all();
        }
        for h in lock(&self.threads).drain(..) {
            let _ = h.join();
        }
        match self.inner.flush_all() {
            Ok(()) if !self.read_only.load(Ordering::Acquire) => {
                let abort = self.config.abort_path();
                if let Err(e) = std::fs::remove_file(&abort) {
                    warn!(error = %e, "could not remove the abort file");
                }
                info!(root = %self.config.store_path_root_dir.display(), "store shut down cleanly");
            }
            Ok(()) => warn!("store shut down after an I/O failure; next start recovers"),
            Err(e) => error!(error = %e, "final flush failed; next start recovers"),
        }
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl StoreInner {
    /// Delay of each level in ms (level 1 first).
    pub fn delay_levels_ms(&self) -> &[i64] {
        &self.delay_levels_ms
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What recovery did at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The CommitLog.
    pub fn commitlog(&self) -> &CommitLog {
        &self.commitlog
    }

    fn recover(&mut self, abnormal: bool, cp: &Checkpoint) -> Result<()> {
        let segs = self.commitlog.segments();
        let check_crc = abnormal || self.config.check_crc_on_recover;
        let start = if segs.is_empty() {
            0
        } else if abnormal {
            // Newest segment whose first record is older than the checkpoint minus 3 s.
            let safe = cp.physic_msg_timestamp.min(cp.logics_msg_timestamp) - 3000;
            let mut chosen = segs[0].start_offset();
            for s in segs.iter().rev() {
                let ts = s
                    .read(0, (s.size() as usize).clamp(8, 1 << 20))
                    .ok()
                    .and_then(|b| {
                        let size =
                            usize::try_from(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))
                                .ok()?;
                        store_timestamp_of(b.get(..size.min(b.len()))?)
                    });
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
        let mut reput = min_phys;
        for cq in &queues {
            cq.truncate_phys(end)?;
            cq.delete_below_phys(min_phys);
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
    fn rebuild_queue_offsets(&self, tail: &mut commitlog::Tail) {
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

    fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The ConsumeQueue of a queue, if it exists.
    pub fn consume_queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)?
            .get(&queue_id)
            .cloned()
    }

    fn find_or_create_queue(&self, topic: &str, queue_id: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.consume_queue(topic, queue_id) {
            return Ok(q);
        }
        let mut map = self.queues.write().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = map.get(topic).and_then(|m| m.get(&queue_id)) {
            return Ok(Arc::clone(q));
        }
        let cq = Arc::new(ConsumeQueue::open(
            &self.config.consume_queue_dir(),
            topic,
            queue_id,
            self.config.mapped_file_size_consume_queue,
        )?);
        map.entry(topic.to_owned())
            .or_default()
            .insert(queue_id, Arc::clone(&cq));
        Ok(cq)
    }

    /// Dispatches records from the reput offset to `to`. Stops at the first I/O error
    /// (to be retried) and leaves the reput offset there.
    fn dispatch_range(&self, st: &mut DispatchState, to: u64) -> Result<()> {
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

    fn dispatch_one(&self, rec: &[u8], listener: Option<&ArrivalListener>) -> Result<Option<i64>> {
        let Some(h) = RecordHead::parse(rec) else {
            warn!("undecodable record skipped by dispatch");
            return Ok(None);
        };
        if h.is_dispatched() {
            let cq = self.find_or_create_queue(h.topic, h.queue_id)?;
            let mut entry = h.cq_entry();
            if h.topic == SCHEDULE_TOPIC {
                // The tags code of a delayed message is its delivery time.
                let delay = usize::try_from(h.queue_id)
                    .ok()
                    .and_then(|q| self.delay_levels_ms.get(q).copied())
                    .unwrap_or(0);
                entry.tags_code = h.store_timestamp.saturating_add(delay);
            }
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

    fn dispatch_loop(&self) {
        loop {
            let stop = self.shutdown.load(Ordering::Acquire);
            let max = self.commitlog.max_offset();
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
                    error!(error = %e, offset = st.reput_offset, "dispatch failed; retrying in 1 s");
                    drop(st);
                    std::thread::sleep(Duration::from_secs(1));
                }
                continue;
            }
            if stop {
                return;
            }
            self.dispatcher_idle.store(true, Ordering::Release);
            // Re-check after announcing idleness so an append between the two is seen.
            if self.commitlog.max_offset() == st.reput_offset {
                let _ = self
                    .dispatch_cv
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| drop(g));
            }
            self.dispatcher_idle.store(false, Ordering::Release);
        }
    }

    fn wake_dispatcher(&self) {
        if self.dispatcher_idle.load(Ordering::Acquire) {
            let _g = lock(&self.dispatch);
            self.dispatch_cv.notify_one();
        }
    }

    /// Sets the listener told of every new ConsumeQueue entry.
    pub fn set_arrival_listener(&self, l: ArrivalListener) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(l);
    }

    fn flush_loop(&self) {
        let interval = Duration::from_millis(self.config.flush_interval_commit_log_ms.max(1));
        let cq_interval = Duration::from_millis(self.config.flush_interval_consume_queue_ms.max(1));
        let mut last_cq_flush = Instant::now();
        loop {
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
                if let Err(e) = self.flush_logics_and_checkpoint() {
                    self.fail(&e);
                }
            }
        }
    }

    fn fail(&self, e: &StoreError) {
        if !self.read_only.swap(true, Ordering::AcqRel) {
            error!(error = %e, "flush failed; the store is now read-only");
        }
        self.flushed_tx.send_modify(|s| s.failed = true);
    }

    /// Sets the observer told of every CommitLog flush's duration.
    pub fn set_flush_observer(&self, o: FlushObserver) {
        *self
            .flush_observer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(o);
    }

    fn flush_commitlog(&self) -> Result<()> {
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
        lock(&self.checkpoint).physic_msg_timestamp = ts.max(0);
        self.flushed_tx.send_if_modified(|s| {
            let changed = s.offset != off;
            s.offset = off;
            changed
        });
        Ok(())
    }

    fn flush_logics_and_checkpoint(&self) -> Result<()> {
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

    fn flush_all(&self) -> Result<()> {
        // Let the dispatcher finish what is written.
        {
            let mut st = lock(&self.dispatch);
            let max = self.commitlog.max_offset();
            self.dispatch_range(&mut st, max)?;
        }
        self.flush_commitlog()?;
        self.flush_logics_and_checkpoint()
    }

    fn housekeeping_loop(&self) {
        let mut last_run: Option<(i64, u8)> = None;
        while !self.shutdown.load(Ordering::Acquire) {
            {
                let g = lock(&self.housekeeping.0);
                if !self.shutdown.load(Ordering::Acquire) {
                    let _ = self.housekeeping.1.wait_timeout(g, Duration::from_secs(10));
                }
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            let now = now_ms();
            let hour = ((now / 3_600_000) % 24) as u8;
            let day = now / 86_400_000;
            let in_window = self
                .config
                .delete_hours()
                .is_some_and(|h| h.contains(&hour))
                && last_run != Some((day, hour));
            // As RocketMQ: above diskMaxUsedSpaceRatio the pass runs now and deletes the
            // expired files; above diskSpaceCleanForciblyRatio it also takes the oldest
            // files before their time.
            let ratio = self.disk_used_ratio();
            let over = ratio.is_some_and(|r| r > percent(self.config.disk_max_used_space_ratio));
            let forced =
                ratio.is_some_and(|r| r > percent(self.config.disk_space_clean_forcibly_ratio));
            if in_window || over || forced {
                last_run = Some((day, hour));
                if forced {
                    warn!(
                        ratio = ratio.unwrap_or_default(),
                        "disk use is past diskSpaceCleanForciblyRatio; deleting the oldest CommitLog file early"
                    );
                }
                let r = self.delete_expired_files(now, forced);
                if r != RetentionReport::default() {
                    info!(?r, "retention pass");
                }
            }
        }
    }

    /// Fraction of the store's filesystem in use.
    pub fn disk_used_ratio(&self) -> Option<f64> {
        let (used, total) = mapped_file::disk_usage(&self.config.store_path_root_dir)?;
        Some(used as f64 / total as f64)
    }

    /// Retention: deletes CommitLog segments older than `fileReservedTime` (with
    /// `disk_pressure`, also the oldest segment whatever its age), then the
    /// ConsumeQueue and IndexFiles that only point below the new min offset.
    pub fn delete_expired_files(&self, now_ms: i64, disk_pressure: bool) -> RetentionReport {
        let reserved_ms = self.config.file_reserved_time_hours as i64 * 3_600_000;
        let mut forced = disk_pressure;
        let n = self.commitlog.delete_segments(|seg| {
            let age_ms = seg
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| now_ms - d.as_millis() as i64)
                .unwrap_or(0);
            if age_ms >= reserved_ms {
                return true;
            }
            std::mem::replace(&mut forced, false)
        });
        let min_phys = self.commitlog.min_offset();
        let mut report = RetentionReport {
            commitlog_segments: n,
            ..RetentionReport::default()
        };
        for cq in self.all_queues() {
            report.consume_queue_files += cq.delete_below_phys(min_phys);
        }
        report.index_files = lock(&self.index).delete_below_phys(min_phys as i64);
        report
    }

    fn check_writable(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if self.read_only.load(Ordering::Acquire) {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    /// Appends one message. Under SYNC_FLUSH (and unless its `WAIT` property is
    /// `false`) the future resolves once the record is on disk.
    ///
    /// # Errors
    /// [`StoreError::Message`] for a message that cannot be stored, [`StoreError::DiskFull`],
    /// [`StoreError::FlushTimeout`] (stored, not confirmed on disk), [`StoreError::ReadOnly`].
    pub async fn put_message(&self, msg: MessageToStore) -> Result<PutResult> {
        self.put_messages(std::slice::from_ref(&msg)).await
    }

    /// Appends a batch for one topic and queue: contiguous records with consecutive
    /// queue offsets, written in one step.
    ///
    /// # Errors
    /// As [`StoreInner::put_message`]; an empty batch or mixed queues are refused.
    pub async fn put_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        let r = self.append_messages(msgs)?;
        self.await_durable(msgs, &r).await?;
        Ok(r)
    }

    /// The second half of a put: under SYNC_FLUSH, unless the batch's `WAIT` property is
    /// `false`, waits until the appended records are on disk.
    ///
    /// # Errors
    /// As [`StoreInner::wait_flushed`].
    pub async fn await_durable(&self, msgs: &[MessageToStore], appended: &PutResult) -> Result<()> {
        if self.config.flush_disk_type == FlushDiskType::Sync && wait_requested(msgs) {
            self.wait_flushed(appended.end_offset).await?;
        }
        Ok(())
    }

    /// Appends without waiting for a flush (the synchronous half of a put).
    ///
    /// # Errors
    /// As [`StoreInner::put_messages`], without the flush outcomes.
    pub fn append_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        self.check_writable()?;
        let Some(first) = msgs.first() else {
            return Err(StoreError::Message(message::RecordError::Corrupt(
                "empty batch",
            )));
        };
        if msgs
            .iter()
            .any(|m| m.topic != first.topic || m.queue_id != first.queue_id)
        {
            return Err(StoreError::Message(message::RecordError::Corrupt(
                "a batch must target one topic and queue",
            )));
        }
        let mut recs = msgs
            .iter()
            .map(|m| encode_record(m, self.config.max_message_size))
            .collect::<Result<Vec<_>, _>>()?;
        let t = first.sys_flag & format::sys_flag::TRANSACTION_TYPE_MASK;
        let assign = t != format::sys_flag::TRANSACTION_PREPARED
            && t != format::sys_flag::TRANSACTION_ROLLBACK;
        let r = self
            .commitlog
            .append(&first.topic, first.queue_id, &mut recs, assign)?;
        self.wake_dispatcher();
        Ok(PutResult {
            physical_offsets: r.physical_offsets,
            queue_offset: r.queue_offset,
            store_timestamp: r.store_timestamp,
            end_offset: r.end_offset,
        })
    }

    /// How far the dispatcher has built ConsumeQueue and index entries.
    pub fn dispatched_offset(&self) -> u64 {
        lock(&self.dispatch).reput_offset
    }

    /// Waits until the CommitLog is flushed past `offset` (group commit: one flush
    /// serves every record appended before it).
    ///
    /// # Errors
    /// [`StoreError::FlushTimeout`] after `syncFlushTimeout`; [`StoreError::ReadOnly`]
    /// when the flush failed.
    pub async fn wait_flushed(&self, offset: u64) -> Result<()> {
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

    /// Reads up to `max_count` messages (and about `max_bytes`) from a queue, starting
    /// at `offset`, keeping those whose tags code passes `filter`.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        filter: impl Fn(i64) -> bool,
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
            if !filter(e.tags_code) {
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
    pub fn read_message(&self, physical_offset: u64) -> Option<Bytes> {
        self.commitlog.read_record(physical_offset)
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

    fn queue_store_time(&self, cq: &ConsumeQueue, k: i64) -> Option<i64> {
        let e = cq.get(k)?;
        let rec = self
            .commitlog
            .read_record(u64::try_from(e.commitlog_offset).ok()?)?;
        store_timestamp_of(&rec)
    }

    /// The queue offset for a store time (binary search over the queue).
    pub fn search_offset_by_time(
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
    pub fn earliest_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.consume_queue(topic, queue_id)?;
        self.queue_store_time(&cq, cq.min_offset())
    }

    /// Store time of the newest message in a queue.
    pub fn last_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.consume_queue(topic, queue_id)?;
        self.queue_store_time(&cq, cq.max_offset() - 1)
    }

    /// Min offset of a queue.
    pub fn min_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.consume_queue(topic, queue_id)
            .map(|c| c.min_offset())
            .unwrap_or(0)
    }

    /// Max offset of a queue (one past the last entry).
    pub fn max_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.consume_queue(topic, queue_id)
            .map(|c| c.max_offset())
            .unwrap_or(0)
    }

    /// Topics and queue ids that have a ConsumeQueue.
    pub fn queue_ids(&self) -> Vec<(String, i32)> {
        self.all_queues()
            .iter()
            .map(|q| (q.topic().to_owned(), q.queue_id()))
            .collect()
    }

    /// Deletes a topic's ConsumeQueues (the CommitLog keeps its records until retention).
    pub fn delete_topic(&self, topic: &str) {
        let removed = self
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
        if removed.is_some() {
            let dir = self.config.consume_queue_dir().join(topic);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not delete ConsumeQueue directory");
            }
        }
        self.commitlog.lock_tail().queue_offsets.remove(topic);
    }

    // ---- replication hooks -------------------------------------------------------

    /// One past the last whole record in the CommitLog.
    pub fn max_phy_offset(&self) -> u64 {
        self.commitlog.max_offset()
    }

    /// Start of the oldest CommitLog segment.
    pub fn min_phy_offset(&self) -> u64 {
        self.commitlog.min_offset()
    }

    /// Bytes below this offset are on disk.
    pub fn flushed_phy_offset(&self) -> u64 {
        self.commitlog.flushed_offset()
    }

    /// Offset confirmed by replication (set by HA/Raft; persisted in the checkpoint).
    pub fn confirm_offset(&self) -> u64 {
        self.confirm_offset.load(Ordering::Acquire)
    }

    /// Records the replication-confirmed offset.
    pub fn set_confirm_offset(&self, offset: u64) {
        self.confirm_offset.store(offset, Ordering::Release);
    }

    /// Raw CommitLog bytes from `from`, at most `max_len`, never past the written end
    /// or across a segment boundary.
    pub fn read_raw(&self, from: u64, max_len: usize) -> Option<Bytes> {
        self.commitlog.read_raw(from, max_len)
    }

    /// Appends replicated bytes at exactly the max offset (whole records only; returns
    /// the bytes consumed) and dispatches them.
    ///
    /// # Errors
    /// [`StoreError::OffsetMismatch`], [`StoreError::InvalidRaw`], I/O errors.
    pub fn append_raw(&self, offset: u64, data: &[u8]) -> Result<usize> {
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
    pub fn start_at(&self, offset: u64) -> Result<()> {
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

    /// Drops everything at and after `offset`: CommitLog, ConsumeQueue entries and the
    /// IndexFiles that reach past it (re-indexed from the CommitLog).
    ///
    /// # Errors
    /// I/O errors.
    pub fn truncate(&self, offset: u64) -> Result<()> {
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
        self.dispatch_range(&mut st, offset)?;
        self.flushed_tx
            .send_modify(|s| s.offset = s.offset.min(offset));
        if self.confirm_offset() > offset {
            self.set_confirm_offset(offset);
        }
        debug!(offset, "truncation done");
        Ok(())
    }
}

fn percent(p: u8) -> f64 {
    f64::from(p) / 100.0
}
