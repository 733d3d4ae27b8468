//! The Raft-replicated mode (RocketMQ's DLedger mode, issue 15), on openraft.
//!
//! Built so far: the Raft log storage over DLedger entry files ([`log_store`]), which
//! passes openraft's own storage test suite. Not built yet: the state machine that
//! dispatches committed records, the transport, the broker wiring and the operator;
//! a broker configured with `enableDLegerCommitLog=true` refuses to start
//! (`docs/raft.md`).

#[cfg(test)]
mod cluster_tests;
pub mod log_store;
pub mod machine;

use serde::{Deserialize, Serialize};

/// One log entry's application data: a CommitLog record (or a batch's records), as
/// bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record(pub Vec<u8>);

openraft::declare_raft_types!(
    /// ferrocket's Raft types: node ids are the numbers of the `dLegerSelfId`s (`n0`
    /// is 0), entries carry CommitLog records.
    pub TypeConfig:
        D = Record,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
