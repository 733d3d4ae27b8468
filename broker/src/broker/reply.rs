//! Request-reply (RocketMQ 4.6+): a responder sends its reply with SEND_REPLY_MESSAGE
//! (324, long header names) or SEND_REPLY_MESSAGE_V2 (325) to `<cluster>_REPLY_TOPIC`;
//! the broker pushes it to the requesting client named in `REPLY_TO_CLIENT` with
//! PUSH_REPLY_MESSAGE_TO_CLIENT (326) on that client's connection, and stores it in the
//! reply topic when `storeReplyMessageEnable` (default true). The answer to the
//! responder says whether the push reached the requester.

use std::time::Duration;

use tracing::warn;

use super::send::SendHeader;
use super::{fail, Broker};
use crate::remoting::codes::{request, response};
use crate::remoting::{Connection, RemotingCommand};
use crate::store::{encode_properties, now_ms, parse_properties};

/// The property naming the requesting client.
pub const REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
/// The property the broker stamps with the push time.
pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";
/// How long the requester has to acknowledge a pushed reply.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The reply topic of a cluster.
#[must_use]
pub fn reply_topic(cluster: &str) -> String {
    format!("{cluster}_REPLY_TOPIC")
}

impl Broker {
    /// SEND_REPLY_MESSAGE / SEND_REPLY_MESSAGE_V2.
    pub(super) async fn send_reply(
        &self,
        conn: &Connection,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        if let Some(refused) = self.refuse_writes(req) {
            return refused;
        }
        let h = match SendHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let pushed = self.push_reply(conn, req, &h).await;
        let stored = if self.config.store_reply_message_enable {
            Some(self.send_inner(conn, req).await)
        } else {
            None
        };
        match (pushed, stored) {
            (Err(remark), _) => fail(req, response::SYSTEM_ERROR, remark),
            (Ok(()), Some(s)) if s.code == response::SUCCESS => s,
            (Ok(()), Some(s)) => {
                warn!(code = s.code, remark = ?s.remark, "reply pushed but not stored");
                RemotingCommand::response_to(req, response::SUCCESS)
                    .with_ext("msgId", "0")
                    .with_ext("queueId", h.queue_id.max(0))
                    .with_ext("queueOffset", 0)
            }
            (Ok(()), None) => RemotingCommand::response_to(req, response::SUCCESS)
                .with_ext("msgId", "0")
                .with_ext("queueId", h.queue_id.max(0))
                .with_ext("queueOffset", 0),
        }
    }

    /// PUSH_REPLY_MESSAGE_TO_CLIENT to the requester; the remark of a failure.
    async fn push_reply(
        &self,
        conn: &Connection,
        req: &RemotingCommand,
        h: &SendHeader,
    ) -> Result<(), String> {
        let mut props = parse_properties(&h.properties);
        let Some(client) = props.get(REPLY_TO_CLIENT).cloned() else {
            warn!("{REPLY_TO_CLIENT} is null, can not reply message");
            return Err(format!(
                "reply message properties[{REPLY_TO_CLIENT}] is null"
            ));
        };
        let Some(target) = self.clients.producer_connection_of_client(&client) else {
            warn!(client = %client, "push reply message fail, channel not found");
            return Err(format!(
                "push reply message fail, channel of <{client}> not found."
            ));
        };
        props.insert(PUSH_REPLY_TIME.into(), now_ms().to_string());
        let cmd = RemotingCommand::request(request::PUSH_REPLY_MESSAGE_TO_CLIENT)
            .with_ext("producerGroup", &h.producer_group)
            .with_ext("topic", &h.topic)
            .with_ext(
                "defaultTopic",
                req.ext("defaultTopic").or(req.ext("c")).unwrap_or("TBW102"),
            )
            .with_ext("defaultTopicQueueNums", h.default_topic_queue_nums)
            .with_ext("queueId", h.queue_id)
            .with_ext("sysFlag", h.sys_flag)
            .with_ext("bornTimestamp", h.born_timestamp)
            .with_ext("flag", h.flag)
            .with_ext(
                "properties",
                encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            )
            .with_ext("reconsumeTimes", h.reconsume_times)
            .with_ext("unitMode", false)
            .with_ext("bornHost", conn.peer)
            .with_ext("storeHost", self.store_host)
            .with_ext("storeTimestamp", now_ms())
            .with_body(req.body_bytes());
        match target.invoke(cmd, PUSH_TIMEOUT).await {
            Ok(r) if r.code == response::SUCCESS => Ok(()),
            Ok(r) => {
                warn!(client = %client, code = r.code, remark = ?r.remark, "push reply message refused");
                Err(format!("push reply message to {client}fail."))
            }
            Err(e) => {
                warn!(client = %client, error = %e, "push reply message failed");
                Err(format!("push reply message to {client}fail."))
            }
        }
    }
}
