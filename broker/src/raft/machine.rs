//! The state machine side of the Raft mode, as far as it is built: [`Applied`] records
//! the last applied (committed) log id and the membership, and snapshots those two.
//! The broker's state machine will be the dispatcher (committed records to ConsumeQueue
//! and IndexFile); until then this is what openraft's suite and the in-process cluster
//! tests run against.

use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    StoredMembership,
};

use super::TypeConfig;
use crate::sync::lock;

type NodeId = u64;
type Kept = Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>;

/// What the broker does with a committed normal entry: its record bytes reach the
/// CommitLog (a follower appends them; the leader has them already) and the dispatcher
/// may go past them. An error stops this node's Raft (its store cannot follow the log).
pub trait Apply: Send + Sync + 'static {
    /// Applies the committed entry `index` carrying `data`.
    ///
    /// # Errors
    /// What the store refused, as text.
    fn apply(&self, index: u64, data: &[u8]) -> Result<(), String>;
}

/// What has been applied, and the latest snapshot (shared with the snapshot builders
/// handed out).
#[derive(Default, Clone)]
pub struct Applied {
    applier: Option<Arc<dyn Apply>>,
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Normal entries applied, in order (their payload lengths): what the tests check.
    applied_normal: Arc<Mutex<Vec<u64>>>,
    snapshot: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("last", &self.last)
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Applied {
    /// A state machine that hands each committed normal entry to `applier`.
    pub fn with_applier(applier: Arc<dyn Apply>) -> Self {
        Applied {
            applier: Some(applier),
            ..Applied::default()
        }
    }

    /// The indexes of the normal entries applied so far, in order.
    pub fn applied_normal(&self) -> Vec<u64> {
        lock(&self.applied_normal).clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Applied {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = match serde_json::to_vec(&(&self.last, &self.membership)) {
            Ok(d) => d,
            Err(e) => return Err(StorageIOError::write_snapshot(None, AnyError::new(&e)).into()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{:?}", self.last),
        };
        *lock(&self.snapshot) = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Applied {
    type SnapshotBuilder = Applied;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last = Some(e.log_id);
            match e.payload {
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                }
                EntryPayload::Normal(r) => {
                    if let Some(a) = &self.applier {
                        if let Err(why) = a.apply(e.log_id.index, &r.0) {
                            let err = std::io::Error::other(why);
                            return Err(StorageIOError::apply(e.log_id, AnyError::new(&err)).into());
                        }
                    } else {
                        lock(&self.applied_normal).push(e.log_id.index);
                    }
                }
                EntryPayload::Blank => {}
            }
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.last = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *lock(&self.snapshot) = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(lock(&self.snapshot).clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        }))
    }
}
