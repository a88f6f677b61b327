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

/// A node in `room` that knows only the relay at `relay`.
async fn start_member(name: &str, room: Room, relay: &Multiaddr) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .name(name)
        .in_memory()
        .mdns(false)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .room(room)
        .relay(relay.clone())
        .spawn()
        .await?)
}

#[tokio::test]
async fn members_find_each_other_at_the_relay_chat_through_it_and_go_direct() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (relay, address) = start_relay(dir.path()).await?;
    let key = [42; 32];
    let alice = start_member("alice", Room::private(&key, "team"), &address).await?;
    let bob = start_member("bob", Room::private(&key, "team"), &address).await?;
    let carol = start_member("carol", Room::open("other")?, &address).await?;
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
        let Event::Connected { path, .. } = connected else {
            unreachable!("picked above");
        };
        assert_eq!(
            path,
            Path::Relayed,
            "found at the rendezvous: through the relay first"
        );
    }
    alice.send("hello bob")?;
    assert_eq!(texts(&take(&mut bob_feed, 1).await?), ["alice> hello bob"]);

    // On one host the hole punch succeeds: both say so, and neither sees a disconnection.
    for (events, other) in [
        (&mut alice_events, bob.peer_id()),
        (&mut bob_events, alice.peer_id()),
    ] {
        let event = wait_for(events, "direct connection", FIND_DEADLINE, |event| {
            matches!(event, Event::DirectConnection { peer, .. } | Event::Disconnected { peer, .. } if *peer == other)
        })
        .await?;
        assert!(matches!(event, Event::DirectConnection { .. }), "{event:?}");
    }
    let bob_seen = alice
        .contacts()
        .into_iter()
        .find(|contact| contact.peer == Some(bob.peer_id()))
        .context("bob among alice's contacts")?;
    assert_eq!(bob_seen.path, Some(Path::Direct), "/peers says direct");
    bob.send("hi alice, directly")?;
    let got = take(&mut alice_feed, 2).await?;
    assert!(
        texts(&got).contains(&"bob> hi alice, directly".to_owned()),
        "{:?}",
        texts(&got)
    );

    // The relay gone, the direct connection stays.
    relay.shutdown().await;
    alice.send("still here")?;
    // Bob's feed has his own line first.
    assert!(texts(&take(&mut bob_feed, 2).await?).contains(&"alice> still here".to_owned()));
    while let Ok(event) = bob_events.try_recv() {
        assert!(!matches!(event, Event::Disconnected { .. }), "{event:?}");
    }

    // The stranger in another room found nobody and got nothing.
    expect_silence(&mut carol_feed, Duration::from_millis(200)).await?;
    while let Ok(event) = carol_events.try_recv() {
        assert!(!matches!(event, Event::Connected { .. }), "{event:?}");
    }
    assert!(
        !alice
            .contacts()
            .iter()
            .any(|contact| contact.peer == Some(carol.peer_id())),
        "alice never heard of carol"
    );
    for node in [alice, bob, carol] {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_stranger_at_the_relay_in_another_room_finds_nobody() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (relay, address) = start_relay(dir.path()).await?;
    let key = [7; 32];
    let alice = start_member("alice", Room::private(&key, "team"), &address).await?;
    let mallory = start_member("mallory", Room::private(&[8; 32], "team"), &address).await?;
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
