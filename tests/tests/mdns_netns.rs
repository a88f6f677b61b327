//! Real mDNS discovery, inside network namespaces that each test creates and deletes.
//! Needs root and iproute2: in CI (`CI=true`) these run and must pass; elsewhere they skip
//! with a printed reason when they cannot run.

use std::time::Duration;

use p2pchat_tests::Chat;
use p2pchat_tests::netns::{Netns, skip_unless_available};

fn data_dir(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_find_each_other_by_name_relay_and_reconnect() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let netns = Netns::new()?;
    let dirs = tempfile::tempdir()?;
    let (a, b, c) = (
        data_dir(&dirs, "alice"),
        data_dir(&dirs, "bob"),
        data_dir(&dirs, "carol"),
    );

    let mut alice = Chat::start_in(
        &netns,
        &["--name", "alice", "--peer", "bob", "--data-dir", &a],
    )?;
    alice.listen_addr().await?;
    alice.say("hello").await?;
    alice.wait_line("alice> hello").await?;
    alice
        .wait_stderr("info> looking for bob on the LAN")
        .await?;

    let mut bob = Chat::start_in(
        &netns,
        &["--name", "bob", "--peer", "alice", "--data-dir", &b],
    )?;
    bob.wait_line("alice> hello").await?;
    alice.wait_stderr("info> connected to bob (").await?;
    bob.say("hi alice").await?;
    alice.wait_line("bob> hi alice").await?;

    // carol wants only bob, and gets alice's lines through him.
    let mut carol = Chat::start_in(
        &netns,
        &["--name", "carol", "--peer", "bob", "--data-dir", &c],
    )?;
    carol
        .wait_lines_unordered(&["alice> hello", "bob> hi alice"])
        .await?;
    carol.wait_stderr("info> connected to bob (").await?;

    // bob leaves: alice notices within about two seconds, not at mDNS expiry.
    assert!(bob.interrupt().await?);
    alice
        .wait_stderr_within("info> disconnected from bob", Duration::from_secs(3))
        .await?;

    // bob comes back (on a new port): they find each other again by name and catch up.
    alice.say("welcome back").await?;
    alice.wait_line("alice> welcome back").await?;
    let mut bob = Chat::start_in(
        &netns,
        &["--name", "bob", "--peer", "alice", "--data-dir", &b],
    )?;
    let history = bob.wait_line("alice> welcome back").await?;
    assert_eq!(
        history,
        ["alice> hello", "bob> hi alice"],
        "history shown once, then the catch-up"
    );
    alice.wait_stderr("info> connected to bob (").await?;
    bob.say("back").await?;
    alice.wait_line("bob> back").await?;
    carol
        .wait_lines_unordered(&["alice> welcome back", "bob> back"])
        .await?;
    for chat in [alice, bob, carol] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_a_room_end_with_one_connection() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let netns = Netns::new()?;
    let dirs = tempfile::tempdir()?;
    let (a, b) = (data_dir(&dirs, "alice"), data_dir(&dirs, "bob"));
    // No --peer: each joins every p2pchat peer it discovers, so both dial.
    let mut alice = Chat::start_in(&netns, &["--name", "alice", "--data-dir", &a])?;
    let mut bob = Chat::start_in(&netns, &["--name", "bob", "--data-dir", &b])?;
    let (_, alice_port) = alice.identity().await?;
    let (_, bob_port) = bob.identity().await?;
    alice.say("one connection").await?;
    bob.wait_line("alice> one connection").await?;
    bob.say("and replication").await?;
    alice.wait_line("bob> and replication").await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // let any duplicate dial settle
    assert_eq!(
        netns.connections_between(alice_port, bob_port)?,
        1,
        "exactly one TCP connection"
    );
    let noise: Vec<String> = alice.drain_stderr(Duration::from_millis(200)).await;
    assert!(
        noise.iter().all(|l| !l.contains("disconnected")),
        "no flapping: {noise:?}"
    );
    assert!(alice.interrupt().await?);
    assert!(bob.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_key_claiming_a_pinned_name_is_flagged_not_followed() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let netns = Netns::new()?;
    let dirs = tempfile::tempdir()?;
    let (a, b, m) = (
        data_dir(&dirs, "alice"),
        data_dir(&dirs, "bob"),
        data_dir(&dirs, "mallory"),
    );
    let mut alice = Chat::start_in(
        &netns,
        &["--name", "alice", "--peer", "bob", "--data-dir", &a],
    )?;
    let (_, alice_port) = alice.identity().await?;
    let bob = Chat::start_in(
        &netns,
        &["--name", "bob", "--peer", "alice", "--data-dir", &b],
    )?;
    alice.wait_stderr("info> connected to bob (").await?;
    assert!(bob.interrupt().await?);
    alice.wait_stderr("info> disconnected from bob").await?;

    // Another key calls itself bob. First it only listens (its one --peer is an address where
    // nobody is): alice discovers it over mDNS but her --peer bob must not dial it.
    let nowhere = "/ip4/127.0.0.1/tcp/9";
    let mut mallory = Chat::start_in(
        &netns,
        &["--name", "bob", "--peer", nowhere, "--data-dir", &m],
    )?;
    let (_, mallory_port) = mallory.identity().await?;
    tokio::time::sleep(Duration::from_secs(6)).await; // discovery, tie-break delay, a few ticks
    assert_eq!(
        netns.connections_between(alice_port, mallory_port)?,
        0,
        "alice never dials the impostor"
    );
    assert!(mallory.interrupt().await?);

    // Then it joins everyone it finds: alice sees it, flagged with its fingerprint.
    let mut mallory = Chat::start_in(&netns, &["--name", "bob", "--data-dir", &m])?;
    let (mallory_id, _) = mallory.identity().await?;
    let warning = alice.wait_stderr("info> warning: bob#").await?;
    assert!(warning.contains("claims the name bob"), "{warning}");
    mallory.say("trust me").await?;
    let fingerprinted = alice.next_line().await?;
    assert!(
        fingerprinted.starts_with("bob#") && fingerprinted.ends_with("> trust me"),
        "{fingerprinted}"
    );
    let status = alice.drain_stderr(Duration::from_millis(500)).await;
    let plain_bob = format!("info> connected to bob ({mallory_id})");
    assert!(
        status.iter().all(|l| *l != plain_bob),
        "the impostor is never shown as plain bob: {status:?}"
    );
    assert!(alice.interrupt().await?);
    assert!(mallory.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_found_on_the_lan_that_cannot_be_joined_is_said() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let netns = Netns::new()?;
    let dirs = tempfile::tempdir()?;
    let (a, b) = (data_dir(&dirs, "alice"), data_dir(&dirs, "bob"));
    let (key, other_key) = (data_dir(&dirs, "team.key"), data_dir(&dirs, "other.key"));
    p2pchat_tests::keygen_room(key.as_ref())?;
    p2pchat_tests::keygen_room(other_key.as_ref())?;
    // Two rooms on one LAN: each finds the other by mDNS, connects, and closes the connection
    // once their proofs show no room in common.
    let mut alice = Chat::start_in(
        &netns,
        &["--name", "alice", "--data-dir", &a, "--room-key", &key],
    )?;
    let mut bob = Chat::start_in(
        &netns,
        &["--name", "bob", "--data-dir", &b, "--room-key", &other_key],
    )?;
    for chat in [&mut alice, &mut bob] {
        chat.wait_stderr_containing("shares no room with us")
            .await?;
    }
    assert!(alice.interrupt().await?);
    assert!(bob.interrupt().await?);
    Ok(())
}
