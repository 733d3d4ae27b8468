//! The state machine side of the Raft mode: [`Applied`] records the last applied
//! (committed) log id, the membership and where the applied records end in the
//! CommitLog, hands each committed entry to the broker ([`Apply`]), and builds and
//! installs snapshots.
//!
//! **A snapshot is the CommitLog itself** (segment transfer): its data is a small
//! [`SnapshotDesc`] — the CommitLog bytes `[base, end)` of the member that built it,
//! where `end` is the end of the last applied entry. Building one makes the CommitLog
//! durable up to `end` and writes `<dledger>/snapshot.json`; no byte is copied. A
//! member that installs one fetches the bytes it lacks from the builder (or any other
//! member holding them committed) over the Raft port, and empties its store first
//! when it lacks bytes the others no longer keep. After either, openraft may purge the
//! log behind the snapshot and the CommitLog's retention may delete what the log no
//! longer refers to.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::TypeConfig;
use crate::sync::lock;

type NodeId = u64;
type Kept = Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>;

/// The data of a snapshot: which CommitLog bytes it stands for, and where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDesc {
    /// The oldest CommitLog byte the builder held (a segment boundary).
    pub base: u64,
    /// The end of the last entry the snapshot covers.
    pub end: u64,
    /// The builder's Raft address (where the bytes can be fetched).
    pub source: String,
}

/// `<dledger>/snapshot.json`: the latest snapshot, kept across restarts (the log
/// behind it may be purged).
#[derive(Serialize, Deserialize)]
struct Persisted {
    meta: SnapshotMeta<NodeId, BasicNode>,
    desc: SnapshotDesc,
}

/// A boxed future (the installer fetches over the network).
pub type Installing<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What the broker does with committed entries and snapshots. An error stops this
/// node's Raft (its store cannot follow the log).
pub trait Apply: Send + Sync + 'static {
    /// Applies the committed entry `index` carrying `data`.
    ///
    /// # Errors
    /// What the store refused, as text.
    fn apply(&self, index: u64, data: &[u8]) -> Result<(), String>;

    /// A snapshot of everything up to `end` is about to be kept: makes the CommitLog
    /// durable up to there, and answers the oldest byte held and this node's Raft
    /// address.
    ///
    /// # Errors
    /// A failed flush.
    fn snapshot_point(&self, end: u64) -> Result<(u64, String), String>;

    /// Makes the CommitLog hold exactly the committed bytes up to `desc.end`, fetching
    /// what it lacks from `sources` (the builder first), then lets the dispatcher
    /// past them.
    fn install<'a>(&'a self, desc: &'a SnapshotDesc, sources: Vec<String>) -> Installing<'a>;

    /// A snapshot up to `end` was found on disk at start: what it covers is applied.
    fn restored(&self, end: u64);
}

/// What has been applied, and the latest snapshot (shared with the snapshot builders
/// handed out).
#[derive(Default, Clone)]
pub struct Applied {
    applier: Option<Arc<dyn Apply>>,
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Where the applied normal entries' bytes end in the CommitLog.
    end: u64,
    /// Where the latest snapshot is kept (`None`: in memory only).
    path: Option<PathBuf>,
    /// Normal entries applied, in order (their payload lengths): what the tests check.
    applied_normal: Arc<Mutex<Vec<u64>>>,
    snapshot: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("last", &self.last)
            .field("membership", &self.membership)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

fn snapshot_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    let e = std::io::Error::other(e.to_string());
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

/// `[pos:8]` of a normal entry's data, and its bytes' length.
fn span(data: &[u8]) -> Option<(u64, u64)> {
    let p: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(p), (data.len() - 8) as u64))
}

impl Applied {
    /// A state machine that hands each committed normal entry to `applier`, with its
    /// snapshot kept in `dir/snapshot.json` (loaded from there when present).
    ///
    /// # Errors
    /// An unreadable snapshot file.
    pub fn with_applier(applier: Arc<dyn Apply>, dir: &std::path::Path) -> std::io::Result<Self> {
        let path = dir.join("snapshot.json");
        let mut a = Applied {
            applier: Some(Arc::clone(&applier)),
            path: Some(path.clone()),
            ..Applied::default()
        };
        match std::fs::read(&path) {
            Ok(b) => {
                let p: Persisted = serde_json::from_slice(&b).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                info!(last = ?p.meta.last_log_id, end = p.desc.end, "DLedger snapshot found");
                a.last = p.meta.last_log_id;
                a.membership = p.meta.last_membership.clone();
                a.end = p.desc.end;
                applier.restored(p.desc.end);
                let data = serde_json::to_vec(&p.desc).map_err(std::io::Error::other)?;
                *lock(&a.snapshot) = Some((p.meta, data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(a)
    }

    /// The indexes of the normal entries applied so far, in order.
    pub fn applied_normal(&self) -> Vec<u64> {
        lock(&self.applied_normal).clone()
    }

    /// Keeps `meta` with `desc` as the latest snapshot (on disk first).
    fn keep(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        desc: &SnapshotDesc,
    ) -> Result<Vec<u8>, String> {
        if let Some(path) = &self.path {
            let p = Persisted {
                meta: meta.clone(),
                desc: desc.clone(),
            };
            crate::store::metadata::persist(path, &p).map_err(|e| e.to_string())?;
        }
        let data = serde_json::to_vec(desc).map_err(|e| e.to_string())?;
        *lock(&self.snapshot) = Some((meta.clone(), data.clone()));
        Ok(data)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Applied {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut desc = SnapshotDesc {
            end: self.end,
            ..SnapshotDesc::default()
        };
        if let Some(a) = &self.applier {
            let (base, source) = a.snapshot_point(self.end).map_err(snapshot_err)?;
            desc.base = base;
            desc.source = source;
        }
        let meta = SnapshotMeta {
            last_log_id: self.last,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}-{}", self.last.map_or(0, |l| l.index), self.end),
        };
        let data = self.keep(&meta, &desc).map_err(snapshot_err)?;
        info!(last = ?self.last, end = desc.end, base = desc.base, "DLedger snapshot built");
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
                        if let Some((pos, len)) = span(&r.0) {
                            self.end = self.end.max(pos + len);
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
        let data = snapshot.into_inner();
        let desc = match (&self.applier, serde_json::from_slice::<SnapshotDesc>(&data)) {
            (Some(a), Ok(desc)) => {
                // The builder first, then every other member (all hold the committed
                // bytes alike).
                let mut sources = vec![desc.source.clone()];
                for (_, n) in meta.last_membership.membership().nodes() {
                    if !sources.contains(&n.addr) {
                        sources.push(n.addr.clone());
                    }
                }
                info!(last = ?meta.last_log_id, end = desc.end, base = desc.base, source = %desc.source,
                      "DLedger snapshot: installing (fetching the CommitLog bytes it covers)");
                a.install(&desc, sources).await.map_err(snapshot_err)?;
                info!(last = ?meta.last_log_id, end = desc.end, "DLedger snapshot installed");
                desc
            }
            (Some(_), Err(e)) => {
                return Err(snapshot_err(format!(
                    "a snapshot that is not ferrocket's: {e}"
                )))
            }
            // Without a broker (openraft's suite, the in-process tests), the data is
            // kept as it came.
            (None, _) => {
                self.last = meta.last_log_id;
                self.membership = meta.last_membership.clone();
                *lock(&self.snapshot) = Some((meta.clone(), data));
                return Ok(());
            }
        };
        self.last = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.end = desc.end;
        self.keep(meta, &desc).map_err(snapshot_err)?;
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
