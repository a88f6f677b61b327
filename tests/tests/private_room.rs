//! Private rooms (`--room-key`): nodes holding the same key chat; a node with another key or
//! none cannot connect to them, so it receives nothing and delivers nothing.

use std::time::Duration;

use p2pchat_node::{Node, PeerSpec, RoomKey};
use p2pchat_tests::{address_of, expect_silence, take, texts};

async fn start(
    name: &str,
    dir: &std::path::Path,
    room: Option<RoomKey>,
    peer: Option<&Node>,
) -> anyhow::Result<Node> {
    let mut builder = Node::builder()
        .name(name)
        .data_dir(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .mdns(false);
    if let Some(room) = room {
        builder = builder.room(room.room("team"));
    }
    if let Some(peer) = peer {
        builder = builder.peer(PeerSpec::Addr(address_of(peer)));
    }
    Ok(builder.spawn().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_with_the_room_key_exchange_anything() -> anyhow::Result<()> {
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let (room, other_room) = (RoomKey::generate(), RoomKey::generate());
    let alice = start("alice", dirs[0].path(), Some(room), None).await?;
    alice.send("for members only")?;
    let bob = start("bob", dirs[1].path(), Some(room), Some(&alice)).await?;
    let mallory = start("mallory", dirs[2].path(), Some(other_room), Some(&alice)).await?;
    let eve = start("eve", dirs[3].path(), None, Some(&alice)).await?;
    // And the other way round: alice dials the outsiders too.
    let alice2_dir = tempfile::tempdir()?;
    let alice_dials = start("alice2", alice2_dir.path(), Some(room), Some(&eve)).await?;

    let mut bob_feed = bob.messages();
    assert_eq!(
        texts(&take(&mut bob_feed, 1).await?),
        ["alice> for members only"]
    );
    mallory.send("let me in")?;
    eve.send("me too")?;
    bob.send("hi alice")?;
    let mut alice_feed = alice.messages();
    assert_eq!(
        texts(&take(&mut alice_feed, 2).await?),
        ["alice> for members only", "bob> hi alice"]
    );

    // The outsiders got nothing, delivered nothing and never counted as connected.
    let (mut mallory_feed, mut eve_feed) = (mallory.messages(), eve.messages());
    assert_eq!(
        texts(&take(&mut mallory_feed, 1).await?),
        ["mallory> let me in"]
    );
    assert_eq!(texts(&take(&mut eve_feed, 1).await?), ["eve> me too"]);
    let quiet = Duration::from_secs(2);
    expect_silence(&mut mallory_feed, quiet).await?;
    expect_silence(&mut eve_feed, quiet).await?;
    expect_silence(&mut alice_feed, Duration::from_millis(100)).await?;
    assert!(mallory.connected_peers().is_empty() && eve.connected_peers().is_empty());
    assert_eq!(
        alice.connected_peers().len(),
        1,
        "only bob: {:?}",
        alice.connected_peers()
    );
    assert!(alice_dials.connected_peers().is_empty());
    assert_eq!(mallory.heads().len(), 1, "mallory holds only her own log");
    assert_eq!(eve.heads().len(), 1, "eve holds only her own log");
    for node in [alice, bob, mallory, eve, alice_dials] {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_room_and_room_key_from_the_command_line() -> anyhow::Result<()> {
    use p2pchat_tests::{Chat, p2pchat_binary};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("team.key");
    let key_arg = key.to_str().unwrap_or_default();
    let keygen = || {
        std::process::Command::new(p2pchat_binary())
            .args(["keygen-room", key_arg])
            .output()
    };
    let made = keygen()?;
    assert!(
        made.status.success() && String::from_utf8_lossy(&made.stderr).contains("wrote a room key")
    );
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    let again = keygen()?;
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create room key"));

    let data = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let not_a_key = data("not-a-key"); // a directory, not a key file
    std::fs::create_dir_all(&not_a_key)?;
    let mut broken = Chat::start_user("x", &data("x"), &[], &["--room-key", &not_a_key])?;
    broken
        .wait_stderr("info> error: cannot read room key")
        .await?;
    assert!(!broken.child.wait().await?.success());

    let (alice_dir, bob_dir, eve_dir) = (data("alice"), data("bob"), data("eve"));
    let mut alice = Chat::start_user("alice", &alice_dir, &[], &["--room-key", key_arg])?;
    let alice_addr = alice.listen_addr().await?;
    alice.say("members only").await?;
    alice.wait_line("alice> members only").await?;
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &["--room-key", key_arg])?;
    bob.wait_line("alice> members only").await?;
    let mut eve = Chat::start_user("eve", &eve_dir, &[&alice_addr], &[])?;
    eve.say("anyone?").await?;
    eve.wait_line("eve> anyone?").await?;
    bob.say("hi alice").await?;
    alice.wait_line("bob> hi alice").await?;
    let eve_saw = tokio::time::timeout(Duration::from_secs(2), eve.next_line()).await;
    assert!(eve_saw.is_err(), "eve, without the key, saw {eve_saw:?}");
    assert!(
        eve.drain_stderr(Duration::from_millis(100))
            .await
            .iter()
            .all(|line| !line.contains("connected to"))
    );
    for chat in [alice, bob, eve] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_room_key_is_said_on_both_sides() -> anyhow::Result<()> {
    use p2pchat_tests::Chat;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (key, other_key) = (path("team.key"), path("other.key"));
    RoomKey::create(std::path::Path::new(&key))?;
    RoomKey::create(std::path::Path::new(&other_key))?;
    let says_wrong_key = |line: &str| line.contains("wrong room key");

    let mut alice = Chat::start_user("alice", &path("alice"), &[], &["--room-key", &key])?;
    let alice_addr = alice.listen_addr().await?;
    // Another key: the dialer and the listener say so.
    let mut mallory = Chat::start_user(
        "mallory",
        &path("mallory"),
        &[&alice_addr],
        &["--room-key", &other_key],
    )?;
    let said = mallory
        .wait_stderr(&format!("info> cannot connect to {alice_addr}: "))
        .await?;
    assert!(says_wrong_key(&said), "{said}");
    let said = alice
        .wait_stderr("info> a connection from 127.0.0.1 failed: ")
        .await?;
    assert!(says_wrong_key(&said), "{said}");
    // No key at all: the dialer says so too.
    let mut eve = Chat::start_user("eve", &path("eve"), &[&alice_addr], &[])?;
    let said = eve
        .wait_stderr(&format!("info> cannot connect to {alice_addr}: "))
        .await?;
    assert!(says_wrong_key(&said), "{said}");
    for chat in [alice, mallory, eve] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}
