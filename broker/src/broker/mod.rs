//! The broker: request processors over the store, client and topic bookkeeping, name
//! server registration. Processors turn every error into a RocketMQ response code, in
//! one place per request family.
//!
//! Where things are: [`Broker::process`] (below) is the routing table; each request
//! family has its processor and typed headers in its own module — `send` (SEND_MESSAGE,
//! V2, batch), `pull` (pull, long polling), `consumer` (heartbeats, consumer lists,
//! locks, offsets, send-back), `admin` (topics, groups, `GET_ALL_*`, broker config,
//! runtime info, stats), `query` (by key, by id, queue offsets), `role` (ROLE_CHANGE),
//! `transaction` (half messages, END_TRANSACTION, the check-back service);
//! `registration` (name servers) and `slave_sync` (a slave copying the master's
//! metadata) run in the background; `meta`, `clients`, `locks`, `long_poll` and
//! `schedule` are the state they share.

mod admin;
pub mod clients;
pub mod config;
mod consumer;
pub mod listeners;
pub mod locks;
pub mod long_poll;
pub mod meta;
pub mod ops;
mod pull;
mod query;
mod raft_mode;
mod registration;
mod reply;
mod role;
pub mod schedule;
mod send;
mod slave_sync;
pub mod stats_items;
pub mod timer;
pub mod transaction;
pub mod unsupported;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::remoting::codes::{request, response};
use crate::remoting::{
    serve, Connection, RemotingClient, RemotingCommand, RequestHandler, ResponseFuture,
};
use crate::store::{MessageStore, StoreError};

pub use clients::ClientManager;
pub use config::{BrokerConfig, BrokerRole, ConfigError};
pub use listeners::Listeners;
pub use long_poll::PullHold;
pub use meta::{OffsetManager, TopicManager};
pub use slave_sync::SLAVE_SYNC_PERIOD;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `brokerIP1:listenPort` is not an address.
    #[error("brokerIP1 `{0}` is not an IP address")]
    BadAddress(String),
    /// The epoch file cannot be used.
    #[error(transparent)]
    Epoch(#[from] crate::ha::epoch::EpochError),
    /// The role cannot start.
    #[error(transparent)]
    Role(#[from] crate::ha::RoleError),
    /// `aclEnable=true` and the ACL file cannot be used.
    #[error("aclEnable=true: {0}")]
    Acl(String),
    /// `namesrvSecretFile` cannot be read.
    #[error("namesrvSecretFile: {0}")]
    NamesrvCredentials(String),
    /// The TLS settings cannot be used.
    #[error("{0}")]
    Tls(String),
}

/// The broker.
pub struct Broker {
    /// Configuration.
    pub config: BrokerConfig,
    /// The message store.
    pub store: Arc<MessageStore>,
    /// Topic configs.
    pub topics: TopicManager,
    /// Consumer offsets.
    pub offsets: OffsetManager,
    /// Subscription groups.
    pub groups: meta::GroupManager,
    /// Connected clients.
    pub clients: ClientManager,
    /// Suspended pulls.
    pub hold: Arc<PullHold>,
    /// Orderly consumers' queue locks.
    pub locks: locks::QueueLocks,
    /// Progress of delayed delivery.
    pub delay_offsets: schedule::DelayOffsets,
    /// Unresolved transactional half messages.
    pub transactions: transaction::Transactions,
    /// Timer messages waiting for their time.
    pub timers: timer::Timers,
    /// Messages put and got (runtime info rates).
    pub throughput: ops::Throughput,
    /// VIEW_BROKER_STATS_DATA items.
    pub stats_items: stats_items::StatsItems,
    /// Prometheus metrics.
    pub metrics: crate::metrics::BrokerMetrics,
    /// Settings UPDATE_BROKER_CONFIG may change at run time.
    pub runtime: config::RuntimeSettings,
    /// Role, epoch and epoch history.
    pub role: Arc<crate::ha::RoleCell>,
    /// Replication (master side).
    pub ha: Arc<crate::ha::HaService>,
    /// The Raft node (`enableDLegerCommitLog=true`), once started.
    raft: std::sync::OnceLock<Arc<crate::raft::node::RaftNode>>,
    /// RocketMQ's plain ACL (`aclEnable=true`).
    acl: Option<Arc<crate::acl::Acl>>,
    /// ACL 2.0's users and policies (always open: the AUTH requests manage them before
    /// `authenticationEnabled`/`authorizationEnabled` put them in force).
    auth2: Arc<crate::acl2::Auth>,
    registered: std::sync::atomic::AtomicBool,
    /// The topic permission last registered (a read-only store registers without
    /// write, so routes steer producers away); -1 before the first registration.
    registered_perm: std::sync::atomic::AtomicI32,
    /// Turns of a task on the request runtime (`/healthz`).
    request_beat: crate::watchdog::Heartbeat,
    oneway_log: unsupported::OnewayLog,
    namesrv: RemotingClient,
    /// TLS to the master's HA port and Raft peers (`TlsSettings::peer`).
    peer_tls: Option<crate::remoting::tls::TlsClient>,
    topics_changed: tokio::sync::Notify,
    store_host: SocketAddr,
    queue_picker: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addr", &self.config.broker_addr())
            .finish()
    }
}

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS)
}

fn fail(req: &RemotingCommand, code: i32, remark: impl std::fmt::Display) -> RemotingCommand {
    RemotingCommand::response_to(req, code).with_remark(remark.to_string())
}

impl Broker {
    /// Opens the store and metadata. Creates `TBW102` when auto-creation is on.
    ///
    /// # Errors
    /// Store failures; a `brokerIP1` that is not an IP address.
    pub fn open(mut config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        if let Some(t) = config.tls.server().map_err(BrokerError::Tls)? {
            tracing::info!(mode = ?t.mode(), "TLS on the client and VIP ports");
            config.server.tls = Some(Arc::new(t));
        }
        let namesrv_tls = config.tls.client().map_err(BrokerError::Tls)?;
        let ip: std::net::IpAddr = config
            .broker_ip1
            .parse()
            .map_err(|_| BrokerError::BadAddress(config.broker_ip1.clone()))?;
        let store_host = SocketAddr::new(ip, config.listen_port);
        let acl = if config.acl_enable {
            let path = config.acl_path().ok_or_else(|| {
                BrokerError::Acl(
                    "no ACL file: set aclFile, or ROCKETMQ_HOME (conf/plain_acl.yml)".into(),
                )
            })?;
            let acl = crate::acl::Acl::load(&path).map_err(|e| BrokerError::Acl(e.to_string()))?;
            tracing::info!(file = %path.display(), accounts = acl.current().accounts().len(), "ACL on");
            Some(Arc::new(acl))
        } else {
            None
        };
        let auth2 = {
            let dir = config
                .auth_config_path
                .clone()
                .unwrap_or_else(|| config.store.config_dir());
            let mut settings = config.auth.clone();
            settings.cluster.clone_from(&config.broker_cluster_name);
            let a = crate::acl2::Auth::open(&dir, settings)
                .map_err(|e| BrokerError::Acl(format!("ACL 2.0 in {}: {e}", dir.display())))?;
            for (u, p) in [
                &config.init_authentication_user,
                &config.inner_client_credentials,
            ]
            .into_iter()
            .flatten()
            {
                a.ensure_super(u, p)
                    .map_err(|e| BrokerError::Acl(format!("ACL 2.0 user {u}: {e}")))?;
            }
            if a.enforcing() {
                tracing::info!(
                    authentication = config.auth.authentication,
                    authorization = config.auth.authorization,
                    dir = %dir.display(),
                    "ACL 2.0 on"
                );
            }
            Arc::new(a)
        };
        let namesrv = match (
            &config.namesrv_credentials,
            &config.inner_client_credentials,
        ) {
            (Some((ak, f)), _) => RemotingClient::signing(
                crate::auth::Credentials::from_file(ak, f)
                    .map_err(|e| BrokerError::NamesrvCredentials(e.to_string()))?,
            ),
            (None, Some((ak, sk))) => RemotingClient::signing(
                crate::auth::Credentials::new(ak, sk.as_bytes())
                    .map_err(|e| BrokerError::NamesrvCredentials(e.to_string()))?,
            ),
            (None, None) => RemotingClient::new(),
        };
        let follows = config.dledger.enabled
            || config.broker_role == BrokerRole::Slave
            || config.ha_master_address.is_some();
        let peer_tls = config.tls.peer(follows).map_err(BrokerError::Tls)?;
        let namesrv = match namesrv_tls {
            Some(t) => namesrv.with_tls(t),
            None => namesrv,
        };
        let store = MessageStore::open(config.store.clone())?;
        let cfg_dir = config.store.config_dir();
        let repair = config.store.repair;
        let topics = TopicManager::load(cfg_dir.join("topics.json"), repair)?;
        let offsets = OffsetManager::load(cfg_dir.join("consumerOffset.json"), repair)?;
        // The cluster's reply topic (request-reply), as RocketMQ creates it.
        topics.get_or_create(
            &reply::reply_topic(&config.broker_cluster_name),
            1,
            meta::PERM_RW,
        );
        if config.auto_create_topic_enable {
            topics.get_or_create(
                meta::TBW102,
                config.default_topic_queue_nums,
                meta::PERM_RWI,
            );
        }
        let groups = meta::GroupManager::load(
            cfg_dir.join("subscriptionGroup.json"),
            config.max_reconsume_times,
            repair,
        )?;
        let runtime = config::RuntimeSettings::from(&config);
        let hold = Arc::new(PullHold::default());
        {
            let hold = Arc::clone(&hold);
            store.set_arrival_listener(Arc::new(move |a| {
                hold.notify(&a.topic, a.queue_id, a.max_offset)
            }));
        }
        let metrics = crate::metrics::BrokerMetrics::default();
        {
            let h = metrics.flush_latency.clone();
            store.set_flush_observer(Arc::new(move |d| h.observe(d.as_secs_f64())));
        }
        let epochs =
            crate::ha::epoch::EpochFile::load(&config.store.store_path_root_dir.join("epochFile"))?;
        let configured = if config.dledger.enabled {
            // The Raft group decides: a follower (no writes) until the node learns
            // otherwise; the epoch is the Raft term.
            crate::ha::RoleState {
                role: BrokerRole::Slave,
                broker_id: config.dledger.follower_broker_id(),
                epoch: 0,
                master_addr: None,
                master_ha_addr: None,
            }
        } else {
            crate::ha::RoleState {
                role: config.broker_role,
                broker_id: config.broker_id,
                epoch: config.role_epoch,
                master_addr: None,
                master_ha_addr: config.ha_master_address.clone(),
            }
        };
        // Epochs only move forward: a roles file older than the role this broker last
        // took (the kubelet had not refreshed it) does not move it back.
        let record_path = crate::ha::record::path_in(&config.store.store_path_root_dir);
        let record = crate::ha::record::load(&record_path).filter(|_| !config.dledger.enabled);
        let (state, from) = crate::ha::record::starting_role(&configured, record.as_ref());
        if from == crate::ha::record::StartFrom::Record {
            tracing::warn!(
                configured_epoch = configured.epoch,
                configured_role = configured.role.name(),
                epoch = state.epoch,
                role = state.role.name(),
                master = state.master_addr.as_deref().unwrap_or(""),
                "the configured roles are older than this broker's role record; starting as recorded"
            );
        }
        let role = crate::ha::RoleCell::with_record(state, epochs, Some(record_path));
        role.persist_current()?;
        role.start_master_epoch(store.max_phy_offset())?;
        role.set_started_at(store.max_phy_offset());
        store.set_accept_appends(role.is_master());
        let ha = crate::ha::HaService::with_policy(
            Arc::clone(&store),
            Arc::clone(&role),
            config.sync_policy,
        );
        if let (true, Some(p)) = (config.ha_require_signature, &config.control_secret_file) {
            ha.require_signature(config.control_access_key.clone(), p.clone());
        }
        if let Some(t) = &config.server.tls {
            ha.use_tls(Arc::clone(t));
        }
        Ok(Arc::new(Broker {
            role,
            ha,
            raft: std::sync::OnceLock::new(),
            acl,
            auth2,
            config,
            store,
            topics,
            offsets,
            groups,
            clients: ClientManager::default(),
            hold,
            locks: locks::QueueLocks::default(),
            delay_offsets: schedule::DelayOffsets::load(cfg_dir.join("delayOffset.json"), repair)?,
            transactions: transaction::Transactions::default(),
            timers: timer::Timers::default(),
            throughput: ops::Throughput::default(),
            stats_items: stats_items::StatsItems::default(),
            metrics,
            runtime,
            registered: std::sync::atomic::AtomicBool::new(false),
            registered_perm: std::sync::atomic::AtomicI32::new(-1),
            request_beat: crate::watchdog::Heartbeat::new(
                "request runtime",
                Duration::from_secs(30),
            ),
            oneway_log: unsupported::OnewayLog::default(),
            namesrv,
            peer_tls,
            topics_changed: tokio::sync::Notify::new(),
            store_host,
            queue_picker: AtomicU64::new(0),
        }))
    }

    /// With `aclEnable`, the NO_PERMISSION answer to a request the ACL refuses (logged
    /// and counted in `ferrocket_acl_refused`).
    fn acl_refusal(&self, conn: &Connection, req: &RemotingCommand) -> Option<RemotingCommand> {
        if self.acl.is_none() && !self.auth2.enforcing() {
            return None;
        }
        // The control plane's account (the operator signing with the group's control
        // secret, `controlSecretFile`) is an admin account whatever the ACL says.
        if let Some(path) = &self.config.control_secret_file {
            if req.ext(crate::auth::ACCESS_KEY) == Some(self.config.control_access_key.as_str())
                && crate::auth::Credentials::from_file(&self.config.control_access_key, path)
                    .and_then(|c| c.verify(req))
                    .is_ok()
            {
                return None;
            }
        }
        let Some(acl) = self.acl.as_ref() else {
            let e = self.auth2.check(req, conn.peer.ip()).err()?;
            warn!(request = req.code, peer = %conn.peer, user = req.ext(crate::auth::ACCESS_KEY).unwrap_or(""), error = %e, "ACL 2.0 refused a request");
            self.metrics.acl_refused.inc();
            return Some(fail(req, response::NO_PERMISSION, e));
        };
        let e = acl.current().validate(req, conn.peer.ip()).err()?;
        warn!(request = req.code, peer = %conn.peer, access_key = req.ext(crate::auth::ACCESS_KEY).unwrap_or(""), error = %e, "ACL refused a request");
        self.metrics.acl_refused.inc();
        Some(fail(req, response::NO_PERMISSION, e))
    }

    /// The ACL admin requests (RocketMQ's codes 50–54): account create/update and
    /// delete, the global white addresses, the version and the whole file. They edit
    /// the ACL file (checked before it is written; the new version is in force at
    /// once). 50, 51, 53 and 54 need an admin account (the ACL check before this).
    fn acl_admin(&self, req: &RemotingCommand) -> RemotingCommand {
        use request::*;
        let Some(acl) = &self.acl else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "ACL is not enabled on this broker (aclEnable=false)",
            );
        };
        let list = |k: &str| -> Vec<String> {
            req.ext(k)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let text = |k: &str| req.ext(k).unwrap_or("").trim().to_owned();
        let done = match req.code {
            UPDATE_AND_CREATE_ACL_CONFIG => acl.update_account(&crate::acl::AccountConfig {
                access_key: text("accessKey"),
                secret_key: text("secretKey"),
                white_remote_address: text("whiteRemoteAddress"),
                admin: text("admin") == "true",
                default_topic_perm: text("defaultTopicPerm"),
                default_group_perm: text("defaultGroupPerm"),
                topic_perms: list("topicPerms"),
                group_perms: list("groupPerms"),
            }),
            DELETE_ACL_CONFIG => acl.delete_account(&text("accessKey")),
            UPDATE_GLOBAL_WHITE_ADDRS_CONFIG => acl.update_global_white(&list("globalWhiteAddrs")),
            GET_BROKER_CLUSTER_ACL_INFO => {
                return ok(req)
                    .with_ext("version", acl.version_json())
                    .with_ext("brokerName", &self.config.broker_name)
                    .with_ext("brokerAddr", self.config.broker_addr())
                    .with_ext("clusterName", &self.config.broker_cluster_name);
            }
            _ => match acl.config().and_then(|c| {
                serde_json::to_vec(&c).map_err(|e| crate::acl::AclError::BadRequest(e.to_string()))
            }) {
                Ok(body) => return ok(req).with_body(bytes::Bytes::from(body)),
                Err(e) => Err(e),
            },
        };
        match done {
            Ok(()) => {
                info!(
                    request = req.code,
                    account = req.ext("accessKey").unwrap_or(""),
                    "ACL file changed by an admin request"
                );
                ok(req)
            }
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// The ACL 2.0 requests (3001–3010): users and policies, stored at once and in
    /// force for the next request.
    fn auth_admin(&self, req: &RemotingCommand) -> RemotingCommand {
        use crate::acl2::AuthzError;
        match self.auth2.admin(req) {
            Ok(body) => {
                if !matches!(
                    req.code,
                    request::AUTH_GET_USER
                        | request::AUTH_LIST_USER
                        | request::AUTH_GET_ACL
                        | request::AUTH_LIST_ACL
                ) {
                    info!(
                        request = req.code,
                        by = req.ext(crate::auth::ACCESS_KEY).unwrap_or(""),
                        username = req.ext("username").unwrap_or(""),
                        subject = req.ext("subject").unwrap_or(""),
                        "ACL 2.0 changed by an AUTH request"
                    );
                }
                match body {
                    Some(b) => ok(req).with_body(bytes::Bytes::from(b)),
                    None => ok(req),
                }
            }
            Err(e) => {
                let code = match &e {
                    AuthzError::Denied(_) => response::NO_PERMISSION,
                    AuthzError::Invalid(_) => response::INVALID_PARAMETER,
                    AuthzError::System(_) => response::SYSTEM_ERROR,
                };
                fail(req, code, e)
            }
        }
    }

    /// Re-reads the ACL file every 500 ms; a changed file takes effect at once (on
    /// connections already open too), an invalid one is refused and the old one stays.
    async fn watch_acl(self: Arc<Self>) {
        let Some(acl) = self.acl.clone() else {
            return;
        };
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match acl.reload_if_changed() {
                Ok(true) => {
                    last_error.clear();
                    tracing::info!(file = %acl.path().display(), accounts = acl.current().accounts().len(), "ACL file changed: reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        warn!(error = %text, "ACL file changed but cannot be used; the previous version stays in force");
                        last_error = text;
                    }
                }
            }
        }
    }

    /// `haRequireSignature`: the control account and secret file the HA challenge is
    /// answered (slave) and checked (master) with.
    /// With TLS on this broker's ports, the TLS the slave (and a Raft member) reaches
    /// its peers with.
    pub(super) fn ha_auth(&self) -> crate::ha::HaAuth {
        crate::ha::HaAuth {
            signature: self
                .config
                .control_secret_file
                .clone()
                .filter(|_| self.config.ha_require_signature)
                .map(|p| (self.config.control_access_key.clone(), p)),
            tls: self.peer_tls.clone(),
            tls_server: self.config.server.tls.clone(),
        }
    }

    /// Whether this broker takes writes.
    pub fn is_master(&self) -> bool {
        self.role.is_master()
    }

    pub(super) fn topics_changed(&self) {
        self.topics_changed.notify_one();
    }

    /// Serves every listener (client, VIP, HA, metrics) until `shutdown` resolves, with
    /// the periodic tasks (registration every `registerNameServerPeriod` and on topic
    /// changes, offset persistence, client expiry, the slave's follower and metadata
    /// sync). Then, in order: every listener stops accepting; held pulls are answered;
    /// requests already read finish and their answers are written; the periodic tasks
    /// stop; the broker unregisters; offsets are persisted and the store flushed and
    /// closed. Nothing it started outlives it.
    pub async fn run(self: Arc<Self>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let mut tasks = schedule::spawn(&self);
        tasks.push(tokio::spawn(Arc::clone(&self).watch_acl()));
        // The request runtime's heartbeat: a task that cannot run for 30 s means every
        // worker is stuck.
        tasks.push(tokio::spawn({
            let b = Arc::clone(&self);
            async move {
                loop {
                    b.request_beat.beat();
                    if b.role.is_master() && !b.config.dledger.enabled {
                        b.ha.check_sync_state_set();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
        tasks.push(transaction::spawn(&self));
        tasks.push(timer::spawn(&self));
        tasks.extend([
            tokio::spawn({
                let b = Arc::clone(&self);
                async move {
                    let period = Duration::from_millis(
                        b.config.register_name_server_period_ms.clamp(1000, 60_000),
                    );
                    loop {
                        // A slave that does not know its master yet (it registered before
                        // the master did) asks again soon rather than a period later.
                        let st = b.role.get();
                        let wait = if !st.is_master() && st.master_ha_addr.is_none() {
                            period.min(Duration::from_secs(2))
                        } else {
                            period
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = b.topics_changed.notified() => {}
                        }
                        b.register_all().await;
                    }
                }
            }),
            tokio::spawn({
                let b = Arc::clone(&self);
                async move {
                    let mut t = tokio::time::interval(Duration::from_millis(
                        b.config.flush_consumer_offset_interval_ms.max(100),
                    ));
                    loop {
                        t.tick().await;
                        let b2 = Arc::clone(&b);
                        let _ = tokio::task::spawn_blocking(move || b2.offsets.persist()).await;
                    }
                }
            }),
            tokio::spawn({
                let (store, role, addr) = (
                    Arc::clone(&self.store),
                    Arc::clone(&self.role),
                    self.config.broker_addr(),
                );
                let raft = self.config.dledger.enabled;
                let auth = self.ha_auth();
                async move {
                    // In Raft mode the group replicates; there is no HA follower.
                    if !raft {
                        crate::ha::run_slave(store, role, addr, auth).await;
                    }
                }
            }),
            tokio::spawn({
                // A role change re-registers at once, so routes follow the new master.
                let b = Arc::clone(&self);
                async move {
                    let mut rx = b.role.subscribe();
                    while rx.changed().await.is_ok() {
                        b.topics_changed();
                    }
                }
            }),
            tokio::spawn({
                // Slaves copy the master's metadata every 10 s (first after 3 s).
                let b = Arc::clone(&self);
                async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    loop {
                        if let Err(e) = b.sync_from_master().await {
                            debug!(error = %e, "metadata sync from the master failed");
                        }
                        tokio::time::sleep(SLAVE_SYNC_PERIOD).await;
                    }
                }
            }),
            tokio::spawn({
                let b = Arc::clone(&self);
                async move {
                    let mut t = tokio::time::interval(Duration::from_secs(1));
                    let mut n = 0u64;
                    loop {
                        t.tick().await;
                        b.throughput.sample();
                        n += 1;
                        if n.is_multiple_of(10) {
                            b.stats_items.sample(n / 10);
                        }
                    }
                }
            }),
            tokio::spawn({
                let b = Arc::clone(&self);
                async move {
                    let mut t = tokio::time::interval(Duration::from_secs(10));
                    loop {
                        t.tick().await;
                        for g in b.clients.scan_expired(clients::CHANNEL_EXPIRY) {
                            b.clients.notify_changed(&g);
                        }
                    }
                }
            }),
        ]);
        if self.config.auto_created_group_expire_secs > 0 {
            let b = Arc::clone(&self);
            let expiry = Duration::from_secs(self.config.auto_created_group_expire_secs);
            let every = (expiry / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            tasks.push(tokio::spawn(async move {
                let mut idle_since = std::collections::HashMap::new();
                let mut t = tokio::time::interval(every);
                loop {
                    t.tick().await;
                    b.expire_auto_created_groups(&mut idle_since, expiry);
                }
            }));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut servers = tokio::task::JoinSet::new();
        let Listeners {
            client,
            vip,
            ha,
            metrics,
        } = listeners;
        for l in std::iter::once(client).chain(vip) {
            servers.spawn(serve(
                l,
                Arc::clone(&self),
                self.config.server.clone(),
                stopped(stop_rx.clone()),
            ));
        }
        servers.spawn(Arc::clone(&self.ha).serve(ha, stopped(stop_rx.clone())));
        if let Some(l) = metrics {
            let target: Arc<dyn crate::metrics::Observable> = self.clone();
            let http = crate::metrics::serve_http_on(l, target, stopped(stop_rx.clone()));
            servers.spawn(async move {
                let _ = http.await;
            });
        }
        shutdown.await;
        self.hand_over_on_shutdown().await;
        info!("shutting down: closing listeners, answering held pulls");
        let _ = stop_tx.send(true);
        self.hold.wake_all();
        while servers.join_next().await.is_some() {}
        for t in tasks {
            t.abort();
        }
        self.unregister_all().await;
        if let Some(node) = self.raft.get() {
            // No entry lands in the store once it closes.
            let _ = node.raft().shutdown().await;
        }
        let b = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || b.close()).await;
    }

    /// Persists offsets and shuts the store down cleanly.
    pub fn close(&self) {
        self.persist_transaction_progress();
        self.persist_timer_progress();
        self.offsets.persist();
        self.delay_offsets.persist();
        self.store.shutdown();
        info!("broker stopped");
    }

    /// What this broker can vouch for: the end of the CommitLog it holds (every byte
    /// CRC-checked, on a slave as received from the master); in Raft mode, the end of
    /// the committed entries it applied.
    pub fn confirmed_offset(&self) -> u64 {
        match self.raft_node() {
            // Raft mode: what a majority holds and this member applied (its CommitLog
            // may hold an uncommitted tail the leader's log will replace).
            Some(n) => n.glue().applied(),
            None => self.store.max_phy_offset(),
        }
    }

    /// The routing table: one line per request code, to its family's processor.
    async fn process(
        self: Arc<Self>,
        conn: Arc<Connection>,
        req: RemotingCommand,
    ) -> RemotingCommand {
        use request::*;
        if let Some(refusal) = self.acl_refusal(&conn, &req) {
            return refusal;
        }
        match req.code {
            SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => self.send(&conn, &req).await,
            SEND_REPLY_MESSAGE | SEND_REPLY_MESSAGE_V2 => self.send_reply(&conn, &req).await,
            PULL_MESSAGE | LITE_PULL_MESSAGE => self.pull(&req).await,
            HEART_BEAT => self.heartbeat(&conn, &req),
            UNREGISTER_CLIENT => self.unregister_client(&req),
            GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(&req),
            LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => self.lock_batch(&req),
            QUERY_CONSUMER_OFFSET => self.query_offset(&req),
            UPDATE_CONSUMER_OFFSET => self.update_offset(&req),
            CONSUMER_SEND_MSG_BACK => self.send_back(&req).await,
            QUERY_MESSAGE => self.query_message(&req),
            VIEW_MESSAGE_BY_ID => self.view_message(&req),
            GET_MAX_OFFSET
            | GET_MIN_OFFSET
            | SEARCH_OFFSET_BY_TIMESTAMP
            | GET_EARLIEST_MSG_STORETIME => self.offset_queries(&req),
            UPDATE_AND_CREATE_TOPIC => self.create_topic(&req),
            DELETE_TOPIC_IN_BROKER => self.delete_topic(&req),
            UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => self.upsert_group(&req),
            GET_ALL_TOPIC_CONFIG
            | GET_ALL_SUBSCRIPTIONGROUP_CONFIG
            | GET_ALL_CONSUMER_OFFSET
            | GET_ALL_DELAY_OFFSET => self.all_tables(&req),
            GET_BROKER_CONFIG => self.broker_config(&req),
            UPDATE_BROKER_CONFIG => self.update_broker_config(&req),
            GET_BROKER_RUNTIME_INFO => self.runtime_info_response(&req),
            GET_TOPIC_STATS_INFO | GET_CONSUME_STATS | GET_CONSUMER_CONNECTION_LIST => {
                self.stats(&req)
            }
            ROLE_CHANGE => self.role_change(&req),
            CONFIRM_SYNC_STATE_SET => self.confirm_sync_state_set(&req),
            RAFT_TRANSFER_LEADER => self.raft_transfer_leader(&req).await,
            RAFT_ADD_MEMBER | RAFT_REMOVE_MEMBER => self.raft_change_member(&req).await,
            CHECK_CLIENT_CONFIG => self.check_client_config(&req),
            UPDATE_AND_CREATE_ACL_CONFIG
            | DELETE_ACL_CONFIG
            | GET_BROKER_CLUSTER_ACL_INFO
            | UPDATE_GLOBAL_WHITE_ADDRS_CONFIG
            | GET_BROKER_CLUSTER_ACL_CONFIG => self.acl_admin(&req),
            AUTH_CREATE_USER..=AUTH_LIST_ACL => self.auth_admin(&req),
            END_TRANSACTION => self.end_transaction(&req).await,
            GET_TOPIC_CONFIG
            | QUERY_TOPIC_CONSUME_BY_WHO
            | GET_PRODUCER_CONNECTION_LIST
            | DELETE_SUBSCRIPTIONGROUP
            | CLONE_GROUP_OFFSET
            | GET_BROKER_CONSUME_STATS
            | QUERY_CONSUME_QUEUE
            | GET_CONSUMER_RUNNING_INFO
            | CONSUME_MESSAGE_DIRECTLY
            | INVOKE_BROKER_TO_RESET_OFFSET
            | VIEW_BROKER_STATS_DATA => self.ops(&req).await,
            code => {
                if req.is_oneway() {
                    self.oneway_log.unknown(code, &conn.peer);
                }
                fail(
                    &req,
                    response::REQUEST_CODE_NOT_SUPPORTED,
                    format!("request code {code} not supported"),
                )
            }
        }
    }
}

impl crate::metrics::Observable for Broker {
    fn metrics(&self) -> String {
        let m = &self.metrics;
        m.store_max_offset.set(self.store.max_phy_offset() as i64);
        m.store_read_only.set(i64::from(self.store.is_read_only()));
        let st = &self.config.server.stats;
        for (limit, count) in [
            ("connections", &st.refused_connections),
            ("idle", &st.idle_closed),
            ("frame_deadline", &st.slow_frames),
            ("in_flight", &st.busy_answers),
        ] {
            m.server_limits
                .get_or_create(&vec![("limit".to_string(), limit.to_string())])
                .set(
                    i64::try_from(count.load(std::sync::atomic::Ordering::Relaxed))
                        .unwrap_or(i64::MAX),
                );
        }
        m.server_pending_response_bytes.set(
            i64::try_from(
                st.pending_response_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .unwrap_or(i64::MAX),
        );
        m.store_dispatch_blocked
            .set(i64::from(self.store.dispatch_blocked().is_some()));
        m.store_transient_failures
            .set(i64::try_from(self.store.transient_problem().1).unwrap_or(i64::MAX));
        let role = self.role.get();
        m.role_epoch.set(role.epoch);
        m.is_master.set(i64::from(role.is_master()));
        m.ha_slaves.set(self.ha.slave_count() as i64);
        m.ha_slave_lag
            .set(i64::try_from(self.ha.slave_lag()).unwrap_or(i64::MAX));
        m.store_min_offset.set(self.store.min_phy_offset() as i64);
        let (flushes, micros) = self.store.commitlog().flush_stats();
        m.store_flushes.set(flushes as i64);
        m.store_flush_micros.set(micros as i64);
        m.long_polling_waiters.set(self.hold.waiting() as i64);
        for (key, queues) in self.offsets.snapshot().offset_table {
            let Some((topic, group)) = key.split_once('@') else {
                continue;
            };
            let lag: i64 = queues
                .iter()
                .map(|(q, committed)| {
                    (self.store.max_offset_in_queue(topic, *q) - committed).max(0)
                })
                .sum();
            m.consumer_lag
                .get_or_create(&vec![
                    ("group".to_string(), group.to_owned()),
                    ("topic".to_string(), topic.to_owned()),
                ])
                .set(lag);
        }
        m.encode()
    }

    /// Registered with a name server (or configured without one), and: a master not
    /// superseded by a newer one; a slave that has followed its master to within
    /// `haMaxGapNotInSync` and can follow it.
    fn ready(&self) -> bool {
        let registered =
            self.registered.load(Ordering::Acquire) || self.runtime.namesrvs().is_empty();
        let role_ok = if self.role.is_master() {
            self.role.superseded().is_none() && self.store.takes_writes()
        } else {
            self.role.slave_in_sync(self.store.max_phy_offset())
        };
        registered && role_ok
    }

    /// The request runtime, the flush thread and the dispatch thread all turn.
    fn health(&self) -> Result<(), String> {
        let beats = self.store.heartbeats();
        crate::watchdog::verdict([&self.request_beat, beats[0], beats[1]])
    }
}

impl RequestHandler for Broker {
    fn handle(self: Arc<Self>, conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture {
        Box::pin(async move { Some(self.process(conn, req).await) })
    }

    fn on_open(&self, _conn: &Arc<Connection>) {
        self.metrics.connections.inc();
    }

    /// Everything but the data path: sends, pulls, the consumer's own bookkeeping
    /// (heartbeats, offsets, queue locks, rebalancing lookups) and transaction ends.
    fn is_control(&self, code: i32) -> bool {
        use request::*;
        !matches!(
            code,
            SEND_MESSAGE
                | SEND_MESSAGE_V2
                | SEND_BATCH_MESSAGE
                | SEND_REPLY_MESSAGE
                | SEND_REPLY_MESSAGE_V2
                | PULL_MESSAGE
                | LITE_PULL_MESSAGE
                | HEART_BEAT
                | UNREGISTER_CLIENT
                | GET_CONSUMER_LIST_BY_GROUP
                | LOCK_BATCH_MQ
                | UNLOCK_BATCH_MQ
                | QUERY_CONSUMER_OFFSET
                | UPDATE_CONSUMER_OFFSET
                | CONSUMER_SEND_MSG_BACK
                | GET_MAX_OFFSET
                | GET_MIN_OFFSET
                | SEARCH_OFFSET_BY_TIMESTAMP
                | GET_EARLIEST_MSG_STORETIME
                | CHECK_CLIENT_CONFIG
                | END_TRANSACTION
        )
    }

    fn is_heavy(&self, code: i32) -> bool {
        matches!(
            code,
            request::GET_ALL_TOPIC_CONFIG
                | request::GET_ALL_CONSUMER_OFFSET
                | request::GET_ALL_DELAY_OFFSET
                | request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG
                | request::GET_TOPIC_STATS_INFO
                | request::GET_CONSUME_STATS
                | request::GET_CONSUMER_CONNECTION_LIST
                | request::GET_BROKER_RUNTIME_INFO
                | request::GET_BROKER_CONFIG
                | request::QUERY_MESSAGE
        )
    }

    fn on_close(&self, conn: &Arc<Connection>) {
        self.metrics.connections.dec();
        for id in self.clients.client_ids_on(conn.id) {
            self.locks.unlock_client(&id);
        }
        for g in self.clients.connection_closed(conn.id) {
            self.clients.notify_changed(&g);
        }
    }
}
