//! Beyond the LAN, in the NAT lab (`p2pchat_tests::natlab`): alice and bob behind two home
//! routers that masquerade, a relay on "the internet". Needs root, iproute2 and nftables: in
//! CI (`CI=true`) these run and must pass; elsewhere they skip with a printed reason when they
//! cannot run. Nothing leaves the namespaces the tests create.

use std::net::SocketAddrV4;

use anyhow::Context;

use p2pchat_tests::natlab::{
    Nat, NatLab, RELAY_IP, SECOND_IP, tcp_source, udp_hole_punch, udp_sources,
};
use p2pchat_tests::netns::skip_unless_available;

/// Where the lab's tests cannot run, the reason (as [`skip_unless_available`], and nftables).
fn skip() -> anyhow::Result<bool> {
    if skip_unless_available()? {
        return Ok(true);
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            anyhow::bail!("the NAT lab needs nftables (`nft`), which .ci/run installs");
        }
        eprintln!("skipping NAT lab test: the `nft` command (nftables) is missing");
        return Ok(true);
    }
    Ok(false)
}

/// The lab itself, checked with plain sockets: each home reaches the internet under its
/// router's address with its source port kept; nothing from outside reaches a home or a
/// router (even though the internet routes the homes' subnets to their routers); a UDP hole
/// punch between the two homes works.
#[test]
fn the_lab_lets_homes_out_under_their_routers_address_and_keeps_the_outside_out()
-> anyhow::Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = NatLab::new(Nat::PortPreserving)?;
    let relay = SocketAddrV4::new(RELAY_IP, 4001);
    for home in &lab.homes {
        let (seen, local_port) = tcp_source(&home.host, &lab.internet, relay)?
            .with_context(|| format!("{} cannot reach the relay's host", home.host.name()))?;
        assert_eq!(
            seen,
            SocketAddrV4::new(home.public_ip, local_port),
            "TCP mapped to the router, port kept"
        );

        let targets = [relay, SocketAddrV4::new(SECOND_IP, 4001)];
        let (local_port, seen) = udp_sources(&home.host, 0, &lab.internet, &targets)?;
        let expected = Some(SocketAddrV4::new(home.public_ip, local_port));
        assert_eq!(
            seen,
            [expected, expected],
            "UDP mapped to the router, one port for every destination"
        );

        let inside = SocketAddrV4::new(home.private_ip, 4002);
        assert_eq!(
            tcp_source(&lab.internet, &home.host, inside)?,
            None,
            "the outside cannot connect to a home"
        );
        let (_, seen) = udp_sources(&lab.internet, 0, &home.host, &[inside])?;
        assert_eq!(seen, [None], "nor send it a datagram");
        let router = SocketAddrV4::new(home.public_ip, 4003);
        assert_eq!(
            tcp_source(&lab.internet, &home.router, router)?,
            None,
            "nor connect to its router"
        );
    }
    let [one, two] = &lab.homes;
    let other_home = SocketAddrV4::new(two.private_ip, 4004);
    assert_eq!(
        tcp_source(&one.host, &two.host, other_home)?,
        None,
        "a home cannot reach into the other"
    );
    assert_eq!(
        udp_hole_punch(&lab, 6000)?,
        [true, true],
        "a UDP hole punch goes through"
    );
    Ok(())
}

/// `masquerade random` gives every flow a new source port, so the address the relay observes
/// is not the one a peer's packets come from, and a hole punch fails.
#[test]
fn a_random_port_nat_maps_each_flow_to_its_own_port_and_defeats_a_hole_punch() -> anyhow::Result<()>
{
    if skip()? {
        return Ok(());
    }
    let lab = NatLab::new(Nat::Random)?;
    let home = &lab.homes[0];
    let targets = [
        SocketAddrV4::new(RELAY_IP, 5001),
        SocketAddrV4::new(RELAY_IP, 5002),
        SocketAddrV4::new(SECOND_IP, 5001),
    ];
    let (local_port, seen) = udp_sources(&home.host, 7000, &lab.internet, &targets)?;
    assert_eq!(local_port, 7000);
    let ports: Vec<u16> = seen
        .iter()
        .map(|source| {
            let source = source.context("a datagram from a home did not reach the internet")?;
            assert_eq!(*source.ip(), home.public_ip, "mapped to the router");
            Ok(source.port())
        })
        .collect::<anyhow::Result<_>>()?;
    assert!(
        ports.iter().any(|port| *port != local_port),
        "ports kept through a random NAT: {ports:?}"
    );
    assert_eq!(
        udp_hole_punch(&lab, 6000)?,
        [false, false],
        "no hole punch through random ports"
    );
    Ok(())
}
