//! Client channels from heartbeats: consumer groups (members, subscriptions) and
//! producer groups. Consumers are told to rebalance (NOTIFY_CONSUMER_IDS_CHANGED) when a
//! group's membership changes; channels expire 120 s after their last heartbeat.

use crate::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info;

use crate::protocol::{HeartbeatData, SubscriptionData};
use crate::remoting::codes::request;
use crate::remoting::{Connection, RemotingCommand};

/// How long a client stays without a heartbeat.
pub const CHANNEL_EXPIRY: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Member {
    conn: Arc<Connection>,
    last_update: Instant,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<String, Member>,
    subscriptions: HashMap<String, SubscriptionData>,
}

/// A consumer group as admin tools see it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// Client id and remote address of each member.
    pub members: Vec<(String, String)>,
    /// The group's subscriptions.
    pub subscriptions: Vec<SubscriptionData>,
}

/// Producer group → client id → (connection, last heartbeat).
type ProducerTable = HashMap<String, BTreeMap<String, (Arc<Connection>, Instant)>>;

/// Connected clients.
#[derive(Debug, Default)]
pub struct ClientManager {
    consumers: Mutex<HashMap<String, Group>>,
    producers: Mutex<ProducerTable>,
}

impl ClientManager {
    /// Records a heartbeat; returns the consumer groups whose membership changed.
    pub fn heartbeat(&self, conn: &Arc<Connection>, hb: &HeartbeatData) -> Vec<String> {
        let now = Instant::now();
        let mut changed = Vec::new();
        {
            let mut groups = lock(&self.consumers);
            for cd in &hb.consumer_data_set {
                let g = groups.entry(cd.group_name.clone()).or_default();
                let fresh = match g.members.get_mut(&hb.client_id) {
                    Some(m) => {
                        let moved = m.conn.id != conn.id;
                        m.conn = Arc::clone(conn);
                        m.last_update = now;
                        moved
                    }
                    None => {
                        g.members.insert(
                            hb.client_id.clone(),
                            Member {
                                conn: Arc::clone(conn),
                                last_update: now,
                            },
                        );
                        true
                    }
                };
                if !hb.without_sub {
                    for s in &cd.subscription_data_set {
                        let newer = g
                            .subscriptions
                            .get(&s.topic)
                            .is_none_or(|old| old.sub_version <= s.sub_version);
                        if newer {
                            g.subscriptions
                                .insert(s.topic.clone(), s.clone().normalized());
                        }
                    }
                }
                if fresh {
                    info!(group = %cd.group_name, client = %hb.client_id, "consumer joined");
                    changed.push(cd.group_name.clone());
                }
            }
        }
        let mut producers = lock(&self.producers);
        for pd in &hb.producer_data_set {
            producers
                .entry(pd.group_name.clone())
                .or_default()
                .insert(hb.client_id.clone(), (Arc::clone(conn), now));
        }
        changed
    }

    fn remove_where(&self, mut gone: impl FnMut(&str, &Member) -> bool) -> Vec<String> {
        let mut changed = Vec::new();
        let mut groups = lock(&self.consumers);
        for (name, g) in groups.iter_mut() {
            let before = g.members.len();
            g.members.retain(|id, m| !gone(id, m));
            if g.members.len() != before {
                changed.push(name.clone());
            }
        }
        groups.retain(|_, g| !g.members.is_empty());
        changed
    }

    /// UNREGISTER_CLIENT; returns the consumer groups that changed.
    pub fn unregister(
        &self,
        client_id: &str,
        consumer_group: Option<&str>,
        producer_group: Option<&str>,
    ) -> Vec<String> {
        if let Some(pg) = producer_group {
            if let Some(p) = lock(&self.producers).get_mut(pg) {
                p.remove(client_id);
            }
        }
        let Some(cg) = consumer_group else {
            return Vec::new();
        };
        let mut groups = lock(&self.consumers);
        let removed = groups
            .get_mut(cg)
            .and_then(|g| g.members.remove(client_id))
            .is_some();
        groups.retain(|_, g| !g.members.is_empty());
        if removed {
            vec![cg.to_owned()]
        } else {
            Vec::new()
        }
    }

    /// Drops every client of a closed connection; returns the groups that changed.
    pub fn connection_closed(&self, conn_id: u64) -> Vec<String> {
        for p in lock(&self.producers).values_mut() {
            p.retain(|_, (c, _)| c.id != conn_id);
        }
        self.remove_where(|_, m| m.conn.id == conn_id)
    }

    /// Drops clients silent for longer than `expiry`; returns the groups that changed.
    pub fn scan_expired(&self, expiry: Duration) -> Vec<String> {
        for p in lock(&self.producers).values_mut() {
            p.retain(|_, (_, t)| t.elapsed() <= expiry);
        }
        self.remove_where(|_, m| m.last_update.elapsed() > expiry)
    }

    /// Client ids seen on a connection.
    pub fn client_ids_on(&self, conn_id: u64) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.consumers)
            .values()
            .flat_map(|g| g.members.iter())
            .filter(|(_, m)| m.conn.id == conn_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// A group's members and subscriptions, for GET_CONSUMER_CONNECTION_LIST.
    pub fn group_view(&self, group: &str) -> Option<GroupView> {
        let groups = lock(&self.consumers);
        let g = groups.get(group)?;
        Some(GroupView {
            members: g
                .members
                .iter()
                .map(|(id, m)| (id.clone(), m.conn.peer.to_string()))
                .collect(),
            subscriptions: g.subscriptions.values().cloned().collect(),
        })
    }

    /// Client ids of a consumer group, sorted.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        lock(&self.consumers)
            .get(group)
            .map(|g| g.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A group's subscription to a topic, from its heartbeats.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        lock(&self.consumers)
            .get(group)?
            .subscriptions
            .get(topic)
            .cloned()
    }

    /// The connection of one member of a consumer group.
    pub fn consumer_connection(&self, group: &str, client_id: &str) -> Option<Arc<Connection>> {
        lock(&self.consumers)
            .get(group)?
            .members
            .get(client_id)
            .map(|m| Arc::clone(&m.conn))
            .filter(|c| !c.is_closed())
    }

    /// The connections of every member of a consumer group.
    pub fn consumer_connections(&self, group: &str) -> Vec<Arc<Connection>> {
        lock(&self.consumers)
            .get(group)
            .map(|g| g.members.values().map(|m| Arc::clone(&m.conn)).collect())
            .unwrap_or_default()
    }

    /// The consumer groups with a subscription to `topic`.
    pub fn groups_subscribing(&self, topic: &str) -> Vec<String> {
        lock(&self.consumers)
            .iter()
            .filter(|(_, g)| g.subscriptions.contains_key(topic))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every connected consumer group.
    pub fn consumer_groups(&self) -> Vec<String> {
        lock(&self.consumers).keys().cloned().collect()
    }

    /// Whether any consumer of the group is connected.
    pub fn has_group(&self, group: &str) -> bool {
        lock(&self.consumers).contains_key(group)
    }

    /// A live connection of a producer group (the one heard from last), for the
    /// transaction check-back.
    pub fn producer_connection(&self, group: &str) -> Option<Arc<Connection>> {
        lock(&self.producers)
            .get(group)?
            .values()
            .filter(|(c, _)| !c.is_closed())
            .max_by_key(|(_, t)| *t)
            .map(|(c, _)| Arc::clone(c))
    }

    /// The connection of a producer client by its client id (any group), for pushing
    /// request-reply replies.
    pub fn producer_connection_of_client(&self, client_id: &str) -> Option<Arc<Connection>> {
        lock(&self.producers)
            .values()
            .filter_map(|g| g.get(client_id))
            .filter(|(c, _)| !c.is_closed())
            .max_by_key(|(_, t)| *t)
            .map(|(c, _)| Arc::clone(c))
    }

    /// Client ids and remote addresses of a producer group (GET_PRODUCER_CONNECTION_LIST).
    pub fn producer_view(&self, group: &str) -> Vec<(String, String)> {
        lock(&self.producers)
            .get(group)
            .map(|p| {
                p.iter()
                    .map(|(id, (c, _))| (id.clone(), c.peer.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends NOTIFY_CONSUMER_IDS_CHANGED to every member of `group`.
    pub fn notify_changed(&self, group: &str) {
        let conns: Vec<Arc<Connection>> = lock(&self.consumers)
            .get(group)
            .map(|g| g.members.values().map(|m| Arc::clone(&m.conn)).collect())
            .unwrap_or_default();
        for c in conns {
            let cmd = RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED)
                .with_ext("consumerGroup", group);
            c.send_oneway(cmd);
        }
    }
}
