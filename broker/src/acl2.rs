//! RocketMQ 5.3's ACL 2.0: users who authenticate (`authenticationEnabled`) and
//! policies that authorize them (`authorizationEnabled`), managed with the AUTH
//! requests 3001–3010 (`docs/security.md`, "ACL 2.0").
//!
//! - **Authentication**: a request names its user in `AccessKey` and signs itself
//!   exactly as ACL 1.0 does ([`crate::auth`]), with the user's password as the secret.
//!   Refusals carry RocketMQ's remarks (`username cannot be null.`, `User:u is not
//!   found.`, `User:u is disabled.`, `check signature failed.`).
//! - **Authorization**: each request maps to resources (`Topic:t`, `Group:g`,
//!   `Cluster:c`) and actions (`Pub`, `Sub`, `Create`, `Update`, `Delete`, `Get`,
//!   `List`) as RocketMQ's `DefaultAuthorizationContextBuilder` maps them. A `Super`
//!   user may do anything; a `Normal` user needs a matching policy entry: its Custom
//!   policy first, then its Default one; of the matching entries the most specific
//!   resource wins (literal, then the longest prefix, then `*`), Deny over Allow.
//! - **Stricter than RocketMQ, on purpose**: the requests that change roles, broker
//!   configuration, Raft membership or the ACL 1.0 file, which RocketMQ leaves
//!   unmapped (any authenticated user may send them there), need `Update` on
//!   `Cluster:<brokerClusterName>` here.
//! - **Storage**: `users.json` and `acls.json` under `authConfigPath` (default
//!   `<storePathRootDir>/config`), written atomically on every change. RocketMQ keeps
//!   the same records in RocksDB directories named `users` and `acls`; those are not
//!   read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::auth::{ACCESS_KEY, SIGNATURE};
use crate::remoting::codes::request;
use crate::remoting::RemotingCommand;

/// Why a request or an AUTH admin request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthzError {
    /// NO_PERMISSION (16), with RocketMQ's remark.
    #[error("{0}")]
    Denied(String),
    /// INVALID_PARAMETER (29).
    #[error("{0}")]
    Invalid(String),
    /// SYSTEM_ERROR (1): RocketMQ's answer to the super-user rules and unreadable bodies.
    #[error("{0}")]
    System(String),
}

fn denied(s: impl Into<String>) -> AuthzError {
    AuthzError::Denied(s.into())
}

/// `Super` (may do anything) or `Normal` (needs policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    /// RocketMQ's `Super`.
    Super,
    /// RocketMQ's `Normal`.
    Normal,
}

/// A user as the AUTH requests carry it (RocketMQ's `UserInfo`) and `users.json`
/// stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// The name (a request's `AccessKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The secret requests are signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `Super` or `Normal` (case-insensitive; `Normal` when absent on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// `enable` or `disable` (case-insensitive; `enable` when absent on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_status: Option<String>,
}

fn user_type(s: &str) -> Result<UserType, AuthzError> {
    match s.to_ascii_lowercase().as_str() {
        "super" => Ok(UserType::Super),
        "normal" => Ok(UserType::Normal),
        _ => Err(AuthzError::Invalid(format!(
            "unknown userType {s:?} (Super or Normal)"
        ))),
    }
}

fn enabled(s: &str) -> Result<bool, AuthzError> {
    match s.to_ascii_lowercase().as_str() {
        "enable" => Ok(true),
        "disable" => Ok(false),
        _ => Err(AuthzError::Invalid(format!(
            "unknown userStatus {s:?} (enable or disable)"
        ))),
    }
}

fn blank(s: Option<&str>) -> bool {
    s.is_none_or(|s| s.trim().is_empty())
}

impl UserInfo {
    fn kind(&self) -> UserType {
        self.user_type
            .as_deref()
            .and_then(|t| user_type(t).ok())
            .unwrap_or(UserType::Normal)
    }

    fn enabled(&self) -> bool {
        self.user_status
            .as_deref()
            .is_none_or(|s| enabled(s).unwrap_or(true))
    }

    /// Checks the type and status names.
    fn check(&self) -> Result<(), AuthzError> {
        if let Some(t) = self.user_type.as_deref().filter(|t| !t.is_empty()) {
            user_type(t)?;
        }
        if let Some(s) = self.user_status.as_deref().filter(|s| !s.is_empty()) {
            enabled(s)?;
        }
        Ok(())
    }
}

/// What a policy entry allows or denies (RocketMQ's `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Every action.
    All,
    /// Sending.
    Pub,
    /// Consuming.
    Sub,
    /// Creating topics and groups.
    Create,
    /// Changing things.
    Update,
    /// Deleting things.
    Delete,
    /// Reading one thing.
    Get,
    /// Listing things.
    List,
}

impl Action {
    fn parse(s: &str) -> Result<Self, AuthzError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "all" => Action::All,
            "pub" => Action::Pub,
            "sub" => Action::Sub,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "get" => Action::Get,
            "list" => Action::List,
            "any" => return Err(denied("The actions can not be Any.")),
            _ => {
                return Err(AuthzError::Invalid(format!(
                    "unknown action {s:?} (All, Pub, Sub, Create, Update, Delete, Get, List)"
                )))
            }
        })
    }
}

/// The kinds of resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `*`: everything.
    Any,
    /// `Cluster:name`.
    Cluster,
    /// `Namespace:name`.
    Namespace,
    /// `Topic:name`.
    Topic,
    /// `Group:name`.
    Group,
}

impl ResourceType {
    fn name(self) -> &'static str {
        match self {
            ResourceType::Any => "Any",
            ResourceType::Cluster => "Cluster",
            ResourceType::Namespace => "Namespace",
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
        }
    }
}

/// A resource name or pattern: `Topic:orders`, `Topic:orders-*`, `Topic:*`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceType,
    /// Its name (`None`: any name of the kind).
    pub name: Option<String>,
    /// Whether `name` is a prefix (`name*`).
    pub prefixed: bool,
}

impl Resource {
    /// Parses RocketMQ's resource key.
    ///
    /// # Errors
    /// An unknown type (`Queue:x`) or no `Type:` part.
    pub fn parse(key: &str) -> Result<Self, AuthzError> {
        let key = key.trim();
        if key == "*" {
            return Ok(Resource {
                kind: ResourceType::Any,
                name: None,
                prefixed: false,
            });
        }
        let (t, name) = key.split_once(':').unwrap_or((key, ""));
        let kind = match t.to_ascii_lowercase().as_str() {
            "cluster" => ResourceType::Cluster,
            "namespace" => ResourceType::Namespace,
            "topic" => ResourceType::Topic,
            "group" => ResourceType::Group,
            _ => {
                return Err(AuthzError::Invalid(format!(
                    "resource {key:?}: expected Topic:, Group:, Cluster:, Namespace: or *"
                )))
            }
        };
        Ok(match name {
            "*" => Resource {
                kind,
                name: None,
                prefixed: false,
            },
            n if n.ends_with('*') => Resource {
                kind,
                name: Some(n.trim_end_matches('*').to_owned()),
                prefixed: true,
            },
            n => Resource {
                kind,
                name: Some(n.to_owned()),
                prefixed: false,
            },
        })
    }

    fn of(kind: ResourceType, name: &str) -> Self {
        // A group named by its retry topic is the group (RocketMQ's `Resource.ofGroup`).
        let name = match kind {
            ResourceType::Group => name.strip_prefix(crate::acl::RETRY_PREFIX).unwrap_or(name),
            _ => name,
        };
        Resource {
            kind,
            name: Some(name.to_owned()),
            prefixed: false,
        }
    }

    /// RocketMQ's resource key (`Topic:orders`, `Topic:orders-*`, `Topic:*`, `*`).
    #[must_use]
    pub fn key(&self) -> String {
        match (&self.kind, &self.name) {
            (ResourceType::Any, _) => "*".into(),
            (k, None) => format!("{}:*", k.name()),
            (k, Some(n)) if self.prefixed => format!("{}:{n}*", k.name()),
            (k, Some(n)) => format!("{}:{n}", k.name()),
        }
    }

    fn matches(&self, r: &Resource) -> bool {
        if self.kind == ResourceType::Any {
            return true;
        }
        if self.kind != r.kind {
            return false;
        }
        match (&self.name, &r.name) {
            (None, _) => true,
            (Some(p), Some(n)) if self.prefixed => n.starts_with(p.as_str()),
            (Some(p), Some(n)) => p == n,
            (Some(_), None) => false,
        }
    }

    /// 0: literal, 1: prefix, 2: any name of a kind, 3: `*` (RocketMQ's order; longer
    /// prefixes first within 1).
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match (&self.kind, &self.name) {
            (ResourceType::Any, _) => (3, std::cmp::Reverse(0)),
            (_, None) => (2, std::cmp::Reverse(0)),
            (_, Some(n)) if self.prefixed => (1, std::cmp::Reverse(n.len())),
            _ => (0, std::cmp::Reverse(0)),
        }
    }
}

/// An address or CIDR block of `sourceIps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Self, AuthzError> {
        let bad = || denied("The source ip is invalid.");
        let (ip, bits) = match s.trim().split_once('/') {
            Some((ip, b)) => (ip, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let net: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { net, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        let (a, b, width) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32u32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128u32),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        if shift >= 128 {
            return true;
        }
        (a >> shift) == (b >> shift)
    }
}

/// One entry of a policy as the AUTH requests carry it (`PolicyEntryInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntryInfo {
    /// The resource key (`Topic:orders`, `Group:billing-*`, `*`).
    #[serde(default)]
    pub resource: Option<String>,
    /// The actions (`Pub`, `Sub`, `All`, ...); a comma-separated string is taken too.
    #[serde(default, deserialize_with = "actions_list")]
    pub actions: Option<Vec<String>>,
    /// Addresses or CIDR blocks the entry applies to (none: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ips: Option<Vec<String>>,
    /// `Allow` or `Deny`.
    #[serde(default)]
    pub decision: Option<String>,
}

/// `actions` as a JSON list, or as one comma-separated string (older clients).
fn actions_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Actions {
        List(Vec<String>),
        One(String),
    }
    Ok(match Option::<Actions>::deserialize(d)? {
        None => None,
        Some(Actions::List(l)) => Some(l),
        Some(Actions::One(s)) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    })
}

/// A policy (`PolicyInfo`): `Custom` (the default type) or `Default`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    /// `Custom` or `Default`.
    #[serde(default)]
    pub policy_type: Option<String>,
    /// Its entries.
    #[serde(default)]
    pub entries: Option<Vec<PolicyEntryInfo>>,
}

/// A subject's policies (`AclInfo`), as carried and as `acls.json` stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AclInfo {
    /// `User:<username>`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Its policies.
    #[serde(default)]
    pub policies: Option<Vec<PolicyInfo>>,
}

/// A checked policy entry.
#[derive(Debug, Clone)]
struct Entry {
    resource: Resource,
    actions: Vec<Action>,
    sources: Vec<Cidr>,
    allow: bool,
}

impl Entry {
    fn parse(e: &PolicyEntryInfo) -> Result<Self, AuthzError> {
        let resource = match e.resource.as_deref().filter(|r| !r.trim().is_empty()) {
            Some(r) => Resource::parse(r)?,
            None => return Err(denied("The resource is null.")),
        };
        let actions = e
            .actions
            .iter()
            .flatten()
            .map(|a| Action::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        if actions.is_empty() {
            return Err(denied("The actions is empty."));
        }
        let sources = e
            .source_ips
            .iter()
            .flatten()
            .map(|s| {
                if s.trim().is_empty() {
                    Err(denied("The source ip is empty."))
                } else {
                    Cidr::parse(s)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = match e
            .decision
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("allow") => true,
            Some("deny") => false,
            _ => return Err(denied("The decision is null or illegal.")),
        };
        Ok(Entry {
            resource,
            actions,
            sources,
            allow,
        })
    }

    fn matches(&self, r: &Resource, wanted: &[Action], from: IpAddr) -> bool {
        self.resource.matches(r)
            && wanted
                .iter()
                .any(|a| self.actions.contains(a) || self.actions.contains(&Action::All))
            && (self.sources.is_empty() || self.sources.iter().any(|c| c.contains(from)))
    }
}

fn is_default(p: &PolicyInfo) -> bool {
    p.policy_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("default"))
}

fn policy_type_name(t: Option<&str>) -> Result<&'static str, AuthzError> {
    match t.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("custom") => Ok("Custom"),
        Some("default") => Ok("Default"),
        Some(other) => Err(AuthzError::Invalid(format!(
            "unknown policyType {other:?} (Custom or Default)"
        ))),
    }
}

/// Checks an ACL's policies and puts their names in RocketMQ's spelling.
fn normalize(acl: &mut AclInfo) -> Result<(), AuthzError> {
    let Some(policies) = acl.policies.as_mut().filter(|p| !p.is_empty()) else {
        return Err(denied("The policies is empty."));
    };
    for p in policies.iter_mut() {
        p.policy_type = Some(policy_type_name(p.policy_type.as_deref())?.to_owned());
        let Some(entries) = p.entries.as_mut().filter(|e| !e.is_empty()) else {
            return Err(denied("The policy entries is empty."));
        };
        for e in entries.iter_mut() {
            let checked = Entry::parse(e)?;
            e.resource = Some(checked.resource.key());
            e.decision = Some(if checked.allow { "Allow" } else { "Deny" }.to_owned());
        }
    }
    Ok(())
}

/// The checked form of a subject's policies, for evaluation.
#[derive(Debug, Clone, Default)]
struct Policies {
    custom: Vec<Entry>,
    default: Vec<Entry>,
}

impl Policies {
    fn of(acl: &AclInfo) -> Self {
        let mut out = Policies::default();
        for p in acl.policies.iter().flatten() {
            let list = if is_default(p) {
                &mut out.default
            } else {
                &mut out.custom
            };
            // Stored ACLs were checked when written; an entry that no longer parses
            // (a hand-edited file) grants nothing.
            list.extend(
                p.entries
                    .iter()
                    .flatten()
                    .filter_map(|e| Entry::parse(e).ok()),
            );
        }
        out
    }

    /// The deciding entry: Custom's matches, else Default's; the most specific
    /// resource first, Deny before Allow.
    fn decide(&self, r: &Resource, wanted: &[Action], from: IpAddr) -> Option<bool> {
        let mut matched: Vec<&Entry> = self
            .custom
            .iter()
            .filter(|e| e.matches(r, wanted, from))
            .collect();
        if matched.is_empty() {
            matched = self
                .default
                .iter()
                .filter(|e| e.matches(r, wanted, from))
                .collect();
        }
        matched.sort_by_key(|e| (e.resource.rank(), e.allow));
        matched.first().map(|e| e.allow)
    }
}

/// `authenticationEnabled`, `authorizationEnabled` and their white lists (request
/// codes let through unchecked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// `authenticationEnabled` (false).
    pub authentication: bool,
    /// `authorizationEnabled` (false).
    pub authorization: bool,
    /// `authenticationWhitelist`: request codes not authenticated.
    pub authentication_whitelist: Vec<i32>,
    /// `authorizationWhitelist`: request codes not authorized.
    pub authorization_whitelist: Vec<i32>,
    /// The cluster the `Cluster:` resource names (`brokerClusterName`).
    pub cluster: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tables {
    users: BTreeMap<String, UserInfo>,
    acls: BTreeMap<String, AclInfo>,
}

/// A broker's users and policies.
#[derive(Debug)]
pub struct Auth {
    dir: PathBuf,
    settings: AuthSettings,
    tables: RwLock<Tables>,
    /// Checked policies by subject, rebuilt on every change.
    compiled: RwLock<BTreeMap<String, Policies>>,
    writes: Mutex<()>,
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, AuthzError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| AuthzError::System(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(AuthzError::System(format!("{}: {e}", path.display()))),
    }
}

fn lock_err<T>(_: T) -> AuthzError {
    AuthzError::System("the user table's lock was poisoned".into())
}

/// One request's resources with the actions each needs (RocketMQ's
/// `DefaultAuthorizationContextBuilder`, plus `Cluster:` Update for ferrocket's and
/// RocketMQ's unmapped control-plane writes).
///
/// # Errors
/// A body that should be JSON and is not.
pub fn resources(
    req: &RemotingCommand,
    cluster: &str,
) -> Result<Vec<(Resource, Vec<Action>)>, AuthzError> {
    use request::*;
    use Action::*;
    use ResourceType::{Group as G, Topic as T};
    let ext = |k: &str| req.ext(k).filter(|v| !v.is_empty());
    let retry = |t: &str| t.starts_with(crate::acl::RETRY_PREFIX);
    let mut out: Vec<(Resource, Vec<Action>)> = Vec::new();
    let mut push = |kind, name: Option<&str>, actions: &[Action]| {
        if let Some(n) = name {
            out.push((Resource::of(kind, n), actions.to_vec()));
        }
    };
    let body_json = || -> Result<serde_json::Value, AuthzError> {
        let body: Vec<u8> = req.body.iter().flat_map(|b| b.iter().copied()).collect();
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| denied(format!("parse authorization context error: {e}")))
    };
    match req.code {
        SEND_MESSAGE
        | SEND_MESSAGE_V2
        | SEND_BATCH_MESSAGE
        | SEND_REPLY_MESSAGE
        | SEND_REPLY_MESSAGE_V2 => {
            let v2 = !matches!(req.code, SEND_MESSAGE | SEND_REPLY_MESSAGE);
            let topic = if v2 { ext("b") } else { ext("topic") };
            let group = if v2 { ext("a") } else { ext("producerGroup") };
            match topic {
                Some(t) if retry(t) => push(G, Some(group.unwrap_or(t)), &[Sub]),
                t => push(T, t, &[Pub]),
            }
        }
        END_TRANSACTION => push(T, ext("topic"), &[Pub]),
        CONSUMER_SEND_MSG_BACK => push(G, ext("group"), &[Sub]),
        PULL_MESSAGE | LITE_PULL_MESSAGE => {
            if let Some(t) = ext("topic").filter(|t| !retry(t)) {
                push(T, Some(t), &[Sub]);
            }
            push(G, ext("consumerGroup"), &[Sub]);
        }
        QUERY_MESSAGE | VIEW_MESSAGE_BY_ID => push(T, ext("topic"), &[Sub, Get]),
        HEART_BEAT => {
            let v = body_json()?;
            for c in v["consumerDataSet"].as_array().into_iter().flatten() {
                push(G, c["groupName"].as_str(), &[Sub]);
                for s in c["subscriptionDataSet"].as_array().into_iter().flatten() {
                    if let Some(t) = s["topic"].as_str().filter(|t| !retry(t)) {
                        push(T, Some(t), &[Sub]);
                    }
                }
            }
        }
        UNREGISTER_CLIENT => push(G, ext("consumerGroup"), &[Sub]),
        GET_CONSUMER_LIST_BY_GROUP => push(G, ext("consumerGroup"), &[Sub, Get]),
        QUERY_CONSUMER_OFFSET | UPDATE_CONSUMER_OFFSET => {
            let act = if req.code == QUERY_CONSUMER_OFFSET {
                [Sub, Get]
            } else {
                [Sub, Update]
            };
            if let Some(t) = ext("topic").filter(|t| !retry(t)) {
                push(T, Some(t), &act);
            }
            push(G, ext("consumerGroup"), &act);
        }
        LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => {
            let v = body_json()?;
            push(G, v["consumerGroup"].as_str(), &[Sub]);
            for mq in v["mqSet"].as_array().into_iter().flatten() {
                if let Some(t) = mq["topic"].as_str().filter(|t| !retry(t)) {
                    push(T, Some(t), &[Sub]);
                }
            }
        }
        UPDATE_AND_CREATE_TOPIC => push(T, ext("topic"), &[Create]),
        DELETE_TOPIC_IN_BROKER => push(T, ext("topic"), &[Delete]),
        DELETE_SUBSCRIPTIONGROUP => push(G, ext("groupName"), &[Delete]),
        INVOKE_BROKER_TO_RESET_OFFSET => {
            push(T, ext("topic"), &[Update]);
            push(G, ext("group"), &[Update]);
        }
        CLONE_GROUP_OFFSET => {
            push(G, ext("srcGroup"), &[Update]);
            push(G, ext("destGroup"), &[Update]);
            push(T, ext("topic"), &[Update]);
        }
        GET_TOPIC_CONFIG
        | GET_TOPIC_STATS_INFO
        | GET_MAX_OFFSET
        | GET_MIN_OFFSET
        | SEARCH_OFFSET_BY_TIMESTAMP
        | GET_EARLIEST_MSG_STORETIME
        | QUERY_TOPIC_CONSUME_BY_WHO => {
            push(T, ext("topic"), &[Get]);
        }
        GET_CONSUME_STATS | GET_CONSUMER_CONNECTION_LIST | GET_CONSUMER_RUNNING_INFO => {
            push(G, ext("consumerGroup"), &[Get]);
        }
        AUTH_GET_USER | AUTH_LIST_USER | AUTH_GET_ACL | AUTH_LIST_ACL => {
            out.push((Resource::of(ResourceType::Cluster, cluster), vec![Get]));
        }
        AUTH_CREATE_USER..=AUTH_LIST_ACL => {
            out.push((Resource::of(ResourceType::Cluster, cluster), vec![Update]));
        }
        // Writes RocketMQ leaves unmapped: the cluster's Update (stricter, see above).
        c if crate::acl::needs_admin(c) => {
            out.push((Resource::of(ResourceType::Cluster, cluster), vec![Update]));
        }
        _ => {}
    }
    Ok(out)
}

impl Auth {
    /// Opens the users and policies in `dir` (files created on the first change).
    ///
    /// # Errors
    /// An unreadable `users.json` or `acls.json` (the broker does not start).
    pub fn open(dir: &Path, settings: AuthSettings) -> Result<Self, AuthzError> {
        let users = read_json(&dir.join("users.json"))?;
        let acls: BTreeMap<String, AclInfo> = read_json(&dir.join("acls.json"))?;
        let auth = Auth {
            dir: dir.to_path_buf(),
            settings,
            tables: RwLock::new(Tables { users, acls }),
            compiled: RwLock::new(BTreeMap::new()),
            writes: Mutex::new(()),
        };
        auth.recompile()?;
        Ok(auth)
    }

    /// The settings it enforces.
    #[must_use]
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether requests are checked at all.
    #[must_use]
    pub fn enforcing(&self) -> bool {
        self.settings.authentication || self.settings.authorization
    }

    fn recompile(&self) -> Result<(), AuthzError> {
        let t = self.tables.read().map_err(lock_err)?;
        let compiled = t
            .acls
            .iter()
            .map(|(k, a)| (k.clone(), Policies::of(a)))
            .collect();
        drop(t);
        *self.compiled.write().map_err(lock_err)? = compiled;
        Ok(())
    }

    fn save(&self, t: &Tables) -> Result<(), AuthzError> {
        let err = |name: &str, e: crate::store::StoreError| {
            AuthzError::System(format!("storing {name}: {e}"))
        };
        crate::store::metadata::persist(&self.dir.join("users.json"), &t.users)
            .map_err(|e| err("users.json", e))?;
        crate::store::metadata::persist(&self.dir.join("acls.json"), &t.acls)
            .map_err(|e| err("acls.json", e))
    }

    /// Applies `change` to the tables, stores them, and puts them in force.
    fn change<R>(
        &self,
        change: impl FnOnce(&mut Tables) -> Result<R, AuthzError>,
    ) -> Result<R, AuthzError> {
        let _one = self.writes.lock().map_err(lock_err)?;
        let mut next = {
            let t = self.tables.read().map_err(lock_err)?;
            Tables {
                users: t.users.clone(),
                acls: t.acls.clone(),
            }
        };
        let r = change(&mut next)?;
        self.save(&next)?;
        *self.tables.write().map_err(lock_err)? = next;
        self.recompile()?;
        Ok(r)
    }

    /// Creates `username` as a Super user unless it exists (`initAuthenticationUser`,
    /// `innerClientAuthenticationCredentials`).
    ///
    /// # Errors
    /// A blank name or password; storing failed.
    pub fn ensure_super(&self, username: &str, password: &str) -> Result<(), AuthzError> {
        if username.trim().is_empty() || password.is_empty() {
            return Err(denied("username and password can not be blank"));
        }
        if self
            .tables
            .read()
            .map_err(lock_err)?
            .users
            .contains_key(username)
        {
            return Ok(());
        }
        self.change(|t| {
            t.users.entry(username.to_owned()).or_insert(UserInfo {
                username: Some(username.to_owned()),
                password: Some(password.to_owned()),
                user_type: Some("Super".into()),
                user_status: Some("enable".into()),
            });
            Ok(())
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserInfo>, AuthzError> {
        Ok(self
            .tables
            .read()
            .map_err(lock_err)?
            .users
            .get(name)
            .cloned())
    }

    /// Checks `req` from `from` as RocketMQ's authentication then authorization
    /// pipelines do (each only when enabled, skipping its white-listed codes).
    ///
    /// # Errors
    /// [`AuthzError::Denied`] with RocketMQ's remark.
    pub fn check(&self, req: &RemotingCommand, from: IpAddr) -> Result<(), AuthzError> {
        let s = &self.settings;
        let authenticate = s.authentication && !s.authentication_whitelist.contains(&req.code);
        let wanted = if s.authorization && !s.authorization_whitelist.contains(&req.code) {
            resources(req, &s.cluster)?
        } else {
            Vec::new()
        };
        if !authenticate && wanted.is_empty() {
            return Ok(());
        }
        // One look-up of the named user serves both checks.
        let name = req.ext(ACCESS_KEY).filter(|n| !n.is_empty());
        let tables = self.tables.read().map_err(lock_err)?;
        let user = name.and_then(|n| tables.users.get(n));
        if authenticate {
            let Some(name) = name else {
                return Err(denied("username cannot be null."));
            };
            let Some(user) = user else {
                return Err(denied(format!("User:{name} is not found.")));
            };
            if !user.enabled() {
                return Err(denied(format!("User:{name} is disabled.")));
            }
            let password = user.password.as_deref().unwrap_or("");
            let ok = req.ext(SIGNATURE).is_some_and(|sig| {
                crate::auth::Credentials::new(name, password.as_bytes())
                    .is_ok_and(|c| c.verify_bytes(&crate::auth::content(req), sig))
            });
            if !ok {
                return Err(denied("check signature failed."));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let Some(name) = name else {
            return Err(denied(
                "Authorization failed. Please verify your access rights and try again.",
            ));
        };
        let Some(user) = user else {
            return Err(denied(format!("User:{name} not found.")));
        };
        if !user.enabled() {
            return Err(denied(format!("User:{name} is disabled.")));
        }
        if user.kind() == UserType::Super {
            return Ok(());
        }
        let subject = format!("User:{name}");
        let compiled = self.compiled.read().map_err(lock_err)?;
        for (r, actions) in &wanted {
            let why = match compiled.get(&subject).map(|p| p.decide(r, actions, from)) {
                Some(Some(true)) => continue,
                Some(Some(false)) => "the decision is deny.",
                _ => "no matched policies.",
            };
            return Err(denied(format!(
                "{subject} has no permission to access {} from {from}, {why}",
                r.key()
            )));
        }
        Ok(())
    }

    fn is_super_caller(&self, req: &RemotingCommand) -> bool {
        // RocketMQ: a request naming no user (authentication off) counts as super.
        match req.ext(ACCESS_KEY).filter(|k| !k.is_empty()) {
            None => true,
            Some(k) => self
                .user(k)
                .ok()
                .flatten()
                .is_some_and(|u| u.kind() == UserType::Super),
        }
    }

    /// Answers an AUTH request (3001–3010): `Ok(Some(body))` / `Ok(None)` for SUCCESS
    /// with or without a body.
    ///
    /// # Errors
    /// RocketMQ's refusals ([`AuthzError`] says which code).
    pub fn admin(&self, req: &RemotingCommand) -> Result<Option<Vec<u8>>, AuthzError> {
        use request::*;
        let ext = |k: &str| req.ext(k).unwrap_or("").trim().to_owned();
        let body = || -> Vec<u8> { req.body.iter().flat_map(|b| b.iter().copied()).collect() };
        let superuser = self.is_super_caller(req);
        match req.code {
            AUTH_CREATE_USER | AUTH_UPDATE_USER => {
                let name = ext("username");
                if name.is_empty() {
                    return Err(AuthzError::Invalid("The username is blank".into()));
                }
                let mut info: UserInfo = serde_json::from_slice(&body())
                    .map_err(|e| AuthzError::System(format!("the user body: {e}")))?;
                info.username = Some(name.clone());
                info.check()?;
                let create = req.code == AUTH_CREATE_USER;
                let verb = if create { "create" } else { "update" };
                let wants_super = info
                    .user_type
                    .as_deref()
                    .is_some_and(|t| user_type(t) == Ok(UserType::Super));
                if wants_super && !superuser {
                    return Err(AuthzError::System(format!(
                        "The super user can only be {verb} by super user"
                    )));
                }
                self.change(|t| {
                    if create {
                        if blank(info.password.as_deref()) {
                            return Err(denied("password can not be blank"));
                        }
                        if t.users.contains_key(&name) {
                            return Err(denied("The user is existed"));
                        }
                        info.user_type = Some(if wants_super { "Super" } else { "Normal" }.into());
                        info.user_status =
                            Some(if info.enabled() { "enable" } else { "disable" }.into());
                        t.users.insert(name.clone(), info);
                        return Ok(());
                    }
                    let Some(old) = t.users.get_mut(&name) else {
                        return Err(denied("The user is not exist"));
                    };
                    if old.kind() == UserType::Super && !superuser {
                        return Err(denied("The super user can only be update by super user"));
                    }
                    if !blank(info.password.as_deref()) {
                        old.password = info.password;
                    }
                    if let Some(k) = info.user_type.as_deref().filter(|s| !s.is_empty()) {
                        old.user_type = Some(
                            if user_type(k)? == UserType::Super {
                                "Super"
                            } else {
                                "Normal"
                            }
                            .into(),
                        );
                    }
                    if let Some(s) = info.user_status.as_deref().filter(|s| !s.is_empty()) {
                        old.user_status =
                            Some(if enabled(s)? { "enable" } else { "disable" }.into());
                    }
                    Ok(())
                })?;
                Ok(None)
            }
            AUTH_DELETE_USER => {
                let name = ext("username");
                if name.is_empty() {
                    return Err(denied("username can not be blank"));
                }
                let Some(old) = self.user(&name)? else {
                    return Ok(None);
                };
                if old.kind() == UserType::Super && !superuser {
                    return Err(denied("The super user can only be update by super user"));
                }
                self.change(|t| {
                    t.users.remove(&name);
                    t.acls.remove(&format!("User:{name}"));
                    Ok(())
                })?;
                Ok(None)
            }
            AUTH_GET_USER => {
                let name = ext("username");
                if name.is_empty() {
                    return Err(AuthzError::Invalid("The username is blank".into()));
                }
                match self.user(&name)? {
                    Some(u) => json(&u),
                    None => Ok(None),
                }
            }
            AUTH_LIST_USER => {
                let filter = ext("filter");
                let users: Vec<UserInfo> = self
                    .tables
                    .read()
                    .map_err(lock_err)?
                    .users
                    .iter()
                    .filter(|(n, _)| filter.is_empty() || n.contains(&filter))
                    .map(|(_, u)| u.clone())
                    .collect();
                if users.is_empty() {
                    Ok(None)
                } else {
                    json(&users)
                }
            }
            AUTH_CREATE_ACL | AUTH_UPDATE_ACL => {
                let mut acl: AclInfo = serde_json::from_slice(&body())
                    .map_err(|_| AuthzError::System("The body of acl is null".into()))?;
                if acl.policies.as_ref().is_none_or(Vec::is_empty) {
                    return Err(AuthzError::System("The body of acl is null".into()));
                }
                let subject = acl
                    .subject
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| ext("subject"));
                let user = subject_user(&subject)?;
                normalize(&mut acl)?;
                acl.subject = Some(format!("User:{user}"));
                self.change(|t| {
                    if !t.users.contains_key(&user) {
                        return Err(denied(format!("The subject of User:{user} is not exist.")));
                    }
                    let key = format!("User:{user}");
                    match t.acls.get_mut(&key) {
                        None => {
                            t.acls.insert(key, acl);
                        }
                        Some(old) => merge(old, acl),
                    }
                    Ok(())
                })?;
                Ok(None)
            }
            AUTH_DELETE_ACL => {
                let user = subject_user(&ext("subject"))?;
                let kind =
                    policy_type_name(Some(ext("policyType").as_str()).filter(|s| !s.is_empty()))
                        .unwrap_or("Custom");
                let resource = match ext("resource") {
                    r if r.is_empty() => None,
                    r => Some(Resource::parse(&r)?.key()),
                };
                self.change(|t| {
                    if !t.users.contains_key(&user) {
                        return Err(denied("The subject is not exist."));
                    }
                    let key = format!("User:{user}");
                    let Some(old) = t.acls.get_mut(&key) else {
                        return Err(denied("The acl is not exist."));
                    };
                    if let Some(r) = &resource {
                        let policies = old.policies.get_or_insert_with(Vec::new);
                        for p in policies.iter_mut() {
                            if p.policy_type.as_deref() == Some(kind) {
                                if let Some(e) = p.entries.as_mut() {
                                    e.retain(|e| e.resource.as_deref() != Some(r.as_str()));
                                }
                            }
                        }
                        policies.retain(|p| p.entries.as_ref().is_some_and(|e| !e.is_empty()));
                    }
                    if resource.is_none() || old.policies.as_ref().is_none_or(Vec::is_empty) {
                        t.acls.remove(&key);
                    }
                    Ok(())
                })?;
                Ok(None)
            }
            AUTH_GET_ACL => {
                let user = subject_user(&ext("subject"))?;
                let t = self.tables.read().map_err(lock_err)?;
                if !t.users.contains_key(&user) {
                    return Err(denied("The subject is not exist."));
                }
                match t.acls.get(&format!("User:{user}")) {
                    Some(a) => json(a),
                    None => Ok(None),
                }
            }
            AUTH_LIST_ACL => {
                let (sf, rf) = (ext("subjectFilter"), ext("resourceFilter"));
                let t = self.tables.read().map_err(lock_err)?;
                let mut out = Vec::new();
                for (key, acl) in &t.acls {
                    if !sf.is_empty() && !key.contains(&sf) {
                        continue;
                    }
                    let mut acl = acl.clone();
                    if !rf.is_empty() && !key.contains(&rf) {
                        for p in acl.policies.iter_mut().flatten() {
                            if let Some(e) = p.entries.as_mut() {
                                e.retain(|e| {
                                    e.resource.as_deref().is_some_and(|r| r.contains(&rf))
                                });
                            }
                        }
                        if let Some(ps) = acl.policies.as_mut() {
                            ps.retain(|p| p.entries.as_ref().is_some_and(|e| !e.is_empty()));
                        }
                    }
                    if acl.policies.as_ref().is_some_and(|p| !p.is_empty()) {
                        out.push(acl);
                    }
                }
                if out.is_empty() {
                    Ok(None)
                } else {
                    json(&out)
                }
            }
            code => Err(AuthzError::Invalid(format!(
                "request code {code} is not an AUTH request"
            ))),
        }
    }
}

/// The username of a `User:<name>` subject.
fn subject_user(subject: &str) -> Result<String, AuthzError> {
    match subject.split_once(':') {
        Some((t, name)) if t.eq_ignore_ascii_case("user") && !name.trim().is_empty() => {
            Ok(name.trim().to_owned())
        }
        _ => Err(AuthzError::Invalid(format!(
            "subject {subject:?}: expected User:<username>"
        ))),
    }
}

/// RocketMQ's `Acl.updatePolicy`: a policy of a new type is added; one of a type
/// already held has its entries replaced by resource, new resources added.
fn merge(old: &mut AclInfo, new: AclInfo) {
    let policies = old.policies.get_or_insert_with(Vec::new);
    for p in new.policies.into_iter().flatten() {
        match policies.iter_mut().find(|o| o.policy_type == p.policy_type) {
            None => policies.push(p),
            Some(o) => {
                let entries = o.entries.get_or_insert_with(Vec::new);
                for e in p.entries.into_iter().flatten() {
                    match entries.iter_mut().find(|x| x.resource == e.resource) {
                        Some(x) => *x = e,
                        None => entries.push(e),
                    }
                }
            }
        }
    }
}

/// A JSON answer body.
fn json<T: Serialize>(v: &T) -> Result<Option<Vec<u8>>, AuthzError> {
    serde_json::to_vec(v)
        .map(Some)
        .map_err(|e| AuthzError::System(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(resource: &str, actions: &[&str], decision: &str, ips: &[&str]) -> PolicyEntryInfo {
        PolicyEntryInfo {
            resource: Some(resource.into()),
            actions: Some(actions.iter().map(|a| (*a).to_owned()).collect()),
            source_ips: (!ips.is_empty()).then(|| ips.iter().map(|a| (*a).to_owned()).collect()),
            decision: Some(decision.into()),
        }
    }

    fn policies(custom: Vec<PolicyEntryInfo>, default: Vec<PolicyEntryInfo>) -> Policies {
        let mut acl = AclInfo {
            subject: Some("User:u".into()),
            policies: Some(vec![
                PolicyInfo {
                    policy_type: None,
                    entries: Some(custom),
                },
                PolicyInfo {
                    policy_type: Some("Default".into()),
                    entries: Some(default),
                },
            ]),
        };
        acl.policies
            .as_mut()
            .unwrap()
            .retain(|p| p.entries.as_ref().is_some_and(|e| !e.is_empty()));
        normalize(&mut acl).unwrap();
        Policies::of(&acl)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn resource_keys_parse_and_print_as_rocketmq_writes_them() {
        for (k, out) in [
            ("*", "*"),
            ("Topic:orders", "Topic:orders"),
            ("topic:orders-*", "Topic:orders-*"),
            ("Group:*", "Group:*"),
            ("Cluster:DefaultCluster", "Cluster:DefaultCluster"),
        ] {
            assert_eq!(Resource::parse(k).unwrap().key(), out, "{k}");
        }
        assert!(Resource::parse("Queue:x").is_err());
        assert!(Resource::parse("orders").is_err());
    }

    #[test]
    fn the_most_specific_entry_decides_and_deny_wins_a_tie() {
        let p = policies(
            vec![
                entry("Topic:*", &["Pub"], "Allow", &[]),
                entry("Topic:secret-*", &["Pub"], "Deny", &[]),
                entry("Topic:secret-open", &["Pub"], "Allow", &[]),
                entry("Topic:tie", &["Pub"], "Allow", &[]),
                entry("Topic:tie", &["Sub"], "Deny", &[]),
            ],
            vec![],
        );
        let topic = |n: &str| Resource::of(ResourceType::Topic, n);
        assert_eq!(
            p.decide(&topic("orders"), &[Action::Pub], LOCAL),
            Some(true)
        );
        assert_eq!(
            p.decide(&topic("secret-x"), &[Action::Pub], LOCAL),
            Some(false)
        );
        assert_eq!(
            p.decide(&topic("secret-open"), &[Action::Pub], LOCAL),
            Some(true)
        );
        assert_eq!(p.decide(&topic("orders"), &[Action::Sub], LOCAL), None);
        // Two literal entries for one resource (merged ACLs keep one per resource,
        // but the file may hold two): Deny first.
        assert_eq!(
            p.decide(&topic("tie"), &[Action::Pub, Action::Sub], LOCAL),
            Some(false)
        );
        let longer = policies(
            vec![
                entry("Topic:a-*", &["Pub"], "Deny", &[]),
                entry("Topic:a-b-*", &["Pub"], "Allow", &[]),
            ],
            vec![],
        );
        assert_eq!(
            longer.decide(&topic("a-b-c"), &[Action::Pub], LOCAL),
            Some(true)
        );
        assert_eq!(
            longer.decide(&topic("a-c"), &[Action::Pub], LOCAL),
            Some(false)
        );
    }

    #[test]
    fn default_policies_apply_only_when_no_custom_entry_matches() {
        let p = policies(
            vec![entry("Topic:orders", &["Pub"], "Allow", &[])],
            vec![entry("*", &["All"], "Deny", &[])],
        );
        let t = |n: &str| Resource::of(ResourceType::Topic, n);
        assert_eq!(p.decide(&t("orders"), &[Action::Pub], LOCAL), Some(true));
        assert_eq!(p.decide(&t("other"), &[Action::Pub], LOCAL), Some(false));
    }

    #[test]
    fn source_ips_take_addresses_and_cidr_blocks() {
        let p = policies(
            vec![entry(
                "Group:g",
                &["Sub"],
                "Allow",
                &["10.1.0.0/16", "192.168.0.7"],
            )],
            vec![],
        );
        let g = Resource::of(ResourceType::Group, "%RETRY%g");
        assert_eq!(g.key(), "Group:g");
        for (ip, want) in [
            ("10.1.200.3", Some(true)),
            ("10.2.0.1", None),
            ("192.168.0.7", Some(true)),
            ("::ffff:10.1.0.9", Some(true)),
        ] {
            assert_eq!(
                p.decide(&g, &[Action::Sub], ip.parse().unwrap()),
                want,
                "{ip}"
            );
        }
        for bad in ["10.1.0.0/33", "10.1.0", "", "host"] {
            let mut acl = AclInfo {
                subject: None,
                policies: Some(vec![PolicyInfo {
                    policy_type: None,
                    entries: Some(vec![entry("Group:g", &["Sub"], "Allow", &[bad])]),
                }]),
            };
            assert!(normalize(&mut acl).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn entries_without_resource_actions_or_decision_are_refused_with_rocketmqs_words() {
        let check = |e: PolicyEntryInfo| {
            let mut acl = AclInfo {
                subject: None,
                policies: Some(vec![PolicyInfo {
                    policy_type: None,
                    entries: Some(vec![e]),
                }]),
            };
            normalize(&mut acl).unwrap_err().to_string()
        };
        assert_eq!(
            check(entry("Topic:t", &[], "Allow", &[])),
            "The actions is empty."
        );
        assert_eq!(
            check(entry("Topic:t", &["Any"], "Allow", &[])),
            "The actions can not be Any."
        );
        assert_eq!(
            check(entry("Topic:t", &["Pub"], "Maybe", &[])),
            "The decision is null or illegal."
        );
    }
}
