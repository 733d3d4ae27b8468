//! The role record: the role this broker last took and at which epoch
//! (`<storePathRootDir>/roleRecord`, JSON, replaced atomically with fsync on every role
//! change).
//!
//! It makes epochs only move forward across restarts. The roles file the operator
//! mounts may be older than what the broker was told since (the kubelet refreshes a
//! mounted ConfigMap up to a minute late); a broker restarted in that window would
//! otherwise come back in the role of an older epoch — a promoted master as a slave, a
//! demoted master as a master. [`starting_role`] picks the newer of the two.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::role::{BrokerRole, RoleState};

/// What the record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRecord {
    /// `ASYNC_MASTER`, `SYNC_MASTER` or `SLAVE`.
    pub role: String,
    /// The role epoch.
    pub epoch: i64,
    /// 0 for the master.
    pub broker_id: i64,
    /// The master's remoting address (slaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
    /// The master's HA address (slaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_ha_addr: Option<String>,
}

impl RoleRecord {
    /// The record of `state`.
    #[must_use]
    pub fn of(state: &RoleState) -> Self {
        RoleRecord {
            role: state.role.name().to_owned(),
            epoch: state.epoch,
            broker_id: state.broker_id,
            master_addr: state.master_addr.clone(),
            master_ha_addr: state.master_ha_addr.clone(),
        }
    }

    /// The role it records; `None` for an unknown role name or an inconsistent record
    /// (a master with an id, a slave without one).
    #[must_use]
    pub fn state(&self) -> Option<RoleState> {
        let role = match self.role.as_str() {
            "ASYNC_MASTER" => BrokerRole::AsyncMaster,
            "SYNC_MASTER" => BrokerRole::SyncMaster,
            "SLAVE" => BrokerRole::Slave,
            _ => return None,
        };
        let consistent = if role == BrokerRole::Slave {
            self.broker_id > 0
        } else {
            self.broker_id == 0
        };
        consistent.then(|| RoleState {
            role,
            broker_id: self.broker_id,
            epoch: self.epoch,
            master_addr: self.master_addr.clone(),
            master_ha_addr: self.master_ha_addr.clone(),
        })
    }
}

/// Where the record of a store lives.
#[must_use]
pub fn path_in(store_root: &Path) -> PathBuf {
    store_root.join("roleRecord")
}

/// Reads the record (or its `.bak` after a crash between renames). `None`: no record,
/// or one that cannot be read (logged; the configured role is used).
#[must_use]
pub fn load(path: &Path) -> Option<RoleRecord> {
    let r: Option<RoleRecord> = crate::store::metadata::load(path);
    r
}

/// Writes the record atomically.
///
/// # Errors
/// I/O failures (the previous record stays in place).
pub fn persist(path: &Path, record: &RoleRecord) -> Result<(), crate::store::StoreError> {
    crate::store::metadata::persist(path, record)
}

/// Where the starting role came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The configuration (broker.conf and the roles file): no record, or a record no
    /// newer than the configured epoch.
    Config,
    /// The record: its epoch is newer than the configured one (a stale roles file).
    Record,
}

/// The role to start in: the record's when its epoch is newer than the configured
/// epoch (the roles file is stale), otherwise the configured one. A record at the same
/// epoch yields to the configuration, so a broker.conf edited by hand (epoch 0) still
/// takes effect.
#[must_use]
pub fn starting_role(
    configured: &RoleState,
    record: Option<&RoleRecord>,
) -> (RoleState, StartFrom) {
    match record.and_then(|r| r.state()) {
        Some(recorded) if recorded.epoch > configured.epoch => {
            let mut s = recorded;
            // The HA address a slave was told stays unless the record has none.
            if s.master_ha_addr.is_none() && s.role == BrokerRole::Slave {
                s.master_ha_addr.clone_from(&configured.master_ha_addr);
            }
            (s, StartFrom::Record)
        }
        _ => (configured.clone(), StartFrom::Config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(role: BrokerRole, id: i64, epoch: i64, master: Option<&str>) -> RoleState {
        RoleState {
            role,
            broker_id: id,
            epoch,
            master_addr: master.map(str::to_owned),
            master_ha_addr: master.map(|m| format!("{m}-ha")),
        }
    }

    #[test]
    fn the_newer_of_record_and_roles_file_wins() {
        use BrokerRole::{Slave, SyncMaster};
        let promoted = RoleRecord::of(&state(SyncMaster, 0, 2, None));
        let demoted = RoleRecord::of(&state(Slave, 1, 2, Some("g-1:10911")));
        // (configured, record, expected role, expected epoch, from)
        let rows = [
            // A promoted slave restarted with the stale file (master=g-0, epoch 1).
            (
                state(Slave, 2, 1, None),
                Some(&promoted),
                SyncMaster,
                2,
                StartFrom::Record,
            ),
            // The demoted old master restarted with the same stale file.
            (
                state(SyncMaster, 0, 1, None),
                Some(&demoted),
                Slave,
                2,
                StartFrom::Record,
            ),
            // The file caught up: it wins (same epoch).
            (
                state(Slave, 2, 2, None),
                Some(&promoted),
                Slave,
                2,
                StartFrom::Config,
            ),
            // The file is newer: it wins.
            (
                state(Slave, 2, 3, None),
                Some(&promoted),
                Slave,
                3,
                StartFrom::Config,
            ),
            // No record: the file.
            (
                state(SyncMaster, 0, 1, None),
                None,
                SyncMaster,
                1,
                StartFrom::Config,
            ),
        ];
        for (i, (configured, record, role, epoch, from)) in rows.into_iter().enumerate() {
            let (s, f) = starting_role(&configured, record);
            assert_eq!((s.role, s.epoch, f), (role, epoch, from), "row {i}");
        }
        let (s, _) = starting_role(&state(SyncMaster, 0, 1, None), Some(&demoted));
        assert_eq!(s.master_addr.as_deref(), Some("g-1:10911"));
        assert_eq!(s.broker_id, 1);
    }

    #[test]
    fn inconsistent_records_are_ignored() {
        let bad = [
            RoleRecord {
                role: "LEADER".into(),
                epoch: 9,
                broker_id: 0,
                master_addr: None,
                master_ha_addr: None,
            },
            RoleRecord {
                role: "SLAVE".into(),
                epoch: 9,
                broker_id: 0,
                master_addr: None,
                master_ha_addr: None,
            },
            RoleRecord {
                role: "SYNC_MASTER".into(),
                epoch: 9,
                broker_id: 3,
                master_addr: None,
                master_ha_addr: None,
            },
        ];
        let configured = state(BrokerRole::AsyncMaster, 0, 1, None);
        for r in &bad {
            assert_eq!(
                starting_role(&configured, Some(r)).1,
                StartFrom::Config,
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_record_survives_a_write_and_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path_in(dir.path());
        assert_eq!(load(&p), None);
        let r = RoleRecord::of(&state(BrokerRole::Slave, 2, 5, Some("m:1")));
        persist(&p, &r).expect("persist");
        assert_eq!(load(&p), Some(r));
        std::fs::write(&p, b"{garbage").expect("write");
        // The previous copy is kept as .bak only after a second write; with none, the
        // configured role is used.
        assert_eq!(load(&p), None);
    }
}
