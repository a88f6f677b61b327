//! Multi-node replication over real libp2p swarms on 127.0.0.1 (mDNS off).

use std::time::Duration;

use p2pchat_node::testing::Cluster;
use p2pchat_node::{Event, Node, PeerSpec};
use p2pchat_tests::{address_of, expect_silence, start_node, take, texts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_peer_gets_earlier_lines() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    for line in ["one", "two", "three"] {
        alice.send(line)?;
    }
    let bob = Node::builder()
        .name("bob")
        .data_dir(dirs.1.path())
        .mdns(false)
        .peer(PeerSpec::Addr(address_of(&alice)));
    let bob = bob.listen("/ip4/127.0.0.1/tcp/0".parse()?).spawn().await?;
    let mut events = bob.events();
    let mut feed = bob.messages();
    assert_eq!(
        texts(&take(&mut feed, 3).await?),
        ["alice> one", "alice> two", "alice> three"]
    );
    // Catch-up is reported: alice's profile, encryption key and three lines were missing, and
    // now are held.
    loop {
        match tokio::time::timeout(p2pchat_tests::DEADLINE, events.recv()).await?? {
            Event::SyncComplete { name, received, .. } => {
                assert_eq!((name.as_str(), received), ("alice", 5));
                break;
            }
            // It opens at 0 of 0, while the heads are compared.
            Event::SyncProgress {
                received, total, ..
            } => assert!((received, total) == (0, 0) || (received < total && total == 5)),
            _ => {}
        }
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_peers_see_each_others_new_lines() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let (mut alice_feed, mut bob_feed) = (alice.messages(), bob.messages());
    alice.send("hi bob")?;
    assert_eq!(texts(&take(&mut bob_feed, 1).await?), ["alice> hi bob"]);
    bob.send("hi alice")?;
    assert_eq!(
        texts(&take(&mut alice_feed, 2).await?),
        ["alice> hi bob", "bob> hi alice"]
    );
    assert_eq!(texts(&take(&mut bob_feed, 1).await?), ["bob> hi alice"]);
    expect_silence(&mut bob_feed, Duration::from_millis(300)).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_relay_transitively_including_those_written_while_offline() -> anyhow::Result<()> {
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let mut bob_feed = bob.messages();
    alice.send("before carol")?;
    take(&mut bob_feed, 1).await?;
    // carol knows only bob; alice is never dialed by her.
    let carol = start_node("carol", dirs.2.path(), &[address_of(&bob)]).await?;
    let mut carol_feed = carol.messages();
    assert_eq!(
        texts(&take(&mut carol_feed, 1).await?),
        ["alice> before carol"]
    );
    alice.send("while carol is here")?;
    assert_eq!(
        texts(&take(&mut carol_feed, 1).await?),
        ["alice> while carol is here"]
    );
    carol.send("carol says hi")?;
    let mut alice_feed = alice.messages();
    let alice_sees = texts(&take(&mut alice_feed, 3).await?);
    assert!(
        alice_sees.contains(&"carol> carol says hi".to_string()),
        "{alice_sees:?}"
    );
    assert!(
        carol
            .connected_peers()
            .iter()
            .all(|(peer, _)| *peer != alice.peer_id())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_keeps_history_and_catches_up_once() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let alice_addr = address_of(&alice);
    let bob = start_node("bob", dirs.1.path(), std::slice::from_ref(&alice_addr)).await?;
    alice.send("first")?;
    bob.send("bob was here")?;
    take(&mut bob.messages(), 2).await?;
    bob.shutdown().await;

    alice.send("while bob was away")?;
    let bob = start_node("bob", dirs.1.path(), &[alice_addr]).await?;
    let mut feed = bob.messages();
    let seen = texts(&take(&mut feed, 3).await?);
    // The first two were written concurrently (equal clocks may order either way by author).
    let mut history = seen[..2].to_vec();
    history.sort();
    assert_eq!(history, ["alice> first", "bob> bob was here"]);
    assert_eq!(seen[2], "alice> while bob was away");
    expect_silence(&mut feed, Duration::from_millis(500)).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_mesh_sends_each_live_entry_once_to_each_peer() -> anyhow::Result<()> {
    let mut cluster = Cluster::builder().nodes(3).seed(3).spawn().await?;
    cluster.mesh(2).await?;
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let mut feeds: Vec<_> = nodes.iter().map(|node| node.messages()).collect();
    // Warm up: everyone learns every log and picks its sources.
    for node in &nodes {
        node.send("warm-up")?;
    }
    for feed in &mut feeds {
        take(feed, 3).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<_> = nodes.iter().map(|node| node.stats()).collect();

    for i in 0..20 {
        for node in &nodes {
            node.send(&format!("line {i}"))?;
        }
    }
    for feed in &mut feeds {
        take(feed, 60).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (node, before) in nodes.iter().zip(before) {
        let after = node.stats();
        let received = after.received - before.received;
        assert_eq!(
            after.duplicates,
            before.duplicates,
            "no duplicate reached {:?}",
            node.peer_id()
        );
        assert_eq!(
            received, 40,
            "each node gets the 40 lines of the other two exactly once"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// Starts `name` in `rooms` (in that order), listening on 127.0.0.1, dialing `peers`.
async fn start_in_rooms(
    name: &str,
    dir: &std::path::Path,
    rooms: &[p2pchat_protocol::Room],
    peers: &[libp2p::Multiaddr],
) -> anyhow::Result<Node> {
    let mut builder = Node::builder()
        .name(name)
        .data_dir(dir)
        .mdns(false)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?);
    for room in rooms {
        builder = builder.room(room.clone());
    }
    for peer in peers {
        builder = builder.peer(PeerSpec::Addr(peer.clone()));
    }
    Ok(builder.spawn().await?)
}

/// Waits for `check` to hold, polling (at most [`p2pchat_tests::DEADLINE`]).
async fn eventually(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + p2pchat_tests::DEADLINE;
    while !check() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The next `Connected` event's room labels.
async fn connected_rooms(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
) -> anyhow::Result<Vec<String>> {
    loop {
        if let Event::Connected { rooms, .. } =
            tokio::time::timeout(p2pchat_tests::DEADLINE, events.recv()).await??
        {
            return Ok(rooms);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_rooms_each_only_the_shared_ones_entries_cross() -> anyhow::Result<()> {
    use p2pchat_protocol::Room;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let team = p2pchat_node::RoomKey::generate().room("team");
    let (lan, ops) = (Room::lan(), Room::open("ops")?);
    let alice = start_in_rooms("alice", dirs.0.path(), &[lan, team.clone()], &[]).await?;
    let mut alice_events = alice.events();
    alice.send("lan only")?;
    alice.send_in("team", "for the team")?;
    let bob = start_in_rooms("bob", dirs.1.path(), &[team, ops], &[address_of(&alice)]).await?;
    let mut bob_events = bob.events();
    bob.send("team, from bob")?;
    bob.send_in("ops", "ops only")?;
    assert_eq!(connected_rooms(&mut bob_events).await?, ["team"]);
    assert_eq!(connected_rooms(&mut alice_events).await?, ["team"]);
    let holds = |node: &Node, room: &str, of: &Node| {
        node.heads_in(room)
            .is_ok_and(|heads| heads.get(&of.author()) == Some(&3))
    };
    eventually("bob holds alice's team log", || holds(&bob, "team", &alice)).await?;
    eventually("alice holds bob's team log", || holds(&alice, "team", &bob)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (node, room, stranger) in [(&alice, "lan", &bob), (&bob, "ops", &alice)] {
        let heads = node.heads_in(room)?;
        assert!(
            !heads.contains_key(&stranger.author()) && heads.len() == 1,
            "{room} holds only its own member's log: {heads:?}"
        );
    }
    let mut seen: Vec<String> = take(&mut bob.messages(), 3)
        .await?
        .iter()
        .map(|m| format!("[{}] {}> {}", m.room, m.name, m.text))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "[ops] bob> ops only",
            "[team] alice> for the team",
            "[team] bob> team, from bob"
        ]
    );
    assert!(matches!(
        bob.send_in("lan", "nope"),
        Err(p2pchat_node::NodeError::NoSuchRoom(_))
    ));
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sharing_no_room_is_closed_with_a_warning_on_both_sides() -> anyhow::Result<()> {
    use p2pchat_protocol::Room;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = start_in_rooms("alice", dirs.0.path(), &[Room::open("ops")?], &[]).await?;
    let alice_events = alice.events();
    let bob = start_in_rooms("bob", dirs.1.path(), &[], &[address_of(&alice)]).await?;
    let bob_events = bob.events();
    let closed = |mut events: tokio::sync::broadcast::Receiver<Event>, other: &Node| {
        let expected = format!("closed {}: it shares no room with us", other.peer_id());
        async move {
            loop {
                match tokio::time::timeout(p2pchat_tests::DEADLINE, events.recv()).await?? {
                    Event::Warning { message } if message == expected => return Ok(()),
                    Event::Connected { .. } => anyhow::bail!("connected, sharing no room"),
                    _ => {}
                }
            }
        }
    };
    tokio::try_join!(closed(alice_events, &bob), closed(bob_events, &alice))?;
    assert_eq!(alice.heads().len(), 1, "nothing of bob's");
    assert_eq!(bob.heads().len(), 1, "nothing of alice's");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_release_before_rooms_is_told_to_upgrade() -> anyhow::Result<()> {
    use futures::StreamExt;
    use libp2p::{StreamProtocol, SwarmBuilder, noise, tcp, yamux};
    let dir = tempfile::tempdir()?;
    let node = p2pchat_tests::start_node("alice", dir.path(), &[]).await?;
    let events = node.events();
    // A peer that speaks only the lanes of protocol 2, as the release before rooms did.
    let key = p2pchat_protocol::SigningKey::generate(&mut rand::rngs::OsRng);
    let mut old = SwarmBuilder::with_existing_identity(p2pchat_node::identity::keypair(&key))
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let _lanes = old
        .behaviour()
        .new_control()
        .accept(StreamProtocol::new("/p2pchat/live/2"))?;
    old.dial(address_of(&node))?;
    let swarm = tokio::spawn(async move {
        loop {
            old.select_next_some().await;
        }
    });
    let expected = format!(
        "{} speaks an older p2pchat (protocol 2); it must upgrade",
        libp2p::PeerId::from(p2pchat_node::identity::keypair(&key).public())
    );
    let mut events = events;
    loop {
        match tokio::time::timeout(p2pchat_tests::DEADLINE, events.recv()).await?? {
            Event::Warning { message } if message == expected => break,
            Event::Connected { .. } => anyhow::bail!("an old peer shown as connected"),
            _ => {}
        }
    }
    swarm.abort();
    node.shutdown().await;
    Ok(())
}
