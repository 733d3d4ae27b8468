//! A small producer/consumer on top of the remoting client, for `admin`, `bench` and
//! tests: route lookup, topic creation, send (single and batch), pull.

use crate::protocol::batch::{encode_batch, BatchEntry};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::protocol::{parse_body, ClusterInfo, TopicList, TopicRouteData};
use crate::remoting::codes::{request, response};
use crate::remoting::{RemotingClient, RemotingCommand, RemotingError};
use crate::store::encode_properties;

/// Client-side failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Transport failure.
    #[error(transparent)]
    Remoting(#[from] RemotingError),
    /// The server answered with an error code.
    #[error("{what}: code {code}: {remark}")]
    Refused {
        /// What was asked.
        what: String,
        /// Response code.
        code: i32,
        /// Server remark.
        remark: String,
    },
    /// A body could not be parsed.
    #[error("bad response body: {0}")]
    BadBody(String),
    /// Nothing to talk to.
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) fn refused(what: &str, r: &RemotingCommand) -> ClientError {
    ClientError::Refused {
        what: what.to_owned(),
        code: r.code,
        remark: r.remark.clone().unwrap_or_default(),
    }
}

pub mod acked;
pub mod role;

/// Splits a body of concatenated stored records (pull, query) by their size fields;
/// stops at the first size that does not fit.
pub fn split_records(mut body: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let size = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match usize::try_from(size) {
            Ok(n) if n > 0 && n <= body.len() => out.push(body.split_to(n)),
            _ => break,
        }
    }
    out
}

/// One message queue of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAddr {
    /// Broker name.
    pub broker_name: String,
    /// Master address.
    pub addr: String,
    /// Queue id.
    pub queue_id: i32,
}

/// Result of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// Response code (0 = SEND_OK, 10/11/12 = stored but not fully durable).
    pub code: i32,
    /// Offset message id(s).
    pub msg_id: String,
    /// Queue written.
    pub queue_id: i32,
    /// Queue offset of the (first) message.
    pub queue_offset: i64,
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct OutMessage {
    /// Tag.
    pub tag: Option<String>,
    /// Space-separated keys.
    pub keys: Option<String>,
    /// Body.
    pub body: Bytes,
}

impl OutMessage {
    fn properties(&self, uniq: &str) -> String {
        let mut p: Vec<(&str, &str)> = vec![("UNIQ_KEY", uniq), ("WAIT", "true")];
        if let Some(t) = &self.tag {
            p.push(("TAGS", t));
        }
        if let Some(k) = &self.keys {
            p.push(("KEYS", k));
        }
        encode_properties(p)
    }
}

/// The name server facing half: routes, topics, cluster.
#[derive(Debug, Clone)]
pub struct Client {
    /// Transport.
    pub remoting: Arc<RemotingClient>,
    /// Name server address.
    pub namesrv: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A send request with the V2 header (one-letter names) of ferrocket's producer.
fn send_request(
    code: i32,
    topic: &str,
    q: &QueueAddr,
    properties: String,
    sys_flag: i32,
) -> RemotingCommand {
    RemotingCommand::request(code)
        .with_ext("a", "ferrocket_producer")
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", q.queue_id)
        .with_ext("f", sys_flag)
        .with_ext("g", crate::store::now_ms())
        .with_ext("h", 0)
        .with_ext("i", properties)
}

fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "7F000001{:08X}{:016X}",
        std::process::id(),
        (crate::store::now_ms() as u64) << 20 | (n & 0xF_FFFF)
    )
}

impl Client {
    /// A client for the name server at `namesrv`.
    pub fn new(namesrv: &str) -> Self {
        Client {
            remoting: Arc::new(RemotingClient::new()),
            namesrv: namesrv.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The topic's route, or `None` when the name server does not know it.
    ///
    /// # Errors
    /// Transport failures or an unexpected answer.
    pub async fn route(&self, topic: &str) -> Result<Option<TopicRouteData>, ClientError> {
        let q = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
        let r = self.remoting.invoke(&self.namesrv, q, self.timeout).await?;
        match r.code {
            response::SUCCESS => parse_body(&r.body_bytes())
                .map(Some)
                .map_err(|e| ClientError::BadBody(e.to_string())),
            response::TOPIC_NOT_EXIST => Ok(None),
            _ => Err(refused("route", &r)),
        }
    }

    /// The writable queues of a topic's route, on masters.
    pub fn write_queues(route: &TopicRouteData) -> Vec<QueueAddr> {
        let mut out = Vec::new();
        for qd in &route.queue_datas {
            let Some(addr) = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == qd.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
            else {
                continue;
            };
            for q in 0..qd.write_queue_nums {
                out.push(QueueAddr {
                    broker_name: qd.broker_name.clone(),
                    addr: addr.clone(),
                    queue_id: q,
                });
            }
        }
        out
    }

    /// Cluster info.
    ///
    /// # Errors
    /// Transport failures or an unexpected answer.
    pub async fn cluster(&self) -> Result<ClusterInfo, ClientError> {
        let q = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO);
        let r = self.remoting.invoke(&self.namesrv, q, self.timeout).await?;
        if r.code != response::SUCCESS {
            return Err(refused("cluster info", &r));
        }
        parse_body(&r.body_bytes()).map_err(|e| ClientError::BadBody(e.to_string()))
    }

    /// All topics the name server knows.
    ///
    /// # Errors
    /// Transport failures or an unexpected answer.
    pub async fn topics(&self) -> Result<Vec<String>, ClientError> {
        let q = RemotingCommand::request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
        let r = self.remoting.invoke(&self.namesrv, q, self.timeout).await?;
        if r.code != response::SUCCESS {
            return Err(refused("topic list", &r));
        }
        let l: TopicList =
            parse_body(&r.body_bytes()).map_err(|e| ClientError::BadBody(e.to_string()))?;
        Ok(l.topic_list)
    }

    /// Creates (or updates) a topic on every master broker, then waits for its route.
    ///
    /// # Errors
    /// No broker, or a broker refusing.
    pub async fn create_topic(
        &self,
        topic: &str,
        queues: i32,
    ) -> Result<TopicRouteData, ClientError> {
        let info = self.cluster().await?;
        let masters: Vec<String> = info
            .broker_addr_table
            .values()
            .filter_map(|b| b.broker_addrs.get(&0).cloned())
            .collect();
        if masters.is_empty() {
            return Err(ClientError::Unavailable(
                "no master broker is registered".into(),
            ));
        }
        for addr in &masters {
            let q = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
                .with_ext("topic", topic)
                .with_ext("readQueueNums", queues)
                .with_ext("writeQueueNums", queues)
                .with_ext("defaultTopic", "TBW102")
                .with_ext("perm", 6)
                .with_ext("topicFilterType", "SINGLE_TAG")
                .with_ext("topicSysFlag", 0)
                .with_ext("order", false);
            let r = self.remoting.invoke(addr, q, self.timeout).await?;
            if r.code != response::SUCCESS {
                return Err(refused(&format!("create topic on {addr}"), &r));
            }
        }
        for _ in 0..100 {
            if let Some(r) = self.route(topic).await? {
                if Self::write_queues(&r).len() as i32 >= queues {
                    return Ok(r);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClientError::Unavailable(format!(
            "the route of {topic} did not appear"
        )))
    }

    /// Sends one message (V2 header), or a batch (SEND_BATCH_MESSAGE) when `msgs` has
    /// more than one.
    ///
    /// # Errors
    /// Transport failures or a refusal.
    pub async fn send(
        &self,
        topic: &str,
        q: &QueueAddr,
        msgs: &[OutMessage],
    ) -> Result<SendOutcome, ClientError> {
        let Some(first) = msgs.first() else {
            return Err(ClientError::Unavailable("nothing to send".into()));
        };
        let (code, body, props) = if msgs.len() == 1 {
            (
                request::SEND_MESSAGE_V2,
                first.body.clone(),
                first.properties(&unique_id()),
            )
        } else {
            let entries: Vec<BatchEntry> = msgs
                .iter()
                .map(|m| BatchEntry {
                    flag: 0,
                    body: m.body.clone(),
                    properties: m.properties(&unique_id()),
                })
                .collect();
            let b = encode_batch(&entries).map_err(ClientError::Unavailable)?;
            (request::SEND_BATCH_MESSAGE, b, String::new())
        };
        let req = send_request(code, topic, q, props, 0)
            .with_ext("m", msgs.len() > 1)
            .with_body(body);
        let r = self.remoting.invoke(&q.addr, req, self.timeout).await?;
        match r.code {
            response::SUCCESS
            | response::FLUSH_DISK_TIMEOUT
            | response::FLUSH_SLAVE_TIMEOUT
            | response::SLAVE_NOT_AVAILABLE => Ok(SendOutcome {
                code: r.code,
                msg_id: r.ext("msgId").unwrap_or("").to_owned(),
                queue_id: r.ext_num("queueId").unwrap_or(q.queue_id),
                queue_offset: r.ext_num("queueOffset").unwrap_or(-1),
            }),
            _ => Err(refused("send", &r)),
        }
    }

    /// Sends one message with a property string and `sysFlag` of the caller's (a
    /// transactional half message, a timer message).
    ///
    /// # Errors
    /// Transport failures or a refusal.
    pub async fn send_raw(
        &self,
        topic: &str,
        q: &QueueAddr,
        body: Bytes,
        properties: String,
        sys_flag: i32,
    ) -> Result<SendOutcome, ClientError> {
        let req =
            send_request(request::SEND_MESSAGE_V2, topic, q, properties, sys_flag).with_body(body);
        let r = self.remoting.invoke(&q.addr, req, self.timeout).await?;
        if r.code != response::SUCCESS {
            return Err(refused("send", &r));
        }
        Ok(SendOutcome {
            code: r.code,
            msg_id: r.ext("msgId").unwrap_or("").to_owned(),
            queue_id: r.ext_num("queueId").unwrap_or(q.queue_id),
            queue_offset: r.ext_num("queueOffset").unwrap_or(-1),
        })
    }

    /// A unique message id (`UNIQ_KEY`).
    #[must_use]
    pub fn unique_id() -> String {
        unique_id()
    }

    /// END_TRANSACTION, oneway as RocketMQ's producers send it: commit or roll back the
    /// half message a send answered with `half`.
    ///
    /// # Errors
    /// Transport failures; a half answer without a usable message id.
    pub async fn end_transaction(
        &self,
        addr: &str,
        group: &str,
        half: &SendOutcome,
        commit: bool,
    ) -> Result<(), ClientError> {
        let phys = crate::protocol::msg_id::decode_offset_msg_id(&half.msg_id)
            .map(|(_, p)| p)
            .ok_or_else(|| ClientError::Unavailable(format!("bad msgId {}", half.msg_id)))?;
        let req = RemotingCommand::request(request::END_TRANSACTION)
            .with_ext("producerGroup", group)
            .with_ext("tranStateTableOffset", half.queue_offset)
            .with_ext("commitLogOffset", phys)
            .with_ext("commitOrRollback", if commit { 8 } else { 12 })
            .with_ext("fromTransactionCheck", false)
            .with_ext("msgId", &half.msg_id);
        self.remoting.invoke_oneway(addr, req).await?;
        Ok(())
    }

    /// Pulls from `offset` (with the subscription in the request); returns the response.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn pull(
        &self,
        q: &QueueAddr,
        topic: &str,
        group: &str,
        offset: i64,
        suspend_ms: u64,
    ) -> Result<RemotingCommand, ClientError> {
        self.pull_filtered(q, topic, group, offset, suspend_ms, "TAG", "*")
            .await
    }

    /// [`Self::pull`] under a subscription expression (`TAG` or `SQL92`).
    ///
    /// # Errors
    /// Transport failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn pull_filtered(
        &self,
        q: &QueueAddr,
        topic: &str,
        group: &str,
        offset: i64,
        suspend_ms: u64,
        expression_type: &str,
        expression: &str,
    ) -> Result<RemotingCommand, ClientError> {
        let req = RemotingCommand::request(request::PULL_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", q.queue_id)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", if suspend_ms > 0 { 0x2 | 0x4 } else { 0x4 })
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", suspend_ms)
            .with_ext("subscription", expression)
            .with_ext("expressionType", expression_type)
            .with_ext("subVersion", 0);
        Ok(self
            .remoting
            .invoke(
                &q.addr,
                req,
                Duration::from_millis(suspend_ms) + self.timeout,
            )
            .await?)
    }

    /// Commits a consumer offset on the queue's broker.
    ///
    /// # Errors
    /// Transport failures or a refusal.
    pub async fn commit(
        &self,
        q: &QueueAddr,
        topic: &str,
        group: &str,
        offset: i64,
    ) -> Result<(), ClientError> {
        let req = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", q.queue_id)
            .with_ext("commitOffset", offset);
        let r = self.remoting.invoke(&q.addr, req, self.timeout).await?;
        if r.code != response::SUCCESS {
            return Err(refused("commit offset", &r));
        }
        Ok(())
    }

    /// The committed offset of a group on a queue (`None` when it has none).
    ///
    /// # Errors
    /// Transport failures or an unexpected answer.
    pub async fn committed(
        &self,
        q: &QueueAddr,
        topic: &str,
        group: &str,
    ) -> Result<Option<i64>, ClientError> {
        let req = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", q.queue_id)
            .with_ext("setZeroIfNotFound", false);
        let r = self.remoting.invoke(&q.addr, req, self.timeout).await?;
        match r.code {
            response::SUCCESS => Ok(r.ext_num("offset").ok()),
            response::QUERY_NOT_FOUND => Ok(None),
            _ => Err(refused("query offset", &r)),
        }
    }

    /// A queue's max offset.
    ///
    /// # Errors
    /// Transport failures or a refusal.
    pub async fn max_offset(&self, q: &QueueAddr, topic: &str) -> Result<i64, ClientError> {
        let req = RemotingCommand::request(request::GET_MAX_OFFSET)
            .with_ext("topic", topic)
            .with_ext("queueId", q.queue_id);
        let r = self.remoting.invoke(&q.addr, req, self.timeout).await?;
        if r.code != response::SUCCESS {
            return Err(refused("max offset", &r));
        }
        r.ext_num("offset").map_err(ClientError::from)
    }
}
