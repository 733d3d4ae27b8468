//! Durability under `kill -9` and a full disk, with a real child process.
//!
//! The crash test runs this test binary a second time as the child (selected by an
//! environment variable): the child appends under SYNC_FLUSH from 16 tasks and prints
//! every acknowledged record; the parent kills it with SIGKILL mid-stream, reopens the
//! store and checks that every acknowledged record is there, intact, with gap-free
//! queue offsets, and that nothing torn is served. Three rounds run on the same
//! directory, so recovery also runs over previously recovered data.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{msg, small_config};
use ferrocket::store::{decode_record, FlushDiskType, GetMessageStatus, MessageStore, StoreError};

const CHILD_DIR: &str = "FERROCKET_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "FERROCKET_CRASH_CHILD_ROUND";
const TEST_NAME: &str = "kill_9_mid_write_loses_no_acknowledged_record";
const QUEUES: i32 = 4;

fn config(dir: &std::path::Path) -> ferrocket::store::StoreConfig {
    let mut c = small_config(dir, FlushDiskType::Sync);
    c.mapped_file_size_commit_log = 256 * 1024;
    c
}

/// The child: append forever, print `ACK <round> <task> <seq> <phys> <queue> <qoffset>`.
fn child(dir: &str, round: &str) -> ! {
    let rt = common::runtime();
    let store = MessageStore::open(config(std::path::Path::new(dir))).unwrap();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("READY");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            let round = round.to_owned();
            tasks.push(tokio::spawn(async move {
                for seq in 0u64.. {
                    let q = (t % QUEUES as u64) as i32;
                    let body = format!("{round}-{t}-{seq}-{}", "p".repeat((seq % 300) as usize));
                    let r = store
                        .put_message(msg("Crash", q, &body, "", ""))
                        .await
                        .unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(
                        o,
                        "ACK {round} {t} {seq} {} {q} {}",
                        r.physical_offsets[0], r.queue_offset
                    )
                    .unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    std::process::exit(0)
}

struct Ack {
    body_prefix: String,
    phys: u64,
    queue: i32,
    queue_offset: i64,
}

fn run_round(
    dir: &std::path::Path,
    logs: &std::path::Path,
    round: u32,
    acks_wanted: usize,
) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let err_path = logs.join(format!("child-{round}.stderr"));
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_file))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    while let Some(Ok(line)) = lines.next() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"ACK") && f.len() == 7 {
            acks.push(Ack {
                body_prefix: format!("{}-{}-{}-", f[1], f[2], f[3]),
                phys: f[4].parse().unwrap(),
                queue: f[5].parse().unwrap(),
                queue_offset: f[6].parse().unwrap(),
            });
        }
        if !killed && (acks.len() >= acks_wanted || Instant::now() > deadline) {
            // SIGKILL mid-stream; lines already in the pipe are still read below.
            child.kill().unwrap();
            killed = true;
        }
    }
    child.wait().unwrap();
    assert!(
        killed,
        "child exited before it was killed after {} acks; its stderr:\n{}",
        acks.len(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    acks
}

#[test]
fn kill_9_mid_write_loses_no_acknowledged_record() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) {
        child(&dir, &round);
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut all_acks: Vec<Ack> = Vec::new();
    for round in 0..3 {
        let acks = run_round(dir.path(), logs.path(), round, 1500);
        assert!(
            acks.len() >= 1500,
            "round {round}: only {} acks",
            acks.len()
        );
        all_acks.extend(acks);

        let store = MessageStore::open(config(dir.path())).unwrap();
        let rep = store.recovery_report().clone();
        assert!(rep.abnormal, "a killed process must leave the abort file");
        // Every queue: gap-free offsets from 0, every record whole and CRC-valid.
        let mut by_phys: HashMap<u64, (i32, i64, String)> = HashMap::new();
        for q in 0..QUEUES {
            let mut off = 0;
            loop {
                let r = store.get_messages("Crash", q, off, 64, 1 << 22, |_| true);
                if r.status != GetMessageStatus::Found {
                    assert_eq!(r.status, GetMessageStatus::OffsetOverflowOne, "queue {q}");
                    break;
                }
                for rec in &r.messages {
                    ferrocket::store::message::check_record(rec, true, None).unwrap();
                    let m = decode_record(rec).unwrap();
                    assert_eq!(m.queue_offset, off, "gap in queue {q}");
                    by_phys.insert(
                        m.physical_offset as u64,
                        (
                            q,
                            m.queue_offset,
                            String::from_utf8(m.body.to_vec()).unwrap(),
                        ),
                    );
                    off += 1;
                }
            }
        }
        for a in &all_acks {
            let (q, qo, body) = by_phys
                .get(&a.phys)
                .unwrap_or_else(|| panic!("acknowledged record at {} lost", a.phys));
            assert_eq!((*q, *qo), (a.queue, a.queue_offset));
            assert!(
                body.starts_with(&a.body_prefix),
                "record at {} has wrong content",
                a.phys
            );
        }
        // Nothing is served past the recovered end.
        assert!(store.read_message(store.max_phy_offset()).is_none());
        eprintln!(
            "round {round}: {} acked so far, {} stored, recovered to {} in {:?}",
            all_acks.len(),
            by_phys.len(),
            rep.end_offset,
            rep.elapsed
        );
        store.shutdown();
        drop(store);
        // Leave the directory as a crash would for the next round's child to recover.
    }
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A 1 MiB tmpfs of the test's own (unmounted on drop), or None when not root.
fn small_disk() -> Option<(tempfile::TempDir, Tmpfs, std::path::PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        ferrocket_testkit::skip(
            "full-disk tests",
            "they need root to mount a small tmpfs; not run as this user",
        );
        return None;
    }
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a 1 MiB tmpfs failed");
    let guard = Tmpfs(mnt.clone());
    Some((base, guard, mnt))
}

#[test]
fn full_disk_fails_the_append_and_keeps_the_store_consistent() {
    let Some((_base, _guard, mnt)) = small_disk() else {
        return;
    };
    let mut cfg = small_config(&mnt, FlushDiskType::Async);
    cfg.mapped_file_size_commit_log = 256 * 1024;
    // This disk is the test's own: RocketMQ's 90 % mark keeps room for the ConsumeQueue
    // and index files, which is what this test checks (small_config lifts it for the
    // shared test disk).
    cfg.disk_space_warning_level_ratio = 90;
    cfg.max_hash_slot_num = 8;
    cfg.max_index_num = 64;
    let rt = common::runtime();
    let store = MessageStore::open(cfg.clone()).unwrap();
    let pad = "d".repeat(4000);
    let mut stored = 0;
    let err = loop {
        match rt.block_on(store.put_message(msg("Full", 0, &format!("{stored}{pad}"), "", ""))) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10_000, "the disk never filled");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    // What was stored is still served, and the store still answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched_offset() < store.max_phy_offset() {
        assert!(
            Instant::now() < deadline,
            "dispatch stalled on the full disk"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = store.get_messages("Full", 0, 0, 1000, 1 << 24, |_| true);
    assert_eq!(r.messages.len(), stored);
    store.shutdown();
    drop(store);
    let store = MessageStore::open(cfg).unwrap();
    assert_eq!(store.max_offset_in_queue("Full", 0), stored as i64);
}

#[test]
fn a_store_on_a_disk_filled_to_the_last_byte_still_shuts_down() {
    let Some((_base, _guard, mnt)) = small_disk() else {
        return;
    };
    let cfg = || {
        let mut cfg = small_config(&mnt, FlushDiskType::Async);
        cfg.mapped_file_size_commit_log = 256 * 1024;
        // One ConsumeQueue file holds the reserve ahead of the queue (no new file is
        // needed later); an IndexFile fills after 20 messages.
        cfg.mapped_file_size_consume_queue = 20 * 4096;
        cfg.max_index_num = 20;
        cfg
    };
    let rt = common::runtime();
    let store = MessageStore::open(cfg()).unwrap();
    rt.block_on(store.put_message(msg("First", 0, "one", "", "")))
        .unwrap();
    ferrocket_testkit::wait_until(
        "the first record dispatched",
        Duration::from_secs(10),
        || store.dispatched_offset() >= store.max_phy_offset(),
    );
    // Something else takes every byte left; the CommitLog segment still has room.
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = vec![7u8; 4096];
    while filler.write_all(&chunk).is_ok() {}
    let _ = filler.sync_all();
    drop(filler);
    // A message for a new queue is refused before it is stored: its ConsumeQueue file
    // cannot be created.
    let err = rt
        .block_on(store.put_message(msg("Second", 0, "two", "", "")))
        .map(drop)
        .expect_err("stored although it could not be served");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    // The first queue has its room reserved; its IndexFile (20 entries) fills, and the
    // send that would need a file after the one made ahead of time is refused before
    // it is stored (before, it was stored and acknowledged, and dispatch then stalled
    // on the IndexFile it could not create): everything stored is dispatched.
    let mut stored = 1i64;
    let refused = loop {
        match rt.block_on(store.put_message(msg("First", 0, &format!("m{stored}"), "", ""))) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 5000, "still storing with the disk full");
    };
    assert!(matches!(refused, StoreError::DiskFull { .. }), "{refused}");
    ferrocket_testkit::wait_until(
        "every stored record dispatched",
        Duration::from_secs(10),
        || store.dispatched_offset() >= store.max_phy_offset(),
    );
    assert_eq!(store.max_offset_in_queue("First", 0), stored);
    // Shutdown on the full disk (its checkpoint and metadata writes fail) still ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        store.shutdown();
        drop(store);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "shutdown hung on the full disk"
    );
    // With room again, the next start serves everything stored.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let store = MessageStore::open(cfg()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.max_offset_in_queue("First", 0) < stored {
        assert!(
            Instant::now() < deadline,
            "not re-dispatched after restart: dispatched {} of {}; {:?}",
            store.dispatched_offset(),
            store.max_phy_offset(),
            walk(&mnt)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn walk(p: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push((
                    path.display().to_string(),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                ));
            }
        }
    }
    out
}
