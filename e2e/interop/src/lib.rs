//! Fixture for the interop suite: starts real `ferrocket namesrv` and `ferrocket broker`
//! processes on free loopback ports (each prints `ready <role> <addr>`), and stops them
//! on drop. The `ferrocket` binary is the one `cargo test --workspace` built next to
//! this test binary; set `FERROCKET_BIN` to use another.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where the `ferrocket` binary is.
pub fn ferrocket_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCKET_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/ferrocket
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

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running ferrocket process.
pub struct Proc {
    child: Child,
    /// The address it printed in its ready line.
    pub addr: String,
    /// The role it printed in its ready line (`namesrv`, `master`, `slave`).
    pub role: String,
}

impl Proc {
    /// Starts `ferrocket ARGS...` and waits for its ready line.
    pub fn spawn(args: &[String]) -> Proc {
        let mut child = Command::new(ferrocket_bin())
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
        Proc { child, addr, role }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A name server plus one broker over a temporary store.
pub struct Cluster {
    /// The name server.
    pub namesrv: Proc,
    /// The broker.
    pub broker: Proc,
    /// The broker's store directory.
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Cluster {
    /// Starts both; `extra` are broker `key=value` settings.
    pub fn start(extra: &[&str]) -> Cluster {
        let namesrv = Proc::spawn(&["namesrv".into(), "--listen".into(), "127.0.0.1:0".into()]);
        let dir = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let broker = Proc::spawn(&broker_args(&namesrv.addr, dir.path(), None, &extra));
        Cluster {
            namesrv,
            broker,
            dir,
            extra,
        }
    }

    /// Restarts the broker on the same port and store (after `kill9` or `terminate`).
    pub fn restart_broker(&mut self) {
        let port = self
            .broker
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok());
        self.broker = Proc::spawn(&broker_args(
            &self.namesrv.addr,
            self.dir.path(),
            port,
            &self.extra,
        ));
    }
}

/// The arguments of `ferrocket broker` for a store in `dir` (`extra` are `key=value`).
pub fn broker_args(ns: &str, dir: &Path, port: Option<u16>, extra: &[String]) -> Vec<String> {
    let mut sets = vec![
        format!("namesrvAddr={ns}"),
        format!("listenPort={}", port.unwrap_or(0)),
        format!("storePathRootDir={}", dir.display()),
        "brokerIP1=127.0.0.1".to_string(),
        "mappedFileSizeCommitLog=67108864".to_string(),
        // The test machine's disk may be fuller than RocketMQ's 85 % / 90 % marks, past
        // which a broker deletes old files early and refuses new CommitLog segments.
        "diskSpaceCleanForciblyRatio=100".to_string(),
        "diskSpaceWarningLevelRatio=100".to_string(),
    ];
    sets.extend(extra.iter().cloned());
    let mut args = vec!["broker".to_string()];
    for s in sets {
        args.push("--set".into());
        args.push(s);
    }
    args
}
