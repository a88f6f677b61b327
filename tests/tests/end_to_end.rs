//! The `p2pchat` binary driven as a user would: lines on stdin, `NAME> TEXT` on stdout.

use p2pchat_tests::Chat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_started_later_sees_what_alice_typed() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let (alice_dir, bob_dir) = (dir(&dirs.0), dir(&dirs.1));

    let mut alice = Chat::start_user("alice", &alice_dir, &[], &[])?;
    let alice_addr = alice.listen_addr().await?;
    alice.say("hello").await?;
    assert_eq!(alice.next_line().await?, "alice> hello");

    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    assert_eq!(bob.next_line().await?, "alice> hello");
    bob.wait_stderr("info> connected to alice (").await?;
    bob.say("hi alice").await?;
    assert_eq!(bob.next_line().await?, "bob> hi alice");
    assert_eq!(alice.next_line().await?, "bob> hi alice");

    // A line over the limit is refused with a message and not sent.
    bob.say(&"x".repeat(5000)).await?;
    let refusal = bob.wait_stderr("info> error: line not sent").await?;
    assert!(refusal.contains("4096"), "{refusal}");
    assert!(bob.interrupt().await?, "bob exits cleanly on SIGINT");

    // Restarted, bob shows his history once, then catches up what he missed.
    alice.say("while you were out").await?;
    assert_eq!(alice.next_line().await?, "alice> while you were out");
    let mut bob = Chat::start_user("bob", &bob_dir, &[&alice_addr], &[])?;
    assert_eq!(bob.next_line().await?, "alice> hello");
    assert_eq!(bob.next_line().await?, "bob> hi alice");
    assert_eq!(bob.next_line().await?, "alice> while you were out");
    assert!(bob.interrupt().await?);
    assert!(alice.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_dir_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().unwrap_or_default().to_owned();
    let mut first = Chat::start_user("alice", &dir, &[], &[])?;
    first.listen_addr().await?;
    let mut second = Chat::start_user("alice", &dir, &[], &[])?;
    let error = second.wait_stderr("info> error:").await?;
    assert!(
        error.contains("in use by another p2pchat process"),
        "{error}"
    );
    let status = second.child.wait().await?;
    assert!(!status.success());
    first.say("still fine").await?;
    assert_eq!(first.next_line().await?, "alice> still fine");
    assert!(first.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_to_look_for_with_mdns_off_is_warned_about() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().unwrap_or_default().to_owned();
    let mut alice = Chat::start_user("alice", &dir, &["bob"], &[])?;
    let warning = alice.wait_stderr("info> warning:").await?;
    assert!(
        warning.contains("cannot look for bob by name: mDNS is off"),
        "{warning}"
    );
    assert!(alice.interrupt().await?);
    Ok(())
}
