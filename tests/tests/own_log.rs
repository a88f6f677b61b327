//! Own log first: after bob's store is lost or rolled back (his key kept), the `p2pchat` binary
//! must not write over his own past. Each test has bob chat with alice, damages bob's store
//! while both are down, restarts bob with `--peer alice` and has him type before alice is back
//! and after: every line must reach alice, neither store may hold a fork, and bob must say
//! what he held and what he restored.

use std::path::Path;

use p2pchat_tests::{Chat, verify_store};

/// A free 127.0.0.1 port below the kernel's ephemeral range (32768 up), so alice can come back
/// on the address bob dials: a port `bind(0)` handed out can be taken, while alice is down, as
/// the local end of any outgoing connection on the machine. Each test starts its scan at its
/// own offset (from its process) and keeps to its own ports (by its damage, modulo 3), so the
/// three tests here never pick one port.
fn free_port(damage: Damage) -> anyhow::Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = (std::process::id() * 3 + damage as u32) % SPAN;
    (0..SPAN / 3)
        .map(|i| (LOW + (start + i * 3) % SPAN) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| anyhow::anyhow!("no free port in {LOW}..{}", LOW + SPAN))
}

fn start_alice(dir: &str, port: u16) -> anyhow::Result<Chat> {
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    Chat::start(&["--name", "alice", "--data-dir", dir, "--listen", &listen])
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// How bob's data directory is damaged while he is down.
#[derive(Clone, Copy)]
enum Damage {
    /// `store/` deleted; `identity.key` and the mark beside it kept.
    Wiped,
    /// `store/` replaced by a copy taken after his first two lines (a lost journal tail, or
    /// a store restored from an old backup).
    StoreRolledBack,
    /// The whole data directory replaced by that copy, mark included: only alice's hello can
    /// tell bob his log went further.
    DirRolledBack,
}

/// Bob types `b1`…`b4` (a copy of his data dir is taken after `b2`), the damage is done, bob
/// comes back: every line reaches alice, nothing forks. Returns bob's stderr lines of the
/// restart.
async fn bob_recovers(damage: Damage) -> anyhow::Result<Vec<String>> {
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let dir = |d: &Path| d.to_str().map(str::to_owned).unwrap_or_default();
    let (alice_dir, bob_dir) = (dir(dirs.0.path()), dir(dirs.1.path()));
    let backup = dirs.2.path().join("bob");
    let port = free_port(damage)?;

    let mut alice = start_alice(&alice_dir, port)?;
    let alice_addr = alice.listen_addr().await?;
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    bob.wait_stderr("info> connected to alice (").await?;
    for line in ["b1", "b2"] {
        bob.say(line).await?;
        alice.wait_line(&format!("bob> {line}")).await?;
    }
    assert!(bob.interrupt().await?);
    copy_dir(dirs.1.path(), &backup)?;
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    bob.wait_stderr("info> connected to alice (").await?;
    for line in ["b3", "b4"] {
        bob.say(line).await?;
        alice.wait_line(&format!("bob> {line}")).await?;
    }
    assert!(bob.interrupt().await?);
    assert!(alice.interrupt().await?);

    let store = dirs.1.path().join("store");
    match damage {
        Damage::Wiped => std::fs::remove_dir_all(&store)?,
        Damage::StoreRolledBack => {
            std::fs::remove_dir_all(&store)?;
            copy_dir(&backup.join("store"), &store)?;
        }
        Damage::DirRolledBack => {
            std::fs::remove_dir_all(dirs.1.path())?;
            copy_dir(&backup, dirs.1.path())?;
        }
    }
    let dir_rolled_back = matches!(damage, Damage::DirRolledBack);

    // Bob comes back while alice is away, and types.
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    bob.listen_addr().await?;
    if !dir_rolled_back {
        let behind = bob
            .wait_stderr("info> warning: your own log is behind")
            .await?;
        let store_has = if matches!(damage, Damage::Wiped) {
            0
        } else {
            4
        };
        assert!(
            behind.contains(&format!("seq 6 expected, store has {store_has}")),
            "{behind}"
        );
        bob.say("typed while alone").await?;
        let held = bob.wait_stderr("info> warning: held, not sent yet").await?;
        assert!(held.contains("typed while alone"), "{held}");
    }

    // Alice is back: bob gets his log from her, then his held line goes on top.
    let mut alice = start_alice(&alice_dir, port)?;
    bob.wait_stderr("info> connected to alice (").await?;
    if dir_rolled_back {
        bob.say("typed once connected").await?;
    }
    let restored = bob.wait_stderr("info> restored ").await?;
    let expected = match damage {
        Damage::Wiped => "info> restored 6 of your own entries from alice",
        Damage::StoreRolledBack | Damage::DirRolledBack => {
            "info> restored 2 of your own entries from alice"
        }
    };
    assert!(restored.starts_with(expected), "{restored}");
    bob.say("typed after").await?;
    let first = if dir_rolled_back {
        "bob> typed once connected"
    } else {
        "bob> typed while alone"
    };
    for line in [first, "bob> typed after"] {
        alice.wait_line(line).await?;
        bob.wait_line(line).await?;
    }
    let stderr = bob
        .drain_stderr(std::time::Duration::from_millis(200))
        .await;
    assert!(bob.interrupt().await?);
    assert!(alice.interrupt().await?);

    // Both stores: valid chains, no fork proof, bob's lines once each and in order.
    let bob_lines = ["b1", "b2", "b3", "b4", &first[5..], "typed after"];
    for dir in [dirs.0.path(), dirs.1.path()] {
        let verified = verify_store(dir)?;
        assert!(
            verified.forked.is_empty(),
            "{}: forked logs {:?}",
            dir.display(),
            verified.forked
        );
        let bob_author = verified
            .texts
            .iter()
            .find(|(_, text)| text == "b1")
            .map(|(author, _)| *author);
        let texts: Vec<&str> = verified
            .texts
            .iter()
            .filter(|(author, _)| Some(*author) == bob_author)
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(texts, bob_lines, "{}", dir.display());
    }
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_gets_its_own_log_back_before_anything_is_appended() -> anyhow::Result<()> {
    bob_recovers(Damage::Wiped).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_tail_gets_it_back_before_anything_is_appended() -> anyhow::Result<()>
{
    bob_recovers(Damage::StoreRolledBack).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_restored_from_an_old_backup_learns_its_log_from_the_peer() -> anyhow::Result<()>
{
    bob_recovers(Damage::DirRolledBack).await?;
    Ok(())
}
