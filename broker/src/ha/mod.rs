//! Master/slave replication (RocketMQ's classic HA) on the store's replication hooks,
//! with ferrocket's epochs.
//!
//! The master listens on `haListenPort`. A slave connects and sends 8-byte big-endian
//! offsets (its CommitLog max offset: at start, after each batch it stores, and every
//! second as a heartbeat). The master streams CommitLog bytes from the first offset in
//! frames of `offset: i64, size: i32, bytes` (size 0 = heartbeat). The slave appends
//! them through [`crate::store::MessageStore::append_raw`] (which checks boundaries and CRCs, buffering a
//! record split across frames) and dispatches them, so consumers can read on it.
//!
//! ferrocket adds one exchange before the stream, only for a slave that asks: a ferrocket
//! slave's first 8 bytes are −1 ([`HELLO_REQUEST`], an offset no classic slave reports),
//! and the master answers with one frame of offset −1 and a JSON body
//! `{"epoch":E,"epochs":[{"epoch":..,"startOffset":..}],"maxOffset":M,"minOffset":m}`.
//! The slave refuses a master whose epoch is older than its own, truncates what the
//! master's history does not contain (see [`epoch::truncation_point`] and
//! [`slave::decide_follow`]), adopts the master's epochs, then reports its offset. A classic slave, whose first 8 bytes are its
//! offset, gets the classic stream and nothing else.
//!
//! A slave that reports 0 while the master's oldest file starts later (retention deleted
//! the rest) is streamed from that file, as RocketMQ does for a new slave; a ferrocket
//! slave first moves its empty store there ([`crate::store::MessageStore::start_at`]). A slave with data
//! that ends before the master's oldest file cannot continue and is refused.
//!
//! Where things are: [`role`] (the role/epoch state machine), [`wire`] (every HA frame),
//! [`master`] (streaming to slaves, acknowledgements), [`slave`] (following a master,
//! with the pure [`slave::decide_follow`]), [`epoch`] (the epoch file).

pub mod epoch;
pub mod master;
pub mod record;
pub mod role;
pub mod slave;
pub mod wire;

use std::time::Duration;

pub use master::{HaService, SyncError, SyncPolicy, SyncStateSet};
pub use role::{default_ha_addr, BrokerRole, FollowProblemKind, RoleCell, RoleError, RoleState};
pub use slave::{decide_follow, run_slave, FollowPlan, HaAuth, LocalLog, SlaveError};
pub use wire::{Hello, HELLO_REQUEST, TRANSFER_BATCH};

/// Either side drops a connection silent this long (`haHousekeepingInterval`).
pub const HOUSEKEEPING: Duration = Duration::from_secs(20);
/// A slave lagging more than this is not in sync (`haMaxGapNotInSync`, 256 MiB).
pub const MAX_GAP_NOT_IN_SYNC: u64 = 256 * 1024 * 1024;
