//! `ferrocket store check`: an offline look at a store directory — every CommitLog
//! record's magic, size and body CRC; every ConsumeQueue entry against the record it
//! points at; the metadata files. It changes nothing (the repair is a store open with
//! `--repair`, which quarantines and rebuilds as recovery does).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::commitlog::CommitLog;
use super::dispatch::RecordHead;
use super::metadata::{self, Salvage};
use super::{Result, StoreConfig, StoreError};

/// What `check` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    /// CommitLog records that passed every check.
    pub records: u64,
    /// CommitLog bytes checked, `[min, end)`.
    pub commitlog_from: u64,
    /// Where the valid data ends.
    pub commitlog_end: u64,
    /// Damage found, one line each (empty: the store is sound).
    pub problems: Vec<String>,
    /// ConsumeQueues checked.
    pub queues: usize,
    /// ConsumeQueue entries checked against their record.
    pub entries: u64,
}

impl CheckReport {
    /// Whether nothing is damaged.
    #[must_use]
    pub fn sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store under `config.store_path_root_dir` without changing it.
///
/// # Errors
/// I/O errors reading the directory (damage is reported, not returned).
pub fn check(config: &StoreConfig) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let commitlog = match CommitLog::open(
        &config.commitlog_dir(),
        config.mapped_file_size_commit_log,
        100,
        false,
        None,
    ) {
        Ok(c) => c,
        Err(e @ StoreError::Corrupt { .. }) => {
            report.problems.push(format!("CommitLog: {e}"));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    // Every record from the oldest segment on, CRC included; past a bad record the
    // check resumes where a valid one starts.
    let min = commitlog.min_offset();
    report.commitlog_from = min;
    let mut from = min;
    let mut last_ts = 0;
    let end = loop {
        let (end, bad) = commitlog.scan(from, true, |_, rec| {
            report.records += 1;
            if let Some(h) = RecordHead::parse(rec) {
                last_ts = h.store_timestamp;
            }
        });
        let Some((at, e)) = bad else {
            break end;
        };
        match commitlog.resync_after(at) {
            Some(next) => {
                report.problems.push(format!(
                    "CommitLog [{at}, {next}): {e}; valid records resume at {next}"
                ));
                from = next;
            }
            None => {
                report.problems.push(format!(
                    "CommitLog at {at}: {e}; nothing valid follows in its segment (a torn tail if it is the last)"
                ));
                break at;
            }
        }
    };
    {
        let mut tail = commitlog.lock_tail();
        commitlog.set_recovered_end(&mut tail, end, last_ts);
    }
    report.commitlog_end = end;
    check_queues(config, &commitlog, end, &mut report)?;
    let cfg = config.config_dir();
    check_metadata::<metadata::TopicConfigTable>(
        &cfg.join("topics.json"),
        Salvage::Entries,
        &mut report,
    );
    check_metadata::<metadata::SubscriptionGroupTable>(
        &cfg.join("subscriptionGroup.json"),
        Salvage::Entries,
        &mut report,
    );
    check_metadata::<metadata::ConsumerOffsetTable>(
        &cfg.join("consumerOffset.json"),
        Salvage::Nested,
        &mut report,
    );
    check_metadata::<metadata::DelayOffsetTable>(
        &cfg.join("delayOffset.json"),
        Salvage::Entries,
        &mut report,
    );
    Ok(report)
}

fn check_queues(
    config: &StoreConfig,
    commitlog: &CommitLog,
    end: u64,
    report: &mut CheckReport,
) -> Result<()> {
    let queues = super::load_queues(
        &config.consume_queue_dir(),
        config.mapped_file_size_consume_queue,
    )?;
    for cq in queues.values().flat_map(HashMap::values) {
        report.queues += 1;
        report.entries += u64::try_from(cq.max_offset() - cq.min_offset()).unwrap_or(0);
        if let Some(p) = super::verify::queue_damage(commitlog, cq, end, 1, &[]) {
            report.problems.push(format!(
                "ConsumeQueue {}/{}: {p}",
                cq.topic(),
                cq.queue_id()
            ));
        }
    }
    Ok(())
}

fn check_metadata<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    depth: Salvage,
    report: &mut CheckReport,
) {
    match metadata::inspect::<T>(path, depth) {
        Ok(dropped) => {
            for d in dropped {
                report
                    .problems
                    .push(format!("{}: malformed entry {d}", path.display()));
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
}
