//! The master side of replication: accepts slaves on `haListenPort`, streams CommitLog
//! bytes to each, and tracks the largest offset a slave acknowledged (what a SYNC_MASTER
//! send waits for).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::role::RoleCell;
use super::wire::{self, Hello, HELLO_REQUEST, HELLO_WITH_ID, TRANSFER_BATCH};
use super::{HOUSEKEEPING, MAX_GAP_NOT_IN_SYNC};
use crate::store::MessageStore;
use crate::sync::lock;

/// Frames sent per wake-up before re-checking for new data.
const FRAMES_PER_ROUND: usize = 32;
/// HA connections served at once (slaves and anything else that connects).
const MAX_HA_CONNECTIONS: usize = 64;
/// Idle time before the master sends a heartbeat frame.
const MASTER_HEARTBEAT: Duration = Duration::from_secs(1);

/// Reads one 8-byte offset report, waiting at most [`HOUSEKEEPING`].
async fn read_offset(rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<i64> {
    tokio::time::timeout(HOUSEKEEPING, wire::read_offset(rd))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no offset from the slave")
        })?
}

/// Why a SYNC_MASTER send is not acknowledged by a slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// No slave connected, or every slave too far behind.
    #[error("no slave in sync")]
    SlaveNotAvailable,
    /// No slave reported the offset in time.
    #[error("no slave acknowledged in time")]
    Timeout,
    /// The log was cut or this broker's role changed after the append: an
    /// acknowledgement of the offset may be for other bytes, so none is given.
    #[error("the role changed before the message was replicated")]
    Superseded,
}

/// How SYNC_MASTER acknowledgements use the in-sync replica set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// `allAckInSyncStateSet` (ferrocket default **true**; RocketMQ's is false): a send is
    /// acknowledged once *every* slave of the in-sync set holds it, so any member can be
    /// promoted without losing it. False: once any one slave holds it (RocketMQ 4.x).
    pub all_ack: bool,
    /// `minInSyncReplicas` (1, counting the master): fewer in-sync replicas than this
    /// answer SLAVE_NOT_AVAILABLE. A SYNC_MASTER always needs at least one slave.
    pub min_in_sync_replicas: usize,
    /// `haMaxTimeSlaveNotCatchup` (15 s): a member that has not caught up with the
    /// master for this long leaves the set.
    pub max_time_not_catchup: Duration,
    /// `syncStateSetByController` (ferrocket, false): a member leaves the set only when
    /// the controller (the operator) confirms it, after recording the smaller set
    /// (ALTER_SYNC_STATE_SET); until then sends wait for it. Expansion needs no one.
    pub by_controller: bool,
    /// `masterLeaseMs` (ferrocket, 0 = off): a master that has not heard from
    /// `lease_quorum` slaves within this long takes no writes until it does — a master
    /// cut off from the majority of its group stops acknowledging within a bounded time
    /// (the operator sets it for groups of 3 or more).
    pub lease: Duration,
    /// `masterLeaseQuorum` (1): how many slaves make the majority with the master.
    pub lease_quorum: usize,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            all_ack: true,
            min_in_sync_replicas: 1,
            max_time_not_catchup: Duration::from_secs(15),
            by_controller: false,
            lease: Duration::ZERO,
            lease_quorum: 1,
        }
    }
}

/// One slave's progress, by its identity (remoting address; the peer address for a
/// slave that does not say who it is).
#[derive(Debug, Clone)]
struct Progress {
    acked: u64,
    /// The master's end at the previous report: reaching it is "caught up".
    target: u64,
    caught_up_at: Instant,
    connections: usize,
    /// Its last offset report (the master lease counts these).
    heard_at: Instant,
}

/// The in-sync replica set (RocketMQ 5's `SyncStateSet`): the slaves that hold every
/// acknowledged message and caught up recently, with an epoch that moves on every change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncStateSet {
    /// Member slaves (identities).
    pub members: BTreeSet<String>,
    /// Moves on every change; a controller's confirmation names the epoch it saw.
    pub epoch: i64,
    /// Members that stopped catching up, waiting for the controller to confirm their
    /// removal (only with `syncStateSetByController`).
    pub leaving: BTreeSet<String>,
}

/// The master side: accepts slaves, streams, and tracks what they acknowledged.
#[derive(Debug)]
pub struct HaService {
    store: Arc<MessageStore>,
    role: Arc<RoleCell>,
    /// The largest offset any slave acknowledged.
    acked: watch::Sender<u64>,
    /// What SYNC_MASTER sends wait for: the smallest acknowledgement among the in-sync
    /// set (`allAckInSyncStateSet`), or the largest of any slave.
    committed: watch::Sender<u64>,
    slaves: AtomicUsize,
    new_data: Notify,
    conn_ids: AtomicU64,
    policy: SyncPolicy,
    progress: Mutex<HashMap<String, Progress>>,
    sync: Mutex<SyncStateSet>,
    /// When this term (or the process) started: a new master has one lease period to
    /// hear from its slaves.
    term_started: Mutex<Instant>,
    lease_lapsed: std::sync::atomic::AtomicBool,
    /// `haRequireSignature`: the control account and its secret file.
    auth: std::sync::OnceLock<(String, std::path::PathBuf)>,
    /// Connections refused by the challenge.
    refused: AtomicU64,
    /// TLS on the HA port (`tls.server.mode`, the client port's certificate).
    tls: std::sync::OnceLock<Arc<crate::remoting::tls::TlsServer>>,
}

impl HaService {
    /// A service over `store`.
    #[must_use]
    pub fn new(store: Arc<MessageStore>, role: Arc<RoleCell>) -> Arc<Self> {
        Self::with_policy(store, role, SyncPolicy::default())
    }

    /// A service over `store` acknowledging by `policy`.
    #[must_use]
    pub fn with_policy(
        store: Arc<MessageStore>,
        role: Arc<RoleCell>,
        policy: SyncPolicy,
    ) -> Arc<Self> {
        let (acked, _) = watch::channel(0);
        let (committed, _) = watch::channel(0);
        Arc::new(HaService {
            store,
            role,
            acked,
            committed,
            slaves: AtomicUsize::new(0),
            new_data: Notify::new(),
            conn_ids: AtomicU64::new(0),
            policy,
            progress: Mutex::new(HashMap::new()),
            sync: Mutex::new(SyncStateSet::default()),
            term_started: Mutex::new(Instant::now()),
            lease_lapsed: std::sync::atomic::AtomicBool::new(false),
            auth: std::sync::OnceLock::new(),
            refused: AtomicU64::new(0),
            tls: std::sync::OnceLock::new(),
        })
    }

    /// `haRequireSignature`: every connection must first answer a challenge signed
    /// with the group's control secret (`access_key`, the file at `secret`, read on
    /// each connection so a rotated Secret applies); anyone else gets the challenge
    /// and nothing more.
    pub fn require_signature(&self, access_key: String, secret: std::path::PathBuf) {
        let _ = self.auth.set((access_key, secret));
    }

    /// Serves the HA port with `tls` (its mode and certificate): slaves connecting with
    /// TLS (`tls.enable`) are served in `permissive`, only they in `enforcing`.
    pub fn use_tls(&self, tls: Arc<crate::remoting::tls::TlsServer>) {
        let _ = self.tls.set(tls);
    }

    /// HA connections refused for a missing or wrong answer to the challenge.
    #[must_use]
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// With `haRequireSignature`: sends the challenge and checks the answer.
    async fn challenge(
        &self,
        rd: &mut (impl tokio::io::AsyncRead + Unpin),
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
        peer: &str,
    ) -> std::io::Result<()> {
        let Some((ak, path)) = self.auth.get() else {
            return Ok(());
        };
        let nonce = crate::auth::nonce();
        wr.write_all(&wire::encode_small(wire::CHALLENGE, &nonce))
            .await?;
        let answer =
            tokio::time::timeout(HOUSEKEEPING, wire::read_small(rd, wire::CHALLENGE_ANSWER))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to the challenge")
                });
        let ok = match answer {
            Ok(Ok(sig)) => crate::auth::Credentials::from_file(ak, path)
                .map(|c| {
                    c.verify_bytes(
                        &wire::challenge_content(&nonce),
                        &String::from_utf8_lossy(&sig),
                    )
                })
                .unwrap_or(false),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        warn!(%peer, "HA connection refused: the challenge was not answered with the group's control secret (haRequireSignature)");
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "HA challenge not answered with the group's secret",
        ))
    }

    /// The in-sync replica set.
    #[must_use]
    pub fn sync_state_set(&self) -> SyncStateSet {
        lock(&self.sync).clone()
    }

    /// The controller confirms the set it recorded (`members` at `epoch`): members that
    /// were leaving and are not in `members` leave. Returns the set afterwards.
    ///
    /// # Errors
    /// The set moved on since `epoch` (the controller must look again).
    pub fn confirm_sync_state_set(
        &self,
        epoch: i64,
        members: &BTreeSet<String>,
    ) -> Result<SyncStateSet, String> {
        let mut s = lock(&self.sync);
        if s.epoch != epoch {
            return Err(format!(
                "the in-sync set is at epoch {}, not {epoch}; look again",
                s.epoch
            ));
        }
        let gone: Vec<String> = s
            .leaving
            .iter()
            .filter(|m| !members.contains(*m))
            .cloned()
            .collect();
        if !gone.is_empty() {
            for m in &gone {
                s.members.remove(m);
                s.leaving.remove(m);
            }
            s.epoch += 1;
            info!(
                ?gone,
                epoch = s.epoch,
                "in-sync set shrunk (confirmed by the controller)"
            );
        }
        let out = s.clone();
        drop(s);
        self.recompute();
        Ok(out)
    }

    /// Drops members that have not caught up for `haMaxTimeSlaveNotCatchup` (or marks
    /// them leaving, under a controller). Called every second while master.
    pub fn check_sync_state_set(&self) {
        let now = Instant::now();
        let stale: Vec<String> = {
            let p = lock(&self.progress);
            let s = lock(&self.sync);
            s.members
                .iter()
                .filter(|m| {
                    p.get(*m).is_none_or(|x| {
                        now.saturating_duration_since(x.caught_up_at)
                            > self.policy.max_time_not_catchup
                    })
                })
                .cloned()
                .collect()
        };
        if stale.is_empty() {
            let mut s = lock(&self.sync);
            // A leaving member that caught up again stays.
            if !s.leaving.is_empty() {
                s.leaving.clear();
            }
            return;
        }
        let mut s = lock(&self.sync);
        if self.policy.by_controller {
            let before = s.leaving.len();
            s.leaving = stale.into_iter().collect();
            if s.leaving.len() != before {
                warn!(leaving = ?s.leaving, "in-sync members stopped catching up; waiting for the controller to confirm their removal");
            }
            return;
        }
        for m in &stale {
            s.members.remove(m);
        }
        s.epoch += 1;
        warn!(gone = ?stale, epoch = s.epoch, "in-sync members stopped catching up; removed");
        drop(s);
        self.recompute();
    }

    /// Recomputes what SYNC_MASTER sends wait for.
    fn recompute(&self) {
        let c = if self.policy.all_ack {
            let p = lock(&self.progress);
            let s = lock(&self.sync);
            s.members
                .iter()
                .map(|m| p.get(m).map_or(0, |x| x.acked))
                .min()
                .unwrap_or(0)
        } else {
            self.acked_offset()
        };
        self.committed.send_if_modified(|v| {
            if *v != c {
                *v = c;
                true
            } else {
                false
            }
        });
    }

    /// Wakes the streaming connections (called after an append).
    pub fn notify_new_data(&self) {
        self.new_data.notify_waiters();
    }

    /// Connected slaves.
    #[must_use]
    pub fn slave_count(&self) -> usize {
        self.slaves.load(Ordering::Acquire)
    }

    /// The largest offset any slave acknowledged.
    #[must_use]
    pub fn acked_offset(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Bytes the best slave is behind the master's max offset (0 without slaves).
    #[must_use]
    pub fn slave_lag(&self) -> u64 {
        if self.slave_count() == 0 {
            return 0;
        }
        self.store
            .max_phy_offset()
            .saturating_sub(self.acked_offset())
    }

    /// Waits until a slave acknowledged `offset` (the end of a send appended at the
    /// CommitLog's `generation`), at most `timeout`.
    ///
    /// # Errors
    /// [`SyncError::SlaveNotAvailable`] without an in-sync slave, [`SyncError::Timeout`],
    /// [`SyncError::Superseded`] when the log moved to a later generation first (a
    /// demotion, a cut): the offset may then hold other bytes, acknowledged in a later
    /// term.
    pub async fn wait_for_slave(
        &self,
        offset: u64,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), SyncError> {
        let current = || self.store.generation() == generation;
        if self.policy.all_ack {
            let members = lock(&self.sync).members.len();
            // The master counts as one replica; a SYNC_MASTER always needs a slave.
            if members == 0 || members + 1 < self.policy.min_in_sync_replicas {
                return Err(SyncError::SlaveNotAvailable);
            }
        }
        let mut rx = self.committed.subscribe();
        if !current() {
            return Err(SyncError::Superseded);
        }
        if *rx.borrow() >= offset {
            return Ok(());
        }
        if !self.policy.all_ack
            && (self.slave_count() == 0
                || offset.saturating_sub(*rx.borrow()) > MAX_GAP_NOT_IN_SYNC)
        {
            return Err(SyncError::SlaveNotAvailable);
        }
        // A role change resets `committed` (waking every waiter); the generation is
        // checked again after the wait, as the reset may come after a cut.
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|a| *a >= offset || !current()).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) if current() => Ok(()),
            Ok(true) => Err(SyncError::Superseded),
            _ => Err(SyncError::Timeout),
        }
    }

    /// Why this master may not take writes under its lease (`masterLeaseMs`): it has
    /// not heard from `masterLeaseQuorum` slaves within the lease, and its term is older
    /// than one lease. `None` when the lease is off or held.
    #[must_use]
    pub fn lease_problem(&self) -> Option<String> {
        let lease = self.policy.lease;
        if lease.is_zero() {
            return None;
        }
        let now = Instant::now();
        let heard = lock(&self.progress)
            .values()
            .filter(|p| now.saturating_duration_since(p.heard_at) < lease)
            .count();
        let lapsed = heard < self.policy.lease_quorum
            && now.saturating_duration_since(*lock(&self.term_started)) >= lease;
        let was = self.lease_lapsed.swap(lapsed, Ordering::AcqRel);
        if lapsed != was {
            if lapsed {
                warn!(
                    heard,
                    quorum = self.policy.lease_quorum,
                    lease_ms = lease.as_millis(),
                    "master lease lapsed: taking no writes until enough slaves report"
                );
            } else {
                info!(heard, "master lease held again: taking writes");
            }
        }
        lapsed.then(|| {
            format!(
                "master lease lapsed: heard from {heard} of the {} slaves needed within {} ms",
                self.policy.lease_quorum,
                lease.as_millis()
            )
        })
    }

    /// Forgets what slaves acknowledged (a role change): acknowledgements of an earlier
    /// term say nothing about a log that may since have been truncated.
    pub fn reset_acked(&self) {
        *lock(&self.term_started) = Instant::now();
        self.acked.send_replace(0);
        lock(&self.progress).clear();
        {
            let mut s = lock(&self.sync);
            s.members.clear();
            s.leaving.clear();
            s.epoch += 1;
        }
        self.committed.send_replace(0);
    }

    fn report(&self, who: &str, offset: u64) {
        self.acked.send_if_modified(|a| {
            if offset > *a {
                *a = offset;
                true
            } else {
                false
            }
        });
        self.store.set_confirm_offset(self.acked_offset());
        let end = self.store.max_phy_offset();
        let caught_up = {
            let mut p = lock(&self.progress);
            let now = Instant::now();
            let x = p.entry(who.to_owned()).or_insert(Progress {
                acked: 0,
                target: end,
                caught_up_at: now - self.policy.max_time_not_catchup - Duration::from_secs(1),
                connections: 0,
                heard_at: now,
            });
            x.heard_at = now;
            x.acked = x.acked.max(offset);
            let reached = x.acked >= x.target;
            if reached {
                x.caught_up_at = now;
            }
            x.target = end;
            reached
        };
        if caught_up {
            let committed = *self.committed.borrow();
            let mut s = lock(&self.sync);
            // A new member must hold everything acknowledged so far.
            if !s.members.contains(who) && offset >= committed {
                s.members.insert(who.to_owned());
                s.epoch += 1;
                info!(slave = %who, epoch = s.epoch, "slave joined the in-sync set");
            }
            s.leaving.remove(who);
        }
        self.recompute();
    }

    fn connected(&self, who: &str, delta: isize) {
        let mut p = lock(&self.progress);
        if let Some(x) = p.get_mut(who) {
            x.connections = x.connections.saturating_add_signed(delta);
            if x.connections == 0 {
                // Gone: it receives nothing now, so it cannot stay in sync.
                x.caught_up_at =
                    Instant::now() - self.policy.max_time_not_catchup - Duration::from_secs(1);
                drop(p);
                self.check_sync_state_set();
            }
        } else if delta > 0 {
            let now = Instant::now();
            p.insert(
                who.to_owned(),
                Progress {
                    acked: 0,
                    target: self.store.max_phy_offset(),
                    caught_up_at: now - self.policy.max_time_not_catchup - Duration::from_secs(1),
                    connections: 1,
                    heard_at: now - self.policy.lease - Duration::from_secs(1),
                },
            );
        }
    }

    /// Each member's acknowledged offset (runtime info).
    #[must_use]
    pub fn member_progress(&self) -> BTreeMap<String, u64> {
        let p = lock(&self.progress);
        lock(&self.sync)
            .members
            .iter()
            .map(|m| (m.clone(), p.get(m).map_or(0, |x| x.acked)))
            .collect()
    }

    /// Accepts slaves on `listener` until `shutdown` resolves; then closes the listener
    /// and every slave's stream (they reconnect to whichever master comes next).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut streams = tokio::task::JoinSet::new();
        let mut refused_logged = Instant::now() - Duration::from_secs(10);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
                Some(_) = streams.join_next(), if !streams.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "HA accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A group has a handful of slaves: a flood of connections to the HA port is
            // closed at accept instead of holding tasks and buffers.
            if streams.len() >= MAX_HA_CONNECTIONS {
                if refused_logged.elapsed() >= Duration::from_secs(10) {
                    refused_logged = Instant::now();
                    warn!(%peer, limit = MAX_HA_CONNECTIONS, "too many HA connections; closing new ones (this warning repeats at most every 10 s)");
                }
                drop(stream);
                continue;
            }
            let ha = Arc::clone(&self);
            streams.spawn(async move {
                let id = ha.conn_ids.fetch_add(1, Ordering::Relaxed);
                if !ha.role.is_master() {
                    debug!(%peer, "HA connection refused: not a master");
                    return;
                }
                ha.slaves.fetch_add(1, Ordering::AcqRel);
                info!(%peer, id, "slave connected");
                let r = ha.clone().stream_to(stream, peer.to_string()).await;
                ha.slaves.fetch_sub(1, Ordering::AcqRel);
                info!(%peer, id, reason = %r.err().map_or_else(|| "closed".to_string(), |e| e.to_string()), "slave disconnected");
            });
        }
        drop(listener);
        streams.shutdown().await;
        self.slaves.store(0, Ordering::Release);
        debug!("HA listener closed");
    }

    async fn stream_to(self: Arc<Self>, stream: TcpStream, peer: String) -> std::io::Result<()> {
        use crate::remoting::tls::{
            self, Accepted, REPLICATION_HANDSHAKE, REPLICATION_PLAIN_AFTER,
        };
        let _ = stream.set_nodelay(true);
        let accepted = tls::accept(
            self.tls.get().map(Arc::as_ref),
            stream,
            REPLICATION_PLAIN_AFTER,
            REPLICATION_HANDSHAKE,
        )
        .await
        .inspect_err(|e| warn!(%peer, error = %e, "HA connection refused: TLS"))?;
        // Plain streams keep owned halves: the ack reader and the streaming writer run
        // in two tasks without a lock between them.
        match accepted {
            Accepted::Plain(s) => {
                let (rd, wr) = s.into_split();
                self.stream_halves(rd, wr, peer).await
            }
            Accepted::Tls(s) => {
                let (rd, wr) = tokio::io::split(*s);
                self.stream_halves(rd, wr, peer).await
            }
        }
    }

    async fn stream_halves(
        self: Arc<Self>,
        mut rd: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        mut wr: impl tokio::io::AsyncWrite + Unpin,
        peer: String,
    ) -> std::io::Result<()> {
        self.challenge(&mut rd, &mut wr, &peer).await?;
        let st = self.role.get();
        let mut first = read_offset(&mut rd).await?;
        // Who this slave is: its remoting address when it says so, else the connection.
        let mut who = peer;
        if first == HELLO_WITH_ID {
            let id = tokio::time::timeout(HOUSEKEEPING, wire::read_identity(&mut rd))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no identity"))??;
            who = id.addr;
            first = HELLO_REQUEST;
        }
        let guard = ConnectedGuard::new(Arc::clone(&self), who.clone());
        if first == HELLO_REQUEST {
            let hello = Hello {
                epoch: st.epoch,
                epochs: self.role.epochs(),
                max_offset: self.store.max_phy_offset(),
                min_offset: self.store.min_phy_offset(),
            };
            wr.write_all(&wire::encode_hello(&hello)?).await?;
            first = read_offset(&mut rd).await?;
        }
        let Ok(reported) = u64::try_from(first) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave reports offset {first}"),
            ));
        };
        let oldest = self.store.min_phy_offset();
        let start = if reported >= oldest {
            reported
        } else if reported == 0 {
            // A new slave: the bytes before the oldest file are gone; start there.
            info!(
                oldest,
                "new slave starts at the master's oldest CommitLog file"
            );
            oldest
        } else {
            warn!(
                reported,
                oldest,
                "slave's log ends before the master's oldest file; its store must be emptied to resync"
            );
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave at {reported} is behind the master's oldest file at {oldest}"),
            ));
        };
        if start > self.store.max_phy_offset() {
            // A slave ahead of its master holds a history the master does not: it must
            // truncate first (the hello told it where). Nothing it says counts.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave reports {start}, past the master's end"),
            ));
        }
        self.report(&who, reported);
        // What this connection has streamed: a report past it is not believed, so a
        // confused or hostile peer cannot acknowledge SYNC_MASTER sends it never got.
        let sent = Arc::new(AtomicU64::new(start));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        // Reader: every 8 bytes is the slave's max offset.
        let reader = {
            let ha = Arc::clone(&self);
            let sent = Arc::clone(&sent);
            let epoch = st.epoch;
            let who = who.clone();
            tokio::spawn(async move {
                while let Ok(reported) = read_offset(&mut rd).await {
                    let off = u64::try_from(reported).unwrap_or(0);
                    let limit = sent.load(Ordering::Acquire);
                    if !ha.role.read(|r| r.is_master() && r.epoch == epoch) {
                        break;
                    }
                    if off > limit {
                        warn!(
                            reported = off,
                            streamed = limit,
                            "slave reported more than it was sent; closing"
                        );
                        break;
                    }
                    ha.report(&who, off);
                }
                let _ = stop_tx.send(true);
            })
        };
        let mut role_rx = self.role.subscribe();
        let mut next = start;
        let mut out: Vec<u8> = Vec::with_capacity(12 + TRANSFER_BATCH);
        let mut last_heartbeat = tokio::time::Instant::now();
        let result = loop {
            if *stop_rx.borrow() {
                break Ok(());
            }
            if !self.role.read(|r| r.is_master() && r.epoch == st.epoch) {
                break Err(std::io::Error::other("role changed"));
            }
            // Registered before looking for data, so an append between the last read and
            // the wait still wakes this connection.
            let notified = self.new_data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut sent_any = false;
            for _ in 0..FRAMES_PER_ROUND {
                let Some(data) = self.store.read_raw(next, TRANSFER_BATCH) else {
                    break;
                };
                if data.is_empty() {
                    break;
                }
                // Raised before the write: the slave may answer before write_all returns.
                sent.store(next + data.len() as u64, Ordering::Release);
                // Header and body in one write: one segment on the wire with TCP_NODELAY.
                wire::encode_data_frame(next, &data, &mut out);
                if let Err(e) = wr.write_all(&out).await {
                    reader.abort();
                    return Err(e);
                }
                next += data.len() as u64;
                sent_any = true;
                last_heartbeat = tokio::time::Instant::now();
            }
            if sent_any {
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop_rx.changed() => {}
                _ = role_rx.changed() => {}
            }
            if last_heartbeat.elapsed() >= MASTER_HEARTBEAT {
                // Idle: a heartbeat frame (size 0) so the slave knows the master lives.
                last_heartbeat = tokio::time::Instant::now();
                if let Err(e) = wr.write_all(&wire::heartbeat(next)).await {
                    break Err(e);
                }
            }
        };
        reader.abort();
        drop(guard);
        result
    }
}

/// Counts a slave's open connections while it streams.
struct ConnectedGuard {
    ha: Arc<HaService>,
    who: String,
}

impl ConnectedGuard {
    fn new(ha: Arc<HaService>, who: String) -> Self {
        ha.connected(&who, 1);
        ConnectedGuard { ha, who }
    }
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.ha.connected(&self.who, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::epoch::EpochFile;
    use crate::ha::role::{BrokerRole, RoleState};
    use crate::store::{MessageToStore, StoreConfig};

    fn message(body: &str) -> MessageToStore {
        MessageToStore {
            topic: "T".into(),
            body: bytes::Bytes::from(body.to_owned()),
            ..MessageToStore::default()
        }
    }

    /// A send appended before a demotion waits on an offset; after the cut the master is
    /// promoted again and its slave acknowledges past that offset — with other bytes
    /// there. The old wait must fail, not answer SEND_OK (the campaign's lost messages).
    #[tokio::test]
    async fn a_wait_from_before_a_cut_is_never_acknowledged_by_a_later_term() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = StoreConfig::new(dir.path());
        config.disk_space_clean_forcibly_ratio = 100;
        config.disk_space_warning_level_ratio = 100;
        let store = MessageStore::open(config).expect("store");
        let role = RoleCell::new(
            RoleState {
                role: BrokerRole::SyncMaster,
                broker_id: 0,
                epoch: 1,
                master_addr: None,
                master_ha_addr: None,
            },
            EpochFile::load(&dir.path().join("epochFile")).expect("epoch file"),
        );
        let ha = HaService::new(Arc::clone(&store), role);
        ha.report("slave", 0);
        assert_eq!(ha.sync_state_set().members.len(), 1);

        let old = store.append_messages(&[message("old")]).expect("append");
        let waiter = {
            let ha = Arc::clone(&ha);
            tokio::spawn(async move {
                ha.wait_for_slave(old.end_offset, old.generation, Duration::from_secs(10))
                    .await
            })
        };
        // Demoted and cut, then master again: the same offsets hold new records.
        store.set_accept_appends(false);
        store.truncate(0).expect("truncate");
        ha.reset_acked();
        store.set_accept_appends(true);
        ha.report("slave", 0);
        let new = store
            .append_messages(&[message("new, longer than the old one")])
            .expect("append");
        assert!(new.end_offset >= old.end_offset);
        ha.report("slave", new.end_offset);
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the old wait ends at once")
            .expect("task");
        assert!(matches!(outcome, Err(SyncError::Superseded)), "{outcome:?}");
        // A wait from the current generation is acknowledged as before.
        assert!(ha
            .wait_for_slave(new.end_offset, new.generation, Duration::from_secs(1))
            .await
            .is_ok());
    }
}
