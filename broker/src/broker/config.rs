//! Broker configuration: a RocketMQ-style properties file (`key=value`, `#` comments)
//! plus `--set key=value` overrides, with RocketMQ's names and defaults. Unknown keys are
//! logged once and ignored; an invalid value is an error naming the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::warn;

use crate::store::{FlushDiskType, StoreConfig};

pub use crate::ha::role::BrokerRole;

/// The settings that can change while the broker runs (UPDATE_BROKER_CONFIG).
#[derive(Debug)]
pub struct RuntimeSettings {
    /// `autoCreateTopicEnable`.
    pub auto_create_topic: std::sync::atomic::AtomicBool,
    /// `autoCreateSubscriptionGroup`.
    pub auto_create_group: std::sync::atomic::AtomicBool,
    /// `longPollingEnable`.
    pub long_polling: std::sync::atomic::AtomicBool,
    /// `brokerSuspendMaxTimeMillis`.
    pub suspend_max_ms: std::sync::atomic::AtomicU64,
    /// `maxReconsumeTimes`.
    pub max_reconsume: std::sync::atomic::AtomicI32,
    /// `brokerPermission`: 6 read-write, 4 read-only (sends refused), 2 write-only.
    pub permission: std::sync::atomic::AtomicI32,
    /// `enablePropertyFilter`: SQL92 selectors served (else refused).
    pub enable_property_filter: std::sync::atomic::AtomicBool,
    /// `filterSupportRetry`: selectors also filter retry topics.
    pub filter_support_retry: std::sync::atomic::AtomicBool,
    /// `namesrvAddr`: the name servers this broker registers with (a change takes
    /// effect at the next registration, which it triggers).
    pub namesrv_addr: std::sync::RwLock<Vec<String>>,
}

impl From<&BrokerConfig> for RuntimeSettings {
    fn from(c: &BrokerConfig) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
        RuntimeSettings {
            auto_create_topic: AtomicBool::new(c.auto_create_topic_enable),
            auto_create_group: AtomicBool::new(c.auto_create_subscription_group),
            long_polling: AtomicBool::new(c.long_polling_enable),
            suspend_max_ms: AtomicU64::new(c.broker_suspend_max_time_millis),
            max_reconsume: AtomicI32::new(c.max_reconsume_times),
            permission: AtomicI32::new(c.broker_permission),
            enable_property_filter: AtomicBool::new(c.enable_property_filter),
            filter_support_retry: AtomicBool::new(c.filter_support_retry),
            namesrv_addr: std::sync::RwLock::new(c.namesrv_addr.clone()),
        }
    }
}

/// A `namesrvAddr` value: `host:port` entries separated by `;`.
fn namesrv_list(key: &str, v: &str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = v
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = list.iter().find(|a| {
        a.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    }) {
        return Err(ConfigError {
            key: key.into(),
            reason: format!("`{bad}` is not host:port"),
        });
    }
    Ok(list)
}

impl RuntimeSettings {
    /// Applies `key=value` updates; all or nothing.
    ///
    /// # Errors
    /// A key that cannot change at run time (or is unknown), or a bad value.
    pub fn update(&self, props: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        use std::sync::atomic::Ordering::Relaxed;
        // Validate everything first.
        for (k, v) in props {
            match k.as_str() {
                "autoCreateTopicEnable"
                | "autoCreateSubscriptionGroup"
                | "longPollingEnable"
                | "enablePropertyFilter"
                | "filterSupportRetry" => {
                    boolean(k, v)?;
                }
                "brokerSuspendMaxTimeMillis" => {
                    num::<u64>(k, v)?;
                }
                "maxReconsumeTimes" => {
                    num::<i32>(k, v)?;
                }
                "brokerPermission" => {
                    permission(k, v)?;
                }
                "namesrvAddr" => {
                    namesrv_list(k, v)?;
                }
                _ => {
                    return Err(ConfigError {
                        key: k.clone(),
                        reason: "cannot change while the broker runs (change the file and restart)"
                            .into(),
                    })
                }
            }
        }
        for (k, v) in props {
            match k.as_str() {
                "autoCreateTopicEnable" => self.auto_create_topic.store(boolean(k, v)?, Relaxed),
                "autoCreateSubscriptionGroup" => {
                    self.auto_create_group.store(boolean(k, v)?, Relaxed)
                }
                "longPollingEnable" => self.long_polling.store(boolean(k, v)?, Relaxed),
                "enablePropertyFilter" => {
                    self.enable_property_filter.store(boolean(k, v)?, Relaxed)
                }
                "filterSupportRetry" => self.filter_support_retry.store(boolean(k, v)?, Relaxed),
                "brokerSuspendMaxTimeMillis" => self.suspend_max_ms.store(num(k, v)?, Relaxed),
                "brokerPermission" => self.permission.store(permission(k, v)?, Relaxed),
                "namesrvAddr" => {
                    let list = namesrv_list(k, v)?;
                    *self
                        .namesrv_addr
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = list;
                }
                _ => self.max_reconsume.store(num(k, v)?, Relaxed),
            }
        }
        Ok(())
    }

    /// Writes the current values into a copy of the configuration.
    pub fn apply_to(&self, c: &mut BrokerConfig) {
        use std::sync::atomic::Ordering::Relaxed;
        c.auto_create_topic_enable = self.auto_create_topic.load(Relaxed);
        c.auto_create_subscription_group = self.auto_create_group.load(Relaxed);
        c.long_polling_enable = self.long_polling.load(Relaxed);
        c.broker_suspend_max_time_millis = self.suspend_max_ms.load(Relaxed);
        c.max_reconsume_times = self.max_reconsume.load(Relaxed);
        c.broker_permission = self.permission.load(Relaxed);
        c.enable_property_filter = self.enable_property_filter.load(Relaxed);
        c.filter_support_retry = self.filter_support_retry.load(Relaxed);
        c.namesrv_addr = self.namesrvs();
    }

    /// The name servers to register with now.
    #[must_use]
    pub fn namesrvs(&self) -> Vec<String> {
        self.namesrv_addr
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `brokerPermission` lets producers write.
    pub fn writable(&self) -> bool {
        self.permission.load(std::sync::atomic::Ordering::Relaxed) & PERM_WRITE != 0
    }
}

pub use crate::protocol::topic::{PERM_READ, PERM_WRITE};

/// A `brokerPermission` value: read and/or write bits (2, 4 or 6).
fn permission(key: &str, v: &str) -> Result<i32, ConfigError> {
    let p: i32 = num(key, v)?;
    if p & !(PERM_READ | PERM_WRITE) != 0 || p == 0 {
        return Err(ConfigError {
            key: key.into(),
            reason: format!("{p} is not 2 (write), 4 (read) or 6 (read-write)"),
        });
    }
    Ok(p)
}

/// A bad configuration value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration `{key}`: {reason}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `brokerClusterName`.
    pub broker_cluster_name: String,
    /// `brokerName`.
    pub broker_name: String,
    /// `brokerId` (0 = master).
    pub broker_id: i64,
    /// `brokerRole`.
    pub broker_role: BrokerRole,
    /// `namesrvAddr`, `;`-separated.
    pub namesrv_addr: Vec<String>,
    /// `listenPort`.
    pub listen_port: u16,
    /// `haListenPort` (listenPort + 1).
    pub ha_listen_port: u16,
    /// `bindAddress` (RocketMQ 5's name; `0.0.0.0`): where the client and VIP ports
    /// listen. `brokerIP1` stays the address clients are told.
    pub bind_address: std::net::IpAddr,
    /// `haBindAddress` (ferrocket; defaults to `bindAddress`): where the HA port listens.
    pub ha_bind_address: Option<std::net::IpAddr>,
    /// `metricsBindAddress` (ferrocket; defaults to `bindAddress`).
    pub metrics_bind_address: Option<std::net::IpAddr>,
    /// `brokerIP1`: the address clients are told.
    pub broker_ip1: String,
    /// `autoCreateTopicEnable`.
    pub auto_create_topic_enable: bool,
    /// `autoCreateSubscriptionGroup`.
    pub auto_create_subscription_group: bool,
    /// `defaultTopicQueueNums`.
    pub default_topic_queue_nums: i32,
    /// `brokerSuspendMaxTimeMillis`: longest long-poll hold.
    pub broker_suspend_max_time_millis: u64,
    /// `longPollingEnable`.
    pub long_polling_enable: bool,
    /// `registerNameServerPeriod`, ms.
    pub register_name_server_period_ms: u64,
    /// `flushConsumerOffsetInterval`, ms.
    pub flush_consumer_offset_interval_ms: u64,
    /// `metricsPort` (0 = off).
    pub metrics_port: u16,
    /// Default `retryMaxTimes` of subscription groups (16).
    pub max_reconsume_times: i32,
    /// `brokerPermission` (6 = read-write; 4 = read-only: sends refused, topics
    /// registered without the write bit).
    pub broker_permission: i32,
    /// `roleEpoch` (ferrocket): the role epoch this broker starts in (the roles file's).
    pub role_epoch: i64,
    /// `masterRole` (ferrocket): the role this broker plays when promoted
    /// (`ASYNC_MASTER` or `SYNC_MASTER`; defaults to `brokerRole` when that is a master).
    pub master_role: BrokerRole,
    /// `slaveBrokerId` (ferrocket): the id this broker takes when demoted.
    pub slave_broker_id: i64,
    /// `haMasterAddress`: the master's HA address for a slave (else from the name server).
    pub ha_master_address: Option<String>,
    /// `controlSecretFile` (ferrocket): a file holding the secret key role changes and
    /// permission changes must be signed with (read on each such request, so a rotated
    /// Secret applies at once). Unset: unsigned role changes are accepted, but only one
    /// epoch past this broker's.
    pub control_secret_file: Option<std::path::PathBuf>,
    /// `controlAccessKey` (ferrocket, default `ferrocket-operator`): the access key those
    /// signatures carry.
    pub control_access_key: String,
    /// `aclEnable` (false): RocketMQ's plain ACL on every request (`docs/security.md`).
    pub acl_enable: bool,
    /// `haRequireSignature` (ferrocket, false): the HA port serves only connections
    /// that answer a challenge with the group's control secret (`controlSecretFile`,
    /// required then); a slave answers it. Every member of the group must set it.
    pub ha_require_signature: bool,
    /// `namesrvAccessKey` and `namesrvSecretFile` (ferrocket): sign every request to
    /// the name servers as this account (a name server with `--acl-file` takes
    /// registrations only from an admin account). The file is read at start.
    pub namesrv_credentials: Option<(String, std::path::PathBuf)>,
    /// TLS, under RocketMQ's `tls.*` names (`docs/security.md`).
    pub tls: TlsSettings,
    /// `aclFile`: the ACL file; unset, `$ROCKETMQ_HOME/conf/plain_acl.yml` as RocketMQ
    /// 4.x finds it.
    pub acl_file: Option<std::path::PathBuf>,
    /// ACL 2.0 (`crate::acl2`): `authenticationEnabled`, `authorizationEnabled` and
    /// their white lists (`authenticationWhitelist`, `authorizationWhitelist`: request
    /// codes, comma-separated).
    pub auth: crate::acl2::AuthSettings,
    /// `authConfigPath`: where ACL 2.0's `users.json` and `acls.json` live (default
    /// `<storePathRootDir>/config`).
    pub auth_config_path: Option<std::path::PathBuf>,
    /// `initAuthenticationUser` (`{"username":..,"password":..}`): a Super user created
    /// at start unless it exists.
    pub init_authentication_user: Option<(String, String)>,
    /// `innerClientAuthenticationCredentials` (`{"accessKey":..,"secretKey":..}`): the
    /// Super user this broker's own requests (to its master, to the name servers when
    /// `namesrvAccessKey` is unset) are signed as; created at start unless it exists.
    pub inner_client_credentials: Option<(String, String)>,
    /// The in-sync replica set's rules: `allAckInSyncStateSet`, `minInSyncReplicas`,
    /// `haMaxTimeSlaveNotCatchup`, `syncStateSetByController`.
    pub sync_policy: crate::ha::SyncPolicy,
    /// Connection limits of the client and VIP ports: `serverChannelMaxIdleTimeSeconds`
    /// (120), `serverMaxConnections` (16384), `serverMaxConnectionsPerAddress` (4096),
    /// `serverMaxRequestsInFlightPerConnection` (4096), `serverFrameDeadlineSeconds`
    /// (60), `serverMaxRunningRequestsPerConnection` (16),
    /// `serverMaxTotalPendingResponseBytes` (256 MiB; ferrocket names except the first).
    pub server: crate::remoting::server::ServerConfig,
    /// `heartbeatMaxGroups` (ferrocket, 1024): a heartbeat naming more producer and
    /// consumer groups, or more subscriptions, than this is refused.
    pub heartbeat_max_groups: usize,
    /// `autoCreatedGroupExpireSeconds` (ferrocket, 600; 0 = never): a subscription group
    /// a heartbeat created (`autoCreateSubscriptionGroup`) that has had no consumer for
    /// this long, never committed an offset, has nothing in its retry topic and no DLQ
    /// is deleted with its retry topic.
    pub auto_created_group_expire_secs: u64,
    /// `slaveReadEnable`: the master may point slow consumers at a slave.
    pub slave_read_enable: bool,
    /// `whichBrokerWhenConsumeSlowly` (1).
    pub which_broker_when_consume_slowly: i64,
    /// `accessMessageInMemoryMaxRatio` (40): % of RAM beyond which data counts as cold.
    pub access_message_in_memory_max_ratio: u64,
    /// `enableDLegerCommitLog` (false) with its `dLeger*` keys: the Raft-replicated
    /// CommitLog mode (issue 15). Parsed and checked; the mode itself is not built yet,
    /// so a broker configured for it stops at start-up with that said.
    pub dledger: DLedgerSettings,
    /// `timerWheelEnable` (true): 5.x timer messages are scheduled (else refused).
    pub timer_wheel_enable: bool,
    /// `timerPrecisionMs` (1000): delivery times are rounded up to multiples of it.
    pub timer_precision_ms: i64,
    /// `timerMaxDelaySec` (259200, 3 days): longer delays are refused.
    pub timer_max_delay_sec: i64,
    /// `storeReplyMessageEnable` (true): replies are stored in the reply topic as well
    /// as pushed to the requester.
    pub store_reply_message_enable: bool,
    /// `enablePropertyFilter` (false, as RocketMQ): serve SQL92 selectors.
    pub enable_property_filter: bool,
    /// `filterSupportRetry` (false): selectors also filter `%RETRY%` topics.
    pub filter_support_retry: bool,
    /// `rejectTransactionMessage`: refuse transactional half messages (NO_PERMISSION).
    pub reject_transaction_message: bool,
    /// `transactionTimeOut`, ms: a half message younger than this is not checked back.
    pub transaction_timeout_ms: u64,
    /// `transactionCheckMax`: check-backs before a half message is discarded to
    /// `TRANS_CHECK_MAX_TIME_TOPIC`.
    pub transaction_check_max: i32,
    /// `transactionCheckInterval`, ms: how often unresolved half messages are checked.
    pub transaction_check_interval_ms: u64,
    /// Store settings.
    pub store: StoreConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        BrokerConfig {
            broker_cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            broker_role: BrokerRole::AsyncMaster,
            role_epoch: 0,
            master_role: BrokerRole::AsyncMaster,
            slave_broker_id: 0,
            ha_master_address: None,
            control_secret_file: None,
            acl_enable: false,
            acl_file: None,
            auth: crate::acl2::AuthSettings::default(),
            auth_config_path: None,
            init_authentication_user: None,
            inner_client_credentials: None,
            ha_require_signature: false,
            namesrv_credentials: None,
            tls: TlsSettings::default(),
            control_access_key: crate::auth::DEFAULT_CONTROL_ACCESS_KEY.to_owned(),
            sync_policy: crate::ha::SyncPolicy::default(),
            server: crate::remoting::server::ServerConfig::default(),
            heartbeat_max_groups: 1024,
            auto_created_group_expire_secs: 600,
            slave_read_enable: false,
            which_broker_when_consume_slowly: 1,
            access_message_in_memory_max_ratio: 40,
            dledger: DLedgerSettings::default(),
            namesrv_addr: Vec::new(),
            listen_port: 10911,
            ha_listen_port: 10912,
            bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            ha_bind_address: None,
            metrics_bind_address: None,
            broker_ip1: "127.0.0.1".into(),
            auto_create_topic_enable: true,
            auto_create_subscription_group: true,
            default_topic_queue_nums: 8,
            broker_suspend_max_time_millis: 30_000,
            long_polling_enable: true,
            register_name_server_period_ms: 30_000,
            flush_consumer_offset_interval_ms: 5_000,
            metrics_port: 0,
            max_reconsume_times: 16,
            broker_permission: PERM_READ | PERM_WRITE,
            reject_transaction_message: false,
            enable_property_filter: false,
            filter_support_retry: false,
            store_reply_message_enable: true,
            timer_wheel_enable: true,
            timer_precision_ms: 1000,
            timer_max_delay_sec: 259_200,
            transaction_timeout_ms: 6_000,
            transaction_check_max: 15,
            transaction_check_interval_ms: 30_000,
            store: StoreConfig::new(PathBuf::from(home).join("store")),
        }
    }
}

/// An optional path setting (empty: unset).
fn path(v: &str) -> Option<std::path::PathBuf> {
    Some(v.trim()).filter(|v| !v.is_empty()).map(Into::into)
}

/// TLS settings (RocketMQ's `tls.*` names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `tls.server.mode` (`tlsMode`): disabled (default), permissive, enforcing — on
    /// the client and VIP ports.
    pub server_mode: crate::remoting::tls::TlsMode,
    /// `tls.server.certPath` (PEM chain).
    pub server_cert: Option<std::path::PathBuf>,
    /// `tls.server.keyPath` (PEM key).
    pub server_key: Option<std::path::PathBuf>,
    /// `tls.server.authClient`: require client certificates signed by
    /// `tls.server.trustCertPath` (mutual TLS).
    pub server_auth_client: bool,
    /// `tls.server.trustCertPath`.
    pub server_trust: Option<std::path::PathBuf>,
    /// `tls.enable` (`tlsEnable`): this broker's own connections (to the name servers)
    /// use TLS, trusting `tls.client.trustCertPath`.
    pub client_enable: bool,
    /// `tls.client.trustCertPath`.
    pub client_trust: Option<std::path::PathBuf>,
    /// `tls.client.certPath` (mutual TLS).
    pub client_cert: Option<std::path::PathBuf>,
    /// `tls.client.keyPath`.
    pub client_key: Option<std::path::PathBuf>,
}

impl TlsSettings {
    /// The server side, when `tls.server.mode` is not disabled.
    ///
    /// # Errors
    /// Missing or unusable files.
    pub fn server(&self) -> Result<Option<crate::remoting::tls::TlsServer>, String> {
        if self.server_mode == crate::remoting::tls::TlsMode::Disabled {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.server_cert, &self.server_key) else {
            return Err("tls.server.mode needs tls.server.certPath and tls.server.keyPath".into());
        };
        let client_ca = if self.server_auth_client {
            Some(
                self.server_trust
                    .clone()
                    .ok_or("tls.server.authClient needs tls.server.trustCertPath")?,
            )
        } else {
            None
        };
        crate::remoting::tls::TlsServer::load(
            self.server_mode,
            crate::remoting::tls::ServerFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca,
            },
        )
        .map(Some)
        .map_err(|e| e.to_string())
    }

    /// TLS to the group's own members (the master's HA port, Raft peers): on whenever
    /// this broker's ports have TLS (`tls.server.mode` not disabled — a group's members
    /// share their settings), trusting `tls.client.trustCertPath` (else
    /// `tls.server.trustCertPath`) and presenting `tls.client.certPath` when set. The
    /// peer's certificate must chain to that trust file; its names are not checked
    /// (members are reached by IP address). Without a trust file, peers are reached
    /// plain (a WARN says so) — refused at start-up when this broker follows a master
    /// or is a Raft member (`follows`) and the ports are `enforcing`, where plain peers
    /// would be closed.
    ///
    /// # Errors
    /// As said; unusable files.
    pub fn peer(&self, follows: bool) -> Result<Option<crate::remoting::tls::TlsClient>, String> {
        use crate::remoting::tls::TlsMode;
        if self.server_mode == TlsMode::Disabled {
            return Ok(None);
        }
        let Some(trust) = self.client_trust.as_ref().or(self.server_trust.as_ref()) else {
            if follows && self.server_mode == TlsMode::Enforcing {
                return Err("tls.server.mode=enforcing needs tls.client.trustCertPath (or tls.server.trustCertPath): a slave or Raft member verifies its peers' certificates with it".into());
            }
            warn!("TLS on the ports but no tls.client.trustCertPath: this broker would reach a master or Raft peers without TLS");
            return Ok(None);
        };
        let identity = self.client_identity()?;
        crate::remoting::tls::TlsClient::load_peer(trust, identity)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// `tls.client.certPath` and `tls.client.keyPath`, when set (both or neither).
    fn client_identity(&self) -> Result<Option<(&std::path::Path, &std::path::Path)>, String> {
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Ok(Some((c.as_path(), k.as_path()))),
            (None, None) => Ok(None),
            _ => Err("tls.client.certPath and tls.client.keyPath go together".into()),
        }
    }

    /// The client side, when `tls.enable` is on.
    ///
    /// # Errors
    /// Missing or unusable files.
    pub fn client(&self) -> Result<Option<crate::remoting::tls::TlsClient>, String> {
        if !self.client_enable {
            return Ok(None);
        }
        let trust = self
            .client_trust
            .as_ref()
            .ok_or("tls.enable needs tls.client.trustCertPath")?;
        let identity = self.client_identity()?;
        crate::remoting::tls::TlsClient::load(trust, identity)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The Raft (DLedger) keys of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DLedgerSettings {
    /// `enableDLegerCommitLog`.
    pub enabled: bool,
    /// `dLegerGroup` (defaults to `brokerName`).
    pub group: Option<String>,
    /// `dLegerPeers`: `(id, host:port)` in the order given.
    pub peers: Vec<(String, String)>,
    /// `dLegerSelfId` (RocketMQ's default `n0`).
    pub self_id: String,
    /// `preferredLeaderId`.
    pub preferred_leader_id: Option<String>,
    /// `heartBeatTimeIntervalMs`: the leader's heartbeat period. DLedger's default is
    /// 2000; ferrocket's is 250 so that a new leader is elected within about 2 s.
    pub heartbeat_ms: u64,
    /// `maxHeartBeatLeak` (3): heartbeats a follower misses before it stands for
    /// election. The election timeout is heartbeat × leak plus a random part of up to
    /// `maxVoteIntervalMs`; a follower that heard from its leader waits the longest
    /// timeout plus a random one (openraft's leader lease) before it stands.
    pub max_heartbeat_leak: u64,
    /// `maxVoteIntervalMs`: the random spread of the election timeout. DLedger's
    /// default is 1000; ferrocket's is 300 (see `heartBeatTimeIntervalMs`).
    pub max_vote_interval_ms: u64,
    /// `snapshotThreshold` (DLedger's name and default, 1000): applied entries between
    /// two snapshots. A snapshot is the CommitLog itself (nothing is copied); the log
    /// keeps as many entries again behind it, then is purged, and retention may
    /// delete CommitLog segments the log no longer refers to. A member that needs a
    /// purged entry rejoins by the snapshot (`docs/raft.md`).
    pub snapshot_threshold: u64,
    /// `dLegerBindAddress` (ferrocket; defaults to `bindAddress`): where the DLedger
    /// port (the port of this member in `dLegerPeers`) listens.
    pub bind_address: Option<std::net::IpAddr>,
}

impl DLedgerSettings {
    /// The Raft node id of `id`: its place in `dLegerPeers`.
    #[must_use]
    pub fn node_id(&self, id: &str) -> Option<u64> {
        self.peers
            .iter()
            .position(|(p, _)| p == id)
            .map(|i| i as u64)
    }

    /// This broker's Raft node id.
    #[must_use]
    pub fn self_node(&self) -> u64 {
        self.node_id(&self.self_id).unwrap_or(0)
    }

    /// The brokerId a follower registers with: its node id + 1 (the leader is 0).
    #[must_use]
    pub fn follower_broker_id(&self) -> i64 {
        self.self_node() as i64 + 1
    }
}

impl Default for DLedgerSettings {
    fn default() -> Self {
        DLedgerSettings {
            enabled: false,
            group: None,
            peers: Vec::new(),
            self_id: "n0".into(),
            preferred_leader_id: None,
            heartbeat_ms: 250,
            max_heartbeat_leak: 3,
            max_vote_interval_ms: 300,
            snapshot_threshold: 1000,
            bind_address: None,
        }
    }
}

/// Parses `dLegerPeers`: `id-host:port` entries joined by `;` (ids unique, ports valid).
fn dledger_peers(key: &str, v: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = |reason: String| ConfigError {
        key: key.into(),
        reason,
    };
    let mut peers: Vec<(String, String)> = Vec::new();
    for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, addr)) = entry.split_once('-') else {
            return Err(bad(format!("`{entry}` is not id-host:port")));
        };
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if id.is_empty() || !port_ok {
            return Err(bad(format!("`{entry}` is not id-host:port")));
        }
        if peers.iter().any(|(seen, _)| seen == id) {
            return Err(bad(format!("the id `{id}` appears twice")));
        }
        peers.push((id.to_owned(), addr.to_owned()));
    }
    if peers.is_empty() {
        return Err(bad("no peers".into()));
    }
    Ok(peers)
}

/// Parses `key=value` lines (`#` and `!` comments, blank lines ignored).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=').or_else(|| l.split_once(':'))?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|_| ConfigError {
        key: key.into(),
        reason: format!("`{v}` is not a valid number"),
    })
}

/// An address to listen on: an IP address (`0.0.0.0` = every interface).
fn ip(key: &str, v: &str) -> Result<std::net::IpAddr, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError {
        key: key.into(),
        reason: format!("`{v}` is not an IP address to listen on"),
    })
}

fn boolean(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError {
            key: key.into(),
            reason: format!("`{v}` is not true or false"),
        }),
    }
}

/// A comma-separated list of request codes.
fn codes(key: &str, v: &str) -> Result<Vec<i32>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| num(key, c))
        .collect()
}

/// A small file's text (a mounted Secret's key); empty path: empty text.
fn read_small(key: &str, path: &str) -> Result<String, ConfigError> {
    if path.trim().is_empty() {
        return Ok(String::new());
    }
    std::fs::read_to_string(path.trim()).map_err(|e| ConfigError {
        key: key.into(),
        reason: format!("{path}: {e}"),
    })
}

/// A JSON object's two string fields (`{"username":..,"password":..}`); empty: unset.
fn pair(key: &str, v: &str, a: &str, b: &str) -> Result<Option<(String, String)>, ConfigError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| ConfigError {
        key: key.into(),
        reason,
    };
    let j: serde_json::Value =
        serde_json::from_str(v).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    match (j[a].as_str(), j[b].as_str()) {
        (Some(x), Some(y)) if !x.trim().is_empty() && !y.is_empty() => {
            Ok(Some((x.trim().to_owned(), y.to_owned())))
        }
        _ => Err(bad(format!("needs non-empty \"{a}\" and \"{b}\""))),
    }
}

impl BrokerConfig {
    /// Builds a configuration from properties (later entries win).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid key.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut c = BrokerConfig::default();
        let mut ha_port_set = false;
        let mut master_role_set = false;
        for (k, v) in props {
            let key = k.as_str();
            match key {
                "brokerClusterName" => c.broker_cluster_name = v.clone(),
                "brokerName" => c.broker_name = v.clone(),
                "brokerId" => c.broker_id = num(key, v)?,
                "brokerRole" => {
                    c.broker_role = match v.as_str() {
                        "ASYNC_MASTER" => BrokerRole::AsyncMaster,
                        "SYNC_MASTER" => BrokerRole::SyncMaster,
                        "SLAVE" => BrokerRole::Slave,
                        _ => {
                            return Err(ConfigError {
                                key: key.into(),
                                reason: format!("`{v}` is not ASYNC_MASTER, SYNC_MASTER or SLAVE"),
                            })
                        }
                    }
                }
                "flushDiskType" => {
                    c.store.flush_disk_type =
                        v.parse::<FlushDiskType>().map_err(|reason| ConfigError {
                            key: key.into(),
                            reason,
                        })?
                }
                "namesrvAddr" => {
                    c.namesrv_addr = v
                        .split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "listenPort" => c.listen_port = num(key, v)?,
                "haListenPort" => {
                    c.ha_listen_port = num(key, v)?;
                    ha_port_set = true;
                }
                "brokerIP1" => c.broker_ip1 = v.clone(),
                "storePathRootDir" => c.store.store_path_root_dir = PathBuf::from(v),
                "mappedFileSizeCommitLog" => c.store.mapped_file_size_commit_log = num(key, v)?,
                "mappedFileSizeConsumeQueue" => {
                    c.store.mapped_file_size_consume_queue = num(key, v)?
                }
                "maxMessageSize" => c.store.max_message_size = num(key, v)?,
                "fileReservedTime" => c.store.file_reserved_time_hours = num(key, v)?,
                "deleteWhen" => c.store.delete_when = v.clone(),
                "diskMaxUsedSpaceRatio" => c.store.disk_max_used_space_ratio = num(key, v)?,
                "diskSpaceCleanForciblyRatio" => {
                    c.store.disk_space_clean_forcibly_ratio = num(key, v)?
                }
                "diskSpaceWarningLevelRatio" => {
                    c.store.disk_space_warning_level_ratio = num(key, v)?
                }
                "flushIntervalCommitLog" => c.store.flush_interval_commit_log_ms = num(key, v)?,
                "flushIntervalConsumeQueue" => {
                    c.store.flush_interval_consume_queue_ms = num(key, v)?
                }
                "syncFlushTimeout" => c.store.sync_flush_timeout_ms = num(key, v)?,
                "maxHashSlotNum" => c.store.max_hash_slot_num = num(key, v)?,
                "maxIndexNum" => c.store.max_index_num = num(key, v)?,
                "messageIndexEnable" => c.store.message_index_enable = boolean(key, v)?,
                "checkCRCOnRecover" => c.store.check_crc_on_recover = boolean(key, v)?,
                "storeRepair" => c.store.repair = boolean(key, v)?,
                "serverChannelMaxIdleTimeSeconds" => {
                    c.server.idle_timeout = std::time::Duration::from_secs(num(key, v)?);
                }
                "serverMaxConnections" => c.server.max_connections = num(key, v)?,
                "heartbeatMaxGroups" => c.heartbeat_max_groups = num(key, v)?,
                "autoCreatedGroupExpireSeconds" => {
                    c.auto_created_group_expire_secs = num(key, v)?;
                }
                "serverMaxConnectionsPerAddress" => {
                    c.server.max_connections_per_address = num(key, v)?;
                }
                "serverMaxRequestsInFlightPerConnection" => {
                    c.server.max_in_flight_per_connection = num(key, v)?;
                }
                "serverMaxRunningRequestsPerConnection" => {
                    c.server.max_running_per_connection = num(key, v)?;
                }
                "adminBrokerThreadPoolNums" => c.server.max_running_control = num(key, v)?,
                "serverMaxTotalPendingResponseBytes" => {
                    c.server.max_total_pending_response_bytes = num(key, v)?;
                }
                "serverFrameDeadlineSeconds" => {
                    c.server.frame_deadline = std::time::Duration::from_secs(num(key, v)?);
                }
                "autoCreateTopicEnable" => c.auto_create_topic_enable = boolean(key, v)?,
                "autoCreateSubscriptionGroup" => {
                    c.auto_create_subscription_group = boolean(key, v)?
                }
                "defaultTopicQueueNums" => c.default_topic_queue_nums = num(key, v)?,
                "brokerSuspendMaxTimeMillis" => c.broker_suspend_max_time_millis = num(key, v)?,
                "longPollingEnable" => c.long_polling_enable = boolean(key, v)?,
                "registerNameServerPeriod" => c.register_name_server_period_ms = num(key, v)?,
                "flushConsumerOffsetInterval" => c.flush_consumer_offset_interval_ms = num(key, v)?,
                "metricsPort" => c.metrics_port = num(key, v)?,
                "bindAddress" => c.bind_address = ip(key, v)?,
                "haBindAddress" => c.ha_bind_address = Some(ip(key, v)?),
                "metricsBindAddress" => c.metrics_bind_address = Some(ip(key, v)?),
                "dLegerBindAddress" => c.dledger.bind_address = Some(ip(key, v)?),
                "messageDelayLevel" => c.store.message_delay_level = v.clone(),
                "maxReconsumeTimes" => c.max_reconsume_times = num(key, v)?,
                "brokerPermission" => c.broker_permission = permission(key, v)?,
                "roleEpoch" => c.role_epoch = num(key, v)?,
                "masterRole" => {
                    master_role_set = true;
                    c.master_role = match v.as_str() {
                        "ASYNC_MASTER" => BrokerRole::AsyncMaster,
                        "SYNC_MASTER" => BrokerRole::SyncMaster,
                        _ => {
                            return Err(ConfigError {
                                key: key.into(),
                                reason: format!("`{v}` is not ASYNC_MASTER or SYNC_MASTER"),
                            })
                        }
                    }
                }
                "slaveBrokerId" => c.slave_broker_id = num(key, v)?,
                "controlSecretFile" => {
                    c.control_secret_file = Some(v).filter(|v| !v.is_empty()).map(Into::into);
                }
                "controlAccessKey" => c.control_access_key.clone_from(v),
                "aclEnable" => c.acl_enable = boolean(key, v)?,
                "haRequireSignature" => c.ha_require_signature = boolean(key, v)?,
                "tls.server.mode" | "tlsMode" => {
                    c.tls.server_mode = v.parse().map_err(|reason| ConfigError {
                        key: key.into(),
                        reason,
                    })?;
                }
                "tls.server.certPath" => c.tls.server_cert = path(v),
                "tls.server.keyPath" => c.tls.server_key = path(v),
                "tls.server.authClient" => c.tls.server_auth_client = boolean(key, v)?,
                "tls.server.trustCertPath" => c.tls.server_trust = path(v),
                "tls.enable" | "tlsEnable" => c.tls.client_enable = boolean(key, v)?,
                "tls.client.trustCertPath" => c.tls.client_trust = path(v),
                "tls.client.certPath" => c.tls.client_cert = path(v),
                "tls.client.keyPath" => c.tls.client_key = path(v),
                "namesrvAccessKey" => {
                    let file = c
                        .namesrv_credentials
                        .take()
                        .map(|(_, f)| f)
                        .unwrap_or_default();
                    c.namesrv_credentials = Some((v.trim().to_owned(), file));
                }
                "namesrvSecretFile" => {
                    let ak = c
                        .namesrv_credentials
                        .take()
                        .map(|(a, _)| a)
                        .unwrap_or_default();
                    c.namesrv_credentials = Some((ak, v.trim().into()));
                }
                "aclFile" => c.acl_file = Some(v).filter(|v| !v.is_empty()).map(Into::into),
                "authenticationEnabled" => c.auth.authentication = boolean(key, v)?,
                "authorizationEnabled" => c.auth.authorization = boolean(key, v)?,
                "authenticationWhitelist" => c.auth.authentication_whitelist = codes(key, v)?,
                "authorizationWhitelist" => c.auth.authorization_whitelist = codes(key, v)?,
                "authConfigPath" => {
                    c.auth_config_path = Some(v).filter(|v| !v.is_empty()).map(Into::into);
                }
                "initAuthenticationUser" => {
                    c.init_authentication_user = pair(key, v, "username", "password")?;
                }
                "innerClientAuthenticationCredentials" => {
                    c.inner_client_credentials = pair(key, v, "accessKey", "secretKey")?;
                }
                // ferrocket: the same JSON read from a file (a mounted Secret), so the
                // password need not sit in broker.conf.
                "initAuthenticationUserFile" => {
                    c.init_authentication_user =
                        pair(key, &read_small(key, v)?, "username", "password")?;
                }
                "innerClientAuthenticationCredentialsFile" => {
                    c.inner_client_credentials =
                        pair(key, &read_small(key, v)?, "accessKey", "secretKey")?;
                }
                // Only RocketMQ's own providers exist here; another class is refused.
                "authenticationProvider"
                | "authenticationMetadataProvider"
                | "authorizationProvider"
                | "authorizationMetadataProvider" => {
                    const BUILT: [&str; 4] = [
                        "org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider",
                        "org.apache.rocketmq.auth.authentication.provider.LocalAuthenticationMetadataProvider",
                        "org.apache.rocketmq.auth.authorization.provider.DefaultAuthorizationProvider",
                        "org.apache.rocketmq.auth.authorization.provider.LocalAuthorizationMetadataProvider",
                    ];
                    if !v.is_empty() && !BUILT.contains(&v.as_str()) {
                        return Err(ConfigError {
                            key: key.into(),
                            reason: format!(
                                "`{v}` is not supported: only RocketMQ's default (local) providers are built"
                            ),
                        });
                    }
                }
                "authenticationStrategy" | "authorizationStrategy" => {}
                "migrateAuthFromV1Enabled" => {
                    if boolean(key, v)? {
                        return Err(ConfigError {
                            key: key.into(),
                            reason: "migrating plain_acl.yml into ACL 2.0 is not supported yet; \
                                     create the users and ACLs with the AUTH requests"
                                .into(),
                        });
                    }
                }
                "allAckInSyncStateSet" => c.sync_policy.all_ack = boolean(key, v)?,
                "minInSyncReplicas" => c.sync_policy.min_in_sync_replicas = num(key, v)?,
                "haMaxTimeSlaveNotCatchup" => {
                    c.sync_policy.max_time_not_catchup =
                        std::time::Duration::from_millis(num(key, v)?);
                }
                "syncStateSetByController" => c.sync_policy.by_controller = boolean(key, v)?,
                "masterLeaseMs" => {
                    c.sync_policy.lease = std::time::Duration::from_millis(num(key, v)?);
                }
                "masterLeaseQuorum" => c.sync_policy.lease_quorum = num(key, v)?,
                "rejectTransactionMessage" => c.reject_transaction_message = boolean(key, v)?,
                "enablePropertyFilter" => c.enable_property_filter = boolean(key, v)?,
                "filterSupportRetry" => c.filter_support_retry = boolean(key, v)?,
                "storeReplyMessageEnable" => c.store_reply_message_enable = boolean(key, v)?,
                "timerWheelEnable" => c.timer_wheel_enable = boolean(key, v)?,
                "timerPrecisionMs" => c.timer_precision_ms = num(key, v)?,
                "timerMaxDelaySec" => c.timer_max_delay_sec = num(key, v)?,
                // The wheel is held in memory whole (docs/broker.md): no roll window.
                "timerRollWindowSlot" => {
                    num::<i64>(key, v)?;
                }
                "transactionTimeOut" => c.transaction_timeout_ms = num(key, v)?,
                "transactionCheckMax" => c.transaction_check_max = num(key, v)?,
                "transactionCheckInterval" => c.transaction_check_interval_ms = num(key, v)?,
                "haMasterAddress" => {
                    c.ha_master_address = Some(v.clone()).filter(|a| !a.trim().is_empty())
                }
                "slaveReadEnable" => c.slave_read_enable = boolean(key, v)?,
                "whichBrokerWhenConsumeSlowly" => c.which_broker_when_consume_slowly = num(key, v)?,
                "accessMessageInMemoryMaxRatio" => {
                    c.access_message_in_memory_max_ratio = num(key, v)?
                }
                "enableDLegerCommitLog" => c.dledger.enabled = boolean(key, v)?,
                "dLegerGroup" => c.dledger.group = Some(v.clone()).filter(|g| !g.is_empty()),
                "dLegerPeers" => c.dledger.peers = dledger_peers(key, v)?,
                "dLegerSelfId" => c.dledger.self_id = v.trim().to_owned(),
                "preferredLeaderId" => {
                    c.dledger.preferred_leader_id =
                        Some(v.trim().to_owned()).filter(|p| !p.is_empty());
                }
                "heartBeatTimeIntervalMs" => c.dledger.heartbeat_ms = num(key, v)?,
                "maxHeartBeatLeak" => c.dledger.max_heartbeat_leak = num(key, v)?,
                "maxVoteIntervalMs" => c.dledger.max_vote_interval_ms = num(key, v)?,
                "snapshotThreshold" => c.dledger.snapshot_threshold = num(key, v)?,
                _ => warn!(key, "unknown configuration key ignored"),
            }
        }
        if !ha_port_set {
            c.ha_listen_port = c.listen_port.saturating_add(1);
        }
        if c.dledger.bind_address.is_none() {
            c.dledger.bind_address = Some(c.bind_address);
        }
        c.store.dispatch_committed_only = c.dledger.enabled;
        c.store.keep_commitlog = c.dledger.enabled;
        if !master_role_set && c.broker_role != BrokerRole::Slave {
            c.master_role = c.broker_role;
        }
        if c.slave_broker_id <= 0 {
            c.slave_broker_id = if c.broker_id > 0 { c.broker_id } else { 1 };
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError {
                key: key.into(),
                reason,
            })
        };
        if let Some((ak, f)) = &self.namesrv_credentials {
            if ak.is_empty() || f.as_os_str().is_empty() {
                return bad(
                    "namesrvAccessKey",
                    "namesrvAccessKey and namesrvSecretFile go together".into(),
                );
            }
        }
        if self.acl_enable && (self.auth.authentication || self.auth.authorization) {
            return bad(
                "authenticationEnabled",
                "ACL 1.0 (aclEnable) and ACL 2.0 (authenticationEnabled/authorizationEnabled) \
                 cannot both be on"
                    .into(),
            );
        }
        if self.ha_require_signature && self.control_secret_file.is_none() {
            return bad(
                "haRequireSignature",
                "needs controlSecretFile (the group's secret the HA challenge is signed with)"
                    .into(),
            );
        }
        if self.broker_role == BrokerRole::Slave && self.broker_id <= 0 {
            return bad("brokerId", "a SLAVE needs a brokerId above 0".into());
        }
        if self.broker_role != BrokerRole::Slave && self.broker_id != 0 {
            return bad("brokerId", "a master must have brokerId 0".into());
        }
        if !(1..=1024).contains(&self.default_topic_queue_nums) {
            return bad(
                "defaultTopicQueueNums",
                format!("{} is outside 1..=1024", self.default_topic_queue_nums),
            );
        }
        if self.broker_name.is_empty() {
            return bad("brokerName", "must not be empty".into());
        }
        if self.dledger.enabled {
            let d = &self.dledger;
            if d.peers.is_empty() {
                return bad(
                    "dLegerPeers",
                    "required with enableDLegerCommitLog=true (e.g. n0-10.0.0.1:40911;n1-10.0.0.2:40911;n2-10.0.0.3:40911)".into(),
                );
            }
            if !d.peers.iter().any(|(id, _)| *id == d.self_id) {
                return bad(
                    "dLegerSelfId",
                    format!(
                        "`{}` is not one of the ids in dLegerPeers ({})",
                        d.self_id,
                        d.peers
                            .iter()
                            .map(|(id, _)| id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if let Some(p) = &d.preferred_leader_id {
                if !d.peers.iter().any(|(id, _)| id == p) {
                    return bad(
                        "preferredLeaderId",
                        format!("`{p}` is not one of the ids in dLegerPeers"),
                    );
                }
            }
            if !(10..=60_000).contains(&d.heartbeat_ms) {
                return bad(
                    "heartBeatTimeIntervalMs",
                    format!("{} is outside 10..=60000", d.heartbeat_ms),
                );
            }
            if !(2..=100).contains(&d.max_heartbeat_leak) {
                return bad(
                    "maxHeartBeatLeak",
                    format!("{} is outside 2..=100", d.max_heartbeat_leak),
                );
            }
            if !(1..=60_000).contains(&d.max_vote_interval_ms) {
                return bad(
                    "maxVoteIntervalMs",
                    format!("{} is outside 1..=60000", d.max_vote_interval_ms),
                );
            }
            if !(10..=100_000_000).contains(&d.snapshot_threshold) {
                return bad(
                    "snapshotThreshold",
                    format!("{} is outside 10..=100000000", d.snapshot_threshold),
                );
            }
        }
        self.store.validate().map_err(|e| match e {
            crate::store::StoreError::Config { key, reason } => ConfigError {
                key: key.to_owned(),
                reason,
            },
            other => ConfigError {
                key: "store".into(),
                reason: other.to_string(),
            },
        })
    }

    /// The settings as `key=value` lines (GET_BROKER_CONFIG).
    pub fn to_properties(&self) -> String {
        let s = &self.store;
        let flush = match s.flush_disk_type {
            FlushDiskType::Async => "ASYNC_FLUSH",
            FlushDiskType::Sync => "SYNC_FLUSH",
        };
        [
            ("brokerClusterName", self.broker_cluster_name.clone()),
            ("brokerName", self.broker_name.clone()),
            ("brokerId", self.broker_id.to_string()),
            ("brokerRole", self.broker_role.name().to_owned()),
            ("masterRole", self.master_role.name().to_owned()),
            ("roleEpoch", self.role_epoch.to_string()),
            ("slaveBrokerId", self.slave_broker_id.to_string()),
            ("allAckInSyncStateSet", self.sync_policy.all_ack.to_string()),
            (
                "minInSyncReplicas",
                self.sync_policy.min_in_sync_replicas.to_string(),
            ),
            (
                "haMaxTimeSlaveNotCatchup",
                self.sync_policy
                    .max_time_not_catchup
                    .as_millis()
                    .to_string(),
            ),
            (
                "syncStateSetByController",
                self.sync_policy.by_controller.to_string(),
            ),
            (
                "masterLeaseMs",
                self.sync_policy.lease.as_millis().to_string(),
            ),
            (
                "masterLeaseQuorum",
                self.sync_policy.lease_quorum.to_string(),
            ),
            ("slaveReadEnable", self.slave_read_enable.to_string()),
            ("flushDiskType", flush.to_owned()),
            ("namesrvAddr", self.namesrv_addr.join(";")),
            ("listenPort", self.listen_port.to_string()),
            ("haListenPort", self.ha_listen_port.to_string()),
            ("brokerIP1", self.broker_ip1.clone()),
            (
                "storePathRootDir",
                s.store_path_root_dir.display().to_string(),
            ),
            (
                "mappedFileSizeCommitLog",
                s.mapped_file_size_commit_log.to_string(),
            ),
            (
                "mappedFileSizeConsumeQueue",
                s.mapped_file_size_consume_queue.to_string(),
            ),
            ("maxMessageSize", s.max_message_size.to_string()),
            ("fileReservedTime", s.file_reserved_time_hours.to_string()),
            ("aclEnable", self.acl_enable.to_string()),
            (
                "authenticationEnabled",
                self.auth.authentication.to_string(),
            ),
            ("authorizationEnabled", self.auth.authorization.to_string()),
            ("haRequireSignature", self.ha_require_signature.to_string()),
            ("deleteWhen", s.delete_when.clone()),
            (
                "diskMaxUsedSpaceRatio",
                s.disk_max_used_space_ratio.to_string(),
            ),
            (
                "diskSpaceCleanForciblyRatio",
                s.disk_space_clean_forcibly_ratio.to_string(),
            ),
            (
                "diskSpaceWarningLevelRatio",
                s.disk_space_warning_level_ratio.to_string(),
            ),
            (
                "flushIntervalCommitLog",
                s.flush_interval_commit_log_ms.to_string(),
            ),
            ("syncFlushTimeout", s.sync_flush_timeout_ms.to_string()),
            ("messageDelayLevel", s.message_delay_level.clone()),
            (
                "autoCreateTopicEnable",
                self.auto_create_topic_enable.to_string(),
            ),
            (
                "autoCreateSubscriptionGroup",
                self.auto_create_subscription_group.to_string(),
            ),
            (
                "defaultTopicQueueNums",
                self.default_topic_queue_nums.to_string(),
            ),
            (
                "brokerSuspendMaxTimeMillis",
                self.broker_suspend_max_time_millis.to_string(),
            ),
            ("maxReconsumeTimes", self.max_reconsume_times.to_string()),
            ("brokerPermission", self.broker_permission.to_string()),
            ("metricsPort", self.metrics_port.to_string()),
            ("bindAddress", self.bind_address.to_string()),
            (
                "haBindAddress",
                self.ha_bind_address
                    .unwrap_or(self.bind_address)
                    .to_string(),
            ),
            (
                "metricsBindAddress",
                self.metrics_bind_address
                    .unwrap_or(self.bind_address)
                    .to_string(),
            ),
            (
                "rejectTransactionMessage",
                self.reject_transaction_message.to_string(),
            ),
            (
                "transactionTimeOut",
                self.transaction_timeout_ms.to_string(),
            ),
            (
                "transactionCheckMax",
                self.transaction_check_max.to_string(),
            ),
            (
                "transactionCheckInterval",
                self.transaction_check_interval_ms.to_string(),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
    }

    /// `brokerIP1:listenPort`.
    pub fn broker_addr(&self) -> String {
        format!("{}:{}", self.broker_ip1, self.listen_port)
    }

    /// The ACL file when `aclEnable` is on: `aclFile`, else
    /// `$ROCKETMQ_HOME/conf/plain_acl.yml`; `None` when neither is set.
    #[must_use]
    pub fn acl_path(&self) -> Option<std::path::PathBuf> {
        self.acl_file.clone().or_else(|| {
            std::env::var_os("ROCKETMQ_HOME").map(|h| {
                std::path::PathBuf::from(h)
                    .join("conf")
                    .join("plain_acl.yml")
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_rocketmq_broker_conf() {
        let text = "# broker-a\nbrokerClusterName = DefaultCluster\nbrokerName=broker-a\nbrokerId=0\ndeleteWhen=04\nfileReservedTime=48\nbrokerRole=SYNC_MASTER\nflushDiskType=SYNC_FLUSH\nnamesrvAddr=10.0.0.1:9876;10.0.0.2:9876\nlistenPort=20911\nsomethingElse=1\n";
        let c = BrokerConfig::from_properties(&parse_properties(text)).unwrap();
        assert_eq!(c.broker_role, BrokerRole::SyncMaster);
        assert_eq!(c.store.flush_disk_type, FlushDiskType::Sync);
        assert_eq!(c.namesrv_addr.len(), 2);
        assert_eq!((c.listen_port, c.ha_listen_port), (20911, 20912));
        assert_eq!(c.store.file_reserved_time_hours, 48);
        // What GET_BROKER_CONFIG returns reads back as the same configuration.
        let again = BrokerConfig::from_properties(&parse_properties(&c.to_properties())).unwrap();
        assert_eq!(again.to_properties(), c.to_properties());
    }

    #[test]
    fn runtime_updates_are_validated_all_or_nothing() {
        let c = BrokerConfig::default();
        let r = RuntimeSettings::from(&c);
        let bad = parse_properties("autoCreateTopicEnable=false\nlistenPort=1");
        assert_eq!(r.update(&bad).unwrap_err().key, "listenPort");
        assert!(r
            .auto_create_topic
            .load(std::sync::atomic::Ordering::Relaxed));
        r.update(&parse_properties(
            "autoCreateTopicEnable=false\nmaxReconsumeTimes=3",
        ))
        .unwrap();
        let mut c2 = c.clone();
        r.apply_to(&mut c2);
        assert!(!c2.auto_create_topic_enable);
        assert_eq!(c2.max_reconsume_times, 3);
        assert_eq!(
            r.update(&parse_properties("maxReconsumeTimes=x"))
                .unwrap_err()
                .key,
            "maxReconsumeTimes"
        );
    }

    /// Issue 15 (first step): the DLedger keys are read with RocketMQ's names and
    /// checked — a bad peer list names its problem — and a broker configured for the
    /// mode stops at start-up saying it is not built, instead of ignoring the keys and
    /// running as a plain master.
    #[test]
    fn dledger_keys_are_checked() {
        let conf = |extra: &str| {
            BrokerConfig::from_properties(&parse_properties(&format!(
                "brokerName=RaftNode00\nenableDLegerCommitLog=true\ndLegerGroup=RaftNode00\n{extra}"
            )))
        };
        let peers = "dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913";
        for (extra, key, says) in [
            (String::new(), "dLegerPeers", "required"),
            (
                "dLegerPeers=n0-127.0.0.1".into(),
                "dLegerPeers",
                "id-host:port",
            ),
            (
                "dLegerPeers=127.0.0.1:40911".into(),
                "dLegerPeers",
                "id-host:port",
            ),
            ("dLegerPeers=n0-a:1;n0-b:2".into(), "dLegerPeers", "twice"),
            ("bindAddress=any".into(), "bindAddress", "not an IP address"),
            (
                "dLegerBindAddress=::x".into(),
                "dLegerBindAddress",
                "not an IP address",
            ),
            (format!("{peers}\ndLegerSelfId=n7"), "dLegerSelfId", "n7"),
            (
                format!("{peers}\ndLegerSelfId=n1\npreferredLeaderId=n9"),
                "preferredLeaderId",
                "n9",
            ),
            (
                format!("{peers}\ndLegerSelfId=n1\nmaxHeartBeatLeak=1"),
                "maxHeartBeatLeak",
                "outside",
            ),
        ] {
            let e = conf(&extra).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e:?}");
            assert!(e.reason.contains(says), "{extra}: {}", e.reason);
        }
        // Off (RocketMQ's default), the keys are read and nothing is refused.
        let c = BrokerConfig::from_properties(&parse_properties(&format!(
            "brokerName=b\nenableDLegerCommitLog=false\n{peers}"
        )))
        .unwrap();
        assert_eq!(c.dledger.peers.len(), 3);
        assert_eq!(c.dledger.peers[2], ("n2".into(), "127.0.0.1:40913".into()));
        assert_eq!(c.dledger.self_id, "n0");
        assert!(!c.store.dispatch_committed_only);
        // On, with a valid peer list: node ids follow the list, followers register
        // with id + 1, and the dispatcher follows the commit index.
        let c = conf(&format!("{peers}\ndLegerSelfId=n2")).unwrap();
        assert_eq!(
            (c.dledger.self_node(), c.dledger.follower_broker_id()),
            (2, 3)
        );
        assert!(c.store.dispatch_committed_only);
        assert!(c.store.keep_commitlog);
        assert_eq!(c.dledger.heartbeat_ms, 250);
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (text, key) in [
            ("listenPort=abc", "listenPort"),
            ("brokerRole=LEADER", "brokerRole"),
            ("flushDiskType=SOMETIMES", "flushDiskType"),
            ("brokerRole=SLAVE", "brokerId"),
            ("autoCreateTopicEnable=yes", "autoCreateTopicEnable"),
            ("mappedFileSizeConsumeQueue=7", "mappedFileSizeConsumeQueue"),
            ("brokerPermission=5", "brokerPermission"),
            ("brokerPermission=0", "brokerPermission"),
            (
                "diskSpaceWarningLevelRatio=101",
                "diskSpaceWarningLevelRatio",
            ),
            (
                "diskSpaceCleanForciblyRatio=0",
                "diskSpaceCleanForciblyRatio",
            ),
        ] {
            let e = BrokerConfig::from_properties(&parse_properties(text)).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
