//! Role changes (ROLE_CHANGE): promotion to master or following a master at an epoch.
//! A switchover is driven from outside (`client::role::switch_over`) with this request
//! and `brokerPermission`.

use tracing::{info, warn};

use super::{config, BrokerRole};
use super::{fail, ok, Broker};
use crate::remoting::codes::response;
use crate::remoting::RemotingCommand;

impl Broker {
    /// Who may change roles and permissions: with `controlSecretFile` set, only requests
    /// signed with that secret (RocketMQ ACL's HMAC-SHA1; the file is read on every such
    /// request, so a rotated Secret applies at once). Returns whether the request was
    /// verified; a refusal is the NO_PERMISSION answer to send.
    pub(super) fn authorize_control(
        &self,
        req: &RemotingCommand,
        what: &str,
    ) -> Result<bool, RemotingCommand> {
        let Some(path) = &self.config.control_secret_file else {
            return Ok(false);
        };
        let verified = crate::auth::Credentials::from_file(&self.config.control_access_key, path)
            .and_then(|c| c.verify(req));
        match verified {
            Ok(()) => Ok(true),
            Err(e) => {
                warn!(request = req.code, access_key = req.ext(crate::auth::ACCESS_KEY).unwrap_or(""), error = %e, "{what} refused");
                self.metrics.control_refused.inc();
                Err(fail(
                    req,
                    response::NO_PERMISSION,
                    format!("{what} refused: {e}"),
                ))
            }
        }
    }

    /// CONFIRM_SYNC_STATE_SET (signed like a role change): `epoch` and `members` (comma
    /// separated) of the in-sync set the controller recorded.
    pub(super) fn confirm_sync_state_set(&self, req: &RemotingCommand) -> RemotingCommand {
        if let Err(refusal) = self.authorize_control(req, "in-sync set confirmation") {
            return refusal;
        }
        let epoch: i64 = match req.ext_num("epoch") {
            Ok(e) => e,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        if !self.role.is_master() {
            return fail(req, response::SYSTEM_ERROR, "not a master");
        }
        let members: std::collections::BTreeSet<String> = req
            .ext("members")
            .unwrap_or("")
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        match self.ha.confirm_sync_state_set(epoch, &members) {
            Ok(set) => ok(req).with_ext("epoch", set.epoch).with_ext(
                "members",
                set.members.into_iter().collect::<Vec<_>>().join(","),
            ),
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// Handles a role change (`ROLE_CHANGE`): `role=master|slave`, `epoch`, and for a
    /// slave `masterAddr` (optionally `masterHaAddr`, `brokerId`).
    pub(super) fn role_change(&self, req: &RemotingCommand) -> RemotingCommand {
        let epoch: i64 = match req.ext_num("epoch") {
            Ok(e) => e,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let signed = match self.authorize_control(req, "role change") {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        let known = self.role.known_epoch();
        if !signed && epoch > known.saturating_add(1) {
            warn!(epoch, known, "unsigned role change jumping epochs refused");
            self.metrics.control_refused.inc();
            return fail(
                req,
                response::NO_PERMISSION,
                format!(
                    "role change to epoch {epoch} refused: this broker is at epoch {known}; \
                     only a request signed with the control secret may move more than one epoch"
                ),
            );
        }
        let outcome = match req.ext("role") {
            Some("master") => {
                let role = match req.ext("brokerRole") {
                    Some("SYNC_MASTER") => BrokerRole::SyncMaster,
                    Some("ASYNC_MASTER") => BrokerRole::AsyncMaster,
                    _ => self.config.master_role,
                };
                self.role.promote(role, epoch, self.store.max_phy_offset())
            }
            Some("slave") => {
                let Some(master) = req.ext("masterAddr").filter(|m| !m.is_empty()) else {
                    return fail(req, response::SYSTEM_ERROR, "a slave needs masterAddr");
                };
                let id = req
                    .ext("brokerId")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(self.config.slave_broker_id);
                let was_master = self.role.is_master();
                // Refuse client appends first: a send that passed its role check a
                // moment ago must not append after the cut below.
                self.store.set_accept_appends(false);
                let acked = self.ha.acked_offset();
                let r = self.role.demote(epoch, id, master, req.ext("masterHaAddr"));
                if r.is_err() && self.role.is_master() {
                    self.store.set_accept_appends(true);
                }
                if was_master && matches!(r, Ok(true)) {
                    let at = self.role.rejoin_from(acked);
                    info!(
                        keep = at,
                        "demoted master keeps what was replicated in its term"
                    );
                }
                r
            }
            other => {
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("role must be master or slave, got {other:?}"),
                )
            }
        };
        match outcome {
            Ok(changed) => {
                if self.role.is_master() {
                    self.store.set_accept_appends(true);
                }
                if changed {
                    self.ha.reset_acked();
                    if self.role.is_master() && !self.runtime.writable() {
                        // A promoted broker takes writes: a switchover may have fenced it
                        // as the old master before.
                        self.runtime.permission.fetch_or(
                            config::PERM_READ | config::PERM_WRITE,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        self.topics.bump_version();
                        info!("promoted: brokerPermission restored to read-write");
                    }
                    self.topics_changed();
                }
                let st = self.role.get();
                ok(req)
                    .with_ext("brokerRole", st.role.name())
                    .with_ext("brokerId", st.broker_id)
                    .with_ext("epoch", st.epoch)
                    .with_ext("maxOffset", self.store.max_phy_offset())
                    .with_ext(
                        "haServerAddr",
                        format!("{}:{}", self.config.broker_ip1, self.config.ha_listen_port),
                    )
            }
            Err(e) => {
                warn!(error = %e, "role change refused");
                fail(req, response::SYSTEM_ERROR, e)
            }
        }
    }
}
