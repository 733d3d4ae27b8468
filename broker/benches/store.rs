//! Criterion benchmarks of the store: record codec, append (ASYNC_FLUSH, no flush wait),
//! a 32-message read, and recovery of a crashed 64 MiB store.
//!
//! `cargo bench -p ferrocket --bench store`. The end-to-end figures with concurrency
//! and SYNC_FLUSH come from `ferrocket bench store` (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrocket::store::{
    decode_record, encode_properties, encode_record, FlushDiskType, MessageStore, MessageToStore,
    StoreConfig,
};

fn message(size: usize) -> MessageToStore {
    MessageToStore {
        topic: "BenchmarkTest".into(),
        queue_id: 3,
        born_timestamp: 1_700_000_000_000,
        body: Bytes::from(vec![b'x'; size]),
        properties: encode_properties([
            ("TAGS", "TagA"),
            ("KEYS", "order-1"),
            ("UNIQ_KEY", "7F0000010001"),
        ]),
        ..MessageToStore::default()
    }
}

fn codec(c: &mut Criterion) {
    let m = message(1024);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("encode_1KiB", |b| {
        b.iter(|| encode_record(black_box(&m), 1 << 22))
    });
    let enc = Bytes::from(encode_record(&m, 1 << 22).unwrap().bytes);
    g.bench_function("decode_1KiB", |b| b.iter(|| decode_record(black_box(&enc))));
    g.finish();
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.mapped_file_size_commit_log = 256 << 20;
    c.flush_disk_type = FlushDiskType::Async;
    c
}

fn append_and_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let m = message(1024);
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("append_1KiB_async", |b| {
        b.iter(|| store.append_messages(std::slice::from_ref(&m)).unwrap())
    });
    while store.dispatched_offset() < store.max_phy_offset() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let max = store.max_offset_in_queue("BenchmarkTest", 3).max(33);
    g.throughput(Throughput::Bytes(32 * 1024));
    let mut off = 0;
    g.bench_function("read_32_messages", |b| {
        b.iter(|| {
            let r = store.get_messages("BenchmarkTest", 3, off, 32, 1 << 20, |_| true);
            off = if off + 64 < max { off + 32 } else { 0 };
            black_box(r.messages.len())
        })
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    // A 64 MiB CommitLog left as a crash leaves it (abort file, no clean checkpoint).
    let template = tempfile::tempdir().unwrap();
    {
        let store = MessageStore::open(config(template.path())).unwrap();
        let m = message(1024);
        while store.max_phy_offset() < 64 << 20 {
            store.append_messages(std::slice::from_ref(&m)).unwrap();
        }
    }
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(64 << 20));
    g.bench_function("abnormal_64MiB", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                copy_dir(template.path(), d.path());
                std::fs::write(d.path().join("abort"), b"").unwrap();
                std::fs::remove_file(d.path().join("checkpoint")).unwrap();
                d
            },
            |d| {
                let s = MessageStore::open(config(d.path())).unwrap();
                black_box(s.max_phy_offset());
                d
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

criterion_group!(benches, codec, append_and_read, recovery);
criterion_main!(benches);
