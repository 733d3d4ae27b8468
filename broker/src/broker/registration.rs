//! Registration with the name servers (REGISTER_BROKER every
//! `registerNameServerPeriod`, at once on topic and role changes; UNREGISTER_BROKER at
//! shutdown).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use super::{config, Broker};
use crate::protocol::{to_body, RegisterBrokerBody, TopicConfigSerializeWrapper};
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;

impl Broker {
    /// Registers with every name server; returns how many accepted.
    pub async fn register_all(&self) -> usize {
        // As RocketMQ: a broker without read or write permission registers its topics
        // without it, so routes steer clients away. A store that cannot take writes (a
        // failed CommitLog flush, blocked dispatch) registers without write the same way.
        let mut perm = self
            .runtime
            .permission
            .load(std::sync::atomic::Ordering::Relaxed);
        if !self.store.takes_writes() {
            perm &= !config::PERM_WRITE;
        }
        if self
            .registered_perm
            .swap(perm, std::sync::atomic::Ordering::AcqRel)
            != perm
        {
            // The name server takes topic data only from a newer data version.
            self.topics.bump_version();
        }
        let mut snapshot = self.topics.snapshot();
        if perm != config::PERM_READ | config::PERM_WRITE {
            for tc in snapshot.topic_config_table.values_mut() {
                tc.perm &= perm;
            }
        }
        let body = to_body(&RegisterBrokerBody {
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                topic_config_table: snapshot.topic_config_table,
                data_version: snapshot.data_version,
            },
            filter_server_list: Vec::new(),
        });
        let crc = crc32fast::hash(&body) as i32;
        let mut accepted = 0;
        let role = self.role.get();
        for ns in &self.runtime.namesrvs() {
            let cmd = RemotingCommand::request(request::REGISTER_BROKER)
                .with_ext("brokerName", &self.config.broker_name)
                .with_ext("brokerAddr", self.config.broker_addr())
                .with_ext("clusterName", &self.config.broker_cluster_name)
                .with_ext(
                    "haServerAddr",
                    format!("{}:{}", self.config.broker_ip1, self.config.ha_listen_port),
                )
                .with_ext("brokerId", role.broker_id)
                .with_ext("epoch", role.epoch)
                .with_ext("compressed", false)
                .with_ext("bodyCrc32", crc)
                .with_body(body.clone());
            match self.namesrv.invoke(ns, cmd, Duration::from_secs(3)).await {
                Ok(r) if r.code == response::SUCCESS => {
                    accepted += 1;
                    self.registered.store(true, Ordering::Release);
                    if let (Some(m), Some(h)) = (r.ext("masterAddr"), r.ext("haServerAddr")) {
                        self.role.learn_master(m, h);
                    }
                }
                Ok(r) => {
                    warn!(namesrv = %ns, code = r.code, remark = ?r.remark, "registration refused");
                    // The name server knows a master of a newer epoch: this one was
                    // replaced and must not acknowledge writes its successor lacks.
                    if let Some(why) = r
                        .remark
                        .as_deref()
                        .filter(|m| m.starts_with(crate::namesrv::STALE_EPOCH))
                    {
                        self.role.supersede(why);
                    }
                }
                Err(e) => warn!(namesrv = %ns, error = %e, "registration failed"),
            }
        }
        accepted
    }

    pub(super) async fn unregister_all(&self) {
        for ns in &self.runtime.namesrvs() {
            let cmd = RemotingCommand::request(request::UNREGISTER_BROKER)
                .with_ext("brokerName", &self.config.broker_name)
                .with_ext("brokerAddr", self.config.broker_addr())
                .with_ext("clusterName", &self.config.broker_cluster_name)
                .with_ext("brokerId", self.role.read(|r| r.broker_id));
            let _ = self.namesrv.invoke(ns, cmd, Duration::from_secs(2)).await;
        }
    }
}
