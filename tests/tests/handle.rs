//! The node's handle as a program drives it: a given key, dialing and disconnecting after
//! start, blocking a peer, waiting until two nodes are in sync, and stopping a node by
//! dropping it. Nodes on 127.0.0.1, mDNS off.

use std::time::Duration;

use anyhow::{Context, bail};
use p2pchat_node::{
    Config, ConnectFailure, Direction, Event, Node, NodeError, Transport, identity::IdentityError,
};
use p2pchat_protocol::{Author, SigningKey};
use p2pchat_tests::{DEADLINE, address_of, start_node};
use tokio::sync::broadcast;

/// Waits for an event that `wanted` picks, failing after [`DEADLINE`].
async fn wait_for(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("no {what} within {DEADLINE:?}"))??;
        if wanted(&event) {
            return Ok(event);
        }
    }
}

fn connected_to(peer: libp2p::PeerId) -> impl Fn(&Event) -> bool {
    move |event| matches!(event, Event::Connected { peer: p, .. } if *p == peer)
}

fn disconnected_from(peer: libp2p::PeerId) -> impl Fn(&Event) -> bool {
    move |event| matches!(event, Event::Disconnected { peer: p, .. } if *p == peer)
}

#[tokio::test]
async fn a_given_key_is_the_identity_and_a_data_dir_of_another_key_refuses_it() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let key = SigningKey::from_bytes(&[3; 32]);
    let start = |key: SigningKey| {
        Node::builder()
            .name("alice")
            .data_dir(dir.path())
            .mdns(false)
            .keypair(key)
            .spawn()
    };
    let node = start(key.clone()).await?;
    assert_eq!(node.author(), Author::of(&key));
    node.shutdown().await;
    let again = start(key.clone()).await?;
    assert_eq!(again.author(), Author::of(&key), "the same key is accepted");
    again.shutdown().await;
    let in_memory = Node::builder()
        .name("alice")
        .in_memory()
        .mdns(false)
        .keypair(SigningKey::from_bytes(&[4; 32]))
        .spawn()
        .await?;
    assert_eq!(
        in_memory.author(),
        Author::of(&SigningKey::from_bytes(&[4; 32])),
        "an in-memory node takes the key given too"
    );
    in_memory.shutdown().await;
    match start(SigningKey::from_bytes(&[4; 32])).await {
        Err(NodeError::Identity(IdentityError::OtherKey { path })) => {
            assert!(path.ends_with("identity.key"), "{path}");
        }
        Err(other) => bail!("refused for another reason: {other}"),
        Ok(_) => bail!("a data dir of another key took the key given"),
    }
    Ok(())
}

#[tokio::test]
async fn dial_connects_after_start_and_disconnect_stops_the_exchange() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let ann = start_node("ann", dirs[0].path(), &[]).await?;
    let ben = start_node("ben", dirs[1].path(), &[]).await?;
    let (mut ann_events, mut ben_events) = (ann.events(), ben.events());
    ann.dial(address_of(&ben)).await?;
    let event = wait_for(&mut ann_events, "connection", connected_to(ben.peer_id())).await?;
    let Event::Connected {
        direction, address, ..
    } = event
    else {
        bail!("not a connection: {event:?}");
    };
    assert_eq!(direction, Direction::Dialed);
    let dialed = address_of(&ben).to_string();
    assert!(
        dialed.starts_with(&address.to_string()),
        "{address} of {dialed}"
    );
    let event = wait_for(&mut ben_events, "connection", connected_to(ann.peer_id())).await?;
    let Event::Connected {
        direction, address, ..
    } = event
    else {
        bail!("not a connection: {event:?}");
    };
    assert_eq!(direction, Direction::Listened);
    assert!(
        address.to_string().starts_with("/ip4/127.0.0.1/tcp/"),
        "{address}"
    );
    ann.send("hello")?;
    ben.wait_synced(&ann, DEADLINE).await?;
    ann.wait_synced(&ben, DEADLINE).await?;

    ann.disconnect(ben.peer_id()).await?;
    wait_for(
        &mut ann_events,
        "disconnection",
        disconnected_from(ben.peer_id()),
    )
    .await?;
    ann.send("not redialed, so ben never gets this")?;
    let error = ben
        .wait_synced(&ann, Duration::from_secs(3))
        .await
        .expect_err("ann is disconnected and does not redial");
    assert_eq!(error.missing.len(), 1, "{error}");
    assert_eq!(
        (
            error.missing[0].author,
            error.missing[0].held,
            error.missing[0].wanted
        ),
        (ann.author(), 3, 4),
        "{error}"
    );
    let words = error.to_string();
    assert!(
        words.contains(&format!(
            "room lan: #{} seqs 4..=4",
            ann.author().fingerprint()
        )),
        "{words}"
    );
    Ok(())
}

#[tokio::test]
async fn a_blocked_peer_is_refused_both_ways_until_unblocked() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let ann = start_node("ann", dirs[0].path(), &[]).await?;
    let ben = start_node("ben", dirs[1].path(), &[]).await?;
    let mut ann_events = ann.events();
    ann.dial(address_of(&ben)).await?;
    wait_for(&mut ann_events, "connection", connected_to(ben.peer_id())).await?;

    // The dialer blocks: the connection closes, and its own redials are refused.
    ann.block(ben.peer_id()).await?;
    wait_for(
        &mut ann_events,
        "disconnection",
        disconnected_from(ben.peer_id()),
    )
    .await?;
    ben.send("while blocked")?;
    let error = ann
        .wait_synced(&ben, Duration::from_secs(2))
        .await
        .expect_err("ann refuses ben");
    assert_eq!(error.missing[0].author, ben.author(), "{error}");
    ann.unblock(ben.peer_id()).await?;
    let connected = connected_to(ben.peer_id());
    let event = wait_for(&mut ann_events, "reconnection", |event| {
        connected(event) || matches!(event, Event::ConnectionFailed { .. })
    })
    .await?;
    assert!(
        connected(&event),
        "a peer blocked here is not dialed, so no failure is said: {event:?}"
    );
    ann.wait_synced(&ben, DEADLINE).await?;

    // The listener blocks: the dialer's redials are refused by it.
    ben.block(ann.peer_id()).await?;
    wait_for(
        &mut ann_events,
        "disconnection",
        disconnected_from(ben.peer_id()),
    )
    .await?;
    ben.send("blocked by ben")?;
    ann.wait_synced(&ben, Duration::from_secs(2))
        .await
        .expect_err("ben refuses ann");
    ben.unblock(ann.peer_id()).await?;
    ann.wait_synced(&ben, DEADLINE).await?;
    Ok(())
}

#[tokio::test]
async fn dropping_a_node_stops_it() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let ann = start_node("ann", dirs[0].path(), &[]).await?;
    let ben = start_node("ben", dirs[1].path(), &[address_of(&ann)]).await?;
    let mut ben_events = ben.events();
    wait_for(&mut ben_events, "connection", connected_to(ann.peer_id())).await?;
    let ann_id = ann.peer_id();
    drop(ann);
    wait_for(&mut ben_events, "disconnection", disconnected_from(ann_id)).await?;
    Ok(())
}

#[tokio::test]
async fn nodes_on_the_memory_transport_connect_and_sync_without_ports() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let start = |name: &'static str, dir: &std::path::Path| {
        Node::builder()
            .name(name)
            .data_dir(dir)
            .mdns(false)
            .transport(Transport::Memory)
            .listen("/memory/0".parse().expect("a memory address"))
            .spawn()
    };
    let ann = start("ann", dirs[0].path()).await?;
    let ben = start("ben", dirs[1].path()).await?;
    let address = address_of(&ben);
    assert!(address.to_string().starts_with("/memory/"), "{address}");
    let mut ann_events = ann.events();
    ann.dial(address).await?;
    let event = wait_for(&mut ann_events, "connection", connected_to(ben.peer_id())).await?;
    assert!(
        matches!(&event, Event::Connected { name, .. } if name == "ben"),
        "{event:?}"
    );
    ann.send("over memory")?;
    ben.send("back")?;
    ben.wait_synced(&ann, DEADLINE).await?;
    ann.wait_synced(&ben, DEADLINE).await?;

    let tcp = "/ip4/127.0.0.1/tcp/4001".parse()?;
    match ann.dial(tcp).await {
        Err(NodeError::Dial { reason, .. }) => assert!(reason.contains("/memory/N"), "{reason}"),
        other => bail!("a TCP address given to a memory node: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_name_pinned_to_another_key_is_a_typed_conflict() -> anyhow::Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let ann = start_node("ann", dirs[0].path(), &[]).await?;
    let mut events = ann.events();
    let bob = start_node("bob", dirs[1].path(), &[address_of(&ann)]).await?;
    wait_for(&mut events, "connection", connected_to(bob.peer_id())).await?;
    let other_bob = start_node("bob", dirs[2].path(), &[address_of(&ann)]).await?;
    let event = wait_for(&mut events, "name conflict", |event| {
        matches!(event, Event::NameConflict { .. })
    })
    .await?;
    assert_eq!(
        event,
        Event::NameConflict {
            room: "lan".into(),
            name: "bob".into(),
            claimed_by: other_bob.author(),
            owner: bob.author(),
        }
    );
    Ok(())
}

#[tokio::test]
async fn the_config_sets_the_redial_backoff_and_the_notice_interval() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config::default()
        .with_redial_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .with_notice_interval(Duration::from_millis(500));
    let ann = Node::builder()
        .name("ann")
        .data_dir(dir.path())
        .mdns(false)
        .transport(Transport::Memory)
        .config(config)
        .spawn()
        .await?;
    let mut events = ann.events();
    // Nobody listens there: each redial fails at once.
    ann.dial("/memory/4094967295".parse()?).await?;
    let failed = |event: &Event| matches!(event, Event::ConnectionFailed { .. });
    let first = wait_for(&mut events, "failure", failed).await?;
    assert!(
        matches!(
            &first,
            Event::ConnectionFailed {
                count: 1,
                reason: ConnectFailure::Refused,
                ..
            }
        ),
        "{first:?}"
    );
    // With the chat's 30 s interval, the repeats would be said after the test's deadline.
    let summary = wait_for(&mut events, "summary of the repeats", failed).await?;
    let Event::ConnectionFailed { count, .. } = summary else {
        bail!("not a failure: {summary:?}");
    };
    assert!(
        count > 1,
        "redialed every 50 ms at most, so several repeats: {count}"
    );
    Ok(())
}
