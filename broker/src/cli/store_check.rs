//! `ferrocket store check`: the offline store check (and `--repair`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::store::check::check;
use crate::store::{MessageStore, StoreConfig};

/// `ferrocket store check`.
#[derive(Debug, clap::Args)]
pub struct StoreCheckArgs {
    /// The store directory (`storePathRootDir`); no broker may be running on it.
    #[arg(long)]
    pub dir: PathBuf,
    /// `mappedFileSizeCommitLog` the store was written with, in bytes.
    #[arg(long, default_value_t = crate::store::format::DEFAULT_COMMITLOG_SEGMENT_SIZE)]
    pub commitlog_file_size: u64,
    /// `mappedFileSizeConsumeQueue` the store was written with, in bytes.
    #[arg(long, default_value_t = crate::store::format::CQ_ENTRIES_PER_FILE * 20)]
    pub consume_queue_file_size: u64,
    /// Repair what can be repaired first: open the store as a broker started with
    /// `--repair` would (quarantine corrupt CommitLog bytes and stray files, rebuild
    /// damaged ConsumeQueues, keep what is readable of metadata), then check again.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check; fails (exit 1) when damage remains.
///
/// # Errors
/// Damage found, or the directory cannot be read.
pub fn run(args: StoreCheckArgs) -> Result<()> {
    let mut config = StoreConfig::new(&args.dir);
    config.mapped_file_size_commit_log = args.commitlog_file_size;
    config.mapped_file_size_consume_queue = args.consume_queue_file_size;
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    if args.repair {
        let mut repair = config.clone();
        repair.repair = true;
        repair.disk_space_clean_forcibly_ratio = 100;
        repair.disk_space_warning_level_ratio = 100;
        let store = MessageStore::open(repair).context("repairing the store")?;
        store.shutdown();
    }
    let report = check(&config).context("checking the store")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "CommitLog [{}, {}): {} records; {} ConsumeQueues, {} entries checked",
            report.commitlog_from,
            report.commitlog_end,
            report.records,
            report.queues,
            report.entries
        );
        for p in &report.problems {
            println!("DAMAGE {p}");
        }
    }
    if report.sound() {
        println!("store is sound");
        Ok(())
    } else {
        bail!(
            "{} problems found{}",
            report.problems.len(),
            if args.repair {
                " after the repair"
            } else {
                "; `--repair` quarantines or rebuilds what it can"
            }
        )
    }
}
