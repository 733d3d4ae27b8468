//! RocketMQ's `BrokerStatsManager` items, for VIEW_BROKER_STATS_DATA (315): per stats
//! name and key (`TOPIC_PUT_NUMS` / topic, `GROUP_GET_NUMS` / `topic@group`, …) a running
//! value and call count, sampled every 10 s (the minute's window), every minute (the
//! hour's) and every hour (the day's). A window's figures are RocketMQ's: `sum` (growth of
//! the value), `tps` (sum per second) and `avgpt` (sum per call).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::json;

use crate::store::now_ms;
use crate::sync::lock;

/// Messages stored per topic.
pub const TOPIC_PUT_NUMS: &str = "TOPIC_PUT_NUMS";
/// Bytes stored per topic.
pub const TOPIC_PUT_SIZE: &str = "TOPIC_PUT_SIZE";
/// Messages pulled per `topic@group`.
pub const GROUP_GET_NUMS: &str = "GROUP_GET_NUMS";
/// Bytes pulled per `topic@group`.
pub const GROUP_GET_SIZE: &str = "GROUP_GET_SIZE";
/// Messages sent back per `topic@group`.
pub const SNDBCK_PUT_NUMS: &str = "SNDBCK_PUT_NUMS";
/// Messages stored by the broker (key: the cluster name).
pub const BROKER_PUT_NUMS: &str = "BROKER_PUT_NUMS";
/// Messages pulled from the broker (key: the cluster name).
pub const BROKER_GET_NUMS: &str = "BROKER_GET_NUMS";

#[derive(Debug, Clone, Copy)]
struct Snap {
    at_ms: i64,
    value: u64,
    times: u64,
}

#[derive(Debug, Default)]
struct Item {
    value: u64,
    times: u64,
    minute: VecDeque<Snap>,
    hour: VecDeque<Snap>,
    day: VecDeque<Snap>,
}

impl Item {
    fn snap(&self, at_ms: i64) -> Snap {
        Snap {
            at_ms,
            value: self.value,
            times: self.times,
        }
    }
}

fn push(ring: &mut VecDeque<Snap>, s: Snap, keep: usize) {
    ring.push_back(s);
    while ring.len() > keep {
        ring.pop_front();
    }
}

fn window(ring: &VecDeque<Snap>) -> serde_json::Value {
    let (Some(first), Some(last)) = (ring.front(), ring.back()) else {
        return json!({"sum": 0, "tps": 0.0, "avgpt": 0.0});
    };
    let sum = last.value.saturating_sub(first.value);
    let times = last.times.saturating_sub(first.times);
    let ms = (last.at_ms - first.at_ms).max(0);
    let tps = if ms > 0 {
        sum as f64 * 1000.0 / ms as f64
    } else {
        0.0
    };
    let avgpt = if times > 0 {
        sum as f64 / times as f64
    } else {
        0.0
    };
    json!({"sum": sum, "tps": tps, "avgpt": avgpt})
}

/// The stats items.
#[derive(Debug, Default)]
pub struct StatsItems {
    /// Stats name → key → item (a send or pull looks its key up without allocating).
    items: Mutex<HashMap<&'static str, HashMap<String, Item>>>,
}

impl StatsItems {
    /// Adds `value` in one call to an item.
    pub fn add(&self, name: &'static str, key: &str, value: u64) {
        let mut items = lock(&self.items);
        let by_key = items.entry(name).or_default();
        let item = match by_key.get_mut(key) {
            Some(i) => i,
            None => {
                let mut i = Item::default();
                // A first sample at zero, so the first window counts from the start.
                let s = i.snap(now_ms());
                push(&mut i.minute, s, 7);
                push(&mut i.hour, s, 61);
                push(&mut i.day, s, 25);
                by_key.entry(key.to_owned()).or_insert(i)
            }
        };
        item.value += value;
        item.times += 1;
    }

    /// Samples every item: called every 10 s; the hour's ring every 6th call, the
    /// day's every 360th.
    pub fn sample(&self, tick: u64) {
        let now = now_ms();
        for item in lock(&self.items).values_mut().flat_map(HashMap::values_mut) {
            let s = item.snap(now);
            push(&mut item.minute, s, 7);
            if tick.is_multiple_of(6) {
                push(&mut item.hour, s, 61);
            }
            if tick.is_multiple_of(360) {
                push(&mut item.day, s, 25);
            }
        }
    }

    /// A `BrokerStatsData` body, `None` when the item does not exist.
    pub fn view(&self, name: &str, key: &str) -> Option<String> {
        let items = lock(&self.items);
        let item = items.get(name)?.get(key)?;
        Some(
            json!({
                "statsMinute": window(&item.minute),
                "statsHour": window(&item.hour),
                "statsDay": window(&item.day),
            })
            .to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_growth_per_second_and_per_call() {
        let s = StatsItems::default();
        s.add(TOPIC_PUT_NUMS, "T", 10);
        s.add(TOPIC_PUT_NUMS, "T", 30);
        s.sample(1);
        let v: serde_json::Value =
            serde_json::from_str(&s.view(TOPIC_PUT_NUMS, "T").unwrap()).unwrap();
        assert_eq!(v["statsMinute"]["sum"], 40);
        assert_eq!(v["statsMinute"]["avgpt"], 20.0);
        assert_eq!(
            v["statsHour"]["sum"], 0,
            "the hour's ring is sampled every minute"
        );
        assert!(s.view(TOPIC_PUT_NUMS, "U").is_none());
        assert!(s.view(GROUP_GET_NUMS, "T").is_none());
    }
}
