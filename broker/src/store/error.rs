//! The store's error type.

use std::path::PathBuf;

use super::message::RecordError;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The message could not be encoded (too large, topic or properties too long).
    #[error("message refused: {0}")]
    Message(#[from] RecordError),
    /// The disk is full: the append failed and the store is unchanged.
    #[error("disk full: cannot create {path}")]
    DiskFull {
        /// The file that could not be created.
        path: PathBuf,
    },
    /// A SYNC_FLUSH append did not reach the disk within `syncFlushTimeout`; the record is
    /// stored in the page cache (the broker answers FLUSH_DISK_TIMEOUT).
    #[error("flush timed out after {timeout_ms} ms (record at {offset} is in the page cache)")]
    FlushTimeout {
        /// Physical offset of the record.
        offset: u64,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A previous fsync/msync failed; the store refuses writes from then on.
    #[error("store is read-only after an I/O failure")]
    ReadOnly,
    /// The store is shutting down.
    #[error("store is shut down")]
    ShutDown,
    /// Records cannot be dispatched to their ConsumeQueue (a file cannot be created):
    /// a send now would be stored but not served, so it is refused until it clears.
    #[error("dispatch blocked: {0}")]
    DispatchBlocked(String),
    /// The store is a replica (a slave's, or a master being demoted): only replicated
    /// bytes are appended.
    #[error("this broker is not a master: writes are refused")]
    NotMaster,
    /// Replication: raw bytes were offered at the wrong offset.
    #[error("raw append at {offered} but the CommitLog ends at {expected}")]
    OffsetMismatch {
        /// Where the bytes belong.
        offered: u64,
        /// The CommitLog's max offset.
        expected: u64,
    },
    /// Replication: an empty store cannot start at this offset.
    #[error("cannot start the CommitLog at {offset}: {reason}")]
    CannotStartAt {
        /// The requested start.
        offset: u64,
        /// Why not.
        reason: String,
    },
    /// Replication: raw bytes are not valid records.
    #[error("raw bytes at {offset} are not a valid record: {reason}")]
    InvalidRaw {
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file on disk is unusable and recovery could not work around it.
    #[error("corrupt store file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid store configuration `{key}`: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Wraps an I/O error with the path it concerns; `ENOSPC` becomes [`StoreError::DiskFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            StoreError::DiskFull { path }
        } else {
            StoreError::Io { path, source }
        }
    }
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
