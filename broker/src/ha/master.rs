//! The master side of replication: accepts slaves on `haListenPort`, streams CommitLog
//! bytes to each, and tracks the largest offset a slave acknowledged (what a SYNC_MASTER
//! send waits for).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::role::RoleCell;
use super::wire::{self, Hello, HELLO_REQUEST, TRANSFER_BATCH};
use super::{HOUSEKEEPING, MAX_GAP_NOT_IN_SYNC};
use crate::store::MessageStore;

/// Frames sent per wake-up before re-checking for new data.
const FRAMES_PER_ROUND: usize = 32;
/// Idle time before the master sends a heartbeat frame.
const MASTER_HEARTBEAT: Duration = Duration::from_secs(1);

/// Reads one 8-byte offset report, waiting at most [`HOUSEKEEPING`].
async fn read_offset(rd: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<i64> {
    tokio::time::timeout(HOUSEKEEPING, wire::read_offset(rd))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no offset from the slave")
        })?
}

/// Why a SYNC_MASTER send is not acknowledged by a slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// No slave connected, or every slave too far behind.
    #[error("no slave in sync")]
    SlaveNotAvailable,
    /// No slave reported the offset in time.
    #[error("no slave acknowledged in time")]
    Timeout,
}

/// The master side: accepts slaves, streams, and tracks what they acknowledged.
#[derive(Debug)]
pub struct HaService {
    store: Arc<MessageStore>,
    role: Arc<RoleCell>,
    acked: watch::Sender<u64>,
    slaves: AtomicUsize,
    new_data: Notify,
    conn_ids: AtomicU64,
}

impl HaService {
    /// A service over `store`.
    #[must_use]
    pub fn new(store: Arc<MessageStore>, role: Arc<RoleCell>) -> Arc<Self> {
        let (acked, _) = watch::channel(0);
        Arc::new(HaService {
            store,
            role,
            acked,
            slaves: AtomicUsize::new(0),
            new_data: Notify::new(),
            conn_ids: AtomicU64::new(0),
        })
    }

    /// Wakes the streaming connections (called after an append).
    pub fn notify_new_data(&self) {
        self.new_data.notify_waiters();
    }

    /// Connected slaves.
    #[must_use]
    pub fn slave_count(&self) -> usize {
        self.slaves.load(Ordering::Acquire)
    }

    /// The largest offset any slave acknowledged.
    #[must_use]
    pub fn acked_offset(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Bytes the best slave is behind the master's max offset (0 without slaves).
    #[must_use]
    pub fn slave_lag(&self) -> u64 {
        if self.slave_count() == 0 {
            return 0;
        }
        self.store
            .max_phy_offset()
            .saturating_sub(self.acked_offset())
    }

    /// Waits until a slave acknowledged `offset` (the end of a send), at most `timeout`.
    ///
    /// # Errors
    /// [`SyncError::SlaveNotAvailable`] without an in-sync slave, [`SyncError::Timeout`].
    pub async fn wait_for_slave(&self, offset: u64, timeout: Duration) -> Result<(), SyncError> {
        let mut rx = self.acked.subscribe();
        if *rx.borrow() >= offset {
            return Ok(());
        }
        if self.slave_count() == 0 || offset.saturating_sub(*rx.borrow()) > MAX_GAP_NOT_IN_SYNC {
            return Err(SyncError::SlaveNotAvailable);
        }
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|a| *a >= offset).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(SyncError::Timeout),
        }
    }

    /// Forgets what slaves acknowledged (a role change): acknowledgements of an earlier
    /// term say nothing about a log that may since have been truncated.
    pub fn reset_acked(&self) {
        self.acked.send_replace(0);
    }

    fn report(&self, offset: u64) {
        self.acked.send_if_modified(|a| {
            if offset > *a {
                *a = offset;
                true
            } else {
                false
            }
        });
        self.store.set_confirm_offset(self.acked_offset());
    }

    /// Accepts slaves on `listener` until `shutdown` resolves; then closes the listener
    /// and every slave's stream (they reconnect to whichever master comes next).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut streams = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
                Some(_) = streams.join_next(), if !streams.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "HA accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ha = Arc::clone(&self);
            streams.spawn(async move {
                let id = ha.conn_ids.fetch_add(1, Ordering::Relaxed);
                if !ha.role.is_master() {
                    debug!(%peer, "HA connection refused: not a master");
                    return;
                }
                ha.slaves.fetch_add(1, Ordering::AcqRel);
                info!(%peer, id, "slave connected");
                let r = ha.clone().stream_to(stream).await;
                ha.slaves.fetch_sub(1, Ordering::AcqRel);
                info!(%peer, id, reason = %r.err().map_or_else(|| "closed".to_string(), |e| e.to_string()), "slave disconnected");
            });
        }
        drop(listener);
        streams.shutdown().await;
        self.slaves.store(0, Ordering::Release);
        debug!("HA listener closed");
    }

    async fn stream_to(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let st = self.role.get();
        let mut first = read_offset(&mut rd).await?;
        if first == HELLO_REQUEST {
            let hello = Hello {
                epoch: st.epoch,
                epochs: self.role.epochs(),
                max_offset: self.store.max_phy_offset(),
                min_offset: self.store.min_phy_offset(),
            };
            wr.write_all(&wire::encode_hello(&hello)?).await?;
            first = read_offset(&mut rd).await?;
        }
        let Ok(reported) = u64::try_from(first) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave reports offset {first}"),
            ));
        };
        let oldest = self.store.min_phy_offset();
        let start = if reported >= oldest {
            reported
        } else if reported == 0 {
            // A new slave: the bytes before the oldest file are gone; start there.
            info!(
                oldest,
                "new slave starts at the master's oldest CommitLog file"
            );
            oldest
        } else {
            warn!(
                reported,
                oldest,
                "slave's log ends before the master's oldest file; its store must be emptied to resync"
            );
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave at {reported} is behind the master's oldest file at {oldest}"),
            ));
        };
        if start > self.store.max_phy_offset() {
            // A slave ahead of its master holds a history the master does not: it must
            // truncate first (the hello told it where). Nothing it says counts.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("slave reports {start}, past the master's end"),
            ));
        }
        self.report(reported);
        // What this connection has streamed: a report past it is not believed, so a
        // confused or hostile peer cannot acknowledge SYNC_MASTER sends it never got.
        let sent = Arc::new(AtomicU64::new(start));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        // Reader: every 8 bytes is the slave's max offset.
        let reader = {
            let ha = Arc::clone(&self);
            let sent = Arc::clone(&sent);
            let epoch = st.epoch;
            tokio::spawn(async move {
                while let Ok(reported) = read_offset(&mut rd).await {
                    let off = u64::try_from(reported).unwrap_or(0);
                    let limit = sent.load(Ordering::Acquire);
                    if !ha.role.read(|r| r.is_master() && r.epoch == epoch) {
                        break;
                    }
                    if off > limit {
                        warn!(
                            reported = off,
                            streamed = limit,
                            "slave reported more than it was sent; closing"
                        );
                        break;
                    }
                    ha.report(off);
                }
                let _ = stop_tx.send(true);
            })
        };
        let mut role_rx = self.role.subscribe();
        let mut next = start;
        let mut out: Vec<u8> = Vec::with_capacity(12 + TRANSFER_BATCH);
        let mut last_heartbeat = tokio::time::Instant::now();
        let result = loop {
            if *stop_rx.borrow() {
                break Ok(());
            }
            if !self.role.read(|r| r.is_master() && r.epoch == st.epoch) {
                break Err(std::io::Error::other("role changed"));
            }
            // Registered before looking for data, so an append between the last read and
            // the wait still wakes this connection.
            let notified = self.new_data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut sent_any = false;
            for _ in 0..FRAMES_PER_ROUND {
                let Some(data) = self.store.read_raw(next, TRANSFER_BATCH) else {
                    break;
                };
                if data.is_empty() {
                    break;
                }
                // Raised before the write: the slave may answer before write_all returns.
                sent.store(next + data.len() as u64, Ordering::Release);
                // Header and body in one write: one segment on the wire with TCP_NODELAY.
                wire::encode_data_frame(next, &data, &mut out);
                if let Err(e) = wr.write_all(&out).await {
                    reader.abort();
                    return Err(e);
                }
                next += data.len() as u64;
                sent_any = true;
                last_heartbeat = tokio::time::Instant::now();
            }
            if sent_any {
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop_rx.changed() => {}
                _ = role_rx.changed() => {}
            }
            if last_heartbeat.elapsed() >= MASTER_HEARTBEAT {
                // Idle: a heartbeat frame (size 0) so the slave knows the master lives.
                last_heartbeat = tokio::time::Instant::now();
                if let Err(e) = wr.write_all(&wire::heartbeat(next)).await {
                    break Err(e);
                }
            }
        };
        reader.abort();
        result
    }
}
