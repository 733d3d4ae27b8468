//! `checkpoint`: one 4 KiB page recording how far each part of the store is on disk.
//!
//! `[physic_msg_ts:8][logics_msg_ts:8][index_msg_ts:8][master_flushed_offset:8][confirm_phy_offset:8]`
//! then zeros. Recovery after a crash starts from the newest CommitLog segment whose first
//! record is older than `min(physic, logics) - 3 s`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use tracing::warn;

use super::error::{Result, StoreError};
use super::format::CHECKPOINT_FILE_SIZE;

/// The checkpoint fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Store time of the last flushed CommitLog record.
    pub physic_msg_timestamp: i64,
    /// Store time of the last flushed ConsumeQueue entry.
    pub logics_msg_timestamp: i64,
    /// Store time of the last flushed index entry.
    pub index_msg_timestamp: i64,
    /// Master's flushed offset (controller HA).
    pub master_flushed_offset: i64,
    /// Offset confirmed by replication.
    pub confirm_phy_offset: i64,
}

impl Checkpoint {
    /// Encodes the 40 meaningful bytes.
    pub fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        for (i, v) in [
            self.physic_msg_timestamp,
            self.logics_msg_timestamp,
            self.index_msg_timestamp,
            self.master_flushed_offset,
            self.confirm_phy_offset,
        ]
        .iter()
        .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// Decodes; `None` if fewer than 40 bytes or a timestamp is negative (corrupt).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let at = |i: usize| {
            Some(i64::from_be_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let c = Checkpoint {
            physic_msg_timestamp: at(0)?,
            logics_msg_timestamp: at(1)?,
            index_msg_timestamp: at(2)?,
            master_flushed_offset: at(3)?,
            confirm_phy_offset: at(4)?,
        };
        (c.physic_msg_timestamp >= 0 && c.logics_msg_timestamp >= 0 && c.index_msg_timestamp >= 0)
            .then_some(c)
    }

    /// Reads the checkpoint; a missing file gives zeros, a corrupt one gives zeros with a
    /// warning (recovery then checks every record).
    pub fn load(path: &Path) -> Self {
        let mut buf = Vec::new();
        match std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
            Ok(_) => Checkpoint::decode(&buf).unwrap_or_else(|| {
                warn!(file = %path.display(), "checkpoint is corrupt; recovery will check every record");
                Checkpoint::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "checkpoint unreadable; recovery will check every record");
                Checkpoint::default()
            }
        }
    }

    /// Writes and syncs the checkpoint in place.
    ///
    /// # Errors
    /// The I/O error.
    pub fn store(&self, path: &Path) -> Result<()> {
        let io = |e| StoreError::io(path, e);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        if f.metadata().map_err(io)?.len() < CHECKPOINT_FILE_SIZE as u64 {
            f.set_len(CHECKPOINT_FILE_SIZE as u64).map_err(io)?;
        }
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&self.encode()).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&p), Checkpoint::default());
        let c = Checkpoint {
            physic_msg_timestamp: 1,
            logics_msg_timestamp: 2,
            index_msg_timestamp: 3,
            master_flushed_offset: 4,
            confirm_phy_offset: 5,
        };
        c.store(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
        assert_eq!(Checkpoint::load(&p), c);
        std::fs::write(&p, [0xFFu8; 12]).unwrap();
        assert_eq!(Checkpoint::load(&p), Checkpoint::default());
        std::fs::write(&p, [0xFFu8; 4096]).unwrap();
        assert_eq!(Checkpoint::load(&p), Checkpoint::default());
    }
}
