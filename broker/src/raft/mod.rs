//! The Raft-replicated mode (RocketMQ's DLedger mode, issue 15), on openraft.
//!
//! - [`log_store`]: the Raft log storage over DLedger entry files (passes openraft's
//!   own storage test suite);
//! - [`machine`]: the state machine, handing committed entries to the broker's store;
//! - [`net`]: the transport on the `dLegerPeers` ports;
//! - `linger`: the proposer's group-commit wait under SYNC_FLUSH;
//! - [`node`]: a broker's node (the proposer, the commit waits, leadership changes).
//!
//! What is and is not built: `docs/raft.md`.

#[cfg(test)]
mod cluster_tests;
mod linger;
pub mod log_store;
pub mod machine;
pub mod net;
pub mod node;

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
