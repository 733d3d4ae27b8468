//! The epoch file: every role epoch this broker has seen and the CommitLog offset where
//! each began (`<storePathRootDir>/epochFile`, JSON, replaced atomically).
//!
//! A new master appends `(epoch, its max offset)`; a slave adopts its master's list. A
//! former master rejoining as a slave compares its last epoch with the master's list to
//! find where its history diverged and truncates there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One epoch and the CommitLog offset its first record was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochEntry {
    /// The epoch.
    pub epoch: i64,
    /// Its first CommitLog offset.
    pub start_offset: u64,
}

impl EpochEntry {
    /// Epoch `epoch`, begun at CommitLog offset `start_offset`.
    #[must_use]
    pub const fn new(epoch: i64, start_offset: u64) -> Self {
        EpochEntry {
            epoch,
            start_offset,
        }
    }
}

/// Why the epoch file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// Reading failed.
    #[error("epoch file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing failed (the previous file stays in place).
    #[error(transparent)]
    Write(#[from] crate::store::StoreError),
    /// The file is not a list of entries.
    #[error("epoch file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An epoch older than (or equal to) the last one was offered.
    #[error("epoch {offered} is not newer than the current epoch {current}")]
    Stale {
        /// What was offered.
        offered: i64,
        /// The newest epoch known.
        current: i64,
    },
}

/// The epochs a broker has seen, oldest first, strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochFile {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

fn well_formed(entries: &[EpochEntry]) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset)
}

impl EpochFile {
    /// Loads `path` (or, when a crash came between the two renames of a write, its
    /// `.bak`); no file at all is an empty list.
    ///
    /// # Errors
    /// Unreadable or corrupt files.
    pub fn load(path: &Path) -> Result<Self, EpochError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::read(crate::store::metadata::bak_path(path)) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        return Err(EpochError::Io {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
            Err(source) => {
                return Err(EpochError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let entries = match bytes {
            None => Vec::new(),
            Some(bytes) => {
                let entries: Vec<EpochEntry> =
                    serde_json::from_slice(&bytes).map_err(|e| EpochError::Corrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                if !well_formed(&entries) {
                    return Err(EpochError::Corrupt {
                        path: path.to_path_buf(),
                        reason: "epochs are not increasing".into(),
                    });
                }
                entries
            }
        };
        Ok(EpochFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The entries, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch (0 when none).
    #[must_use]
    pub fn last_epoch(&self) -> i64 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// The newest entry.
    #[must_use]
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    fn persist(&self) -> Result<(), EpochError> {
        // The store's atomic metadata write: temp file, fsync, `.bak`, rename, dir fsync.
        Ok(crate::store::metadata::persist(&self.path, &self.entries)?)
    }

    /// Starts `epoch` at `start_offset` (a promotion). Refuses an epoch that is not newer.
    ///
    /// # Errors
    /// [`EpochError::Stale`], write failures.
    pub fn begin(&mut self, epoch: i64, start_offset: u64) -> Result<(), EpochError> {
        let current = self.last_epoch();
        if epoch <= current {
            return Err(EpochError::Stale {
                offered: epoch,
                current,
            });
        }
        let start_offset = start_offset.max(self.last().map_or(0, |e| e.start_offset));
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()
    }

    /// Adopts the master's history (a slave, after any truncation).
    ///
    /// # Errors
    /// A malformed list, write failures.
    pub fn adopt(&mut self, master: &[EpochEntry]) -> Result<(), EpochError> {
        if !well_formed(master) {
            return Err(EpochError::Corrupt {
                path: self.path.clone(),
                reason: "the master's epochs are not increasing".into(),
            });
        }
        if self.entries == master {
            return Ok(());
        }
        self.entries = master.to_vec();
        self.persist()
    }
}

/// Where a slave whose newest epoch is `my_last_epoch` and whose CommitLog ends at
/// `my_max` must truncate to follow a master with history `master`: the offset where
/// the first master epoch newer than the slave's began, when the slave holds bytes past
/// it (those bytes were written in an epoch the master did not follow). `None` when
/// nothing needs to go.
#[must_use]
pub fn truncation_point(my_last_epoch: i64, my_max: u64, master: &[EpochEntry]) -> Option<u64> {
    if my_last_epoch <= 0 {
        // No history (a store from before epochs, or a fresh slave): nothing to compare.
        return None;
    }
    let end_of_mine = master
        .iter()
        .find(|e| e.epoch > my_last_epoch)
        .map(|e| e.start_offset)?;
    (my_max > end_of_mine).then_some(end_of_mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_refuses_older_epochs_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochFile");
        let mut f = EpochFile::load(&path).unwrap();
        assert_eq!(f.last_epoch(), 0);
        f.begin(1, 0).unwrap();
        f.begin(3, 900).unwrap();
        assert!(matches!(
            f.begin(3, 1000),
            Err(EpochError::Stale {
                offered: 3,
                current: 3
            })
        ));
        assert!(f.begin(2, 1000).is_err());
        let again = EpochFile::load(&path).unwrap();
        assert_eq!(
            again.entries(),
            [EpochEntry::new(1, 0), EpochEntry::new(3, 900)]
        );
        // A crash between the write's two renames leaves only the `.bak` (the state
        // before that write): it is used.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            EpochFile::load(&path).unwrap().entries(),
            [EpochEntry::new(1, 0)]
        );
        std::fs::write(
            &path,
            "[{\"epoch\":2,\"startOffset\":0},{\"epoch\":1,\"startOffset\":5}]",
        )
        .unwrap();
        assert!(matches!(
            EpochFile::load(&path),
            Err(EpochError::Corrupt { .. })
        ));
        std::fs::write(&path, "garbage").unwrap();
        assert!(EpochFile::load(&path).is_err());
    }

    #[test]
    fn truncation_point_cuts_what_the_new_master_never_had() {
        let master = [EpochEntry::new(1, 0), EpochEntry::new(2, 900)];
        // The old master wrote to 1000 in epoch 1; the new master began epoch 2 at 900.
        assert_eq!(truncation_point(1, 1000, &master), Some(900));
        // A slave that stopped at 800 in epoch 1 keeps everything.
        assert_eq!(truncation_point(1, 800, &master), None);
        // A slave already in epoch 2 keeps everything.
        assert_eq!(truncation_point(2, 1200, &master), None);
        // A slave with no history keeps what it has (nothing to compare it with).
        assert_eq!(truncation_point(0, 0, &master), None);
        assert_eq!(truncation_point(0, 5000, &master), None);
        // Two failovers in between: cut at the first epoch newer than ours.
        assert_eq!(
            truncation_point(
                1,
                5000,
                &[
                    EpochEntry::new(1, 0),
                    EpochEntry::new(2, 900),
                    EpochEntry::new(3, 1500)
                ]
            ),
            Some(900)
        );
    }
}
