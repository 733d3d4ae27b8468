//! The contract between the operator and the broker image: the `broker.conf` and roles
//! file the operator renders for a BrokerGroup start real `ferrocket broker` processes as
//! master and slave, with the ids the operator reports, and their `/readyz` (the readiness
//! probe) turns ready once registered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrocket_interop::{free_port, Proc};
use ferrocket_operator::builders::{broker_id, build_broker_group, BuildConfig, Roles};
use ferrocket_operator::crd::{BrokerGroup, BrokerGroupSpec};

/// The container's args as the kubelet would run them for `pod` (its name and IP
/// substituted, the mounted files read from `dir`), with the fixed ports moved to free
/// ones, a store under `dir`, small segments, then `extra` settings.
fn pod_args(
    container: &k8s_openapi::api::core::v1::Container,
    dir: &std::path::Path,
    pod: &str,
    metrics: u16,
    extra: &[String],
) -> Vec<String> {
    let (conf, roles) = (dir.join("broker.conf"), dir.join("roles"));
    let mut args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| {
            a.replace("/etc/ferrocket/broker.conf", conf.to_str().unwrap())
                .replace("/etc/ferrocket-roles/roles", roles.to_str().unwrap())
                .replace("$(POD_NAME)", pod)
                .replace("$(POD_IP)", "127.0.0.1")
        })
        .collect();
    for kv in [
        "listenPort=0".to_string(),
        "haListenPort=0".to_string(),
        format!("metricsPort={metrics}"),
        format!("storePathRootDir={}", dir.join(pod).display()),
        "mappedFileSizeCommitLog=8388608".to_string(),
        "diskSpaceCleanForciblyRatio=100".to_string(),
        "diskSpaceWarningLevelRatio=100".to_string(),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    {
        args.push("--set".into());
        args.push(kv);
    }
    args
}

/// Writes a group's rendered files as the kubelet mounts them — `broker.conf` (given,
/// its Secret paths already moved into `dir`) and the roles file — into `dir`, and
/// returns the brokers' container.
fn mount_files<'a>(
    objs: &'a ferrocket_operator::builders::BrokerGroupObjects,
    dir: &std::path::Path,
    conf: &str,
) -> &'a k8s_openapi::api::core::v1::Container {
    std::fs::write(dir.join("broker.conf"), conf).unwrap();
    std::fs::write(
        dir.join("roles"),
        &objs.roles.data.as_ref().unwrap()["roles"],
    )
    .unwrap();
    first_container(&objs.statefulset)
}

/// The first container of a rendered StatefulSet's pod template.
fn first_container(
    sts: &k8s_openapi::api::apps::v1::StatefulSet,
) -> &k8s_openapi::api::core::v1::Container {
    &sts.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

/// `bg` built with an operator control key: its group's Secret is written into `dir`
/// and the returned `broker.conf` points there (as the mounted Secret would).
fn build_with_control_key(
    bg: &BrokerGroup,
    namesrv: &str,
    roles: &Roles,
    dir: &std::path::Path,
) -> (ferrocket_operator::builders::BrokerGroupObjects, String) {
    let key = ferrocket_operator::builders::ControlKey::new(b"contract-operator-key").unwrap();
    let secret = dir.join("control-secret");
    std::fs::write(
        &secret,
        key.for_group("mq", &bg.metadata.name.clone().unwrap()),
    )
    .unwrap();
    let cfg = BuildConfig {
        control_key: Some(key),
        ..BuildConfig::default()
    };
    let objs = build_broker_group(bg, namesrv, roles, &cfg).unwrap();
    let conf = objs.config.data.as_ref().unwrap()["broker.conf"]
        .replace("/etc/ferrocket-control/secretKey", secret.to_str().unwrap());
    (objs, conf)
}

fn http_body(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn http_status(port: u16, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn rendered_config_and_roles_start_a_master_and_a_slave() {
    let ns = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let spec: BrokerGroupSpec = group_spec(&ns.addr);
    let mut bg = BrokerGroup::new("broker-a", spec);
    bg.metadata.namespace = Some("mq".into());
    let roles = Roles::initial("broker-a");
    // With the operator's control key: the group's Secret signs role changes, and the
    // HA port takes only the group's members (haRequireSignature).
    let dir = tempfile::tempdir().unwrap();
    let (objs, conf_text) = build_with_control_key(&bg, &ns.addr, &roles, dir.path());
    assert!(
        conf_text.contains("haRequireSignature=true\n"),
        "{conf_text}"
    );
    // The container's args, with the pod's values substituted as the kubelet would and the
    // fixed ports moved to free ones (the only --set additions).
    let container = mount_files(&objs, dir.path(), &conf_text);
    let start = |pod: &str| {
        let metrics = free_port();
        let args = pod_args(container, dir.path(), pod, metrics, &[]);
        (Proc::spawn(&args), metrics)
    };
    let (master, m_port) = start("broker-a-0");
    let (slave, s_port) = start("broker-a-1");
    assert_eq!(
        (master.role.as_str(), slave.role.as_str()),
        ("master", "slave")
    );
    assert!(
        master.addr.starts_with("127.0.0.1:"),
        "brokerIP1 from the pod IP: {}",
        master.addr
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while (http_status(m_port, "/readyz") != 200 || http_status(s_port, "/readyz") != 200)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_status(m_port, "/readyz"),
        200,
        "master readiness probe"
    );
    assert_eq!(http_status(s_port, "/readyz"), 200, "slave readiness probe");
    assert_eq!(http_status(m_port, "/healthz"), 200, "liveness probe");
    // The slave answers the master's HA challenge with the group's key and follows.
    ferrocket_testkit::wait_until(
        "the slave passes the master's HA challenge",
        Duration::from_secs(20),
        || ferrocket_testkit::state(&master.addr).is_some_and(|s| s.ha_connections >= 1),
    );
    // The ids the operator reports are the ones the brokers registered with.
    let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
        .args(["admin", "--namesrv", &ns.addr, "--json", "cluster"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addrs = &v["brokerAddrTable"]["broker-a"]["brokerAddrs"];
    assert_eq!(
        addrs[broker_id("broker-a-0", &roles).to_string()],
        master.addr.as_str(),
        "{v}"
    );
    assert_eq!(
        addrs[broker_id("broker-a-1", &roles).to_string()],
        slave.addr.as_str(),
        "{v}"
    );
    assert_eq!(
        v["clusterAddrTable"]["DefaultCluster"][0], "broker-a",
        "{v}"
    );
}

fn group_spec(ns: &str) -> BrokerGroupSpec {
    BrokerGroupSpec {
        name_server_address: Some(ns.to_string()),
        replicas: 2,
        replication: ferrocket_operator::crd::Replication::AsyncMaster,
        flush_disk_type: ferrocket_operator::crd::FlushDiskType::SyncFlush,
        ..BrokerGroupSpec::default()
    }
}

/// A `replication: Raft` group of 3: the rendered `broker.conf` names the DLedger peers
/// by pod DNS name with ids `n<ordinal>`, each pod takes its id from its name, and the
/// three real brokers elect a leader that registers as brokerId 0 (followers as
/// ordinal + 1) and takes sends. Rendered with the operator's control key, so the
/// members elect and replicate through each other's challenges (`haRequireSignature`). Only the peer addresses are moved to loopback ports
/// (pod DNS names do not resolve here), as the fixed ports are.
#[test]
fn a_rendered_raft_group_elects_a_leader_that_takes_sends() {
    let ns = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let spec = BrokerGroupSpec {
        replicas: 3,
        replication: ferrocket_operator::crd::Replication::Raft,
        ..group_spec(&ns.addr)
    };
    let mut bg = BrokerGroup::new("broker-r", spec);
    bg.metadata.namespace = Some("mq".into());
    let roles = Roles::initial("broker-r");
    // A new group with the operator's control key: its members challenge each other.
    let dir = tempfile::tempdir().unwrap();
    let (objs, conf_text) = build_with_control_key(&bg, &ns.addr, &roles, dir.path());
    for want in [
        "haRequireSignature=true\n",
        "enableDLegerCommitLog=true\n",
        "dLegerGroup=broker-r\n",
        "dLegerPeers=n0-broker-r-0.broker-r-hs.mq.svc:40911;n1-broker-r-1.broker-r-hs.mq.svc:40911;n2-broker-r-2.broker-r-hs.mq.svc:40911\n",
    ] {
        assert!(conf_text.contains(want), "{want} missing from:\n{conf_text}");
    }
    assert!(!conf_text.contains("brokerRole="), "{conf_text}");
    let sts = objs.statefulset.spec.as_ref().unwrap();
    assert_eq!(
        sts.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let container = &sts.template.spec.as_ref().unwrap().containers[0];
    assert!(container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p.container_port == 40911));
    mount_files(&objs, dir.path(), &conf_text);
    let peers = (0..3)
        .map(|i| format!("n{i}-127.0.0.1:{}", free_port()))
        .collect::<Vec<_>>()
        .join(";");
    let start = |pod: &str| {
        let peers = format!("dLegerPeers={peers}");
        Proc::spawn(&pod_args(container, dir.path(), pod, free_port(), &[peers]))
    };
    let brokers: Vec<Proc> = (0..3).map(|i| start(&format!("broker-r-{i}"))).collect();
    // One leader registered as brokerId 0, the others as their ordinal + 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
            .args(["admin", "--namesrv", &ns.addr, "--json", "cluster"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let addrs = v["brokerAddrTable"]["broker-r"]["brokerAddrs"].clone();
        if addrs
            .as_object()
            .is_some_and(|o| o.len() == 3 && o.contains_key("0"))
        {
            break addrs;
        }
        assert!(Instant::now() < deadline, "no leader registered: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let leader = brokers
        .iter()
        .position(|b| table["0"] == b.addr.as_str())
        .expect("the leader is one of the three");
    for (i, b) in brokers.iter().enumerate() {
        if i != leader {
            assert_eq!(table[(i + 1).to_string()], b.addr.as_str(), "{table}");
        }
    }
    let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
        .args([
            "admin",
            "--namesrv",
            &ns.addr,
            "topic",
            "create",
            "--topic",
            "RT",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The leader takes a send (the route may still be settling: retried until it does).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
            .args([
                "admin",
                "--namesrv",
                &ns.addr,
                "send",
                "--topic",
                "RT",
                "--body",
                "hi",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("SEND_OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{said} {} {table}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `spec.tls` (Enforcing) as rendered: the master and the slave serve their ports with
/// the Secret's certificate — one naming only the pods' DNS names — and the slave
/// follows the master's HA port over TLS by pod IP (the chain is checked, not the
/// name); the operator reaches them with the CA (`--broker-tls-trust`), and without it
/// gets nothing.
#[test]
fn a_rendered_tls_group_replicates_over_tls_and_the_operator_needs_the_ca() {
    use ferrocket_operator::failover::{BrokerAdmin, RemotingAdmin};
    let ns = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let mut spec = group_spec(&ns.addr);
    spec.tls = Some(ferrocket_operator::crd::BrokerTls {
        secret_name: "broker-t-tls".into(),
        ..Default::default()
    });
    let mut bg = BrokerGroup::new("broker-t", spec);
    bg.metadata.namespace = Some("mq".into());
    let roles = Roles::initial("broker-t");
    let objs = build_broker_group(&bg, &ns.addr, &roles, &BuildConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The Secret's files, where the kubelet would mount them.
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["*.broker-t-headless.mq.svc".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(tls.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(tls.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(tls.join("tls.key"), key.serialize_pem()).unwrap();
    let conf = objs.config.data.as_ref().unwrap()["broker.conf"].replace(
        ferrocket_operator::builders::TLS_MOUNT,
        tls.to_str().unwrap(),
    );
    assert!(conf.contains("tls.server.mode=enforcing"), "{conf}");
    let container = mount_files(&objs, dir.path(), &conf);
    let start = |pod: &str| Proc::spawn(&pod_args(container, dir.path(), pod, free_port(), &[]));
    let master = start("broker-t-0");
    let _slave = start("broker-t-1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let operator = RemotingAdmin::default().with_tls(
        ferrocket::remoting::tls::TlsClient::load_peer(&tls.join("ca.crt"), None).unwrap(),
    );
    ferrocket_interop::wait_until(
        "the slave follows over TLS, as the operator sees with the CA",
        Duration::from_secs(20),
        || {
            rt.block_on(operator.state(&master.addr))
                .is_ok_and(|v| v.is_master && v.in_sync.len() == 1)
        },
    );
    assert!(
        rt.block_on(RemotingAdmin::default().state(&master.addr))
            .is_err(),
        "a plain operator read an enforcing broker"
    );
}

/// `NameServer.spec.acl` and `BrokerGroup.spec.nameServerCredentials`, rendered and
/// run: the name server started with the rendered args (the mounted files read from a
/// directory, the fixed ports moved) takes the registration of the group whose
/// brokers sign with an admin account of its ACL file, and refuses a group rendered
/// without credentials — no route points at it.
#[test]
fn a_rendered_name_server_acl_takes_only_groups_with_credentials() {
    use ferrocket_operator::builders::build_nameserver;
    use ferrocket_operator::crd::{AclSpec, NameServer, NameServerCredentials, NameServerSpec};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plain_acl.yml"),
        "accounts:\n  - accessKey: broker-signed\n    secretKey: registration-secret-1\n    admin: true\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secretKey"), "registration-secret-1\n").unwrap();
    let mut ns_cr = NameServer::new(
        "namesrv",
        NameServerSpec {
            acl: Some(AclSpec {
                secret_name: "namesrv-acl".into(),
                key: "plain_acl.yml".into(),
            }),
            ..NameServerSpec::default()
        },
    );
    ns_cr.metadata.namespace = Some("mq".into());
    let ns_objs = build_nameserver(&ns_cr, &BuildConfig::default()).unwrap();
    let ns_container = first_container(&ns_objs.statefulset);
    let metrics = free_port().to_string();
    let ns_args: Vec<String> = ns_container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| {
            if a.starts_with("0.0.0.0:") {
                "127.0.0.1:0".to_string()
            } else if a == ferrocket_operator::builders::NAMESRV_METRICS_PORT.to_string() {
                metrics.clone()
            } else {
                a.replace("/etc/ferrocket-acl", dir.path().to_str().unwrap())
            }
        })
        .collect();
    assert!(ns_args.iter().any(|a| a == "--acl-file"), "{ns_args:?}");
    let ns = Proc::spawn(&ns_args);

    let start = |name: &str, creds: bool| {
        let spec = BrokerGroupSpec {
            replicas: 1,
            name_server_credentials: creds.then(|| NameServerCredentials {
                access_key: "broker-signed".into(),
                secret_name: "creds".into(),
                key: "secretKey".into(),
            }),
            ..group_spec(&ns.addr)
        };
        let mut bg = BrokerGroup::new(name, spec);
        bg.metadata.namespace = Some("mq".into());
        let objs = build_broker_group(
            &bg,
            &ns.addr,
            &Roles::initial(name),
            &BuildConfig::default(),
        )
        .unwrap();
        let gdir = dir.path().join(name);
        std::fs::create_dir_all(&gdir).unwrap();
        let conf = objs.config.data.as_ref().unwrap()["broker.conf"].replace(
            "/etc/ferrocket-namesrv-credentials",
            dir.path().to_str().unwrap(),
        );
        assert_eq!(
            conf.contains("namesrvAccessKey=broker-signed\n"),
            creds,
            "{conf}"
        );
        let container = mount_files(&objs, &gdir, &conf);
        let args = pod_args(container, &gdir, &format!("{name}-0"), free_port(), &[]);
        Proc::spawn(&args)
    };
    let signed = start("broker-signed", true);
    let unsigned = start("broker-plain", false);
    let cluster = || -> serde_json::Value {
        let out = std::process::Command::new(ferrocket_interop::ferrocket_bin())
            .args(["admin", "--namesrv", &ns.addr, "--json", "cluster"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    ferrocket_testkit::wait_until(
        "the group with credentials registers",
        Duration::from_secs(20),
        || {
            cluster()["brokerAddrTable"]["broker-signed"]["brokerAddrs"]["0"]
                == signed.addr.as_str()
        },
    );
    // The other's registration is refused (the name server counts it), and it is
    // not listed.
    let metrics_port: u16 = metrics.parse().unwrap();
    ferrocket_testkit::wait_until(
        "the name server refuses the group without credentials",
        Duration::from_secs(20),
        || {
            http_body(metrics_port, "/metrics").lines().any(|l| {
                l.starts_with("ferrocket_namesrv_registrations_refused_total ")
                    && l.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<f64>().ok())
                        >= Some(1.0)
            })
        },
    );
    let v = cluster();
    assert!(
        v["brokerAddrTable"].get("broker-plain").is_none(),
        "a group without credentials registered with an ACL name server: {v} ({})",
        unsigned.addr
    );
}

/// `BrokerGroup.spec.auth` (ACL 2.0), rendered and run: the Secret's two identities
/// are read from the mounted files, so the first Super user exists at start; an
/// unsigned request is refused with RocketMQ's remark; the Super user creates a topic
/// and sends; the slave copies the master's topics signed as the brokers' inner
/// identity (its metadata sync passes the master's authentication).
#[test]
fn a_rendered_acl2_group_authenticates_and_its_slave_syncs_as_the_inner_user() {
    use ferrocket::client::Client;
    use ferrocket::remoting::codes::{request, response};
    use ferrocket::remoting::{RemotingClient, RemotingCommand};
    let ns = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let spec = BrokerGroupSpec {
        auth: Some(ferrocket_operator::crd::AuthSpec {
            secret_name: "broker-z-auth".into(),
            authorization: true,
        }),
        ..group_spec(&ns.addr)
    };
    let mut bg = BrokerGroup::new("broker-z", spec);
    bg.metadata.namespace = Some("mq".into());
    let roles = Roles::initial("broker-z");
    let objs = build_broker_group(&bg, &ns.addr, &roles, &BuildConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The Secret's keys, as the kubelet mounts them.
    std::fs::write(
        dir.path().join("initAuthenticationUser"),
        r#"{"username":"root","password":"root-secret-1"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("innerClientAuthenticationCredentials"),
        r#"{"accessKey":"inner","secretKey":"inner-secret-1"}"#,
    )
    .unwrap();
    let conf = objs.config.data.as_ref().unwrap()["broker.conf"].replace(
        ferrocket_operator::builders::AUTH_MOUNT,
        dir.path().to_str().unwrap(),
    );
    assert!(
        conf.contains("authenticationEnabled=true\nauthorizationEnabled=true\n"),
        "{conf}"
    );
    let container = mount_files(&objs, dir.path(), &conf);
    let start = |pod: &str| Proc::spawn(&pod_args(container, dir.path(), pod, free_port(), &[]));
    let master = start("broker-z-0");
    let slave = start("broker-z-1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stranger = Client::new(&ns.addr);
    let mut root = Client::new(&ns.addr);
    root.remoting = std::sync::Arc::new(RemotingClient::signing(
        ferrocket::auth::Credentials::new("root", b"root-secret-1").unwrap(),
    ));
    let refused = rt
        .block_on(stranger.remoting.invoke(
            &master.addr,
            RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(
        (refused.code, refused.remark.as_deref()),
        (response::NO_PERMISSION, Some("username cannot be null."))
    );
    ferrocket_testkit::wait_until(
        "the Super user creates a topic",
        Duration::from_secs(20),
        || rt.block_on(root.create_topic("Zed", 2)).is_ok(),
    );
    // The slave's metadata sync (every 10 s) signs as the inner user.
    ferrocket_testkit::wait_until(
        "the slave copies the master's topics",
        Duration::from_secs(30),
        || {
            rt.block_on(root.remoting.invoke(
                &slave.addr,
                RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG),
                Duration::from_secs(5),
            ))
            .is_ok_and(|r| {
                r.code == response::SUCCESS
                    && String::from_utf8_lossy(&r.body_bytes()).contains("\"Zed\"")
            })
        },
    );
}
