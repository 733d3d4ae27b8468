//! The name server: route table, broker liveness, cluster info.
//!
//! Tables (as RocketMQ's `RouteInfoManager`): cluster → broker names, broker name →
//! addresses by broker id, topic → broker name → queue data, and the live table (address
//! → last registration, connection). Topic queue data come only from masters (id 0). A
//! broker expires 120 s after its last registration, and at once when the connection it
//! registered on closes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How a refused master registration's remark begins: a master of a newer epoch is
/// registered for that broker name (the refused broker fences itself on seeing it).
pub const STALE_EPOCH: &str = "stale epoch";

use tracing::info;

use crate::protocol::{
    parse_body, to_body, BrokerData, ClusterInfo, QueueData, RegisterBrokerBody, TopicList,
    TopicRouteData,
};
use crate::remoting::codes::{request, response};
use crate::remoting::{Connection, RemotingCommand, RemotingError, RequestHandler, ResponseFuture};
use crate::store::metadata::DataVersion;

mod kv;
pub use kv::{KvConfig, KvTable};

/// How long a broker stays without registering.
pub const BROKER_EXPIRY: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct LiveBroker {
    last_update: Instant,
    /// The connections that registered it within the expiry, with when they last did:
    /// a broker leaves with its connection only when no other connection that
    /// registered it recently remains (a stranger's registration and close must not
    /// take a live broker off the routes).
    conns: BTreeMap<u64, Instant>,
    ha_server_addr: String,
    data_version: DataVersion,
    broker_name: String,
    broker_id: i64,
    epoch: i64,
}

#[derive(Debug, Default)]
struct Tables {
    cluster_addr: BTreeMap<String, BTreeSet<String>>,
    broker_addr: BTreeMap<String, BrokerData>,
    topic_queue: BTreeMap<String, BTreeMap<String, QueueData>>,
    live: HashMap<String, LiveBroker>,
}

/// A registration request, decoded.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Cluster.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// `ip:port`.
    pub broker_addr: String,
    /// 0 = master.
    pub broker_id: i64,
    /// `ip:haPort`.
    pub ha_server_addr: String,
    /// ferrocket's role epoch (0 when the broker sends none).
    pub epoch: i64,
    /// Topics and their version.
    pub body: RegisterBrokerBody,
}

/// What a registration answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterResult {
    /// The master's address, for slaves.
    pub master_addr: Option<String>,
    /// The master's HA address, for slaves.
    pub ha_server_addr: Option<String>,
}

/// The route tables.
#[derive(Debug, Default)]
pub struct RouteInfoManager {
    tables: RwLock<Tables>,
}

impl RouteInfoManager {
    /// Empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a registration (REGISTER_BROKER).
    ///
    /// # Errors
    /// A master registration (brokerId 0) with an epoch older than the master already
    /// registered for the broker name: a stale master cannot win the route back.
    pub fn register(&self, reg: Registration, conn_id: u64) -> Result<RegisterResult, String> {
        let mut t = self.write();
        if reg.broker_id == 0 {
            let current = t
                .broker_addr
                .get(&reg.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
                .filter(|a| **a != reg.broker_addr)
                .and_then(|a| t.live.get(a).map(|l| (a.clone(), l.epoch)));
            if let Some((addr, epoch)) = current {
                if epoch > reg.epoch {
                    tracing::warn!(broker = %reg.broker_addr, name = %reg.broker_name, epoch = reg.epoch, master = %addr, master_epoch = epoch, "stale master registration refused");
                    return Err(format!(
                        "{STALE_EPOCH} {}: {} is master of {} at epoch {epoch}",
                        reg.epoch, addr, reg.broker_name
                    ));
                }
            }
        }
        t.cluster_addr
            .entry(reg.cluster.clone())
            .or_default()
            .insert(reg.broker_name.clone());
        let first = !t.live.contains_key(&reg.broker_addr);
        let now = Instant::now();
        let mut conns = t
            .live
            .get(&reg.broker_addr)
            .map(|l| l.conns.clone())
            .unwrap_or_default();
        conns.retain(|_, at| now.duration_since(*at) < BROKER_EXPIRY);
        conns.insert(conn_id, now);
        let bd = t
            .broker_addr
            .entry(reg.broker_name.clone())
            .or_insert_with(|| BrokerData {
                cluster: reg.cluster.clone(),
                broker_name: reg.broker_name.clone(),
                ..BrokerData::default()
            });
        bd.broker_addrs
            .retain(|id, addr| !(addr == &reg.broker_addr && *id != reg.broker_id));
        bd.broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone());
        let version = reg.body.topic_config_serialize_wrapper.data_version.clone();
        let previous = t.live.get(&reg.broker_addr);
        // A first registration counts as a change.
        let changed = previous.is_none_or(|l| l.data_version != version);
        // A broker that just became master (a promotion) brings its topics even at an
        // unchanged data version, so the route follows the new master's permissions; it
        // adds and updates only: a promoted slave that has not copied every topic yet
        // must not take the others out of the route.
        let promoted = previous.is_some_and(|l| l.broker_id != reg.broker_id);
        if reg.broker_id == 0 && (changed || promoted) {
            for (topic, tc) in &reg.body.topic_config_serialize_wrapper.topic_config_table {
                t.topic_queue.entry(topic.clone()).or_default().insert(
                    reg.broker_name.clone(),
                    QueueData {
                        broker_name: reg.broker_name.clone(),
                        read_queue_nums: tc.read_queue_nums,
                        write_queue_nums: tc.write_queue_nums,
                        perm: tc.perm,
                        topic_sys_flag: tc.topic_sys_flag,
                    },
                );
            }
        }
        if reg.broker_id == 0 && changed {
            // Topics the master no longer has are dropped from its queue data.
            let present: BTreeSet<&String> = reg
                .body
                .topic_config_serialize_wrapper
                .topic_config_table
                .keys()
                .collect();
            t.topic_queue.retain(|topic, by_broker| {
                if !present.contains(topic) {
                    by_broker.remove(&reg.broker_name);
                }
                !by_broker.is_empty()
            });
        }
        if first {
            info!(broker = %reg.broker_addr, name = %reg.broker_name, id = reg.broker_id, "broker registered");
        }
        t.live.insert(
            reg.broker_addr.clone(),
            LiveBroker {
                last_update: now,
                conns,
                ha_server_addr: reg.ha_server_addr.clone(),
                data_version: version,
                broker_name: reg.broker_name.clone(),
                broker_id: reg.broker_id,
                epoch: reg.epoch,
            },
        );
        let mut res = RegisterResult::default();
        if reg.broker_id != 0 {
            if let Some(master) = t
                .broker_addr
                .get(&reg.broker_name)
                .and_then(|b| b.broker_addrs.get(&0))
                .cloned()
            {
                res.ha_server_addr = t.live.get(&master).map(|l| l.ha_server_addr.clone());
                res.master_addr = Some(master);
            }
        }
        Ok(res)
    }

    fn remove_locked(t: &mut Tables, addr: &str) {
        let Some(live) = t.live.remove(addr) else {
            return;
        };
        let name = live.broker_name;
        let mut gone = false;
        if let Some(bd) = t.broker_addr.get_mut(&name) {
            bd.broker_addrs.retain(|_, a| a != addr);
            gone = bd.broker_addrs.is_empty();
        }
        if gone {
            t.broker_addr.remove(&name);
            for names in t.cluster_addr.values_mut() {
                names.remove(&name);
            }
            t.cluster_addr.retain(|_, n| !n.is_empty());
            t.topic_queue.retain(|_, by_broker| {
                by_broker.remove(&name);
                !by_broker.is_empty()
            });
        }
        info!(broker = %addr, name = %name, id = live.broker_id, "broker removed");
    }

    /// UNREGISTER_BROKER.
    pub fn unregister(&self, addr: &str) {
        Self::remove_locked(&mut self.write(), addr);
    }

    /// Removes brokers silent for longer than `expiry`.
    pub fn scan_expired(&self, expiry: Duration) -> usize {
        let mut t = self.write();
        let old: Vec<String> = t
            .live
            .iter()
            .filter(|(_, l)| l.last_update.elapsed() > expiry)
            .map(|(a, _)| a.clone())
            .collect();
        for a in &old {
            Self::remove_locked(&mut t, a);
        }
        old.len()
    }

    /// Forgets a closed connection; removes the brokers that only it had registered
    /// (within the expiry).
    pub fn connection_closed(&self, conn_id: u64) {
        let mut t = self.write();
        let mut gone: Vec<String> = Vec::new();
        for (a, l) in &mut t.live {
            if l.conns.remove(&conn_id).is_some() && l.conns.is_empty() {
                gone.push(a.clone());
            }
        }
        for a in &gone {
            Self::remove_locked(&mut t, a);
        }
    }

    /// GET_ROUTEINFO_BY_TOPIC.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let t = self.read();
        let queues = t.topic_queue.get(topic)?;
        let mut route = TopicRouteData::default();
        for (name, qd) in queues {
            route.queue_datas.push(qd.clone());
            if let Some(bd) = t.broker_addr.get(name) {
                route.broker_datas.push(bd.clone());
            }
        }
        (!route.broker_datas.is_empty()).then_some(route)
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(&self) -> ClusterInfo {
        let t = self.read();
        ClusterInfo {
            broker_addr_table: t.broker_addr.clone(),
            cluster_addr_table: t
                .cluster_addr
                .iter()
                .map(|(c, n)| (c.clone(), n.iter().cloned().collect()))
                .collect(),
        }
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub fn topics(&self) -> Vec<String> {
        self.read().topic_queue.keys().cloned().collect()
    }

    /// DELETE_TOPIC_IN_NAMESRV.
    pub fn delete_topic(&self, topic: &str) {
        self.write().topic_queue.remove(topic);
    }

    /// Registered broker addresses.
    pub fn live_brokers(&self) -> usize {
        self.read().live.len()
    }

    /// GET_SYSTEM_TOPIC_LIST_FROM_NS: cluster names and broker names (RocketMQ's
    /// "system topics"), with one broker's address.
    pub fn system_topics(&self) -> TopicList {
        let t = self.read();
        let mut list = TopicList::default();
        for (cluster, names) in &t.cluster_addr {
            list.topic_list.push(cluster.clone());
            list.topic_list.extend(names.iter().cloned());
        }
        list.broker_addr = t
            .broker_addr
            .values()
            .find_map(|b| b.broker_addrs.values().next().cloned());
        list
    }

    /// WIPE_WRITE_PERM_OF_BROKER (`write = false`) / ADD_WRITE_PERM_OF_BROKER: the
    /// write bit of every topic's queue data of `broker_name`; returns how many topics.
    pub fn set_write_perm(&self, broker_name: &str, write: bool) -> usize {
        let mut t = self.write();
        let mut n = 0;
        for queues in t.topic_queue.values_mut() {
            if let Some(qd) = queues.get_mut(broker_name) {
                if write {
                    qd.perm |= crate::protocol::topic::PERM_WRITE;
                } else {
                    qd.perm &= !crate::protocol::topic::PERM_WRITE;
                }
                n += 1;
            }
        }
        n
    }

    /// QUERY_DATA_VERSION: whether the broker's topic data changed since it last
    /// registered (its `DataVersion` differs from the one recorded), and the recorded
    /// one; refreshes the broker's liveness.
    pub fn query_data_version(
        &self,
        broker_addr: &str,
        theirs: &DataVersion,
    ) -> (bool, Option<DataVersion>) {
        let mut t = self.write();
        match t.live.get_mut(broker_addr) {
            Some(l) => {
                l.last_update = Instant::now();
                (l.data_version != *theirs, Some(l.data_version.clone()))
            }
            None => (true, None),
        }
    }
}

/// The name server's request handler.
#[derive(Debug, Default)]
pub struct NameServer {
    /// Route tables.
    pub routes: RouteInfoManager,
    /// KV configuration.
    pub kv: KvConfig,
    /// Prometheus metrics.
    pub metrics: crate::metrics::NamesrvMetrics,
    /// Take REGISTER_BROKER / UNREGISTER_BROKER from any address (`namesrv
    /// --trust-any-broker-address`). Off by default: a broker may (un)register only the
    /// address it connects from, or any address over loopback.
    pub trust_any_broker_address: bool,
    /// `namesrv --acl-file`: route and configuration writes (broker registration,
    /// KV config, write permissions, topic deletion, name server config) need an admin
    /// account of this plain ACL file (or a global white address); reads stay open.
    pub acl: Option<std::sync::Arc<crate::acl::Acl>>,
}

/// The name server's writes (what `--acl-file` guards).
#[must_use]
pub fn is_write(code: i32) -> bool {
    matches!(
        code,
        request::REGISTER_BROKER
            | request::UNREGISTER_BROKER
            | request::PUT_KV_CONFIG
            | request::DELETE_KV_CONFIG
            | request::WIPE_WRITE_PERM_OF_BROKER
            | request::ADD_WRITE_PERM_OF_BROKER
            | request::UPDATE_NAMESRV_CONFIG
            | request::DELETE_TOPIC_IN_NAMESRV
    )
}

/// Whether a connection from `peer` may register or unregister `broker_addr`: the
/// claimed address's IP is the connection's own, or the connection is local.
pub fn may_claim(peer: std::net::IpAddr, broker_addr: &str) -> bool {
    let canonical = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    let peer = canonical(peer);
    if peer.is_loopback() {
        return true;
    }
    broker_addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|claimed| canonical(claimed.ip()) == peer)
}

impl crate::metrics::Observable for NameServer {
    fn metrics(&self) -> String {
        self.metrics
            .registered_brokers
            .set(self.routes.live_brokers() as i64);
        self.metrics.encode()
    }

    fn ready(&self) -> bool {
        true
    }
}

fn decode_registration(req: &RemotingCommand) -> Result<Registration, RemotingError> {
    let body = req.body_bytes();
    let parsed: RegisterBrokerBody = if body.is_empty() {
        RegisterBrokerBody::default()
    } else if req.ext_bool("compressed") == Some(true) {
        return Err(RemotingError::BadField {
            field: "compressed",
            value: "true (compressed registration is not supported; set compressedRegister=false)"
                .into(),
        });
    } else {
        parse_body(&body).map_err(|e| RemotingError::Malformed(format!("register body: {e}")))?
    };
    Ok(Registration {
        cluster: req.ext_required("clusterName")?.to_owned(),
        broker_name: req.ext_required("brokerName")?.to_owned(),
        broker_addr: req.ext_required("brokerAddr")?.to_owned(),
        broker_id: req.ext_num("brokerId")?,
        ha_server_addr: req.ext("haServerAddr").unwrap_or("").to_owned(),
        epoch: req.ext_num_opt("epoch")?.unwrap_or(0),
        body: parsed,
    })
}

impl NameServer {
    /// Handles one request synchronously (the name server never waits), from the
    /// connection `conn_id` whose peer is `peer`.
    pub fn process(
        &self,
        conn_id: u64,
        peer: std::net::IpAddr,
        req: &RemotingCommand,
    ) -> RemotingCommand {
        let ok = |r: &RemotingCommand| RemotingCommand::response_to(r, response::SUCCESS);
        let err = |r: &RemotingCommand, code: i32, e: &dyn std::fmt::Display| {
            RemotingCommand::response_to(r, code).with_remark(e.to_string())
        };
        if let (Some(acl), true) = (&self.acl, is_write(req.code)) {
            let refusal = match acl.current().validate(req, peer) {
                Ok(None) => None,
                Ok(Some(a)) if a.admin => None,
                Ok(Some(a)) => Some(crate::acl::AclError::NeedAdmin(
                    req.code,
                    a.access_key.clone(),
                )),
                Err(e) => Some(e),
            };
            if let Some(e) = refusal {
                self.metrics.registrations_refused.inc();
                tracing::warn!(%peer, code = req.code, access_key = req.ext(crate::auth::ACCESS_KEY).unwrap_or(""), error = %e, "name server write refused by the ACL");
                return err(req, response::NO_PERMISSION, &e);
            }
        }
        if matches!(
            req.code,
            request::REGISTER_BROKER | request::UNREGISTER_BROKER
        ) && !self.trust_any_broker_address
        {
            if let Some(addr) = req.ext("brokerAddr") {
                if !may_claim(peer, addr) {
                    self.metrics.registrations_refused.inc();
                    tracing::warn!(%peer, broker_addr = addr, code = req.code, "broker (un)registration refused: it names an address other than the one it connects from");
                    return err(
                        req,
                        response::NO_PERMISSION,
                        &format!(
                            "a connection from {peer} may not (un)register the broker address {addr}: a broker registers from its own address (brokerIP1), or the name server runs with --trust-any-broker-address"
                        ),
                    );
                }
            }
        }
        match req.code {
            request::REGISTER_BROKER => match decode_registration(req) {
                Ok(reg) => {
                    let res = match self.routes.register(reg, conn_id) {
                        Ok(r) => r,
                        Err(e) => return err(req, response::SYSTEM_ERROR, &e),
                    };
                    let mut resp = ok(req).with_body(bytes::Bytes::from_static(b"{\"table\":{}}"));
                    if let Some(m) = res.master_addr {
                        resp = resp.with_ext("masterAddr", m);
                    }
                    if let Some(h) = res.ha_server_addr {
                        resp = resp.with_ext("haServerAddr", h);
                    }
                    resp
                }
                Err(e) => err(req, response::SYSTEM_ERROR, &e),
            },
            request::UNREGISTER_BROKER => match req.ext_required("brokerAddr") {
                Ok(addr) => {
                    self.routes.unregister(addr);
                    ok(req)
                }
                Err(e) => err(req, response::SYSTEM_ERROR, &e),
            },
            request::QUERY_DATA_VERSION => {
                let addr = match req.ext_required("brokerAddr") {
                    Ok(a) => a,
                    Err(e) => return err(req, response::SYSTEM_ERROR, &e),
                };
                let theirs: DataVersion = parse_body(&req.body_bytes()).unwrap_or_default();
                let (changed, ours) = self.routes.query_data_version(addr, &theirs);
                let resp = ok(req).with_ext("changed", changed);
                match ours {
                    Some(v) => resp.with_body(to_body(&v)),
                    None => resp,
                }
            }
            request::GET_SYSTEM_TOPIC_LIST_FROM_NS => {
                ok(req).with_body(to_body(&self.routes.system_topics()))
            }
            request::WIPE_WRITE_PERM_OF_BROKER | request::ADD_WRITE_PERM_OF_BROKER => {
                match req.ext_required("brokerName") {
                    Ok(name) => {
                        let add = req.code == request::ADD_WRITE_PERM_OF_BROKER;
                        let n = self.routes.set_write_perm(name, add);
                        tracing::info!(broker = %name, topics = n, add, "write permission changed");
                        ok(req).with_ext(
                            if add {
                                "addTopicCount"
                            } else {
                                "wipeTopicCount"
                            },
                            n,
                        )
                    }
                    Err(e) => err(req, response::SYSTEM_ERROR, &e),
                }
            }
            request::PUT_KV_CONFIG => {
                let fields = (|| {
                    Ok::<_, RemotingError>((
                        req.ext_required("namespace")?,
                        req.ext_required("key")?,
                        req.ext_required("value")?,
                    ))
                })();
                match fields {
                    Ok((ns, key, value)) => match self.kv.put(ns, key, value) {
                        Ok(()) => ok(req),
                        Err(e) => err(req, response::SYSTEM_ERROR, &e),
                    },
                    Err(e) => err(req, response::SYSTEM_ERROR, &e),
                }
            }
            request::GET_KV_CONFIG | request::DELETE_KV_CONFIG => {
                let fields = (|| {
                    Ok::<_, RemotingError>((
                        req.ext_required("namespace")?,
                        req.ext_required("key")?,
                    ))
                })();
                let (ns, key) = match fields {
                    Ok(f) => f,
                    Err(e) => return err(req, response::SYSTEM_ERROR, &e),
                };
                if req.code == request::DELETE_KV_CONFIG {
                    return match self.kv.delete(ns, key) {
                        Ok(()) => ok(req),
                        Err(e) => err(req, response::SYSTEM_ERROR, &e),
                    };
                }
                match self.kv.get(ns, key) {
                    Some(v) => ok(req).with_ext("value", v),
                    None => err(
                        req,
                        response::QUERY_NOT_FOUND,
                        &format!("No config item, Namespace: {ns} Key: {key}"),
                    ),
                }
            }
            request::GET_KVLIST_BY_NAMESPACE => match req.ext_required("namespace") {
                Ok(ns) => match self.kv.namespace(ns) {
                    Some(table) => {
                        ok(req).with_body(to_body(&serde_json::json!({ "table": table })))
                    }
                    None => err(
                        req,
                        response::QUERY_NOT_FOUND,
                        &format!("No config item, Namespace: {ns}"),
                    ),
                },
                Err(e) => err(req, response::SYSTEM_ERROR, &e),
            },
            request::GET_NAMESRV_CONFIG => {
                let path = self
                    .kv
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                ok(req).with_body(bytes::Bytes::from(format!("kvConfigPath={path}\n")))
            }
            request::UPDATE_NAMESRV_CONFIG => err(
                req,
                response::SYSTEM_ERROR,
                &"no name server setting can change while it runs (restart it with the new value)",
            ),
            request::GET_ROUTEINFO_BY_TOPIC => match req.ext_required("topic") {
                Ok(topic) => match self.routes.route(topic) {
                    Some(r) => ok(req).with_body(to_body(&r)),
                    None => err(
                        req,
                        response::TOPIC_NOT_EXIST,
                        &format!("No topic route info in name server for the topic: {topic}"),
                    ),
                },
                Err(e) => err(req, response::SYSTEM_ERROR, &e),
            },
            request::GET_BROKER_CLUSTER_INFO => {
                ok(req).with_body(to_body(&self.routes.cluster_info()))
            }
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => ok(req).with_body(to_body(&TopicList {
                topic_list: self.routes.topics(),
                broker_addr: None,
            })),
            request::DELETE_TOPIC_IN_NAMESRV => match req.ext_required("topic") {
                Ok(topic) => {
                    self.routes.delete_topic(topic);
                    ok(req)
                }
                Err(e) => err(req, response::SYSTEM_ERROR, &e),
            },
            code => err(
                req,
                response::REQUEST_CODE_NOT_SUPPORTED,
                &format!("request code {code} not supported"),
            ),
        }
    }

    /// Starts the expiry scan (every 5 s).
    pub fn spawn_expiry(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(ns) = me.upgrade() else { return };
                ns.routes.scan_expired(BROKER_EXPIRY);
            }
        });
    }
}

impl RequestHandler for NameServer {
    fn handle(self: Arc<Self>, conn: Arc<Connection>, req: RemotingCommand) -> ResponseFuture {
        let resp = self.process(conn.id, conn.peer.ip(), &req);
        Box::pin(async move { Some(resp) })
    }

    fn on_close(&self, conn: &Arc<Connection>) {
        self.routes.connection_closed(conn.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metadata::TopicConfig;

    fn reg(addr: &str, id: i64, topics: &[&str], counter: i64) -> Registration {
        let mut body = RegisterBrokerBody::default();
        for t in topics {
            body.topic_config_serialize_wrapper
                .topic_config_table
                .insert(
                    (*t).into(),
                    TopicConfig {
                        topic_name: (*t).into(),
                        read_queue_nums: 4,
                        write_queue_nums: 4,
                        ..TopicConfig::default()
                    },
                );
        }
        body.topic_config_serialize_wrapper.data_version.counter = counter;
        Registration {
            cluster: "C".into(),
            broker_name: "broker-a".into(),
            broker_addr: addr.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            epoch: 0,
            body,
        }
    }

    #[test]
    fn the_highest_epoch_keeps_broker_id_zero() {
        let r = RouteInfoManager::new();
        let at = |addr: &str, id: i64, epoch: i64| Registration {
            epoch,
            ..reg(addr, id, &["T"], 1)
        };
        r.register(at("old:1", 0, 1), 1).unwrap();
        // The promoted slave takes id 0 at epoch 2; the old master's entry is replaced.
        r.register(at("new:1", 0, 2), 2).unwrap();
        let route = r.route("T").unwrap();
        assert_eq!(
            route.broker_datas[0]
                .broker_addrs
                .get(&0)
                .map(String::as_str),
            Some("new:1")
        );
        // The stale master re-registering as master at epoch 1 is refused.
        let err = r.register(at("old:1", 0, 1), 1).unwrap_err();
        assert!(err.contains("stale epoch 1"), "{err}");
        let route = r.route("T").unwrap();
        assert_eq!(
            route.broker_datas[0]
                .broker_addrs
                .get(&0)
                .map(String::as_str),
            Some("new:1")
        );
        // As a slave it is welcome, and learns the new master.
        let res = r.register(at("old:1", 1, 2), 1).unwrap();
        assert_eq!(res.master_addr.as_deref(), Some("new:1"));
    }

    #[test]
    fn routes_come_from_the_master_and_slaves_learn_it() {
        let r = RouteInfoManager::new();
        r.register(reg("m:1", 0, &["T"], 1), 1).unwrap();
        let res = r.register(reg("s:1", 1, &["T", "Ignored"], 1), 2).unwrap();
        assert_eq!(res.master_addr.as_deref(), Some("m:1"));
        assert_eq!(res.ha_server_addr.as_deref(), Some("m:1-ha"));
        let route = r.route("T").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert!(r.route("Ignored").is_none());
        assert_eq!(r.topics(), vec!["T".to_string()]);
        // A new master registration with a new version replaces the topic set.
        r.register(reg("m:1", 0, &["U"], 2), 1).unwrap();
        assert!(r.route("T").is_none());
        assert!(r.route("U").is_some());
    }

    /// Issue 14: a stranger registering a live broker's address over its own connection,
    /// then closing it, used to take the broker off the routes until it registered again
    /// (30 s). The broker stays while its own connection does.
    #[test]
    fn a_strangers_registration_and_close_leave_a_live_broker_in_place() {
        let r = RouteInfoManager::new();
        r.register(reg("m:1", 0, &["T"], 1), 7).unwrap();
        r.register(reg("m:1", 0, &["T"], 1), 99).unwrap();
        r.connection_closed(99);
        assert!(r.route("T").is_some(), "the live broker was dropped");
        r.connection_closed(7);
        assert!(r.route("T").is_none());
    }

    #[test]
    fn brokers_expire_and_leave_with_their_connection() {
        let r = RouteInfoManager::new();
        r.register(reg("m:1", 0, &["T"], 1), 7).unwrap();
        r.register(reg("s:1", 1, &[], 1), 8).unwrap();
        r.connection_closed(8);
        assert_eq!(r.route("T").unwrap().broker_datas[0].broker_addrs.len(), 1);
        assert_eq!(r.scan_expired(Duration::ZERO), 1);
        assert!(r.route("T").is_none());
        assert!(r.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn a_broker_registers_only_the_address_it_connects_from() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(may_claim(ip("10.0.0.5"), "10.0.0.5:10911"));
        assert!(may_claim(ip("::ffff:10.0.0.5"), "10.0.0.5:10911"));
        assert!(may_claim(ip("127.0.0.1"), "10.0.0.9:10911"));
        assert!(!may_claim(ip("10.0.0.6"), "10.0.0.5:10911"));
        assert!(!may_claim(ip("10.0.0.6"), "not-an-address"));

        let ns = NameServer::default();
        let stranger = ip("10.0.0.6");
        let fake = RemotingCommand::request(request::REGISTER_BROKER)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b")
            .with_ext("brokerAddr", "10.0.0.5:10911")
            .with_ext("brokerId", "0");
        assert_eq!(ns.process(9, stranger, &fake).code, response::NO_PERMISSION);
        assert!(ns.routes.cluster_info().cluster_addr_table.is_empty());
        assert_eq!(ns.process(9, ip("10.0.0.5"), &fake).code, response::SUCCESS);
        let unregister = RemotingCommand::request(request::UNREGISTER_BROKER)
            .with_ext("brokerAddr", "10.0.0.5:10911");
        assert_eq!(
            ns.process(9, stranger, &unregister).code,
            response::NO_PERMISSION
        );
        assert_eq!(ns.routes.live_brokers(), 1);

        let open = NameServer {
            trust_any_broker_address: true,
            ..NameServer::default()
        };
        assert_eq!(open.process(9, stranger, &fake).code, response::SUCCESS);
    }

    #[test]
    fn requests_get_rocketmq_codes() {
        let ns = NameServer::default();
        let q = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "nope");
        assert_eq!(
            ns.process(1, std::net::Ipv4Addr::LOCALHOST.into(), &q).code,
            response::TOPIC_NOT_EXIST
        );
        assert_eq!(
            ns.process(
                1,
                std::net::Ipv4Addr::LOCALHOST.into(),
                &RemotingCommand::request(9999)
            )
            .code,
            response::REQUEST_CODE_NOT_SUPPORTED
        );
        let bad = RemotingCommand::request(request::REGISTER_BROKER).with_ext("brokerName", "b");
        assert_eq!(
            ns.process(1, std::net::Ipv4Addr::LOCALHOST.into(), &bad)
                .code,
            response::SYSTEM_ERROR
        );
    }
}
