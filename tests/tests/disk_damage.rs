//! Damage on disk, end to end with the real binary: a store of a few thousand entries (alice's
//! own, imported, and bob's, received in a short chat) gets a zeroed block, a truncated or
//! deleted journal, or a flipped bit in its journal or a table. Each time the node says what
//! happened with counts that match what is actually missing, `p2pchat doctor` reports the
//! same counts, every entry that still verifies is kept, and bob refills the rest. A healthy
//! restart says nothing. A read-only data directory (a read-only bind mount in a private mount
//! namespace, since tests run as root) can still be exported, and the node refuses it with a
//! message naming the path.

use std::path::Path;
use std::process::Command;

use p2pchat_tests::{Chat, import, p2pchat_binary, verify_store};

const ALICE_LINES: usize = 3_000;
const BOB_LINES: usize = 2_000;
/// The newest line of each log, as printed: holding it means holding the whole log.
const LAST_LINES: [&str; 2] = ["alice> alice line 2999", "bob> bob line 1999"];
/// alice's store: both profiles, both encryption keys and every line.
const TOTAL: u64 = (ALICE_LINES + BOB_LINES + 4) as u64;

/// `lines` lines `NAME line N` imported as `name` into `dir`.
fn import_lines(name: &str, dir: &Path, lines: usize) -> anyhow::Result<()> {
    let input: String = (0..lines).map(|i| format!("{name} line {i}\n")).collect();
    import(name, dir, &input)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// alice's and bob's data directories in `root`, after alice caught up with bob.
async fn fixture(root: &Path) -> anyhow::Result<()> {
    import_lines("alice", &root.join("alice"), ALICE_LINES)?;
    import_lines("bob", &root.join("bob"), BOB_LINES)?;
    let mut bob = Chat::start_user("bob", s(&root.join("bob")), &[], &[])?;
    let addr = bob.listen_addr().await?;
    let mut alice = Chat::start_user("alice", s(&root.join("alice")), &[&addr], &[])?;
    alice.wait_lines_unordered(&LAST_LINES).await?;
    bob.wait_lines_unordered(&LAST_LINES).await?;
    assert!(alice.interrupt().await? && bob.interrupt().await?);
    assert_eq!(held(&root.join("alice"))?, TOTAL);
    Ok(())
}

fn held(dir: &Path) -> anyhow::Result<u64> {
    Ok(verify_store(dir)?.heads.values().sum())
}

fn journal(dir: &Path) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("store"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    found.sort();
    found.pop().expect("a journal")
}

/// Bytes of `path` up to its preallocated zeros.
fn written(path: &Path) -> Vec<u8> {
    let mut data = std::fs::read(path).unwrap();
    let end = data.len() - data.iter().rev().take_while(|b| **b == 0).count();
    data.truncate(end);
    data
}

/// `2,653` in `text` after `before` and before ` entries lost`, or 0 if nothing was lost.
fn lost_in(text: &str) -> u64 {
    let Some(end) = text.find(" entries lost") else {
        return 0;
    };
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits
        .chars()
        .rev()
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// Runs `p2pchat doctor` on alice's data dir: (exit code, stdout + stderr).
fn doctor(dir: &Path, repair: bool) -> anyhow::Result<(i32, String)> {
    let mut command = Command::new(p2pchat_binary());
    command.args(["doctor", "--name", "alice", "--data-dir", s(dir)]);
    if repair {
        command.arg("--repair");
    }
    let out = command.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Applies `fault` to alice's store, then: doctor finds it, `doctor --repair` keeps exactly
/// what it says, a node started on another copy of the damaged store says the same count, and
/// bob refills the rest, with no fork anywhere.
async fn damaged_store_is_said_and_refilled(fault: impl FnOnce(&Path)) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    fixture(root.path()).await?;
    let alice_dir = root.path().join("alice");
    fault(&alice_dir);
    let second = root.path().join("alice2");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&alice_dir)
        .arg(&second)
        .status()?;
    assert!(copied.success());

    let (code, report) = doctor(&alice_dir, false)?;
    assert_ne!(code, 0, "doctor exits non-zero on damage:\n{report}");
    assert!(report.contains("store damaged"), "{report}");
    let checked = lost_in(&report);
    let (code, repaired) = doctor(&alice_dir, true)?;
    assert_ne!(code, 0, "{repaired}");
    assert_eq!(lost_in(&repaired), checked, "{report}\n{repaired}");
    assert_eq!(
        held(&alice_dir)?,
        TOTAL - checked,
        "the count is what is missing: {repaired}"
    );
    let (code, report) = doctor(&alice_dir, false)?;
    assert_eq!(code, 0, "repaired: {report}");

    let mut alice = Chat::start_user("alice", s(&second), &[], &[])?;
    let warning = alice.wait_stderr("info> warning: store damaged").await?;
    assert!(alice.interrupt().await?);
    assert_eq!(
        lost_in(&warning),
        checked,
        "the node says what doctor said: {warning}"
    );
    assert!(checked > 0 && warning.contains("entries lost"), "{warning}");
    let mut bob = Chat::start_user("bob", s(&root.path().join("bob")), &[], &[])?;
    let addr = bob.listen_addr().await?;
    let mut alice = Chat::start_user("alice", s(&alice_dir), &[&addr], &[])?;
    alice.wait_lines_unordered(&LAST_LINES).await?;
    let quiet = alice
        .drain_stderr(std::time::Duration::from_millis(500))
        .await;
    assert!(
        !quiet.iter().any(|l| l.contains("damaged")),
        "a repaired store starts quietly: {quiet:?}"
    );
    assert!(alice.interrupt().await? && bob.interrupt().await?);
    assert_eq!(held(&alice_dir)?, TOTAL, "bob refilled everything");
    for dir in [alice_dir, root.path().join("bob")] {
        let forked = verify_store(&dir)?.forked;
        assert!(
            forked.is_empty(),
            "no fork in {}: {forked:?}",
            dir.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_block_in_the_journal() -> anyhow::Result<()> {
    damaged_store_is_said_and_refilled(|dir| {
        let path = journal(dir);
        let mut data = std::fs::read(&path).unwrap();
        let at = written(&path).len() / 2 / 4096 * 4096;
        data[at..at + 4096].fill(0);
        std::fs::write(&path, data).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_journal() -> anyhow::Result<()> {
    damaged_store_is_said_and_refilled(|dir| {
        let path = journal(dir);
        let data = written(&path);
        std::fs::write(&path, &data[..data.len() * 2 / 3]).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_the_journal() -> anyhow::Result<()> {
    damaged_store_is_said_and_refilled(|dir| {
        let path = journal(dir);
        let mut data = std::fs::read(&path).unwrap();
        let needle = b"alice line 1500";
        let at = data
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        data[at + 3] ^= 0x01;
        std::fs::write(&path, data).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_journal() -> anyhow::Result<()> {
    // The whole store was in the journal, so alice's own log is gone too: the own-log mark
    // holds her start-up profile back until bob gives the log back, so nothing forks.
    damaged_store_is_said_and_refilled(|dir| std::fs::remove_file(journal(dir)).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_table_warns_without_stopping_and_is_repaired_at_restart()
-> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("alice");
    // Over the 8 MiB memtable, so the entries are flushed to a table file.
    let input: String = (0..12_000)
        .map(|i| format!("line {i} {}\n", "x".repeat(900)))
        .collect();
    let mut child = Command::new(p2pchat_binary())
        .args([
            "import",
            "--create",
            "--name",
            "alice",
            "--data-dir",
            s(&dir),
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes())?;
    assert!(child.wait()?.success());
    let table = walk(&dir.join("store/keyspaces"))
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("tables")))
        .max_by_key(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a table file");
    let mut data = std::fs::read(&table)?;
    let middle = data.len() / 2;
    data[middle] ^= 0x10;
    std::fs::write(&table, data)?;

    let mut alice = Chat::start_user("alice", s(&dir), &[], &[])?;
    // Reading the history (printed on stdout) hits the damaged block.
    alice.say("still here").await?;
    alice.wait_line("alice> still here").await?;
    let warning = alice.wait_stderr("info> warning:").await?;
    assert!(
        warning.contains("damaged") && warning.contains("checksum"),
        "{warning}"
    );
    assert!(
        alice.interrupt().await?,
        "the node ran on and exits cleanly"
    );

    let (code, report) = doctor(&dir, false)?;
    assert_ne!(code, 0, "{report}");
    let mut alice = Chat::start_user("alice", s(&dir), &[], &[])?;
    let repaired = alice.wait_stderr("info> warning: store damaged").await?;
    assert!(
        repaired.contains("a table file failed its checksum"),
        "{repaired}"
    );
    assert!(alice.interrupt().await?);
    assert_eq!(lost_in(&repaired), lost_in(&report), "{report}\n{repaired}");
    // Her profile, her encryption key, the lines and "still here".
    assert_eq!(held(&dir)?, 12_003 - lost_in(&repaired));
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for dirent in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = dirent.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_restart_and_a_deleted_version_file() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    fixture(root.path()).await?;
    let alice_dir = root.path().join("alice");
    let (code, report) = doctor(&alice_dir, false)?;
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("store ok"), "{report}");
    let mut alice = Chat::start_user("alice", s(&alice_dir), &[], &[])?;
    alice.listen_addr().await?;
    let said = alice
        .drain_stderr(std::time::Duration::from_millis(500))
        .await;
    assert!(!said.iter().any(|l| l.contains("warning")), "{said:?}");
    assert!(alice.interrupt().await?);

    std::fs::remove_file(alice_dir.join("store/version"))?;
    let mut alice = Chat::start_user("alice", s(&alice_dir), &[], &[])?;
    let said = alice.wait_stderr("info> warning: store").await?;
    assert!(said.contains("version was missing (restored)"), "{said}");
    assert!(!said.contains("Io(") && !said.contains("Fjall"), "{said}");
    assert!(alice.interrupt().await?);
    assert_eq!(held(&alice_dir)?, TOTAL);
    Ok(())
}

/// Runs inside `unshare --mount`: alice's data dir bind-mounted read-only onto itself.
const READ_ONLY: &str = r#"
set -u
mount --bind "$DATA" "$DATA" && mount -o remount,bind,ro "$DATA" || exit 90
touch "$DATA/probe" 2>/dev/null && exit 91
"$BIN" export --name alice --data-dir "$DATA" > "$OUT/export" 2> "$OUT/export_err"
echo $? > "$OUT/export_exit"
timeout 20 "$BIN" --name alice --data-dir "$DATA" --no-mdns --listen /ip4/127.0.0.1/tcp/0 \
    < /dev/null > /dev/null 2> "$OUT/chat_err"
echo $? > "$OUT/chat_exit"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_exports_and_is_refused_readably() -> anyhow::Result<()> {
    if p2pchat_tests::netns::skip_unless_available()? {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    fixture(root.path()).await?;
    let alice_dir = root.path().join("alice");
    let out = tempfile::tempdir()?;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", READ_ONLY])
        .env("DATA", &alice_dir)
        .env("OUT", out.path())
        .env("BIN", p2pchat_binary())
        .status()?;
    assert!(
        status.success(),
        "the script failed ({status}): 90 = no bind mount, 91 = writable"
    );
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap_or_default();
    assert_eq!(read("export_exit").trim(), "0", "{}", read("export_err"));
    assert_eq!(
        read("export").lines().count(),
        ALICE_LINES + BOB_LINES,
        "{}",
        read("export_err")
    );
    assert_ne!(read("chat_exit").trim(), "0");
    let refusal = read("chat_err");
    let store = alice_dir.join("store");
    assert!(
        refusal.contains(s(&store)) && refusal.contains("read-only"),
        "names the path and what happened: {refusal}"
    );
    assert!(
        !refusal.contains("Os {") && !refusal.contains("Fjall"),
        "{refusal}"
    );
    Ok(())
}
