//! Consumers: heartbeats and client bookkeeping, consumer lists, orderly queue locks,
//! committed offsets, and send-back of failed messages to `%RETRY%` / `%DLQ%`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{fail, ok, Broker};
use super::{locks, meta, schedule, unsupported};
use crate::protocol::{parse_body, to_body, ConsumerIdList, HeartbeatData};
use crate::remoting::codes::{request, response};
use crate::remoting::Connection;
use crate::remoting::{HeaderError, RemotingCommand};
use crate::store::{MessageToStore, StoreError};

/// The header of QUERY_CONSUMER_OFFSET and UPDATE_CONSUMER_OFFSET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOffsetHeader {
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `topic`.
    pub topic: String,
    /// `queueId`.
    pub queue_id: i32,
    /// `commitOffset` (updates only; 0 for queries).
    pub commit_offset: i64,
}

impl ConsumerOffsetHeader {
    /// Reads the header; `update` requires `commitOffset`.
    ///
    /// # Errors
    /// A missing field; a field that is not a number.
    pub fn parse(req: &RemotingCommand, update: bool) -> Result<Self, HeaderError> {
        Ok(ConsumerOffsetHeader {
            consumer_group: req.ext_required("consumerGroup")?.to_owned(),
            topic: req.ext_required("topic")?.to_owned(),
            queue_id: req.ext_num("queueId")?,
            commit_offset: if update {
                req.ext_num("commitOffset")?
            } else {
                0
            },
        })
    }
}

/// The header of CONSUMER_SEND_MSG_BACK (`ConsumerSendMsgBackRequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBackHeader {
    /// `offset`: the failed message's physical offset.
    pub offset: u64,
    /// `group`.
    pub group: String,
    /// `delayLevel` (0: `3 + reconsumeTimes`; −1: straight to the DLQ).
    pub delay_level: i32,
    /// `maxReconsumeTimes` (−1 when absent: the broker's).
    pub max_reconsume_times: i32,
}

impl SendBackHeader {
    /// Reads the header.
    ///
    /// # Errors
    /// A missing offset or group; a field that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<Self, HeaderError> {
        Ok(SendBackHeader {
            offset: req.ext_num("offset")?,
            group: req.ext_required("group")?.to_owned(),
            delay_level: req.ext_num_opt("delayLevel")?.unwrap_or(0),
            max_reconsume_times: req.ext_num_opt("maxReconsumeTimes")?.unwrap_or(-1),
        })
    }
}

impl Broker {
    pub(super) fn heartbeat(
        &self,
        conn: &Arc<Connection>,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        let hb: HeartbeatData = match parse_body(&req.body_bytes()) {
            Ok(hb) => {
                debug!(body = %String::from_utf8_lossy(&req.body_bytes()), "heartbeat");
                hb
            }
            Err(e) => {
                warn!(
                    error = %e,
                    body = %String::from_utf8_lossy(&req.body_bytes()),
                    "heartbeat refused: its body cannot be read"
                );
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("bad heartbeat body: {e}"),
                );
            }
        };
        // Each consumer group may create a retry topic and a subscription group: one
        // heartbeat naming thousands is refused rather than turned into metadata.
        let groups = hb.consumer_data_set.len() + hb.producer_data_set.len();
        let subscriptions: usize = hb
            .consumer_data_set
            .iter()
            .map(|cd| cd.subscription_data_set.len())
            .sum();
        let max = self.config.heartbeat_max_groups;
        if groups > max || subscriptions > max {
            warn!(client = %hb.client_id, groups, subscriptions, max, "heartbeat refused: too many groups or subscriptions");
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("heartbeat names {groups} groups and {subscriptions} subscriptions; at most {max} of each (heartbeatMaxGroups)"),
            );
        }
        // As RocketMQ: a consumer group's retry topic is created only for a group that
        // exists (or is auto-created here, `autoCreateSubscriptionGroup`), with the
        // group's `retryQueueNums`; groups and topics are each persisted once.
        let names: Vec<&str> = hb
            .consumer_data_set
            .iter()
            .map(|cd| cd.group_name.as_str())
            .filter(|g| !g.is_empty())
            .collect();
        let create = self.runtime.auto_create_group.load(Ordering::Relaxed);
        let retry: Vec<(String, i32)> = self
            .groups
            .get_many(&names, create)
            .into_iter()
            .map(|g| {
                (
                    format!("%RETRY%{}", g.group_name),
                    g.retry_queue_nums.max(1),
                )
            })
            .filter(|(t, _)| meta::validate_topic(t).is_ok())
            .collect();
        if self.topics.create_missing(&retry, meta::PERM_RW) > 0 {
            self.topics_changed();
        }
        for g in self.clients.heartbeat(conn, &hb) {
            self.clients.notify_changed(&g);
        }
        ok(req)
    }

    /// Deletes the auto-created subscription groups (see [`meta::GroupManager`]) that
    /// have had no consumer online for `expiry` (counted in `idle_since`, from when this
    /// broker first saw them without one), never committed an offset here, hold nothing
    /// in their retry topic and have no DLQ topic — with their retry topic. Nothing a
    /// consumer could come back for is removed: a returning consumer's heartbeat
    /// creates both again. Masters only (slaves copy the master's tables). Returns the
    /// groups deleted.
    pub(super) fn expire_auto_created_groups(
        &self,
        idle_since: &mut std::collections::HashMap<String, std::time::Instant>,
        expiry: std::time::Duration,
    ) -> Vec<String> {
        let auto = self.groups.auto_created();
        idle_since.retain(|g, _| auto.contains(g));
        if !self.role.is_master() {
            return Vec::new();
        }
        let now = std::time::Instant::now();
        let mut expired = Vec::new();
        for g in auto {
            if !self.clients.consumer_ids(&g).is_empty() {
                idle_since.remove(&g);
                continue;
            }
            let since = *idle_since.entry(g.clone()).or_insert(now);
            if now.duration_since(since) < expiry {
                continue;
            }
            let retry = format!("%RETRY%{g}");
            let retry_holds = self.topics.get(&retry).is_some_and(|tc| {
                (0..tc.write_queue_nums.max(tc.read_queue_nums))
                    .any(|q| self.store.max_offset_in_queue(&retry, q) > 0)
            });
            let dlq = self.topics.get(&format!("%DLQ%{g}")).is_some();
            if retry_holds || dlq || !self.offsets.group_offsets(&g).is_empty() {
                continue;
            }
            // The retry topic first: whoever sees the group gone sees its topic gone.
            self.remove_topic(&retry);
            self.groups.delete(&g);
            idle_since.remove(&g);
            info!(group = %g, idle_secs = expiry.as_secs(), "auto-created subscription group expired with its retry topic (no consumer, no offsets, no retried messages)");
            expired.push(g);
        }
        expired
    }

    /// UNREGISTER_CLIENT: forgets the client's groups and releases its queue locks.
    pub(super) fn unregister_client(&self, req: &RemotingCommand) -> RemotingCommand {
        if let Some(id) = req.ext("clientID") {
            self.locks.unlock_client(id);
        }
        let changed = self.clients.unregister(
            req.ext("clientID").unwrap_or(""),
            req.ext("consumerGroup"),
            req.ext("producerGroup"),
        );
        for g in changed {
            self.clients.notify_changed(&g);
        }
        ok(req)
    }

    /// CHECK_CLIENT_CONFIG: a consumer asks, before it starts, whether the broker can
    /// serve its subscription. Only tag subscriptions can be (no `enablePropertyFilter`);
    /// a body that cannot be read is answered SUCCESS, as the Java broker does.
    pub(super) fn check_client_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let sub = serde_json::from_slice::<serde_json::Value>(&req.body_bytes())
            .ok()
            .and_then(|b| b.get("subscriptionData").cloned());
        let field = |k: &str| {
            sub.as_ref()
                .and_then(|s| s.get(k)?.as_str().map(str::to_owned))
        };
        let kind = field("expressionType");
        if unsupported::is_tag_type(kind.as_deref()) {
            return ok(req);
        }
        let expr = field("subString").unwrap_or_default();
        match self.compile_selector(req, kind.as_deref().unwrap_or_default(), &expr) {
            Ok(_) => ok(req),
            Err(refused) => refused,
        }
    }

    /// GET_CONSUMER_LIST_BY_GROUP.
    pub(super) fn consumer_list(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.ext_required("consumerGroup") {
            Ok(g) => {
                let ids = self.clients.consumer_ids(g);
                if ids.is_empty() {
                    fail(
                        req,
                        response::SYSTEM_ERROR,
                        format!("no consumer in group {g}"),
                    )
                } else {
                    ok(req).with_body(to_body(&ConsumerIdList {
                        consumer_id_list: ids,
                    }))
                }
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    pub(super) fn lock_batch(&self, req: &RemotingCommand) -> RemotingCommand {
        let body: locks::LockBatchRequest = match parse_body(&req.body_bytes()) {
            Ok(b) => b,
            Err(e) => return fail(req, response::SYSTEM_ERROR, format!("bad lock body: {e}")),
        };
        if req.code == request::UNLOCK_BATCH_MQ {
            self.locks
                .unlock_batch(&body.consumer_group, &body.client_id, &body.mq_set);
            return ok(req);
        }
        let held = self.locks.lock_batch(
            &body.consumer_group,
            &body.client_id,
            &body.mq_set,
            locks::LOCK_MAX_LIVE,
        );
        ok(req).with_body(to_body(&locks::LockBatchResponse {
            lock_ok_mq_set: held,
        }))
    }

    pub(super) fn query_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let h = match ConsumerOffsetHeader::parse(req, false) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let (group, topic, queue_id) = (h.consumer_group.as_str(), h.topic.as_str(), h.queue_id);
        match self.offsets.query(group, topic, queue_id) {
            Some(o) if o >= 0 => ok(req).with_ext("offset", o),
            _ => {
                // RocketMQ: a new group on a queue that still starts at 0 starts there.
                let zero_ok = req.ext_bool("setZeroIfNotFound") != Some(false);
                if zero_ok && self.store.min_offset_in_queue(topic, queue_id) <= 0 {
                    ok(req).with_ext("offset", 0)
                } else {
                    fail(
                        req,
                        response::QUERY_NOT_FOUND,
                        "Not found, maybe this group consumer boot first",
                    )
                }
            }
        }
    }

    pub(super) fn update_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        match ConsumerOffsetHeader::parse(req, true) {
            // As RocketMQ 5: offsets only for topics that exist (commits for made-up
            // topics grew consumerOffset.json without bound).
            Ok(h) if self.topics.get(&h.topic).is_none() => fail(
                req,
                response::TOPIC_NOT_EXIST,
                format!("Topic {} not exist!", h.topic),
            ),
            Ok(h) => {
                if self.is_master() {
                    self.offsets
                        .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
                }
                ok(req)
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// CONSUMER_SEND_MSG_BACK: re-store a failed message in `%RETRY%<group>` with a delay
    /// level (`3 + reconsumeTimes` unless the client asks for one), or in `%DLQ%<group>`
    /// once `reconsumeTimes` reaches the maximum (or the client asks with level −1).
    pub(super) async fn send_back(&self, req: &RemotingCommand) -> RemotingCommand {
        if let Some(refused) = self.refuse_writes(req) {
            return refused;
        }
        let SendBackHeader {
            offset,
            group,
            delay_level,
            max_reconsume_times: max_times,
        } = match SendBackHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(rec) = self.store.read_message(offset) else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("no message at offset {offset}"),
            );
        };
        let m = match crate::store::decode_record(&rec) {
            Ok(m) => m,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let max_times = if max_times >= 0 {
            max_times
        } else {
            self.config.max_reconsume_times
        };
        let mut props = crate::store::parse_properties(&m.properties);
        let origin_topic = req
            .ext("originTopic")
            .map(str::to_owned)
            .unwrap_or_else(|| m.topic.clone());
        props
            .entry("RETRY_TOPIC".into())
            .or_insert(origin_topic.clone());
        let origin_id = req
            .ext("originMsgId")
            .map(str::to_owned)
            .or_else(|| props.get("UNIQ_KEY").cloned())
            .unwrap_or_default();
        props
            .entry("ORIGIN_MESSAGE_ID".into())
            .or_insert(origin_id.clone());
        let times = m.reconsume_times;
        let to_dlq = times >= max_times || delay_level < 0;
        let topic = if to_dlq {
            props.remove(schedule::prop::DELAY);
            props.insert("DLQ_ORIGIN_TOPIC".into(), origin_topic);
            props.insert("DLQ_ORIGIN_MESSAGE_ID".into(), origin_id);
            format!("%DLQ%{group}")
        } else {
            let level = if delay_level == 0 {
                3 + times
            } else {
                delay_level
            };
            props.insert(schedule::prop::DELAY.into(), level.to_string());
            format!("%RETRY%{group}")
        };
        props.insert("RECONSUME_TIME".into(), (times + 1).to_string());
        if let Err(e) = meta::validate_topic(&topic) {
            return fail(req, response::SYSTEM_ERROR, e);
        }
        let (_, created) = self.topics.get_or_create(&topic, 1, meta::PERM_RW);
        if created {
            info!(topic = %topic, "retry/DLQ topic created");
            self.topics_changed();
        }
        let mut msg = MessageToStore {
            topic,
            queue_id: 0,
            flag: m.flag,
            sys_flag: m.sys_flag,
            born_timestamp: m.born_timestamp,
            born_host: m.born_host,
            store_host: self.store_host,
            reconsume_times: times + 1,
            prepared_transaction_offset: 0,
            body: m.body.clone(),
            properties: crate::store::encode_properties(
                props.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        };
        schedule::apply_delay(&mut msg, self.store.delay_levels_ms().len());
        let sndbck_key = format!("{}@{group}", msg.topic);
        match self.store.put_messages(std::slice::from_ref(&msg)).await {
            Ok(_) | Err(StoreError::FlushTimeout { .. }) => {
                self.stats_items
                    .add(super::stats_items::SNDBCK_PUT_NUMS, &sndbck_key, 1);
                ok(req)
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }
}
