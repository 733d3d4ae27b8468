//! Network faults between processes on this machine: network namespaces joined by a
//! bridge, one per member, so a member can be cut off from everyone (its link down)
//! while its process keeps running. Needs root and iproute2; `create` says why not.

use std::process::Command;

/// Runs `ip ARGS`; the error names the command and what it printed.
///
/// # Errors
/// `ip` missing or failing.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridge on the host with `n` network namespaces attached, each by its own veth:
/// namespace `i` has address `ns_ip(i)`, the host `host_ip` (/24). Members reach each
/// other and the host through the bridge (no IP forwarding); [`Bridge::set_link`] cuts
/// one member off from all of them. Everything is removed on drop.
#[derive(Debug)]
pub struct Bridge {
    name: String,
    /// The host's address on the bridge (what members use to reach host processes
    /// listening on 0.0.0.0).
    pub host_ip: String,
    prefix: String,
    namespaces: Vec<String>,
    host_ends: Vec<String>,
}

impl Bridge {
    /// Creates the bridge and `n` namespaces, or says why it cannot (not root, no
    /// iproute2, no namespaces).
    ///
    /// # Errors
    /// The first `ip` command that failed.
    pub fn create(n: usize) -> Result<Bridge, String> {
        // Several bridges in one test process (tests run in parallel) get their own
        // names and subnets.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let pid = std::process::id() % 100_000;
        let tag = format!("{pid}{k}");
        let prefix = format!("10.{}.{}", 214 + k, pid % 250);
        let name = format!("frb{tag}");
        // Made first: a bridge of that name that is not ours is never removed.
        ip(&["link", "add", &name, "type", "bridge"])?;
        // From here on, Drop removes whatever was made.
        let mut b = Bridge {
            name,
            host_ip: format!("{prefix}.1"),
            prefix,
            namespaces: Vec::new(),
            host_ends: Vec::new(),
        };
        ip(&["addr", "add", &format!("{}/24", b.host_ip), "dev", &b.name])?;
        ip(&["link", "set", &b.name, "up"])?;
        for i in 0..n {
            let ns = format!("fr-{tag}-{i}");
            let host_end = format!("frv{tag}x{i}");
            let inner = format!("frp{tag}x{i}");
            ip(&["netns", "add", &ns])?;
            b.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner,
            ])?;
            b.host_ends.push(host_end.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &b.name])?;
            ip(&["link", "set", &host_end, "up"])?;
            let inside = |a: &[&str]| {
                let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
                v.extend_from_slice(a);
                ip(&v)
            };
            inside(&["addr", "add", &format!("{}/24", b.ns_ip(i)), "dev", &inner])?;
            inside(&["link", "set", &inner, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(b)
    }

    /// Namespace `i`'s name (for `ip netns exec`).
    #[must_use]
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Namespace `i`'s address.
    #[must_use]
    pub fn ns_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// Takes member `i`'s link down (every packet to and from it is dropped) or up.
    ///
    /// # Errors
    /// The `ip` command failed.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        ip(&[
            "link",
            "set",
            &self.host_ends[i],
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for end in &self.host_ends {
            let _ = ip(&["link", "del", end]);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.name]);
    }
}
