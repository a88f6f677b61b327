//! Liveness with the real binary (mDNS off, 127.0.0.1): a peer that stops answering
//! (SIGSTOP: hung, suspended, or behind a cut cable) is shown as disconnected within a few
//! seconds, and once it runs again (SIGCONT) the two reconnect and chat.

use std::time::{Duration, Instant};

use anyhow::Context;
use p2pchat_tests::{Chat, Frozen};

/// How soon the frozen peer must be shown as disconnected (the goal is 3 s; the margin is for
/// a loaded machine).
const DETECTION_LIMIT: Duration = Duration::from_secs(6);
/// How soon after SIGCONT a line typed on either side must reach the other.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_is_dropped_within_seconds_and_chats_again_once_thawed() -> anyhow::Result<()>
{
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let (alice_dir, bob_dir) = (dir(&dirs.0), dir(&dirs.1));
    let mut alice = Chat::start_user("alice", &alice_dir, &[], &[])?;
    let alice_addr = alice.listen_addr().await?;
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    alice.wait_stderr("info> connected to bob (").await?;
    bob.wait_stderr("info> connected to alice (").await?;
    bob.say("about to freeze").await?;
    alice.wait_line("bob> about to freeze").await?;

    let frozen = Frozen::freeze(bob.child.id().context("bob has exited")?)?;
    let stopped = Instant::now();
    alice
        .wait_stderr_within("info> disconnected from bob", DETECTION_LIMIT)
        .await?;
    eprintln!("alice saw bob frozen after {:?}", stopped.elapsed());

    frozen.thaw()?;
    let thawed = Instant::now();
    let recovered = async {
        alice.say("are you back?").await?;
        bob.wait_line("alice> are you back?").await?;
        bob.say("yes").await?;
        alice.wait_line("bob> yes").await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(RECOVERY_LIMIT, recovered)
        .await
        .with_context(|| {
            format!(
                "no chat within {RECOVERY_LIMIT:?} of SIGCONT{}{}",
                alice.stderr_tail(),
                bob.stderr_tail()
            )
        })??;
    eprintln!("chatting again {:?} after SIGCONT", thawed.elapsed());
    assert!(bob.interrupt().await?, "bob exits cleanly on SIGINT");
    assert!(alice.interrupt().await?, "alice exits cleanly on SIGINT");
    Ok(())
}
