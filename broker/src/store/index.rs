//! IndexFile: RocketMQ's hash index from `topic#key` to CommitLog offsets.
//!
//! ```text
//! header (40):  [begin_ts:8][end_ts:8][begin_phy:8][end_phy:8][slots_used:4][index_count:4]
//! slots:        max_hash_slot_num × [newest index number:4]        (0 = empty)
//! entries:      max_index_num × [key_hash:4][phy_offset:8][time_diff_s:4][prev_index:4]
//! ```
//!
//! `index_count` starts at 1 (entry 0 is never used). Files are named by their creation
//! time `yyyyMMddHHmmssSSS` (UTC here). Keys are each `KEYS` entry and `UNIQ_KEY`.
//! Lookups can return false positives (hash collisions, stale entries after a
//! truncation); callers re-read the record and compare topic and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::error::{Result, StoreError};
use super::format::{index_key_hash, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE, INDEX_SLOT_SIZE};
use super::mapped_file::{sync_dir, MappedFile};

/// The 40-byte IndexFile header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexHeader {
    /// Store time of the first entry.
    pub begin_timestamp: i64,
    /// Store time of the last entry.
    pub end_timestamp: i64,
    /// CommitLog offset of the first entry.
    pub begin_phy_offset: i64,
    /// CommitLog offset of the last entry.
    pub end_phy_offset: i64,
    /// Slots in use.
    pub hash_slot_count: i32,
    /// Next entry number (starts at 1).
    pub index_count: i32,
}

impl IndexHeader {
    fn encode(&self) -> [u8; INDEX_HEADER_SIZE] {
        let mut b = [0u8; INDEX_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.begin_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.end_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.begin_phy_offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.end_phy_offset.to_be_bytes());
        b[32..36].copy_from_slice(&self.hash_slot_count.to_be_bytes());
        b[36..40].copy_from_slice(&self.index_count.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let i64_at = |p: usize| Some(i64::from_be_bytes(b.get(p..p + 8)?.try_into().ok()?));
        let i32_at = |p: usize| Some(i32::from_be_bytes(b.get(p..p + 4)?.try_into().ok()?));
        Some(IndexHeader {
            begin_timestamp: i64_at(0)?,
            end_timestamp: i64_at(8)?,
            begin_phy_offset: i64_at(16)?,
            end_phy_offset: i64_at(24)?,
            hash_slot_count: i32_at(32)?,
            index_count: i32_at(36)?,
        })
    }
}

/// Entries [`IndexService::reserve_ahead`] keeps allocated beyond the keys of sends
/// not yet dispatched (at most half a file's worth): 1,024 entries, 20 KiB.
pub const RESERVE_SLACK: u64 = 1024;

/// One IndexFile.
#[derive(Debug)]
pub struct IndexFile {
    file: Arc<MappedFile>,
    header: IndexHeader,
    slots: u32,
    max_entries: u32,
}

fn read_i32(f: &MappedFile, pos: usize) -> i32 {
    f.read(pos, 4)
        .ok()
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes)
        .unwrap_or(0)
}

impl IndexFile {
    fn size(slots: u32, max_entries: u32) -> u64 {
        INDEX_HEADER_SIZE as u64
            + u64::from(slots) * INDEX_SLOT_SIZE as u64
            + u64::from(max_entries) * INDEX_ENTRY_SIZE as u64
    }

    fn entry_pos(&self, n: i32) -> usize {
        INDEX_HEADER_SIZE + self.slots as usize * INDEX_SLOT_SIZE + n as usize * INDEX_ENTRY_SIZE
    }

    /// Allocates the disk space of entries `[0, count)` (header and slots are allocated
    /// when the file is made).
    fn reserve_entries(&self, count: u64) -> std::io::Result<()> {
        let count = count.min(u64::from(self.max_entries));
        self.file.reserve(
            (INDEX_HEADER_SIZE + self.slots as usize * INDEX_SLOT_SIZE) as u64
                + count * INDEX_ENTRY_SIZE as u64,
        )
    }

    /// The header as last written.
    pub fn header(&self) -> IndexHeader {
        self.header
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn is_full(&self) -> bool {
        self.header.index_count as u32 >= self.max_entries
    }

    fn put_key(
        &mut self,
        key: &str,
        phy_offset: i64,
        store_timestamp: i64,
    ) -> std::io::Result<bool> {
        if self.is_full() {
            return Ok(false);
        }
        let hash = index_key_hash(key);
        let slot_pos = INDEX_HEADER_SIZE + (hash % self.slots) as usize * INDEX_SLOT_SIZE;
        let mut prev = read_i32(&self.file, slot_pos);
        if prev <= 0 || prev > self.header.index_count {
            prev = 0;
        }
        let mut time_diff = if self.header.begin_timestamp <= 0 {
            0
        } else {
            (store_timestamp - self.header.begin_timestamp) / 1000
        };
        time_diff = time_diff.clamp(0, i64::from(i32::MAX));
        let n = self.header.index_count.max(1);
        let mut entry = [0u8; INDEX_ENTRY_SIZE];
        entry[0..4].copy_from_slice(&(hash as i32).to_be_bytes());
        entry[4..12].copy_from_slice(&phy_offset.to_be_bytes());
        entry[12..16].copy_from_slice(&(time_diff as i32).to_be_bytes());
        entry[16..20].copy_from_slice(&prev.to_be_bytes());
        // Writes through the mapping must land on allocated blocks (a full disk fails
        // here, not with SIGBUS); normally `reserve_ahead` has done this already.
        self.reserve_entries(n as u64 + 1)?;
        let mut w = self.file.writer()?;
        w.write_at(self.entry_pos(n), &entry)?;
        w.write_at(slot_pos, &n.to_be_bytes())?;
        drop(w);
        if n <= 1 {
            self.header.begin_phy_offset = phy_offset;
            self.header.begin_timestamp = store_timestamp;
        }
        if prev == 0 {
            self.header.hash_slot_count += 1;
        }
        self.header.index_count = n + 1;
        self.header.end_phy_offset = phy_offset;
        self.header.end_timestamp = store_timestamp;
        self.file.writer()?.write_at(0, &self.header.encode())?;
        Ok(true)
    }

    fn query(&self, key: &str, max: usize, begin: i64, end: i64, out: &mut Vec<i64>) {
        if self.header.index_count <= 1
            || end < self.header.begin_timestamp
            || begin > self.header.end_timestamp
        {
            return;
        }
        let hash = index_key_hash(key);
        let slot_pos = INDEX_HEADER_SIZE + (hash % self.slots) as usize * INDEX_SLOT_SIZE;
        let mut n = read_i32(&self.file, slot_pos);
        let mut steps = 0u32;
        while n > 0 && n < self.header.index_count && out.len() < max && steps < self.max_entries {
            steps += 1;
            let pos = self.entry_pos(n);
            let Ok(e) = self.file.read(pos, INDEX_ENTRY_SIZE) else {
                break;
            };
            let h = i32::from_be_bytes([e[0], e[1], e[2], e[3]]) as u32;
            let phy = i64::from_be_bytes([e[4], e[5], e[6], e[7], e[8], e[9], e[10], e[11]]);
            let diff = i32::from_be_bytes([e[12], e[13], e[14], e[15]]);
            let prev = i32::from_be_bytes([e[16], e[17], e[18], e[19]]);
            let t = self.header.begin_timestamp + i64::from(diff) * 1000;
            if h == hash && t >= begin && t <= end {
                out.push(phy);
            }
            if prev <= 0 || prev >= n {
                break;
            }
            n = prev;
        }
    }
}

/// Formats ms since the epoch as `yyyyMMddHHmmssSSS` (UTC).
pub fn index_file_name(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}{milli:03}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// All IndexFiles of the store.
#[derive(Debug)]
pub struct IndexService {
    dir: PathBuf,
    slots: u32,
    max_entries: u32,
    files: Vec<IndexFile>,
    /// The files that follow the newest once it is full, made ahead of time by
    /// `reserve_ahead` when keys sent but not yet dispatched may not fit the newest.
    next: std::collections::VecDeque<IndexFile>,
    /// Keys reserved by sends and not yet written by the dispatcher.
    pending: u64,
}

impl IndexService {
    /// Loads the IndexFiles in `dir`. Files of the wrong size or with an unreadable
    /// header are left on disk and ignored.
    ///
    /// # Errors
    /// I/O errors reading the directory.
    pub fn open(dir: &Path, slots: u32, max_entries: u32) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let size = IndexFile::size(slots, max_entries);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 17 && n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        names.sort();
        let mut files = Vec::new();
        for n in names {
            let path = dir.join(&n);
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == size => {}
                _ => {
                    warn!(file = %path.display(), "IndexFile of unexpected size ignored");
                    continue;
                }
            }
            let f = MappedFile::open(&path, 0, size).map_err(|e| StoreError::io(&path, e))?;
            let Some(header) = f
                .read(0, INDEX_HEADER_SIZE)
                .ok()
                .and_then(IndexHeader::decode)
            else {
                continue;
            };
            files.push(IndexFile {
                file: Arc::new(f),
                header,
                slots,
                max_entries,
            });
        }
        Ok(IndexService {
            dir: dir.to_path_buf(),
            slots,
            max_entries,
            files,
            next: std::collections::VecDeque::new(),
            pending: 0,
        })
    }

    /// The loaded files, oldest first.
    pub fn files(&self) -> &[IndexFile] {
        &self.files
    }

    /// A new, empty IndexFile: its header and hash slots allocated, its entries
    /// allocated as they are reserved (a store with few keys does not hold 420 MB).
    fn create_file(&self) -> Result<IndexFile> {
        let mut ms = super::commitlog::now_ms();
        let mut path = self.dir.join(index_file_name(ms));
        while path.exists() {
            ms += 1;
            path = self.dir.join(index_file_name(ms));
        }
        let size = IndexFile::size(self.slots, self.max_entries);
        let head = (INDEX_HEADER_SIZE + self.slots as usize * INDEX_SLOT_SIZE) as u64;
        let f = MappedFile::create_lazy_with(&path, 0, size, head)
            .map_err(|e| StoreError::io(&path, e))?;
        let header = IndexHeader {
            index_count: 1,
            ..IndexHeader::default()
        };
        f.writer()
            .and_then(|mut w| w.write_at(0, &header.encode()))
            .map_err(|e| StoreError::io(&path, e))?;
        let _ = sync_dir(&self.dir);
        info!(file = %path.display(), "created IndexFile");
        Ok(IndexFile {
            file: Arc::new(f),
            header,
            slots: self.slots,
            max_entries: self.max_entries,
        })
    }

    fn writable(&mut self) -> Result<&mut IndexFile> {
        let need_new = self.files.last().is_none_or(IndexFile::is_full);
        if need_new {
            let f = match self.next.pop_front() {
                Some(f) => f,
                None => self.create_file()?,
            };
            self.files.push(f);
        }
        let n = self.files.len() - 1;
        Ok(&mut self.files[n])
    }

    /// Makes sure the files and disk space for `keys` more entries (and
    /// [`RESERVE_SLACK`] beyond, for keys still being dispatched) exist, so the
    /// dispatcher cannot fail on them for want of space: a send is refused instead.
    ///
    /// # Errors
    /// I/O errors creating or allocating a file (`DiskFull` on ENOSPC).
    pub fn reserve_ahead(&mut self, keys: usize) -> Result<()> {
        let max = u64::from(self.max_entries);
        // Entries still to be written: the keys of sends not yet dispatched, this
        // send's, and a margin.
        let mut need = self.pending + keys as u64 + RESERVE_SLACK.min(max / 2);
        let f = self.writable()?;
        let count = u64::try_from(f.header.index_count.max(1)).unwrap_or(1);
        f.reserve_entries(count + need)
            .map_err(|e| StoreError::io(f.path(), e))?;
        need = need.saturating_sub(max.saturating_sub(count));
        let mut i = 0;
        while need > 0 {
            if i == self.next.len() {
                let n = self.create_file()?;
                self.next.push_back(n);
            }
            let n = &self.next[i];
            n.reserve_entries(1 + need)
                .map_err(|e| StoreError::io(n.path(), e))?;
            need = need.saturating_sub(max.saturating_sub(1));
            i += 1;
        }
        self.pending += keys as u64;
        Ok(())
    }

    /// Gives back what a send reserved and did not store.
    pub fn unreserve(&mut self, keys: usize) {
        self.pending = self.pending.saturating_sub(keys as u64);
    }

    /// Indexes `topic#key` → `phy_offset`.
    ///
    /// # Errors
    /// I/O errors creating a new IndexFile.
    pub fn put(
        &mut self,
        topic: &str,
        key: &str,
        phy_offset: i64,
        store_timestamp: i64,
    ) -> Result<()> {
        let full_key = format!("{topic}#{key}");
        self.pending = self.pending.saturating_sub(1);
        loop {
            let f = self.writable()?;
            let path = f.path().to_path_buf();
            if f.put_key(&full_key, phy_offset, store_timestamp)
                .map_err(|e| StoreError::io(path, e))?
            {
                return Ok(());
            }
        }
    }

    /// CommitLog offsets whose `topic#key` hash matches, stored within `[begin, end]`
    /// (ms), newest files first, at most `max`.
    pub fn query(&self, topic: &str, key: &str, max: usize, begin: i64, end: i64) -> Vec<i64> {
        let full_key = format!("{topic}#{key}");
        let mut out = Vec::new();
        for f in self.files.iter().rev() {
            if out.len() >= max {
                break;
            }
            f.query(&full_key, max, begin, end, &mut out);
        }
        out
    }

    /// Flushes the newest file.
    ///
    /// # Errors
    /// The `msync` error.
    pub fn flush(&self) -> Result<()> {
        if let Some(f) = self.files.last() {
            f.file
                .flush_all()
                .map_err(|e| StoreError::io(f.path(), e))?;
        }
        Ok(())
    }

    /// Deletes files with entries at or after `phys` whole (their keys are re-indexed by
    /// re-dispatch); returns the lowest begin offset among them, from where to re-index.
    pub fn drop_from_phys(&mut self, phys: i64) -> Option<i64> {
        let mut lowest = None;
        self.files.retain(|f| {
            let h = f.header;
            if h.index_count > 1 && h.end_phy_offset >= phys {
                let _ = std::fs::remove_file(f.path());
                info!(file = %f.path().display(), "IndexFile dropped for rebuild");
                lowest =
                    Some(lowest.map_or(h.begin_phy_offset, |l: i64| l.min(h.begin_phy_offset)));
                false
            } else {
                true
            }
        });
        lowest
    }

    /// Retention: deletes files (never the newest) whose entries all lie below `min_phys`.
    pub fn delete_below_phys(&mut self, min_phys: i64) -> usize {
        let mut n = 0;
        while self.files.len() > 1 && self.files[0].header.end_phy_offset < min_phys {
            let f = self.files.remove(0);
            let _ = std::fs::remove_file(f.path());
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_timestamps() {
        assert_eq!(index_file_name(0), "19700101000000000");
        // 2024-02-29T13:45:07.123Z
        assert_eq!(index_file_name(1_709_214_307_123), "20240229134507123");
    }

    fn allocated_bytes(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// Issue 14: RocketMQ's default IndexFile (5 M slots, 20 M entries) is 420 MB; a
    /// store with a few keys now holds its header and slots (20 MB) plus what its
    /// entries and the send-time reserve need, and grows as keys arrive.
    #[test]
    fn index_files_are_allocated_as_they_fill() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexService::open(dir.path(), 5_000_000, 20_000_000).unwrap();
        idx.reserve_ahead(2).unwrap();
        for i in 0..1000i64 {
            idx.put("T", &format!("k{i}"), i * 100, 1_000_000 + i)
                .unwrap();
        }
        let path = idx.files()[0].path().to_path_buf();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, 40 + 5_000_000 * 4 + 20_000_000 * 20);
        let held = allocated_bytes(&path);
        assert!(
            held < 24 * 1024 * 1024,
            "{held} bytes allocated for 1,000 keys"
        );
        assert_eq!(idx.query("T", "k999", 10, 0, i64::MAX), vec![99_900]);
        // Reopened, it still takes keys (its allocation is re-checked, not assumed).
        drop(idx);
        let mut idx = IndexService::open(dir.path(), 5_000_000, 20_000_000).unwrap();
        idx.put("T", "after", 1, 2_000_000).unwrap();
        assert_eq!(idx.query("T", "after", 10, 0, i64::MAX), vec![1]);
    }

    /// A send whose keys may not fit the newest file makes the next one ahead of time,
    /// so the dispatcher never has to create a file (and fail) after the send was
    /// acknowledged; the dispatcher then moves on to that file.
    #[test]
    fn reserving_past_a_full_file_makes_the_next_one_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexService::open(dir.path(), 7, 10).unwrap();
        let on_disk = || std::fs::read_dir(dir.path()).unwrap().count();
        // 9 entries per file: 3 keys fit the first with the margin.
        idx.reserve_ahead(3).unwrap();
        assert_eq!(on_disk(), 1);
        // 11 keys sent and not yet dispatched (and the margin) need the next file too.
        idx.reserve_ahead(8).unwrap();
        assert_eq!(on_disk(), 2, "the next file was not made ahead");
        for i in 0..15i64 {
            idx.put("T", &format!("k{i}"), i, 1_000_000 + i).unwrap();
        }
        assert_eq!(idx.files().len(), 2);
        assert_eq!(idx.query("T", "k14", 10, 0, i64::MAX), vec![14]);
        assert_eq!(idx.query("T", "k0", 10, 0, i64::MAX), vec![0]);
    }

    #[test]
    fn put_query_chain_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexService::open(dir.path(), 7, 100).unwrap();
        for i in 0..50i64 {
            idx.put("T", &format!("k{}", i % 10), i * 100, 1_000_000 + i * 1000)
                .unwrap();
        }
        let hits = idx.query("T", "k3", 100, 0, i64::MAX);
        assert_eq!(hits, vec![4300, 3300, 2300, 1300, 300]);
        assert_eq!(idx.query("T", "k3", 2, 0, i64::MAX).len(), 2);
        // Time window [1_013_000, 1_033_000] holds i = 13..=33.
        assert_eq!(
            idx.query("T", "k3", 100, 1_013_000, 1_033_000),
            vec![3300, 2300, 1300]
        );
        assert!(idx
            .query("U", "k3", 100, 0, i64::MAX)
            .iter()
            .all(|p| p % 100 == 0));
        idx.flush().unwrap();
        drop(idx);
        let idx = IndexService::open(dir.path(), 7, 100).unwrap();
        assert_eq!(idx.files()[0].header().index_count, 51);
        assert_eq!(idx.query("T", "k3", 100, 0, i64::MAX).len(), 5);
    }

    #[test]
    fn full_file_rolls_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexService::open(dir.path(), 3, 5).unwrap();
        for i in 0..10i64 {
            idx.put("T", "k", i, 1_000 + i).unwrap();
        }
        assert_eq!(idx.files().len(), 3);
        assert_eq!(idx.query("T", "k", 100, 0, i64::MAX).len(), 10);
        assert_eq!(idx.delete_below_phys(5), 1);
    }

    #[test]
    fn header_golden_bytes() {
        let h = IndexHeader {
            begin_timestamp: 1,
            end_timestamp: 2,
            begin_phy_offset: 3,
            end_phy_offset: 4,
            hash_slot_count: 5,
            index_count: 6,
        };
        let mut golden = [0u8; 40];
        golden[7] = 1;
        golden[15] = 2;
        golden[23] = 3;
        golden[31] = 4;
        golden[35] = 5;
        golden[39] = 6;
        assert_eq!(h.encode(), golden);
        assert_eq!(IndexHeader::decode(&golden), Some(h));
    }
}
