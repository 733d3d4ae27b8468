//! The role/epoch state machine: what this broker is (master or slave, of which master),
//! at which epoch, and the epoch history it keeps in `epochFile`. The broker's request
//! processors and both halves of replication read and change the role only through
//! [`RoleCell`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tracing::info;

use super::epoch::{self, EpochEntry, EpochFile};
use crate::sync::{lock, read, write};

/// `brokerRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRole {
    /// `ASYNC_MASTER`.
    AsyncMaster,
    /// `SYNC_MASTER`.
    SyncMaster,
    /// `SLAVE`.
    Slave,
}

impl BrokerRole {
    /// RocketMQ's name.
    pub fn name(self) -> &'static str {
        match self {
            BrokerRole::AsyncMaster => "ASYNC_MASTER",
            BrokerRole::SyncMaster => "SYNC_MASTER",
            BrokerRole::Slave => "SLAVE",
        }
    }
}

/// Why a slave cannot follow its master, as reported in `haFollowProblemKind` (broker
/// runtime info) and matched by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowProblemKind {
    /// `staleMaster`: the master's epoch is older than ours.
    StaleMaster,
    /// `behind`: our log ends before the master's oldest file.
    Behind,
    /// `masterBehind`: the master's log ends before ours in the same epoch (it lost data
    /// we hold, possibly acknowledged): promote this slave rather than truncate it.
    MasterBehind,
}

impl FollowProblemKind {
    /// The name on the wire (`haFollowProblemKind`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FollowProblemKind::StaleMaster => "staleMaster",
            FollowProblemKind::Behind => "behind",
            FollowProblemKind::MasterBehind => "masterBehind",
        }
    }

    /// The kind a name stands for.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            FollowProblemKind::StaleMaster,
            FollowProblemKind::Behind,
            FollowProblemKind::MasterBehind,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
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
    /// A master (`role`, brokerId 0) at `epoch`.
    #[must_use]
    pub fn master(role: BrokerRole, epoch: i64) -> Self {
        RoleState {
            role,
            broker_id: 0,
            epoch,
            master_addr: None,
            master_ha_addr: None,
        }
    }

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
    /// The role record could not be written (the role did not change).
    #[error("role record: {0}")]
    Record(#[from] crate::store::StoreError),
}

/// The role, the epoch history, and change notifications, shared by the broker and HA.
#[derive(Debug)]
pub struct RoleCell {
    state: RwLock<RoleState>,
    epochs: Mutex<EpochFile>,
    changed: watch::Sender<u64>,
    follow_problem: Mutex<Option<(FollowProblemKind, String)>>,
    /// Where this broker's log stopped being copied from a master it followed: the max
    /// offset at process start, or where its last promotion began.
    term_start: AtomicU64,
    /// Where a demoted master cuts its log before following (see [`RoleCell::demote`]).
    rejoin_at: Mutex<Option<u64>>,
    /// The role record (see [`super::record`]); `None`: not kept (tests of HA alone).
    record: Option<PathBuf>,
    /// Why this master must not take writes: a name server knows a master of a newer
    /// epoch. Cleared by the next role change.
    superseded: Mutex<Option<String>>,
    /// Whether `superseded` holds a reason: the send path checks this flag only.
    is_superseded: std::sync::atomic::AtomicBool,
    /// A slave is in sync once its log reaches this offset (its master's end at the
    /// last hello, less `haMaxGapNotInSync`); `u64::MAX` until it first follows.
    catch_up_to: AtomicU64,
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
        Self::with_record(state, epochs, None)
    }

    /// A cell that keeps its role record at `record` (written on every change).
    #[must_use]
    pub fn with_record(state: RoleState, epochs: EpochFile, record: Option<PathBuf>) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(RoleCell {
            state: RwLock::new(state),
            epochs: Mutex::new(epochs),
            changed,
            follow_problem: Mutex::new(None),
            term_start: AtomicU64::new(0),
            rejoin_at: Mutex::new(None),
            record,
            superseded: Mutex::new(None),
            is_superseded: std::sync::atomic::AtomicBool::new(false),
            catch_up_to: AtomicU64::new(u64::MAX),
        })
    }

    /// Writes `next` to the role record before the role changes.
    ///
    /// # Errors
    /// The write failed.
    fn persist(&self, next: &RoleState) -> Result<(), RoleError> {
        if let Some(p) = &self.record {
            super::record::persist(p, &super::record::RoleRecord::of(next))?;
        }
        Ok(())
    }

    /// Writes the current role to the record (at start).
    ///
    /// # Errors
    /// The write failed.
    pub fn persist_current(&self) -> Result<(), RoleError> {
        let st = self.get();
        self.persist(&st)
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

    pub(super) fn take_rejoin_at(&self) -> Option<u64> {
        lock(&self.rejoin_at).take()
    }

    /// Why this slave cannot follow its master, until it follows again: the kind (see
    /// [`FollowProblemKind`]) and the explanation.
    #[must_use]
    pub fn follow_problem(&self) -> Option<(FollowProblemKind, String)> {
        if self.is_master() {
            return None;
        }
        lock(&self.follow_problem).clone()
    }

    pub(super) fn set_follow_problem(&self, problem: Option<(FollowProblemKind, String)>) {
        *lock(&self.follow_problem) = problem;
    }

    /// The current role.
    #[must_use]
    pub fn get(&self) -> RoleState {
        read(&self.state).clone()
    }

    /// Reads the current role without copying it (send and pull paths).
    pub fn read<R>(&self, f: impl FnOnce(&RoleState) -> R) -> R {
        f(&read(&self.state))
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

    /// The newest epoch this broker knows: its role's or its history's.
    #[must_use]
    pub fn known_epoch(&self) -> i64 {
        let st = read(&self.state).epoch;
        st.max(lock(&self.epochs).last_epoch())
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
        *lock(&self.superseded) = None;
        self.is_superseded.store(false, Ordering::Release);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Fences this master: a name server refused its registration because a master of a
    /// newer epoch is registered (`why`). It takes no writes until its role changes.
    pub fn supersede(&self, why: &str) {
        if !self.is_master() {
            return;
        }
        let mut s = lock(&self.superseded);
        if s.is_none() {
            tracing::warn!(reason = %why, "a newer master exists: this master takes no writes until its role changes");
        }
        *s = Some(why.to_owned());
        self.is_superseded.store(true, Ordering::Release);
    }

    /// A slave began following a master whose log ends at `master_max`.
    pub(super) fn following(&self, master_max: u64) {
        self.catch_up_to.store(
            master_max.saturating_sub(super::MAX_GAP_NOT_IN_SYNC),
            Ordering::Release,
        );
    }

    /// Whether a slave whose log ends at `max` is within `haMaxGapNotInSync` of its
    /// master's end at the last hello. A slave that lost its master stays in sync (it was
    /// when the master went away, and is a failover candidate); one that never followed,
    /// or cannot follow, is not.
    #[must_use]
    pub fn slave_in_sync(&self, max: u64) -> bool {
        max >= self.catch_up_to.load(Ordering::Acquire) && self.follow_problem().is_none()
    }

    /// Why this master is fenced (see [`RoleCell::supersede`]).
    #[must_use]
    pub fn superseded(&self) -> Option<String> {
        if !self.is_superseded.load(Ordering::Acquire) || !self.is_master() {
            return None;
        }
        lock(&self.superseded).clone()
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
        let mut st = write(&self.state);
        if epoch == self.check_epoch(&st, epoch)? {
            return if st.is_master() {
                Ok(false)
            } else {
                Err(RoleError::Conflict(epoch))
            };
        }
        let next = RoleState::master(role, epoch);
        self.persist(&next)?;
        lock(&self.epochs).begin(epoch, max_offset)?;
        self.term_start.store(max_offset, Ordering::Release);
        *lock(&self.rejoin_at) = None;
        *st = next;
        drop(st);
        info!(epoch, start = max_offset, "promoted to master");
        self.bump();
        Ok(true)
    }

    /// Raft mode: leads `epoch` (a Raft term, which has one leader). As
    /// [`RoleCell::promote`], and also when this node's epoch history already begins
    /// `epoch`: it led that term before a restart, and openraft resumes a leadership
    /// whose vote was committed.
    ///
    /// # Errors
    /// As [`RoleCell::promote`].
    pub fn lead_term(
        &self,
        role: BrokerRole,
        epoch: i64,
        max_offset: u64,
    ) -> Result<bool, RoleError> {
        {
            let mut st = write(&self.state);
            if lock(&self.epochs).last_epoch() == epoch && st.epoch <= epoch && !st.is_master() {
                let next = RoleState::master(role, epoch);
                self.persist(&next)?;
                *st = next;
                drop(st);
                info!(
                    epoch,
                    "leading again the term this node led before a restart"
                );
                self.bump();
                return Ok(true);
            }
        }
        self.promote(role, epoch, max_offset)
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
        let mut st = write(&self.state);
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
        self.persist(&next)?;
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
        let mut st = write(&self.state);
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
        if changed {
            if let Err(e) = self.persist(&st) {
                tracing::warn!(error = %e, "could not record the master learned from the name server");
            }
        }
        drop(st);
        if changed {
            info!(master = %master_addr, ha = %master_ha_addr, "master learned from the name server");
            self.bump();
        }
    }
}
