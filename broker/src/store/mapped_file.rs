//! One memory-mapped, preallocated file: a CommitLog segment, a ConsumeQueue file or an
//! IndexFile. All of the store's `unsafe` lives here.
//!
//! Concurrency contract: a file has one writer at a time (the CommitLog's tail owner,
//! the dispatcher for ConsumeQueue and IndexFile), enforced by the type: every write goes
//! through a [`FileWriter`], and [`MappedFile::writer`] hands out at most one at a time.
//! The writer only writes bytes past the position it has published; readers only read
//! bytes below a published position. A truncation of a CommitLog segment while the store
//! serves (a slave cutting a diverged tail, a demoted master) never writes bytes a reader
//! may hold in a zero-copy view: [`MappedFile::rewrite_prefix`] builds a new file with the
//! kept bytes and swaps it in under the same name, leaving the old mapping, and every
//! view of it, unchanged until the last view is dropped. In-place discarding
//! ([`FileWriter::discard_from`]) is for recovery, before any reader exists, and for
//! ConsumeQueue files, whose readers copy each 20-byte entry and check it.
//!
//! Files are preallocated with `posix_fallocate` when created, so a full disk fails the
//! creation with `ENOSPC` instead of raising SIGBUS on a later write into the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

/// A mapped file and its place in the offset space.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    start_offset: u64,
    size: u64,
    map: Arc<MmapRaw>,
    file: File,
    writer_taken: AtomicBool,
    /// Bytes from the start known to be allocated (files made by
    /// [`MappedFile::create_lazy`] grow their allocation with [`MappedFile::reserve`]).
    allocated: std::sync::atomic::AtomicU64,
}

/// The allocation step of lazily allocated files.
pub const LAZY_CHUNK: u64 = 64 * 1024;

/// The one writer of a [`MappedFile`] at a time; released when dropped.
#[derive(Debug)]
pub struct FileWriter<'a> {
    file: &'a MappedFile,
}

impl Drop for FileWriter<'_> {
    fn drop(&mut self) {
        self.file.writer_taken.store(false, Ordering::Release);
    }
}

/// Keeps a mapping alive for a zero-copy `Bytes` view.
struct MapView {
    map: Arc<MmapRaw>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for MapView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `offset + len <= map.len()` was checked when the view was made, and the
        // mapping lives as long as `self.map`. The bytes were below the writer's published
        // position when the view was made, and nothing writes such bytes of a mapping
        // that has been shared: appends write past the published position, and a
        // truncation while the store serves swaps in a new file (`rewrite_prefix`)
        // instead of rewriting this mapping (module docs).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset), self.len) }
    }
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    // Filesystems without fallocate keep a sparse file of the right size.
    file.set_len(size)?;
    allocate(file, 0, size)
}

/// Opens `path` read-write, creating it if missing (never truncating).
fn open_for_create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Allocates `[from, from + len)` of `file` (already allocated ranges cost nothing).
fn allocate(file: &File, from: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range too large",
        ));
    };
    if n == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on an open descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, n) };
    match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl MappedFile {
    /// Creates (or reuses) `path` at exactly `size` bytes, preallocated, and maps it.
    ///
    /// # Errors
    /// Any I/O error, notably `ENOSPC` when the disk cannot hold the file.
    pub fn create(path: &Path, start_offset: u64, size: u64) -> io::Result<Self> {
        let file = open_for_create(path)?;
        if let Err(e) = preallocate(&file, size) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Self::map(path, file, start_offset, size)
    }

    /// Maps an existing file; its length must be `size`. Shorter files (a crash during
    /// creation) are extended and preallocated.
    ///
    /// # Errors
    /// Any I/O error; `InvalidData` if the file is longer than `size`.
    pub fn open(path: &Path, start_offset: u64, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {len} bytes, larger than {size}", path.display()),
            ));
        }
        if len < size {
            preallocate(&file, size)?;
        }
        Self::map(path, file, start_offset, size)
    }

    fn map(path: &Path, file: File, start_offset: u64, size: u64) -> io::Result<Self> {
        let map = MmapRaw::map_raw(&file)?;
        if (map.len() as u64) < size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} mapped shorter than {size}", path.display()),
            ));
        }
        Ok(MappedFile {
            path: path.to_path_buf(),
            start_offset,
            size,
            map: Arc::new(map),
            file,
            writer_taken: AtomicBool::new(false),
            allocated: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Creates `path` at `size` bytes with only its first [`LAZY_CHUNK`] allocated (the
    /// rest sparse), and maps it. Writers must [`MappedFile::reserve`] what they write
    /// into first, so a full disk fails that call instead of the write to the mapping.
    ///
    /// # Errors
    /// Any I/O error, notably `ENOSPC`.
    pub fn create_lazy(path: &Path, start_offset: u64, size: u64) -> io::Result<Self> {
        Self::create_lazy_with(path, start_offset, size, LAZY_CHUNK)
    }

    /// As [`MappedFile::create_lazy`], with the first `initial` bytes allocated (an
    /// IndexFile's header and hash slots, written anywhere from the start).
    ///
    /// # Errors
    /// Any I/O error, notably `ENOSPC`.
    pub fn create_lazy_with(
        path: &Path,
        start_offset: u64,
        size: u64,
        initial: u64,
    ) -> io::Result<Self> {
        let first = initial
            .div_ceil(LAZY_CHUNK)
            .saturating_mul(LAZY_CHUNK)
            .clamp(LAZY_CHUNK.min(size), size);
        let file = open_for_create(path)?;
        let made = file.set_len(size).and_then(|()| allocate(&file, 0, first));
        if let Err(e) = made {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let f = Self::map(path, file, start_offset, size)?;
        f.allocated
            .store(first, std::sync::atomic::Ordering::Release);
        Ok(f)
    }

    /// Makes sure `[0, upto)` is allocated on disk (in [`LAZY_CHUNK`] steps), so writes
    /// below `upto` through the mapping cannot fault on a full disk.
    ///
    /// # Errors
    /// `ENOSPC` and other `fallocate` errors.
    pub fn reserve(&self, upto: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let have = self.allocated.load(Ordering::Acquire);
        if upto <= have {
            return Ok(());
        }
        let to = upto
            .div_ceil(LAZY_CHUNK)
            .saturating_mul(LAZY_CHUNK)
            .min(self.size);
        allocate(&self.file, have, to - have)?;
        self.allocated.fetch_max(to, Ordering::AcqRel);
        Ok(())
    }

    /// Offset of the first byte in the file's offset space.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// File size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset one past the last byte.
    pub fn end_offset(&self) -> u64 {
        self.start_offset + self.size
    }

    /// Path on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, pos: usize, len: usize) -> io::Result<()> {
        match pos.checked_add(len) {
            Some(end) if end as u64 <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {pos}+{len} outside {} ({} bytes)",
                    self.path.display(),
                    self.size
                ),
            )),
        }
    }

    /// The file's one writer, while nobody else holds it.
    ///
    /// # Errors
    /// `WouldBlock` when another writer holds the file (a broken single-writer rule).
    pub fn writer(&self) -> io::Result<FileWriter<'_>> {
        self.writer_taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} already has a writer", self.path.display()),
                )
            })?;
        Ok(FileWriter { file: self })
    }

    /// A new file under the same path holding `[0, keep)` of this one and zeros after,
    /// made durable and swapped in by rename. This file's mapping is never written, so
    /// views of it keep their bytes; it goes away with its last holder.
    ///
    /// # Errors
    /// I/O errors; on error the file on disk is unchanged.
    pub fn rewrite_prefix(&self, keep: usize) -> io::Result<MappedFile> {
        use std::os::unix::fs::FileExt;
        self.check(keep, 0)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(TRUNCATING_SUFFIX);
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let fresh = MappedFile::create(&tmp, self.start_offset, self.size)?;
        let copied = self
            .read(0, keep)
            .and_then(|kept| fresh.file.write_all_at(kept, 0))
            .and_then(|()| fresh.file.sync_data())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = copied {
            drop(fresh);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(MappedFile {
            path: self.path.clone(),
            ..fresh
        })
    }

    /// Borrows `[pos, pos+len)`.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn read(&self, pos: usize, len: usize) -> io::Result<&[u8]> {
        self.check(pos, len)?;
        // SAFETY: in-bounds (checked), tied to `&self`, which keeps the mapping alive;
        // callers only read below the writer's published position.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos), len) })
    }

    /// A zero-copy view of `[pos, pos+len)` that keeps the mapping alive, so the file
    /// may be deleted while the view is held.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn view(&self, pos: usize, len: usize) -> io::Result<Bytes> {
        self.check(pos, len)?;
        Ok(Bytes::from_owner(MapView {
            map: Arc::clone(&self.map),
            offset: pos,
            len,
        }))
    }

    /// Flushes `[pos, pos+len)` to disk (`msync(MS_SYNC)`).
    ///
    /// # Errors
    /// The I/O error of `msync`.
    pub fn flush_range(&self, pos: usize, len: usize) -> io::Result<()> {
        self.check(pos, len)?;
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(pos, len)
    }

    /// Flushes the whole file.
    ///
    /// # Errors
    /// The I/O error of `msync`.
    pub fn flush_all(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Last modification time of the file (used by retention).
    ///
    /// # Errors
    /// The I/O error of `fstat`.
    pub fn modified(&self) -> io::Result<std::time::SystemTime> {
        self.file.metadata()?.modified()
    }
}

/// Suffix of the file [`MappedFile::rewrite_prefix`] builds before the rename; a leftover
/// (a crash mid-rewrite) is deleted when the directory is opened.
pub const TRUNCATING_SUFFIX: &str = ".truncating";

impl FileWriter<'_> {
    /// Writes `data` at file position `pos`.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn write_at(&mut self, pos: usize, data: &[u8]) -> io::Result<()> {
        self.file.check(pos, data.len())?;
        // SAFETY: the range is inside the mapping (checked); `self` is the file's only
        // writer (`MappedFile::writer`), and it writes past the published position, bytes
        // no reader has been given (module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.file.map.as_mut_ptr().add(pos),
                data.len(),
            );
        }
        Ok(())
    }

    /// Writes `data` at file position `pos` with `pwrite` instead of through the
    /// mapping. The page cache is shared, so readers of the mapping see the bytes at
    /// once; the writer takes no page faults, and a page still being written back by a
    /// flush does not stall it.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file; the I/O error of `pwrite`.
    pub fn pwrite_at(&mut self, pos: usize, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.check(pos, data.len())?;
        self.file.file.write_all_at(data, pos as u64)
    }

    /// Zeroes `[pos, pos+len)` in place (see the module docs for when that is allowed).
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn zero_range(&mut self, pos: usize, len: usize) -> io::Result<()> {
        self.file.check(pos, len)?;
        // SAFETY: in-bounds (checked); `self` is the only writer. Used in place only where
        // no reader can hold the bytes: recovery, before the store is shared, and
        // ConsumeQueue entries, which readers copy and check (module docs).
        unsafe { std::ptr::write_bytes(self.file.map.as_mut_ptr().add(pos), 0, len) };
        Ok(())
    }

    /// Drops the contents from `pos` to the end of the file: zeroes the partial page and
    /// punches out the whole pages after it (re-allocating them, so later writes cannot
    /// hit a full disk), falling back to writing zeros where punching is unsupported.
    ///
    /// # Errors
    /// `InvalidInput` when `pos` is outside the file; I/O errors of `fallocate`.
    pub fn discard_from(&mut self, pos: usize) -> io::Result<()> {
        let size = self.file.size as usize;
        self.file.check(pos, 0)?;
        const PAGE: usize = 4096;
        let aligned = pos.div_ceil(PAGE).saturating_mul(PAGE).min(size);
        self.zero_range(pos, aligned - pos)?;
        if aligned == size {
            return Ok(());
        }
        let (Ok(off), Ok(len)) = (
            libc::off_t::try_from(aligned),
            libc::off_t::try_from(size - aligned),
        ) else {
            return self.zero_range(aligned, size - aligned);
        };
        // SAFETY: plain syscalls on an open descriptor we own; the mapping stays valid
        // (punched pages read back as zeros, the file size is kept).
        let punched = unsafe {
            libc::fallocate(
                self.file.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if punched != 0 {
            return self.zero_range(aligned, size - aligned);
        }
        // SAFETY: as above.
        let rc = unsafe { libc::posix_fallocate(self.file.file.as_raw_fd(), off, len) };
        match rc {
            0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Bytes in use and usable total bytes (used + available) of the filesystem holding
/// `path`, the way `df` computes its use percentage.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass; the path is
    // NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 || st.f_blocks == 0 {
        return None;
    }
    // As `df` counts: used = blocks - free; the usable total is used + available to us
    // (blocks reserved for root or held back by the filesystem are not ours to fill).
    let unit = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * unit;
    let avail = st.f_bavail as u64 * unit;
    Some((used, used + avail))
}

/// Fsyncs a directory so file creations, renames and deletions in it are durable.
///
/// # Errors
/// The I/O error of `open` or `fsync`.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_outlive_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = MappedFile::create(&path, 100, 4096).unwrap();
        f.writer().unwrap().write_at(10, b"hello").unwrap();
        let v = f.view(10, 5).unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&v[..], b"hello");
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = MappedFile::create(&dir.path().join("f"), 0, 64).unwrap();
        let mut w = f.writer().unwrap();
        assert_eq!(f.writer().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        w.write_at(0, b"a").unwrap();
        drop(w);
        f.writer().unwrap().write_at(1, b"b").unwrap();
        assert_eq!(f.read(0, 2).unwrap(), b"ab");
    }

    /// A truncation while a reader holds a view of the cut bytes: the view keeps them,
    /// the file on disk holds only the kept prefix.
    #[test]
    fn rewrite_prefix_leaves_held_views_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        let f = MappedFile::create(&path, 0, 8192).unwrap();
        f.writer().unwrap().write_at(0, &[7u8; 6000]).unwrap();
        let held = f.view(4000, 2000).unwrap();
        let cut = f.rewrite_prefix(4096).unwrap();
        drop(f);
        assert!(held.iter().all(|b| *b == 7), "a held view was rewritten");
        assert!(cut.read(0, 4096).unwrap().iter().all(|b| *b == 7));
        assert!(cut.read(4096, 4096).unwrap().iter().all(|b| *b == 0));
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 8192);
        assert!(on_disk[..4096].iter().all(|b| *b == 7));
        assert!(on_disk[4096..].iter().all(|b| *b == 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn disk_usage_is_sane() {
        let dir = tempfile::tempdir().unwrap();
        let (used, total) = disk_usage(dir.path()).unwrap();
        assert!(total > 0 && used <= total, "{used} / {total}");
        assert!(disk_usage(Path::new("/definitely/not/here")).is_none());
    }

    #[test]
    fn out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = MappedFile::create(&dir.path().join("f"), 0, 64).unwrap();
        assert!(f.writer().unwrap().write_at(60, b"hello").is_err());
        assert!(f.read(usize::MAX, 2).is_err());
        assert!(f.view(64, 1).is_err());
        assert!(f.flush_range(0, 64).is_ok());
        assert_eq!(f.end_offset(), 64);
    }

    #[test]
    fn reopen_extends_short_file_and_refuses_long() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = MappedFile::open(&p, 0, 128).unwrap();
        assert_eq!(f.read(0, 3).unwrap(), b"abc");
        drop(f);
        assert!(MappedFile::open(&p, 0, 64).is_err());
    }
}
