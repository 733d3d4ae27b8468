//! Fixture for the interop suite, on the shared test kit (`ferrocket-testkit`): real
//! `ferrocket namesrv` and `ferrocket broker` processes on ports the OS picks, stopped
//! on drop. The `ferrocket` binary is the one `cargo test --workspace` built next to this
//! test binary; set `FERROCKET_BIN` to use another.

use std::path::Path;

pub use ferrocket_testkit::{
    ferrocket_bin, free_port, skip, wait_until, wait_until_async, Kit, Ports, Proc, Replicas,
};

/// The kit with this suite's broker defaults (64 MiB segments).
#[must_use]
pub fn kit() -> Kit {
    Kit::default().defaults(&["mappedFileSizeCommitLog=67108864"])
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
    #[must_use]
    pub fn start(extra: &[&str]) -> Cluster {
        let namesrv = kit().namesrv();
        let dir = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let broker = kit().broker(&namesrv.addr, dir.path(), &extra);
        Cluster {
            namesrv,
            broker,
            dir,
            extra,
        }
    }

    /// Restarts the broker on the same ports and store (after `kill9` or `terminate`).
    pub fn restart_broker(&mut self) {
        let ports = Ports::of(&self.broker);
        self.broker = kit().broker_in(
            None,
            &self.namesrv.addr,
            self.dir.path(),
            ports,
            &self.extra,
        );
    }
}

/// The arguments of `ferrocket broker` for a store in `dir` (`extra` are `key=value`),
/// on `port` (the OS picks when `None`) and an HA port the OS picks.
#[must_use]
pub fn broker_args(ns: &str, dir: &Path, port: Option<u16>, extra: &[String]) -> Vec<String> {
    kit().broker_args(
        ns,
        dir,
        Ports {
            client: port.unwrap_or(0),
            ha: 0,
        },
        extra,
    )
}
