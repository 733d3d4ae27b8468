//! A broker's Raft node: openraft over the entry log ([`LogStore`]), the TCP transport
//! ([`super::net`]) on this node's `dLegerPeers` port, and the glue to the message
//! store.
//!
//! How a message becomes committed:
//! 1. The leader appends it to its CommitLog as any master does (offsets assigned
//!    under the append lock); the dispatcher does not pass the commit point, so
//!    nobody sees it yet.
//! 2. The proposer ([`RaftNode::run`]) turns every byte range appended since the
//!    last proposal into one log entry `[pos:8][bytes]` (many producers' records ride
//!    one entry: group commit) and hands it to openraft without waiting, so entries
//!    are pipelined.
//! 3. **The Raft log is the CommitLog**: the log store keeps a 16-byte reference per
//!    normal entry and writes its bytes through [`Glue`] (the [`Bodies`] of the log) —
//!    a follower appends them to its CommitLog at `pos`, the leader finds its own
//!    bytes there; a truncation of the log cuts the CommitLog (its generation moves,
//!    so a send waiting on a cut record is never acknowledged).
//! 4. Once a majority holds an entry, every node applies it: the dispatch limit moves
//!    to the entry's end, and the send waiting on that offset is answered.
//!
//! On any change of leadership, the bytes past the log's last entry (appended by a
//! leader, never proposed) are cut before the broker changes role.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::linger::{InFlight, Linger};
use super::log_store::{Bodies, LogStore};
use super::machine::{Applied, Apply, Installing, SnapshotDesc};
use super::net::{Auth, FetchHead, Network, NodeInfo, Peer, Source, MAX_FETCH};
use super::{Record, TypeConfig};
use crate::store::MessageStore;
use crate::sync::lock;

/// Starting a Raft node failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    /// The entry log could not be opened, or the peer port bound.
    #[error("DLedger: {0}")]
    Io(#[from] std::io::Error),
    /// openraft refused the configuration or stopped.
    #[error("DLedger: {0}")]
    Raft(String),
}

/// What the node is, as far as the broker is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This node leads `term` and has applied everything before it: it takes writes.
    Leader {
        /// The Raft term (the broker's epoch).
        term: u64,
    },
    /// `leader` leads `term`.
    Follower {
        /// The Raft term.
        term: u64,
        /// The leader's node id.
        leader: u64,
    },
    /// No leader known (an election is running), or a new leader still applying.
    Unknown {
        /// The Raft term.
        term: u64,
    },
}

/// The state machine's side: applies committed entries to the message store.
pub struct Glue {
    store: Arc<MessageStore>,
    /// End of the last applied entry (where the dispatcher may go).
    applied: Mutex<u64>,
    committed: watch::Sender<u64>,
    /// `(generation, end)`: this leader proposed the CommitLog's bytes below `end`
    /// as they stood in that generation, so the log store need not read them back to
    /// compare (a cut or a change of role moves the generation).
    own: Mutex<(u64, u64)>,
    /// This node's Raft address (a snapshot names where its bytes can be fetched).
    self_addr: String,
    /// The entry log's directory.
    dir: std::path::PathBuf,
    /// Held while a snapshot is installed: the bytes it fetches lie past the applied
    /// end until it is done, so a change of role must not cut them meanwhile.
    installing: tokio::sync::Mutex<()>,
    /// How connections to other members answer their challenge.
    auth: Auth,
}

/// In the entry log's directory: the queue offsets a store that started over must not
/// assign again (see [`Glue::install_from`]).
const QUEUE_OFFSETS: &str = "queueOffsets.json";

fn chunk(data: &[u8]) -> Result<(u64, &[u8]), String> {
    if data.len() < 8 {
        return Err(format!("an entry of {} bytes has no position", data.len()));
    }
    let (pos, bytes) = data.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(pos);
    Ok((u64::from_be_bytes(a), bytes))
}

impl Glue {
    /// The CommitLog bytes `[from, to)` (fewer when the log ends sooner).
    fn read(&self, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut at = from;
        while at < to {
            let Some(b) = self.store.read_raw(at, (to - at) as usize) else {
                break;
            };
            if b.is_empty() {
                break;
            }
            at += b.len() as u64;
            out.extend_from_slice(&b);
        }
        out
    }

    fn append(&self, pos: u64, bytes: &[u8]) -> Result<(), String> {
        let mut done = 0usize;
        while done < bytes.len() {
            let n = self
                .store
                .append_raw(pos + done as u64, &bytes[done..])
                .map_err(|e| format!("appending a committed entry at {pos}: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "a committed entry at {pos} holds {} bytes that are not whole records",
                    bytes.len() - done
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// End of the applied entries.
    pub fn applied(&self) -> u64 {
        *lock(&self.applied)
    }
}

impl std::fmt::Debug for Glue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glue")
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

/// The Raft log's normal entries live in the CommitLog: the log store writes, reads
/// and cuts them here.
impl Bodies for Glue {
    fn write(&self, pos: u64, bytes: &[u8], own: bool) -> std::io::Result<()> {
        let to = pos + bytes.len() as u64;
        let end = self.store.max_phy_offset();
        if pos < end {
            let (generation, own_end) = *lock(&self.own);
            if own && to <= own_end && generation == self.store.generation() {
                // This leader's own records, proposed from this very CommitLog. Never
                // another leader's entry: a deposed leader may still hold records it
                // wrote and never got into the log (its proposer has not seen the
                // change yet), and the new leader's entry at those positions differs.
                return Ok(());
            }
            let have = self.read(pos, to.min(end));
            if to <= end && have == bytes {
                // The leader's own records (or an entry written before a restart).
                return Ok(());
            }
            // Records of an earlier term that the log does not hold: the log wins.
            self.store
                .truncate(pos)
                .map_err(|e| std::io::Error::other(format!("cutting at {pos}: {e}")))?;
        } else if pos > end {
            return Err(std::io::Error::other(format!(
                "an entry starts at {pos} but the CommitLog ends at {end}"
            )));
        }
        self.append(pos, bytes).map_err(std::io::Error::other)
    }

    fn read(&self, pos: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let b = Glue::read(self, pos, pos + len);
        if b.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the CommitLog holds {} of the {len} bytes at {pos}",
                    b.len()
                ),
            ));
        }
        Ok(b)
    }

    fn cut(&self, pos: u64) -> std::io::Result<()> {
        // Raft cuts only uncommitted entries: bytes at or below the applied end are
        // committed (a snapshot's, when the log still holds older entries) and stay.
        let applied = self.applied();
        if pos < applied {
            warn!(
                pos,
                applied, "a cut below the applied end was asked; keeping the committed bytes"
            );
        }
        let pos = pos.max(applied);
        if self.store.max_phy_offset() > pos {
            self.store
                .truncate(pos)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        self.store
            .commitlog()
            .flush()
            .map(drop)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn floor(&self, pos: u64) {
        self.store.raise_retention_floor(pos);
    }
}

/// A member's committed CommitLog bytes, for another member installing a snapshot.
impl Source for Glue {
    fn fetch(&self, from: u64, max: usize, queues: bool) -> (FetchHead, Vec<u8>) {
        let min = self.store.min_phy_offset();
        let head = FetchHead {
            min,
            end: self.applied(),
            queues: if queues {
                self.store.queue_offsets_before(min)
            } else {
                Vec::new()
            },
        };
        if from < head.min || from >= head.end {
            return (head, Vec::new());
        }
        let to = head.end.min(from.saturating_add(max as u64));
        (head, Glue::read(self, from, to))
    }
}

impl Glue {
    /// Makes the CommitLog hold the committed bytes up to `desc.end` from the member
    /// at `src` (see [`Apply::install`]).
    async fn install_from(&self, src: &str, desc: &SnapshotDesc) -> Result<(), String> {
        let ttl = Duration::from_secs(30);
        let mut peer = Peer::to(src, &self.auth);
        let (head, _) = peer
            .fetch(0, 0, true, ttl)
            .await
            .map_err(|e| e.to_string())?;
        if head.end < desc.end {
            return Err(format!(
                "it has applied up to {} only, the snapshot reaches {}",
                head.end, desc.end
            ));
        }
        let applied = self.applied();
        let mut at = applied;
        if applied < head.min {
            // What follows this member's committed bytes is gone on the others too
            // (their retention deleted it): start over at their oldest file.
            if head.min > desc.end {
                return Err(format!(
                    "it no longer holds the snapshot's bytes (its oldest is {})",
                    head.min
                ));
            }
            warn!(applied, oldest = head.min, source = src,
                  "DLedger snapshot: the bytes after this member's own are deleted everywhere; emptying the store");
            self.store.reset_to(head.min).map_err(|e| e.to_string())?;
            // Queue offsets the group assigned before that file are never assigned
            // again by this member (a queue idle since then would restart at 0):
            // kept across restarts in `dledger/queueOffsets.json`.
            crate::store::metadata::persist(&self.dir.join(QUEUE_OFFSETS), &head.queues)
                .map_err(|e| e.to_string())?;
            self.store.raise_queue_offsets(&head.queues);
            at = head.min;
        } else {
            // Bytes past the applied end: kept when the source holds the same
            // (committed by now), cut otherwise.
            let local_end = self.store.max_phy_offset();
            let check_to = local_end.min(desc.end);
            let mut p = at;
            let mut same = true;
            while p < check_to {
                let want = ((check_to - p) as usize).min(MAX_FETCH);
                let (_, b) = peer
                    .fetch(p, want, false, ttl)
                    .await
                    .map_err(|e| e.to_string())?;
                if b.is_empty() || Glue::read(self, p, p + b.len() as u64) != b {
                    same = false;
                    break;
                }
                p += b.len() as u64;
            }
            if same {
                at = at.max(check_to);
            } else {
                self.store.truncate(at).map_err(|e| e.to_string())?;
            }
        }
        let mut buf: Vec<u8> = Vec::new();
        while at < desc.end {
            let next = at + buf.len() as u64;
            if next < desc.end {
                let want = ((desc.end - next) as usize).min(MAX_FETCH);
                let (_, b) = peer
                    .fetch(next, want, false, ttl)
                    .await
                    .map_err(|e| e.to_string())?;
                if b.is_empty() {
                    return Err(format!("it sent nothing at {next}"));
                }
                buf.extend_from_slice(&b);
            }
            let n = self
                .store
                .append_raw(at, &buf)
                .map_err(|e| format!("appending at {at}: {e}"))?;
            if n == 0 && next >= desc.end {
                return Err(format!("the bytes at {at} are not whole records"));
            }
            buf.drain(..n);
            at += n as u64;
        }
        Ok(())
    }

    /// What a snapshot up to `end` covers is applied: the dispatcher may go there.
    fn applied_to(&self, end: u64) {
        let mut applied = lock(&self.applied);
        if end > *applied {
            *applied = end;
            self.store.set_dispatch_limit(end);
            self.committed.send_replace(end);
        }
    }
}

impl Apply for Glue {
    fn apply(&self, _index: u64, data: &[u8]) -> Result<(), String> {
        // The entry's bytes are in the CommitLog already (the log store put them there
        // when it appended the entry): applying lets the dispatcher past them.
        let (pos, bytes) = chunk(data)?;
        let to = pos + bytes.len() as u64;
        let mut applied = lock(&self.applied);
        if to <= *applied {
            return Ok(());
        }
        let end = self.store.max_phy_offset();
        if end < to {
            return Err(format!(
                "a committed entry ends at {to} but the CommitLog ends at {end}"
            ));
        }
        *applied = to;
        self.store.set_dispatch_limit(to);
        self.committed.send_replace(to);
        Ok(())
    }

    fn snapshot_point(&self, end: u64) -> Result<(u64, String), String> {
        Bodies::flush(self).map_err(|e| format!("flushing the CommitLog: {e}"))?;
        if self.store.flushed_phy_offset() < end {
            return Err(format!(
                "the CommitLog is flushed up to {} only, the snapshot reaches {end}",
                self.store.flushed_phy_offset()
            ));
        }
        Ok((self.store.min_phy_offset(), self.self_addr.clone()))
    }

    fn install<'a>(&'a self, desc: &'a SnapshotDesc, sources: Vec<String>) -> Installing<'a> {
        Box::pin(async move {
            let _installing = self.installing.lock().await;
            let mut delay = Duration::from_millis(100);
            while self.applied() < desc.end {
                for src in sources.iter().filter(|s| **s != self.self_addr) {
                    match self.install_from(src, desc).await {
                        Ok(()) => {
                            Bodies::flush(self)
                                .map_err(|e| format!("flushing the CommitLog: {e}"))?;
                            self.applied_to(desc.end);
                            // The log is purged up to the snapshot next; what it keeps
                            // lies past its end.
                            Bodies::floor(self, desc.end);
                            return Ok(());
                        }
                        Err(e) => warn!(source = %src, error = %e,
                            "DLedger snapshot: fetching its CommitLog bytes failed; trying another member"),
                    }
                }
                // Nobody could serve them now: the install waits (this member can do
                // nothing else meanwhile) and tries again.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Ok(())
        })
    }

    fn restored(&self, end: u64) {
        let have = self.store.max_phy_offset();
        if have < end {
            warn!(
                end,
                have, "DLedger snapshot reaches past the CommitLog's end"
            );
        }
        self.applied_to(end.min(have));
    }
}

/// A broker's Raft node.
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    id: u64,
    glue: Arc<Glue>,
    /// The entry log (where the last entry's bytes end).
    log: LogStore,
    peers: BTreeMap<u64, String>,
    /// The `dLegerPeers` ids by node id.
    names: BTreeMap<u64, String>,
    broker_addrs: Mutex<HashMap<u64, String>>,
    appended: Notify,
    /// Appends so far (one per send request): how many producers an entry answers.
    appends: AtomicU64,
    /// A leadership transfer is under way (appends are paused).
    transferring: std::sync::atomic::AtomicBool,
    /// When this node last took office, and its term.
    led_since: Mutex<Option<(u64, tokio::time::Instant)>>,
}

/// The last log index member `id` holds, as this leader's replication reports it.
fn matched(m: &openraft::RaftMetrics<u64, BasicNode>, id: u64) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map(|l| l.index)
}

/// Why a leadership transfer or a membership change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// This node does not lead (or stopped leading during the transfer).
    #[error("this member does not lead the DLedger group{0}")]
    NotLeader(String),
    /// The target is not a voting member of the group.
    #[error("{0} is not a voting member of the DLedger group")]
    UnknownTarget(String),
    /// Another transfer is under way.
    #[error("a leadership transfer is already under way")]
    Busy,
    /// The target did not hold every entry, or did not take over, in time.
    #[error("{0}")]
    Timeout(String),
    /// The target could not be asked to campaign.
    #[error("asking {0} to campaign failed: {1}")]
    Transport(String, String),
    /// openraft refused or failed the membership change.
    #[error("membership change failed: {0}")]
    Change(String),
}

impl RaftNode {
    /// Opens the entry log under `dir`, starts openraft and serves the peer port of
    /// `settings.self_id` (at `dLegerBindAddress`, by default every interface).
    ///
    /// # Errors
    /// [`RaftNodeError`].
    pub async fn start(
        settings: &crate::broker::config::DLedgerSettings,
        dir: &std::path::Path,
        segment_size: u64,
        store: Arc<MessageStore>,
        broker_addr: String,
        auth: Auth,
    ) -> Result<Arc<Self>, RaftNodeError> {
        let id = settings.self_node();
        let peers: BTreeMap<u64, String> = settings
            .peers
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (i as u64, a.clone()))
            .collect();
        let port = peers
            .get(&id)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| RaftNodeError::Raft("no port for dLegerSelfId".into()))?;
        let at = settings
            .bind_address
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let listener = tokio::net::TcpListener::bind((at, port)).await?;
        let election = settings.heartbeat_ms * settings.max_heartbeat_leak;
        let config = Config {
            cluster_name: settings.group.clone().unwrap_or_default(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: election,
            election_timeout_max: election + settings.max_vote_interval_ms,
            // A snapshot is the CommitLog up to the last applied entry (building one
            // copies nothing); as many entries again stay behind it for members a
            // little behind, the rest is purged.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_threshold),
            max_in_snapshot_log_to_keep: settings.snapshot_threshold,
            replication_lag_threshold: (settings.snapshot_threshold * 2).max(5000),
            // Installing one fetches the CommitLog bytes a member lacks before it
            // answers.
            install_snapshot_timeout: 600_000,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        // A follower's acknowledgement follows its flush policy: under SYNC_FLUSH the
        // entries are on disk, under ASYNC_FLUSH in the page cache.
        let durable = store.config().flush_disk_type == crate::store::FlushDiskType::Sync;
        let applied = store.confirm_offset().min(store.max_phy_offset());
        let glue = Arc::new(Glue {
            store,
            applied: Mutex::new(applied),
            committed: watch::channel(applied).0,
            own: Mutex::new((u64::MAX, 0)),
            self_addr: peers.get(&id).cloned().unwrap_or_default(),
            dir: dir.to_path_buf(),
            installing: tokio::sync::Mutex::new(()),
            auth: auth.clone(),
        });
        match std::fs::read(dir.join(QUEUE_OFFSETS)) {
            Ok(b) => {
                let next: Vec<(String, i32, i64)> = serde_json::from_slice(&b).map_err(|e| {
                    RaftNodeError::Raft(format!("{}: {e}", dir.join(QUEUE_OFFSETS).display()))
                })?;
                glue.store.raise_queue_offsets(&next);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // The Raft log is the CommitLog: normal entries keep only a reference to their
        // bytes, which the CommitLog holds.
        let bodies: Arc<dyn Bodies> = glue.clone();
        // The leader's own sync runs beside the followers' (see `wait_committed`).
        let log =
            LogStore::open_with(dir, segment_size, durable, Some(bodies))?.lead_ahead_of_sync(id);
        let applier: Arc<dyn Apply> = glue.clone();
        let machine = Applied::with_applier(applier, dir)?;
        let network = Network { auth: auth.clone() };
        let raft = Raft::new(id, Arc::new(config), network, log.clone(), machine)
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        let members: BTreeMap<u64, BasicNode> = peers
            .iter()
            .map(|(i, a)| (*i, BasicNode::new(a.clone())))
            .collect();
        tokio::spawn(super::net::serve(
            listener,
            raft.clone(),
            NodeInfo {
                id,
                broker_addr,
                initialized: false,
            },
            Some(glue.clone() as Arc<dyn Source>),
            auth.clone(),
        ));
        // A member with an empty log initializes the group from `dLegerPeers` (every
        // member the same membership, so they agree) unless a peer already holds a
        // log: then the group exists and this member is joining it (added with
        // `admin raft add`) or rejoining after losing its store, and the leader's log,
        // membership included, is what it must take.
        if raft.metrics().borrow().last_log_index.is_none() {
            let mut asks = tokio::task::JoinSet::new();
            for (_, a) in peers.iter().filter(|(p, _)| **p != id) {
                let (a, auth) = (a.clone(), auth.clone());
                asks.spawn(async move { Peer::info(&a, Duration::from_secs(1), &auth).await });
            }
            let mut exists = false;
            while let Some(r) = asks.join_next().await {
                exists |= matches!(r, Ok(Ok(i)) if i.initialized);
            }
            if exists {
                info!(id, "DLedger group exists: waiting for its leader's log");
            } else if let Err(e) = raft.initialize(members).await {
                info!(reason = %e, "DLedger group already initialized");
            }
        }
        info!(id, port, applied, "DLedger node started");
        Ok(Arc::new(RaftNode {
            raft,
            id,
            glue,
            log,
            peers,
            names: settings
                .peers
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (i as u64, n.clone()))
                .collect(),
            broker_addrs: Mutex::new(HashMap::new()),
            appended: Notify::new(),
            appends: AtomicU64::new(0),
            transferring: std::sync::atomic::AtomicBool::new(false),
            led_since: Mutex::new(None),
        }))
    }

    /// openraft's handle (metrics, membership, shutdown).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// The `dLegerPeers` id of node `id` (`n<id>` for a node not in the list).
    pub fn name_of(&self, id: u64) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("n{id}"))
    }

    /// The node id of a `dLegerPeers` id (`n1`), or of its number.
    pub fn id_of(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, _)| *i)
            .or_else(|| name.trim_start_matches('n').parse().ok())
    }

    /// Whether a leadership transfer is under way (sends are refused meanwhile).
    pub fn transferring(&self) -> bool {
        self.transferring.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands leadership to voting member `target` without losing or refusing an
    /// acknowledged record: client appends pause; once every appended record is
    /// committed and `target` holds this leader's last entry, `target` is asked to
    /// campaign (its log is as long as anyone's, and this leader grants its vote);
    /// returns the new term once this node follows another leader. On any failure
    /// while still leading, appends resume. Sends meanwhile get a retryable refusal.
    ///
    /// # Errors
    /// [`TransferError`].
    pub async fn transfer_leader(
        &self,
        target: u64,
        timeout: Duration,
    ) -> Result<u64, TransferError> {
        use std::sync::atomic::Ordering;
        let Leadership::Leader { term } = self.leadership() else {
            return Err(TransferError::NotLeader(String::new()));
        };
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|v| v == target) {
            return Err(TransferError::UnknownTarget(self.name_of(target)));
        }
        if target == self.id {
            return Ok(term);
        }
        let Some(addr) = membership.get_node(&target).map(|n| n.addr.clone()) else {
            return Err(TransferError::UnknownTarget(self.name_of(target)));
        };
        if self.transferring.swap(true, Ordering::AcqRel) {
            return Err(TransferError::Busy);
        }
        self.glue.store.pause_appends(true);
        info!(term, to = %self.name_of(target), "DLedger leadership transfer: appends paused");
        let r = self.hand_over(term, target, &addr, timeout).await;
        if let Err(e) = &r {
            warn!(term, to = %self.name_of(target), error = %e, "DLedger leadership transfer failed");
            if self.leadership() == (Leadership::Leader { term }) {
                self.glue.store.pause_appends(false);
            }
        }
        self.transferring.store(false, Ordering::Release);
        r
    }

    /// Adds member `target` (its Raft port at `addr`) as a voter: first as a learner
    /// until it holds the leader's log (its CommitLog filled entry by entry), then by
    /// joint consensus into the voters. The member must run already, started with a
    /// `dLegerPeers` that lists the group and itself (it does not initialize a group
    /// of its own when a peer holds a log).
    ///
    /// # Errors
    /// [`TransferError`]: not the leader, a timeout, openraft's refusal.
    pub async fn add_member(
        &self,
        target: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let Leadership::Leader { term } = self.leadership() else {
            return Err(TransferError::NotLeader(String::new()));
        };
        let name = self.name_of(target);
        info!(term, member = %name, addr, "DLedger: adding a member (learner first)");
        let learner = self.raft.add_learner(target, BasicNode::new(addr), true);
        match tokio::time::timeout(timeout, learner).await {
            Err(_) => {
                return Err(TransferError::Timeout(format!(
                    "{name} did not catch up within {timeout:?} (it stays a learner; remove it or add it again)"
                )))
            }
            Ok(Err(e)) => return Err(TransferError::Change(e.to_string())),
            Ok(Ok(_)) => {}
        }
        let change = openraft::ChangeMembers::AddVoterIds(std::iter::once(target).collect());
        self.commit_membership(change, timeout, &format!("with {name}"))
            .await?;
        info!(member = %name, "DLedger: member added");
        Ok(())
    }

    /// Commits a membership change by joint consensus within `timeout` (`what` names
    /// the new membership in the error).
    async fn commit_membership(
        &self,
        change: openraft::ChangeMembers<u64, BasicNode>,
        timeout: Duration,
        what: &str,
    ) -> Result<(), TransferError> {
        match tokio::time::timeout(timeout, self.raft.change_membership(change, false)).await {
            Err(_) => Err(TransferError::Timeout(format!(
                "the membership {what} was not committed within {timeout:?}"
            ))),
            Ok(Err(e)) => Err(TransferError::Change(e.to_string())),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Removes member `target` from the group by joint consensus. The leader itself
    /// is not removed (transfer leadership first).
    ///
    /// # Errors
    /// [`TransferError`].
    pub async fn remove_member(&self, target: u64, timeout: Duration) -> Result<(), TransferError> {
        let Leadership::Leader { .. } = self.leadership() else {
            return Err(TransferError::NotLeader(String::new()));
        };
        let name = self.name_of(target);
        if target == self.id {
            return Err(TransferError::Change(format!(
                "{name} leads: transfer leadership before removing it"
            )));
        }
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        if !voters.contains(&target) {
            return Err(TransferError::UnknownTarget(name));
        }
        if voters.len() <= 1 {
            return Err(TransferError::Change(
                "the last member cannot be removed".into(),
            ));
        }
        let change = openraft::ChangeMembers::RemoveVoters(std::iter::once(target).collect());
        self.commit_membership(change, timeout, &format!("without {name}"))
            .await?;
        info!(member = %name, "DLedger: member removed");
        Ok(())
    }

    /// The voting member (not this one) that holds the most of this leader's log.
    pub fn best_successor(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| matched(&m, *v))
    }

    /// DLedger's `preferredLeaderId`: while this node leads and `preferred` is a
    /// voting member within 1000 entries of the leader's log, leadership is handed to
    /// it (checked every second; after a failed transfer, 10 s later).
    pub async fn prefer_leader(self: Arc<Self>, preferred: u64) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if preferred == self.id || !matches!(self.leadership(), Leadership::Leader { .. }) {
                continue;
            }
            let m = self.raft.metrics().borrow().clone();
            let has = matched(&m, preferred).unwrap_or(0);
            if m.last_log_index.unwrap_or(0) > has + 1000 {
                continue;
            }
            info!(to = %self.name_of(preferred), "DLedger: handing leadership to the preferred leader");
            if self
                .transfer_leader(preferred, Duration::from_secs(5))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }

    async fn hand_over(
        &self,
        term: u64,
        target: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<u64, TransferError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        let name = self.name_of(target);
        // 1. Everything appended is committed and the target holds the last entry.
        loop {
            let m = metrics.borrow_and_update().clone();
            if m.current_term != term || m.state != ServerState::Leader {
                return Err(TransferError::NotLeader(" any more".into()));
            }
            let last = m.last_log_index;
            let target_has = matched(&m, target);
            let all_applied = self.glue.applied() >= self.glue.store.max_phy_offset()
                && m.last_applied.map(|l| l.index) == last;
            if all_applied && last.is_some() && target_has == last {
                break;
            }
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(TransferError::Timeout(format!(
                        "{name} did not hold every entry within {timeout:?} (it has {target_has:?} of {last:?})"
                    )));
                }
            }
        }
        // 2. The target campaigns, once this leader's own lease is over (it refuses
        // to vote within it, and with three members its vote is the one the target
        // needs): one election, one new term.
        let since = lock(&self.led_since)
            .filter(|(t, _)| *t == term)
            .map(|(_, at)| at);
        if let Some(at) = since {
            // openraft's leader lease is `election_timeout_max`.
            let lease = Duration::from_millis(self.raft.config().election_timeout_max);
            let ready = at + lease + Duration::from_millis(50);
            if ready > deadline {
                return Err(TransferError::Timeout(format!(
                    "this leader took office too recently to hand over within {timeout:?}"
                )));
            }
            tokio::time::sleep_until(ready).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match Peer::elect(
            addr,
            term,
            left.max(Duration::from_millis(500)),
            &self.glue.auth,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(TransferError::Timeout(format!(
                    "{name} is no longer in term {term}"
                )))
            }
            Err(e) => return Err(TransferError::Transport(name, e.to_string())),
        }
        // 3. This node follows a new leader.
        loop {
            match self.leadership() {
                Leadership::Follower { term: t, leader } if t > term => {
                    if leader != target {
                        warn!(to = %name, won = %self.name_of(leader), "DLedger leadership transfer: another member won");
                    }
                    info!(term = t, leader = %self.name_of(leader), "DLedger leadership transferred");
                    return Ok(t);
                }
                Leadership::Leader { term: t } if t != term => {
                    return Err(TransferError::Timeout(format!(
                        "this member leads again (term {t})"
                    )));
                }
                _ => {}
            }
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(TransferError::Timeout(format!(
                        "{name} did not take over within {timeout:?}"
                    )));
                }
            }
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The glue to the store.
    pub fn glue(&self) -> &Glue {
        &self.glue
    }

    /// What this node is now.
    pub fn leadership(&self) -> Leadership {
        let m = self.raft.metrics().borrow().clone();
        let term = m.current_term;
        match (m.state, m.current_leader) {
            // A leader once its term's first entry is applied and a quorum has
            // answered it in this process's life: a member restarted with a vote for
            // itself resumes as leader in openraft, possibly of a term the others
            // have left; it stays Unknown until a majority acknowledges it.
            (ServerState::Leader, _)
                if m.last_applied.is_some_and(|l| l.leader_id.term == term)
                    && m.millis_since_quorum_ack.is_some() =>
            {
                Leadership::Leader { term }
            }
            (ServerState::Follower | ServerState::Learner, Some(l)) if l != self.id => {
                Leadership::Follower { term, leader: l }
            }
            _ => Leadership::Unknown { term },
        }
    }

    /// The committed membership as `dLegerPeers` (`n0-host:port;...`).
    pub fn members(&self) -> String {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| format!("{}-{}", self.name_of(*id), n.addr))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The node's Raft state for runtime info: `dLegerState`, `dLegerTerm`,
    /// `dLegerLeaderId`, `dLegerLastLogIndex`, `dLegerCommittedIndex` (applied),
    /// `dLegerCommittedOffset` (the CommitLog end a majority holds), `dLegerMembers`
    /// (`n0-host:port;...` of the committed membership).
    pub fn status(&self) -> Vec<(&'static str, String)> {
        let m = self.raft.metrics().borrow().clone();
        let members = self.members();
        vec![
            ("dLegerState", format!("{:?}", m.state)),
            ("dLegerTerm", m.current_term.to_string()),
            (
                "dLegerLeaderId",
                m.current_leader
                    .map(|l| self.name_of(l))
                    .unwrap_or_default(),
            ),
            (
                "dLegerLastLogIndex",
                m.last_log_index.map_or(-1, |i| i as i64).to_string(),
            ),
            (
                "dLegerCommittedIndex",
                m.last_applied.map_or(-1, |l| l.index as i64).to_string(),
            ),
            ("dLegerCommittedOffset", self.glue.applied().to_string()),
            ("dLegerMembers", members),
        ]
    }

    /// Waits until the entries up to `offset` are committed and applied and, under
    /// SYNC_FLUSH, synced by this leader too (it counts itself toward the majority
    /// once written, so that its sync runs beside the followers'; a majority on disk
    /// is then the leader and at least one follower); false after `timeout` or when
    /// the leader's sync failed.
    pub async fn wait_committed(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.glue.committed.subscribe();
        let committed = async { rx.wait_for(|c| *c >= offset).await.is_ok() };
        let mut synced = self.log.synced();
        let durable = self.log.durable();
        let on_disk = async {
            !durable
                || synced
                    .wait_for(|s| s.end >= offset || s.failed)
                    .await
                    .is_ok_and(|s| !s.failed)
        };
        let both = async {
            let (c, d) = tokio::join!(committed, on_disk);
            c && d
        };
        tokio::time::timeout(timeout, both).await.unwrap_or(false)
    }

    /// Wakes the proposer (called after each append, once per send request).
    pub fn notify_appended(&self) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.appended.notify_waiters();
    }

    /// The broker address of node `id`, asked of it once and remembered.
    pub async fn broker_addr_of(&self, id: u64) -> Option<String> {
        if let Some(a) = lock(&self.broker_addrs).get(&id) {
            return Some(a.clone());
        }
        let member = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        let peer = member.or_else(|| self.peers.get(&id).cloned())?;
        match Peer::info(&peer, Duration::from_secs(2), &self.glue.auth).await {
            Ok(i) => {
                lock(&self.broker_addrs).insert(id, i.broker_addr.clone());
                Some(i.broker_addr)
            }
            Err(e) => {
                warn!(node = id, error = %e, "could not learn the leader's broker address");
                None
            }
        }
    }

    /// Follows this node's leadership until the task is dropped. On a change, in
    /// order: a node that stops leading refuses appends and cuts its CommitLog back to
    /// what was applied, then `on_change` runs (the broker re-registers as a slave); a
    /// node that starts leading cuts the same way, `on_change` runs (it registers as
    /// master), then it takes appends. While leading, every CommitLog range appended
    /// since the last proposal becomes one entry, handed to openraft without waiting
    /// (pipelined; many producers' records in one entry). Under SYNC_FLUSH it may wait
    /// a moment first for the producers the last entry answered ([`Linger`]).
    pub async fn run(self: Arc<Self>, on_change: OnChange) {
        let mut metrics = self.raft.metrics();
        let mut committed = self.glue.committed.subscribe();
        let mut last: Option<Leadership> = None;
        let mut proposed = 0u64;
        // Ends of the entries proposed and not yet applied: at most `max_in_flight`, so
        // that under load what arrives meanwhile rides the next entry (group commit).
        let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
        // Appends counted when the last entry was proposed.
        let mut proposed_appends = 0u64;
        let mut linger = Linger::default();
        let durable = self.log.durable();
        let max_in_flight = if durable {
            MAX_IN_FLIGHT_DURABLE
        } else {
            MAX_IN_FLIGHT
        };
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.leadership();
            if last.as_ref() != Some(&now) {
                let leading = matches!(now, Leadership::Leader { .. });
                if !leading {
                    self.glue.store.set_accept_appends(false);
                }
                // Records appended and never proposed go (no majority has them);
                // not while a snapshot's bytes are being fetched (it waits).
                let installing = self.glue.installing.lock().await;
                let cut = self.log.cut_unlogged(self.glue.applied());
                drop(installing);
                let log_end = match cut {
                    Ok(end) => end,
                    Err(e) => {
                        warn!(error = %e, "could not cut the records never proposed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // A transfer's pause ends with the role it paused.
                self.glue.store.pause_appends(false);
                info!(?now, applied = self.glue.applied(), "DLedger role");
                let taken = on_change(now.clone()).await;
                if leading && taken {
                    proposed = log_end;
                    in_flight.clear();
                    proposed_appends = self.appends.load(Ordering::Relaxed);
                    linger = Linger::default();
                    self.glue.store.set_accept_appends(true);
                } else if leading {
                    warn!(
                        ?now,
                        "leading without the master role: no appends this term"
                    );
                } else if !taken {
                    // The leader's broker address is not known yet: ask again soon.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                if let Leadership::Leader { term } = now {
                    *lock(&self.led_since) = Some((term, tokio::time::Instant::now()));
                }
                last = Some(now.clone());
            }
            let applied = self.glue.applied();
            let t = Instant::now();
            while let Some(done) = in_flight.front().filter(|e| e.end <= applied).copied() {
                in_flight.pop_front();
                if durable && in_flight.is_empty() {
                    linger.applied(done, self.appends.load(Ordering::Relaxed), t);
                }
            }
            let mut wake = t + Duration::from_millis(5);
            if matches!(now, Leadership::Leader { .. }) && in_flight.len() < max_in_flight {
                let end = self.glue.store.max_phy_offset();
                let appends = self.appends.load(Ordering::Relaxed);
                let held = linger.hold(appends, t);
                if let Some(until) = held {
                    wake = until;
                }
                if end > proposed && held.is_none() {
                    let mut data = Vec::with_capacity(8 + (end - proposed) as usize);
                    data.extend_from_slice(&proposed.to_be_bytes());
                    let generation = self.glue.store.generation();
                    data.extend_from_slice(&self.glue.read(proposed, end));
                    if self.glue.store.generation() == generation {
                        *lock(&self.glue.own) = (generation, end);
                    }
                    if data.len() as u64 - 8 == end - proposed {
                        match self.raft.client_write_ff(Record(data)).await {
                            Ok(_) => {
                                in_flight.push_back(InFlight {
                                    end,
                                    bytes: end - proposed,
                                    requests: appends.saturating_sub(proposed_appends),
                                });
                                proposed = end;
                                proposed_appends = appends;
                            }
                            Err(e) => {
                                warn!(error = %e, "DLedger stopped");
                                return;
                            }
                        }
                        continue;
                    }
                    warn!(proposed, end, "CommitLog range not readable yet; retrying");
                } else if end < proposed {
                    // Cut under us: the next change of leadership starts again.
                    warn!(proposed, end, "CommitLog shorter than proposed");
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = committed.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
                r = metrics.changed() => if r.is_err() { return },
            }
        }
    }
}

/// Entries a leader has proposed and not yet applied before it proposes the next:
/// 2 under ASYNC_FLUSH; under SYNC_FLUSH 1, so that each round carries everything
/// that arrived during the last (fewer, larger entries: fewer syncs on every member;
/// measured faster there, and equal under ASYNC_FLUSH, `BENCHMARKS.md`).
const MAX_IN_FLIGHT: usize = 2;
const MAX_IN_FLIGHT_DURABLE: usize = 1;

/// What the broker does when this node's leadership changes: whether its role now
/// matches (a leader takes appends only then; a follower's change is retried).
pub type OnChange = Arc<
    dyn Fn(Leadership) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;
