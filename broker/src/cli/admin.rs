//! `ferrocket admin --namesrv ADDR ...`: the everyday verbs (a first set; the admin issue
//! adds the rest of what people use `mqadmin` for).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use crate::client::{Client, OutMessage};
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;
use crate::store::{decode_record, parse_properties};

/// `ferrocket admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Name server address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub namesrv: String,
    /// Print JSON instead of tables (cluster, topic list, offsets, group list,
    /// broker-status).
    #[arg(long, global = true)]
    pub json: bool,
    /// Sign every request with the control secret in this file (what brokers started
    /// with `controlSecretFile` require for role and permission changes).
    #[arg(long, global = true, env = "FERROCKET_CONTROL_SECRET_FILE")]
    pub secret_file: Option<std::path::PathBuf>,
    /// The access key signatures carry.
    #[arg(long, global = true, default_value = crate::auth::DEFAULT_CONTROL_ACCESS_KEY)]
    pub access_key: String,
    /// Speak TLS to the name server and brokers, trusting the CAs in this PEM file
    /// (RocketMQ's `tls.enable` with `tls.client.trustCertPath`).
    #[arg(long, global = true)]
    pub tls_trust: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

/// The ACL 2.0 verbs (RocketMQ's mqadmin createUser ... listAcl).
#[derive(Debug, clap::Subcommand)]
enum AuthCommand {
    /// Creates a user (mqadmin createUser).
    UserCreate {
        #[command(flatten)]
        user: UserArgs,
    },
    /// Changes the password, type or status given (mqadmin updateUser).
    UserUpdate {
        #[command(flatten)]
        user: UserArgs,
        /// `enable` or `disable`.
        #[arg(long, value_parser = ["enable", "disable"])]
        status: Option<String>,
    },
    /// Deletes a user and its policies (mqadmin deleteUser).
    UserDelete {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// The user.
        #[arg(long)]
        username: String,
    },
    /// One user (mqadmin getUser).
    UserGet {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// The user.
        #[arg(long)]
        username: String,
    },
    /// The users whose names contain `--filter` (mqadmin listUser).
    UserList {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// A part of the name.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Adds policy entries for a subject, or replaces those of the same resources
    /// (mqadmin createAcl).
    AclCreate {
        #[command(flatten)]
        acl: AclArgs,
    },
    /// As `acl-create` (mqadmin updateAcl).
    AclUpdate {
        #[command(flatten)]
        acl: AclArgs,
    },
    /// Deletes one resource's entry, or all of the subject's policies without
    /// `--resource` (mqadmin deleteAcl).
    AclDelete {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// `User:<name>`.
        #[arg(long)]
        subject: String,
        /// The resource (`Topic:orders`).
        #[arg(long)]
        resource: Option<String>,
        /// `Custom` (default) or `Default`.
        #[arg(long)]
        policy_type: Option<String>,
    },
    /// A subject's policies (mqadmin getAcl).
    AclGet {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// `User:<name>`.
        #[arg(long)]
        subject: String,
    },
    /// Policies, filtered by subject and resource (mqadmin listAcl).
    AclList {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// A part of the subject.
        #[arg(long, default_value = "")]
        subject_filter: String,
        /// A part of the resource.
        #[arg(long, default_value = "")]
        resource_filter: String,
    },
}

#[derive(Debug, clap::Args)]
struct UserArgs {
    /// One broker (`host:port`); all when absent.
    #[arg(long)]
    broker: Option<String>,
    /// The user (the `AccessKey` its clients send).
    #[arg(long)]
    username: String,
    /// A file holding the password (its clients' secret key).
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// `Super` or `Normal` (`Normal` when created without it).
    #[arg(long = "type", value_parser = ["Super", "Normal"])]
    user_type: Option<String>,
}

#[derive(Debug, clap::Args)]
struct AclArgs {
    /// One broker (`host:port`); all when absent.
    #[arg(long)]
    broker: Option<String>,
    /// `User:<name>`.
    #[arg(long)]
    subject: String,
    /// Resources, comma separated (`Topic:orders,Group:billing-*,*`).
    #[arg(long)]
    resources: String,
    /// Actions, comma separated (`Pub,Sub,Create,Update,Delete,Get,List,All`).
    #[arg(long)]
    actions: String,
    /// Addresses or CIDR blocks the entries apply to, comma separated (none: any).
    #[arg(long, default_value = "")]
    source_ips: String,
    /// `Allow` or `Deny`.
    #[arg(long, value_parser = ["Allow", "Deny"])]
    decision: String,
}

fn comma(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn user_request(code: i32, u: &UserArgs, status: Option<&str>) -> Result<RemotingCommand> {
    let password = match &u.password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let body = crate::acl2::UserInfo {
        username: Some(u.username.clone()),
        password,
        user_type: u.user_type.clone(),
        user_status: status.map(str::to_owned),
    };
    Ok(RemotingCommand::request(code)
        .with_ext("username", &u.username)
        .with_body(bytes::Bytes::from(serde_json::to_vec(&body)?)))
}

fn acl_request(code: i32, a: &AclArgs) -> Result<RemotingCommand> {
    let entries = comma(&a.resources)
        .into_iter()
        .map(|r| crate::acl2::PolicyEntryInfo {
            resource: Some(r),
            actions: Some(comma(&a.actions)),
            source_ips: Some(comma(&a.source_ips)).filter(|v| !v.is_empty()),
            decision: Some(a.decision.clone()),
        })
        .collect();
    let body = crate::acl2::AclInfo {
        subject: Some(a.subject.clone()),
        policies: Some(vec![crate::acl2::PolicyInfo {
            policy_type: Some("Custom".into()),
            entries: Some(entries),
        }]),
    };
    Ok(RemotingCommand::request(code)
        .with_ext("subject", &a.subject)
        .with_body(bytes::Bytes::from(serde_json::to_vec(&body)?)))
}

async fn auth_command(c: &Client, what: AuthCommand, json: bool) -> Result<()> {
    use AuthCommand as A;
    let (broker, q) = match what {
        A::UserCreate { user } => (
            user.broker.clone(),
            user_request(request::AUTH_CREATE_USER, &user, None)?,
        ),
        A::UserUpdate { user, status } => (
            user.broker.clone(),
            user_request(request::AUTH_UPDATE_USER, &user, status.as_deref())?,
        ),
        A::UserDelete { broker, username } => (
            broker,
            RemotingCommand::request(request::AUTH_DELETE_USER).with_ext("username", username),
        ),
        A::UserGet { broker, username } => (
            broker,
            RemotingCommand::request(request::AUTH_GET_USER).with_ext("username", username),
        ),
        A::UserList { broker, filter } => (
            broker,
            RemotingCommand::request(request::AUTH_LIST_USER).with_ext("filter", filter),
        ),
        A::AclCreate { acl } => (
            acl.broker.clone(),
            acl_request(request::AUTH_CREATE_ACL, &acl)?,
        ),
        A::AclUpdate { acl } => (
            acl.broker.clone(),
            acl_request(request::AUTH_UPDATE_ACL, &acl)?,
        ),
        A::AclDelete {
            broker,
            subject,
            resource,
            policy_type,
        } => {
            let mut q =
                RemotingCommand::request(request::AUTH_DELETE_ACL).with_ext("subject", subject);
            if let Some(r) = resource {
                q = q.with_ext("resource", r);
            }
            if let Some(t) = policy_type {
                q = q.with_ext("policyType", t);
            }
            (broker, q)
        }
        A::AclGet { broker, subject } => (
            broker,
            RemotingCommand::request(request::AUTH_GET_ACL).with_ext("subject", subject),
        ),
        A::AclList {
            broker,
            subject_filter,
            resource_filter,
        } => (
            broker,
            RemotingCommand::request(request::AUTH_LIST_ACL)
                .with_ext("subjectFilter", subject_filter)
                .with_ext("resourceFilter", resource_filter),
        ),
    };
    for_each_broker(c, broker, &q, |addr, r| {
        let body = r.body_bytes();
        if body.is_empty() {
            println!("{addr}: ok");
            return Ok(());
        }
        print_body(addr, "answer", &body, json)
    })
    .await
}

#[derive(Debug, clap::Subcommand)]
enum AclCommand {
    /// Creates an account, or updates the fields given.
    Update {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// The account's access key (more than 6 characters).
        #[arg(long)]
        account: String,
        /// Its secret key (more than 6 characters; kept when absent on an update).
        #[arg(long, default_value = "")]
        secret: String,
        /// An admin account.
        #[arg(long)]
        admin: bool,
        /// Addresses let through unsigned for this account (`192.168.0.*`).
        #[arg(long, default_value = "")]
        white_address: String,
        /// PUB, SUB, PUB|SUB or DENY.
        #[arg(long, default_value = "")]
        default_topic_perm: String,
        /// PUB, SUB, PUB|SUB or DENY.
        #[arg(long, default_value = "")]
        default_group_perm: String,
        /// `topic=PERM` entries, comma separated.
        #[arg(long, default_value = "")]
        topic_perms: String,
        /// `group=PERM` entries, comma separated.
        #[arg(long, default_value = "")]
        group_perms: String,
    },
    /// Deletes an account.
    Delete {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// The account's access key.
        #[arg(long)]
        account: String,
    },
    /// Replaces the global white addresses (comma separated; empty: none).
    WhiteAddrs {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
        /// The addresses.
        #[arg(long, default_value = "")]
        addrs: String,
    },
    /// The version of each broker's ACL file.
    Version {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
    },
    /// Each broker's ACL file (secret keys included).
    Show {
        /// One broker (`host:port`); all when absent.
        #[arg(long)]
        broker: Option<String>,
    },
}

/// `broker`, or every broker address registered with the name server.
async fn brokers_or_all(c: &Client, broker: Option<String>) -> Result<Vec<String>> {
    if let Some(b) = broker {
        return Ok(vec![b]);
    }
    let info = c.cluster().await?;
    let all: Vec<String> = info
        .broker_addr_table
        .values()
        .flat_map(|d| d.broker_addrs.values().cloned())
        .collect();
    if all.is_empty() {
        bail!("no broker is registered with the name server");
    }
    Ok(all)
}

#[derive(Debug, clap::Subcommand)]
enum RaftCommand {
    /// Each member of a Raft group as it reports itself.
    Status {
        /// The group's broker name.
        #[arg(long)]
        broker_name: String,
    },
    /// Hands a group's leadership to member `--to` (a dLegerPeers id such as n1)
    /// without losing an acknowledged message: sends pause (refused, retryable) until
    /// the member holds every entry and has taken over.
    TransferLeader {
        /// The group's broker name.
        #[arg(long)]
        broker_name: String,
        /// The member to lead (`n1`).
        #[arg(long)]
        to: String,
        /// How long the leader may take, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Adds a running member to the group: a learner until it holds the leader's log,
    /// then a voter. Start it first with `dLegerPeers` listing the group and itself.
    Add {
        /// The group's broker name.
        #[arg(long)]
        broker_name: String,
        /// Its dLegerPeers id (`n3`).
        #[arg(long)]
        id: String,
        /// Its Raft port (`host:port`).
        #[arg(long)]
        peer: String,
        /// How long it may take to catch up, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Removes a member (not the leader: transfer leadership first).
    Remove {
        /// The group's broker name.
        #[arg(long)]
        broker_name: String,
        /// Its dLegerPeers id (`n3`).
        #[arg(long)]
        id: String,
        /// How long the change may take, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Topics.
    Topic {
        #[command(subcommand)]
        what: TopicCommand,
    },
    /// Brokers by cluster, with their ids and addresses.
    Cluster,
    /// Subscription groups.
    Group {
        #[command(subcommand)]
        what: GroupCommand,
    },
    /// Raft (DLedger) groups: `raft status --broker-name NAME` shows each member's state,
    /// term, leader, log index and committed offset; `raft transfer-leader` hands
    /// leadership over; `raft add|remove` change the membership (docs/raft.md).
    Raft {
        #[command(subcommand)]
        what: RaftCommand,
    },
    /// Plain ACL on brokers with `aclEnable=true` (RocketMQ's updateAclConfig,
    /// deleteAclConfig, updateGlobalWhiteAddr, getAclConfigVersion, getAclConfig):
    /// each broker edits its own ACL file. Sign as an admin account (`--access-key`,
    /// `--secret-file`). Without `--broker`, every broker registered.
    Acl {
        #[command(subcommand)]
        what: AclCommand,
    },
    /// ACL 2.0 users and policies on brokers (RocketMQ 5.3's createUser ... listAcl;
    /// in force with `authenticationEnabled`/`authorizationEnabled`). Sign as a Super
    /// user (`--access-key`, `--secret-file`). Without `--broker`, every broker
    /// registered.
    Auth {
        #[command(subcommand)]
        what: AuthCommand,
    },
    /// A broker's runtime information.
    BrokerStatus {
        /// Broker address.
        #[arg(long)]
        broker: String,
    },
    /// Change a running broker's role (the request the operator sends at failover).
    Role {
        /// Broker address.
        #[arg(long)]
        broker: String,
        /// `master` or `slave`.
        #[arg(long, value_parser = ["master", "slave"])]
        role: String,
        /// The master to follow (slaves).
        #[arg(long, required_if_eq("role", "slave"))]
        master: Option<String>,
        /// The master's HA address (default: its port + 1).
        #[arg(long)]
        master_ha: Option<String>,
        /// The slave's brokerId (default: its configured slave id).
        #[arg(long)]
        broker_id: Option<i64>,
        /// Role epoch; older than the broker's is refused.
        #[arg(long)]
        epoch: i64,
    },
    /// Move the master role of a broker group to one of its slaves without losing a
    /// message: the master stops taking writes, the slave catches up, then the roles
    /// change at the next epoch (everything else follows the new master).
    Switchover {
        /// The broker group (`brokerName`), as the name server lists it.
        #[arg(long)]
        broker_name: String,
        /// The slave to promote (its remoting address).
        #[arg(long)]
        to: String,
        /// How long the slave may take to catch up before the switchover is abandoned, ms.
        #[arg(long, default_value_t = 10_000)]
        catch_up_ms: u64,
    },
    /// A broker's configuration.
    BrokerConfig {
        #[command(subcommand)]
        what: BrokerConfigCommand,
    },
    /// Per queue: broker max offset, the group's committed offset, lag; then total lag.
    Offsets {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// Reset a group's offsets on a topic to a time (ms since the epoch; -1 = the end)
    /// on every master: consumers online are told to move (RESET_CONSUMER_CLIENT_OFFSET);
    /// with none online the committed offsets are rewritten directly.
    ResetOffset {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Time in ms since the epoch, or -1 for the end of each queue.
        #[arg(long, allow_hyphen_values = true)]
        time: i64,
        /// Also move offsets backwards from later ones (default: only earlier).
        #[arg(long)]
        force: bool,
    },
    /// Skip everything a group has not consumed yet on a topic (reset to the end).
    SkipAccumulated {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// A producer group's connections on every master.
    Producers {
        /// Producer group.
        #[arg(long)]
        group: String,
    },
    /// A consumer group's connections and subscriptions on every master.
    Consumers {
        /// Consumer group.
        #[arg(long)]
        group: String,
    },
    /// A consumer's running information (asked of the client through its broker).
    ConsumerStatus {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Client id (see `consumers`).
        #[arg(long)]
        client: String,
    },
    /// The name server's KV configuration.
    Kv {
        #[command(subcommand)]
        what: KvCommand,
    },
    /// Take away or give back a broker name's write permission in the name server's
    /// routes (for a drain: producers move to other brokers).
    WritePerm {
        /// `wipe` or `add`.
        #[arg(value_parser = ["wipe", "add"])]
        action: String,
        /// Broker name.
        #[arg(long)]
        broker_name: String,
    },
    /// Find messages by key (KEYS or the unique id) through the index.
    QueryKey {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Key.
        #[arg(long)]
        key: String,
    },
    /// Show one message by its offset message id (the `msgId` a send returns).
    QueryId {
        /// Offset message id (32 or 56 hex characters).
        #[arg(long)]
        id: String,
    },
    /// Send one message.
    Send {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Tag.
        #[arg(long)]
        tag: Option<String>,
        /// Keys (space-separated).
        #[arg(long)]
        key: Option<String>,
        /// Body.
        #[arg(long)]
        body: String,
        /// Send this many messages (bodies `<body>-1` .. `<body>-N`), one line per
        /// message: `SEND_OK ... body=<body>-i` when acknowledged, `FAILED body=... error=...`
        /// otherwise (the route is looked up again after a failure). A load generator for
        /// fault tests: the acknowledged bodies are the ones that must survive.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Pause between messages, ms (with --count).
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
    },
    /// Consume messages of a topic and print them (commits the group's offsets).
    Consume {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Start at the first offset when the group has none (default: the last).
        #[arg(long)]
        from_first: bool,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Stop when nothing arrives for this long.
        #[arg(long, default_value = "3s", value_parser = super::report::parse_duration)]
        idle: Duration,
    },
}

#[derive(Debug, clap::Subcommand)]
enum GroupCommand {
    /// Create or update a group on every master.
    Create {
        /// Group.
        #[arg(long)]
        group: String,
        /// Retries before the dead-letter queue.
        #[arg(long, default_value_t = 16)]
        retry_max: i32,
        /// Orderly consumption.
        #[arg(long)]
        orderly: bool,
    },
    /// List the groups every master knows.
    List,
}

#[derive(Debug, clap::Subcommand)]
enum BrokerConfigCommand {
    /// Print the broker's configuration (`key=value`).
    Get {
        /// Broker address.
        #[arg(long)]
        broker: String,
    },
    /// Change a setting that can change at run time.
    Set {
        /// Broker address.
        #[arg(long)]
        broker: String,
        /// Key, e.g. `autoCreateTopicEnable`.
        #[arg(long)]
        key: String,
        /// Value.
        #[arg(long)]
        value: String,
    },
}

async fn masters(c: &Client) -> Result<Vec<String>> {
    let info = c.cluster().await.context("cannot reach the name server")?;
    let m: Vec<String> = info
        .broker_addr_table
        .values()
        .filter_map(|b| b.broker_addrs.get(&0).cloned())
        .collect();
    if m.is_empty() {
        bail!("no master broker is registered with the name server");
    }
    Ok(m)
}

/// Sends `q` to the group's leader, waiting as long as the leader may take
/// (`timeout_ms`, plus a margin); its answer when it succeeded.
async fn raft_call(
    c: &Client,
    broker_name: &str,
    q: RemotingCommand,
    timeout_ms: u64,
) -> Result<RemotingCommand> {
    let leader = raft_leader(c, broker_name).await?;
    let r = c
        .remoting
        .invoke(
            &leader,
            q,
            c.timeout.max(Duration::from_millis(timeout_ms + 2_000)),
        )
        .await
        .with_context(|| format!("broker {leader} unreachable"))?;
    if r.code != response::SUCCESS {
        bail!("{leader} refused: {}", r.remark.unwrap_or_default());
    }
    Ok(r)
}

/// Sends a membership change to the group's leader and prints the new membership.
async fn raft_membership(
    c: &Client,
    broker_name: &str,
    q: RemotingCommand,
    timeout_ms: u64,
    json: bool,
) -> Result<()> {
    let r = raft_call(c, broker_name, q, timeout_ms).await?;
    let members = r.ext("members").unwrap_or("?");
    if json {
        println!("{}", serde_json::json!({ "members": members }));
    } else {
        println!("{broker_name}: members {members}");
    }
    Ok(())
}

/// The address of a Raft group's leader (its brokerId 0 at the name server).
async fn raft_leader(c: &Client, broker_name: &str) -> Result<String> {
    let info = c.cluster().await.context("cannot reach the name server")?;
    match info
        .broker_addr_table
        .get(broker_name)
        .and_then(|g| g.broker_addrs.get(&0))
    {
        Some(a) => Ok(a.clone()),
        None => bail!("no leader (brokerId 0) of {broker_name} is registered"),
    }
}

async fn acl_command(c: &Client, what: AclCommand, json: bool) -> Result<()> {
    let (broker, q) = match what {
        AclCommand::Update {
            broker,
            account,
            secret,
            admin,
            white_address,
            default_topic_perm,
            default_group_perm,
            topic_perms,
            group_perms,
        } => {
            let mut q = RemotingCommand::request(request::UPDATE_AND_CREATE_ACL_CONFIG)
                .with_ext("accessKey", account)
                .with_ext("admin", admin);
            for (k, v) in [
                ("secretKey", secret),
                ("whiteRemoteAddress", white_address),
                ("defaultTopicPerm", default_topic_perm),
                ("defaultGroupPerm", default_group_perm),
                ("topicPerms", topic_perms),
                ("groupPerms", group_perms),
            ] {
                if !v.is_empty() {
                    q = q.with_ext(k, v);
                }
            }
            (broker, q)
        }
        AclCommand::Delete { broker, account } => (
            broker,
            RemotingCommand::request(request::DELETE_ACL_CONFIG).with_ext("accessKey", account),
        ),
        AclCommand::WhiteAddrs { broker, addrs } => (
            broker,
            RemotingCommand::request(request::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG)
                .with_ext("globalWhiteAddrs", addrs),
        ),
        AclCommand::Version { broker } => (
            broker,
            RemotingCommand::request(request::GET_BROKER_CLUSTER_ACL_INFO),
        ),
        AclCommand::Show { broker } => (
            broker,
            RemotingCommand::request(request::GET_BROKER_CLUSTER_ACL_CONFIG),
        ),
    };
    for_each_broker(c, broker, &q, |addr, r| {
        match q.code {
            request::GET_BROKER_CLUSTER_ACL_INFO => {
                println!("{addr}: version {}", r.ext("version").unwrap_or(""));
            }
            request::GET_BROKER_CLUSTER_ACL_CONFIG => {
                print_body(addr, "config", &r.body_bytes(), json)?;
            }
            _ => println!("{addr}: ok"),
        }
        Ok(())
    })
    .await
}

/// Sends `q` to `broker`, or to every broker registered, and shows each answer with
/// `show`; fails when any broker refused (each refusal printed).
async fn for_each_broker(
    c: &Client,
    broker: Option<String>,
    q: &RemotingCommand,
    mut show: impl FnMut(&str, RemotingCommand) -> Result<()>,
) -> Result<()> {
    let mut failed = 0;
    for addr in brokers_or_all(c, broker).await? {
        match call(c, &addr, q.clone()).await {
            Ok(r) => show(&addr, r)?,
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} broker(s) refused");
    }
    Ok(())
}

/// A broker's JSON answer body: `{"broker": addr, key: body}` with `--json`, else
/// `addr: body`.
fn print_body(addr: &str, key: &str, body: &[u8], json: bool) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(body).with_context(|| format!("bad {key} body from {addr}"))?;
    if json {
        let mut o = serde_json::Map::new();
        o.insert("broker".into(), addr.into());
        o.insert(key.into(), v);
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        println!("{addr}: {v}");
    }
    Ok(())
}

async fn call(c: &Client, addr: &str, cmd: RemotingCommand) -> Result<RemotingCommand> {
    let r = c
        .remoting
        .invoke(addr, cmd, c.timeout)
        .await
        .with_context(|| format!("broker {addr} unreachable"))?;
    if r.code != response::SUCCESS {
        bail!("broker {addr} refused: {}", r.remark.unwrap_or_default());
    }
    Ok(r)
}

#[derive(Debug, clap::Subcommand)]
enum KvCommand {
    /// Set a value.
    Put {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        value: String,
    },
    /// Show a value.
    Get {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        key: String,
    },
    /// Delete a value.
    Delete {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        key: String,
    },
    /// Every value of a namespace.
    List {
        #[arg(long)]
        namespace: String,
    },
}

/// Masters serving a topic.
async fn topic_masters(c: &Client, topic: &str) -> Result<Vec<String>> {
    let Some(route) = c.route(topic).await? else {
        bail!("unknown topic `{topic}`");
    };
    Ok(route
        .broker_datas
        .iter()
        .filter_map(|b| b.broker_addrs.get(&0).cloned())
        .collect())
}

/// Resets offsets on one master; offline (consumers not online), rewrites them.
async fn reset_on(
    c: &Client,
    addr: &str,
    group: &str,
    topic: &str,
    time: i64,
    force: bool,
) -> Result<Vec<(i32, i64)>> {
    let req = RemotingCommand::request(request::INVOKE_BROKER_TO_RESET_OFFSET)
        .with_ext("topic", topic)
        .with_ext("group", group)
        .with_ext("timestamp", time)
        .with_ext("isForce", force);
    let r = c
        .remoting
        .invoke(addr, req, c.timeout)
        .await
        .with_context(|| format!("broker {addr} unreachable"))?;
    let mut out = Vec::new();
    if r.code == response::SUCCESS {
        // `{"offsetTable":{{...,"queueId":N,...}:OFFSET,...}}`
        let text = String::from_utf8_lossy(&r.body_bytes()).into_owned();
        for part in text.split("\"queueId\":").skip(1) {
            let q = part
                .split(|ch: char| !ch.is_ascii_digit())
                .next()
                .unwrap_or("");
            let off = part
                .split("}:")
                .nth(1)
                .map(|o| o.split([',', '}']).next().unwrap_or(""));
            if let (Ok(q), Some(Ok(o))) = (q.parse(), off.map(str::parse)) {
                out.push((q, o));
            }
        }
        return Ok(out);
    }
    if r.code != response::CONSUMER_NOT_ONLINE {
        bail!("broker {addr} refused: {}", r.remark.unwrap_or_default());
    }
    // Offline: as the Java tools do, offset by time per queue, then commit it.
    let route = c.route(topic).await?.context("topic vanished")?;
    for q in Client::write_queues(&route)
        .into_iter()
        .filter(|q| q.addr == addr)
    {
        let target = if time == -1 {
            c.max_offset(&q, topic).await?
        } else {
            let r = call(
                c,
                addr,
                RemotingCommand::request(request::SEARCH_OFFSET_BY_TIMESTAMP)
                    .with_ext("topic", topic)
                    .with_ext("queueId", q.queue_id)
                    .with_ext("timestamp", time),
            )
            .await?;
            r.ext("offset").and_then(|o| o.parse().ok()).unwrap_or(0)
        };
        let current = c.committed(&q, topic, group).await?.unwrap_or(0);
        let offset = if force || target < current {
            target
        } else {
            current
        };
        c.commit(&q, topic, group, offset).await?;
        out.push((q.queue_id, offset));
    }
    Ok(out)
}

#[derive(Debug, clap::Subcommand)]
enum TopicCommand {
    /// Create or update a topic on every master.
    #[command(alias = "update")]
    Create {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Read and write queues.
        #[arg(long, default_value_t = 8)]
        queues: i32,
    },
    /// List topics.
    List,
    /// Delete a topic from every master and the name server.
    Delete {
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// Show a topic's route.
    Describe {
        /// Topic.
        #[arg(long)]
        topic: String,
    },
}

/// Runs `ferrocket admin`.
///
/// # Errors
/// Whatever went wrong, named (unknown topic, unreachable name server or broker).
pub fn run(args: AdminArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut c = Client::new(&args.namesrv);
        let mut remoting = match &args.secret_file {
            Some(f) => crate::remoting::RemotingClient::signing(
                crate::auth::Credentials::from_file(&args.access_key, f)?,
            ),
            None => crate::remoting::RemotingClient::new(),
        };
        if let Some(t) = &args.tls_trust {
            remoting = remoting.with_tls(crate::remoting::tls::TlsClient::load(t, None)?);
        }
        c.remoting = std::sync::Arc::new(remoting);
        match args.command {
            AdminCommand::Topic {
                what: TopicCommand::Create { topic, queues },
            } => {
                crate::protocol::topic::validate_topic(&topic).map_err(anyhow::Error::msg)?;
                c.create_topic(&topic, queues).await?;
                println!("created {topic} with {queues} queues");
            }
            AdminCommand::Topic {
                what: TopicCommand::List,
            } => {
                let topics = c.topics().await.context("cannot list topics")?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&topics)?);
                } else {
                    for t in topics {
                        println!("{t}");
                    }
                }
            }
            AdminCommand::Topic {
                what: TopicCommand::Describe { topic },
            } => {
                let Some(r) = c.route(&topic).await? else {
                    bail!("unknown topic `{topic}`");
                };
                println!(
                    "{:<20} {:<22} {:>6} {:>6} {:>5}",
                    "BROKER", "ADDRESS", "READ", "WRITE", "PERM"
                );
                for q in &r.queue_datas {
                    let addr = r
                        .broker_datas
                        .iter()
                        .find(|b| b.broker_name == q.broker_name)
                        .and_then(|b| b.broker_addrs.get(&0))
                        .cloned()
                        .unwrap_or_default();
                    println!(
                        "{:<20} {:<22} {:>6} {:>6} {:>5}",
                        q.broker_name, addr, q.read_queue_nums, q.write_queue_nums, q.perm
                    );
                }
                println!();
                println!("{:<20} {:>5} {:>14} {:>14}", "BROKER", "QUEUE", "MIN_OFFSET", "MAX_OFFSET");
                for q in Client::write_queues(&r) {
                    let ask = |code| {
                        RemotingCommand::request(code)
                            .with_ext("topic", &topic)
                            .with_ext("queueId", q.queue_id)
                    };
                    let min = call(&c, &q.addr, ask(request::GET_MIN_OFFSET)).await?;
                    let max = call(&c, &q.addr, ask(request::GET_MAX_OFFSET)).await?;
                    println!(
                        "{:<20} {:>5} {:>14} {:>14}",
                        q.broker_name,
                        q.queue_id,
                        min.ext("offset").unwrap_or("?"),
                        max.ext("offset").unwrap_or("?")
                    );
                }
            }
            AdminCommand::Topic {
                what: TopicCommand::Delete { topic },
            } => {
                let info = c.cluster().await.context("cannot reach the name server")?;
                for b in info.broker_addr_table.values() {
                    if let Some(addr) = b.broker_addrs.get(&0) {
                        let q = RemotingCommand::request(request::DELETE_TOPIC_IN_BROKER)
                            .with_ext("topic", &topic);
                        let r = c
                            .remoting
                            .invoke(addr, q, c.timeout)
                            .await
                            .with_context(|| format!("broker {addr} unreachable"))?;
                        if r.code != response::SUCCESS {
                            bail!("broker {addr} refused: {}", r.remark.unwrap_or_default());
                        }
                    }
                }
                let q = RemotingCommand::request(request::DELETE_TOPIC_IN_NAMESRV)
                    .with_ext("topic", &topic);
                c.remoting.invoke(&c.namesrv, q, c.timeout).await?;
                println!("deleted {topic}");
            }
            AdminCommand::Group { what: GroupCommand::Create { group, retry_max, orderly } } => {
                let cfg = crate::store::metadata::SubscriptionGroupConfig {
                    group_name: group.clone(),
                    retry_max_times: retry_max,
                    consume_message_orderly: orderly,
                    ..Default::default()
                };
                for addr in masters(&c).await? {
                    let q = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                        .with_body(crate::protocol::to_body(&cfg));
                    call(&c, &addr, q).await?;
                }
                println!("created group {group}");
            }
            AdminCommand::Group { what: GroupCommand::List } => {
                let mut all = std::collections::BTreeMap::new();
                for addr in masters(&c).await? {
                    let r = call(&c, &addr, RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG)).await?;
                    let t: crate::store::metadata::SubscriptionGroupTable =
                        crate::protocol::parse_body(&r.body_bytes()).context("bad group table")?;
                    all.extend(t.subscription_group_table);
                }
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    println!("{:<32} {:>10} {:>8}", "GROUP", "RETRY_MAX", "ORDERLY");
                    for g in all.values() {
                        println!("{:<32} {:>10} {:>8}", g.group_name, g.retry_max_times, g.consume_message_orderly);
                    }
                }
            }
            AdminCommand::Acl { what } => acl_command(&c, what, args.json).await?,
            AdminCommand::Auth { what } => auth_command(&c, what, args.json).await?,
            AdminCommand::Raft { what: RaftCommand::Add { broker_name, id, peer, timeout_ms } } => {
                let q = RemotingCommand::request(request::RAFT_ADD_MEMBER)
                    .with_ext("memberId", id)
                    .with_ext("peerAddr", peer)
                    .with_ext("timeoutMillis", timeout_ms);
                raft_membership(&c, &broker_name, q, timeout_ms, args.json).await?;
            }
            AdminCommand::Raft { what: RaftCommand::Remove { broker_name, id, timeout_ms } } => {
                let q = RemotingCommand::request(request::RAFT_REMOVE_MEMBER)
                    .with_ext("memberId", id)
                    .with_ext("timeoutMillis", timeout_ms);
                raft_membership(&c, &broker_name, q, timeout_ms, args.json).await?;
            }
            AdminCommand::Raft { what: RaftCommand::TransferLeader { broker_name, to, timeout_ms } } => {
                let q = RemotingCommand::request(request::RAFT_TRANSFER_LEADER)
                    .with_ext("targetId", &to)
                    .with_ext("timeoutMillis", timeout_ms);
                let r = raft_call(&c, &broker_name, q, timeout_ms).await?;
                let term = r.ext("term").unwrap_or("?");
                let now = r.ext("leaderId").unwrap_or("?");
                if args.json {
                    println!("{}", serde_json::json!({"term": term, "leaderId": now}));
                } else {
                    println!("{broker_name}: {now} leads term {term}");
                }
            }
            AdminCommand::Raft { what: RaftCommand::Status { broker_name } } => {
                let info = c.cluster().await.context("cannot reach the name server")?;
                let Some(group) = info.broker_addr_table.get(&broker_name) else {
                    bail!("no broker group named {broker_name} is registered");
                };
                const FIELDS: [&str; 7] = [
                    "dLegerSelfId",
                    "dLegerState",
                    "dLegerTerm",
                    "dLegerLeaderId",
                    "dLegerLastLogIndex",
                    "dLegerCommittedIndex",
                    "dLegerCommittedOffset",
                ];
                let mut rows = Vec::new();
                for (id, addr) in &group.broker_addrs {
                    let q = RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO);
                    let table = call(&c, addr, q)
                        .await
                        .ok()
                        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body_bytes()).ok())
                        .map(|v| v["table"].clone())
                        .unwrap_or_default();
                    if table.is_object() && table.get("dLegerState").is_none() {
                        bail!("{addr} (brokerId {id}) is not in Raft mode (enableDLegerCommitLog=false)");
                    }
                    let mut row = serde_json::json!({"brokerId": id, "addr": addr});
                    for f in FIELDS {
                        row[f] = table.get(f).cloned().unwrap_or_else(|| "?".into());
                    }
                    rows.push(row);
                }
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:>4} {:<22} {:<5} {:<10} {:>6} {:<6} {:>10} {:>10} {:>14}",
                        "ID", "ADDRESS", "SELF", "STATE", "TERM", "LEADER", "LAST_INDEX", "COMMITTED", "COMMITTED_AT"
                    );
                    for r in &rows {
                        let s = |k: &str| r[k].as_str().map_or_else(|| r[k].to_string(), str::to_owned);
                        println!(
                            "{:>4} {:<22} {:<5} {:<10} {:>6} {:<6} {:>10} {:>10} {:>14}",
                            s("brokerId"), s("addr"), s("dLegerSelfId"), s("dLegerState"), s("dLegerTerm"),
                            s("dLegerLeaderId"), s("dLegerLastLogIndex"), s("dLegerCommittedIndex"), s("dLegerCommittedOffset")
                        );
                    }
                }
            }
            AdminCommand::BrokerStatus { broker } => {
                let r = call(&c, &broker, RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO)).await?;
                let v: serde_json::Value = serde_json::from_slice(&r.body_bytes()).context("bad runtime info")?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if let Some(t) = v.get("table").and_then(|t| t.as_object()) {
                    for (k, v) in t {
                        println!("{k:<28} {}", v.as_str().unwrap_or(""));
                    }
                }
            }
            AdminCommand::Role { broker, role, master, master_ha, broker_id, epoch } => {
                use crate::client::role::{change_role, NewRole};
                let new = if role == "master" {
                    NewRole::Master
                } else {
                    NewRole::Slave {
                        master: master.context("--master is required for a slave")?,
                        master_ha,
                        broker_id,
                    }
                };
                let st = change_role(&c.remoting, &broker, &new, epoch, c.timeout).await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"broker": broker, "brokerRole": st.role, "brokerId": st.broker_id, "epoch": st.epoch, "maxOffset": st.max_offset})
                    );
                } else {
                    println!("{broker}: {} brokerId {} epoch {} maxOffset {}", st.role, st.broker_id, st.epoch, st.max_offset);
                }
            }
            AdminCommand::Switchover { broker_name, to, catch_up_ms } => {
                use crate::client::role::{broker_state, switch_over};
                let info = c.cluster().await.context("cannot reach the name server")?;
                let Some(group) = info.broker_addr_table.get(&broker_name) else {
                    bail!("the name server lists no broker group `{broker_name}`");
                };
                let Some(master) = group.broker_addrs.get(&0).cloned() else {
                    bail!("`{broker_name}` has no master registered");
                };
                let Some((&to_id, _)) = group.broker_addrs.iter().find(|(_, a)| **a == to) else {
                    bail!("{to} is not a broker of `{broker_name}`");
                };
                if to_id == 0 {
                    bail!("{to} is already the master");
                }
                let others: Vec<(String, i64)> = group
                    .broker_addrs
                    .iter()
                    .filter(|(id, _)| **id != 0 && **id != to_id)
                    .map(|(id, a)| (a.clone(), *id))
                    .collect();
                // The next epoch: past every epoch a member has seen.
                let mut epoch = 0;
                for a in group.broker_addrs.values() {
                    if let Ok(st) = broker_state(&c.remoting, a, c.timeout).await {
                        epoch = epoch.max(st.epoch);
                    }
                }
                let epoch = epoch + 1;
                let sw = switch_over(
                    &c.remoting,
                    &master,
                    to_id,
                    &to,
                    &others,
                    epoch,
                    c.timeout,
                    Duration::from_millis(catch_up_ms),
                )
                .await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"master": to, "epoch": epoch, "oldMaster": master, "oldMasterBrokerId": to_id, "repointed": sw.repointed, "writesRefusedMs": sw.fenced_ms, "offset": sw.offset})
                    );
                } else {
                    println!(
                        "{to} is the master of {broker_name} at epoch {epoch} (offset {}); {master} follows it as brokerId {to_id}; writes were refused for {} ms",
                        sw.offset, sw.fenced_ms
                    );
                }
            }
            AdminCommand::BrokerConfig { what: BrokerConfigCommand::Get { broker } } => {
                let r = call(&c, &broker, RemotingCommand::request(request::GET_BROKER_CONFIG)).await?;
                print!("{}", String::from_utf8_lossy(&r.body_bytes()));
            }
            AdminCommand::BrokerConfig {
                what: BrokerConfigCommand::Set { broker, key, value },
            } => {
                let q = RemotingCommand::request(request::UPDATE_BROKER_CONFIG)
                    .with_body(Bytes::from(format!("{key}={value}\n")));
                call(&c, &broker, q).await?;
                println!("{key}={value}");
            }
            AdminCommand::Offsets { group, topic } => {
                let Some(route) = c.route(&topic).await? else {
                    bail!("unknown topic `{topic}`");
                };
                let mut rows = Vec::new();
                let mut total = 0i64;
                for q in Client::write_queues(&route) {
                    let max = c.max_offset(&q, &topic).await?;
                    let committed = c.committed(&q, &topic, &group).await?.unwrap_or(0);
                    let lag = (max - committed).max(0);
                    total += lag;
                    rows.push((q.broker_name.clone(), q.queue_id, max, committed, lag));
                }
                if args.json {
                    let queues: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(b, q, m, c, l)| serde_json::json!({"broker": b, "queue": q, "brokerOffset": m, "consumerOffset": c, "lag": l}))
                        .collect();
                    println!("{}", serde_json::json!({"queues": queues, "totalLag": total}));
                } else {
                    println!("{:<18} {:>5} {:>14} {:>14} {:>10}", "BROKER", "QUEUE", "BROKER_OFFSET", "CONSUMER_OFFSET", "LAG");
                    for (b, q, m, c, l) in &rows {
                        println!("{b:<18} {q:>5} {m:>14} {c:>14} {l:>10}");
                    }
                    println!("total lag: {total}");
                }
            }
            AdminCommand::ResetOffset {
                group,
                topic,
                time,
                force,
            } => {
                for addr in topic_masters(&c, &topic).await? {
                    for (q, off) in reset_on(&c, &addr, &group, &topic, time, force).await? {
                        println!("{addr} queue {q}: offset {off}");
                    }
                }
            }
            AdminCommand::SkipAccumulated { group, topic } => {
                for addr in topic_masters(&c, &topic).await? {
                    for (q, off) in reset_on(&c, &addr, &group, &topic, -1, true).await? {
                        println!("{addr} queue {q}: offset {off}");
                    }
                }
            }
            AdminCommand::Producers { group } => {
                for addr in masters(&c).await? {
                    let r = c
                        .remoting
                        .invoke(
                            &addr,
                            RemotingCommand::request(request::GET_PRODUCER_CONNECTION_LIST)
                                .with_ext("producerGroup", &group),
                            c.timeout,
                        )
                        .await?;
                    if r.code == response::SUCCESS {
                        println!("{addr}: {}", String::from_utf8_lossy(&r.body_bytes()));
                    }
                }
            }
            AdminCommand::Consumers { group } => {
                for addr in masters(&c).await? {
                    let r = c
                        .remoting
                        .invoke(
                            &addr,
                            RemotingCommand::request(request::GET_CONSUMER_CONNECTION_LIST)
                                .with_ext("consumerGroup", &group),
                            c.timeout,
                        )
                        .await?;
                    if r.code == response::SUCCESS {
                        println!("{addr}: {}", String::from_utf8_lossy(&r.body_bytes()));
                    }
                }
            }
            AdminCommand::ConsumerStatus { group, client } => {
                let mut found = false;
                for addr in masters(&c).await? {
                    let r = c
                        .remoting
                        .invoke(
                            &addr,
                            RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
                                .with_ext("consumerGroup", &group)
                                .with_ext("clientId", &client)
                                .with_ext("jstackEnable", false),
                            c.timeout,
                        )
                        .await?;
                    if r.code == response::SUCCESS {
                        println!("{}", String::from_utf8_lossy(&r.body_bytes()));
                        found = true;
                        break;
                    }
                }
                if !found {
                    bail!("the consumer <{group}> <{client}> is not online on any master");
                }
            }
            AdminCommand::Kv { what } => {
                let ns = args.namesrv.clone();
                let (code, namespace, key, value) = match &what {
                    KvCommand::Put { namespace, key, value } => {
                        (request::PUT_KV_CONFIG, namespace, Some(key), Some(value))
                    }
                    KvCommand::Get { namespace, key } => {
                        (request::GET_KV_CONFIG, namespace, Some(key), None)
                    }
                    KvCommand::Delete { namespace, key } => {
                        (request::DELETE_KV_CONFIG, namespace, Some(key), None)
                    }
                    KvCommand::List { namespace } => {
                        (request::GET_KVLIST_BY_NAMESPACE, namespace, None, None)
                    }
                };
                let mut req = RemotingCommand::request(code).with_ext("namespace", namespace);
                if let Some(k) = key {
                    req = req.with_ext("key", k);
                }
                if let Some(v) = value {
                    req = req.with_ext("value", v);
                }
                let r = c
                    .remoting
                    .invoke(&ns, req, c.timeout)
                    .await
                    .context("cannot reach the name server")?;
                if r.code != response::SUCCESS {
                    bail!("{}", r.remark.unwrap_or_default());
                }
                match what {
                    KvCommand::Get { .. } => println!("{}", r.ext("value").unwrap_or("")),
                    KvCommand::List { .. } => println!("{}", String::from_utf8_lossy(&r.body_bytes())),
                    _ => println!("ok"),
                }
            }
            AdminCommand::WritePerm { action, broker_name } => {
                let (code, field) = if action == "add" {
                    (request::ADD_WRITE_PERM_OF_BROKER, "addTopicCount")
                } else {
                    (request::WIPE_WRITE_PERM_OF_BROKER, "wipeTopicCount")
                };
                let r = c
                    .remoting
                    .invoke(
                        &args.namesrv,
                        RemotingCommand::request(code).with_ext("brokerName", &broker_name),
                        c.timeout,
                    )
                    .await
                    .context("cannot reach the name server")?;
                if r.code != response::SUCCESS {
                    bail!("{}", r.remark.unwrap_or_default());
                }
                println!("{action} write permission of {broker_name}: {} topics", r.ext(field).unwrap_or("0"));
            }
            AdminCommand::QueryKey { topic, key } => {
                let Some(route) = c.route(&topic).await? else {
                    bail!("unknown topic `{topic}`");
                };
                let mut found = 0;
                for b in &route.broker_datas {
                    let Some(addr) = b.broker_addrs.get(&0) else {
                        continue;
                    };
                    let q = RemotingCommand::request(request::QUERY_MESSAGE)
                        .with_ext("topic", &topic)
                        .with_ext("key", &key)
                        .with_ext("maxNum", 32)
                        .with_ext("beginTimestamp", 0)
                        .with_ext("endTimestamp", i64::MAX);
                    let r = c.remoting.invoke(addr, q, c.timeout).await?;
                    if r.code == response::SUCCESS {
                        found += print_messages(r.body_bytes())?;
                    }
                }
                if found == 0 {
                    bail!("no message with key `{key}` in `{topic}`");
                }
            }
            AdminCommand::QueryId { id } => {
                let Some((host, offset)) = crate::protocol::msg_id::decode_offset_msg_id(&id) else {
                    bail!("`{id}` is not an offset message id");
                };
                let q = RemotingCommand::request(request::VIEW_MESSAGE_BY_ID)
                    .with_ext("offset", offset);
                let r = c
                    .remoting
                    .invoke(&host.to_string(), q, c.timeout)
                    .await
                    .with_context(|| format!("broker {host} unreachable"))?;
                if r.code != response::SUCCESS {
                    bail!("no message {id}: {}", r.remark.unwrap_or_default());
                }
                print_messages(r.body_bytes())?;
            }
            AdminCommand::Cluster => {
                let info = c.cluster().await.context("cannot reach the name server")?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                    return Ok(());
                }
                println!(
                    "{:<18} {:<18} {:>4} {:<22} {:<13} VERSION",
                    "CLUSTER", "BROKER", "ID", "ADDRESS", "ROLE"
                );
                for (cluster, names) in &info.cluster_addr_table {
                    for n in names {
                        let Some(b) = info.broker_addr_table.get(n) else { continue };
                        for (id, addr) in &b.broker_addrs {
                            // Role and version from the broker itself; `?` when unreachable.
                            let q = RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO);
                            let table = c
                                .remoting
                                .invoke(addr, q, c.timeout)
                                .await
                                .ok()
                                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body_bytes()).ok());
                            let field = |k: &str| {
                                table
                                    .as_ref()
                                    .and_then(|t| t["table"][k].as_str())
                                    .unwrap_or("?")
                                    .to_owned()
                            };
                            println!(
                                "{cluster:<18} {n:<18} {id:>4} {addr:<22} {:<13} {}",
                                field("brokerRole"),
                                field("brokerVersionDesc")
                            );
                        }
                    }
                }
            }
            AdminCommand::Send {
                topic,
                tag,
                key,
                body,
                count,
                interval_ms,
            } if count > 1 => {
                crate::protocol::topic::validate_topic(&topic).map_err(anyhow::Error::msg)?;
                let mut route = None;
                let (mut ok, mut failed) = (0u64, 0u64);
                for i in 1..=count {
                    let b = format!("{body}-{i}");
                    let sent = async {
                        if route.is_none() {
                            route = c.route(&topic).await?;
                        }
                        let Some(r) = &route else {
                            return Err(anyhow::anyhow!("unknown topic `{topic}`"));
                        };
                        let queues = Client::write_queues(r);
                        let q = queues
                            .get(i as usize % queues.len().max(1))
                            .ok_or_else(|| anyhow::anyhow!("no writable queue"))?;
                        let m = OutMessage {
                            tag: tag.clone(),
                            keys: key.clone(),
                            body: Bytes::from(b.clone().into_bytes()),
                        };
                        let r = c.send(&topic, q, &[m]).await?;
                        if r.code == response::SUCCESS {
                            Ok(r.msg_id)
                        } else {
                            Err(anyhow::anyhow!("code {}", r.code))
                        }
                    }
                    .await;
                    match sent {
                        Ok(id) => {
                            ok += 1;
                            println!("SEND_OK msgId={id} body={b}");
                        }
                        Err(e) => {
                            failed += 1;
                            route = None;
                            println!("FAILED body={b} error={e}");
                        }
                    }
                    if interval_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                    }
                }
                eprintln!("sent {count}: {ok} acknowledged, {failed} failed");
            }
            AdminCommand::Send {
                topic,
                tag,
                key,
                body,
                ..
            } => {
                crate::protocol::topic::validate_topic(&topic).map_err(anyhow::Error::msg)?;
                let route = match c.route(&topic).await? {
                    Some(r) => r,
                    None => c.create_topic(&topic, 8).await?,
                };
                let queues = Client::write_queues(&route);
                let Some(q) = queues.get((crate::store::now_ms() as usize) % queues.len().max(1))
                else {
                    bail!("topic `{topic}` has no writable queue");
                };
                let m = OutMessage {
                    tag,
                    keys: key,
                    body: Bytes::from(body.into_bytes()),
                };
                let r = c.send(&topic, q, &[m]).await?;
                let status = match r.code {
                    response::SUCCESS => "SEND_OK",
                    response::FLUSH_DISK_TIMEOUT => "FLUSH_DISK_TIMEOUT",
                    response::FLUSH_SLAVE_TIMEOUT => "FLUSH_SLAVE_TIMEOUT",
                    _ => "SLAVE_NOT_AVAILABLE",
                };
                println!(
                    "{status} msgId={} broker={} queue={} offset={}",
                    r.msg_id, q.broker_name, r.queue_id, r.queue_offset
                );
            }
            AdminCommand::Consume {
                topic,
                group,
                from_first,
                count,
                idle,
            } => {
                let Some(route) = c.route(&topic).await? else {
                    bail!("unknown topic `{topic}`");
                };
                let queues = Client::write_queues(&route);
                let mut offsets = Vec::new();
                for q in &queues {
                    let start = match c.committed(q, &topic, &group).await? {
                        Some(o) => o,
                        None if from_first => 0,
                        None => c.max_offset(q, &topic).await?,
                    };
                    offsets.push(start);
                }
                let mut printed = 0;
                let mut last = Instant::now();
                while printed < count && last.elapsed() < idle {
                    let mut any = false;
                    for (i, q) in queues.iter().enumerate() {
                        let r = c.pull(q, &topic, &group, offsets[i], 0).await?;
                        if let Ok(next) = r.ext_num::<i64>("nextBeginOffset") {
                            offsets[i] = next;
                        }
                        if r.code != response::SUCCESS {
                            continue;
                        }
                        any = true;
                        for rec in crate::client::split_records(r.body_bytes()) {
                            if printed >= count {
                                break;
                            }
                            let m = decode_record(&rec).context("bad message from the broker")?;
                            let props = parse_properties(&m.properties);
                            println!(
                                "queue={} offset={} tag={} keys={} body={}",
                                m.queue_id,
                                m.queue_offset,
                                props.get("TAGS").map(String::as_str).unwrap_or(""),
                                props.get("KEYS").map(String::as_str).unwrap_or(""),
                                String::from_utf8_lossy(&m.body)
                            );
                            printed += 1;
                        }
                        c.commit(q, &topic, &group, offsets[i]).await?;
                    }
                    if any {
                        last = Instant::now();
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                eprintln!("consumed {printed} messages");
            }
        }
        Ok(())
    })
}

/// Prints every stored message in a body of concatenated records; returns how many.
fn print_messages(body: Bytes) -> Result<usize> {
    let mut n = 0;
    for rec in crate::client::split_records(body) {
        let m = decode_record(&rec).context("bad message from the broker")?;
        let props = parse_properties(&m.properties);
        println!(
            "topic={} queue={} offset={} storeTime={} reconsumeTimes={} msgId={} keys={} tag={}",
            m.topic,
            m.queue_id,
            m.queue_offset,
            m.store_timestamp,
            m.reconsume_times,
            props.get("UNIQ_KEY").map(String::as_str).unwrap_or(""),
            props.get("KEYS").map(String::as_str).unwrap_or(""),
            props.get("TAGS").map(String::as_str).unwrap_or("")
        );
        let others: Vec<String> = props
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "UNIQ_KEY" | "KEYS" | "TAGS"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !others.is_empty() {
            println!("  properties: {}", others.join(" "));
        }
        let preview: String = String::from_utf8_lossy(&m.body).chars().take(200).collect();
        println!("  body: {preview}");
        n += 1;
    }
    Ok(n)
}
