//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use ferrocket::store::{encode_properties, FlushDiskType, MessageToStore, StoreConfig};

/// Small files so tests roll segments quickly.
pub fn small_config(dir: &Path, flush: FlushDiskType) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.mapped_file_size_commit_log = 64 * 1024;
    c.mapped_file_size_consume_queue = 20 * 100;
    c.max_message_size = 16 * 1024;
    c.max_hash_slot_num = 64;
    c.max_index_num = 400;
    c.flush_disk_type = flush;
    c.flush_interval_commit_log_ms = 20;
    c.flush_interval_consume_queue_ms = 20;
    // The test machine's disk may be fuller than RocketMQ's 85 % / 90 % marks, past which
    // the store deletes old files early and refuses new CommitLog segments.
    c.disk_space_clean_forcibly_ratio = 100;
    c.disk_space_warning_level_ratio = 100;
    c
}

/// A message for `topic`/`queue_id` whose body names it.
pub fn msg(topic: &str, queue_id: i32, body: &str, tag: &str, keys: &str) -> MessageToStore {
    let mut props = vec![("TAGS", tag), ("UNIQ_KEY", body)];
    if !keys.is_empty() {
        props.push(("KEYS", keys));
    }
    MessageToStore {
        topic: topic.into(),
        queue_id,
        born_timestamp: 1,
        born_host: "127.0.0.1:40000".parse().unwrap(),
        store_host: "127.0.0.1:10911".parse().unwrap(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        properties: encode_properties(props),
        ..MessageToStore::default()
    }
}

/// A tokio runtime for driving the store's async puts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}
