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
    #[command(subcommand)]
    command: AdminCommand,
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
    /// Per queue: broker max offset, the group's committed offset, lag; then total lag.
    Offsets {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
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
        #[arg(long, default_value = "3s", value_parser = super::store_bench::parse_duration)]
        idle: Duration,
    },
}

#[derive(Debug, clap::Subcommand)]
enum TopicCommand {
    /// Create or update a topic on every master.
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
        let c = Client::new(&args.namesrv);
        match args.command {
            AdminCommand::Topic {
                what: TopicCommand::Create { topic, queues },
            } => {
                crate::broker::meta::validate_topic(&topic).map_err(anyhow::Error::msg)?;
                c.create_topic(&topic, queues).await?;
                println!("created {topic} with {queues} queues");
            }
            AdminCommand::Topic {
                what: TopicCommand::List,
            } => {
                for t in c.topics().await.context("cannot list topics")? {
                    println!("{t}");
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
            AdminCommand::Offsets { group, topic } => {
                let Some(route) = c.route(&topic).await? else {
                    bail!("unknown topic `{topic}`");
                };
                println!(
                    "{:<18} {:>5} {:>14} {:>14} {:>10}",
                    "BROKER", "QUEUE", "BROKER_OFFSET", "CONSUMER_OFFSET", "LAG"
                );
                let mut total = 0i64;
                for q in Client::write_queues(&route) {
                    let max = c.max_offset(&q, &topic).await?;
                    let committed = c.committed(&q, &topic, &group).await?.unwrap_or(0);
                    let lag = (max - committed).max(0);
                    total += lag;
                    println!(
                        "{:<18} {:>5} {:>14} {:>14} {:>10}",
                        q.broker_name, q.queue_id, max, committed, lag
                    );
                }
                println!("total lag: {total}");
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
                let Some((host, offset)) = crate::broker::decode_offset_msg_id(&id) else {
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
                println!(
                    "{:<18} {:<18} {:>4} {:<22}",
                    "CLUSTER", "BROKER", "ID", "ADDRESS"
                );
                for (cluster, names) in &info.cluster_addr_table {
                    for n in names {
                        if let Some(b) = info.broker_addr_table.get(n) {
                            for (id, addr) in &b.broker_addrs {
                                println!("{cluster:<18} {n:<18} {id:>4} {addr:<22}");
                            }
                        }
                    }
                }
            }
            AdminCommand::Send {
                topic,
                tag,
                key,
                body,
            } => {
                crate::broker::meta::validate_topic(&topic).map_err(anyhow::Error::msg)?;
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
                        let mut body = r.body_bytes();
                        while body.len() >= 4 && printed < count {
                            let size = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                            let Ok(size) = usize::try_from(size) else {
                                break;
                            };
                            if size == 0 || size > body.len() {
                                break;
                            }
                            let rec = body.split_to(size);
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
fn print_messages(mut body: Bytes) -> Result<usize> {
    let mut n = 0;
    while body.len() >= 4 {
        let size = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if size == 0 || size > body.len() {
            break;
        }
        let rec = body.split_to(size);
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
        let preview: String = String::from_utf8_lossy(&m.body).chars().take(200).collect();
        println!("  body: {preview}");
        n += 1;
    }
    Ok(n)
}
