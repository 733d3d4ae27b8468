//! Master/slave replication (RocketMQ's classic HA) on the store's replication hooks,
//! with ferrocket's epochs.
//!
//! The master listens on `haListenPort`. A slave connects and sends 8-byte big-endian
//! offsets (its CommitLog max offset: at start, after each batch it stores, and every
//! second as a heartbeat). The master streams CommitLog bytes from the first offset in
//! frames of `offset: i64, size: i32, bytes` (size 0 = heartbeat). The slave appends
//! them through [`MessageStore::append_raw`] (which checks boundaries and CRCs, buffering a
//! record split across frames) and dispatches them, so consumers can read on it.
//!
//! ferrocket adds one exchange before the stream, only for a slave that asks: a ferrocket
//! slave's first 8 bytes are −1 ([`HELLO_REQUEST`], an offset no classic slave reports),
//! and the master answers with one frame of offset −1 and a JSON body
//! `{"epoch":E,"epochs":[{"epoch":..,"startOffset":..}],"maxOffset":M,"minOffset":m}`.
//! The slave refuses a master whose epoch is older than its own, truncates what the
//! master's history does not contain (see [`epoch::truncation_point`]), adopts the
//! master's epochs, then reports its offset. A classic slave, whose first 8 bytes are its
//! offset, gets the classic stream and nothing else.
//!
//! A slave that reports 0 while the master's oldest file starts later (retention deleted
//! the rest) is streamed from that file, as RocketMQ does for a new slave; a ferrocket
//! slave first moves its empty store there ([`MessageStore::start_at`]). A slave with data
//! that ends before the master's oldest file cannot continue and is refused.

pub mod epoch;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::broker::BrokerRole;
use crate::store::MessageStore;
use epoch::{EpochEntry, EpochFile};

/// Largest body of one data frame (`haTransferBatchSize`).
pub const TRANSFER_BATCH: usize = 32 * 1024;
/// Frames sent per wake-up before re-checking for new data.
const FRAMES_PER_ROUND: usize = 32;
/// Idle time before the master sends a heartbeat frame.
const MASTER_HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a slave reports its offset while idle.
const SLAVE_HEARTBEAT: Duration = Duration::from_secs(1);
/// Either side drops a connection silent this long (`haHousekeepingInterval`).
pub const HOUSEKEEPING: Duration = Duration::from_secs(20);
/// A slave lagging more than this is not in sync (`haMaxGapNotInSync`, 256 MiB).
pub const MAX_GAP_NOT_IN_SYNC: u64 = 256 * 1024 * 1024;
/// Largest hello frame accepted.
const MAX_HELLO: usize = 1 << 20;
/// A ferrocket slave's first 8 bytes: "send me the hello first".
pub const HELLO_REQUEST: i64 = -1;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A broker's current role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// `ASYNC_MASTER`, `SYNC_MASTER` or `SLAVE`.
    pub role: BrokerRole,
    /// 0 for the master.
    pub broker_id: i64,
    /// The role epoch.
    pub epoch: i64,
    /// The master's remoting address (slaves).
    pub master_addr: Option<String>,
    /// The master's HA address (slaves).
    pub master_ha_addr: Option<String>,
}

impl RoleState {
    /// Whether this broker takes writes.
    #[must_use]
    pub fn is_master(&self) -> bool {
        self.role != BrokerRole::Slave
    }
}

/// Why a role change is refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The request's epoch is older than the broker's.
    #[error("epoch {offered} is older than this broker's epoch {current}")]
    StaleEpoch {
        /// Offered.
        offered: i64,
        /// Current.
        current: i64,
    },
    /// Same epoch, different role: two decisions claim one epoch.
    #[error("epoch {0} already has a different role here; use a newer epoch")]
    Conflict(i64),
    /// A slave needs a master address.
    #[error("a slave needs the master's address")]
    NoMaster,
    /// A slave needs an id above 0.
    #[error("a slave needs a brokerId above 0")]
    BadId,
    /// The epoch file failed.
    #[error(transparent)]
    Epoch(#[from] epoch::EpochError),
}

/// The role, the epoch history, and change notifications, shared by the broker and HA.
#[derive(Debug)]
pub struct RoleCell {
    state: RwLock<RoleState>,
    epochs: Mutex<EpochFile>,
    changed: watch::Sender<u64>,
    follow_problem: Mutex<Option<(&'static str, String)>>,
    /// Where this broker's log stopped being copied from a master it followed: the max
    /// offset at process start, or where its last promotion began.
    term_start: AtomicU64,
    /// Where a demoted master cuts its log before following (see [`RoleCell::demote`]).
    rejoin_at: Mutex<Option<u64>>,
}

/// The master address implied by a remoting address: same host, port + 1.
#[must_use]
pub fn default_ha_addr(remoting: &str) -> Option<String> {
    let (host, port) = remoting.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{host}:{}", port.checked_add(1)?))
}

impl RoleCell {
    /// A cell starting in `state`, with the epoch history at `epochs`.
    #[must_use]
    pub fn new(state: RoleState, epochs: EpochFile) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(RoleCell {
            state: RwLock::new(state),
            epochs: Mutex::new(epochs),
            changed,
            follow_problem: Mutex::new(None),
            term_start: AtomicU64::new(0),
            rejoin_at: Mutex::new(None),
        })
    }

    /// Records the max offset this process started with (recovery's end).
    pub fn set_started_at(&self, offset: u64) {
        self.term_start.store(offset, Ordering::Release);
    }

    /// Asks the next follow to cut the log at `offset` first: a master being demoted
    /// keeps only what it had at start (or promotion) and what a slave acknowledged in
    /// its term. Anything after that was never replicated, and a master that lost data
    /// and took new writes in the same epoch would otherwise keep a tail that differs
    /// from its new master's at the same offsets.
    pub fn rejoin_from(&self, acked: u64) -> u64 {
        let at = self.term_start.load(Ordering::Acquire).max(acked);
        *lock(&self.rejoin_at) = Some(at);
        at
    }

    fn take_rejoin_at(&self) -> Option<u64> {
        lock(&self.rejoin_at).take()
    }

    /// Why this slave cannot follow its master, until it follows again: the kind (see
    /// [`SlaveError::follow_problem_kind`]) and the explanation.
    #[must_use]
    pub fn follow_problem(&self) -> Option<(&'static str, String)> {
        if self.is_master() {
            return None;
        }
        lock(&self.follow_problem).clone()
    }

    fn set_follow_problem(&self, problem: Option<(&'static str, String)>) {
        *lock(&self.follow_problem) = problem;
    }

    /// The current role.
    #[must_use]
    pub fn get(&self) -> RoleState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the current role without copying it (send and pull paths).
    pub fn read<R>(&self, f: impl FnOnce(&RoleState) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether this broker takes writes.
    #[must_use]
    pub fn is_master(&self) -> bool {
        self.read(RoleState::is_master)
    }

    /// The current role's kind.
    #[must_use]
    pub fn role(&self) -> BrokerRole {
        self.read(|s| s.role)
    }

    /// Notified on every change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The epoch history.
    #[must_use]
    pub fn epochs(&self) -> Vec<EpochEntry> {
        lock(&self.epochs).entries().to_vec()
    }

    /// The newest epoch in the history.
    #[must_use]
    pub fn last_epoch(&self) -> i64 {
        lock(&self.epochs).last_epoch()
    }

    /// The newest epoch this broker knows (role or history); refuses an older `epoch`.
    fn check_epoch(&self, st: &RoleState, epoch: i64) -> Result<i64, RoleError> {
        let current = st.epoch.max(lock(&self.epochs).last_epoch());
        if epoch < current {
            return Err(RoleError::StaleEpoch {
                offered: epoch,
                current,
            });
        }
        Ok(current)
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Records the epoch a master starts with at boot (from the roles file): begins it at
    /// `max_offset` when the history does not have it yet.
    ///
    /// # Errors
    /// Epoch file failures.
    pub fn start_master_epoch(&self, max_offset: u64) -> Result<(), RoleError> {
        let st = self.get();
        if !st.is_master() || st.epoch <= 0 {
            return Ok(());
        }
        let mut ep = lock(&self.epochs);
        if ep.last_epoch() < st.epoch {
            let start = if ep.last().is_none() { 0 } else { max_offset };
            ep.begin(st.epoch, start)?;
        }
        Ok(())
    }

    /// Becomes master (`role`) at `epoch`, the epoch starting at `max_offset`.
    ///
    /// # Errors
    /// [`RoleError::StaleEpoch`], [`RoleError::Conflict`], epoch file failures.
    pub fn promote(
        &self,
        role: BrokerRole,
        epoch: i64,
        max_offset: u64,
    ) -> Result<bool, RoleError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if epoch == self.check_epoch(&st, epoch)? {
            return if st.is_master() {
                Ok(false)
            } else {
                Err(RoleError::Conflict(epoch))
            };
        }
        lock(&self.epochs).begin(epoch, max_offset)?;
        self.term_start.store(max_offset, Ordering::Release);
        *lock(&self.rejoin_at) = None;
        *st = RoleState {
            role,
            broker_id: 0,
            epoch,
            master_addr: None,
            master_ha_addr: None,
        };
        drop(st);
        info!(epoch, start = max_offset, "promoted to master");
        self.bump();
        Ok(true)
    }

    /// Becomes a slave of `master_addr` (HA at `master_ha_addr`) at `epoch`.
    ///
    /// # Errors
    /// [`RoleError::StaleEpoch`], [`RoleError::Conflict`], a missing master or bad id.
    pub fn demote(
        &self,
        epoch: i64,
        broker_id: i64,
        master_addr: &str,
        master_ha_addr: Option<&str>,
    ) -> Result<bool, RoleError> {
        if broker_id <= 0 {
            return Err(RoleError::BadId);
        }
        let ha = master_ha_addr
            .map(str::to_owned)
            .or_else(|| default_ha_addr(master_addr))
            .ok_or(RoleError::NoMaster)?;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let current = self.check_epoch(&st, epoch)?;
        if epoch == current && st.is_master() && st.epoch == epoch {
            return Err(RoleError::Conflict(epoch));
        }
        let next = RoleState {
            role: BrokerRole::Slave,
            broker_id,
            epoch,
            master_addr: Some(master_addr.to_owned()),
            master_ha_addr: Some(ha),
        };
        if *st == next {
            return Ok(false);
        }
        *st = next;
        drop(st);
        info!(epoch, master = %master_addr, "following a master");
        self.bump();
        Ok(true)
    }

    /// Adopts the master's epoch history (a slave, after any truncation).
    ///
    /// # Errors
    /// Epoch file failures.
    pub fn adopt_epochs(&self, master: &[EpochEntry]) -> Result<(), epoch::EpochError> {
        lock(&self.epochs).adopt(master)
    }

    /// Fills in the master's addresses a slave learned from the name server, where it
    /// has none yet.
    pub fn learn_master(&self, master_addr: &str, master_ha_addr: &str) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if st.is_master() {
            return;
        }
        let mut changed = false;
        if st.master_addr.is_none() && !master_addr.is_empty() {
            st.master_addr = Some(master_addr.to_owned());
            changed = true;
        }
        if st.master_ha_addr.is_none() && !master_ha_addr.is_empty() {
            st.master_ha_addr = Some(master_ha_addr.to_owned());
            changed = true;
        }
        drop(st);
        if changed {
            info!(master = %master_addr, ha = %master_ha_addr, "master learned from the name server");
            self.bump();
        }
    }
}

impl SlaveError {
    /// For the errors that say this slave cannot follow its master (reported as
    /// `haFollowProblemKind`): `staleMaster` (the master's epoch is older than ours),
    /// `behind` (our log ends before the master's oldest file) or `masterBehind` (the
    /// master's log ends before ours in the same epoch: it lost data we hold).
    #[must_use]
    pub fn follow_problem_kind(&self) -> Option<&'static str> {
        match self {
            SlaveError::StaleMaster { .. } => Some("staleMaster"),
            SlaveError::Behind { .. } => Some("behind"),
            SlaveError::MasterBehind { .. } => Some("masterBehind"),
            _ => None,
        }
    }
}

/// Cuts the store at `at` off the async workers.
async fn truncate_store(store: &Arc<MessageStore>, at: u64) -> Result<(), SlaveError> {
    let s = Arc::clone(store);
    tokio::task::spawn_blocking(move || s.truncate(at))
        .await
        .map_err(|e| SlaveError::Protocol(e.to_string()))??;
    Ok(())
}

/// Reads one 8-byte offset report, waiting at most [`HOUSEKEEPING`].
async fn read_offset(rd: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<i64> {
    let mut b = [0u8; 8];
    tokio::time::timeout(HOUSEKEEPING, rd.read_exact(&mut b))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no offset from the slave")
        })??;
    Ok(i64::from_be_bytes(b))
}

/// The hello frame's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The master's epoch.
    pub epoch: i64,
    /// The master's epoch history.
    pub epochs: Vec<EpochEntry>,
    /// The master's CommitLog max offset.
    pub max_offset: u64,
    /// Where the master's oldest CommitLog file starts.
    #[serde(default)]
    pub min_offset: u64,
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
}

/// The master side: accepts slaves, streams, and tracks what they acknowledged.
#[derive(Debug)]
pub struct HaService {
    store: Arc<MessageStore>,
    role: Arc<RoleCell>,
    acked: watch::Sender<u64>,
    slaves: AtomicUsize,
    new_data: Notify,
    conn_ids: AtomicU64,
}

impl HaService {
    /// A service over `store`.
    #[must_use]
    pub fn new(store: Arc<MessageStore>, role: Arc<RoleCell>) -> Arc<Self> {
        let (acked, _) = watch::channel(0);
        Arc::new(HaService {
            store,
            role,
            acked,
            slaves: AtomicUsize::new(0),
            new_data: Notify::new(),
            conn_ids: AtomicU64::new(0),
        })
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

    /// Waits until a slave acknowledged `offset` (the end of a send), at most `timeout`.
    ///
    /// # Errors
    /// [`SyncError::SlaveNotAvailable`] without an in-sync slave, [`SyncError::Timeout`].
    pub async fn wait_for_slave(&self, offset: u64, timeout: Duration) -> Result<(), SyncError> {
        let mut rx = self.acked.subscribe();
        if *rx.borrow() >= offset {
            return Ok(());
        }
        if self.slave_count() == 0 || offset.saturating_sub(*rx.borrow()) > MAX_GAP_NOT_IN_SYNC {
            return Err(SyncError::SlaveNotAvailable);
        }
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|a| *a >= offset).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(SyncError::Timeout),
        }
    }

    /// Forgets what slaves acknowledged (a role change): acknowledgements of an earlier
    /// term say nothing about a log that may since have been truncated.
    pub fn reset_acked(&self) {
        self.acked.send_replace(0);
    }

    fn report(&self, offset: u64) {
        self.acked.send_if_modified(|a| {
            if offset > *a {
                *a = offset;
                true
            } else {
                false
            }
        });
        self.store.set_confirm_offset(self.acked_offset());
    }

    /// Accepts slaves on `listener` forever.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "HA accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ha = Arc::clone(&self);
            tokio::spawn(async move {
                let id = ha.conn_ids.fetch_add(1, Ordering::Relaxed);
                if !ha.role.is_master() {
                    debug!(%peer, "HA connection refused: not a master");
                    return;
                }
                ha.slaves.fetch_add(1, Ordering::AcqRel);
                info!(%peer, id, "slave connected");
                let r = ha.clone().stream_to(stream).await;
                ha.slaves.fetch_sub(1, Ordering::AcqRel);
                info!(%peer, id, reason = %r.err().map_or_else(|| "closed".to_string(), |e| e.to_string()), "slave disconnected");
            });
        }
    }

    async fn stream_to(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let st = self.role.get();
        let mut first = read_offset(&mut rd).await?;
        if first == HELLO_REQUEST {
            let hello = Hello {
                epoch: st.epoch,
                epochs: self.role.epochs(),
                max_offset: self.store.max_phy_offset(),
                min_offset: self.store.min_phy_offset(),
            };
            let body = serde_json::to_vec(&hello).map_err(std::io::Error::other)?;
            let mut frame = Vec::with_capacity(12 + body.len());
            frame.extend_from_slice(&(-1i64).to_be_bytes());
            frame.extend_from_slice(&i32::try_from(body.len()).unwrap_or(i32::MAX).to_be_bytes());
            frame.extend_from_slice(&body);
            wr.write_all(&frame).await?;
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
        self.report(reported);
        // What this connection has streamed: a report past it is not believed, so a
        // confused or hostile peer cannot acknowledge SYNC_MASTER sends it never got.
        let sent = Arc::new(AtomicU64::new(start));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        // Reader: every 8 bytes is the slave's max offset.
        let reader = {
            let ha = Arc::clone(&self);
            let sent = Arc::clone(&sent);
            let epoch = st.epoch;
            tokio::spawn(async move {
                let mut buf = [0u8; 8];
                while let Ok(Ok(_)) =
                    tokio::time::timeout(HOUSEKEEPING, rd.read_exact(&mut buf)).await
                {
                    let off = u64::try_from(i64::from_be_bytes(buf)).unwrap_or(0);
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
                    ha.report(off);
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
                out.clear();
                out.extend_from_slice(&i64::try_from(next).unwrap_or(i64::MAX).to_be_bytes());
                out.extend_from_slice(&i32::try_from(data.len()).unwrap_or(i32::MAX).to_be_bytes());
                out.extend_from_slice(&data);
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
                let mut head = [0u8; 12];
                head[..8].copy_from_slice(&i64::try_from(next).unwrap_or(i64::MAX).to_be_bytes());
                if let Err(e) = wr.write_all(&head).await {
                    break Err(e);
                }
            }
        };
        reader.abort();
        result
    }
}

/// An offset as the 8 big-endian bytes of a Java long.
fn offset_bytes(offset: u64) -> [u8; 8] {
    i64::try_from(offset).unwrap_or(i64::MAX).to_be_bytes()
}

async fn read_frame_head(rd: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(i64, usize)> {
    let mut head = [0u8; 12];
    rd.read_exact(&mut head).await?;
    let offset = i64::from_be_bytes(head[..8].try_into().unwrap_or([0; 8]));
    let size = i32::from_be_bytes(head[8..].try_into().unwrap_or([0; 4]));
    let size = usize::try_from(size)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "negative frame size"))?;
    Ok((offset, size))
}

/// Why a slave session ended.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    /// Network failure or silence.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The master is of an older epoch than this slave.
    #[error("master epoch {master} is older than ours ({ours}); refusing its stream")]
    StaleMaster {
        /// The master's epoch.
        master: i64,
        /// Ours.
        ours: i64,
    },
    /// The stream broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The master's log ends before ours in the same epoch: it lost data we hold.
    #[error(
        "the master's CommitLog ends at {master}, before ours ({ours}), in the same epoch: \
         it lost data this slave holds (possibly acknowledged); promote this slave rather \
         than truncate"
    )]
    MasterBehind {
        /// Our max offset.
        ours: u64,
        /// The master's max offset.
        master: u64,
    },
    /// This slave's log ends before the master's oldest file: it cannot catch up.
    #[error(
        "our CommitLog ends at {ours}, before the master's oldest file at {oldest}; \
         empty this broker's store (e.g. delete its PVC) so it can start over from the master"
    )]
    Behind {
        /// Our max offset.
        ours: u64,
        /// The master's oldest offset.
        oldest: u64,
    },
    /// The store refused the bytes or the truncation.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The epoch file failed.
    #[error(transparent)]
    Epoch(#[from] epoch::EpochError),
    /// This broker's role changed.
    #[error("role changed")]
    RoleChanged,
}

/// The slave side: follows the master named in the role, forever.
pub async fn run_slave(store: Arc<MessageStore>, role: Arc<RoleCell>) {
    let mut changes = role.subscribe();
    loop {
        let st = role.get();
        let target = (!st.is_master())
            .then(|| st.master_ha_addr.clone())
            .flatten();
        let Some(addr) = target else {
            let _ = changes.changed().await;
            continue;
        };
        let session = follow(&store, &role, &addr, st.epoch);
        let outcome = tokio::select! {
            r = session => r,
            _ = changes.changed() => Err(SlaveError::RoleChanged),
        };
        let pause = match outcome {
            Ok(()) => Duration::from_millis(500),
            Err(SlaveError::RoleChanged) => continue,
            Err(e) => match e.follow_problem_kind() {
                // Not fixed by retrying at once: retry slowly, so the log is not flooded.
                Some(kind) => {
                    warn!(master = %addr, error = %e, "HA");
                    role.set_follow_problem(Some((kind, e.to_string())));
                    Duration::from_secs(5)
                }
                None => {
                    debug!(master = %addr, error = %e, "HA session ended; reconnecting");
                    Duration::from_millis(500)
                }
            },
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = changes.changed() => {}
        }
    }
}

async fn follow(
    store: &Arc<MessageStore>,
    role: &Arc<RoleCell>,
    addr: &str,
    my_epoch: i64,
) -> Result<(), SlaveError> {
    if let Some(at) = role.take_rejoin_at() {
        if at < store.max_phy_offset() {
            warn!(
                from = store.max_phy_offset(),
                to = at,
                "demoted: dropping what no slave acknowledged in our term before following"
            );
            truncate_store(store, at).await?;
        }
    }
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(1 << 20, rd);
    wr.write_all(&HELLO_REQUEST.to_be_bytes()).await?;
    let (offset, size) = tokio::time::timeout(HOUSEKEEPING, read_frame_head(&mut rd))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))??;
    if offset != -1 || size > MAX_HELLO {
        return Err(SlaveError::Protocol(format!(
            "expected a hello frame, got offset {offset} size {size}"
        )));
    }
    let mut body = vec![0u8; size];
    rd.read_exact(&mut body).await?;
    let hello: Hello =
        serde_json::from_slice(&body).map_err(|e| SlaveError::Protocol(format!("hello: {e}")))?;
    let ours = my_epoch.max(role.last_epoch());
    if hello.epoch < ours {
        return Err(SlaveError::StaleMaster {
            master: hello.epoch,
            ours,
        });
    }
    let my_max = store.max_phy_offset();
    let cut = epoch::truncation_point(role.last_epoch(), my_max, &hello.epochs);
    if cut.is_none() && my_max > hello.max_offset && hello.epoch == role.last_epoch() {
        // Same epoch but ahead of the master: everything we hold came from it, so it has
        // lost a tail (e.g. unflushed pages in a machine crash) that SYNC_MASTER may have
        // acknowledged because we held it. Truncating would lose it for good: refuse,
        // and say so, so that this slave is promoted instead.
        return Err(SlaveError::MasterBehind {
            ours: my_max,
            master: hello.max_offset,
        });
    }
    if let Some(at) = cut {
        warn!(
            from = my_max,
            to = at,
            master_epoch = hello.epoch,
            "truncating the diverged tail before following the master"
        );
        truncate_store(store, at).await?;
    }
    let my_max = store.max_phy_offset();
    if hello.min_offset > my_max {
        if my_max == 0 && store.min_phy_offset() == 0 {
            // A new, empty replica of a master that has deleted its oldest files.
            store.start_at(hello.min_offset)?;
        } else {
            return Err(SlaveError::Behind {
                ours: my_max,
                oldest: hello.min_offset,
            });
        }
    }
    role.adopt_epochs(&hello.epochs)?;
    let mut expected = store.max_phy_offset();
    wr.write_all(&i64::try_from(expected).unwrap_or(i64::MAX).to_be_bytes())
        .await?;
    info!(master = %addr, epoch = hello.epoch, from = expected, "following the master");
    role.set_follow_problem(None);
    let mut pending: Vec<u8> = Vec::new();
    let mut last_report = tokio::time::Instant::now();
    loop {
        let head = tokio::time::timeout(SLAVE_HEARTBEAT, read_frame_head(&mut rd)).await;
        let (offset, size) = match head {
            Err(_) => {
                if last_report.elapsed() >= HOUSEKEEPING {
                    return Err(
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "master silent").into(),
                    );
                }
                wr.write_all(&offset_bytes(store.max_phy_offset())).await?;
                continue;
            }
            Ok(r) => r?,
        };
        last_report = tokio::time::Instant::now();
        if size == 0 {
            wr.write_all(&offset_bytes(store.max_phy_offset())).await?;
            continue;
        }
        if size > 4 * 1024 * 1024 {
            return Err(SlaveError::Protocol(format!("frame of {size} bytes")));
        }
        let at = u64::try_from(offset)
            .map_err(|_| SlaveError::Protocol(format!("negative offset {offset}")))?;
        if at != expected + pending.len() as u64 {
            return Err(SlaveError::Protocol(format!(
                "frame at {at}, expected {}",
                expected + pending.len() as u64
            )));
        }
        // A record (or a segment's filler) is at most maxMessageSize plus its header: a
        // master feeding more than that without completing one is broken.
        let limit = 2 * store.config().max_message_size + TRANSFER_BATCH + (1 << 20);
        if pending.len() + size > limit {
            return Err(SlaveError::Protocol(format!(
                "{} bytes buffered without a complete record",
                pending.len() + size
            )));
        }
        let start = pending.len();
        pending.resize(start + size, 0);
        rd.read_exact(&mut pending[start..]).await?;
        // A memcpy into the mapped segment (segments are preallocated ahead): done in
        // place, without a hop to the blocking pool on every frame.
        let n = tokio::task::block_in_place(|| store.append_raw(expected, &pending))?;
        pending.drain(..n);
        expected += n as u64;
        if n > 0 {
            wr.write_all(&i64::try_from(expected).unwrap_or(i64::MAX).to_be_bytes())
                .await?;
        }
    }
}
