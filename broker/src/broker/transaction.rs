//! Transactional messages, as RocketMQ stores them.
//!
//! - A half message (`TRAN_MSG=true`, or the prepared bits of `sysFlag`) is stored in
//!   `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 with its destination in `REAL_TOPIC` /
//!   `REAL_QID`; consumers cannot see it.
//! - END_TRANSACTION (37) commits it (a copy goes to the real topic and queue with the
//!   commit bits in `sysFlag` and `TRAN_MSG` removed) or rolls it back; either way an
//!   op message (tag `d`, body `<half queue offset>,`) in `RMQ_SYS_TRANS_OP_HALF_TOPIC`
//!   records that the half message is resolved.
//! - The check-back: every `transactionCheckInterval`, each unresolved half message
//!   older than `transactionTimeOut` (or its `CHECK_IMMUNITY_TIME_IN_SECONDS`) is
//!   written again at the end of the half queue with `TRANSACTION_CHECK_TIMES` + 1 and
//!   `TRAN_PREPARED_QUEUE_OFFSET` naming the original, and CHECK_TRANSACTION_STATE (39)
//!   goes to a live producer of its group, which answers with END_TRANSACTION. After
//!   `transactionCheckMax` checks it goes to `TRANS_CHECK_MAX_TIME_TOPIC` instead.
//!
//! Progress is kept where RocketMQ keeps it: the consumer offsets of group
//! `CID_RMQ_SYS_TRANS` on the half and op topics (`consumerOffset.json`, copied by
//! slaves). A master rebuilds the unresolved set from those offsets and the two queues
//! when it starts or is promoted. Copies of one half message share its original queue
//! offset, so a commit of any copy resolves the transaction once; a commit whose op
//! message was lost in a crash is found by its `UNIQ_KEY` in the real topic before the
//! producer is asked again, so it is not delivered twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{fail, ok, Broker};
use crate::protocol::msg_id::offset_msg_id;
use crate::remoting::codes::{request, response};
use crate::remoting::{HeaderError, RemotingCommand};
use crate::store::format::{property, sys_flag};
use crate::store::{
    decode_record, encode_properties, encode_record, now_ms, parse_properties, MessageStore,
    MessageToStore, PutResult, StoreError, StoredMessage,
};
use crate::sync::lock;

/// Where half messages wait.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where resolutions are recorded.
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Where half messages go after `transactionCheckMax` check-backs.
pub const CHECK_MAX_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// The group whose offsets on the half and op topics are the service's progress.
pub const SYS_GROUP: &str = "CID_RMQ_SYS_TRANS";
/// The tag of op messages.
pub const REMOVE_TAG: &str = "d";

/// Property names.
pub mod prop {
    /// Producer group of a transactional message.
    pub const PGROUP: &str = "PGROUP";
    /// Check-backs so far.
    pub const CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    /// Per-message override of `transactionTimeOut`, seconds.
    pub const CHECK_IMMUNITY: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// The queue offset of the original half message, on a copy.
    pub const PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    pub use crate::broker::schedule::prop::{REAL_QID, REAL_TOPIC};
}

/// `transactionTimeOut`, `transactionCheckMax`, `transactionCheckInterval`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A half message younger than this is not checked back.
    pub timeout: Duration,
    /// Check-backs before a half message is discarded.
    pub check_max: i32,
    /// Check period.
    pub interval: Duration,
}

/// Rewrites a message into its half form (destination kept in properties).
pub fn to_half(m: &mut MessageToStore) {
    let mut props = parse_properties(&m.properties);
    props.insert(prop::REAL_TOPIC.into(), m.topic.clone());
    props.insert(prop::REAL_QID.into(), m.queue_id.to_string());
    m.properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    m.topic = HALF_TOPIC.into();
    m.queue_id = 0;
    m.sys_flag &= !sys_flag::TRANSACTION_TYPE_MASK;
}

/// The header of END_TRANSACTION.
#[derive(Debug, Clone)]
pub struct EndTransactionHeader {
    pub producer_group: String,
    pub tran_state_table_offset: i64,
    pub commit_log_offset: i64,
    pub commit_or_rollback: i32,
    pub from_transaction_check: bool,
    pub msg_id: String,
}

impl EndTransactionHeader {
    /// Reads the header.
    ///
    /// # Errors
    /// A missing required field, a field that is not a number.
    pub fn parse(req: &RemotingCommand) -> Result<Self, HeaderError> {
        Ok(EndTransactionHeader {
            producer_group: req.ext_required("producerGroup")?.to_owned(),
            tran_state_table_offset: req.ext_num("tranStateTableOffset")?,
            commit_log_offset: req.ext_num("commitLogOffset")?,
            commit_or_rollback: req.ext_num("commitOrRollback")?,
            from_transaction_check: req.ext_bool("fromTransactionCheck").unwrap_or(false),
            msg_id: req.ext("msgId").unwrap_or("").to_owned(),
        })
    }
}

/// One unresolved half message (its latest copy).
#[derive(Debug, Clone)]
struct Pending {
    /// Queue offset of the original half message: what every copy shares.
    origin: i64,
    /// CommitLog offset of this copy.
    phys: u64,
    born_ms: i64,
    immunity_ms: i64,
    check_times: i32,
    /// Taken by a commit, rollback or check in progress.
    claimed: bool,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    /// Half queue offset of the latest copy → its transaction.
    pending: BTreeMap<i64, Pending>,
    /// Original offset → latest copy's offset.
    by_origin: HashMap<i64, i64>,
    /// One past the highest half queue offset known.
    next_half: i64,
    /// Op queue offset → the half offset it resolves (ops not yet behind progress).
    ops: BTreeMap<i64, i64>,
    /// One past the highest op queue offset known.
    next_op: i64,
}

impl State {
    fn insert(&mut self, offset: i64, p: Pending) {
        if let Some(old) = self.by_origin.insert(p.origin, offset) {
            if old != offset {
                self.pending.remove(&old);
            }
        }
        self.pending.insert(offset, p);
        self.next_half = self.next_half.max(offset + 1);
    }

    fn remove(&mut self, offset: i64) -> Option<Pending> {
        let p = self.pending.remove(&offset)?;
        if self.by_origin.get(&p.origin) == Some(&offset) {
            self.by_origin.remove(&p.origin);
        }
        Some(p)
    }

    /// Progress on the half queue: the oldest unresolved copy, else the end.
    fn half_progress(&self) -> i64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_half)
    }

    /// Progress on the op queue: the first op still needed by a rebuild.
    fn op_progress(&mut self) -> i64 {
        let half = self.half_progress();
        while let Some((&op, &h)) = self.ops.iter().next() {
            if h >= half {
                return op;
            }
            self.ops.remove(&op);
        }
        self.next_op
    }
}

enum Claim {
    Taken(i64, Pending),
    Busy,
    Resolved,
}

/// Counters (runtime info).
#[derive(Debug, Default)]
pub struct Counters {
    pub half: AtomicU64,
    pub committed: AtomicU64,
    pub rolled_back: AtomicU64,
    pub checks: AtomicU64,
    pub discarded: AtomicU64,
}

/// The transaction service's state.
#[derive(Debug, Default)]
pub struct Transactions {
    state: Mutex<State>,
    ready: tokio::sync::Notify,
    /// What happened so far.
    pub counters: Counters,
}

fn pending_of(m: &StoredMessage) -> Pending {
    pending_from(
        &m.properties,
        m.queue_offset,
        u64::try_from(m.physical_offset).unwrap_or(0),
        m.born_timestamp,
    )
}

/// A half message's transaction state from its properties, queue and CommitLog offsets.
fn pending_from(properties: &str, offset: i64, phys: u64, born_ms: i64) -> Pending {
    let props = parse_properties(properties);
    let num = |k: &str| props.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    Pending {
        origin: num(prop::PREPARED_QUEUE_OFFSET).unwrap_or(offset),
        phys,
        born_ms,
        immunity_ms: num(prop::CHECK_IMMUNITY)
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(-1),
        check_times: num(prop::CHECK_TIMES)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(0),
        claimed: false,
    }
}

/// The half offsets an op message resolves (`"12,13,"` or `"12"`).
fn op_offsets(body: &[u8]) -> impl Iterator<Item = i64> + '_ {
    std::str::from_utf8(body)
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.trim().parse::<i64>().ok())
}

/// Reads a queue from `from` to its end, decoding each record; returns the end.
fn scan_queue(
    store: &MessageStore,
    cq: Option<&crate::store::ConsumeQueue>,
    from: i64,
    mut each: impl FnMut(i64, &StoredMessage),
) -> i64 {
    let Some(cq) = cq else {
        return from;
    };
    let mut off = from;
    loop {
        let entries = cq.entries(off, 256);
        if entries.is_empty() {
            return off;
        }
        for e in entries {
            let rec = u64::try_from(e.commitlog_offset)
                .ok()
                .and_then(|p| store.read_message(p))
                .and_then(|r| decode_record(&r).ok());
            if let Some(m) = rec {
                each(off, &m);
            }
            off += 1;
        }
    }
}

fn stored_error(e: StoreError) -> String {
    e.to_string()
}

impl Transactions {
    /// Appends half messages (already in half form) and records them, in one step, so
    /// the progress never passes a half message that is stored but not yet known.
    ///
    /// # Errors
    /// The store's.
    pub fn append_half(
        &self,
        store: &MessageStore,
        msgs: &[MessageToStore],
    ) -> Result<PutResult, StoreError> {
        let mut st = lock(&self.state);
        let r = store.append_messages(msgs)?;
        for (i, (m, phys)) in msgs.iter().zip(&r.physical_offsets).enumerate() {
            let offset = r.queue_offset + i as i64;
            st.insert(
                offset,
                pending_from(&m.properties, offset, *phys, m.born_timestamp),
            );
        }
        Ok(r)
    }

    fn append_op(&self, store: &MessageStore, half_offset: i64, template: &MessageToStore) {
        let op = MessageToStore {
            topic: OP_TOPIC.into(),
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: now_ms(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from(format!("{half_offset},")),
            properties: encode_properties([(property::TAGS, REMOVE_TAG)]),
            ..template.clone()
        };
        let mut st = lock(&self.state);
        match store.append_messages(std::slice::from_ref(&op)) {
            Ok(r) => {
                st.ops.insert(r.queue_offset, half_offset);
                st.next_op = st.next_op.max(r.queue_offset + 1);
            }
            // The op is lost: the half message is checked back later, and a commit is
            // then found in its real topic (see `already_committed`).
            Err(e) => warn!(error = %e, half_offset, "could not record a transaction's end"),
        }
    }

    /// Forgets everything (this broker is no longer a master).
    fn reset(&self) {
        *lock(&self.state) = State::default();
    }

    fn is_ready(&self) -> bool {
        lock(&self.state).ready
    }

    /// Waits until the unresolved set is rebuilt, at most `limit`.
    async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.ready.notified();
            if self.is_ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_ready();
            }
        }
    }

    /// Takes the unresolved copy of the transaction of the half message at `offset`
    /// (any of its copies, found by `origin`).
    fn try_claim(&self, offset: i64, origin: i64) -> Claim {
        let mut st = lock(&self.state);
        let current = if st.pending.contains_key(&offset) {
            offset
        } else {
            match st.by_origin.get(&origin) {
                Some(c) => *c,
                None => return Claim::Resolved,
            }
        };
        match st.pending.get_mut(&current) {
            None => Claim::Resolved,
            Some(p) if p.claimed => Claim::Busy,
            Some(p) => {
                p.claimed = true;
                Claim::Taken(current, p.clone())
            }
        }
    }

    /// [`Self::try_claim`], waiting up to 5 s while a check or another end holds it.
    async fn claim(&self, offset: i64, origin: i64) -> Option<(i64, Pending)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.try_claim(offset, origin) {
                Claim::Taken(o, p) => return Some((o, p)),
                Claim::Resolved => return None,
                Claim::Busy if tokio::time::Instant::now() >= deadline => return None,
                Claim::Busy => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn unclaim(&self, offset: i64) {
        if let Some(p) = lock(&self.state).pending.get_mut(&offset) {
            p.claimed = false;
        }
    }

    fn resolved(&self, offset: i64) {
        lock(&self.state).remove(offset);
    }

    /// The progress to persist: (half queue, op queue).
    fn progress(&self) -> (i64, i64) {
        let mut st = lock(&self.state);
        (st.half_progress(), st.op_progress())
    }

    /// How many transactions are unresolved.
    pub fn unresolved(&self) -> usize {
        lock(&self.state).pending.len()
    }
}

impl Broker {
    pub(super) fn persist_transaction_progress(&self) {
        if !self.transactions.is_ready() {
            return;
        }
        let (half, op) = self.transactions.progress();
        self.offsets.commit(SYS_GROUP, HALF_TOPIC, 0, half);
        self.offsets.commit(SYS_GROUP, OP_TOPIC, 0, op);
    }

    /// Rebuilds the unresolved set from the progress offsets and the two queues (a
    /// master starting or promoted).
    async fn rebuild_transactions(&self) {
        // Everything stored before now must be in the queues first.
        let end = self.store.max_phy_offset();
        while self.store.dispatched_offset() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = &self.store;
        let half_cq = store.consume_queue(HALF_TOPIC, 0);
        let op_cq = store.consume_queue(OP_TOPIC, 0);
        let half_from = self
            .offsets
            .query(SYS_GROUP, HALF_TOPIC, 0)
            .unwrap_or(0)
            .max(half_cq.as_ref().map_or(0, |c| c.min_offset()));
        let op_from = self
            .offsets
            .query(SYS_GROUP, OP_TOPIC, 0)
            .unwrap_or(0)
            .max(op_cq.as_ref().map_or(0, |c| c.min_offset()));
        // Ops: which half offsets are resolved (an op may name several).
        let mut ops = BTreeMap::new();
        let mut resolved = HashSet::new();
        let op_end = scan_queue(store, op_cq.as_deref(), op_from, |off, m| {
            let mut needed = None;
            for h in op_offsets(&m.body).filter(|h| *h >= half_from) {
                resolved.insert(h);
                needed = needed.max(Some(h));
            }
            if let Some(h) = needed {
                ops.insert(off, h);
            }
        });
        // Half messages: the latest copy of each transaction none of whose copies is
        // resolved.
        let mut copies: BTreeMap<i64, (i64, Pending)> = BTreeMap::new();
        let mut done_origins = HashSet::new();
        let half_end = scan_queue(store, half_cq.as_deref(), half_from, |off, m| {
            let p = pending_of(m);
            if resolved.contains(&off) {
                done_origins.insert(p.origin);
            } else {
                copies.insert(p.origin, (off, p));
            }
        });
        let mut st = lock(&self.transactions.state);
        for (origin, (off, p)) in copies {
            if !done_origins.contains(&origin) && !st.by_origin.contains_key(&origin) {
                st.insert(off, p);
            }
        }
        st.next_half = st.next_half.max(half_end);
        st.next_op = st.next_op.max(op_end);
        st.ops.extend(ops);
        st.ready = true;
        let unresolved = st.pending.len();
        drop(st);
        self.transactions.ready.notify_waiters();
        info!(
            unresolved,
            half_from, op_from, "transaction service ready: unresolved half messages rebuilt"
        );
    }

    /// END_TRANSACTION: commit or roll back a half message.
    pub(super) async fn end_transaction(&self, req: &RemotingCommand) -> RemotingCommand {
        if !self.is_master() {
            warn!("Message store is slave mode, so end transaction is forbidden.");
            return fail(
                req,
                response::SLAVE_NOT_AVAILABLE,
                "Message store is slave mode, so end transaction is forbidden.",
            );
        }
        let h = match EndTransactionHeader::parse(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let commit = match h.commit_or_rollback & sys_flag::TRANSACTION_TYPE_MASK {
            sys_flag::TRANSACTION_COMMIT
                if h.commit_or_rollback == sys_flag::TRANSACTION_COMMIT =>
            {
                true
            }
            sys_flag::TRANSACTION_ROLLBACK
                if h.commit_or_rollback == sys_flag::TRANSACTION_ROLLBACK =>
            {
                false
            }
            0 if h.commit_or_rollback == 0 => {
                // UNKNOW: the check-back will ask again.
                if h.from_transaction_check {
                    warn!(group = %h.producer_group, msg_id = %h.msg_id, remark = ?req.remark,
                        "check-back answered: transaction still unknown");
                } else {
                    info!(group = %h.producer_group, msg_id = %h.msg_id, remark = ?req.remark,
                        "transaction state unknown; it will be checked back");
                }
                return ok(req);
            }
            _ => {
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!(
                        "commitOrRollback {} is none of 0, 8 (commit), 12 (rollback)",
                        h.commit_or_rollback
                    ),
                )
            }
        };
        if !self.transactions.wait_ready(Duration::from_secs(5)).await {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "the transaction service is still starting; the transaction will be checked back",
            );
        }
        let Some(half) = u64::try_from(h.commit_log_offset)
            .ok()
            .and_then(|p| self.store.read_message(p))
            .and_then(|r| decode_record(&r).ok())
            .filter(|m| m.topic == HALF_TOPIC)
        else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "Find prepared transaction message failed",
            );
        };
        let props = parse_properties(&half.properties);
        if props.get(prop::PGROUP).map(String::as_str) != Some(h.producer_group.as_str()) {
            return fail(req, response::SYSTEM_ERROR, "The producer group wrong");
        }
        if half.queue_offset != h.tran_state_table_offset {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "The transaction state table offset wrong",
            );
        }
        let origin = pending_of(&half).origin;
        let Some((current, pending)) = self.transactions.claim(half.queue_offset, origin).await
        else {
            debug!(msg_id = %h.msg_id, "transaction already ended");
            return fail(
                req,
                response::SYSTEM_ERROR,
                "the transaction has already been committed or rolled back",
            );
        };
        let template = self.op_template();
        if commit {
            let m = match self.read_half(pending.phys) {
                Some(m) => m,
                None => {
                    self.transactions.unclaim(current);
                    return fail(
                        req,
                        response::SYSTEM_ERROR,
                        "Find prepared transaction message failed",
                    );
                }
            };
            let Some(final_msg) = final_message(&m, pending.phys) else {
                self.transactions.unclaim(current);
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    "the half message has no REAL_TOPIC",
                );
            };
            if let Err(e) = self.put_final(final_msg).await {
                self.transactions.unclaim(current);
                warn!(error = %e, "transaction commit could not be stored");
                return fail(req, response::SYSTEM_ERROR, e);
            }
            self.transactions
                .counters
                .committed
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.transactions
                .counters
                .rolled_back
                .fetch_add(1, Ordering::Relaxed);
        }
        self.transactions.append_op(&self.store, current, &template);
        self.transactions.resolved(current);
        self.persist_transaction_progress();
        ok(req)
    }

    fn op_template(&self) -> MessageToStore {
        MessageToStore {
            born_host: self.store_host,
            store_host: self.store_host,
            ..MessageToStore::default()
        }
    }

    fn read_half(&self, phys: u64) -> Option<StoredMessage> {
        self.store
            .read_message(phys)
            .and_then(|r| decode_record(&r).ok())
    }

    /// Stores a committed message as a send would: flushed and replicated as configured.
    async fn put_final(&self, mut msg: MessageToStore) -> Result<(), String> {
        let t = super::unsupported::traits(&msg.properties, msg.sys_flag);
        if t.is_timer() && self.config.timer_wheel_enable {
            if let Err(remark) = self.schedule_timer(&mut msg) {
                // Accepted as a half message already: deliver it now rather than lose it.
                warn!(remark = %remark, "committed timer message delivered at once");
            }
        } else {
            super::schedule::apply_delay(&mut msg, self.store.delay_levels_ms().len());
        }
        self.ensure_topic(&msg.topic, msg.queue_id);
        let msgs = std::slice::from_ref(&msg);
        let r = self.store.append_messages(msgs).map_err(stored_error)?;
        self.data_appended();
        match self.await_acknowledged(msgs, &r).await {
            Ok(code) if code == response::SUCCESS => Ok(()),
            // The record is stored; only its flush or replication was not confirmed
            // in time, as a send answering FLUSH_*_TIMEOUT.
            Ok(code) => {
                warn!(
                    code,
                    "committed transaction stored but not confirmed in time"
                );
                Ok(())
            }
            Err(e) => Err(stored_error(e)),
        }
    }

    /// Whether the transaction of a half message was committed already (its op message
    /// lost in a crash): its `UNIQ_KEY` in the real topic with the commit bits.
    fn already_committed(&self, m: &StoredMessage) -> bool {
        let props = parse_properties(&m.properties);
        let (Some(topic), Some(key)) = (props.get(prop::REAL_TOPIC), props.get(property::UNIQ_KEY))
        else {
            return false;
        };
        self.store
            .query_by_key(
                topic,
                key,
                32,
                m.born_timestamp.saturating_sub(1000),
                i64::MAX,
            )
            .iter()
            .filter_map(|r| decode_record(r).ok())
            .any(|f| {
                f.sys_flag & sys_flag::TRANSACTION_TYPE_MASK == sys_flag::TRANSACTION_COMMIT
                    && f.property(property::UNIQ_KEY).as_deref() == Some(key.as_str())
            })
    }

    /// One check round: every unresolved half message past its timeout is checked back
    /// (or discarded past `transactionCheckMax`).
    pub(super) async fn check_transactions(&self, s: Settings) {
        let now = now_ms();
        let due: Vec<(i64, i64)> = lock(&self.transactions.state)
            .pending
            .iter()
            .filter(|(_, p)| {
                let immunity = if p.immunity_ms >= 0 {
                    p.immunity_ms
                } else {
                    s.timeout.as_millis() as i64
                };
                now.saturating_sub(p.born_ms) >= immunity
            })
            .map(|(o, p)| (*o, p.origin))
            .collect();
        debug!(
            due = due.len(),
            unresolved = self.transactions.unresolved(),
            "transaction check round"
        );
        let template = self.op_template();
        for (offset, origin) in due {
            if !self.is_master() {
                return;
            }
            let Claim::Taken(offset, p) = self.transactions.try_claim(offset, origin) else {
                continue;
            };
            let Some(m) = self.read_half(p.phys) else {
                // Gone (retention deleted it): nothing to check any more.
                warn!(offset, "half message no longer in the store; dropped");
                self.transactions.resolved(offset);
                continue;
            };
            if self.already_committed(&m) {
                info!(
                    offset,
                    "half message found committed; its op message is written again"
                );
                self.transactions.append_op(&self.store, offset, &template);
                self.transactions.resolved(offset);
                continue;
            }
            if p.check_times >= s.check_max {
                self.discard(offset, &m, &template).await;
                continue;
            }
            match self.put_back(&m, &p) {
                Ok(new_offset) => {
                    self.transactions.resolved(offset);
                    self.transactions
                        .counters
                        .checks
                        .fetch_add(1, Ordering::Relaxed);
                    self.send_check(new_offset);
                }
                Err(e) => {
                    warn!(error = %e, offset, "could not re-store a half message for its check");
                    self.transactions.unclaim(offset);
                }
            }
        }
        self.persist_transaction_progress();
    }

    async fn discard(&self, offset: i64, m: &StoredMessage, template: &MessageToStore) {
        let mut msg = m.to_store();
        msg.topic = CHECK_MAX_TOPIC.into();
        msg.queue_id = 0;
        if let Err(e) = self.store.put_messages(std::slice::from_ref(&msg)).await {
            warn!(error = %e, offset, "could not move a half message to TRANS_CHECK_MAX_TIME_TOPIC");
            self.transactions.unclaim(offset);
            return;
        }
        warn!(
            offset,
            msg_id = ?m.property(property::UNIQ_KEY),
            "half message checked back transactionCheckMax times without an answer; \
             moved to TRANS_CHECK_MAX_TIME_TOPIC"
        );
        self.transactions
            .counters
            .discarded
            .fetch_add(1, Ordering::Relaxed);
        self.transactions.append_op(&self.store, offset, template);
        self.transactions.resolved(offset);
    }

    /// Writes a half message again at the end of the half queue with one more check.
    fn put_back(&self, m: &StoredMessage, p: &Pending) -> Result<i64, StoreError> {
        let mut msg = m.to_store();
        let mut props = parse_properties(&msg.properties);
        props.insert(prop::CHECK_TIMES.into(), (p.check_times + 1).to_string());
        props.insert(prop::PREPARED_QUEUE_OFFSET.into(), p.origin.to_string());
        msg.properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let r = self
            .transactions
            .append_half(&self.store, std::slice::from_ref(&msg))?;
        self.data_appended();
        Ok(r.queue_offset)
    }

    /// CHECK_TRANSACTION_STATE to a live producer of the half message's group.
    fn send_check(&self, offset: i64) {
        let Some(phys) = lock(&self.transactions.state)
            .pending
            .get(&offset)
            .map(|p| p.phys)
        else {
            return;
        };
        let Some(m) = self.read_half(phys) else {
            return;
        };
        let props = parse_properties(&m.properties);
        let group = props.get(prop::PGROUP).cloned().unwrap_or_default();
        let Some(conn) = self.clients.producer_connection(&group) else {
            debug!(group = %group, offset, "Check transaction failed, channel is null");
            return;
        };
        let mut shown = m.to_store();
        if let Some(t) = props.get(prop::REAL_TOPIC) {
            shown.topic = t.clone();
        }
        shown.queue_id = props
            .get(prop::REAL_QID)
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let body = match encode_record(&shown, usize::MAX) {
            Ok(mut rec) => {
                rec.assign(m.queue_offset, m.physical_offset, m.store_timestamp);
                rec.bytes
            }
            Err(e) => {
                warn!(error = %e, "half message could not be encoded for its check-back");
                return;
            }
        };
        let uniq = props.get(property::UNIQ_KEY).cloned().unwrap_or_default();
        let cmd = RemotingCommand::request(request::CHECK_TRANSACTION_STATE)
            .with_ext("topic", &shown.topic)
            .with_ext("tranStateTableOffset", m.queue_offset)
            .with_ext("commitLogOffset", m.physical_offset)
            .with_ext("msgId", &uniq)
            .with_ext("transactionId", &uniq)
            .with_ext("offsetMsgId", offset_msg_id(self.store_host, phys))
            .with_ext("bname", &self.config.broker_name)
            .with_body(body);
        if conn.send_oneway(cmd) {
            debug!(group = %group, offset, peer = %conn.peer, "transaction checked back");
        } else {
            debug!(group = %group, "check-back not sent: the producer's connection is gone or full");
        }
    }
}

/// The committed copy of a half message: its real topic and queue, the commit bits,
/// `TRAN_MSG` and the half-topic properties removed.
fn final_message(half: &StoredMessage, half_phys: u64) -> Option<MessageToStore> {
    let drop = [
        property::TRAN_MSG,
        prop::CHECK_TIMES,
        prop::PREPARED_QUEUE_OFFSET,
    ];
    let m = super::schedule::destination_of(half, &drop, &[])?;
    Some(MessageToStore {
        sys_flag: (half.sys_flag & !sys_flag::TRANSACTION_TYPE_MASK) | sys_flag::TRANSACTION_COMMIT,
        prepared_transaction_offset: i64::try_from(half_phys).unwrap_or(0),
        ..m
    })
}

/// The service: rebuilds on becoming master, forgets on losing it, checks every
/// `transactionCheckInterval`.
pub fn spawn(b: &Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let b = Arc::clone(b);
    tokio::spawn(async move {
        let s = Settings {
            timeout: Duration::from_millis(b.config.transaction_timeout_ms),
            check_max: b.config.transaction_check_max,
            interval: Duration::from_millis(b.config.transaction_check_interval_ms.max(100)),
        };
        let tick = s.interval.min(Duration::from_secs(1));
        let mut last_check = tokio::time::Instant::now();
        loop {
            if !b.is_master() {
                if b.transactions.is_ready() {
                    b.transactions.reset();
                }
            } else if !b.transactions.is_ready() {
                b.rebuild_transactions().await;
                b.persist_transaction_progress();
            } else if last_check.elapsed() >= s.interval {
                last_check = tokio::time::Instant::now();
                b.check_transactions(s).await;
            }
            tokio::time::sleep(tick).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_form_and_final_form() {
        let mut m = MessageToStore {
            topic: "T".into(),
            queue_id: 2,
            sys_flag: sys_flag::TRANSACTION_PREPARED,
            properties: encode_properties([
                ("TRAN_MSG", "true"),
                ("PGROUP", "pg"),
                ("UNIQ_KEY", "U"),
            ]),
            ..MessageToStore::default()
        };
        to_half(&mut m);
        assert_eq!(
            (m.topic.as_str(), m.queue_id, m.sys_flag),
            (HALF_TOPIC, 0, 0)
        );
        let p = parse_properties(&m.properties);
        assert_eq!(
            (p["REAL_TOPIC"].as_str(), p["REAL_QID"].as_str()),
            ("T", "2")
        );
        let stored = StoredMessage {
            store_size: 0,
            body_crc: 0,
            queue_id: 0,
            flag: 0,
            queue_offset: 7,
            physical_offset: 700,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: m.born_host,
            store_timestamp: 2,
            store_host: m.store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"x"),
            topic: HALF_TOPIC.into(),
            properties: m.properties.clone(),
        };
        let f = final_message(&stored, 700).unwrap();
        assert_eq!((f.topic.as_str(), f.queue_id), ("T", 2));
        assert_eq!(
            f.sys_flag & sys_flag::TRANSACTION_TYPE_MASK,
            sys_flag::TRANSACTION_COMMIT
        );
        assert_eq!(f.prepared_transaction_offset, 700);
        let fp = parse_properties(&f.properties);
        assert!(!fp.contains_key("TRAN_MSG") && !fp.contains_key("REAL_TOPIC"));
        assert_eq!(fp["UNIQ_KEY"], "U");
        assert_eq!(pending_of(&stored).origin, 7);
    }

    #[test]
    fn op_bodies_of_both_shapes() {
        assert_eq!(op_offsets(b"12,13,").collect::<Vec<_>>(), vec![12, 13]);
        assert_eq!(op_offsets(b"7").collect::<Vec<_>>(), vec![7]);
        assert_eq!(op_offsets(b"\xff").count(), 0);
    }

    #[test]
    fn progress_waits_for_the_oldest_unresolved_and_the_ops_it_needs() {
        let mut st = State::default();
        let p = |origin| Pending {
            origin,
            phys: 0,
            born_ms: 0,
            immunity_ms: -1,
            check_times: 0,
            claimed: false,
        };
        st.insert(0, p(0));
        st.insert(1, p(1));
        st.insert(2, p(2));
        assert_eq!(st.half_progress(), 0);
        st.remove(0);
        st.ops.insert(0, 0);
        st.next_op = 1;
        assert_eq!((st.half_progress(), st.op_progress()), (1, 1));
        st.remove(2);
        st.ops.insert(1, 2);
        st.next_op = 2;
        // Op 1 resolves half 2, which is above progress 1: a rebuild still needs it.
        assert_eq!((st.half_progress(), st.op_progress()), (1, 1));
        // A copy of 1 at 3 replaces it.
        st.insert(3, p(1));
        assert_eq!(st.by_origin[&1], 3);
        assert_eq!(st.half_progress(), 3);
        assert_eq!(st.op_progress(), 2);
        st.remove(3);
        assert_eq!(st.half_progress(), 4);
    }
}
