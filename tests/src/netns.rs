//! Throwaway network namespaces for tests that need real mDNS.
//!
//! A [`Netns`] holds one namespace with a veth pair whose ends are both inside it, one end
//! addressed and carrying the multicast route: p2pchat processes started in it discover each
//! other over mDNS exactly as on a LAN, and no packet leaves the namespace. It is deleted on
//! drop, whatever the test's outcome.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A network namespace for one test; see the module docs.
pub struct Netns {
    name: String,
}

/// Why namespace tests cannot run here, if they cannot (not root, or no `ip` command).
pub fn unavailable() -> Option<String> {
    let id = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&id.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

/// Runs a namespace test body only where namespaces can be made. In CI (`CI=true`) a missing
/// capability fails the test; elsewhere it skips with the reason printed.
pub fn skip_unless_available() -> anyhow::Result<bool> {
    match unavailable() {
        None => Ok(false),
        Some(reason) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            bail!("network namespace tests must run in CI, but {reason}")
        }
        Some(reason) => {
            eprintln!("skipping network namespace test: {reason}");
            Ok(true)
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates a namespace with a veth pair, an address and a multicast route.
    pub fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("p2pchat-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let netns = Self { name };
        let ns = netns.name.as_str();
        let subnet = format!("10.213.{}.1/24", n % 250);
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ])?;
        ip(&["-n", ns, "addr", "add", &subnet, "dev", "va"])?;
        ip(&["-n", ns, "link", "set", "va", "up"])?;
        ip(&["-n", ns, "link", "set", "vb", "up"])?;
        ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "va"])?;
        Ok(netns)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Established TCP connections inside the namespace between the processes listening on
    /// `port_a` and `port_b`. libp2p dials from its listening port, so each connection is one
    /// socket with local port `port_a` and peer port `port_b` (and its mirror image).
    pub fn connections_between(&self, port_a: u16, port_b: u16) -> anyhow::Result<usize> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ss",
                "-Htn",
                "state",
                "established",
            ])
            .output()
            .context("running ss")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let port = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        Ok(text
            .lines()
            .filter(|line| {
                let mut columns = line.split_whitespace().skip(2);
                let (local, peer) = (columns.next().and_then(port), columns.next().and_then(port));
                local == Some(port_a) && peer == Some(port_b)
            })
            .count())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
