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
    /// A broker address (GET_SYSTEM_TOPIC_LIST_FROM_NS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
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

/// fastjson's leniency, which every client family relies on somewhere (the C++ client
/// sends enums as ordinals, longs as strings, and leaves fields out).
pub mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// An enum given by name or by ordinal (`names[ordinal]`); an unknown ordinal is
    /// kept as its number's text; null or absent is `None`.
    fn enum_name<'de, D: Deserializer<'de>>(
        d: D,
        names: &[&str],
    ) -> Result<Option<String>, D::Error> {
        Ok(match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| names.get(i))
                    .map_or_else(|| n.to_string(), |s| (*s).to_owned()),
            ),
            Some(other) => Some(other.to_string()),
        })
    }

    /// `ConsumeType`: `CONSUME_ACTIVELY`, `CONSUME_PASSIVELY`, `CONSUME_POP`.
    ///
    /// # Errors
    /// Never for a JSON value.
    pub fn consume_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        enum_name(d, &["CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP"])
    }

    /// `MessageModel`: `BROADCASTING`, `CLUSTERING`.
    ///
    /// # Errors
    /// Never for a JSON value.
    pub fn message_model<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        enum_name(d, &["BROADCASTING", "CLUSTERING"])
    }

    /// `ConsumeFromWhere`, in Java's declaration order.
    ///
    /// # Errors
    /// Never for a JSON value.
    pub fn consume_from_where<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        enum_name(
            d,
            &[
                "CONSUME_FROM_LAST_OFFSET",
                "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
                "CONSUME_FROM_MIN_OFFSET",
                "CONSUME_FROM_MAX_OFFSET",
                "CONSUME_FROM_FIRST_OFFSET",
                "CONSUME_FROM_TIMESTAMP",
            ],
        )
    }

    /// A long given as a number or as a numeric string; null or absent is 0.
    ///
    /// # Errors
    /// A string that is not a number, or another JSON type.
    pub fn long<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a long"))),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(0),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a long"))),
            Some(other) => Err(serde::de::Error::custom(format!("{other} is not a long"))),
        }
    }

    /// A boolean given as `true`/`false`, a string of either, or 0/1; absent is false.
    ///
    /// # Errors
    /// Another JSON type.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) => Ok(s.trim().eq_ignore_ascii_case("true")),
            Some(Value::Number(n)) => Ok(n.as_i64().is_some_and(|i| i != 0)),
            Some(other) => Err(serde::de::Error::custom(format!(
                "{other} is not a boolean"
            ))),
        }
    }
}

/// Whether a subscription's expression type is a tag expression (absent, empty or `TAG`).
#[must_use]
pub fn is_tag_type(expression_type: Option<&str>) -> bool {
    expression_type.is_none_or(|t| t.is_empty() || t.eq_ignore_ascii_case("TAG"))
}

/// The tags of a tag expression: `A || B` → `[A, B]`; `*` or empty → none.
fn tags_of(expr: &str) -> Vec<String> {
    let expr = expr.trim();
    if expr.is_empty() || expr == "*" {
        return Vec::new();
    }
    expr.split("||")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
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
    #[serde(deserialize_with = "lenient::long")]
    pub sub_version: i64,
    /// `TAG` or `SQL92`.
    pub expression_type: Option<String>,
    /// Legacy.
    #[serde(deserialize_with = "lenient::boolean")]
    pub class_filter_mode: bool,
}

impl SubscriptionData {
    /// Builds a tag subscription from an expression like `A || B` or `*`.
    pub fn from_expression(topic: &str, expr: &str, sub_version: i64) -> Self {
        let expr = expr.trim();
        let tags = tags_of(expr);
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
    ///
    /// Clients also exist that send no tags at all, only `subString` (the C++ client):
    /// for a tag subscription the tags are then taken from `subString`, so `A || B` never
    /// degrades to "every message".
    pub fn normalized(mut self) -> Self {
        if self.tags_set.is_empty() && is_tag_type(self.expression_type.as_deref()) {
            self.tags_set = tags_of(&self.sub_string);
        }
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
    /// `CONSUME_ACTIVELY` / `CONSUME_PASSIVELY` / `CONSUME_POP` (or the ordinal).
    #[serde(deserialize_with = "lenient::consume_type")]
    pub consume_type: Option<String>,
    /// `CLUSTERING` / `BROADCASTING` (or the ordinal).
    #[serde(deserialize_with = "lenient::message_model")]
    pub message_model: Option<String>,
    /// Where a new group starts (name or ordinal).
    #[serde(deserialize_with = "lenient::consume_from_where")]
    pub consume_from_where: Option<String>,
    /// Subscriptions.
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Legacy.
    #[serde(deserialize_with = "lenient::boolean")]
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
    #[serde(deserialize_with = "lenient::boolean")]
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

    /// Heartbeat shapes real clients put on the wire, each read as fastjson reads it.
    #[test]
    fn heartbeats_of_every_client_family_are_accepted() {
        // librocketmq 2.x (the C++ client behind the Python, Go, PHP and Node.js
        // wrappers), as captured from the `rocketmq` 0.4.4 wheel: enums as ordinals,
        // subVersion as a string, no tagsSet/codeSet/expressionType.
        let cpp = r#"{"clientID":"17869-127.0.0.1@DEFAULT","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,"groupName":"cpp_cg","messageModel":1,"subscriptionDataSet":[{"subString":"*","subVersion":"1796075684388","topic":"%RETRY%cpp_cg"},{"subString":"TagA || TagB","subVersion":"1796075684388","topic":"CppTopic"}]}]}"#;
        // Java 4.x/5.x (fastjson): names, numbers, every field.
        let java = r#"{"clientID":"10.0.0.1@123","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"g","messageModel":"BROADCASTING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"T"}],"unitMode":false}],"heartbeatFingerprint":0,"producerDataSet":[{"groupName":"pg"}]}"#;
        // Odd but accepted by fastjson: booleans as strings or numbers, nulls, unknown
        // fields, an empty subVersion.
        let odd = r#"{"clientID":"x","consumerDataSet":[{"groupName":"g2","consumeType":null,"messageModel":"1","unitMode":"false","futureField":{"a":1},"subscriptionDataSet":[{"topic":"T","subString":"*","subVersion":"","classFilterMode":0}]}],"withoutSub":"false"}"#;
        let hb: HeartbeatData = parse_body(cpp.as_bytes()).unwrap();
        let cd = &hb.consumer_data_set[0];
        assert_eq!(cd.consume_type.as_deref(), Some("CONSUME_PASSIVELY"));
        assert_eq!(cd.message_model.as_deref(), Some("CLUSTERING"));
        assert_eq!(
            cd.consume_from_where.as_deref(),
            Some("CONSUME_FROM_LAST_OFFSET")
        );
        assert_eq!(cd.subscription_data_set[1].sub_version, 1_796_075_684_388);
        // No tags sent: taken from subString, so TagA || TagB is not "everything".
        let sub = cd.subscription_data_set[1].clone().normalized();
        assert_eq!(sub.tags_set, vec!["TagA".to_string(), "TagB".to_string()]);
        let tag_a = i64::from(crate::store::format::java_string_hash("TagA"));
        let tag_c = i64::from(crate::store::format::java_string_hash("TagC"));
        assert!(sub.matches(tag_a));
        assert!(!sub.matches(tag_c));
        assert!(cd.subscription_data_set[0]
            .clone()
            .normalized()
            .matches(tag_c));

        let hb: HeartbeatData = parse_body(java.as_bytes()).unwrap();
        let cd = &hb.consumer_data_set[0];
        assert_eq!(cd.message_model.as_deref(), Some("BROADCASTING"));
        assert_eq!(
            cd.consume_from_where.as_deref(),
            Some("CONSUME_FROM_FIRST_OFFSET")
        );
        assert_eq!(cd.subscription_data_set[0].sub_version, 1_700_000_000_000);
        assert_eq!(hb.producer_data_set[0].group_name, "pg");

        let hb: HeartbeatData = parse_body(odd.as_bytes()).unwrap();
        let cd = &hb.consumer_data_set[0];
        assert_eq!(cd.consume_type, None);
        assert_eq!(cd.message_model.as_deref(), Some("1"));
        assert!(!cd.unit_mode);
        assert_eq!(cd.subscription_data_set[0].sub_version, 0);
        // Still refused: what is not JSON, or a long that is not a number.
        assert!(parse_body::<HeartbeatData>(b"{not json").is_err());
        let bad = r#"{"consumerDataSet":[{"subscriptionDataSet":[{"subVersion":"soon"}]}]}"#;
        assert!(parse_body::<HeartbeatData>(bad.as_bytes()).is_err());
    }
}
