//! The broker in Raft mode (`enableDLegerCommitLog=true`): starts the group's node,
//! follows its leadership with the broker's role (the leader registers as brokerId 0,
//! a follower as its node id + 1, the Raft term as the epoch), and answers sends once
//! their records are committed.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{config, Broker, BrokerRole};
use crate::raft::node::{Leadership, OnChange, RaftNode, RaftNodeError};

impl Broker {
    /// Starts this broker's Raft node when `enableDLegerCommitLog` is on (entry log in
    /// `<storePathRootDir>/dledger`).
    ///
    /// # Errors
    /// The entry log cannot be opened or the `dLegerPeers` port bound.
    pub async fn start_raft(self: &Arc<Self>) -> Result<(), RaftNodeError> {
        if !self.config.dledger.enabled {
            return Ok(());
        }
        let dir = self.config.store.store_path_root_dir.join("dledger");
        let node = RaftNode::start(
            &self.config.dledger,
            &dir,
            self.config.store.mapped_file_size_commit_log,
            Arc::clone(&self.store),
            self.config.broker_addr(),
            self.ha_auth(),
        )
        .await?;
        let _ = self.raft.set(Arc::clone(&node));
        let b = Arc::clone(self);
        let on_change: OnChange = Arc::new(move |l| {
            let b = Arc::clone(&b);
            Box::pin(async move { b.follow_leadership(l).await })
        });
        if let Some(p) = &self.config.dledger.preferred_leader_id {
            if let Some(id) = node.id_of(p) {
                tokio::spawn(Arc::clone(&node).prefer_leader(id));
            }
        }
        tokio::spawn(node.run(on_change));
        Ok(())
    }

    /// On shutdown (SIGTERM: a rolling upgrade, a drained node), a leader hands its
    /// group to the member that holds the most of its log before it stops, so the
    /// group does not wait an election timeout and nothing acknowledged is refused
    /// (up to 5 s; otherwise the others elect after it is gone).
    pub(super) async fn hand_over_on_shutdown(&self) {
        let Some(node) = self.raft.get() else {
            return;
        };
        if !matches!(node.leadership(), Leadership::Leader { .. }) {
            return;
        }
        let Some(to) = node.best_successor() else {
            return;
        };
        match node.transfer_leader(to, Duration::from_secs(5)).await {
            Ok(term) => {
                info!(term, to = %node.name_of(to), "shutting down: leadership handed over")
            }
            Err(e) => {
                warn!(error = %e, "shutting down: leadership not handed over; the others will elect")
            }
        }
    }

    /// The Raft node, in Raft mode.
    pub(super) fn raft_node(&self) -> Option<&Arc<RaftNode>> {
        self.raft.get()
    }

    /// Tells the proposer (Raft mode) and the HA streams that records were appended.
    pub(super) fn data_appended(&self) {
        self.ha.notify_new_data();
        if let Some(n) = self.raft.get() {
            n.notify_appended();
        }
    }

    /// In Raft mode, the refusal of a write this node does not take now.
    pub(super) fn raft_refusal(&self) -> Option<String> {
        if !self.config.dledger.enabled {
            return None;
        }
        let Some(node) = self.raft.get() else {
            return Some("the DLedger group is starting".into());
        };
        match node.leadership() {
            Leadership::Leader { term } if node.transferring() => Some(format!(
                "this DLedger leader (term {term}) is handing leadership over"
            )),
            Leadership::Leader { .. } if self.store.takes_writes() => None,
            Leadership::Leader { term } => Some(format!(
                "this DLedger leader (term {term}) is still taking office"
            )),
            Leadership::Follower { term, leader } => Some(format!(
                "this broker is a DLedger follower; {} leads term {term}",
                node.name_of(leader)
            )),
            Leadership::Unknown { term } => {
                Some(format!("the DLedger group has no leader yet (term {term})"))
            }
        }
    }

    /// RAFT_TRANSFER_LEADER: hands this leader's group to `targetId` (see
    /// [`RaftNode::transfer_leader`]); answered once this member follows the new
    /// leader, with `term` and `leaderId`.
    pub(super) async fn raft_transfer_leader(
        &self,
        req: &crate::remoting::RemotingCommand,
    ) -> crate::remoting::RemotingCommand {
        use crate::remoting::codes::response;
        if let Err(refusal) = self.authorize_control(req, "leadership transfer") {
            return refusal;
        }
        let Some(node) = self.raft.get() else {
            return super::fail(
                req,
                response::SYSTEM_ERROR,
                "leadership transfer refused: this broker is not in a DLedger group \
                 (enableDLegerCommitLog=false)",
            );
        };
        let Some(target) = req.ext("targetId").and_then(|t| node.id_of(t)) else {
            return super::fail(
                req,
                response::SYSTEM_ERROR,
                "leadership transfer refused: targetId (a dLegerPeers id such as n1) is required",
            );
        };
        let timeout = timeout_of(req, 10_000, 120_000);
        match node.transfer_leader(target, timeout).await {
            Ok(term) => {
                let leader = match node.leadership() {
                    Leadership::Follower { leader, .. } => node.name_of(leader),
                    _ => node.name_of(node.id()),
                };
                crate::remoting::RemotingCommand::response_to(req, response::SUCCESS)
                    .with_ext("term", term)
                    .with_ext("leaderId", leader)
            }
            Err(e) => super::fail(
                req,
                response::SYSTEM_ERROR,
                format!(
                    "leadership transfer to {} failed: {e}",
                    node.name_of(target)
                ),
            ),
        }
    }

    /// RAFT_ADD_MEMBER / RAFT_REMOVE_MEMBER on the leader (see
    /// [`RaftNode::add_member`], [`RaftNode::remove_member`]); answered once the new
    /// membership is committed, with `members` (`n0-host:port;…`).
    pub(super) async fn raft_change_member(
        &self,
        req: &crate::remoting::RemotingCommand,
    ) -> crate::remoting::RemotingCommand {
        use crate::remoting::codes::{request, response};
        let adding = req.code == request::RAFT_ADD_MEMBER;
        let what = if adding {
            "adding a member"
        } else {
            "removing a member"
        };
        if let Err(refusal) = self.authorize_control(req, what) {
            return refusal;
        }
        let refuse = |why: String| {
            super::fail(
                req,
                response::SYSTEM_ERROR,
                format!("{what} refused: {why}"),
            )
        };
        let Some(node) = self.raft.get() else {
            return refuse(
                "this broker is not in a DLedger group (enableDLegerCommitLog=false)".into(),
            );
        };
        let Some(member) = req.ext("memberId").and_then(|t| node.id_of(t)) else {
            return refuse("memberId (a dLegerPeers id such as n3) is required".into());
        };
        let timeout = timeout_of(req, 60_000, 3_600_000);
        let r = if adding {
            let Some(addr) = req.ext("peerAddr").filter(|a| a.contains(':')) else {
                return refuse("peerAddr (the member's Raft port, host:port) is required".into());
            };
            node.add_member(member, addr, timeout).await
        } else {
            node.remove_member(member, timeout).await
        };
        match r {
            Ok(()) => crate::remoting::RemotingCommand::response_to(req, response::SUCCESS)
                .with_ext("members", node.members()),
            Err(e) => super::fail(
                req,
                response::SYSTEM_ERROR,
                format!("{what} ({}) failed: {e}", node.name_of(member)),
            ),
        }
    }

    /// Waits until a majority holds the records up to `end`: `Some(true)` committed,
    /// `Some(false)` not within `timeout`, `None` outside Raft mode.
    pub(super) async fn wait_raft_commit(&self, end: u64, timeout: Duration) -> Option<bool> {
        let node = self.raft.get()?;
        Some(node.wait_committed(end, timeout).await)
    }

    /// Follows a leadership change with the broker's role: whether the role now
    /// matches (a leader became master; a follower follows the leader's address).
    async fn follow_leadership(&self, l: Leadership) -> bool {
        match l {
            Leadership::Leader { term } => {
                let r = self.role.lead_term(
                    BrokerRole::SyncMaster,
                    term as i64,
                    self.store.max_phy_offset(),
                );
                if let Err(e) = r {
                    warn!(term, error = %e, "DLedger leader: the role change was refused");
                    return false;
                }
                if !self.runtime.writable() {
                    self.runtime.permission.fetch_or(
                        config::PERM_READ | config::PERM_WRITE,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    self.topics.bump_version();
                }
                info!(term, "DLedger leader: registering as master");
            }
            Leadership::Follower { term, leader } => {
                let Some(node) = self.raft.get() else {
                    return false;
                };
                let Some(addr) = node.broker_addr_of(leader).await else {
                    return false;
                };
                let id = self.config.dledger.follower_broker_id();
                if let Err(e) = self.role.demote(term as i64, id, &addr, None) {
                    warn!(term, error = %e, "DLedger follower: the role change was refused");
                    return false;
                }
                info!(term, leader = %addr, "DLedger follower: registering as slave");
            }
            Leadership::Unknown { .. } => return true,
        }
        self.topics_changed();
        true
    }
}

/// A request's `timeoutMillis` (`default` when absent or not a number), kept within
/// 100 ms and `max` ms.
fn timeout_of(req: &crate::remoting::RemotingCommand, default: u64, max: u64) -> Duration {
    Duration::from_millis(
        req.ext_num("timeoutMillis")
            .unwrap_or(default)
            .clamp(100, max),
    )
}
