//! Delayed delivery: messages with a `DELAY` level wait in `SCHEDULE_TOPIC_XXXX` (queue =
//! level − 1, ConsumeQueue tags code = delivery time); one task per level moves due
//! messages to their `REAL_TOPIC` / `REAL_QID`. Progress per level is kept in
//! `delayOffset.json` (persisted every second and at shutdown), so a restart neither
//! loses nor repeats delayed messages beyond at-least-once.

use crate::sync::lock;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use super::Broker;
use crate::store::metadata::{self, DelayOffsetTable};
use crate::store::{
    decode_record, encode_properties, now_ms, parse_properties, MessageToStore, StoredMessage,
    SCHEDULE_TOPIC,
};

/// Property names.
pub mod prop {
    /// Delay level.
    pub const DELAY: &str = "DELAY";
    /// Destination topic of a delayed or retried message.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    /// Destination queue of a delayed message.
    pub const REAL_QID: &str = "REAL_QID";
}

/// Longest idle sleep of a level's task: bounds the delivery lateness on an idle broker.
const TICK: Duration = Duration::from_millis(100);

/// `delayOffset.json`.
#[derive(Debug)]
pub struct DelayOffsets {
    path: PathBuf,
    table: Mutex<DelayOffsetTable>,
}

impl DelayOffsets {
    /// Loads the file (or its `.bak`).
    ///
    /// # Errors
    /// Both copies unreadable, without `repair`.
    pub fn load(path: PathBuf, repair: bool) -> Result<Self, crate::store::StoreError> {
        let table: DelayOffsetTable =
            metadata::load_checked(&path, repair, metadata::Salvage::Entries)?;
        Ok(DelayOffsets {
            path,
            table: Mutex::new(table),
        })
    }

    /// Next schedule-queue offset of a level.
    pub fn get(&self, level: i32) -> i64 {
        lock(&self.table)
            .offset_table
            .get(&level)
            .copied()
            .unwrap_or(0)
    }

    fn set(&self, level: i32, offset: i64) {
        lock(&self.table).offset_table.insert(level, offset);
    }

    /// The whole table.
    pub fn snapshot(&self) -> DelayOffsetTable {
        lock(&self.table).clone()
    }

    /// Replaces the whole table (a slave copying its master).
    pub fn replace_all(&self, table: DelayOffsetTable) {
        *lock(&self.table) = table;
    }

    /// Writes the file.
    pub fn persist(&self) {
        let t = self.snapshot();
        if let Err(e) = metadata::persist(&self.path, &t) {
            warn!(error = %e, "could not persist delayOffset.json");
        }
    }
}

/// Rewrites a message with a `DELAY` level (1-based, clamped to the highest level) into
/// the schedule topic; leaves others alone.
pub fn apply_delay(m: &mut MessageToStore, levels: usize) {
    let Some(level) = crate::store::find_property(&m.properties, prop::DELAY)
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return;
    };
    if level <= 0 || levels == 0 || m.topic == SCHEDULE_TOPIC {
        return;
    }
    let level = level.min(levels as i64) as i32;
    let mut props = parse_properties(&m.properties);
    props.insert(prop::REAL_TOPIC.into(), m.topic.clone());
    props.insert(prop::REAL_QID.into(), m.queue_id.to_string());
    props.insert(prop::DELAY.into(), level.to_string());
    m.properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    m.topic = SCHEDULE_TOPIC.into();
    m.queue_id = level - 1;
}

/// Starts one delivery task per level.
pub fn spawn(broker: &Arc<Broker>) -> Vec<tokio::task::JoinHandle<()>> {
    let levels = broker.store.delay_levels_ms().len() as i32;
    let mut tasks: Vec<_> = (1..=levels)
        .map(|level| tokio::spawn(run_level(Arc::clone(broker), level)))
        .collect();
    let b = Arc::clone(broker);
    tasks.push(tokio::spawn(async move {
        let mut last = b.delay_offsets.snapshot();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = b.delay_offsets.snapshot();
            if now != last {
                let b2 = Arc::clone(&b);
                let _ = tokio::task::spawn_blocking(move || b2.delay_offsets.persist()).await;
                last = now;
            }
        }
    }));
    tasks
}

async fn run_level(b: Arc<Broker>, level: i32) {
    loop {
        let wait = match deliver_due(&b, level).await {
            Ok(w) => w,
            Err(e) => {
                warn!(level, error = %e, "delayed delivery failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Delivers what is due on one level; returns how long to sleep.
async fn deliver_due(b: &Broker, level: i32) -> Result<Duration, String> {
    if !b.is_master() {
        // Slaves deliver nothing: the master does, and the slave copies its offsets.
        return Ok(Duration::from_secs(1));
    }
    let Some(cq) = b.store.consume_queue(SCHEDULE_TOPIC, level - 1) else {
        return Ok(TICK);
    };
    let mut off = b.delay_offsets.get(level).max(cq.min_offset());
    loop {
        let entries = cq.entries(off, 32);
        if entries.is_empty() {
            b.delay_offsets.set(level, off);
            return Ok(TICK);
        }
        for e in entries {
            let now = now_ms();
            if e.tags_code > now {
                b.delay_offsets.set(level, off);
                return Ok(Duration::from_millis((e.tags_code - now) as u64).min(TICK));
            }
            if let Some(rec) = u64::try_from(e.commitlog_offset)
                .ok()
                .and_then(|p| b.store.read_message(p))
            {
                deliver(b, &rec).await?;
            }
            off += 1;
            b.delay_offsets.set(level, off);
        }
    }
}

/// A delayed, timer or half message as it goes to its destination: topic and queue
/// from `REAL_TOPIC`/`REAL_QID`, those two and the properties in `drop` removed, `set`
/// added. `None` without a `REAL_TOPIC`.
#[must_use]
pub fn destination_of(
    m: &StoredMessage,
    drop: &[&str],
    set: &[(&str, String)],
) -> Option<MessageToStore> {
    let mut props = parse_properties(&m.properties);
    let topic = props.remove(prop::REAL_TOPIC)?;
    let queue_id = props
        .remove(prop::REAL_QID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    for k in drop {
        props.remove(*k);
    }
    for (k, v) in set {
        props.insert((*k).to_owned(), v.clone());
    }
    Some(MessageToStore {
        topic,
        queue_id,
        properties: encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ..m.to_store()
    })
}

async fn deliver(b: &Broker, rec: &bytes::Bytes) -> Result<(), String> {
    let m = decode_record(rec).map_err(|e| e.to_string())?;
    let Some(msg) = destination_of(&m, &[prop::DELAY], &[]) else {
        warn!("delayed message without REAL_TOPIC dropped");
        return Ok(());
    };
    let msg = MessageToStore {
        prepared_transaction_offset: 0,
        ..msg
    };
    b.ensure_topic(&msg.topic, msg.queue_id);
    b.store
        .put_messages(std::slice::from_ref(&msg))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_rewrites_into_the_schedule_topic() {
        let mut m = MessageToStore {
            topic: "T".into(),
            queue_id: 3,
            properties: encode_properties([("DELAY", "30"), ("TAGS", "A")]),
            ..MessageToStore::default()
        };
        apply_delay(&mut m, 18);
        assert_eq!((m.topic.as_str(), m.queue_id), (SCHEDULE_TOPIC, 17));
        let p = parse_properties(&m.properties);
        assert_eq!(p["REAL_TOPIC"], "T");
        assert_eq!(p["REAL_QID"], "3");
        assert_eq!(p["TAGS"], "A");
        let mut plain = MessageToStore {
            topic: "T".into(),
            properties: encode_properties([("DELAY", "0")]),
            ..MessageToStore::default()
        };
        apply_delay(&mut plain, 18);
        assert_eq!(plain.topic, "T");
    }
}
