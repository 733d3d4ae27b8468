//! The remoting server: one reader task and one writer task per connection, joined by
//! a bounded channel. Each request runs in its own task, so requests on a connection are
//! pipelined (a long-polling pull does not block the sends behind it) and responses go
//! out as they complete, matched by `opaque`.
//!
//! A malformed or oversized frame closes that connection with one log line; the server
//! keeps serving every other connection.
//!
//! Per-connection bounds, so one client cannot starve the others or grow memory without
//! end (`ServerConfig`):
//! - at most `max_in_flight_per_connection` requests run at once; past that a request is
//!   answered at once with SYSTEM_BUSY (as RocketMQ does when its queues are full);
//! - responses not yet written count against `max_pending_response_bytes`; while a
//!   connection is over that budget its frames are not read (a client that does not read
//!   its answers is paused, not buffered for);
//! - requests the handler calls heavy (large answers, e.g. GET_ALL_TOPIC_CONFIG) run one
//!   at a time per connection, each only once the connection is back under its budget;
//! - at most `max_running_per_connection` of a connection's requests are runnable at
//!   once: the reader waits for a turn before it starts the next request, and a request
//!   gives its turn back as soon as it waits on something (a held pull, a replication
//!   or flush wait). A client pipelining thousands of requests therefore has a handful
//!   of tasks in the scheduler's queues, not thousands ahead of everybody else's;
//! - control-plane requests (the handler's `is_control`: admin, queries, role
//!   changes) run at most `max_running_control` at once on the whole server, and each
//!   connection queues at most one for its turn, so the turns go round the connections
//!   (RocketMQ gives admin requests their own small executor for the same reason): a
//!   client flooding GET_BROKER_RUNTIME_INFO can take that share of the CPU, never the
//!   data path's; and while other connections' control requests wait, each turn is
//!   followed by as long idle as it ran (at most half of one worker when several
//!   connections flood; one connection alone is never held back);
//! - responses queued on all connections together count against
//!   `max_total_pending_response_bytes`; past it, every connection holding more than
//!   its fair share (a sixteenth of its own budget) pauses its reads too;
//! - when a connection closes, its requests still running are cancelled.
//!
//! So a connection holds at most about `max_pending_response_bytes` + one heavy
//! response + `max_in_flight_per_connection` light responses.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use super::codec::{decode_frame, encode_head};
use super::codes::response;
use super::command::{RemotingCommand, FLAG_ONEWAY, FLAG_RESPONSE};

/// What a handler returns: the response, or `None` for none (oneway, or a handler
/// that answers later through the connection).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<RemotingCommand>> + Send>>;

/// Serves requests.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. The response's opaque and flag are set by the server.
    fn handle(self: Arc<Self>, conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture;
    /// Called once when a connection opens.
    fn on_open(&self, _conn: &Arc<Connection>) {}
    /// Called once when a connection closes.
    fn on_close(&self, _conn: &Arc<Connection>) {}
    /// Whether requests with `code` produce large answers: they run one at a time per
    /// connection, and only while the connection is under its response budget.
    fn is_heavy(&self, _code: i32) -> bool {
        false
    }
    /// Whether requests with `code` are control-plane work (admin, queries, role
    /// changes) rather than the data path (sends, pulls, heartbeats, offsets): at most
    /// `max_running_control` of them run at once on the server, one per connection at
    /// a time, taken in arrival order across connections.
    fn is_control(&self, _code: i32) -> bool {
        false
    }
}

/// Bytes a queued command holds until the writer has sent it (an estimate of the
/// encoded header plus the body).
fn response_cost(cmd: &RemotingCommand) -> usize {
    let ext: usize = cmd
        .ext_fields
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    64 + ext + cmd.remark.as_ref().map_or(0, String::len) + cmd.body_len()
}

/// What a connection's reader, request tasks and writer share to bound its work.
#[derive(Debug)]
struct Flow {
    /// Response bytes queued or being written.
    pending: AtomicUsize,
    /// Signalled whenever the writer drains a response.
    drained: Notify,
    /// Heavy requests of this connection, one at a time.
    heavy: Semaphore,
    /// Control-plane requests of this connection waiting for (or holding) the server's
    /// control turn: one at a time.
    control: Semaphore,
    /// Requests running now.
    in_flight: AtomicUsize,
    /// Signalled when `in_flight` drops to 0.
    idle: Notify,
    /// Set when the connection closes: its running requests stop.
    cancel: tokio::sync::watch::Sender<bool>,
    budget: usize,
    /// What every connection of the server has queued, and the bound on it.
    stats: Arc<ServerStats>,
    total_budget: usize,
}

/// A command on its way to the writer, with the bytes it counts against the budget
/// (computed once, when it is queued).
#[derive(Debug)]
struct Queued {
    cmd: RemotingCommand,
    cost: usize,
}

impl Flow {
    /// Counts `cmd` against the budget; the writer uncounts it when it takes it.
    fn admit(&self, cmd: RemotingCommand) -> Queued {
        let cost = response_cost(&cmd);
        self.pending.fetch_add(cost, Ordering::AcqRel);
        self.stats
            .pending_response_bytes
            .fetch_add(cost as u64, Ordering::AcqRel);
        Queued { cmd, cost }
    }

    fn drain(&self, cost: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(cost))
            });
        let _ = self.stats.pending_response_bytes.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |p| Some(p.saturating_sub(cost as u64)),
        );
        self.drained.notify_waiters();
    }

    fn over_budget(&self) -> bool {
        let own = self.pending.load(Ordering::Acquire);
        own > self.budget
            || (own > self.budget / 16
                && self.stats.pending_response_bytes.load(Ordering::Acquire)
                    > self.total_budget as u64)
    }

    /// Waits until the queued responses fit the budget again.
    async fn under_budget(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if !self.over_budget() {
                return;
            }
            drained.await;
        }
    }

    /// Waits until no request of the connection runs.
    async fn all_done(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Runs `work` holding `turn` (see the module notes) until the first time it waits on
/// something; returns its output, and the turn if it never waited.
async fn turn_until_wait<F: Future, T>(work: F, turn: T) -> (F::Output, Option<T>) {
    let mut work = std::pin::pin!(work);
    let mut turn = Some(turn);
    let out = std::future::poll_fn(|cx| {
        let r = work.as_mut().poll(cx);
        if r.is_pending() {
            turn = None;
        }
        r
    })
    .await;
    (out, turn)
}

/// Decrements the in-flight count when a request task ends, however it ends.
struct InFlight(Arc<Flow>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// One accepted connection, as handlers see it.
#[derive(Debug)]
pub struct Connection {
    /// Process-unique id.
    pub id: u64,
    /// Remote address.
    pub peer: SocketAddr,
    tx: mpsc::Sender<Queued>,
    next_opaque: AtomicI32,
    closed: AtomicBool,
    flow: Arc<Flow>,
    /// Requests sent to the peer whose answers are awaited, by opaque.
    pending: std::sync::Mutex<HashMap<i32, tokio::sync::oneshot::Sender<RemotingCommand>>>,
}

/// Why a request to a client got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The connection closed or its queue is full.
    #[error("the client's connection is closed or busy")]
    Unavailable,
    /// No answer within the timeout.
    #[error("the client did not answer in time")]
    Timeout,
}

impl Connection {
    /// Sends a oneway request to the peer (e.g. NOTIFY_CONSUMER_IDS_CHANGED); `false`
    /// when the connection is closed or its queue is full.
    pub fn send_oneway(&self, mut cmd: RemotingCommand) -> bool {
        cmd.flag |= FLAG_ONEWAY;
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(self.flow.admit(cmd)) {
            Ok(()) => true,
            Err(e) => {
                self.flow.drain(e.into_inner().cost);
                false
            }
        }
    }

    /// Sends a request to the peer and waits for its answer (e.g.
    /// PUSH_REPLY_MESSAGE_TO_CLIENT), at most `timeout`.
    ///
    /// # Errors
    /// [`InvokeError`] when it cannot be sent or is not answered in time.
    pub async fn invoke(
        &self,
        mut cmd: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, InvokeError> {
        cmd.flag &= !(FLAG_ONEWAY | FLAG_RESPONSE);
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        let (done, answer) = tokio::sync::oneshot::channel();
        crate::sync::lock(&self.pending).insert(opaque, done);
        if let Err(e) = self.tx.try_send(self.flow.admit(cmd)) {
            self.flow.drain(e.into_inner().cost);
            crate::sync::lock(&self.pending).remove(&opaque);
            return Err(InvokeError::Unavailable);
        }
        let r = tokio::time::timeout(timeout, answer).await;
        crate::sync::lock(&self.pending).remove(&opaque);
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(InvokeError::Unavailable),
            Err(_) => Err(InvokeError::Timeout),
        }
    }

    /// Hands a peer's answer to the request waiting for it, if any.
    fn answered(&self, resp: RemotingCommand) {
        if let Some(done) = crate::sync::lock(&self.pending).remove(&resp.opaque) {
            let _ = done.send(resp);
        }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted frame.
    pub max_frame: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Requests running at once on one connection; more are answered SYSTEM_BUSY.
    pub max_in_flight_per_connection: usize,
    /// Response bytes one connection may have queued before its reads pause.
    pub max_pending_response_bytes: usize,
    /// Response bytes all connections together may have queued; past it, connections
    /// holding more than a sixteenth of their own budget pause their reads.
    pub max_total_pending_response_bytes: usize,
    /// Requests of one connection runnable at once (a waiting request does not count).
    pub max_running_per_connection: usize,
    /// Control-plane requests (`RequestHandler::is_control`) running at once on the
    /// server.
    pub max_running_control: usize,
    /// How long a shutdown waits for requests already read to be answered.
    pub shutdown_grace: Duration,
    /// Connections from one IP address at once; more are closed at accept.
    pub max_connections_per_address: usize,
    /// `serverChannelMaxIdleTimeSeconds` (120 s): a connection that sent nothing for
    /// this long and has no request running is closed.
    pub idle_timeout: Duration,
    /// A frame begun must be complete within this long, or the connection is closed
    /// (a client trickling a 16 MiB frame would otherwise pin its buffer forever).
    pub frame_deadline: Duration,
    /// What the limits did (shared by every connection of this server).
    pub stats: Arc<ServerStats>,
    /// TLS on this port (`tls.server.mode` and its files); `None`: plain only.
    pub tls: Option<Arc<super::tls::TlsServer>>,
}

/// Counts of what the server's limits did, for metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections closed at accept: too many in total or from one address.
    pub refused_connections: AtomicU64,
    /// Connections closed for being idle.
    pub idle_closed: AtomicU64,
    /// Connections closed because a frame did not complete in time.
    pub slow_frames: AtomicU64,
    /// Requests answered SYSTEM_BUSY for too many in flight on their connection.
    pub busy_answers: AtomicU64,
    /// Response bytes queued on every connection now.
    pub pending_response_bytes: AtomicU64,
    last_warn_ms: AtomicU64,
    /// Connections closed since the allocator was last asked to return free memory.
    closed_since_trim: AtomicU64,
    /// Control-plane requests waiting for the server's control turn now (at most one
    /// per connection).
    control_waiting: AtomicUsize,
}

/// Counts one waiter for as long as it lives (a cancelled wait uncounts itself).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections that close between two requests to the allocator to give freed memory
/// back to the system.
const TRIM_EVERY_CLOSES: u64 = 1024;

impl ServerStats {
    /// Counts a closed connection; every [`TRIM_EVERY_CLOSES`] closes, asks the
    /// allocator (glibc's, which keeps freed memory in its arenas otherwise) to return
    /// what is free, on a blocking thread: thousands of closed connections no longer
    /// leave their buffers' memory held by the process.
    fn connection_closed(&self) {
        let n = self.closed_since_trim.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= TRIM_EVERY_CLOSES
            && self
                .closed_since_trim
                .compare_exchange(n, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            tokio::task::spawn_blocking(|| {
                // SAFETY: malloc_trim takes no pointers; it only walks glibc's own
                // arenas under their locks.
                unsafe { libc::malloc_trim(0) };
            });
        }
    }

    /// Counts a connection closed at accept by the limit `what`.
    fn refused(&self, what: &str, peer: &SocketAddr) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
        self.warn_limited(what, peer);
    }

    /// A warning at most every 10 s (floods must not flood the log).
    fn warn_limited(&self, what: &str, peer: &SocketAddr) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            warn!(%peer, limit = what, refused = self.refused_connections.load(Ordering::Relaxed), idle = self.idle_closed.load(Ordering::Relaxed), slow = self.slow_frames.load(Ordering::Relaxed), busy = self.busy_answers.load(Ordering::Relaxed), "connection limit hit (this warning repeats at most every 10 s)");
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: super::DEFAULT_MAX_FRAME,
            max_connections: 16_384,
            max_in_flight_per_connection: 4096,
            max_pending_response_bytes: 16 * 1024 * 1024,
            max_total_pending_response_bytes: 256 * 1024 * 1024,
            max_running_per_connection: 16,
            max_running_control: 1,
            shutdown_grace: Duration::from_secs(10),
            max_connections_per_address: 4096,
            idle_timeout: Duration::from_secs(120),
            frame_deadline: Duration::from_secs(60),
            stats: Arc::default(),
            tls: None,
        }
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

/// Whether this process may take one more descriptor for a connection and still keep a
/// reserve (a sixteenth of its soft `RLIMIT_NOFILE`, at least 32) for its own files.
/// The open count is read from `/proc/self/fd` at most every 100 ms; connections taken
/// in between are added to it.
fn fd_headroom() -> bool {
    struct Seen {
        at: std::time::Instant,
        open: usize,
        since: usize,
    }
    static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    // The limit is read every time (it can change at run time, `prlimit`); the open
    // count, which costs a directory read, at most every 100 ms.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return true;
    }
    let soft = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let stale = seen
        .as_ref()
        .is_none_or(|s| s.at.elapsed() >= Duration::from_millis(100));
    if stale {
        let Ok(open) = std::fs::read_dir("/proc/self/fd").map(Iterator::count) else {
            return true;
        };
        *seen = Some(Seen {
            at: std::time::Instant::now(),
            open,
            since: 0,
        });
    }
    let Some(s) = seen.as_mut() else {
        return true;
    };
    let reserve = (soft / 16).max(32);
    if s.open + s.since + reserve >= soft {
        return false;
    }
    s.since += 1;
    true
}

/// Accepts connections on `listener` until `shutdown` resolves; then stops accepting,
/// tells every connection to stop reading, lets the requests already read finish and
/// their answers go out (at most `shutdown_grace`), and returns once every connection
/// has closed. The listener is dropped on return: nothing outlives `serve`.
pub async fn serve<H: RequestHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let control_turns = Arc::new(Semaphore::new(config.max_running_control.max(1)));
    let per_address: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        // At the total limit, a new connection is accepted and closed at once (rather
        // than left in the backlog, where it would hold the client without an answer).
        let permit = Arc::clone(&permits).try_acquire_owned().ok();
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let Some(permit) = permit else {
                    config.stats.refused("maxConnections", &peer);
                    drop(stream);
                    continue;
                };
                if !fd_headroom() {
                    // Keep descriptors for the store's own files (a checkpoint, a new
                    // segment): connections are refused first.
                    config.stats.refused("file descriptor reserve", &peer);
                    drop(stream);
                    continue;
                }
                let ip = peer.ip();
                {
                    let mut m = per_address.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(ip).or_insert(0);
                    if *n >= config.max_connections_per_address {
                        drop(m);
                        config.stats.refused("maxConnectionsPerAddress", &peer);
                        drop(stream);
                        continue;
                    }
                    *n += 1;
                }
                let per_address = Arc::clone(&per_address);
                let _ = stream.set_nodelay(true);
                let handler = Arc::clone(&handler);
                let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
                let limits = config.clone();
                let stop = stop_rx.clone();
                let control = Arc::clone(&control_turns);
                connections.spawn(
                    async move {
                        let deadline = limits.frame_deadline;
                        match super::tls::accept(limits.tls.as_deref(), stream, deadline, deadline)
                            .await
                        {
                            Ok(super::tls::Accepted::Plain(s)) => {
                                let (r, w) = s.into_split();
                                run_connection(r, w, peer, id, handler, &limits, control, stop)
                                    .await;
                            }
                            Ok(super::tls::Accepted::Tls(s)) => {
                                let (r, w) = tokio::io::split(*s);
                                run_connection(r, w, peer, id, handler, &limits, control, stop)
                                    .await;
                            }
                            Err(e) => {
                                debug!(%peer, error = %e, "TLS handshake failed; connection closed")
                            }
                        }
                        drop(permit);
                        {
                            let mut m = per_address.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(n) = m.get_mut(&ip) {
                                *n -= 1;
                                if *n == 0 {
                                    m.remove(&ip);
                                }
                            }
                        }
                        limits.stats.connection_closed();
                    }
                    .instrument(tracing::debug_span!("conn", %peer, conn_id = id)),
                );
            }
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = connections.len(),
            "connections still busy after the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_connection<H: RequestHandler, R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    id: u64,
    handler: Arc<H>,
    limits: &ServerConfig,
    control_turns: Arc<Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    R: tokio::io::AsyncRead + Unpin + Send,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Queued>(4096);
    let flow = Arc::new(Flow {
        pending: AtomicUsize::new(0),
        drained: Notify::new(),
        heavy: Semaphore::new(1),
        control: Semaphore::new(1),
        in_flight: AtomicUsize::new(0),
        idle: Notify::new(),
        cancel: tokio::sync::watch::channel(false).0,
        budget: limits.max_pending_response_bytes,
        stats: Arc::clone(&limits.stats),
        total_budget: limits.max_total_pending_response_bytes,
    });
    let turns = Arc::new(Semaphore::new(limits.max_running_per_connection.max(1)));
    let control_queue = Arc::new(Semaphore::new(CONTROL_QUEUE));
    let conn = Arc::new(Connection {
        id,
        peer,
        tx: tx.clone(),
        next_opaque: AtomicI32::new(1),
        closed: AtomicBool::new(false),
        flow: Arc::clone(&flow),
        pending: std::sync::Mutex::new(HashMap::new()),
    });
    debug!("connection opened");
    handler.on_open(&conn);
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel();
    let mut writer_task = tokio::spawn(write_loop(writer, rx, Arc::clone(&flow), finish_rx));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut graceful = false;
    let mut writer_done = false;
    let mut last_read = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    'read: loop {
        loop {
            match decode_frame(&mut buf, limits.max_frame) {
                Ok(Some(cmd)) => {
                    // A frame completed: the deadline runs from the start of the next
                    // one (a busy connection whose reads always end mid-frame is not slow).
                    partial_since = None;
                    if cmd.flag & FLAG_RESPONSE != 0 {
                        // A client's answer to a request we sent.
                        conn.answered(cmd);
                        continue;
                    }
                    let (opaque, oneway, code) = (cmd.opaque, cmd.is_oneway(), cmd.code);
                    if flow.in_flight.load(Ordering::Acquire) >= limits.max_in_flight_per_connection
                    {
                        debug!(code, "too many requests in flight; answering SYSTEM_BUSY");
                        limits.stats.busy_answers.fetch_add(1, Ordering::Relaxed);
                        limits.stats.warn_limited("maxInFlightPerConnection", &peer);
                        if !oneway {
                            let busy = RemotingCommand::response_to(&cmd, response::SYSTEM_BUSY)
                                .with_remark(format!(
                                    "[OVERLOAD]system busy, {} requests in flight on this connection, try later",
                                    limits.max_in_flight_per_connection
                                ));
                            if tx.send(flow.admit(busy)).await.is_err() {
                                break 'read;
                            }
                        }
                        continue;
                    }
                    let control = handler.is_control(code).then(|| Arc::clone(&control_turns));
                    // A connection with CONTROL_QUEUE control requests waiting is not
                    // read further until one ends (its flood stays in its socket); then
                    // it waits for its turn to run one more request (the semaphores are
                    // never closed; their permits come back as requests run or wait).
                    // The wait also ends when the server stops or the peer is gone (its
                    // answers can no longer be written): the reader is not reading then.
                    let waited = tokio::select! {
                        p = async {
                            let queued = match control {
                                Some(_) => Some(Arc::clone(&control_queue).acquire_owned().await?),
                                None => None,
                            };
                            let turn = Arc::clone(&turns).acquire_owned().await?;
                            Ok::<_, tokio::sync::AcquireError>((queued, turn))
                        } => p.ok(),
                        _ = &mut writer_task => {
                            writer_done = true;
                            None
                        }
                        _ = stop.wait_for(|s| *s) => {
                            graceful = true;
                            None
                        }
                    };
                    let Some((queued, turn)) = waited else {
                        break 'read;
                    };
                    flow.in_flight.fetch_add(1, Ordering::AcqRel);
                    let guard = InFlight(Arc::clone(&flow));
                    let handler = Arc::clone(&handler);
                    let conn2 = Arc::clone(&conn);
                    let tx = tx.clone();
                    let flow2 = Arc::clone(&flow);
                    let heavy = handler.is_heavy(code);
                    // Stopped when the connection closes (`cancel`), counted in `in_flight`.
                    let mut cancel = flow.cancel.subscribe();
                    tokio::spawn(
                        async move {
                            let _guard = guard;
                            let _queued = queued;
                            let work = turn_until_wait(
                                async {
                                    let _turn = if heavy {
                                        let turn = flow2.heavy.acquire().await.ok();
                                        flow2.under_budget().await;
                                        turn
                                    } else {
                                        None
                                    };
                                    let (resp, held) = match &control {
                                        // One of this connection's control requests at a
                                        // time queues for the server's control turn, and
                                        // holds both until it first waits or ends.
                                        Some(server) => {
                                            let mine = flow2.control.acquire().await.ok();
                                            // Counted while it waits for the server's
                                            // turn: other connections' requests only
                                            // (this connection's next one waits for
                                            // `mine`).
                                            let waiting =
                                                Waiting::new(&flow2.stats.control_waiting);
                                            let turn = server.acquire().await.ok();
                                            drop(waiting);
                                            let started = std::time::Instant::now();
                                            let (resp, held) = turn_until_wait(
                                                handler.handle(conn2, cmd),
                                                (mine, turn),
                                            )
                                            .await;
                                            (resp, held.map(|t| (t, started.elapsed())))
                                        }
                                        None => (handler.handle(conn2, cmd).await, None),
                                    };
                                    if let (false, Some(mut r)) = (oneway, resp) {
                                        r.opaque = opaque;
                                        r.flag |= FLAG_RESPONSE;
                                        if let Err(e) = tx.send(flow2.admit(r)).await {
                                            flow2.drain(e.0.cost);
                                        }
                                    }
                                    // While other connections' control requests
                                    // wait, the control plane runs at most half the
                                    // time: the turn stays idle as long as the
                                    // request ran (its answer is already on its way).
                                    // One connection alone, pipelining or not, is
                                    // never held back.
                                    if let Some((turn, busy)) = held {
                                        if flow2.stats.control_waiting.load(Ordering::Acquire) > 0 {
                                            tokio::time::sleep(busy).await;
                                        }
                                        drop(turn);
                                    }
                                },
                                turn,
                            );
                            tokio::select! {
                                _ = work => {}
                                _ = cancel.wait_for(|c| *c) => {}
                            }
                        }
                        .instrument(tracing::trace_span!("request", code, opaque)),
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "bad frame; closing the connection");
                    break 'read;
                }
            }
        }
        // A client that does not read its answers: stop reading its requests until the
        // writer has drained the backlog.
        if flow.over_budget() {
            // Our own pause: the time it takes does not count against the client's frame.
            partial_since = None;
            tokio::select! {
                _ = flow.under_budget() => {}
                // The writer gave up (the peer is gone): nothing will drain.
                _ = &mut writer_task => {
                    writer_done = true;
                    break 'read;
                }
                _ = stop.wait_for(|s| *s) => {
                    graceful = true;
                    break 'read;
                }
            }
        }
        // Idle (nothing read, nothing running) and slow-frame deadlines.
        let now = tokio::time::Instant::now();
        if buf.is_empty() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(now);
        }
        let idle_at = last_read + limits.idle_timeout;
        let wake = partial_since.map_or(idle_at, |p| idle_at.min(p + limits.frame_deadline));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if partial_since.is_some_and(|p| now >= p + limits.frame_deadline) {
                    limits.stats.slow_frames.fetch_add(1, Ordering::Relaxed);
                    limits.stats.warn_limited("frame deadline", &peer);
                    debug!(buffered = buf.len(), "frame not completed in time; closing");
                    break;
                }
                if now >= idle_at {
                    if flow.in_flight.load(Ordering::Acquire) > 0 {
                        // A request is running (a held pull): not idle.
                        last_read = now;
                    } else {
                        limits.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        debug!("idle; closing");
                        break;
                    }
                }
            }
            r = reader.read_buf(&mut buf) => match r {
                Ok(0) => break,
                Ok(_) => last_read = tokio::time::Instant::now(),
                Err(e) => {
                    debug!(error = %e, "read failed");
                    break;
                }
            },
            _ = stop.wait_for(|s| *s) => {
                graceful = true;
                break;
            }
        }
    }
    if graceful {
        // Server shutdown: the requests already read finish and their answers are
        // written (`serve` bounds how long this may take).
        flow.all_done().await;
        drop(tx);
        let _ = finish_tx.send(());
        if !writer_done {
            let _ = writer_task.await;
        }
        conn.closed.store(true, Ordering::Release);
        handler.on_close(&conn);
        drop(conn);
        debug!("connection closed at shutdown");
        return;
    }
    conn.closed.store(true, Ordering::Release);
    flow.cancel.send_replace(true);
    handler.on_close(&conn);
    drop(tx);
    drop(conn);
    writer_task.abort();
    debug!("connection closed");
}

/// Control-plane requests one connection may have waiting for the server's control
/// turn before its reads pause.
const CONTROL_QUEUE: usize = 64;

/// Small bodies are copied into one buffer with their headers (one syscall for many
/// responses); large ones (pull responses) are written from their own buffers.
const COALESCE_BODY: usize = 16 * 1024;

/// Writes queued commands until every sender is gone, or until `finish` fires and the
/// queue is empty (shutdown: other holders of the connection may keep a sender).
async fn write_loop(
    mut w: impl tokio::io::AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Queued>,
    flow: Arc<Flow>,
    mut finish: tokio::sync::oneshot::Receiver<()>,
) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut finishing = false;
    loop {
        let cmd = if finishing {
            match rx.try_recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = &mut finish => {
                    finishing = true;
                    continue;
                }
            }
        };
        let mut next = Some(cmd);
        while let Some(Queued { cmd, cost }) = next.take() {
            // Counted as drained once it leaves the queue: what is still referenced below
            // is at most one response, or what fits the coalescing buffer.
            flow.drain(cost);
            let head = match encode_head(&cmd) {
                Ok(h) => h,
                Err(e) => {
                    warn!(error = %e, code = cmd.code, "dropping a response that cannot be encoded");
                    next = rx.try_recv().ok();
                    continue;
                }
            };
            out.put_slice(&head);
            if cmd.body_len() <= COALESCE_BODY {
                for p in &cmd.body {
                    out.put_slice(p);
                }
            } else {
                if w.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                for p in &cmd.body {
                    if w.write_all(p).await.is_err() {
                        return;
                    }
                }
            }
            if out.len() >= 256 * 1024 {
                if w.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
    let _ = w.shutdown().await;
    debug!("writer finished");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codec::encode_frame;
    use tokio::net::TcpStream;

    /// Answers code 1 at once, and never answers code 2 (until cancelled): it counts
    /// started and dropped (finished or cancelled) requests.
    #[derive(Default)]
    struct Probe {
        started: AtomicUsize,
        dropped: Arc<AtomicUsize>,
    }

    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    impl RequestHandler for Probe {
        fn handle(self: Arc<Self>, _conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture {
            self.started.fetch_add(1, Ordering::AcqRel);
            let guard = Dropped(Arc::clone(&self.dropped));
            Box::pin(async move {
                let _guard = guard;
                if req.code == 2 {
                    std::future::pending::<()>().await;
                }
                Some(RemotingCommand::response_to(&req, response::SUCCESS))
            })
        }
    }

    async fn start(config: ServerConfig) -> (Arc<Probe>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = Arc::new(Probe::default());
        tokio::spawn(serve(
            listener,
            Arc::clone(&probe),
            config,
            std::future::pending(),
        ));
        (probe, addr)
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn frame(code: i32, opaque: i32) -> Vec<u8> {
        let mut r = RemotingCommand::request(code);
        r.opaque = opaque;
        encode_frame(&r).unwrap().to_vec()
    }

    /// Every request is control-plane work that keeps its worker busy for 1 ms; it
    /// logs which connection's request ran (by code) and the most that ran at once.
    #[derive(Default)]
    struct Busy {
        ran: std::sync::Mutex<Vec<i32>>,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl RequestHandler for Busy {
        fn handle(self: Arc<Self>, _conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture {
            let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
            self.most.fetch_max(now, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(1));
            crate::sync::lock(&self.ran).push(req.code);
            self.running.fetch_sub(1, Ordering::AcqRel);
            Box::pin(async move { Some(RemotingCommand::response_to(&req, response::SUCCESS)) })
        }

        fn is_control(&self, _code: i32) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_control_flood_takes_turns_with_other_connections_and_one_worker_at_most() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let busy = Arc::new(Busy::default());
        tokio::spawn(serve(
            listener,
            Arc::clone(&busy),
            ServerConfig::default(),
            std::future::pending(),
        ));
        // Two flooders pipeline 1,000 requests each (code 3) and read no answers.
        let mut flooders = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let flood: Vec<u8> = (0..1000).flat_map(|i| frame(3, i)).collect();
            s.write_all(&flood).await.unwrap();
            flooders.push(s);
        }
        until("the flood under way", || {
            crate::sync::lock(&busy.ran).len() >= 20
        })
        .await;
        // A third connection's single request (code 4) is answered after a few of the
        // flood's, not after all of them.
        let mut other = TcpStream::connect(addr).await.unwrap();
        other.write_all(&frame(4, 1)).await.unwrap();
        let mut answer = [0u8; 4];
        other.read_exact(&mut answer).await.unwrap();
        let ran = crate::sync::lock(&busy.ran).clone();
        let at = ran.iter().position(|c| *c == 4).unwrap();
        let before_it = ran[..at].len();
        let after_flood_started = ran.len();
        assert!(
            before_it < 200,
            "the other connection's request ran after {before_it} flood requests (of {after_flood_started} run so far)"
        );
        assert_eq!(
            busy.most.load(Ordering::Acquire),
            1,
            "control requests ran side by side"
        );
    }

    #[tokio::test]
    async fn a_closed_connections_requests_are_cancelled() {
        let (probe, addr) = start(ServerConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for opaque in 0..3 {
            s.write_all(&frame(2, opaque)).await.unwrap();
        }
        until("three requests running", || {
            probe.started.load(Ordering::Acquire) == 3
        })
        .await;
        assert_eq!(probe.dropped.load(Ordering::Acquire), 0);
        drop(s);
        until("the closed connection's requests cancelled", || {
            probe.dropped.load(Ordering::Acquire) == 3
        })
        .await;
    }

    #[tokio::test]
    async fn past_the_in_flight_bound_requests_are_answered_system_busy() {
        let config = ServerConfig {
            max_in_flight_per_connection: 2,
            ..ServerConfig::default()
        };
        let (probe, addr) = start(config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&frame(2, 1)).await.unwrap();
        s.write_all(&frame(2, 2)).await.unwrap();
        until("two requests running", || {
            probe.started.load(Ordering::Acquire) == 2
        })
        .await;
        s.write_all(&frame(1, 3)).await.unwrap();
        let mut buf = BytesMut::new();
        let answer = loop {
            if let Some(cmd) = decode_frame(&mut buf, 1 << 20).unwrap() {
                break cmd;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(n > 0, "connection closed");
        };
        assert_eq!((answer.opaque, answer.code), (3, response::SYSTEM_BUSY));
        assert!(answer.remark.unwrap_or_default().contains("in flight"));
        assert_eq!(probe.started.load(Ordering::Acquire), 2);
    }
}
