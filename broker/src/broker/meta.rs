//! Broker metadata kept in `config/*.json`: topics and consumer offsets.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::warn;

use crate::store::metadata::{
    self, ConsumerOffsetTable, SubscriptionGroupConfig, SubscriptionGroupTable, TopicConfig,
    TopicConfigTable,
};
use crate::store::StoreError;

pub use crate::protocol::topic::{validate_topic, PERM_RW, PERM_RWI, TBW102, TOPIC_MAX_LENGTH};

/// A created topic's config: `queues` read and write queues, `perm`.
fn new_topic(topic: &str, queues: i32, perm: i32) -> TopicConfig {
    TopicConfig {
        topic_name: topic.to_owned(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm,
        ..TopicConfig::default()
    }
}

/// Topic configurations (`topics.json`).
#[derive(Debug)]
pub struct TopicManager {
    path: PathBuf,
    table: Mutex<TopicConfigTable>,
}

impl TopicManager {
    /// Loads `topics.json` (or its `.bak`; see [`metadata::load_checked`]).
    ///
    /// # Errors
    /// Both copies unreadable, without `repair`.
    pub fn load(path: PathBuf, repair: bool) -> Result<Self, StoreError> {
        let table: TopicConfigTable =
            metadata::load_checked(&path, repair, metadata::Salvage::Entries)?;
        Ok(TopicManager {
            path,
            table: Mutex::new(table),
        })
    }

    /// One topic's config.
    pub fn get(&self, topic: &str) -> Option<TopicConfig> {
        lock(&self.table).topic_config_table.get(topic).cloned()
    }

    /// How many topics there are.
    pub fn count(&self) -> usize {
        lock(&self.table).topic_config_table.len()
    }

    /// The whole table.
    pub fn snapshot(&self) -> TopicConfigTable {
        lock(&self.table).clone()
    }

    /// Moves the data version on without a topic change, so name servers take the next
    /// registration's topics (RocketMQ does this when `brokerPermission` changes).
    pub fn bump_version(&self) {
        let mut t = lock(&self.table);
        t.data_version.next_version();
        self.persist_locked(&t);
    }

    /// Creates or replaces a topic and persists; returns whether anything changed.
    pub fn upsert(&self, tc: TopicConfig) -> bool {
        let mut t = lock(&self.table);
        if t.topic_config_table.get(&tc.topic_name) == Some(&tc) {
            return false;
        }
        t.topic_config_table.insert(tc.topic_name.clone(), tc);
        t.data_version.next_version();
        self.persist_locked(&t);
        true
    }

    /// Creates every topic of `topics` that is absent (`queues` queues each), persisting
    /// once; returns how many were created.
    pub fn create_missing(&self, topics: &[(String, i32)], perm: i32) -> usize {
        let mut t = lock(&self.table);
        let mut created = 0;
        for (topic, queues) in topics {
            if t.topic_config_table.contains_key(topic) {
                continue;
            }
            t.topic_config_table
                .insert(topic.clone(), new_topic(topic, *queues, perm));
            created += 1;
        }
        if created > 0 {
            t.data_version.next_version();
            self.persist_locked(&t);
        }
        created
    }

    /// Creates the topic if absent; returns the config and whether it was created.
    pub fn get_or_create(&self, topic: &str, queues: i32, perm: i32) -> (TopicConfig, bool) {
        let mut t = lock(&self.table);
        if let Some(tc) = t.topic_config_table.get(topic) {
            return (tc.clone(), false);
        }
        let tc = new_topic(topic, queues, perm);
        t.topic_config_table.insert(topic.to_owned(), tc.clone());
        t.data_version.next_version();
        self.persist_locked(&t);
        (tc, true)
    }

    /// Replaces the whole table (a slave copying its master); returns whether it changed.
    pub fn replace_all(&self, table: TopicConfigTable) -> bool {
        let mut t = lock(&self.table);
        if t.topic_config_table == table.topic_config_table {
            return false;
        }
        *t = table;
        self.persist_locked(&t);
        true
    }

    /// Deletes a topic; returns whether it existed.
    pub fn delete(&self, topic: &str) -> bool {
        let mut t = lock(&self.table);
        let existed = t.topic_config_table.remove(topic).is_some();
        if existed {
            t.data_version.next_version();
            self.persist_locked(&t);
        }
        existed
    }

    fn persist_locked(&self, t: &TopicConfigTable) {
        if let Err(e) = metadata::persist(&self.path, t) {
            warn!(error = %e, "could not persist topics.json");
        }
    }
}

/// Subscription groups (`subscriptionGroup.json`), and which of them a heartbeat
/// created (`autoCreateSubscriptionGroup`), kept in `autoCreatedGroups.json` beside it
/// with their creation times: only those may expire.
#[derive(Debug)]
pub struct GroupManager {
    path: PathBuf,
    table: Mutex<SubscriptionGroupTable>,
    default_retry_max: i32,
    auto: Mutex<BTreeMap<String, i64>>,
}

/// `autoCreatedGroups.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct AutoCreated {
    /// Group → creation time (ms).
    groups: BTreeMap<String, i64>,
}

impl GroupManager {
    /// Loads `subscriptionGroup.json` (or its `.bak`); new groups get `retry_max` retries.
    ///
    /// # Errors
    /// Both copies unreadable, without `repair`.
    pub fn load(path: PathBuf, retry_max: i32, repair: bool) -> Result<Self, StoreError> {
        let table: SubscriptionGroupTable =
            metadata::load_checked(&path, repair, metadata::Salvage::Entries)?;
        // A missing or unreadable list only means nothing expires (logged).
        let auto_path = path.with_file_name(AUTO_CREATED_FILE);
        let auto = match std::fs::read(&auto_path) {
            Ok(bytes) => serde_json::from_slice::<AutoCreated>(&bytes)
                .map(|a| a.groups)
                .unwrap_or_else(|e| {
                    warn!(path = %auto_path.display(), error = %e, "auto-created group list unreadable; no group will expire until they are created again");
                    BTreeMap::new()
                }),
            Err(_) => BTreeMap::new(),
        };
        Ok(GroupManager {
            path,
            table: Mutex::new(table),
            default_retry_max: retry_max,
            auto: Mutex::new(auto),
        })
    }

    /// The configs of `groups`; missing ones are created with defaults (and remembered
    /// as auto-created) when `create` is set, and the files persisted once.
    pub fn get_many(&self, groups: &[&str], create: bool) -> Vec<SubscriptionGroupConfig> {
        let mut t = lock(&self.table);
        let mut out = Vec::with_capacity(groups.len());
        let mut created = Vec::new();
        for group in groups {
            if let Some(g) = t.subscription_group_table.get(*group) {
                out.push(g.clone());
                continue;
            }
            if !create {
                continue;
            }
            let g = SubscriptionGroupConfig {
                group_name: (*group).to_owned(),
                retry_max_times: self.default_retry_max,
                ..SubscriptionGroupConfig::default()
            };
            t.subscription_group_table
                .insert((*group).to_owned(), g.clone());
            created.push((*group).to_owned());
            out.push(g);
        }
        if created.is_empty() {
            return out;
        }
        t.data_version.next_version();
        let snapshot = t.clone();
        drop(t);
        self.persist(&snapshot);
        let now = crate::store::now_ms();
        self.change_auto(|a| {
            for g in created {
                a.insert(g, now);
            }
            true
        });
        out
    }

    /// The groups a heartbeat created and nobody has configured since.
    pub fn auto_created(&self) -> Vec<String> {
        lock(&self.auto).keys().cloned().collect()
    }

    /// Applies `f` to the auto-created list and persists it when `f` says it changed.
    fn change_auto(&self, f: impl FnOnce(&mut BTreeMap<String, i64>) -> bool) {
        let mut a = lock(&self.auto);
        if !f(&mut a) {
            return;
        }
        let file = AutoCreated { groups: a.clone() };
        drop(a);
        let path = self.path.with_file_name(AUTO_CREATED_FILE);
        if let Err(e) = metadata::persist(&path, &file) {
            warn!(error = %e, "could not persist {AUTO_CREATED_FILE}");
        }
    }

    /// Replaces the whole table (a slave copying its master).
    pub fn replace_all(&self, table: SubscriptionGroupTable) {
        let mut t = lock(&self.table);
        if t.subscription_group_table == table.subscription_group_table {
            return;
        }
        *t = table;
        let snapshot = t.clone();
        drop(t);
        self.persist(&snapshot);
    }

    /// Creates or replaces a group (an administrator's: it no longer expires).
    pub fn upsert(&self, g: SubscriptionGroupConfig) {
        self.change_auto(|a| a.remove(&g.group_name).is_some());
        let mut t = lock(&self.table);
        t.subscription_group_table.insert(g.group_name.clone(), g);
        t.data_version.next_version();
        let snapshot = t.clone();
        drop(t);
        self.persist(&snapshot);
    }

    /// The whole table.
    pub fn snapshot(&self) -> SubscriptionGroupTable {
        lock(&self.table).clone()
    }

    /// Deletes a group (DELETE_SUBSCRIPTIONGROUP); whether it existed.
    pub fn delete(&self, group: &str) -> bool {
        self.change_auto(|a| a.remove(group).is_some());
        let mut t = lock(&self.table);
        let existed = t.subscription_group_table.remove(group).is_some();
        if existed {
            t.data_version.next_version();
            let snapshot = t.clone();
            drop(t);
            self.persist(&snapshot);
        }
        existed
    }

    fn persist(&self, t: &SubscriptionGroupTable) {
        if let Err(e) = metadata::persist(&self.path, t) {
            warn!(error = %e, "could not persist subscriptionGroup.json");
        }
    }
}

/// Where the auto-created groups are listed, beside `subscriptionGroup.json`.
pub const AUTO_CREATED_FILE: &str = "autoCreatedGroups.json";

/// Consumer offsets (`consumerOffset.json`), persisted periodically and at shutdown.
#[derive(Debug)]
pub struct OffsetManager {
    path: PathBuf,
    table: Mutex<ConsumerOffsetTable>,
}

impl OffsetManager {
    /// Loads `consumerOffset.json` (or its `.bak`); a malformed queue entry loses only
    /// itself.
    ///
    /// # Errors
    /// Both copies unreadable, without `repair`.
    pub fn load(path: PathBuf, repair: bool) -> Result<Self, StoreError> {
        let table: ConsumerOffsetTable =
            metadata::load_checked(&path, repair, metadata::Salvage::Nested)?;
        Ok(OffsetManager {
            path,
            table: Mutex::new(table),
        })
    }

    fn key(topic: &str, group: &str) -> String {
        format!("{topic}@{group}")
    }

    /// The committed offset of a group on a queue.
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        lock(&self.table)
            .offset_table
            .get(&Self::key(topic, group))?
            .get(&queue_id)
            .copied()
    }

    /// Commits an offset.
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        lock(&self.table)
            .offset_table
            .entry(Self::key(topic, group))
            .or_default()
            .insert(queue_id, offset);
    }

    /// Every offset of a group: topic → queue → offset.
    pub fn group_offsets(&self, group: &str) -> BTreeMap<String, BTreeMap<i32, i64>> {
        let suffix = format!("@{group}");
        lock(&self.table)
            .offset_table
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix(&suffix)?.to_owned(), v.clone())))
            .collect()
    }

    /// The whole table (GET_ALL_CONSUMER_OFFSET, slave sync).
    pub fn snapshot(&self) -> ConsumerOffsetTable {
        lock(&self.table).clone()
    }

    /// Replaces the whole table (a slave copying its master).
    pub fn replace_all(&self, table: ConsumerOffsetTable) {
        *lock(&self.table) = table;
    }

    /// Drops every offset of a group.
    pub fn delete_group(&self, group: &str) {
        let suffix = format!("@{group}");
        lock(&self.table)
            .offset_table
            .retain(|k, _| !k.ends_with(&suffix));
    }

    /// Copies a group's offsets on a topic to another group (CLONE_GROUP_OFFSET);
    /// whether there was anything to copy.
    pub fn clone_offsets(&self, src: &str, dest: &str, topic: &str) -> bool {
        let mut t = lock(&self.table);
        let Some(q) = t.offset_table.get(&Self::key(topic, src)).cloned() else {
            return false;
        };
        t.offset_table.insert(Self::key(topic, dest), q);
        true
    }

    /// The groups with offsets on a topic.
    pub fn groups_of_topic(&self, topic: &str) -> Vec<String> {
        let prefix = format!("{topic}@");
        lock(&self.table)
            .offset_table
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// Drops every offset on a topic.
    pub fn delete_topic(&self, topic: &str) {
        let prefix = format!("{topic}@");
        lock(&self.table)
            .offset_table
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// Writes the table to disk.
    pub fn persist(&self) {
        let snapshot = lock(&self.table).clone();
        if let Err(e) = metadata::persist(&self.path, &snapshot) {
            warn!(error = %e, "could not persist consumerOffset.json");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic("Orders_1-%RETRY%g|x").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("a b").unwrap_err().contains('`'));
        assert!(validate_topic(&"x".repeat(128)).is_err());
    }

    #[test]
    fn offsets_and_topics_persist() {
        let dir = tempfile::tempdir().unwrap();
        let o = OffsetManager::load(dir.path().join("consumerOffset.json"), false).unwrap();
        o.commit("g", "T", 1, 42);
        o.persist();
        let o = OffsetManager::load(dir.path().join("consumerOffset.json"), false).unwrap();
        assert_eq!(o.query("g", "T", 1), Some(42));
        assert_eq!(o.group_offsets("g")["T"][&1], 42);
        let t = TopicManager::load(dir.path().join("topics.json"), false).unwrap();
        assert!(t.get_or_create("T", 4, PERM_RW).1);
        assert!(!t.get_or_create("T", 8, PERM_RW).1);
        let t = TopicManager::load(dir.path().join("topics.json"), false).unwrap();
        assert_eq!(t.get("T").unwrap().write_queue_nums, 4);
    }
}
