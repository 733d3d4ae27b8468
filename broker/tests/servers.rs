//! Real `ferrocket namesrv` and `ferrocket broker` processes on free loopback ports,
//! driven with ferrocket's own remoting client: send, pull, long polling, offsets,
//! restarts, and bad input that must not disturb other clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocket::protocol::{parse_body, TopicRouteData};
use ferrocket::remoting::codes::{request, response};
use ferrocket::remoting::{RemotingClient, RemotingCommand};
use ferrocket::store::{decode_record, encode_properties};
use ferrocket_testkit::{free_port, Kit, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_ferrocket");

/// The kit with this suite's broker defaults: 8 MiB segments, SYNC_FLUSH.
fn kit() -> Kit {
    Kit::with_bin(BIN).defaults(&[
        "mappedFileSizeCommitLog=8388608",
        "flushDiskType=SYNC_FLUSH",
    ])
}

fn namesrv() -> Proc {
    kit().namesrv()
}

fn broker(ns: &str, dir: &Path, extra: &[&str]) -> Proc {
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    kit().broker(ns, dir, &extra)
}

/// A broker serving `/metrics` on a free port; returns the port too.
/// A port picked free may be taken by another test's process before the broker binds
/// it (the broker then exits: "cannot listen on metricsPort"), so up to three ports
/// are tried.
fn metered_broker(ns: &str, dir: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let metrics = format!("metricsPort={port}");
        let mut all = vec![metrics.as_str()];
        all.extend_from_slice(extra);
        let started = std::panic::catch_unwind(|| broker(ns, dir, &all));
        match started {
            Ok(b) => return (b, port),
            Err(e) if attempt >= 3 => std::panic::resume_unwind(e),
            Err(_) => eprintln!("metrics port {port} was taken; trying another"),
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn send_req(topic: &str, queue: i32, body: &str, tag: &str) -> RemotingCommand {
    RemotingCommand::request(request::SEND_MESSAGE_V2)
        .with_ext("a", "pg")
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", queue)
        .with_ext("f", 0)
        .with_ext("g", 1)
        .with_ext("h", 0)
        .with_ext("i", encode_properties([("TAGS", tag), ("UNIQ_KEY", body)]))
        .with_body(Bytes::copy_from_slice(body.as_bytes()))
}

fn pull_req(topic: &str, queue: i32, offset: i64, suspend_ms: u64) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "cg")
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", 0x2 | 0x4)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", suspend_ms)
        .with_ext("subscription", "*")
        .with_ext("subVersion", 0)
}

const T: Duration = Duration::from_secs(10);

#[test]
fn send_route_pull_and_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let rt = rt();
    rt.block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, send_req("Orders", 1, "m0", "A"), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(r.ext("queueOffset"), Some("0"));
        assert_eq!(r.ext("msgId").unwrap().len(), 32);
        assert_eq!(r.ext("transactionId"), Some("m0"));
        // The auto-created topic reaches the name server.
        let deadline = Instant::now() + T;
        let route = loop {
            let q = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
                .with_ext("topic", "Orders");
            let r = c.invoke(&ns.addr, q, T).await.unwrap();
            if r.code == response::SUCCESS {
                break parse_body::<TopicRouteData>(&r.body_bytes()).unwrap();
            }
            assert!(Instant::now() < deadline, "route never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(route.broker_datas[0].broker_addrs[&0], b.addr);
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);

        let r = c
            .invoke(&b.addr, pull_req("Orders", 1, 0, 1000), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let m = decode_record(&r.body_bytes()).unwrap();
        assert_eq!(&m.body[..], b"m0");
        assert_eq!(r.ext("nextBeginOffset"), Some("1"));

        // Long polling: the pull waits, and a send wakes it well before its timeout.
        let started = Instant::now();
        let pull = c.invoke(
            &b.addr,
            pull_req("Orders", 1, 1, 20_000),
            Duration::from_secs(30),
        );
        let send = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let c2 = RemotingClient::new();
            c2.invoke(&b.addr, send_req("Orders", 1, "m1", "A"), T)
                .await
                .unwrap()
        };
        let (r, s) = tokio::join!(pull, send);
        assert_eq!(s.code, response::SUCCESS);
        let r = r.unwrap();
        assert_eq!(r.code, response::SUCCESS);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "long poll was not woken"
        );
        assert_eq!(&decode_record(&r.body_bytes()).unwrap().body[..], b"m1");

        // Caught up with no suspension: PULL_NOT_FOUND, next = offset.
        let mut p = pull_req("Orders", 1, 2, 0);
        p.ext_fields.insert("sysFlag".into(), "4".into());
        let r = c.invoke(&b.addr, p, T).await.unwrap();
        assert_eq!(
            (r.code, r.ext("nextBeginOffset")),
            (response::PULL_NOT_FOUND, Some("2"))
        );
        // Past the end: PULL_OFFSET_MOVED to max.
        let mut p = pull_req("Orders", 1, 9, 0);
        p.ext_fields.insert("sysFlag".into(), "4".into());
        let r = c.invoke(&b.addr, p, T).await.unwrap();
        assert_eq!(
            (r.code, r.ext("nextBeginOffset")),
            (response::PULL_OFFSET_MOVED, Some("2"))
        );
    });
}

#[test]
fn offsets_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let rt = rt();
    {
        let mut b = broker(&ns.addr, dir.path(), &[]);
        rt.block_on(async {
            let c = RemotingClient::new();
            for i in 0..3 {
                let r = c
                    .invoke(&b.addr, send_req("Off", 0, &format!("m{i}"), ""), T)
                    .await
                    .unwrap();
                assert_eq!(r.code, response::SUCCESS);
            }
            let u = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
                .with_ext("consumerGroup", "g1")
                .with_ext("topic", "Off")
                .with_ext("queueId", 0)
                .with_ext("commitOffset", 2);
            assert_eq!(
                c.invoke(&b.addr, u, T).await.unwrap().code,
                response::SUCCESS
            );
            // Issue 14: no offsets for topics that do not exist (RocketMQ 5's answer).
            let made_up = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
                .with_ext("consumerGroup", "g1")
                .with_ext("topic", "MadeUp")
                .with_ext("queueId", 0)
                .with_ext("commitOffset", 2);
            let r = c.invoke(&b.addr, made_up, T).await.unwrap();
            assert_eq!(
                (r.code, r.remark.as_deref()),
                (response::TOPIC_NOT_EXIST, Some("Topic MadeUp not exist!"))
            );
        });
        // SIGTERM: a clean shutdown persists offsets and exits 0.
        assert!(b.terminate(), "the broker did not exit 0 on SIGTERM");
    }
    assert!(!dir.path().join("abort").exists());
    let b = broker(&ns.addr, dir.path(), &[]);
    rt.block_on(async {
        let c = RemotingClient::new();
        let q = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "g1")
            .with_ext("topic", "Off")
            .with_ext("queueId", 0);
        let r = c.invoke(&b.addr, q, T).await.unwrap();
        assert_eq!((r.code, r.ext("offset")), (response::SUCCESS, Some("2")));
        let m = RemotingCommand::request(request::GET_MAX_OFFSET)
            .with_ext("topic", "Off")
            .with_ext("queueId", 0);
        assert_eq!(
            c.invoke(&b.addr, m, T).await.unwrap().ext("offset"),
            Some("3")
        );
    });
}

fn frame_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn bad_input_gets_an_error_or_a_closed_connection_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let rt = rt();
    let good = RemotingClient::new();
    rt.block_on(async {
        assert_eq!(
            good.invoke(&b.addr, send_req("Fine", 0, "before", ""), T)
                .await
                .unwrap()
                .code,
            0
        );
    });
    // Garbage bytes: a negative length.
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(&[0xFF; 64]).unwrap();
    assert!(frame_closed(&mut s));
    // A length over the 16 MiB limit.
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(&(64 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(frame_closed(&mut s));
    // A header length that lies about the frame.
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(&[0, 0, 0, 8, 0, 0, 0x7F, 0xFF, b'{', b'}', 0, 0])
        .unwrap();
    assert!(frame_closed(&mut s));
    // JSON that is not a command.
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(&[0, 0, 0, 7, 0, 0, 0, 3, b'[', b'1', b']'])
        .unwrap();
    assert!(frame_closed(&mut s));
    rt.block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, RemotingCommand::request(4242), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::REQUEST_CODE_NOT_SUPPORTED);
        let r = c
            .invoke(&b.addr, send_req("bad topic!", 0, "x", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::MESSAGE_ILLEGAL);
        assert!(r.remark.unwrap().contains("allowed"));
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::SEND_MESSAGE_V2).with_ext("b", "T"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        // The first client's connection was never disturbed.
        assert_eq!(
            good.invoke(&b.addr, send_req("Fine", 0, "after", ""), T)
                .await
                .unwrap()
                .code,
            0
        );
        let r = c
            .invoke(&ns.addr, RemotingCommand::request(4242), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::REQUEST_CODE_NOT_SUPPORTED);
    });
}

#[test]
fn invalid_config_exits_non_zero_naming_the_key() {
    let out = Command::new(BIN)
        .args(["broker", "--set", "listenPort=notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listenPort"), "{err}");
}

/// `bindAddress` and `haBindAddress`: each port listens on its own address only (on
/// Linux every 127.x address is loopback); an address that is not an IP address stops
/// the broker naming the key.
#[test]
fn each_port_listens_on_its_bind_address() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(
        &ns.addr,
        dir.path(),
        &["bindAddress=127.0.0.3", "haBindAddress=127.0.0.2"],
    );
    // Addresses no other test listens on (a name server of a test running beside
    // this one may listen on 127.0.0.1 at this broker's HA port number).
    let reachable = |ip: &str, port: u16| TcpStream::connect((ip, port)).is_ok();
    assert!(reachable("127.0.0.3", b.port()));
    assert!(
        !reachable("127.0.0.2", b.port()),
        "client port on 127.0.0.2"
    );
    assert!(reachable("127.0.0.2", b.ha_port()));
    assert!(!reachable("127.0.0.3", b.ha_port()), "HA port on 127.0.0.3");
    let out = Command::new(BIN)
        .args(["broker", "--set", "haBindAddress=somewhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("haBindAddress"), "{err}");
}

/// Issue 15 (first step): a broker configured for RocketMQ's DLedger mode stops at
/// start-up saying the mode is not built, instead of running as a plain master.
#[test]
fn a_bad_dledger_peer_list_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["broker", "--set", "enableDLegerCommitLog=true"])
        .args([
            "--set",
            "dLegerGroup=RaftNode00",
            "--set",
            "dLegerSelfId=n0",
        ])
        .args([
            "--set",
            "dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1;n2-127.0.0.1:40913",
        ])
        .arg("--set")
        .arg(format!("storePathRootDir={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dLegerPeers"), "{err}");
    assert!(err.contains("is not id-host:port"), "{err}");
}

#[test]
fn query_by_key_unique_key_and_offset_id() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let rt = rt();
    rt.block_on(async {
        let c = RemotingClient::new();
        let mut s = send_req("Q", 0, "U-1", "A");
        s.ext_fields.insert(
            "i".into(),
            encode_properties([
                ("TAGS", "A"),
                ("KEYS", "order-7 other"),
                ("UNIQ_KEY", "U-1"),
            ]),
        );
        let r = c.invoke(&b.addr, s, T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let offset_id = r.ext("msgId").unwrap().to_owned();
        let query = |key: &str, uniq: bool| {
            let mut q = RemotingCommand::request(request::QUERY_MESSAGE)
                .with_ext("topic", "Q")
                .with_ext("key", key)
                .with_ext("maxNum", 10)
                .with_ext("beginTimestamp", 0)
                .with_ext("endTimestamp", i64::MAX);
            if uniq {
                q = q.with_ext("_UNIQUE_KEY_QUERY", "true");
            }
            q
        };
        // The index is built asynchronously; poll briefly.
        let deadline = Instant::now() + T;
        let r = loop {
            let r = c.invoke(&b.addr, query("order-7", false), T).await.unwrap();
            if r.code == response::SUCCESS || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(r.code, response::SUCCESS);
        assert_eq!(&decode_record(&r.body_bytes()).unwrap().body[..], b"U-1");
        let r = c.invoke(&b.addr, query("U-1", true), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let r = c.invoke(&b.addr, query("missing", false), T).await.unwrap();
        assert_eq!(r.code, response::QUERY_NOT_FOUND);
        let (_, phys) = ferrocket::protocol::msg_id::decode_offset_msg_id(&offset_id).unwrap();
        let v = RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", phys);
        let r = c.invoke(&b.addr, v, T).await.unwrap();
        assert_eq!(&decode_record(&r.body_bytes()).unwrap().body[..], b"U-1");
        // Issue 14: an offset inside a record (or past the end) is not a message, even
        // where the bytes there happen to parse as a size and a magic code.
        for inside in [phys + 2, phys + 4, phys + 8, phys + 20, u64::MAX / 2] {
            let v =
                RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", inside);
            let r = c.invoke(&b.addr, v, T).await.unwrap();
            assert_eq!(r.code, response::SYSTEM_ERROR, "offset {inside}");
            assert_eq!(r.body_bytes().len(), 0);
        }
    });
}

fn admin(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("admin")
        .arg("--namesrv")
        .arg(ns)
        .args(args)
        .env("FERROCKET_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_cli_against_a_live_broker() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let _b = broker(&ns.addr, dir.path(), &[]);
    let (ok, out, err) = admin(
        &ns.addr,
        &["topic", "create", "--topic", "Cli", "--queues", "2"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created Cli"));
    let (ok, out, _) = admin(&ns.addr, &["topic", "list"]);
    assert!(ok && out.lines().any(|l| l == "Cli"), "{out}");
    let (ok, out, err) = admin(
        &ns.addr,
        &[
            "send",
            "--topic",
            "Cli",
            "--tag",
            "A",
            "--key",
            "k-42",
            "--body",
            "hello cli",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("SEND_OK msgId="), "{out}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches("msgId=")
        .to_owned();
    let (ok, out, err) = admin(&ns.addr, &["query-id", "--id", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains("keys=k-42") && out.contains("hello cli"),
        "{out}"
    );
    // The index is built asynchronously.
    let deadline = Instant::now() + T;
    loop {
        let (ok, out, _) = admin(&ns.addr, &["query-key", "--topic", "Cli", "--key", "k-42"]);
        if ok {
            assert!(out.contains("hello cli"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "query-key never found the message"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = admin(
        &ns.addr,
        &[
            "consume",
            "--topic",
            "Cli",
            "--group",
            "cli_g",
            "--from-first",
            "--idle",
            "1s",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("body=hello cli"), "{out}");
    let (ok, out, _) = admin(&ns.addr, &["offsets", "--group", "cli_g", "--topic", "Cli"]);
    assert!(ok && out.contains("total lag: 0"), "{out}");
    let (ok, out, _) = admin(&ns.addr, &["cluster"]);
    assert!(
        ok && out.contains("broker-a")
            && out.contains("ASYNC_MASTER")
            && out.contains("ferrocket "),
        "{out}"
    );
    let (ok, _, err) = admin(
        &ns.addr,
        &["topic", "update", "--topic", "Cli", "--queues", "2"],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = admin(&ns.addr, &["topic", "describe", "--topic", "Cli"]);
    assert!(ok && out.contains("MAX_OFFSET"), "{out}");
    let total_max: i64 = out
        .lines()
        .skip_while(|l| !l.contains("MAX_OFFSET"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum();
    assert_eq!(total_max, 1, "{out}");
    let (ok, out, err) = admin(
        &ns.addr,
        &["--json", "offsets", "--group", "cli_g", "--topic", "Cli"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert!(ok && v["totalLag"] == 0, "{out}");
    let (ok, _, err) = admin(
        &ns.addr,
        &["group", "create", "--group", "cli_grp", "--retry-max", "3"],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = admin(&ns.addr, &["--json", "group", "list"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v["cli_grp"]["retryMaxTimes"] == 3, "{out}");
    let addr = _b.addr.clone();
    let (ok, out, _) = admin(&ns.addr, &["broker-status", "--broker", &addr]);
    assert!(ok && out.contains("commitLogMaxOffset"), "{out}");
    let (ok, out, _) = admin(&ns.addr, &["broker-config", "get", "--broker", &addr]);
    assert!(ok && out.contains("brokerName=broker-a"), "{out}");
    let (ok, _, err) = admin(
        &ns.addr,
        &[
            "broker-config",
            "set",
            "--broker",
            &addr,
            "--key",
            "autoCreateTopicEnable",
            "--value",
            "false",
        ],
    );
    assert!(ok, "{err}");
    let (_, out, _) = admin(&ns.addr, &["broker-config", "get", "--broker", &addr]);
    assert!(out.contains("autoCreateTopicEnable=false"), "{out}");
    // Auto-creation is now off: a send to an unknown topic is refused.
    let r = rt()
        .block_on(RemotingClient::new().invoke(&addr, send_req("NewTopicNow", 0, "x", ""), T))
        .unwrap();
    assert_eq!(r.code, response::TOPIC_NOT_EXIST);
    let (ok, _, err) = admin(
        &ns.addr,
        &[
            "broker-config",
            "set",
            "--broker",
            &addr,
            "--key",
            "listenPort",
            "--value",
            "1",
        ],
    );
    assert!(!ok && err.contains("listenPort"), "{err}");
    // Errors name what was wrong and exit non-zero.
    let (ok, _, err) = admin(&ns.addr, &["offsets", "--group", "g", "--topic", "Nope"]);
    assert!(!ok && err.contains("unknown topic `Nope`"), "{err}");
    let (ok, _, err) = admin(&ns.addr, &["send", "--topic", "bad topic", "--body", "x"]);
    assert!(!ok && err.contains("allowed"), "{err}");
    let (ok, _, err) = admin("127.0.0.1:1", &["topic", "list"]);
    assert!(!ok && !err.is_empty());
    let (ok, out, err) = admin(&ns.addr, &["topic", "delete", "--topic", "Cli"]);
    assert!(ok && out.contains("deleted Cli"), "{err}");
    let (_, out, _) = admin(&ns.addr, &["topic", "list"]);
    assert!(!out.lines().any(|l| l == "Cli"), "{out}");
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    (status, out)
}

#[test]
fn metrics_and_health_endpoints_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let port = free_port();
    let b = broker(&ns.addr, dir.path(), &[&format!("metricsPort={port}")]);
    let rt = rt();
    rt.block_on(async {
        let c = RemotingClient::new();
        for i in 0..3 {
            let r = c
                .invoke(&b.addr, send_req("Metered", 0, &format!("m{i}"), ""), T)
                .await
                .unwrap();
            assert_eq!(r.code, response::SUCCESS);
        }
        // Dispatch is asynchronous: pull until all three came back.
        let mut off = 0i64;
        while off < 3 {
            let r = c
                .invoke(&b.addr, pull_req("Metered", 0, off, 1000), T)
                .await
                .unwrap();
            if r.code == response::SUCCESS {
                off = r.ext_num("nextBeginOffset").unwrap();
            }
        }
        let u = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "mg")
            .with_ext("topic", "Metered")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", 1);
        c.invoke(&b.addr, u, T).await.unwrap();
    });
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);
    assert_eq!(http_get(port, "/nope").0, 404);
    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"ferrocket_messages_in_total{topic="Metered"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferrocket_messages_out_total{topic="Metered"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("ferrocket_send_latency_seconds_count 3"),
        "{text}"
    );
    assert!(
        text.contains(r#"ferrocket_consumer_lag_messages{group="mg",topic="Metered"} 2"#),
        "{text}"
    );
    assert!(text.contains("ferrocket_store_max_offset_bytes"));
    assert!(text.contains("ferrocket_connections "), "{text}");
    assert!(
        text.contains("ferrocket_flush_latency_seconds_count"),
        "{text}"
    );
    // Admin stats bodies, in the shapes Java admin tools read.
    rt.block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_TOPIC_STATS_INFO)
                    .with_ext("topic", "Metered"),
                T,
            )
            .await
            .unwrap();
        let body = String::from_utf8(r.body_bytes().to_vec()).unwrap();
        assert!(
            body.starts_with(
                r#"{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"Metered"}:{"#
            ),
            "{body}"
        );
        assert!(body.contains(r#""maxOffset":3"#), "{body}");
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_CONSUME_STATS)
                    .with_ext("consumerGroup", "mg"),
                T,
            )
            .await
            .unwrap();
        let body = String::from_utf8(r.body_bytes().to_vec()).unwrap();
        assert!(
            body.contains(r#""brokerOffset":3,"consumerOffset":1"#),
            "{body}"
        );
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_CONSUMER_CONNECTION_LIST)
                    .with_ext("consumerGroup", "absent"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
    });
}

#[test]
fn vip_channel_answers_on_listen_port_minus_two() {
    // A free port whose port − 2 is free too.
    let port = loop {
        let p = free_port();
        if p > 1026 && std::net::TcpListener::bind(("127.0.0.1", p - 2)).is_ok() {
            break p;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[&format!("listenPort={port}")]);
    assert!(b.addr.ends_with(&format!(":{port}")));
    rt().block_on(async {
        let c = RemotingClient::new();
        let vip = format!("127.0.0.1:{}", port - 2);
        let r = c
            .invoke(&vip, send_req("Vip", 0, "via-vip", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    });
}

#[test]
fn roles_file_makes_a_pod_master_or_slave() {
    let ns = namesrv();
    let roles_dir = tempfile::tempdir().unwrap();
    let roles = roles_dir.path().join("roles");
    std::fs::write(&roles, "master=broker-a-0\nepoch=1\n").unwrap();
    let start = |pod: &str, dir: &Path| {
        let args: Vec<String> = [
            "broker",
            "--roles-file",
            roles.to_str().unwrap(),
            "--pod-name",
            pod,
            "--set",
            &format!("namesrvAddr={}", ns.addr),
            "--set",
            "listenPort=0",
            "--set",
            &format!("storePathRootDir={}", dir.display()),
            "--set",
            "mappedFileSizeCommitLog=8388608",
            "--set",
            "diskSpaceCleanForciblyRatio=100",
            "--set",
            "diskSpaceWarningLevelRatio=100",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let p = kit().spawn(&args);
        let role = p.role.clone();
        (p, role)
    };
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, role0) = start("broker-a-0", d0.path());
    let (slave, role1) = start("broker-a-1", d1.path());
    assert_eq!((role0.as_str(), role1.as_str()), ("master", "slave"));
    let (ok, out, err) = admin(&ns.addr, &["--json", "cluster"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let addrs = &v["brokerAddrTable"]["broker-a"]["brokerAddrs"];
    assert_eq!(addrs["0"], master.addr.as_str(), "{out}");
    assert_eq!(addrs["2"], slave.addr.as_str(), "{out}");
    // The slave takes no writes.
    let r = rt()
        .block_on(RemotingClient::new().invoke(&slave.addr, send_req("T", 0, "x", ""), T))
        .unwrap();
    assert_eq!(r.code, response::SERVICE_NOT_AVAILABLE);
}

#[test]
fn broker_permission_read_only_refuses_sends_and_masks_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let (ok, _, err) = admin(&ns.addr, &["topic", "create", "--topic", "Perm"]);
    assert!(ok, "{err}");
    let rt = rt();
    let c = ferrocket::client::Client::new(&ns.addr);
    let route_perm = || {
        rt.block_on(c.route("Perm"))
            .unwrap()
            .map(|r| r.queue_datas.iter().map(|q| q.perm).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(route_perm(), [6]);
    let set = |v: &str| {
        let (ok, _, err) = admin(
            &ns.addr,
            &[
                "broker-config",
                "set",
                "--broker",
                &b.addr,
                "--key",
                "brokerPermission",
                "--value",
                v,
            ],
        );
        (ok, err)
    };
    let (ok, err) = set("4");
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&ns.addr, &["send", "--topic", "Perm", "--body", "x"]);
    assert!(!ok && err.contains("sending message is forbidden"), "{err}");
    // The broker re-registers at once: the route loses the write bit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while route_perm() != [4] {
        assert!(std::time::Instant::now() < deadline, "{:?}", route_perm());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A value that is not a permission is refused; writes come back with 6.
    let (ok, err) = set("5");
    assert!(!ok && err.contains("brokerPermission"), "{err}");
    let (ok, err) = set("6");
    assert!(ok, "{err}");
    let (ok, out, err) = admin(&ns.addr, &["send", "--topic", "Perm", "--body", "y"]);
    assert!(ok && out.contains("SEND_OK"), "{out} {err}");
    while route_perm() != [6] {
        assert!(std::time::Instant::now() < deadline, "{:?}", route_perm());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `brokerSuspendMaxTimeMillis` (settable over the network) and a pull's
/// `suspendTimeoutMillis` at `u64::MAX`: the pull is held (bounded), not panicked, and a
/// send still wakes it.
#[test]
fn huge_long_poll_timeouts_hold_the_pull_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    rt().block_on(async {
        let c = RemotingClient::new();
        let set = RemotingCommand::request(request::UPDATE_BROKER_CONFIG).with_body(Bytes::from(
            format!("brokerSuspendMaxTimeMillis={}\n", u64::MAX),
        ));
        let r = c.invoke(&b.addr, set, T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let r = c
            .invoke(&b.addr, send_req("Huge", 0, "m0", "A"), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        // The first message is readable (dispatched) before the held pull.
        let r = c
            .invoke(&b.addr, pull_req("Huge", 0, 0, 5000), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let pull = c.invoke(
            &b.addr,
            pull_req("Huge", 0, 1, u64::MAX),
            Duration::from_secs(30),
        );
        let send = async {
            // The pull must be suspended (not answered, not crashed) before the send.
            tokio::time::sleep(Duration::from_millis(300)).await;
            RemotingClient::new()
                .invoke(&b.addr, send_req("Huge", 0, "m1", "A"), T)
                .await
                .unwrap()
        };
        let (r, s) = tokio::join!(pull, send);
        assert_eq!(s.code, response::SUCCESS);
        let r = r.expect("the held pull never answered");
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(&decode_record(&r.body_bytes()).unwrap().body[..], b"m1");
    });
}

/// Resident memory of a process, from `/proc` (Linux).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The broker's memory bound for one flooding connection, stated: the 16 MiB response
/// budget, one heavy response in the making, and the process itself. Before the
/// per-connection bounds this flood drove the broker past 2 GB.
const FLOOD_RSS_BOUND: u64 = 400 * 1024 * 1024;

/// A client pipelines 40,000 GET_ALL_TOPIC_CONFIG requests (2,000 topics, about 0.4 MB
/// per answer) and never reads: the broker pauses that connection instead of buffering
/// gigabytes, another client's send is still answered within a second, and closing the
/// flood leaves the broker serving.
#[test]
fn a_flooding_client_neither_starves_others_nor_grows_memory_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let pid = b.pid();
    let rt = rt();
    rt.block_on(async {
        let c = std::sync::Arc::new(RemotingClient::new());
        let mut created = tokio::task::JoinSet::new();
        for chunk in 0..20 {
            let c = std::sync::Arc::clone(&c);
            let addr = b.addr.clone();
            created.spawn(async move {
                for i in 0..100 {
                    let req = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
                        .with_ext("topic", format!("Flood_{chunk}_{i}_with_a_longish_name"))
                        .with_ext("readQueueNums", 8)
                        .with_ext("writeQueueNums", 8)
                        .with_ext("perm", 6);
                    let r = c.invoke(&addr, req, T).await.unwrap();
                    assert_eq!(r.code, response::SUCCESS);
                }
            });
        }
        while let Some(r) = created.join_next().await {
            r.unwrap();
        }
    });
    let baseline = rss_bytes(pid);
    let frame =
        ferrocket::remoting::encode_frame(&RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG))
            .unwrap();
    let flood = TcpStream::connect(&b.addr).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let writer = {
        let mut flood = flood.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sent = 0usize;
            for _ in 0..40_000 {
                if flood.write_all(&frame).is_err() {
                    break; // the broker stopped reading: paused, as it should be
                }
                sent += 1;
            }
            sent
        })
    };
    let mut peak = baseline.unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(6);
    let mut sends = 0;
    rt.block_on(async {
        let c = RemotingClient::new();
        while Instant::now() < until {
            let r = c
                .invoke(
                    &b.addr,
                    send_req("Flood_0_0_with_a_longish_name", 0, "still", ""),
                    Duration::from_secs(1),
                )
                .await
                .expect("a send was not answered within 1 s during the flood");
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
            sends += 1;
            if let Some(rss) = rss_bytes(pid) {
                peak = peak.max(rss);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let sent = writer.join().unwrap();
    if let Some(rss) = rss_bytes(pid) {
        peak = peak.max(rss);
    }
    eprintln!(
        "flood: {sent} of 40000 requests written (a write blocked 3 s ends the flood); \
         broker RSS {} MiB before, peak {} MiB; {sends} sends answered meanwhile",
        baseline.unwrap_or(0) >> 20,
        peak >> 20
    );
    assert!(sends > 10);
    if baseline.is_some() {
        assert!(
            peak < FLOOD_RSS_BOUND,
            "broker RSS peaked at {} MiB, over the {} MiB bound",
            peak >> 20,
            FLOOD_RSS_BOUND >> 20
        );
    } else {
        eprintln!("skipped: the memory bound (no /proc/PID/status here)");
    }
    drop(flood);
    rt.block_on(async {
        let r = RemotingClient::new()
            .invoke(
                &b.addr,
                send_req("Flood_0_0_with_a_longish_name", 0, "after", ""),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
    });
}

/// One shutdown path: `Broker::run` owns the client, VIP, HA and metrics listeners. When
/// its shutdown fires, a held pull is answered (not cut off), the store is flushed and
/// closed cleanly (no `abort` file), and once `run` returns nothing it started still
/// listens — the HA port included.
#[test]
fn shutdown_answers_held_pulls_flushes_and_closes_every_listener() {
    use ferrocket::broker::{Broker, BrokerConfig, Listeners};
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let props: std::collections::BTreeMap<String, String> = [
        ("namesrvAddr", ns.addr.as_str()),
        ("listenPort", "0"),
        ("metricsPort", "0"),
        ("mappedFileSizeCommitLog", "8388608"),
        ("flushDiskType", "ASYNC_FLUSH"),
        ("diskSpaceCleanForciblyRatio", "100"),
        ("diskSpaceWarningLevelRatio", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "storePathRootDir".to_owned(),
        dir.path().display().to_string(),
    )])
    .collect();
    let mut config = BrokerConfig::from_properties(&props).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let rt = rt();
        rt.block_on(async {
            let listeners = Listeners::bind(&mut config).await.unwrap();
            let broker = Broker::open(config).unwrap();
            ready_tx
                .send((broker.config.broker_addr(), broker.config.ha_listen_port))
                .unwrap();
            broker
                .run(listeners, async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        // The runtime is dropped here: whatever `run` left behind would die now.
        drop(rt);
        let _ = done_tx.send(());
    });
    let (addr, ha_port) = ready_rx.recv_timeout(T).expect("the broker never started");
    let c = RemotingClient::new();
    rt().block_on(async {
        let r = c
            .invoke(&addr, send_req("Held", 0, "m0", "A"), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let r = c
            .invoke(&addr, pull_req("Held", 0, 0, 5000), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        // A pull held for up to 30 s, then the shutdown.
        let held = c.invoke(
            &addr,
            pull_req("Held", 0, 1, 30_000),
            Duration::from_secs(40),
        );
        let stop = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop_tx.send(());
        };
        let (r, ()) = tokio::join!(held, stop);
        let r = r.expect("the held pull was cut off instead of answered");
        assert_eq!(r.code, response::PULL_NOT_FOUND, "{:?}", r.remark);
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the broker did not finish shutting down");
    server.join().unwrap();
    assert!(
        !dir.path().join("abort").exists(),
        "the store was not closed cleanly"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", ha_port)).is_err(),
        "the HA port still listens after run returned"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the client port still listens after run returned"
    );
}

/// What the broker cannot honour yet is refused with the Java broker's own answer, and
/// nothing is stored: transactional half messages (NO_PERMISSION, as with
/// `rejectTransactionMessage=true`), 5.x timer messages (as with the timer wheel off) and
/// SQL92 subscriptions (as with `enablePropertyFilter=false`), at CHECK_CLIENT_CONFIG and
/// at pull time for a subscription known only from a heartbeat. Frames shaped as the
/// Java client sends them.
#[test]
fn unsupported_features_are_refused_with_rocketmqs_answers_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(
        &ns.addr,
        dir.path(),
        &[
            "brokerIP1=127.0.0.1",
            "rejectTransactionMessage=true",
            "timerWheelEnable=false",
        ],
    );
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c.invoke(&b.addr, send_req("Plain", 0, "first", ""), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let with_props = |body: &str, props: &[(&str, &str)], sys: i32| {
            let mut r = send_req("Plain", 0, body, "");
            let mut all = vec![("UNIQ_KEY", body)];
            all.extend_from_slice(props);
            r.ext_fields.insert("i".into(), encode_properties(all));
            r.ext_fields.insert("f".into(), sys.to_string());
            r
        };
        // A TransactionMQProducer's half message (TRAN_MSG=true, sysFlag prepared) on a
        // broker with rejectTransactionMessage=true.
        let half = with_props("half", &[("TRAN_MSG", "true"), ("PGROUP", "tx_pg")], 4);
        let r = c.invoke(&b.addr, half, T).await.unwrap();
        assert_eq!(r.code, response::NO_PERMISSION);
        assert_eq!(
            r.remark.as_deref(),
            Some("the broker[127.0.0.1] sending transaction message is forbidden")
        );
        // The rollback bits of sysFlag on a send (RocketMQ would store it unseen).
        let r = c
            .invoke(&b.addr, with_props("rolled", &[], 12), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::MESSAGE_ILLEGAL, "{:?}", r.remark);
        // Timer messages with timerWheelEnable=false, each property.
        for k in ["TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS"] {
            let r = c
                .invoke(&b.addr, with_props("timer", &[(k, "5000")], 0), T)
                .await
                .unwrap();
            assert_eq!(r.code, response::SYSTEM_ERROR, "{k}");
            assert_eq!(
                r.remark.as_deref(),
                Some("accurate timer message is not enabled, timerWheelEnable is false")
            );
        }
        // Nothing of the refused was stored: a plain message sent after them is the
        // queue's second (queues fill in order).
        let r = c.invoke(&b.addr, send_req("Plain", 0, "last", ""), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(r.ext("queueOffset"), Some("1"));
        // CHECK_CLIENT_CONFIG (46): SQL92 refused, TAG accepted.
        let check = |kind: &str| {
            RemotingCommand::request(46).with_body(Bytes::from(format!(
                r#"{{"clientId":"c@1","group":"g","subscriptionData":{{"topic":"Plain","subString":"a > 1","expressionType":"{kind}","tagsSet":[],"codeSet":[],"subVersion":1,"classFilterMode":false}}}}"#
            )))
        };
        let r = c.invoke(&b.addr, check("SQL92"), T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert_eq!(
            r.remark.as_deref(),
            Some("The broker does not support consumer to filter message by SQL92")
        );
        let r = c.invoke(&b.addr, check("TAG"), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        // A heartbeat with an SQL92 subscription, then a pull relying on it: refused,
        // not served as "every message".
        let hb = r#"{"clientID":"c@1","producerDataSet":[],"consumerDataSet":[{"groupName":"sqlg","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","subscriptionDataSet":[{"topic":"Plain","subString":"a > 1","expressionType":"SQL92","tagsSet":[],"codeSet":[],"subVersion":1,"classFilterMode":false}],"unitMode":false}]}"#;
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from(hb)),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let mut pull = pull_req("Plain", 0, 0, 0);
        pull.ext_fields.insert("consumerGroup".into(), "sqlg".into());
        pull.ext_fields.insert("sysFlag".into(), "0".into());
        let r = c.invoke(&b.addr, pull, T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert_eq!(
            r.remark.as_deref(),
            Some("The broker does not support consumer to filter message by SQL92")
        );
        // The same with the subscription in the pull itself.
        let mut pull = pull_req("Plain", 0, 0, 0);
        pull.ext_fields.insert("expressionType".into(), "SQL92".into());
        let r = c.invoke(&b.addr, pull, T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
    });
}

/// Waits (10 s deadline) until queue `queue` of `topic` holds `n` dispatched messages:
/// SEND_OK comes after the CommitLog append, the ConsumeQueue follows asynchronously.
async fn wait_dispatched(c: &RemotingClient, addr: &str, topic: &str, queue: i32, n: i64) {
    ferrocket_testkit::wait_until_async(
        &format!("{n} messages dispatched to {topic}/{queue}"),
        Duration::from_secs(10),
        || async {
            let m = RemotingCommand::request(request::GET_MAX_OFFSET)
                .with_ext("topic", topic)
                .with_ext("queueId", queue);
            match c.invoke(addr, m, T).await {
                Ok(r) => r.ext("offset").and_then(|o| o.parse::<i64>().ok()) >= Some(n),
                Err(_) => false,
            }
        },
    )
    .await;
}

/// The offset in an offset message id (its last 16 hex digits).
fn phys_of(msg_id: &str) -> i64 {
    i64::from_str_radix(&msg_id[msg_id.len() - 16..], 16).unwrap()
}

/// END_TRANSACTION as the Java broker checks it: the half message must exist at the
/// commitLogOffset, belong to the producer group and sit at tranStateTableOffset; a
/// commit stores the message once in its real topic and queue (commit bits, no
/// TRAN_MSG), a second commit or a rollback after it changes nothing; a rollback stores
/// nothing; a slave refuses.
#[test]
fn end_transaction_checks_its_half_message_and_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, send_req("TxRaw", 1, "plain", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let plain_phys = phys_of(r.ext("msgId").unwrap());
        let half = |body: &str| {
            let mut r = send_req("TxRaw", 1, body, "tx");
            r.ext_fields.insert(
                "i".into(),
                encode_properties([
                    ("TAGS", "tx"),
                    ("UNIQ_KEY", body),
                    ("TRAN_MSG", "true"),
                    ("PGROUP", "tx_pg"),
                ]),
            );
            r.ext_fields.insert("f".into(), "4".into());
            r
        };
        let mut halves = Vec::new();
        for body in ["to-commit", "to-rollback"] {
            let r = c.invoke(&b.addr, half(body), T).await.unwrap();
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
            assert_eq!(r.ext("transactionId"), Some(body));
            halves.push((
                r.ext("queueOffset").unwrap().parse::<i64>().unwrap(),
                phys_of(r.ext("msgId").unwrap()),
            ));
        }
        let max = |topic: &'static str| {
            RemotingCommand::request(request::GET_MAX_OFFSET)
                .with_ext("topic", topic)
                .with_ext("queueId", 1)
        };
        // Half messages are not in the topic: once both are dispatched to the half
        // topic (dispatch is asynchronous and in order), the topic holds the plain one.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let req = RemotingCommand::request(request::GET_MAX_OFFSET)
                .with_ext("topic", "RMQ_SYS_TRANS_HALF_TOPIC")
                .with_ext("queueId", 0);
            let r = c.invoke(&b.addr, req, T).await.unwrap();
            let o: i64 = r.ext("offset").and_then(|o| o.parse().ok()).unwrap_or(-1);
            if o >= 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the half messages were not dispatched: {o}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = c.invoke(&b.addr, max("TxRaw"), T).await.unwrap();
        assert_eq!(r.ext("offset"), Some("1"));
        let end = |group: &str, state_offset: i64, phys: i64, decision: i32| {
            RemotingCommand::request(request::END_TRANSACTION)
                .with_ext("producerGroup", group)
                .with_ext("tranStateTableOffset", state_offset)
                .with_ext("commitLogOffset", phys)
                .with_ext("commitOrRollback", decision)
                .with_ext("fromTransactionCheck", false)
                .with_ext("msgId", "m")
        };
        let (q0, p0) = halves[0];
        let (q1, p1) = halves[1];
        for (req, remark) in [
            (end("other_pg", q0, p0, 8), "The producer group wrong"),
            (
                end("tx_pg", q0 + 7, p0, 8),
                "The transaction state table offset wrong",
            ),
            (
                end("tx_pg", 0, plain_phys, 8),
                "Find prepared transaction message failed",
            ),
            (
                end("tx_pg", q0, 1 << 40, 8),
                "Find prepared transaction message failed",
            ),
        ] {
            let r = c.invoke(&b.addr, req, T).await.unwrap();
            assert_eq!(r.code, response::SYSTEM_ERROR);
            assert_eq!(r.remark.as_deref(), Some(remark));
        }
        let r = c.invoke(&b.addr, end("tx_pg", q0, p0, 5), T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR, "an unknown decision");
        // UNKNOW (0) changes nothing.
        let r = c.invoke(&b.addr, end("tx_pg", q0, p0, 0), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let r = c.invoke(&b.addr, end("tx_pg", q0, p0, 8), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let r = c
            .invoke(&b.addr, end("tx_pg", q1, p1, 12), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        // Ended already: a second commit, a rollback after a commit, a commit after a
        // rollback.
        for req in [
            end("tx_pg", q0, p0, 8),
            end("tx_pg", q0, p0, 12),
            end("tx_pg", q1, p1, 8),
        ] {
            let r = c.invoke(&b.addr, req, T).await.unwrap();
            assert_eq!(r.code, response::SYSTEM_ERROR);
        }
        // Dispatch is asynchronous: wait (with a deadline) until the commit is in the
        // queue, then check nothing else is.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let offset = loop {
            let r = c.invoke(&b.addr, max("TxRaw"), T).await.unwrap();
            let o: i64 = r.ext("offset").and_then(|o| o.parse().ok()).unwrap_or(-1);
            if o >= 2 || std::time::Instant::now() > deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(offset, 2, "one commit stored, nothing else");
        let r = c
            .invoke(&b.addr, pull_req("TxRaw", 1, 1, 0), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let recs = ferrocket::client::split_records(r.body_bytes());
        assert_eq!(recs.len(), 1);
        let m = decode_record(&recs[0]).unwrap();
        assert_eq!(String::from_utf8_lossy(&m.body), "to-commit");
        assert_eq!(m.sys_flag & 0xC, 8, "the commit bits");
        assert_eq!(m.prepared_transaction_offset, p0);
        assert_eq!(m.property("TRAN_MSG"), None);
        assert_eq!(m.property("REAL_TOPIC"), None);
        assert_eq!(m.property("UNIQ_KEY").as_deref(), Some("to-commit"));
        assert_eq!(m.tag().as_deref(), Some("tx"));
        // The broker's runtime info counts them.
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO),
                T,
            )
            .await
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
        assert_eq!(info["table"]["transactionCommitted"], "1");
        assert_eq!(info["table"]["transactionRolledBack"], "1");
        assert_eq!(info["table"]["transactionUnresolved"], "0");
    });
}

/// SQL92 with `enablePropertyFilter=true`: CHECK_CLIENT_CONFIG parses the selector
/// (SUBSCRIPTION_PARSE_FAILED, 23, when it cannot); a pull under a selector — its own
/// or one known from a heartbeat — returns only the messages it selects.
#[test]
fn sql92_selectors_are_checked_and_filter_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &["enablePropertyFilter=true"]);
    rt().block_on(async {
        let c = RemotingClient::new();
        for i in 1..=6 {
            let mut r = send_req("Sql", 0, &format!("m{i}"), if i % 2 == 0 { "even" } else { "odd" });
            r.ext_fields.insert(
                "i".into(),
                encode_properties([
                    ("TAGS", if i % 2 == 0 { "even" } else { "odd" }),
                    ("a", &i.to_string()),
                ]),
            );
            let r = c.invoke(&b.addr, r, T).await.unwrap();
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        }
        // Dispatch is asynchronous: a pull sees what the ConsumeQueue holds.
        wait_dispatched(&c, &b.addr, "Sql", 0, 6).await;
        let check = |expr: &str| {
            RemotingCommand::request(46).with_body(Bytes::from(format!(
                r#"{{"clientId":"c@1","group":"g","subscriptionData":{{"topic":"Sql","subString":"{expr}","expressionType":"SQL92","tagsSet":[],"codeSet":[],"subVersion":1,"classFilterMode":false}}}}"#
            )))
        };
        let r = c.invoke(&b.addr, check("a > 2 AND TAGS = 'even'"), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let r = c.invoke(&b.addr, check("a >"), T).await.unwrap();
        assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
        assert!(r.remark.unwrap().starts_with("Parse or compile expression failed"));
        let bodies = |r: &RemotingCommand| -> Vec<String> {
            ferrocket::client::split_records(r.body_bytes())
                .iter()
                .map(|rec| String::from_utf8_lossy(&decode_record(rec).unwrap().body).into_owned())
                .collect()
        };
        let mut pull = pull_req("Sql", 0, 0, 0);
        pull.ext_fields.insert("expressionType".into(), "SQL92".into());
        pull.ext_fields.insert("subscription".into(), "a > 2 AND TAGS = 'even'".into());
        let r = c.invoke(&b.addr, pull, T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(bodies(&r), ["m4", "m6"]);
        // From a heartbeat only.
        let hb = r#"{"clientID":"c@1","producerDataSet":[],"consumerDataSet":[{"groupName":"sqlg","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","subscriptionDataSet":[{"topic":"Sql","subString":"a BETWEEN 2 AND 3","expressionType":"SQL92","tagsSet":[],"codeSet":[],"subVersion":1,"classFilterMode":false}],"unitMode":false}]}"#;
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from(hb)), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let mut pull = pull_req("Sql", 0, 0, 0);
        pull.ext_fields.insert("consumerGroup".into(), "sqlg".into());
        pull.ext_fields.insert("sysFlag".into(), "0".into());
        let r = c.invoke(&b.addr, pull, T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(bodies(&r), ["m2", "m3"]);
        // A selector nothing matches: the pull moves on without messages.
        let mut pull = pull_req("Sql", 0, 0, 0);
        pull.ext_fields.insert("expressionType".into(), "SQL92".into());
        pull.ext_fields.insert("subscription".into(), "a > 100".into());
        let r = c.invoke(&b.addr, pull, T).await.unwrap();
        assert_eq!(r.code, response::PULL_RETRY_IMMEDIATELY);
        assert_eq!(r.ext("nextBeginOffset"), Some("6"));
    });
}

/// 5.x timer messages over raw frames: a far delay is refused with RocketMQ's remark, a
/// batch cannot carry one, and a message due in 1.5 s is not in its topic before its
/// time and is after (the delivered copy stored no earlier than asked).
#[test]
fn timer_messages_wait_for_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(
        &ns.addr,
        dir.path(),
        &["timerPrecisionMs=100", "timerMaxDelaySec=60"],
    );
    rt().block_on(async {
        let c = RemotingClient::new();
        let timed = |body: &str, k: &str, v: String| {
            let mut r = send_req("Timed", 0, body, "");
            r.ext_fields.insert(
                "i".into(),
                encode_properties([("UNIQ_KEY", body), (k, v.as_str())]),
            );
            r
        };
        let r = c
            .invoke(&b.addr, timed("far", "TIMER_DELAY_SEC", "61".into()), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::MESSAGE_ILLEGAL);
        assert_eq!(
            r.remark.as_deref(),
            Some("timer message illegal, the delay time should not be bigger than the max delay 60000ms; or if set del msg, the delay time should be bigger than the current time")
        );
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        let due = now() + 1500;
        let r = c
            .invoke(&b.addr, timed("soon", "TIMER_DELIVER_MS", due.to_string()), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        // A past time is an ordinary message: in its topic at once.
        let r = c
            .invoke(&b.addr, timed("past", "TIMER_DELIVER_MS", "1".into()), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        assert_eq!(r.ext("queueOffset"), Some("0"), "stored in Timed at once");
        let pull = |offset: i64| pull_req("Timed", 0, offset, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let delivered = loop {
            let r = c.invoke(&b.addr, pull(1), T).await.unwrap();
            if r.code == response::SUCCESS {
                break decode_record(&ferrocket::client::split_records(r.body_bytes())[0]).unwrap();
            }
            assert!(Instant::now() < deadline, "never delivered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(String::from_utf8_lossy(&delivered.body), "soon");
        assert!(
            delivered.store_timestamp >= due,
            "delivered {} ms early",
            due - delivered.store_timestamp
        );
        assert!(delivered.store_timestamp <= due + 1500, "delivered late");
        assert_eq!(delivered.property("REAL_TOPIC"), None);
        // A timer message in a batch is refused.
        let entries = [ferrocket::protocol::batch::BatchEntry {
            flag: 0,
            body: Bytes::from_static(b"b"),
            properties: encode_properties([("TIMER_DELAY_SEC", "5")]),
        }];
        let mut batch = send_req("Timed", 0, "", "")
            .with_body(ferrocket::protocol::batch::encode_batch(&entries).unwrap());
        batch.code = request::SEND_BATCH_MESSAGE;
        let r = c.invoke(&b.addr, batch, T).await.unwrap();
        assert_eq!(r.code, response::MESSAGE_ILLEGAL);
        assert_eq!(
            r.remark.as_deref(),
            Some("batch request does not support timer message")
        );
    });
}

/// The name server's admin requests the dashboard and mqadmin send: system topics
/// (304), KV config (100/101/102/219, persisted), write permission (205/327), data
/// version (322) and its config (318/319).
#[test]
fn name_server_admin_requests() {
    let dir = tempfile::tempdir().unwrap();
    let kv_path = dir.path().join("kv").join("kvConfig.json");
    let ns_args = |listen: String| {
        vec![
            "namesrv".to_string(),
            "--listen".into(),
            listen,
            "--kv-config-path".into(),
            kv_path.display().to_string(),
        ]
    };
    let ns = kit().spawn(&ns_args("127.0.0.1:0".into()));
    let b = broker(&ns.addr, &dir.path().join("store"), &[]);
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, send_req("NsOps", 0, "m", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        // The topic reaches the name server with the next registration.
        let route_of = |topic: &'static str| {
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.invoke(&ns.addr, route_of("NsOps"), T).await.unwrap().code != response::SUCCESS {
            assert!(Instant::now() < deadline, "route never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::GET_SYSTEM_TOPIC_LIST_FROM_NS),
                T,
            )
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
        let list = v["topicList"].as_array().unwrap();
        assert!(
            list.contains(&"DefaultCluster".into()) && list.contains(&"broker-a".into()),
            "{v}"
        );
        assert_eq!(v["brokerAddr"], serde_json::Value::from(b.addr.clone()));
        // KV config.
        let kv = |code: i32, key: Option<&str>, value: Option<&str>| {
            let mut r = RemotingCommand::request(code).with_ext("namespace", "ORDER_TOPIC_CONFIG");
            if let Some(k) = key {
                r = r.with_ext("key", k);
            }
            if let Some(v) = value {
                r = r.with_ext("value", v);
            }
            r
        };
        let r = c
            .invoke(&ns.addr, kv(101, Some("T1"), None), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::QUERY_NOT_FOUND);
        assert_eq!(
            r.remark.as_deref(),
            Some("No config item, Namespace: ORDER_TOPIC_CONFIG Key: T1")
        );
        for (k, v) in [("T1", "broker-a:4"), ("T2", "broker-a:8")] {
            let r = c
                .invoke(&ns.addr, kv(100, Some(k), Some(v)), T)
                .await
                .unwrap();
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        }
        let r = c
            .invoke(&ns.addr, kv(101, Some("T1"), None), T)
            .await
            .unwrap();
        assert_eq!(r.ext("value"), Some("broker-a:4"));
        let r = c.invoke(&ns.addr, kv(219, None, None), T).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
        assert_eq!(v["table"]["T2"], "broker-a:8");
        let r = c
            .invoke(&ns.addr, kv(102, Some("T2"), None), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let r = c
            .invoke(&ns.addr, kv(101, Some("T2"), None), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::QUERY_NOT_FOUND);
        // Write permission of a broker name, in the name server's routes.
        let perm = |r: &RemotingCommand| -> i64 {
            let v: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
            v["queueDatas"][0]["perm"].as_i64().unwrap()
        };
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::WIPE_WRITE_PERM_OF_BROKER)
                    .with_ext("brokerName", "broker-a"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        assert!(r.ext("wipeTopicCount").unwrap().parse::<i64>().unwrap() >= 1);
        let r = c.invoke(&ns.addr, route_of("NsOps"), T).await.unwrap();
        assert_eq!(perm(&r) & 2, 0, "write bit wiped");
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::ADD_WRITE_PERM_OF_BROKER)
                    .with_ext("brokerName", "broker-a"),
                T,
            )
            .await
            .unwrap();
        assert!(r.ext("addTopicCount").unwrap().parse::<i64>().unwrap() >= 1);
        let r = c.invoke(&ns.addr, route_of("NsOps"), T).await.unwrap();
        assert_eq!(perm(&r) & 2, 2, "write bit back");
        // Data version: a made-up one differs from the one registered.
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::QUERY_DATA_VERSION)
                    .with_ext("brokerAddr", &b.addr)
                    .with_ext("brokerName", "broker-a")
                    .with_ext("clusterName", "DefaultCluster")
                    .with_ext("brokerId", 0)
                    .with_body(Bytes::from_static(br#"{"counter":-5,"timestamp":1}"#)),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.ext("changed"), Some("true"));
        let ours: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
        assert!(ours["counter"].as_i64().unwrap() >= 0);
        // The same version back: unchanged.
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::QUERY_DATA_VERSION)
                    .with_ext("brokerAddr", &b.addr)
                    .with_body(Bytes::from(ours.to_string())),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.ext("changed"), Some("false"));
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::GET_NAMESRV_CONFIG),
                T,
            )
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&r.body_bytes()).contains("kvConfigPath="));
        let r = c
            .invoke(
                &ns.addr,
                RemotingCommand::request(request::UPDATE_NAMESRV_CONFIG)
                    .with_body(Bytes::from_static(b"x=1")),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
    });
    // KV config survives a restart of the name server.
    drop(b);
    drop(ns);
    let ns2 = kit().spawn(&ns_args("127.0.0.1:0".into()));
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(
                &ns2.addr,
                RemotingCommand::request(101)
                    .with_ext("namespace", "ORDER_TOPIC_CONFIG")
                    .with_ext("key", "T1"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.ext("value"), Some("broker-a:4"));
    });
}

/// The broker's admin requests the dashboard and mqadmin send, answered as the Java
/// broker answers them.
#[test]
fn broker_admin_requests() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    rt().block_on(async {
        let c = RemotingClient::new();
        for i in 0..3 {
            let r = c.invoke(&b.addr, send_req("Ops", 0, &format!("m{i}"), ""), T).await.unwrap();
            assert_eq!(r.code, response::SUCCESS);
        }
        let json_of = |r: &RemotingCommand| -> serde_json::Value {
            serde_json::from_slice(&r.body_bytes()).unwrap_or(serde_json::Value::Null)
        };
        // 351 GET_TOPIC_CONFIG.
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::GET_TOPIC_CONFIG).with_ext("topic", "Ops"), T)
            .await
            .unwrap();
        assert_eq!(json_of(&r)["topicName"], "Ops");
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::GET_TOPIC_CONFIG).with_ext("topic", "Nope"), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::TOPIC_NOT_EXIST);
        assert_eq!(r.remark.as_deref(), Some("No topic in this broker. topic: Nope"));
        // Offsets of g1; a heartbeat of consumer g1 and producer pg1 on this connection.
        let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "g1")
            .with_ext("topic", "Ops")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", 1);
        assert_eq!(c.invoke(&b.addr, commit, T).await.unwrap().code, response::SUCCESS);
        let hb = r#"{"clientID":"c@1","producerDataSet":[{"groupName":"pg1"}],"consumerDataSet":[{"groupName":"g1","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","subscriptionDataSet":[{"topic":"Ops","subString":"*","expressionType":"TAG","tagsSet":[],"codeSet":[],"subVersion":1,"classFilterMode":false}],"unitMode":false}]}"#;
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from(hb)), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        // 300 QUERY_TOPIC_CONSUME_BY_WHO.
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::QUERY_TOPIC_CONSUME_BY_WHO).with_ext("topic", "Ops"), T)
            .await
            .unwrap();
        assert_eq!(json_of(&r)["groupList"], serde_json::json!(["g1"]));
        // 204 GET_PRODUCER_CONNECTION_LIST.
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::GET_PRODUCER_CONNECTION_LIST).with_ext("producerGroup", "pg1"), T)
            .await
            .unwrap();
        assert_eq!(json_of(&r)["connectionSet"][0]["clientId"], "c@1");
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::GET_PRODUCER_CONNECTION_LIST).with_ext("producerGroup", "none"), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert_eq!(r.remark.as_deref(), Some("the producer group[none] not exist"));
        // 314 CLONE_GROUP_OFFSET, then 207 DELETE_SUBSCRIPTIONGROUP with its offsets.
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::CLONE_GROUP_OFFSET)
                    .with_ext("srcGroup", "g1")
                    .with_ext("destGroup", "g2")
                    .with_ext("topic", "Ops")
                    .with_ext("offline", false),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let query = |g: &str| {
            RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
                .with_ext("consumerGroup", g)
                .with_ext("topic", "Ops")
                .with_ext("queueId", 0)
        };
        let r = c.invoke(&b.addr, query("g2"), T).await.unwrap();
        assert_eq!(r.ext("offset"), Some("1"));
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::DELETE_SUBSCRIPTIONGROUP)
                    .with_ext("groupName", "g2")
                    .with_ext("cleanOffset", true),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let r = c.invoke(&b.addr, query("g2"), T).await.unwrap();
        assert_ne!(r.ext("offset"), Some("1"), "offsets deleted with the group");
        // 317 GET_BROKER_CONSUME_STATS: g1 is online, 2 messages behind.
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_BROKER_CONSUME_STATS)
                    .with_ext("isOrder", false)
                    .with_ext("timeoutMillis", 3000),
                T,
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&r.body_bytes()).into_owned();
        assert!(text.contains("\"g1\":[{") && text.contains("\"totalDiff\":2"), "{text}");
        // 321 QUERY_CONSUME_QUEUE.
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::QUERY_CONSUME_QUEUE)
                    .with_ext("topic", "Ops")
                    .with_ext("queueId", 0)
                    .with_ext("index", 0)
                    .with_ext("count", 10)
                    .with_ext("consumerGroup", "g1"),
                T,
            )
            .await
            .unwrap();
        let v = json_of(&r);
        assert_eq!(v["queueData"].as_array().unwrap().len(), 3);
        assert_eq!(v["maxQueueIndex"], 3);
        // 222 INVOKE_BROKER_TO_RESET_OFFSET: to the beginning, g1 online.
        let reset = |g: &str| {
            RemotingCommand::request(request::INVOKE_BROKER_TO_RESET_OFFSET)
                .with_ext("topic", "Ops")
                .with_ext("group", g)
                .with_ext("timestamp", 0)
                .with_ext("isForce", true)
        };
        let r = c.invoke(&b.addr, reset("g1"), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert!(String::from_utf8_lossy(&r.body_bytes()).contains(r#""queueId":0,"topic":"Ops"}:0"#));
        // A group with offsets but no consumer online: CONSUMER_NOT_ONLINE (206).
        let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "g3")
            .with_ext("topic", "Ops")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", 2);
        c.invoke(&b.addr, commit, T).await.unwrap();
        let r = c.invoke(&b.addr, reset("g3"), T).await.unwrap();
        assert_eq!(r.code, 206);
        assert!(r.remark.unwrap().starts_with("Consumer not online, so can not reset offset"));
        // 307 to a client that is not connected.
        let r = c
            .invoke(
                &b.addr,
                RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
                    .with_ext("consumerGroup", "g1")
                    .with_ext("clientId", "nobody"),
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert_eq!(r.remark.as_deref(), Some("The Consumer <g1> <nobody> not online"));
        // 315 VIEW_BROKER_STATS_DATA.
        let view = |name: &str, key: &str| {
            RemotingCommand::request(request::VIEW_BROKER_STATS_DATA)
                .with_ext("statsName", name)
                .with_ext("statsKey", key)
        };
        let r = c.invoke(&b.addr, view("TOPIC_PUT_NUMS", "Ops"), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert!(json_of(&r)["statsMinute"]["tps"].is_number());
        let r = c.invoke(&b.addr, view("TOPIC_PUT_NUMS", "Nope"), T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert_eq!(r.remark.as_deref(), Some("The stats <TOPIC_PUT_NUMS> <Nope> not exist"));
        // The dashboard's runtime figures.
        let r = c
            .invoke(&b.addr, RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO), T)
            .await
            .unwrap();
        let v = json_of(&r);
        assert_eq!(v["table"]["msgPutTotalTodayNow"], "3");
        assert_eq!(v["table"]["putTps"].as_str().unwrap().split(' ').count(), 3);
    });
}

/// The `ferrocket admin` verbs over the new admin requests: KV config, write
/// permission, offsets reset by time and skipping accumulation (offline: rewritten
/// directly), producer and consumer connections, consumer status.
#[test]
fn admin_verbs_for_offsets_connections_kv_and_write_permission() {
    let dir = tempfile::tempdir().unwrap();
    let kv_path = dir.path().join("kvConfig.json");
    let ns = kit().spawn(&[
        "namesrv".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kv-config-path".into(),
        kv_path.display().to_string(),
    ]);
    let b = broker(&ns.addr, &dir.path().join("store"), &[]);
    let (ok, _, err) = admin(
        &ns.addr,
        &[
            "kv",
            "put",
            "--namespace",
            "N",
            "--key",
            "k",
            "--value",
            "v",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = admin(&ns.addr, &["kv", "get", "--namespace", "N", "--key", "k"]);
    assert!(ok && out.trim() == "v", "{out}");
    let (ok, out, _) = admin(&ns.addr, &["kv", "list", "--namespace", "N"]);
    assert!(ok && out.contains("\"k\":\"v\""), "{out}");
    let (ok, _, _) = admin(
        &ns.addr,
        &["kv", "delete", "--namespace", "N", "--key", "k"],
    );
    assert!(ok);
    let (ok, _, err) = admin(&ns.addr, &["kv", "get", "--namespace", "N", "--key", "k"]);
    assert!(!ok && err.contains("No config item"), "{err}");
    rt().block_on(async {
        let c = RemotingClient::new();
        for i in 0..4 {
            let r = c
                .invoke(&b.addr, send_req("AdminOps", 0, &format!("m{i}"), ""), T)
                .await
                .unwrap();
            assert_eq!(r.code, response::SUCCESS);
        }
        let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "ag")
            .with_ext("topic", "AdminOps")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", 1);
        assert_eq!(
            c.invoke(&b.addr, commit, T).await.unwrap().code,
            response::SUCCESS
        );
        let route =
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "AdminOps");
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.invoke(&ns.addr, route.clone(), T).await.unwrap().code != response::SUCCESS {
            assert!(Instant::now() < deadline, "route never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (ok, out, err) = admin(
        &ns.addr,
        &["write-perm", "wipe", "--broker-name", "broker-a"],
    );
    assert!(ok && out.contains("topics"), "{out}{err}");
    let (ok, _, _) = admin(
        &ns.addr,
        &["write-perm", "add", "--broker-name", "broker-a"],
    );
    assert!(ok);
    // No consumer online: the offsets are rewritten directly.
    let (ok, out, err) = admin(
        &ns.addr,
        &["skip-accumulated", "--group", "ag", "--topic", "AdminOps"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("queue 0: offset 4"), "{out}");
    let (ok, out, err) = admin(
        &ns.addr,
        &[
            "reset-offset",
            "--group",
            "ag",
            "--topic",
            "AdminOps",
            "--time",
            "0",
            "--force",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("queue 0: offset 0"), "{out}");
    let (ok, _, _) = admin(&ns.addr, &["producers", "--group", "nobody"]);
    assert!(ok, "no producer: nothing printed, no failure");
    let (ok, _, err) = admin(
        &ns.addr,
        &["consumer-status", "--group", "ag", "--client", "x"],
    );
    assert!(!ok && err.contains("not online"), "{err}");
}

/// Issue 14: `topics.json` and its `.bak` both unreadable stop the start with an error
/// naming the file (it used to start with no topics, so every pull got TOPIC_NOT_EXIST);
/// `--repair` starts with an empty table.
#[test]
fn unreadable_metadata_stops_the_start_naming_the_file_and_repair_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("topics.json"), b"{\"topicConfigTable\": {").unwrap();
    std::fs::write(cfg.join("topics.json.bak"), b"garbage").unwrap();
    let out = Command::new(BIN)
        .args([
            "broker",
            "--set",
            &format!("storePathRootDir={}", dir.path().display()),
            "--set",
            "listenPort=0",
            "--set",
            "haListenPort=0",
            "--set",
            "namesrvAddr=127.0.0.1:1",
        ])
        .env("FERROCKET_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topics.json") && err.contains("--repair"),
        "{err}"
    );
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &["storeRepair=true"]);
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, send_req("AfterRepair", 0, "m", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    });
}

/// Issue 14, descriptors. ~1,100 connections under `ulimit -n 1024` used to take every
/// descriptor, the checkpoint write failed with EMFILE, and the store turned read-only
/// for good (every send answered 14 after the connections closed). Now (1) connections
/// are refused while a reserve of descriptors is kept for the store, so a connection
/// flood never stops the checkpoint; and (2) when descriptors do run out, the metadata
/// flush is retried and the broker takes writes again by itself.
#[test]
fn running_out_of_descriptors_is_transient() {
    let prlimit_works = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), "--nofile"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !prlimit_works {
        ferrocket_testkit::skip(
            "running_out_of_descriptors_is_transient",
            "needs prlimit (util-linux) to lower the broker's descriptor limit",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let (b, port) = metered_broker(&ns.addr, dir.path(), &["flushIntervalConsumeQueue=200"]);
    let rt = rt();
    // One client connected before any fault: its requests keep working.
    let c = RemotingClient::new();
    let send = |body: &str| {
        rt.block_on(c.invoke(&b.addr, send_req("Fds", 0, body, ""), T))
            .map(|r| r.code)
    };
    assert_eq!(send("before").unwrap(), response::SUCCESS);
    let pid = b.pid().to_string();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // The soft limit only: lowering the hard one could not be undone here.
    let set_soft = |n: u64| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "prlimit --nofile={n}:");
    };
    let soft: u64 = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(4096);
    let metric = |name: &str| -> f64 {
        let (_, metrics) = http_get(port, "/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let checkpoint = dir.path().join("checkpoint");
    let written = || {
        std::fs::metadata(&checkpoint)
            .and_then(|m| m.modified())
            .ok()
    };

    // (1) A flood under a tight limit: the excess is refused, a reserve stays free.
    let baseline = open_fds();
    let limit = baseline as u64 + 100;
    set_soft(limit);
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&b.addr).ok())
        .collect();
    ferrocket_testkit::wait_until(
        "connections refused to keep the reserve",
        Duration::from_secs(10),
        || metric("ferrocket_server_limit_hits{limit=\"connections\"} ") >= 50.0,
    );
    assert!((open_fds() as u64) < limit, "every descriptor was taken");
    let during = std::time::SystemTime::now();
    ferrocket_testkit::wait_until(
        "a checkpoint written during the flood",
        Duration::from_secs(10),
        || written().is_some_and(|w| w > during),
    );
    assert_eq!(send("during the flood").unwrap(), response::SUCCESS);
    assert_eq!(metric("ferrocket_store_transient_failures "), 0.0);
    drop(flood);
    ferrocket_testkit::wait_until(
        "the flood's connections closed",
        Duration::from_secs(10),
        || open_fds() <= baseline + 2,
    );

    // (2) No descriptor left at all (the limit below what is open): the checkpoint
    // write fails (EMFILE) for as long as that lasts (several 200 ms flush intervals),
    // then the limit comes back.
    set_soft(open_fds().saturating_sub(2) as u64);
    std::thread::sleep(Duration::from_millis(1500));
    set_soft(soft);
    ferrocket_testkit::wait_until(
        "a send acknowledged after the descriptors came back",
        Duration::from_secs(20),
        || send("after").is_ok_and(|c| c == response::SUCCESS),
    );
    assert!(
        metric("ferrocket_store_transient_failures ") > 0.0,
        "the fault never hit the metadata flush"
    );
    assert_eq!(metric("ferrocket_store_read_only "), 0.0);
}

/// A tmpfs of `mib` MiB mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Issue 14: on a nearly full disk a new ConsumeQueue file cannot be created, so
/// dispatch stops. Sends used to keep getting SEND_OK for messages no consumer could
/// see (3,647 acknowledged, 1 consumable). Now, once dispatch is blocked, sends are
/// refused with "dispatch blocked: …"; when space returns the broker takes writes again
/// by itself and every acknowledged message is consumable.
#[test]
fn a_full_disk_refuses_sends_it_cannot_serve_and_recovers_by_itself() {
    let fs = match Tmpfs::mount(8) {
        Ok(f) => f,
        Err(why) => {
            ferrocket_testkit::skip(
                "a_full_disk_refuses_sends_it_cannot_serve_and_recovers_by_itself",
                &format!("needs to mount a tmpfs (root): {why}"),
            );
            return;
        }
    };
    let store = fs.path().join("store");
    let ns = namesrv();
    let b = broker(
        &ns.addr,
        &store,
        &[
            "mappedFileSizeCommitLog=2097152",
            "maxMessageSize=65536",
            "mappedFileSizeConsumeQueue=81920",
            "maxHashSlotNum=100",
            "maxIndexNum=20",
            "diskMaxUsedSpaceRatio=95",
            "diskSpaceWarningLevelRatio=100",
            "diskSpaceCleanForciblyRatio=100",
        ],
    );
    let rt = rt();
    let c = RemotingClient::new();
    let send = |topic: &str, body: &str| {
        rt.block_on(c.invoke(&b.addr, send_req(topic, 0, body, ""), T))
            .unwrap()
    };
    assert_eq!(send("Before", "b").code, response::SUCCESS);
    // Fill what is left (writes until ENOSPC).
    let filler = fs.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    // A new topic needs a ConsumeQueue file: its space is reserved before the append,
    // so the send is refused and nothing is stored.
    let r = send("Full0", "first");
    assert_eq!(r.code, response::SERVICE_NOT_AVAILABLE, "{:?}", r.remark);
    assert!(
        r.remark.as_deref().unwrap_or("").contains("disk full"),
        "{:?}",
        r.remark
    );
    // An existing queue has room reserved, but the IndexFile (20 entries here) fills
    // and the next one cannot be made ahead of the send: sends are refused from then
    // on with nothing stored — never acknowledged into a store that cannot serve them
    // (before, they were acknowledged and dispatch then stalled on that file).
    let mut acked = 0;
    let refused = loop {
        let r = send("Before", &format!("b{acked}"));
        if r.code != response::SUCCESS {
            assert_eq!(r.code, response::SERVICE_NOT_AVAILABLE, "{:?}", r.remark);
            break r.remark.unwrap_or_default();
        }
        acked += 1;
        assert!(acked < 2000, "still acknowledging with the disk full");
    };
    assert!(refused.contains("disk full"), "{refused}");
    // Every acknowledged message is consumable while the disk is still full.
    rt.block_on(wait_dispatched(&c, &b.addr, "Before", 0, 1 + acked));
    // Space comes back: writes are taken again without a restart.
    std::fs::remove_file(&filler).unwrap();
    ferrocket_testkit::wait_until("a send acknowledged again", T, || {
        send("After", "a").code == response::SUCCESS
    });
    // Everything acknowledged is consumable: the first message and every one after it.
    rt.block_on(async {
        wait_dispatched(&c, &b.addr, "Before", 0, 1 + acked).await;
        wait_dispatched(&c, &b.addr, "After", 0, 1).await;
    });
}

/// Whether the server closes `stream` within `limit` (end of stream or a reset), as
/// opposed to the read timing out with the connection still open.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Issue 14's server limits: a connection that sends nothing (and has nothing running)
/// is closed after `serverChannelMaxIdleTimeSeconds`, while one holding a long-polling
/// pull is not; a frame that does not complete within `serverFrameDeadlineSeconds` closes
/// its connection (it used to pin its buffer forever); connections past
/// `serverMaxConnectionsPerAddress` are closed at accept while the others keep working;
/// the metrics count each.
#[test]
fn idle_slow_and_excess_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let (b, port) = metered_broker(
        &ns.addr,
        dir.path(),
        &[
            "serverChannelMaxIdleTimeSeconds=1",
            "serverFrameDeadlineSeconds=1",
            "serverMaxConnectionsPerAddress=8",
        ],
    );
    // Idle: closed.
    let mut idle = TcpStream::connect(&b.addr).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "idle connection kept"
    );
    // A held pull is not idle: its answer comes after 2.5 s on the same connection.
    let rt = rt();
    rt.block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, send_req("Held2", 0, "m0", ""), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        wait_dispatched(&c, &b.addr, "Held2", 0, 1).await;
        let started = Instant::now();
        let r = c
            .invoke(&b.addr, pull_req("Held2", 0, 1, 2500), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::PULL_NOT_FOUND, "{:?}", r.remark);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "the pull was not held"
        );
    });
    // A frame begun and never finished: closed after the deadline.
    let mut slow = TcpStream::connect(&b.addr).unwrap();
    slow.write_all(&1000u32.to_be_bytes()).unwrap();
    slow.write_all(b"{\"code\"").unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)),
        "slow frame kept"
    );
    // A busy connection whose every read ends mid-frame is not slow: each frame
    // completes well inside the deadline, for longer than the deadline in all.
    let hb = RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from_static(
        b"{\"clientID\":\"x\",\"producerDataSet\":[],\"consumerDataSet\":[]}",
    ));
    let frame = ferrocket::remoting::encode_frame(&hb).unwrap();
    let half = frame.len() / 2;
    let mut busy = TcpStream::connect(&b.addr).unwrap();
    busy.write_all(&frame[..half]).unwrap();
    let mut sent = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(200));
        // The end of one frame and the start of the next in one write.
        let mut chunk = frame[half..].to_vec();
        chunk.extend_from_slice(&frame[..half]);
        busy.write_all(&chunk).unwrap();
        sent += 1;
    }
    busy.write_all(&frame[half..]).unwrap();
    sent += 1;
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..sent {
        let mut len = [0u8; 4];
        busy.read_exact(&mut len)
            .expect("the busy connection was closed");
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
        busy.read_exact(&mut rest).unwrap();
    }
    drop(busy);
    // Past 8 connections from one address: the extra ones are closed at once.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&b.addr).unwrap())
        .collect();
    // (A connection of the client above may still be counted until the broker sees it
    // close: then one more is admitted, and the next is refused.)
    let mut refused = false;
    for _ in 0..3 {
        let mut extra = TcpStream::connect(&b.addr).unwrap();
        if closed_within(&mut extra, Duration::from_secs(2)) {
            refused = true;
            break;
        }
        held.push(extra);
    }
    assert!(refused, "connections past the per-address limit were kept");
    // The eight still answer.
    held[0].write_all(&frame).unwrap();
    held[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 4];
    held[0].read_exact(&mut head).unwrap();
    drop(held);
    let (_, metrics) = http_get(port, "/metrics");
    for limit in ["idle", "frame_deadline", "connections"] {
        let line = format!("ferrocket_server_limit_hits{{limit=\"{limit}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 1.0, "{limit} not counted:\n{metrics}");
    }
}

/// Issue 14: one heartbeat naming thousands of groups used to cost 90 s of work and
/// leave a permanent retry topic and subscription group for each. It is refused
/// (`heartbeatMaxGroups`, 1024) and creates nothing; a normal one still works.
#[test]
fn a_heartbeat_naming_thousands_of_groups_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    let group = |i: usize| {
        format!(
            r#"{{"groupName":"flood{i}","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":[],"unitMode":false}}"#
        )
    };
    let hb = |n: usize| {
        let groups: Vec<String> = (0..n).map(group).collect();
        RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from(format!(
            r#"{{"clientID":"c@1","producerDataSet":[],"consumerDataSet":[{}]}}"#,
            groups.join(",")
        )))
    };
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c.invoke(&b.addr, hb(5000), T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
        assert!(
            r.remark
                .as_deref()
                .unwrap_or("")
                .contains("heartbeatMaxGroups"),
            "{:?}",
            r.remark
        );
        let pull = c
            .invoke(&b.addr, pull_req("%RETRY%flood0", 0, 0, 0), T)
            .await
            .unwrap();
        assert_eq!(
            pull.code,
            response::TOPIC_NOT_EXIST,
            "a retry topic was created"
        );
        let r = c.invoke(&b.addr, hb(3), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    });
}

/// Issue 14: groups a heartbeat creates (`autoCreateSubscriptionGroup`) expire with
/// their retry topic once no consumer has been seen for `autoCreatedGroupExpireSeconds`,
/// unless they hold something (committed offsets) or an administrator configured them;
/// with auto-creation off, a heartbeat for an unknown group creates no retry topic
/// (RocketMQ's rule).
#[test]
fn auto_created_groups_expire_with_their_retry_topics_unless_they_hold_something() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &["autoCreatedGroupExpireSeconds=2"]);
    let hb = |groups: &[&str]| {
        let set: Vec<String> = groups
            .iter()
            .map(|g| format!(r#"{{"groupName":"{g}","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":[],"unitMode":false}}"#))
            .collect();
        RemotingCommand::request(request::HEART_BEAT).with_body(Bytes::from(format!(
            r#"{{"clientID":"c@1","producerDataSet":[],"consumerDataSet":[{}]}}"#,
            set.join(",")
        )))
    };
    let names = |body: &[u8], table: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v[table]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    rt().block_on(async {
        let c = RemotingClient::new();
        let groups = || async {
            let r = c
                .invoke(
                    &b.addr,
                    RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
                    T,
                )
                .await
                .unwrap();
            names(&r.body_bytes(), "subscriptionGroupTable")
        };
        let topics = || async {
            let r = c
                .invoke(
                    &b.addr,
                    RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG),
                    T,
                )
                .await
                .unwrap();
            names(&r.body_bytes(), "topicConfigTable")
        };
        let admin_group = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(Bytes::from_static(br#"{"groupName":"configured"}"#));
        assert_eq!(
            c.invoke(&b.addr, admin_group, T).await.unwrap().code,
            response::SUCCESS
        );
        let r = c
            .invoke(&b.addr, hb(&["idle", "committed", "configured"]), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        let sent = c
            .invoke(&b.addr, send_req("Exp", 0, "m", ""), T)
            .await
            .unwrap();
        assert_eq!(sent.code, response::SUCCESS);
        let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "committed")
            .with_ext("topic", "Exp")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", 1);
        assert_eq!(
            c.invoke(&b.addr, commit, T).await.unwrap().code,
            response::SUCCESS
        );
        for g in ["idle", "committed", "configured"] {
            assert!(groups().await.contains(&g.to_string()), "{g} missing");
            assert!(
                topics().await.contains(&format!("%RETRY%{g}")),
                "{g}'s retry topic missing"
            );
        }
        for g in ["idle", "committed", "configured"] {
            let bye = RemotingCommand::request(request::UNREGISTER_CLIENT)
                .with_ext("clientID", "c@1")
                .with_ext("consumerGroup", g);
            assert_eq!(
                c.invoke(&b.addr, bye, T).await.unwrap().code,
                response::SUCCESS
            );
        }
        ferrocket_testkit::wait_until_async(
            "the idle auto-created group expired",
            Duration::from_secs(20),
            || async { !groups().await.contains(&"idle".to_string()) },
        )
        .await;
        assert!(
            !topics().await.contains(&"%RETRY%idle".to_string()),
            "its retry topic stayed"
        );
        let left = groups().await;
        assert!(
            left.contains(&"committed".to_string()),
            "a group with offsets expired"
        );
        assert!(
            left.contains(&"configured".to_string()),
            "an administrator's group expired"
        );
        assert!(topics().await.contains(&"%RETRY%committed".to_string()));

        // Auto-creation off: an unknown group gets neither a config nor a retry topic.
        let off = RemotingCommand::request(request::UPDATE_BROKER_CONFIG)
            .with_body(Bytes::from_static(b"autoCreateSubscriptionGroup=false"));
        let r = c.invoke(&b.addr, off, T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(
            c.invoke(&b.addr, hb(&["stranger"]), T).await.unwrap().code,
            response::SUCCESS
        );
        assert!(!groups().await.contains(&"stranger".to_string()));
        assert!(!topics().await.contains(&"%RETRY%stranger".to_string()));
    });
}

/// Issue 14: `ferrocket store check` reads a store offline — every record's CRC, every
/// ConsumeQueue entry against its record, the metadata — and exits non-zero naming the
/// damage; `--repair` quarantines and rebuilds what it can, after which the store is
/// sound and every intact message is served.
#[test]
fn store_check_names_damage_and_repair_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let seg = "8388608"; // the kit's mappedFileSizeCommitLog
    {
        let ns = namesrv();
        let mut b = broker(&ns.addr, dir.path(), &[]);
        rt().block_on(async {
            let c = RemotingClient::new();
            for i in 0..20 {
                let r = c
                    .invoke(&b.addr, send_req("Chk", 0, &format!("chk-{i:02}"), ""), T)
                    .await
                    .unwrap();
                assert_eq!(r.code, response::SUCCESS);
            }
            wait_dispatched(&c, &b.addr, "Chk", 0, 20).await;
        });
        assert!(b.terminate(), "clean shutdown");
    }
    let check = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["store", "check", "--dir"])
            .arg(dir.path())
            .args(["--commitlog-file-size", seg])
            .args(extra)
            .env("FERROCKET_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = check(&[]);
    assert!(ok && out.contains("store is sound"), "{out}");
    assert!(out.contains("20 records"), "{out}");

    // One body bit of chk-07.
    let seg0 = dir.path().join("commitlog").join("00000000000000000000");
    let mut bytes = std::fs::read(&seg0).unwrap();
    let at = bytes.windows(6).position(|w| w == b"chk-07").unwrap();
    bytes[at + 4] ^= 0x01;
    std::fs::write(&seg0, &bytes).unwrap();
    let (ok, out, err) = check(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("DAMAGE CommitLog") && out.contains("body CRC"),
        "{out}"
    );
    assert!(err.contains("--repair"), "{err}");

    let (ok, out, err) = check(&["--repair"]);
    assert!(ok, "{out}\n{err}");
    assert!(dir.path().join("quarantine").join("REPORT").exists());
    let ns = namesrv();
    let b = broker(&ns.addr, dir.path(), &[]);
    rt().block_on(async {
        let c = RemotingClient::new();
        let r = c
            .invoke(&b.addr, pull_req("Chk", 0, 0, 0), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS);
        let bodies: Vec<String> = ferrocket::client::split_records(r.body_bytes())
            .iter()
            .map(|rec| String::from_utf8_lossy(&decode_record(rec).unwrap().body).into_owned())
            .collect();
        assert_eq!(bodies.len(), 19, "{bodies:?}");
        assert!(!bodies.contains(&"chk-07".to_string()));
    });
}
