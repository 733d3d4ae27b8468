//! Store configuration: RocketMQ's keys and defaults (`MessageStoreConfig`).

use std::path::PathBuf;

use super::error::{Result, StoreError};
use super::format::{
    CQ_ENTRIES_PER_FILE, CQ_ENTRY_SIZE, DEFAULT_COMMITLOG_SEGMENT_SIZE, DEFAULT_INDEX_ENTRIES,
    DEFAULT_INDEX_SLOTS, DEFAULT_MAX_MESSAGE_SIZE,
};

/// `flushDiskType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushDiskType {
    /// `ASYNC_FLUSH`: acknowledge once in the page cache, flush in the background.
    Async,
    /// `SYNC_FLUSH`: acknowledge once on disk (group commit).
    Sync,
}

impl std::str::FromStr for FlushDiskType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ASYNC_FLUSH" => Ok(FlushDiskType::Async),
            "SYNC_FLUSH" => Ok(FlushDiskType::Sync),
            other => Err(format!("expected ASYNC_FLUSH or SYNC_FLUSH, got `{other}`")),
        }
    }
}

/// How much corruption recovery tolerates at the CommitLog tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Truncate a torn or corrupt tail at the first bad record (RocketMQ's behaviour).
    TolerateTailCorruption,
    /// Refuse to start when any record after the checkpoint is bad.
    AbsoluteConsistency,
}

/// RocketMQ's default `messageDelayLevel`.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// Parses `messageDelayLevel` into milliseconds per level (level 1 first).
pub fn parse_delay_levels(s: &str) -> Option<Vec<i64>> {
    let v: Option<Vec<i64>> = s
        .split_whitespace()
        .map(|t| {
            let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
            let n: i64 = num.parse().ok()?;
            let ms = match unit {
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            n.checked_mul(ms)
        })
        .collect();
    v.filter(|v| !v.is_empty())
}

/// Store settings. Names follow RocketMQ's `MessageStoreConfig`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `storePathRootDir`: holds `commitlog/`, `consumequeue/`, `index/`, `config/`, ...
    pub store_path_root_dir: PathBuf,
    /// `mappedFileSizeCommitLog`, bytes.
    pub mapped_file_size_commit_log: u64,
    /// `mappedFileSizeConsumeQueue`, bytes (a multiple of 20).
    pub mapped_file_size_consume_queue: u64,
    /// `maxMessageSize`, bytes.
    pub max_message_size: usize,
    /// `flushDiskType`.
    pub flush_disk_type: FlushDiskType,
    /// `flushIntervalCommitLog`, ms (async flush period).
    pub flush_interval_commit_log_ms: u64,
    /// `flushIntervalConsumeQueue`, ms.
    pub flush_interval_consume_queue_ms: u64,
    /// `syncFlushTimeout`, ms.
    pub sync_flush_timeout_ms: u64,
    /// `fileReservedTime`, hours.
    pub file_reserved_time_hours: u64,
    /// `deleteWhen`: hours of the day (UTC), `;`-separated, e.g. `"04"`.
    pub delete_when: String,
    /// `diskMaxUsedSpaceRatio`, percent: above it the retention pass runs at once (not only
    /// at `deleteWhen`) and deletes the expired files.
    pub disk_max_used_space_ratio: u8,
    /// `diskSpaceCleanForciblyRatio`, percent: above it the oldest CommitLog files go even
    /// before `fileReservedTime` (never the one being written).
    pub disk_space_clean_forcibly_ratio: u8,
    /// `diskSpaceWarningLevelRatio`, percent: appends that need a new CommitLog segment
    /// are refused when it would push disk use past this.
    pub disk_space_warning_level_ratio: u8,
    /// `maxHashSlotNum` per IndexFile.
    pub max_hash_slot_num: u32,
    /// `maxIndexNum` per IndexFile.
    pub max_index_num: u32,
    /// `messageIndexEnable`.
    pub message_index_enable: bool,
    /// `checkCRCOnRecover`.
    pub check_crc_on_recover: bool,
    /// What recovery may drop.
    pub recovery_mode: RecoveryMode,
    /// `messageDelayLevel`: the delay of each level, e.g. `1s 5s 10s 30s 1m ... 2h`.
    pub message_delay_level: String,
    /// `storeRepair` (ferrocket; `--repair`): damage that would stop the open (an
    /// unexpected or missing CommitLog file) is moved to `quarantine/` instead.
    pub repair: bool,
    /// Raft mode (set by the broker with `enableDLegerCommitLog`): the dispatcher builds
    /// ConsumeQueue and index entries only up to the committed offset
    /// ([`super::MessageStore::set_dispatch_limit`]; at open, the checkpoint's confirm
    /// offset), so consumers never see a record a majority does not hold.
    pub dispatch_committed_only: bool,
    /// Raft mode: the Raft log refers to CommitLog bytes, so retention deletes only
    /// segments wholly below the floor the Raft node reports
    /// ([`super::MessageStore::set_retention_floor`]: the bytes of the first entry
    /// its log still holds; older ones are in its snapshot). Until it reports, no
    /// segment is deleted. Past the disk, sends fail with a disk-full error and
    /// nothing is lost.
    pub keep_commitlog: bool,
}

impl StoreConfig {
    /// RocketMQ's defaults, rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            store_path_root_dir: root.into(),
            mapped_file_size_commit_log: DEFAULT_COMMITLOG_SEGMENT_SIZE,
            mapped_file_size_consume_queue: CQ_ENTRIES_PER_FILE * CQ_ENTRY_SIZE as u64,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            flush_disk_type: FlushDiskType::Async,
            flush_interval_commit_log_ms: 500,
            flush_interval_consume_queue_ms: 1000,
            sync_flush_timeout_ms: 5000,
            file_reserved_time_hours: 72,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 75,
            disk_space_clean_forcibly_ratio: 85,
            disk_space_warning_level_ratio: 90,
            max_hash_slot_num: DEFAULT_INDEX_SLOTS,
            max_index_num: DEFAULT_INDEX_ENTRIES,
            message_index_enable: true,
            check_crc_on_recover: true,
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            message_delay_level: DEFAULT_DELAY_LEVELS.into(),
            repair: false,
            dispatch_committed_only: false,
            keep_commitlog: false,
        }
    }

    /// Checks the values once at start-up.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, reason: String| Err(StoreError::Config { key, reason });
        if self.mapped_file_size_commit_log < 4096 {
            return bad(
                "mappedFileSizeCommitLog",
                format!("{} is below 4096", self.mapped_file_size_commit_log),
            );
        }
        if self.mapped_file_size_consume_queue < CQ_ENTRY_SIZE as u64
            || !self
                .mapped_file_size_consume_queue
                .is_multiple_of(CQ_ENTRY_SIZE as u64)
        {
            return bad(
                "mappedFileSizeConsumeQueue",
                format!(
                    "{} is not a positive multiple of 20",
                    self.mapped_file_size_consume_queue
                ),
            );
        }
        if self.max_message_size == 0
            || self.max_message_size as u64 + 8 > self.mapped_file_size_commit_log
        {
            return bad(
                "maxMessageSize",
                format!(
                    "{} must be positive and fit a CommitLog segment",
                    self.max_message_size
                ),
            );
        }
        if self.max_hash_slot_num == 0 || self.max_index_num < 2 {
            return bad("maxHashSlotNum", "index sizes must be positive".into());
        }
        if self.disk_max_used_space_ratio == 0 || self.disk_max_used_space_ratio > 95 {
            return bad(
                "diskMaxUsedSpaceRatio",
                format!("{} is outside 1..=95", self.disk_max_used_space_ratio),
            );
        }
        if self.disk_space_clean_forcibly_ratio == 0 || self.disk_space_clean_forcibly_ratio > 100 {
            return bad(
                "diskSpaceCleanForciblyRatio",
                format!(
                    "{} is outside 1..=100",
                    self.disk_space_clean_forcibly_ratio
                ),
            );
        }
        if self.disk_space_warning_level_ratio == 0 || self.disk_space_warning_level_ratio > 100 {
            return bad(
                "diskSpaceWarningLevelRatio",
                format!("{} is outside 1..=100", self.disk_space_warning_level_ratio),
            );
        }
        if parse_delay_levels(&self.message_delay_level).is_none() {
            return bad(
                "messageDelayLevel",
                format!(
                    "`{}` is not a list like `1s 5s 1m 2h`",
                    self.message_delay_level
                ),
            );
        }
        if self.delete_hours().is_none() {
            return bad(
                "deleteWhen",
                format!("`{}` is not a list of hours 00-23", self.delete_when),
            );
        }
        Ok(())
    }

    /// The hours of `deleteWhen`, or `None` when it is malformed.
    pub fn delete_hours(&self) -> Option<Vec<u8>> {
        self.delete_when
            .split(';')
            .map(|h| h.trim().parse::<u8>().ok().filter(|h| *h < 24))
            .collect()
    }

    /// `<root>/commitlog`.
    pub fn commitlog_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("commitlog")
    }
    /// `<root>/consumequeue`.
    pub fn consume_queue_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("consumequeue")
    }
    /// `<root>/index`.
    pub fn index_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("index")
    }
    /// `<root>/config`.
    pub fn config_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("config")
    }
    /// `<root>/checkpoint`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.store_path_root_dir.join("checkpoint")
    }
    /// `<root>/abort`.
    pub fn abort_path(&self) -> PathBuf {
        self.store_path_root_dir.join("abort")
    }
    /// `<root>/quarantine`: what `--repair` moved aside, never deleted.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("quarantine")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rocketmqs_and_valid() {
        let c = StoreConfig::new("/tmp/x");
        assert_eq!(c.mapped_file_size_commit_log, 1 << 30);
        assert_eq!(c.mapped_file_size_consume_queue, 6_000_000);
        assert_eq!(c.max_message_size, 4 << 20);
        assert_eq!(c.delete_hours(), Some(vec![4]));
        c.validate().unwrap();
        assert_eq!("SYNC_FLUSH".parse(), Ok(FlushDiskType::Sync));
        assert!("sync".parse::<FlushDiskType>().is_err());
        let levels = parse_delay_levels(DEFAULT_DELAY_LEVELS).unwrap();
        assert_eq!(levels.len(), 18);
        assert_eq!((levels[2], levels[17]), (10_000, 7_200_000));
        assert!(parse_delay_levels("1x").is_none());
        assert!(parse_delay_levels("").is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = StoreConfig::new("/tmp/x");
        c.mapped_file_size_consume_queue = 33;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mappedFileSizeConsumeQueue"), "{e}");
        let mut c = StoreConfig::new("/tmp/x");
        c.delete_when = "04;25".into();
        assert!(c.validate().unwrap_err().to_string().contains("deleteWhen"));
    }
}
