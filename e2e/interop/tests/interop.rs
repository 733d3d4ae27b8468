//! The unmodified `rocketmq-client-rust` 1.0 client against real ferrocket processes.

use std::collections::BTreeSet;
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

struct Collect(Arc<Mutex<Vec<(String, String)>>>);

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
