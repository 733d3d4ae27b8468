//! Pulls: PULL_MESSAGE and LITE_PULL_MESSAGE, with long polling (a pull that finds
//! nothing is held until a message arrives or its suspend time ends) and the
//! `suggestWhichBrokerId` hint for slave reads.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::debug;

use super::{fail, Broker};
use super::{long_poll, unsupported};
use crate::protocol::SubscriptionData;
use crate::remoting::codes::response;
use crate::remoting::{HeaderError, RemotingCommand};
use crate::store::GetMessageStatus;

/// Physical memory (`MemTotal`), read once; 8 GiB when unknown.
fn total_memory_bytes() -> u64 {
    static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(8 << 30, |kb| kb * 1024)
    })
}

/// `PullSysFlag` bits.
pub(super) mod pull_flag {
    pub const COMMIT_OFFSET: i32 = 0x1;
    pub const SUSPEND: i32 = 0x2;
    pub const SUBSCRIPTION: i32 = 0x4;
}

/// The header of PULL_MESSAGE / LITE_PULL_MESSAGE (`PullMessageRequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullHeader {
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `topic`.
    pub topic: String,
    /// `queueId`.
    pub queue_id: i32,
    /// `queueOffset`.
    pub queue_offset: i64,
    /// `maxMsgNums` (32 when absent).
    pub max_msg_nums: i32,
    /// `sysFlag` ([`pull_flag`] bits).
    pub sys_flag: i32,
    /// `commitOffset` (−1 when absent).
    pub commit_offset: i64,
    /// `suspendTimeoutMillis` (15 s when absent).
    pub suspend_timeout_millis: u64,
    /// `maxMsgBytes` (256 KiB when absent).
    pub max_msg_bytes: i32,
}

impl PullHeader {
    /// Reads the header.
    ///
    /// # Errors
    /// A missing group, topic, queue id or offset; a field that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<PullHeader, HeaderError> {
        Ok(PullHeader {
            consumer_group: req.ext_required("consumerGroup")?.to_owned(),
            topic: req.ext_required("topic")?.to_owned(),
            queue_id: req.ext_num("queueId")?,
            queue_offset: req.ext_num("queueOffset")?,
            max_msg_nums: req.ext_num_opt("maxMsgNums")?.unwrap_or(32),
            sys_flag: req.ext_num_opt("sysFlag")?.unwrap_or(0),
            commit_offset: req.ext_num_opt("commitOffset")?.unwrap_or(-1),
            suspend_timeout_millis: req.ext_num_opt("suspendTimeoutMillis")?.unwrap_or(15_000),
            max_msg_bytes: req.ext_num_opt("maxMsgBytes")?.unwrap_or(256 * 1024),
        })
    }
}

impl Broker {
    /// The compiled selector of a non-TAG subscription: refused unless
    /// `enablePropertyFilter` is on and the type is SQL92 (RocketMQ's answers).
    pub(super) fn compile_selector(
        &self,
        req: &RemotingCommand,
        kind: &str,
        expr: &str,
    ) -> Result<crate::sql92::Expr, RemotingCommand> {
        if !self.runtime.enable_property_filter.load(Ordering::Relaxed)
            || !kind.eq_ignore_ascii_case("SQL92")
        {
            return Err(fail(
                req,
                response::SYSTEM_ERROR,
                unsupported::filter_not_supported(kind),
            ));
        }
        crate::sql92::parse(expr).map_err(|e| fail(req, response::SUBSCRIPTION_PARSE_FAILED, e))
    }

    /// The subscription a pull is served under: the pull's own (its subscription flag)
    /// or the group's from heartbeats; with its compiled SQL92 selector if it has one.
    pub(super) fn subscription_for_pull(
        &self,
        req: &RemotingCommand,
        group: &str,
        topic: &str,
        sys_flag: i32,
    ) -> Result<(SubscriptionData, Option<crate::sql92::Expr>), RemotingCommand> {
        if sys_flag & pull_flag::SUBSCRIPTION != 0 {
            let expr = req.ext("subscription").unwrap_or("*");
            let kind = req.ext("expressionType");
            if !unsupported::is_tag_type(kind) {
                let sel = self.compile_selector(req, kind.unwrap_or_default(), expr)?;
                let mut sub = SubscriptionData::from_expression(topic, "*", 0);
                sub.sub_string = expr.to_owned();
                sub.expression_type = kind.map(str::to_owned);
                return Ok((sub, Some(sel)));
            }
            return Ok((SubscriptionData::from_expression(topic, expr, 0), None));
        }
        match self.clients.subscription(group, topic) {
            Some(s) => {
                let wanted: i64 = req.ext_num_opt("subVersion").ok().flatten().unwrap_or(0);
                let sel = if unsupported::is_tag_type(s.expression_type.as_deref()) {
                    None
                } else {
                    // Known only from heartbeats: compiled (or refused), never matched
                    // as "everything".
                    Some(self.compile_selector(
                        req,
                        s.expression_type.as_deref().unwrap_or_default(),
                        &s.sub_string,
                    )?)
                };
                if s.sub_version < wanted {
                    return Err(fail(
                        req,
                        response::SUBSCRIPTION_NOT_LATEST,
                        "the consumer's subscription is not latest",
                    ));
                }
                Ok((s, sel))
            }
            None => Err(fail(
                req,
                response::SUBSCRIPTION_NOT_EXIST,
                format!("the consumer's subscription not exist, group: {group}"),
            )),
        }
    }

    pub(super) async fn pull(&self, req: &RemotingCommand) -> RemotingCommand {
        let started = std::time::Instant::now();
        let resp = self.pull_inner(req).await;
        self.metrics
            .pull_latency
            .observe(started.elapsed().as_secs_f64());
        if resp.code == response::SUCCESS {
            if let Some(topic) = req.ext("topic") {
                let labels = vec![("topic".to_string(), topic.to_owned())];
                self.metrics
                    .messages_out
                    .get_or_create(&labels)
                    .inc_by(resp.body.len() as u64);
                self.throughput
                    .got
                    .fetch_add(resp.body.len() as u64, Ordering::Relaxed);
                {
                    use super::stats_items::*;
                    let group = req.ext("consumerGroup").unwrap_or("");
                    let key = format!("{topic}@{group}");
                    let n = resp.body.len() as u64;
                    self.stats_items.add(GROUP_GET_NUMS, &key, n);
                    self.stats_items
                        .add(GROUP_GET_SIZE, &key, resp.body_len() as u64);
                    self.stats_items
                        .add(BROKER_GET_NUMS, &self.config.broker_cluster_name, n);
                }
                self.metrics
                    .bytes_out
                    .get_or_create(&labels)
                    .inc_by(resp.body_len() as u64);
            }
        }
        resp
    }

    pub(super) async fn pull_inner(&self, req: &RemotingCommand) -> RemotingCommand {
        let PullHeader {
            consumer_group: group,
            topic,
            queue_id,
            queue_offset: offset,
            max_msg_nums: max_nums,
            sys_flag,
            commit_offset,
            suspend_timeout_millis: suspend_ms,
            max_msg_bytes: max_bytes,
        } = match PullHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(tc) = self.topics.get(&topic) else {
            return fail(
                req,
                response::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            );
        };
        if queue_id < 0 || queue_id >= tc.read_queue_nums.max(1) {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("queueId {queue_id} out of range for {topic}"),
            );
        }
        let (sub, selector) = match self.subscription_for_pull(req, &group, &topic, sys_flag) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        // As RocketMQ with filterSupportRetry=false: a retry topic is served whole.
        let selector = selector.filter(|_| {
            !topic.starts_with("%RETRY%")
                || self.runtime.filter_support_retry.load(Ordering::Relaxed)
        });
        if sys_flag & pull_flag::COMMIT_OFFSET != 0 && commit_offset >= 0 && self.is_master() {
            self.offsets.commit(&group, &topic, queue_id, commit_offset);
        }
        let max_nums = usize::try_from(max_nums.clamp(1, 32)).unwrap_or(32);
        let max_bytes = usize::try_from(max_bytes.max(1)).unwrap_or(256 * 1024);
        let mut may_suspend =
            sys_flag & pull_flag::SUSPEND != 0 && self.runtime.long_polling.load(Ordering::Relaxed);
        let deadline = long_poll::suspend_deadline(
            tokio::time::Instant::now(),
            suspend_ms,
            self.runtime.suspend_max_ms.load(Ordering::Relaxed),
        );
        loop {
            let r = self.store.get_messages(
                &topic,
                queue_id,
                offset,
                max_nums,
                max_bytes,
                PullFilter {
                    sub: &sub,
                    selector: selector.as_ref(),
                },
            );
            let (code, next) = match r.status {
                GetMessageStatus::Found => (response::SUCCESS, r.next_begin_offset),
                GetMessageStatus::NoMatchedMessage | GetMessageStatus::OffsetFoundNull => {
                    (response::PULL_RETRY_IMMEDIATELY, r.next_begin_offset)
                }
                GetMessageStatus::NoMessageInQueue | GetMessageStatus::NoMatchedLogicQueue => {
                    if offset != 0 {
                        (response::PULL_OFFSET_MOVED, 0)
                    } else {
                        (response::PULL_NOT_FOUND, 0)
                    }
                }
                GetMessageStatus::OffsetTooSmall | GetMessageStatus::OffsetOverflowBadly => {
                    (response::PULL_OFFSET_MOVED, r.next_begin_offset)
                }
                GetMessageStatus::OffsetOverflowOne => (response::PULL_NOT_FOUND, offset),
            };
            if code == response::PULL_NOT_FOUND && may_suspend {
                may_suspend = false;
                let woken = self.hold.wait(&topic, queue_id, offset);
                // An entry may have landed between the read and the registration.
                if self.store.max_offset_in_queue(&topic, queue_id) <= offset {
                    let _ = tokio::time::timeout_at(deadline, woken).await;
                }
                continue;
            }
            let suggest = self.suggest_broker(&r.messages);
            let resp = RemotingCommand::response_to(req, code)
                .with_ext("suggestWhichBrokerId", suggest)
                .with_ext("nextBeginOffset", next)
                .with_ext("minOffset", r.min_offset)
                .with_ext("maxOffset", r.max_offset);
            debug!(topic = %topic, queue_id, offset, code, next, sub = %sub.sub_string, codes = ?sub.code_set, "pull");
            let remark = format!("{:?}", r.status);
            let mut resp = resp.with_remark(remark);
            if code == response::SUCCESS {
                resp.body = r.messages;
            }
            return resp;
        }
    }

    /// `suggestWhichBrokerId` of a pull answer. With `slaveReadEnable`, a master points
    /// readers of cold data (further behind the CommitLog head than
    /// `accessMessageInMemoryMaxRatio` % of RAM) at `whichBrokerWhenConsumeSlowly`, and a
    /// slave points readers of hot data back at the master (0). Otherwise 0.
    pub(super) fn suggest_broker(&self, records: &[Bytes]) -> i64 {
        if !self.config.slave_read_enable {
            return 0;
        }
        let (is_master, id) = self.role.read(|r| (r.is_master(), r.broker_id));
        let Some(first) = records.first() else {
            return if is_master { 0 } else { id };
        };
        let phys = crate::store::format::RecordView::parse(first)
            .map_or(0, |v| u64::try_from(v.physical_offset()).unwrap_or(0));
        let behind = self.store.max_phy_offset().saturating_sub(phys);
        let in_memory = total_memory_bytes()
            .saturating_mul(self.config.access_message_in_memory_max_ratio)
            / 100;
        let cold = behind > in_memory;
        match (is_master, cold) {
            (true, true) => self.config.which_broker_when_consume_slowly,
            (true, false) | (false, false) => 0,
            (false, true) => id,
        }
    }
}

/// What a pull keeps: the tag subscription by tags code, or the SQL92 selector by the
/// record's properties.
struct PullFilter<'a> {
    sub: &'a SubscriptionData,
    selector: Option<&'a crate::sql92::Expr>,
}

impl crate::store::MessageFilter for PullFilter<'_> {
    fn by_tags_code(&self, tags_code: i64) -> bool {
        self.selector.is_some() || self.sub.matches(tags_code)
    }

    fn by_record(&self, record: &[u8]) -> bool {
        match self.selector {
            None => true,
            Some(sel) => crate::store::format::RecordView::parse(record).is_ok_and(|v| {
                let props = v.properties();
                sel.matches(|k| crate::store::find_property(props, k))
            }),
        }
    }
}
