//! Three openraft nodes in one process, each on its own [`LogStore`] directory, joined
//! by an in-memory router (a node is "down" while it is out of the router): the log
//! store inside a live Raft group — election, replication to a majority, losing the
//! leader, and a restarted node recovering its log from disk and catching up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, EntryPayload, Raft, RaftLogReader, ServerState};

use super::log_store::LogStore;
use super::machine::Applied;
use super::{Record, TypeConfig};
use crate::sync::lock;

type NodeId = u64;

#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>>,
}

struct Conn {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

impl Conn {
    fn raft(&self) -> Option<Raft<TypeConfig>> {
        lock(&self.router.nodes).get(&self.target).cloned()
    }
}

/// What a call to a node that is down gets.
fn down<E: std::error::Error>() -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "node down",
    )))
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let Some(raft) = self.raft() else {
            return Err(down());
        };
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let Some(raft) = self.raft() else {
            return Err(down());
        };
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let Some(raft) = self.raft() else {
            return Err(down());
        };
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// The application records in a node's log, in order.
async fn records(store: &LogStore) -> Vec<Vec<u8>> {
    let mut s = store.clone();
    s.try_get_log_entries(..)
        .await
        .expect("log readable")
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(Record(b)) => Some(b),
            _ => None,
        })
        .collect()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node that is leader, with its term; checks no two live nodes lead one term.
fn leader(nodes: &BTreeMap<NodeId, Raft<TypeConfig>>) -> Option<(NodeId, u64)> {
    let mut found: Option<(NodeId, u64)> = None;
    for (id, raft) in nodes {
        let m = raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            if let Some((other, term)) = found {
                assert_ne!(
                    term, m.current_term,
                    "nodes {other} and {id} both lead term {term}"
                );
            }
            if found.is_none_or(|(_, t)| m.current_term > t) {
                found = Some((*id, m.current_term));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_survive_the_leader_and_catch_up_after_restart() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let router = Router::default();
    let seg = 64 * 1024;
    let start = |id: NodeId| {
        let (router, config) = (router.clone(), Arc::clone(&config));
        let dir = dirs[id as usize].path().to_path_buf();
        async move {
            let store = LogStore::open(&dir, seg).unwrap();
            let raft = Raft::new(
                id,
                config,
                router.clone(),
                store.clone(),
                Applied::default(),
            )
            .await
            .unwrap();
            lock(&router.nodes).insert(id, raft);
            store
        }
    };
    let mut stores = BTreeMap::new();
    for id in 0..3 {
        stores.insert(id, start(id).await);
    }
    let members: BTreeMap<NodeId, BasicNode> =
        (0..3).map(|id| (id, BasicNode::default())).collect();
    let first = lock(&router.nodes)[&0].clone();
    first.initialize(members).await.unwrap();
    until("a leader", || async {
        leader(&lock(&router.nodes)).is_some()
    })
    .await;
    let (old, _) = leader(&lock(&router.nodes)).unwrap();
    let raft = lock(&router.nodes)[&old].clone();
    for i in 0..50 {
        raft.client_write(Record(format!("m{i:02}").into_bytes()))
            .await
            .unwrap();
    }
    let expected =
        |n: usize| -> Vec<Vec<u8>> { (0..n).map(|i| format!("m{i:02}").into_bytes()).collect() };
    for (id, store) in &stores {
        until(&format!("node {id} holds the 50 records"), || async {
            records(store).await == expected(50)
        })
        .await;
    }

    // The leader dies: the other two elect one of themselves and take writes.
    let gone = lock(&router.nodes).remove(&old).unwrap();
    gone.shutdown().await.unwrap();
    drop(stores.remove(&old));
    until("a new leader", || async {
        leader(&lock(&router.nodes)).is_some_and(|(id, _)| id != old)
    })
    .await;
    let (new, _) = leader(&lock(&router.nodes)).unwrap();
    let raft = lock(&router.nodes)[&new].clone();
    for i in 50..60 {
        raft.client_write(Record(format!("m{i:02}").into_bytes()))
            .await
            .unwrap();
    }
    for (id, store) in &stores {
        until(&format!("node {id} holds the 60 records"), || async {
            records(store).await == expected(60)
        })
        .await;
    }

    // The old leader restarts on its directory: its log comes back from disk and
    // catches up with what it missed, in order.
    let back = start(old).await;
    assert!(
        records(&back).await.len() >= 50,
        "the restarted log lost records"
    );
    until("the restarted node catches up", || async {
        records(&back).await == expected(60)
    })
    .await;
    let nodes: Vec<_> = lock(&router.nodes).values().cloned().collect();
    for r in nodes {
        r.shutdown().await.unwrap();
    }
}
