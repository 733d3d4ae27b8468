//! openraft's log storage over DLedger entry files (`store::dledger` has the layout).
//!
//! ```text
//! <dir>/data/<20-digit offset>    entry segments (`seg_size` each, created sparse)
//! <dir>/index/00000000000000000000 one 32-byte unit per Raft index, at index × 32
//! <dir>/raftState.json             vote, committed log id, last purged log id
//! ```
//!
//! - An entry's body is the application record (normal entries), nothing (openraft's
//!   blank entries, written as DLedger no-ops) or the membership as JSON (DLedger's
//!   config-change entries). DLedger's reserved `channel` field is 0, as DLedger writes
//!   it: with one leader per term (openraft's `single-term-leader`), the term names the
//!   leader.
//! - `append` writes the entries and their index units; a durable log calls back once
//!   the entries are synced (a leader's own appends: at once, synced behind,
//!   [`LogStore::lead_ahead_of_sync`]) and syncs the index at most once a second;
//!   `truncate` zeroes the cut entries and units and syncs both (a restart can never
//!   bring them back); `purge` records the purged log id and deletes whole segments
//!   below the first entry kept.
//! - On open, the index is read from the first unpurged index and each unit is checked
//!   against the entry it points at (type, index, term, position, size, body CRC); the
//!   entries after the last good unit are then read from the entry files themselves
//!   (over segment fillers), their units rewritten; the log ends before the first
//!   entry that does not check (a torn append), and what follows is zeroed.
//!
//! File I/O is done inline on the calling task (openraft calls storage from its own
//! task), the syncs on a sync thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::{Record, TypeConfig};
use crate::store::dledger::{
    body_crc, EntryHeader, EntryType, IndexUnit, BODY_OFFSET, INDEX_UNIT_SIZE, MIN_BLANK_LEN,
};
use crate::sync::lock;

type NodeId = u64;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn write_err(e: &io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

fn read_err(e: &io::Error) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Where one entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    pos: u64,
    size: u32,
    term: u64,
    node: u64,
    /// A reference entry's bytes in the CommitLog: `(pos, len)`.
    body: Option<(u64, u64)>,
}

/// Where normal entries' bytes live when the log keeps only references to them: the
/// broker's CommitLog (the Raft log *is* the CommitLog; the entry files hold the
/// headers, the references, blank and membership entries).
pub trait Bodies: Send + Sync + std::fmt::Debug + 'static {
    /// Makes `bytes` the content at `pos`: appended when the CommitLog ends at `pos`,
    /// nothing when the same bytes are there (the leader wrote them), and otherwise
    /// what differs from `pos` on is cut first. `own`: the entry is this node's, as the
    /// leader of the entry's term, proposed from these very bytes; only then may they
    /// be taken without a look. Any other leader's entry is compared byte for byte.
    ///
    /// # Errors
    /// A CommitLog that ends before `pos`, or what the store refused.
    fn write(&self, pos: u64, bytes: &[u8], own: bool) -> io::Result<()>;
    /// The `len` bytes at `pos`.
    ///
    /// # Errors
    /// Fewer bytes there.
    fn read(&self, pos: u64, len: u64) -> io::Result<Vec<u8>>;
    /// Cuts everything from `pos` (the entries holding it were truncated).
    ///
    /// # Errors
    /// What the store refused.
    fn cut(&self, pos: u64) -> io::Result<()>;
    /// Makes what was written durable (before an append is acknowledged under
    /// SYNC_FLUSH).
    ///
    /// # Errors
    /// A failed flush.
    fn flush(&self) -> io::Result<()>;
    /// The log refers to no byte below `pos` any more (it was purged behind a
    /// snapshot): retention may delete what lies wholly below it.
    fn floor(&self, _pos: u64) {}
}

/// `[pos:8][rest]` of a normal entry.
fn split_pos(b: &[u8]) -> io::Result<(u64, &[u8])> {
    if b.len() < 8 {
        return Err(invalid(format!("a normal entry of {} bytes", b.len())));
    }
    let (p, rest) = b.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(p);
    Ok((u64::from_be_bytes(a), rest))
}

/// `raftState.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RaftState {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    seg_size: u64,
    segments: BTreeMap<u64, File>,
    index: File,
    /// Entries by Raft index. openraft appends them in order without gaps; its storage
    /// suite also appends with gaps, which the index layout (a unit per index) allows.
    slots: BTreeMap<u64, Slot>,
    /// Where the next entry goes.
    end: u64,
    state: RaftState,
    /// When the committed log id was last written to `raftState.json`.
    committed_persisted: Option<std::time::Instant>,
    /// When an append last synced the index (at most once a second: recovery rebuilds
    /// the units of synced entries).
    index_synced: Option<std::time::Instant>,
    /// Where normal entries' bytes go (None: in the entry files).
    bodies: Option<Arc<dyn Bodies>>,
}

/// The Raft log of one node, in DLedger entry files.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Syncs appended entries off openraft's task, in order, many appends per fsync;
    /// `None`: appends are reported once written (ASYNC_FLUSH: the page cache).
    flusher: Option<std::sync::mpsc::Sender<Flush>>,
    /// This node's id when its own appends as leader are reported to openraft once
    /// written and synced behind it ([`LogStore::lead_ahead_of_sync`]).
    own: Option<NodeId>,
    /// How far appended entries are on disk (moved by the sync thread).
    synced: Arc<tokio::sync::watch::Sender<Synced>>,
}

/// How far appended entries are on disk: the CommitLog end their bytes reach, with
/// the entry data holding them synced too; `failed` once a sync failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    pub end: u64,
    pub failed: bool,
    /// Moves at each truncation: a sync of appends made before it moves nothing.
    epoch: u64,
}

/// Files to sync, the append to report once they are (`None`: reported already, a
/// leader's own), and the CommitLog end its entries' bytes reach.
struct Flush {
    /// Each keyed by its entry segment's start (`None`: the index file), so that
    /// appends batched into one sync sync each file once.
    files: Vec<(Option<u64>, File)>,
    callback: Option<LogFlushed<TypeConfig>>,
    body_end: Option<u64>,
    epoch: u64,
}

/// The sync thread: takes every flush request waiting, syncs their files once, and
/// reports them in the order they came; a leader's own appends move `synced`.
fn flusher(
    bodies: Option<Arc<dyn Bodies>>,
    synced: Arc<tokio::sync::watch::Sender<Synced>>,
) -> io::Result<std::sync::mpsc::Sender<Flush>> {
    let (tx, rx) = std::sync::mpsc::channel::<Flush>();
    std::thread::Builder::new()
        .name("ferrocket-raft-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let mut result: io::Result<()> = Ok(());
                let files: BTreeMap<Option<u64>, &File> = batch
                    .iter()
                    .flat_map(|f| &f.files)
                    .map(|(k, f)| (*k, f))
                    .collect();
                // The entry files are synced after the CommitLog: start writing them
                // now, so their writes overlap the CommitLog's sync.
                for f in files.values() {
                    start_writeback(f);
                }
                if let Some(b) = &bodies {
                    result = b.flush();
                }
                for f in files.values() {
                    if result.is_ok() {
                        result = f.sync_data();
                    }
                }
                match &result {
                    Ok(()) => {
                        synced.send_if_modified(|s| {
                            let end = batch
                                .iter()
                                .filter(|f| f.epoch == s.epoch)
                                .filter_map(|f| f.body_end)
                                .max();
                            match end {
                                Some(end) if end > s.end => {
                                    s.end = end;
                                    true
                                }
                                _ => false,
                            }
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the Raft log could not be synced");
                        synced.send_modify(|s| s.failed = true);
                    }
                }
                for cb in batch.into_iter().filter_map(|f| f.callback) {
                    cb.log_io_completed(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        })?;
    Ok(tx)
}

/// Starts writing `f`'s dirty pages to the disk without waiting, so they are written
/// while an earlier file's sync waits on its own; its `sync_data` then finds them
/// written or on the way. Errors are left to that sync (it reports write errors).
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file; sync_file_range reads nothing from memory.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn segment_name(start: u64) -> String {
    format!("{start:020}")
}

impl Inner {
    fn state_path(&self) -> PathBuf {
        self.dir.join("raftState.json")
    }

    fn persist_state(&self) -> io::Result<()> {
        crate::store::metadata::persist(&self.state_path(), &self.state)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn segment_for(&self, pos: u64) -> io::Result<(u64, &File)> {
        self.segments
            .range(..=pos)
            .next_back()
            .filter(|(start, _)| pos < **start + self.seg_size)
            .map(|(start, f)| (*start, f))
            .ok_or_else(|| invalid(format!("no entry segment holds position {pos}")))
    }

    fn create_segment(&mut self, start: u64) -> io::Result<()> {
        if self.segments.contains_key(&start) {
            return Ok(());
        }
        let path = self.dir.join("data").join(segment_name(start));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        f.set_len(self.seg_size)?;
        crate::store::mapped_file::sync_dir(&self.dir.join("data"))?;
        self.segments.insert(start, f);
        Ok(())
    }

    fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let (start, f) = self.segment_for(pos)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, pos - start)?;
        Ok(buf)
    }

    /// Zeroes `[from, to)` of the entry files.
    fn zero(&self, from: u64, to: u64) -> io::Result<BTreeSet<u64>> {
        let mut touched = BTreeSet::new();
        let zeros = vec![0u8; 64 * 1024];
        let mut at = from;
        while at < to {
            let Ok((start, f)) = self.segment_for(at) else {
                break;
            };
            let seg_end = (start + self.seg_size).min(to);
            while at < seg_end {
                let n = ((seg_end - at) as usize).min(zeros.len());
                f.write_all_at(&zeros[..n], at - start)?;
                at += n as u64;
            }
            touched.insert(start);
        }
        Ok(touched)
    }

    fn sync(&self, segments: &BTreeSet<u64>) -> io::Result<()> {
        for s in segments {
            if let Some(f) = self.segments.get(s) {
                f.sync_data()?;
            }
        }
        self.index.sync_data()
    }

    fn last_index(&self) -> Option<u64> {
        self.slots.keys().next_back().copied()
    }

    fn log_id(&self, index: u64, slot: &Slot) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(slot.term, slot.node), index)
    }

    /// Reads and checks the entry of `index` (its slot known).
    fn read_entry(&self, index: u64, slot: &Slot) -> io::Result<Entry<TypeConfig>> {
        let bytes = self.read_at(slot.pos, slot.size as usize)?;
        let h = EntryHeader::decode(&bytes, slot.pos).map_err(|e| invalid(e.to_string()))?;
        let body = &bytes[BODY_OFFSET..];
        if h.index != index as i64 || h.term != slot.term as i64 || h.pos != slot.pos as i64 {
            return Err(invalid(format!(
                "entry at {} is index {} term {}, expected index {index} term {}",
                slot.pos, h.index, h.term, slot.term
            )));
        }
        if h.body_crc != 0 && h.body_crc != body_crc(body) {
            return Err(invalid(format!(
                "entry {index} at {}: body CRC mismatch",
                slot.pos
            )));
        }
        let payload = match h.kind {
            EntryType::Normal => EntryPayload::Normal(Record(body.to_vec())),
            EntryType::Reference => {
                let (pos, rest) = split_pos(body)?;
                let (len, _) = split_pos(rest)?;
                let Some(bodies) = &self.bodies else {
                    return Err(invalid(format!(
                        "entry {index} refers to CommitLog bytes, and no CommitLog is open"
                    )));
                };
                let mut data = Vec::with_capacity(8 + len as usize);
                data.extend_from_slice(&pos.to_be_bytes());
                data.extend_from_slice(&bodies.read(pos, len)?);
                EntryPayload::Normal(Record(data))
            }
            EntryType::Noop => EntryPayload::Blank,
            EntryType::ConfigChange => EntryPayload::Membership(
                serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?,
            ),
        };
        Ok(Entry {
            log_id: self.log_id(index, slot),
            payload,
        })
    }

    /// Writes one entry; returns the CommitLog end its bytes reach (a reference entry).
    /// `own`: the entry is this node's as the leader of its term ([`Bodies::write`]).
    fn append_one(
        &mut self,
        e: Entry<TypeConfig>,
        own: bool,
        touched: &mut BTreeSet<u64>,
    ) -> io::Result<Option<u64>> {
        let index = e.log_id.index;
        if let Some(last) = self.last_index() {
            if index <= last {
                return Err(invalid(format!("append of index {index} after {last}")));
            }
        }
        let mut body_at = None;
        let (kind, body) = match e.payload {
            EntryPayload::Blank => (EntryType::Noop, Vec::new()),
            EntryPayload::Normal(Record(b)) => match &self.bodies {
                Some(bodies) => {
                    let (pos, bytes) = split_pos(&b)?;
                    bodies.write(pos, bytes, own)?;
                    let len = bytes.len() as u64;
                    body_at = Some((pos, len));
                    let mut r = Vec::with_capacity(16);
                    r.extend_from_slice(&pos.to_be_bytes());
                    r.extend_from_slice(&len.to_be_bytes());
                    (EntryType::Reference, r)
                }
                None => (EntryType::Normal, b),
            },
            EntryPayload::Membership(m) => (
                EntryType::ConfigChange,
                serde_json::to_vec(&m).map_err(|e| invalid(e.to_string()))?,
            ),
        };
        let size = (BODY_OFFSET + body.len()) as u64;
        if size > self.seg_size - MIN_BLANK_LEN as u64 {
            return Err(invalid(format!(
                "an entry of {size} bytes does not fit a {}-byte segment",
                self.seg_size
            )));
        }
        let seg_start = self.end - self.end % self.seg_size;
        let room = seg_start + self.seg_size - self.end;
        if size > room {
            // The rest of this segment is a filler; the entry opens the next one.
            if self.segments.contains_key(&seg_start) && room >= MIN_BLANK_LEN as u64 {
                let (start, f) = self.segment_for(self.end)?;
                f.write_all_at(
                    &crate::store::dledger::filler(room as usize),
                    self.end - start,
                )?;
                touched.insert(start);
            }
            self.end = seg_start + self.seg_size;
        }
        let start = self.end - self.end % self.seg_size;
        self.create_segment(start)?;
        // One leader per term (openraft's `single-term-leader`, standard Raft): the
        // term names the leader, and DLedger's reserved channel stays 0.
        let node = 0u64;
        let h = EntryHeader {
            kind,
            size: size as i32,
            index: index as i64,
            term: e.log_id.leader_id.term as i64,
            pos: self.end as i64,
            channel: i32::try_from(node)
                .map_err(|_| invalid(format!("node id {node} does not fit the channel field")))?,
            chain_crc: 0,
            body_crc: body_crc(&body),
            body_len: body.len() as i32,
        };
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend_from_slice(&h.encode());
        bytes.extend_from_slice(&body);
        let (start, f) = self.segment_for(self.end)?;
        f.write_all_at(&bytes, self.end - start)?;
        touched.insert(start);
        self.index
            .write_all_at(&IndexUnit::of(&h).encode(), index * INDEX_UNIT_SIZE as u64)?;
        self.slots.insert(
            index,
            Slot {
                pos: self.end,
                size: size as u32,
                term: e.log_id.leader_id.term,
                node,
                body: body_at,
            },
        );
        self.end += size;
        Ok(body_at.map(|(pos, len)| pos + len))
    }

    /// The entry of Raft index `index` at `pos` in the entry files, or at the start of
    /// the next segment when `pos` holds a segment's filler (or too little room for
    /// an entry); `None` where there is none (zeros, a torn or another entry).
    fn entry_at(&self, pos: u64, index: u64) -> Option<(Slot, EntryHeader)> {
        let seg_start = pos - pos % self.seg_size;
        let room = seg_start + self.seg_size - pos;
        let filler = room < BODY_OFFSET as u64
            || self.read_at(pos, 4).ok()?[..] == crate::store::dledger::BLANK_MAGIC.to_be_bytes();
        if !filler {
            return self.entry_here(pos, index);
        }
        let next = seg_start + self.seg_size;
        self.segments
            .contains_key(&next)
            .then(|| self.entry_here(next, index))
            .flatten()
    }

    /// The entry of Raft index `index` starting exactly at `pos` (header checks only;
    /// [`Inner::read_entry`] checks the body), with where a reference entry's bytes are.
    fn entry_here(&self, pos: u64, index: u64) -> Option<(Slot, EntryHeader)> {
        let h = EntryHeader::decode(&self.read_at(pos, BODY_OFFSET).ok()?, pos).ok()?;
        if h.index != i64::try_from(index).ok()? || h.pos != i64::try_from(pos).ok()? {
            return None;
        }
        let mut slot = Slot {
            pos,
            size: u32::try_from(h.size).ok()?,
            term: u64::try_from(h.term).ok()?,
            node: u64::try_from(h.channel).unwrap_or(0),
            body: None,
        };
        if h.kind == EntryType::Reference {
            let r = self.read_at(pos + BODY_OFFSET as u64, 16).ok()?;
            let (p, rest) = split_pos(&r).ok()?;
            let (len, _) = split_pos(rest).ok()?;
            slot.body = Some((p, len));
        }
        Some((slot, h))
    }

    /// Rebuilds the slots from the index, checking each unit against its entry.
    fn recover(&mut self) -> io::Result<()> {
        // The log starts after what was purged, at the first entry the oldest segment
        // holds (a log need not start at index 0).
        let after_purge = self.state.last_purged.map_or(0, |l| l.index + 1);
        let oldest = self.segments.keys().next().copied();
        let data_first = oldest
            .and_then(|s| self.read_at(s, BODY_OFFSET).ok().map(|h| (s, h)))
            .and_then(|(s, h)| EntryHeader::decode(&h, s).ok())
            .and_then(|h| u64::try_from(h.index).ok());
        let mut unit = [0u8; INDEX_UNIT_SIZE];
        let mut index = after_purge.max(data_first.unwrap_or(after_purge));
        loop {
            if self
                .index
                .read_exact_at(&mut unit, index * INDEX_UNIT_SIZE as u64)
                .is_err()
            {
                break;
            }
            let Ok(u) = IndexUnit::decode(&unit, index * INDEX_UNIT_SIZE as u64) else {
                break;
            };
            let (Ok(pos), Ok(size), Ok(term)) = (
                u64::try_from(u.pos),
                u32::try_from(u.size),
                u64::try_from(u.term),
            ) else {
                break;
            };
            // The unit must describe the entry it points at; an entry whose bytes the
            // CommitLog lost (a torn tail) ends the log (`read_entry` fails).
            let Some((slot, _)) = self.entry_here(pos, index) else {
                break;
            };
            if u.index != index as i64
                || (slot.size, slot.term) != (size, term)
                || self.read_entry(index, &slot).is_err()
            {
                break;
            }
            self.slots.insert(index, slot);
            index += 1;
        }
        // Entries past the synced units: an append syncs its entries before it is
        // acknowledged, their units at most once a second; the units are rebuilt from
        // the entries (DLedger's index is derived data).
        let rebuilt_from = index;
        let mut at = match self.slots.values().next_back() {
            Some(s) => Some(s.pos + u64::from(s.size)),
            // No unit at all: the log's first entry opens the oldest segment.
            None => oldest.filter(|_| data_first == Some(index)),
        };
        while let Some(pos) = at {
            let Some((slot, h)) = self.entry_at(pos, index) else {
                break;
            };
            if self.read_entry(index, &slot).is_err() {
                break;
            }
            self.index
                .write_all_at(&IndexUnit::of(&h).encode(), index * INDEX_UNIT_SIZE as u64)?;
            at = Some(slot.pos + u64::from(slot.size));
            self.slots.insert(index, slot);
            index += 1;
        }
        if index > rebuilt_from {
            tracing::info!(
                from = rebuilt_from,
                to = index - 1,
                "Raft entry index units rebuilt from the entry files"
            );
        }
        self.end = match self.slots.values().next_back() {
            Some(s) => s.pos + u64::from(s.size),
            // Nothing kept: start a fresh segment after the last one.
            None => self
                .segments
                .keys()
                .next_back()
                .map_or(0, |s| s + self.seg_size),
        };
        // What follows the log (a torn append) is cleared, entries and units.
        let tail_end = self
            .segments
            .keys()
            .next_back()
            .map_or(self.end, |s| s + self.seg_size);
        let touched = self.zero(self.end, tail_end)?;
        let units_len = self.index.metadata()?.len();
        let cut = index * INDEX_UNIT_SIZE as u64;
        if units_len > cut {
            self.index.set_len(cut)?;
        }
        self.sync(&touched)
    }
}

impl Inner {
    /// Where the first normal entry the log still holds has its bytes (`None`: it
    /// holds none).
    fn body_floor(&self) -> Option<u64> {
        self.slots.values().find_map(|s| s.body.map(|(p, _)| p))
    }
}

impl LogStore {
    /// With bodies: cuts what lies past the last normal entry's bytes — bytes a
    /// leader appended and never proposed — but never below `applied` (committed
    /// bytes: after a snapshot install the log may still hold only older entries until
    /// openraft purges them). Done under the log's lock, so no append lands in
    /// between. Returns where the bodies now end.
    ///
    /// # Errors
    /// What the bodies' store refused.
    pub fn cut_unlogged(&self, applied: u64) -> io::Result<u64> {
        let inner = lock(&self.inner);
        let end = inner
            .slots
            .values()
            .rev()
            .find_map(|s| s.body.map(|(p, l)| p + l))
            .map_or(applied, |e| e.max(applied));
        if let Some(b) = &inner.bodies {
            b.cut(end)?;
        }
        Ok(end)
    }

    /// Opens (or creates) the log in `dir` with entry segments of `seg_size` bytes
    /// (DLedger's default is 1 GiB), recovering what a crash left.
    ///
    /// # Errors
    /// I/O errors; an unreadable `raftState.json`.
    pub fn open(dir: &Path, seg_size: u64) -> io::Result<Self> {
        Self::open_with(dir, seg_size, true, None)
    }

    /// [`LogStore::open`]; with `durable`, an append is reported once synced (a sync
    /// thread serves many appends per fsync, flushing `bodies` too), otherwise once
    /// written. With `bodies`, normal entries' bytes go there and the entry files keep
    /// references ([`EntryType::Reference`]).
    ///
    /// # Errors
    /// As [`LogStore::open`].
    pub fn open_with(
        dir: &Path,
        seg_size: u64,
        durable: bool,
        bodies: Option<Arc<dyn Bodies>>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("index"))?;
        let state: RaftState = match std::fs::read(dir.join("raftState.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| invalid(format!("{}: {e}", dir.join("raftState.json").display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => RaftState::default(),
            Err(e) => return Err(e),
        };
        let mut segments = BTreeMap::new();
        for e in std::fs::read_dir(dir.join("data"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(start) = name.parse::<u64>() else {
                continue;
            };
            if name.len() != 20 || start % seg_size != 0 {
                return Err(invalid(format!(
                    "unexpected file {} in the Raft entry directory",
                    e.path().display()
                )));
            }
            let f = OpenOptions::new().read(true).write(true).open(e.path())?;
            segments.insert(start, f);
        }
        let index = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("index").join(segment_name(0)))?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            seg_size,
            segments,
            index,
            slots: BTreeMap::new(),
            end: 0,
            state,
            committed_persisted: None,
            index_synced: None,
            bodies: bodies.clone(),
        };
        inner.recover()?;
        if let (Some(b), Some(floor)) = (&inner.bodies, inner.body_floor()) {
            b.floor(floor);
        }
        let end = inner
            .slots
            .values()
            .filter_map(|s| s.body)
            .map(|(p, l)| p + l)
            .max();
        let synced = Arc::new(tokio::sync::watch::Sender::new(Synced {
            end: end.unwrap_or(0),
            failed: false,
            epoch: 0,
        }));
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            flusher: if durable {
                Some(flusher(bodies, synced.clone())?)
            } else {
                None
            },
            own: None,
            synced,
        })
    }

    /// Under a durable log, reports node `me`'s own appends as the leader of their
    /// term to openraft once written, and syncs them behind: openraft 0.9 waits for
    /// the report before it replicates, so the leader's sync no longer precedes the
    /// followers' (it runs beside them, as a SYNC_MASTER's flush beside its slave's
    /// copy). What counts as acknowledged must then also wait for [`LogStore::synced`].
    #[must_use]
    pub fn lead_ahead_of_sync(mut self, me: NodeId) -> Self {
        self.own = Some(me);
        self
    }

    /// How far appended entries are on disk (a leader's sends wait on it for its own
    /// appends, reported before their sync).
    pub fn synced(&self) -> tokio::sync::watch::Receiver<Synced> {
        self.synced.subscribe()
    }

    /// Whether appends are synced before they are reported (SYNC_FLUSH).
    pub fn durable(&self) -> bool {
        self.flusher.is_some()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let inner = lock(&self.inner);
        let Some(last) = inner.last_index() else {
            return Ok(Vec::new());
        };
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_sub(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => last,
        }
        .min(last);
        if from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (index, slot) in inner.slots.range(from..=to) {
            match inner.read_entry(*index, slot) {
                Ok(e) => out.push(e),
                Err(e) => return Err(read_err(&e)),
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let inner = lock(&self.inner);
        let last_purged_log_id = inner.state.last_purged;
        let last_log_id = match inner.slots.iter().next_back() {
            Some((i, s)) => Some(inner.log_id(*i, s)),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        inner.state.vote = Some(*vote);
        inner
            .persist_state()
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(lock(&self.inner).state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        // openraft allows the committed id to be kept lazily (a restart learns the rest
        // from the leader): written at most once a second, not on every commit, which
        // would put two fsyncs on every send's path.
        let mut inner = lock(&self.inner);
        inner.state.committed = committed;
        let due = inner
            .committed_persisted
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if due {
            inner.committed_persisted = Some(std::time::Instant::now());
            inner.persist_state().map_err(|e| write_err(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(lock(&self.inner).state.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let mut touched = BTreeSet::new();
        // This node's own entries as the committed leader of their term (one leader per
        // term): reported once written, synced behind (`synced`).
        let leading = self.own.and_then(|me| {
            let v = inner.state.vote?;
            (v.committed && v.leader_id.voted_for == Some(me)).then_some(v.leader_id.term)
        });
        let mut own = leading.is_some();
        let mut body_end = None;
        for e in entries {
            let mine = Some(e.log_id.leader_id.term) == leading;
            own &= mine;
            match inner.append_one(e, mine, &mut touched) {
                Ok(end) => body_end = end.or(body_end),
                Err(err) => {
                    callback.log_io_completed(Err(io::Error::new(err.kind(), err.to_string())));
                    return Err(write_err(&err));
                }
            }
        }
        let Some(flusher) = &self.flusher else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // The entries are synced before the append is reported; their index units
        // at most once a second (recovery rebuilds the rest from the entries).
        let index_due = inner
            .index_synced
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if index_due {
            inner.index_synced = Some(std::time::Instant::now());
        }
        let files = touched
            .iter()
            .filter_map(|s| Some((Some(*s), inner.segments.get(s)?)))
            .chain(index_due.then_some((None, &inner.index)))
            .map(|(k, f)| Ok((k, f.try_clone()?)))
            .collect::<io::Result<Vec<_>>>();
        match files {
            Ok(files) => {
                let callback = if own {
                    callback.log_io_completed(Ok(()));
                    None
                } else {
                    Some(callback)
                };
                let flush = Flush {
                    files,
                    callback,
                    body_end,
                    epoch: self.synced.borrow().epoch,
                };
                if let Err(std::sync::mpsc::SendError(f)) = flusher.send(flush) {
                    let err = io::Error::other("the Raft log's sync thread stopped");
                    if let Some(cb) = f.callback {
                        cb.log_io_completed(Err(io::Error::other(err.to_string())));
                    }
                    self.synced.send_modify(|s| s.failed = true);
                    return Err(write_err(&err));
                }
                Ok(())
            }
            Err(err) => {
                callback.log_io_completed(Err(io::Error::new(err.kind(), err.to_string())));
                Err(write_err(&err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        let from = log_id.index;
        let Some(cut) = inner.slots.range(from..).next().map(|(_, s)| s.pos) else {
            return Ok(());
        };
        let old_end = inner.end;
        // The CommitLog bytes of the cut entries go too (the CommitLog generation moves,
        // so no send waiting on them is acknowledged).
        let first_body = inner.slots.range(from..).find_map(|(_, s)| s.body);
        if let (Some((pos, _)), Some(bodies)) = (first_body, &inner.bodies) {
            bodies.cut(pos).map_err(|e| write_err(&e))?;
        }
        // What a later leadership appends at these offsets is synced anew.
        self.synced.send_modify(|s| {
            if let Some((pos, _)) = first_body {
                s.end = s.end.min(pos);
            }
            s.epoch += 1;
        });
        let run = || -> io::Result<()> {
            let touched = inner.zero(cut, old_end)?;
            inner.index.set_len(from * INDEX_UNIT_SIZE as u64)?;
            inner.sync(&touched)
        };
        run().map_err(|e| write_err(&e))?;
        inner.slots.split_off(&from);
        inner.end = cut;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        if inner
            .state
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        inner.state.last_purged = Some(log_id);
        inner.persist_state().map_err(|e| write_err(&e))?;
        let kept = inner.slots.split_off(&(log_id.index + 1));
        let purged_end = inner
            .slots
            .values()
            .filter_map(|s| s.body.map(|(p, l)| p + l))
            .max();
        inner.slots = kept;
        if let Some(b) = &inner.bodies {
            if let Some(floor) = inner.body_floor().or(purged_end) {
                b.floor(floor);
            }
        }
        // Whole segments below the first entry kept (or below the write position).
        let keep_from = inner.slots.values().next().map_or(inner.end, |s| s.pos);
        let seg_size = inner.seg_size;
        let dead: Vec<u64> = inner
            .segments
            .keys()
            .copied()
            .filter(|s| s + seg_size <= keep_from)
            .collect();
        for s in dead {
            inner.segments.remove(&s);
            let path = inner.dir.join("data").join(segment_name(s));
            std::fs::remove_file(&path).map_err(|e| write_err(&e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::machine::Applied;
    use openraft::testing::{StoreBuilder, Suite};
    use std::time::Duration;

    struct Builder {
        seg_size: u64,
    }

    impl StoreBuilder<TypeConfig, LogStore, Applied, tempfile::TempDir> for Builder {
        async fn build(&self) -> StoreResult<(tempfile::TempDir, LogStore, Applied)> {
            let dir = tempfile::tempdir().map_err(|e| write_err(&e))?;
            let store = LogStore::open(dir.path(), self.seg_size).map_err(|e| write_err(&e))?;
            Ok((dir, store, Applied::default()))
        }
    }

    /// openraft's own storage suite, with segments small enough that its logs span
    /// several (fillers, rolling, purging whole segments).
    #[test]
    fn passes_openrafts_storage_suite() {
        Suite::test_all(Builder { seg_size: 256 }).unwrap();
        Suite::test_all(Builder { seg_size: 1 << 20 }).unwrap();
    }

    fn normal(term: u64, node: u64, index: u64, body: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, node), index),
            payload: EntryPayload::Normal(Record(body.to_vec())),
        }
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        use openraft::storage::RaftLogStorageExt;
        store.blocking_append(entries).await.unwrap();
    }

    /// A restart keeps every synced entry; a torn last entry and what a truncation
    /// cut never come back; the files are DLedger's layout.
    #[tokio::test]
    async fn a_restart_keeps_the_log_and_never_brings_back_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 4096;
        {
            let mut s = LogStore::open(dir.path(), seg).unwrap();
            let entries = (1..=40).map(|i| normal(2, 1, i, &[i as u8; 150])).collect();
            append(&mut s, entries).await;
            s.truncate(LogId::new(CommittedLeaderId::new(2, 1), 31))
                .await
                .unwrap();
            append(&mut s, vec![normal(3, 2, 31, b"new term")]).await;
        }
        let mut s = LogStore::open(dir.path(), seg).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(
            st.last_log_id.map(|l| (l.index, l.leader_id.term)),
            Some((31, 3))
        );
        let all = s.try_get_log_entries(..).await.unwrap();
        assert_eq!(all.len(), 31);
        assert!(matches!(&all[30].payload, EntryPayload::Normal(Record(b)) if b == b"new term"));
        assert!(matches!(&all[0].payload, EntryPayload::Normal(Record(b)) if b == &vec![1u8; 150]));
        // The segment files are full-size DLedger entry files.
        let data: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .collect();
        assert!(data.len() >= 2, "{} segments", data.len());
        let first = std::fs::read(dir.path().join("data").join(segment_name(0))).unwrap();
        assert_eq!(first.len() as u64, seg);
        let (found, _) = crate::store::dledger::scan_segment(&first, 0, Some(0));
        assert_eq!(found[0].index, 1);
        assert_eq!(found[0].kind, EntryType::Normal);
        drop(s);

        // A torn last append: its entry's body damaged after the index was written.
        let s = LogStore::open(dir.path(), seg).unwrap();
        let last = *lock(&s.inner).slots.values().next_back().unwrap();
        drop(s);
        let path = dir
            .path()
            .join("data")
            .join(segment_name(last.pos - last.pos % seg));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"XX", last.pos % seg + BODY_OFFSET as u64)
            .unwrap();
        drop(f);
        let mut s = LogStore::open(dir.path(), seg).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(30));
    }

    /// Index units an append did not sync (or a damaged index) are rebuilt from the
    /// entries on open, across segment fillers; the log still ends at a torn entry.
    #[tokio::test]
    async fn lost_index_units_are_rebuilt_from_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 4096;
        let bodies: Vec<Vec<u8>> = (1..=40u64).map(|i| vec![i as u8; 150]).collect();
        {
            let mut s = LogStore::open(dir.path(), seg).unwrap();
            let entries = (1..=40u64)
                .map(|i| normal(2, 1, i, &bodies[i as usize - 1]))
                .collect();
            append(&mut s, entries).await;
        }
        let index_path = dir.path().join("index").join(segment_name(0));
        let unit = INDEX_UNIT_SIZE as u64;
        // Units 11.. lost (never synced), then every unit, then units 20..=25 zeroed.
        for damage in 0..3 {
            let f = OpenOptions::new().write(true).open(&index_path).unwrap();
            match damage {
                0 => f.set_len(11 * unit).unwrap(),
                1 => f.set_len(0).unwrap(),
                _ => f
                    .write_all_at(&vec![0u8; 6 * unit as usize], 20 * unit)
                    .unwrap(),
            }
            drop(f);
            let mut s = LogStore::open(dir.path(), seg).unwrap();
            holds(&mut s, 40, &bodies).await;
            // Rewritten: the next open finds every unit.
            drop(s);
            assert_eq!(std::fs::metadata(&index_path).unwrap().len(), 41 * unit);
        }
        // A torn entry past the synced units ends the log before it.
        let s = LogStore::open(dir.path(), seg).unwrap();
        let torn = lock(&s.inner).slots[&35];
        drop(s);
        let path = dir
            .path()
            .join("data")
            .join(segment_name(torn.pos - torn.pos % seg));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"XX", torn.pos % seg + BODY_OFFSET as u64 + 10)
            .unwrap();
        drop(f);
        let f = OpenOptions::new().write(true).open(&index_path).unwrap();
        f.set_len(30 * unit).unwrap();
        drop(f);
        let mut s = LogStore::open(dir.path(), seg).unwrap();
        holds(&mut s, 34, &bodies).await;
    }

    /// The log is entries `1..=last` with these bodies.
    async fn holds(s: &mut LogStore, last: u64, bodies: &[Vec<u8>]) {
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(last));
        let all = s.try_get_log_entries(1..=last).await.unwrap();
        assert_eq!(all.len() as u64, last);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.log_id.index, i as u64 + 1);
            assert!(
                matches!(&e.payload, EntryPayload::Normal(Record(b)) if *b == bodies[i]),
                "entry {}",
                i + 1
            );
        }
    }

    /// A CommitLog stand-in: bytes in memory, appended at the end only; records each
    /// write's position and whether it was taken as this node's own.
    #[derive(Debug, Default)]
    struct MemBodies(Mutex<Vec<u8>>, Mutex<Vec<(u64, bool)>>);

    impl Bodies for MemBodies {
        fn write(&self, pos: u64, bytes: &[u8], own: bool) -> io::Result<()> {
            lock(&self.1).push((pos, own));
            let mut v = lock(&self.0);
            let pos = pos as usize;
            if pos > v.len() {
                return Err(invalid(format!("gap: {pos} after {}", v.len())));
            }
            if v.get(pos..pos + bytes.len()) != Some(bytes) {
                v.truncate(pos);
                v.extend_from_slice(bytes);
            }
            Ok(())
        }
        fn read(&self, pos: u64, len: u64) -> io::Result<Vec<u8>> {
            lock(&self.0)
                .get(pos as usize..(pos + len) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| invalid("short".into()))
        }
        fn cut(&self, pos: u64) -> io::Result<()> {
            lock(&self.0).truncate(pos as usize);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn at(pos: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = pos.to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    /// With bodies (the broker's mode), normal entries keep a 16-byte reference and
    /// their bytes live in the bodies: read back whole, cut with a truncation, and an
    /// entry whose bytes the bodies lost (a torn CommitLog tail) ends the log on open.
    #[tokio::test]
    async fn with_bodies_entries_refer_to_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Arc::new(MemBodies::default());
        let open = |b: &Arc<MemBodies>| {
            let b: Arc<dyn Bodies> = b.clone();
            LogStore::open_with(dir.path(), 4096, false, Some(b)).unwrap()
        };
        let mut s = open(&bodies);
        let entries = (1..=10u64)
            .map(|i| normal(1, 0, i, &at((i - 1) * 100, &[i as u8; 100])))
            .collect();
        append(&mut s, entries).await;
        assert_eq!(lock(&bodies.0).len(), 1000);
        let all = s.try_get_log_entries(..).await.unwrap();
        assert!(
            matches!(&all[4].payload, EntryPayload::Normal(Record(b)) if *b == at(400, &[5u8; 100]))
        );
        // Only references in the entry files: 10 × (48 + 16) bytes.
        let first = std::fs::read(dir.path().join("data").join(segment_name(0))).unwrap();
        let (found, _) = crate::store::dledger::scan_segment(&first, 0, Some(0));
        assert_eq!(found.len(), 10);
        assert!(found
            .iter()
            .all(|e| e.kind == EntryType::Reference && e.size as usize == BODY_OFFSET + 16));
        // A truncation cuts the bytes of the cut entries; a new term writes over them.
        s.truncate(LogId::new(CommittedLeaderId::new(1, 0), 8))
            .await
            .unwrap();
        assert_eq!(lock(&bodies.0).len(), 700);
        append(&mut s, vec![normal(2, 0, 8, &at(700, b"term two"))]).await;
        assert_eq!(s.cut_unlogged(0).unwrap(), 708);
        // Committed bytes past the log's last entry (a snapshot installed before the
        // older entries are purged) are kept.
        lock(&bodies.0).extend_from_slice(&[9u8; 92]);
        assert_eq!(s.cut_unlogged(800).unwrap(), 800);
        assert_eq!(lock(&bodies.0).len(), 800);
        assert_eq!(s.cut_unlogged(0).unwrap(), 708);
        drop(s);
        // The bytes of the last entry are lost: the log ends before it.
        lock(&bodies.0).truncate(704);
        let mut s = open(&bodies);
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(7));
    }

    /// Bodies whose flush waits for a gate, telling when one is waiting.
    #[derive(Debug, Default)]
    struct GatedBodies {
        mem: MemBodies,
        open: Mutex<bool>,
        cv: std::sync::Condvar,
        waiting: std::sync::atomic::AtomicUsize,
    }

    impl GatedBodies {
        fn set(&self, open: bool) {
            *lock(&self.open) = open;
            self.cv.notify_all();
        }
    }

    impl Bodies for GatedBodies {
        fn write(&self, pos: u64, bytes: &[u8], own: bool) -> io::Result<()> {
            self.mem.write(pos, bytes, own)
        }
        fn read(&self, pos: u64, len: u64) -> io::Result<Vec<u8>> {
            self.mem.read(pos, len)
        }
        fn cut(&self, pos: u64) -> io::Result<()> {
            self.mem.cut(pos)
        }
        fn flush(&self) -> io::Result<()> {
            use std::sync::atomic::Ordering;
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let mut g = lock(&self.open);
            while !*g {
                g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Under a durable log, the committed leader's own appends are reported to
    /// openraft before their sync (so replication need not wait for it) and `synced`
    /// moves only once they are on disk; anyone else's appends are reported after the
    /// sync; a truncation takes `synced` back to the cut.
    #[tokio::test]
    async fn a_leaders_own_appends_are_reported_at_once_and_synced_behind() {
        use openraft::storage::RaftLogStorageExt;
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(GatedBodies::default());
        let bodies: Arc<dyn Bodies> = gated.clone();
        let mut s = LogStore::open_with(dir.path(), 4096, true, Some(bodies))
            .unwrap()
            .lead_ahead_of_sync(1);
        let mut synced = s.synced();
        s.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        // Reported while the sync is held.
        let entries = (1..=3u64)
            .map(|i| normal(1, 1, i, &at((i - 1) * 100, &[i as u8; 100])))
            .collect::<Vec<_>>();
        tokio::time::timeout(Duration::from_secs(10), s.blocking_append(entries))
            .await
            .expect("the leader's own append waited for its sync")
            .unwrap();
        assert_eq!(synced.borrow().end, 0);
        gated.set(true);
        let r = tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|x| x.end == 300))
            .await
            .map(|r| r.map(|x| *x));
        assert!(matches!(r, Ok(Ok(x)) if !x.failed), "{r:?}");

        // Another leader's entries (term 2, node 2): reported only after their sync.
        gated.set(false);
        s.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
        let mut s2 = s.clone();
        let pending = tokio::spawn(async move {
            s2.blocking_append(vec![normal(2, 2, 4, &at(300, b"follower"))])
                .await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gated.waiting.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "no sync began");
            assert!(!pending.is_finished(), "reported before its sync");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Its sync is held in the sync thread: the report cannot have come.
        assert!(!pending.is_finished(), "reported while its sync is held");
        gated.set(true);
        tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(synced.borrow().end, 308);

        // A truncation takes the synced end back to the first cut byte.
        s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        assert_eq!(synced.borrow().end, 200);
    }

    /// Only the committed leader's entries of its own term are written as its own
    /// (taken without a look at the bytes): once its vote moved to another leader,
    /// that leader's entries, and its own old term's entries sent back to it, are
    /// compared (a deposed leader's records never proposed must not pass for the new
    /// leader's entry at the same positions; the campaign lost three acknowledged
    /// messages that way).
    #[tokio::test]
    async fn only_the_leaders_own_entries_are_taken_as_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(MemBodies::default());
        let bodies: Arc<dyn Bodies> = rec.clone();
        let mut s = LogStore::open_with(dir.path(), 4096, false, Some(bodies))
            .unwrap()
            .lead_ahead_of_sync(1);
        s.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        append(&mut s, vec![normal(1, 1, 1, &at(0, &[1; 100]))]).await;
        // Node 1 is deposed: node 2 leads term 2.
        s.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
        append(&mut s, vec![normal(2, 2, 2, &at(100, &[2; 100]))]).await;
        // Node 1 leads again (term 3); an entry of its old term reaches it again.
        s.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        s.truncate(LogId::new(CommittedLeaderId::new(2, 2), 2))
            .await
            .unwrap();
        append(&mut s, vec![normal(2, 2, 2, &at(100, &[2; 100]))]).await;
        append(&mut s, vec![normal(3, 1, 3, &at(200, &[3; 100]))]).await;
        // Not leading with a committed vote (a candidate of term 4): nothing is its own.
        s.save_vote(&Vote::new(4, 1)).await.unwrap();
        append(&mut s, vec![normal(3, 1, 4, &at(300, &[4; 100]))]).await;
        assert_eq!(
            *lock(&rec.1),
            vec![
                (0, true),
                (100, false),
                (100, false),
                (200, true),
                (300, false)
            ]
        );
    }
}
