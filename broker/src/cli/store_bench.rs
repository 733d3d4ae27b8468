//! `ferrocket bench store` and `ferrocket bench recover`: the store measured without
//! the network, like RocketMQ's benchmark tool reports a producer: throughput every
//! second, then totals and latency percentiles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;

use super::report::{percentiles, Percentiles};
use crate::store::{
    encode_properties, FlushDiskType, GetMessageStatus, MessageStore, MessageToStore, StoreConfig,
};

/// `ferrocket bench store`.
#[derive(Debug, clap::Args)]
pub struct StoreBenchArgs {
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 16)]
    pub appenders: usize,
    /// `async` (ASYNC_FLUSH) or `sync` (SYNC_FLUSH, group commit).
    #[arg(long, default_value = "async")]
    pub flush: String,
    /// How long to append, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = super::report::parse_duration)]
    pub duration: Duration,
    /// Stop after this many MiB of messages (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub total_mib: u64,
    /// Queues to spread messages over.
    #[arg(long, default_value_t = 8)]
    pub queues: i32,
    /// Store directory (default: a new temporary directory, deleted afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the store directory.
    #[arg(long)]
    pub keep: bool,
    /// CommitLog segment size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub segment_mib: u64,
    /// After appending, read every queue back in 32-message batches and report MB/s.
    #[arg(long)]
    pub read: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ferrocket bench recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverBenchArgs {
    /// Store directory to open (as left by a killed process).
    #[arg(long)]
    pub dir: PathBuf,
    /// CommitLog segment size in MiB the store was written with.
    #[arg(long, default_value_t = 1024)]
    pub segment_mib: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    flush: String,
    appenders: usize,
    body_bytes: usize,
    messages: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency_us: Percentiles,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    read: Option<ReadReport>,
}

#[derive(Debug, Serialize)]
struct ReadReport {
    messages: u64,
    seconds: f64,
    mb_per_sec: f64,
    msgs_per_sec: f64,
    zero_copy: bool,
}

struct TempDir(PathBuf, bool);
impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `bench store`.
///
/// # Errors
/// Bad arguments or store failures.
pub fn run(args: StoreBenchArgs) -> Result<()> {
    let flush = match args.flush.as_str() {
        "async" => FlushDiskType::Async,
        "sync" => FlushDiskType::Sync,
        other => anyhow::bail!("--flush must be async or sync, not `{other}`"),
    };
    anyhow::ensure!(
        args.appenders > 0 && args.queues > 0,
        "--appenders and --queues must be positive"
    );
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ferrocket-bench-{}", std::process::id())),
    };
    let _cleanup = TempDir(dir.clone(), args.keep || args.dir.is_some());
    let mut cfg = StoreConfig::new(&dir);
    cfg.flush_disk_type = flush;
    cfg.mapped_file_size_commit_log = args.segment_mib * 1024 * 1024;
    let store =
        MessageStore::open(cfg).with_context(|| format!("opening store in {}", dir.display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let limit_msgs = if args.total_mib > 0 {
        args.total_mib * 1024 * 1024 / args.size.max(1) as u64
    } else {
        u64::MAX
    };
    let body = Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();

    let reporter = super::report::reporter(
        Arc::clone(&count),
        Arc::clone(&stop),
        args.size,
        args.json,
        "append",
    );

    let latencies: Vec<u32> = rt.block_on(async {
        let mut tasks = Vec::new();
        for a in 0..args.appenders {
            let store = Arc::clone(&store);
            let (count, errors, stop) =
                (Arc::clone(&count), Arc::clone(&errors), Arc::clone(&stop));
            let body = body.clone();
            let queues = args.queues;
            let duration = args.duration;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                let props = encode_properties([("TAGS", "bench")]);
                while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                    let m = MessageToStore {
                        topic: "BenchmarkTest".into(),
                        queue_id: ((a as u64 + i) % queues as u64) as i32,
                        body: body.clone(),
                        properties: props.clone(),
                        born_timestamp: crate::store::now_ms(),
                        ..MessageToStore::default()
                    };
                    let t = Instant::now();
                    match store.put_message(m).await {
                        Ok(_) => {
                            lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            if count.fetch_add(1, Ordering::Relaxed) + 1 >= limit_msgs {
                                stop.store(true, Ordering::Release);
                            }
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                tracing::error!(error = %e, "append failed");
                            }
                        }
                    }
                    i += 1;
                    if i.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(l) = t.await {
                all.extend(l);
            }
        }
        all
    });
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let _ = reporter.join();
    let messages = count.load(Ordering::Relaxed);

    let read = if args.read {
        Some(read_back(&store, args.queues))
    } else {
        None
    };
    let report = Report {
        flush: args.flush.clone(),
        appenders: args.appenders,
        body_bytes: args.size,
        messages,
        seconds: secs,
        msgs_per_sec: messages as f64 / secs,
        mb_per_sec: messages as f64 * args.size as f64 / secs / 1e6,
        latency_us: percentiles(latencies.into_iter().map(u64::from).collect()),
        errors: errors.load(Ordering::Relaxed),
        read,
    };
    store.shutdown();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "appended {} msgs of {} B with {} appenders ({}) in {:.1}s: {:.0} msg/s, {:.1} MB/s; latency us p50 {} p99 {} p999 {} max {}; errors {}",
            report.messages, report.body_bytes, report.appenders, report.flush, report.seconds,
            report.msgs_per_sec, report.mb_per_sec, report.latency_us.p50, report.latency_us.p99,
            report.latency_us.p999, report.latency_us.max, report.errors
        );
        if let Some(r) = &report.read {
            println!(
                "read {} msgs in 32-message batches in {:.2}s: {:.0} msg/s, {:.1} MB/s, zero-copy views: {}",
                r.messages, r.seconds, r.msgs_per_sec, r.mb_per_sec, r.zero_copy
            );
        }
    }
    Ok(())
}

fn read_back(store: &MessageStore, queues: i32) -> ReadReport {
    while store.dispatched_offset() < store.max_phy_offset() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let mut zero_copy = true;
    let segments = store.commitlog().segments();
    for q in 0..queues {
        let mut off = store.min_offset_in_queue("BenchmarkTest", q);
        loop {
            let r = store.get_messages("BenchmarkTest", q, off, 32, 1 << 20, |_| true);
            if r.status != GetMessageStatus::Found {
                break;
            }
            for m in &r.messages {
                msgs += 1;
                bytes += m.len() as u64;
                // A view into the mapping, not a copy: its address lies inside a segment.
                let p = m.as_ptr() as usize;
                zero_copy &= segments.iter().any(|s| {
                    s.read(0, s.size() as usize)
                        .map(|whole| {
                            let base = whole.as_ptr() as usize;
                            p >= base && p + m.len() <= base + whole.len()
                        })
                        .unwrap_or(false)
                });
            }
            off = r.next_begin_offset;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    ReadReport {
        messages: msgs,
        seconds: secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        msgs_per_sec: msgs as f64 / secs,
        zero_copy,
    }
}

/// Runs `bench recover`: opens a store directory and reports what recovery did.
///
/// # Errors
/// Store failures.
pub fn run_recover(args: RecoverBenchArgs) -> Result<()> {
    let mut cfg = StoreConfig::new(&args.dir);
    cfg.mapped_file_size_commit_log = args.segment_mib * 1024 * 1024;
    let started = Instant::now();
    let store = MessageStore::open(cfg)?;
    let opened = started.elapsed();
    let rep = store.recovery_report().clone();
    let bytes = rep.end_offset - rep.scanned_from;
    store.shutdown();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "abnormal": rep.abnormal,
                "scanned_from": rep.scanned_from,
                "end_offset": rep.end_offset,
                "scanned_bytes": bytes,
                "redispatched_from": rep.redispatched_from,
                "truncated": rep.truncated_reason,
                "recovery_ms": rep.elapsed.as_secs_f64() * 1000.0,
                "open_ms": opened.as_secs_f64() * 1000.0,
            })
        );
    } else {
        println!(
            "recovered {} (abnormal: {}): scanned {:.1} MiB from {} to {}, re-dispatched from {}, truncated: {}; recovery {:.0} ms, open {:.0} ms",
            args.dir.display(),
            rep.abnormal,
            bytes as f64 / 1048576.0,
            rep.scanned_from,
            rep.end_offset,
            rep.redispatched_from,
            rep.truncated_reason.as_deref().unwrap_or("no"),
            rep.elapsed.as_secs_f64() * 1000.0,
            opened.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
