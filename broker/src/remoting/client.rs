//! A small async remoting client: one pooled connection per address, requests matched
//! to responses by `opaque`, per-request timeouts. Used by the broker (to the name
//! server), `admin`, `bench` and tests.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::codec::{decode_frame, encode_head};
use super::command::{RemotingCommand, FLAG_ONEWAY, FLAG_RESPONSE};
use super::{RemotingError, DEFAULT_MAX_FRAME};

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>>;

#[derive(Debug)]
struct ClientConn {
    tx: mpsc::Sender<RemotingCommand>,
    pending: Pending,
    closed: Arc<AtomicBool>,
}

/// The client.
#[derive(Debug, Default)]
pub struct RemotingClient {
    conns: Mutex<HashMap<String, Arc<ClientConn>>>,
    next_opaque: AtomicI32,
    signer: Option<crate::auth::Credentials>,
    tls: Option<super::tls::TlsClient>,
}

impl RemotingClient {
    /// A client with no connections yet.
    pub fn new() -> Self {
        RemotingClient::default()
    }

    /// A client that signs every request with `creds` (RocketMQ's `AclClientRPCHook`).
    #[must_use]
    pub fn signing(creds: crate::auth::Credentials) -> Self {
        RemotingClient {
            signer: Some(creds),
            ..RemotingClient::default()
        }
    }

    /// This client, speaking TLS (`tls.enable`) to every server.
    #[must_use]
    pub fn with_tls(mut self, tls: super::tls::TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    async fn conn(&self, addr: &str) -> Result<Arc<ClientConn>, RemotingError> {
        if let Some(c) = lock(&self.conns).get(addr) {
            if !c.closed.load(Ordering::Acquire) {
                return Ok(Arc::clone(c));
            }
        }
        let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
            .await
            .map_err(|_| RemotingError::Timeout(3000))??;
        let _ = stream.set_nodelay(true);
        let c = match &self.tls {
            None => {
                let (r, w) = stream.into_split();
                spawn_io(r, w, addr)
            }
            Some(tls) => {
                let s = tokio::time::timeout(Duration::from_secs(3), tls.connect(addr, stream))
                    .await
                    .map_err(|_| RemotingError::Timeout(3000))??;
                let (r, w) = tokio::io::split(s);
                spawn_io(r, w, addr)
            }
        };
        lock(&self.conns).insert(addr.to_owned(), Arc::clone(&c));
        Ok(c)
    }
}

/// The connection's writer and reader tasks over `r` and `w`.
fn spawn_io<R, W>(mut r: R, mut w: W, addr: &str) -> Arc<ClientConn>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    {
        let (tx, mut rx) = mpsc::channel::<RemotingCommand>(1024);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let Ok(head) = encode_head(&cmd) else {
                    continue;
                };
                if w.write_all(&head).await.is_err() {
                    return;
                }
                for p in &cmd.body {
                    if w.write_all(p).await.is_err() {
                        return;
                    }
                }
            }
        });
        {
            let pending = Arc::clone(&pending);
            let closed = Arc::clone(&closed);
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                'outer: loop {
                    loop {
                        match decode_frame(&mut buf, DEFAULT_MAX_FRAME) {
                            Ok(Some(cmd)) if cmd.flag & FLAG_RESPONSE != 0 => {
                                if let Some(s) = lock(&pending).remove(&cmd.opaque) {
                                    let _ = s.send(cmd);
                                }
                            }
                            // Requests from the server (e.g. NOTIFY_CONSUMER_IDS_CHANGED).
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                debug!(%addr, error = %e, "bad frame from server");
                                break 'outer;
                            }
                        }
                    }
                    match r.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                closed.store(true, Ordering::Release);
                lock(&pending).clear();
            });
        }
        Arc::new(ClientConn {
            tx,
            pending,
            closed,
        })
    }
}

impl RemotingClient {
    /// Sends a request and waits for its response.
    ///
    /// # Errors
    /// Connection failures, [`RemotingError::Timeout`], [`RemotingError::Closed`].
    pub async fn invoke(
        &self,
        addr: &str,
        mut cmd: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let conn = self.conn(addr).await?;
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        cmd.flag &= !FLAG_RESPONSE;
        if let Some(s) = &self.signer {
            s.sign(&mut cmd);
        }
        let (s, r) = oneshot::channel();
        lock(&conn.pending).insert(opaque, s);
        if conn.tx.send(cmd).await.is_err() {
            lock(&conn.pending).remove(&opaque);
            return Err(RemotingError::Closed);
        }
        match tokio::time::timeout(timeout, r).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(RemotingError::Closed),
            Err(_) => {
                lock(&conn.pending).remove(&opaque);
                Err(RemotingError::Timeout(timeout.as_millis() as u64))
            }
        }
    }

    /// Sends a request that expects no response.
    ///
    /// # Errors
    /// Connection failures, [`RemotingError::Closed`].
    pub async fn invoke_oneway(
        &self,
        addr: &str,
        mut cmd: RemotingCommand,
    ) -> Result<(), RemotingError> {
        let conn = self.conn(addr).await?;
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.flag = (cmd.flag | FLAG_ONEWAY) & !FLAG_RESPONSE;
        if let Some(s) = &self.signer {
            s.sign(&mut cmd);
        }
        conn.tx.send(cmd).await.map_err(|_| RemotingError::Closed)
    }

    /// Drops the pooled connection to `addr`.
    pub fn close(&self, addr: &str) {
        lock(&self.conns).remove(addr);
    }
}
