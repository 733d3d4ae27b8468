//! RocketMQ's plain ACL (`aclEnable=true`) with a real name server and broker on
//! loopback: strangers, unknown accounts, wrong secrets, tampered requests, topics
//! without PUB and groups without SUB are refused with NO_PERMISSION and RocketMQ's
//! remarks, nothing refused is stored, admin requests need an admin account, and a
//! changed ACL file takes effect without reconnecting.

use std::sync::Arc;
use std::time::Duration;

use ferrocket::auth::Credentials;
use ferrocket::client::role::broker_state;
use ferrocket::client::{Client, ClientError, QueueAddr};
use ferrocket::remoting::codes::{request, response};
use ferrocket::remoting::{RemotingClient, RemotingCommand};
use ferrocket_testkit::{tagged_message as msg, wait_until, Kit};

const BIN: &str = env!("CARGO_BIN_EXE_ferrocket");
const T: Duration = Duration::from_secs(5);

const ACL: &str = r#"
globalWhiteRemoteAddresses:
accounts:
  - accessKey: admin-account
    secretKey: admin-secret-1
    admin: true
  - accessKey: app-account
    secretKey: app-secret-1
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - Orders=PUB|SUB
      - Audit=SUB
    groupPerms:
      - blocked=DENY
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(ns: &str, creds: Option<(&str, &[u8])>) -> Client {
    let mut c = Client::new(ns);
    if let Some((ak, sk)) = creds {
        c.remoting = Arc::new(RemotingClient::signing(Credentials::new(ak, sk).unwrap()));
    }
    c
}

/// The code and remark of a refusal (`(0, "")` when it succeeded).
fn refusal<T>(r: Result<T, ClientError>) -> (i32, String) {
    match r {
        Ok(_) => (0, String::new()),
        Err(ClientError::Refused { code, remark, .. }) => (code, remark),
        Err(e) => panic!("not an answer: {e}"),
    }
}

fn q(addr: &str, queue_id: i32) -> QueueAddr {
    QueueAddr {
        broker_name: "broker-a".into(),
        addr: addr.into(),
        queue_id,
    }
}

#[test]
fn plain_acl_refuses_strangers_and_grants_each_account_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain_acl.yml");
    std::fs::write(&file, ACL).unwrap();
    let kit = Kit::with_bin(BIN);
    let ns = kit.namesrv();
    let broker = kit.broker(
        &ns.addr,
        &dir.path().join("store"),
        &[
            "aclEnable=true".into(),
            format!("aclFile={}", file.display()),
            "autoCreateTopicEnable=false".into(),
        ],
    );
    let rt = rt();
    let stranger = client(&ns.addr, None);
    let admin = client(&ns.addr, Some(("admin-account", b"admin-secret-1")));
    let app = client(&ns.addr, Some(("app-account", b"app-secret-1")));
    let wrong = client(&ns.addr, Some(("app-account", b"not-the-secret")));
    let ghost = client(&ns.addr, Some(("ghost-account", b"app-secret-1")));
    wait_until("the broker registers", Duration::from_secs(10), || {
        rt.block_on(admin.cluster())
            .is_ok_and(|c| !c.broker_addr_table.is_empty())
    });

    // Admin requests: refused unsigned and to a non-admin account.
    assert_eq!(
        refusal(rt.block_on(stranger.create_topic("Orders", 4))),
        (response::NO_PERMISSION, "No accessKey is configured".into())
    );
    assert_eq!(
        refusal(rt.block_on(app.create_topic("Orders", 4))),
        (
            response::NO_PERMISSION,
            format!(
                "Need admin permission for request code={}, but accessKey=app-account is not",
                request::UPDATE_AND_CREATE_TOPIC
            )
        )
    );
    rt.block_on(admin.create_topic("Orders", 4)).unwrap();
    rt.block_on(admin.create_topic("Audit", 4)).unwrap();
    let addr = broker.addr.clone();
    // A role change from an account that is not admin: refused before the control
    // plane's own checks.
    let role = RemotingCommand::request(request::ROLE_CHANGE)
        .with_ext("role", "master")
        .with_ext("epoch", 99);
    let r = rt.block_on(app.remoting.invoke(&addr, role, T)).unwrap();
    assert_eq!(r.code, response::NO_PERMISSION, "{:?}", r.remark);

    // Sends: the account's topic, yes; a topic with SUB only, a wrong secret, an
    // unknown account, nobody: refused, and nothing stored.
    let before = rt
        .block_on(broker_state(&admin.remoting, &addr, T))
        .unwrap()
        .max_offset;
    for (c, topic, want) in [
        (
            &app,
            "Audit",
            "No default permission for topic:Audit".to_owned(),
        ),
        (
            &app,
            "Unlisted",
            "No default permission for topic:Unlisted".to_owned(),
        ),
        (
            &wrong,
            "Orders",
            "Check signature failed for accessKey=app-account".to_owned(),
        ),
        (
            &ghost,
            "Orders",
            "No acl config for ghost-account".to_owned(),
        ),
        (&stranger, "Orders", "No accessKey is configured".to_owned()),
    ] {
        assert_eq!(
            refusal(rt.block_on(c.send(topic, &q(&addr, 0), &[msg("refused", 128)]))),
            (response::NO_PERMISSION, want),
            "{topic}"
        );
    }
    let after = rt
        .block_on(broker_state(&admin.remoting, &addr, T))
        .unwrap()
        .max_offset;
    assert_eq!(before, after, "a refused send stored something");
    let sent = rt
        .block_on(app.send("Orders", &q(&addr, 0), &[msg("o-1", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);

    // A request signed, then changed (another topic): the signature no longer holds.
    let mut tampered = RemotingCommand::request(request::SEND_MESSAGE_V2)
        .with_ext("a", "pg")
        .with_ext("b", "Orders")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_body(bytes::Bytes::from_static(b"body"));
    Credentials::new("app-account", b"app-secret-1")
        .unwrap()
        .sign(&mut tampered);
    tampered = tampered.with_body(bytes::Bytes::from_static(b"another body"));
    let r = rt
        .block_on(stranger.remoting.invoke(&addr, tampered, T))
        .unwrap();
    assert_eq!(r.code, response::NO_PERMISSION);
    assert_eq!(
        r.remark.as_deref(),
        Some("Check signature failed for accessKey=app-account")
    );

    // Pulls: the topic's SUB and the group's SUB.
    let pulled = rt
        .block_on(app.pull(&q(&addr, 0), "Orders", "readers", 0, 0))
        .unwrap();
    // Let through (the message may not be dispatched yet: found or not found).
    assert!(
        pulled.code == response::SUCCESS || pulled.code == response::PULL_NOT_FOUND,
        "{} {:?}",
        pulled.code,
        pulled.remark
    );
    let denied = rt
        .block_on(app.pull(&q(&addr, 0), "Orders", "blocked", 0, 0))
        .unwrap();
    assert_eq!(denied.code, response::NO_PERMISSION);
    assert_eq!(
        denied.remark.as_deref(),
        Some("No default permission for group:blocked")
    );

    // The file changes (Audit gets PUB): the same client, on its open connection, is
    // let through within a second or so.
    std::fs::write(&file, ACL.replace("Audit=SUB", "Audit=PUB|SUB")).unwrap();
    wait_until(
        "the changed ACL file is in force",
        Duration::from_secs(10),
        || {
            rt.block_on(app.send("Audit", &q(&addr, 0), &[msg("a-1", 128)]))
                .is_ok()
        },
    );
    // An invalid file is refused and the last good one stays.
    std::fs::write(&file, "accounts: [").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = rt
        .block_on(app.send("Audit", &q(&addr, 0), &[msg("a-2", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
}

#[test]
fn a_broker_with_acl_on_and_no_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["broker", "--set", "aclEnable=true", "--set"])
        .arg(format!("storePathRootDir={}", dir.path().display()))
        .args(["--set", "listenPort=0"])
        .arg("--set")
        .arg(format!(
            "aclFile={}",
            dir.path().join("missing.yml").display()
        ))
        .env_remove("ROCKETMQ_HOME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aclEnable=true") && err.contains("missing.yml"),
        "{err}"
    );
}

/// `ferrocket admin ...` signed as `ak` with the secret in `secret_file`.
fn admin_cli(ns: &str, ak: &str, secret_file: &std::path::Path, args: &[&str]) -> (bool, String) {
    let secret = secret_file.display().to_string();
    let mut all = vec![
        "admin",
        "--namesrv",
        ns,
        "--access-key",
        ak,
        "--secret-file",
        &secret,
    ];
    all.extend_from_slice(args);
    ferrocket_testkit::run_cli(BIN, &all)
}

#[test]
fn acl_admin_requests_edit_the_file_and_take_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain_acl.yml");
    std::fs::write(&file, ACL).unwrap();
    let admin_secret = dir.path().join("admin.secret");
    std::fs::write(&admin_secret, "admin-secret-1").unwrap();
    let app_secret = dir.path().join("app.secret");
    std::fs::write(&app_secret, "app-secret-1").unwrap();
    let kit = Kit::with_bin(BIN);
    let ns = kit.namesrv();
    let control = dir.path().join("control.secret");
    std::fs::write(&control, "control-secret-1").unwrap();
    let broker = kit.broker(
        &ns.addr,
        &dir.path().join("store"),
        &[
            "aclEnable=true".into(),
            format!("aclFile={}", file.display()),
            format!("controlSecretFile={}", control.display()),
        ],
    );
    let rt = rt();
    let admin = client(&ns.addr, Some(("admin-account", b"admin-secret-1")));
    wait_until("the broker registers", Duration::from_secs(10), || {
        rt.block_on(admin.cluster())
            .is_ok_and(|c| !c.broker_addr_table.is_empty())
    });
    rt.block_on(admin.create_topic("Orders", 4)).unwrap();
    let cli =
        |ak: &str, secret: &std::path::Path, args: &[&str]| admin_cli(&ns.addr, ak, secret, args);

    // A non-admin account may not change the ACL.
    let (ok, out) = cli(
        "app-account",
        &app_secret,
        &[
            "acl",
            "update",
            "--account",
            "newcomer-1",
            "--secret",
            "newcomer-secret",
        ],
    );
    assert!(
        !ok && out.contains("Need admin permission for request code=50"),
        "{out}"
    );

    // Created by the admin: the new account sends at once.
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &[
            "acl",
            "update",
            "--account",
            "newcomer-1",
            "--secret",
            "newcomer-secret",
            "--default-topic-perm",
            "PUB",
        ],
    );
    assert!(ok, "{out}");
    let newcomer = client(&ns.addr, Some(("newcomer-1", b"newcomer-secret")));
    let sent = rt
        .block_on(newcomer.send("Orders", &q(&broker.addr, 0), &[msg("n-1", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
    // Updated (the secret kept): denied.
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &[
            "acl",
            "update",
            "--account",
            "newcomer-1",
            "--default-topic-perm",
            "DENY",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        refusal(rt.block_on(newcomer.send("Orders", &q(&broker.addr, 0), &[msg("n-2", 128)]))),
        (
            response::NO_PERMISSION,
            "No default permission for topic:Orders".into()
        )
    );
    // An invalid change is refused and writes nothing.
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &[
            "acl",
            "update",
            "--account",
            "newcomer-1",
            "--topic-perms",
            "noequals",
        ],
    );
    assert!(
        !ok && out.contains("Parse resource permission failed"),
        "{out}"
    );
    let (ok, out) = cli("admin-account", &admin_secret, &["acl", "version"]);
    assert!(ok && out.contains("\"counter\":2"), "{out}");
    let (ok, out) = cli("admin-account", &admin_secret, &["--json", "acl", "show"]);
    assert!(
        ok && out.contains("newcomer-1") && out.contains("admin-account"),
        "{out}"
    );
    let (ok, out) = cli("app-account", &app_secret, &["acl", "show"]);
    assert!(!ok && out.contains("Need admin permission"), "{out}");
    // The control plane's account (the operator's, signing with the control secret)
    // is an admin whatever the file says; the same key with another secret is not.
    let wrong_control = dir.path().join("wrong.secret");
    std::fs::write(&wrong_control, "not-the-control-secret").unwrap();
    let (ok, out) = cli("ferrocket-operator", &control, &["acl", "version"]);
    assert!(ok, "{out}");
    let (ok, out) = cli("ferrocket-operator", &wrong_control, &["acl", "version"]);
    assert!(
        !ok && out.contains("No acl config for ferrocket-operator"),
        "{out}"
    );
    // Deleted: unknown.
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &["acl", "delete", "--account", "newcomer-1"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        refusal(rt.block_on(newcomer.send("Orders", &q(&broker.addr, 0), &[msg("n-3", 128)]))),
        (
            response::NO_PERMISSION,
            "No acl config for newcomer-1".into()
        )
    );
    // Global white addresses: loopback let through unsigned, then not.
    let stranger = client(&ns.addr, None);
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &["acl", "white-addrs", "--addrs", "127.0.0.*"],
    );
    assert!(ok, "{out}");
    let sent = rt
        .block_on(stranger.send("Orders", &q(&broker.addr, 0), &[msg("s-1", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
    let (ok, out) = cli(
        "admin-account",
        &admin_secret,
        &["acl", "white-addrs", "--addrs", ""],
    );
    assert!(ok, "{out}");
    assert_eq!(
        refusal(rt.block_on(stranger.send("Orders", &q(&broker.addr, 0), &[msg("s-2", 128)]))).0,
        response::NO_PERMISSION
    );
}

#[test]
fn a_name_server_with_an_acl_file_takes_registrations_only_from_an_admin_account() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain_acl.yml");
    std::fs::write(&file, ACL).unwrap();
    let admin_secret = dir.path().join("admin.secret");
    std::fs::write(&admin_secret, "admin-secret-1").unwrap();
    let kit = Kit::with_bin(BIN);
    let ns = kit.spawn(&[
        "namesrv".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--acl-file".into(),
        file.display().to_string(),
    ]);
    // A broker signing as the admin account registers.
    let broker = kit.broker(
        &ns.addr,
        &dir.path().join("store"),
        &[
            "namesrvAccessKey=admin-account".into(),
            format!("namesrvSecretFile={}", admin_secret.display()),
        ],
    );
    let rt = rt();
    let reader = client(&ns.addr, None);
    wait_until(
        "the signed broker registers",
        Duration::from_secs(10),
        || {
            rt.block_on(reader.cluster()).is_ok_and(|c| {
                c.broker_addr_table
                    .values()
                    .any(|b| b.broker_addrs.values().any(|a| *a == broker.addr))
            })
        },
    );
    // Route reads stay open; writes from a stranger or a non-admin account do not.
    let register = |c: &Client| {
        let req = RemotingCommand::request(request::REGISTER_BROKER)
            .with_ext("brokerName", "broker-a")
            .with_ext("brokerAddr", "127.0.0.1:1")
            .with_ext("clusterName", "DefaultCluster")
            .with_ext("haServerAddr", "127.0.0.1:2")
            .with_ext("brokerId", 0)
            .with_ext("epoch", 999)
            .with_body(bytes::Bytes::from_static(
                b"{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{}}}",
            ));
        rt.block_on(c.remoting.invoke(&ns.addr, req, T)).unwrap()
    };
    let r = register(&reader);
    assert_eq!(
        (r.code, r.remark.as_deref()),
        (response::NO_PERMISSION, Some("No accessKey is configured"))
    );
    let app = client(&ns.addr, Some(("app-account", b"app-secret-1")));
    let r = register(&app);
    assert_eq!(r.code, response::NO_PERMISSION);
    assert_eq!(
        r.remark.as_deref(),
        Some(
            format!(
                "Need admin permission for request code={}, but accessKey=app-account is not",
                request::REGISTER_BROKER
            )
            .as_str()
        )
    );
    let wipe = RemotingCommand::request(request::WIPE_WRITE_PERM_OF_BROKER)
        .with_ext("brokerName", "broker-a");
    let r = rt
        .block_on(reader.remoting.invoke(&ns.addr, wipe, T))
        .unwrap();
    assert_eq!(r.code, response::NO_PERMISSION);
    // Nothing changed: the real broker is still the only one, and writable.
    let info = rt.block_on(reader.cluster()).unwrap();
    let addrs: Vec<&String> = info
        .broker_addr_table
        .values()
        .flat_map(|b| b.broker_addrs.values())
        .collect();
    assert_eq!(addrs, [&broker.addr]);
}

/// An AUTH request (3001–3010) to `addr` with a JSON body, signed by `by`.
fn auth_req(
    rt: &tokio::runtime::Runtime,
    by: &Client,
    addr: &str,
    code: i32,
    ext: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> RemotingCommand {
    let mut req = RemotingCommand::request(code);
    for (k, v) in ext {
        req = req.with_ext(k, v);
    }
    if let Some(b) = body {
        req = req.with_body(bytes::Bytes::from(b.to_string()));
    }
    rt.block_on(by.remoting.invoke(addr, req, T)).unwrap()
}

/// ACL 2.0 (`authenticationEnabled`, `authorizationEnabled`): the Super user from
/// `initAuthenticationUser` creates a Normal user and its policies with the AUTH
/// requests; that user sends to what its policies allow and nothing else, each
/// refusal carries RocketMQ's remark and stores nothing, control-plane writes need
/// `Cluster:` Update, a changed policy takes effect on the next request, and the
/// users and policies survive a restart.
#[test]
fn acl2_users_and_policies_authenticate_and_authorize_every_request() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::with_bin(BIN);
    let ns = kit.namesrv();
    let conf = [
        "authenticationEnabled=true".to_owned(),
        "authorizationEnabled=true".to_owned(),
        r#"initAuthenticationUser={"username":"root","password":"root-secret-1"}"#.to_owned(),
        r#"innerClientAuthenticationCredentials={"accessKey":"inner","secretKey":"inner-secret-1"}"#
            .to_owned(),
        "autoCreateTopicEnable=false".to_owned(),
    ];
    let mut broker = kit.broker(&ns.addr, &dir.path().join("store"), &conf);
    let rt = rt();
    let addr = broker.addr.clone();
    let auth = |by: &Client, code: i32, ext: &[(&str, &str)], body: Option<serde_json::Value>| {
        auth_req(&rt, by, &addr, code, ext, body)
    };
    let root = client(&ns.addr, Some(("root", b"root-secret-1")));
    let app = client(&ns.addr, Some(("app", b"app-secret-1")));
    let wrong = client(&ns.addr, Some(("app", b"not-the-secret")));
    let ghost = client(&ns.addr, Some(("ghost", b"app-secret-1")));
    let stranger = client(&ns.addr, None);
    wait_until("the broker registers", Duration::from_secs(10), || {
        rt.block_on(root.cluster())
            .is_ok_and(|c| !c.broker_addr_table.is_empty())
    });
    rt.block_on(root.create_topic("Orders", 4)).unwrap();
    rt.block_on(root.create_topic("Audit", 4)).unwrap();

    // Users: created by the Super user; a stranger cannot; a second create is refused.
    let user = json!({"username": "app", "password": "app-secret-1"});
    let r = auth(
        &stranger,
        request::AUTH_CREATE_USER,
        &[("username", "app")],
        Some(user.clone()),
    );
    assert_eq!(
        (r.code, r.remark.as_deref()),
        (response::NO_PERMISSION, Some("username cannot be null."))
    );
    let r = auth(
        &root,
        request::AUTH_CREATE_USER,
        &[("username", "app")],
        Some(user.clone()),
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let r = auth(
        &root,
        request::AUTH_CREATE_USER,
        &[("username", "app")],
        Some(user),
    );
    assert_eq!(
        (r.code, r.remark.as_deref()),
        (response::NO_PERMISSION, Some("The user is existed"))
    );
    let r = auth(&root, request::AUTH_GET_USER, &[("username", "app")], None);
    let got: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
    assert_eq!(got["userType"], "Normal");
    assert_eq!(got["userStatus"], "enable");
    let r = auth(&root, request::AUTH_LIST_USER, &[], None);
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&r.body_bytes())
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["app", "inner", "root"]);

    // Before any policy the user is authenticated but may do nothing.
    let before = rt
        .block_on(broker_state(&root.remoting, &addr, T))
        .unwrap()
        .max_offset;
    assert_eq!(
        refusal(rt.block_on(app.send("Orders", &q(&addr, 0), &[msg("early", 128)]))),
        (
            response::NO_PERMISSION,
            "User:app has no permission to access Topic:Orders from 127.0.0.1, no matched policies."
                .into()
        )
    );
    // Policies: PUB on Orders*, SUB on Audit and its group, Audit-secret denied.
    let acl = json!({"subject": "User:app", "policies": [{"policyType": "Custom", "entries": [
        {"resource": "Topic:Orders*", "actions": ["Pub"], "decision": "Allow"},
        {"resource": "Topic:Audit", "actions": ["Sub"], "decision": "Allow"},
        {"resource": "Group:readers", "actions": ["Sub"], "decision": "Allow", "sourceIps": ["127.0.0.0/8"]},
        {"resource": "Group:blocked", "actions": ["All"], "decision": "Deny"}
    ]}]});
    let r = auth(
        &root,
        request::AUTH_CREATE_ACL,
        &[("subject", "User:app")],
        Some(acl),
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let sent = rt
        .block_on(app.send("Orders", &q(&addr, 0), &[msg("o-1", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
    let after_one = rt
        .block_on(broker_state(&root.remoting, &addr, T))
        .unwrap()
        .max_offset;
    assert!(after_one > before);
    for (c, topic, want) in [
        (
            &app,
            "Audit",
            "User:app has no permission to access Topic:Audit from 127.0.0.1, no matched policies.",
        ),
        (&wrong, "Orders", "check signature failed."),
        (&ghost, "Orders", "User:ghost is not found."),
        (&stranger, "Orders", "username cannot be null."),
    ] {
        assert_eq!(
            refusal(rt.block_on(c.send(topic, &q(&addr, 0), &[msg("refused", 128)]))),
            (response::NO_PERMISSION, want.to_owned()),
            "{topic}"
        );
    }
    assert_eq!(
        rt.block_on(broker_state(&root.remoting, &addr, T))
            .unwrap()
            .max_offset,
        after_one,
        "a refused send stored something"
    );
    // Pulls need the topic's and the group's Sub.
    let pulled = rt
        .block_on(app.pull(&q(&addr, 0), "Audit", "readers", 0, 0))
        .unwrap();
    assert!(
        pulled.code == response::SUCCESS || pulled.code == response::PULL_NOT_FOUND,
        "{:?}",
        pulled.remark
    );
    let denied = rt
        .block_on(app.pull(&q(&addr, 0), "Audit", "blocked", 0, 0))
        .unwrap();
    assert_eq!(
        (denied.code, denied.remark.as_deref()),
        (response::NO_PERMISSION, Some("User:app has no permission to access Group:blocked from 127.0.0.1, the decision is deny."))
    );
    // Control-plane writes: a Normal user without Cluster Update is refused.
    let role = RemotingCommand::request(request::ROLE_CHANGE)
        .with_ext("role", "master")
        .with_ext("epoch", 99);
    let r = rt.block_on(app.remoting.invoke(&addr, role, T)).unwrap();
    assert_eq!(r.code, response::NO_PERMISSION, "{:?}", r.remark);
    assert_eq!(
        refusal(rt.block_on(app.create_topic("Orders2", 4))),
        (response::NO_PERMISSION, "User:app has no permission to access Topic:Orders2 from 127.0.0.1, no matched policies.".into())
    );
    let r = auth(
        &app,
        request::AUTH_CREATE_USER,
        &[("username", "evil")],
        Some(json!({"password": "x", "userType": "Super"})),
    );
    assert_eq!(r.code, response::NO_PERMISSION, "{:?}", r.remark);

    // A changed policy is in force on the next request (Audit gains Pub); a deleted
    // entry is gone (Orders* loses Pub).
    let more = json!({"subject": "User:app", "policies": [{"entries": [
        {"resource": "Topic:Audit", "actions": ["Pub", "Sub"], "decision": "Allow"}]}]});
    let r = auth(
        &root,
        request::AUTH_UPDATE_ACL,
        &[("subject", "User:app")],
        Some(more),
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        rt.block_on(app.send("Audit", &q(&addr, 0), &[msg("a-1", 128)]))
            .unwrap()
            .code,
        response::SUCCESS
    );
    let r = auth(
        &root,
        request::AUTH_DELETE_ACL,
        &[("subject", "User:app"), ("resource", "Topic:Orders*")],
        None,
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        refusal(rt.block_on(app.send("Orders", &q(&addr, 0), &[msg("o-2", 128)]))).0,
        response::NO_PERMISSION
    );
    let r = auth(
        &root,
        request::AUTH_GET_ACL,
        &[("subject", "User:app")],
        None,
    );
    let acl: serde_json::Value = serde_json::from_slice(&r.body_bytes()).unwrap();
    let resources: Vec<&str> = acl["policies"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["Topic:Audit", "Group:readers", "Group:blocked"]);

    // A disabled user is refused at once.
    let r = auth(
        &root,
        request::AUTH_UPDATE_USER,
        &[("username", "app")],
        Some(json!({"userStatus": "disable"})),
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        refusal(rt.block_on(app.send("Audit", &q(&addr, 0), &[msg("a-2", 128)]))),
        (response::NO_PERMISSION, "User:app is disabled.".into())
    );
    let r = auth(
        &root,
        request::AUTH_UPDATE_USER,
        &[("username", "app")],
        Some(json!({"userStatus": "enable"})),
    );
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);

    // Restart: users and policies are read back.
    assert!(broker.terminate());
    broker = kit.broker_in(
        None,
        &ns.addr,
        &dir.path().join("store"),
        ferrocket_testkit::Ports::of(&broker),
        &conf,
    );
    let addr = broker.addr.clone();
    wait_until(
        "the restarted broker answers",
        Duration::from_secs(10),
        || rt.block_on(broker_state(&root.remoting, &addr, T)).is_ok(),
    );
    assert_eq!(
        rt.block_on(app.send("Audit", &q(&addr, 0), &[msg("a-3", 128)]))
            .unwrap()
            .code,
        response::SUCCESS
    );
    assert_eq!(
        refusal(rt.block_on(app.send("Orders", &q(&addr, 0), &[msg("o-3", 128)]))).0,
        response::NO_PERMISSION
    );
}

#[test]
fn acl2_and_plain_acl_cannot_both_be_on_and_foreign_providers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain_acl.yml");
    std::fs::write(&file, ACL).unwrap();
    for (extra, want) in [
        (
            vec![
                "aclEnable=true".to_owned(),
                format!("aclFile={}", file.display()),
                "authenticationEnabled=true".to_owned(),
            ],
            "cannot both be on",
        ),
        (
            vec!["authenticationProvider=com.example.MyProvider".to_owned()],
            "only RocketMQ's default (local) providers are built",
        ),
        (
            vec!["migrateAuthFromV1Enabled=true".to_owned()],
            "not supported yet",
        ),
        (
            vec!["initAuthenticationUser={\"username\":\"root\"}".to_owned()],
            "needs non-empty",
        ),
    ] {
        let mut args = vec![
            "broker".to_owned(),
            "--set".to_owned(),
            format!("storePathRootDir={}", dir.path().join("s").display()),
            "--set".to_owned(),
            "listenPort=0".to_owned(),
        ];
        for e in &extra {
            args.push("--set".into());
            args.push(e.clone());
        }
        let (ok, out) = ferrocket_testkit::run_cli(BIN, &args);
        assert!(!ok, "{extra:?} started");
        assert!(out.contains(want), "{extra:?}: {out}");
    }
}

/// `ferrocket admin auth ...` (mqadmin's createUser ... deleteAcl) signed as the
/// Super user: a user and its policy made from the command line govern that user's
/// sends at once; an unsigned CLI is refused.
#[test]
fn acl2_admin_cli_manages_users_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::with_bin(BIN);
    let ns = kit.namesrv();
    let broker = kit.broker(
        &ns.addr,
        &dir.path().join("store"),
        &[
            "authenticationEnabled=true".into(),
            "authorizationEnabled=true".into(),
            r#"initAuthenticationUser={"username":"root","password":"root-secret-1"}"#.into(),
        ],
    );
    let rt = rt();
    let addr = broker.addr.clone();
    let root = client(&ns.addr, Some(("root", b"root-secret-1")));
    wait_until("the broker registers", Duration::from_secs(10), || {
        rt.block_on(root.cluster())
            .is_ok_and(|c| !c.broker_addr_table.is_empty())
    });
    rt.block_on(root.create_topic("CliOrders", 4)).unwrap();
    let root_secret = dir.path().join("root.secret");
    std::fs::write(&root_secret, "root-secret-1\n").unwrap();
    let app_secret = dir.path().join("app.secret");
    std::fs::write(&app_secret, "cli-secret-1\n").unwrap();
    let app_pw = app_secret.display().to_string();
    let cli = |args: &[&str]| admin_cli(&ns.addr, "root", &root_secret, args);

    let (ok, out) =
        ferrocket_testkit::run_cli(BIN, &["admin", "--namesrv", &ns.addr, "auth", "user-list"]);
    assert!(!ok && out.contains("username cannot be null."), "{out}");
    let (ok, out) = cli(&[
        "auth",
        "user-create",
        "--username",
        "cli-app",
        "--password-file",
        &app_pw,
    ]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&[
        "auth",
        "acl-create",
        "--subject",
        "User:cli-app",
        "--resources",
        "Topic:CliOrders",
        "--actions",
        "Pub",
        "--decision",
        "Allow",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["auth", "user-list", "--filter", "cli"]);
    assert!(
        ok && out.contains("\"cli-app\"") && out.contains("Normal"),
        "{out}"
    );
    let (ok, out) = cli(&["auth", "acl-get", "--subject", "User:cli-app"]);
    assert!(ok && out.contains("Topic:CliOrders"), "{out}");

    let app = client(&ns.addr, Some(("cli-app", b"cli-secret-1")));
    let sent = rt
        .block_on(app.send("CliOrders", &q(&addr, 0), &[msg("c-1", 128)]))
        .unwrap();
    assert_eq!(sent.code, response::SUCCESS);
    let (ok, out) = cli(&["auth", "acl-delete", "--subject", "User:cli-app"]);
    assert!(ok, "{out}");
    assert_eq!(
        refusal(rt.block_on(app.send("CliOrders", &q(&addr, 0), &[msg("c-2", 128)]))),
        (
            response::NO_PERMISSION,
            "User:cli-app has no permission to access Topic:CliOrders from 127.0.0.1, no matched policies."
                .into()
        )
    );
    let (ok, out) = cli(&["auth", "user-delete", "--username", "cli-app"]);
    assert!(ok, "{out}");
    assert_eq!(
        refusal(rt.block_on(app.send("CliOrders", &q(&addr, 0), &[msg("c-3", 128)]))),
        (response::NO_PERMISSION, "User:cli-app is not found.".into())
    );
}
