//! A NAT lab in network namespaces: "the internet" and two homes behind routers that
//! masquerade, as most people's machines are.
//!
//! ```text
//!                 internet (bridge "internet", 198.51.100.1 and .2/24: the relay's host)
//!                 /                                   \
//!   router1: wan 198.51.100.11                 router2: wan 198.51.100.12
//!            lan 10.1.0.1/24                            lan 10.2.0.1/24
//!                 |                                   |
//!   home1:   eth0 10.1.0.2 (alice)             home2: eth0 10.2.0.2 (bob)
//! ```
//!
//! Each router forwards from its home to the internet, rewriting the source to its own
//! address (nftables `masquerade`), and drops whatever comes from outside unless it belongs to
//! a flow its home started (`ct state established,related`), in its forward chain and in its
//! input chain alike. The internet routes the homes' private subnets to their routers, so what
//! keeps the outside out is the routers' firewall, not a missing route.
//!
//! What hole punching needs from such a NAT, and the lab therefore keeps as real home routers
//! do:
//! - **A source port kept from one destination to the next** (plain `masquerade` keeps the
//!   port whenever it is free): the address the relay observes is then the one the other peer
//!   must dial. [`Nat::Random`] (`masquerade random`) picks a new port per flow, which defeats
//!   it: peers behind it stay relayed.
//! - **Unsolicited packets dropped, not refused.** The two peers' first packets cross: the one
//!   that reaches the other router before its own peer's packet has left finds no flow there.
//!   A router that answered it (a TCP RST, an ICMP port unreachable) would tear down the
//!   attempt on the sender's side; dropping it, as the input chain's policy does, lets the
//!   retransmission through once both flows exist (TCP simultaneous open, or QUIC's UDP).
//!   Measured: with the input chain accepting instead (the router's kernel then refuses), the
//!   hole punch of `nat.rs` failed in 3 runs of 3; with it dropping, it succeeds within seconds.
//! - Nothing else: the kernel's default conntrack timeouts (UDP 30 s unanswered, 120 s once
//!   answered; TCP established for days) outlast every test.
//!
//! Nothing of the lab is in the host's namespace: each device is created inside the namespace
//! it belongs to (a veth pair's far end directly in its peer's namespace), so device names
//! need only be unique within their namespace, and every namespace name is unique to the test
//! run (see [`Namespace::new`]). Dropping the lab deletes its namespaces, and with them every
//! device, address, route and rule, also when a test fails or panics.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::{Namespace, join};

/// The relay's address on the internet (on the bridge of the `internet` namespace).
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A second address of the internet namespace, for probes that need two destinations.
pub const SECOND_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// How long a probe waits for a packet or a connection before calling it blocked.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// How the routers translate their homes' source addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: the source port is kept when free, so hole punching works.
    PortPreserving,
    /// `masquerade random`: a fresh port for every flow, which defeats hole punching.
    Random,
}

/// One home: a router namespace between the internet and a home namespace with one host.
pub struct Home {
    /// The router: masquerades the home, firewalls the outside.
    pub router: Namespace,
    /// The home's one host, where a user's `p2pchat` runs.
    pub host: Namespace,
    /// The router's address on the internet: every flow of the home seems to come from it.
    pub public_ip: Ipv4Addr,
    /// The host's address in the home.
    pub private_ip: Ipv4Addr,
}

/// The lab: an internet and two homes behind NATs (see the module docs).
pub struct NatLab {
    /// The internet, where the relay runs (on [`RELAY_IP`]).
    pub internet: Namespace,
    /// Home 1 (10.1.0.0/24, router 198.51.100.11) and home 2 (10.2.0.0/24, router .12).
    pub homes: [Home; 2],
}

impl NatLab {
    /// Builds the lab with routers of the given kind.
    pub fn new(nat: Nat) -> anyhow::Result<Self> {
        let internet = Namespace::new("internet")?;
        internet.ip(&["link", "add", "name", "internet", "type", "bridge"])?;
        for ip in [RELAY_IP, SECOND_IP] {
            internet.ip(&["addr", "add", &format!("{ip}/24"), "dev", "internet"])?;
        }
        internet.ip(&["link", "set", "dev", "internet", "up"])?;
        let homes = [Home::new(&internet, 1, nat)?, Home::new(&internet, 2, nat)?];
        for (k, home) in (1..).zip(&homes) {
            let subnet = format!("10.{k}.0.0/24");
            let via = home.public_ip.to_string();
            internet.ip(&["route", "add", &subnet, "via", &via])?;
        }
        Ok(Self { internet, homes })
    }
}

impl Home {
    /// Builds home `k` (1 or 2) and plugs its router into the internet's bridge.
    fn new(internet: &Namespace, k: u8, nat: Nat) -> anyhow::Result<Self> {
        let home = Self {
            router: Namespace::new(&format!("router{k}"))?,
            host: Namespace::new(&format!("home{k}"))?,
            public_ip: Ipv4Addr::new(198, 51, 100, 10 + k),
            private_ip: Ipv4Addr::new(10, k, 0, 2),
        };
        let (router, host) = (&home.router, &home.host);
        let port = format!("router{k}");
        router.ip(&[
            "link",
            "add",
            "name",
            "wan",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            internet.name(),
        ])?;
        internet.ip(&["link", "set", "dev", &port, "master", "internet", "up"])?;
        router.ip(&[
            "addr",
            "add",
            &format!("{}/24", home.public_ip),
            "dev",
            "wan",
        ])?;
        router.ip(&["link", "set", "dev", "wan", "up"])?;
        router.ip(&[
            "link",
            "add",
            "name",
            "lan",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ])?;
        router.ip(&["addr", "add", &format!("10.{k}.0.1/24"), "dev", "lan"])?;
        router.ip(&["link", "set", "dev", "lan", "up"])?;
        host.ip(&[
            "addr",
            "add",
            &format!("{}/24", home.private_ip),
            "dev",
            "eth0",
        ])?;
        host.ip(&["link", "set", "dev", "eth0", "up"])?;
        host.ip(&["route", "add", "default", "via", &format!("10.{k}.0.1")])?;
        // Through `ip netns exec` so that it is the router's /proc/sys/net, never the host's.
        router.exec("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        router.exec("nft", &[&ruleset(nat)])?;
        Ok(home)
    }

    /// The router's conntrack entries (as in /proc/net/nf_conntrack) of flows between this
    /// home's host and `remote`.
    pub fn flows_with(&self, remote: Ipv4Addr) -> anyhow::Result<Vec<String>> {
        let table = self.router.exec("cat", &["/proc/net/nf_conntrack"])?;
        let (src, dst) = (
            format!(" src={} ", self.private_ip),
            format!(" dst={remote} "),
        );
        Ok(table
            .lines()
            .filter(|line| line.contains(&src) && line.contains(&dst))
            .map(str::to_owned)
            .collect())
    }
}

/// The router's nftables ruleset: masquerade out of `wan`, and from outside only replies.
fn ruleset(nat: Nat) -> String {
    let masquerade = match nat {
        Nat::PortPreserving => "masquerade",
        Nat::Random => "masquerade random",
    };
    format!(
        r#"
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
}}
table inet filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname {{ "lo", "lan" }} accept
    }}
}}
"#
    )
}

/// Where the first datagram sent from `from` (a UDP socket on `local_port`, 0 for any) to
/// each of `targets` (listening in `to`) comes from as seen there, in order: `None` where none
/// arrived within `PROBE_WAIT` (2 s). Also returns the local port used.
pub fn udp_sources(
    from: &Namespace,
    local_port: u16,
    to: &Namespace,
    targets: &[SocketAddrV4],
) -> anyhow::Result<(u16, Vec<Option<SocketAddrV4>>)> {
    // Bound before anything is sent; a socket keeps the namespace it was made in, so the
    // threads that wait on them need none.
    let listeners: Vec<_> = targets
        .iter()
        .map(|target| {
            let target = *target;
            let socket = to.run(move || {
                let socket = UdpSocket::bind(target)
                    .with_context(|| format!("binding UDP {target} for a probe"))?;
                socket.set_read_timeout(Some(PROBE_WAIT))?;
                Ok(socket)
            })?;
            Ok(std::thread::spawn(move || {
                let mut buf = [0; 64];
                match socket.recv_from(&mut buf) {
                    Ok((_, std::net::SocketAddr::V4(source))) => Ok(Some(source)),
                    Ok((_, other)) => bail!("a datagram from {other}"),
                    Err(e) if is_timeout(&e) => Ok(None),
                    Err(e) => Err(e).context("receiving a probe"),
                }
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let targets = targets.to_vec();
    let local = from.run(move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, local_port))?;
        for target in &targets {
            socket.send_to(b"probe", target)?;
        }
        Ok(socket.local_addr()?.port())
    })?;
    let seen = listeners
        .into_iter()
        .map(join)
        .collect::<anyhow::Result<_>>()?;
    Ok((local, seen))
}

/// Connects over TCP from `from` to `target` (listening in `to`): the source address the
/// listener saw and the connection's local port on the connecting side, or `None` if it could
/// not connect within `PROBE_WAIT` (2 s).
pub fn tcp_source(
    from: &Namespace,
    to: &Namespace,
    target: SocketAddrV4,
) -> anyhow::Result<Option<(SocketAddrV4, u16)>> {
    let listener = to.run(move || {
        let listener = TcpListener::bind(target)
            .with_context(|| format!("binding TCP {target} for a probe"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    let accepting = std::thread::spawn(move || -> anyhow::Result<Option<SocketAddrV4>> {
        let deadline = Instant::now() + PROBE_WAIT;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((_, std::net::SocketAddr::V4(source))) => return Ok(Some(source)),
                Ok((_, other)) => bail!("a connection from {other}"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("accepting a probe"),
            }
        }
        Ok(None)
    });
    let local_port = from.run(move || {
        Ok(
            match TcpStream::connect_timeout(&target.into(), PROBE_WAIT) {
                Ok(stream) => Some(stream.local_addr()?.port()),
                Err(_) => None,
            },
        )
    })?;
    let seen = join(accepting)?;
    Ok(match (seen, local_port) {
        (Some(seen), Some(port)) => Some((seen, port)),
        (None, None) => None,
        (seen, port) => bail!("a TCP probe half made: accepted {seen:?}, connected {port:?}"),
    })
}

/// A UDP hole punch between the two homes' hosts, as a pair of peers would do it after
/// learning each other's public address from a relay: each binds `port`, sends to the other's
/// router on `port` a few times and waits for the other's datagram. Whether each side heard
/// the other.
pub fn udp_hole_punch(lab: &NatLab, port: u16) -> anyhow::Result<[bool; 2]> {
    let [one, two] = &lab.homes;
    let punch = |home: &Home, other: &Home| {
        let target = SocketAddrV4::new(other.public_ip, port);
        home.host.spawn(move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let deadline = Instant::now() + PROBE_WAIT;
            let mut buf = [0; 64];
            while Instant::now() < deadline {
                socket.send_to(b"punch", target)?;
                match socket.recv_from(&mut buf) {
                    Ok(_) => {
                        // Answer once more so the other side hears us even if it started late.
                        socket.send_to(b"punch", target)?;
                        return Ok(true);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e).context("receiving a punch"),
                }
            }
            Ok(false)
        })
    };
    let (a, b) = (punch(one, two)?, punch(two, one)?);
    Ok([join(a)?, join(b)?])
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
