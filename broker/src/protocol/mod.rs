//! Protocol facts shared by the broker, the name server, the client and the admin CLI:
//! the JSON bodies of the remoting protocol (fastjson shapes, `rocketmq-protocol.md` §4)
//! here, and in submodules the offset message id ([`msg_id`]), the batch body
//! ([`batch`]), topic names and permission bits ([`topic`]) and the fastjson stats
//! bodies keyed by `MessageQueue` ([`stats`]).
//!
//! Emitted JSON uses quoted numeric map keys (`{"0":"ip:port"}`), which every client
//! accepts; parsing accepts Java's bare keys too (see `store::metadata::quote_bare_keys`).
//! Fields the Rust client requires are always emitted; missing fields are defaulted on
//! input.

pub mod batch;
pub mod msg_id;
pub mod stats;
pub mod topic;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::metadata::{quote_bare_keys, DataVersion, TopicConfig};

/// Parses a body leniently (bare numeric keys accepted).
///
/// # Errors
/// The JSON error.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body).or_else(|e| {
        let text = String::from_utf8_lossy(body);
        serde_json::from_str(&quote_bare_keys(&text)).map_err(|_| e)
    })
}

/// `QueueData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    /// Broker name.
    pub broker_name: String,
    /// Read queues.
    pub read_queue_nums: i32,
    /// Write queues.
    pub write_queue_nums: i32,
    /// `PermName` bits.
    pub perm: i32,
    /// `TopicSysFlag` bits.
    pub topic_sys_flag: i32,
}

impl Default for QueueData {
    fn default() -> Self {
        QueueData {
            broker_name: String::new(),
            read_queue_nums: 0,
            write_queue_nums: 0,
            perm: 6,
            topic_sys_flag: 0,
        }
    }
}

/// `BrokerData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker id (0 = master) → `ip:port`.
    pub broker_addrs: BTreeMap<i64, String>,
    /// 5.x acting master; always false here.
    pub enable_acting_master: bool,
    /// Zone, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

/// `TopicRouteData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    /// `brokerName:queueNum;...` for ordered topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// Queue data per broker name.
    pub queue_datas: Vec<QueueData>,
    /// Brokers hosting the topic.
    pub broker_datas: Vec<BrokerData>,
    /// Legacy; always `{}`.
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// `ClusterInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    /// Broker name → data.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster → broker names.
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}

/// `TopicList`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    /// Topic names.
    pub topic_list: Vec<String>,
}

/// The topic part of `RegisterBrokerBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    /// Topic name → config.
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// `RegisterBrokerBody` (uncompressed form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    /// Topics of the broker.
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    /// Legacy filter servers.
    pub filter_server_list: Vec<String>,
}

/// `SubscriptionData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    /// Topic.
    pub topic: String,
    /// `*`, `A || B` or SQL.
    pub sub_string: String,
    /// Tags.
    pub tags_set: Vec<String>,
    /// Java hash codes of the tags.
    pub code_set: Vec<i32>,
    /// Version (creation time, ms).
    pub sub_version: i64,
    /// `TAG` or `SQL92`.
    pub expression_type: Option<String>,
    /// Legacy.
    pub class_filter_mode: bool,
}

impl SubscriptionData {
    /// Builds a tag subscription from an expression like `A || B` or `*`.
    pub fn from_expression(topic: &str, expr: &str, sub_version: i64) -> Self {
        let expr = expr.trim();
        let tags: Vec<String> = if expr.is_empty() || expr == "*" {
            Vec::new()
        } else {
            expr.split("||")
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        SubscriptionData {
            topic: topic.to_owned(),
            sub_string: if expr.is_empty() {
                "*".into()
            } else {
                expr.to_owned()
            },
            code_set: tags
                .iter()
                .map(|t| crate::store::format::java_string_hash(t))
                .collect(),
            tags_set: tags,
            sub_version,
            expression_type: Some("TAG".into()),
            class_filter_mode: false,
        }
    }

    /// Recomputes `code_set` from `tags_set`. Clients exist that hash the untrimmed
    /// pieces of `A || B` (` B`, `A `) while sending trimmed tags, so the codes they send
    /// never match a stored tag; the tags themselves are what the client filters on.
    pub fn normalized(mut self) -> Self {
        if !self.tags_set.is_empty() {
            let mut codes: Vec<i32> = self
                .tags_set
                .iter()
                .map(|t| crate::store::format::java_string_hash(t.trim()))
                .collect();
            codes.sort_unstable();
            codes.dedup();
            self.code_set = codes;
        }
        self
    }

    /// Whether a ConsumeQueue tags code passes this subscription.
    pub fn matches(&self, tags_code: i64) -> bool {
        self.code_set.is_empty()
            || self.sub_string == "*"
            || self.code_set.iter().any(|c| i64::from(*c) == tags_code)
    }
}

/// `ConsumerData` of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    /// Group.
    pub group_name: String,
    /// `CONSUME_ACTIVELY` / `CONSUME_PASSIVELY` / `CONSUME_POP`.
    pub consume_type: Option<String>,
    /// `CLUSTERING` / `BROADCASTING`.
    pub message_model: Option<String>,
    /// Where a new group starts.
    pub consume_from_where: Option<String>,
    /// Subscriptions.
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Legacy.
    pub unit_mode: bool,
}

/// `ProducerData` of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    /// Group.
    pub group_name: String,
}

/// `HeartbeatData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    /// `ip@instance`.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Producer groups.
    pub producer_data_set: Vec<ProducerData>,
    /// Consumer groups.
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x heartbeat v2.
    pub heartbeat_fingerprint: Option<i64>,
    /// 5.x heartbeat v2: subscriptions omitted.
    pub without_sub: bool,
}

/// `{"consumerIdList":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerIdList {
    /// Client ids.
    pub consumer_id_list: Vec<String>,
}

/// Serializes a body; these types always serialize.
pub fn to_body<T: Serialize>(v: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_json_matches_the_fact_sheet() {
        let mut addrs = BTreeMap::new();
        addrs.insert(0, "10.0.0.1:10911".to_string());
        addrs.insert(1, "10.0.0.2:10911".to_string());
        let r = TopicRouteData {
            order_topic_conf: None,
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: 6,
                topic_sys_flag: 0,
            }],
            broker_datas: vec![BrokerData {
                cluster: "DefaultCluster".into(),
                broker_name: "broker-a".into(),
                broker_addrs: addrs,
                enable_acting_master: false,
                zone_name: None,
            }],
            filter_server_table: BTreeMap::new(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"queueDatas":[{"brokerName":"broker-a","readQueueNums":4,"writeQueueNums":4,"perm":6,"topicSysFlag":0}],"brokerDatas":[{"cluster":"DefaultCluster","brokerName":"broker-a","brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"},"enableActingMaster":false}],"filterServerTable":{}}"#
        );
        let back: TopicRouteData = parse_body(br#"{"brokerDatas":[{"brokerAddrs":{0:"a:1"},"brokerName":"b","cluster":"c"}],"queueDatas":[]}"#).unwrap();
        assert_eq!(back.broker_datas[0].broker_addrs[&0], "a:1");
    }

    #[test]
    fn heartbeat_parses_java_and_lenient_shapes() {
        let hb: HeartbeatData = parse_body(br#"{"clientID":"10.0.0.5@123","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"g","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":17,"tagsSet":["TagA"],"topic":"T"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#).unwrap();
        assert_eq!(hb.client_id, "10.0.0.5@123");
        let sub = &hb.consumer_data_set[0].subscription_data_set[0];
        assert!(sub.matches(2_598_919));
        assert!(!sub.matches(1));
        let minimal: HeartbeatData =
            parse_body(br#"{"clientID":"x","consumerDataSet":[{"groupName":"g"}]}"#).unwrap();
        assert!(minimal.consumer_data_set[0]
            .subscription_data_set
            .is_empty());
    }

    #[test]
    fn tag_expressions() {
        let s = SubscriptionData::from_expression("T", "TagA || TagB", 1);
        assert_eq!(s.tags_set, vec!["TagA", "TagB"]);
        assert!(s.matches(i64::from(crate::store::format::java_string_hash("TagB"))));
        assert!(SubscriptionData::from_expression("T", "*", 1).matches(42));
        // Codes hashed from untrimmed pieces are replaced by the tags' own codes.
        let skewed = SubscriptionData {
            tags_set: vec!["TagA".into(), "TagB".into()],
            code_set: vec![32_151_592, 80_566_521],
            sub_string: "TagA || TagB".into(),
            ..SubscriptionData::default()
        }
        .normalized();
        assert!(skewed.matches(2_598_919) && skewed.matches(2_598_920));
        assert!(!skewed.matches(32_151_592));
    }
}
