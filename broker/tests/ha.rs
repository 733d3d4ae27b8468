//! Master/slave replication with real `ferrocket` processes on loopback ports: byte-for-
//! byte copies, SYNC_MASTER acknowledgements, slave reads, failover under load after
//! `kill -9` with the acknowledged-writes checker, the old master rejoining as a slave,
//! partitions through a fault-injecting TCP proxy, and epoch fencing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocket::client::acked::AckedLog;
use ferrocket::client::role::{broker_state, change_role, fail_over, BrokerState, NewRole};
use ferrocket::client::{split_records, Client, ClientError, OutMessage, QueueAddr};
use ferrocket::remoting::codes::response;
use ferrocket::store::decode_record;
use ferrocket_testkit::net::ip;
use ferrocket_testkit::{commitlog_bytes as commitlog, id_of, tagged_message as msg};
use ferrocket_testkit::{skip, wait_until, Kit, Ports, Proc, Replicas};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_ferrocket");
const SEGMENT: u64 = 2 * 1024 * 1024;
const T: Duration = Duration::from_secs(5);

/// The kit with this suite's broker defaults: group `ha-a`, small segments, fast
/// re-registration.
fn kit() -> Kit {
    Kit::with_bin(BIN).defaults(&[
        "brokerName=ha-a",
        "mappedFileSizeCommitLog=2097152", // SEGMENT
        "maxMessageSize=1048576",
        "registerNameServerPeriod=1000",
    ])
}

fn namesrv() -> Proc {
    kit().namesrv()
}

/// A broker of group `ha-a` on `dir`, with `extra` settings, on ports the OS picks.
fn broker(ns: &str, dir: &Path, extra: &[String]) -> Proc {
    kit().broker(ns, dir, extra)
}

/// [`broker`] inside network namespace `netns` when given.
fn broker_in(netns: Option<&str>, ns: &str, dir: &Path, extra: &[String]) -> Proc {
    kit().broker_in(netns, ns, dir, Ports::ANY, extra)
}

fn master(ns: &str, dir: &Path, role: &str, extra: &[&str]) -> Proc {
    let mut e: Vec<String> = vec![
        format!("brokerRole={role}"),
        "brokerId=0".into(),
        "roleEpoch=1".into(),
        "syncFlushTimeout=3000".into(),
    ];
    e.extend(extra.iter().map(|s| s.to_string()));
    broker(ns, dir, &e)
}

fn slave(ns: &str, dir: &Path, id: i64, epoch: i64, master_ha: &str) -> Proc {
    kit().slave(ns, dir, id, epoch, master_ha, "SYNC_MASTER")
}

/// A SYNC_MASTER and two slaves under `root`, started and connected (the kit's
/// `replicas`).
fn sync_master_and_two_slaves(ns: &str, root: &Path) -> (Proc, Proc, Proc) {
    let g = kit().replicas(
        ns,
        root,
        "SYNC_MASTER",
        2,
        &["syncFlushTimeout=3000".into()],
    );
    let Replicas { master, slaves } = g;
    let [s1, s2]: [Proc; 2] = slaves.try_into().expect("two slaves");
    (master, s1, s2)
}

/// A control secret in `dir` (what the operator mounts from a Secret).
fn secret_file(dir: &Path) -> PathBuf {
    let p = dir.join("control-secret");
    std::fs::write(&p, "test-control-secret\n").unwrap();
    p
}

/// The `broker.conf` lines of a group whose HA port requires the control secret.
fn ha_signed(secret: &Path) -> [String; 2] {
    [
        "haRequireSignature=true".to_owned(),
        format!("controlSecretFile={}", secret.display()),
    ]
}

/// A client signing every request with the secret in `path`.
fn signing_client(ns: &str, path: &Path) -> Client {
    let creds =
        ferrocket::auth::Credentials::from_file(ferrocket::auth::DEFAULT_CONTROL_ACCESS_KEY, path)
            .unwrap();
    let mut c = Client::new(ns);
    c.remoting = Arc::new(ferrocket::remoting::RemotingClient::signing(creds));
    c
}

/// `r` is a NO_PERMISSION refusal whose remark contains `remark`.
fn assert_refused<T: std::fmt::Debug>(r: Result<T, ClientError>, remark: &str) {
    match r {
        Err(ClientError::Refused {
            code, remark: got, ..
        }) => {
            assert_eq!(code, response::NO_PERMISSION, "{got}");
            assert!(got.contains(remark), "remark `{got}` lacks `{remark}`");
        }
        other => panic!("expected a NO_PERMISSION refusal, got {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn state(rt: &tokio::runtime::Runtime, c: &Client, addr: &str) -> BrokerState {
    rt.block_on(broker_state(&c.remoting, addr, T)).unwrap()
}

/// The answer code of one 256-byte send of `id` to queue 0 of `topic` on `addr`.
fn send_code(rt: &tokio::runtime::Runtime, c: &Client, topic: &str, addr: &str, id: &str) -> i32 {
    match rt.block_on(c.send(topic, &q(addr, 0), &[msg(id, 256)])) {
        Ok(r) => r.code,
        Err(ClientError::Refused { code, .. }) => code,
        Err(e) => panic!("{e}"),
    }
}

/// A broker's configuration as GET_BROKER_CONFIG answers it.
fn broker_config(rt: &tokio::runtime::Runtime, c: &Client, addr: &str) -> String {
    let cfg = rt
        .block_on(c.remoting.invoke(
            addr,
            ferrocket::remoting::RemotingCommand::request(
                ferrocket::remoting::codes::request::GET_BROKER_CONFIG,
            ),
            T,
        ))
        .unwrap();
    String::from_utf8_lossy(&cfg.body_bytes()).into_owned()
}

/// Waits until `follower` holds `leader`'s whole CommitLog and checks they are equal byte
/// for byte.
fn converge(rt: &tokio::runtime::Runtime, c: &Client, leader: &Proc, follower: &Proc, what: &str) {
    let target = state(rt, c, &leader.addr).max_offset;
    wait_until(what, Duration::from_secs(15), || {
        state(rt, c, &follower.addr).max_offset == target
    });
    assert!(
        commitlog(&follower.dir, target) == commitlog(&leader.dir, target),
        "{what}: the logs differ"
    );
}

fn q(addr: &str, queue_id: i32) -> QueueAddr {
    QueueAddr {
        broker_name: "ha-a".into(),
        addr: addr.into(),
        queue_id,
    }
}

/// Every message of `topic` on `addr` (queues 0..queues), by id.
async fn consume_all(c: &Client, addr: &str, topic: &str, queues: i32) -> Vec<String> {
    ferrocket_testkit::consume_ids(c, |i| q(addr, i), topic, queues)
        .await
        .concat()
}

fn create_topic(rt: &tokio::runtime::Runtime, c: &Client, topic: &str, queues: i32) {
    rt.block_on(c.create_topic(topic, queues)).unwrap();
}

#[test]
fn sync_master_copies_byte_for_byte_and_slaves_serve_reads() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1, d2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // Everything counts as cold (ratio 0): with slaveReadEnable the master sends readers
    // to slave 1.
    let m = master(
        &ns.addr,
        d0.path(),
        "SYNC_MASTER",
        &["slaveReadEnable=true", "accessMessageInMemoryMaxRatio=0"],
    );
    create_topic(&rt, &c, "HA", 4);
    // A consumer group's progress on the master, to be copied by the slaves' sync.
    rt.block_on(c.commit(&q(&m.addr, 2), "HA", "resume", 7))
        .unwrap();
    // No slave yet: stored, but not acknowledged as replicated.
    let r = rt
        .block_on(c.send("HA", &q(&m.addr, 0), &[msg("lonely", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE);

    let s1 = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let s2 = slave(
        &ns.addr,
        d2.path(),
        2,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    wait_until("two slaves connected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).ha_connections == 2
    });
    // Sizes from tiny to 100 KiB (records split across 32 KiB frames), singles and batches.
    for i in 0..300usize {
        let size = [10, 1000, 33_000, 100_000][i % 4];
        let r = rt
            .block_on(c.send(
                "HA",
                &q(&m.addr, (i % 4) as i32),
                &[msg(&format!("m{i}"), size)],
            ))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "send {i}");
    }
    let batch: Vec<OutMessage> = (0..20).map(|i| msg(&format!("b{i}"), 500)).collect();
    assert_eq!(
        rt.block_on(c.send("HA", &q(&m.addr, 1), &batch))
            .unwrap()
            .code,
        response::SUCCESS
    );

    let ms = state(&rt, &c, &m.addr);
    assert!(
        ms.max_offset > SEGMENT * 2,
        "spans several segments: {}",
        ms.max_offset
    );
    for s in [&s1, &s2] {
        wait_until("slave caught up", Duration::from_secs(10), || {
            state(&rt, &c, &s.addr).confirm_offset >= ms.max_offset
        });
        let st = state(&rt, &c, &s.addr);
        assert_eq!((st.role.as_str(), st.epoch), ("SLAVE", 1));
        let len = st.confirm_offset;
        assert!(
            commitlog(&s.dir, len) == commitlog(&m.dir, len),
            "slave {} differs from the master below {len}",
            s.addr
        );
    }
    // A consumer reads everything from a slave once its metadata synced (every 10 s).
    wait_until("topic synced to the slave", Duration::from_secs(20), || {
        rt.block_on(c.pull(&q(&s1.addr, 0), "HA", "g", 0, 0))
            .map(|r| r.code == response::SUCCESS)
            .unwrap_or(false)
    });
    let r = rt
        .block_on(c.pull(&q(&m.addr, 0), "HA", "g", 0, 0))
        .unwrap();
    assert_eq!(r.ext("suggestWhichBrokerId"), Some("1"));
    let on_slave = rt.block_on(consume_all(&c, &s1.addr, "HA", 4));
    let on_master = rt.block_on(consume_all(&c, &m.addr, "HA", 4));
    assert_eq!(on_master.len(), 321);
    assert_eq!(on_slave, on_master);
    // Slaves take no writes.
    let err = rt.block_on(c.send("HA", &q(&s1.addr, 0), &[msg("x", 10)]));
    assert!(err.is_err());
}

#[test]
fn failover_under_load_loses_no_acknowledged_message() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let (mut m, s1, s2) = sync_master_and_two_slaves(&ns.addr, root.path());
    create_topic(&rt, &c, "FO", 8);
    // The slaves know the topic (metadata sync) before the master dies.
    for s in [&s1, &s2] {
        wait_until("topic synced to the slave", Duration::from_secs(20), || {
            rt.block_on(c.pull(&q(&s.addr, 0), "FO", "g", 0, 0))
                .map(|r| r.code != response::TOPIC_NOT_EXIST && r.code != response::SYSTEM_ERROR)
                .unwrap_or(false)
        });
    }

    // 32 producers, 1 KiB messages, to the master until it dies.
    let log = Arc::new(AckedLog::new());
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..32)
        .map(|p| {
            let (c, log, stop, addr) = (
                c.clone(),
                Arc::clone(&log),
                Arc::clone(&stop),
                m.addr.clone(),
            );
            rt.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("p{p}-{i}");
                    i += 1;
                    log.attempted();
                    match c.send("FO", &q(&addr, p % 8), &[msg(&id, 1024)]).await {
                        Ok(r) if r.code == response::SUCCESS => log.acked(id),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    m.kill9();
    let died = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = rt.block_on(p);
    }
    assert!(
        log.acked_count() > 500,
        "too few acknowledged before the kill: {}",
        log.acked_count()
    );

    // Promote the slave with the highest confirmed offset, through the operator's path.
    let st1 = state(&rt, &c, &s1.addr);
    let st2 = state(&rt, &c, &s2.addr);
    let (best, other, other_id) = if st1.confirm_offset >= st2.confirm_offset {
        (&s1, &s2, 2)
    } else {
        (&s2, &s1, 1)
    };
    let repointed = rt
        .block_on(fail_over(
            &c.remoting,
            &best.addr,
            &[(other.addr.clone(), other_id)],
            2,
            T,
        ))
        .unwrap();
    assert_eq!(repointed, std::slice::from_ref(&other.addr));
    // The new master accepts (and, with the other slave, acknowledges) sends.
    wait_until(
        "the other slave follows the new master and is in sync",
        Duration::from_secs(10),
        || !state(&rt, &c, &best.addr).in_sync.is_empty(),
    );
    let r = rt
        .block_on(c.send("FO", &q(&best.addr, 0), &[msg("after-failover", 1024)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    log.acked("after-failover");
    let failover_ms = died.elapsed().as_millis();

    let consumed = rt.block_on(consume_all(&c, &best.addr, "FO", 8));
    let report = log.check(consumed.iter().map(String::as_str));
    eprintln!(
        "failover under load: attempts {}, {report}, death to accepted send {failover_ms} ms",
        log.attempts()
    );
    assert_eq!(
        report.lost, 0,
        "acknowledged messages lost: {:?}",
        report.lost_sample
    );
    assert_eq!(state(&rt, &c, &best.addr).epoch, 2);

    // The old master comes back as a slave (as its pod would from the roles file): it
    // truncates what it wrote past the new epoch's start and converges.
    let old_max_before = std::fs::read_dir(m.dir.join("commitlog")).unwrap().count();
    assert!(old_max_before > 0);
    let rejoined = slave(
        &ns.addr,
        &m.dir.clone(),
        3,
        2,
        &format!("127.0.0.1:{}", best.ha_port()),
    );
    let target = state(&rt, &c, &best.addr).max_offset;
    wait_until("the old master converges", Duration::from_secs(15), || {
        state(&rt, &c, &rejoined.addr).max_offset == target
    });
    assert!(
        commitlog(&rejoined.dir, target) == commitlog(&best.dir, target),
        "rejoined old master differs"
    );
    let after = state(&rt, &c, &rejoined.addr);
    assert_eq!((after.role.as_str(), after.epoch), ("SLAVE", 2));
}

/// A TCP proxy that can cut (close every connection, refuse new ones) or black-hole
/// (keep connections, drop bytes) the path to `target`.
struct FaultProxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

const PASS: u8 = 0;
const CUT: u8 = 1;
const BLACKHOLE: u8 = 2;

impl FaultProxy {
    fn start(rt: &tokio::runtime::Runtime, target: String) -> FaultProxy {
        let mode = Arc::new(AtomicU8::new(PASS));
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let m = Arc::clone(&mode);
        rt.spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if m.load(Ordering::Relaxed) == CUT {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, Arc::clone(&m)));
                tokio::spawn(pipe(ro, wi, Arc::clone(&m)));
            }
        });
        FaultProxy { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if mode.load(Ordering::Relaxed) == CUT { return; }
                continue;
            }
        };
        match mode.load(Ordering::Relaxed) {
            CUT => return,
            BLACKHOLE => continue,
            _ => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn partition_answers_slave_errors_and_heals() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = master(
        &ns.addr,
        d0.path(),
        "SYNC_MASTER",
        &["syncFlushTimeout=1000"],
    );
    create_topic(&rt, &c, "PT", 2);
    let proxy = FaultProxy::start(&rt, format!("127.0.0.1:{}", m.ha_port()));
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", proxy.port),
    );
    wait_until("slave connected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    let send = |id: &str| {
        rt.block_on(c.send("PT", &q(&m.addr, 0), &[msg(id, 512)]))
            .unwrap()
            .code
    };
    assert_eq!(send("before"), response::SUCCESS);

    // Black hole: the connection stays, nothing gets through: FLUSH_SLAVE_TIMEOUT.
    proxy.set(BLACKHOLE);
    assert_eq!(send("held"), response::FLUSH_SLAVE_TIMEOUT);
    // Cut: the master sees the slave go: SLAVE_NOT_AVAILABLE at once.
    proxy.set(CUT);
    wait_until("master notices the cut", Duration::from_secs(25), || {
        state(&rt, &c, &m.addr).ha_connections == 0
    });
    let t0 = Instant::now();
    assert_eq!(send("cut"), response::SLAVE_NOT_AVAILABLE);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "SLAVE_NOT_AVAILABLE must not wait"
    );
    // Heal: the slave reconnects and catches up, and sends are acknowledged again.
    proxy.set(PASS);
    wait_until("slave reconnected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    assert_eq!(send("after"), response::SUCCESS);
    converge(&rt, &c, &m, &s, "slave caught up");
}

#[test]
fn epochs_fence_stale_masters_and_old_role_changes() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The stale master keeps a control secret: its role changes must be signed.
    let secret = secret_file(d0.path());
    let stale = master(
        &ns.addr,
        d0.path(),
        "ASYNC_MASTER",
        &[&format!("controlSecretFile={}", secret.display())],
    );
    let signed = signing_client(&ns.addr, &secret);
    create_topic(&rt, &c, "EP", 1);
    for i in 0..20 {
        let r = rt
            .block_on(c.send("EP", &q(&stale.addr, 0), &[msg(&format!("s{i}"), 100)]))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
    }
    // A slave already in epoch 3 is pointed at the epoch-1 master: it refuses the stream.
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        3,
        &format!("127.0.0.1:{}", stale.ha_port()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        state(&rt, &c, &s.addr).max_offset,
        0,
        "a slave of epoch 3 copied from an epoch-1 master"
    );
    // Role changes with an older epoch are refused; the same epoch is idempotent.
    let older = rt.block_on(change_role(&c.remoting, &s.addr, &NewRole::Master, 2, T));
    assert!(older.is_err(), "epoch 2 < 3 must be refused");
    // Without a control secret, an unsigned change moves at most one epoch.
    let jump = rt.block_on(change_role(&c.remoting, &s.addr, &NewRole::Master, 6, T));
    assert_refused(jump, "only a request signed");
    let promoted = rt
        .block_on(change_role(&c.remoting, &s.addr, &NewRole::Master, 4, T))
        .unwrap();
    assert_eq!(
        (promoted.role.as_str(), promoted.broker_id, promoted.epoch),
        ("SYNC_MASTER", 0, 4)
    );
    assert!(rt
        .block_on(change_role(&c.remoting, &s.addr, &NewRole::Master, 4, T))
        .is_ok());
    // The name server now routes brokerId 0 to the epoch-4 master; the stale master's
    // periodic re-registration (epoch 1) cannot take it back.
    std::thread::sleep(Duration::from_millis(2500));
    let route = rt.block_on(c.route("EP")).unwrap().unwrap();
    assert_eq!(route.broker_datas[0].broker_addrs.get(&0), Some(&s.addr));
    // Refused by the name server, the stale master fences itself: a client with an old
    // route gets SERVICE_NOT_AVAILABLE (and retries elsewhere), never SEND_OK.
    wait_until(
        "the stale master fences itself",
        Duration::from_secs(10),
        || match rt.block_on(c.send("EP", &q(&stale.addr, 0), &[msg("late", 100)])) {
            Ok(r) => {
                assert_ne!(
                    r.code,
                    response::SUCCESS,
                    "a superseded master acknowledged a send"
                );
                false
            }
            Err(ClientError::Refused { code, remark, .. }) => {
                code == response::SERVICE_NOT_AVAILABLE && remark.contains("fenced")
            }
            Err(e) => panic!("{e}"),
        },
    );
    // Demoting the stale master at epoch 4 makes it follow: it truncates its epoch-1
    // writes (the new master began epoch 4 at offset 0) and converges on the new master.
    // Unsigned, or signed with another secret, the change is refused.
    let demote = NewRole::Slave {
        master: s.addr.clone(),
        master_ha: Some(format!("127.0.0.1:{}", s.ha_port())),
        broker_id: Some(2),
    };
    let unsigned = rt.block_on(change_role(&c.remoting, &stale.addr, &demote, 4, T));
    assert_refused(unsigned, "not signed");
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("secret"), "another-secret").unwrap();
    let forged = signing_client(&ns.addr, &other.path().join("secret"));
    let forged = rt.block_on(change_role(&forged.remoting, &stale.addr, &demote, 4, T));
    assert_refused(forged, "check signature failed");
    assert!(state(&rt, &c, &stale.addr).is_master());
    let st = rt
        .block_on(change_role(
            &signed.remoting,
            &stale.addr,
            &NewRole::Slave {
                master: s.addr.clone(),
                master_ha: Some(format!("127.0.0.1:{}", s.ha_port())),
                broker_id: Some(2),
            },
            4,
            T,
        ))
        .unwrap();
    assert_eq!((st.role.as_str(), st.broker_id), ("SLAVE", 2));
    wait_until(
        "the demoted master follows",
        Duration::from_secs(10),
        || state(&rt, &c, &s.addr).in_sync.len() == 1,
    );
    let r = rt
        .block_on(c.send("EP", &q(&s.addr, 0), &[msg("new-epoch", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    let target = state(&rt, &c, &s.addr).max_offset;
    wait_until("stale master converges", Duration::from_secs(10), || {
        state(&rt, &c, &stale.addr).max_offset == target
    });
    let ids = rt.block_on(consume_all(&c, &stale.addr, "EP", 1));
    assert_eq!(
        ids,
        ["new-epoch"],
        "the stale master kept only the new epoch's history"
    );
}

/// `ferrocket broker` as the operator starts pod `pod`: the kit's settings, the roles
/// file `roles` (`master=<pod>`, `epoch=<n>`), the control secret, on `ports`.
fn pod_broker(ns: &str, dir: &Path, pod: &str, roles: &Path, secret: &Path, ports: Ports) -> Proc {
    let k = kit();
    let mut args = k.broker_args(
        ns,
        dir,
        ports,
        &[
            "brokerRole=SYNC_MASTER".into(),
            "syncFlushTimeout=3000".into(),
            format!("controlSecretFile={}", secret.display()),
        ],
    );
    args.extend([
        "--roles-file".into(),
        roles.display().to_string(),
        "--pod-name".into(),
        pod.into(),
    ]);
    let mut p = k.spawn(&args);
    p.dir = dir.to_path_buf();
    p
}

/// Issue 13's first scenario: after g-0 → g-1 at epoch 2, both brokers restart while the
/// mounted roles file still says `master=g-0 epoch=1` (the kubelet has not refreshed
/// it). Neither moves back: the promoted master returns as master of epoch 2, the
/// demoted one as its slave, and nothing acknowledged is lost.
#[test]
fn a_restart_with_a_stale_roles_file_moves_no_broker_back() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let secret = secret_file(root.path());
    let signed = signing_client(&ns.addr, &secret);
    let roles = root.path().join("roles");
    std::fs::write(&roles, "master=g-0\nepoch=1\n").unwrap();
    let (d0, d1) = (root.path().join("g-0"), root.path().join("g-1"));
    let g0 = pod_broker(&ns.addr, &d0, "g-0", &roles, &secret, Ports::ANY);
    let mut g1 = pod_broker(&ns.addr, &d1, "g-1", &roles, &secret, Ports::ANY);
    assert_eq!((g0.role.as_str(), g1.role.as_str()), ("master", "slave"));
    // g-1 learns its master from the name server.
    wait_until("g-1 follows g-0", Duration::from_secs(20), || {
        state(&rt, &c, &g0.addr).in_sync.len() == 1
    });
    create_topic(&rt, &c, "STALE", 1);
    let mut sent = Vec::new();
    for i in 0..10 {
        let id = format!("e1-{i}");
        let r = rt
            .block_on(c.send("STALE", &q(&g0.addr, 0), &[msg(&id, 200)]))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        sent.push(id);
    }
    // The failover the operator would make: g-1 master at epoch 2, g-0 its slave.
    let repointed = rt
        .block_on(fail_over(
            &signed.remoting,
            &g1.addr,
            &[(g0.addr.clone(), 1)],
            2,
            T,
        ))
        .unwrap();
    assert_eq!(repointed, std::slice::from_ref(&g0.addr));
    wait_until("g-0 follows g-1", Duration::from_secs(10), || {
        state(&rt, &c, &g1.addr).in_sync.len() == 1
    });
    for i in 0..10 {
        let id = format!("e2-{i}");
        let r = rt
            .block_on(c.send("STALE", &q(&g1.addr, 0), &[msg(&id, 200)]))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        sent.push(id);
    }
    // The new master restarts with the stale file: it is still master of epoch 2.
    let ports1 = Ports::of(&g1);
    g1.kill9();
    let g1 = pod_broker(&ns.addr, &d1, "g-1", &roles, &secret, ports1);
    let st1 = state(&rt, &c, &g1.addr);
    assert_eq!((st1.role.as_str(), st1.epoch), ("SYNC_MASTER", 2));
    // The old master restarts with it too: it is still g-1's slave at epoch 2.
    let ports0 = Ports::of(&g0);
    let mut g0 = g0;
    g0.kill9();
    let g0 = pod_broker(&ns.addr, &d0, "g-0", &roles, &secret, ports0);
    let st0 = state(&rt, &c, &g0.addr);
    assert_eq!(
        (st0.role.as_str(), st0.epoch, st0.master_addr.as_str()),
        ("SLAVE", 2, g1.addr.as_str())
    );
    wait_until("g-0 follows g-1 again", Duration::from_secs(10), || {
        state(&rt, &c, &g1.addr).in_sync.len() == 1
    });
    let r = rt
        .block_on(c.send("STALE", &q(&g1.addr, 0), &[msg("after", 200)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    sent.push("after".into());
    // Exactly one master, and every acknowledged message is there.
    assert!(!state(&rt, &c, &g0.addr).is_master());
    let got = rt.block_on(consume_all(&c, &g1.addr, "STALE", 1));
    assert_eq!(got, sent);
    // A stranger cannot move either broker.
    let r = rt.block_on(change_role(&c.remoting, &g0.addr, &NewRole::Master, 3, T));
    assert_refused(r, "not signed");
}

#[test]
fn a_peer_claiming_offsets_it_was_never_sent_acknowledges_nothing() {
    use std::io::{Read, Write};
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let d0 = tempfile::tempdir().unwrap();
    let m = master(
        &ns.addr,
        d0.path(),
        "SYNC_MASTER",
        &["syncFlushTimeout=500"],
    );
    create_topic(&rt, &c, "RG", 1);
    // A rogue peer on the HA port: asks for the hello, reads it, then claims the whole log.
    let mut rogue = std::net::TcpStream::connect(("127.0.0.1", m.ha_port())).unwrap();
    rogue
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    rogue.write_all(&(-1i64).to_be_bytes()).unwrap();
    let mut head = [0u8; 12];
    rogue.read_exact(&mut head).unwrap();
    assert_eq!(
        i64::from_be_bytes(head[..8].try_into().unwrap()),
        -1,
        "hello first"
    );
    let size = i32::from_be_bytes(head[8..].try_into().unwrap()) as usize;
    let mut hello = vec![0u8; size];
    rogue.read_exact(&mut hello).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(v["epoch"], 1);
    rogue.write_all(&0i64.to_be_bytes()).unwrap();
    wait_until("rogue counted as a slave", Duration::from_secs(5), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    let send = || {
        rt.block_on(c.send("RG", &q(&m.addr, 0), &[msg("x", 100)]))
            .unwrap()
            .code
    };
    let sender = std::thread::scope(|s| {
        let h = s.spawn(send);
        std::thread::sleep(Duration::from_millis(100));
        // Claims far more than it could have received.
        let _ = rogue.write_all(&i64::MAX.to_be_bytes());
        h.join().unwrap()
    });
    assert_ne!(
        sender,
        response::SUCCESS,
        "a false report acknowledged a send"
    );
    // Garbage does not take the master down: a real slave still works afterwards.
    let _ = rogue.write_all(b"\xff\xff\xff\xff garbage that is not an offset");
    drop(rogue);
    let d1 = tempfile::tempdir().unwrap();
    let _s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    wait_until("real slave connected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    assert_eq!(send(), response::SUCCESS);
}

#[test]
fn a_slave_started_before_its_master_finds_it_through_the_name_server() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // No haMasterAddress and RocketMQ's 30 s registration period: the slave must ask the
    // name server again soon by itself.
    let s = broker(
        &ns.addr,
        d1.path(),
        &[
            "brokerRole=SLAVE".into(),
            "brokerId=1".into(),
            "roleEpoch=1".into(),
            "registerNameServerPeriod=30000".into(),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[]);
    wait_until(
        "the slave finds its master",
        Duration::from_secs(10),
        || state(&rt, &c, &m.addr).in_sync.len() == 1,
    );
    create_topic(&rt, &c, "LATE", 1);
    let r = rt
        .block_on(c.send("LATE", &q(&m.addr, 0), &[msg("late", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(state(&rt, &c, &s.addr).master_addr, m.addr);
}

#[test]
fn a_classic_slave_without_the_hello_gets_the_classic_stream() {
    use std::io::{Read, Write};
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let d0 = tempfile::tempdir().unwrap();
    let m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[]);
    create_topic(&rt, &c, "CL", 1);
    // As a RocketMQ slave does: its first 8 bytes are its max offset (0), no hello asked.
    let mut slave = std::net::TcpStream::connect(("127.0.0.1", m.ha_port())).unwrap();
    slave
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    slave.write_all(&0i64.to_be_bytes()).unwrap();
    wait_until("classic slave counted", T, || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    let mut received: Vec<u8> = Vec::new();
    let mut offsets_seen = Vec::new();
    let code = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            (0..5)
                .map(|i| {
                    rt.block_on(c.send("CL", &q(&m.addr, 0), &[msg(&format!("c{i}"), 300)]))
                        .unwrap()
                        .code
                })
                .collect::<Vec<_>>()
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(sender.is_finished() && received.len() as u64 == state(&rt, &c, &m.addr).max_offset)
        {
            assert!(
                Instant::now() < deadline,
                "stream stalled at {}",
                received.len()
            );
            let mut head = [0u8; 12];
            slave.read_exact(&mut head).unwrap();
            let offset = i64::from_be_bytes(head[..8].try_into().unwrap());
            let size = i32::from_be_bytes(head[8..].try_into().unwrap());
            offsets_seen.push(offset);
            assert_eq!(
                offset,
                received.len() as i64,
                "classic framing: each frame starts where the last ended"
            );
            let mut body = vec![0u8; usize::try_from(size).unwrap()];
            slave.read_exact(&mut body).unwrap();
            received.extend_from_slice(&body);
            slave
                .write_all(&(received.len() as i64).to_be_bytes())
                .unwrap();
        }
        sender.join().unwrap()
    });
    assert_eq!(offsets_seen[0], 0, "no hello frame for a classic slave");
    assert!(
        code.iter().all(|c| *c == response::SUCCESS),
        "SYNC_MASTER acknowledged by the classic slave's reports: {code:?}"
    );
    assert!(!received.is_empty());
    assert_eq!(received, commitlog(&m.dir, received.len() as u64));
}

/// The first CommitLog file's start offset in a store.
fn first_segment(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir.join("commitlog"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .min()
}

#[test]
fn a_new_slave_joins_a_master_whose_oldest_files_are_deleted() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Retention runs on every housekeeping pass (every 10 s: any disk is fuller than 1 %)
    // and deletes every full file (none is younger than 0 h): the master ends up with its
    // oldest files gone.
    let m = master(
        &ns.addr,
        d0.path(),
        "ASYNC_MASTER",
        &["diskMaxUsedSpaceRatio=1", "fileReservedTime=0"],
    );
    create_topic(&rt, &c, "OLD", 1);
    // A slave that copies the first batch, then is away while the rest is written.
    let d2 = tempfile::tempdir().unwrap();
    let mut away = slave(
        &ns.addr,
        d2.path(),
        2,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let total = 1800;
    for b in 0..total / 60 {
        if b == 1 {
            let end = state(&rt, &c, &m.addr).max_offset;
            wait_until("the first slave copied a batch", T, || {
                state(&rt, &c, &away.addr).max_offset == end
            });
            away.kill9();
        }
        let batch: Vec<OutMessage> = (0..60)
            .map(|i| msg(&format!("o{}", b * 60 + i), 4096))
            .collect();
        let r = rt.block_on(c.send("OLD", &q(&m.addr, 0), &batch)).unwrap();
        assert_eq!(r.code, response::SUCCESS);
    }
    wait_until(
        "the master's oldest files deleted",
        Duration::from_secs(30),
        || first_segment(&m.dir).is_some_and(|s| s > 0),
    );
    // The pass deletes file after file: let it finish before reading where it ended.
    std::thread::sleep(Duration::from_millis(500));
    let oldest = first_segment(&m.dir).unwrap();
    let master_max = state(&rt, &c, &m.addr).max_offset;
    assert!(oldest >= SEGMENT, "{oldest}");

    // An empty replica starts at the master's oldest file and copies the rest.
    let mut s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    wait_until("the new slave caught up", Duration::from_secs(20), || {
        state(&rt, &c, &s.addr).max_offset == master_max
    });
    assert_eq!(first_segment(&s.dir), Some(oldest));
    assert_eq!(commitlog(&s.dir, master_max), commitlog(&m.dir, master_max));
    // The slave learns the topic at its first metadata sync (3 s after start), then
    // serves the newest message from its ConsumeQueue that begins mid-way.
    let last = |addr: &str| {
        let r = rt
            .block_on(c.pull(&q(addr, 0), "OLD", "checker", i64::from(total - 1), 0))
            .unwrap();
        (r.code == response::SUCCESS).then(|| {
            let recs = split_records(r.body_bytes());
            id_of(&decode_record(&recs[0]).unwrap().body)
        })
    };
    wait_until(
        "the slave serves the topic",
        Duration::from_secs(20),
        || last(&s.addr).is_some(),
    );
    assert_eq!(last(&s.addr), Some(format!("o{}", total - 1)));

    // The slave that was away ends before the master's oldest file: it cannot continue
    // and copies nothing (its log says to empty its store).
    let away = slave(
        &ns.addr,
        d2.path(),
        2,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let away_max = state(&rt, &c, &away.addr).max_offset;
    assert!(away_max > 0 && away_max < oldest, "{away_max}");
    std::thread::sleep(Duration::from_secs(2));
    let st = state(&rt, &c, &away.addr);
    assert_eq!(st.max_offset, away_max);
    assert!(
        st.follow_problem
            .contains("before the master's oldest file"),
        "the slave reports why it cannot follow: {:?}",
        st.follow_problem
    );
    assert_eq!(first_segment(&away.dir), Some(0));
    drop(away);

    // It survives kill -9 with a log that does not start at 0, and keeps following.
    s.kill9();
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let r = rt
        .block_on(c.send("OLD", &q(&m.addr, 0), &[msg("after", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    converge(&rt, &c, &m, &s, "the restarted slave caught up");
    assert_eq!(first_segment(&s.dir), Some(oldest));
}

#[test]
fn a_planned_switchover_under_load_loses_nothing_and_keeps_every_log_equal() {
    use ferrocket::client::role::switch_over;
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let (m, s1, s2) = sync_master_and_two_slaves(&ns.addr, root.path());
    create_topic(&rt, &c, "SW", 4);
    wait_until(
        "topic synced to the target",
        Duration::from_secs(20),
        || {
            rt.block_on(c.pull(&q(&s2.addr, 0), "SW", "g", 0, 0))
                .map(|r| r.code != response::TOPIC_NOT_EXIST && r.code != response::SYSTEM_ERROR)
                .unwrap_or(false)
        },
    );

    // 16 producers send to whichever broker is the master, as a client following its
    // route would: a refusal sends them back to the route.
    let current = Arc::new(std::sync::RwLock::new(m.addr.clone()));
    let log = Arc::new(AckedLog::new());
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let (c, log, stop, current, refused) = (
                c.clone(),
                Arc::clone(&log),
                Arc::clone(&stop),
                Arc::clone(&current),
                Arc::clone(&refused),
            );
            rt.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("p{p}-{i}");
                    i += 1;
                    log.attempted();
                    let addr = current.read().unwrap().clone();
                    match c.send("SW", &q(&addr, p % 4), &[msg(&id, 1024)]).await {
                        Ok(r) if r.code == response::SUCCESS => log.acked(id),
                        Err(ClientError::Refused { code, .. })
                            if code == response::NO_PERMISSION =>
                        {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let before = log.acked_count();
    let sw = rt
        .block_on(switch_over(
            &c.remoting,
            &m.addr,
            2,
            &s2.addr,
            &[(s1.addr.clone(), 1)],
            2,
            T,
            Duration::from_secs(10),
        ))
        .unwrap();
    *current.write().unwrap() = s2.addr.clone();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = rt.block_on(p);
    }
    assert!(before > 200, "too few acknowledged before: {before}");
    assert!(
        log.acked_count() > before,
        "nothing acknowledged by the new master"
    );
    let mut repointed = sw.repointed.clone();
    repointed.sort();
    let mut expected = vec![m.addr.clone(), s1.addr.clone()];
    expected.sort();
    assert_eq!(repointed, expected);

    let consumed = rt.block_on(consume_all(&c, &s2.addr, "SW", 4));
    let report = log.check(consumed.iter().map(String::as_str));
    eprintln!(
        "switchover under load: attempts {}, {report}, writes refused for {} ms ({} NO_PERMISSION answers), roles changed at {}",
        log.attempts(),
        sw.fenced_ms,
        refused.load(Ordering::Relaxed),
        sw.offset
    );
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    assert_eq!(report.duplicated, 0);

    // Roles and epochs moved; the old master is an ordinary slave again (writes given
    // back for when it is promoted), and every log equals the new master's.
    let new_m = state(&rt, &c, &s2.addr);
    assert_eq!((new_m.role.as_str(), new_m.epoch), ("SYNC_MASTER", 2));
    let old = state(&rt, &c, &m.addr);
    assert_eq!(
        (old.role.as_str(), old.broker_id, old.epoch),
        ("SLAVE", 2, 2)
    );
    assert!(
        broker_config(&rt, &c, &m.addr).contains("brokerPermission=6"),
        "the old master's permission was not restored"
    );
    for s in [&m, &s1] {
        converge(&rt, &c, &s2, s, "a slave converges on the new master");
    }
}

#[test]
fn admin_switchover_moves_the_master_and_the_name_server_follows() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[]);
    create_topic(&rt, &c, "AS", 1);
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    wait_until("slave registered", Duration::from_secs(10), || {
        rt.block_on(c.cluster())
            .map(|i| {
                i.broker_addr_table
                    .get("ha-a")
                    .map(|b| b.broker_addrs.len())
                    == Some(2)
            })
            .unwrap_or(false)
    });
    wait_until("slave connected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    let r = rt
        .block_on(c.send("AS", &q(&m.addr, 0), &[msg("before", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    let out = Command::new(BIN)
        .args(["admin", "--namesrv", &ns.addr, "--json", "switchover"])
        .args(["--broker-name", "ha-a", "--to", &s.addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["master"], s.addr.as_str());
    assert_eq!(v["epoch"], 2);
    assert_eq!(v["oldMasterBrokerId"], 1);
    wait_until("the name server routes to the new master", T, || {
        rt.block_on(c.cluster()).ok().and_then(|i| {
            i.broker_addr_table
                .get("ha-a")?
                .broker_addrs
                .get(&0)
                .cloned()
        }) == Some(s.addr.clone())
    });
    wait_until("the old master follows the new one", T, || {
        state(&rt, &c, &s.addr).in_sync.len() == 1
    });
    let r = rt
        .block_on(c.send("AS", &q(&s.addr, 0), &[msg("after", 100)]))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS, "the new master has a slave");
    // The fence showed the topic read-only in the route; the new master's registration
    // makes it writable again.
    wait_until("the route is writable again", T, || {
        rt.block_on(c.route("AS"))
            .ok()
            .flatten()
            .is_some_and(|r| r.queue_datas.iter().all(|q| q.perm == 6))
    });
    // Refused: an address outside the group, and the (new) master itself.
    for to in ["127.0.0.1:1", s.addr.as_str()] {
        let out = Command::new(BIN)
            .args(["admin", "--namesrv", &ns.addr, "switchover"])
            .args(["--broker-name", "ha-a", "--to", to])
            .output()
            .unwrap();
        assert!(!out.status.success(), "switchover to {to} accepted");
    }
}

#[test]
fn a_promoted_slave_brings_its_topic_permissions_to_the_route() {
    use ferrocket::client::role::set_permission;
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = master(&ns.addr, d0.path(), "ASYNC_MASTER", &[]);
    create_topic(&rt, &c, "RP", 1);
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let perms = || {
        rt.block_on(c.route("RP"))
            .ok()
            .flatten()
            .map(|r| r.queue_datas.iter().map(|q| q.perm).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    // The slave has the topic (metadata sync) and is registered.
    wait_until(
        "the slave copied the topic",
        Duration::from_secs(15),
        || {
            rt.block_on(c.pull(&q(&s.addr, 0), "RP", "g", 0, 0))
                .map(|r| r.code != response::TOPIC_NOT_EXIST && r.code != response::SYSTEM_ERROR)
                .unwrap_or(false)
        },
    );
    // The master fenced: the route shows the topic read-only.
    rt.block_on(set_permission(&c.remoting, &m.addr, 4, T))
        .unwrap();
    wait_until("the route shows the fence", T, || perms() == [4]);
    // The slave, promoted, registers as brokerId 0 with its own (read-write) topics, at
    // the data version it registered with as a slave: the route must follow it anyway.
    rt.block_on(fail_over(
        &c.remoting,
        &s.addr,
        &[(m.addr.clone(), 1)],
        2,
        T,
    ))
    .unwrap();
    wait_until("the route follows the new master", T, || perms() == [6]);
}

/// A network namespace joined to this one by a veth pair: `host_ip` on this side,
/// `ns_ip` inside. Dropping it deletes both.
struct NetNs {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl NetNs {
    /// Creates one, or says why it cannot (not root, no iproute2, no namespaces).
    fn create() -> Result<NetNs, String> {
        let n = std::process::id() % 250;
        let net = NetNs {
            name: format!("fr-ha-{}", std::process::id()),
            host_if: format!("frh{}", std::process::id() % 100_000),
            host_ip: format!("10.213.{n}.1"),
            ns_ip: format!("10.213.{n}.2"),
        };
        let peer = format!("frn{}", std::process::id() % 100_000);
        ip(&["netns", "add", &net.name])?;
        // From here on, Drop cleans up whatever was made.
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &net.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_ip),
            "dev",
            &net.host_if,
        ])?;
        ip(&["link", "set", &net.host_if, "up"])?;
        let inside = |a: &[&str]| {
            let mut v = vec!["netns", "exec", &net.name, "ip"];
            v.extend_from_slice(a);
            ip(&v)
        };
        inside(&["addr", "add", &format!("{}/30", net.ns_ip), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Takes the link down (every packet between the two sides is dropped) or up.
    fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_network_namespace_partition_holds_acknowledgements_and_heals() {
    let net = match NetNs::create() {
        Ok(n) => n,
        Err(why) => {
            skip(
                "a_network_namespace_partition_holds_acknowledgements_and_heals",
                &format!("needs network namespaces: {why}"),
            );
            return;
        }
    };
    let rt = rt();
    // The name server and the master on this side, reachable from the namespace.
    let mut ns = kit().spawn(&["namesrv".into(), "--listen".into(), "0.0.0.0:0".into()]);
    ns.addr = format!("{}:{}", net.host_ip, ns.port());
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = master(
        &ns.addr,
        d0.path(),
        "SYNC_MASTER",
        &[
            "syncFlushTimeout=1000",
            &format!("brokerIP1={}", net.host_ip),
        ],
    );
    create_topic(&rt, &c, "NN", 1);
    // The slave in the namespace: another host, as far as TCP is concerned.
    let s = broker_in(
        Some(&net.name),
        &ns.addr,
        d1.path(),
        &[
            "brokerRole=SLAVE".into(),
            "brokerId=1".into(),
            "roleEpoch=1".into(),
            format!("haMasterAddress={}:{}", net.host_ip, m.ha_port()),
            "masterRole=SYNC_MASTER".into(),
            format!("brokerIP1={}", net.ns_ip),
        ],
    );
    assert!(s.addr.starts_with(&net.ns_ip), "{}", s.addr);
    wait_until(
        "slave connected across the veth",
        Duration::from_secs(10),
        || state(&rt, &c, &m.addr).in_sync.len() == 1,
    );
    let send = |id: &str| {
        rt.block_on(c.send("NN", &q(&m.addr, 0), &[msg(id, 512)]))
            .unwrap()
            .code
    };
    assert_eq!(send("before"), response::SUCCESS);

    // Partition: nothing crosses; the master holds every send and answers
    // FLUSH_SLAVE_TIMEOUT, never SUCCESS.
    net.set_link(false);
    for i in 0..3 {
        assert_eq!(send(&format!("during-{i}")), response::FLUSH_SLAVE_TIMEOUT);
    }
    // Heal: TCP resumes, the slave catches up byte for byte, sends are acknowledged.
    net.set_link(true);
    let target = state(&rt, &c, &m.addr).max_offset;
    wait_until(
        "slave caught up after the heal",
        Duration::from_secs(30),
        || {
            rt.block_on(broker_state(&c.remoting, &s.addr, T))
                .is_ok_and(|st| st.max_offset == target)
        },
    );
    assert_eq!(send("after"), response::SUCCESS);
    converge(&rt, &c, &m, &s, "slave holds the last send");
}

#[test]
fn a_master_that_lost_its_tail_is_not_followed_and_its_slave_is_promoted_instead() {
    use std::io::{Seek, SeekFrom, Write};
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[]);
    // Restarted below on the HA port the OS gave it.
    let ha = format!("haListenPort={}", m.ha_port());
    create_topic(&rt, &c, "LT", 1);
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    wait_until("slave connected", Duration::from_secs(10), || {
        state(&rt, &c, &m.addr).in_sync.len() == 1
    });
    let log = AckedLog::new();
    let mut half = 0;
    for i in 0..200 {
        let id = format!("lt-{i}");
        log.attempted();
        let r = rt
            .block_on(c.send("LT", &q(&m.addr, 0), &[msg(&id, 1000)]))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        log.acked(id);
        if i == 99 {
            half = state(&rt, &c, &m.addr).max_offset;
        }
    }
    let slave_max = state(&rt, &c, &s.addr).max_offset;
    wait_until("topic synced to the slave", Duration::from_secs(20), || {
        rt.block_on(c.pull(&q(&s.addr, 0), "LT", "g", 0, 0))
            .map(|r| r.code != response::TOPIC_NOT_EXIST && r.code != response::SYSTEM_ERROR)
            .unwrap_or(false)
    });
    // The machine under the master crashes: the second half of what it acknowledged
    // (held by the slave) never reached its disk.
    m.kill9();
    let seg = d0.path().join("commitlog").join("00000000000000000000");
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(half)).unwrap();
    f.write_all(&vec![0u8; (slave_max - half) as usize])
        .unwrap();
    drop(f);
    // It comes back as master of the same epoch, on the same HA port.
    let m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[&ha]);
    assert_eq!(state(&rt, &c, &m.addr).max_offset, half);
    // The slave refuses to truncate what it holds, and says why.
    wait_until(
        "the slave reports the master behind",
        Duration::from_secs(10),
        || state(&rt, &c, &s.addr).follow_problem_kind == "masterBehind",
    );
    assert_eq!(state(&rt, &c, &s.addr).max_offset, slave_max);
    // Meanwhile the old master takes writes nobody acknowledges (its slave refuses it):
    // stored where the slave holds other records.
    for i in 0..3 {
        let r = rt
            .block_on(c.send("LT", &q(&m.addr, 0), &[msg(&format!("unacked-{i}"), 1000)]))
            .unwrap();
        assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE);
    }
    assert!(state(&rt, &c, &m.addr).max_offset > half);
    // Promoted instead (what the operator does on that report), the slave has everything
    // that was acknowledged; the old master drops its unreplicated writes, follows it and
    // converges byte for byte.
    rt.block_on(fail_over(
        &c.remoting,
        &s.addr,
        &[(m.addr.clone(), 2)],
        2,
        T,
    ))
    .unwrap();
    let consumed = rt.block_on(consume_all(&c, &s.addr, "LT", 1));
    let report = log.check(consumed.iter().map(String::as_str));
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    converge(&rt, &c, &s, &m, "the old master converges");
}

/// Transactions survive a failover: a half message the SYNC_MASTER acknowledged (so a
/// slave holds it) is committed on the slave promoted after the master's kill -9 — it
/// rebuilds its unresolved set from the replicated half queue — and reaches its topic
/// once; a second commit changes nothing.
#[test]
fn a_promoted_slave_commits_a_transaction_begun_on_the_old_master() {
    use ferrocket::remoting::codes::request;
    use ferrocket::remoting::RemotingCommand;
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = master(&ns.addr, d0.path(), "SYNC_MASTER", &[]);
    create_topic(&rt, &c, "TxHa", 1);
    let s = slave(
        &ns.addr,
        d1.path(),
        1,
        1,
        &format!("127.0.0.1:{}", m.ha_port()),
    );
    let props = ferrocket::store::encode_properties([
        ("UNIQ_KEY", "tx-ha-1"),
        ("TRAN_MSG", "true"),
        ("PGROUP", "tx_pg"),
        ("TAGS", "t"),
    ]);
    // SYNC_MASTER: SEND_OK once the slave holds the half message.
    let mut half = None;
    wait_until(
        "a half message acknowledged by the SYNC_MASTER",
        Duration::from_secs(20),
        || {
            half = rt
                .block_on(c.send_raw(
                    "TxHa",
                    &q(&m.addr, 0),
                    Bytes::from_static(b"tx-ha"),
                    props.clone(),
                    4,
                ))
                .ok()
                .filter(|h| h.code == response::SUCCESS);
            half.is_some()
        },
    );
    let half = half.unwrap();
    let mut m = m;
    m.kill9();
    rt.block_on(fail_over(&c.remoting, &s.addr, &[], 2, T))
        .unwrap();
    let phys = ferrocket::protocol::msg_id::decode_offset_msg_id(&half.msg_id)
        .unwrap()
        .1;
    let commit = || {
        RemotingCommand::request(request::END_TRANSACTION)
            .with_ext("producerGroup", "tx_pg")
            .with_ext("tranStateTableOffset", half.queue_offset)
            .with_ext("commitLogOffset", phys)
            .with_ext("commitOrRollback", 8)
            .with_ext("fromTransactionCheck", true)
            .with_ext("msgId", "tx-ha-1")
    };
    let r = rt
        .block_on(c.remoting.invoke(&s.addr, commit(), T))
        .unwrap();
    assert_eq!(r.code, response::SUCCESS);
    let r = rt
        .block_on(c.remoting.invoke(&s.addr, commit(), T))
        .unwrap();
    assert_eq!(
        r.code,
        response::SYSTEM_ERROR,
        "a second commit changes nothing"
    );
    let mut got = Vec::new();
    wait_until("the committed message on the new master", T, || {
        got = rt.block_on(consume_all(&c, &s.addr, "TxHa", 1));
        !got.is_empty()
    });
    assert_eq!(got.len(), 1, "{got:?}");
}

/// `GET path` on loopback `port`: the status, or `None` when nothing answers within 2 s
/// (what a kubelet probe sees of a frozen process).
fn probe(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// Issue 13's health: `/healthz` fails when the process is frozen (SIGSTOP: the kubelet's
/// probe gets no answer) and answers again when it runs; a slave is ready only once it
/// follows its master within `haMaxGapNotInSync` (one pointed at nothing is not); a
/// master a name server reports superseded is not ready, and its successor is.
#[test]
fn health_and_readiness_follow_what_the_broker_can_do() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let (pm, ps, pl) = (
        ferrocket_testkit::free_port(),
        ferrocket_testkit::free_port(),
        ferrocket_testkit::free_port(),
    );
    let m = master(
        &ns.addr,
        &root.path().join("m"),
        "ASYNC_MASTER",
        &[&format!("metricsPort={pm}")],
    );
    create_topic(&rt, &c, "HZ", 1);
    for i in 0..50 {
        let r = rt
            .block_on(c.send("HZ", &q(&m.addr, 0), &[msg(&format!("h{i}"), 1000)]))
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
    }
    let s = broker(
        &ns.addr,
        &root.path().join("s"),
        &[
            "brokerRole=SLAVE".into(),
            "brokerId=1".into(),
            "roleEpoch=1".into(),
            format!("haMasterAddress={}", m.ha_addr.clone().unwrap()),
            format!("metricsPort={ps}"),
        ],
    );
    // A slave pointed at an address nothing listens on never follows.
    let lost = broker(
        &ns.addr,
        &root.path().join("l"),
        &[
            "brokerRole=SLAVE".into(),
            "brokerId=2".into(),
            "roleEpoch=1".into(),
            format!(
                "haMasterAddress=127.0.0.1:{}",
                ferrocket_testkit::free_port()
            ),
            format!("metricsPort={pl}"),
        ],
    );
    wait_until("the slave is ready", Duration::from_secs(20), || {
        probe(ps, "/readyz") == Some(200)
    });
    assert_eq!(probe(pm, "/readyz"), Some(200));
    assert_eq!(probe(pm, "/healthz"), Some(200));
    wait_until("the lost slave registered", Duration::from_secs(20), || {
        rt.block_on(c.cluster())
            .map(|cl| {
                cl.broker_addr_table
                    .values()
                    .any(|b| b.broker_addrs.values().any(|a| *a == lost.addr))
            })
            .unwrap_or(false)
    });
    assert_eq!(
        probe(pl, "/readyz"),
        Some(503),
        "a slave that never followed is not ready"
    );
    assert_eq!(probe(pl, "/healthz"), Some(200), "but it is alive");

    // Frozen: no answer at all (the kubelet counts a timeout as a failure).
    let stop = |sig: &str, pid: u32| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    stop("-STOP", m.pid());
    // The signal is delivered asynchronously: wait until the kernel shows it stopped.
    let stat = format!("/proc/{}/stat", m.pid());
    wait_until("the broker is stopped", Duration::from_secs(5), || {
        std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    });
    assert_eq!(
        probe(pm, "/healthz"),
        None,
        "a frozen broker answered /healthz"
    );
    stop("-CONT", m.pid());
    wait_until("the master answers again", Duration::from_secs(10), || {
        probe(pm, "/healthz") == Some(200)
    });

    // The slave is promoted at epoch 2: once a name server refuses the old master's
    // registration it is superseded and not ready; the new master is.
    let promoted = rt
        .block_on(change_role(&c.remoting, &s.addr, &NewRole::Master, 2, T))
        .unwrap();
    assert!(promoted.is_master());
    wait_until(
        "the old master is not ready",
        Duration::from_secs(10),
        || probe(pm, "/readyz") == Some(503),
    );
    wait_until("the new master is ready", Duration::from_secs(10), || {
        probe(ps, "/readyz") == Some(200)
    });
}

/// Issue 13's in-sync replica set: a SYNC_MASTER acknowledges only what *every* member
/// holds. A member that stops receiving (black-holed) holds sends back
/// (FLUSH_SLAVE_TIMEOUT, never SUCCESS without it) until it leaves the set after
/// `haMaxTimeSlaveNotCatchup`; then the other member alone acknowledges; healed, it
/// rejoins. Under `syncStateSetByController` it leaves only when the controller confirms.
#[test]
fn sync_master_acknowledges_only_what_every_in_sync_slave_holds() {
    for by_controller in [false, true] {
        let rt = rt();
        let ns = namesrv();
        let c = Client::new(&ns.addr);
        let root = tempfile::tempdir().unwrap();
        let m = master(
            &ns.addr,
            &root.path().join("m"),
            "SYNC_MASTER",
            &[
                "syncFlushTimeout=500",
                "haMaxTimeSlaveNotCatchup=2000",
                &format!("syncStateSetByController={by_controller}"),
            ],
        );
        create_topic(&rt, &c, "ISR", 1);
        let ha = m.ha_addr.clone().unwrap();
        let proxy = FaultProxy::start(&rt, ha.clone());
        let near = slave(&ns.addr, &root.path().join("a"), 1, 1, &ha);
        let far = slave(
            &ns.addr,
            &root.path().join("b"),
            2,
            1,
            &format!("127.0.0.1:{}", proxy.port),
        );
        wait_until("both slaves in sync", Duration::from_secs(20), || {
            state(&rt, &c, &m.addr).in_sync.len() == 2
        });
        let send = |id: &str| send_code(&rt, &c, "ISR", &m.addr, id);
        assert_eq!(send("both"), response::SUCCESS);
        proxy.set(BLACKHOLE);
        // The black-holed member is still in the set: nothing is acknowledged without it.
        assert_eq!(send("held"), response::FLUSH_SLAVE_TIMEOUT);
        if by_controller {
            // It stops catching up and is proposed to leave; sends wait for the
            // controller meanwhile.
            wait_until("the member is leaving", Duration::from_secs(10), || {
                state(&rt, &c, &m.addr).in_sync_leaving == [far.addr.clone()]
            });
            assert_eq!(send("still-held"), response::FLUSH_SLAVE_TIMEOUT);
            let st = state(&rt, &c, &m.addr);
            // A confirmation naming an old set epoch is refused.
            assert!(rt
                .block_on(ferrocket::client::role::confirm_sync_state_set(
                    &c.remoting,
                    &m.addr,
                    st.sync_set_epoch - 1,
                    std::slice::from_ref(&near.addr),
                    T,
                ))
                .is_err());
            rt.block_on(ferrocket::client::role::confirm_sync_state_set(
                &c.remoting,
                &m.addr,
                st.sync_set_epoch,
                std::slice::from_ref(&near.addr),
                T,
            ))
            .unwrap();
        }
        wait_until(
            "the stalled member left the set",
            Duration::from_secs(10),
            || state(&rt, &c, &m.addr).in_sync == [near.addr.clone()],
        );
        assert_eq!(send("one-member"), response::SUCCESS);
        // Heal: cut the black-holed connection (its byte stream lost frames) and let the
        // slave reconnect.
        proxy.set(CUT);
        wait_until(
            "the master drops the black-holed slave",
            Duration::from_secs(30),
            || state(&rt, &c, &m.addr).ha_connections == 1,
        );
        proxy.set(PASS);
        wait_until("the member rejoined", Duration::from_secs(30), || {
            state(&rt, &c, &m.addr).in_sync.len() == 2
        });
        assert_eq!(send("rejoined"), response::SUCCESS);
        // Every acknowledged message is on both slaves once they converge.
        converge(&rt, &c, &m, &far, "the healed member caught up");
        let on_far = rt.block_on(consume_all(&c, &far.addr, "ISR", 1));
        for id in ["both", "one-member", "rejoined"] {
            assert!(
                on_far.iter().any(|x| x == id),
                "{id} missing on the healed member"
            );
        }
    }
}

/// Issue 13: `namesrvAddr` changes while the broker runs (UPDATE_BROKER_CONFIG, what the
/// operator sends when the name servers change): it registers with the new ones at
/// once; a malformed list is refused and changes nothing.
#[test]
fn name_servers_change_at_run_time() {
    let rt = rt();
    let (ns1, ns2) = (namesrv(), namesrv());
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&ns1.addr, dir.path(), &[]);
    let c1 = Client::new(&ns1.addr);
    let c2 = Client::new(&ns2.addr);
    let listed = |c: &Client| {
        rt.block_on(c.cluster())
            .map(|cl| {
                cl.broker_addr_table
                    .values()
                    .any(|d| d.broker_addrs.values().any(|a| *a == b.addr))
            })
            .unwrap_or(false)
    };
    wait_until("registered with the first", Duration::from_secs(10), || {
        listed(&c1)
    });
    assert!(!listed(&c2));
    let bad = rt.block_on(ferrocket::client::role::set_namesrv_addr(
        &c1.remoting,
        &b.addr,
        "not-an-address",
        T,
    ));
    assert!(bad.is_err(), "a malformed namesrvAddr must be refused");
    let both = format!("{};{}", ns1.addr, ns2.addr);
    rt.block_on(ferrocket::client::role::set_namesrv_addr(
        &c1.remoting,
        &b.addr,
        &both,
        T,
    ))
    .unwrap();
    wait_until(
        "registered with the second",
        Duration::from_secs(10),
        || listed(&c2),
    );
    assert_eq!(state(&rt, &c1, &b.addr).namesrv_addr, both);
}

/// A master and two slaves (ids 1, 2) whose HA streams each pass through a proxy.
struct Proxied {
    m: Proc,
    pa: FaultProxy,
    pb: FaultProxy,
    a: Proc,
    b: Proc,
}

fn proxied_group(
    rt: &tokio::runtime::Runtime,
    ns: &str,
    root: &Path,
    role: &str,
    extra: &[&str],
) -> Proxied {
    let m = master(ns, &root.join("m"), role, extra);
    let ha = m.ha_addr.clone().unwrap();
    let (pa, pb) = (FaultProxy::start(rt, ha.clone()), FaultProxy::start(rt, ha));
    let via = |p: &FaultProxy| format!("127.0.0.1:{}", p.port);
    let a = kit().slave(ns, &root.join("a"), 1, 1, &via(&pa), role);
    let b = kit().slave(ns, &root.join("b"), 2, 1, &via(&pb), role);
    Proxied { m, pa, pb, a, b }
}

/// Issue 13: a SYNC_MASTER cut off from both its slaves (black-holed HA streams) while it
/// still reaches the name server and its clients never acknowledges again: its members
/// only become *leaving* (no controller on its side confirms), the slaves are promoted
/// and re-pointed on the other side, and once the name server refuses its registration
/// it fences itself (SERVICE_NOT_AVAILABLE). Every acknowledged send is on the new master.
#[test]
fn a_partitioned_old_master_stops_acknowledging_and_fences_itself() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let Proxied { m, pa, pb, a, b } = proxied_group(
        &rt,
        &ns.addr,
        root.path(),
        "SYNC_MASTER",
        &[
            "syncFlushTimeout=500",
            "haMaxTimeSlaveNotCatchup=1000",
            "syncStateSetByController=true",
        ],
    );
    create_topic(&rt, &c, "PART", 1);
    wait_until("both slaves in sync", Duration::from_secs(20), || {
        state(&rt, &c, &m.addr).in_sync.len() == 2
    });
    let send = |addr: &str, id: &str| send_code(&rt, &c, "PART", addr, id);
    assert_eq!(send(&m.addr, "before"), response::SUCCESS);

    // The partition: the master keeps its name server and clients, loses its slaves.
    pa.set(BLACKHOLE);
    pb.set(BLACKHOLE);
    assert_eq!(send(&m.addr, "during-0"), response::FLUSH_SLAVE_TIMEOUT);
    wait_until(
        "both members stopped catching up (leaving, unconfirmed)",
        Duration::from_secs(10),
        || state(&rt, &c, &m.addr).in_sync_leaving.len() == 2,
    );
    // Past haMaxTimeSlaveNotCatchup nothing changes: no controller confirms a smaller set.
    assert_eq!(send(&m.addr, "during-1"), response::FLUSH_SLAVE_TIMEOUT);
    assert_eq!(state(&rt, &c, &m.addr).in_sync.len(), 2);

    // The other side: a is promoted at epoch 2 and b follows it.
    let repointed = rt
        .block_on(fail_over(
            &c.remoting,
            &a.addr,
            &[(b.addr.clone(), 2)],
            2,
            T,
        ))
        .unwrap();
    assert_eq!(repointed, std::slice::from_ref(&b.addr));
    // The old master's next registration is refused (epoch 2 is master): it fences
    // itself. No answer on the way is SUCCESS.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 2;
    loop {
        let code = send(&m.addr, &format!("during-{i}"));
        i += 1;
        assert_ne!(
            code,
            response::SUCCESS,
            "the partitioned old master acknowledged"
        );
        if code == response::SERVICE_NOT_AVAILABLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old master never fenced itself"
        );
    }
    assert!(
        !state(&rt, &c, &m.addr).fenced.is_empty(),
        "runtime info shows masterFenced"
    );

    // The new master acknowledges once b is in its set.
    wait_until(
        "b joined the new master's set",
        Duration::from_secs(20),
        || state(&rt, &c, &a.addr).in_sync == [b.addr.clone()],
    );
    assert_eq!(send(&a.addr, "after"), response::SUCCESS);
    let on_new = rt.block_on(consume_all(&c, &a.addr, "PART", 1));
    assert_eq!(
        on_new,
        ["before", "after"],
        "only acknowledged sends, nothing else"
    );

    // Heal: the operator's correction points the old master at a; it cuts what it
    // never had acknowledged and converges.
    pa.set(PASS);
    pb.set(PASS);
    let role = NewRole::Slave {
        master: a.addr.clone(),
        master_ha: a.ha_addr.clone(),
        broker_id: Some(3),
    };
    rt.block_on(change_role(&c.remoting, &m.addr, &role, 2, T))
        .unwrap();
    converge(&rt, &c, &a, &m, "the old master converges on the new one");
}

/// A TCP proxy in front of a broker's client port that forwards everything until it
/// passes a ROLE_CHANGE request, then drops every answer: the promotion takes effect
/// and nobody hears of it (a lost answer, then reads that time out).
struct LostAnswerProxy {
    port: u16,
}

impl LostAnswerProxy {
    fn start(rt: &tokio::runtime::Runtime, target: String) -> LostAnswerProxy {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mute = Arc::new(AtomicBool::new(false));
        rt.spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let m = Arc::clone(&mute);
                tokio::spawn(async move {
                    // Client to broker: everything, watching for the role change code.
                    let needle = format!("\"code\":{}", 60001);
                    let mut seen = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = ri.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            m.store(true, Ordering::SeqCst);
                        }
                        let keep = seen.len().saturating_sub(needle.len());
                        seen.drain(..keep);
                        if wo.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let m = Arc::clone(&mute);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = ro.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        if !m.load(Ordering::SeqCst) && wi.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        LostAnswerProxy { port }
    }
}

/// Issue 13: a switchover whose promotion answer is lost, and whose follow-up read of
/// the target times out too, leaves the old master read-only: the target did become
/// master, so giving the old one its writes back would make two masters taking writes.
#[test]
fn a_switchover_that_loses_the_promotion_answer_leaves_one_writable_master() {
    use ferrocket::client::role::switch_over;
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let (m, s1, s2) = sync_master_and_two_slaves(&ns.addr, root.path());
    create_topic(&rt, &c, "LA", 1);
    let send = |addr: &str, id: &str| send_code(&rt, &c, "LA", addr, id);
    assert_eq!(send(&m.addr, "before"), response::SUCCESS);
    let proxy = LostAnswerProxy::start(&rt, s2.addr.clone());
    let outcome = rt.block_on(switch_over(
        &c.remoting,
        &m.addr,
        2,
        &format!("127.0.0.1:{}", proxy.port),
        &[(s1.addr.clone(), 1)],
        2,
        Duration::from_secs(2),
        Duration::from_secs(10),
    ));
    assert!(outcome.is_err(), "the switchover cannot know: {outcome:?}");
    // The promotion took effect.
    let target = state(&rt, &c, &s2.addr);
    assert_eq!((target.role.as_str(), target.epoch), ("SYNC_MASTER", 2));
    // The old master is still master of epoch 1 but takes no writes.
    let old = state(&rt, &c, &m.addr);
    assert_eq!((old.role.as_str(), old.epoch), ("SYNC_MASTER", 1));
    let refused = send(&m.addr, "after-on-old");
    assert!(
        [response::NO_PERMISSION, response::SERVICE_NOT_AVAILABLE].contains(&refused),
        "{refused}"
    );
    // Its writes were not given back (read-only, brokerPermission=4), whether or not a
    // name server has fenced it meanwhile.
    assert!(
        broker_config(&rt, &c, &m.addr).contains("brokerPermission=4"),
        "the old master got its writes back"
    );
    // The operator's next reconcile re-points everyone at the new master, which
    // acknowledges; nothing acknowledged is missing.
    let ha2 = Some(target.ha_addr.clone());
    for (p, id) in [(&m, 2), (&s1, 1)] {
        let role = NewRole::Slave {
            master: s2.addr.clone(),
            master_ha: ha2.clone(),
            broker_id: Some(id),
        };
        rt.block_on(change_role(&c.remoting, &p.addr, &role, 2, T))
            .unwrap();
    }
    wait_until(
        "the new master has its set",
        Duration::from_secs(20),
        || state(&rt, &c, &s2.addr).in_sync.len() == 2,
    );
    assert_eq!(send(&s2.addr, "after"), response::SUCCESS);
    let on_new = rt.block_on(consume_all(&c, &s2.addr, "LA", 1));
    assert_eq!(on_new, ["before", "after"]);
}

/// Issue 13 §1.3, the master lease: an ASYNC_MASTER with `masterLeaseMs` that stops
/// hearing from its slaves (both black-holed) stops taking writes within about one lease
/// — its acknowledged-but-unreplicated window is bounded by it — and takes writes again
/// as soon as one slave (the quorum) reports.
#[test]
fn a_master_cut_off_from_its_slaves_stops_taking_writes_within_its_lease() {
    let rt = rt();
    let ns = namesrv();
    let c = Client::new(&ns.addr);
    let root = tempfile::tempdir().unwrap();
    let Proxied {
        m,
        pa,
        pb,
        a: _a,
        b: _b,
    } = proxied_group(
        &rt,
        &ns.addr,
        root.path(),
        "ASYNC_MASTER",
        &["masterLeaseMs=1500", "masterLeaseQuorum=1"],
    );
    create_topic(&rt, &c, "LEASE", 1);
    wait_until("both slaves connected", Duration::from_secs(20), || {
        state(&rt, &c, &m.addr).ha_connections == 2
    });
    let send = |id: &str| send_code(&rt, &c, "LEASE", &m.addr, id);
    assert_eq!(send("before"), response::SUCCESS);

    pa.set(BLACKHOLE);
    pb.set(BLACKHOLE);
    let cut = Instant::now();
    let mut acked_after_cut = 0;
    let mut i = 0;
    let window = loop {
        let code = send(&format!("window-{i}"));
        i += 1;
        if code == response::SUCCESS {
            acked_after_cut += 1;
        } else {
            assert_eq!(code, response::SERVICE_NOT_AVAILABLE);
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "the master kept taking writes with no slave reporting"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "master lease 1500 ms: writes refused {} ms after the cut; {acked_after_cut} sends acknowledged meanwhile",
        window.as_millis()
    );
    // Still refused while nobody reports.
    assert_eq!(send("still-cut"), response::SERVICE_NOT_AVAILABLE);

    // One slave back (the quorum is 1): the black-holed stream is cut so it reconnects.
    pa.set(CUT);
    wait_until(
        "the master dropped the black-holed slave",
        Duration::from_secs(40),
        || state(&rt, &c, &m.addr).ha_connections < 2,
    );
    pa.set(PASS);
    wait_until("writes taken again", Duration::from_secs(30), || {
        send("healed") == response::SUCCESS
    });
}

/// `haRequireSignature=true`: the group's slaves answer the master's challenge with the
/// control secret and replicate; a stranger on the HA port (asking for offset 0, or
/// answering with a wrong secret) gets the challenge and nothing of the CommitLog.
#[test]
fn with_ha_signatures_only_the_groups_slaves_receive_the_commitlog() {
    use std::io::{Read, Write};
    let rt = rt();
    let ns = namesrv();
    let root = tempfile::tempdir().unwrap();
    let secret = secret_file(root.path());
    let signed = ha_signed(&secret);
    let kit = kit().defaults(&signed.iter().map(String::as_str).collect::<Vec<_>>());
    let g = kit.replicas(
        &ns.addr,
        root.path(),
        "SYNC_MASTER",
        1,
        &["syncFlushTimeout=3000".into()],
    );
    let c = signing_client(&ns.addr, &secret);
    create_topic(&rt, &c, "HS", 1);
    for i in 0..20 {
        assert_eq!(
            send_code(&rt, &c, "HS", &g.master.addr, &format!("h-{i}")),
            response::SUCCESS
        );
    }
    let end = state(&rt, &c, &g.master.addr).max_offset;
    converge(
        &rt,
        &c,
        &g.master,
        &g.slaves[0],
        "the signed slave holds the master's log",
    );
    assert_eq!(state(&rt, &c, &g.slaves[0].addr).max_offset, end);

    // A stranger: reads the challenge (12-byte head + 16-byte nonce), asks for offset 0
    // instead of answering, and is closed without a byte of the CommitLog.
    let read_all = ferrocket_testkit::read_until_closed;
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", g.master.ha_port())).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // (Twice: a whole frame head, so the master need not wait for the rest.)
    stranger.write_all(&[0u8; 16]).unwrap();
    let got = read_all(&mut stranger);
    assert_eq!(
        got.len(),
        12 + 16,
        "a stranger received more than the challenge: {} bytes",
        got.len()
    );
    assert_eq!(i64::from_be_bytes(got[..8].try_into().unwrap()), -3);
    // An answer signed with another secret: the same.
    let mut wrong = std::net::TcpStream::connect(("127.0.0.1", g.master.ha_port())).unwrap();
    wrong
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 28];
    wrong.read_exact(&mut head).unwrap();
    let creds = ferrocket::auth::Credentials::new("ferrocket-operator", b"not-the-secret").unwrap();
    let mut content = b"ferrocket-ha:".to_vec();
    content.extend_from_slice(&head[12..]);
    let sig = creds.sign_bytes(&content);
    let mut answer = (-4i64).to_be_bytes().to_vec();
    answer.extend_from_slice(&(sig.len() as i32).to_be_bytes());
    answer.extend_from_slice(sig.as_bytes());
    answer.extend_from_slice(&(-1i64).to_be_bytes());
    wrong.write_all(&answer).unwrap();
    assert!(
        read_all(&mut wrong).is_empty(),
        "a wrong secret received something"
    );
    // The slave is still connected and in sync.
    g.wait_connected(Duration::from_secs(10));
}

/// Turning `haRequireSignature` on in a running group, in the operator's rolling order
/// (slaves first, the master last): a slave that has it follows a master that does not
/// yet (no challenge comes, so after a short wait it replicates unsigned); once the
/// master restarts with it, the same slave answers its challenge and stays in sync.
#[test]
fn ha_signatures_turn_on_slaves_first_and_the_group_keeps_replicating() {
    let rt = rt();
    let ns = namesrv();
    let root = tempfile::tempdir().unwrap();
    let secret = secret_file(root.path());
    let signed = ha_signed(&secret);
    let plain = [format!("controlSecretFile={}", secret.display())];
    let master_kit = kit().defaults(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    let slave_kit = kit().defaults(&signed.iter().map(String::as_str).collect::<Vec<_>>());
    let m_extra = [
        "brokerRole=SYNC_MASTER".to_owned(),
        "brokerId=0".into(),
        "roleEpoch=1".into(),
        "syncFlushTimeout=3000".into(),
    ];
    let mut master = master_kit.broker(&ns.addr, &root.path().join("m"), &m_extra);
    let ha = master.ha_addr.clone().unwrap();
    let slave = slave_kit.slave(&ns.addr, &root.path().join("s1"), 1, 1, &ha, "SYNC_MASTER");
    let c = signing_client(&ns.addr, &secret);
    let slave_in_sync = |master: &Proc, what: &str, secs: u64| {
        wait_until(what, Duration::from_secs(secs), || {
            rt.block_on(broker_state(&c.remoting, &master.addr, T))
                .is_ok_and(|s| s.ha_connections >= 1 && !s.in_sync.is_empty())
        });
    };
    slave_in_sync(&master, "the signed slave follows the unsigned master", 20);
    create_topic(&rt, &c, "Roll", 1);
    // Ten sends acknowledged by the master, then the slave holds its whole log.
    let sends_reach_the_slave = |master: &Proc, from: usize, what: &str| {
        for i in from..from + 10 {
            assert_eq!(
                send_code(&rt, &c, "Roll", &master.addr, &format!("r-{i}")),
                response::SUCCESS
            );
        }
        converge(&rt, &c, master, &slave, what);
    };
    sends_reach_the_slave(&master, 0, "the slave holds the unsigned master's log");

    // The master restarts with haRequireSignature (the last step of the roll).
    assert!(master.terminate());
    let ports = ferrocket_testkit::Ports::of(&master);
    master = slave_kit.broker_in(None, &ns.addr, &root.path().join("m"), ports, &m_extra);
    slave_in_sync(
        &master,
        "the slave answers the restarted master's challenge",
        30,
    );
    sends_reach_the_slave(&master, 10, "the slave holds the signed master's log");
}
