//! ConsumeQueue: per topic and queue, a dense array of 20-byte entries
//! `[commitlog_offset:8][size:4][tags_code:8]`, entry `k` at byte `k * 20`, in files
//! of `mappedFileSizeConsumeQueue` bytes named by their first byte's offset.
//!
//! Written only by the dispatcher (one writer); `max_offset` is published after each
//! entry, and readers read below it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::{info, warn};

use super::error::{Result, StoreError};
use super::format::{parse_segment_file_name, segment_file_name, CqEntry, CQ_ENTRY_SIZE};
use super::mapped_file::{sync_dir, MappedFile};

const ENTRY: u64 = CQ_ENTRY_SIZE as u64;

/// Entries reserved beyond a send's own by [`ConsumeQueue::reserve_ahead`]: room for
/// the ones appended but not yet dispatched.
pub const RESERVE_SLACK: u64 = 1024;

/// One queue's ConsumeQueue.
#[derive(Debug)]
pub struct ConsumeQueue {
    topic: String,
    queue_id: i32,
    dir: PathBuf,
    file_size: u64,
    files: RwLock<Vec<Arc<MappedFile>>>,
    /// One past the last entry written (logical).
    max_offset: AtomicI64,
    /// First valid entry (logical).
    min_offset: AtomicI64,
    /// Entries below this (logical) are on disk.
    flushed: Mutex<i64>,
}

impl ConsumeQueue {
    /// Opens (or prepares to create) the queue under `root/<topic>/<queue_id>/`.
    ///
    /// # Errors
    /// I/O errors listing or mapping the files.
    pub fn open(root: &Path, topic: &str, queue_id: i32, file_size: u64) -> Result<Self> {
        let dir = root.join(topic).join(queue_id.to_string());
        let mut starts: Vec<u64> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
                .filter(|s| s % file_size == 0)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        starts.sort_unstable();
        let mut files = Vec::with_capacity(starts.len());
        for s in starts {
            let path = dir.join(segment_file_name(s));
            let f = MappedFile::open(&path, s, file_size).map_err(|e| StoreError::io(&path, e))?;
            files.push(Arc::new(f));
        }
        let cq = ConsumeQueue {
            topic: topic.to_owned(),
            queue_id,
            dir,
            file_size,
            files: RwLock::new(files),
            max_offset: AtomicI64::new(0),
            min_offset: AtomicI64::new(0),
            flushed: Mutex::new(0),
        };
        cq.recover();
        Ok(cq)
    }

    /// Topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queue id.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    fn files(&self) -> Vec<Arc<MappedFile>> {
        self.files.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn entry_at(files: &[Arc<MappedFile>], offset: i64) -> Option<CqEntry> {
        let byte = u64::try_from(offset).ok()?.checked_mul(ENTRY)?;
        let i = files.partition_point(|f| f.start_offset() <= byte);
        let f = files.get(i.checked_sub(1)?)?;
        if byte + ENTRY > f.end_offset() {
            return None;
        }
        let raw = f
            .read((byte - f.start_offset()) as usize, CQ_ENTRY_SIZE)
            .ok()?;
        let arr: &[u8; CQ_ENTRY_SIZE] = raw.try_into().ok()?;
        Some(CqEntry::decode(arr))
    }

    /// Finds the written extent from the files: the entry after the last valid one, and
    /// the first valid entry.
    fn recover(&self) {
        let files = self.files();
        let mut max = files
            .first()
            .map(|f| (f.start_offset() / ENTRY) as i64)
            .unwrap_or(0);
        'files: for f in files.iter().rev() {
            let first = (f.start_offset() / ENTRY) as i64;
            let n = (f.size() / ENTRY) as i64;
            // Entries are written in order: find the last valid one by scanning forward
            // until the first all-zero entry.
            let mut last_valid = None;
            for k in 0..n {
                match Self::entry_at(&files, first + k) {
                    Some(e) if e.is_valid() || e == CqEntry::PLACEHOLDER => {
                        if e.is_valid() {
                            last_valid = Some(first + k);
                        }
                    }
                    _ => break,
                }
            }
            if let Some(k) = last_valid {
                max = k + 1;
                break 'files;
            }
        }
        let mut min = max;
        if let Some(f) = files.first() {
            let first = (f.start_offset() / ENTRY) as i64;
            for k in first..max {
                if Self::entry_at(&files, k).is_some_and(|e| e.is_valid()) {
                    min = k;
                    break;
                }
            }
        }
        self.max_offset.store(max, Ordering::Release);
        self.min_offset.store(min, Ordering::Release);
        *self.flushed.lock().unwrap_or_else(|p| p.into_inner()) = max;
    }

    /// What is wrong with the files themselves: a missing file between two others, or a
    /// file of the wrong length. `None` when the layout is whole.
    pub fn layout_problem(&self) -> Option<String> {
        let files = self.files();
        for pair in files.windows(2) {
            if pair[1].start_offset() != pair[0].start_offset() + self.file_size {
                return Some(format!(
                    "file {} is missing",
                    segment_file_name(pair[0].start_offset() + self.file_size)
                ));
            }
        }
        files.iter().find_map(|f| {
            let len = std::fs::metadata(f.path()).map(|m| m.len()).ok()?;
            (len != self.file_size).then(|| {
                format!(
                    "file {} is {len} bytes, not {}",
                    segment_file_name(f.start_offset()),
                    self.file_size
                )
            })
        })
    }

    /// Calls `f(logical offset, entry)` for the entries in `[min, max)` in order until it
    /// returns `false` (a read of the whole queue: verification at start-up).
    pub fn for_each_entry(&self, mut f: impl FnMut(i64, CqEntry) -> bool) {
        let files = self.files();
        for k in self.min_offset()..self.max_offset() {
            if !f(k, Self::entry_at(&files, k).unwrap_or(CqEntry::PLACEHOLDER)) {
                return;
            }
        }
    }

    /// Deletes every file of this queue (before a rebuild from the CommitLog).
    pub fn destroy(&self) {
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        for f in files.drain(..) {
            let _ = std::fs::remove_file(f.path());
        }
        self.max_offset.store(0, Ordering::Release);
        self.min_offset.store(0, Ordering::Release);
        *self.flushed.lock().unwrap_or_else(|p| p.into_inner()) = 0;
    }

    /// One past the last entry.
    pub fn max_offset(&self) -> i64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// First entry still present.
    pub fn min_offset(&self) -> i64 {
        self.min_offset.load(Ordering::Acquire)
    }

    /// The last entry, if any.
    pub fn last_entry(&self) -> Option<CqEntry> {
        let max = self.max_offset();
        (max > self.min_offset())
            .then(|| self.get(max - 1))
            .flatten()
    }

    /// The entry at a logical offset below `max_offset`.
    pub fn get(&self, offset: i64) -> Option<CqEntry> {
        if offset < 0 || offset >= self.max_offset() {
            return None;
        }
        Self::entry_at(&self.files(), offset)
    }

    /// Up to `max` entries from `offset` (stopping at the written end).
    pub fn entries(&self, offset: i64, max: usize) -> Vec<CqEntry> {
        let end = self.max_offset();
        let files = self.files();
        let mut out = Vec::new();
        let mut k = offset.max(0);
        while k < end && out.len() < max {
            match Self::entry_at(&files, k) {
                Some(e) => out.push(e),
                None => break,
            }
            k += 1;
        }
        out
    }

    fn file_for_write(&self, byte: u64) -> Result<(Arc<MappedFile>, bool)> {
        let start = byte - byte % self.file_size;
        {
            let files = self.files.read().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = files.iter().rev().find(|f| f.start_offset() == start) {
                return Ok((Arc::clone(f), false));
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let path = self.dir.join(segment_file_name(start));
        let f = Arc::new(
            // Allocated as it fills (a queue with a few messages takes 64 KiB, not the
            // whole file): `put` reserves before it writes.
            MappedFile::create_lazy(&path, start, self.file_size)
                .map_err(|e| StoreError::io(&path, e))?,
        );
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        let first = files.is_empty();
        let i = files.partition_point(|x| x.start_offset() < start);
        files.insert(i, Arc::clone(&f));
        drop(files);
        if let Some(parent) = self.dir.parent() {
            let _ = sync_dir(parent);
        }
        let _ = sync_dir(&self.dir);
        Ok((f, first))
    }

    /// Makes sure the files and disk space for the next `n` entries (and the next
    /// [`RESERVE_SLACK`], for entries still being dispatched) exist, so the dispatcher
    /// cannot fail on them for want of space.
    ///
    /// # Errors
    /// I/O errors creating or allocating a file (`DiskFull` on ENOSPC).
    pub fn reserve_ahead(&self, n: usize) -> Result<()> {
        let from = u64::try_from(self.max_offset()).unwrap_or(0) * ENTRY;
        let to = from + (n as u64 + RESERVE_SLACK) * ENTRY;
        let mut at = from;
        while at < to {
            let (f, _) = self.file_for_write(at)?;
            let upto = to.min(f.end_offset());
            f.reserve(upto - f.start_offset())
                .map_err(|e| StoreError::io(f.path(), e))?;
            at = f.end_offset();
        }
        Ok(())
    }

    /// Writes the entry for logical `offset`. Rewriting an existing entry (re-dispatch
    /// after a crash) is allowed and idempotent.
    ///
    /// # Errors
    /// I/O errors creating a file (the dispatcher retries).
    pub fn put(&self, offset: i64, entry: CqEntry) -> Result<()> {
        let Some(byte) = u64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_mul(ENTRY))
        else {
            warn!(topic = %self.topic, queue = self.queue_id, offset, "negative queue offset ignored");
            return Ok(());
        };
        let (f, first_file) = self.file_for_write(byte)?;
        let pos = (byte - f.start_offset()) as usize;
        f.reserve(pos as u64 + ENTRY)
            .map_err(|e| StoreError::io(f.path(), e))?;
        if first_file && pos > 0 {
            // A queue that starts mid-file: fill the head with placeholders, like RocketMQ.
            let ph = CqEntry::PLACEHOLDER.encode();
            for p in (0..pos).step_by(CQ_ENTRY_SIZE) {
                f.writer()
                    .and_then(|mut w| w.write_at(p, &ph))
                    .map_err(|e| StoreError::io(f.path(), e))?;
            }
        }
        f.writer()
            .and_then(|mut w| w.write_at(pos, &entry.encode()))
            .map_err(|e| StoreError::io(f.path(), e))?;
        if offset >= self.max_offset() {
            if self.max_offset() == self.min_offset() {
                self.min_offset.store(offset, Ordering::Release);
            }
            self.max_offset.store(offset + 1, Ordering::Release);
        }
        Ok(())
    }

    /// Removes every entry that points at or past `phys` in the CommitLog.
    ///
    /// # Errors
    /// I/O errors zeroing entries.
    pub fn truncate_phys(&self, phys: u64) -> Result<()> {
        let files = self.files();
        let mut max = self.max_offset();
        while max > self.min_offset() {
            match Self::entry_at(&files, max - 1) {
                Some(e) if e.is_valid() && (e.commitlog_offset as u64) < phys => break,
                _ => max -= 1,
            }
        }
        if max == self.max_offset() {
            return Ok(());
        }
        let byte = max as u64 * ENTRY;
        let mut keep = Vec::new();
        for f in files {
            if f.start_offset() >= byte {
                let _ = std::fs::remove_file(f.path());
                continue;
            }
            if f.end_offset() > byte {
                f.writer()
                    .and_then(|mut w| w.discard_from((byte - f.start_offset()) as usize))
                    .map_err(|e| StoreError::io(f.path(), e))?;
            }
            keep.push(f);
        }
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = keep;
        self.max_offset.store(max, Ordering::Release);
        if self.min_offset() > max {
            self.min_offset.store(max, Ordering::Release);
        }
        let mut fl = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        *fl = (*fl).min(max);
        info!(topic = %self.topic, queue = self.queue_id, max, "ConsumeQueue truncated");
        Ok(())
    }

    /// Flushes entries written since the last flush.
    ///
    /// # Errors
    /// The `msync` error.
    pub fn flush(&self) -> Result<()> {
        let mut fl = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        let max = self.max_offset();
        if max <= *fl {
            return Ok(());
        }
        let (lo, hi) = (*fl as u64 * ENTRY, max as u64 * ENTRY);
        for f in self.files() {
            let a = lo.max(f.start_offset());
            let b = hi.min(f.end_offset());
            if a < b {
                f.flush_range((a - f.start_offset()) as usize, (b - a) as usize)
                    .map_err(|e| StoreError::io(f.path(), e))?;
            }
        }
        *fl = max;
        Ok(())
    }

    /// Retention: deletes files whose entries all point below `min_phys` (never the
    /// last file) and moves the min offset to the first entry at or past it.
    pub fn delete_below_phys(&self, min_phys: u64) -> usize {
        let mut deleted = 0;
        {
            let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
            while files.len() > 1 {
                let f = &files[0];
                let last_k = ((f.end_offset() / ENTRY) as i64 - 1).min(self.max_offset() - 1);
                let keep = Self::entry_at(&files, last_k)
                    .is_some_and(|e| e.is_valid() && e.commitlog_offset as u64 >= min_phys);
                if keep {
                    break;
                }
                let f = files.remove(0);
                let _ = std::fs::remove_file(f.path());
                deleted += 1;
            }
        }
        let files = self.files();
        let start = files
            .first()
            .map(|f| (f.start_offset() / ENTRY) as i64)
            .unwrap_or(0)
            .max(self.min_offset());
        let max = self.max_offset();
        let mut min = max;
        for k in start..max {
            if Self::entry_at(&files, k)
                .is_some_and(|e| e.is_valid() && e.commitlog_offset as u64 >= min_phys)
            {
                min = k;
                break;
            }
        }
        self.min_offset.store(min, Ordering::Release);
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(off: i64) -> CqEntry {
        CqEntry {
            commitlog_offset: off,
            size: 100,
            tags_code: 7,
        }
    }

    #[test]
    fn put_get_reopen_and_roll_files() {
        let dir = tempfile::tempdir().unwrap();
        let cq = ConsumeQueue::open(dir.path(), "T", 3, 200).unwrap();
        for k in 0..25 {
            cq.put(k, e(k * 100)).unwrap();
        }
        assert_eq!((cq.min_offset(), cq.max_offset()), (0, 25));
        assert_eq!(cq.get(12), Some(e(1200)));
        assert_eq!(cq.entries(8, 5).len(), 5);
        assert_eq!(cq.entries(23, 5).len(), 2);
        cq.flush().unwrap();
        drop(cq);
        assert_eq!(
            std::fs::read_dir(dir.path().join("T/3")).unwrap().count(),
            3
        );
        let cq = ConsumeQueue::open(dir.path(), "T", 3, 200).unwrap();
        assert_eq!((cq.min_offset(), cq.max_offset()), (0, 25));
        assert_eq!(cq.last_entry(), Some(e(2400)));
    }

    #[test]
    fn truncate_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let cq = ConsumeQueue::open(dir.path(), "T", 0, 200).unwrap();
        for k in 0..30 {
            cq.put(k, e(k * 100)).unwrap();
        }
        cq.truncate_phys(2500).unwrap();
        assert_eq!(cq.max_offset(), 25);
        assert_eq!(cq.delete_below_phys(1500), 1);
        assert_eq!(cq.min_offset(), 15);
        drop(cq);
        let cq = ConsumeQueue::open(dir.path(), "T", 0, 200).unwrap();
        assert_eq!(cq.max_offset(), 25);
        assert_eq!(cq.min_offset(), 10);
    }

    #[test]
    fn queue_starting_mid_file_gets_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let cq = ConsumeQueue::open(dir.path(), "T", 0, 200).unwrap();
        cq.put(13, e(5000)).unwrap();
        assert_eq!((cq.min_offset(), cq.max_offset()), (13, 14));
        drop(cq);
        let cq = ConsumeQueue::open(dir.path(), "T", 0, 200).unwrap();
        assert_eq!((cq.min_offset(), cq.max_offset()), (13, 14));
    }
}
