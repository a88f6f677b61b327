//! Failures to listen or connect are said, in words, by the real binary: a listen port already
//! taken, a listen address not on this host, a refused port, a wrong `/p2p/` id, a peer that
//! accepts TCP but never speaks (room-key mismatches are in `private_room.rs`).

use std::time::Duration;

use p2pchat_tests::{Chat, DEADLINE};

fn data_dir(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_port_in_use_is_a_clear_error_and_the_first_node_is_unaffected()
-> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    let mut alice = Chat::start_user("alice", &data_dir(&dirs, "alice"), &[], &[])?;
    let (alice_id, port) = alice.identity().await?;
    let taken = format!("/ip4/127.0.0.1/tcp/{port}");

    let bob_dir = data_dir(&dirs, "bob");
    let mut bob = Chat::start(&["--name", "bob", "--data-dir", &bob_dir, "--listen", &taken])?;
    let error = bob.wait_stderr("info> error: ").await?;
    assert!(
        error.starts_with(&format!(
            "info> error: cannot listen on {taken}: address already in use (another p2pchat?"
        )),
        "{error}"
    );
    let status = tokio::time::timeout(DEADLINE, bob.child.wait()).await??;
    assert!(!status.success(), "bob must exit with an error");

    // Alice still has her port to herself: a dialer reaches her, and only her.
    let mut carol = Chat::start_user(
        "carol",
        &data_dir(&dirs, "carol"),
        &[&format!("{taken}/p2p/{alice_id}")],
        &[],
    )?;
    carol.wait_stderr("info> connected to alice (").await?;
    carol.say("hi alice").await?;
    alice.wait_line("carol> hi alice").await?;
    for chat in [alice, carol] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_not_on_this_host_is_an_error_with_a_reason() -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    // 203.0.113.0/24 is reserved for documentation: no host has it.
    let address = "/ip4/203.0.113.9/tcp/4001";
    let dir = data_dir(&dirs, "alice");
    let mut alice = Chat::start(&["--name", "alice", "--data-dir", &dir, "--listen", address])?;
    let error = alice.wait_stderr("info> error: ").await?;
    let reason = error
        .strip_prefix(&format!("info> error: cannot listen on {address}: "))
        .unwrap_or_default();
    assert!(
        reason.starts_with("cannot assign requested address"),
        "no reason in {error:?}"
    );
    let status = tokio::time::timeout(DEADLINE, alice.child.wait()).await??;
    assert!(!status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_said_within_seconds_and_not_on_every_redial() -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    let target = "/ip4/127.0.0.1/tcp/1";
    let mut alice = Chat::start_user("alice", &data_dir(&dirs, "alice"), &[target], &[])?;
    alice
        .wait_stderr_within(
            &format!("info> cannot connect to {target}: connection refused"),
            Duration::from_secs(5),
        )
        .await?;
    // Redials follow at 0.5 s, 1.5 s, 3.5 s…: none of them is said again.
    let repeated: Vec<String> = alice
        .drain_stderr(Duration::from_secs(4))
        .await
        .into_iter()
        .filter(|line| line.contains("cannot connect"))
        .collect();
    assert!(repeated.is_empty(), "said again: {repeated:?}");
    assert!(alice.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_peer_id_is_said() -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    let mut alice = Chat::start_user("alice", &data_dir(&dirs, "alice"), &[], &[])?;
    let (alice_id, port) = alice.identity().await?;
    let mut carol = Chat::start_user("carol", &data_dir(&dirs, "carol"), &[], &[])?;
    let (carol_id, _) = carol.identity().await?;
    assert!(carol.interrupt().await?);

    // Bob has alice's address, with carol's id.
    let target = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{carol_id}");
    let mut bob = Chat::start_user("bob", &data_dir(&dirs, "bob"), &[&target], &[])?;
    let line = bob
        .wait_stderr(&format!("info> cannot connect to {target}: "))
        .await?;
    assert!(
        line.contains(&format!(
            "the peer there is {alice_id}, not the /p2p/ id given"
        )),
        "{line}"
    );
    for chat in [alice, bob] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_accepts_but_never_answers_is_said() -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    // Takes connections and holds them, silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = silent.local_addr()?.port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            if held.len() < 16 {
                held.push(socket);
            }
        }
    });
    let target = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut alice = Chat::start_user("alice", &data_dir(&dirs, "alice"), &[&target], &[])?;
    // The handshake timeout is 10 s.
    alice
        .wait_stderr_within(
            &format!(
                "info> cannot connect to {target}: the connection opened but the handshake did \
                 not finish in time"
            ),
            Duration::from_secs(25),
        )
        .await?;
    assert!(alice.interrupt().await?);
    holder.abort();
    Ok(())
}
