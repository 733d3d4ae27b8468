//! The unmodified `rocketmq-client-rust` 1.0 client against real ferrocket processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ferrocket_interop::Cluster;
use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
    TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

static OWNER: LazyLock<RuntimeOwner> = LazyLock::new(|| {
    RuntimeOwner::plan(RuntimeConfig {
        thread_name: "ferrocket-interop".to_string(),
        ..Default::default()
    })
    .expect("runtime plan")
    .build()
    .expect("runtime")
});

fn client_runtime(scope: &'static str) -> Arc<ClientRuntime> {
    ClientRuntime::try_new(
        OWNER.root_context().component(scope),
        ClientRuntimeConfig::default(),
        TelemetryHandle::noop(),
    )
    .expect("client runtime")
}

fn message(topic: &str, tag: &str, body: &str) -> Message {
    Message::builder()
        .topic(topic)
        .tags(tag)
        .body_slice(body.as_bytes())
        .build_unchecked()
}

/// Received (tag, body) pairs.
type Sink = Arc<Mutex<Vec<(String, String)>>>;

struct Collect(Sink);

impl MessageListenerConcurrently for Collect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        let mut got = self.0.lock().unwrap();
        for m in msgs {
            let body = m
                .body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let tag = m.tags().map(|t| t.to_string()).unwrap_or_default();
            got.push((tag, body));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_send_then_push_consume_from_first_offset() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("sync-send");
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .producer_group("interop_pg_1".to_string())
        .name_server_addr(ns.clone())
        .build();
    producer.start().await.expect("producer start");
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        let body = format!("hello-{i}");
        let r = producer
            .send_with_timeout(message("InteropSync", "TagA", &body), 5000)
            .await
            .expect("send");
        let r = r.expect("a send result");
        assert_eq!(format!("{:?}", r.send_status), "SendOk");
        sent.insert(body);
    }
    producer.shutdown().await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_1".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    consumer
        .subscribe("InteropSync", "*")
        .await
        .expect("subscribe");
    consumer.register_message_listener_concurrently(Collect(got.clone()));
    consumer.start().await.expect("consumer start");
    wait_for("20 messages", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 20
    })
    .await;
    consumer.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, sent);
}

async fn producer(rt: &Arc<ClientRuntime>, ns: &str, group: &str) -> DefaultMQProducer {
    let mut p = DefaultMQProducer::builder(rt.clone())
        .producer_group(group.to_string())
        .name_server_addr(ns.to_string())
        .build();
    p.start().await.expect("producer start");
    p
}

async fn push_consumer(
    rt: &Arc<ClientRuntime>,
    ns: &str,
    group: &str,
    topic: &str,
    expr: &str,
    sink: Arc<Mutex<Vec<(String, String)>>>,
) -> DefaultMQPushConsumer {
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group(group.to_string())
        .name_server_addr(ns.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe(topic, expr).await.expect("subscribe");
    c.register_message_listener_concurrently(Collect(sink));
    c.start().await.expect("consumer start");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_oneway_batch_and_selector_sends_all_arrive() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("send-kinds");
    let p = producer(&rt, &ns, "interop_pg_kinds").await;
    let topic = "InteropKinds";
    let mut expected = BTreeSet::new();
    // Sync first, so the route exists for the others.
    p.send_with_timeout(message(topic, "S", "sync-0"), 5000)
        .await
        .expect("sync send");
    expected.insert("sync-0".to_string());
    // Async with callbacks.
    let acked = Arc::new(Mutex::new(0usize));
    for i in 0..10 {
        let acked = acked.clone();
        p.send_with_callback(message(topic, "A", &format!("async-{i}")), move |r, e| {
            assert!(e.is_none(), "async send failed: {e:?}");
            if r.is_some() {
                *acked.lock().unwrap() += 1;
            }
        })
        .await
        .expect("async send");
        expected.insert(format!("async-{i}"));
    }
    wait_for("async callbacks", Duration::from_secs(30), || {
        *acked.lock().unwrap() == 10
    })
    .await;
    // Oneway.
    for i in 0..10 {
        p.send_oneway(message(topic, "O", &format!("oneway-{i}")))
            .await
            .expect("oneway send");
        expected.insert(format!("oneway-{i}"));
    }
    // Batch.
    let batch: Vec<Message> = (0..10)
        .map(|i| message(topic, "B", &format!("batch-{i}")))
        .collect();
    let r = p.send_batch(batch).await.expect("batch send");
    assert_eq!(format!("{:?}", r.send_status), "SendOk");
    expected.extend((0..10).map(|i| format!("batch-{i}")));
    // Queue selector: everything to queue 2.
    for i in 0..10 {
        let r = p
            .send_with_selector(
                message(topic, "Q", &format!("selected-{i}")),
                |mqs, _m, _arg: &usize| mqs.iter().find(|q| q.queue_id() == 2).cloned(),
                i,
            )
            .await
            .expect("selector send")
            .expect("result");
        assert_eq!(r.message_queue.as_ref().map(|q| q.queue_id()), Some(2));
        expected.insert(format!("selected-{i}"));
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(&rt, &ns, "interop_cg_kinds", topic, "*", got.clone()).await;
    wait_for("all sends", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= expected.len()
    })
    .await;
    c.shutdown().await;
    let mut p = p;
    p.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_expression_selects_only_its_tags() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("tags");
    let mut p = producer(&rt, &ns, "interop_pg_tags").await;
    for i in 0..30 {
        let tag = ["TagA", "TagB", "TagC"][i % 3];
        p.send_with_timeout(message("InteropTags", tag, &format!("{tag}-{i}")), 5000)
            .await
            .expect("send");
    }
    p.shutdown().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(
        &rt,
        &ns,
        "interop_cg_tags",
        "InteropTags",
        "TagA || TagB",
        got.clone(),
    )
    .await;
    wait_for("20 tagged messages", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 20
    })
    .await;
    // Give a stray TagC time to show up if filtering were broken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.shutdown().await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 20, "{got:?}");
    assert!(got.iter().all(|(t, _)| t == "TagA" || t == "TagB"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_of_one_group_split_the_queues() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("split");
    let mut p = producer(&rt, &ns, "interop_pg_split").await;
    // Creates the topic with 4 queues.
    p.send_with_timeout(message("InteropSplit", "T", "warm-up"), 5000)
        .await
        .expect("send");
    let a = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::new(Mutex::new(Vec::new()));
    let mut ca = push_consumer(&rt, &ns, "interop_cg_split", "InteropSplit", "*", a.clone()).await;
    let mut cb = push_consumer(&rt, &ns, "interop_cg_split", "InteropSplit", "*", b.clone()).await;
    // Let both rebalance (the broker notifies the group when the second one joins).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = a.lock().unwrap().len() + b.lock().unwrap().len();
    for i in 0..80 {
        p.send_with_timeout(message("InteropSplit", "T", &format!("m{i}")), 5000)
            .await
            .expect("send");
    }
    wait_for("80 messages across both", Duration::from_secs(60), || {
        a.lock().unwrap().len() + b.lock().unwrap().len() >= before + 80
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ca.shutdown().await;
    cb.shutdown().await;
    p.shutdown().await;
    let (na, nb) = (a.lock().unwrap().len(), b.lock().unwrap().len());
    assert!(
        na > 0 && nb > 0,
        "one consumer got everything: {na} vs {nb}"
    );
    let all: BTreeSet<String> = a
        .lock()
        .unwrap()
        .iter()
        .chain(b.lock().unwrap().iter())
        .map(|(_, m)| m.clone())
        .collect();
    assert!((0..80).all(|i| all.contains(&format!("m{i}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lite_pull_consumer_polls_everything() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("lite");
    let mut p = producer(&rt, &ns, "interop_pg_lite").await;
    for i in 0..25 {
        p.send_with_timeout(message("InteropLite", "L", &format!("lite-{i}")), 5000)
            .await
            .expect("send");
    }
    p.shutdown().await;
    let c = rocketmq_client_rust::DefaultLitePullConsumer::builder(rt.clone())
        .consumer_group("interop_cg_lite")
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build()
        .expect("build lite consumer");
    c.subscribe("InteropLite").await.expect("subscribe");
    c.start().await.expect("start");
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 25 && Instant::now() < deadline {
        for m in c.poll_with_timeout(1000).await {
            got.insert(
                m.body()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    c.shutdown().await;
    assert_eq!(got.len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_a_broker_restart_without_redelivery() {
    let mut cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("restart");
    let mut p = producer(&rt, &ns, "interop_pg_restart").await;
    for i in 0..10 {
        p.send_with_timeout(message("InteropRestart", "R", &format!("first-{i}")), 5000)
            .await
            .expect("send");
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(
        &rt,
        &ns,
        "interop_cg_restart",
        "InteropRestart",
        "*",
        got.clone(),
    )
    .await;
    wait_for("first 10", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 10
    })
    .await;
    // The client commits offsets periodically (5 s) and on shutdown.
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.shutdown().await;
    assert!(
        cluster.broker.terminate(),
        "broker did not exit cleanly on SIGTERM"
    );
    cluster.restart_broker();
    // Wait for the restarted broker to be routable again, then send more.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < 10 {
        assert!(Instant::now() < deadline, "broker did not come back");
        if p.send_with_timeout(
            message("InteropRestart", "R", &format!("second-{sent}")),
            3000,
        )
        .await
        .is_ok()
        {
            sent += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    p.shutdown().await;
    let again = Arc::new(Mutex::new(Vec::new()));
    let mut c2 = push_consumer(
        &rt,
        &ns,
        "interop_cg_restart",
        "InteropRestart",
        "*",
        again.clone(),
    )
    .await;
    wait_for("second 10", Duration::from_secs(60), || {
        again.lock().unwrap().len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c2.shutdown().await;
    let again = again.lock().unwrap().clone();
    assert!(
        again.iter().all(|(_, b)| b.starts_with("second-")),
        "redelivered: {again:?}"
    );
    assert_eq!(again.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_sync_flush_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(&["flushDiskType=SYNC_FLUSH"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("kill9");
    let p = Arc::new(producer(&rt, &ns, "interop_pg_kill9").await);
    p.send_with_timeout(message("InteropKill", "K", "warm-up"), 5000)
        .await
        .expect("send");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    acked.lock().unwrap().insert("warm-up".to_string());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (p, acked) = (p.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = format!("t{t}-{i}");
                match p
                    .send_with_timeout(message("InteropKill", "K", &body), 2000)
                    .await
                {
                    Ok(Some(r)) if format!("{:?}", r.send_status) == "SendOk" => {
                        acked.lock().unwrap().insert(body);
                    }
                    _ => return,
                }
            }
        }));
    }
    wait_for("some acknowledged sends", Duration::from_secs(30), || {
        acked.lock().unwrap().len() > 300
    })
    .await;
    cluster.broker.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    cluster.restart_broker();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(
        &rt,
        &ns,
        "interop_cg_kill9",
        "InteropKill",
        "*",
        got.clone(),
    )
    .await;
    wait_for(
        "every acknowledged message",
        Duration::from_secs(90),
        || {
            let got: BTreeSet<String> =
                got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
            acked.iter().all(|a| got.contains(a))
        },
    )
    .await;
    c.shutdown().await;
    let n = got.lock().unwrap().len();
    eprintln!(
        "kill -9 under SYNC_FLUSH: {} acknowledged, {} consumed, 0 lost",
        acked.len(),
        n
    );
}

struct OrderlyCollect(Arc<Mutex<Vec<String>>>);

impl rocketmq_client_rust::MessageListenerOrderly for OrderlyCollect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &mut rocketmq_client_rust::ConsumeOrderlyContext,
    ) -> rocketmq_client_rust::ClientResult<rocketmq_client_rust::ConsumeOrderlyStatus> {
        let mut got = self.0.lock().unwrap();
        for m in msgs {
            got.push(
                m.body()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            );
        }
        Ok(rocketmq_client_rust::ConsumeOrderlyStatus::Success)
    }
}

async fn orderly_consumer(
    rt: &Arc<ClientRuntime>,
    ns: &str,
    sink: Arc<Mutex<Vec<String>>>,
) -> DefaultMQPushConsumer {
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_order".to_string())
        .name_server_addr(ns.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("InteropOrder", "*").await.expect("subscribe");
    c.register_message_listener_orderly(OrderlyCollect(sink));
    c.start().await.expect("consumer start");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orderly_consumption_keeps_each_keys_order_while_a_consumer_joins() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("orderly");
    let mut p = producer(&rt, &ns, "interop_pg_order").await;
    let sink = Arc::new(Mutex::new(Vec::new()));
    // Create the topic (4 queues) before the consumers start.
    p.send_with_timeout(message("InteropOrder", "O", "warm-up"), 5000)
        .await
        .expect("send");
    let mut first = orderly_consumer(&rt, &ns, sink.clone()).await;
    let mut second = None;
    for seq in 0..50 {
        if seq == 25 {
            second = Some(orderly_consumer(&rt, &ns, sink.clone()).await);
        }
        for key in 0..8usize {
            let r = p
                .send_with_selector(
                    message("InteropOrder", "O", &format!("k{key}-{seq}")),
                    |mqs, _m, k: &usize| mqs.get(k % mqs.len()).cloned(),
                    key,
                )
                .await
                .expect("send")
                .expect("result");
            assert_eq!(format!("{:?}", r.send_status), "SendOk");
        }
    }
    wait_for("400 ordered messages", Duration::from_secs(90), || {
        let got = sink.lock().unwrap();
        (0..8).all(|k| (0..50).all(|s| got.contains(&format!("k{k}-{s}"))))
    })
    .await;
    first.shutdown().await;
    if let Some(mut c) = second {
        c.shutdown().await;
    }
    p.shutdown().await;
    let got = sink.lock().unwrap().clone();
    for key in 0..8 {
        // First deliveries per key must follow send order; a redelivery after the queue
        // moved between consumers may repeat earlier messages (at-least-once).
        let mut seen = BTreeSet::new();
        let firsts: Vec<usize> = got
            .iter()
            .filter_map(|b| b.strip_prefix(&format!("k{key}-")))
            .filter_map(|s| s.parse().ok())
            .filter(|s| seen.insert(*s))
            .collect();
        assert_eq!(
            firsts,
            (0..50).collect::<Vec<_>>(),
            "key {key} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn level_3_delayed_message_arrives_after_10_to_12_seconds() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("delay");
    let mut p = producer(&rt, &ns, "interop_pg_delay").await;
    p.send_with_timeout(message("InteropDelay", "D", "warm-up"), 5000)
        .await
        .expect("send");
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    struct Stamp(Arc<Mutex<Vec<(String, Instant)>>>);
    impl MessageListenerConcurrently for Stamp {
        fn consume_message(
            &self,
            msgs: &[&MessageExt],
            _ctx: &ConsumeConcurrentlyContext,
        ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
            for m in msgs {
                let body = m
                    .body()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                self.0.lock().unwrap().push((body, Instant::now()));
            }
            Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
        }
    }
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_delay".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("InteropDelay", "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Stamp(arrivals.clone()));
    c.start().await.expect("start");
    wait_for("the warm-up message", Duration::from_secs(30), || {
        !arrivals.lock().unwrap().is_empty()
    })
    .await;
    let mut m = message("InteropDelay", "D", "delayed");
    m.set_delay_time_level(3);
    let sent_at = Instant::now();
    p.send_with_timeout(m, 5000).await.expect("send delayed");
    wait_for("the delayed message", Duration::from_secs(30), || {
        arrivals.lock().unwrap().iter().any(|(b, _)| b == "delayed")
    })
    .await;
    let at = arrivals
        .lock()
        .unwrap()
        .iter()
        .find(|(b, _)| b == "delayed")
        .map(|(_, t)| *t)
        .unwrap();
    let waited = at.duration_since(sent_at);
    c.shutdown().await;
    p.shutdown().await;
    assert!(
        waited >= Duration::from_secs(10),
        "delivered early: {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(12),
        "delivered late: {waited:?}"
    );
}

struct Reject {
    seen: Arc<Mutex<Vec<(String, i32)>>>,
    accept_after: i32,
}

impl MessageListenerConcurrently for Reject {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        let mut later = false;
        for m in msgs {
            let body = m
                .body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let times = m.reconsume_times();
            self.seen.lock().unwrap().push((body, times));
            later |= times < self.accept_after;
        }
        Ok(if later {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconsume_later_retries_then_dead_letters() {
    // One-second delay levels keep the retries quick.
    let cluster = Cluster::start(&["messageDelayLevel=1s 1s 1s 1s 1s 1s 1s 1s"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("retry");
    let mut p = producer(&rt, &ns, "interop_pg_retry").await;
    p.send_with_timeout(message("InteropRetry", "R", "retry-me"), 5000)
        .await
        .expect("send");
    p.send_with_timeout(message("InteropDead", "R", "dead-me"), 5000)
        .await
        .expect("send");
    p.shutdown().await;

    // Rejected once, then accepted: seen again with reconsumeTimes >= 1.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_retry".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("InteropRetry", "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Reject {
        seen: seen.clone(),
        accept_after: 1,
    });
    c.start().await.expect("start");
    wait_for("a redelivery", Duration::from_secs(60), || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(b, t)| b == "retry-me" && *t >= 1)
    })
    .await;
    c.shutdown().await;

    // Always rejected with maxReconsumeTimes 2: after the last retry it is in the DLQ.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_dead".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .max_reconsume_times(2)
        .build();
    c.subscribe("InteropDead", "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Reject {
        seen: seen.clone(),
        accept_after: i32::MAX,
    });
    c.start().await.expect("start");
    wait_for("the last retry", Duration::from_secs(60), || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(b, t)| b == "dead-me" && *t >= 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.shutdown().await;
    let deliveries = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(b, _)| b == "dead-me")
        .count();
    assert_eq!(deliveries, 3, "delivered once plus two retries");
    // The dead letter is readable from %DLQ%<group>.
    let dlq = Arc::new(Mutex::new(Vec::new()));
    let mut reader = push_consumer(
        &rt,
        &ns,
        "interop_cg_dlq_reader",
        "%DLQ%interop_cg_dead",
        "*",
        dlq.clone(),
    )
    .await;
    wait_for("the dead letter", Duration::from_secs(60), || {
        dlq.lock().unwrap().iter().any(|(_, b)| b == "dead-me")
    })
    .await;
    reader.shutdown().await;
}

async fn send_key(p: &DefaultMQProducer, key: usize, seq: usize) -> bool {
    let m = message("InteropOrder", "O", &format!("k{key}-{seq}"));
    matches!(
        p.send_with_selector_timeout(
            m,
            |mqs, _m, k: &usize| mqs.get(k % mqs.len()).cloned(),
            key,
            3000
        )
        .await,
        Ok(Some(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orderly_consumption_keeps_each_keys_order_across_a_broker_restart() {
    let mut cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("orderly-restart");
    let mut p = producer(&rt, &ns, "interop_pg_order_restart").await;
    p.send_with_timeout(message("InteropOrder", "O", "warm-up"), 5000)
        .await
        .expect("send");
    let sink = Arc::new(Mutex::new(Vec::new()));
    let mut c = orderly_consumer(&rt, &ns, sink.clone()).await;
    for seq in 0..20 {
        for key in 0..8 {
            assert!(send_key(&p, key, seq).await, "send before restart");
        }
    }
    wait_for("the first half", Duration::from_secs(60), || {
        let got = sink.lock().unwrap();
        (0..8).all(|k| got.contains(&format!("k{k}-19")))
    })
    .await;
    assert!(cluster.broker.terminate(), "broker did not exit cleanly");
    cluster.restart_broker();
    for seq in 20..40 {
        for key in 0..8 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !send_key(&p, key, seq).await {
                assert!(Instant::now() < deadline, "broker did not come back");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    wait_for("everything", Duration::from_secs(90), || {
        let got = sink.lock().unwrap();
        (0..8).all(|k| (0..40).all(|s| got.contains(&format!("k{k}-{s}"))))
    })
    .await;
    c.shutdown().await;
    p.shutdown().await;
    let got = sink.lock().unwrap().clone();
    for key in 0..8 {
        let mut seen = BTreeSet::new();
        let firsts: Vec<usize> = got
            .iter()
            .filter_map(|b| b.strip_prefix(&format!("k{key}-")))
            .filter_map(|s| s.parse().ok())
            .filter(|s| seen.insert(*s))
            .collect();
        assert_eq!(
            firsts,
            (0..40).collect::<Vec<_>>(),
            "key {key} out of order"
        );
    }
}

fn broker_status(ns: &str, broker: &str) -> serde_json::Value {
    let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
        .args([
            "admin",
            "--namesrv",
            ns,
            "--json",
            "broker-status",
            "--broker",
            broker,
        ])
        .output()
        .expect("admin runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_master_acknowledges_and_consumers_read_the_slave_when_the_master_is_gone() {
    let mut cluster = Cluster::start(&["brokerRole=SYNC_MASTER", "roleEpoch=1"]);
    let ha = cluster
        .broker
        .ha_addr
        .clone()
        .expect("the master's HA address");
    let ns = cluster.namesrv.addr.clone();
    let slave_dir = tempfile::tempdir().unwrap();
    let slave = ferrocket_interop::Proc::spawn(&ferrocket_interop::broker_args(
        &ns,
        slave_dir.path(),
        None,
        &[
            "brokerRole=SLAVE".into(),
            "brokerId=1".into(),
            "roleEpoch=1".into(),
            format!("haMasterAddress={ha}"),
        ],
    ));
    assert_eq!(slave.role, "slave");
    let master_addr = cluster.broker.addr.clone();
    wait_for("the slave to connect", Duration::from_secs(10), || {
        broker_status(&ns, &master_addr)["table"]["haConnections"] == "1"
    })
    .await;

    let rt = client_runtime("sync-master");
    let mut p = producer(&rt, &ns, "interop_pg_ha").await;
    let mut sent = BTreeSet::new();
    for i in 0..30 {
        let body = format!("replicated-{i}");
        let r = p
            .send_with_timeout(message("InteropHa", "T", &body), 5000)
            .await
            .expect("send")
            .expect("a send result");
        // SEND_OK from a SYNC_MASTER: a slave holds it.
        assert_eq!(format!("{:?}", r.send_status), "SendOk");
        sent.insert(body);
    }
    p.shutdown().await;
    // The slave copies the topic in its metadata sync (every 10 s, first after 3 s).
    let slave_addr = slave.addr.clone();
    let target = broker_status(&ns, &master_addr)["table"]["commitLogMaxOffset"].clone();
    wait_for(
        "the slave to hold everything",
        Duration::from_secs(10),
        || broker_status(&ns, &slave_addr)["table"]["commitLogMaxOffset"] == target,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The master dies; the route keeps the slave, and the stock consumer reads from it.
    cluster.broker.kill9();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(&rt, &ns, "interop_cg_ha", "InteropHa", "*", got.clone()).await;
    wait_for(
        "30 messages from the slave",
        Duration::from_secs(60),
        || got.lock().unwrap().len() >= 30,
    )
    .await;
    c.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, sent);
}

/// Counts local transactions run; commits every one.
/// A transaction listener whose decisions follow the message body: `commit-…` and
/// `rollback-…` decide at once; `unknown-commit-…` and `unknown-rollback-…` answer
/// UNKNOW first and decide at the check-back. A check-back for a transaction whose local
/// part never ran here (its half send failed) answers rollback.
#[derive(Clone, Default)]
struct Decide {
    executed: Arc<Mutex<BTreeSet<String>>>,
    checks: Arc<std::sync::atomic::AtomicUsize>,
    /// Answer UNKNOW at execution whatever the body says.
    always_unknown: bool,
}

fn body_of(b: Option<&bytes::Bytes>) -> String {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl Decide {
    fn decision(body: &str) -> rocketmq_client_rust::LocalTransactionState {
        use rocketmq_client_rust::LocalTransactionState as S;
        if body.starts_with("commit") || body.starts_with("unknown-commit") {
            S::CommitMessage
        } else {
            S::RollbackMessage
        }
    }
}

impl rocketmq_client_rust::TransactionListener for Decide {
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        _arg: Option<&(dyn std::any::Any + Send + Sync)>,
    ) -> rocketmq_client_rust::LocalTransactionState {
        let body = body_of(msg.get_body());
        self.executed.lock().unwrap().insert(body.clone());
        if self.always_unknown || body.starts_with("unknown") {
            rocketmq_client_rust::LocalTransactionState::Unknown
        } else {
            Self::decision(&body)
        }
    }

    fn check_local_transaction(
        &self,
        msg: &MessageExt,
    ) -> rocketmq_client_rust::LocalTransactionState {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let body = body_of(msg.get_body());
        // Another producer of the group may be asked (a restarted application): the
        // decision is a function of the body, as a real one is of its database.
        if self.always_unknown
            || body.starts_with("unknown")
            || self.executed.lock().unwrap().contains(&body)
        {
            Self::decision(&body)
        } else {
            rocketmq_client_rust::LocalTransactionState::RollbackMessage
        }
    }
}

async fn tx_producer(
    rt: &Arc<ClientRuntime>,
    ns: &str,
    group: &str,
    listener: Decide,
) -> rocketmq_client_rust::TransactionMQProducer {
    let mut tx = rocketmq_client_rust::TransactionMQProducer::builder(rt.clone())
        .producer_group(group.to_string())
        .name_server_addr(ns.to_string())
        .transaction_listener(listener)
        .build();
    tx.start().await.expect("transaction producer start");
    tx
}

/// Messages stored in every queue of a topic (max offsets summed).
async fn stored_in(ns: &str, topic: &str) -> i64 {
    let c = ferrocket::client::Client::new(ns);
    let Ok(Some(route)) = c.route(topic).await else {
        return 0;
    };
    let mut n = 0;
    for q in ferrocket::client::Client::write_queues(&route) {
        n += c.max_offset(&q, topic).await.unwrap_or(0);
    }
    n
}

fn runtime_key(ns: &str, broker: &str, key: &str) -> Option<i64> {
    broker_status(ns, broker)["table"]
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
}

/// The stock `TransactionMQProducer`: committed transactions are delivered, rolled back
/// ones never; those left UNKNOW are resolved by the broker's check-back
/// (CHECK_TRANSACTION_STATE) to the producer — each committed message stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_rollback_and_check_back_deliver_exactly_the_committed() {
    let cluster = Cluster::start(&["transactionCheckInterval=1000", "transactionTimeOut=1000"]);
    let ns = cluster.namesrv.addr.clone();
    let broker = cluster.broker.addr.clone();
    let rt = client_runtime("transactions");
    let listener = Decide::default();
    let mut tx = tx_producer(&rt, &ns, "interop_pg_tx", listener.clone()).await;
    let mut expected = BTreeSet::new();
    for kind in ["commit", "rollback", "unknown-commit", "unknown-rollback"] {
        for i in 0..8 {
            let body = format!("{kind}-{i}");
            let r = tx
                .send_message_in_transaction::<(), _>(message("InteropTx", "T", &body), None)
                .await
                .expect("transactional send");
            assert_eq!(
                format!("{:?}", r.send_result.as_ref().map(|s| s.send_status)),
                "Some(SendOk)"
            );
            if kind.ends_with("commit") {
                expected.insert(body);
            }
        }
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer =
        push_consumer(&rt, &ns, "interop_cg_tx", "InteropTx", "*", got.clone()).await;
    wait_for(
        "every committed transaction",
        Duration::from_secs(60),
        || {
            let bodies: BTreeSet<String> =
                got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
            bodies.len() >= expected.len()
        },
    )
    .await;
    wait_for("no unresolved transaction", Duration::from_secs(30), || {
        runtime_key(&ns, &broker, "transactionUnresolved") == Some(0)
    })
    .await;
    tx.shutdown().await;
    consumer.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(
        bodies, expected,
        "exactly the committed transactions are delivered"
    );
    assert_eq!(
        stored_in(&ns, "InteropTx").await,
        expected.len() as i64,
        "each committed transaction is stored once, nothing else"
    );
    assert!(
        listener.checks.load(std::sync::atomic::Ordering::Acquire) >= 16,
        "each UNKNOW transaction was checked back"
    );
    assert_eq!(runtime_key(&ns, &broker, "transactionRolledBack"), Some(16));
}

/// A half message left UNKNOW by a producer that then goes away survives a broker
/// kill -9 and restart, and is committed by the check-back sent to another producer of
/// its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_transaction_survives_a_broker_kill_and_is_committed_by_a_new_producer() {
    let mut cluster = Cluster::start(&["transactionCheckInterval=1000", "transactionTimeOut=1000"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("transactions-restart");
    let first = Decide {
        always_unknown: true,
        ..Decide::default()
    };
    let mut tx = tx_producer(&rt, &ns, "interop_pg_tx_restart", first.clone()).await;
    tx.send_message_in_transaction::<(), _>(
        message("InteropTxRestart", "T", "unknown-commit-survivor"),
        None,
    )
    .await
    .expect("transactional send");
    tx.shutdown().await;
    cluster.broker.kill9();
    cluster.restart_broker();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = push_consumer(
        &rt,
        &ns,
        "interop_cg_tx_restart",
        "InteropTxRestart",
        "*",
        got.clone(),
    )
    .await;
    let second = Decide::default();
    let mut tx2 = tx_producer(&rt, &ns, "interop_pg_tx_restart", second.clone()).await;
    // A client heartbeats the brokers of the routes it uses: the restarted application
    // goes on with its work, which is how the broker learns of it.
    tx2.send_message_in_transaction::<(), _>(
        message("InteropTxRestart", "T", "commit-after"),
        None,
    )
    .await
    .expect("transactional send after the restart");
    wait_for("the checked-back commit", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 2
    })
    .await;
    tx2.shutdown().await;
    consumer.shutdown().await;
    let got: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(
        got,
        BTreeSet::from([
            "unknown-commit-survivor".to_string(),
            "commit-after".to_string()
        ])
    );
    assert!(second.checks.load(std::sync::atomic::Ordering::Acquire) >= 1);
    assert_eq!(stored_in(&ns, "InteropTxRestart").await, 2);
}

/// kill -9 of the broker during a stream of transactions (commit for even, rollback for
/// odd): after a restart every committed transaction whose half message was
/// acknowledged is delivered and stored once, no rolled back one ever is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_transactions_loses_no_commit_and_delivers_no_rollback() {
    let mut cluster = Cluster::start(&["transactionCheckInterval=1000", "transactionTimeOut=1000"]);
    let ns = cluster.namesrv.addr.clone();
    let broker = cluster.broker.addr.clone();
    let rt = client_runtime("transactions-kill");
    let listener = Decide::default();
    let mut tx = tx_producer(&rt, &ns, "interop_pg_tx_kill", listener.clone()).await;
    let mut acked = BTreeSet::new();
    let mut i = 0;
    let mut killed = false;
    while acked.len() < 120 {
        let body = if i % 2 == 0 {
            format!("commit-{i}")
        } else {
            format!("rollback-{i}")
        };
        i += 1;
        if i == 61 {
            cluster.broker.kill9();
            killed = true;
            cluster.restart_broker();
        }
        if let Ok(r) = tx
            .send_message_in_transaction::<(), _>(message("InteropTxKill", "T", &body), None)
            .await
        {
            if r.send_result.is_some() {
                acked.insert(body);
            }
        }
        assert!(
            i < 2000,
            "the restarted broker never took transactions again"
        );
    }
    assert!(killed);
    let expected: BTreeSet<String> = acked
        .iter()
        .filter(|b| b.starts_with("commit"))
        .cloned()
        .collect();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = push_consumer(
        &rt,
        &ns,
        "interop_cg_tx_kill",
        "InteropTxKill",
        "*",
        got.clone(),
    )
    .await;
    wait_for("every acknowledged commit", Duration::from_secs(90), || {
        let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
        expected.is_subset(&bodies)
    })
    .await;
    wait_for("no unresolved transaction", Duration::from_secs(60), || {
        runtime_key(&ns, &broker, "transactionUnresolved") == Some(0)
    })
    .await;
    tx.shutdown().await;
    let stored = stored_in(&ns, "InteropTxKill").await;
    wait_for(
        "every stored commit delivered",
        Duration::from_secs(30),
        || {
            let bodies: BTreeSet<String> =
                got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
            bodies.len() as i64 >= stored
        },
    )
    .await;
    consumer.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    let rolled_back: Vec<&String> = bodies
        .iter()
        .filter(|b| b.starts_with("rollback"))
        .collect();
    assert!(
        rolled_back.is_empty(),
        "rolled back transactions delivered: {rolled_back:?}"
    );
    // A commit whose half send failed (the kill) is not expected but may be stored if
    // its local transaction ran; none is stored twice.
    let executed_commits = listener
        .executed
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.starts_with("commit"))
        .count() as i64;
    assert!(
        stored >= expected.len() as i64 && stored <= executed_commits,
        "stored {stored}, acknowledged commits {}, executed commits {executed_commits}",
        expected.len()
    );
    assert_eq!(
        stored,
        bodies.len() as i64,
        "a committed transaction stored twice"
    );
}

/// SQL92 selectors (`MessageSelector::by_sql`) with `enablePropertyFilter=true`: the
/// stock push consumer starts (CHECK_CLIENT_CONFIG) and receives exactly the messages
/// its selector picks, by user property and `TAGS`; a bad selector fails to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql92_selectors_deliver_exactly_what_they_select() {
    let cluster = Cluster::start(&["enablePropertyFilter=true"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("sql92");
    let mut p = producer(&rt, &ns, "interop_pg_sql").await;
    for i in 0..40 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let m = Message::builder()
            .topic("InteropSql")
            .tags(tag)
            .body_slice(format!("m{i}").as_bytes())
            .raw_property("a", i.to_string())
            .expect("property")
            .build_unchecked();
        p.send_with_timeout(m, 5000).await.expect("send");
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_sql".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe_with_selector(
        "InteropSql",
        Some(rocketmq_client_rust::MessageSelector::by_sql(
            "a BETWEEN 10 AND 29 AND TAGS IN ('even') AND b IS NULL",
        )),
    )
    .await
    .expect("subscribe");
    c.register_message_listener_concurrently(Collect(got.clone()));
    c.start().await.expect("an SQL92 consumer starts");
    let want: BTreeSet<String> = (10..30)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("m{i}"))
        .collect();
    wait_for("the selected messages", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= want.len()
    })
    .await;
    // Every queue read to its end: nothing else will come.
    let c2 = ferrocket::client::Client::new(&ns);
    let route = c2.route("InteropSql").await.unwrap().unwrap();
    let queues = ferrocket::client::Client::write_queues(&route);
    wait_for_async_committed(&c2, &queues, "interop_cg_sql", "InteropSql").await;
    c.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, want);
    assert_eq!(got.lock().unwrap().len(), want.len(), "delivered once each");

    let mut bad = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_sql_bad".to_string())
        .name_server_addr(ns.clone())
        .build();
    bad.subscribe_with_selector(
        "InteropSql",
        Some(rocketmq_client_rust::MessageSelector::by_sql("a >")),
    )
    .await
    .expect("subscribe is local");
    bad.register_message_listener_concurrently(Collect(Arc::new(Mutex::new(Vec::new()))));
    assert!(
        bad.start().await.is_err(),
        "a selector the broker cannot parse"
    );
    p.shutdown().await;
}

/// Waits until the group's committed offset of every queue reaches the queue's end.
async fn wait_for_async_committed(
    c: &ferrocket::client::Client,
    queues: &[ferrocket::client::QueueAddr],
    group: &str,
    topic: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for q in queues {
            let max = c.max_offset(q, topic).await.unwrap_or(0);
            let committed = c
                .committed(q, topic, group)
                .await
                .ok()
                .flatten()
                .unwrap_or(-1);
            done &= committed >= max;
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offsets never reached the queues' ends"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Forwards each received message to a channel (a responder that answers them).
struct Forward(tokio::sync::mpsc::UnboundedSender<Message>);

impl MessageListenerConcurrently for Forward {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        for m in msgs {
            let _ = self.0.send(m.message.clone());
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

/// Request-reply with the stock client: `producer.request` waits for the answer a
/// responder sends with `MessageUtil::create_reply_message`; the broker pushes it to
/// the requester (PUSH_REPLY_MESSAGE_TO_CLIENT) and stores it in the reply topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_reply_round_trips_through_the_broker() {
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("request-reply");
    // The topic exists before the responder subscribes.
    let mut requester = producer(&rt, &ns, "interop_pg_requester").await;
    requester
        .send_with_timeout(message("InteropRequest", "warm", "warm-up"), 5000)
        .await
        .expect("warm-up send");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut responder_consumer = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_responder".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromLastOffset)
        .build();
    responder_consumer
        .subscribe("InteropRequest", "ask")
        .await
        .expect("subscribe");
    responder_consumer.register_message_listener_concurrently(Forward(tx));
    responder_consumer.start().await.expect("responder start");
    let mut responder = producer(&rt, &ns, "interop_pg_responder").await;
    let answering = tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let body = req
                .get_body()
                .map(|b| String::from_utf8_lossy(b).to_uppercase())
                .unwrap_or_default();
            let reply =
                rocketmq_client_rust::MessageUtil::create_reply_message(&req, body.as_bytes())
                    .expect("the request carries CLUSTER");
            responder
                .send_with_timeout(reply, 5000)
                .await
                .expect("reply send");
        }
        responder.shutdown().await;
    });
    for i in 0..5 {
        let body = format!("question-{i}");
        let reply = requester
            .request(message("InteropRequest", "ask", &body), 15_000)
            .await
            .expect("a reply");
        assert_eq!(body_of(reply.get_body()), body.to_uppercase());
    }
    requester.shutdown().await;
    responder_consumer.shutdown().await;
    answering.abort();
    assert_eq!(
        stored_in(&ns, "DefaultCluster_REPLY_TOPIC").await,
        5,
        "replies are stored in the reply topic"
    );
}

/// Broadcasting consumers: every instance of the group receives every message (their
/// offsets are kept by the clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcasting_consumers_each_receive_every_message() {
    use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("broadcast");
    let mut p = producer(&rt, &ns, "interop_pg_bc").await;
    p.send_with_timeout(message("InteropBroadcast", "T", "warm-up"), 5000)
        .await
        .expect("warm-up send");
    let sinks: Vec<Sink> = (0..2).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let mut consumers = Vec::new();
    for (n, sink) in sinks.iter().enumerate() {
        // Two instances of one group: two client instances, as two processes would be.
        let mut config = rocketmq_client_rust::ClientConfig::default();
        config.set_instance_name(format!("bc-{n}").into());
        let mut c = DefaultMQPushConsumer::builder(rt.clone())
            .client_config(config)
            .consumer_group("interop_cg_bc".to_string())
            .name_server_addr(ns.clone())
            .message_model(MessageModel::Broadcasting)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .build();
        c.subscribe("InteropBroadcast", "*")
            .await
            .expect("subscribe");
        c.register_message_listener_concurrently(Collect(sink.clone()));
        c.start().await.expect("consumer start");
        consumers.push(c);
    }
    let mut want = BTreeSet::new();
    for i in 0..20 {
        let body = format!("bc-{i}");
        p.send_with_timeout(message("InteropBroadcast", "T", &body), 5000)
            .await
            .expect("send");
        want.insert(body);
    }
    for (n, sink) in sinks.iter().enumerate() {
        wait_for(
            &format!("consumer {n} to receive all"),
            Duration::from_secs(60),
            || {
                let got: BTreeSet<String> = sink
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, b)| b.clone())
                    .collect();
                want.is_subset(&got)
            },
        )
        .await;
    }
    for mut c in consumers {
        c.shutdown().await;
    }
    p.shutdown().await;
}

/// (body, store time of the delivered copy, its `TIMER_OUT_MS`).
type Timed = Arc<Mutex<Vec<(String, i64, i64)>>>;

struct CollectTimed(Timed);

impl MessageListenerConcurrently for CollectTimed {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        let mut got = self.0.lock().unwrap();
        for m in msgs {
            let out = m
                .property(&"TIMER_OUT_MS".into())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            got.push((body_of(m.get_body()), m.store_timestamp, out));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 5.x timer messages from the stock client (`deliver_time_ms`, `delay_secs`,
/// `delay_millis`): none is delivered before its time, each within a precision and a
/// second after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timer_messages_arrive_on_time_and_never_early() {
    let cluster = Cluster::start(&["timerPrecisionMs=100"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("timers");
    let mut p = producer(&rt, &ns, "interop_pg_timer").await;
    let mut due = BTreeMap::new();
    for i in 0..12 {
        let body = format!("t{i}");
        let sent = epoch_ms();
        let b = Message::builder()
            .topic("InteropTimer")
            .tags("T")
            .body_slice(body.as_bytes());
        // A delay counts from when the broker receives the message: somewhere between
        // the send and its answer. An absolute time is exact.
        let (b, at, delay) = match i % 3 {
            0 => (b.deliver_time_ms((sent + 2500) as u64), sent + 2500, None),
            1 => (b.delay_secs(2), sent + 2000, Some(2000)),
            _ => (b.delay_millis(1800), sent + 1800, Some(1800)),
        };
        p.send_with_timeout(b.build_unchecked(), 5000)
            .await
            .expect("send");
        let latest = delay.map_or(at, |d| epoch_ms() + d);
        due.insert(body, (at, latest));
    }
    p.shutdown().await;
    let got: Timed = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_timer".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("InteropTimer", "*").await.expect("subscribe");
    c.register_message_listener_concurrently(CollectTimed(got.clone()));
    c.start().await.expect("consumer start");
    wait_for("every timer message", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= due.len()
    })
    .await;
    c.shutdown().await;
    for (body, stored, out) in got.lock().unwrap().iter() {
        let (at, latest) = due[body];
        assert!(*stored >= at, "{body} delivered {} ms early", at - stored);
        assert!(
            *stored <= latest + 1100,
            "{body} delivered {} ms late",
            stored - latest
        );
        assert!(
            *out >= at && *out < latest + 100,
            "{body}: TIMER_OUT_MS {out} for {at}..{latest}"
        );
    }
}

/// Timer messages survive a kill -9: those that fell due while the broker was down are
/// delivered right after it starts, the later one at its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timer_messages_due_during_downtime_are_delivered_after_restart() {
    let mut cluster = Cluster::start(&["timerPrecisionMs=100"]);
    let ns = cluster.namesrv.addr.clone();
    let rt = client_runtime("timers-restart");
    let mut p = producer(&rt, &ns, "interop_pg_timer_restart").await;
    let sent = epoch_ms();
    for i in 0..5 {
        let m = Message::builder()
            .topic("InteropTimerRestart")
            .tags("T")
            .body_slice(format!("early{i}").as_bytes())
            .delay_millis(1500)
            .build_unchecked();
        p.send_with_timeout(m, 5000).await.expect("send");
    }
    let late_at = sent + 8000;
    let m = Message::builder()
        .topic("InteropTimerRestart")
        .tags("T")
        .body_slice(b"late")
        .deliver_time_ms(late_at as u64)
        .build_unchecked();
    p.send_with_timeout(m, 5000).await.expect("send");
    p.shutdown().await;
    cluster.broker.kill9();
    // Down until the first five are due.
    wait_for("the first messages' time", Duration::from_secs(10), || {
        epoch_ms() > sent + 2000
    })
    .await;
    cluster.restart_broker();
    let restarted = epoch_ms();
    let got: Timed = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group("interop_cg_timer_restart".to_string())
        .name_server_addr(ns.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("InteropTimerRestart", "*")
        .await
        .expect("subscribe");
    c.register_message_listener_concurrently(CollectTimed(got.clone()));
    c.start().await.expect("consumer start");
    wait_for("every timer message", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 6
    })
    .await;
    c.shutdown().await;
    let got = got.lock().unwrap().clone();
    let bodies: BTreeSet<String> = got.iter().map(|(b, _, _)| b.clone()).collect();
    assert_eq!(bodies.len(), 6, "each delivered: {got:?}");
    for (body, stored, _) in &got {
        if body == "late" {
            assert!(
                *stored >= late_at && *stored <= late_at + 1100,
                "late one at {stored}"
            );
        } else {
            assert!(*stored >= restarted, "{body} before the restart?");
            assert!(
                *stored <= restarted + 5000,
                "{body} not delivered right after start"
            );
        }
    }
}

/// GET_CONSUMER_RUNNING_INFO (307) and INVOKE_BROKER_TO_RESET_OFFSET (222) reach a
/// stock consumer through the broker: the running info is the client's answer, and a
/// reset to the beginning makes it consume everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_requests_are_relayed_to_a_stock_consumer() {
    use ferrocket::remoting::codes::{request, response};
    use ferrocket::remoting::{RemotingClient, RemotingCommand};
    let cluster = Cluster::start(&[]);
    let ns = cluster.namesrv.addr.clone();
    let broker = cluster.broker.addr.clone();
    let rt = client_runtime("relay");
    let mut p = producer(&rt, &ns, "interop_pg_relay").await;
    for i in 0..5 {
        p.send_with_timeout(message("InteropRelay", "T", &format!("r{i}")), 5000)
            .await
            .expect("send");
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(
        &rt,
        &ns,
        "interop_cg_relay",
        "InteropRelay",
        "*",
        got.clone(),
    )
    .await;
    wait_for("five messages", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 5
    })
    .await;
    let rc = RemotingClient::new();
    let t = Duration::from_secs(10);
    let ids = rc
        .invoke(
            &broker,
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "interop_cg_relay"),
            t,
        )
        .await
        .unwrap();
    let ids: serde_json::Value = serde_json::from_slice(&ids.body_bytes()).unwrap();
    let client_id = ids["consumerIdList"][0].as_str().unwrap().to_owned();
    let r = rc
        .invoke(
            &broker,
            RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
                .with_ext("consumerGroup", "interop_cg_relay")
                .with_ext("clientId", &client_id)
                .with_ext("jstackEnable", false),
            t,
        )
        .await
        .unwrap();
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let body = String::from_utf8_lossy(&r.body_bytes()).into_owned();
    assert!(
        body.contains("InteropRelay"),
        "running info names the subscription: {body}"
    );
    // Wait until the offsets are committed, then reset to the start.
    let c2 = ferrocket::client::Client::new(&ns);
    let route = c2.route("InteropRelay").await.unwrap().unwrap();
    let queues = ferrocket::client::Client::write_queues(&route);
    wait_for_async_committed(&c2, &queues, "interop_cg_relay", "InteropRelay").await;
    let r = rc
        .invoke(
            &broker,
            RemotingCommand::request(request::INVOKE_BROKER_TO_RESET_OFFSET)
                .with_ext("topic", "InteropRelay")
                .with_ext("group", "interop_cg_relay")
                .with_ext("timestamp", 0)
                .with_ext("isForce", true),
            t,
        )
        .await
        .unwrap();
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    wait_for("everything consumed again", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 10
    })
    .await;
    c.shutdown().await;
    p.shutdown().await;
}

/// The registered master of broker name `name` (its address), from the name server.
fn registered_master(ns: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
        .args(["admin", "--namesrv", ns, "--json", "cluster"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["brokerAddrTable"][name]["brokerAddrs"]["0"]
        .as_str()
        .map(str::to_owned)
}

/// A Raft group of three (`enableDLegerCommitLog=true`) under 32 senders of the stock
/// client (4 producers × 8 tasks): `kill -9` of the leader; a producer started after
/// it sends to the new leader within 5 s of the kill; every message the stock client
/// saw acknowledged is consumed (by the stock push consumer) from the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_group_survives_the_leaders_kill_9_under_the_stock_client() {
    let kit = ferrocket_interop::kit();
    let ns = kit.namesrv();
    let peers = (0..3)
        .map(|i| format!("n{i}-127.0.0.1:{}", ferrocket_interop::free_port()))
        .collect::<Vec<_>>()
        .join(";");
    let root = tempfile::tempdir().unwrap();
    let mut brokers: Vec<ferrocket_interop::Proc> = (0..3)
        .map(|i| {
            kit.broker(
                &ns.addr,
                &root.path().join(format!("n{i}")),
                &[
                    "brokerName=raft-i".to_string(),
                    "enableDLegerCommitLog=true".to_string(),
                    format!("dLegerPeers={peers}"),
                    format!("dLegerSelfId=n{i}"),
                    "registerNameServerPeriod=1000".to_string(),
                ],
            )
        })
        .collect();
    wait_for("a registered leader", Duration::from_secs(30), || {
        registered_master(&ns.addr, "raft-i").is_some()
    })
    .await;
    let leader = registered_master(&ns.addr, "raft-i").expect("a leader");
    let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
        .args([
            "admin",
            "--namesrv",
            &ns.addr,
            "topic",
            "create",
            "--topic",
            "InteropRaft",
        ])
        .args(["--queues", "8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The followers copy the topic from the leader (metadata sync) before it dies.
    let fc = ferrocket::client::Client::new(&ns.addr);
    for b in brokers.iter().filter(|b| b.addr != leader) {
        let q = ferrocket::client::QueueAddr {
            broker_name: "raft-i".into(),
            addr: b.addr.clone(),
            queue_id: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fc
            .pull(&q, "InteropRaft", "g", 0, 0)
            .await
            .is_ok_and(|r| r.code != ferrocket::remoting::codes::response::TOPIC_NOT_EXIST)
        {
            assert!(
                Instant::now() < deadline,
                "the topic never reached {}",
                b.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let rt = client_runtime("raft");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for g in 0..4 {
        let p = Arc::new(producer(&rt, &ns.addr, &format!("interop_pg_raft{g}")).await);
        for t in 0..8 {
            let (p, acked) = (p.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let body = format!("g{g}t{t}-{i}");
                    match p
                        .send_with_timeout(message("InteropRaft", "R", &body), 3000)
                        .await
                    {
                        Ok(Some(r)) if format!("{:?}", r.send_status) == "SendOk" => {
                            acked.lock().unwrap().insert(body);
                        }
                        _ => return,
                    }
                }
            }));
        }
    }
    wait_for("acknowledged sends", Duration::from_secs(30), || {
        acked.lock().unwrap().len() > 500
    })
    .await;
    let victim = brokers.iter().position(|b| b.addr == leader).unwrap();
    brokers[victim].kill9();
    let killed = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    // A new leader registers; a producer started now sends to it.
    wait_for("a new leader", Duration::from_secs(10), || {
        registered_master(&ns.addr, "raft-i").is_some_and(|m| m != leader)
    })
    .await;
    let p = producer(&rt, &ns.addr, "interop_pg_raft_after").await;
    loop {
        if let Ok(Some(r)) = p
            .send_with_timeout(message("InteropRaft", "R", "after"), 3000)
            .await
        {
            if format!("{:?}", r.send_status) == "SendOk" {
                acked.lock().unwrap().insert("after".into());
                break;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no send acknowledged after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_first_send = killed.elapsed();
    let acked = acked.lock().unwrap().clone();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = push_consumer(
        &rt,
        &ns.addr,
        "interop_cg_raft",
        "InteropRaft",
        "*",
        got.clone(),
    )
    .await;
    wait_for(
        "every acknowledged message",
        Duration::from_secs(90),
        || {
            let got: BTreeSet<String> =
                got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
            acked.iter().all(|a| got.contains(a))
        },
    )
    .await;
    c.shutdown().await;
    let n = got.lock().unwrap().len();
    eprintln!(
        "raft kill -9 of the leader under the stock client: {} acknowledged, {n} consumed \
         ({} duplicates or unacknowledged), 0 lost, kill to the first acknowledged send {} ms",
        acked.len(),
        n.saturating_sub(acked.len()),
        to_first_send.as_millis()
    );
    assert!(
        to_first_send < Duration::from_secs(5),
        "the new leader took {to_first_send:?} to take a send"
    );
}

/// Plain ACL (`aclEnable=true`) with the stock client's own `AclClientRPCHook`: the
/// right secret sends and consumes, a wrong secret and a topic with SUB only are
/// refused, and the consumer receives exactly what was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acl_signed_stock_client_sends_and_consumes_and_strangers_are_refused() {
    use rocketmq_client_rust::{AclClientRPCHook, SessionCredentials};
    let acl_dir = tempfile::tempdir().expect("temp dir");
    let file = acl_dir.path().join("plain_acl.yml");
    std::fs::write(
        &file,
        "accounts:\n  - accessKey: admin-account\n    secretKey: admin-secret-1\n    admin: true\n  \
         - accessKey: app-account\n    secretKey: app-secret-1\n    defaultTopicPerm: DENY\n    \
         defaultGroupPerm: SUB\n    topicPerms:\n      - AclOrders=PUB|SUB\n      - AclAudit=SUB\n",
    )
    .expect("acl file");
    let cluster = Cluster::start(&["aclEnable=true", &format!("aclFile={}", file.display())]);
    let ns = cluster.namesrv.addr.clone();
    // Topics, by the admin account (ferrocket's own client, signing).
    let mut admin = ferrocket::client::Client::new(&ns);
    admin.remoting = Arc::new(ferrocket::remoting::RemotingClient::signing(
        ferrocket::auth::Credentials::new("admin-account", b"admin-secret-1").expect("creds"),
    ));
    wait_for_async_topic(&admin, "AclOrders").await;
    admin
        .create_topic("AclAudit", 4)
        .await
        .expect("create AclAudit");

    let hook = |secret: &str| {
        Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
            "app-account",
            secret.to_string(),
        )))
    };
    let rt = client_runtime("acl");
    signed_stock_clients_keep_to_their_rights(
        &rt,
        &ns,
        hook("app-secret-1"),
        hook("not-the-secret"),
        ("AclOrders", "AclAudit"),
        "acl",
    )
    .await;
}

/// The stock producer and push consumer signed with `good` (an `AclClientRPCHook`):
/// 5 sends to `topics.0` are acknowledged and exactly those 5 are consumed (group
/// `<prefix>_cg`); a send to `topics.1` and a producer signed with `bad` are refused.
async fn signed_stock_clients_keep_to_their_rights(
    rt: &Arc<ClientRuntime>,
    ns: &str,
    good: Arc<rocketmq_client_rust::AclClientRPCHook>,
    bad: Arc<rocketmq_client_rust::AclClientRPCHook>,
    (allowed, denied_topic): (&str, &str),
    prefix: &str,
) {
    let mut p = DefaultMQProducer::builder(rt.clone())
        .producer_group(format!("{prefix}_pg"))
        .name_server_addr(ns.to_string())
        .rpc_hook(good.clone())
        .build();
    p.start().await.expect("producer start");
    for i in 0..5 {
        let r = p
            .send_with_timeout(message(allowed, "T", &format!("ok-{i}")), 5000)
            .await
            .expect("a signed send")
            .expect("a send result");
        assert_eq!(format!("{:?}", r.send_status), "SendOk");
    }
    let denied = p
        .send_with_timeout(message(denied_topic, "T", "refused-topic"), 3000)
        .await;
    assert!(
        !matches!(&denied, Ok(Some(r)) if format!("{:?}", r.send_status) == "SendOk"),
        "a send to {denied_topic} was accepted: {denied:?}"
    );
    p.shutdown().await;
    let mut wrong = DefaultMQProducer::builder(rt.clone())
        .producer_group(format!("{prefix}_pg_wrong"))
        .name_server_addr(ns.to_string())
        .rpc_hook(bad)
        .build();
    wrong.start().await.expect("producer start");
    let refused = wrong
        .send_with_timeout(message(allowed, "T", "refused-secret"), 3000)
        .await;
    assert!(
        !matches!(&refused, Ok(Some(r)) if format!("{:?}", r.send_status) == "SendOk"),
        "a send with a wrong secret was accepted: {refused:?}"
    );
    wrong.shutdown().await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .consumer_group(format!("{prefix}_cg"))
        .name_server_addr(ns.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .rpc_hook(Some(good))
        .build();
    c.subscribe(allowed, "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Collect(got.clone()));
    c.start().await.expect("consumer start");
    wait_for("5 messages", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    let want: BTreeSet<String> = (0..5).map(|i| format!("ok-{i}")).collect();
    assert_eq!(bodies, want, "exactly the accepted messages");
}

/// Creates `topic` (4 queues) once the broker has registered.
async fn wait_for_async_topic(admin: &ferrocket::client::Client, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match admin.create_topic(topic, 4).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "creating {topic}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TLS in `enforcing` mode on the name server and the broker (which registers over
/// TLS): the stock producer and push consumer with `use_tls` and a trust file (the
/// transport's `tls` feature, verifying the server's certificate) send and receive;
/// a stock producer without TLS gets no route and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_client_over_tls_sends_and_consumes_and_plain_clients_are_closed() {
    // This test binary links two rustls providers (ring, and aws-lc-rs through the
    // operator's dependencies), so, as an application in that position must, it names
    // the process default the stock transport's TLS uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = tempfile::tempdir().expect("temp dir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    let cert = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    let (ca_pem, cert_pem, key_pem) = (
        certs.path().join("ca.pem"),
        certs.path().join("cert.pem"),
        certs.path().join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).expect("write");
    std::fs::write(&cert_pem, cert.pem()).expect("write");
    std::fs::write(&key_pem, key.serialize_pem()).expect("write");

    let kit = ferrocket_interop::kit();
    let ns = kit.spawn(&[
        "namesrv".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--tls-mode".into(),
        "enforcing".into(),
        "--tls-cert".into(),
        cert_pem.display().to_string(),
        "--tls-key".into(),
        key_pem.display().to_string(),
    ]);
    let store = tempfile::tempdir().expect("temp dir");
    let _broker = kit.broker(
        &ns.addr,
        store.path(),
        &[
            "tls.server.mode=enforcing".into(),
            format!("tls.server.certPath={}", cert_pem.display()),
            format!("tls.server.keyPath={}", key_pem.display()),
            "tls.enable=true".into(),
            format!("tls.client.trustCertPath={}", ca_pem.display()),
        ],
    );
    let mut admin = ferrocket::client::Client::new(&ns.addr);
    admin.remoting = Arc::new(
        ferrocket::remoting::RemotingClient::new()
            .with_tls(ferrocket::remoting::tls::TlsClient::load(&ca_pem, None).expect("trust")),
    );
    wait_for_async_topic(&admin, "TlsOrders").await;

    let tls_config = || {
        let mut cc = rocketmq_client_rust::ClientConfig::default();
        cc.set_use_tls(true);
        cc.set_tls_client_auth_server(true);
        cc.set_tls_client_trust_cert_path(ca_pem.display().to_string());
        cc
    };
    let rt = client_runtime("tls");
    let mut p = DefaultMQProducer::builder(rt.clone())
        .client_config(tls_config())
        .producer_group("tls_pg".to_string())
        .name_server_addr(ns.addr.clone())
        .build();
    p.start().await.expect("producer start");
    for i in 0..5 {
        let r = p
            .send_with_timeout(message("TlsOrders", "T", &format!("tls-{i}")), 5000)
            .await
            .expect("a send over TLS")
            .expect("a send result");
        assert_eq!(format!("{:?}", r.send_status), "SendOk");
    }
    p.shutdown().await;

    let mut plain = DefaultMQProducer::builder(rt.clone())
        .producer_group("plain_pg".to_string())
        .name_server_addr(ns.addr.clone())
        .build();
    plain.start().await.expect("producer start");
    let refused = plain
        .send_with_timeout(message("TlsOrders", "T", "plain"), 3000)
        .await;
    assert!(
        !matches!(&refused, Ok(Some(r)) if format!("{:?}", r.send_status) == "SendOk"),
        "a plain client's send was accepted: {refused:?}"
    );
    plain.shutdown().await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let mut c = DefaultMQPushConsumer::builder(rt.clone())
        .client_config(tls_config())
        .consumer_group("tls_cg".to_string())
        .name_server_addr(ns.addr.clone())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    c.subscribe("TlsOrders", "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Collect(got.clone()));
    c.start().await.expect("consumer start");
    wait_for("5 messages over TLS", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= 5
    })
    .await;
    c.shutdown().await;
    let bodies: BTreeSet<String> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    let want: BTreeSet<String> = (0..5).map(|i| format!("tls-{i}")).collect();
    assert_eq!(bodies, want, "exactly the messages sent over TLS");
}

/// ACL 2.0 (`authenticationEnabled` and `authorizationEnabled`) driven by the stock
/// client alone: its admin (`DefaultMQAdminExt`, signed as the Super user of
/// `initAuthenticationUser`) creates a Normal user and its policies with the AUTH
/// requests; the stock producer and push consumer signed as that user send and
/// receive on the allowed topic; a topic without a policy, a wrong password and the
/// same admin signed as the Normal user are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acl2_users_and_policies_made_by_the_stock_admin_govern_stock_clients() {
    use rocketmq_client_rust::{
        AclClientRPCHook, AuthAdmin, DefaultMQAdminExt, SessionCredentials,
    };
    let cluster = Cluster::start(&[
        "authenticationEnabled=true",
        "authorizationEnabled=true",
        r#"initAuthenticationUser={"username":"root","password":"root-secret-1"}"#,
        "autoCreateTopicEnable=false",
    ]);
    let ns = cluster.namesrv.addr.clone();
    let broker = cluster.broker.addr.clone();
    let hook = |user: &str, secret: &str| {
        Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
            user.to_string(),
            secret.to_string(),
        )))
    };
    let rt = client_runtime("acl2");
    let mut admin = DefaultMQAdminExt::with_rpc_hook(rt.clone(), hook("root", "root-secret-1"));
    admin.set_namesrv_addr(ns.as_str());
    admin.start().await.expect("admin start");
    admin
        .create_user(
            broker.as_str().into(),
            "app".into(),
            "app-secret-1".into(),
            "Normal".into(),
        )
        .await
        .expect("create the user");
    for (resource, actions) in [
        ("Topic:Acl2Orders", vec!["Pub", "Sub"]),
        ("Group:acl2_*", vec!["Sub"]),
    ] {
        admin
            .create_acl(
                broker.as_str().into(),
                "User:app".into(),
                vec![resource.into()],
                actions.into_iter().map(Into::into).collect(),
                vec![],
                "Allow".into(),
            )
            .await
            .expect("create the policy");
    }
    let user = admin
        .get_user(broker.as_str().into(), "app".into())
        .await
        .expect("get the user")
        .expect("the user exists");
    assert_eq!(user.user_type.as_deref(), Some("Normal"));
    // Topics, by the Super user (ferrocket's own client, signing).
    let mut root = ferrocket::client::Client::new(&ns);
    root.remoting = Arc::new(ferrocket::remoting::RemotingClient::signing(
        ferrocket::auth::Credentials::new("root", b"root-secret-1").expect("creds"),
    ));
    wait_for_async_topic(&root, "Acl2Orders").await;
    root.create_topic("Acl2Audit", 4)
        .await
        .expect("create Acl2Audit");

    // The same stock admin signed as the Normal user: no Cluster Update, refused.
    let mut as_app = DefaultMQAdminExt::with_rpc_hook(rt.clone(), hook("app", "app-secret-1"));
    as_app.set_namesrv_addr(ns.as_str());
    as_app.start().await.expect("admin start");
    let escalate = as_app
        .create_user(
            broker.as_str().into(),
            "evil".into(),
            "evil-secret".into(),
            "Super".into(),
        )
        .await;
    assert!(escalate.is_err(), "a Normal user created a Super user");
    as_app.shutdown().await;

    signed_stock_clients_keep_to_their_rights(
        &rt,
        &ns,
        hook("app", "app-secret-1"),
        hook("app", "not-the-secret"),
        ("Acl2Orders", "Acl2Audit"),
        "acl2",
    )
    .await;
    admin.shutdown().await;
}
