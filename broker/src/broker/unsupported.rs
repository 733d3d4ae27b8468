//! What this broker cannot honour yet is refused, never handled differently: each refusal
//! is the answer the Java broker gives with the feature switched off, so a client shows
//! the error a RocketMQ user already knows.
//!
//! | what | when | answer |
//! |---|---|---|
//! | transactional half message | `rejectTransactionMessage=true` (default false: see `transaction`) | NO_PERMISSION, "the broker[ip] sending transaction message is forbidden" |
//! | transactional half message in a batch | always | MESSAGE_ILLEGAL, "batch request does not support transaction message" |
//! | the rollback bits of `sysFlag` on a send | always | MESSAGE_ILLEGAL (RocketMQ stores it and never delivers it) |
//! | 5.x timer message with `timerWheelEnable=false` | `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC` or `TIMER_DELAY_MS` without a delay level | SYSTEM_ERROR, "accurate timer message is not enabled, timerWheelEnable is false" |
//! | 5.x timer message in a batch | always | MESSAGE_ILLEGAL, "batch request does not support timer message" |
//! | SQL92 subscription with `enablePropertyFilter=false`, or another non-TAG type | CHECK_CLIENT_CONFIG, or a pull under it | SYSTEM_ERROR, "The broker does not support consumer to filter message by SQL92" |
//! | an unknown request sent oneway (e.g. END_TRANSACTION) | always | logged at most once per 10 s per code (there is nobody to answer) |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

pub use crate::protocol::is_tag_type;
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

/// What a message asks of the broker beyond a plain append, read in one pass over its
/// properties and `sysFlag`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traits {
    /// A transactional half message: RocketMQ's `TRAN_MSG=true`, or the prepared bits
    /// of its `sysFlag`.
    pub half: bool,
    /// The rollback bits of its `sysFlag` (never sent by a client).
    pub rollback_flag: bool,
    /// A 5.x timer property (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`).
    pub timer: bool,
    /// A delay level above 0 (`DELAY`): as in RocketMQ it wins over a timer property.
    pub delay_level: bool,
}

/// Reads a message's [`Traits`]: one pass over the properties, on every send.
#[must_use]
pub fn traits(properties: &str, sys: i32) -> Traits {
    let t = sys & sys_flag::TRANSACTION_TYPE_MASK;
    let mut out = Traits {
        half: t == sys_flag::TRANSACTION_PREPARED,
        rollback_flag: t == sys_flag::TRANSACTION_ROLLBACK,
        ..Traits::default()
    };
    for seg in properties.split(property::PROPERTY_SEPARATOR) {
        let Some((k, v)) = seg.split_once(property::NAME_VALUE_SEPARATOR) else {
            continue;
        };
        match k {
            property::TRAN_MSG => out.half |= v.eq_ignore_ascii_case("true"),
            property::TIMER_DELIVER_MS | property::TIMER_DELAY_SEC | property::TIMER_DELAY_MS => {
                out.timer = true;
            }
            property::DELAY => out.delay_level = v.trim().parse::<i32>().is_ok_and(|l| l > 0),
            _ => {}
        }
    }
    out
}

/// Why a message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A transactional half message on a broker with `rejectTransactionMessage=true`.
    Transaction,
    /// A message carrying the rollback bits of `sysFlag` (RocketMQ would store it and
    /// never deliver it).
    RollbackFlag,
    /// A 5.x timer message (a `TIMER_*` property without a delay level).
    Timer,
    /// A transactional half message inside a batch.
    TransactionInBatch,
    /// A timer message inside a batch.
    TimerInBatch,
}

impl Refusal {
    /// The response code and remark, `broker_ip` being `brokerIP1`.
    #[must_use]
    pub fn answer(self, broker_ip: &str) -> (i32, String) {
        use crate::remoting::codes::response;
        match self {
            Refusal::Transaction => (response::NO_PERMISSION, transaction_forbidden(broker_ip)),
            Refusal::RollbackFlag => (
                response::MESSAGE_ILLEGAL,
                "a message with the transaction rollback flag cannot be sent".to_owned(),
            ),
            Refusal::Timer => (response::SYSTEM_ERROR, TIMER_NOT_ENABLED.to_owned()),
            Refusal::TransactionInBatch => (
                response::MESSAGE_ILLEGAL,
                "batch request does not support transaction message".to_owned(),
            ),
            Refusal::TimerInBatch => (
                response::MESSAGE_ILLEGAL,
                "batch request does not support timer message".to_owned(),
            ),
        }
    }
}

impl Traits {
    /// What of the message cannot be honoured, if anything. `reject_transactions` is
    /// `rejectTransactionMessage`, `timers` `timerWheelEnable`; `batch` whether it came
    /// in a batch.
    #[must_use]
    pub fn refusal(self, reject_transactions: bool, timers: bool, batch: bool) -> Option<Refusal> {
        if self.rollback_flag {
            return Some(Refusal::RollbackFlag);
        }
        if self.half && batch {
            return Some(Refusal::TransactionInBatch);
        }
        if self.half && reject_transactions {
            return Some(Refusal::Transaction);
        }
        if self.is_timer() && batch {
            return Some(Refusal::TimerInBatch);
        }
        (self.is_timer() && !timers).then_some(Refusal::Timer)
    }

    /// A 5.x timer message: a timer property and no delay level.
    #[must_use]
    pub fn is_timer(self) -> bool {
        self.timer && !self.delay_level
    }
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
        let refusal = |p: &str, sys: i32| traits(p, sys).refusal(false, false, false);
        let tran = encode_properties([("TRAN_MSG", "true"), ("PGROUP", "pg")]);
        assert!(traits(&tran, 0).half);
        assert_eq!(refusal(&tran, 0), None);
        assert_eq!(
            traits(&tran, 0).refusal(true, true, false),
            Some(Refusal::Transaction)
        );
        assert_eq!(
            traits(&tran, 0).refusal(false, true, true),
            Some(Refusal::TransactionInBatch)
        );
        assert!(traits("", sys_flag::TRANSACTION_PREPARED).half);
        assert_eq!(
            refusal("", sys_flag::TRANSACTION_ROLLBACK),
            Some(Refusal::RollbackFlag)
        );
        assert_eq!(traits("", sys_flag::TRANSACTION_COMMIT), Traits::default());
        assert!(!traits(&encode_properties([("TRAN_MSG", "false")]), 0).half);
        for k in ["TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS"] {
            assert_eq!(
                refusal(&encode_properties([(k, "1000")]), 0),
                Some(Refusal::Timer),
                "{k}"
            );
            // A delay level wins over a timer property, as in RocketMQ.
            assert_eq!(
                refusal(&encode_properties([(k, "1000"), ("DELAY", "2")]), 0),
                None
            );
        }
        assert_eq!(refusal(&encode_properties([("TAGS", "a")]), 0), None);
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
