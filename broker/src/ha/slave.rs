//! The slave side of replication: connects to the master named in the role, asks for
//! the hello, decides whether it may follow ([`decide_follow`], a pure function), cuts a
//! diverged tail, then appends the streamed CommitLog bytes and reports its offset.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::epoch::{self, truncation_point};
use super::role::{FollowProblemKind, RoleCell};
use super::wire::{self, Hello, HELLO_REQUEST, MAX_DATA_FRAME, TRANSFER_BATCH};
use super::HOUSEKEEPING;
use crate::store::MessageStore;

/// How often a slave reports its offset while idle.
const SLAVE_HEARTBEAT: Duration = Duration::from_secs(1);

/// What a slave knows about its own log when a master says hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalLog {
    /// The epoch of the slave's role.
    pub role_epoch: i64,
    /// The newest epoch in its history.
    pub last_epoch: i64,
    /// Its CommitLog max offset.
    pub max_offset: u64,
    /// Where its oldest CommitLog file starts.
    pub min_offset: u64,
}

/// What a slave does after the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowPlan {
    /// Follow: first cut the log at `truncate_to` (a tail the master's history lacks),
    /// and move an empty store to `start_empty_at` (the master's oldest file, retention
    /// having deleted what came before).
    Follow {
        /// Where to cut our log first.
        truncate_to: Option<u64>,
        /// Where an empty store starts.
        start_empty_at: Option<u64>,
    },
    /// Refuse: the master's epoch is older than ours.
    StaleMaster {
        /// The master's epoch.
        master: i64,
        /// Ours.
        ours: i64,
    },
    /// Refuse: same epoch but we hold more than the master, so it lost a tail that
    /// SYNC_MASTER may have acknowledged because we held it. Truncating would lose it.
    MasterBehind {
        /// Our max offset.
        ours: u64,
        /// The master's.
        master: u64,
    },
    /// Refuse: our log ends before the master's oldest file.
    Behind {
        /// Our max offset (after any cut).
        ours: u64,
        /// The master's oldest offset.
        oldest: u64,
    },
}

/// May this slave follow the master that sent `hello`, must it truncate first, or is
/// it ahead (`masterBehind`)?
#[must_use]
pub fn decide_follow(local: &LocalLog, hello: &Hello) -> FollowPlan {
    let ours = local.role_epoch.max(local.last_epoch);
    if hello.epoch < ours {
        return FollowPlan::StaleMaster {
            master: hello.epoch,
            ours,
        };
    }
    let cut = truncation_point(local.last_epoch, local.max_offset, &hello.epochs)
        .filter(|at| *at < local.max_offset);
    if cut.is_none() && local.max_offset > hello.max_offset && hello.epoch == local.last_epoch {
        return FollowPlan::MasterBehind {
            ours: local.max_offset,
            master: hello.max_offset,
        };
    }
    let after = cut.unwrap_or(local.max_offset);
    let mut start_empty_at = None;
    if hello.min_offset > after {
        let empty = after == 0 && (local.min_offset == 0 || cut == Some(0));
        if !empty {
            return FollowPlan::Behind {
                ours: after,
                oldest: hello.min_offset,
            };
        }
        start_empty_at = Some(hello.min_offset);
    }
    FollowPlan::Follow {
        truncate_to: cut,
        start_empty_at,
    }
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
    /// The master closed the connection on the identity frame (an older ferrocket).
    #[error("the master closed the connection on the slave's identity")]
    NoHelloForIdentity,
    /// A frame could not be encoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// This broker's role changed.
    #[error("role changed")]
    RoleChanged,
    /// The TLS handshake with the master's HA port failed.
    #[error("TLS to the master's HA port: {0}")]
    Tls(String),
}

impl SlaveError {
    /// For the errors that say this slave cannot follow its master (reported as
    /// `haFollowProblemKind`), their kind.
    #[must_use]
    pub fn follow_problem_kind(&self) -> Option<FollowProblemKind> {
        match self {
            SlaveError::StaleMaster { .. } => Some(FollowProblemKind::StaleMaster),
            SlaveError::Behind { .. } => Some(FollowProblemKind::Behind),
            SlaveError::MasterBehind { .. } => Some(FollowProblemKind::MasterBehind),
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

/// How long a slave with `haRequireSignature` waits for its master's challenge before
/// it takes the master for one that requires none.
pub const CHALLENGE_WAIT: Duration = Duration::from_secs(2);

/// How a slave reaches its master: the answer to a master's challenge
/// (`haRequireSignature`: the control account and the file holding its secret, read on
/// each connection), and TLS (`tls.enable`).
#[derive(Debug, Clone, Default)]
pub struct HaAuth {
    /// The control account and its secret file.
    pub signature: Option<(String, std::path::PathBuf)>,
    /// TLS to the master's HA port (and to Raft peers).
    pub tls: Option<crate::remoting::tls::TlsClient>,
    /// TLS on this member's own DLedger port (`tls.server.mode`).
    pub tls_server: Option<Arc<crate::remoting::tls::TlsServer>>,
}

/// The slave side: follows the master named in the role, forever.
pub async fn run_slave(store: Arc<MessageStore>, role: Arc<RoleCell>, me: String, auth: HaAuth) {
    let mut changes = role.subscribe();
    // Masters that closed the connection on our identity (a ferrocket from before it):
    // they get the plain hello.
    let mut legacy: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let st = role.get();
        let target = (!st.is_master())
            .then(|| st.master_ha_addr.clone())
            .flatten();
        let Some(addr) = target else {
            let _ = changes.changed().await;
            continue;
        };
        let identity = (!legacy.contains(&addr)).then(|| wire::SlaveIdentity {
            addr: me.clone(),
            broker_id: st.broker_id,
        });
        let session = follow(&store, &role, &addr, st.epoch, identity.as_ref(), &auth);
        let outcome = tokio::select! {
            r = session => r,
            _ = changes.changed() => Err(SlaveError::RoleChanged),
        };
        let pause = match outcome {
            Ok(()) => Duration::from_millis(500),
            Err(SlaveError::RoleChanged) => continue,
            Err(SlaveError::NoHelloForIdentity) => {
                info!(master = %addr, "master does not take the slave's identity; using the plain hello");
                legacy.insert(addr.clone());
                continue;
            }
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
    identity: Option<&wire::SlaveIdentity>,
    auth: &HaAuth,
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
    let stream = crate::remoting::tls::connect(auth.tls.as_ref(), addr, stream)
        .await
        .map_err(|e| SlaveError::Tls(e.to_string()))?;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = tokio::io::BufReader::with_capacity(1 << 20, rd);
    if let Some((ak, path)) = &auth.signature {
        // A master that requires the answer sends its challenge at once; one that does
        // not (not yet restarted with haRequireSignature in a rolling change) sends
        // nothing and waits for us: after CHALLENGE_WAIT, go on unsigned.
        match tokio::time::timeout(CHALLENGE_WAIT, wire::read_small(&mut rd, wire::CHALLENGE)).await
        {
            Ok(nonce) => {
                let nonce = nonce?;
                let creds = crate::auth::Credentials::from_file(ak, path)
                    .map_err(|e| SlaveError::Protocol(format!("HA challenge: {e}")))?;
                let sig = creds.sign_bytes(&wire::challenge_content(&nonce));
                wr.write_all(&wire::encode_small(wire::CHALLENGE_ANSWER, sig.as_bytes()))
                    .await?;
            }
            Err(_) => {
                tracing::info!(
                    %addr,
                    "the master sent no HA challenge (it does not require haRequireSignature); replicating unsigned"
                );
            }
        }
    }
    match identity {
        Some(id) => wr.write_all(&wire::encode_identity(id)?).await?,
        None => wr.write_all(&HELLO_REQUEST.to_be_bytes()).await?,
    }
    let hello = tokio::time::timeout(HOUSEKEEPING, wire::read_hello(&mut rd))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello"))?
        .map_err(|e| {
            // A master that does not know the identity frame closes the connection.
            if identity.is_some()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                )
            {
                SlaveError::NoHelloForIdentity
            } else {
                SlaveError::Protocol(format!("hello: {e}"))
            }
        })?;
    let local = LocalLog {
        role_epoch: my_epoch,
        last_epoch: role.last_epoch(),
        max_offset: store.max_phy_offset(),
        min_offset: store.min_phy_offset(),
    };
    match decide_follow(&local, &hello) {
        FollowPlan::StaleMaster { master, ours } => {
            return Err(SlaveError::StaleMaster { master, ours })
        }
        FollowPlan::MasterBehind { ours, master } => {
            return Err(SlaveError::MasterBehind { ours, master })
        }
        FollowPlan::Behind { ours, oldest } => return Err(SlaveError::Behind { ours, oldest }),
        FollowPlan::Follow {
            truncate_to,
            start_empty_at,
        } => {
            if let Some(at) = truncate_to {
                warn!(
                    from = local.max_offset,
                    to = at,
                    master_epoch = hello.epoch,
                    "truncating the diverged tail before following the master"
                );
                truncate_store(store, at).await?;
            }
            if let Some(at) = start_empty_at {
                // A new, empty replica of a master that has deleted its oldest files.
                store.start_at(at)?;
            }
        }
    }
    role.adopt_epochs(&hello.epochs)?;
    role.following(hello.max_offset);
    let mut expected = store.max_phy_offset();
    wr.write_all(&wire::encode_offset(expected)).await?;
    info!(master = %addr, epoch = hello.epoch, from = expected, "following the master");
    role.set_follow_problem(None);
    let mut pending: Vec<u8> = Vec::new();
    let mut last_report = tokio::time::Instant::now();
    loop {
        let head = tokio::time::timeout(SLAVE_HEARTBEAT, wire::read_frame_head(&mut rd)).await;
        let head = match head {
            Err(_) => {
                if last_report.elapsed() >= HOUSEKEEPING {
                    return Err(
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "master silent").into(),
                    );
                }
                wr.write_all(&wire::encode_offset(store.max_phy_offset()))
                    .await?;
                continue;
            }
            Ok(r) => r?,
        };
        last_report = tokio::time::Instant::now();
        let size = head.size;
        if size == 0 {
            wr.write_all(&wire::encode_offset(store.max_phy_offset()))
                .await?;
            continue;
        }
        if size > MAX_DATA_FRAME {
            return Err(SlaveError::Protocol(format!("frame of {size} bytes")));
        }
        let at = u64::try_from(head.offset)
            .map_err(|_| SlaveError::Protocol(format!("negative offset {}", head.offset)))?;
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
        // A memcpy into the mapped segment (segments are preallocated ahead), done on
        // this task: it works on any runtime, current-thread included.
        let n = store.append_raw(expected, &pending)?;
        pending.drain(..n);
        expected += n as u64;
        if n > 0 {
            wr.write_all(&wire::encode_offset(expected)).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::epoch::{EpochEntry, EpochFile};
    use crate::ha::role::{BrokerRole, RoleState};
    use crate::store::{encode_record, MessageToStore, StoreConfig};

    fn hello(epoch: i64, epochs: &[EpochEntry], max: u64, min: u64) -> Hello {
        Hello {
            epoch,
            epochs: epochs.to_vec(),
            max_offset: max,
            min_offset: min,
        }
    }

    fn local(role_epoch: i64, last_epoch: i64, max: u64, min: u64) -> LocalLog {
        LocalLog {
            role_epoch,
            last_epoch,
            max_offset: max,
            min_offset: min,
        }
    }

    const FOLLOW: FollowPlan = FollowPlan::Follow {
        truncate_to: None,
        start_empty_at: None,
    };

    #[test]
    fn follow_decision_table() {
        let h2 = [EpochEntry::new(1, 0), EpochEntry::new(2, 900)];
        let cases: Vec<(&str, LocalLog, Hello, FollowPlan)> = vec![
            (
                "caught-up slave, same epoch",
                local(1, 1, 500, 0),
                hello(1, &[EpochEntry::new(1, 0)], 800, 0),
                FOLLOW,
            ),
            (
                "equal logs",
                local(1, 1, 800, 0),
                hello(1, &[EpochEntry::new(1, 0)], 800, 0),
                FOLLOW,
            ),
            (
                "master of an older epoch",
                local(3, 3, 100, 0),
                hello(2, &h2, 1000, 0),
                FollowPlan::StaleMaster { master: 2, ours: 3 },
            ),
            (
                "role epoch counts even without history",
                local(4, 0, 0, 0),
                hello(3, &[], 0, 0),
                FollowPlan::StaleMaster { master: 3, ours: 4 },
            ),
            (
                "old master holding a tail the new epoch never had",
                local(2, 1, 1000, 0),
                hello(2, &h2, 1200, 0),
                FollowPlan::Follow {
                    truncate_to: Some(900),
                    start_empty_at: None,
                },
            ),
            (
                "same epoch, slave ahead: masterBehind",
                local(1, 1, 1000, 0),
                hello(1, &[EpochEntry::new(1, 0)], 600, 0),
                FollowPlan::MasterBehind {
                    ours: 1000,
                    master: 600,
                },
            ),
            (
                "ahead of a newer-epoch master but cut: follow after the cut",
                local(1, 1, 1000, 0),
                hello(2, &h2, 950, 0),
                FollowPlan::Follow {
                    truncate_to: Some(900),
                    start_empty_at: None,
                },
            ),
            (
                "new empty slave of a master that deleted its oldest files",
                local(1, 0, 0, 0),
                hello(1, &[EpochEntry::new(1, 0)], 9000, 4096),
                FollowPlan::Follow {
                    truncate_to: None,
                    start_empty_at: Some(4096),
                },
            ),
            (
                "slave whose log ends before the master's oldest file",
                local(1, 1, 100, 0),
                hello(1, &[EpochEntry::new(1, 0)], 9000, 4096),
                FollowPlan::Behind {
                    ours: 100,
                    oldest: 4096,
                },
            ),
            (
                "cut to the master's oldest file start is no longer behind",
                local(1, 1, 5000, 0),
                hello(
                    2,
                    &[EpochEntry::new(1, 0), EpochEntry::new(2, 4096)],
                    9000,
                    4096,
                ),
                FollowPlan::Follow {
                    truncate_to: Some(4096),
                    start_empty_at: None,
                },
            ),
        ];
        for (name, l, h, want) in cases {
            assert_eq!(decide_follow(&l, &h), want, "{name}");
        }
    }

    #[test]
    fn follow_problem_kinds_have_their_wire_names() {
        let mb = SlaveError::MasterBehind { ours: 2, master: 1 };
        assert_eq!(
            mb.follow_problem_kind().map(FollowProblemKind::as_str),
            Some("masterBehind")
        );
        assert_eq!(
            FollowProblemKind::parse("behind"),
            Some(FollowProblemKind::Behind)
        );
        assert_eq!(FollowProblemKind::parse("x"), None);
        assert_eq!(SlaveError::RoleChanged.follow_problem_kind(), None);
    }

    /// The slave appends on the task that reads the stream, so it runs on a
    /// current-thread runtime too (it used `block_in_place`, which panics there).
    #[tokio::test(flavor = "current_thread")]
    async fn follows_a_master_on_a_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.mapped_file_size_commit_log = 64 * 1024;
        cfg.max_message_size = 16 * 1024;
        cfg.disk_space_clean_forcibly_ratio = 100;
        cfg.disk_space_warning_level_ratio = 100;
        let store = MessageStore::open(cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ha_addr = listener.local_addr().unwrap().to_string();
        let epochs = EpochFile::load(&dir.path().join("epochFile")).unwrap();
        let role = RoleCell::new(
            RoleState {
                role: BrokerRole::Slave,
                broker_id: 1,
                epoch: 1,
                master_addr: Some("127.0.0.1:1".into()),
                master_ha_addr: Some(ha_addr),
            },
            epochs,
        );
        let msg = MessageToStore {
            topic: "T".into(),
            body: bytes::Bytes::from_static(b"hello"),
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            ..MessageToStore::default()
        };
        let mut rec = encode_record(&msg, 1 << 20).unwrap();
        rec.assign(0, 0, 1);
        let len = rec.len() as u64;
        // A one-connection master: hello, then the record, then silence.
        let master = async move {
            // The slave says who it is first. This master closes the connection on it,
            // as a ferrocket from before the identity does: the slave comes back with
            // the plain hello.
            let (mut s, _) = listener.accept().await.unwrap();
            assert_eq!(
                wire::read_offset(&mut s).await.unwrap(),
                wire::HELLO_WITH_ID
            );
            let id = wire::read_identity(&mut s).await.unwrap();
            assert_eq!((id.addr.as_str(), id.broker_id), ("127.0.0.1:1", 1));
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            assert_eq!(wire::read_offset(&mut s).await.unwrap(), HELLO_REQUEST);
            let h = hello(1, &[EpochEntry::new(1, 0)], len, 0);
            s.write_all(&wire::encode_hello(&h).unwrap()).await.unwrap();
            assert_eq!(wire::read_offset(&mut s).await.unwrap(), 0);
            let mut out = Vec::new();
            wire::encode_data_frame(0, &rec.bytes, &mut out);
            s.write_all(&out).await.unwrap();
            // The slave acknowledges exactly the record.
            loop {
                let off = wire::read_offset(&mut s).await.unwrap();
                if off == len as i64 {
                    return s;
                }
            }
        };
        let slave = run_slave(
            Arc::clone(&store),
            Arc::clone(&role),
            "127.0.0.1:1".into(),
            HaAuth::default(),
        );
        let acked = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                s = master => s,
                _ = slave => panic!("the slave loop returned"),
            }
        })
        .await
        .expect("the slave never acknowledged the record");
        drop(acked);
        assert_eq!(store.max_phy_offset(), len);
        assert_eq!(role.follow_problem(), None);
    }
}
