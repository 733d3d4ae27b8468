//! The admin requests the rocketmq-dashboard and `mqadmin` send to a broker, each
//! answered as the Java broker answers it:
//!
//! | code | request |
//! |---|---|
//! | 351 | GET_TOPIC_CONFIG |
//! | 300 | QUERY_TOPIC_CONSUME_BY_WHO |
//! | 204 | GET_PRODUCER_CONNECTION_LIST |
//! | 207 | DELETE_SUBSCRIPTIONGROUP |
//! | 314 | CLONE_GROUP_OFFSET |
//! | 317 | GET_BROKER_CONSUME_STATS |
//! | 321 | QUERY_CONSUME_QUEUE |
//! | 307 | GET_CONSUMER_RUNNING_INFO (relayed to the client) |
//! | 309 | CONSUME_MESSAGE_DIRECTLY (relayed to the client) |
//! | 222 | INVOKE_BROKER_TO_RESET_OFFSET (RESET_CONSUMER_CLIENT_OFFSET, 220, to each consumer) |
//! | 315 | VIEW_BROKER_STATS_DATA ([`super::stats_items`]) |
//!
//! Plus the put/get rates and totals of GET_BROKER_RUNTIME_INFO ([`Throughput`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use super::{fail, ok, Broker};
use crate::protocol::stats;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;
use crate::sync::lock;

/// How long a relayed request waits for the client.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages put and got, with a one-second history for rates.
#[derive(Debug, Default)]
pub struct Throughput {
    /// Messages stored by sends.
    pub put: AtomicU64,
    /// Messages returned by pulls.
    pub got: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Throughput {
    /// Records a sample (called every second); keeps ten minutes.
    pub fn sample(&self) {
        let mut s = lock(&self.samples);
        s.push_back((
            Instant::now(),
            self.put.load(Ordering::Relaxed),
            self.got.load(Ordering::Relaxed),
        ));
        while s.len() > 601 {
            s.pop_front();
        }
    }

    /// Put and get rates over the last `window`.
    fn rate(&self, window: Duration) -> (f64, f64) {
        let s = lock(&self.samples);
        let Some(&(t1, p1, g1)) = s.back() else {
            return (0.0, 0.0);
        };
        let Some(&(t0, p0, g0)) = s.iter().find(|(t, _, _)| t1.duration_since(*t) <= window) else {
            return (0.0, 0.0);
        };
        let secs = t1.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        (
            p1.saturating_sub(p0) as f64 / secs,
            g1.saturating_sub(g0) as f64 / secs,
        )
    }

    /// RocketMQ's `putTps` and `getTransferedTps`: rates over 10 s, 1 min, 10 min.
    pub fn tps_strings(&self) -> (String, String) {
        let w = [10, 60, 600].map(|s| self.rate(Duration::from_secs(s)));
        (
            format!("{:.2} {:.2} {:.2}", w[0].0, w[1].0, w[2].0),
            format!("{:.2} {:.2} {:.2}", w[0].1, w[1].1, w[2].1),
        )
    }
}

impl Broker {
    /// Routes the requests of this module.
    pub(super) async fn ops(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.code {
            request::GET_TOPIC_CONFIG => self.topic_config(req),
            request::QUERY_TOPIC_CONSUME_BY_WHO => self.consumed_by_who(req),
            request::GET_PRODUCER_CONNECTION_LIST => self.producer_connections(req),
            request::DELETE_SUBSCRIPTIONGROUP => self.delete_group(req),
            request::CLONE_GROUP_OFFSET => self.clone_group_offset(req),
            request::GET_BROKER_CONSUME_STATS => self.broker_consume_stats(req),
            request::QUERY_CONSUME_QUEUE => self.query_consume_queue(req),
            request::GET_CONSUMER_RUNNING_INFO | request::CONSUME_MESSAGE_DIRECTLY => {
                self.relay_to_consumer(req).await
            }
            request::VIEW_BROKER_STATS_DATA => {
                let (name, key) = (
                    req.ext("statsName").unwrap_or(""),
                    req.ext("statsKey").unwrap_or(""),
                );
                match self.stats_items.view(name, key) {
                    Some(body) => ok(req).with_body(Bytes::from(body)),
                    None => fail(
                        req,
                        response::SYSTEM_ERROR,
                        format!("The stats <{name}> <{key}> not exist"),
                    ),
                }
            }
            _ => self.reset_offset(req),
        }
    }

    fn topic_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let topic = req.ext("topic").unwrap_or("");
        match self.topics.get(topic) {
            Some(tc) => ok(req).with_body(crate::protocol::to_body(&tc)),
            None => fail(
                req,
                response::TOPIC_NOT_EXIST,
                format!("No topic in this broker. topic: {topic}"),
            ),
        }
    }

    fn consumed_by_who(&self, req: &RemotingCommand) -> RemotingCommand {
        let topic = match req.ext_required("topic") {
            Ok(t) => t,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let groups: BTreeSet<String> = self
            .clients
            .groups_subscribing(topic)
            .into_iter()
            .chain(self.offsets.groups_of_topic(topic))
            .collect();
        ok(req).with_body(Bytes::from(json!({ "groupList": groups }).to_string()))
    }

    fn producer_connections(&self, req: &RemotingCommand) -> RemotingCommand {
        let group = req.ext("producerGroup").unwrap_or("");
        let members = self.clients.producer_view(group);
        if members.is_empty() {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("the producer group[{group}] not exist"),
            );
        }
        let set: Vec<_> = members
            .iter()
            .map(|(id, addr)| {
                json!({"clientId": id, "clientAddr": addr, "language": "OTHER", "version": 0})
            })
            .collect();
        ok(req).with_body(Bytes::from(json!({ "connectionSet": set }).to_string()))
    }

    fn delete_group(&self, req: &RemotingCommand) -> RemotingCommand {
        let group = match req.ext_required("groupName") {
            Ok(g) => g,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        self.groups.delete(group);
        if req.ext_bool("cleanOffset") == Some(true) {
            self.offsets.delete_group(group);
        }
        tracing::info!(group = %group, "subscription group deleted");
        self.topics_changed();
        ok(req)
    }

    fn clone_group_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let (src, dest) = match (req.ext_required("srcGroup"), req.ext_required("destGroup")) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) | (_, Err(e)) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let topics: Vec<String> = match req.ext("topic") {
            Some(t) if !t.trim().is_empty() => vec![t.to_owned()],
            _ => self.offsets.group_offsets(src).into_keys().collect(),
        };
        for t in topics {
            if self.topics.get(&t).is_some() {
                self.offsets.clone_offsets(src, dest, &t);
            }
        }
        ok(req)
    }

    /// `ConsumeStats` of one group on `topics` (every topic it has offsets for when
    /// empty), with its total lag.
    pub(super) fn consume_stats_of(&self, group: &str, topics: &[String]) -> (String, i64) {
        let mut queues = Vec::new();
        let mut diff = 0;
        let all: Vec<String>;
        let topics = if topics.is_empty() {
            all = self.offsets.group_offsets(group).into_keys().collect();
            &all
        } else {
            topics
        };
        for topic in topics {
            let Some(tc) = self.topics.get(topic) else {
                continue;
            };
            for q in 0..tc.write_queue_nums {
                let o = stats::OffsetWrapper {
                    broker_offset: self.store.max_offset_in_queue(topic, q),
                    consumer_offset: self.offsets.query(group, topic, q).unwrap_or(0),
                    last_timestamp: 0,
                };
                diff += (o.broker_offset - o.consumer_offset).max(0);
                queues.push((topic.as_str(), q, o));
            }
        }
        (
            stats::consume_stats_body(&self.config.broker_name, queues),
            diff,
        )
    }

    fn broker_consume_stats(&self, req: &RemotingCommand) -> RemotingCommand {
        let mut total = 0;
        let mut items = Vec::new();
        for group in self.clients.consumer_groups() {
            let (body, diff) = self.consume_stats_of(&group, &[]);
            total += diff;
            items.push(format!("{{{}:[{body}]}}", json!(group)));
        }
        let body = format!(
            "{{\"brokerAddr\":{},\"consumeStatsList\":[{}],\"totalDiff\":{total}}}",
            json!(self.config.broker_addr()),
            items.join(",")
        );
        ok(req).with_body(Bytes::from(body))
    }

    fn query_consume_queue(&self, req: &RemotingCommand) -> RemotingCommand {
        let parsed = (|| {
            Ok::<_, crate::remoting::HeaderError>((
                req.ext_required("topic")?.to_owned(),
                req.ext_num::<i32>("queueId")?,
                req.ext_num::<i64>("index")?,
                req.ext_num::<i64>("count")?,
            ))
        })();
        let (topic, queue_id, index, count) = match parsed {
            Ok(p) => p,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(cq) = self.store.consume_queue(&topic, queue_id) else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("{topic}-{queue_id} is not exist!"),
            );
        };
        let entries: Vec<_> = cq
            .entries(index, usize::try_from(count.clamp(0, 1000)).unwrap_or(0))
            .iter()
            .map(|e| {
                json!({
                    "physicOffset": e.commitlog_offset,
                    "physicSize": e.size,
                    "tagsCode": e.tags_code,
                    "extendDataJson": null,
                    "bitMap": null,
                    "eval": false,
                    "msg": null,
                })
            })
            .collect();
        let subscription = req
            .ext("consumerGroup")
            .and_then(|g| self.clients.subscription(g, &topic));
        let body = json!({
            "subscriptionData": subscription,
            "filterData": null,
            "queueData": entries,
            "maxQueueIndex": cq.max_offset(),
            "minQueueIndex": cq.min_offset(),
        });
        ok(req).with_body(Bytes::from(body.to_string()))
    }

    /// GET_CONSUMER_RUNNING_INFO and CONSUME_MESSAGE_DIRECTLY: asked of the client and
    /// its answer returned.
    async fn relay_to_consumer(&self, req: &RemotingCommand) -> RemotingCommand {
        let (group, client) = match (
            req.ext_required("consumerGroup"),
            req.ext_required("clientId"),
        ) {
            (Ok(g), Ok(c)) => (g, c),
            (Err(e), _) | (_, Err(e)) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(conn) = self.clients.consumer_connection(group, client) else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("The Consumer <{group}> <{client}> not online"),
            );
        };
        let mut ask = RemotingCommand::request(req.code);
        ask.ext_fields = req.ext_fields.clone();
        if req.code == request::CONSUME_MESSAGE_DIRECTLY {
            let id = req.ext("msgId").unwrap_or("");
            let Some(rec) = crate::protocol::msg_id::decode_offset_msg_id(id)
                .and_then(|(_, phys)| self.store.read_message(phys))
            else {
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("The message <{id}> not found"),
                );
            };
            ask = ask.with_body(rec);
        }
        match conn.invoke(ask, RELAY_TIMEOUT).await {
            Ok(mut answer) => {
                answer.opaque = req.opaque;
                answer
            }
            Err(e) => fail(
                req,
                response::SYSTEM_ERROR,
                format!("invoke the consumer <{group}> <{client}> failed: {e}"),
            ),
        }
    }

    /// INVOKE_BROKER_TO_RESET_OFFSET: the offsets a time maps to (or the group's own,
    /// when earlier and not forced) are sent to every consumer of the group with
    /// RESET_CONSUMER_CLIENT_OFFSET; with none online, CONSUMER_NOT_ONLINE (the tools
    /// then reset offline).
    fn reset_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let parsed = (|| {
            Ok::<_, crate::remoting::HeaderError>((
                req.ext_required("topic")?.to_owned(),
                req.ext_required("group")?.to_owned(),
                req.ext_num::<i64>("timestamp")?,
            ))
        })();
        let (topic, group, ts) = match parsed {
            Ok(p) => p,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let force = req.ext_bool("isForce").unwrap_or(false);
        let Some(tc) = self.topics.get(&topic) else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!(
                    "[reset-offset] reset offset failed, no topic in this broker. topic={topic}"
                ),
            );
        };
        if !self.offsets.group_offsets(&group).contains_key(&topic) {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("THe consumer group <{group}> not exist"),
            );
        }
        let mut table = Vec::new();
        for q in 0..tc.write_queue_nums {
            // A queue the group has not consumed yet counts as offset 0.
            let current = self.offsets.query(&group, &topic, q).unwrap_or(0);
            let at = if ts == -1 {
                self.store.max_offset_in_queue(&topic, q)
            } else {
                self.store
                    .search_offset_by_time(&topic, q, ts, crate::store::BoundaryType::Lower)
            }
            .max(0);
            table.push((q, if force || at < current { at } else { current }));
        }
        let conns = self.clients.consumer_connections(&group);
        if conns.is_empty() {
            return fail(
                req,
                response::CONSUMER_NOT_ONLINE,
                format!(
                    "Consumer not online, so can not reset offset, Group: {group} Topic: {topic} Timestamp: {ts}"
                ),
            );
        }
        let body = stats::offset_table_body(
            &self.config.broker_name,
            table.iter().map(|(q, o)| (topic.as_str(), *q, *o)),
        );
        for c in conns {
            let cmd = RemotingCommand::request(request::RESET_CONSUMER_CLIENT_OFFSET)
                .with_ext("topic", &topic)
                .with_ext("group", &group)
                .with_ext("timestamp", ts)
                .with_ext("isForce", force)
                .with_body(Bytes::from(body.clone()));
            c.send_oneway(cmd);
        }
        tracing::info!(group = %group, topic = %topic, ts, "consumer offsets reset sent to clients");
        ok(req).with_body(Bytes::from(body))
    }
}
