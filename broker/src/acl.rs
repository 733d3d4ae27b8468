//! RocketMQ's plain ACL (ACL 1.0): accounts in `plain_acl.yml`, each request signed
//! by its account (the signature is [`crate::auth`]'s), and the topics and groups a
//! request touches checked against the account's permissions.
//!
//! The file, as RocketMQ 4.x reads it:
//!
//! ```yaml
//! globalWhiteRemoteAddresses: ["10.10.103.*", "192.168.0.*"]
//! accounts:
//!   - accessKey: RocketMQ
//!     secretKey: "12345678"
//!     whiteRemoteAddress:
//!     admin: false
//!     defaultTopicPerm: DENY
//!     defaultGroupPerm: SUB
//!     topicPerms: ["topicA=DENY", "topicB=PUB|SUB", "topicC=SUB"]
//!     groupPerms: ["groupA=DENY", "groupB=PUB|SUB", "groupC=SUB"]
//! ```
//!
//! A request is let through when its client's address matches a global white
//! address; otherwise it must name an account (`AccessKey`), and is let through when
//! its address matches that account's white address, or when its `Signature` is right
//! and the account holds the permissions the request needs (admin requests need an
//! admin account). Groups are checked as their retry topics (`%RETRY%group`), as
//! RocketMQ does. The refusals carry RocketMQ's messages.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::remoting::codes::request;
use crate::remoting::RemotingCommand;

/// Permission bits, as RocketMQ's `Permission`.
pub mod perm {
    /// Nothing (wins over any other bit).
    pub const DENY: u8 = 1;
    /// Either PUB or SUB will do.
    pub const ANY: u8 = 1 << 1;
    /// Publish.
    pub const PUB: u8 = 1 << 2;
    /// Subscribe.
    pub const SUB: u8 = 1 << 3;

    /// `PUB`, `SUB`, `PUB|SUB`, `SUB|PUB`, `DENY`; anything else (or nothing) is DENY,
    /// as RocketMQ parses it.
    #[must_use]
    pub fn parse(s: Option<&str>) -> u8 {
        match s.map(str::trim) {
            Some("PUB") => PUB,
            Some("SUB") => SUB,
            Some("PUB|SUB" | "SUB|PUB") => PUB | SUB,
            _ => DENY,
        }
    }

    /// Whether `owned` grants `needed`.
    #[must_use]
    pub fn grants(needed: u8, owned: u8) -> bool {
        if owned & DENY != 0 {
            return false;
        }
        if needed & ANY != 0 {
            return owned & (PUB | SUB) != 0;
        }
        needed & owned != 0
    }
}

/// The prefix of a group's retry topic (how groups are named as resources).
pub const RETRY_PREFIX: &str = "%RETRY%";

/// Why a request is refused, or the ACL file cannot be used. The request refusals'
/// texts are RocketMQ's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Not white-listed and no `AccessKey`.
    #[error("No accessKey is configured")]
    NoAccessKey,
    /// The access key names no account.
    #[error("No acl config for {0}")]
    UnknownAccount(String),
    /// The signature is missing or wrong.
    #[error("Check signature failed for accessKey={0}")]
    BadSignature(String),
    /// An admin request from a non-admin account.
    #[error("Need admin permission for request code={0}, but accessKey={1} is not")]
    NeedAdmin(i32, String),
    /// A topic or group the account may not use that way.
    #[error("No default permission for {0}")]
    NoPermission(String),
    /// A request whose resources cannot be read (a heartbeat body that is not JSON).
    #[error("cannot read the request's resources: {0}")]
    BadRequest(String),
    /// The file is missing, unreadable or invalid.
    #[error("ACL file {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A remote address pattern (RocketMQ's `RemoteAddressStrategy`): `*` (everyone), an
/// address, or four IPv4 parts each a number, `*`, `{a,b,c}` or `a-b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrPattern {
    /// Matches no address (an empty pattern).
    Nobody,
    /// Matches every address.
    Everyone,
    /// One address.
    Exact(IpAddr),
    /// Four IPv4 parts.
    Parts(Vec<Part>),
}

/// One part of an IPv4 pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `*`.
    Any,
    /// `{a,b,c}` or a number.
    OneOf(Vec<u8>),
    /// `a-b`.
    Range(u8, u8),
}

impl AddrPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A pattern in none of the forms above (the text says which).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(AddrPattern::Nobody);
        }
        if s == "*" || s == "*.*.*.*" {
            return Ok(AddrPattern::Everyone);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AddrPattern::Exact(ip));
        }
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(format!("`{s}` is not an address pattern"));
        }
        let byte = |t: &str| {
            t.trim()
                .parse::<u8>()
                .map_err(|_| format!("`{s}`: `{t}` is not 0-255"))
        };
        let mut out = Vec::new();
        for p in parts {
            out.push(if p == "*" {
                Part::Any
            } else if let Some(list) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Part::OneOf(list.split(',').map(byte).collect::<Result<_, _>>()?)
            } else if let Some((a, b)) = p.split_once('-') {
                Part::Range(byte(a)?, byte(b)?)
            } else {
                Part::OneOf(vec![byte(p)?])
            });
        }
        Ok(AddrPattern::Parts(out))
    }

    /// Whether `ip` matches.
    #[must_use]
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match self {
            AddrPattern::Nobody => false,
            AddrPattern::Everyone => true,
            AddrPattern::Exact(e) => *e == ip,
            AddrPattern::Parts(parts) => {
                let IpAddr::V4(v4) = ip else { return false };
                parts.iter().zip(v4.octets()).all(|(p, o)| match p {
                    Part::Any => true,
                    Part::OneOf(v) => v.contains(&o),
                    Part::Range(a, b) => (*a..=*b).contains(&o),
                })
            }
        }
    }
}

/// One account of the file.
#[derive(Debug, Clone)]
pub struct Account {
    /// The access key.
    pub access_key: String,
    creds: crate::auth::Credentials,
    white: AddrPattern,
    /// May send admin requests.
    pub admin: bool,
    default_topic: u8,
    default_group: u8,
    /// Resources (topics, and groups as retry topics) with their permissions.
    perms: HashMap<String, u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAccount {
    access_key: Option<String>,
    secret_key: Option<serde_yaml::Value>,
    white_remote_address: Option<String>,
    #[serde(default)]
    admin: Option<serde_yaml::Value>,
    default_topic_perm: Option<String>,
    default_group_perm: Option<String>,
    #[serde(default)]
    topic_perms: Option<Vec<String>>,
    #[serde(default)]
    group_perms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    global_white_remote_addresses: Option<Vec<String>>,
    #[serde(default)]
    accounts: Option<Vec<RawAccount>>,
}

/// A YAML scalar as text (`secretKey: 12345678` is a number to YAML).
fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The accounts and white addresses of one `plain_acl.yml`.
#[derive(Debug, Clone)]
pub struct PlainAcl {
    global_white: Vec<AddrPattern>,
    accounts: HashMap<String, Account>,
}

impl PlainAcl {
    /// Parses the file's text. As RocketMQ: access and secret keys longer than 6
    /// characters, `name=PERM` resource entries.
    ///
    /// # Errors
    /// The reason, as text (the caller names the file).
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut global_white = Vec::new();
        for a in raw.global_white_remote_addresses.unwrap_or_default() {
            global_white.push(AddrPattern::parse(&a)?);
        }
        let mut accounts = HashMap::new();
        for a in raw.accounts.unwrap_or_default() {
            let ak = a.access_key.unwrap_or_default();
            let sk = a.secret_key.as_ref().and_then(scalar).unwrap_or_default();
            if ak.len() <= 6 || sk.len() <= 6 {
                return Err(format!(
                    "The accessKey={ak} and secretKey cannot be null and length should longer than 6"
                ));
            }
            let admin = a
                .admin
                .as_ref()
                .and_then(scalar)
                .is_some_and(|s| s.trim() == "true");
            let mut perms = HashMap::new();
            for (list, topic) in [(a.topic_perms, true), (a.group_perms, false)] {
                for entry in list.unwrap_or_default() {
                    let Some((name, p)) = entry.split_once('=') else {
                        let what = if topic { "topic" } else { "group" };
                        return Err(format!(
                            "Parse resource permission failed for {what}:{entry}"
                        ));
                    };
                    let name = name.trim();
                    let key = if topic {
                        name.to_owned()
                    } else {
                        format!("{RETRY_PREFIX}{name}")
                    };
                    perms.insert(key, perm::parse(Some(p)));
                }
            }
            let creds =
                crate::auth::Credentials::new(&ak, sk.as_bytes()).map_err(|e| e.to_string())?;
            let account = Account {
                access_key: ak.clone(),
                creds,
                white: AddrPattern::parse(a.white_remote_address.as_deref().unwrap_or(""))?,
                admin,
                default_topic: perm::parse(a.default_topic_perm.as_deref()),
                default_group: perm::parse(a.default_group_perm.as_deref()),
                perms,
            };
            accounts.insert(ak, account);
        }
        Ok(PlainAcl {
            global_white,
            accounts,
        })
    }

    /// The accounts, by access key.
    #[must_use]
    pub fn accounts(&self) -> &HashMap<String, Account> {
        &self.accounts
    }

    /// Checks `req` from a client at `from` (RocketMQ's `PlainPermissionManager.validate`).
    /// Returns the account that signed it (`None`: let through by a global white
    /// address).
    ///
    /// # Errors
    /// [`AclError`], with RocketMQ's message.
    pub fn validate(
        &self,
        req: &RemotingCommand,
        from: IpAddr,
    ) -> Result<Option<&Account>, AclError> {
        if self.global_white.iter().any(|p| p.matches(from)) {
            return Ok(None);
        }
        let Some(ak) = req.ext(crate::auth::ACCESS_KEY) else {
            return Err(AclError::NoAccessKey);
        };
        let Some(account) = self.accounts.get(ak) else {
            return Err(AclError::UnknownAccount(ak.to_owned()));
        };
        if account.white.matches(from) {
            return Ok(Some(account));
        }
        if account.creds.verify(req).is_err() {
            return Err(AclError::BadSignature(ak.to_owned()));
        }
        if needs_admin(req.code) && !account.admin {
            return Err(AclError::NeedAdmin(req.code, ak.to_owned()));
        }
        // As RocketMQ: an admin account that lists no topic or group permissions may
        // use every resource.
        if account.admin && account.perms.is_empty() {
            return Ok(Some(account));
        }
        for (resource, needed) in resources(req)? {
            let group = resource.starts_with(RETRY_PREFIX);
            let owned = account.perms.get(&resource).copied().unwrap_or(if group {
                account.default_group
            } else {
                account.default_topic
            });
            if !perm::grants(needed, owned) {
                let what = match resource.strip_prefix(RETRY_PREFIX) {
                    Some(g) => format!("group:{g}"),
                    None => format!("topic:{resource}"),
                };
                return Err(AclError::NoPermission(what));
            }
        }
        Ok(Some(account))
    }
}

/// The requests only an admin account may send: RocketMQ's five (topic and group
/// creation and deletion, broker configuration) and ferrocket's other writes to
/// roles, membership, offsets and the ACL itself.
#[must_use]
pub fn needs_admin(code: i32) -> bool {
    use request::*;
    matches!(
        code,
        UPDATE_AND_CREATE_TOPIC
            | UPDATE_BROKER_CONFIG
            | DELETE_TOPIC_IN_BROKER
            | UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
            | DELETE_SUBSCRIPTIONGROUP
            | INVOKE_BROKER_TO_RESET_OFFSET
            | CLONE_GROUP_OFFSET
            | ROLE_CHANGE
            | CONFIRM_SYNC_STATE_SET
            | RAFT_TRANSFER_LEADER
            | RAFT_ADD_MEMBER
            | RAFT_REMOVE_MEMBER
            | UPDATE_AND_CREATE_ACL_CONFIG
            | DELETE_ACL_CONFIG
            | UPDATE_GLOBAL_WHITE_ADDRS_CONFIG
            | GET_BROKER_CLUSTER_ACL_CONFIG
    )
}

fn retry(group: Option<&str>) -> Option<String> {
    group.map(|g| format!("{RETRY_PREFIX}{g}"))
}

/// The topics and groups (as retry topics) `req` touches, with the permission each
/// needs (RocketMQ's `PlainAccessValidator.parse`).
///
/// # Errors
/// [`AclError::BadRequest`] for a heartbeat body that is not JSON.
pub fn resources(req: &RemotingCommand) -> Result<Vec<(String, u8)>, AclError> {
    use request::*;
    let ext = |k: &str| req.ext(k).map(str::to_owned);
    let mut out: Vec<(Option<String>, u8)> = Vec::new();
    match req.code {
        SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => {
            let v2 = req.code != SEND_MESSAGE;
            let topic = if v2 { ext("b") } else { ext("topic") };
            let group = if v2 { ext("a") } else { ext("producerGroup") };
            // A consumer's retry (sent back to its retry topic) needs the group's SUB.
            match topic {
                Some(t) if t.starts_with(RETRY_PREFIX) => {
                    out.push((retry(group.as_deref()), perm::SUB))
                }
                t => out.push((t, perm::PUB)),
            }
        }
        CONSUMER_SEND_MSG_BACK => {
            out.push((ext("originTopic"), perm::PUB));
            out.push((retry(req.ext("group")), perm::SUB));
        }
        PULL_MESSAGE | LITE_PULL_MESSAGE => {
            out.push((ext("topic"), perm::SUB));
            out.push((retry(req.ext("consumerGroup")), perm::SUB));
        }
        QUERY_MESSAGE => out.push((ext("topic"), perm::SUB)),
        HEART_BEAT => {
            let body: Vec<u8> = req.body.iter().flat_map(|b| b.iter().copied()).collect();
            if !body.is_empty() {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| AclError::BadRequest(format!("heartbeat body: {e}")))?;
                for c in v["consumerDataSet"].as_array().into_iter().flatten() {
                    out.push((retry(c["groupName"].as_str()), perm::SUB));
                    for s in c["subscriptionDataSet"].as_array().into_iter().flatten() {
                        out.push((s["topic"].as_str().map(str::to_owned), perm::SUB));
                    }
                }
            }
        }
        UNREGISTER_CLIENT | GET_CONSUMER_LIST_BY_GROUP => {
            out.push((retry(req.ext("consumerGroup")), perm::SUB));
        }
        UPDATE_CONSUMER_OFFSET | QUERY_CONSUMER_OFFSET => {
            out.push((retry(req.ext("consumerGroup")), perm::SUB));
            out.push((ext("topic"), perm::SUB));
        }
        _ => {}
    }
    Ok(out
        .into_iter()
        .filter_map(|(r, p)| r.map(|r| (r, p)))
        .collect())
}

/// An account as the ACL admin requests carry it (`UPDATE_AND_CREATE_ACL_CONFIG`'s
/// header, `GET_BROKER_CLUSTER_ACL_CONFIG`'s body: RocketMQ's `PlainAccessConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountConfig {
    /// The access key.
    pub access_key: String,
    /// The secret key (kept when empty on an update).
    pub secret_key: String,
    /// The account's white address (kept when empty).
    pub white_remote_address: String,
    /// Admin.
    pub admin: bool,
    /// `PUB`, `SUB`, `PUB|SUB`, `DENY` (kept when empty).
    pub default_topic_perm: String,
    /// As `default_topic_perm`.
    pub default_group_perm: String,
    /// `name=PERM` entries (kept when empty).
    pub topic_perms: Vec<String>,
    /// `name=PERM` entries (kept when empty).
    pub group_perms: Vec<String>,
}

/// The whole file as `GET_BROKER_CLUSTER_ACL_CONFIG` answers it (RocketMQ's
/// `AclConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AclConfig {
    /// `globalWhiteRemoteAddresses`.
    pub global_white_addrs: Vec<String>,
    /// The accounts.
    pub plain_access_configs: Vec<AccountConfig>,
}

/// The broker's ACL: the file, re-read when it changes (RocketMQ watches it too).
#[derive(Debug)]
pub struct Acl {
    path: PathBuf,
    current: RwLock<(Vec<u8>, Arc<PlainAcl>)>,
    /// `(counter, timestamp ms)`: moves on every version taken into force
    /// (RocketMQ's `DataVersion` of the ACL).
    version: RwLock<(u64, i64)>,
    /// Serialises the admin requests' edits of the file.
    editing: std::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn yaml_key(k: &str) -> serde_yaml::Value {
    serde_yaml::Value::String(k.to_owned())
}

impl Acl {
    /// Loads `path`.
    ///
    /// # Errors
    /// [`AclError::Config`].
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let (bytes, acl) = Self::read(path)?;
        Ok(Acl {
            path: path.to_path_buf(),
            current: RwLock::new((bytes, Arc::new(acl))),
            version: RwLock::new((0, now_ms())),
            editing: std::sync::Mutex::new(()),
        })
    }

    /// The version in force, as RocketMQ's `DataVersion` JSON.
    #[must_use]
    pub fn version_json(&self) -> String {
        let (counter, ts) = *self.version.read().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({"counter": counter, "timestamp": ts}).to_string()
    }

    fn config_err(&self, reason: impl Into<String>) -> AclError {
        AclError::Config {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Applies `edit` to the file's YAML, checks the result is a valid ACL, writes it
    /// (a temporary file, synced, renamed over the old one) and puts it in force.
    fn edit(
        &self,
        edit: impl FnOnce(&mut serde_yaml::Mapping) -> Result<(), String>,
    ) -> Result<(), AclError> {
        let _g = self.editing.lock().unwrap_or_else(|p| p.into_inner());
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| self.config_err(e.to_string()))?;
        let mut doc: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| self.config_err(e.to_string()))?;
        if doc.is_null() {
            doc = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        }
        let map = doc
            .as_mapping_mut()
            .ok_or_else(|| self.config_err("the file is not a YAML mapping"))?;
        edit(map).map_err(|e| self.config_err(e))?;
        let out = serde_yaml::to_string(&doc).map_err(|e| self.config_err(e.to_string()))?;
        PlainAcl::parse(&out).map_err(|e| self.config_err(e))?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(out.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.config_err(e.to_string()))?;
        self.reload_if_changed().map(drop)
    }

    /// UPDATE_AND_CREATE_ACL_CONFIG: creates the account, or updates the fields given
    /// (empty ones are kept), as RocketMQ does.
    ///
    /// # Errors
    /// Keys of 6 characters or fewer, a file that cannot be edited, or a result that
    /// is not a valid ACL (nothing is written then).
    pub fn update_account(&self, a: &AccountConfig) -> Result<(), AclError> {
        if a.access_key.len() <= 6 {
            return Err(self.config_err(format!(
                "The accessKey={} cannot be null and length should longer than 6",
                a.access_key
            )));
        }
        if !a.secret_key.is_empty() && a.secret_key.len() <= 6 {
            return Err(
                self.config_err("The secretKey value length should longer than 6".to_owned())
            );
        }
        self.edit(|map| {
            let accounts = map
                .entry(yaml_key("accounts"))
                .or_insert_with(|| serde_yaml::Value::Sequence(Vec::new()));
            if accounts.is_null() {
                *accounts = serde_yaml::Value::Sequence(Vec::new());
            }
            let list = accounts.as_sequence_mut().ok_or("accounts is not a list")?;
            let i = match list
                .iter()
                .position(|v| v.get("accessKey").and_then(scalar).as_deref() == Some(&a.access_key))
            {
                Some(i) => i,
                None => {
                    list.push(serde_yaml::Value::Mapping(serde_yaml::Mapping::new()));
                    list.len() - 1
                }
            };
            let m = list[i]
                .as_mapping_mut()
                .ok_or("an account is not a mapping")?;
            let mut set = |k: &str, v: serde_yaml::Value| {
                m.insert(yaml_key(k), v);
            };
            set("accessKey", yaml_key(&a.access_key));
            let text = |k: &str, v: &str, set: &mut dyn FnMut(&str, serde_yaml::Value)| {
                if !v.is_empty() {
                    set(k, yaml_key(v));
                }
            };
            text("secretKey", &a.secret_key, &mut set);
            text("whiteRemoteAddress", &a.white_remote_address, &mut set);
            set("admin", serde_yaml::Value::Bool(a.admin));
            text("defaultTopicPerm", &a.default_topic_perm, &mut set);
            text("defaultGroupPerm", &a.default_group_perm, &mut set);
            for (k, v) in [
                ("topicPerms", &a.topic_perms),
                ("groupPerms", &a.group_perms),
            ] {
                if !v.is_empty() {
                    set(
                        k,
                        serde_yaml::Value::Sequence(v.iter().map(|p| yaml_key(p)).collect()),
                    );
                }
            }
            Ok(())
        })
    }

    /// DELETE_ACL_CONFIG: removes the account.
    ///
    /// # Errors
    /// No such account; a file that cannot be edited.
    pub fn delete_account(&self, access_key: &str) -> Result<(), AclError> {
        self.edit(|map| {
            let list = map
                .get_mut("accounts")
                .and_then(serde_yaml::Value::as_sequence_mut)
                .ok_or("the file has no accounts")?;
            let before = list.len();
            list.retain(|v| v.get("accessKey").and_then(scalar).as_deref() != Some(access_key));
            if list.len() == before {
                return Err(format!("no account {access_key}"));
            }
            Ok(())
        })
    }

    /// UPDATE_GLOBAL_WHITE_ADDRS_CONFIG: replaces `globalWhiteRemoteAddresses`.
    ///
    /// # Errors
    /// An invalid pattern; a file that cannot be edited.
    pub fn update_global_white(&self, addrs: &[String]) -> Result<(), AclError> {
        self.edit(|map| {
            map.insert(
                yaml_key("globalWhiteRemoteAddresses"),
                serde_yaml::Value::Sequence(addrs.iter().map(|a| yaml_key(a)).collect()),
            );
            Ok(())
        })
    }

    /// GET_BROKER_CLUSTER_ACL_CONFIG: the file as RocketMQ's `AclConfig` (secrets
    /// included; admin accounts only).
    ///
    /// # Errors
    /// An unreadable file.
    pub fn config(&self) -> Result<AclConfig, AclError> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| self.config_err(e.to_string()))?;
        let raw: RawFile =
            serde_yaml::from_str(&text).map_err(|e| self.config_err(e.to_string()))?;
        Ok(AclConfig {
            global_white_addrs: raw.global_white_remote_addresses.unwrap_or_default(),
            plain_access_configs: raw
                .accounts
                .unwrap_or_default()
                .into_iter()
                .map(|a| AccountConfig {
                    access_key: a.access_key.unwrap_or_default(),
                    secret_key: a.secret_key.as_ref().and_then(scalar).unwrap_or_default(),
                    white_remote_address: a.white_remote_address.unwrap_or_default(),
                    admin: a
                        .admin
                        .as_ref()
                        .and_then(scalar)
                        .is_some_and(|s| s == "true"),
                    default_topic_perm: a.default_topic_perm.unwrap_or_default(),
                    default_group_perm: a.default_group_perm.unwrap_or_default(),
                    topic_perms: a.topic_perms.unwrap_or_default(),
                    group_perms: a.group_perms.unwrap_or_default(),
                })
                .collect(),
        })
    }

    fn read(path: &Path) -> Result<(Vec<u8>, PlainAcl), AclError> {
        let bad = |reason: String| AclError::Config {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| bad(e.to_string()))?;
        if text.trim().is_empty() {
            return Err(bad("the file is empty".into()));
        }
        let acl = PlainAcl::parse(&text).map_err(bad)?;
        Ok((bytes, acl))
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is in force.
    #[must_use]
    pub fn current(&self) -> Arc<PlainAcl> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// Re-reads the file when its bytes changed: `Ok(true)` when a new version is in
    /// force. An invalid new version is refused and the old one stays.
    ///
    /// # Errors
    /// [`AclError::Config`] for an unreadable or invalid new version.
    pub fn reload_if_changed(&self) -> Result<bool, AclError> {
        let bytes = std::fs::read(&self.path).map_err(|e| AclError::Config {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == bytes {
            return Ok(false);
        }
        let (bytes, acl) = Self::read(&self.path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (bytes, Arc::new(acl));
        let mut v = self.version.write().unwrap_or_else(|p| p.into_inner());
        *v = (v.0 + 1, now_ms());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credentials;

    const SAMPLE: &str = r#"
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*
accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB
  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    admin: true
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn signed(ak: &str, sk: &[u8], mut cmd: RemotingCommand) -> RemotingCommand {
        Credentials::new(ak, sk).unwrap().sign(&mut cmd);
        cmd
    }

    fn send_v2(topic: &str) -> RemotingCommand {
        RemotingCommand::request(request::SEND_MESSAGE_V2)
            .with_ext("a", "pg")
            .with_ext("b", topic)
    }

    #[test]
    fn rocketmqs_sample_file_parses_and_decides_as_rocketmq() {
        let acl = PlainAcl::parse(SAMPLE).unwrap();
        assert_eq!(acl.accounts().len(), 2);
        let me = ip("127.0.0.1");
        // White-listed: nothing asked.
        assert!(acl.validate(&send_v2("topicA"), ip("192.168.0.7")).is_ok());
        assert_eq!(
            acl.validate(&send_v2("topicB"), me).unwrap_err(),
            AclError::NoAccessKey
        );
        let stranger = signed("nobody-here", b"12345678", send_v2("topicB"));
        assert_eq!(
            acl.validate(&stranger, me).unwrap_err().to_string(),
            "No acl config for nobody-here"
        );
        let wrong = signed("RocketMQ", b"87654321", send_v2("topicB"));
        assert_eq!(
            acl.validate(&wrong, me).unwrap_err().to_string(),
            "Check signature failed for accessKey=RocketMQ"
        );
        // An altered body after signing fails too.
        let mut altered = signed("RocketMQ", b"12345678", send_v2("topicB"));
        altered.ext_fields.insert("b".into(), "topicC".into());
        assert!(matches!(
            acl.validate(&altered, me),
            Err(AclError::BadSignature(_))
        ));
        assert!(acl
            .validate(&signed("RocketMQ", b"12345678", send_v2("topicB")), me)
            .is_ok());
        for (topic, why) in [
            ("topicA", "topic:topicA"),
            ("topicC", "topic:topicC"),
            ("other", "topic:other"),
        ] {
            assert_eq!(
                acl.validate(&signed("RocketMQ", b"12345678", send_v2(topic)), me)
                    .unwrap_err(),
                AclError::NoPermission(why.into()),
                "{topic}"
            );
        }
        // Pull: the topic's SUB and the group's SUB (default SUB; groupA denied).
        let pull = |topic: &str, group: &str| {
            signed(
                "RocketMQ",
                b"12345678",
                RemotingCommand::request(request::PULL_MESSAGE)
                    .with_ext("topic", topic)
                    .with_ext("consumerGroup", group),
            )
        };
        assert!(acl.validate(&pull("topicC", "groupZ"), me).is_ok());
        assert_eq!(
            acl.validate(&pull("topicC", "groupA"), me).unwrap_err(),
            AclError::NoPermission("group:groupA".into())
        );
        // Admin requests need an admin account.
        let create =
            RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC).with_ext("topic", "x");
        assert_eq!(
            acl.validate(&signed("RocketMQ", b"12345678", create.clone()), me)
                .unwrap_err()
                .to_string(),
            format!(
                "Need admin permission for request code={}, but accessKey=RocketMQ is not",
                request::UPDATE_AND_CREATE_TOPIC
            )
        );
        assert!(acl
            .validate(&signed("rocketmq2", b"12345678", create.clone()), me)
            .is_ok());
        // The account's white address skips the signature.
        // An admin account listing no permissions may use every resource.
        assert!(acl
            .validate(&signed("rocketmq2", b"12345678", send_v2("topicA")), me)
            .is_ok());
        let unsigned = create.with_ext(crate::auth::ACCESS_KEY, "rocketmq2");
        assert!(acl.validate(&unsigned, ip("192.168.1.9")).is_ok());
        assert!(acl.validate(&unsigned, me).is_err());
    }

    #[test]
    fn heartbeats_are_checked_for_every_group_and_subscription() {
        let acl = PlainAcl::parse(SAMPLE).unwrap();
        let hb = |body: &str| {
            signed(
                "RocketMQ",
                b"12345678",
                RemotingCommand::request(request::HEART_BEAT)
                    .with_body(bytes::Bytes::from(body.to_owned())),
            )
        };
        let me = ip("127.0.0.1");
        let ok = r#"{"clientID":"c","consumerDataSet":[{"groupName":"groupC","subscriptionDataSet":[{"topic":"topicC"},{"topic":"topicB"}]}],"producerDataSet":[]}"#;
        assert!(acl.validate(&hb(ok), me).is_ok());
        let denied = r#"{"consumerDataSet":[{"groupName":"groupC","subscriptionDataSet":[{"topic":"topicA"}]}]}"#;
        assert_eq!(
            acl.validate(&hb(denied), me).unwrap_err(),
            AclError::NoPermission("topic:topicA".into())
        );
        assert!(matches!(
            acl.validate(&hb("{not json"), me),
            Err(AclError::BadRequest(_))
        ));
        // A producer's heartbeat names no resource.
        assert!(acl
            .validate(&hb(r#"{"producerDataSet":[{"groupName":"p"}]}"#), me)
            .is_ok());
    }

    #[test]
    fn address_patterns_and_permissions_match_rocketmqs_forms() {
        for (pat, yes, no) in [
            ("*", "1.2.3.4", None),
            ("192.168.0.*", "192.168.0.200", Some("192.168.1.1")),
            ("192.168.0.{1,2}", "192.168.0.2", Some("192.168.0.3")),
            ("192.168.1-10.*", "192.168.10.1", Some("192.168.11.1")),
            ("10.0.0.1", "10.0.0.1", Some("10.0.0.2")),
        ] {
            let p = AddrPattern::parse(pat).unwrap();
            assert!(p.matches(ip(yes)), "{pat} {yes}");
            assert!(
                p.matches(ip(&format!("::ffff:{yes}"))),
                "{pat} mapped {yes}"
            );
            if let Some(no) = no {
                assert!(!p.matches(ip(no)), "{pat} {no}");
            }
        }
        assert!(!AddrPattern::parse("").unwrap().matches(ip("1.2.3.4")));
        assert!(AddrPattern::parse("1.2.3").is_err());
        assert!(AddrPattern::parse("1.2.3.300").is_err());
        use perm::*;
        assert!(grants(PUB, PUB | SUB) && grants(SUB, SUB) && !grants(PUB, SUB));
        assert!(!grants(PUB, DENY | PUB) && grants(ANY, SUB) && !grants(ANY, DENY));
        assert_eq!(parse(Some("SUB|PUB")), PUB | SUB);
        assert_eq!(parse(Some("bogus")), DENY);
        assert_eq!(parse(None), DENY);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("accounts:\n  - accessKey: short\n    secretKey: 12345678\n", "longer than 6"),
            ("accounts:\n  - accessKey: longenough\n    secretKey: 12345678\n    topicPerms: [\"noequals\"]\n", "topic:noequals"),
            ("globalWhiteRemoteAddresses: [\"1.2\"]\n", "address pattern"),
            ("accounts: 7\n", "invalid type"),
        ] {
            let e = PlainAcl::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_changed_file_is_reloaded_and_an_invalid_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain_acl.yml");
        std::fs::write(&p, SAMPLE).unwrap();
        let acl = Acl::load(&p).unwrap();
        assert!(!acl.reload_if_changed().unwrap());
        std::fs::write(&p, SAMPLE.replace("topicC=SUB", "topicC=PUB")).unwrap();
        assert!(acl.reload_if_changed().unwrap());
        let me = ip("127.0.0.1");
        assert!(acl
            .current()
            .validate(&signed("RocketMQ", b"12345678", send_v2("topicC")), me)
            .is_ok());
        // The admin requests' edits: create, update (empty fields kept), white
        // addresses, delete; an edit that would make the file invalid writes nothing.
        let v0 = acl.version_json();
        let new = AccountConfig {
            access_key: "newcomer".into(),
            secret_key: "newcomer-secret".into(),
            default_topic_perm: "PUB".into(),
            topic_perms: vec!["topicA=SUB".into()],
            ..AccountConfig::default()
        };
        acl.update_account(&new).unwrap();
        assert_ne!(acl.version_json(), v0);
        let send = |ak: &str, sk: &[u8], t: &str| {
            acl.current()
                .validate(&signed(ak, sk, send_v2(t)), me)
                .map(drop)
        };
        assert!(send("newcomer", b"newcomer-secret", "anything").is_ok());
        assert!(send("newcomer", b"newcomer-secret", "topicA").is_err());
        acl.update_account(&AccountConfig {
            access_key: "newcomer".into(),
            default_topic_perm: "DENY".into(),
            ..AccountConfig::default()
        })
        .unwrap();
        assert!(send("newcomer", b"newcomer-secret", "anything").is_err());
        let cfg = acl.config().unwrap();
        let n = cfg
            .plain_access_configs
            .iter()
            .find(|a| a.access_key == "newcomer")
            .unwrap();
        assert_eq!(
            (n.secret_key.as_str(), n.topic_perms.clone()),
            ("newcomer-secret", vec!["topicA=SUB".to_owned()])
        );
        assert!(acl
            .update_account(&AccountConfig {
                access_key: "short".into(),
                ..AccountConfig::default()
            })
            .is_err());
        assert!(acl
            .update_account(&AccountConfig {
                access_key: "newcomer".into(),
                topic_perms: vec!["noequals".into()],
                ..AccountConfig::default()
            })
            .is_err());
        acl.update_global_white(&["127.0.0.*".into()]).unwrap();
        assert!(acl.current().validate(&send_v2("topicA"), me).is_ok());
        assert!(acl.update_global_white(&["1.2".into()]).is_err());
        acl.delete_account("newcomer").unwrap();
        assert!(acl.delete_account("newcomer").is_err());
        acl.update_global_white(&[]).unwrap();
        assert!(send("newcomer", b"newcomer-secret", "topicB").is_err());
        assert_eq!(acl.config().unwrap().plain_access_configs.len(), 2);

        std::fs::write(&p, "accounts: [").unwrap();
        assert!(acl.reload_if_changed().is_err());
        assert!(acl
            .current()
            .validate(&signed("RocketMQ", b"12345678", send_v2("topicC")), me)
            .is_ok());
        assert!(Acl::load(&dir.path().join("none.yml")).is_err());
    }
}
