//! The remoting server: one reader task and one writer task per connection, joined by
//! a bounded channel. Each request runs in its own task, so requests on a connection are
//! pipelined (a long-polling pull does not block the sends behind it) and responses go
//! out as they complete, matched by `opaque`.
//!
//! A malformed or oversized frame closes that connection with one log line; the server
//! keeps serving every other connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn, Instrument};

use super::codec::{decode_frame, encode_head};
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
}

/// One accepted connection, as handlers see it.
#[derive(Debug)]
pub struct Connection {
    /// Process-unique id.
    pub id: u64,
    /// Remote address.
    pub peer: SocketAddr,
    tx: mpsc::Sender<RemotingCommand>,
    next_opaque: AtomicI32,
    closed: AtomicBool,
}

impl Connection {
    /// Sends a oneway request to the peer (e.g. NOTIFY_CONSUMER_IDS_CHANGED); `false`
    /// when the connection is closed or its queue is full.
    pub fn send_oneway(&self, mut cmd: RemotingCommand) -> bool {
        cmd.flag |= FLAG_ONEWAY;
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(cmd).is_ok()
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: super::DEFAULT_MAX_FRAME,
            max_connections: 16_384,
        }
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts connections on `listener` until `shutdown` resolves.
pub async fn serve<H: RequestHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                let handler = Arc::clone(&handler);
                let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
                let max_frame = config.max_frame;
                tokio::spawn(
                    async move {
                        run_connection(stream, peer, id, handler, max_frame).await;
                        drop(permit);
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
}

async fn run_connection<H: RequestHandler>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    handler: Arc<H>,
    max_frame: usize,
) {
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<RemotingCommand>(4096);
    let conn = Arc::new(Connection {
        id,
        peer,
        tx: tx.clone(),
        next_opaque: AtomicI32::new(1),
        closed: AtomicBool::new(false),
    });
    debug!("connection opened");
    handler.on_open(&conn);
    let writer_task = tokio::spawn(write_loop(writer, rx));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        loop {
            match decode_frame(&mut buf, max_frame) {
                Ok(Some(cmd)) => {
                    if cmd.flag & FLAG_RESPONSE != 0 {
                        // A client's answer to a request we sent; nothing waits for it.
                        continue;
                    }
                    let handler = Arc::clone(&handler);
                    let conn2 = Arc::clone(&conn);
                    let tx = tx.clone();
                    let (opaque, oneway, code) = (cmd.opaque, cmd.is_oneway(), cmd.code);
                    tokio::spawn(
                        async move {
                            let resp = handler.handle(conn2, cmd).await;
                            if let (false, Some(mut r)) = (oneway, resp) {
                                r.opaque = opaque;
                                r.flag |= FLAG_RESPONSE;
                                let _ = tx.send(r).await;
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
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "read failed");
                break;
            }
        }
    }
    conn.closed.store(true, Ordering::Release);
    handler.on_close(&conn);
    drop(tx);
    drop(conn);
    writer_task.abort();
    debug!("connection closed");
}

/// Small bodies are copied into one buffer with their headers (one syscall for many
/// responses); large ones (pull responses) are written from their own buffers.
const COALESCE_BODY: usize = 16 * 1024;

async fn write_loop(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<RemotingCommand>,
) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(cmd) = rx.recv().await {
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
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
