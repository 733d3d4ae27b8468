//! Queries: by key or unique key (QUERY_MESSAGE), by offset id (VIEW_MESSAGE_BY_ID), and
//! a queue's min/max offsets, offset by time and earliest store time.

use super::{fail, ok, Broker};
use crate::remoting::codes::{request, response};
use crate::remoting::{HeaderError, RemotingCommand};
use crate::store::BoundaryType;

/// The header of QUERY_MESSAGE (`QueryMessageRequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMessageHeader {
    /// `topic`.
    pub topic: String,
    /// `key`.
    pub key: String,
    /// `maxNum` (32 when absent).
    pub max_num: usize,
    /// `beginTimestamp` (0 when absent).
    pub begin_timestamp: i64,
    /// `endTimestamp` (unbounded when absent).
    pub end_timestamp: i64,
}

impl QueryMessageHeader {
    /// Reads the header.
    ///
    /// # Errors
    /// A missing topic or key; a field that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<Self, HeaderError> {
        Ok(QueryMessageHeader {
            topic: req.ext_required("topic")?.to_owned(),
            key: req.ext_required("key")?.to_owned(),
            max_num: req.ext_num_opt("maxNum")?.unwrap_or(32),
            begin_timestamp: req.ext_num_opt("beginTimestamp")?.unwrap_or(0),
            end_timestamp: req.ext_num_opt("endTimestamp")?.unwrap_or(i64::MAX),
        })
    }
}

/// A header naming one queue (`topic`, `queueId`): GET_MAX_OFFSET, GET_MIN_OFFSET,
/// SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHeader {
    /// `topic`.
    pub topic: String,
    /// `queueId`.
    pub queue_id: i32,
}

impl QueueHeader {
    /// Reads the header.
    ///
    /// # Errors
    /// A missing topic or queue id; a queue id that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<Self, HeaderError> {
        Ok(QueueHeader {
            topic: req.ext_required("topic")?.to_owned(),
            queue_id: req.ext_num("queueId")?,
        })
    }
}

impl Broker {
    pub(super) fn query_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let QueryMessageHeader {
            topic,
            key,
            max_num: mut max,
            begin_timestamp: begin,
            end_timestamp: end,
        } = match QueryMessageHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        if req.ext_bool("_UNIQUE_KEY_QUERY") == Some(true) {
            max = 32;
        }
        let found = self
            .store
            .query_by_key(&topic, &key, max.clamp(1, 64), begin, end);
        if found.is_empty() {
            return fail(
                req,
                response::QUERY_NOT_FOUND,
                format!("no message with key {key} in {topic}"),
            );
        }
        let mut resp = ok(req)
            .with_ext("indexLastUpdateTimestamp", crate::store::now_ms())
            .with_ext("indexLastUpdatePhyoffset", self.store.dispatched_offset());
        resp.body = found;
        resp
    }

    pub(super) fn offset_queries(&self, req: &RemotingCommand) -> RemotingCommand {
        let (topic, queue_id) = match QueueHeader::parse(req) {
            Ok(h) => (h.topic, h.queue_id),
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let topic = topic.as_str();
        match req.code {
            request::GET_MAX_OFFSET => {
                ok(req).with_ext("offset", self.store.max_offset_in_queue(topic, queue_id))
            }
            request::GET_MIN_OFFSET => {
                ok(req).with_ext("offset", self.store.min_offset_in_queue(topic, queue_id))
            }
            request::SEARCH_OFFSET_BY_TIMESTAMP => match req.ext_num::<i64>("timestamp") {
                Ok(ts) => {
                    let b = if req
                        .ext("boundaryType")
                        .is_some_and(|b| b.eq_ignore_ascii_case("upper"))
                    {
                        BoundaryType::Upper
                    } else {
                        BoundaryType::Lower
                    };
                    ok(req).with_ext(
                        "offset",
                        self.store.search_offset_by_time(topic, queue_id, ts, b),
                    )
                }
                Err(e) => fail(req, response::SYSTEM_ERROR, e),
            },
            _ => match self.store.earliest_store_time(topic, queue_id) {
                Some(ts) => ok(req).with_ext("timestamp", ts),
                None => fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("no message in {topic}:{queue_id}"),
                ),
            },
        }
    }

    /// VIEW_MESSAGE_BY_ID: the record at a physical offset.
    pub(super) fn view_message(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.ext_num::<u64>("offset") {
            Ok(off) => match self.store.read_message(off) {
                Some(rec) => ok(req).with_body(rec),
                None => fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("no message at offset {off}"),
                ),
            },
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }
}
