//! Beyond the LAN, in one process on 127.0.0.1 (mDNS off): a relay of our own, two members of
//! a private room that know only the relay find each other at its rendezvous point, chat
//! through it and move to a direct connection; a stranger in another room at the same relay
//! gets nothing; and chat over QUIC alone.

use std::time::Duration;

use anyhow::{Context, bail};
use libp2p::Multiaddr;
use p2pchat_node::relay::{Relay, RelayEvent};
use p2pchat_node::{Event, Node, Path, PeerSpec};
use p2pchat_protocol::room::Room;
use p2pchat_tests::{DEADLINE, expect_silence, take, texts};
use tokio::sync::broadcast;

/// Rendezvous lookups come every 10 s: finding each other may take two of them.
const FIND_DEADLINE: Duration = Duration::from_secs(45);

async fn wait_for(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    within: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("no {what} within {within:?}"))??;
        if wanted(&event) {
            return Ok(event);
        }
    }
}

/// A relay on 127.0.0.1 (TCP), and its address for `--relay`.
async fn start_relay(dir: &std::path::Path) -> anyhow::Result<(Relay, Multiaddr)> {
    let mut relay = Relay::spawn(dir, vec!["/ip4/127.0.0.1/tcp/0".parse()?]).await?;
    let address = match tokio::time::timeout(DEADLINE, relay.next_event()).await? {
        Some(RelayEvent::Listening { address }) => address,
        other => bail!("the relay said {other:?} before its address"),
    };
    Ok((relay, address))
}

/// A node in `room` that knows only the relay at `relay`, listening on 127.0.0.1 if `listen`
/// (else reachable through the relay only, as behind a NAT that punches no hole).
async fn start_member(
    name: &str,
    room: Room,
    relay: &Multiaddr,
    listen: bool,
) -> anyhow::Result<Node> {
    let mut builder = Node::builder()
        .name(name)
        .in_memory()
        .mdns(false)
        .room(room)
        .relay(relay.clone());
    if listen {
        builder = builder.listen("/ip4/127.0.0.1/tcp/0".parse()?);
    }
    Ok(builder.spawn().await?)
}

/// Waits until `events` show `other` connected directly: connected through the relay and then
/// a `DirectConnection`, or (when AutoNAT confirmed a direct address before the registration,
/// as it may on one host) connected directly from the start. Never a disconnection meanwhile.
async fn wait_direct(
    events: &mut broadcast::Receiver<Event>,
    other: libp2p::PeerId,
) -> anyhow::Result<()> {
    let first = wait_for(
        events,
        "connection",
        FIND_DEADLINE,
        |event| matches!(event, Event::Connected { peer, .. } if *peer == other),
    )
    .await?;
    if matches!(
        first,
        Event::Connected {
            path: Path::Direct,
            ..
        }
    ) {
        return Ok(());
    }
    let event = wait_for(events, "direct connection", FIND_DEADLINE, |event| {
        matches!(event, Event::DirectConnection { peer, .. } | Event::Disconnected { peer, .. } if *peer == other)
    })
    .await?;
    assert!(matches!(event, Event::DirectConnection { .. }), "{event:?}");
    Ok(())
}

#[tokio::test]
async fn members_behind_nats_find_each_other_at_the_relay_and_chat_through_it() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (relay, address) = start_relay(dir.path()).await?;
    let key = [42; 32];
    let alice = start_member("alice", Room::private(&key, "team"), &address, false).await?;
    let bob = start_member("bob", Room::private(&key, "team"), &address, false).await?;
    let carol = start_member("carol", Room::open("other")?, &address, false).await?;
    let (mut alice_events, mut bob_events) = (alice.events(), bob.events());
    let mut carol_events = carol.events();
    let (mut alice_feed, mut bob_feed) = (alice.messages(), bob.messages());
    let mut carol_feed = carol.messages();
    for (events, other) in [
        (&mut alice_events, bob.peer_id()),
        (&mut bob_events, alice.peer_id()),
    ] {
        let connected = wait_for(
            events,
            "connection",
            FIND_DEADLINE,
            |event| matches!(event, Event::Connected { peer, .. } if *peer == other),
        )
        .await?;
        assert!(
            matches!(
                connected,
                Event::Connected {
                    path: Path::Relayed,
                    ..
                }
            ),
            "reachable through the relay only: {connected:?}"
        );
    }
    alice.send("hello bob")?;
    assert_eq!(texts(&take(&mut bob_feed, 1).await?), ["alice> hello bob"]);
    bob.send("hi alice")?;
    assert!(texts(&take(&mut alice_feed, 2).await?).contains(&"bob> hi alice".to_owned()));
    let bob_seen = alice
        .contacts()
        .into_iter()
        .find(|contact| contact.peer == bob.peer_id())
        .context("bob among alice's contacts")?;
    assert_eq!(bob_seen.path, Some(Path::Relayed), "/peers says relayed");

    // The stranger in another room found nobody and got nothing.
    expect_silence(&mut carol_feed, Duration::from_millis(200)).await?;
    while let Ok(event) = carol_events.try_recv() {
        assert!(!matches!(event, Event::Connected { .. }), "{event:?}");
    }
    assert!(
        !alice
            .contacts()
            .iter()
            .any(|contact| contact.peer == carol.peer_id()),
        "alice never heard of carol"
    );
    relay.shutdown().await;
    for node in [alice, bob, carol] {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn reachable_members_go_direct_and_keep_chatting_without_the_relay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (relay, address) = start_relay(dir.path()).await?;
    let alice = start_member("alice", Room::open("team")?, &address, true).await?;
    let bob = start_member("bob", Room::open("team")?, &address, true).await?;
    let (mut alice_events, mut bob_events) = (alice.events(), bob.events());
    let mut bob_feed = bob.messages();
    wait_direct(&mut alice_events, bob.peer_id()).await?;
    wait_direct(&mut bob_events, alice.peer_id()).await?;
    let bob_seen = alice
        .contacts()
        .into_iter()
        .find(|contact| contact.peer == bob.peer_id())
        .context("bob among alice's contacts")?;
    assert_eq!(bob_seen.path, Some(Path::Direct), "/peers says direct");
    relay.shutdown().await;
    alice.send("still here")?;
    assert_eq!(texts(&take(&mut bob_feed, 1).await?), ["alice> still here"]);
    while let Ok(event) = bob_events.try_recv() {
        assert!(!matches!(event, Event::Disconnected { .. }), "{event:?}");
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_stranger_at_the_relay_in_another_room_finds_nobody() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (relay, address) = start_relay(dir.path()).await?;
    let key = [7; 32];
    let alice = start_member("alice", Room::private(&key, "team"), &address, true).await?;
    let mallory = start_member("mallory", Room::private(&[8; 32], "team"), &address, true).await?;
    let mut mallory_events = mallory.events();
    let mut alice_events = alice.events();
    let mut mallory_feed = mallory.messages();
    alice.send("for the team only")?;
    // Two rendezvous lookups' time: mallory registered and looked, and found no one.
    let quiet = Duration::from_secs(25);
    let found = wait_for(&mut mallory_events, "connection", quiet, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;
    assert!(found.is_err(), "mallory connected: {found:?}");
    expect_silence(&mut mallory_feed, Duration::from_millis(200)).await?;
    // Not even a connection sharing no room: the rendezvous never told either of the other.
    let alice_id = alice.peer_id().to_string();
    while let Ok(event) = mallory_events.try_recv() {
        assert!(!format!("{event:?}").contains(&alice_id), "{event:?}");
    }
    let mallory_id = mallory.peer_id().to_string();
    while let Ok(event) = alice_events.try_recv() {
        assert!(!format!("{event:?}").contains(&mallory_id), "{event:?}");
    }
    relay.shutdown().await;
    alice.shutdown().await;
    mallory.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn two_nodes_chat_over_quic_alone() -> anyhow::Result<()> {
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse()?;
    let ann = Node::builder()
        .name("ann")
        .in_memory()
        .mdns(false)
        .listen(quic.clone())
        .spawn()
        .await?;
    let address = ann
        .listen_addrs()
        .into_iter()
        .next()
        .context("ann listens")?;
    assert!(address.to_string().contains("/quic-v1/"), "{address}");
    let ben = Node::builder()
        .name("ben")
        .in_memory()
        .mdns(false)
        .listen(quic)
        .peer(PeerSpec::Addr(address))
        .spawn()
        .await?;
    let mut ann_events = ann.events();
    let connected = wait_for(&mut ann_events, "connection", DEADLINE, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await?;
    assert!(
        matches!(&connected, Event::Connected { path: Path::Direct, address, .. } if address.to_string().contains("/quic-v1")),
        "{connected:?}"
    );
    let mut ann_feed = ann.messages();
    ben.send("over QUIC")?;
    assert_eq!(texts(&take(&mut ann_feed, 1).await?), ["ben> over QUIC"]);
    ann.shutdown().await;
    ben.shutdown().await;
    Ok(())
}

/// The binary: `p2pchat relay` prints its address, and two users who give only names and that
/// address (`--no-mdns --peer NAME --relay ADDR`) connect via the relay, say so, go direct, and
/// chat; the relay says a line per reservation and circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_connects_via_relay_then_directly() -> anyhow::Result<()> {
    use p2pchat_tests::{Chat, p2pchat_binary};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dirs = tempfile::tempdir()?;
    let relay_dir = dirs.path().join("relay");
    let mut relay = tokio::process::Command::new(p2pchat_binary())
        .args(["relay", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(&relay_dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut relay_lines = BufReader::new(relay.stderr.take().context("relay stderr")?).lines();
    let first = tokio::time::timeout(DEADLINE, relay_lines.next_line())
        .await??
        .context("the relay said nothing")?;
    let address = first
        .strip_prefix("info> relay listening on ")
        .with_context(|| format!("not an address line: {first:?}"))?
        .to_owned();
    assert!(address.contains("/p2p/12D3KooW"), "{address}");
    assert!(
        relay_dir.join("identity.key").exists(),
        "its identity is kept"
    );

    let dir = |name: &str| dirs.path().join(name).display().to_string();
    let (alice_dir, bob_dir) = (dir("alice"), dir("bob"));
    let mut alice = Chat::start_user("alice", &alice_dir, &["bob"], &["--relay", &address])?;
    let mut bob = Chat::start_user("bob", &bob_dir, &["alice"], &["--relay", &address])?;
    for (chat, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let line = chat
            .wait_stderr_within(&format!("info> connected to {other} ("), FIND_DEADLINE)
            .await?;
        // Via the relay and then direct; or, when AutoNAT confirmed the peer's 127.0.0.1
        // address before it registered, direct from the start (no "via relay").
        if line.ends_with(") via relay") {
            chat.wait_stderr(&format!("info> direct connection to {other}"))
                .await?;
        } else {
            assert!(line.ends_with(')'), "{line}");
        }
    }
    alice.say("hello through the NATs").await?;
    bob.wait_line("alice> hello through the NATs").await?;
    bob.say("hi back").await?;
    alice.wait_line("bob> hi back").await?;
    for chat in [&alice, &bob] {
        let lines = chat.stderr_lines();
        assert!(
            !lines.iter().any(|l| l.starts_with("info> disconnected")),
            "the relayed connection's close is no disconnection: {lines:#?}"
        );
    }
    assert!(alice.interrupt().await?);
    assert!(bob.interrupt().await?);
    let said = tokio::time::timeout(DEADLINE, relay_lines.next_line())
        .await??
        .context("the relay said no more")?;
    assert!(
        said.starts_with("info> relay listening on ")
            || said.starts_with("info> reservation accepted for "),
        "{said}"
    );
    relay.kill().await?;
    Ok(())
}
