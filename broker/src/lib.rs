//! ferrocket: a message broker that speaks Apache RocketMQ's remoting protocol and keeps
//! RocketMQ's store file formats.
//!
//! - [`store`]: CommitLog, ConsumeQueue, IndexFile, checkpoint, recovery, flush,
//!   retention and metadata files.
//! - [`remoting`]: the remoting protocol's frames, commands, server and client.
//! - [`namesrv`], [`broker`]: the two servers.
//! - [`auth`]: request signatures (RocketMQ ACL 1.0's HMAC-SHA1), for the control plane.
//! - [`cli`]: the `ferrocket` command line (thin wrappers live in `src/bin/`).

pub mod acl;
pub mod acl2;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod ha;
pub mod metrics;
pub mod namesrv;
pub mod protocol;
pub mod raft;
pub mod remoting;
pub mod sql92;
pub mod store;
pub mod sync;
pub mod watchdog;
