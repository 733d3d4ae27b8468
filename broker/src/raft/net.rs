//! The Raft transport on the `dLegerPeers` ports: one TCP connection per peer and
//! direction, one request at a time on it (openraft keeps one AppendEntries in flight
//! per follower).
//!
//! ```text
//! request:  [len:4][kind:1][json_len:4][json][entries]     kind 1 append, 2 vote,
//!                                                          3 snapshot, 4 info,
//!                                                          5 elect, 6 fetch
//! entry:    [type:1][index:8][term:8][0:8][len:4][payload]    (8 reserved bytes)
//!           type 1 normal (the record bytes), 2 blank, 3 membership (JSON)
//! response: [len:4][status:1][json]                        status 0 ok, 1 Raft error
//! fetch:    [len:4][0:1][head_len:4][head json][bytes]     committed CommitLog bytes
//! with haRequireSignature, first on every connection:
//! server:   [len:4][3:1][nonce]                            challenge (16 bytes)
//! client:   request kind 7, JSON {"signature": base64 HMAC-SHA1("ferrocket-raft:" + nonce)}
//! server:   [len:4][0:1][true]                             then requests as above
//! ```
//!
//! AppendEntries carries its entries in binary (a JSON array of bytes would triple
//! every message); everything else is JSON. A frame over [`MAX_FRAME`] ends the
//! connection. `info` answers the node's broker address (followers register with it
//! as their master's).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::Backoff;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::{Record, TypeConfig};
use crate::remoting::tls::BoxStream;

type NodeId = u64;

/// The largest frame either side accepts (an AppendEntries of 64 entries of a few
/// MiB each fits).
pub const MAX_FRAME: usize = 128 * 1024 * 1024;

const APPEND: u8 = 1;
const VOTE: u8 = 2;
const SNAPSHOT: u8 = 3;
const INFO: u8 = 4;
/// A leader handing over (a leadership transfer): campaign now, if still in `term`.
const ELECT: u8 = 5;

/// Committed CommitLog bytes from an offset (a member installing a snapshot fetches
/// what it lacks).
const FETCH: u8 = 6;

/// The largest answer to a [`FETCH`].
pub const MAX_FETCH: usize = 4 * 1024 * 1024;

/// The answer to the challenge (`haRequireSignature`).
const ANSWER: u8 = 7;
/// A response frame's status for the challenge.
const CHALLENGE: u8 = 3;

/// How members reach each other: `haRequireSignature` on the DLedger port (the control
/// account and the file holding the group's secret, read on each connection, so a
/// rotated Secret applies) and TLS (`tls.server.mode` on the port, `tls.enable` to
/// peers).
pub type Auth = crate::ha::HaAuth;

#[derive(Serialize, Deserialize)]
struct Answer {
    signature: String,
}

fn challenge_content(nonce: &[u8]) -> Vec<u8> {
    let mut c = b"ferrocket-raft:".to_vec();
    c.extend_from_slice(nonce);
    c
}

/// Server side: challenges a new connection; `Err` closes it.
async fn challenge(sock: &mut BoxStream, auth: &Auth) -> Result<(), NetError> {
    let Some((ak, path)) = &auth.signature else {
        return Ok(());
    };
    let nonce = crate::auth::nonce();
    sock.write_all(&response_frame(CHALLENGE, &nonce)).await?;
    let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(sock))
        .await
        .map_err(|_| NetError::Timeout(Duration::from_secs(5)))??;
    let (kind, json, _) = split_request(&frame)?;
    let answer: Option<Answer> = (kind == ANSWER)
        .then(|| serde_json::from_slice(json).ok())
        .flatten();
    let ok = answer.is_some_and(|a| {
        crate::auth::Credentials::from_file(ak, path)
            .is_ok_and(|c| c.verify_bytes(&challenge_content(&nonce), &a.signature))
    });
    if !ok {
        return Err(bad(
            "the challenge was not answered with the group's secret (haRequireSignature)",
        ));
    }
    sock.write_all(&answer_frame()?).await?;
    Ok(())
}

fn answer_frame() -> Result<Vec<u8>, NetError> {
    Ok(response_frame(0, b"true"))
}

/// Client side: answers a new connection's challenge.
async fn answer_challenge(sock: &mut BoxStream, auth: &Auth) -> Result<(), NetError> {
    let Some((ak, path)) = &auth.signature else {
        return Ok(());
    };
    let frame = read_frame(sock).await?;
    let (status, nonce) = frame.split_first().ok_or_else(|| bad("empty challenge"))?;
    if *status != CHALLENGE {
        return Err(bad(
            "the member sent no challenge (is haRequireSignature set on every member?)",
        ));
    }
    let creds = crate::auth::Credentials::from_file(ak, path).map_err(|e| bad(e.to_string()))?;
    let json = serde_json::to_vec(&Answer {
        signature: creds.sign_bytes(&challenge_content(nonce)),
    })
    .map_err(|e| bad(e.to_string()))?;
    sock.write_all(&request_frame(ANSWER, &json, &[])?).await?;
    let ok = read_frame(sock).await?;
    if ok.first() != Some(&0) {
        return Err(bad("the challenge answer was refused"));
    }
    Ok(())
}

/// The body of a [`FETCH`] request.
#[derive(Debug, Serialize, Deserialize)]
struct FetchRequest {
    from: u64,
    max: usize,
    /// Answer the queue offsets assigned before the member's oldest byte too.
    #[serde(default)]
    queues: bool,
}

/// What a [`FETCH`] answers before its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchHead {
    /// The oldest CommitLog byte the member holds.
    pub min: u64,
    /// The end of what it has applied (committed): nothing past it is served.
    pub end: u64,
    /// When asked: every queue's next queue offset counting only its records below
    /// `min` (`topic`, queue id, next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<(String, i32, i64)>,
}

/// Where a member's committed CommitLog bytes are read for [`FETCH`].
pub trait Source: Send + Sync + 'static {
    /// The committed bytes from `from` (at most `max`; none when `from` is outside
    /// what the member holds), with its bounds (and, with `queues`, its queue offsets
    /// before its oldest byte).
    fn fetch(&self, from: u64, max: usize, queues: bool) -> (FetchHead, Vec<u8>);
}

/// The body of an [`ELECT`] request.
#[derive(Debug, Serialize, Deserialize)]
struct ElectRequest {
    /// The term the leader handing over leads; a member in another term ignores it.
    term: u64,
}

const NORMAL: u8 = 1;
const BLANK: u8 = 2;
const MEMBERSHIP: u8 = 3;

/// A transport failure (the peer is unreachable, closed, or sent something invalid).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The peer could not be reached (nothing listens there, no route).
    #[error("raft transport: cannot connect: {0}")]
    Connect(std::io::Error),
    /// Socket errors.
    #[error("raft transport: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that is not what the protocol says.
    #[error("raft transport: bad frame: {0}")]
    Frame(String),
    /// The call did not finish in time.
    #[error("raft transport: no answer within {0:?}")]
    Timeout(Duration),
}

fn bad(what: impl Into<String>) -> NetError {
    NetError::Frame(what.into())
}

/// What a node says about itself (`info`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Raft node id.
    pub id: u64,
    /// The broker's client address (`brokerIP1:listenPort`).
    pub broker_addr: String,
    /// Whether its log holds anything (a group it belongs to was initialized).
    #[serde(default)]
    pub initialized: bool,
}

/// AppendEntries without its entries (they travel in binary after the JSON).
#[derive(Serialize, Deserialize)]
struct AppendHead {
    vote: openraft::Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
}

fn encode_entries(entries: &[Entry<TypeConfig>], out: &mut Vec<u8>) -> Result<(), NetError> {
    for e in entries {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match &e.payload {
            EntryPayload::Normal(Record(b)) => (NORMAL, b.as_slice().into()),
            EntryPayload::Blank => (BLANK, (&[][..]).into()),
            EntryPayload::Membership(m) => (
                MEMBERSHIP,
                serde_json::to_vec(m)
                    .map_err(|e| bad(e.to_string()))?
                    .into(),
            ),
        };
        out.push(kind);
        out.extend_from_slice(&e.log_id.index.to_be_bytes());
        out.extend_from_slice(&e.log_id.leader_id.term.to_be_bytes());
        // The leader's node id: not part of a log id with one leader per term.
        out.extend_from_slice(&0u64.to_be_bytes());
        let len = u32::try_from(payload.len()).map_err(|_| bad("entry over 4 GiB"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
    }
    Ok(())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], NetError> {
    if buf.len() < n {
        return Err(bad("entry cut short"));
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn decode_entries(mut buf: &[u8]) -> Result<Vec<Entry<TypeConfig>>, NetError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let kind = take(&mut buf, 1)?[0];
        let index = u64_of(take(&mut buf, 8)?);
        let term = u64_of(take(&mut buf, 8)?);
        let node = u64_of(take(&mut buf, 8)?);
        let len = u32::from_be_bytes(
            take(&mut buf, 4)?
                .try_into()
                .map_err(|_| bad("length field"))?,
        ) as usize;
        let payload = take(&mut buf, len)?;
        let payload = match kind {
            NORMAL => EntryPayload::Normal(Record(payload.to_vec())),
            BLANK => EntryPayload::Blank,
            MEMBERSHIP => EntryPayload::Membership(
                serde_json::from_slice::<Membership<NodeId, BasicNode>>(payload)
                    .map_err(|e| bad(format!("membership entry: {e}")))?,
            ),
            other => return Err(bad(format!("unknown entry type {other}"))),
        };
        out.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, node), index),
            payload,
        });
    }
    Ok(out)
}

async fn read_frame(s: &mut BoxStream) -> Result<Vec<u8>, NetError> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes (limit {MAX_FRAME})")));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A request frame's `(kind, json, tail)` (the frame without its length).
fn split_request(frame: &[u8]) -> Result<(u8, &[u8], &[u8]), NetError> {
    let mut rest = frame;
    let kind = take(&mut rest, 1)?[0];
    let json_len = u32::from_be_bytes(
        take(&mut rest, 4)?
            .try_into()
            .map_err(|_| bad("length field"))?,
    ) as usize;
    let json = take(&mut rest, json_len)?;
    Ok((kind, json, rest))
}

fn request_frame(kind: u8, json: &[u8], tail: &[u8]) -> Result<Vec<u8>, NetError> {
    let total = 1 + 4 + json.len() + tail.len();
    if total > MAX_FRAME {
        return Err(bad(format!("request of {total} bytes (limit {MAX_FRAME})")));
    }
    let mut f = Vec::with_capacity(4 + total);
    f.extend_from_slice(&(total as u32).to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&(json.len() as u32).to_be_bytes());
    f.extend_from_slice(json);
    f.extend_from_slice(tail);
    Ok(f)
}

fn response_frame(status: u8, json: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + json.len());
    f.extend_from_slice(&((1 + json.len()) as u32).to_be_bytes());
    f.push(status);
    f.extend_from_slice(json);
    f
}

/// Serves the Raft RPCs of `raft` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    info: NodeInfo,
    source: Option<Arc<dyn Source>>,
    auth: Auth,
) {
    let info = Arc::new(info);
    let auth = Arc::new(auth);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "raft listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let (raft, info, source, auth) = (
            raft.clone(),
            Arc::clone(&info),
            source.clone(),
            Arc::clone(&auth),
        );
        tokio::spawn(async move {
            use crate::remoting::tls::{REPLICATION_HANDSHAKE, REPLICATION_PLAIN_AFTER};
            let accepted = crate::remoting::tls::accept(
                auth.tls_server.as_deref(),
                sock,
                REPLICATION_PLAIN_AFTER,
                REPLICATION_HANDSHAKE,
            )
            .await;
            let mut sock = match accepted {
                Ok(s) => s.boxed(),
                Err(e) => {
                    warn!(%peer, error = %e, "DLedger connection refused: TLS");
                    return;
                }
            };
            if let Err(e) = challenge(&mut sock, &auth).await {
                warn!(%peer, error = %e, "DLedger connection refused");
                return;
            }
            if let Err(e) = serve_conn(sock, raft, &info, source.as_deref()).await {
                debug!(%peer, error = %e, "raft connection closed");
            }
        });
    }
}

fn answer<T: Serialize, E: Serialize>(r: Result<T, E>) -> Vec<u8> {
    let (status, json) = match r {
        Ok(v) => (0, serde_json::to_vec(&v)),
        Err(e) => (1, serde_json::to_vec(&e)),
    };
    match json {
        Ok(j) => response_frame(status, &j),
        Err(e) => response_frame(2, e.to_string().as_bytes()),
    }
}

async fn serve_conn(
    mut sock: BoxStream,
    raft: Raft<TypeConfig>,
    info: &NodeInfo,
    source: Option<&dyn Source>,
) -> Result<(), NetError> {
    loop {
        let frame = match read_frame(&mut sock).await {
            Ok(f) => f,
            Err(NetError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (kind, json, rest) = split_request(&frame)?;
        let parse = |what: &str| bad(format!("{what} request is not valid JSON"));
        let resp = match kind {
            APPEND => {
                let head: AppendHead = serde_json::from_slice(json).map_err(|_| parse("append"))?;
                let req = AppendEntriesRequest {
                    vote: head.vote,
                    prev_log_id: head.prev_log_id,
                    leader_commit: head.leader_commit,
                    entries: decode_entries(rest)?,
                };
                answer(raft.append_entries(req).await)
            }
            VOTE => {
                let req: VoteRequest<NodeId> =
                    serde_json::from_slice(json).map_err(|_| parse("vote"))?;
                answer(raft.vote(req).await)
            }
            SNAPSHOT => {
                let req: InstallSnapshotRequest<TypeConfig> =
                    serde_json::from_slice(json).map_err(|_| parse("snapshot"))?;
                answer(raft.install_snapshot(req).await)
            }
            INFO => {
                let mut i = info.clone();
                i.initialized = raft.metrics().borrow().last_log_index.is_some();
                answer::<_, ()>(Ok(i))
            }
            ELECT => {
                let req: ElectRequest = serde_json::from_slice(json).map_err(|_| parse("elect"))?;
                let term = raft.metrics().borrow().current_term;
                let started = term == req.term && raft.trigger().elect().await.is_ok();
                if started {
                    info!(term, "DLedger leadership transfer: campaigning");
                }
                answer::<_, ()>(Ok(started))
            }
            FETCH => {
                let req: FetchRequest = serde_json::from_slice(json).map_err(|_| parse("fetch"))?;
                let Some(source) = source else {
                    return Err(bad("fetch: this member serves no CommitLog"));
                };
                let (head, bytes) = source.fetch(req.from, req.max.min(MAX_FETCH), req.queues);
                let head = serde_json::to_vec(&head).map_err(|e| bad(e.to_string()))?;
                let total = 1 + 4 + head.len() + bytes.len();
                let mut f = Vec::with_capacity(4 + total);
                f.extend_from_slice(&(total as u32).to_be_bytes());
                f.push(0);
                f.extend_from_slice(&(head.len() as u32).to_be_bytes());
                f.extend_from_slice(&head);
                f.extend_from_slice(&bytes);
                f
            }
            other => return Err(bad(format!("unknown request kind {other}"))),
        };
        sock.write_all(&resp).await?;
    }
}

/// Connections to the peers (openraft asks for one per target).
#[derive(Clone, Default)]
pub struct Network {
    /// How connections answer a challenge (`haRequireSignature`).
    pub auth: Auth,
}

/// One peer's connection, opened on first use and again after a failure.
pub struct Peer {
    target: NodeId,
    addr: String,
    sock: Option<BoxStream>,
    auth: Auth,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            sock: None,
            auth: self.auth.clone(),
        }
    }
}

/// The answer to a call: the value, or the peer's Raft error.
enum Reply<T, E> {
    Ok(T),
    Raft(E),
}

impl Peer {
    /// The connection, opened (and the challenge answered) on first use.
    async fn connected(&mut self) -> Result<&mut BoxStream, NetError> {
        if self.sock.is_none() {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(NetError::Connect)?;
            let _ = s.set_nodelay(true);
            let mut s = crate::remoting::tls::connect(self.auth.tls.as_ref(), &self.addr, s)
                .await
                .map_err(|e| bad(format!("TLS to {}: {e}", self.addr)))?;
            answer_challenge(&mut s, &self.auth).await?;
            self.sock = Some(s);
        }
        self.sock.as_mut().ok_or_else(|| bad("no connection"))
    }

    async fn call_inner<T: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        frame: &[u8],
    ) -> Result<Reply<T, E>, NetError> {
        let s = self.connected().await?;
        s.write_all(frame).await?;
        let resp = read_frame(s).await?;
        let (status, json) = resp.split_first().ok_or_else(|| bad("empty response"))?;
        match status {
            0 => Ok(Reply::Ok(
                serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?,
            )),
            1 => Ok(Reply::Raft(
                serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?,
            )),
            _ => Err(bad(String::from_utf8_lossy(json).into_owned())),
        }
    }

    /// One call with a deadline; any failure closes the connection.
    async fn call<T: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        frame: Result<Vec<u8>, NetError>,
        ttl: Duration,
    ) -> Result<Reply<T, E>, NetError> {
        let frame = frame?;
        let r = match tokio::time::timeout(ttl, self.call_inner(&frame)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout(ttl)),
        };
        if r.is_err() {
            self.sock = None;
        }
        r
    }

    /// Asks the member at `addr` to campaign now if it is in `term` (the leader of
    /// `term` handing over to it); whether it started.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn elect(
        addr: &str,
        term: u64,
        ttl: Duration,
        auth: &Auth,
    ) -> Result<bool, NetError> {
        let mut p = Peer::to(addr, auth);
        let json = serde_json::to_vec(&ElectRequest { term }).map_err(|e| bad(e.to_string()))?;
        match p
            .call::<bool, ()>(request_frame(ELECT, &json, &[]), ttl)
            .await?
        {
            Reply::Ok(started) => Ok(started),
            Reply::Raft(()) => Err(bad("elect refused")),
        }
    }

    /// A connection to the member at `addr` for [`Peer::fetch`] (opened on first use).
    pub fn to(addr: &str, auth: &Auth) -> Peer {
        Peer {
            target: 0,
            addr: addr.to_owned(),
            sock: None,
            auth: auth.clone(),
        }
    }

    /// The member's committed CommitLog bytes from `from` (at most `max`), with its
    /// bounds.
    ///
    /// # Errors
    /// Transport failures; any closes the connection.
    pub async fn fetch(
        &mut self,
        from: u64,
        max: usize,
        queues: bool,
        ttl: Duration,
    ) -> Result<(FetchHead, Vec<u8>), NetError> {
        let json = serde_json::to_vec(&FetchRequest { from, max, queues })
            .map_err(|e| bad(e.to_string()))?;
        let frame = request_frame(FETCH, &json, &[])?;
        let call = async {
            let s = self.connected().await?;
            s.write_all(&frame).await?;
            let resp = read_frame(s).await?;
            let mut rest = resp.as_slice();
            if take(&mut rest, 1)?[0] != 0 {
                return Err(bad(String::from_utf8_lossy(rest).into_owned()));
            }
            let head_len = u32::from_be_bytes(
                take(&mut rest, 4)?
                    .try_into()
                    .map_err(|_| bad("length field"))?,
            ) as usize;
            let head: FetchHead = serde_json::from_slice(take(&mut rest, head_len)?)
                .map_err(|e| bad(format!("fetch answer: {e}")))?;
            Ok((head, rest.to_vec()))
        };
        let r = match tokio::time::timeout(ttl, call).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout(ttl)),
        };
        if r.is_err() {
            self.sock = None;
        }
        r
    }

    /// Asks the peer who it is (its broker address).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn info(addr: &str, ttl: Duration, auth: &Auth) -> Result<NodeInfo, NetError> {
        let mut p = Peer::to(addr, auth);
        match p
            .call::<NodeInfo, ()>(request_frame(INFO, b"{}", &[]), ttl)
            .await?
        {
            Reply::Ok(i) => Ok(i),
            Reply::Raft(()) => Err(bad("info refused")),
        }
    }
}

/// A peer nobody listens for is `Unreachable`: openraft then backs off (see
/// [`RaftNetwork::backoff`]) instead of retrying at once, which spun the leader at
/// thousands of connection attempts a second while a member was down.
fn rpc_err<E: std::error::Error>(
    e: &NetError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        NetError::Connect(_) => RPCError::Unreachable(Unreachable::new(e)),
        _ => RPCError::Network(NetworkError::new(e)),
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// After a refused connection: 50, 100, 200, 400 ms, then every 500 ms until a
    /// call succeeds. A restarted member is found within half a second; a dead one
    /// costs two connection attempts a second.
    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0..4)
                .map(|i| Duration::from_millis(50 << i))
                .chain(std::iter::repeat(Duration::from_millis(500))),
        )
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let head = AppendHead {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
        };
        let frame = serde_json::to_vec(&head)
            .map_err(|e| bad(e.to_string()))
            .and_then(|json| {
                let mut tail = Vec::new();
                encode_entries(&rpc.entries, &mut tail)?;
                request_frame(APPEND, &json, &tail)
            });
        match self.call(frame, option.hard_ttl()).await {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Raft(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(rpc_err(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let frame = serde_json::to_vec(&rpc)
            .map_err(|e| bad(e.to_string()))
            .and_then(|json| request_frame(SNAPSHOT, &json, &[]));
        match self.call(frame, option.hard_ttl()).await {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Raft(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(rpc_err(&e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let frame = serde_json::to_vec(&rpc)
            .map_err(|e| bad(e.to_string()))
            .and_then(|json| request_frame(VOTE, &json, &[]));
        match self.call(frame, option.hard_ttl()).await {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Raft(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(rpc_err(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_binary() {
        let members: std::collections::BTreeMap<u64, BasicNode> = (0..3)
            .map(|i| (i, BasicNode::new(format!("h{i}:1"))))
            .collect();
        let entries = vec![
            Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(0, 0), 0),
                payload: EntryPayload::Membership(Membership::new(
                    vec![members.keys().copied().collect()],
                    members,
                )),
            },
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), 2),
                payload: EntryPayload::Normal(Record(vec![7u8; 1000])),
            },
        ];
        let mut buf = Vec::new();
        encode_entries(&entries, &mut buf).unwrap();
        assert_eq!(decode_entries(&buf).unwrap(), entries);
        // A cut-short buffer is an error, never a panic or a wrong entry.
        for cut in 0..buf.len() {
            if let Ok(got) = decode_entries(&buf[..cut]) {
                assert!(entries.starts_with(&got), "cut at {cut} decoded wrongly");
            }
        }
    }
}
