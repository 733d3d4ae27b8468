//! A slave's metadata sync: every [`SLAVE_SYNC_PERIOD`] it copies the master's topics,
//! consumer offsets, delay offsets and subscription groups (`GET_ALL_*`), as RocketMQ's
//! `SlaveSynchronize` does.

use std::time::Duration;

use tracing::debug;

use super::Broker;
use crate::protocol::parse_body;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;

/// How often a slave copies the master's metadata.
pub const SLAVE_SYNC_PERIOD: Duration = Duration::from_secs(10);

impl Broker {
    /// A slave's metadata sync: topics, consumer offsets, delay offsets and subscription
    /// groups copied from the master (`GET_ALL_*`). A no-op on a master or while the
    /// master is unknown. Returns whether it ran.
    ///
    /// # Errors
    /// The master's error or an unreadable body.
    pub async fn sync_from_master(&self) -> Result<bool, String> {
        let st = self.role.get();
        let is_master = st.is_master();
        let Some(master) = st.master_addr.filter(|_| !is_master) else {
            return Ok(false);
        };
        let get = |code: i32| {
            let master = master.clone();
            async move {
                let r = self
                    .namesrv
                    .invoke(
                        &master,
                        RemotingCommand::request(code),
                        Duration::from_secs(3),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if r.code != response::SUCCESS {
                    return Err(format!("code {} from {master}: {:?}", r.code, r.remark));
                }
                Ok(r.body_bytes())
            }
        };
        let topics: crate::store::metadata::TopicConfigTable =
            parse_body(&get(request::GET_ALL_TOPIC_CONFIG).await?).map_err(|e| e.to_string())?;
        let offsets: crate::store::metadata::ConsumerOffsetTable =
            parse_body(&get(request::GET_ALL_CONSUMER_OFFSET).await?).map_err(|e| e.to_string())?;
        let delay: crate::store::metadata::DelayOffsetTable =
            parse_body(&get(request::GET_ALL_DELAY_OFFSET).await?).map_err(|e| e.to_string())?;
        let groups: crate::store::metadata::SubscriptionGroupTable =
            parse_body(&get(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG).await?)
                .map_err(|e| e.to_string())?;
        if self.is_master() {
            // Promoted while fetching: a master's own tables win.
            return Ok(false);
        }
        if self.topics.replace_all(topics) {
            self.topics_changed();
        }
        self.offsets.replace_all(offsets);
        self.delay_offsets.replace_all(delay);
        self.groups.replace_all(groups);
        debug!(master = %master, "metadata synced from the master");
        Ok(true)
    }
}
