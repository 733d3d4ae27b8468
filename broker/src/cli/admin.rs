//! `ferrocket admin --namesrv ADDR ...`: the everyday verbs (a first set; the admin issue
//! adds the rest of what people use `mqadmin` for).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use crate::client::{Client, OutMessage};
use crate::remoting::codes::response;
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
