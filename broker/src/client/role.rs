//! Role changes and replication state, as the admin CLI, the operator and the fault
//! tests drive them: the same requests on the same code path.

use std::time::Duration;

use crate::remoting::codes::{request, response};
use crate::remoting::{RemotingClient, RemotingCommand};

use super::ClientError;

/// What a broker reports about its role and log (GET_BROKER_RUNTIME_INFO).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerState {
    /// `ASYNC_MASTER`, `SYNC_MASTER` or `SLAVE`.
    pub role: String,
    /// 0 for the master.
    pub broker_id: i64,
    /// Role epoch.
    pub epoch: i64,
    /// The newest epoch it knows (role or epoch history).
    pub known_epoch: i64,
    /// CommitLog max offset.
    pub max_offset: u64,
    /// What the broker vouches for (the end of the CommitLog it holds).
    pub confirm_offset: u64,
    /// Where its current epoch began.
    pub epoch_start_offset: u64,
    /// Connected slaves (masters).
    pub ha_connections: u64,
    /// The master it follows (slaves).
    pub master_addr: String,
    /// Its own HA address (`brokerIP1:haListenPort`).
    pub ha_addr: String,
    /// Why a slave cannot follow its master (empty when it can).
    pub follow_problem: String,
    /// Its kind: `behind`, `staleMaster`, `masterBehind` (empty when it can follow).
    pub follow_problem_kind: String,
    /// A master's highest offset acknowledged by a slave in its current term.
    pub ack_offset: u64,
    /// A master's in-sync replica set: its member slaves' remoting addresses.
    pub in_sync: Vec<String>,
    /// Members that stopped catching up, waiting for the controller's confirmation.
    pub in_sync_leaving: Vec<String>,
    /// The in-sync set's epoch.
    pub sync_set_epoch: i64,
    /// The name servers it registers with (`;`-separated).
    pub namesrv_addr: String,
    /// Why a master takes no writes (a newer master exists), empty otherwise.
    pub fenced: String,
    /// In a Raft group, the committed membership's `dLegerPeers` ids (`n0`, `n1`, …).
    pub raft_members: Vec<String>,
}

impl BrokerState {
    /// Whether the broker takes writes.
    #[must_use]
    pub fn is_master(&self) -> bool {
        self.role != "SLAVE"
    }
}

/// The new role of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRole {
    /// Take writes (`brokerId` 0).
    Master,
    /// Follow `master` (remoting address) with `broker_id`.
    Slave {
        /// The master's remoting address.
        master: String,
        /// The master's HA address (default: its port + 1).
        master_ha: Option<String>,
        /// The slave's id (default: its configured slave id).
        broker_id: Option<i64>,
    },
}

/// Reads a broker's role and offsets.
///
/// # Errors
/// Transport failures, refusals, unreadable bodies.
pub async fn broker_state(
    remoting: &RemotingClient,
    addr: &str,
    timeout: Duration,
) -> Result<BrokerState, ClientError> {
    let r = remoting
        .invoke(
            addr,
            RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO),
            timeout,
        )
        .await?;
    if r.code != response::SUCCESS {
        return Err(super::refused(&format!("runtime info of {addr}"), &r));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body_bytes()).map_err(|e| ClientError::BadBody(e.to_string()))?;
    let t = &v["table"];
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| {
        t[k].as_str()
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(BrokerState {
        role: s("brokerRole"),
        broker_id: t["brokerId"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(-1),
        epoch: t["epoch"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        known_epoch: t["knownEpoch"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        max_offset: n("commitLogMaxOffset"),
        confirm_offset: n("confirmOffset"),
        epoch_start_offset: n("epochStartOffset"),
        ha_connections: n("haConnections"),
        master_addr: s("masterAddr"),
        ha_addr: s("haServerAddr"),
        follow_problem: s("haFollowProblem"),
        follow_problem_kind: s("haFollowProblemKind"),
        ack_offset: n("haSlaveAckOffset"),
        namesrv_addr: s("namesrvAddr"),
        fenced: s("masterFenced"),
        in_sync: list(t["inSyncSlaves"].as_str()),
        in_sync_leaving: list(t["inSyncSlavesLeaving"].as_str()),
        sync_set_epoch: t["syncStateSetEpoch"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        raft_members: t["dLegerMembers"]
            .as_str()
            .unwrap_or("")
            .split(';')
            .filter_map(|m| m.split_once('-').map(|(id, _)| id.to_owned()))
            .collect(),
    })
}

fn list(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The controller confirms the in-sync set it recorded (`members` at `epoch`) on the
/// master `addr` (CONFIRM_SYNC_STATE_SET, signed like a role change).
///
/// # Errors
/// Transport failures and refusals (the set moved on: look again).
pub async fn confirm_sync_state_set(
    remoting: &RemotingClient,
    addr: &str,
    epoch: i64,
    members: &[String],
    timeout: Duration,
) -> Result<(), ClientError> {
    let cmd = RemotingCommand::request(request::CONFIRM_SYNC_STATE_SET)
        .with_ext("epoch", epoch)
        .with_ext("members", members.join(","));
    let r = remoting.invoke(addr, cmd, timeout).await?;
    if r.code != response::SUCCESS {
        return Err(super::refused(&format!("in-sync set of {addr}"), &r));
    }
    Ok(())
}

/// Sends a role change to `addr` at `epoch`. Returns the broker's role afterwards, as
/// its answer states it (role, id, epoch, max offset, HA address; no second request, so
/// a change that took effect is never reported as failed because a later read timed
/// out).
///
/// # Errors
/// Transport failures; a refusal (older epoch, conflicting role) as
/// [`ClientError::Refused`].
pub async fn change_role(
    remoting: &RemotingClient,
    addr: &str,
    role: &NewRole,
    epoch: i64,
    timeout: Duration,
) -> Result<BrokerState, ClientError> {
    let mut cmd = RemotingCommand::request(request::ROLE_CHANGE).with_ext("epoch", epoch);
    cmd = match role {
        NewRole::Master => cmd.with_ext("role", "master"),
        NewRole::Slave {
            master,
            master_ha,
            broker_id,
        } => {
            let mut c = cmd.with_ext("role", "slave").with_ext("masterAddr", master);
            if let Some(h) = master_ha {
                c = c.with_ext("masterHaAddr", h);
            }
            if let Some(id) = broker_id {
                c = c.with_ext("brokerId", *id);
            }
            c
        }
    };
    let r = remoting.invoke(addr, cmd, timeout).await?;
    if r.code != response::SUCCESS {
        return Err(super::refused(&format!("role change of {addr}"), &r));
    }
    let num = |k: &str| r.ext(k).and_then(|v| v.parse::<i64>().ok());
    Ok(BrokerState {
        role: r.ext("brokerRole").unwrap_or_default().to_string(),
        broker_id: num("brokerId").unwrap_or(-1),
        epoch: num("epoch").unwrap_or(epoch),
        known_epoch: num("epoch").unwrap_or(epoch),
        max_offset: num("maxOffset")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        ha_addr: r.ext("haServerAddr").unwrap_or_default().to_string(),
        master_addr: match role {
            NewRole::Master => String::new(),
            NewRole::Slave { master, .. } => master.clone(),
        },
        ..BrokerState::default()
    })
}

/// A failover: promotes `new_master` at `epoch`, then points every other reachable
/// broker of the group at it. Slaves that cannot be reached are skipped (they learn the
/// new master from the roles file or the name server when they come back). Returns the
/// slaves that were re-pointed.
///
/// # Errors
/// The promotion itself failed.
pub async fn fail_over(
    remoting: &RemotingClient,
    new_master: &str,
    others: &[(String, i64)],
    epoch: i64,
    timeout: Duration,
) -> Result<Vec<String>, ClientError> {
    let promoted = change_role(remoting, new_master, &NewRole::Master, epoch, timeout).await?;
    let master_ha = Some(promoted.ha_addr).filter(|a| !a.is_empty());
    let mut repointed = Vec::new();
    for (addr, id) in others {
        let role = NewRole::Slave {
            master: new_master.to_string(),
            master_ha: master_ha.clone(),
            broker_id: Some(*id),
        };
        match change_role(remoting, addr, &role, epoch, timeout).await {
            Ok(_) => repointed.push(addr.clone()),
            Err(e) => tracing::warn!(slave = %addr, error = %e, "could not re-point a slave"),
        }
    }
    Ok(repointed)
}

/// Sets a broker's `brokerPermission` (6 read-write, 4 read-only) at run time.
///
/// # Errors
/// Transport failures and refusals.
pub async fn set_permission(
    remoting: &RemotingClient,
    addr: &str,
    permission: i32,
    timeout: Duration,
) -> Result<(), ClientError> {
    let cmd = RemotingCommand::request(request::UPDATE_BROKER_CONFIG).with_body(
        bytes::Bytes::from(format!("brokerPermission={permission}\n")),
    );
    let r = remoting.invoke(addr, cmd, timeout).await?;
    if r.code != response::SUCCESS {
        return Err(super::refused(&format!("brokerPermission of {addr}"), &r));
    }
    Ok(())
}

/// What a switchover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    /// The slaves re-pointed at the new master (the old master among them).
    pub repointed: Vec<String>,
    /// How long writes were refused (fence to promotion), ms.
    pub fenced_ms: u64,
    /// The CommitLog offset both held when the roles changed.
    pub offset: u64,
}

/// Points a running broker at other name servers (`namesrvAddr` through
/// UPDATE_BROKER_CONFIG; it registers with them at once).
///
/// # Errors
/// Transport failures and refusals.
pub async fn set_namesrv_addr(
    remoting: &RemotingClient,
    addr: &str,
    namesrv_addr: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let cmd = RemotingCommand::request(request::UPDATE_BROKER_CONFIG)
        .with_body(bytes::Bytes::from(format!("namesrvAddr={namesrv_addr}\n")));
    let r = remoting.invoke(addr, cmd, timeout).await?;
    if r.code != response::SUCCESS {
        return Err(super::refused(&format!("namesrvAddr of {addr}"), &r));
    }
    Ok(())
}

/// A planned switchover that loses nothing: the old master stops taking writes
/// (`brokerPermission=4`: sends get NO_PERMISSION and clients move on) while it keeps
/// streaming; once `target` holds everything the old master has, `target` is promoted at
/// `epoch` and every other broker, the old master as `old_master_id`, follows it; then
/// the old master's permission is restored. If `target` does not catch up within
/// `catch_up`, or its promotion fails, the old master is given writes back and nothing
/// else changes.
///
/// # Errors
/// The fence, the catch-up or the promotion failed (the old master is unfenced first).
#[allow(clippy::too_many_arguments)]
pub async fn switch_over(
    remoting: &RemotingClient,
    old_master: &str,
    old_master_id: i64,
    target: &str,
    others: &[(String, i64)],
    epoch: i64,
    timeout: Duration,
    catch_up: Duration,
) -> Result<Switchover, ClientError> {
    const READ_ONLY: i32 = 4;
    const READ_WRITE: i32 = 6;
    set_permission(remoting, old_master, READ_ONLY, timeout).await?;
    let fenced = std::time::Instant::now();
    let unfence = || async {
        if let Err(e) = set_permission(remoting, old_master, READ_WRITE, timeout).await {
            tracing::warn!(broker = %old_master, error = %e, "could not give the old master writes back");
        }
    };
    let deadline = tokio::time::Instant::now() + catch_up;
    // The master's end must also hold still across two looks: a send that passed the
    // permission check just before the fence appends microseconds later.
    let mut previous_end = None;
    let offset = loop {
        let caught_up = async {
            let om = broker_state(remoting, old_master, timeout).await?;
            let t = broker_state(remoting, target, timeout).await?;
            if t.is_master() {
                return Err(ClientError::Unavailable(format!(
                    "{target} is already a master"
                )));
            }
            // The target holds everything, and the master has its acknowledgement of it
            // (so the demoted master cuts nothing when it rejoins).
            let reached = t.max_offset >= om.max_offset && om.ack_offset >= om.max_offset;
            Ok::<_, ClientError>((om.max_offset, reached))
        }
        .await;
        let caught_up = caught_up.map(|(end, reached)| {
            let settled = previous_end == Some(end);
            previous_end = Some(end);
            (reached && settled).then_some(end)
        });
        match caught_up {
            Ok(Some(offset)) => break offset,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(None) => {
                unfence().await;
                return Err(ClientError::Unavailable(format!(
                    "{target} did not catch up with {old_master} within {catch_up:?}; switchover abandoned"
                )));
            }
            Err(e) => {
                unfence().await;
                return Err(e);
            }
        }
    };
    let mut all_others = others.to_vec();
    all_others.push((old_master.to_string(), old_master_id));
    let repointed = match fail_over(remoting, target, &all_others, epoch, timeout).await {
        Ok(r) => r,
        Err(e) => {
            // Did the promotion take effect (a lost answer, a timeout)? Only a target
            // that says it is still a slave lets the old master take writes again; a
            // target that is master, or that cannot be asked, leaves the old master
            // read-only (two masters taking writes is the one outcome not allowed).
            match broker_state(remoting, target, timeout).await {
                Ok(t) if !t.is_master() => unfence().await,
                Ok(t) => {
                    tracing::warn!(target = %target, epoch = t.epoch, error = %e, "the promotion answer was lost but the target is master; completing the switchover");
                    let mut done = Vec::new();
                    let ha = Some(t.ha_addr).filter(|a| !a.is_empty());
                    for (addr, id) in &all_others {
                        let role = NewRole::Slave {
                            master: target.to_string(),
                            master_ha: ha.clone(),
                            broker_id: Some(*id),
                        };
                        if change_role(remoting, addr, &role, epoch, timeout)
                            .await
                            .is_ok()
                        {
                            done.push(addr.clone());
                        }
                    }
                    if done.iter().any(|a| a == old_master) {
                        unfence().await;
                    }
                    return Ok(Switchover {
                        repointed: done,
                        fenced_ms: u64::try_from(fenced.elapsed().as_millis()).unwrap_or(u64::MAX),
                        offset,
                    });
                }
                Err(read) => {
                    tracing::warn!(target = %target, error = %e, read = %read, "promotion outcome unknown; the old master stays read-only");
                }
            }
            return Err(e);
        }
    };
    let fenced_ms = u64::try_from(fenced.elapsed().as_millis()).unwrap_or(u64::MAX);
    if repointed.iter().any(|a| a == old_master) {
        unfence().await;
    } else {
        // Still a master of the older epoch: it stays fenced rather than take writes
        // the new master's history will not contain.
        tracing::warn!(broker = %old_master, "old master not re-pointed; left read-only");
    }
    Ok(Switchover {
        repointed,
        fenced_ms,
        offset,
    })
}
