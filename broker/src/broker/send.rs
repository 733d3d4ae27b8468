//! Sends: SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE. The header names the topic
//! and queue; the topic is resolved (or auto-created), the records appended, then the
//! answer waits for the flush (SYNC_FLUSH) and a slave (SYNC_MASTER) together.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{fail, Broker};
use super::{meta, schedule, transaction, unsupported, BrokerRole};
use crate::protocol::batch::decode_batch;
use crate::protocol::msg_id::offset_msg_id;
use crate::remoting::codes::{request, response};
use crate::remoting::Connection;
use crate::remoting::{HeaderError, RemotingCommand};
use crate::store::metadata::TopicConfig;
use crate::store::{find_property, MessageToStore, StoreError};

/// The property naming a message's cluster.
pub const CLUSTER: &str = "CLUSTER";

/// A decoded send header (V1 long names or V2 letters).
#[derive(Debug, Clone)]
pub struct SendHeader {
    pub producer_group: String,
    pub topic: String,
    pub default_topic_queue_nums: i32,
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: String,
    pub reconsume_times: i32,
    /// `batch` (V2 `m`): the body is a batch whatever the request code, as RocketMQ
    /// reads it (the C++ client sends batches as SEND_MESSAGE with `batch=1`).
    pub batch: bool,
}

impl SendHeader {
    /// Reads the header of SEND_MESSAGE and SEND_REPLY_MESSAGE (long names),
    /// SEND_MESSAGE_V2, SEND_REPLY_MESSAGE_V2 and SEND_BATCH_MESSAGE (one-letter names).
    ///
    /// # Errors
    /// A missing `topic` or `queueId`, a field that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<SendHeader, HeaderError> {
        let v1 = matches!(
            req.code,
            request::SEND_MESSAGE | request::SEND_REPLY_MESSAGE
        );
        let k = |long: &'static str, short: &'static str| if v1 { long } else { short };
        Ok(SendHeader {
            producer_group: req.ext(k("producerGroup", "a")).unwrap_or("").to_owned(),
            topic: req.ext_required(k("topic", "b"))?.to_owned(),
            default_topic_queue_nums: req
                .ext_num_opt(k("defaultTopicQueueNums", "d"))?
                .unwrap_or(4),
            queue_id: req.ext_num(k("queueId", "e"))?,
            sys_flag: req.ext_num_opt(k("sysFlag", "f"))?.unwrap_or(0),
            born_timestamp: req.ext_num_opt(k("bornTimestamp", "g"))?.unwrap_or(0),
            flag: req.ext_num_opt(k("flag", "h"))?.unwrap_or(0),
            properties: req.ext(k("properties", "i")).unwrap_or("").to_owned(),
            reconsume_times: req.ext_num_opt(k("reconsumeTimes", "j"))?.unwrap_or(0),
            // The C++ client writes `batch=1`; Java's broker reads that as false and
            // stores the whole batch as one message (rocketmq-client-cpp #363, #447).
            // Here it is a batch, as the client meant.
            batch: req.code == request::SEND_BATCH_MESSAGE
                || req
                    .ext(k("batch", "m"))
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v.trim() == "1"),
        })
    }
}

impl Broker {
    pub(super) fn resolve_topic_for_send(
        &self,
        h: &SendHeader,
    ) -> Result<TopicConfig, (i32, String)> {
        if let Err(e) = meta::validate_topic(&h.topic) {
            return Err((response::MESSAGE_ILLEGAL, e));
        }
        if h.topic == meta::TBW102 {
            return Err((
                response::MESSAGE_ILLEGAL,
                "the default topic cannot take messages".into(),
            ));
        }
        if let Some(tc) = self.topics.get(&h.topic) {
            return Ok(tc);
        }
        let retry = h.topic.starts_with("%RETRY%") || h.topic.starts_with("%DLQ%");
        if !self.runtime.auto_create_topic.load(Ordering::Relaxed) && !retry {
            return Err((
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", h.topic),
            ));
        }
        let queues = if retry {
            1
        } else {
            h.default_topic_queue_nums
                .clamp(1, self.config.default_topic_queue_nums.max(1))
        };
        let (tc, created) = self.topics.get_or_create(&h.topic, queues, meta::PERM_RW);
        if created {
            info!(topic = %h.topic, queues, "topic auto-created");
            self.topics_changed();
        }
        Ok(tc)
    }

    /// Makes sure a topic a stored message moves to (a committed transaction, a due
    /// timer or delayed message) is in the topic table, so consumers can pull it: a
    /// promoted slave may not have copied it yet.
    pub(super) fn ensure_topic(&self, topic: &str, queue_id: i32) {
        if self.topics.get(topic).is_some() || meta::validate_topic(topic).is_err() {
            return;
        }
        let queues = (queue_id + 1).max(self.config.default_topic_queue_nums);
        let (_, created) = self.topics.get_or_create(topic, queues, meta::PERM_RW);
        if created {
            info!(topic, queues, "topic created for a message reaching it");
            self.topics_changed();
        }
    }

    /// Rewrites a 5.x timer message into the timer topic (or leaves it when its time
    /// has passed); the remark of a refusal.
    pub(super) fn schedule_timer(&self, m: &mut MessageToStore) -> Result<(), String> {
        let s = super::timer::Settings {
            precision_ms: self.config.timer_precision_ms,
            max_delay_sec: self.config.timer_max_delay_sec,
        };
        if let super::timer::Timing::Later(_) =
            super::timer::transform(m, crate::store::now_ms(), s)?
        {
            self.timers
                .counters
                .scheduled
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The answer to a write this broker does not take: a slave's, or (RocketMQ's
    /// wording, so the client moves on to another broker) one without write permission.
    pub(super) fn refuse_writes(&self, req: &RemotingCommand) -> Option<RemotingCommand> {
        if let Some(why) = self.raft_refusal() {
            return Some(fail(req, response::SERVICE_NOT_AVAILABLE, why));
        }
        if !self.is_master() {
            return Some(fail(
                req,
                response::SERVICE_NOT_AVAILABLE,
                "this broker is a slave and takes no writes",
            ));
        }
        if let Some(why) = self.role.superseded() {
            return Some(fail(
                req,
                response::SERVICE_NOT_AVAILABLE,
                format!("this master is fenced ({why}); send to the current master"),
            ));
        }
        if let Some(why) = self.ha.lease_problem() {
            return Some(fail(
                req,
                response::SERVICE_NOT_AVAILABLE,
                format!("this master takes no writes: {why}"),
            ));
        }
        if !self.runtime.writable() {
            return Some(fail(
                req,
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] sending message is forbidden",
                    self.config.broker_addr()
                ),
            ));
        }
        None
    }

    pub(super) async fn send(&self, conn: &Connection, req: &RemotingCommand) -> RemotingCommand {
        let started = std::time::Instant::now();
        let resp = self.send_inner(conn, req).await;
        self.metrics
            .send_latency
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    pub(super) async fn send_inner(
        &self,
        conn: &Connection,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        if let Some(refused) = self.refuse_writes(req) {
            return refused;
        }
        let h = match SendHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let tc = match self.resolve_topic_for_send(&h) {
            Ok(tc) => tc,
            Err((code, remark)) => return fail(req, code, remark),
        };
        if !crate::protocol::topic::is_writeable(tc.perm) {
            return fail(
                req,
                response::NO_PERMISSION,
                format!("topic {} is not writable", h.topic),
            );
        }
        let queue_id = if h.queue_id < 0 {
            (self.queue_picker.fetch_add(1, Ordering::Relaxed) % tc.write_queue_nums.max(1) as u64)
                as i32
        } else {
            h.queue_id
        };
        if queue_id >= tc.write_queue_nums.max(1) {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!(
                    "queueId {queue_id} is out of range for topic {} ({} queues)",
                    h.topic, tc.write_queue_nums
                ),
            );
        }
        let body = req.body_bytes();
        if body.len() > self.config.store.max_message_size {
            return fail(
                req,
                response::MESSAGE_ILLEGAL,
                format!(
                    "message body of {} bytes exceeds maxMessageSize {}",
                    body.len(),
                    self.config.store.max_message_size
                ),
            );
        }
        // As RocketMQ, every stored message names its cluster (request-reply replies
        // go to `<CLUSTER>_REPLY_TOPIC`).
        let cluster = |props: String| {
            if crate::store::find_property(&props, CLUSTER).is_some() {
                props
            } else {
                let mut p = props;
                if !p.is_empty() && !p.ends_with(crate::store::format::property::PROPERTY_SEPARATOR)
                {
                    p.push(crate::store::format::property::PROPERTY_SEPARATOR);
                }
                p.push_str(CLUSTER);
                p.push(crate::store::format::property::NAME_VALUE_SEPARATOR);
                p.push_str(&self.config.broker_cluster_name);
                p.push(crate::store::format::property::PROPERTY_SEPARATOR);
                p
            }
        };
        let template = MessageToStore {
            topic: h.topic.clone(),
            queue_id,
            flag: h.flag,
            sys_flag: h.sys_flag,
            born_timestamp: h.born_timestamp,
            born_host: conn.peer,
            store_host: self.store_host,
            reconsume_times: h.reconsume_times,
            prepared_transaction_offset: 0,
            body: Bytes::new(),
            properties: String::new(),
        };
        let mut msgs: Vec<MessageToStore> = if h.batch {
            let items = match decode_batch(body) {
                Ok(items) if !items.is_empty() => items,
                Ok(_) => return fail(req, response::MESSAGE_ILLEGAL, "empty batch"),
                Err(e) => return fail(req, response::MESSAGE_ILLEGAL, e),
            };
            items
                .into_iter()
                .map(|e| MessageToStore {
                    flag: e.flag,
                    body: e.body,
                    properties: cluster(e.properties + &h.properties),
                    ..template.clone()
                })
                .collect()
        } else {
            vec![MessageToStore {
                body,
                properties: cluster(h.properties.clone()),
                ..template
            }]
        };
        let batch = h.batch;
        let (mut half, mut timer) = (false, false);
        for m in &msgs {
            let t = unsupported::traits(&m.properties, m.sys_flag);
            if let Some(r) = t.refusal(
                self.config.reject_transaction_message,
                self.config.timer_wheel_enable,
                batch,
            ) {
                let (code, remark) = r.answer(&self.config.broker_ip1);
                return fail(req, code, remark);
            }
            // As in RocketMQ, a retry carrying a delay level is never a half message.
            half |= t.half && !(m.reconsume_times > 0 && t.delay_level);
            timer |= t.is_timer();
        }
        if half {
            // The timer (or delay level) applies when the transaction commits.
            for m in &mut msgs {
                transaction::to_half(m);
            }
        } else if timer {
            for m in &mut msgs {
                if let Err(remark) = self.schedule_timer(m) {
                    return fail(req, response::MESSAGE_ILLEGAL, remark);
                }
            }
        } else if !batch {
            for m in &mut msgs {
                schedule::apply_delay(m, self.store.delay_levels_ms().len());
            }
        }
        let uniq = (!batch)
            .then(|| find_property(&h.properties, "UNIQ_KEY").map(str::to_owned))
            .flatten();
        let appended = if half {
            self.transactions
                .counters
                .half
                .fetch_add(1, Ordering::Relaxed);
            self.transactions.append_half(&self.store, &msgs)
        } else {
            self.store.append_messages(&msgs)
        };
        let result = match appended {
            Ok(r) => r,
            Err(e @ StoreError::Message(_)) => return fail(req, response::MESSAGE_ILLEGAL, e),
            Err(e) => {
                warn!(error = %e, "append failed");
                return fail(
                    req,
                    response::SERVICE_NOT_AVAILABLE,
                    format!("service not available now: {e}"),
                );
            }
        };
        self.data_appended();
        let code = match self.await_acknowledged(&msgs, &result).await {
            // RocketMQ's answer when DLedger's quorum wait times out (OS_PAGECACHE_BUSY).
            Ok(response::SYSTEM_ERROR) => {
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    "[PC_SYNCHRONIZED]broker busy: a majority of the DLedger group did not \
                     confirm the message in time (it may still be stored); retry",
                )
            }
            Ok(code) => code,
            Err(e) => {
                warn!(error = %e, "send not acknowledged");
                return fail(
                    req,
                    response::SERVICE_NOT_AVAILABLE,
                    format!("service not available now: {e}"),
                );
            }
        };
        debug!(producer = %h.producer_group, topic = %h.topic, queue_id, "stored");
        let labels = vec![("topic".to_string(), h.topic.clone())];
        self.metrics
            .messages_in
            .get_or_create(&labels)
            .inc_by(msgs.len() as u64);
        self.throughput
            .put
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        {
            use super::stats_items::*;
            let bytes: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
            self.stats_items
                .add(TOPIC_PUT_NUMS, &h.topic, msgs.len() as u64);
            self.stats_items.add(TOPIC_PUT_SIZE, &h.topic, bytes);
            self.stats_items.add(
                BROKER_PUT_NUMS,
                &self.config.broker_cluster_name,
                msgs.len() as u64,
            );
        }
        self.metrics
            .bytes_in
            .get_or_create(&labels)
            .inc_by(msgs.iter().map(|m| m.body.len() as u64).sum());
        let ids: Vec<String> = result
            .physical_offsets
            .iter()
            .map(|p| offset_msg_id(self.store_host, *p))
            .collect();
        let mut resp = RemotingCommand::response_to(req, code)
            .with_ext("msgId", ids.join(","))
            .with_ext("queueId", queue_id)
            .with_ext("queueOffset", result.queue_offset);
        if let Some(u) = uniq {
            resp = resp.with_ext("transactionId", u);
        }
        resp
    }

    /// The second half of a send: the disk flush (SYNC_FLUSH) and, on a SYNC_MASTER, a
    /// slave's acknowledgement, awaited together. Returns the response code.
    pub(super) async fn await_acknowledged(
        &self,
        msgs: &[MessageToStore],
        result: &crate::store::PutResult,
    ) -> Result<i32, StoreError> {
        let sync_master = self.role.role() == BrokerRole::SyncMaster;
        let timeout = Duration::from_millis(self.config.store.sync_flush_timeout_ms.max(1));
        if let Some(committed) = self.wait_raft_commit(result.end_offset, timeout).await {
            // Raft mode: committed means a majority holds it, each member on disk under
            // SYNC_FLUSH (its log store syncs the CommitLog and the entry files before
            // it acknowledges, the leader's own acknowledgement included), so the send
            // waits on the quorum only, as in RocketMQ's DLedger mode; a separate
            // flush of the leader's CommitLog would sync the same bytes again.
            if self.store.generation() != result.generation {
                return Err(StoreError::NotMaster);
            }
            return Ok(if committed {
                response::SUCCESS
            } else {
                response::SYSTEM_ERROR
            });
        }
        let replicate = async {
            if sync_master && crate::store::wait_requested(msgs) {
                self.ha
                    .wait_for_slave(result.end_offset, result.generation, timeout)
                    .await
            } else {
                Ok(())
            }
        };
        let (flushed, replicated) = tokio::join!(self.store.await_durable(msgs, result), replicate);
        if self.store.generation() != result.generation {
            // Demoted (or cut) while the send waited: a flush or acknowledgement of its
            // offsets may be of bytes written since, so it is not acknowledged.
            return Err(StoreError::NotMaster);
        }
        match flushed {
            Ok(()) => {}
            Err(StoreError::FlushTimeout { .. }) => return Ok(response::FLUSH_DISK_TIMEOUT),
            Err(e) => return Err(e),
        }
        Ok(match replicated {
            Ok(()) => response::SUCCESS,
            Err(crate::ha::SyncError::SlaveNotAvailable) => response::SLAVE_NOT_AVAILABLE,
            Err(crate::ha::SyncError::Timeout) => response::FLUSH_SLAVE_TIMEOUT,
            // Not known to be replicated in any term: the producer retries (14 is in
            // every client's retry list); a duplicate is possible, a false ack is not.
            Err(crate::ha::SyncError::Superseded) => return Err(StoreError::NotMaster),
        })
    }
}
