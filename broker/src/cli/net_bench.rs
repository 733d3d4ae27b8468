//! `ferrocket bench --namesrv ADDR produce|consume`: RocketMQ-benchmark-style load over
//! the network — throughput every second, then totals and latency percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use serde::Serialize;

use super::report::percentiles;
use crate::client::{Client, OutMessage};
use crate::remoting::codes::response;

/// Options shared by produce and consume.
#[derive(Debug, clap::Args)]
pub struct NetBenchArgs {
    /// Topic (created with `--queues` queues when missing).
    #[arg(long, default_value = "BenchmarkTest")]
    pub topic: String,
    /// Queues of a created topic.
    #[arg(long, default_value_t = 8)]
    pub queues: i32,
    /// Concurrent producers (or consumer tasks).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Run time, e.g. `30s`.
    #[arg(long, default_value = "10s", value_parser = super::report::parse_duration)]
    pub duration: Duration,
    /// Message body size.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per send (1 = single sends; more = SEND_BATCH_MESSAGE).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// `sync` (one request in flight per producer) or `async` (8 in flight each).
    #[arg(long, default_value = "sync")]
    pub mode: String,
    /// Consumer group (consume).
    #[arg(long, default_value = "benchmark_consumer")]
    pub group: String,
    /// produce: each send is a transactional half message followed by its commit
    /// (END_TRANSACTION, oneway, as RocketMQ's producers send it).
    #[arg(long)]
    pub transaction: bool,
    /// produce: 5.x timer messages due this long after their send (`TIMER_DELAY_MS`);
    /// consume then reports the lateness past that time.
    #[arg(long, value_parser = super::report::parse_duration)]
    pub deliver_after: Option<Duration>,
    /// produce: message n gets tag `t<n % 10>` and property `a=<n % 10>` (for filter
    /// benchmarks).
    #[arg(long)]
    pub filter_fields: bool,
    /// produce: each producer pauses this long after each send, e.g. `2ms` (think time:
    /// producers that do not send again at once).
    #[arg(long, value_parser = super::report::parse_duration)]
    pub pause: Option<Duration>,
    /// consume: an SQL92 selector, e.g. `a = 3`.
    #[arg(long)]
    pub sql: Option<String>,
    /// consume: a tag expression, e.g. `t3`.
    #[arg(long)]
    pub tags: Option<String>,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Sign every request as this ACL account (with `--secret-file`), as RocketMQ's
    /// `AclClientRPCHook` does.
    #[arg(long)]
    pub access_key: Option<String>,
    /// The file holding `--access-key`'s secret key.
    #[arg(long)]
    pub secret_file: Option<std::path::PathBuf>,
    /// Speak TLS, trusting the CAs in this PEM file.
    #[arg(long)]
    pub tls_trust: Option<std::path::PathBuf>,
}

impl NetBenchArgs {
    /// The client, signing when an account is given.
    fn client(&self, namesrv: &str) -> Result<Client> {
        let mut c = Client::new(namesrv);
        let mut remoting = match (&self.access_key, &self.secret_file) {
            (Some(ak), Some(f)) => crate::remoting::RemotingClient::signing(
                crate::auth::Credentials::from_file(ak, f)?,
            ),
            (None, None) => crate::remoting::RemotingClient::new(),
            _ => bail!("--access-key and --secret-file go together"),
        };
        if let Some(t) = &self.tls_trust {
            remoting = remoting.with_tls(crate::remoting::tls::TlsClient::load(t, None)?);
        }
        c.remoting = std::sync::Arc::new(remoting);
        Ok(c)
    }
}

/// `bench connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectBenchArgs {
    /// The broker's (or a name server's) address.
    #[arg(long)]
    pub addr: String,
    /// New connections to open, one after another.
    #[arg(long, default_value_t = 500)]
    pub count: usize,
    /// Speak TLS, trusting the CAs in this PEM file.
    #[arg(long)]
    pub tls_trust: Option<std::path::PathBuf>,
}

/// Opens `count` connections one after another, each sending one
/// GET_BROKER_RUNTIME_INFO and closing; then sends as many on one connection. The
/// difference of the medians is what a connection's set-up costs (TCP, plus the TLS
/// handshake with `--tls-trust`).
///
/// # Errors
/// A trust file that does not load; a failed request.
pub fn connect(args: ConnectBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = match &args.tls_trust {
        Some(t) => Some(crate::remoting::tls::TlsClient::load(t, None)?),
        None => None,
    };
    let client = || {
        let c = crate::remoting::RemotingClient::new();
        match &tls {
            Some(t) => c.with_tls(t.clone()),
            None => c,
        }
    };
    let req = || {
        crate::remoting::RemotingCommand::request(
            crate::remoting::codes::request::GET_BROKER_RUNTIME_INFO,
        )
    };
    let timeout = Duration::from_secs(5);
    rt.block_on(async {
        let mut fresh = Vec::with_capacity(args.count);
        for _ in 0..args.count {
            let c = client();
            let t = Instant::now();
            let r = c.invoke(&args.addr, req(), timeout).await?;
            fresh.push(t.elapsed().as_micros() as u64);
            if r.code != response::SUCCESS {
                bail!("the broker answered {}: {:?}", r.code, r.remark);
            }
            c.close(&args.addr);
        }
        let c = client();
        c.invoke(&args.addr, req(), timeout).await?;
        let mut reused = Vec::with_capacity(args.count);
        for _ in 0..args.count {
            let t = Instant::now();
            c.invoke(&args.addr, req(), timeout).await?;
            reused.push(t.elapsed().as_micros() as u64);
        }
        let (f, r) = (latency(fresh), latency(reused));
        println!(
            "connect {} count={} new connection p50={:.3}ms p99={:.3}ms; reused p50={:.3}ms p99={:.3}ms; set-up ~{:.3}ms",
            if tls.is_some() { "tls" } else { "plain" },
            args.count,
            f.p50,
            f.p99,
            r.p50,
            r.p99,
            f.p50 - r.p50
        );
        Ok(())
    })
}

#[derive(Debug, Serialize)]
struct Report {
    kind: &'static str,
    mode: String,
    concurrency: usize,
    batch: usize,
    body_bytes: usize,
    messages: u64,
    errors: u64,
    /// What the first failed request answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency_ms: Latency,
}

#[derive(Debug, Serialize, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn latency(us: Vec<u64>) -> Latency {
    let p = percentiles(us);
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(p.p50),
        p99: ms(p.p99),
        p999: ms(p.p999),
        max: ms(p.max),
    }
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "{} {} x{} batch {} of {} B: {} msgs in {:.1}s = {:.0} msg/s, {:.1} MB/s; latency ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}; errors {}",
            report.kind, report.mode, report.concurrency, report.batch, report.body_bytes, report.messages,
            report.seconds, report.msgs_per_sec, report.mb_per_sec, report.latency_ms.p50,
            report.latency_ms.p99, report.latency_ms.p999, report.latency_ms.max, report.errors
        );
        if let Some(e) = &report.first_error {
            println!("  first error: {e}");
        }
    }
    Ok(())
}

/// What every load run shares: counters, the reporter thread and the latency samples.
struct Run {
    count: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    lat: Arc<Mutex<Vec<u64>>>,
    reporter: std::thread::JoinHandle<()>,
    started: Instant,
}

impl Run {
    fn start(size: usize, quiet: bool, what: &'static str) -> Run {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        Run {
            reporter: super::report::reporter(count.clone(), stop.clone(), size, quiet, what),
            count,
            errors: Arc::new(AtomicU64::new(0)),
            first_error: Arc::new(Mutex::new(None)),
            stop,
            lat: Arc::new(Mutex::new(Vec::new())),
            started: Instant::now(),
        }
    }

    /// Waits for the tasks, stops the reporter and prints the report.
    async fn finish(
        self,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        kind: &'static str,
        mode: String,
        concurrency: usize,
        batch: usize,
        args: &NetBenchArgs,
    ) -> Result<()> {
        let (size, json) = (args.size, args.json);
        for t in tasks {
            let _ = t.await;
        }
        let secs = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Release);
        let _ = self.reporter.join();
        let messages = self.count.load(Ordering::Relaxed);
        let us = std::mem::take(&mut *self.lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        print(
            &Report {
                kind,
                mode,
                concurrency,
                batch,
                body_bytes: size,
                messages,
                errors: self.errors.load(Ordering::Relaxed),
                first_error: self.first_error.lock().ok().and_then(|e| e.clone()),
                seconds: secs,
                msgs_per_sec: messages as f64 / secs,
                mb_per_sec: messages as f64 * size as f64 / secs / 1e6,
                latency_ms: latency(us),
            },
            json,
        )
    }
}

/// Runs `bench produce`.
///
/// # Errors
/// Unreachable name server, no broker.
pub fn produce(namesrv: &str, args: NetBenchArgs) -> Result<()> {
    let inflight = match args.mode.as_str() {
        "sync" => 1,
        "async" => 8,
        m => bail!("--mode must be sync or async, not `{m}`"),
    };
    let batch = args.batch.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = args.client(namesrv)?;
        let route = match c.route(&args.topic).await? {
            Some(r) => r,
            None => c.create_topic(&args.topic, args.queues).await?,
        };
        let first = Client::write_queues(&route);
        if first.is_empty() {
            bail!("topic {} has no writable queue", args.topic);
        }
        // Like a RocketMQ producer after a failed send, the route is looked up again (at
        // most every 200 ms), so a master moved by a switchover or failover is followed.
        let queues = Arc::new(RouteCache {
            queues: std::sync::RwLock::new(Arc::new(first)),
            refreshed: tokio::sync::Mutex::new(Instant::now()),
        });
        let run = Run::start(args.size, args.json, "send");
        let first_error = run.first_error.clone();
        let (count, errors, lat, started) = (
            run.count.clone(),
            run.errors.clone(),
            run.lat.clone(),
            run.started,
        );
        let body = Bytes::from(vec![b'x'; args.size]);
        let mut tasks = Vec::new();
        for w in 0..args.concurrency * inflight {
            let (c, queues, count, errors, lat, first_error) = (
                c.clone(),
                queues.clone(),
                count.clone(),
                errors.clone(),
                lat.clone(),
                first_error.clone(),
            );
            let topic = args.topic.clone();
            let (transaction, deliver_after, filter_fields) =
                (args.transaction, args.deliver_after, args.filter_fields);
            let special = transaction || deliver_after.is_some() || filter_fields;
            let body = body.clone();
            let msgs: Vec<OutMessage> = (0..batch)
                .map(|_| OutMessage {
                    tag: Some("bench".into()),
                    keys: None,
                    body: body.clone(),
                })
                .collect();
            let (duration, pause) = (args.duration, args.pause);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut i = w;
                while started.elapsed() < duration {
                    let current = queues.get();
                    let q = &current[i % current.len()];
                    i += 1;
                    let t = Instant::now();
                    let sent = if special {
                        let n = i;
                        let mut p: Vec<(String, String)> = vec![
                            ("UNIQ_KEY".into(), Client::unique_id()),
                            ("WAIT".into(), "true".into()),
                        ];
                        if filter_fields {
                            p.push(("TAGS".into(), format!("t{}", n % 10)));
                            p.push(("a".into(), (n % 10).to_string()));
                        } else {
                            p.push(("TAGS".into(), "bench".into()));
                        }
                        if let Some(d) = deliver_after {
                            p.push(("TIMER_DELAY_MS".into(), d.as_millis().to_string()));
                        }
                        if transaction {
                            p.push(("TRAN_MSG".into(), "true".into()));
                            p.push(("PGROUP".into(), "ferrocket_producer".into()));
                        }
                        let props = crate::store::encode_properties(
                            p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        );
                        let sys = if transaction { 4 } else { 0 };
                        match c.send_raw(&topic, q, body.clone(), props, sys).await {
                            Ok(half) if transaction => c
                                .end_transaction(&q.addr, "ferrocket_producer", &half, true)
                                .await
                                .map(|()| half),
                            other => other,
                        }
                    } else {
                        c.send(&topic, q, &msgs).await
                    };
                    match sent {
                        Ok(r) if r.code == response::SUCCESS => {
                            mine.push(t.elapsed().as_micros() as u64);
                            count.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                        }
                        other => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                let what = match other {
                                    Ok(r) => format!("code {} from {}", r.code, q.addr),
                                    Err(e) => format!("{e} ({})", q.addr),
                                };
                                if let Ok(mut f) = first_error.lock() {
                                    f.get_or_insert(what);
                                }
                            }
                            queues.refresh(&c, &topic).await;
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                    if let Some(p) = pause {
                        tokio::time::sleep(p).await;
                    }
                }
                if let Ok(mut l) = lat.lock() {
                    l.extend(mine);
                }
            }));
        }
        run.finish(
            tasks,
            "produce",
            args.mode.clone(),
            args.concurrency,
            batch,
            &args,
        )
        .await
    })
}

/// The writable queues of the benchmarked topic, refreshed after failed sends.
struct RouteCache {
    queues: std::sync::RwLock<Arc<Vec<crate::client::QueueAddr>>>,
    refreshed: tokio::sync::Mutex<Instant>,
}

impl RouteCache {
    fn get(&self) -> Arc<Vec<crate::client::QueueAddr>> {
        Arc::clone(&self.queues.read().unwrap_or_else(|p| p.into_inner()))
    }

    async fn refresh(&self, c: &Client, topic: &str) {
        let mut last = self.refreshed.lock().await;
        if last.elapsed() < std::time::Duration::from_millis(200) {
            return;
        }
        *last = Instant::now();
        if let Ok(Some(route)) = c.route(topic).await {
            let fresh = Client::write_queues(&route);
            if !fresh.is_empty() {
                *self.queues.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
            }
        }
    }
}

/// Runs `bench consume`: pulls every queue from its current committed offset (or 0)
/// with long polling; latency is store-to-receive (`now - born timestamp`).
///
/// # Errors
/// Unreachable name server, unknown topic.
pub fn consume(namesrv: &str, args: NetBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = args.client(namesrv)?;
        let Some(route) = c.route(&args.topic).await? else {
            bail!("unknown topic `{}`", args.topic);
        };
        let queues = Client::write_queues(&route);
        let run = Run::start(args.size, args.json, "consume");
        let (count, lat, started) = (run.count.clone(), run.lat.clone(), run.started);
        let mut tasks = Vec::new();
        for q in queues {
            let (c, count, lat) = (c.clone(), count.clone(), lat.clone());
            let (topic, group, duration) = (args.topic.clone(), args.group.clone(), args.duration);
            let (kind, expr) = match (&args.sql, &args.tags) {
                (Some(sql), _) => ("SQL92", sql.clone()),
                (None, Some(t)) => ("TAG", t.clone()),
                (None, None) => ("TAG", "*".to_owned()),
            };
            tasks.push(tokio::spawn(async move {
                let mut off = c
                    .committed(&q, &topic, &group)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let mut mine = Vec::new();
                while started.elapsed() < duration {
                    let Ok(r) = c
                        .pull_filtered(&q, &topic, &group, off, 1000, kind, &expr)
                        .await
                    else {
                        break;
                    };
                    if let Ok(next) = r.ext_num::<i64>("nextBeginOffset") {
                        off = next;
                    }
                    if r.code != response::SUCCESS {
                        continue;
                    }
                    let now = crate::store::now_ms();
                    for rec in crate::client::split_records(r.body_bytes()) {
                        if let Ok(m) = crate::store::decode_record(&rec) {
                            // A timer message's latency counts from its due time.
                            let due = m.born_timestamp
                                + m.property("TIMER_DELAY_MS")
                                    .and_then(|d| d.parse::<i64>().ok())
                                    .unwrap_or(0);
                            mine.push(((now - due).max(0) as u64) * 1000);
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = c.commit(&q, &topic, &group, off).await;
                }
                if let Ok(mut l) = lat.lock() {
                    l.extend(mine);
                }
            }));
        }
        run.finish(tasks, "consume", "pull".into(), 1, 32, &args)
            .await
    })
}
