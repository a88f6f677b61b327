//! Private rooms (`--room-key`), end to end with the binary: every connection is plain TCP +
//! Noise + Yamux, and then each side proves which private rooms it holds the key of. Nodes
//! holding the same key chat; a node with another key or none shares no room with them: the
//! connection is closed after its hello, both sides say so, and nothing is exchanged either way.

use std::time::Duration;

use p2pchat_tests::{Chat, export, keygen_room, p2pchat_binary};

/// What each side of a connection sharing no room says.
const NO_SHARED_ROOM: &str = "shares no room with us";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_room_writes_a_new_key_file_and_never_overwrites_one() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("team.key");
    let keygen = || {
        std::process::Command::new(p2pchat_binary())
            .arg("keygen-room")
            .arg(&key)
            .output()
    };
    let made = keygen()?;
    assert!(
        made.status.success() && String::from_utf8_lossy(&made.stderr).contains("wrote a room key")
    );
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&key)?;
    let again = keygen()?;
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create room key"));
    assert_eq!(std::fs::read(&key)?, before);

    let not_a_key = dir.path().join("not-a-key"); // a directory, not a key file
    std::fs::create_dir_all(&not_a_key)?;
    let data = dir.path().join("x").to_string_lossy().into_owned();
    let mut broken = Chat::start_user(
        "x",
        &data,
        &[],
        &["--room-key", &not_a_key.to_string_lossy()],
    )?;
    broken
        .wait_stderr("info> error: cannot read room key")
        .await?;
    assert!(!broken.child.wait().await?.success());
    Ok(())
}

/// The peer id at the end of a `/p2p/<id>` address.
fn peer_id(addr: &str) -> String {
    addr.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Waits for `chat` to say that the peer `other` shares no room with it.
async fn no_shared_room(chat: &mut Chat, other: &str) -> anyhow::Result<String> {
    chat.wait_stderr_with_all(&[NO_SHARED_ROOM, other]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_key_exchange_anything_and_outsiders_are_told() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (key, other_key) = (path("team.key"), path("other.key"));
    keygen_room(key.as_ref())?;
    keygen_room(other_key.as_ref())?;

    let mut alice = Chat::start_user("alice", &path("alice"), &[], &["--room-key", &key])?;
    let alice_addr = alice.listen_addr().await?;
    let alice_id = peer_id(&alice_addr);
    alice.say("members only").await?;
    alice.wait_line("alice> members only").await?;

    // Another key: both sides say the peer shares no room with them.
    let mut mallory = Chat::start_user(
        "mallory",
        &path("mallory"),
        &[&alice_addr],
        &["--room-key", &other_key],
    )?;
    let mallory_id = peer_id(&mallory.listen_addr().await?);
    mallory.say("let me in").await?;
    mallory.wait_line("mallory> let me in").await?;
    no_shared_room(&mut mallory, &alice_id).await?;
    no_shared_room(&mut alice, &mallory_id).await?;
    // No key at all (the open LAN room only): the same.
    let mut eve = Chat::start_user("eve", &path("eve"), &[&alice_addr], &[])?;
    let eve_addr = eve.listen_addr().await?;
    let eve_id = peer_id(&eve_addr);
    eve.say("anyone?").await?;
    eve.wait_line("eve> anyone?").await?;
    no_shared_room(&mut eve, &alice_id).await?;
    no_shared_room(&mut alice, &eve_id).await?;
    // And the other way round: a member dials an outsider.
    let mut carol = Chat::start_user("carol", &path("carol"), &[&eve_addr], &["--room-key", &key])?;
    let carol_id = peer_id(&carol.listen_addr().await?);
    no_shared_room(&mut carol, &eve_id).await?;
    no_shared_room(&mut eve, &carol_id).await?;

    // The right key: chat, both ways.
    let mut bob = Chat::start_user("bob", &path("bob"), &[&alice_addr], &["--room-key", &key])?;
    bob.wait_line("alice> members only").await?;
    bob.say("hi alice").await?;
    alice.wait_line("bob> hi alice").await?;

    // Nothing crossed: no outsider saw a member's line or name (names come with the room's
    // hello, after the proofs), no member an outsider's.
    let quiet = Duration::from_secs(2);
    for (chat, secrets) in [
        (&mut mallory, &["alice", "carol", "members only"][..]),
        (&mut eve, &["alice", "carol", "members only"]),
        (&mut alice, &["mallory", "let me in", "anyone?"]),
        (&mut carol, &["alice", "mallory", "members only", "anyone?"]),
    ] {
        let more = chat.lines_until_quiet(quiet).await?;
        assert!(more.is_empty(), "{} saw {more:?}", chat.name);
        let stderr = chat.stderr_lines();
        for secret in secrets {
            assert!(
                stderr.iter().all(|line| !line.contains(secret)),
                "{} learnt {secret:?}: {stderr:#?}",
                chat.name
            );
        }
    }
    for chat in [alice, carol, bob, mallory, eve] {
        assert!(chat.interrupt().await?);
    }
    let exported = |name: &str, args: &[&str]| export(name, dir.path().join(name).as_ref(), args);
    assert_eq!(
        exported("alice", &["--room-key", &key])?,
        ["alice> members only", "bob> hi alice"]
    );
    assert_eq!(
        exported("bob", &["--room-key", &key])?,
        ["alice> members only", "bob> hi alice"]
    );
    assert_eq!(
        exported("mallory", &["--room-key", &other_key])?,
        ["mallory> let me in"]
    );
    assert_eq!(exported("eve", &[])?, ["eve> anyone?"]);
    assert!(exported("carol", &["--room-key", &key])?.is_empty());
    Ok(())
}
