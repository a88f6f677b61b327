//! A data directory written by the previous release (`tests/fixtures/previous-release`) opens
//! with this one with nothing lost and nothing said: no damage (it has no heads record), no
//! own log "behind" (it has no `own-head` mark), and the user goes on typing on top of it.

use std::path::Path;
use std::time::Duration;

use p2pchat_tests::{Chat, p2pchat_binary, verify_store};

/// Lines in the fixture: alice's 40 imported and 1 typed, and bob's 20.
const LINES: usize = 61;

fn copy_fixture(to: &Path) -> anyhow::Result<std::path::PathBuf> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/previous-release/alice");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(to)
        .status()?;
    anyhow::ensure!(copied.success(), "copying {}", fixture.display());
    Ok(to.join("alice"))
}

fn export(dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(p2pchat_binary())
        .args(["export", "--name", "alice", "--data-dir"])
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success() && out.stderr.is_empty(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
        .map(|line| {
            line.split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_previous_release_opens_with_nothing_lost() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = copy_fixture(root.path())?;

    let exported = export(&dir)?;
    assert_eq!(exported.len(), LINES, "{exported:#?}");
    assert!(exported.contains(&"alice> alice line 40".to_owned()));
    assert!(exported.contains(&"bob> bob line 20".to_owned()));
    assert!(exported.contains(&"alice> hi bob, from the old release".to_owned()));

    let doctor = std::process::Command::new(p2pchat_binary())
        .args(["doctor", "--name", "alice", "--data-dir"])
        .arg(&dir)
        .output()?;
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(doctor.status.success(), "doctor: {report}");

    let dir_arg = dir.to_str().unwrap_or_default().to_owned();
    let mut alice = Chat::start_user("alice", &dir_arg, &[], &[])?;
    alice.listen_addr().await?;
    alice.say("typed after the upgrade").await?;
    alice.wait_line("alice> typed after the upgrade").await?;
    alice.drain_stderr(Duration::from_millis(500)).await;
    let log = alice.stderr_tail();
    assert!(!log.contains("warning"), "a quiet upgrade:{log}");
    assert!(alice.interrupt().await?);

    let verified = verify_store(&dir)?;
    assert!(verified.forked.is_empty());
    assert_eq!(verified.texts.len(), LINES + 1);
    assert_eq!(export(&dir)?.len(), LINES + 1);
    Ok(())
}
