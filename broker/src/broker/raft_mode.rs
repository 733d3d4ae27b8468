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
        )
        .await?;
        let _ = self.raft.set(Arc::clone(&node));
        let b = Arc::clone(self);
        let on_change: OnChange = Arc::new(move |l| {
            let b = Arc::clone(&b);
            Box::pin(async move { b.follow_leadership(l).await })
        });
        tokio::spawn(node.run(on_change));
        Ok(())
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
