//! The test kit every suite shares: real `ferrocket` processes on ports the OS picks
//! (each prints `ready <role> <addr>`, brokers add `ha=<addr>`; nothing binds a port to
//! learn it is free and hands it on), a master with slaves started and connected in one
//! call, waiting on conditions with a deadline, and skips that show in the test output.
//!
//! The `ferrocket` binary is `FERROCKET_BIN` when set (a broker test passes
//! `env!("CARGO_BIN_EXE_ferrocket")` through [`Kit::with_bin`]), otherwise the one
//! `cargo test --workspace` built next to the test binary.

pub mod net;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocket::client::role::{broker_state, BrokerState};
use ferrocket::remoting::RemotingClient;

/// Where the `ferrocket` binary is: `FERROCKET_BIN`, or `target/<profile>/ferrocket`
/// next to the running test (built when missing).
#[must_use]
pub fn ferrocket_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCKET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("ferrocket");
    if !bin.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "ferrocket", "--bin", "ferrocket"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building ferrocket failed");
    }
    bin
}

/// A loopback port nothing listens on right now. Only for ports whose number a test
/// must choose itself — the VIP channel (`listenPort − 2`) and `metricsPort` (which 0
/// turns off); every other port is picked by the OS at bind time and read back.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The CommitLog bytes of the store in `dir`, `[0, len)` (to compare replicas byte for
/// byte).
///
/// # Panics
/// When the CommitLog directory cannot be read.
#[must_use]
pub fn commitlog_bytes(dir: &Path, len: u64) -> Vec<u8> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("commitlog"))
        .expect("a CommitLog directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Some(start) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if start >= len {
            break;
        }
        let bytes = std::fs::read(&f).expect("a readable CommitLog segment");
        let take = (len - start).min(bytes.len() as u64) as usize;
        out.extend_from_slice(&bytes[..take]);
    }
    out
}

/// A message whose body is `<id>|` padded with `x` to `size` bytes, keyed `id` (the
/// fault tests' acknowledged-message checker reads the id back with [`id_of`]).
#[must_use]
pub fn tagged_message(id: &str, size: usize) -> ferrocket::client::OutMessage {
    let mut body = id.as_bytes().to_vec();
    body.push(b'|');
    body.resize(size.max(id.len() + 1), b'x');
    ferrocket::client::OutMessage {
        tag: None,
        keys: Some(id.to_string()),
        body: body.into(),
    }
}

/// Every [`tagged_message`] id in queues `0..queues` of `topic`, per queue in queue
/// order, pulled from offset 0 (group `checker`) from the broker `queue` names.
///
/// # Panics
/// When a pull fails or a record does not decode.
pub async fn consume_ids(
    c: &ferrocket::client::Client,
    queue: impl Fn(i32) -> ferrocket::client::QueueAddr,
    topic: &str,
    queues: i32,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for q in 0..queues {
        let mut ids = Vec::new();
        let mut offset = 0i64;
        loop {
            let r = c
                .pull(&queue(q), topic, "checker", offset, 0)
                .await
                .expect("pull");
            if r.code != ferrocket::remoting::codes::response::SUCCESS {
                // Below the queue's oldest entry (retention deleted the start): on from
                // where the broker says it begins.
                match r.ext_num::<i64>("nextBeginOffset") {
                    Ok(next) if next > offset => {
                        offset = next;
                        continue;
                    }
                    _ => break,
                }
            }
            let recs = ferrocket::client::split_records(r.body_bytes());
            if recs.is_empty() {
                break;
            }
            for rec in &recs {
                ids.push(id_of(
                    &ferrocket::store::decode_record(rec).expect("a record").body,
                ));
            }
            offset = r.ext_num("nextBeginOffset").expect("nextBeginOffset");
        }
        out.push(ids);
    }
    out
}

/// Runs `bin` with `args` to its end: whether it succeeded, and its stdout then
/// stderr (a CLI call in a test).
///
/// # Panics
/// When `bin` cannot be started.
#[must_use]
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(bin: &str, args: &[S]) -> (bool, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .expect("the binary starts");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The id at the start of a [`tagged_message`] body.
#[must_use]
pub fn id_of(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == b'|').unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Says, in the test output, that a test (or part of one) did not run and why. Written
/// to the process's stderr directly, past the test harness's capture, so it shows in
/// every run (CI's included), not only when the test fails.
pub fn skip(test: &str, why: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIPPED {test}: {why}");
}

/// Everything `s` receives until the peer closes it (or its read timeout passes): what
/// a stranger on a guarded port is given.
pub fn read_until_closed(s: &mut impl std::io::Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Waits until `f` holds, checking every 50 ms; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_until`] for async conditions.
pub async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running ferrocket process, killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The address of its ready line.
    pub addr: String,
    /// The role of its ready line (`namesrv`, `master`, `slave`).
    pub role: String,
    /// A broker's HA address (`ha=` in its ready line).
    pub ha_addr: Option<String>,
    /// A broker's store directory.
    pub dir: PathBuf,
}

impl Proc {
    /// Starts `bin ARGS...` (inside network namespace `netns` when given: `ip netns exec`
    /// execs it, so the child is ferrocket itself and `kill -9` reaches it) and waits for
    /// its ready line.
    ///
    /// # Panics
    /// When it cannot start or exits before its ready line.
    #[must_use]
    pub fn spawn_in(bin: &Path, netns: Option<&str>, args: &[String]) -> Proc {
        let mut cmd = match netns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(args)
            .env(
                "FERROCKET_LOG",
                std::env::var("FERROCKET_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferrocket");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines
            .next()
            .expect("ferrocket exited before its ready line")
            .expect("read ready line");
        assert!(line.starts_with("ready "), "unexpected first line: {line}");
        let mut words = line.split_whitespace().skip(1);
        let role = words.next().unwrap_or_default().to_owned();
        let addr = words.next().unwrap_or_default().to_owned();
        let ha_addr = words.find_map(|w| w.strip_prefix("ha=")).map(str::to_owned);
        Proc {
            child,
            addr,
            role,
            ha_addr,
            dir: PathBuf::new(),
        }
    }

    /// `ferrocket ARGS...` of [`ferrocket_bin`], waiting for its ready line.
    #[must_use]
    pub fn spawn(args: &[String]) -> Proc {
        Proc::spawn_in(&ferrocket_bin(), None, args)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of its address.
    #[must_use]
    pub fn port(&self) -> u16 {
        port_of(&self.addr)
    }

    /// The port of its HA address (0 for a name server).
    #[must_use]
    pub fn ha_port(&self) -> u16 {
        self.ha_addr.as_deref().map_or(0, port_of)
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM and wait; whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Starts processes of one `ferrocket` binary with a suite's broker defaults.
#[derive(Debug, Clone)]
pub struct Kit {
    bin: PathBuf,
    /// `key=value` settings every broker of this kit gets (before its own).
    pub broker_defaults: Vec<String>,
}

impl Default for Kit {
    fn default() -> Self {
        Kit::with_bin(ferrocket_bin())
    }
}

impl Kit {
    /// A kit for `bin`, with the defaults every suite needs: loopback address and RocketMQ's
    /// disk marks lifted (a shared test disk's fill level must not change what a test
    /// observes).
    #[must_use]
    pub fn with_bin(bin: impl Into<PathBuf>) -> Kit {
        Kit {
            bin: bin.into(),
            broker_defaults: vec![
                "brokerIP1=127.0.0.1".into(),
                "diskSpaceCleanForciblyRatio=100".into(),
                "diskSpaceWarningLevelRatio=100".into(),
            ],
        }
    }

    /// The same kit with more broker defaults.
    #[must_use]
    pub fn defaults(mut self, extra: &[&str]) -> Kit {
        self.broker_defaults
            .extend(extra.iter().map(|s| (*s).to_owned()));
        self
    }

    /// The binary.
    #[must_use]
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `ferrocket ARGS...`, waiting for its ready line.
    #[must_use]
    pub fn spawn(&self, args: &[String]) -> Proc {
        Proc::spawn_in(&self.bin, None, args)
    }

    /// A name server on a port the OS picks.
    #[must_use]
    pub fn namesrv(&self) -> Proc {
        self.spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()])
    }

    /// The arguments of `ferrocket broker` on store `dir`: client and HA ports as given
    /// (0: the OS picks), the kit's defaults, then `extra`.
    #[must_use]
    pub fn broker_args(&self, ns: &str, dir: &Path, ports: Ports, extra: &[String]) -> Vec<String> {
        let mut args = vec!["broker".to_string()];
        let sets = [
            format!("namesrvAddr={ns}"),
            format!("listenPort={}", ports.client),
            format!("haListenPort={}", ports.ha),
            format!("storePathRootDir={}", dir.display()),
        ]
        .into_iter()
        .chain(self.broker_defaults.iter().cloned())
        .chain(extra.iter().cloned());
        for kv in sets {
            args.push("--set".into());
            args.push(kv);
        }
        args
    }

    /// A broker on store `dir` (inside `netns` when given).
    #[must_use]
    pub fn broker_in(
        &self,
        netns: Option<&str>,
        ns: &str,
        dir: &Path,
        ports: Ports,
        extra: &[String],
    ) -> Proc {
        let mut p = Proc::spawn_in(&self.bin, netns, &self.broker_args(ns, dir, ports, extra));
        p.dir = dir.to_path_buf();
        p
    }

    /// A broker on store `dir`, on ports the OS picks.
    #[must_use]
    pub fn broker(&self, ns: &str, dir: &Path, extra: &[String]) -> Proc {
        self.broker_in(None, ns, dir, Ports::ANY, extra)
    }

    /// A master (`role`: `SYNC_MASTER` or `ASYNC_MASTER`, epoch 1) and `slaves` slaves of
    /// it (ids 1.., epoch 1), each on its own store under `root`, started and connected:
    /// returns once the master reports every slave on its HA port.
    ///
    /// # Panics
    /// When the slaves do not connect within 20 s.
    #[must_use]
    pub fn replicas(
        &self,
        ns: &str,
        root: &Path,
        role: &str,
        slaves: usize,
        master_extra: &[String],
    ) -> Replicas {
        let mut extra = vec![
            format!("brokerRole={role}"),
            "brokerId=0".into(),
            "roleEpoch=1".into(),
        ];
        extra.extend(master_extra.iter().cloned());
        let master = self.broker(ns, &root.join("m"), &extra);
        let ha = master
            .ha_addr
            .clone()
            .expect("a broker's ready line names its HA address");
        let slaves: Vec<Proc> = (1..=slaves)
            .map(|id| self.slave(ns, &root.join(format!("s{id}")), id as i64, 1, &ha, role))
            .collect();
        let group = Replicas { master, slaves };
        group.wait_connected(Duration::from_secs(20));
        group
    }

    /// A slave `id` at `epoch` following the master whose HA address is `master_ha`;
    /// `master_role` is the role a promotion gives it.
    #[must_use]
    pub fn slave(
        &self,
        ns: &str,
        dir: &Path,
        id: i64,
        epoch: i64,
        master_ha: &str,
        master_role: &str,
    ) -> Proc {
        self.broker(
            ns,
            dir,
            &[
                "brokerRole=SLAVE".into(),
                format!("brokerId={id}"),
                format!("roleEpoch={epoch}"),
                format!("haMasterAddress={master_ha}"),
                format!("masterRole={master_role}"),
            ],
        )
    }
}

/// A broker's client and HA ports; 0 lets the OS pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// `listenPort`.
    pub client: u16,
    /// `haListenPort`.
    pub ha: u16,
}

impl Ports {
    /// Both picked by the OS.
    pub const ANY: Ports = Ports { client: 0, ha: 0 };

    /// The ports `p` listened on (to restart it where it was).
    #[must_use]
    pub fn of(p: &Proc) -> Ports {
        Ports {
            client: p.port(),
            ha: p.ha_port(),
        }
    }
}

/// A master and its slaves.
#[derive(Debug)]
pub struct Replicas {
    /// The master.
    pub master: Proc,
    /// The slaves, ids 1, 2, ...
    pub slaves: Vec<Proc>,
}

impl Replicas {
    /// Waits until the master reports every slave connected.
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_connected(&self, limit: Duration) {
        let want = self.slaves.len();
        let addr = self.master.addr.clone();
        wait_until(
            &format!("{want} slaves connected to {addr} and in its in-sync set"),
            limit,
            || {
                state(&addr)
                    .is_some_and(|s| s.ha_connections == want as u64 && s.in_sync.len() == want)
            },
        );
    }
}

/// A broker's role, epoch and offsets (`GET_BROKER_RUNTIME_INFO`), or `None` when it
/// does not answer within 5 s.
#[must_use]
pub fn state(addr: &str) -> Option<BrokerState> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        broker_state(&RemotingClient::new(), addr, Duration::from_secs(5))
            .await
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_addresses() {
        assert_eq!(port_of("127.0.0.1:10911"), 10911);
        assert_eq!(port_of("[::1]:9"), 9);
        assert_eq!(port_of("nonsense"), 0);
    }

    #[test]
    fn wait_until_returns_once_true_and_names_what_timed_out() {
        let mut n = 0;
        wait_until("a counter", Duration::from_secs(5), || {
            n += 1;
            n > 2
        });
        assert_eq!(n, 3);
        let r = std::panic::catch_unwind(|| {
            wait_until("the impossible", Duration::from_millis(60), || false)
        });
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("the impossible"), "{msg}");
    }
}
