//! What this broker cannot honour yet is refused, never handled differently: each refusal
//! is the answer the Java broker gives with the feature switched off, so a client shows
//! the error a RocketMQ user already knows (issue 12 builds the features themselves).
//!
//! | what | when | answer |
//! |---|---|---|
//! | transactional half message | `TRAN_MSG=true` or a prepared/rollback `sysFlag` | NO_PERMISSION, "the broker[ip] sending transaction message is forbidden" (`rejectTransactionMessage=true`) |
//! | 5.x timer message | `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC` or `TIMER_DELAY_MS` without a delay level | SYSTEM_ERROR, "accurate timer message is not enabled, timerWheelEnable is false" |
//! | SQL92 (or any non-TAG) subscription | CHECK_CLIENT_CONFIG, or a pull under it | SYSTEM_ERROR, "The broker does not support consumer to filter message by SQL92" (`enablePropertyFilter=false`) |
//! | an unknown request sent oneway (e.g. END_TRANSACTION) | always | logged at most once per 10 s per code (there is nobody to answer) |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::store::find_property;
use crate::store::format::{property, sys_flag};
use crate::sync::lock;

/// The remark of a refused transactional half message (`brokerIP1` named).
#[must_use]
pub fn transaction_forbidden(broker_ip: &str) -> String {
    format!("the broker[{broker_ip}] sending transaction message is forbidden")
}

/// The remark of a refused timer message.
pub const TIMER_NOT_ENABLED: &str =
    "accurate timer message is not enabled, timerWheelEnable is false";

/// The remark of a refused non-TAG subscription.
#[must_use]
pub fn filter_not_supported(expression_type: &str) -> String {
    format!("The broker does not support consumer to filter message by {expression_type}")
}

/// Whether a message is a transactional half (or rollback) message: RocketMQ's
/// `TRAN_MSG` property, or the transaction bits of its `sysFlag`.
#[must_use]
pub fn is_transactional(properties: &str, sys: i32) -> bool {
    let t = sys & sys_flag::TRANSACTION_TYPE_MASK;
    find_property(properties, property::TRAN_MSG).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || t == sys_flag::TRANSACTION_PREPARED
        || t == sys_flag::TRANSACTION_ROLLBACK
}

/// Whether a message asks for 5.x timer delivery. As in RocketMQ, a delay level wins: a
/// message with `DELAY` > 0 is a delay-level message whatever timer property it carries.
#[must_use]
pub fn is_timer(properties: &str) -> bool {
    let level = find_property(properties, property::DELAY)
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(0);
    level <= 0
        && [
            property::TIMER_DELIVER_MS,
            property::TIMER_DELAY_SEC,
            property::TIMER_DELAY_MS,
        ]
        .iter()
        .any(|k| find_property(properties, k).is_some())
}

/// Whether a subscription's expression type is a tag expression (absent, empty or `TAG`).
#[must_use]
pub fn is_tag_type(expression_type: Option<&str>) -> bool {
    expression_type.is_none_or(|t| t.is_empty() || t.eq_ignore_ascii_case("TAG"))
}

/// Logs unknown oneway requests, at most once per 10 s per request code.
#[derive(Debug, Default)]
pub struct OnewayLog {
    last: Mutex<HashMap<i32, Instant>>,
}

impl OnewayLog {
    /// Records a oneway request of `code` nobody handles; logs it unless that code was
    /// logged in the last 10 s. Returns whether it logged.
    pub fn unknown(&self, code: i32, peer: &std::net::SocketAddr) -> bool {
        let now = Instant::now();
        let mut last = lock(&self.last);
        if last
            .get(&code)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10))
        {
            return false;
        }
        last.insert(code, now);
        warn!(
            code,
            %peer,
            "oneway request with an unsupported code dropped (no answer is possible); \
             further ones with this code are logged at most every 10 s"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::encode_properties;

    #[test]
    fn what_is_refused() {
        let tran = encode_properties([("TRAN_MSG", "true"), ("PGROUP", "pg")]);
        assert!(is_transactional(&tran, 0));
        assert!(is_transactional("", sys_flag::TRANSACTION_PREPARED));
        assert!(!is_transactional("", sys_flag::TRANSACTION_COMMIT));
        assert!(!is_transactional(
            &encode_properties([("TRAN_MSG", "false")]),
            0
        ));
        for k in ["TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS"] {
            assert!(is_timer(&encode_properties([(k, "1000")])), "{k}");
            // A delay level wins over a timer property, as in RocketMQ.
            assert!(!is_timer(&encode_properties([(k, "1000"), ("DELAY", "2")])));
        }
        assert!(!is_timer(&encode_properties([("TAGS", "a")])));
        assert!(is_tag_type(None));
        assert!(is_tag_type(Some("TAG")));
        assert!(is_tag_type(Some("")));
        assert!(!is_tag_type(Some("SQL92")));
        assert_eq!(
            filter_not_supported("SQL92"),
            "The broker does not support consumer to filter message by SQL92"
        );
    }

    #[test]
    fn unknown_oneways_are_logged_at_most_every_10_s_per_code() {
        let log = OnewayLog::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        assert!(log.unknown(37, &peer));
        assert!(!log.unknown(37, &peer));
        assert!(log.unknown(38, &peer));
    }
}
