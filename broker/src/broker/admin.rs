//! Admin requests: topics (create, update, delete), subscription groups, the `GET_ALL_*`
//! tables slaves and tools read, broker configuration (get, update at run time),
//! runtime info and the stats bodies.

use bytes::Bytes;
use tracing::info;

use super::{clients, config, meta, Broker};
use super::{fail, ok};
use crate::protocol::{parse_body, stats, to_body};
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;
use crate::store::metadata::TopicConfig;

impl Broker {
    pub(super) fn create_topic(&self, req: &RemotingCommand) -> RemotingCommand {
        let topic = match req.ext_required("topic") {
            Ok(t) => t.to_owned(),
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        if let Err(e) = meta::validate_topic(&topic) {
            return fail(req, response::SYSTEM_ERROR, e);
        }
        if topic == meta::TBW102 {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "the default topic cannot be changed",
            );
        }
        let num = |k: &'static str, d: i32| req.ext_num_opt::<i32>(k).ok().flatten().unwrap_or(d);
        let tc = TopicConfig {
            topic_name: topic.clone(),
            read_queue_nums: num("readQueueNums", 8).clamp(1, 1024),
            write_queue_nums: num("writeQueueNums", 8).clamp(1, 1024),
            perm: num("perm", meta::PERM_RW),
            topic_filter_type: req
                .ext("topicFilterType")
                .unwrap_or("SINGLE_TAG")
                .to_owned(),
            topic_sys_flag: num("topicSysFlag", 0),
            order: req.ext_bool("order").unwrap_or(false),
            ..TopicConfig::default()
        };
        if self.topics.upsert(tc) {
            info!(topic = %topic, "topic created or updated");
            self.topics_changed();
        }
        ok(req)
    }
    /// DELETE_TOPIC_IN_BROKER (system topics refused).
    pub(super) fn delete_topic(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.ext_required("topic") {
            Ok(t) if t == meta::TBW102 || t == crate::store::SCHEDULE_TOPIC => fail(
                req,
                response::SYSTEM_ERROR,
                format!("system topic {t} cannot be deleted"),
            ),
            Ok(t) => {
                self.remove_topic(t);
                ok(req)
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// Deletes a topic with its offsets and queues, and tells the name servers; whether
    /// it existed.
    pub(super) fn remove_topic(&self, t: &str) -> bool {
        if !self.topics.delete(t) {
            return false;
        }
        self.offsets.delete_topic(t);
        self.store.delete_topic(t);
        info!(topic = %t, "topic deleted");
        self.topics_changed();
        true
    }

    /// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP.
    pub(super) fn upsert_group(&self, req: &RemotingCommand) -> RemotingCommand {
        match parse_body::<crate::store::metadata::SubscriptionGroupConfig>(&req.body_bytes()) {
            Ok(g) if !g.group_name.is_empty() => {
                info!(group = %g.group_name, "subscription group created or updated");
                self.groups.upsert(g);
                ok(req)
            }
            Ok(_) => fail(req, response::SYSTEM_ERROR, "groupName is required"),
            Err(e) => fail(req, response::SYSTEM_ERROR, format!("bad group body: {e}")),
        }
    }

    /// The `GET_ALL_*` tables: topics, subscription groups, consumer and delay offsets.
    pub(super) fn all_tables(&self, req: &RemotingCommand) -> RemotingCommand {
        let body = match req.code {
            request::GET_ALL_TOPIC_CONFIG => to_body(&self.topics.snapshot()),
            request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => to_body(&self.groups.snapshot()),
            request::GET_ALL_CONSUMER_OFFSET => to_body(&self.offsets.snapshot()),
            _ => to_body(&self.delay_offsets.snapshot()),
        };
        ok(req).with_body(body)
    }

    /// GET_BROKER_CONFIG: the configuration as properties, with the run-time values.
    pub(super) fn broker_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let mut current = self.config.clone();
        self.runtime.apply_to(&mut current);
        let role = self.role.get();
        current.broker_role = role.role;
        current.broker_id = role.broker_id;
        current.role_epoch = role.epoch;
        ok(req).with_body(Bytes::from(current.to_properties()))
    }

    /// UPDATE_BROKER_CONFIG: the keys that may change while the broker runs.
    pub(super) fn update_broker_config(&self, req: &RemotingCommand) -> RemotingCommand {
        let props = config::parse_properties(&String::from_utf8_lossy(&req.body_bytes()));
        // A permission change fences or unfences a master (a switchover), a name-server
        // change decides where routes come from: control plane.
        if props.contains_key("brokerPermission") || props.contains_key("namesrvAddr") {
            if let Err(refusal) = self.authorize_control(req, "brokerPermission/namesrvAddr change")
            {
                return refusal;
            }
        }
        match self.runtime.update(&props) {
            Ok(()) => {
                info!(?props, "broker configuration updated");
                if props.contains_key("brokerPermission") || props.contains_key("namesrvAddr") {
                    // The routes must show the new permission now.
                    self.topics.bump_version();
                    self.topics_changed();
                }
                ok(req)
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// GET_BROKER_RUNTIME_INFO.
    pub(super) fn runtime_info_response(&self, req: &RemotingCommand) -> RemotingCommand {
        ok(req).with_body(to_body(&self.runtime_info()))
    }

    /// GET_BROKER_RUNTIME_INFO: a `KVTable` of string values, RocketMQ's key names where
    /// they exist.
    fn runtime_info(&self) -> serde_json::Value {
        let (flushes, micros) = self.store.commitlog().flush_stats();
        let mut t = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            t.insert(k.to_owned(), serde_json::Value::String(v));
        };
        put(
            "brokerVersionDesc",
            format!("ferrocket {}", env!("CARGO_PKG_VERSION")),
        );
        put(
            "brokerVersion",
            crate::remoting::command::OUR_VERSION.to_string(),
        );
        let role = self.role.get();
        put("brokerRole", role.role.name().to_owned());
        put("brokerName", self.config.broker_name.clone());
        put("brokerId", role.broker_id.to_string());
        put("epoch", role.epoch.to_string());
        put("knownEpoch", self.role.known_epoch().to_string());
        put("namesrvAddr", self.runtime.namesrvs().join(";"));
        if let Some(why) = self.role.superseded() {
            put("masterFenced", why);
        }
        put(
            "epochStartOffset",
            self.role
                .epochs()
                .last()
                .map_or(0, |e| e.start_offset)
                .to_string(),
        );
        put("masterAddr", role.master_addr.clone().unwrap_or_default());
        if let Some(node) = self.raft_node() {
            put(
                "dLegerGroup",
                self.config
                    .dledger
                    .group
                    .clone()
                    .unwrap_or_else(|| self.config.broker_name.clone()),
            );
            put("dLegerSelfId", self.config.dledger.self_id.clone());
            for (k, v) in node.status() {
                put(k, v);
            }
        }
        put("haConnections", self.ha.slave_count().to_string());
        put(
            "haServerAddr",
            format!("{}:{}", self.config.broker_ip1, self.config.ha_listen_port),
        );
        put("haSlaveAckOffset", self.ha.acked_offset().to_string());
        let set = self.ha.sync_state_set();
        let join = |s: &std::collections::BTreeSet<String>| {
            s.iter().cloned().collect::<Vec<_>>().join(",")
        };
        put("inSyncSlaves", join(&set.members));
        put("inSyncSlavesLeaving", join(&set.leaving));
        put("syncStateSetEpoch", set.epoch.to_string());
        put("haSlaveLagBytes", self.ha.slave_lag().to_string());
        let tx = &self.transactions.counters;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        put("transactionHalfPut", n(&tx.half).to_string());
        put("transactionCommitted", n(&tx.committed).to_string());
        put("transactionRolledBack", n(&tx.rolled_back).to_string());
        put("transactionChecks", n(&tx.checks).to_string());
        put("transactionDiscarded", n(&tx.discarded).to_string());
        put(
            "timerScheduled",
            n(&self.timers.counters.scheduled).to_string(),
        );
        put(
            "timerDelivered",
            n(&self.timers.counters.delivered).to_string(),
        );
        put("timerWaiting", self.timers.waiting().to_string());
        // The dashboard's figures: rates over 10 s / 1 min / 10 min and totals since
        // start (RocketMQ's "today" totals count from midnight; here from start, and
        // the morning marks are 0).
        let (put_tps, get_tps) = self.throughput.tps_strings();
        put("putTps", put_tps);
        put("getTransferedTps", get_tps);
        let put_total = n(&self.throughput.put);
        let got_total = n(&self.throughput.got);
        put("msgPutTotalTodayNow", put_total.to_string());
        put("msgGetTotalTodayNow", got_total.to_string());
        put("msgPutTotalTodayMorning", "0".to_owned());
        put("msgGetTotalTodayMorning", "0".to_owned());
        put("msgPutTotalYesterdayMorning", "0".to_owned());
        put("msgGetTotalYesterdayMorning", "0".to_owned());
        put(
            "transactionUnresolved",
            self.transactions.unresolved().to_string(),
        );
        let (kind, problem) = self
            .role
            .follow_problem()
            .map_or(("", String::new()), |(k, p)| (k.as_str(), p));
        put("haFollowProblem", problem);
        put("haFollowProblemKind", kind.to_owned());
        put("confirmOffset", self.confirmed_offset().to_string());
        put(
            "commitLogMinOffset",
            self.store.min_phy_offset().to_string(),
        );
        put(
            "commitLogMaxOffset",
            self.store.max_phy_offset().to_string(),
        );
        put(
            "dispatchBehindBytes",
            self.store
                .max_phy_offset()
                .saturating_sub(self.store.dispatched_offset())
                .to_string(),
        );
        put(
            "commitLogDiskRatio",
            format!("{:.4}", self.store.disk_used_ratio().unwrap_or(0.0)),
        );
        put("flushCount", flushes.to_string());
        put("flushMicrosTotal", micros.to_string());
        put("pullLongPollingWaiters", self.hold.waiting().to_string());
        put("topicCount", self.topics.count().to_string());
        put(
            "bootTimestamp",
            (crate::store::now_ms() - self.store.recovery_report().elapsed.as_millis() as i64)
                .to_string(),
        );
        serde_json::json!({ "table": t })
    }

    /// GET_TOPIC_STATS_INFO, GET_CONSUME_STATS and GET_CONSUMER_CONNECTION_LIST. The first
    /// two key their `offsetTable` by `MessageQueue` objects, in fastjson's form
    /// ([`crate::protocol::stats`]).
    pub(super) fn stats(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.code {
            request::GET_CONSUMER_CONNECTION_LIST => {
                let group = req.ext("consumerGroup").unwrap_or("");
                let Some(clients::GroupView {
                    members,
                    subscriptions: subs,
                }) = self.clients.group_view(group)
                else {
                    return fail(
                        req,
                        response::SYSTEM_ERROR,
                        format!("the consumer group {group} is not online"),
                    );
                };
                let body = serde_json::json!({
                    "connectionSet": members.iter().map(|(id, addr)| serde_json::json!({
                        "clientId": id, "clientAddr": addr, "language": "OTHER", "version": 0
                    })).collect::<Vec<_>>(),
                    "subscriptionTable": subs.iter().map(|s| (s.topic.clone(), serde_json::to_value(s).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                    "consumeType": "CONSUME_PASSIVELY",
                    "messageModel": "CLUSTERING",
                    "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
                });
                ok(req).with_body(Bytes::from(body.to_string()))
            }
            request::GET_TOPIC_STATS_INFO => {
                let topic = req.ext("topic").unwrap_or("");
                let Some(tc) = self.topics.get(topic) else {
                    return fail(
                        req,
                        response::TOPIC_NOT_EXIST,
                        format!("topic {topic} not exist"),
                    );
                };
                let store = &self.store;
                let body = stats::topic_stats_body(
                    &self.config.broker_name,
                    (0..tc.write_queue_nums).map(|q| {
                        let o = stats::TopicOffset {
                            min_offset: store.min_offset_in_queue(topic, q),
                            max_offset: store.max_offset_in_queue(topic, q),
                            last_update_timestamp: store.last_store_time(topic, q).unwrap_or(0),
                        };
                        (topic, q, o)
                    }),
                );
                ok(req).with_body(Bytes::from(body))
            }
            _ => {
                let group = req.ext("consumerGroup").unwrap_or("");
                let topics: Vec<String> = req
                    .ext("topic")
                    .filter(|t| !t.is_empty())
                    .map(|t| vec![t.to_owned()])
                    .unwrap_or_default();
                let (body, _) = self.consume_stats_of(group, &topics);
                ok(req).with_body(Bytes::from(body))
            }
        }
    }
}
