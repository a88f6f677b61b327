//! Multi-node replication over real libp2p swarms on 127.0.0.1 (mDNS off).

use std::time::Duration;

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
    // Catch-up is reported: alice's profile and three lines were missing, and now are held.
    loop {
        match tokio::time::timeout(p2pchat_tests::DEADLINE, events.recv()).await?? {
            Event::SyncComplete { name, received, .. } => {
                assert_eq!((name.as_str(), received), ("alice", 4));
                break;
            }
            // It opens at 0 of 0, while the heads are compared.
            Event::SyncProgress {
                received, total, ..
            } => assert!((received, total) == (0, 0) || (received < total && total == 4)),
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
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let carol = start_node(
        "carol",
        dirs.2.path(),
        &[address_of(&alice), address_of(&bob)],
    )
    .await?;
    let nodes = [&alice, &bob, &carol];
    let mut feeds: Vec<_> = nodes.iter().map(|node| node.messages()).collect();
    // Warm up: everyone learns every log and picks its sources.
    for node in nodes {
        node.send("warm-up")?;
    }
    for feed in &mut feeds {
        take(feed, 3).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<_> = nodes.iter().map(|node| node.stats()).collect();

    for i in 0..20 {
        for node in nodes {
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
    for node in [alice, bob, carol] {
        node.shutdown().await;
    }
    Ok(())
}
