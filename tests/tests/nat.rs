//! Beyond the LAN, in the NAT lab (`p2pchat_tests::natlab`): alice and bob behind two home
//! routers that masquerade, a relay on "the internet". Each user runs the real binary with
//! only `--name NAME --peer OTHER --relay ADDR` (and a data dir; mDNS off). Needs root,
//! iproute2 and nftables: in CI (`CI=true`) these run and must pass; elsewhere they skip with
//! a printed reason when they cannot run. Nothing leaves the namespaces the tests create.
//!
//! Whether a path is direct is also checked below the binary, in the routers' connection
//! tracking: a direct path is a flow from one home's host to the other's router that has seen
//! replies.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::Context;
use p2pchat_tests::natlab::{
    Home, Nat, NatLab, RELAY_IP, SECOND_IP, tcp_source, udp_hole_punch, udp_sources,
};
use p2pchat_tests::netns::{Namespace, skip_unless_available};
use p2pchat_tests::{Chat, export, keygen_room, signal};

/// How long two peers that know only the relay may take to find each other there: rendezvous
/// lookups come every 10 s, and it may take two of them.
const FIND: Duration = Duration::from_secs(45);

/// How long a hole punch may take once the relayed connection is up (DCUtR's round trips and
/// retries, on a loaded machine).
const UPGRADE: Duration = Duration::from_secs(45);

/// How long a stranger at the relay is given to find a private room's members: two of the
/// nodes' rendezvous lookups (every 10 s) and a margin.
const STRANGER_LOOKS: Duration = Duration::from_secs(25);

/// How long the peers are given to try (and fail) a hole punch through random ports.
const PUNCH_TRIES: Duration = Duration::from_secs(10);

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

/// Starts `p2pchat relay` in the lab's internet on [`RELAY_IP`] (TCP and QUIC), with its data in
/// `dir`, and returns it with the TCP address it prints (`…/p2p/<id>`), the one users are given.
async fn start_relay(lab: &NatLab, dir: &str) -> anyhow::Result<(Chat, String)> {
    let tcp = format!("/ip4/{RELAY_IP}/tcp/4001");
    let quic = format!("/ip4/{RELAY_IP}/udp/4001/quic-v1");
    let mut relay = Chat::start_in(
        &lab.internet,
        &[
            "relay",
            "--listen",
            &tcp,
            "--listen",
            &quic,
            "--data-dir",
            dir,
        ],
    )?;
    relay.name = "relay".into();
    let prefix = "info> relay listening on ";
    let line = relay.wait_stderr(&format!("{prefix}{tcp}/p2p/")).await?;
    Ok((relay, line.trim_start_matches(prefix).to_owned()))
}

/// Starts `name` in `host` with only the flags a user needs beyond the LAN: `--peer peer`
/// `--relay relay` (plus `extra`), mDNS off.
fn start_user(
    host: &Namespace,
    name: &str,
    dir: &str,
    peer: &str,
    relay: &str,
    extra: &[&str],
) -> anyhow::Result<Chat> {
    let mut args = vec![
        "--name",
        name,
        "--data-dir",
        dir,
        "--no-mdns",
        "--peer",
        peer,
        "--relay",
        relay,
    ];
    args.extend(extra);
    Chat::start_in(host, &args)
}

/// Waits until `chat` says it is connected to `other`: whether through the relay.
async fn connected(chat: &mut Chat, other: &str) -> anyhow::Result<bool> {
    let prefix = format!("info> connected to {other} (");
    let line = chat.wait_stderr_within(&prefix, FIND).await?;
    Ok(line.contains(") via relay"))
}

/// Waits until `chat` says it is connected to `other`, and checks that it is through the
/// relay.
async fn connected_via_relay(chat: &mut Chat, other: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        connected(chat, other).await?,
        "{} is connected to {other} but not via the relay{}",
        chat.name,
        chat.stderr_tail()
    );
    Ok(())
}

/// `name` and `other` chat both ways: each line typed is shown on the other side.
async fn chat_both_ways(
    (one, two): (&mut Chat, &mut Chat),
    (line_one, line_two): (&str, &str),
) -> anyhow::Result<()> {
    one.say(line_one).await?;
    two.wait_line(&format!("{}> {line_one}", one.name)).await?;
    two.say(line_two).await?;
    one.wait_line(&format!("{}> {line_two}", two.name)).await?;
    Ok(())
}

/// The `/peers` line about `other` in `chat`'s output.
async fn peers_line(chat: &mut Chat, other: &str) -> anyhow::Result<String> {
    chat.say("/peers").await?;
    chat.wait_stderr(&format!("info> {other} #")).await
}

/// Flows in `home`'s router between its host and `other`'s router that have seen a reply: a
/// direct path between the two homes.
fn answered_flows(home: &Home, other: &Home) -> anyhow::Result<Vec<String>> {
    let flows = home.flows_with(other.public_ip)?;
    Ok(flows
        .into_iter()
        .filter(|flow| !flow.contains("[UNREPLIED]"))
        .collect())
}

/// The stderr lines of `chat` that mention `other`.
fn said_of(chat: &Chat, other: &str) -> Vec<String> {
    let mut said = chat.stderr_lines();
    said.retain(|line| line.contains(other));
    said
}

/// The peer id that ends the address in `chat`'s first `info> listening on …` line.
async fn peer_id(chat: &mut Chat) -> anyhow::Result<String> {
    let addr = chat.listen_addr().await?;
    Ok(addr.rsplit('/').next().unwrap_or_default().to_owned())
}

fn path_of(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

/// Two homes behind port-preserving NATs: alice and bob meet at the relay by name and chat
/// (through it, unless the hole punch was quicker), the hole punch makes the connection direct
/// on both sides (said once on each, shown by `/peers`, and seen as an answered flow between
/// the homes in both routers), and they keep chatting once the relay is gone, with no disconnection said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_two_nats_they_chat_through_the_relay_go_direct_and_outlive_it() -> anyhow::Result<()>
{
    if skip()? {
        return Ok(());
    }
    let lab = NatLab::new(Nat::PortPreserving)?;
    let dirs = tempfile::tempdir()?;
    let (mut relay, relay_addr) = start_relay(&lab, &path_of(&dirs, "relay")).await?;
    let [home1, home2] = &lab.homes;
    let mut alice = start_user(
        &home1.host,
        "alice",
        &path_of(&dirs, "alice"),
        "bob",
        &relay_addr,
        &[],
    )?;
    let mut bob = start_user(
        &home2.host,
        "bob",
        &path_of(&dirs, "bob"),
        "alice",
        &relay_addr,
        &[],
    )?;
    // On a loaded machine the hole punch can win the race with the relayed connection's
    // membership proofs: the first connection shown is then already direct (and said without
    // "via relay"). Either way the two met through the relay, so the hole punch's success is
    // said on both sides.
    connected(&mut alice, "bob").await?;
    connected(&mut bob, "alice").await?;
    chat_both_ways((&mut alice, &mut bob), ("hello bob", "hi alice")).await?;
    for (chat, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let upgraded = format!("info> direct connection to {other}");
        chat.wait_stderr_within(&upgraded, UPGRADE).await?;
        let line = peers_line(chat, other).await?;
        assert!(
            line.contains("direct") && !line.contains("relayed"),
            "{line}"
        );
    }
    for (home, other) in [(home1, home2), (home2, home1)] {
        let direct = answered_flows(home, other)?;
        assert!(
            !direct.is_empty(),
            "{} has no answered flow to {}: {:?}",
            home.router.name(),
            other.public_ip,
            home.flows_with(other.public_ip)?
        );
    }
    chat_both_ways((&mut alice, &mut bob), ("now directly", "so it seems")).await?;

    // The relay goes away (stopped by its PID): the direct connection stays.
    let pid = relay.child.id().context("the relay already exited")?;
    signal(pid, "KILL")?;
    tokio::time::timeout(p2pchat_tests::DEADLINE, relay.child.wait())
        .await
        .context("the relay did not exit after SIGKILL")??;
    chat_both_ways((&mut alice, &mut bob), ("the relay is gone", "we are not")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // anything the relay's loss would say
    for (chat, other) in [(&alice, "bob"), (&bob, "alice")] {
        let direct = format!("info> direct connection to {other}");
        let listed = format!("info> {other} #");
        let said = said_of(chat, other);
        assert_eq!(
            said.iter().filter(|line| **line == direct).count(),
            1,
            "{} said of {other}: {said:#?}",
            chat.name
        );
        assert!(
            said.iter().all(|line| !line.contains("disconnected from")
                && (!line.contains("direct") || *line == direct || line.starts_with(&listed))),
            "{} said of {other}: {said:#?}",
            chat.name
        );
    }
    for chat in [alice, bob] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

/// Two homes behind `masquerade random` NATs, which defeat hole punching: alice and bob still
/// chat, relayed, the hole punch is tried and fails, and `/peers` says the path is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_random_port_nats_they_stay_relayed_and_are_told_so() -> anyhow::Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = NatLab::new(Nat::Random)?;
    let dirs = tempfile::tempdir()?;
    let (_relay, relay_addr) = start_relay(&lab, &path_of(&dirs, "relay")).await?;
    let [home1, home2] = &lab.homes;
    let mut alice = start_user(
        &home1.host,
        "alice",
        &path_of(&dirs, "alice"),
        "bob",
        &relay_addr,
        &[],
    )?;
    let mut bob = start_user(
        &home2.host,
        "bob",
        &path_of(&dirs, "bob"),
        "alice",
        &relay_addr,
        &[],
    )?;
    connected_via_relay(&mut alice, "bob").await?;
    connected_via_relay(&mut bob, "alice").await?;
    chat_both_ways((&mut alice, &mut bob), ("hello bob", "hi alice")).await?;

    // Both try to punch (their packets reach the other router, which drops them)...
    let deadline = tokio::time::Instant::now() + UPGRADE;
    while home1.flows_with(home2.public_ip)?.is_empty()
        || home2.flows_with(home1.public_ip)?.is_empty()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no hole punch was tried within {UPGRADE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(PUNCH_TRIES).await;
    // ...and never get through.
    for (home, other) in [(home1, home2), (home2, home1)] {
        assert_eq!(
            answered_flows(home, other)?,
            Vec::<String>::new(),
            "a path between the homes"
        );
    }
    for (chat, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let line = peers_line(chat, other).await?;
        assert!(
            line.contains("relayed") && !line.contains("direct"),
            "{line}"
        );
        let said = chat.stderr_lines();
        assert!(
            said.iter().all(|l| !l.contains("direct connection to")),
            "{said:#?}"
        );
    }
    chat_both_ways((&mut alice, &mut bob), ("still relayed", "and still here")).await?;
    for chat in [alice, bob] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

/// A private room across the relay (random-port NATs: every line goes through it): alice and
/// bob hold its key and chat. mallory, without the key, has a reservation at the same relay
/// and looks for alice there through two rendezvous lookups: she finds nobody (the room's
/// namespace is derived from its key), sees no line, learns no name or peer id, and nothing of
/// the room is in her store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_across_the_relay_gives_a_stranger_at_it_nothing() -> anyhow::Result<()> {
    if skip()? {
        return Ok(());
    }
    let lab = NatLab::new(Nat::Random)?;
    let dirs = tempfile::tempdir()?;
    let key = path_of(&dirs, "team.key");
    keygen_room(key.as_ref())?;
    let (mut relay, relay_addr) = start_relay(&lab, &path_of(&dirs, "relay")).await?;
    let [home1, home2] = &lab.homes;
    let with_key = ["--room-key", key.as_str()];
    let (alice_dir, bob_dir) = (path_of(&dirs, "alice"), path_of(&dirs, "bob"));
    let mut alice = start_user(
        &home1.host,
        "alice",
        &alice_dir,
        "bob",
        &relay_addr,
        &with_key,
    )?;
    let alice_id = peer_id(&mut alice).await?;
    let mut bob = start_user(
        &home2.host,
        "bob",
        &bob_dir,
        "alice",
        &relay_addr,
        &with_key,
    )?;
    let bob_id = peer_id(&mut bob).await?;
    connected_via_relay(&mut alice, "bob").await?;
    chat_both_ways((&mut alice, &mut bob), ("members only", "understood")).await?;

    let mallory_dir = path_of(&dirs, "mallory");
    let mut mallory = start_user(
        &lab.internet,
        "mallory",
        &mallory_dir,
        "alice",
        &relay_addr,
        &[],
    )?;
    let mallory_id = peer_id(&mut mallory).await?;
    relay
        .wait_stderr_containing(&format!("reservation accepted for {mallory_id}"))
        .await?;
    mallory.say("let me in").await?;
    mallory.wait_line("mallory> let me in").await?;
    tokio::time::sleep(STRANGER_LOOKS).await;
    chat_both_ways((&mut alice, &mut bob), ("still members only", "still here")).await?;

    let more = mallory.lines_until_quiet(Duration::from_secs(1)).await?;
    assert!(more.is_empty(), "mallory saw {more:?}");
    let said = mallory.stderr_lines();
    let looking = "info> looking for alice at ";
    for line in &said {
        let leaks = [
            alice_id.as_str(),
            &bob_id,
            "bob",
            "members only",
            "understood",
        ];
        assert!(
            leaks.iter().all(|leak| !line.contains(leak))
                && (!line.contains("alice") || line.starts_with(looking)),
            "mallory learnt something: {line:?} in {said:#?}"
        );
    }
    assert!(
        said.iter().any(|line| line.starts_with(looking)),
        "{said:#?}"
    );
    for chat in [&alice, &bob] {
        let said = chat.stderr_lines();
        assert!(
            said.iter()
                .all(|l| !l.contains(&mallory_id) && !l.contains("mallory")),
            "{} heard of mallory: {said:#?}",
            chat.name
        );
    }
    for chat in [alice, bob, mallory] {
        assert!(chat.interrupt().await?);
    }
    let exported = export("mallory", mallory_dir.as_ref(), &[])?;
    assert_eq!(
        exported,
        ["mallory> let me in"],
        "nothing of the room in mallory's store"
    );
    let exported = export("bob", bob_dir.as_ref(), &with_key)?;
    let room = [
        "alice> members only",
        "bob> understood",
        "alice> still members only",
        "bob> still here",
    ];
    assert_eq!(exported, room);
    Ok(())
}
