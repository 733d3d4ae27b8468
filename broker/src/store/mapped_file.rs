//! One memory-mapped, preallocated file: a CommitLog segment, a ConsumeQueue file or an
//! IndexFile. All of the store's `unsafe` lives here.
//!
//! Concurrency contract: a file has one writer at a time (the CommitLog's tail owner,
//! the dispatcher for ConsumeQueue and IndexFile). The writer only writes bytes past the
//! position it has published; readers only read bytes below a published position. So a
//! region is never read and written at once, except by a replication truncation, which
//! rewrites bytes a stale reader may still hold (documented on `zero_range`).
//!
//! Files are preallocated with `posix_fallocate` when created, so a full disk fails the
//! creation with `ENOSPC` instead of raising SIGBUS on a later write into the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
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
        // mapping lives as long as `self.map`. The bytes are below the writer's published
        // position, so nothing writes them while they are read (module docs).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset), self.len) }
    }
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file size too large"))?;
    // SAFETY: plain syscall on an open descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to a sparse file of the right size.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl MappedFile {
    /// Creates (or reuses) `path` at exactly `size` bytes, preallocated, and maps it.
    ///
    /// # Errors
    /// Any I/O error, notably `ENOSPC` when the disk cannot hold the file.
    pub fn create(path: &Path, start_offset: u64, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
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
        })
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

    /// Writes `data` at file position `pos`.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn write_at(&self, pos: usize, data: &[u8]) -> io::Result<()> {
        self.check(pos, data.len())?;
        // SAFETY: the range is inside the mapping (checked); only the file's single writer
        // calls this, on bytes no reader has been given (module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(pos),
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
    pub fn pwrite_at(&self, pos: usize, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check(pos, data.len())?;
        self.file.write_all_at(data, pos as u64)
    }

    /// Zeroes `[pos, pos+len)`. Used by truncation; a reader still holding a view of
    /// truncated bytes sees zeros or newer data, never a torn mapping.
    ///
    /// # Errors
    /// `InvalidInput` when the range is outside the file.
    pub fn zero_range(&self, pos: usize, len: usize) -> io::Result<()> {
        self.check(pos, len)?;
        // SAFETY: in-bounds (checked); called by the single writer during truncation.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(pos), 0, len) };
        Ok(())
    }

    /// Drops the contents from `pos` to the end of the file: zeroes the partial page and
    /// punches out the whole pages after it (re-allocating them, so later writes cannot
    /// hit a full disk), falling back to writing zeros where punching is unsupported.
    ///
    /// # Errors
    /// `InvalidInput` when `pos` is outside the file; I/O errors of `fallocate`.
    pub fn discard_from(&self, pos: usize) -> io::Result<()> {
        let size = self.size as usize;
        self.check(pos, 0)?;
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
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if punched != 0 {
            return self.zero_range(aligned, size - aligned);
        }
        // SAFETY: as above.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), off, len) };
        match rc {
            0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
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
        f.write_at(10, b"hello").unwrap();
        let v = f.view(10, 5).unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&v[..], b"hello");
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
        assert!(f.write_at(60, b"hello").is_err());
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
