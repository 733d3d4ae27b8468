//! The operator's failover end to end on this machine: the reconciler runs against an
//! in-memory Kubernetes API (`kube-fake-client`) whose pods stand for real `ferrocket`
//! broker processes on loopback ports; the broker calls are the production ones
//! (`RemotingAdmin`). A SYNC_MASTER is killed with `kill -9` under load, its pod is
//! marked unready past the grace period, and the operator promotes the best slave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocket::client::acked::AckedLog;
use ferrocket::client::role::broker_state;
use ferrocket::client::{split_records, Client, OutMessage, QueueAddr};
use ferrocket::remoting::codes::response;
use ferrocket::store::decode_record;
use ferrocket_interop::{broker_args, free_port, Proc};
use ferrocket_operator::builders::{labels, BuildConfig};
use ferrocket_operator::controller::{reconcile_broker_group, Context};
use ferrocket_operator::crd::{BrokerGroup, BrokerGroupSpec};
use ferrocket_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client as KubeClient;
use kube_fake_client::ClientBuilder;

const NS: &str = "mq";
const T: Duration = Duration::from_secs(5);

fn q(addr: &str, queue_id: i32) -> QueueAddr {
    QueueAddr {
        broker_name: "broker-a".into(),
        addr: addr.into(),
        queue_id,
    }
}

async fn set_pod(k: &KubeClient, name: &str, ready: bool, since_secs_ago: i64) {
    let pods: Api<Pod> = Api::namespaced(k.clone(), NS);
    if pods.get_opt(name).await.unwrap().is_none() {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some(NS.into());
        pod.metadata.labels = Some(labels("broker-a", "broker"));
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let since = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(since_secs_ago);
    let status = serde_json::json!({"status": {
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": since.to_string()}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_promotes_the_best_slave_of_a_killed_sync_master_without_losing_acked_messages() {
    // Three real brokers of group broker-a.
    let ns = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ha = free_port();
    let mut master = Proc::spawn(&broker_args(
        &ns.addr,
        dirs[0].path(),
        None,
        &[
            "brokerRole=SYNC_MASTER".into(),
            "roleEpoch=1".into(),
            format!("haListenPort={ha}"),
        ],
    ));
    let slaves: Vec<Proc> = (1..3)
        .map(|i| {
            Proc::spawn(&broker_args(
                &ns.addr,
                dirs[i].path(),
                None,
                &[
                    "brokerRole=SLAVE".into(),
                    format!("brokerId={}", i + 1),
                    "roleEpoch=1".into(),
                    "masterRole=SYNC_MASTER".into(),
                    format!("haMasterAddress=127.0.0.1:{ha}"),
                    format!("haListenPort={}", free_port()),
                ],
            ))
        })
        .collect();
    let addrs: Vec<String> = std::iter::once(master.addr.clone())
        .chain(slaves.iter().map(|s| s.addr.clone()))
        .collect();

    // The BrokerGroup in the in-memory API, its pods pointing at those processes.
    let spec = BrokerGroupSpec {
        name_server_address: Some(ns.addr.clone()),
        replicas: 3,
        replication: ferrocket_operator::crd::Replication::SyncMaster,
        failover: ferrocket_operator::crd::Failover {
            enabled: true,
            unready_grace_seconds: 2,
        },
        ..BrokerGroupSpec::default()
    };
    let mut bg = BrokerGroup::new("broker-a", spec);
    bg.metadata.namespace = Some(NS.into());
    let k = ClientBuilder::new()
        .with_resource::<BrokerGroup>()
        .with_status_subresource::<BrokerGroup>()
        .with_object(bg)
        .build()
        .await
        .unwrap();
    let by_pod = addrs.clone();
    let ctx = Arc::new(
        Context::new(
            k.clone(),
            Arc::new(Metrics::default()),
            BuildConfig::default(),
            "test",
        )
        .with_broker_addr(Arc::new(move |p: &Pod| {
            let ordinal: usize = p
                .metadata
                .name
                .as_deref()?
                .rsplit('-')
                .next()?
                .parse()
                .ok()?;
            by_pod.get(ordinal).cloned()
        })),
    );
    let bgs: Api<BrokerGroup> = Api::namespaced(k.clone(), NS);
    let reconcile = || async {
        let bg = bgs.get("broker-a").await.unwrap();
        reconcile_broker_group(Arc::new(bg), Arc::clone(&ctx))
            .await
            .unwrap();
        bgs.get("broker-a").await.unwrap()
    };
    reconcile().await;
    for i in 0..3 {
        set_pod(&k, &format!("broker-a-{i}"), true, 100).await;
    }

    // Load: 16 producers of 1 KiB messages until the master dies.
    let c = Client::new(&ns.addr);
    c.create_topic("OpFail", 4).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker_state(&c.remoting, &addrs[0], T)
        .await
        .unwrap()
        .ha_connections
        < 2
    {
        assert!(Instant::now() < deadline, "slaves never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slaves copy the topic before the master dies (metadata sync).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let bg = reconcile().await;
    let offsets: Vec<i64> = bg
        .status
        .unwrap()
        .brokers
        .iter()
        .map(|b| b.max_offset)
        .collect();
    assert_eq!(offsets.len(), 3);
    let log = Arc::new(AckedLog::new());
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let (c, log, stop, addr) = (
                c.clone(),
                Arc::clone(&log),
                Arc::clone(&stop),
                addrs[0].clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("p{p}-{i}");
                    i += 1;
                    log.attempted();
                    let mut body = id.clone().into_bytes();
                    body.push(b'|');
                    body.resize(1024, b'x');
                    let m = OutMessage {
                        tag: None,
                        keys: None,
                        body: Bytes::from(body),
                    };
                    match c.send("OpFail", &q(&addr, p % 4), &[m]).await {
                        Ok(r) if r.code == response::SUCCESS => log.acked(id),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    master.kill9();
    let died = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = p.await;
    }
    assert!(log.acked_count() > 100, "acked {}", log.acked_count());

    // The kubelet marks the pod unready; within the grace the operator waits.
    set_pod(&k, "broker-a-0", false, 0).await;
    let bg = reconcile().await;
    assert_eq!(
        bg.status.as_ref().unwrap().epoch,
        1,
        "no failover inside the grace period"
    );
    // Past the grace: the operator promotes the slave with the highest confirmed offset.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let bg = reconcile().await;
    let st = bg.status.unwrap();
    assert_eq!(st.epoch, 2);
    let new_master = st.master.clone().unwrap();
    assert_ne!(new_master, "broker-a-0");
    let ordinal: usize = new_master.rsplit('-').next().unwrap().parse().unwrap();
    let new_addr = addrs[ordinal].clone();
    let roles: ConfigMap = Api::namespaced(k.clone(), NS)
        .get("broker-a-roles")
        .await
        .unwrap();
    assert_eq!(
        roles.data.unwrap()["roles"],
        format!("master={new_master}\nepoch=2\n")
    );
    // The real broker took the role; the other slave follows it (a SYNC send succeeds).
    let state = broker_state(&c.remoting, &new_addr, T).await.unwrap();
    assert_eq!((state.role.as_str(), state.epoch), ("SYNC_MASTER", 2));
    let mut accepted = false;
    for _ in 0..100 {
        let m = OutMessage {
            tag: None,
            keys: None,
            body: Bytes::from_static(b"after|"),
        };
        if let Ok(r) = c.send("OpFail", &q(&new_addr, 0), &[m]).await {
            if r.code == response::SUCCESS {
                accepted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the new master never acknowledged a send");
    let failover = died.elapsed();

    // Everything acknowledged is on the new master.
    let mut ids = Vec::new();
    for queue in 0..4 {
        let mut offset = 0;
        loop {
            let r = c
                .pull(&q(&new_addr, queue), "OpFail", "checker", offset, 0)
                .await
                .unwrap();
            let recs = split_records(r.body_bytes());
            if r.code != response::SUCCESS || recs.is_empty() {
                break;
            }
            for rec in &recs {
                let body = decode_record(rec).unwrap().body;
                let end = body.iter().position(|b| *b == b'|').unwrap_or(body.len());
                ids.push(String::from_utf8_lossy(&body[..end]).into_owned());
            }
            offset = r.ext_num("nextBeginOffset").unwrap();
        }
    }
    let report = log.check(ids.iter().map(String::as_str));
    eprintln!("operator failover: {report}; death to an acknowledged send on the new master {} ms (grace 2 s)", failover.as_millis());
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    // Steady afterwards: no further role changes.
    let bg = reconcile().await;
    assert_eq!(bg.status.unwrap().epoch, 2);
    drop(slaves);
}
