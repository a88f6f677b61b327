//! Crash safety: `p2pchat` killed with SIGKILL at random moments, while it appends its own lines
//! and while it catches up from a peer, then restarted. After every kill each log in its store is
//! a valid chain, its own seq carries on (no self-fork), and every line it had printed as stored
//! is there. CI runs a few cycles; `P2PCHAT_CRASH_CYCLES=50` runs the stress version (see
//! docs/reliability.md).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use p2pchat_tests::{Chat, verify_store};
use rand::Rng;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Lines sent in each cycle of the append test (so 50 cycles stay a log of at most 20,000).
const LINES_PER_CYCLE: usize = 400;

/// alice's log in the catch-up test: her profile, her encryption key and 19,999 lines.
const LOG: u64 = 20_001;

fn cycles() -> usize {
    std::env::var("P2PCHAT_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4)
}

fn path(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().unwrap_or_default().to_owned()
}

/// Kills `chat` with SIGKILL and returns the stdout lines it had printed but we had not read.
/// A crash is not damage: a restart after one must not say the store is damaged.
async fn kill(mut chat: Chat) -> anyhow::Result<Vec<String>> {
    let said = chat.stderr_tail();
    anyhow::ensure!(
        !said.contains("damaged"),
        "a crash restart warned of damage: {said}"
    );
    chat.child.start_kill()?;
    tokio::time::timeout(p2pchat_tests::DEADLINE, chat.child.wait()).await??;
    let mut rest = Vec::new();
    while let Ok(Some(line)) = chat.stdout.next_line().await {
        rest.push(line);
    }
    Ok(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_appending_it_loses_no_acknowledged_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut own_head = 0;
    for cycle in 0..cycles() {
        let mut chat = Chat::start_user("alice", &path(&dir), &[], &[])?;
        chat.listen_addr().await?;
        // Even cycles paste 400 lines at once (stored in group commits), odd cycles type about one
        // every 2 ms (one durable append each); stdout is read meanwhile. The kill comes at a
        // random moment in the first 600 ms.
        let input: Vec<u8> = (0..LINES_PER_CYCLE)
            .flat_map(|i| format!("cycle {cycle} line {i}\n").into_bytes())
            .collect();
        let chunk = if cycle % 2 == 0 {
            input.len()
        } else {
            input.len() / LINES_PER_CYCLE
        };
        let mut typing = tokio::time::interval(Duration::from_millis(2));
        let mut written = 0;
        let kill_at = tokio::time::Instant::now()
            + Duration::from_millis(rand::thread_rng().gen_range(20..600));
        let mut printed = Vec::new();
        loop {
            tokio::select! {
                line = chat.stdout.next_line() => match line? {
                    Some(line) => printed.push(line),
                    None => anyhow::bail!("alice exited by herself{}", chat.stderr_tail()),
                },
                _ = typing.tick(), if written < input.len() => {
                    let end = (written + chunk).min(input.len());
                    chat.stdin.write_all(&input[written..end]).await?;
                    written = end;
                }
                _ = tokio::time::sleep_until(kill_at) => break,
            }
        }
        printed.extend(kill(chat).await?);
        // Lines from earlier cycles are printed again at start (history): count this cycle's.
        let prefix = format!("alice> cycle {cycle} ");
        acknowledged.extend(
            printed
                .iter()
                .filter(|line| line.starts_with(&prefix))
                .cloned(),
        );

        let verified = verify_store(dir.path())?;
        let held: HashSet<String> = verified
            .texts
            .iter()
            .map(|(_, text)| format!("alice> {text}"))
            .collect();
        let lost: Vec<&String> = acknowledged.difference(&held).collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: acknowledged lines lost: {lost:?}"
        );
        let head = verified.heads.values().copied().max().unwrap_or(0);
        assert!(
            head >= own_head,
            "cycle {cycle}: own log shrank from {own_head} to {head}"
        );
        own_head = head;
    }
    assert!(
        !acknowledged.is_empty(),
        "no line was ever acknowledged: the kills came too early"
    );
    eprintln!(
        "appending: {} kills, {} lines acknowledged, all on disk; own log valid up to seq {own_head}",
        cycles(),
        acknowledged.len()
    );
    Ok(())
}

/// Reads `bob`'s JSON events until his catch-up has received a random share (at most three
/// quarters) of what it lacked when alice said hello, so that a kill sent right away lands while
/// the catch-up is under way, at a point that varies from kill to kill: early or late in it, in
/// the middle of a batch or of its sync. Returns early if the catch-up completes first.
async fn reach_a_random_point_of_the_catch_up(bob: &mut Chat) -> anyhow::Result<()> {
    let share = rand::thread_rng().gen_range(0.0..0.75);
    loop {
        let line = bob.next_line().await?;
        // Most lines are messages: only the catch-up's events are parsed, to keep up with bob.
        if !line.contains(r#""type":"sync_"#) {
            continue;
        }
        let event: Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        if event["type"] == "sync_complete" {
            return Ok(());
        }
        let (Some(received), Some(total)) = (event["received"].as_u64(), event["total"].as_u64())
        else {
            bail!("a sync_progress event without its counts: {line}");
        };
        if received as f64 >= share * total as f64 {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_catching_up_it_resumes_without_corruption() -> anyhow::Result<()> {
    let alice_dir = tempfile::tempdir()?;
    // alice (in-process) holds a long log, imported offline, and serves it.
    let lines: String = (0..LOG - 2).map(|i| format!("old line {i}\n")).collect();
    p2pchat_node::import(
        "alice",
        alice_dir.path(),
        p2pchat_protocol::Room::lan(),
        lines.as_bytes(),
        |_, _| {},
    )?;
    let alice = p2pchat_tests::start_node("alice", alice_dir.path(), &[]).await?;
    let alice_addr = p2pchat_tests::address_of(&alice).to_string();
    let alice_author = alice.author();

    // Each cycle kills bob at a random point of his catch-up, found from his progress events
    // (a catch-up can be over in about 100 ms, so a kill at a random time often comes after
    // it); the next start resumes it. When a catch-up completes before the kill all the same,
    // bob starts over with an empty store and the kill does not count: the cycles go on until
    // `cycles()` kills have landed during a catch-up, at most three times that many in all.
    let mut bob_dir = tempfile::tempdir()?;
    let mut held = 0;
    let (mut kills, mut partial) = (0, 0);
    while partial < cycles() && kills < 3 * cycles() {
        kills += 1;
        let mut bob = Chat::start_user("bob", &path(&bob_dir), &[&alice_addr], &["--json"])?;
        reach_a_random_point_of_the_catch_up(&mut bob).await?;
        kill(bob).await?;
        let verified = verify_store(bob_dir.path())?;
        let now = verified.heads.get(&alice_author).copied().unwrap_or(0);
        assert!(
            now >= held,
            "kill {kills}: bob's store went back from {held} to {now}"
        );
        let texts: HashSet<&str> = verified
            .texts
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(
            texts.len(),
            verified.texts.len(),
            "kill {kills}: a line stored twice"
        );
        if now < LOG {
            partial += 1;
            held = now;
        } else {
            (bob_dir, held) = (tempfile::tempdir()?, 0);
        }
    }
    assert_eq!(
        partial,
        cycles(),
        "only {partial} of {kills} kills landed during a catch-up"
    );
    eprintln!(
        "catching up: {kills} kills, {partial} during a catch-up, every store valid after each"
    );
    // Restarted for good, bob ends with all of alice's log, every chain valid.
    let mut bob = Chat::start_user("bob", &path(&bob_dir), &[&alice_addr], &[])?;
    let deadline = tokio::time::Instant::now() + p2pchat_tests::DEADLINE;
    loop {
        // The catch-up ends with alice's last line shown.
        let line = tokio::time::timeout_at(deadline, bob.stdout.next_line()).await??;
        if line.as_deref() == Some(&*format!("alice> old line {}", LOG - 3)) {
            break;
        }
        anyhow::ensure!(line.is_some(), "bob exited{}", bob.stderr_tail());
    }
    assert!(bob.interrupt().await?);
    alice.shutdown().await;
    let verified = verify_store(bob_dir.path())?;
    assert_eq!(
        verified.heads.get(&alice_author),
        Some(&LOG),
        "alice's profile, her encryption key and every line"
    );
    let texts: HashSet<&str> = verified
        .texts
        .iter()
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(
        (verified.texts.len(), texts.len()),
        (LOG as usize - 2, LOG as usize - 2),
        "each line once"
    );
    Ok(())
}
