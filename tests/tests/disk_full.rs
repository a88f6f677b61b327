//! A full disk: `p2pchat` runs on a small tmpfs, mounted in a private mount namespace (so the
//! host sees nothing), and is fed lines until the store cannot write. It must stop with a clear
//! error and a non-zero exit, every line it printed as stored must be on disk, and once space
//! is freed a restart works. A node whose disk fills while it receives a long log stops the same
//! way, leaving a valid store. Needs root (like the mDNS tests): in CI it must run; elsewhere it
//! skips with the reason printed.

use std::collections::HashSet;
use std::process::Command;

use p2pchat_tests::netns::skip_unless_available;
use p2pchat_tests::p2pchat_binary;

/// Runs inside `unshare --mount`: everything under `$MNT` lives on an 8 MiB tmpfs, 1 MiB of it
/// taken by a filler file that is deleted after the failure.
const SCRIPT: &str = r#"
set -u
mount -t tmpfs -o size=8m tmpfs "$MNT" || exit 90
head -c 1048576 /dev/zero > "$MNT/filler"
timeout 60 "$BIN" --name alice --data-dir "$MNT/alice" --no-mdns --listen /ip4/127.0.0.1/tcp/0 \
    < "$OUT/input" > "$OUT/printed" 2> "$OUT/stderr"
echo $? > "$OUT/exit"
rm "$MNT/filler"
"$BIN" export --name alice --data-dir "$MNT/alice" > "$OUT/export" 2>&1 || exit 91
(echo "after the disk filled"; sleep 3) | timeout --preserve-status -s INT 10 "$BIN" --name alice --data-dir "$MNT/alice" \
    --no-mdns --listen /ip4/127.0.0.1/tcp/0 > "$OUT/restarted" 2>&1
echo $? > "$OUT/restart_exit"

# Receiving: bob (on the real disk) serves the same 15 MB as his log to carol, on a 4 MiB tmpfs.
"$BIN" import --create --name bob --data-dir "$OUT/bob" < "$OUT/input" 2> /dev/null || exit 92
"$BIN" --name bob --data-dir "$OUT/bob" --no-mdns --listen /ip4/127.0.0.1/tcp/0     < /dev/null > /dev/null 2> "$OUT/bob_stderr" &
BOB=$!
for _ in $(seq 100); do grep -q "listening on" "$OUT/bob_stderr" && break; sleep 0.1; done
ADDR=$(sed -n 's/^info> listening on //p' "$OUT/bob_stderr" | head -n 1)
mkdir -p "$MNT/carol"
mount -t tmpfs -o size=4m tmpfs "$MNT/carol" || exit 90
timeout 60 "$BIN" --name carol --data-dir "$MNT/carol/data" --no-mdns --listen /ip4/127.0.0.1/tcp/0     --peer "$ADDR" < /dev/null > /dev/null 2> "$OUT/carol_stderr"
echo $? > "$OUT/carol_exit"
kill $BOB
cp -r "$MNT/carol/data" "$OUT/carol"
"#;

#[test]
fn a_full_disk_stops_the_node_cleanly_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let out = tempfile::tempdir()?;
    let mnt = tempfile::tempdir()?;
    // 5,000 lines of about 3 KB: far more than the 7 MiB left.
    let input: String = (0..5_000)
        .map(|i| format!("line {i} {}\n", "x".repeat(3_000)))
        .collect();
    std::fs::write(out.path().join("input"), input)?;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("MNT", mnt.path())
        .env("OUT", out.path())
        .env("BIN", p2pchat_binary())
        .status()?;
    assert!(
        status.success(),
        "the script failed ({status}): 90 = no tmpfs, 91 = export failed, 92 = import failed"
    );
    let read = |name: &str| std::fs::read_to_string(out.path().join(name));

    assert_ne!(read("exit")?.trim(), "0", "a full disk is a non-zero exit");
    let stderr = read("stderr")?;
    assert!(
        stderr.contains("info> error:") && stderr.contains("No space left on device"),
        "{stderr:.2000}"
    );
    let printed: Vec<String> = read("printed")?.lines().map(str::to_owned).collect();
    assert!(
        printed.len() > 100,
        "the disk filled too early to tell: {} lines",
        printed.len()
    );
    let exported: HashSet<String> = read("export")?
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(_, line)| line.to_owned())
        .collect();
    let lost: Vec<&String> = printed
        .iter()
        .filter(|line| !exported.contains(*line))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged lines are not on disk, first: {:.40}",
        lost.len(),
        lost[0]
    );

    // Receiving: the node stops as well, and what it stored is a valid prefix of bob's log.
    assert_ne!(
        read("carol_exit")?.trim(),
        "0",
        "a full disk while receiving is a non-zero exit"
    );
    let carol = read("carol_stderr")?;
    assert!(
        carol.contains("info> error: storing entries failed") && carol.contains("No space left"),
        "{carol:.2000}"
    );
    let verified = p2pchat_tests::verify_store(&out.path().join("carol"))?;
    let received = verified.texts.len();
    assert!(
        received > 0 && received < 5_000,
        "carol stored {received} of bob's lines before the disk filled"
    );

    let restarted = read("restarted")?;
    let tail = &restarted[restarted
        .char_indices()
        .rev()
        .nth(400)
        .map_or(0, |(at, _)| at)..];
    assert!(
        restarted.contains("alice> after the disk filled"),
        "restart failed: …{tail}"
    );
    assert_eq!(read("restart_exit")?.trim(), "0", "…{tail}");
    Ok(())
}
