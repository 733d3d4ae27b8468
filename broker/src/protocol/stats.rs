//! Stats bodies whose `offsetTable` is keyed by `MessageQueue` objects
//! (GET_TOPIC_STATS_INFO → `TopicStatsTable`, GET_CONSUME_STATS → `ConsumeStats`).
//! Java tools read them with fastjson, which writes (and expects) an object as a map key:
//!
//! ```text
//! {"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"maxOffset":3,...},...}}
//! ```
//!
//! That is not JSON, so serde cannot write it: these functions do, and nothing else in
//! the crate builds such text.

use serde_json::json;

/// A `MessageQueue` as fastjson writes it when it is a map key.
#[must_use]
pub fn message_queue_key(broker_name: &str, topic: &str, queue_id: i32) -> String {
    json!({"brokerName": broker_name, "queueId": queue_id, "topic": topic}).to_string()
}

/// `TopicOffset` of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicOffset {
    /// Smallest queue offset still stored.
    pub min_offset: i64,
    /// Next queue offset.
    pub max_offset: i64,
    /// Store time of the last message (ms), 0 when none.
    pub last_update_timestamp: i64,
}

/// `OffsetWrapper` of one queue for a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetWrapper {
    /// The queue's max offset.
    pub broker_offset: i64,
    /// The group's committed offset.
    pub consumer_offset: i64,
    /// Store time of the last consumed message (ms), 0 when unknown.
    pub last_timestamp: i64,
}

/// The members of an `offsetTable`: `{MessageQueue}:{value}` pairs, comma-separated.
fn offset_table<'a, T>(
    broker_name: &str,
    queues: impl IntoIterator<Item = (&'a str, i32, T)>,
    value: impl Fn(T) -> serde_json::Value,
) -> String {
    queues
        .into_iter()
        .map(|(topic, q, o)| format!("{}:{}", message_queue_key(broker_name, topic, q), value(o)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `TopicStatsTable` body for `broker_name`.
#[must_use]
pub fn topic_stats_body<'a>(
    broker_name: &str,
    queues: impl IntoIterator<Item = (&'a str, i32, TopicOffset)>,
) -> String {
    // Keys in alphabetical order: the same text with or without serde_json's
    // `preserve_order`.
    let table = offset_table(broker_name, queues, |o: TopicOffset| {
        json!({
            "lastUpdateTimestamp": o.last_update_timestamp,
            "maxOffset": o.max_offset,
            "minOffset": o.min_offset,
        })
    });
    format!("{{\"offsetTable\":{{{table}}}}}")
}

/// A `ConsumeStats` body for `broker_name` (`consumeTps` 0: not measured).
#[must_use]
pub fn consume_stats_body<'a>(
    broker_name: &str,
    queues: impl IntoIterator<Item = (&'a str, i32, OffsetWrapper)>,
) -> String {
    let table = offset_table(broker_name, queues, |o: OffsetWrapper| {
        json!({
            "brokerOffset": o.broker_offset,
            "consumerOffset": o.consumer_offset,
            "lastTimestamp": o.last_timestamp,
        })
    });
    format!("{{\"consumeTps\":0.0,\"offsetTable\":{{{table}}}}}")
}

/// A `ResetOffsetBody` for `broker_name`: queue → offset.
#[must_use]
pub fn offset_table_body<'a>(
    broker_name: &str,
    queues: impl IntoIterator<Item = (&'a str, i32, i64)>,
) -> String {
    let table = offset_table(broker_name, queues, |o: i64| json!(o));
    format!("{{\"offsetTable\":{{{table}}}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_fastjson_bodies() {
        let t = topic_stats_body(
            "b",
            [(
                "T",
                1,
                TopicOffset {
                    min_offset: 0,
                    max_offset: 3,
                    last_update_timestamp: 9,
                },
            )],
        );
        assert_eq!(
            t,
            r#"{"offsetTable":{{"brokerName":"b","queueId":1,"topic":"T"}:{"lastUpdateTimestamp":9,"maxOffset":3,"minOffset":0}}}"#
        );
        let c = consume_stats_body(
            "b",
            [(
                "T",
                0,
                OffsetWrapper {
                    broker_offset: 5,
                    consumer_offset: 2,
                    last_timestamp: 0,
                },
            )],
        );
        assert_eq!(
            c,
            r#"{"consumeTps":0.0,"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"brokerOffset":5,"consumerOffset":2,"lastTimestamp":0}}}"#
        );
        assert_eq!(topic_stats_body("b", []), r#"{"offsetTable":{}}"#);
    }
}
