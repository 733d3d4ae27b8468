//! Queue locks for orderly consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ): a queue is held by
//! one client of a group at a time; a lock not renewed for 60 s expires; a lock held by
//! another live client is refused; a client's locks go when it unregisters or its
//! connection closes.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `rocketmq.broker.rebalance.lockMaxLiveTime`.
pub const LOCK_MAX_LIVE: Duration = Duration::from_secs(60);

/// `MessageQueue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker_name: String,
    /// Queue id.
    pub queue_id: i32,
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequest {
    /// Group.
    pub consumer_group: String,
    /// Requesting client.
    pub client_id: String,
    /// Only this broker's queues.
    pub only_this_broker: bool,
    /// Queues to lock or unlock.
    pub mq_set: Vec<MessageQueue>,
}

/// LOCK_BATCH_MQ response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchResponse {
    /// The queues now held by the requester.
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

#[derive(Debug)]
struct Held {
    client_id: String,
    renewed: Instant,
}

/// The lock table: group → queue → holder.
#[derive(Debug, Default)]
pub struct QueueLocks {
    table: Mutex<HashMap<String, HashMap<MessageQueue, Held>>>,
}

impl QueueLocks {
    /// Locks (or renews) what it can for `client_id`; returns the queues it now holds.
    pub fn lock_batch(
        &self,
        group: &str,
        client_id: &str,
        mqs: &[MessageQueue],
        max_live: Duration,
    ) -> Vec<MessageQueue> {
        let mut t = lock(&self.table);
        let g = t.entry(group.to_owned()).or_default();
        let now = Instant::now();
        let mut ok = Vec::new();
        for mq in mqs {
            let grant = match g.get(mq) {
                None => true,
                Some(h) => h.client_id == client_id || now.duration_since(h.renewed) > max_live,
            };
            if grant {
                g.insert(
                    mq.clone(),
                    Held {
                        client_id: client_id.to_owned(),
                        renewed: now,
                    },
                );
                ok.push(mq.clone());
            }
        }
        ok
    }

    /// Releases the given queues if `client_id` holds them.
    pub fn unlock_batch(&self, group: &str, client_id: &str, mqs: &[MessageQueue]) {
        let mut t = lock(&self.table);
        if let Some(g) = t.get_mut(group) {
            for mq in mqs {
                if g.get(mq).is_some_and(|h| h.client_id == client_id) {
                    g.remove(mq);
                }
            }
        }
    }

    /// Releases every lock of a client (unregistered or disconnected).
    pub fn unlock_client(&self, client_id: &str) {
        for g in lock(&self.table).values_mut() {
            g.retain(|_, h| h.client_id != client_id);
        }
    }

    /// Whether a group holds any unexpired lock (orderly groups are recognised this way).
    pub fn group_is_locking(&self, group: &str) -> bool {
        lock(&self.table)
            .get(group)
            .is_some_and(|g| g.values().any(|h| h.renewed.elapsed() <= LOCK_MAX_LIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: q,
        }
    }

    #[test]
    fn one_holder_expiry_and_release() {
        let l = QueueLocks::default();
        assert_eq!(
            l.lock_batch("g", "c1", &[mq(0), mq(1)], LOCK_MAX_LIVE)
                .len(),
            2
        );
        // Held by another live client: refused; renewal by the holder: granted.
        assert_eq!(
            l.lock_batch("g", "c2", &[mq(0), mq(2)], LOCK_MAX_LIVE),
            vec![mq(2)]
        );
        assert_eq!(
            l.lock_batch("g", "c1", &[mq(0)], LOCK_MAX_LIVE),
            vec![mq(0)]
        );
        // Another group is independent.
        assert_eq!(l.lock_batch("h", "c2", &[mq(0)], LOCK_MAX_LIVE).len(), 1);
        // Expired locks can be taken over.
        assert_eq!(
            l.lock_batch("g", "c2", &[mq(1)], Duration::ZERO),
            vec![mq(1)]
        );
        l.unlock_batch("g", "c2", &[mq(0)]);
        assert!(l.lock_batch("g", "c2", &[mq(0)], LOCK_MAX_LIVE).is_empty());
        l.unlock_client("c1");
        assert_eq!(
            l.lock_batch("g", "c2", &[mq(0)], LOCK_MAX_LIVE),
            vec![mq(0)]
        );
        assert!(l.group_is_locking("g"));
    }

    #[test]
    fn bodies_match_the_fact_sheet() {
        let r: LockBatchRequest = crate::protocol::parse_body(br#"{"consumerGroup":"g","clientId":"10.0.0.5@1234","onlyThisBroker":false,"mqSet":[{"brokerName":"broker-a","queueId":0,"topic":"T"}]}"#).unwrap();
        assert_eq!(r.mq_set[0].broker_name, "broker-a");
        let out = serde_json::to_string(&LockBatchResponse {
            lock_ok_mq_set: r.mq_set,
        })
        .unwrap();
        assert_eq!(
            out,
            r#"{"lockOKMQSet":[{"topic":"T","brokerName":"broker-a","queueId":0}]}"#
        );
    }
}
