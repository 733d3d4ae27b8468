//! The message store: CommitLog, ConsumeQueue, IndexFile, checkpoint, recovery, flush
//! and retention, in RocketMQ's file formats. It knows nothing of the network.
//!
//! Threads: a flush thread (msync of the CommitLog: periodic under ASYNC_FLUSH, group
//! commit on demand under SYNC_FLUSH; ConsumeQueue, index and checkpoint every
//! `flushIntervalConsumeQueue`), a dispatch thread (builds ConsumeQueue and IndexFile
//! entries and fires the arrival listener), and a housekeeping thread (retention).
//! Producers append under the tail lock (a memory copy), then wait on a `watch` of the
//! flushed offset when they asked for SYNC_FLUSH.

mod api;
pub mod check;
pub mod checkpoint;
pub mod commitlog;
pub mod config;
pub mod consume_queue;
pub mod dispatch;
pub mod dledger;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod flush;
pub mod format;
pub mod index;
pub mod mapped_file;
pub mod message;
pub mod metadata;
mod read;
mod recovery;
mod replica;
mod retention;
mod verify;

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
use tracing::{error, info, warn};

pub use checkpoint::Checkpoint;
pub use commitlog::{now_ms, AppendResult, CommitLog};
pub use config::{parse_delay_levels, FlushDiskType, RecoveryMode, StoreConfig};

/// The topic delayed messages wait in (queue = level − 1).
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Where 5.x timer messages wait; the ConsumeQueue tags code of each is its delivery
/// time (`TIMER_OUT_MS`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
pub use consume_queue::ConsumeQueue;
pub use dispatch::{find_property, RecordHead};
pub use error::{Result, StoreError};
pub use format::CqEntry;
pub use index::IndexService;
pub use message::{
    decode_record, encode_properties, encode_record, parse_properties, MessageToStore,
    StoredMessage,
};

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
    /// The CommitLog's generation at the append: a later one means the bytes below
    /// `end_offset` may since have been cut and replaced (a demotion, a truncation).
    pub generation: u64,
}

/// Which messages a read keeps, as RocketMQ's `MessageFilter`: first by the
/// ConsumeQueue's tags code, then (for those that pass) by the record itself.
pub trait MessageFilter {
    /// By the tags code in the ConsumeQueue entry.
    fn by_tags_code(&self, tags_code: i64) -> bool;
    /// By the stored record (properties, body); every record by default.
    fn by_record(&self, _record: &[u8]) -> bool {
        true
    }
}

impl<F: Fn(i64) -> bool> MessageFilter for F {
    fn by_tags_code(&self, tags_code: i64) -> bool {
        self(tags_code)
    }
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
    /// ConsumeQueues found damaged and rebuilt from the CommitLog.
    pub queues_rebuilt: usize,
    /// CommitLog ranges found corrupt inside flushed data and quarantined.
    pub quarantined: Vec<(u64, u64)>,
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
struct StoreInner {
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
    /// The last retried write that failed (cleared by the next success).
    transient: Mutex<Option<String>>,
    /// Dispatch is failing (why, in `dispatch_problem`): appends are refused.
    dispatch_blocked: AtomicBool,
    dispatch_problem: Mutex<Option<String>>,
    transient_failures: AtomicU64,
    shutdown: AtomicBool,
    listener: RwLock<Option<ArrivalListener>>,
    flush_observer: RwLock<Option<FlushObserver>>,
    confirm_offset: AtomicU64,
    /// The dispatcher never passes this offset (`u64::MAX` unless in Raft mode).
    dispatch_limit: AtomicU64,
    /// Retention deletes no CommitLog segment reaching past this offset (Raft mode:
    /// what the Raft log still refers to; `u64::MAX` otherwise).
    retention_floor: AtomicU64,
    checkpoint: Mutex<Checkpoint>,
    recovery: RecoveryReport,
    delay_levels_ms: Vec<i64>,
    /// Turns of the flush thread (`/healthz`).
    flush_beat: crate::watchdog::Heartbeat,
    /// Turns of the dispatch thread (`/healthz`).
    dispatch_beat: crate::watchdog::Heartbeat,
    _lock_file: File,
}

/// The flush thread is stalled when it has not turned for this long (it turns at least
/// every `flushIntervalCommitLog`; one `msync` this slow means a hung disk).
pub const FLUSH_STALL: Duration = Duration::from_secs(60);
/// The dispatch thread is stalled when it has not turned for this long (it turns every
/// 200 ms when idle; one batch of a large catch-up can take seconds).
pub const DISPATCH_STALL: Duration = Duration::from_secs(120);

/// The store handle. Dropping the last handle shuts the store down cleanly.
pub struct MessageStore {
    inner: Arc<StoreInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("root", &self.inner.config.store_path_root_dir)
            .field("max_offset", &self.inner.commitlog.max_offset())
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

/// STORETIMESTAMP of a whole record.
fn store_timestamp_of(rec: &[u8]) -> Option<i64> {
    format::RecordView::parse(rec)
        .ok()
        .map(|v| v.store_timestamp())
}

impl MessageStore {
    /// The store threads `/healthz` watches (flush, dispatch).
    #[must_use]
    pub fn heartbeats(&self) -> [&crate::watchdog::Heartbeat; 2] {
        [&self.inner.flush_beat, &self.inner.dispatch_beat]
    }

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
            config
                .repair
                .then(|| config.quarantine_dir().join("commitlog"))
                .as_deref(),
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
            transient: Mutex::new(None),
            dispatch_blocked: AtomicBool::new(false),
            dispatch_problem: Mutex::new(None),
            transient_failures: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            listener: RwLock::new(None),
            flush_observer: RwLock::new(None),
            confirm_offset: AtomicU64::new(0),
            retention_floor: AtomicU64::new(if config.keep_commitlog { 0 } else { u64::MAX }),
            dispatch_limit: AtomicU64::new(if config.dispatch_committed_only {
                checkpoint.confirm_phy_offset.max(0) as u64
            } else {
                u64::MAX
            }),
            checkpoint: Mutex::new(checkpoint),
            recovery: RecoveryReport {
                abnormal,
                scanned_from: 0,
                end_offset: 0,
                truncated_reason: None,
                redispatched_from: 0,
                queues_rebuilt: 0,
                quarantined: Vec::new(),
                elapsed: Duration::ZERO,
            },
            flush_beat: crate::watchdog::Heartbeat::new("flush", FLUSH_STALL),
            dispatch_beat: crate::watchdog::Heartbeat::new("dispatch", DISPATCH_STALL),
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
        if self.inner.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let _g = lock(&self.inner.flush_request);
            self.inner.flush_cv.notify_all();
        }
        {
            let _g = lock(&self.inner.dispatch);
            self.inner.dispatch_cv.notify_all();
        }
        {
            let _g = lock(&self.inner.housekeeping.0);
            self.inner.housekeeping.1.notify_all();
        }
        for h in lock(&self.threads).drain(..) {
            let _ = h.join();
        }
        match self.inner.flush_all() {
            Ok(()) if !self.inner.read_only.load(Ordering::Acquire) => {
                let abort = self.inner.config.abort_path();
                if let Err(e) = std::fs::remove_file(&abort) {
                    warn!(error = %e, "could not remove the abort file");
                }
                info!(root = %self.inner.config.store_path_root_dir.display(), "store shut down cleanly");
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
    pub(super) fn delay_levels_ms(&self) -> &[i64] {
        &self.delay_levels_ms
    }

    /// The configuration in force.
    pub(super) fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What recovery did at open.
    pub(super) fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The CommitLog.
    pub(super) fn commitlog(&self) -> &CommitLog {
        &self.commitlog
    }

    pub(super) fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The ConsumeQueue of a queue, if it exists.
    pub(super) fn consume_queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)?
            .get(&queue_id)
            .cloned()
    }

    pub(super) fn find_or_create_queue(
        &self,
        topic: &str,
        queue_id: i32,
    ) -> Result<Arc<ConsumeQueue>> {
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

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if self.read_only.load(Ordering::Acquire) {
            return Err(StoreError::ReadOnly);
        }
        if self.dispatch_blocked.load(Ordering::Acquire) {
            let why = lock(&self.dispatch_problem).clone().unwrap_or_default();
            return Err(StoreError::DispatchBlocked(why));
        }
        Ok(())
    }

    /// Appends one message. Under SYNC_FLUSH (and unless its `WAIT` property is
    /// `false`) the future resolves once the record is on disk.
    ///
    /// # Errors
    /// [`StoreError::Message`] for a message that cannot be stored, [`StoreError::DiskFull`],
    /// [`StoreError::FlushTimeout`] (stored, not confirmed on disk), [`StoreError::ReadOnly`].
    pub(super) async fn put_message(&self, msg: MessageToStore) -> Result<PutResult> {
        self.put_messages(std::slice::from_ref(&msg)).await
    }

    /// Appends a batch for one topic and queue: contiguous records with consecutive
    /// queue offsets, written in one step.
    ///
    /// # Errors
    /// As [`StoreInner::put_message`]; an empty batch or mixed queues are refused.
    pub(super) async fn put_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        let r = self.append_messages(msgs)?;
        self.await_durable(msgs, &r).await?;
        Ok(r)
    }

    /// Appends without waiting for a flush (the synchronous half of a put).
    ///
    /// # Errors
    /// As [`StoreInner::put_messages`], without the flush outcomes.
    pub(super) fn append_messages(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
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
        if assign {
            // The ConsumeQueue space these records will need is reserved first: a disk
            // too full for it refuses the send instead of storing what no consumer
            // could see.
            self.find_or_create_queue(&first.topic, first.queue_id)?
                .reserve_ahead(msgs.len())?;
        }
        let index_keys =
            if self.config.message_index_enable && t != format::sys_flag::TRANSACTION_ROLLBACK {
                // So is the IndexFile space for their keys (a new IndexFile included).
                let keys: usize = msgs
                    .iter()
                    .map(|m| {
                        let named = dispatch::find_property(&m.properties, format::property::KEYS)
                            .map_or(0, |k| k.split(' ').filter(|k| !k.is_empty()).count());
                        named
                            + usize::from(
                                dispatch::find_property(&m.properties, format::property::UNIQ_KEY)
                                    .is_some(),
                            )
                    })
                    .sum();
                if keys > 0 {
                    lock(&self.index).reserve_ahead(keys)?;
                }
                keys
            } else {
                0
            };
        let r = match self
            .commitlog
            .append(&first.topic, first.queue_id, &mut recs, assign)
        {
            Ok(r) => r,
            Err(e) => {
                lock(&self.index).unreserve(index_keys);
                return Err(e);
            }
        };
        self.wake_dispatcher();
        Ok(PutResult {
            physical_offsets: r.physical_offsets,
            queue_offset: r.queue_offset,
            store_timestamp: r.store_timestamp,
            end_offset: r.end_offset,
            generation: r.generation,
        })
    }

    /// Deletes a topic's ConsumeQueues (the CommitLog keeps its records until retention).
    pub(super) fn delete_topic(&self, topic: &str) {
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
}
