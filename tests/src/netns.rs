//! Throwaway network namespaces for tests: real mDNS on a private LAN ([`Netns`]) and the
//! NAT lab's hosts ([`Namespace`], see [`crate::natlab`]).
//!
//! A [`Netns`] holds one namespace with a veth pair whose ends are both inside it, one end
//! addressed and carrying the multicast route: p2pchat processes started in it discover each
//! other over mDNS exactly as on a LAN, and no packet leaves the namespace. Every namespace is
//! deleted on drop, whatever the test's outcome, and with it every interface inside it.

use std::fs::File;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, bail};

/// A named network namespace of its own (only a loopback, up), deleted on drop.
pub struct Namespace {
    name: String,
}

/// A network namespace for one mDNS test; see the module docs.
pub struct Netns {
    namespace: Namespace,
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

impl Namespace {
    /// Creates an empty namespace named `p2pchat-<pid>-<n>-<label>` (unique in this test run),
    /// with its loopback up.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("p2pchat-{}-{n}-{label}", std::process::id());
        ip(&["netns", "add", &name])?;
        let namespace = Self { name };
        namespace.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(namespace)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args`, failing with ip's stderr. Name every device with `name`/`dev`:
    /// ip takes a bare word that abbreviates one of its keywords (`br` for `broadcast`) as that.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        ip(&all)
    }

    /// Runs `program args` inside the namespace and returns its stdout, failing with its
    /// stderr if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{program} {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `task` on a new thread that has entered the namespace, so every socket it opens
    /// lives there (a network namespace is per thread: the rest of the test is unaffected).
    pub fn spawn<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let handle = File::open(&path).with_context(|| format!("opening {path}"))?;
        let name = self.name.clone();
        Ok(std::thread::spawn(move || {
            // SAFETY: setns only reads the descriptor, which `handle` keeps open for the call.
            let entered = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            if entered != 0 {
                bail!(
                    "cannot enter namespace {name}: {}",
                    std::io::Error::last_os_error()
                );
            }
            task()
        }))
    }

    /// [`Namespace::spawn`], then waits for `task`'s result.
    pub fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        join(self.spawn(task)?)
    }
}

/// The result of a thread started by [`Namespace::spawn`] (a panic in it becomes an error).
pub fn join<T>(thread: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("a thread inside a namespace panicked"))?
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

impl Netns {
    /// Creates a namespace with a veth pair, an address and a multicast route.
    pub fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = Self {
            namespace: Namespace::new("lan")?,
        };
        let subnet = format!("10.213.{}.1/24", n % 250);
        netns.ip(&[
            "link", "add", "name", "va", "type", "veth", "peer", "name", "vb",
        ])?;
        netns.ip(&["addr", "add", &subnet, "dev", "va"])?;
        netns.ip(&["link", "set", "dev", "va", "up"])?;
        netns.ip(&["link", "set", "dev", "vb", "up"])?;
        netns.ip(&["route", "add", "224.0.0.0/4", "dev", "va"])?;
        Ok(netns)
    }

    /// Established TCP connections inside the namespace between the processes listening on
    /// `port_a` and `port_b`. libp2p dials from its listening port, so each connection is one
    /// socket with local port `port_a` and peer port `port_b` (and its mirror image).
    pub fn connections_between(&self, port_a: u16, port_b: u16) -> anyhow::Result<usize> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.name(),
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

impl Deref for Netns {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}
