//! The CommitLog: every message of every topic, appended to fixed-size segments.
//!
//! One owner of the tail (`Tail`, behind a mutex held only for the in-memory copy)
//! assigns physical offsets, queue offsets and store timestamps, so a queue's order is
//! the CommitLog's order. A record never spans two segments: when it does not fit, the
//! rest of the segment is closed with `[remaining:4][BLANK_MAGIC_CODE:4]` and the record
//! goes to the next segment. Flushing (`msync`) happens outside the tail lock.
//!
//! Why one file of about 700 lines: appends, the recovery scan, truncation and raw
//! replicated appends all work on the same segment list under the same tail lock; split
//! apart, they would have to share that private state through wider visibility.

use crate::sync::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tracing::{info, warn};

use super::error::{Result, StoreError};
use super::format::{
    parse_segment_file_name, segment_file_name, BLANK_MAGIC_CODE, END_FILE_MIN_BLANK_LENGTH,
};
use super::mapped_file::{sync_dir, MappedFile};
use super::message::{check_record, EncodedRecord, RecordCheck, RecordError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Next queue offset per topic and queue id.
pub type QueueOffsetTable = HashMap<String, Vec<i64>>;

/// Raises a queue's next offset in `table` to at least `next`.
pub fn raise_queue_offset(table: &mut QueueOffsetTable, topic: &str, queue_id: i32, next: i64) {
    let Ok(q) = usize::try_from(queue_id) else {
        return;
    };
    let v = match table.get_mut(topic) {
        Some(v) => v,
        None => table.entry(topic.to_owned()).or_default(),
    };
    if v.len() <= q {
        v.resize(q + 1, 0);
    }
    v[q] = v[q].max(next);
}

/// State owned by whoever holds the tail lock.
#[derive(Debug, Default)]
pub struct Tail {
    /// Where the next record goes.
    pub write_offset: u64,
    /// Store timestamp of the last record written.
    pub last_store_timestamp: i64,
    /// Next queue offset of every queue.
    pub queue_offsets: QueueOffsetTable,
}

impl Tail {
    /// Next queue offset of a queue (0 for a queue never written).
    pub fn next_queue_offset(&self, topic: &str, queue_id: i32) -> i64 {
        usize::try_from(queue_id)
            .ok()
            .and_then(|q| self.queue_offsets.get(topic)?.get(q).copied())
            .unwrap_or(0)
    }

    fn set_next_queue_offset(&mut self, topic: &str, queue_id: i32, next: i64) {
        let Ok(q) = usize::try_from(queue_id) else {
            return;
        };
        let v = match self.queue_offsets.get_mut(topic) {
            Some(v) => v,
            None => self.queue_offsets.entry(topic.to_owned()).or_default(),
        };
        if v.len() <= q {
            v.resize(q + 1, 0);
        }
        v[q] = next;
    }
}

/// Where a batch of records landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Physical offset of each record.
    pub physical_offsets: Vec<u64>,
    /// Offset one past the last record.
    pub end_offset: u64,
    /// Queue offset of the first record.
    pub queue_offset: i64,
    /// Store timestamp given to the records.
    pub store_timestamp: i64,
    /// The log's generation when the records were appended ([`CommitLog::generation`]).
    pub generation: u64,
}

/// How [`CommitLog::truncate_locked`] cuts the segment holding the new end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Zero the cut bytes where they are: only while no reader can hold them (recovery).
    InPlace,
    /// Replace the segment by a copy of its kept bytes: readers' views stay intact.
    Rewrite,
}

/// The CommitLog.
#[derive(Debug)]
pub struct CommitLog {
    dir: PathBuf,
    segment_size: u64,
    segments: RwLock<Vec<Arc<MappedFile>>>,
    tail: Mutex<Tail>,
    /// Published end of written data: every byte below it is a whole record.
    max_offset: AtomicU64,
    /// Bytes below this are on disk.
    flushed_offset: AtomicU64,
    /// A segment was created or deleted since the directory was last synced.
    dir_dirty: AtomicBool,
    flush_lock: Mutex<()>,
    /// A new segment is refused when it would push disk use past this fraction, which
    /// keeps room for ConsumeQueue, index and metadata files.
    disk_warning_ratio: f64,
    /// Append with `pwrite` (SYNC_FLUSH) instead of copying into the mapping
    /// (ASYNC_FLUSH): under group commit the tail page is flushed constantly, and
    /// writing it through the mapping stalls on page faults while it is written back
    /// (measured: half the throughput). The same for replicated appends (a Raft
    /// follower, an HA slave), which sync every round. Reads use the mapping either way.
    write_with_syscall: bool,
    flushes: AtomicU64,
    flush_micros: AtomicU64,
    /// Client appends allowed (a master's store); replicated bytes always are.
    accept_appends: AtomicBool,
    /// Appends held back for a moment (a Raft leadership transfer): unlike a refusal,
    /// nothing written is replaced, so the generation stays.
    paused: AtomicBool,
    /// Moves whenever bytes already written may be replaced: appends are refused (a
    /// demotion) or the log is cut or repositioned. A wait for an offset started by an
    /// append of an earlier generation cannot tell its records from the bytes now there.
    generation: AtomicU64,
}

impl CommitLog {
    /// Allows or refuses client appends. Taken under the append lock, so an append in
    /// progress finishes first and none starts after a refusal (a master being demoted
    /// refuses before it cuts its log, so no stale write lands after the cut).
    pub fn set_accept_appends(&self, accept: bool) {
        let _tail = lock(&self.tail);
        if !accept {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.accept_appends.store(accept, Ordering::Release);
    }

    /// Holds client appends back (`true`) or lets them in again, without moving the
    /// generation: waits of earlier appends stay valid (their bytes stay). Taken under
    /// the append lock, so no append is in progress once it returns.
    pub fn pause_appends(&self, paused: bool) {
        let _tail = lock(&self.tail);
        self.paused.store(paused, Ordering::Release);
    }

    /// The current generation (see [`AppendResult::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Maps the segments found in `dir` (creating it if needed). The data end is not
    /// known until [`CommitLog::recover`] runs.
    ///
    /// The directory must hold one contiguous run of segments and nothing else: a file
    /// that is not a segment, or a missing segment between two others, stops the open
    /// with [`StoreError::Corrupt`] naming it — nothing intact is dropped or hidden.
    /// With `quarantine` (`--repair`), such files are moved there instead (for a gap,
    /// the segments older than it), each named in a warning.
    ///
    /// # Errors
    /// I/O errors; a segment longer than `segment_size`; an unexpected or missing file
    /// without `quarantine`.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        disk_warning_ratio_percent: u8,
        write_with_syscall: bool,
        quarantine: Option<&Path>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        remove_truncation_leftovers(dir);
        let mut names: Vec<u64> = Vec::new();
        let mut unexpected: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(dir, e))?
            .filter_map(|e| e.ok())
        {
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match parse_segment_file_name(&e.file_name().to_string_lossy()) {
                Some(start) if start % segment_size == 0 => names.push(start),
                _ => unexpected.push(e.path()),
            }
        }
        unexpected.sort();
        if let Some(first) = unexpected.first() {
            let Some(q) = quarantine else {
                return Err(StoreError::Corrupt {
                    path: first.clone(),
                    reason: format!(
                        "not a CommitLog segment (segments are named by their 20-digit start offset, a multiple of {segment_size}); move it out of {}, or start with --repair to move it to the quarantine directory",
                        dir.display()
                    ),
                });
            };
            for path in &unexpected {
                quarantine_file(path, q)?;
            }
        }
        names.sort_unstable();
        // One contiguous run: a gap means a segment is missing.
        let mut first = 0;
        for i in 1..names.len() {
            if names[i] == names[i - 1] + segment_size {
                continue;
            }
            let Some(q) = quarantine else {
                return Err(StoreError::Corrupt {
                    path: dir.join(segment_file_name(names[i - 1] + segment_size)),
                    reason: format!(
                        "CommitLog segment missing: {} is followed by {}; restore it, or start with --repair to keep the segments from {} on and move the older ones to the quarantine directory",
                        segment_file_name(names[i - 1]),
                        segment_file_name(names[i]),
                        segment_file_name(names[i]),
                    ),
                });
            };
            for older in &names[first..i] {
                quarantine_file(&dir.join(segment_file_name(*older)), q)?;
            }
            first = i;
        }
        let mut segments = Vec::new();
        for (i, start) in names[first..].iter().enumerate() {
            if start % segment_size != 0 {
                return Err(StoreError::Corrupt {
                    path: dir.join(segment_file_name(*start)),
                    reason: format!("name is not a multiple of the segment size {segment_size}"),
                });
            }
            let path = dir.join(segment_file_name(*start));
            let len = std::fs::metadata(&path)
                .map_err(|e| StoreError::io(&path, e))?
                .len();
            if len != segment_size && i + first + 1 != names.len() {
                return Err(StoreError::Corrupt {
                    path,
                    reason: format!("{len} bytes, expected {segment_size}"),
                });
            }
            let f = MappedFile::open(&path, *start, segment_size)
                .map_err(|e| StoreError::io(&path, e))?;
            segments.push(Arc::new(f));
        }
        let min = segments.first().map(|s| s.start_offset()).unwrap_or(0);
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            segment_size,
            segments: RwLock::new(segments),
            tail: Mutex::new(Tail {
                write_offset: min,
                ..Tail::default()
            }),
            max_offset: AtomicU64::new(min),
            flushed_offset: AtomicU64::new(min),
            dir_dirty: AtomicBool::new(false),
            accept_appends: AtomicBool::new(true),
            paused: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            disk_warning_ratio: f64::from(disk_warning_ratio_percent) / 100.0,
            write_with_syscall,
            flushes: AtomicU64::new(0),
            flush_micros: AtomicU64::new(0),
        })
    }

    /// Segment size.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Snapshot of the mapped segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<MappedFile>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One past the last whole record.
    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// Start of the oldest segment (0 when empty... or the recovered start).
    pub fn min_offset(&self) -> u64 {
        self.segments()
            .first()
            .map(|s| s.start_offset())
            .unwrap_or_else(|| self.max_offset())
    }

    /// Bytes below this offset are on disk.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// Flushes done and microseconds spent in them.
    pub fn flush_stats(&self) -> (u64, u64) {
        (
            self.flushes.load(Ordering::Relaxed),
            self.flush_micros.load(Ordering::Relaxed),
        )
    }

    /// Locks the tail (for recovery and replication, which rewrite it).
    pub fn lock_tail(&self) -> MutexGuard<'_, Tail> {
        lock(&self.tail)
    }

    /// The segment holding `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let i = segs.partition_point(|s| s.start_offset() <= offset);
        let s = segs.get(i.checked_sub(1)?)?;
        (offset < s.end_offset()).then(|| Arc::clone(s))
    }

    fn create_segment(&self, start: u64) -> Result<Arc<MappedFile>> {
        let path = self.dir.join(segment_file_name(start));
        if let Some((used, total)) = super::mapped_file::disk_usage(&self.dir) {
            if (used + self.segment_size) as f64 > self.disk_warning_ratio * total as f64 {
                warn!(
                    used,
                    total,
                    segment = %path.display(),
                    "disk use would pass diskSpaceWarningLevelRatio; refusing a new CommitLog segment"
                );
                return Err(StoreError::DiskFull { path });
            }
        }
        let f = MappedFile::create(&path, start, self.segment_size)
            .map_err(|e| StoreError::io(&path, e))?;
        let f = Arc::new(f);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&f));
        self.dir_dirty.store(true, Ordering::Release);
        info!(segment = %path.display(), "created CommitLog segment");
        Ok(f)
    }

    /// Writes a record's bytes at CommitLog offset `at` of `seg`, the way this log's
    /// flush policy wants ([`CommitLog::write_with_syscall`]); client appends and
    /// replicated ones alike.
    fn write_record(&self, seg: &MappedFile, at: u64, bytes: &[u8]) -> Result<()> {
        let pos = (at - seg.start_offset()) as usize;
        seg.writer()
            .and_then(|mut w| {
                if self.write_with_syscall {
                    w.pwrite_at(pos, bytes)
                } else {
                    w.write_at(pos, bytes)
                }
            })
            .map_err(|e| StoreError::io(seg.path(), e))
    }

    fn segment_for_write(&self, write_offset: u64) -> Result<Arc<MappedFile>> {
        if let Some(s) = self.segments().last() {
            if s.start_offset() <= write_offset && write_offset < s.end_offset() {
                return Ok(Arc::clone(s));
            }
        }
        self.create_segment(write_offset - write_offset % self.segment_size)
    }

    /// Appends a batch of records for one queue, contiguously, in one step.
    ///
    /// With `assign_queue_offsets` the records get consecutive queue offsets from the
    /// queue's next offset; without (prepared and rollback transaction records) they get 0.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`] or I/O errors creating a segment (nothing is written);
    /// [`StoreError::Message`] when the batch cannot fit a segment.
    pub fn append(
        &self,
        topic: &str,
        queue_id: i32,
        records: &mut [EncodedRecord],
        assign_queue_offsets: bool,
    ) -> Result<AppendResult> {
        let total: u64 = records.iter().map(|r| r.len() as u64).sum();
        if total + END_FILE_MIN_BLANK_LENGTH > self.segment_size {
            return Err(StoreError::Message(RecordError::TooLarge {
                len: total as usize,
                max: (self.segment_size - END_FILE_MIN_BLANK_LENGTH) as usize,
            }));
        }
        let mut tail = lock(&self.tail);
        if !self.accept_appends.load(Ordering::Acquire) || self.paused.load(Ordering::Acquire) {
            return Err(StoreError::NotMaster);
        }
        let mut seg = self.segment_for_write(tail.write_offset)?;
        if tail.write_offset + total + END_FILE_MIN_BLANK_LENGTH > seg.end_offset() {
            // Close this segment with the filler, then continue in a new one. The new
            // segment is created first so a full disk leaves the old tail untouched.
            let next = self.create_segment(seg.end_offset())?;
            let remaining = seg.end_offset() - tail.write_offset;
            let mut blank = [0u8; 8];
            blank[..4].copy_from_slice(&(remaining as i32).to_be_bytes());
            blank[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
            let pos = (tail.write_offset - seg.start_offset()) as usize;
            seg.writer()
                .and_then(|mut w| w.write_at(pos, &blank))
                .map_err(|e| StoreError::io(seg.path(), e))?;
            tail.write_offset = seg.end_offset();
            seg = next;
        }
        let now = now_ms().max(tail.last_store_timestamp);
        let first_qo = if assign_queue_offsets {
            tail.next_queue_offset(topic, queue_id)
        } else {
            0
        };
        let mut phys = tail.write_offset;
        let mut physical_offsets = Vec::with_capacity(records.len());
        for (i, rec) in records.iter_mut().enumerate() {
            let qo = if assign_queue_offsets {
                first_qo + i as i64
            } else {
                0
            };
            rec.assign(qo, phys as i64, now);
            self.write_record(&seg, phys, &rec.bytes)?;
            physical_offsets.push(phys);
            phys += rec.len() as u64;
        }
        if assign_queue_offsets {
            tail.set_next_queue_offset(topic, queue_id, first_qo + records.len() as i64);
        }
        tail.write_offset = phys;
        tail.last_store_timestamp = now;
        self.max_offset.store(phys, Ordering::Release);
        Ok(AppendResult {
            physical_offsets,
            end_offset: phys,
            queue_offset: first_qo,
            store_timestamp: now,
            generation: self.generation.load(Ordering::Acquire),
        })
    }

    /// The whole record at `offset`, as a zero-copy view; `None` when no complete record
    /// starts there.
    pub fn read_record(&self, offset: u64) -> Option<Bytes> {
        let max = self.max_offset();
        if offset >= max {
            return None;
        }
        let seg = self.segment_for(offset)?;
        let pos = (offset - seg.start_offset()) as usize;
        let head = seg.read(pos, 8).ok()?;
        let size = i32::from_be_bytes(head[..4].try_into().ok()?);
        let magic = i32::from_be_bytes(head[4..8].try_into().ok()?);
        if size <= 0 || magic == BLANK_MAGIC_CODE {
            return None;
        }
        let size = size as u64;
        if offset + size > max || offset + size > seg.end_offset() {
            return None;
        }
        seg.view(pos, size as usize).ok()
    }

    /// Calls `f(offset, record)` for each whole record in `[from, to)`, skipping
    /// end-of-segment fillers, until `f` returns `false`; returns the offset reached.
    /// `to` must not exceed [`CommitLog::max_offset`].
    pub fn for_each_record(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> bool,
    ) -> u64 {
        let mut off = from;
        while off < to {
            let Some(seg) = self.segment_for(off) else {
                break;
            };
            let pos = (off - seg.start_offset()) as usize;
            let Ok(head) = seg.read(pos, 8) else {
                off = seg.end_offset();
                continue;
            };
            let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let magic = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if magic == BLANK_MAGIC_CODE {
                off = seg.end_offset();
                continue;
            }
            let Ok(size) = u64::try_from(size) else {
                break;
            };
            if size == 0 || off + size > to || off + size > seg.end_offset() {
                break;
            }
            let Ok(rec) = seg.read(pos, size as usize) else {
                break;
            };
            if !f(off, rec) {
                break;
            }
            off += size;
        }
        off
    }

    /// Raw bytes `[from, min(from + max_len, max offset, segment end))` for replication.
    pub fn read_raw(&self, from: u64, max_len: usize) -> Option<Bytes> {
        let max = self.max_offset();
        if from >= max {
            return None;
        }
        let seg = self.segment_for(from)?;
        let end = max.min(seg.end_offset()).min(from + max_len as u64);
        seg.view((from - seg.start_offset()) as usize, (end - from) as usize)
            .ok()
    }

    /// Flushes everything written so far; returns the new flushed offset and the store
    /// timestamp of the last flushed record.
    ///
    /// # Errors
    /// The `msync`/`fsync` error; the caller turns the store read-only.
    pub fn flush(&self) -> Result<(u64, i64)> {
        let _guard = lock(&self.flush_lock);
        #[cfg(feature = "failpoints")]
        super::failpoints::before_flush();
        let (target, ts) = {
            let tail = lock(&self.tail);
            (tail.write_offset, tail.last_store_timestamp)
        };
        let from = self.flushed_offset();
        let started = std::time::Instant::now();
        if target > from {
            for seg in self.segments() {
                let lo = from.max(seg.start_offset());
                let hi = target.min(seg.end_offset());
                if lo < hi {
                    seg.flush_range((lo - seg.start_offset()) as usize, (hi - lo) as usize)
                        .map_err(|e| StoreError::io(seg.path(), e))?;
                }
            }
        }
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = sync_dir(&self.dir) {
                self.dir_dirty.store(true, Ordering::Release);
                return Err(StoreError::io(&self.dir, e));
            }
        }
        if target > from {
            self.flushed_offset.store(target, Ordering::Release);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.flush_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Ok((target.max(from), ts))
    }

    /// Scans from `from` (a record boundary) to the end of valid data, calling
    /// `on_record(offset, bytes)` for each whole record, and returns the end offset and
    /// what stopped the scan (`None` for a clean end).
    pub fn scan(
        &self,
        from: u64,
        check_crc: bool,
        mut on_record: impl FnMut(u64, &[u8]),
    ) -> (u64, Option<(u64, RecordError)>) {
        let mut offset = from;
        loop {
            let Some(seg) = self.segment_for(offset) else {
                return (offset, None);
            };
            let pos = (offset - seg.start_offset()) as usize;
            let rest = match seg.read(pos, (seg.end_offset() - offset) as usize) {
                Ok(r) => r,
                Err(_) => return (offset, None),
            };
            match check_record(rest, check_crc, Some(offset as i64)) {
                Ok(RecordCheck::Message { size }) => {
                    on_record(offset, &rest[..size]);
                    offset += size as u64;
                }
                Ok(RecordCheck::Blank { size }) => {
                    offset += size as u64;
                    if self.segment_for(offset).is_none() {
                        return (offset, None);
                    }
                }
                Ok(RecordCheck::End) => return (offset, None),
                Err(e) => {
                    // Fewer than 8 bytes left that are all zero also count as the end.
                    if rest.len() < 8 && rest.iter().all(|b| *b == 0) {
                        return (offset, None);
                    }
                    return (offset, Some((offset, e)));
                }
            }
        }
    }

    /// The first offset after `at`, in `at`'s segment, where a whole, valid message record
    /// starts (magic, size, CRC, and its PHYSICALOFFSET field naming that offset): where
    /// intact data resumes after a damaged record. `None` when none does.
    pub fn resync_after(&self, at: u64) -> Option<u64> {
        let seg = self.segment_for(at)?;
        let end = seg.end_offset();
        let mut o = at + 1;
        while o + 8 <= end {
            let pos = (o - seg.start_offset()) as usize;
            let rest = seg.read(pos, (end - o) as usize).ok()?;
            let magic = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if (magic == super::format::MESSAGE_MAGIC_CODE_V1
                || magic == super::format::MESSAGE_MAGIC_CODE_V2)
                && matches!(
                    check_record(rest, true, Some(o as i64)),
                    Ok(RecordCheck::Message { .. })
                )
            {
                return Some(o);
            }
            o += 1;
        }
        None
    }

    /// The bytes `[from, to)` of one segment.
    pub fn raw_range(&self, from: u64, to: u64) -> Option<Vec<u8>> {
        let seg = self.segment_for(from)?;
        if to > seg.end_offset() || to < from {
            return None;
        }
        seg.read((from - seg.start_offset()) as usize, (to - from) as usize)
            .ok()
            .map(<[u8]>::to_vec)
    }

    /// Overwrites bytes at `offset` inside one segment and flushes them (recovery only,
    /// before any reader exists).
    ///
    /// # Errors
    /// I/O errors; a range that leaves the segment.
    pub fn overwrite(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let seg = self.segment_for(offset).ok_or(StoreError::Corrupt {
            path: self.dir.clone(),
            reason: format!("no segment holds offset {offset}"),
        })?;
        let pos = (offset - seg.start_offset()) as usize;
        seg.writer()
            .and_then(|mut w| w.pwrite_at(pos, bytes))
            .and_then(|()| seg.flush_range(pos, bytes.len()))
            .map_err(|e| StoreError::io(seg.path(), e))
    }

    /// Drops everything at and after `offset` and deletes later segments; sets the write
    /// position to `offset`. The rest of the cut segment reads back as zeros, so stale
    /// records can never be read back. With [`Truncation::InPlace`] (recovery, before any
    /// reader exists) the segment is zeroed where it is; with [`Truncation::Rewrite`]
    /// (while serving) a new file with the kept bytes replaces it, so a reader holding a
    /// zero-copy view of the cut bytes keeps them (`MappedFile::rewrite_prefix`).
    ///
    /// # Errors
    /// I/O errors.
    pub fn truncate_locked(&self, tail: &mut Tail, offset: u64, how: Truncation) -> Result<()> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let segs = self.segments();
        let mut keep = Vec::new();
        for seg in segs {
            if seg.start_offset() >= offset {
                drop_segment(&seg);
                self.dir_dirty.store(true, Ordering::Release);
                continue;
            }
            if seg.end_offset() > offset {
                let pos = (offset - seg.start_offset()) as usize;
                match how {
                    Truncation::InPlace => seg
                        .writer()
                        .and_then(|mut w| w.discard_from(pos))
                        .map_err(|e| StoreError::io(seg.path(), e))?,
                    Truncation::Rewrite => {
                        let fresh = seg
                            .rewrite_prefix(pos)
                            .map_err(|e| StoreError::io(seg.path(), e))?;
                        keep.push(Arc::new(fresh));
                        continue;
                    }
                }
            }
            keep.push(seg);
        }
        *self.segments.write().unwrap_or_else(|p| p.into_inner()) = keep;
        tail.write_offset = offset;
        self.max_offset.store(offset, Ordering::Release);
        if self.flushed_offset() > offset {
            self.flushed_offset.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Sets the recovered end: the write position, flushed offset and last timestamp.
    pub fn set_recovered_end(&self, tail: &mut Tail, offset: u64, last_store_timestamp: i64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        tail.write_offset = offset;
        tail.last_store_timestamp = last_store_timestamp;
        self.max_offset.store(offset, Ordering::Release);
        self.flushed_offset.store(offset, Ordering::Release);
    }

    /// Appends raw replicated bytes at exactly the current max offset. Only whole
    /// records (and whole end-of-segment fillers) are taken; returns how many bytes of
    /// `data` were consumed (the rest waits for more bytes). Each record's physical
    /// offset field and CRC are checked. `on_record` sees every appended record.
    ///
    /// # Errors
    /// [`StoreError::OffsetMismatch`] when `offset` is not the max offset;
    /// [`StoreError::InvalidRaw`] when the bytes are not valid records.
    pub fn append_raw(
        &self,
        offset: u64,
        data: &[u8],
        mut on_record: impl FnMut(u64, &[u8]),
    ) -> Result<usize> {
        let mut tail = lock(&self.tail);
        if offset != tail.write_offset {
            return Err(StoreError::OffsetMismatch {
                offered: offset,
                expected: tail.write_offset,
            });
        }
        let mut consumed = 0usize;
        while consumed < data.len() {
            let at = offset + consumed as u64;
            let seg = self.segment_for_write(at)?;
            let seg_rest = (seg.end_offset() - at) as usize;
            let avail = &data[consumed..];
            if avail.len() < 8 {
                break;
            }
            let size = i32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
            let magic = i32::from_be_bytes([avail[4], avail[5], avail[6], avail[7]]);
            let invalid = |reason: String| StoreError::InvalidRaw { offset: at, reason };
            if magic == BLANK_MAGIC_CODE {
                if usize::try_from(size).ok() != Some(seg_rest) {
                    return Err(invalid(format!(
                        "filler of {size} bytes but the segment has {seg_rest} left"
                    )));
                }
                if avail.len() < seg_rest {
                    break;
                }
                seg.writer()
                    .and_then(|mut w| w.write_at((at - seg.start_offset()) as usize, &avail[..8]))
                    .map_err(|e| StoreError::io(seg.path(), e))?;
                consumed += seg_rest;
                continue;
            }
            let Ok(size) = usize::try_from(size) else {
                return Err(invalid(format!("negative size {size}")));
            };
            if size == 0 || size + END_FILE_MIN_BLANK_LENGTH as usize > seg_rest {
                return Err(invalid(format!("record of {size} bytes cannot start here")));
            }
            if avail.len() < size {
                break;
            }
            let rec = &avail[..size];
            match check_record(rec, true, Some(at as i64)) {
                Ok(RecordCheck::Message { .. }) => {}
                Ok(other) => return Err(invalid(format!("unexpected {other:?}"))),
                Err(e) => return Err(invalid(e.to_string())),
            }
            self.write_record(&seg, at, rec)?;
            if let Some(h) = super::dispatch::RecordHead::parse(rec) {
                if h.is_dispatched() {
                    tail.set_next_queue_offset(h.topic, h.queue_id, h.queue_offset + 1);
                }
                tail.last_store_timestamp = h.store_timestamp;
            }
            on_record(at, rec);
            consumed += size;
        }
        tail.write_offset = offset + consumed as u64;
        self.max_offset.store(tail.write_offset, Ordering::Release);
        Ok(consumed)
    }

    /// Deletes whole segments (never the one being written) for which `expired` holds,
    /// oldest first, stopping at the first that is kept. Returns how many were deleted.
    pub fn delete_segments(&self, mut expired: impl FnMut(&MappedFile) -> bool) -> usize {
        let write_offset = self.max_offset();
        let mut segs = self.segments.write().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while segs.len() > 1 {
            let s = &segs[0];
            if s.end_offset() > write_offset || !expired(s) {
                break;
            }
            let s = segs.remove(0);
            drop_segment(&s);
            n += 1;
        }
        if n > 0 {
            self.dir_dirty.store(true, Ordering::Release);
        }
        n
    }
}

fn drop_segment(seg: &MappedFile) {
    // Readers holding views keep the mapping alive; unlinking is safe under them.
    match std::fs::remove_file(seg.path()) {
        Ok(()) => info!(segment = %seg.path().display(), "deleted CommitLog segment"),
        Err(e) => warn!(segment = %seg.path().display(), error = %e, "could not delete segment"),
    }
}

/// Moves `path` into the quarantine directory `q` (created if needed), loudly.
fn quarantine_file(path: &Path, q: &Path) -> Result<()> {
    std::fs::create_dir_all(q).map_err(|e| StoreError::io(q, e))?;
    let name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    let to = q.join(name);
    std::fs::rename(path, &to).map_err(|e| StoreError::io(path, e))?;
    warn!(file = %path.display(), to = %to.display(), "--repair: moved out of the CommitLog into quarantine");
    Ok(())
}

/// Deletes what a crash in the middle of `MappedFile::rewrite_prefix` left behind (the
/// segment itself is intact: the swap is a rename).
fn remove_truncation_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        if e.file_name()
            .to_string_lossy()
            .ends_with(super::mapped_file::TRUNCATING_SUFFIX)
        {
            warn!(file = %e.path().display(), "removing an unfinished truncation copy");
            let _ = std::fs::remove_file(e.path());
        }
    }
}
