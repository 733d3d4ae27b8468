//! Retention: the housekeeping thread deletes CommitLog segments older than
//! `fileReservedTime` at `deleteWhen`, at once past `diskMaxUsedSpaceRatio`, and the
//! oldest before their time past `diskSpaceCleanForciblyRatio`; then the ConsumeQueue and
//! IndexFiles that only point below the new min offset.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::*;
use crate::sync::lock;

impl StoreInner {
    pub(super) fn housekeeping_loop(&self) {
        let mut last_run: Option<(i64, u8)> = None;
        while !self.shutdown.load(Ordering::Acquire) {
            {
                let g = lock(&self.housekeeping.0);
                if !self.shutdown.load(Ordering::Acquire) {
                    let _ = self.housekeeping.1.wait_timeout(g, Duration::from_secs(10));
                }
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            let now = now_ms();
            let hour = ((now / 3_600_000) % 24) as u8;
            let day = now / 86_400_000;
            let in_window = self
                .config
                .delete_hours()
                .is_some_and(|h| h.contains(&hour))
                && last_run != Some((day, hour));
            // As RocketMQ: above diskMaxUsedSpaceRatio the pass runs now and deletes the
            // expired files; above diskSpaceCleanForciblyRatio it also takes the oldest
            // files before their time.
            let ratio = self.disk_used_ratio();
            let over = ratio.is_some_and(|r| r > percent(self.config.disk_max_used_space_ratio));
            let forced =
                ratio.is_some_and(|r| r > percent(self.config.disk_space_clean_forcibly_ratio));
            if in_window || over || forced {
                last_run = Some((day, hour));
                if forced {
                    warn!(
                        ratio = ratio.unwrap_or_default(),
                        "disk use is past diskSpaceCleanForciblyRatio; deleting the oldest CommitLog file early"
                    );
                }
                let r = self.delete_expired_files(now, forced);
                if r != RetentionReport::default() {
                    info!(?r, "retention pass");
                }
            }
        }
    }

    /// Fraction of the store's filesystem in use.
    pub(super) fn disk_used_ratio(&self) -> Option<f64> {
        let (used, total) = mapped_file::disk_usage(&self.config.store_path_root_dir)?;
        Some(used as f64 / total as f64)
    }

    /// Retention: deletes CommitLog segments older than `fileReservedTime` (with
    /// `disk_pressure`, also the oldest segment whatever its age), then the
    /// ConsumeQueue and IndexFiles that only point below the new min offset.
    pub(super) fn delete_expired_files(&self, now_ms: i64, disk_pressure: bool) -> RetentionReport {
        let reserved_ms = self.config.file_reserved_time_hours as i64 * 3_600_000;
        let mut forced = disk_pressure;
        let floor = self
            .retention_floor
            .load(std::sync::atomic::Ordering::Acquire);
        let mut kept = false;
        let n = self.commitlog.delete_segments(|seg| {
            let age_ms = seg
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| now_ms - d.as_millis() as i64)
                .unwrap_or(0);
            let expired = age_ms >= reserved_ms || std::mem::replace(&mut forced, false);
            if expired && seg.end_offset() > floor {
                kept = true;
                return false;
            }
            expired
        });
        if kept {
            warn!(
                floor,
                "DLedger mode: expired CommitLog segments are kept while the Raft log \
                 refers to them (until a snapshot covers them, docs/raft.md)"
            );
        }
        let min_phys = self.commitlog.min_offset();
        let mut report = RetentionReport {
            commitlog_segments: n,
            ..RetentionReport::default()
        };
        for cq in self.all_queues() {
            report.consume_queue_files += cq.delete_below_phys(min_phys);
        }
        report.index_files = lock(&self.index).delete_below_phys(min_phys as i64);
        report
    }
}

fn percent(p: u8) -> f64 {
    f64::from(p) / 100.0
}
