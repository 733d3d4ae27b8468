//! TLS on the remoting ports with real processes on loopback: in `enforcing` mode a
//! name server and a broker (registering over TLS) serve TLS clients and close plain
//! ones; in `permissive` mode both kinds are served on one port; an expired certificate
//! is refused by the client. Certificates are made here (rcgen).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrocket::client::role::broker_state;
use ferrocket::client::{Client, QueueAddr};
use ferrocket::remoting::codes::{request, response};
use ferrocket::remoting::tls::TlsClient;
use ferrocket::remoting::{RemotingClient, RemotingCommand};
use ferrocket_testkit::{tagged_message as msg, wait_until, Kit, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_ferrocket");
const T: Duration = Duration::from_secs(5);

/// A CA, and a certificate for 127.0.0.1 it signed (valid now, or expired in 2020).
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs(dir: &Path, name: &str, expired: bool) -> Certs {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    if expired {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let c = Certs {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&c.ca, ca.pem()).unwrap();
    std::fs::write(&c.cert, cert.pem()).unwrap();
    std::fs::write(&c.key, key.serialize_pem()).unwrap();
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn namesrv(kit: &Kit, mode: &str, c: &Certs) -> Proc {
    kit.spawn(&[
        "namesrv".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--tls-mode".into(),
        mode.into(),
        "--tls-cert".into(),
        c.cert.display().to_string(),
        "--tls-key".into(),
        c.key.display().to_string(),
    ])
}

fn tls_conf(mode: &str, c: &Certs) -> Vec<String> {
    vec![
        format!("tls.server.mode={mode}"),
        format!("tls.server.certPath={}", c.cert.display()),
        format!("tls.server.keyPath={}", c.key.display()),
        "tls.enable=true".into(),
        format!("tls.client.trustCertPath={}", c.ca.display()),
    ]
}

fn tls_client(ns: &str, c: &Certs) -> Client {
    let mut client = Client::new(ns);
    client.remoting =
        Arc::new(RemotingClient::new().with_tls(TlsClient::load(&c.ca, None).unwrap()));
    client
}

fn q(addr: &str) -> QueueAddr {
    QueueAddr {
        broker_name: "broker-a".into(),
        addr: addr.into(),
        queue_id: 0,
    }
}

fn runtime_info(r: &RemotingClient, rt: &tokio::runtime::Runtime, addr: &str) -> bool {
    rt.block_on(r.invoke(
        addr,
        RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO),
        T,
    ))
    .is_ok_and(|r| r.code == response::SUCCESS)
}

#[test]
fn enforcing_serves_tls_clients_and_closes_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "good", false);
    let kit = Kit::with_bin(BIN);
    let ns = namesrv(&kit, "enforcing", &c);
    // The broker registers with the name server over TLS (tls.enable).
    let broker = kit.broker(
        &ns.addr,
        &dir.path().join("store"),
        &tls_conf("enforcing", &c),
    );
    let rt = rt();
    let tls = tls_client(&ns.addr, &c);
    wait_until(
        "the broker registers over TLS",
        Duration::from_secs(20),
        || {
            rt.block_on(tls.cluster())
                .is_ok_and(|i| !i.broker_addr_table.is_empty())
        },
    );
    rt.block_on(tls.create_topic("Tls", 1)).unwrap();
    let sent = rt
        .block_on(tls.send("Tls", &q(&broker.addr), &[msg("t-1", 256)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
    wait_until(
        "the message is pulled over TLS",
        Duration::from_secs(10),
        || {
            rt.block_on(tls.pull(&q(&broker.addr), "Tls", "g", 0, 0))
                .is_ok_and(|r| r.code == response::SUCCESS)
        },
    );
    // A plain client gets nothing from either.
    let plain = Client::new(&ns.addr);
    assert!(rt.block_on(plain.cluster()).is_err());
    assert!(!runtime_info(&plain.remoting, &rt, &broker.addr));
    assert!(runtime_info(&tls.remoting, &rt, &broker.addr));
    // A client trusting another CA refuses the server.
    let other = certs(dir.path(), "other", false);
    let stranger = RemotingClient::new().with_tls(TlsClient::load(&other.ca, None).unwrap());
    assert!(!runtime_info(&stranger, &rt, &broker.addr));
}

#[test]
fn permissive_serves_both_and_an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "good", false);
    let kit = Kit::with_bin(BIN);
    let ns = namesrv(&kit, "permissive", &c);
    let mut conf = tls_conf("permissive", &c);
    conf.retain(|l| !l.starts_with("tls.enable") && !l.starts_with("tls.client"));
    let broker = kit.broker(&ns.addr, &dir.path().join("store"), &conf);
    let rt = rt();
    let plain = RemotingClient::new();
    let tls = RemotingClient::new().with_tls(TlsClient::load(&c.ca, None).unwrap());
    assert!(runtime_info(&plain, &rt, &broker.addr));
    assert!(runtime_info(&tls, &rt, &broker.addr));
    assert!(rt.block_on(Client::new(&ns.addr).cluster()).is_ok());
    assert!(rt.block_on(tls_client(&ns.addr, &c).cluster()).is_ok());

    // An expired server certificate: the TLS client refuses it.
    let old = certs(dir.path(), "expired", true);
    let expired = kit.broker(
        &ns.addr,
        &dir.path().join("store2"),
        &tls_conf("enforcing", &old)[..3],
    );
    let trusting = RemotingClient::new().with_tls(TlsClient::load(&old.ca, None).unwrap());
    assert!(!runtime_info(&trusting, &rt, &expired.addr));
}

/// A certificate for a client, signed by the CA of `ca` (its key in `ca_key`).
fn client_identity(
    dir: &Path,
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(vec!["ferrocket-client".to_owned()]).unwrap();
    let cert = p.signed_by(&key, ca, ca_key).unwrap();
    let (c, k) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn mutual_tls_takes_only_clients_with_a_certificate_of_the_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs(dir.path(), "server", false);
    // The CA clients' certificates must come from.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let client_ca = ca_params.self_signed(&ca_key).unwrap();
    let client_ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&client_ca_file, client_ca.pem()).unwrap();
    let (cert, key) = client_identity(dir.path(), &client_ca, &ca_key);

    let kit = Kit::with_bin(BIN);
    let ns = kit.namesrv();
    let mut conf = tls_conf("enforcing", &server)[..3].to_vec();
    conf.push("tls.server.authClient=true".into());
    conf.push(format!(
        "tls.server.trustCertPath={}",
        client_ca_file.display()
    ));
    let broker = kit.broker(&ns.addr, &dir.path().join("store"), &conf);
    let rt = rt();
    let anonymous = RemotingClient::new().with_tls(TlsClient::load(&server.ca, None).unwrap());
    assert!(!runtime_info(&anonymous, &rt, &broker.addr));
    let known =
        RemotingClient::new().with_tls(TlsClient::load(&server.ca, Some((&cert, &key))).unwrap());
    assert!(runtime_info(&known, &rt, &broker.addr));
    // A client certificate from another CA is refused too.
    let other = certs(dir.path(), "other", false);
    let foreign = RemotingClient::new()
        .with_tls(TlsClient::load(&server.ca, Some((&other.cert, &other.key))).unwrap());
    assert!(!runtime_info(&foreign, &rt, &broker.addr));
}

/// What a plain peer receives from a TLS-only port after sending `hello`: at most a
/// TLS alert (the server closes the failed handshake), never a frame of the port's
/// own protocol.
fn plain_peer_receives(port: u16, hello: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(hello);
    ferrocket_testkit::read_until_closed(&mut s)
}

fn assert_nothing_but_an_alert(what: &str, got: &[u8]) {
    assert!(
        got.is_empty() || (got[0] == 0x15 && got.len() <= 7),
        "a plain peer on the {what} received {} bytes: {:?}",
        got.len(),
        &got[..got.len().min(16)]
    );
}

/// `enforcing` on the replication ports: a SYNC_MASTER's slave and the members of a
/// Raft group reach each other over TLS (`tls.enable`) and acknowledge sends; a plain
/// peer on the HA or DLedger port gets nothing but a TLS alert.
#[test]
fn replication_ports_speak_tls_and_plain_peers_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "good", false);
    let kit = Kit::with_bin(BIN);
    let ns = namesrv(&kit, "enforcing", &c);
    let rt = rt();
    let tls = RemotingClient::new().with_tls(TlsClient::load(&c.ca, None).unwrap());
    let state = |addr: &str| rt.block_on(broker_state(&tls, addr, T)).ok();
    let client = tls_client(&ns.addr, &c);

    // Master and slave.
    let with = |extra: &[String]| {
        let mut conf = tls_conf("enforcing", &c);
        conf.extend_from_slice(extra);
        conf
    };
    let master = kit.broker(
        &ns.addr,
        &dir.path().join("m"),
        &with(&[
            "brokerRole=SYNC_MASTER".into(),
            "brokerId=0".into(),
            "roleEpoch=1".into(),
        ]),
    );
    let ha = master.ha_addr.clone().unwrap();
    let slave = kit.broker(
        &ns.addr,
        &dir.path().join("s"),
        &with(&[
            "brokerRole=SLAVE".into(),
            "brokerId=1".into(),
            "roleEpoch=1".into(),
            format!("haMasterAddress={ha}"),
        ]),
    );
    wait_until(
        "the slave connects to the HA port over TLS",
        Duration::from_secs(20),
        || state(&master.addr).is_some_and(|s| s.ha_connections == 1 && s.in_sync.len() == 1),
    );
    wait_until(
        "the master registers over TLS",
        Duration::from_secs(20),
        || rt.block_on(client.create_topic("TlsHa", 1)).is_ok(),
    );
    for i in 0..10 {
        // SYNC_MASTER: SEND_OK once the slave holds the message.
        let sent = rt
            .block_on(client.send("TlsHa", &q(&master.addr), &[msg(&format!("ha-{i}"), 512)]))
            .unwrap();
        assert_eq!(sent.code, response::SUCCESS);
    }
    let end = state(&master.addr).unwrap().max_offset;
    wait_until(
        "the slave holds the master's log",
        Duration::from_secs(10),
        || state(&slave.addr).is_some_and(|s| s.max_offset == end),
    );
    // A plain peer asking for the log from offset 0.
    assert_nothing_but_an_alert(
        "HA port",
        &plain_peer_receives(master.ha_port(), &0i64.to_be_bytes()),
    );

    // A Raft group.
    let peers: Vec<String> = (0..3)
        .map(|i| format!("n{i}-127.0.0.1:{}", ferrocket_testkit::free_port()))
        .collect();
    let raft_port = |i: usize| -> u16 {
        peers[i]
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap()
    };
    let members: Vec<Proc> = (0..3)
        .map(|i| {
            kit.broker(
                &ns.addr,
                &dir.path().join(format!("n{i}")),
                &with(&[
                    "brokerName=raft-tls".into(),
                    "enableDLegerCommitLog=true".into(),
                    "dLegerGroup=raft-tls".into(),
                    format!("dLegerPeers={}", peers.join(";")),
                    format!("dLegerSelfId=n{i}"),
                ]),
            )
        })
        .collect();
    let mut leader = String::new();
    wait_until(
        "the members elect a leader over TLS",
        Duration::from_secs(30),
        || {
            let masters: Vec<&Proc> = members
                .iter()
                .filter(|m| state(&m.addr).is_some_and(|s| s.is_master()))
                .collect();
            if let [m] = masters[..] {
                leader = m.addr.clone();
                true
            } else {
                false
            }
        },
    );
    let lq = QueueAddr {
        broker_name: "raft-tls".into(),
        addr: leader.clone(),
        queue_id: 0,
    };
    wait_until("the leader takes a topic", Duration::from_secs(20), || {
        rt.block_on(client.create_topic("TlsRaft", 1)).is_ok()
            && state(&leader).is_some_and(|s| s.is_master())
    });
    let mut acked = 0;
    wait_until(
        "sends are committed by a majority over TLS",
        Duration::from_secs(20),
        || {
            let r = rt.block_on(client.send("TlsRaft", &lq, &[msg("raft-1", 512)]));
            if r.is_ok_and(|r| r.code == response::SUCCESS) {
                acked += 1;
            }
            acked >= 3
        },
    );
    // A plain peer asking a member who it is (an INFO request: length, kind 4, `{}`).
    let mut info = 7u32.to_be_bytes().to_vec();
    info.push(4);
    info.extend_from_slice(&2u32.to_be_bytes());
    info.extend_from_slice(b"{}");
    assert_nothing_but_an_alert("DLedger port", &plain_peer_receives(raft_port(0), &info));
}
