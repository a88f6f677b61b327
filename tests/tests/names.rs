//! Names and what a new user types: the name rule for `--name`, `--peer`, `/nick` and `/whois`,
//! names that would be paths, a `/nick` that survives a restart, `import` into a mistyped user,
//! and the errors for a bad room key file or a data directory that is a file. The real binary,
//! mDNS off, with its data root (`XDG_DATA_HOME`, `HOME`) in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use p2pchat_tests::netns::{Netns, skip_unless_available};
use p2pchat_tests::{Chat, DEADLINE, p2pchat_binary};
use tokio::io::AsyncWriteExt;

/// A home and a data root for p2pchat, nested so that even `--name ../../../x` resolved as a
/// path would land inside the temporary directory, where the test can see it.
struct Root {
    tmp: tempfile::TempDir,
}

impl Root {
    fn new() -> anyhow::Result<Self> {
        let root = Root {
            tmp: tempfile::tempdir()?,
        };
        std::fs::create_dir_all(root.home())?;
        std::fs::create_dir_all(root.xdg())?;
        Ok(root)
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn xdg(&self) -> PathBuf {
        self.tmp.path().join("a/b/data")
    }

    /// p2pchat's data root: where the data directory of each `--name` lives.
    fn data_root(&self) -> PathBuf {
        self.xdg().join("p2pchat")
    }

    /// Runs `p2pchat args` with this root and `input` on stdin; its exit status and stderr.
    async fn run(&self, args: &[&str], input: &str) -> anyhow::Result<(bool, String)> {
        let mut child = tokio::process::Command::new(p2pchat_binary())
            .args(args)
            .env("HOME", self.home())
            .env("XDG_DATA_HOME", self.xdg())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        // A refused command line exits before reading: its stdin may be closed already.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .with_context(|| format!("p2pchat {args:?} still running after {DEADLINE:?}"))??;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Every file under the temporary directory, relative to it.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap_or(&path).to_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.tmp.path(), self.tmp.path(), &mut out);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_never_a_path() -> anyhow::Result<()> {
    let root = Root::new()?;
    for name in ["../x", "../../../x", ".", ".."] {
        let (ok, stderr) = root
            .run(
                &[
                    "--name",
                    name,
                    "--no-mdns",
                    "--listen",
                    "/ip4/127.0.0.1/tcp/0",
                ],
                "",
            )
            .await?;
        ensure!(!ok, "--name {name:?} was accepted: {stderr}");
        ensure!(
            stderr.contains("cannot name a data directory") && stderr.contains("--data-dir"),
            "--name {name:?}: {stderr}"
        );
        let (ok, stderr) = root
            .run(&["import", "--create", "--name", name], "hi\n")
            .await?;
        ensure!(!ok, "import --name {name:?} was accepted: {stderr}");
    }
    let written = root.files();
    ensure!(written.is_empty(), "refused names wrote {written:?}");

    // An ordinary name with a space is one directory, inside the data root.
    let (ok, stderr) = root
        .run(&["import", "--create", "--name", "Alice Smith"], "hi\n")
        .await?;
    ensure!(ok, "{stderr}");
    let alice = root.data_root().join("Alice Smith");
    for file in root.files() {
        ensure!(
            root.tmp.path().join(&file).starts_with(&alice),
            "{file:?} is outside {alice:?}"
        );
    }
    ensure!(alice.join("identity.key").is_file(), "{:?}", root.files());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_could_never_be_reached_is_an_error() -> anyhow::Result<()> {
    let root = Root::new()?;
    for (peer, why) in [
        (
            "/ip4/1.2.3/tcp/1",
            "/ip4/1.2.3 is not valid: invalid IPv4 address syntax",
        ),
        (
            "/tcp/99999",
            "/tcp/99999 is not valid: a port is a number from 0 to 65535",
        ),
        ("bob ", "is not a valid name"),
        ("", "is not a valid name"),
    ] {
        let (ok, stderr) = root
            .run(&["--name", "alice", "--peer", peer, "--no-mdns"], "")
            .await?;
        ensure!(!ok, "--peer {peer:?} was accepted: {stderr}");
        ensure!(stderr.contains(why), "--peer {peer:?}: {stderr}");
    }
    ensure!(
        root.files().is_empty(),
        "nothing is created for a refused command line"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nick_with_a_space_works_and_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().unwrap_or_default().to_owned();
    let mut alice = Chat::start_user("alice", &dir, &[], &[])?;
    alice.listen_addr().await?;
    alice.say("/nick Alice Smith").await?;
    alice.wait_stderr("info> you are now Alice Smith").await?;
    alice.say("hello").await?;
    alice.wait_line("Alice Smith> hello").await?;
    alice.say("/whois Alice Smith").await?;
    alice.wait_stderr("info> Alice Smith #").await?;
    // The rename has been answered; it is not noticed a second time (renames are checked
    // every second).
    let twice = alice
        .wait_stderr_within("info> alice is now known as", Duration::from_millis(2500))
        .await;
    ensure!(twice.is_err(), "your own rename is told twice: {twice:?}");
    assert!(alice.interrupt().await?);

    // The same --name again: alice stays Alice Smith, and is told why.
    let mut again = Chat::start_user("alice", &dir, &[], &[])?;
    again.wait_line("Alice Smith> hello").await?;
    let warning = again.wait_stderr("info> warning:").await?;
    ensure!(
        warning.contains("you are Alice Smith") && warning.contains("/nick alice"),
        "{warning}"
    );
    again.say("again").await?;
    again.wait_line("Alice Smith> again").await?;
    assert!(again.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_an_unknown_user_and_counts_empty_lines() -> anyhow::Result<()> {
    let root = Root::new()?;
    let input = "one\n\n   \ntwo\n";
    let (ok, stderr) = root.run(&["import", "--name", "typo"], input).await?;
    ensure!(!ok, "import into a user nobody created succeeded: {stderr}");
    ensure!(
        stderr.contains("no p2pchat user") && stderr.contains("--create"),
        "{stderr}"
    );
    ensure!(
        root.files().is_empty(),
        "a refused import wrote {:?}",
        root.files()
    );

    let (ok, stderr) = root
        .run(&["import", "--create", "--name", "newcomer"], input)
        .await?;
    ensure!(ok, "{stderr}");
    ensure!(
        stderr.contains("imported 2 lines as newcomer (0 skipped, 2 empty)"),
        "{stderr}"
    );
    let (ok, stderr) = root
        .run(&["import", "--name", "newcomer"], "three\n")
        .await?;
    ensure!(
        ok && stderr.contains("imported 1 line as newcomer (0 skipped, 0 empty)"),
        "an existing user needs no --create: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_of_ordinary_names_keep_their_path() -> anyhow::Result<()> {
    // Earlier releases kept each user's data in `<data root>/NAME`: a store made there opens
    // with everything in it.
    let root = Root::new()?;
    for name in ["alice", "Alice Smith"] {
        p2pchat_node::import(
            name,
            &root.data_root().join(name),
            p2pchat_protocol::Room::lan(),
            format!("written by {name}\n").as_bytes(),
            |_, _| {},
        )?;
        let output = tokio::process::Command::new(p2pchat_binary())
            .args(["export", "--name", name])
            .env("HOME", root.home())
            .env("XDG_DATA_HOME", root.xdg())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success() && stdout.ends_with(&format!("{name}> written by {name}\n")),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_room_key_or_a_data_dir_that_is_a_file_is_named() -> anyhow::Result<()> {
    let root = Root::new()?;
    let key = root.tmp.path().join("team.key");
    std::fs::write(&key, "/key/swarm/psk/1.0.0/\n/base16/\nnot hex\n")?;
    let key = key.to_str().unwrap_or_default();
    let (ok, stderr) = root
        .run(&["--name", "alice", "--room-key", key, "--no-mdns"], "")
        .await?;
    ensure!(!ok, "a bad room key was accepted: {stderr}");
    ensure!(
        stderr.contains("team.key is not a room key")
            && stderr.contains("hex digits")
            && !stderr.contains("InvalidKey"),
        "{stderr}"
    );

    let (ok, stderr) = root
        .run(&["export", "--name", "alice", "--data-dir", key], "")
        .await?;
    ensure!(
        !ok && stderr.contains("team.key is not a directory") && !stderr.contains("--name"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_for_a_name_is_said_once_in_plain_mode() -> anyhow::Result<()> {
    if skip_unless_available()? {
        return Ok(());
    }
    let netns = Netns::new()?;
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().unwrap_or_default().to_owned();
    let mut alice = Chat::start_in(
        &netns,
        &["--name", "alice", "--peer", "bob", "--data-dir", &dir],
    )?;
    alice
        .wait_stderr("info> looking for bob on the LAN")
        .await?;
    // The node repeats it every 10 s; the user is told once.
    let again = alice
        .wait_stderr_within("info> looking for", Duration::from_secs(12))
        .await;
    ensure!(again.is_err(), "said again: {again:?}");
    assert!(alice.interrupt().await?);
    Ok(())
}
