//! The broker: request processors over the store, client and topic bookkeeping, name
//! server registration. Processors turn every error into a RocketMQ response code here,
//! in one place per request family.

pub mod clients;
pub mod config;
pub mod locks;
pub mod long_poll;
pub mod meta;
pub mod schedule;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::protocol::{
    parse_body, to_body, ConsumerIdList, HeartbeatData, RegisterBrokerBody, SubscriptionData,
    TopicConfigSerializeWrapper,
};
use crate::remoting::codes::{request, response};
use crate::remoting::{
    serve, Connection, RemotingClient, RemotingCommand, RemotingError, RequestHandler,
    ResponseFuture, ServerConfig,
};
use crate::store::metadata::TopicConfig;
use crate::store::{
    find_property, BoundaryType, GetMessageStatus, MessageStore, MessageToStore, StoreError,
};

pub use clients::ClientManager;
pub use config::{BrokerConfig, BrokerRole, ConfigError};
pub use long_poll::PullHold;
pub use meta::{OffsetManager, TopicManager};

/// Physical memory (`MemTotal`), read once; 8 GiB when unknown.
fn total_memory_bytes() -> u64 {
    static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(8 << 30, |kb| kb * 1024)
    })
}

/// How often a slave copies the master's metadata.
pub const SLAVE_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// `PullSysFlag` bits.
mod pull_flag {
    pub const COMMIT_OFFSET: i32 = 0x1;
    pub const SUSPEND: i32 = 0x2;
    pub const SUBSCRIPTION: i32 = 0x4;
}

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
    /// Prometheus metrics.
    pub metrics: crate::metrics::BrokerMetrics,
    /// Settings UPDATE_BROKER_CONFIG may change at run time.
    pub runtime: config::RuntimeSettings,
    /// Role, epoch and epoch history.
    pub role: Arc<crate::ha::RoleCell>,
    /// Replication (master side).
    pub ha: Arc<crate::ha::HaService>,
    registered: std::sync::atomic::AtomicBool,
    namesrv: RemotingClient,
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

/// The offset message id: store host IP, port and physical offset, upper-case hex.
pub fn offset_msg_id(store_host: SocketAddr, phys: u64) -> String {
    use std::fmt::Write;
    let mut bytes = Vec::with_capacity(28);
    match store_host.ip() {
        std::net::IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&i32::from(store_host.port()).to_be_bytes());
    bytes.extend_from_slice(&phys.to_be_bytes());
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Decodes an offset message id into its store host and physical offset.
pub fn decode_offset_msg_id(id: &str) -> Option<(SocketAddr, u64)> {
    let raw: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(id.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let (ip, rest): (std::net::IpAddr, &[u8]) = match raw.len() {
        16 => (
            std::net::IpAddr::from(<[u8; 4]>::try_from(&raw[..4]).ok()?),
            &raw[4..],
        ),
        28 => (
            std::net::IpAddr::from(<[u8; 16]>::try_from(&raw[..16]).ok()?),
            &raw[16..],
        ),
        _ => return None,
    };
    let port = u16::try_from(i32::from_be_bytes(rest[..4].try_into().ok()?)).ok()?;
    let phys = u64::from_be_bytes(rest[4..12].try_into().ok()?);
    Some((SocketAddr::new(ip, port), phys))
}

/// A decoded send header (V1 long names or V2 letters).
#[derive(Debug, Clone)]
struct SendHeader {
    producer_group: String,
    topic: String,
    default_topic_queue_nums: i32,
    queue_id: i32,
    sys_flag: i32,
    born_timestamp: i64,
    flag: i32,
    properties: String,
    reconsume_times: i32,
}

fn parse_send_header(req: &RemotingCommand) -> Result<SendHeader, RemotingError> {
    let v1 = req.code == request::SEND_MESSAGE;
    let k = |long: &'static str, short: &'static str| if v1 { long } else { short };
    Ok(SendHeader {
        producer_group: req.ext(k("producerGroup", "a")).unwrap_or("").to_owned(),
        topic: req.ext_required(k("topic", "b"))?.to_owned(),
        default_topic_queue_nums: req
            .ext_num_opt(k("defaultTopicQueueNums", "d"))?
            .unwrap_or(4),
        queue_id: req.ext_num(k("queueId", "e"))?,
        sys_flag: req.ext_num_opt(k("sysFlag", "f"))?.unwrap_or(0),
        born_timestamp: req.ext_num_opt(k("bornTimestamp", "g"))?.unwrap_or(0),
        flag: req.ext_num_opt(k("flag", "h"))?.unwrap_or(0),
        properties: req.ext(k("properties", "i")).unwrap_or("").to_owned(),
        reconsume_times: req.ext_num_opt(k("reconsumeTimes", "j"))?.unwrap_or(0),
    })
}

/// Splits a SEND_BATCH_MESSAGE body into `(flag, body, properties)` per message.
fn decode_batch(mut buf: Bytes) -> Result<Vec<(i32, Bytes, String)>, String> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        if buf.remaining() < 20 {
            return Err("truncated batch entry".into());
        }
        let total = buf.get_i32();
        let _magic = buf.get_i32();
        let _crc = buf.get_i32();
        let flag = buf.get_i32();
        let body_len = usize::try_from(buf.get_i32()).map_err(|_| "negative body length")?;
        if buf.remaining() < body_len + 2 {
            return Err("batch body runs past the frame".into());
        }
        let body = buf.split_to(body_len);
        let props_len = usize::try_from(buf.get_i16()).map_err(|_| "negative properties length")?;
        if buf.remaining() < props_len {
            return Err("batch properties run past the frame".into());
        }
        let props = String::from_utf8(buf.split_to(props_len).to_vec())
            .map_err(|_| "properties are not UTF-8")?;
        if usize::try_from(total).ok() != Some(20 + body_len + 2 + props_len) {
            return Err("batch entry size does not match its fields".into());
        }
        out.push((flag, body, props));
    }
    Ok(out)
}

impl Broker {
    /// Opens the store and metadata. Creates `TBW102` when auto-creation is on.
    ///
    /// # Errors
    /// Store failures; a `brokerIP1` that is not an IP address.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let ip: std::net::IpAddr = config
            .broker_ip1
            .parse()
            .map_err(|_| BrokerError::BadAddress(config.broker_ip1.clone()))?;
        let store_host = SocketAddr::new(ip, config.listen_port);
        let store = MessageStore::open(config.store.clone())?;
        let cfg_dir = config.store.config_dir();
        let topics = TopicManager::load(cfg_dir.join("topics.json"));
        let offsets = OffsetManager::load(cfg_dir.join("consumerOffset.json"));
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
        );
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
        let master_ha = config.ha_master_address.clone();
        let role = crate::ha::RoleCell::new(
            crate::ha::RoleState {
                role: config.broker_role,
                broker_id: config.broker_id,
                epoch: config.role_epoch,
                master_addr: None,
                master_ha_addr: master_ha,
            },
            epochs,
        );
        role.start_master_epoch(store.max_phy_offset())?;
        role.set_started_at(store.max_phy_offset());
        let ha = crate::ha::HaService::new(Arc::clone(&store), Arc::clone(&role));
        Ok(Arc::new(Broker {
            role,
            ha,
            config,
            store,
            topics,
            offsets,
            groups,
            clients: ClientManager::default(),
            hold,
            locks: locks::QueueLocks::default(),
            delay_offsets: schedule::DelayOffsets::load(cfg_dir.join("delayOffset.json")),
            metrics,
            runtime,
            registered: std::sync::atomic::AtomicBool::new(false),
            namesrv: RemotingClient::new(),
            topics_changed: tokio::sync::Notify::new(),
            store_host,
            queue_picker: AtomicU64::new(0),
        }))
    }

    /// Whether this broker takes writes.
    pub fn is_master(&self) -> bool {
        self.role.is_master()
    }

    /// Registers with every name server; returns how many accepted.
    pub async fn register_all(&self) -> usize {
        let mut snapshot = self.topics.snapshot();
        // As RocketMQ: a broker without read or write permission registers its topics
        // without it, so routes steer clients away.
        let perm = self
            .runtime
            .permission
            .load(std::sync::atomic::Ordering::Relaxed);
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
        for ns in &self.config.namesrv_addr {
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
                    warn!(namesrv = %ns, code = r.code, remark = ?r.remark, "registration refused")
                }
                Err(e) => warn!(namesrv = %ns, error = %e, "registration failed"),
            }
        }
        accepted
    }

    async fn unregister_all(&self) {
        for ns in &self.config.namesrv_addr {
            let cmd = RemotingCommand::request(request::UNREGISTER_BROKER)
                .with_ext("brokerName", &self.config.broker_name)
                .with_ext("brokerAddr", self.config.broker_addr())
                .with_ext("clusterName", &self.config.broker_cluster_name)
                .with_ext("brokerId", self.role.read(|r| r.broker_id));
            let _ = self.namesrv.invoke(ns, cmd, Duration::from_secs(2)).await;
        }
    }

    fn topics_changed(&self) {
        self.topics_changed.notify_one();
    }

    /// Serves on `listener` until `shutdown` resolves, with the periodic tasks
    /// (registration every `registerNameServerPeriod` and on topic changes, offset
    /// persistence, client expiry). Flushes and persists before returning.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut tasks = schedule::spawn(&self);
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
            tokio::spawn(crate::ha::run_slave(
                Arc::clone(&self.store),
                Arc::clone(&self.role),
            )),
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
        serve(
            listener,
            Arc::clone(&self),
            ServerConfig::default(),
            shutdown,
        )
        .await;
        for t in tasks {
            t.abort();
        }
        self.unregister_all().await;
        let b = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || b.close()).await;
    }

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

    /// Persists offsets and shuts the store down cleanly.
    pub fn close(&self) {
        self.offsets.persist();
        self.delay_offsets.persist();
        self.store.shutdown();
        info!("broker stopped");
    }

    async fn process(
        self: Arc<Self>,
        conn: Arc<Connection>,
        req: RemotingCommand,
    ) -> RemotingCommand {
        match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                self.send(&conn, &req).await
            }
            request::PULL_MESSAGE | request::LITE_PULL_MESSAGE => self.pull(&req).await,
            request::HEART_BEAT => self.heartbeat(&conn, &req),
            request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ => self.lock_batch(&req),
            request::CONSUMER_SEND_MSG_BACK => self.send_back(&req).await,
            request::QUERY_MESSAGE => self.query_message(&req),
            request::UNREGISTER_CLIENT => {
                if let Some(id) = req.ext("clientID") {
                    self.locks.unlock_client(id);
                }
                let changed = self.clients.unregister(
                    req.ext("clientID").unwrap_or(""),
                    req.ext("consumerGroup"),
                    req.ext("producerGroup"),
                );
                for g in changed {
                    self.clients.notify_changed(&g);
                }
                ok(&req)
            }
            request::GET_CONSUMER_LIST_BY_GROUP => match req.ext_required("consumerGroup") {
                Ok(g) => {
                    let ids = self.clients.consumer_ids(g);
                    if ids.is_empty() {
                        fail(
                            &req,
                            response::SYSTEM_ERROR,
                            format!("no consumer in group {g}"),
                        )
                    } else {
                        ok(&req).with_body(to_body(&ConsumerIdList {
                            consumer_id_list: ids,
                        }))
                    }
                }
                Err(e) => fail(&req, response::SYSTEM_ERROR, e),
            },
            request::QUERY_CONSUMER_OFFSET => self.query_offset(&req),
            request::UPDATE_CONSUMER_OFFSET => self.update_offset(&req),
            request::GET_MAX_OFFSET
            | request::GET_MIN_OFFSET
            | request::SEARCH_OFFSET_BY_TIMESTAMP
            | request::GET_EARLIEST_MSG_STORETIME => self.offset_queries(&req),
            request::UPDATE_AND_CREATE_TOPIC => self.create_topic(&req),
            request::GET_ALL_TOPIC_CONFIG => ok(&req).with_body(to_body(&self.topics.snapshot())),
            request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => {
                ok(&req).with_body(to_body(&self.groups.snapshot()))
            }
            request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
                match parse_body::<crate::store::metadata::SubscriptionGroupConfig>(
                    &req.body_bytes(),
                ) {
                    Ok(g) if !g.group_name.is_empty() => {
                        info!(group = %g.group_name, "subscription group created or updated");
                        self.groups.upsert(g);
                        ok(&req)
                    }
                    Ok(_) => fail(&req, response::SYSTEM_ERROR, "groupName is required"),
                    Err(e) => fail(&req, response::SYSTEM_ERROR, format!("bad group body: {e}")),
                }
            }
            request::GET_BROKER_RUNTIME_INFO => ok(&req).with_body(to_body(&self.runtime_info())),
            request::ROLE_CHANGE => self.role_change(&req),
            request::GET_TOPIC_STATS_INFO
            | request::GET_CONSUME_STATS
            | request::GET_CONSUMER_CONNECTION_LIST => self.stats(&req),
            request::GET_BROKER_CONFIG => {
                let mut current = self.config.clone();
                self.runtime.apply_to(&mut current);
                let role = self.role.get();
                current.broker_role = role.role;
                current.broker_id = role.broker_id;
                current.role_epoch = role.epoch;
                ok(&req).with_body(Bytes::from(current.to_properties()))
            }
            request::UPDATE_BROKER_CONFIG => {
                let props = config::parse_properties(&String::from_utf8_lossy(&req.body_bytes()));
                match self.runtime.update(&props) {
                    Ok(()) => {
                        info!(?props, "broker configuration updated");
                        if props.contains_key("brokerPermission") {
                            // The routes must show the new permission now.
                            self.topics.bump_version();
                            self.topics_changed();
                        }
                        ok(&req)
                    }
                    Err(e) => fail(&req, response::SYSTEM_ERROR, e),
                }
            }
            request::GET_ALL_CONSUMER_OFFSET => {
                ok(&req).with_body(to_body(&self.offsets.snapshot()))
            }
            request::GET_ALL_DELAY_OFFSET => {
                ok(&req).with_body(to_body(&self.delay_offsets.snapshot()))
            }
            request::DELETE_TOPIC_IN_BROKER => match req.ext_required("topic") {
                Ok(t) if t == meta::TBW102 || t == crate::store::SCHEDULE_TOPIC => fail(
                    &req,
                    response::SYSTEM_ERROR,
                    format!("system topic {t} cannot be deleted"),
                ),
                Ok(t) => {
                    if self.topics.delete(t) {
                        self.offsets.delete_topic(t);
                        self.store.delete_topic(t);
                        info!(topic = %t, "topic deleted");
                        self.topics_changed();
                    }
                    ok(&req)
                }
                Err(e) => fail(&req, response::SYSTEM_ERROR, e),
            },
            request::VIEW_MESSAGE_BY_ID => match req.ext_num::<u64>("offset") {
                Ok(off) => match self.store.read_message(off) {
                    Some(rec) => ok(&req).with_body(rec),
                    None => fail(
                        &req,
                        response::SYSTEM_ERROR,
                        format!("no message at offset {off}"),
                    ),
                },
                Err(e) => fail(&req, response::SYSTEM_ERROR, e),
            },
            code => fail(
                &req,
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!("request code {code} not supported"),
            ),
        }
    }

    fn resolve_topic_for_send(&self, h: &SendHeader) -> Result<TopicConfig, (i32, String)> {
        if let Err(e) = meta::validate_topic(&h.topic) {
            return Err((response::MESSAGE_ILLEGAL, e));
        }
        if h.topic == meta::TBW102 {
            return Err((
                response::MESSAGE_ILLEGAL,
                "the default topic cannot take messages".into(),
            ));
        }
        if let Some(tc) = self.topics.get(&h.topic) {
            return Ok(tc);
        }
        let retry = h.topic.starts_with("%RETRY%") || h.topic.starts_with("%DLQ%");
        if !self.runtime.auto_create_topic.load(Ordering::Relaxed) && !retry {
            return Err((
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", h.topic),
            ));
        }
        let queues = if retry {
            1
        } else {
            h.default_topic_queue_nums
                .clamp(1, self.config.default_topic_queue_nums.max(1))
        };
        let (tc, created) = self.topics.get_or_create(&h.topic, queues, meta::PERM_RW);
        if created {
            info!(topic = %h.topic, queues, "topic auto-created");
            self.topics_changed();
        }
        Ok(tc)
    }

    /// The answer to a write this broker does not take: a slave's, or (RocketMQ's
    /// wording, so the client moves on to another broker) one without write permission.
    fn refuse_writes(&self, req: &RemotingCommand) -> Option<RemotingCommand> {
        if !self.is_master() {
            return Some(fail(
                req,
                response::SERVICE_NOT_AVAILABLE,
                "this broker is a slave and takes no writes",
            ));
        }
        if !self.runtime.writable() {
            return Some(fail(
                req,
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] sending message is forbidden",
                    self.config.broker_addr()
                ),
            ));
        }
        None
    }

    async fn send(&self, conn: &Connection, req: &RemotingCommand) -> RemotingCommand {
        let started = std::time::Instant::now();
        let resp = self.send_inner(conn, req).await;
        self.metrics
            .send_latency
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn send_inner(&self, conn: &Connection, req: &RemotingCommand) -> RemotingCommand {
        if let Some(refused) = self.refuse_writes(req) {
            return refused;
        }
        let h = match parse_send_header(req) {
            Ok(h) => h,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let tc = match self.resolve_topic_for_send(&h) {
            Ok(tc) => tc,
            Err((code, remark)) => return fail(req, code, remark),
        };
        if tc.perm & 0x2 == 0 {
            return fail(
                req,
                response::NO_PERMISSION,
                format!("topic {} is not writable", h.topic),
            );
        }
        let queue_id = if h.queue_id < 0 {
            (self.queue_picker.fetch_add(1, Ordering::Relaxed) % tc.write_queue_nums.max(1) as u64)
                as i32
        } else {
            h.queue_id
        };
        if queue_id >= tc.write_queue_nums.max(1) {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!(
                    "queueId {queue_id} is out of range for topic {} ({} queues)",
                    h.topic, tc.write_queue_nums
                ),
            );
        }
        let body = req.body_bytes();
        if body.len() > self.config.store.max_message_size {
            return fail(
                req,
                response::MESSAGE_ILLEGAL,
                format!(
                    "message body of {} bytes exceeds maxMessageSize {}",
                    body.len(),
                    self.config.store.max_message_size
                ),
            );
        }
        let template = MessageToStore {
            topic: h.topic.clone(),
            queue_id,
            flag: h.flag,
            sys_flag: h.sys_flag,
            born_timestamp: h.born_timestamp,
            born_host: conn.peer,
            store_host: self.store_host,
            reconsume_times: h.reconsume_times,
            prepared_transaction_offset: 0,
            body: Bytes::new(),
            properties: String::new(),
        };
        let msgs: Vec<MessageToStore> = if req.code == request::SEND_BATCH_MESSAGE {
            let items = match decode_batch(body) {
                Ok(items) if !items.is_empty() => items,
                Ok(_) => return fail(req, response::MESSAGE_ILLEGAL, "empty batch"),
                Err(e) => return fail(req, response::MESSAGE_ILLEGAL, e),
            };
            items
                .into_iter()
                .map(|(flag, body, props)| MessageToStore {
                    flag,
                    body,
                    properties: props + &h.properties,
                    ..template.clone()
                })
                .collect()
        } else {
            let mut m = MessageToStore {
                body,
                properties: h.properties.clone(),
                ..template
            };
            let t = m.sys_flag & crate::store::format::sys_flag::TRANSACTION_TYPE_MASK;
            if t != crate::store::format::sys_flag::TRANSACTION_PREPARED
                && t != crate::store::format::sys_flag::TRANSACTION_ROLLBACK
            {
                schedule::apply_delay(&mut m, self.store.delay_levels_ms().len());
            }
            vec![m]
        };
        let uniq = (req.code != request::SEND_BATCH_MESSAGE)
            .then(|| find_property(&h.properties, "UNIQ_KEY").map(str::to_owned))
            .flatten();
        let result = match self.store.append_messages(&msgs) {
            Ok(r) => r,
            Err(e @ StoreError::Message(_)) => return fail(req, response::MESSAGE_ILLEGAL, e),
            Err(e) => {
                warn!(error = %e, "append failed");
                return fail(
                    req,
                    response::SERVICE_NOT_AVAILABLE,
                    format!("service not available now: {e}"),
                );
            }
        };
        self.ha.notify_new_data();
        let code = match self.await_acknowledged(&msgs, &result).await {
            Ok(code) => code,
            Err(e) => {
                warn!(error = %e, "flush failed");
                return fail(
                    req,
                    response::SERVICE_NOT_AVAILABLE,
                    format!("service not available now: {e}"),
                );
            }
        };
        debug!(producer = %h.producer_group, topic = %h.topic, queue_id, "stored");
        let labels = vec![("topic".to_string(), h.topic.clone())];
        self.metrics
            .messages_in
            .get_or_create(&labels)
            .inc_by(msgs.len() as u64);
        self.metrics
            .bytes_in
            .get_or_create(&labels)
            .inc_by(msgs.iter().map(|m| m.body.len() as u64).sum());
        let ids: Vec<String> = result
            .physical_offsets
            .iter()
            .map(|p| offset_msg_id(self.store_host, *p))
            .collect();
        let mut resp = RemotingCommand::response_to(req, code)
            .with_ext("msgId", ids.join(","))
            .with_ext("queueId", queue_id)
            .with_ext("queueOffset", result.queue_offset);
        if let Some(u) = uniq {
            resp = resp.with_ext("transactionId", u);
        }
        resp
    }

    /// The second half of a send: the disk flush (SYNC_FLUSH) and, on a SYNC_MASTER, a
    /// slave's acknowledgement, awaited together. Returns the response code.
    async fn await_acknowledged(
        &self,
        msgs: &[MessageToStore],
        result: &crate::store::PutResult,
    ) -> Result<i32, StoreError> {
        let sync_master = self.role.role() == BrokerRole::SyncMaster;
        let timeout = Duration::from_millis(self.config.store.sync_flush_timeout_ms.max(1));
        let replicate = async {
            if sync_master && crate::store::wait_requested(msgs) {
                self.ha.wait_for_slave(result.end_offset, timeout).await
            } else {
                Ok(())
            }
        };
        let (flushed, replicated) = tokio::join!(self.store.await_durable(msgs, result), replicate);
        match flushed {
            Ok(()) => {}
            Err(StoreError::FlushTimeout { .. }) => return Ok(response::FLUSH_DISK_TIMEOUT),
            Err(e) => return Err(e),
        }
        Ok(match replicated {
            Ok(()) => response::SUCCESS,
            Err(crate::ha::SyncError::SlaveNotAvailable) => response::SLAVE_NOT_AVAILABLE,
            Err(crate::ha::SyncError::Timeout) => response::FLUSH_SLAVE_TIMEOUT,
        })
    }

    /// `suggestWhichBrokerId` of a pull answer. With `slaveReadEnable`, a master points
    /// readers of cold data (further behind the CommitLog head than
    /// `accessMessageInMemoryMaxRatio` % of RAM) at `whichBrokerWhenConsumeSlowly`, and a
    /// slave points readers of hot data back at the master (0). Otherwise 0.
    fn suggest_broker(&self, records: &[Bytes]) -> i64 {
        if !self.config.slave_read_enable {
            return 0;
        }
        let (is_master, id) = self.role.read(|r| (r.is_master(), r.broker_id));
        let Some(first) = records.first() else {
            return if is_master { 0 } else { id };
        };
        let pos = crate::store::message::POS_PHYSICAL_OFFSET;
        let phys = first
            .get(pos..pos + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, |b| u64::try_from(i64::from_be_bytes(b)).unwrap_or(0));
        let behind = self.store.max_phy_offset().saturating_sub(phys);
        let in_memory = total_memory_bytes()
            .saturating_mul(self.config.access_message_in_memory_max_ratio)
            / 100;
        let cold = behind > in_memory;
        match (is_master, cold) {
            (true, true) => self.config.which_broker_when_consume_slowly,
            (true, false) | (false, false) => 0,
            (false, true) => id,
        }
    }

    /// What this broker can vouch for: the end of the CommitLog it holds (every byte
    /// CRC-checked, on a slave as received from the master).
    pub fn confirmed_offset(&self) -> u64 {
        self.store.max_phy_offset()
    }

    /// Handles a role change (`ROLE_CHANGE`): `role=master|slave`, `epoch`, and for a
    /// slave `masterAddr` (optionally `masterHaAddr`, `brokerId`).
    fn role_change(&self, req: &RemotingCommand) -> RemotingCommand {
        let epoch: i64 = match req.ext_num("epoch") {
            Ok(e) => e,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
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
                let acked = self.ha.acked_offset();
                let r = self.role.demote(epoch, id, master, req.ext("masterHaAddr"));
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
            }
            Err(e) => {
                warn!(error = %e, "role change refused");
                fail(req, response::SYSTEM_ERROR, e)
            }
        }
    }

    fn subscription_for_pull(
        &self,
        req: &RemotingCommand,
        group: &str,
        topic: &str,
        sys_flag: i32,
    ) -> Result<SubscriptionData, RemotingCommand> {
        if sys_flag & pull_flag::SUBSCRIPTION != 0 {
            let expr = req.ext("subscription").unwrap_or("*");
            if req
                .ext("expressionType")
                .is_some_and(|t| !t.eq_ignore_ascii_case("TAG"))
            {
                return Err(fail(
                    req,
                    response::SUBSCRIPTION_PARSE_FAILED,
                    "only TAG expressions are supported",
                ));
            }
            return Ok(SubscriptionData::from_expression(topic, expr, 0));
        }
        match self.clients.subscription(group, topic) {
            Some(s) => {
                let wanted: i64 = req.ext_num_opt("subVersion").ok().flatten().unwrap_or(0);
                if s.sub_version < wanted {
                    return Err(fail(
                        req,
                        response::SUBSCRIPTION_NOT_LATEST,
                        "the consumer's subscription is not latest",
                    ));
                }
                Ok(s)
            }
            None => Err(fail(
                req,
                response::SUBSCRIPTION_NOT_EXIST,
                format!("the consumer's subscription not exist, group: {group}"),
            )),
        }
    }

    async fn pull(&self, req: &RemotingCommand) -> RemotingCommand {
        let started = std::time::Instant::now();
        let resp = self.pull_inner(req).await;
        self.metrics
            .pull_latency
            .observe(started.elapsed().as_secs_f64());
        if resp.code == response::SUCCESS {
            if let Some(topic) = req.ext("topic") {
                let labels = vec![("topic".to_string(), topic.to_owned())];
                self.metrics
                    .messages_out
                    .get_or_create(&labels)
                    .inc_by(resp.body.len() as u64);
                self.metrics
                    .bytes_out
                    .get_or_create(&labels)
                    .inc_by(resp.body_len() as u64);
            }
        }
        resp
    }

    async fn pull_inner(&self, req: &RemotingCommand) -> RemotingCommand {
        let parsed = (|| -> Result<_, RemotingError> {
            Ok((
                req.ext_required("consumerGroup")?.to_owned(),
                req.ext_required("topic")?.to_owned(),
                req.ext_num::<i32>("queueId")?,
                req.ext_num::<i64>("queueOffset")?,
                req.ext_num_opt::<i32>("maxMsgNums")?.unwrap_or(32),
                req.ext_num_opt::<i32>("sysFlag")?.unwrap_or(0),
                req.ext_num_opt::<i64>("commitOffset")?.unwrap_or(-1),
                req.ext_num_opt::<u64>("suspendTimeoutMillis")?
                    .unwrap_or(15_000),
                req.ext_num_opt::<i32>("maxMsgBytes")?.unwrap_or(256 * 1024),
            ))
        })();
        let (
            group,
            topic,
            queue_id,
            offset,
            max_nums,
            sys_flag,
            commit_offset,
            suspend_ms,
            max_bytes,
        ) = match parsed {
            Ok(p) => p,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(tc) = self.topics.get(&topic) else {
            return fail(
                req,
                response::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            );
        };
        if queue_id < 0 || queue_id >= tc.read_queue_nums.max(1) {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("queueId {queue_id} out of range for {topic}"),
            );
        }
        let sub = match self.subscription_for_pull(req, &group, &topic, sys_flag) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        if sys_flag & pull_flag::COMMIT_OFFSET != 0 && commit_offset >= 0 && self.is_master() {
            self.offsets.commit(&group, &topic, queue_id, commit_offset);
        }
        let max_nums = usize::try_from(max_nums.clamp(1, 32)).unwrap_or(32);
        let max_bytes = usize::try_from(max_bytes.max(1)).unwrap_or(256 * 1024);
        let mut may_suspend =
            sys_flag & pull_flag::SUSPEND != 0 && self.runtime.long_polling.load(Ordering::Relaxed);
        let deadline = long_poll::suspend_deadline(
            tokio::time::Instant::now(),
            suspend_ms,
            self.runtime.suspend_max_ms.load(Ordering::Relaxed),
        );
        loop {
            let r = self
                .store
                .get_messages(&topic, queue_id, offset, max_nums, max_bytes, |c| {
                    sub.matches(c)
                });
            let (code, next) = match r.status {
                GetMessageStatus::Found => (response::SUCCESS, r.next_begin_offset),
                GetMessageStatus::NoMatchedMessage | GetMessageStatus::OffsetFoundNull => {
                    (response::PULL_RETRY_IMMEDIATELY, r.next_begin_offset)
                }
                GetMessageStatus::NoMessageInQueue | GetMessageStatus::NoMatchedLogicQueue => {
                    if offset != 0 {
                        (response::PULL_OFFSET_MOVED, 0)
                    } else {
                        (response::PULL_NOT_FOUND, 0)
                    }
                }
                GetMessageStatus::OffsetTooSmall | GetMessageStatus::OffsetOverflowBadly => {
                    (response::PULL_OFFSET_MOVED, r.next_begin_offset)
                }
                GetMessageStatus::OffsetOverflowOne => (response::PULL_NOT_FOUND, offset),
            };
            if code == response::PULL_NOT_FOUND && may_suspend {
                may_suspend = false;
                let woken = self.hold.wait(&topic, queue_id, offset);
                // An entry may have landed between the read and the registration.
                if self.store.max_offset_in_queue(&topic, queue_id) <= offset {
                    let _ = tokio::time::timeout_at(deadline, woken).await;
                }
                continue;
            }
            let suggest = self.suggest_broker(&r.messages);
            let resp = RemotingCommand::response_to(req, code)
                .with_ext("suggestWhichBrokerId", suggest)
                .with_ext("nextBeginOffset", next)
                .with_ext("minOffset", r.min_offset)
                .with_ext("maxOffset", r.max_offset);
            debug!(topic = %topic, queue_id, offset, code, next, sub = %sub.sub_string, codes = ?sub.code_set, "pull");
            let remark = format!("{:?}", r.status);
            let mut resp = resp.with_remark(remark);
            if code == response::SUCCESS {
                resp.body = r.messages;
            }
            return resp;
        }
    }

    fn heartbeat(&self, conn: &Arc<Connection>, req: &RemotingCommand) -> RemotingCommand {
        let hb: HeartbeatData = match parse_body(&req.body_bytes()) {
            Ok(hb) => {
                debug!(body = %String::from_utf8_lossy(&req.body_bytes()), "heartbeat");
                hb
            }
            Err(e) => {
                return fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("bad heartbeat body: {e}"),
                )
            }
        };
        for cd in &hb.consumer_data_set {
            let clustering = cd.message_model.as_deref() != Some("BROADCASTING");
            if clustering && !cd.group_name.is_empty() {
                let retry = format!("%RETRY%{}", cd.group_name);
                if meta::validate_topic(&retry).is_ok() {
                    let (_, created) = self.topics.get_or_create(&retry, 1, meta::PERM_RW);
                    if created {
                        self.topics_changed();
                    }
                }
            }
        }
        if self.runtime.auto_create_group.load(Ordering::Relaxed) {
            for cd in &hb.consumer_data_set {
                if !cd.group_name.is_empty() {
                    self.groups.get(&cd.group_name, true);
                }
            }
        }
        for g in self.clients.heartbeat(conn, &hb) {
            self.clients.notify_changed(&g);
        }
        ok(req)
    }

    /// CONSUMER_SEND_MSG_BACK: re-store a failed message in `%RETRY%<group>` with a delay
    /// level (`3 + reconsumeTimes` unless the client asks for one), or in `%DLQ%<group>`
    /// once `reconsumeTimes` reaches the maximum (or the client asks with level −1).
    async fn send_back(&self, req: &RemotingCommand) -> RemotingCommand {
        if let Some(refused) = self.refuse_writes(req) {
            return refused;
        }
        let parsed = (|| -> Result<_, RemotingError> {
            Ok((
                req.ext_num::<u64>("offset")?,
                req.ext_required("group")?.to_owned(),
                req.ext_num_opt::<i32>("delayLevel")?.unwrap_or(0),
                req.ext_num_opt::<i32>("maxReconsumeTimes")?.unwrap_or(-1),
            ))
        })();
        let (offset, group, delay_level, max_times) = match parsed {
            Ok(p) => p,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let Some(rec) = self.store.read_message(offset) else {
            return fail(
                req,
                response::SYSTEM_ERROR,
                format!("no message at offset {offset}"),
            );
        };
        let m = match crate::store::decode_record(&rec) {
            Ok(m) => m,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        let max_times = if max_times >= 0 {
            max_times
        } else {
            self.config.max_reconsume_times
        };
        let mut props = crate::store::parse_properties(&m.properties);
        let origin_topic = req
            .ext("originTopic")
            .map(str::to_owned)
            .unwrap_or_else(|| m.topic.clone());
        props
            .entry("RETRY_TOPIC".into())
            .or_insert(origin_topic.clone());
        let origin_id = req
            .ext("originMsgId")
            .map(str::to_owned)
            .or_else(|| props.get("UNIQ_KEY").cloned())
            .unwrap_or_default();
        props
            .entry("ORIGIN_MESSAGE_ID".into())
            .or_insert(origin_id.clone());
        let times = m.reconsume_times;
        let to_dlq = times >= max_times || delay_level < 0;
        let topic = if to_dlq {
            props.remove(schedule::prop::DELAY);
            props.insert("DLQ_ORIGIN_TOPIC".into(), origin_topic);
            props.insert("DLQ_ORIGIN_MESSAGE_ID".into(), origin_id);
            format!("%DLQ%{group}")
        } else {
            let level = if delay_level == 0 {
                3 + times
            } else {
                delay_level
            };
            props.insert(schedule::prop::DELAY.into(), level.to_string());
            format!("%RETRY%{group}")
        };
        props.insert("RECONSUME_TIME".into(), (times + 1).to_string());
        if let Err(e) = meta::validate_topic(&topic) {
            return fail(req, response::SYSTEM_ERROR, e);
        }
        let (_, created) = self.topics.get_or_create(&topic, 1, meta::PERM_RW);
        if created {
            info!(topic = %topic, "retry/DLQ topic created");
            self.topics_changed();
        }
        let mut msg = MessageToStore {
            topic,
            queue_id: 0,
            flag: m.flag,
            sys_flag: m.sys_flag,
            born_timestamp: m.born_timestamp,
            born_host: m.born_host,
            store_host: self.store_host,
            reconsume_times: times + 1,
            prepared_transaction_offset: 0,
            body: m.body.clone(),
            properties: crate::store::encode_properties(
                props.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        };
        schedule::apply_delay(&mut msg, self.store.delay_levels_ms().len());
        match self.store.put_messages(std::slice::from_ref(&msg)).await {
            Ok(_) | Err(StoreError::FlushTimeout { .. }) => ok(req),
            Err(e) => fail(req, response::SYSTEM_ERROR, e),
        }
    }

    /// GET_BROKER_RUNTIME_INFO: a `KVTable` of string values, RocketMQ's key names where
    /// they exist.
    fn runtime_info(&self) -> serde_json::Value {
        let (flushes, micros) = self.store.commitlog().flush_stats();
        let mut t = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            t.insert(k.to_owned(), serde_json::Value::String(v));
        };
        put(
            "brokerVersionDesc",
            format!("ferrocket {}", env!("CARGO_PKG_VERSION")),
        );
        put(
            "brokerVersion",
            crate::remoting::command::OUR_VERSION.to_string(),
        );
        let role = self.role.get();
        put("brokerRole", role.role.name().to_owned());
        put("brokerName", self.config.broker_name.clone());
        put("brokerId", role.broker_id.to_string());
        put("epoch", role.epoch.to_string());
        put(
            "epochStartOffset",
            self.role
                .epochs()
                .last()
                .map_or(0, |e| e.start_offset)
                .to_string(),
        );
        put("masterAddr", role.master_addr.clone().unwrap_or_default());
        put("haConnections", self.ha.slave_count().to_string());
        put(
            "haServerAddr",
            format!("{}:{}", self.config.broker_ip1, self.config.ha_listen_port),
        );
        put("haSlaveAckOffset", self.ha.acked_offset().to_string());
        put("haSlaveLagBytes", self.ha.slave_lag().to_string());
        let (kind, problem) = self
            .role
            .follow_problem()
            .map_or(("", String::new()), |(k, p)| (k.as_str(), p));
        put("haFollowProblem", problem);
        put("haFollowProblemKind", kind.to_owned());
        put("confirmOffset", self.confirmed_offset().to_string());
        put(
            "commitLogMinOffset",
            self.store.min_phy_offset().to_string(),
        );
        put(
            "commitLogMaxOffset",
            self.store.max_phy_offset().to_string(),
        );
        put(
            "dispatchBehindBytes",
            self.store
                .max_phy_offset()
                .saturating_sub(self.store.dispatched_offset())
                .to_string(),
        );
        put(
            "commitLogDiskRatio",
            format!("{:.4}", self.store.disk_used_ratio().unwrap_or(0.0)),
        );
        put("flushCount", flushes.to_string());
        put("flushMicrosTotal", micros.to_string());
        put("pullLongPollingWaiters", self.hold.waiting().to_string());
        put(
            "topicCount",
            self.topics.snapshot().topic_config_table.len().to_string(),
        );
        put(
            "bootTimestamp",
            (crate::store::now_ms() - self.store.recovery_report().elapsed.as_millis() as i64)
                .to_string(),
        );
        serde_json::json!({ "table": t })
    }

    /// GET_TOPIC_STATS_INFO, GET_CONSUME_STATS and GET_CONSUMER_CONNECTION_LIST. The first
    /// two key their `offsetTable` by `MessageQueue` objects, which Java tools expect in
    /// fastjson's non-standard form (`{{"brokerName":..}:{..}}`), written here by hand.
    fn stats(&self, req: &RemotingCommand) -> RemotingCommand {
        let mq_key = |topic: &str, q: i32| {
            serde_json::json!({"brokerName": self.config.broker_name, "queueId": q, "topic": topic})
                .to_string()
        };
        match req.code {
            request::GET_CONSUMER_CONNECTION_LIST => {
                let group = req.ext("consumerGroup").unwrap_or("");
                let Some(clients::GroupView {
                    members,
                    subscriptions: subs,
                }) = self.clients.group_view(group)
                else {
                    return fail(
                        req,
                        response::SYSTEM_ERROR,
                        format!("the consumer group {group} is not online"),
                    );
                };
                let body = serde_json::json!({
                    "connectionSet": members.iter().map(|(id, addr)| serde_json::json!({
                        "clientId": id, "clientAddr": addr, "language": "OTHER", "version": 0
                    })).collect::<Vec<_>>(),
                    "subscriptionTable": subs.iter().map(|s| (s.topic.clone(), serde_json::to_value(s).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                    "consumeType": "CONSUME_PASSIVELY",
                    "messageModel": "CLUSTERING",
                    "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
                });
                ok(req).with_body(Bytes::from(body.to_string()))
            }
            request::GET_TOPIC_STATS_INFO => {
                let topic = req.ext("topic").unwrap_or("");
                let Some(tc) = self.topics.get(topic) else {
                    return fail(
                        req,
                        response::TOPIC_NOT_EXIST,
                        format!("topic {topic} not exist"),
                    );
                };
                let entries: Vec<String> = (0..tc.write_queue_nums)
                    .map(|q| {
                        let max = self.store.max_offset_in_queue(topic, q);
                        let last = self.store.last_store_time(topic, q).unwrap_or(0);
                        let v = serde_json::json!({
                            "minOffset": self.store.min_offset_in_queue(topic, q),
                            "maxOffset": max,
                            "lastUpdateTimestamp": last,
                        });
                        format!("{}:{}", mq_key(topic, q), v)
                    })
                    .collect();
                ok(req).with_body(Bytes::from(format!(
                    "{{\"offsetTable\":{{{}}}}}",
                    entries.join(",")
                )))
            }
            _ => {
                let group = req.ext("consumerGroup").unwrap_or("");
                let topics: Vec<String> = match req.ext("topic") {
                    Some(t) if !t.is_empty() => vec![t.to_owned()],
                    _ => self.offsets.group_offsets(group).into_keys().collect(),
                };
                let mut entries = Vec::new();
                for topic in &topics {
                    let Some(tc) = self.topics.get(topic) else {
                        continue;
                    };
                    for q in 0..tc.write_queue_nums {
                        let v = serde_json::json!({
                            "brokerOffset": self.store.max_offset_in_queue(topic, q),
                            "consumerOffset": self.offsets.query(group, topic, q).unwrap_or(0),
                            "lastTimestamp": 0,
                        });
                        entries.push(format!("{}:{}", mq_key(topic, q), v));
                    }
                }
                ok(req).with_body(Bytes::from(format!(
                    "{{\"consumeTps\":0.0,\"offsetTable\":{{{}}}}}",
                    entries.join(",")
                )))
            }
        }
    }

    fn lock_batch(&self, req: &RemotingCommand) -> RemotingCommand {
        let body: locks::LockBatchRequest = match parse_body(&req.body_bytes()) {
            Ok(b) => b,
            Err(e) => return fail(req, response::SYSTEM_ERROR, format!("bad lock body: {e}")),
        };
        if req.code == request::UNLOCK_BATCH_MQ {
            self.locks
                .unlock_batch(&body.consumer_group, &body.client_id, &body.mq_set);
            return ok(req);
        }
        let held = self.locks.lock_batch(
            &body.consumer_group,
            &body.client_id,
            &body.mq_set,
            locks::LOCK_MAX_LIVE,
        );
        ok(req).with_body(to_body(&locks::LockBatchResponse {
            lock_ok_mq_set: held,
        }))
    }

    fn query_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let parsed = (|| -> Result<_, RemotingError> {
            Ok((
                req.ext_required("topic")?.to_owned(),
                req.ext_required("key")?.to_owned(),
                req.ext_num_opt::<usize>("maxNum")?.unwrap_or(32),
                req.ext_num_opt::<i64>("beginTimestamp")?.unwrap_or(0),
                req.ext_num_opt::<i64>("endTimestamp")?.unwrap_or(i64::MAX),
            ))
        })();
        let (topic, key, mut max, begin, end) = match parsed {
            Ok(p) => p,
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        if req.ext_bool("_UNIQUE_KEY_QUERY") == Some(true) {
            max = 32;
        }
        let found = self
            .store
            .query_by_key(&topic, &key, max.clamp(1, 64), begin, end);
        if found.is_empty() {
            return fail(
                req,
                response::QUERY_NOT_FOUND,
                format!("no message with key {key} in {topic}"),
            );
        }
        let mut resp = ok(req)
            .with_ext("indexLastUpdateTimestamp", crate::store::now_ms())
            .with_ext("indexLastUpdatePhyoffset", self.store.dispatched_offset());
        resp.body = found;
        resp
    }

    fn query_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let (group, topic, queue_id) = match (
            req.ext_required("consumerGroup"),
            req.ext_required("topic"),
            req.ext_num::<i32>("queueId"),
        ) {
            (Ok(g), Ok(t), Ok(q)) => (g, t, q),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return fail(req, response::SYSTEM_ERROR, e)
            }
        };
        match self.offsets.query(group, topic, queue_id) {
            Some(o) if o >= 0 => ok(req).with_ext("offset", o),
            _ => {
                // RocketMQ: a new group on a queue that still starts at 0 starts there.
                let zero_ok = req.ext_bool("setZeroIfNotFound") != Some(false);
                if zero_ok && self.store.min_offset_in_queue(topic, queue_id) <= 0 {
                    ok(req).with_ext("offset", 0)
                } else {
                    fail(
                        req,
                        response::QUERY_NOT_FOUND,
                        "Not found, maybe this group consumer boot first",
                    )
                }
            }
        }
    }

    fn update_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        match (
            req.ext_required("consumerGroup"),
            req.ext_required("topic"),
            req.ext_num::<i32>("queueId"),
            req.ext_num::<i64>("commitOffset"),
        ) {
            (Ok(g), Ok(t), Ok(q), Ok(o)) => {
                if self.is_master() {
                    self.offsets.commit(g, t, q, o);
                }
                ok(req)
            }
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                fail(req, response::SYSTEM_ERROR, e)
            }
        }
    }

    fn offset_queries(&self, req: &RemotingCommand) -> RemotingCommand {
        let (topic, queue_id) = match (req.ext_required("topic"), req.ext_num::<i32>("queueId")) {
            (Ok(t), Ok(q)) => (t, q),
            (Err(e), _) | (_, Err(e)) => return fail(req, response::SYSTEM_ERROR, e),
        };
        match req.code {
            request::GET_MAX_OFFSET => {
                ok(req).with_ext("offset", self.store.max_offset_in_queue(topic, queue_id))
            }
            request::GET_MIN_OFFSET => {
                ok(req).with_ext("offset", self.store.min_offset_in_queue(topic, queue_id))
            }
            request::SEARCH_OFFSET_BY_TIMESTAMP => match req.ext_num::<i64>("timestamp") {
                Ok(ts) => {
                    let b = if req
                        .ext("boundaryType")
                        .is_some_and(|b| b.eq_ignore_ascii_case("upper"))
                    {
                        BoundaryType::Upper
                    } else {
                        BoundaryType::Lower
                    };
                    ok(req).with_ext(
                        "offset",
                        self.store.search_offset_by_time(topic, queue_id, ts, b),
                    )
                }
                Err(e) => fail(req, response::SYSTEM_ERROR, e),
            },
            _ => match self.store.earliest_store_time(topic, queue_id) {
                Some(ts) => ok(req).with_ext("timestamp", ts),
                None => fail(
                    req,
                    response::SYSTEM_ERROR,
                    format!("no message in {topic}:{queue_id}"),
                ),
            },
        }
    }

    fn create_topic(&self, req: &RemotingCommand) -> RemotingCommand {
        let topic = match req.ext_required("topic") {
            Ok(t) => t.to_owned(),
            Err(e) => return fail(req, response::SYSTEM_ERROR, e),
        };
        if let Err(e) = meta::validate_topic(&topic) {
            return fail(req, response::SYSTEM_ERROR, e);
        }
        if topic == meta::TBW102 {
            return fail(
                req,
                response::SYSTEM_ERROR,
                "the default topic cannot be changed",
            );
        }
        let num = |k: &'static str, d: i32| req.ext_num_opt::<i32>(k).ok().flatten().unwrap_or(d);
        let tc = TopicConfig {
            topic_name: topic.clone(),
            read_queue_nums: num("readQueueNums", 8).clamp(1, 1024),
            write_queue_nums: num("writeQueueNums", 8).clamp(1, 1024),
            perm: num("perm", meta::PERM_RW),
            topic_filter_type: req
                .ext("topicFilterType")
                .unwrap_or("SINGLE_TAG")
                .to_owned(),
            topic_sys_flag: num("topicSysFlag", 0),
            order: req.ext_bool("order").unwrap_or(false),
            ..TopicConfig::default()
        };
        if self.topics.upsert(tc) {
            info!(topic = %topic, "topic created or updated");
            self.topics_changed();
        }
        ok(req)
    }
}

impl crate::metrics::Observable for Broker {
    fn metrics(&self) -> String {
        let m = &self.metrics;
        m.store_max_offset.set(self.store.max_phy_offset() as i64);
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

    fn ready(&self) -> bool {
        self.registered.load(Ordering::Acquire) || self.config.namesrv_addr.is_empty()
    }
}

impl RequestHandler for Broker {
    fn handle(self: Arc<Self>, conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture {
        Box::pin(async move { Some(self.process(conn, req).await) })
    }

    fn on_open(&self, _conn: &Arc<Connection>) {
        self.metrics.connections.inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_msg_ids_round_trip() {
        let addr: SocketAddr = "10.0.0.1:10911".parse().unwrap();
        let id = offset_msg_id(addr, 0x1234);
        assert_eq!(id, "0A00000100002A9F0000000000001234");
        assert_eq!(decode_offset_msg_id(&id), Some((addr, 0x1234)));
        assert_eq!(decode_offset_msg_id("XYZ"), None);
    }

    #[test]
    fn batch_bodies_decode_and_reject_lies() {
        let mut body = Vec::new();
        for (i, b) in [b"one".as_slice(), b"three"].iter().enumerate() {
            let props = format!("KEYS\u{1}k{i}\u{2}");
            body.extend_from_slice(&((20 + b.len() + 2 + props.len()) as i32).to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&(i as i32).to_be_bytes());
            body.extend_from_slice(&(b.len() as i32).to_be_bytes());
            body.extend_from_slice(b);
            body.extend_from_slice(&(props.len() as i16).to_be_bytes());
            body.extend_from_slice(props.as_bytes());
        }
        let items = decode_batch(Bytes::from(body.clone())).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(&items[1].1[..], b"three");
        for cut in 1..body.len() {
            let _ = decode_batch(Bytes::copy_from_slice(&body[..cut]));
        }
        body[3] = 99;
        assert!(decode_batch(Bytes::from(body)).is_err());
    }
}
