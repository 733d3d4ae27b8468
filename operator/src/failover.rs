//! Failover: a pure decision from observed state, and the broker calls behind a trait.
//!
//! [`decide`] looks at the group's recorded roles (status `master`, `epoch`), each pod's
//! readiness (and since when it is unready) and what each reachable broker reports
//! (role, epoch, confirmed offset), and says what to do: nothing, wait out the grace
//! period, promote the best ready slave, report that no slave can take over, or correct
//! brokers whose role disagrees with the recorded one.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

/// What one broker reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    /// Whether it takes writes.
    pub is_master: bool,
    /// Its role epoch.
    pub epoch: i64,
    /// The newest epoch it knows (its role's or its history's).
    pub known_epoch: i64,
    /// What it vouches for (end of the CommitLog it holds).
    pub confirm_offset: u64,
    /// Its max offset.
    pub max_offset: u64,
    /// Its HA address.
    pub ha_addr: String,
    /// Why it cannot follow its master, if it is a slave that cannot.
    pub follow_problem: Option<String>,
    /// It is a slave ahead of its master in the same epoch: the master lost data this
    /// slave holds (`haFollowProblemKind=masterBehind`).
    pub master_behind: bool,
    /// A master's in-sync replica set (slave remoting addresses).
    pub in_sync: Vec<String>,
    /// Members that stopped catching up, waiting for the operator to confirm.
    pub in_sync_leaving: Vec<String>,
    /// The set's epoch.
    pub sync_set_epoch: i64,
    /// The name servers it registers with (`;`-separated).
    pub namesrv_addr: String,
    /// In a Raft group, the committed membership's ids (`n0`, `n1`, …).
    pub raft_members: Vec<String>,
}

/// One pod of the group as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Pod name.
    pub pod: String,
    /// The pod's `Ready` condition.
    pub ready: bool,
    /// Since when it is not ready (None: ready, or unknown).
    pub unready_since: Option<Timestamp>,
    /// Broker remoting address (pod IP and port), when the pod has an IP.
    pub addr: Option<String>,
    /// What the broker reported, when it answered.
    pub broker: Option<BrokerView>,
    /// The id it takes as a slave (ordinal + 1).
    pub slave_id: i64,
    /// The pod is being deleted (rolling update, eviction, drain): it still runs its
    /// `preStop` wait.
    pub terminating: bool,
}

/// The observed state of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Recorded master pod.
    pub master: String,
    /// Recorded epoch.
    pub epoch: i64,
    /// `failover.enabled`.
    pub enabled: bool,
    /// `failover.unreadyGraceSeconds`.
    pub grace: Duration,
    /// Every pod.
    pub members: Vec<Member>,
    /// Pods that should be master, most wanted first (`spec.preferredMaster`, or the
    /// pods a scale-down keeps); empty: any.
    pub preferred: Vec<String>,
    /// When the master role last moved (failover or switchover).
    pub last_move: Option<Timestamp>,
    /// The in-sync replica set last recorded (pods); `None`: never reported.
    pub in_sync: Option<Vec<String>>,
    /// `failover.allowUnclean`.
    pub allow_unclean: bool,
}

/// The least time between two planned switchovers, so a preference the group cannot
/// hold does not make the master flap.
pub const SWITCHOVER_COOLDOWN: Duration = Duration::from_secs(60);
/// A slave further behind than this is not switched to (`haMaxGapNotInSync`).
pub const SWITCHOVER_MAX_GAP: u64 = 256 * 1024 * 1024;

/// A role correction for one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correction {
    /// Make it master at the recorded epoch (a promotion that did not complete).
    Promote {
        /// Its address.
        addr: String,
    },
    /// Make it follow the recorded master at the recorded epoch.
    Follow {
        /// Its address.
        addr: String,
        /// The slave id.
        broker_id: i64,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Roles agree with the record; nothing to do.
    Steady,
    /// The master is unready but within its grace period.
    Wait {
        /// Grace left.
        remaining: Duration,
    },
    /// Promote `new_master` at `epoch`; re-point `followers` (address, slave id).
    Promote {
        /// The pod to promote.
        new_master: String,
        /// Its address.
        addr: String,
        /// The new epoch: above the record and above every epoch a broker reports.
        epoch: i64,
        /// The old master (address, slave id) when it still answers: told to step down
        /// (follow the new master) before the promotion.
        step_down: Option<(String, i64)>,
        /// Ready slaves to re-point.
        followers: Vec<(String, i64)>,
        /// Why (for the Event).
        reason: String,
        /// The new master is outside the recorded in-sync set (`allowUnclean`): it may
        /// lack acknowledged messages.
        unclean: bool,
    },
    /// A planned switchover from a healthy master to a preferred, in-sync slave.
    Switchover(SwitchoverPlan),
    /// The master is gone past its grace, but no ready slave answers.
    NoCandidate {
        /// Why.
        reason: String,
    },
    /// The master is gone past its grace; ready slaves answer, but none is in the last
    /// recorded in-sync set (and `allowUnclean` is off): promoting one could lose
    /// acknowledged messages, so the group waits for a member to come back.
    NoInSyncReplica {
        /// Why.
        reason: String,
    },
    /// Some brokers disagree with the recorded roles: the recorded master is asserted
    /// again at a new `epoch` (above every epoch a broker reports, so no broker's
    /// history can refuse it) and every other reachable broker follows it.
    Correct {
        /// The new epoch.
        epoch: i64,
        /// The recorded master's address.
        master_addr: String,
        /// Every other broker with an address (address, slave id).
        followers: Vec<(String, i64)>,
        /// The brokers that disagreed (for the log and Event).
        fixes: Vec<Correction>,
    },
}

/// The epoch of the next role change: above the recorded epoch and above every epoch
/// a broker reports, so a broker whose history already holds an epoch (a record lost
/// from the status, a stale cache) never refuses it.
#[must_use]
pub fn next_epoch(o: &Observed) -> i64 {
    o.members
        .iter()
        .filter_map(|m| m.broker.as_ref().map(|b| b.epoch.max(b.known_epoch)))
        .fold(o.epoch, i64::max)
        .saturating_add(1)
}

/// A planned switchover [`decide`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverPlan {
    /// The current master's pod.
    pub from: String,
    /// Its address.
    pub from_addr: String,
    /// The slave id it takes.
    pub from_id: i64,
    /// The pod to promote.
    pub to: String,
    /// Its address.
    pub to_addr: String,
    /// The new epoch (see [`next_epoch`]).
    pub epoch: i64,
    /// The other ready slaves to re-point.
    pub followers: Vec<(String, i64)>,
    /// Why (for the Event).
    pub reason: String,
}

/// Decides from observed state at `now`.
#[must_use]
pub fn decide(o: &Observed, now: Timestamp) -> Decision {
    if let Some(d) = hand_off(o) {
        return d;
    }
    let master = o.members.iter().find(|m| m.pod == o.master);
    let master_up = master.is_some_and(|m| m.ready);
    if !master_up {
        if !o.enabled {
            return Decision::Steady;
        }
        let since = master.and_then(|m| m.unready_since).unwrap_or(now);
        let d = now.duration_since(since);
        let down_for = if d.is_negative() {
            Duration::ZERO
        } else {
            d.unsigned_abs()
        };
        if down_for < o.grace {
            return Decision::Wait {
                remaining: o.grace - down_for,
            };
        }
        // The pod looks dead, but the operator's own probe reaches a master of the
        // recorded epoch (a kubelet cut off from the API server, a readiness probe
        // failing for a reason that does not stop writes): not a dead master.
        if master
            .and_then(|m| m.broker.as_ref())
            .is_some_and(|b| b.is_master && b.epoch >= o.epoch)
        {
            return Decision::Steady;
        }
        let ready = || {
            o.members
                .iter()
                .filter(|m| m.pod != o.master && m.ready)
                .filter_map(|m| Some((m, m.addr.as_ref()?, m.broker.as_ref()?)))
        };
        let mut unclean = false;
        let best = match &o.in_sync {
            // Only a member of the last recorded in-sync set holds every acknowledged
            // message.
            Some(set) => {
                let member = best_of(ready().filter(|(m, _, _)| set.contains(&m.pod)));
                match member {
                    Some(b) => Some(b),
                    None => match best_of(ready()) {
                        Some(b) if o.allow_unclean => {
                            unclean = true;
                            Some(b)
                        }
                        Some(_) => {
                            return Decision::NoInSyncReplica {
                                reason: format!(
                                    "master {} unready for {}s; no member of the in-sync set [{}] is ready (failover.allowUnclean would promote another slave, possibly losing acknowledged messages)",
                                    o.master,
                                    down_for.as_secs(),
                                    set.join(", ")
                                ),
                            }
                        }
                        None => None,
                    },
                }
            }
            None => best_of(ready()),
        };
        let Some((m, addr, b)) = best else {
            return Decision::NoCandidate {
                reason: format!(
                    "master {} unready for {}s and no ready slave answers",
                    o.master,
                    down_for.as_secs()
                ),
            };
        };
        let followers = followers(o, &m.pod, false);
        return Decision::Promote {
            new_master: m.pod.clone(),
            addr: addr.clone(),
            epoch: next_epoch(o),
            step_down: step_down(o),
            followers,
            reason: format!(
                "master {} unready for {}s; {} has the highest confirmed offset {}{}",
                o.master,
                down_for.as_secs(),
                m.pod,
                b.confirm_offset,
                if unclean {
                    " (UNCLEAN: outside the in-sync set; acknowledged messages may be lost)"
                } else {
                    ""
                }
            ),
            unclean,
        };
    }
    if let Some(d) = master_lost_data(o) {
        return d;
    }
    let mut fixes = Vec::new();
    for m in &o.members {
        let (Some(addr), Some(b)) = (&m.addr, &m.broker) else {
            continue;
        };
        if m.pod == o.master {
            if !b.is_master || b.epoch < o.epoch {
                fixes.push(Correction::Promote { addr: addr.clone() });
            }
        } else if b.is_master || b.epoch < o.epoch {
            fixes.push(Correction::Follow {
                addr: addr.clone(),
                broker_id: m.slave_id,
            });
        }
    }
    if !fixes.is_empty() {
        if let Some(master_addr) = o
            .members
            .iter()
            .find(|m| m.pod == o.master)
            .and_then(|m| m.addr.clone())
        {
            return Decision::Correct {
                epoch: next_epoch(o),
                master_addr,
                followers: o
                    .members
                    .iter()
                    .filter(|m| m.pod != o.master && m.broker.is_some())
                    .filter_map(|m| Some((m.addr.clone()?, m.slave_id)))
                    .collect(),
                fixes,
            };
        }
    }
    switchover(o, now).unwrap_or(Decision::Steady)
}

/// The candidate with the highest confirmed offset (ties: the lowest ordinal, for a
/// stable choice).
fn best_of<'a>(
    it: impl Iterator<Item = (&'a Member, &'a String, &'a BrokerView)>,
) -> Option<(&'a Member, &'a String, &'a BrokerView)> {
    it.max_by(|a, b| {
        a.2.confirm_offset
            .cmp(&b.2.confirm_offset)
            .then_with(|| b.0.slave_id.cmp(&a.0.slave_id))
    })
}

/// The recorded master, when it has an address and answered: a live old master is
/// told to step down before anyone else is promoted.
fn step_down(o: &Observed) -> Option<(String, i64)> {
    let m = o.members.iter().find(|m| m.pod == o.master)?;
    m.broker.as_ref()?;
    Some((m.addr.clone()?, m.slave_id))
}

/// The brokers to re-point at `new_master`: every other ready one with an address, as
/// (address, slave id); the recorded master only when `with_master` (it is up and must
/// follow too).
fn followers(o: &Observed, new_master: &str, with_master: bool) -> Vec<(String, i64)> {
    o.members
        .iter()
        .filter(|x| x.pod != new_master)
        .filter(|x| {
            if x.pod == o.master {
                with_master
            } else {
                x.ready
            }
        })
        .filter_map(|x| Some((x.addr.clone()?, x.slave_id)))
        .collect()
}

/// A master that is up but lost data a slave holds (its slaves refuse to truncate to it
/// and report `masterBehind`): the best such slave is promoted, and the old master is
/// among the brokers told to follow it.
fn master_lost_data(o: &Observed) -> Option<Decision> {
    if !o.enabled {
        return None;
    }
    let master = o.members.iter().find(|m| m.pod == o.master)?;
    let (m, addr, b) = o
        .members
        .iter()
        .filter(|m| m.pod != o.master && m.ready)
        .filter_map(|m| Some((m, m.addr.as_ref()?, m.broker.as_ref()?)))
        .filter(|(_, _, b)| b.master_behind && !b.is_master && b.epoch == o.epoch)
        .max_by(|a, b| {
            a.2.max_offset
                .cmp(&b.2.max_offset)
                .then_with(|| b.0.slave_id.cmp(&a.0.slave_id))
        })?;
    let followers = followers(o, &m.pod, false);
    Some(Decision::Promote {
        new_master: m.pod.clone(),
        addr: addr.clone(),
        epoch: next_epoch(o),
        step_down: step_down(o),
        followers,
        reason: format!(
            "master {} lost data that {} holds (its log ends before the slave's {} in epoch {})",
            master.pod, m.pod, b.max_offset, o.epoch
        ),
        unclean: false,
    })
}

/// The master's pod is terminating (a rolling update, an eviction, a drain) while its
/// broker still runs (`preStop`): the role moves at once, with a lossless switchover,
/// to the in-sync ready slave holding the most.
fn hand_off(o: &Observed) -> Option<Decision> {
    if !o.enabled {
        return None;
    }
    let master = o
        .members
        .iter()
        .find(|m| m.pod == o.master && m.terminating)?;
    let (from_addr, mv) = (master.addr.as_ref()?, master.broker.as_ref()?);
    if !mv.is_master || mv.epoch != o.epoch {
        return None;
    }
    let (target, to_addr, tv) = o
        .members
        .iter()
        .filter(|m| m.pod != o.master && m.ready && !m.terminating)
        .filter(|m| o.in_sync.as_ref().is_none_or(|set| set.contains(&m.pod)))
        .filter_map(|m| Some((m, m.addr.as_ref()?, m.broker.as_ref()?)))
        .filter(|(_, _, b)| {
            !b.is_master
                && b.epoch == o.epoch
                && mv.max_offset.saturating_sub(b.max_offset) <= SWITCHOVER_MAX_GAP
        })
        .max_by(|a, b| {
            a.2.max_offset
                .cmp(&b.2.max_offset)
                .then_with(|| b.0.slave_id.cmp(&a.0.slave_id))
        })?;
    Some(Decision::Switchover(SwitchoverPlan {
        from: o.master.clone(),
        from_addr: from_addr.clone(),
        from_id: master.slave_id,
        to: target.pod.clone(),
        to_addr: to_addr.clone(),
        epoch: next_epoch(o),
        followers: followers(o, &target.pod, false),
        reason: format!(
            "master pod {} is terminating; handing off to {} ({} bytes behind)",
            o.master,
            target.pod,
            mv.max_offset.saturating_sub(tv.max_offset)
        ),
    }))
}

/// A planned switchover when a preferred pod other than the master is a ready slave
/// within [`SWITCHOVER_MAX_GAP`] of a healthy master, and the role has not moved in the
/// last [`SWITCHOVER_COOLDOWN`].
fn switchover(o: &Observed, now: Timestamp) -> Option<Decision> {
    if o.preferred.is_empty() || o.preferred.contains(&o.master) {
        return None;
    }
    if let Some(t) = o.last_move {
        let since = now.duration_since(t);
        if !since.is_negative() && since.unsigned_abs() < SWITCHOVER_COOLDOWN {
            return None;
        }
    }
    let master = o.members.iter().find(|m| m.pod == o.master && m.ready)?;
    let (from_addr, mv) = (master.addr.as_ref()?, master.broker.as_ref()?);
    if !mv.is_master || mv.epoch != o.epoch {
        return None;
    }
    let (target, to_addr, tv) = o.preferred.iter().find_map(|p| {
        let m = o.members.iter().find(|m| &m.pod == p && m.ready)?;
        let (addr, b) = (m.addr.as_ref()?, m.broker.as_ref()?);
        let in_sync = !b.is_master
            && b.epoch == o.epoch
            && mv.max_offset.saturating_sub(b.max_offset) <= SWITCHOVER_MAX_GAP
            && o.in_sync.as_ref().is_none_or(|set| set.contains(&m.pod));
        in_sync.then_some((m, addr, b))
    })?;
    let followers = followers(o, &target.pod, false);
    Some(Decision::Switchover(SwitchoverPlan {
        from: o.master.clone(),
        from_addr: from_addr.clone(),
        from_id: master.slave_id,
        to: target.pod.clone(),
        to_addr: to_addr.clone(),
        epoch: next_epoch(o),
        followers,
        reason: format!(
            "{} is preferred and in sync ({} bytes behind)",
            target.pod,
            mv.max_offset.saturating_sub(tv.max_offset)
        ),
    }))
}

/// A change to a Raft group the operator asks its leader for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftChange {
    /// Add member `id` (`n3`) whose Raft port is `peer`.
    Add {
        /// Its `dLegerPeers` id.
        id: String,
        /// Its Raft address (`host:port`).
        peer: String,
    },
    /// Remove member `id`.
    Remove {
        /// Its `dLegerPeers` id.
        id: String,
    },
    /// Hand leadership to member `to`.
    Transfer {
        /// Its `dLegerPeers` id.
        to: String,
    },
}

/// The broker calls the operator makes (remoting in production, a fake in tests).
pub trait BrokerAdmin: Send + Sync {
    /// What a broker reports.
    fn state(&self, addr: &str) -> BoxFuture<'_, Result<BrokerView, String>>;
    /// Makes `addr` master at `epoch`; returns its state afterwards.
    fn promote(&self, addr: &str, epoch: i64) -> BoxFuture<'_, Result<BrokerView, String>>;
    /// Makes `addr` follow `master` (HA at `master_ha`) at `epoch` with `broker_id`.
    fn follow(
        &self,
        addr: &str,
        master: &str,
        master_ha: &str,
        broker_id: i64,
        epoch: i64,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// A planned switchover that loses nothing: `from` (the master) stops taking writes,
    /// `to` catches up, `to` becomes master at `epoch`, `followers` and `from` (as slave
    /// `from_id`) follow it. On failure nothing changed and `from` takes writes again.
    fn switch_over<'a>(
        &'a self,
        from: &'a str,
        from_id: i64,
        to: &'a str,
        followers: &'a [(String, i64)],
        epoch: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;

    /// The controller confirms the in-sync set it recorded on master `addr`: `members`
    /// (slave remoting addresses) at set epoch `epoch`; members that were leaving and
    /// are not in `members` leave.
    fn confirm_sync_state_set<'a>(
        &'a self,
        addr: &'a str,
        epoch: i64,
        members: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        let _ = (addr, epoch, members);
        Box::pin(async { Err("in-sync set confirmation not supported".to_string()) })
    }

    /// A Raft group's membership or leadership change, sent to its leader `leader`;
    /// returns the membership afterwards (`dLegerPeers` ids).
    fn raft_change<'a>(
        &'a self,
        leader: &'a str,
        change: &'a RaftChange,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        let _ = (leader, change);
        Box::pin(async { Err("Raft membership changes not supported".to_string()) })
    }

    /// Points broker `addr` at the name servers `namesrv_addr` while it runs.
    fn set_namesrv_addr<'a>(
        &'a self,
        addr: &'a str,
        namesrv_addr: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        let _ = (addr, namesrv_addr);
        Box::pin(async { Err("namesrvAddr updates not supported".to_string()) })
    }

    /// A promotion: `addr` becomes master at `epoch`, then each of `followers` (address,
    /// slave id) follows it. Follower failures are logged and skipped (a later reconcile
    /// corrects them); returns the followers re-pointed.
    fn fail_over<'a>(
        &'a self,
        addr: &'a str,
        followers: &'a [(String, i64)],
        epoch: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let view = self.promote(addr, epoch).await?;
            let mut done = Vec::new();
            for (f, id) in followers {
                match self.follow(f, addr, &view.ha_addr, *id, epoch).await {
                    Ok(()) => done.push(f.clone()),
                    Err(e) => tracing::warn!(slave = %f, error = %e, "could not re-point a slave"),
                }
            }
            Ok(done)
        })
    }
}

/// [`BrokerAdmin`] over ferrocket's remoting requests (the ones `ferrocket admin role`
/// sends).
pub struct RemotingAdmin {
    client: ferrocket::remoting::RemotingClient,
    timeout: Duration,
}

impl Default for RemotingAdmin {
    fn default() -> Self {
        RemotingAdmin {
            client: ferrocket::remoting::RemotingClient::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl RemotingAdmin {
    /// Signs every request with `creds` (a group's control key).
    #[must_use]
    pub fn signing(creds: ferrocket::auth::Credentials) -> Self {
        RemotingAdmin {
            client: ferrocket::remoting::RemotingClient::signing(creds),
            ..RemotingAdmin::default()
        }
    }

    /// Reaches the brokers over TLS.
    #[must_use]
    pub fn with_tls(self, tls: ferrocket::remoting::tls::TlsClient) -> Self {
        RemotingAdmin {
            client: self.client.with_tls(tls),
            ..self
        }
    }
}

fn view(s: ferrocket::client::role::BrokerState) -> BrokerView {
    BrokerView {
        is_master: s.is_master(),
        epoch: s.epoch,
        known_epoch: s.known_epoch,
        confirm_offset: s.confirm_offset,
        max_offset: s.max_offset,
        ha_addr: s.ha_addr,
        master_behind: s.follow_problem_kind
            == ferrocket::ha::FollowProblemKind::MasterBehind.as_str(),
        in_sync: s.in_sync,
        in_sync_leaving: s.in_sync_leaving,
        sync_set_epoch: s.sync_set_epoch,
        namesrv_addr: s.namesrv_addr,
        follow_problem: Some(s.follow_problem).filter(|p| !p.is_empty()),
        raft_members: s.raft_members,
    }
}

impl BrokerAdmin for RemotingAdmin {
    fn raft_change<'a>(
        &'a self,
        leader: &'a str,
        change: &'a RaftChange,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        use ferrocket::remoting::codes::{request, response};
        use ferrocket::remoting::RemotingCommand;
        Box::pin(async move {
            // A learner catches up from the leader's log: allow it time.
            let wait = Duration::from_secs(60);
            let cmd = match change {
                RaftChange::Add { id, peer } => RemotingCommand::request(request::RAFT_ADD_MEMBER)
                    .with_ext("memberId", id)
                    .with_ext("peerAddr", peer),
                RaftChange::Remove { id } => {
                    RemotingCommand::request(request::RAFT_REMOVE_MEMBER).with_ext("memberId", id)
                }
                RaftChange::Transfer { to } => {
                    RemotingCommand::request(request::RAFT_TRANSFER_LEADER).with_ext("targetId", to)
                }
            }
            .with_ext("timeoutMillis", wait.as_millis());
            let r = self
                .client
                .invoke(leader, cmd, wait + Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            if r.code != response::SUCCESS {
                return Err(r.remark.unwrap_or_else(|| format!("code {}", r.code)));
            }
            let state = ferrocket::client::role::broker_state(&self.client, leader, self.timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok(state.raft_members)
        })
    }

    fn set_namesrv_addr<'a>(
        &'a self,
        addr: &'a str,
        namesrv_addr: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            ferrocket::client::role::set_namesrv_addr(
                &self.client,
                addr,
                namesrv_addr,
                self.timeout,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }

    fn confirm_sync_state_set<'a>(
        &'a self,
        addr: &'a str,
        epoch: i64,
        members: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            ferrocket::client::role::confirm_sync_state_set(
                &self.client,
                addr,
                epoch,
                members,
                self.timeout,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }

    /// `client::role::switch_over`, the function `ferrocket admin switchover` and the
    /// broker's switchover test use.
    fn switch_over<'a>(
        &'a self,
        from: &'a str,
        from_id: i64,
        to: &'a str,
        followers: &'a [(String, i64)],
        epoch: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            ferrocket::client::role::switch_over(
                &self.client,
                from,
                from_id,
                to,
                followers,
                epoch,
                self.timeout,
                Duration::from_secs(10),
            )
            .await
            .map(|s| s.repointed)
            .map_err(|e| e.to_string())
        })
    }

    /// The same function the broker's fault tests drive (`client::role::fail_over`).
    fn fail_over<'a>(
        &'a self,
        addr: &'a str,
        followers: &'a [(String, i64)],
        epoch: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            ferrocket::client::role::fail_over(&self.client, addr, followers, epoch, self.timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn state(&self, addr: &str) -> BoxFuture<'_, Result<BrokerView, String>> {
        let addr = addr.to_string();
        Box::pin(async move {
            ferrocket::client::role::broker_state(&self.client, &addr, self.timeout)
                .await
                .map(view)
                .map_err(|e| e.to_string())
        })
    }

    fn promote(&self, addr: &str, epoch: i64) -> BoxFuture<'_, Result<BrokerView, String>> {
        let addr = addr.to_string();
        Box::pin(async move {
            ferrocket::client::role::change_role(
                &self.client,
                &addr,
                &ferrocket::client::role::NewRole::Master,
                epoch,
                self.timeout,
            )
            .await
            .map(view)
            .map_err(|e| e.to_string())
        })
    }

    fn follow(
        &self,
        addr: &str,
        master: &str,
        master_ha: &str,
        broker_id: i64,
        epoch: i64,
    ) -> BoxFuture<'_, Result<(), String>> {
        let (addr, master, master_ha) =
            (addr.to_string(), master.to_string(), master_ha.to_string());
        Box::pin(async move {
            let role = ferrocket::client::role::NewRole::Slave {
                master,
                master_ha: Some(master_ha).filter(|h| !h.is_empty()),
                broker_id: Some(broker_id),
            };
            ferrocket::client::role::change_role(&self.client, &addr, &role, epoch, self.timeout)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn member(
        pod: &str,
        ready: bool,
        since: Option<i64>,
        role: Option<(bool, i64, u64)>,
    ) -> Member {
        let ordinal: i64 = pod.rsplit('-').next().unwrap().parse().unwrap();
        Member {
            pod: pod.into(),
            ready,
            unready_since: since.map(t),
            addr: Some(format!("10.0.0.{ordinal}:10911")),
            broker: role.map(|(is_master, epoch, confirm_offset)| BrokerView {
                is_master,
                epoch,
                known_epoch: epoch,
                confirm_offset,
                max_offset: confirm_offset,
                ha_addr: format!("10.0.0.{ordinal}:10912"),
                follow_problem: None,
                master_behind: false,
                in_sync: Vec::new(),
                in_sync_leaving: Vec::new(),
                sync_set_epoch: 0,
                namesrv_addr: String::new(),
                raft_members: Vec::new(),
            }),
            slave_id: ordinal + 1,
            terminating: false,
        }
    }

    fn group(members: Vec<Member>) -> Observed {
        Observed {
            master: "b-0".into(),
            epoch: 1,
            enabled: true,
            grace: Duration::from_secs(10),
            members,
            preferred: Vec::new(),
            last_move: None,
            in_sync: None,
            allow_unclean: false,
        }
    }

    #[test]
    fn decision_table() {
        let healthy = vec![
            member("b-0", true, None, Some((true, 1, 500))),
            member("b-1", true, None, Some((false, 1, 500))),
            member("b-2", true, None, Some((false, 1, 480))),
        ];
        assert_eq!(decide(&group(healthy), t(100)), Decision::Steady);

        // Grace not reached: wait for the rest of it.
        let down = |since, s1: Option<(bool, i64, u64)>, s2: Option<(bool, i64, u64)>, r1, r2| {
            group(vec![
                member("b-0", false, Some(since), None),
                member("b-1", r1, None, s1),
                member("b-2", r2, None, s2),
            ])
        };
        assert_eq!(
            decide(
                &down(95, Some((false, 1, 500)), Some((false, 1, 400)), true, true),
                t(100)
            ),
            Decision::Wait {
                remaining: Duration::from_secs(5)
            }
        );

        // Several slaves with different offsets: the highest confirmed offset wins, the
        // other ready slave is re-pointed, the epoch goes up by one.
        match decide(
            &down(80, Some((false, 1, 400)), Some((false, 1, 900)), true, true),
            t(100),
        ) {
            Decision::Promote {
                new_master,
                addr,
                epoch,
                followers,
                ..
            } => {
                assert_eq!(
                    (new_master.as_str(), addr.as_str(), epoch),
                    ("b-2", "10.0.0.2:10911", 2)
                );
                assert_eq!(followers, [("10.0.0.1:10911".to_string(), 2)]);
            }
            other => panic!("{other:?}"),
        }
        // The best slave is unready: the ready one is promoted.
        match decide(
            &down(
                80,
                Some((false, 1, 400)),
                Some((false, 1, 900)),
                true,
                false,
            ),
            t(100),
        ) {
            Decision::Promote {
                new_master,
                followers,
                ..
            } => {
                assert_eq!(new_master, "b-1");
                assert!(followers.is_empty());
            }
            other => panic!("{other:?}"),
        }

        // No ready slave (or none answering): Degraded, nothing changes.
        assert!(matches!(
            decide(
                &down(
                    80,
                    Some((false, 1, 400)),
                    Some((false, 1, 900)),
                    false,
                    false
                ),
                t(100)
            ),
            Decision::NoCandidate { .. }
        ));
        assert!(matches!(
            decide(&down(80, None, None, true, true), t(100)),
            Decision::NoCandidate { .. }
        ));

        // The master comes back during the grace period: steady again.
        let back = group(vec![
            member("b-0", true, None, Some((true, 1, 500))),
            member("b-1", true, None, Some((false, 1, 500))),
        ]);
        assert_eq!(decide(&back, t(100)), Decision::Steady);

        // Failover disabled: never promote.
        let mut off = down(0, Some((false, 1, 400)), Some((false, 1, 900)), true, true);
        off.enabled = false;
        assert_eq!(decide(&off, t(100)), Decision::Steady);

        // After a failover (master b-2, epoch 2) the old master returns claiming to be
        // master at epoch 1 (stale roles file): it is told to follow. A slave still in
        // epoch 1 (unreachable at failover time) is re-pointed too.
        let after = Observed {
            master: "b-2".into(),
            epoch: 2,
            ..group(vec![
                member("b-0", true, None, Some((true, 1, 700))),
                member("b-1", true, None, Some((false, 1, 400))),
                member("b-2", true, None, Some((true, 2, 900))),
            ])
        };
        // The correction re-asserts b-2 at a new epoch (3, above every report) and
        // re-points every other broker.
        assert_eq!(
            decide(&after, t(100)),
            Decision::Correct {
                epoch: 3,
                master_addr: "10.0.0.2:10911".into(),
                followers: vec![
                    ("10.0.0.0:10911".to_string(), 1),
                    ("10.0.0.1:10911".to_string(), 2)
                ],
                fixes: vec![
                    Correction::Follow {
                        addr: "10.0.0.0:10911".into(),
                        broker_id: 1
                    },
                    Correction::Follow {
                        addr: "10.0.0.1:10911".into(),
                        broker_id: 2
                    },
                ],
            }
        );
        // Once it follows at epoch 2, all is steady.
        let converged = Observed {
            members: vec![
                member("b-0", true, None, Some((false, 2, 900))),
                member("b-1", true, None, Some((false, 2, 900))),
                member("b-2", true, None, Some((true, 2, 900))),
            ],
            ..after
        };
        assert_eq!(decide(&converged, t(100)), Decision::Steady);

        // The recorded master is up but reports slave (a promotion cut short): promote it.
        let half = Observed {
            master: "b-1".into(),
            epoch: 2,
            ..group(vec![member("b-1", true, None, Some((false, 1, 900)))])
        };
        assert_eq!(
            decide(&half, t(100)),
            Decision::Correct {
                epoch: 3,
                master_addr: "10.0.0.1:10911".into(),
                followers: Vec::new(),
                fixes: vec![Correction::Promote {
                    addr: "10.0.0.1:10911".into()
                }],
            }
        );

        // Issue 13's stale-roles case: g-1 was promoted at epoch 2 and its history holds
        // it; a correction at epoch 2 would be refused ("epoch 2 already has a different
        // role"). Every new epoch is above every report.
        let stale = Observed {
            master: "b-1".into(),
            epoch: 2,
            ..group(vec![
                member("b-0", true, None, Some((false, 2, 900))),
                member("b-1", true, None, Some((false, 1, 900))),
            ])
        };
        match decide(&stale, t(100)) {
            Decision::Correct { epoch, .. } => assert_eq!(epoch, 3),
            d => panic!("{d:?}"),
        }
        // A lost status (record back at epoch 1) never reuses an epoch a broker holds.
        let lost = group(vec![
            member("b-0", false, Some(0), None),
            member("b-1", true, None, Some((false, 7, 900))),
        ]);
        match decide(&lost, t(100)) {
            Decision::Promote { epoch, .. } => assert_eq!(epoch, 8),
            d => panic!("{d:?}"),
        }
        // A master whose pod is unready but whose broker still answers the operator's
        // probe as master (a kubelet cut off from the API server) is not replaced.
        let live = group(vec![
            member("b-0", false, Some(0), Some((true, 1, 900))),
            member("b-1", true, None, Some((false, 1, 900))),
        ]);
        assert_eq!(decide(&live, t(100)), Decision::Steady);
        // One that answers as a slave (it was demoted or restarted as one) is.
        let demoted = group(vec![
            member("b-0", false, Some(0), Some((false, 1, 900))),
            member("b-1", true, None, Some((false, 1, 900))),
        ]);
        match decide(&demoted, t(100)) {
            Decision::Promote {
                new_master,
                step_down,
                ..
            } => {
                assert_eq!(new_master, "b-1");
                assert_eq!(step_down, Some(("10.0.0.0:10911".to_string(), 1)));
            }
            d => panic!("{d:?}"),
        }
    }

    /// Issue 13: only a member of the last recorded in-sync set is promoted; with none
    /// ready the group waits (or, with allowUnclean, promotes another and says so).
    #[test]
    fn only_an_in_sync_member_is_promoted() {
        let down = |in_sync: Option<Vec<&str>>, allow_unclean| Observed {
            in_sync: in_sync.map(|v| v.into_iter().map(str::to_owned).collect()),
            allow_unclean,
            ..group(vec![
                member("b-0", false, Some(0), None),
                // b-1 holds more bytes but is not in the set (it was lagging and left
                // while the master acknowledged with b-2 only).
                member("b-1", true, None, Some((false, 1, 900))),
                member("b-2", true, None, Some((false, 1, 800))),
            ])
        };
        match decide(&down(Some(vec!["b-2"]), false), t(100)) {
            Decision::Promote {
                new_master,
                unclean,
                ..
            } => assert_eq!((new_master.as_str(), unclean), ("b-2", false)),
            d => panic!("{d:?}"),
        }
        // Never reported (an older operator's status): any ready slave, as before.
        match decide(&down(None, false), t(100)) {
            Decision::Promote { new_master, .. } => assert_eq!(new_master, "b-1"),
            d => panic!("{d:?}"),
        }
        // The member is down: wait, Degraded.
        let mut only_far = down(Some(vec!["b-3"]), false);
        assert!(matches!(
            decide(&only_far, t(100)),
            Decision::NoInSyncReplica { .. }
        ));
        // An empty set (a new epoch nobody joined yet) is no member either.
        assert!(matches!(
            decide(&down(Some(Vec::new()), false), t(100)),
            Decision::NoInSyncReplica { .. }
        ));
        // allowUnclean: the best ready slave, marked unclean.
        only_far.allow_unclean = true;
        match decide(&only_far, t(100)) {
            Decision::Promote {
                new_master,
                unclean,
                reason,
                ..
            } => {
                assert_eq!((new_master.as_str(), unclean), ("b-1", true));
                assert!(reason.contains("UNCLEAN"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
    }

    /// A terminating master pod (rolling update, eviction) hands the role off at once to
    /// the in-sync slave holding the most, without waiting for a grace period or a
    /// cooldown; with no such slave, nothing happens until it is gone.
    #[test]
    fn a_terminating_master_hands_off_by_switchover() {
        let mut o = Observed {
            in_sync: Some(vec!["b-1".into(), "b-2".into()]),
            last_move: Some(t(99)),
            ..group(vec![
                member("b-0", true, None, Some((true, 1, 1000))),
                member("b-1", true, None, Some((false, 1, 990))),
                member("b-2", true, None, Some((false, 1, 1000))),
            ])
        };
        o.members[0].terminating = true;
        match decide(&o, t(100)) {
            Decision::Switchover(p) => {
                assert_eq!((p.to.as_str(), p.epoch), ("b-2", 2));
                assert!(p.reason.contains("terminating"), "{}", p.reason);
            }
            d => panic!("{d:?}"),
        }
        // Only members of the in-sync set.
        o.in_sync = Some(vec!["b-1".into()]);
        assert!(matches!(decide(&o, t(100)), Decision::Switchover(p) if p.to == "b-1"));
        o.in_sync = Some(Vec::new());
        assert_eq!(decide(&o, t(100)), Decision::Steady);
    }

    #[test]
    fn switchover_table() {
        let healthy = || {
            vec![
                member("b-0", true, None, Some((true, 1, 500))),
                member("b-1", true, None, Some((false, 1, 500))),
                member("b-2", true, None, Some((false, 1, 480))),
            ]
        };
        let with = |members: Vec<Member>, preferred: &[&str], last_move: Option<i64>| Observed {
            preferred: preferred.iter().map(|p| p.to_string()).collect(),
            last_move: last_move.map(t),
            ..group(members)
        };
        let to = |d: Decision| match d {
            Decision::Switchover(p) => Some((p.from, p.from_id, p.to, p.epoch, p.followers)),
            _ => None,
        };
        // A preferred in-sync slave: moved there at the next epoch; the rest follow.
        assert_eq!(
            to(decide(&with(healthy(), &["b-1"], None), t(100))),
            Some((
                "b-0".to_string(),
                1,
                "b-1".to_string(),
                2,
                vec![("10.0.0.2:10911".to_string(), 3)]
            ))
        );
        // Nothing preferred, or the master is preferred: steady.
        assert_eq!(
            decide(&with(healthy(), &[], None), t(100)),
            Decision::Steady
        );
        assert_eq!(
            decide(&with(healthy(), &["b-1", "b-0"], None), t(100)),
            Decision::Steady
        );
        // The first preferred pod is unready: the next one is taken.
        let mut m = healthy();
        m[1].ready = false;
        assert_eq!(
            to(decide(&with(m.clone(), &["b-1", "b-2"], None), t(100))).map(|x| x.2),
            Some("b-2".to_string())
        );
        // Only an unready (or unanswering) preferred pod: steady.
        assert_eq!(decide(&with(m, &["b-1"], None), t(100)), Decision::Steady);
        // Far behind the master: not switched to.
        let mut m = healthy();
        m[0].broker.as_mut().unwrap().max_offset = 1 << 30;
        assert_eq!(decide(&with(m, &["b-1"], None), t(100)), Decision::Steady);
        // Within the cooldown after the last move: wait; after it: go.
        assert_eq!(
            decide(&with(healthy(), &["b-1"], Some(70)), t(100)),
            Decision::Steady
        );
        assert!(to(decide(&with(healthy(), &["b-1"], Some(30)), t(100))).is_some());
        // Roles disagreeing with the record come first.
        let mut m = healthy();
        m[2].broker.as_mut().unwrap().is_master = true;
        assert!(matches!(
            decide(&with(m, &["b-1"], None), t(100)),
            Decision::Correct { .. }
        ));
        // A master that is down is a failover, not a switchover.
        let mut m = healthy();
        m[0].ready = false;
        m[0].unready_since = Some(t(0));
        m[0].broker = None;
        assert!(matches!(
            decide(&with(m, &["b-1"], None), t(100)),
            Decision::Promote { .. }
        ));
    }

    #[test]
    fn a_master_that_lost_data_is_replaced_by_the_slave_holding_it() {
        let mut m = vec![
            member("b-0", true, None, Some((true, 1, 300))),
            member("b-1", true, None, Some((false, 1, 800))),
            member("b-2", true, None, Some((false, 1, 700))),
        ];
        m[1].broker.as_mut().unwrap().master_behind = true;
        m[2].broker.as_mut().unwrap().master_behind = true;
        match decide(&group(m.clone()), t(100)) {
            Decision::Promote {
                new_master,
                epoch,
                step_down,
                followers,
                ..
            } => {
                assert_eq!((new_master.as_str(), epoch), ("b-1", 2));
                assert_eq!(
                    step_down,
                    Some(("10.0.0.0:10911".to_string(), 1)),
                    "the old master steps down first"
                );
                assert_eq!(followers, vec![("10.0.0.2:10911".to_string(), 3)]);
            }
            d => panic!("{d:?}"),
        }
        // Failover disabled: nothing moves.
        let off = Observed {
            enabled: false,
            ..group(m.clone())
        };
        assert_eq!(decide(&off, t(100)), Decision::Steady);
        // A report from an older epoch is not trusted.
        m[1].broker.as_mut().unwrap().epoch = 0;
        m[2].broker.as_mut().unwrap().master_behind = false;
        assert!(!matches!(
            decide(&group(m), t(100)),
            Decision::Promote { .. }
        ));
    }
}
