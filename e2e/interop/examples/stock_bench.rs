//! Load from the stock `rocketmq-client-rust` 1.0 producer, for comparing brokers with a
//! client neither of them wrote:
//!
//! `cargo run --release -p ferrocket-interop --example stock_bench -- NAMESRV TOPIC CONCURRENCY SECONDS [BATCH]`
//!
//! Prints one line: messages, msg/s, MB/s and latency percentiles (ms) of 1 KiB sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, DefaultMQProducer, TelemetryHandle,
};
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: stock_bench NAMESRV TOPIC CONCURRENCY SECONDS [BATCH]".into());
    }
    let (ns, topic) = (args[0].clone(), args[1].clone());
    let concurrency: usize = arg(&args, 2, 32);
    let secs: u64 = arg(&args, 3, 10);
    let batch: usize = arg(&args, 4, 1);
    let owner = RuntimeOwner::plan(RuntimeConfig {
        thread_name: "stock-bench".into(),
        ..Default::default()
    })?
    .build()?;
    let rt = ClientRuntime::try_new(
        owner.root_context().component("bench"),
        ClientRuntimeConfig::default(),
        TelemetryHandle::noop(),
    )?;
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .producer_group("stock_bench_pg".to_string())
        .name_server_addr(ns)
        .build();
    producer.start().await?;
    let producer = Arc::new(producer);
    let body = vec![b'x'; 1024];
    let msg = |body: &[u8]| {
        Message::builder()
            .topic(topic.as_str())
            .tags("bench")
            .body_slice(body)
            .build_unchecked()
    };
    // Warm up the route.
    producer.send_with_timeout(msg(&body), 5000).await?;
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (p, count, errors, lat, body, topic) = (
            producer.clone(),
            count.clone(),
            errors.clone(),
            lat.clone(),
            body.clone(),
            topic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while started.elapsed() < Duration::from_secs(secs) {
                let t = Instant::now();
                let ok = if batch > 1 {
                    let msgs: Vec<Message> = (0..batch)
                        .map(|_| {
                            Message::builder()
                                .topic(topic.as_str())
                                .tags("bench")
                                .body_slice(&body)
                                .build_unchecked()
                        })
                        .collect();
                    p.send_batch_with_timeout(msgs, 5000).await.is_ok()
                } else {
                    let m = Message::builder()
                        .topic(topic.as_str())
                        .tags("bench")
                        .body_slice(&body)
                        .build_unchecked();
                    matches!(p.send_with_timeout(m, 5000).await, Ok(Some(_)))
                };
                if ok {
                    mine.push(t.elapsed().as_micros() as u64);
                    count.fetch_add(batch as u64, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat.lock().map(|mut l| l.extend(mine)).ok();
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut us = std::mem::take(&mut *lat.lock().map_err(|_| "poisoned")?);
    us.sort_unstable();
    let at = |q: f64| {
        us.get(((us.len() as f64 * q) as usize).min(us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let n = count.load(Ordering::Relaxed);
    println!(
        "stock client x{concurrency} batch {batch}: {n} msgs in {elapsed:.1}s = {:.0} msg/s, {:.1} MB/s; latency ms p50 {:.3} p99 {:.3} p999 {:.3}; errors {}",
        n as f64 / elapsed,
        n as f64 * 1024.0 / elapsed / 1e6,
        at(0.5),
        at(0.99),
        at(0.999),
        errors.load(Ordering::Relaxed)
    );
    let mut producer = Arc::try_unwrap(producer).map_err(|_| "producer still shared")?;
    producer.shutdown().await;
    Ok(())
}
