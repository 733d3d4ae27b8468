//! Broker metadata files under `<root>/config/`, in RocketMQ's JSON shapes:
//! `topics.json`, `consumerOffset.json`, `delayOffset.json`, `subscriptionGroup.json`.
//!
//! Writes are atomic: the new content goes to `<file>.tmp` and is fsynced, the current
//! file becomes `<file>.bak`, the temp file is renamed over it and the directory is
//! fsynced. A corrupt or missing main file falls back to the `.bak`. Java writes integer
//! map keys bare (`{0:12}`); reading accepts that, writing always quotes (`{"0":12}`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::error::{Result, StoreError};
use super::mapped_file::sync_dir;

/// `DataVersion`: lets the name server see that topic configs changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    /// Bumped on every change.
    pub counter: i64,
    /// 5.x state version.
    pub state_version: i64,
    /// Time of the last change, ms.
    pub timestamp: i64,
}

impl DataVersion {
    /// Records a change.
    pub fn next_version(&mut self) {
        self.counter += 1;
        self.timestamp = super::commitlog::now_ms();
    }
}

/// `TopicConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    /// Topic name.
    pub topic_name: String,
    /// Queues consumers read.
    pub read_queue_nums: i32,
    /// Queues producers write.
    pub write_queue_nums: i32,
    /// `PermName` bits (6 = read + write).
    pub perm: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    pub topic_filter_type: String,
    /// `TopicSysFlag` bits.
    pub topic_sys_flag: i32,
    /// Ordered topic.
    pub order: bool,
    /// 5.x attributes (e.g. `+message.type`).
    pub attributes: BTreeMap<String, String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            topic_name: String::new(),
            read_queue_nums: 16,
            write_queue_nums: 16,
            perm: 6,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_sys_flag: 0,
            order: false,
            attributes: BTreeMap::new(),
        }
    }
}

/// `topics.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigTable {
    /// Topic name → config.
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// `consumerOffset.json`: `topic@group` → queue id → offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerOffsetTable {
    /// `topic@group` → queue id → next offset to consume.
    pub offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// `delayOffset.json`: delay level → next offset of `SCHEDULE_TOPIC_XXXX` queue level-1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DelayOffsetTable {
    /// Delay level → offset.
    pub offset_table: BTreeMap<i32, i64>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// `SubscriptionGroupConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    /// Group name.
    pub group_name: String,
    /// Consumption allowed.
    pub consume_enable: bool,
    /// Broadcast consumption allowed.
    pub consume_broadcast_enable: bool,
    /// Orderly consumption.
    pub consume_message_orderly: bool,
    /// Queues of the group's retry topic.
    pub retry_queue_nums: i32,
    /// Max reconsume times before the DLQ.
    pub retry_max_times: i32,
    /// Broker id to consume from.
    pub broker_id: i64,
    /// Broker id when consumption is slow.
    pub which_broker_when_consume_slowly: i64,
    /// Send NOTIFY_CONSUMER_IDS_CHANGED.
    pub notify_consumer_ids_changed_enable: bool,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        SubscriptionGroupConfig {
            group_name: String::new(),
            consume_enable: true,
            consume_broadcast_enable: true,
            consume_message_orderly: false,
            retry_queue_nums: 1,
            retry_max_times: 16,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
        }
    }
}

/// `subscriptionGroup.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupTable {
    /// Group name → config.
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    /// Group → topic → forbidden bits.
    pub forbidden_table: BTreeMap<String, BTreeMap<String, i32>>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// Rewrites bare integer object keys (`{0:12}`, fastjson's default) as quoted keys so
/// a standard JSON parser accepts them. Strings and array elements are left alone.
pub fn quote_bare_keys(input: &str) -> String {
    #[derive(PartialEq)]
    enum Ctx {
        Object,
        Array,
    }
    let mut out = String::with_capacity(input.len() + 16);
    let mut stack: Vec<Ctx> = Vec::new();
    let mut expect_key = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == '"' {
                        break;
                    }
                }
                expect_key = false;
            }
            '{' => {
                stack.push(Ctx::Object);
                expect_key = true;
                out.push(c);
            }
            '[' => {
                stack.push(Ctx::Array);
                expect_key = false;
                out.push(c);
            }
            '}' | ']' => {
                stack.pop();
                expect_key = false;
                out.push(c);
            }
            ',' => {
                expect_key = stack.last() == Some(&Ctx::Object);
                out.push(c);
            }
            ':' => {
                expect_key = false;
                out.push(c);
            }
            c if expect_key && (c == '-' || c.is_ascii_digit()) => {
                out.push('"');
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() {
                        out.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push('"');
                expect_key = false;
            }
            c => {
                if !c.is_whitespace() {
                    expect_key = false;
                }
                out.push(c);
            }
        }
    }
    out
}

/// Where [`persist`] keeps the previous copy of `path`.
pub fn bak_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

fn parse<T: DeserializeOwned>(text: &str) -> std::result::Result<T, serde_json::Error> {
    serde_json::from_str(text).or_else(|_| serde_json::from_str(&quote_bare_keys(text)))
}

/// Loads a metadata file, falling back to its `.bak` when the main file is missing or
/// corrupt, and to the default when neither is usable.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> T {
    for (candidate, is_bak) in [(path.to_path_buf(), false), (bak_path(path), true)] {
        match std::fs::read_to_string(&candidate) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => match parse(&text) {
                Ok(v) => {
                    if is_bak {
                        warn!(file = %path.display(), "metadata file unusable; loaded its .bak copy");
                    }
                    return v;
                }
                Err(e) => warn!(file = %candidate.display(), error = %e, "corrupt metadata file"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(file = %candidate.display(), error = %e, "unreadable metadata file"),
        }
    }
    T::default()
}

/// How deep [`load_checked`] looks for the damaged entries of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Salvage {
    /// The table's entries are whole records (a topic, a group): a bad one is dropped.
    Entries,
    /// The entries are maps themselves (`topic@group` → queue → offset): a bad inner
    /// entry is dropped, its siblings kept.
    Nested,
}

/// Loads one of the broker's tables like [`load`], but loses as little as it can and
/// never silently: a file that is valid JSON keeps every entry that is well-formed,
/// and each dropped entry is logged by name; a file that is not JSON falls back to its
/// `.bak`. When neither copy can be read although one exists, the open stops with an
/// error naming the file, unless `repair` (`--repair`) starts with an empty table.
///
/// # Errors
/// [`StoreError::Corrupt`] when both copies are unusable and `repair` is off.
pub fn load_checked<T: DeserializeOwned + Default>(
    path: &Path,
    repair: bool,
    depth: Salvage,
) -> Result<T> {
    match read_checked::<T>(path, depth) {
        Ok(Some((table, dropped, from_bak))) => {
            for entry in &dropped {
                warn!(file = %path.display(), %entry, "malformed metadata entry dropped; the rest is kept");
            }
            if from_bak {
                warn!(file = %path.display(), "metadata file unusable; loaded its .bak copy");
            }
            Ok(table)
        }
        Ok(None) => Ok(T::default()),
        Err(problems) if repair => {
            warn!(file = %path.display(), problems = ?problems, "--repair: neither copy is readable; starting with an empty table");
            Ok(T::default())
        }
        Err(problems) => Err(unreadable(path, &problems)),
    }
}

/// What [`load_checked`] would drop from `path` (entry names, and a note when only the
/// `.bak` is usable), without loading anything or logging (`ferrocket store check`).
///
/// # Errors
/// Both copies unreadable.
pub fn inspect<T: DeserializeOwned + Default>(path: &Path, depth: Salvage) -> Result<Vec<String>> {
    match read_checked::<T>(path, depth) {
        Ok(Some((_, mut dropped, from_bak))) => {
            if from_bak {
                dropped.push("(the file itself: unreadable; its .bak is used)".into());
            }
            Ok(dropped)
        }
        Ok(None) => Ok(Vec::new()),
        Err(problems) => Err(unreadable(path, &problems)),
    }
}

fn unreadable(path: &Path, problems: &[String]) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "neither the file nor its .bak can be read ({}); restore one, or start with --repair to begin with an empty table",
            problems.join("; ")
        ),
    }
}

/// A table read by [`read_checked`], the entries it dropped, and whether the `.bak`
/// was used.
type Checked<T> = Option<(T, Vec<String>, bool)>;

/// The table in `path` or its `.bak` with the names of the entries dropped and whether
/// the `.bak` was used; `Ok(None)` when neither exists; the problems when both are
/// unreadable.
fn read_checked<T: DeserializeOwned + Default>(
    path: &Path,
    depth: Salvage,
) -> std::result::Result<Checked<T>, Vec<String>> {
    let mut problems = Vec::new();
    for (candidate, is_bak) in [(path.to_path_buf(), false), (bak_path(path), true)] {
        let text = match std::fs::read_to_string(&candidate) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("{}: {e}", candidate.display()));
                continue;
            }
        };
        let value: serde_json::Value = match serde_json::from_str(&text)
            .or_else(|_| serde_json::from_str(&quote_bare_keys(&text)))
        {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{}: {e}", candidate.display()));
                continue;
            }
        };
        let mut dropped = Vec::new();
        let table = salvage::<T>(value, depth, &mut dropped);
        return Ok(Some((table, dropped, is_bak)));
    }
    if problems.is_empty() {
        Ok(None)
    } else {
        Err(problems)
    }
}

/// `value` as a `T`, keeping what deserializes: each top-level field on its own, and
/// in a field that is a table, each entry on its own (with [`Salvage::Nested`], each
/// inner entry of a bad entry too). Dropped parts are named in `dropped`.
fn salvage<T: DeserializeOwned + Default>(
    value: serde_json::Value,
    depth: Salvage,
    dropped: &mut Vec<String>,
) -> T {
    use serde_json::{Map, Value};
    if let Ok(t) = serde_json::from_value::<T>(value.clone()) {
        return t;
    }
    let Value::Object(top) = value else {
        dropped.push("(the whole file: not a JSON object)".into());
        return T::default();
    };
    let fits = |doc: Value| serde_json::from_value::<T>(doc).is_ok();
    let one = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_owned(), v)]));
    let mut kept = Map::new();
    for (field, v) in top {
        if fits(one(&field, v.clone())) {
            kept.insert(field, v);
            continue;
        }
        let Value::Object(entries) = v else {
            dropped.push(field);
            continue;
        };
        let mut good = Map::new();
        for (key, entry) in entries {
            let in_table = |e: Value| one(&field, one(&key, e));
            if fits(in_table(entry.clone())) {
                good.insert(key, entry);
                continue;
            }
            if let (Salvage::Nested, Value::Object(inner)) = (depth, &entry) {
                let mut inner_good = Map::new();
                for (ik, iv) in inner {
                    if fits(in_table(one(ik, iv.clone()))) {
                        inner_good.insert(ik.clone(), iv.clone());
                    } else {
                        dropped.push(format!("{field}.{key}.{ik}"));
                    }
                }
                if !inner_good.is_empty() {
                    good.insert(key, Value::Object(inner_good));
                }
                continue;
            }
            dropped.push(format!("{field}.{key}"));
        }
        kept.insert(field, Value::Object(good));
    }
    serde_json::from_value(Value::Object(kept)).unwrap_or_else(|_| {
        dropped.push("(the rest of the file)".into());
        T::default()
    })
}

/// Writes a metadata file atomically (temp file, fsync, keep the old one as `.bak`,
/// rename, fsync the directory).
///
/// # Errors
/// I/O errors; the previous file stays in place on failure.
pub fn persist<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(&json).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    }
    if path.exists() {
        let bak = bak_path(path);
        std::fs::rename(path, &bak).map_err(|e| StoreError::io(&bak, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    sync_dir(dir).map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_keys_are_quoted_only_where_they_are_keys() {
        let java = r#"{"offsetTable":{"T@g":{0:12,1:7}},"list":[1, 2],"s":"{3:4}","n":-1}"#;
        let fixed = quote_bare_keys(java);
        assert_eq!(
            fixed,
            r#"{"offsetTable":{"T@g":{"0":12,"1":7}},"list":[1, 2],"s":"{3:4}","n":-1}"#
        );
        let t: ConsumerOffsetTable = parse(java).unwrap();
        assert_eq!(t.offset_table["T@g"][&1], 7);
    }

    #[test]
    fn reads_java_shapes() {
        let topics = r#"{"dataVersion":{"counter":3,"stateVersion":0,"timestamp":1700000000000},
            "topicConfigTable":{"TopicTest":{"attributes":{},"order":false,"perm":6,
            "readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"TopicTest",
            "topicSysFlag":0,"writeQueueNums":4,"somethingNew":true}}}"#;
        let t: TopicConfigTable = parse(topics).unwrap();
        assert_eq!(t.topic_config_table["TopicTest"].read_queue_nums, 4);
        assert_eq!(t.data_version.counter, 3);
        let delay: DelayOffsetTable = parse(r#"{"offsetTable":{1:5,3:0}}"#).unwrap();
        assert_eq!(delay.offset_table[&1], 5);
        let subs: SubscriptionGroupTable =
            parse(r#"{"subscriptionGroupTable":{"g":{"groupName":"g","retryMaxTimes":3}}}"#)
                .unwrap();
        let g = &subs.subscription_group_table["g"];
        assert_eq!(
            (g.retry_max_times, g.retry_queue_nums, g.consume_enable),
            (3, 1, true)
        );
    }

    /// Issue 14: one malformed entry loses only that entry (named in the log); both
    /// copies unreadable stop the open unless `repair`.
    #[test]
    fn a_malformed_entry_loses_only_itself_and_two_bad_copies_refuse_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("consumerOffset.json");
        std::fs::write(
            &p,
            r#"{"offsetTable":{"T@g":{"0":12,"x":7,"2":"nine"},"U@g":{"0":3},"V@h":[1]}}"#,
        )
        .unwrap();
        let t: ConsumerOffsetTable = load_checked(&p, false, Salvage::Nested).unwrap();
        assert_eq!(t.offset_table["T@g"].get(&0), Some(&12));
        assert_eq!(t.offset_table["T@g"].len(), 1);
        assert_eq!(t.offset_table["U@g"][&0], 3);
        assert!(!t.offset_table.contains_key("V@h"));
        let p = dir.path().join("topics.json");
        std::fs::write(
            &p,
            r#"{"topicConfigTable":{"A":{"topicName":"A","readQueueNums":4,"writeQueueNums":4},
                "B":{"topicName":"B","readQueueNums":"four"}},"dataVersion":{"counter":"x"}}"#,
        )
        .unwrap();
        let t: TopicConfigTable = load_checked(&p, false, Salvage::Entries).unwrap();
        assert_eq!(t.topic_config_table["A"].read_queue_nums, 4);
        assert!(
            !t.topic_config_table.contains_key("B"),
            "a bad topic is dropped whole"
        );
        // Both copies unreadable: refused, naming the file; `repair` starts empty.
        std::fs::write(&p, b"{\"topicConfigTable\": {").unwrap();
        std::fs::write(bak_path(&p), b"garbage").unwrap();
        let err = load_checked::<TopicConfigTable>(&p, false, Salvage::Entries)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("topics.json") && err.contains("--repair"),
            "{err}"
        );
        assert_eq!(
            load_checked::<TopicConfigTable>(&p, true, Salvage::Entries).unwrap(),
            TopicConfigTable::default()
        );
        // Nothing there at all: a new store.
        let fresh = dir.path().join("subscriptionGroup.json");
        assert_eq!(
            load_checked::<SubscriptionGroupTable>(&fresh, false, Salvage::Entries).unwrap(),
            SubscriptionGroupTable::default()
        );
    }

    #[test]
    fn persist_is_atomic_and_falls_back_to_bak() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config").join("consumerOffset.json");
        let mut t = ConsumerOffsetTable::default();
        t.offset_table.entry("T@g".into()).or_default().insert(0, 5);
        persist(&p, &t).unwrap();
        t.offset_table.entry("T@g".into()).or_default().insert(0, 9);
        persist(&p, &t).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"0\": 9"), "{text}");
        assert_eq!(load::<ConsumerOffsetTable>(&p), t);
        // Corrupt main file: the .bak (previous version) is used.
        std::fs::write(&p, b"{\"offsetTable\": {").unwrap();
        let back: ConsumerOffsetTable = load(&p);
        assert_eq!(back.offset_table["T@g"][&0], 5);
        // Nothing usable: defaults.
        std::fs::write(bak_path(&p), b"garbage").unwrap();
        assert_eq!(
            load::<ConsumerOffsetTable>(&p),
            ConsumerOffsetTable::default()
        );
    }
}
