//! A reader that stops reading: `p2pchat` in line mode, printing a history far bigger than a pipe
//! buffer into a stdout nobody reads, still answers SIGINT and exits within a few seconds, even
//! when it has status output to write meanwhile; and its status output on stderr never waits
//! for stdout.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use p2pchat_tests::{DEADLINE, import, p2pchat_binary};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Lines in the history: some megabytes of output, far more than a pipe holds.
const HISTORY: usize = 50_000;

/// How soon after SIGINT the process must have exited.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// Reads lines from `stream` until one contains `listening`, then reads no more of it.
async fn wait_listening(stream: &mut BufReader<impl AsyncRead + Unpin>) -> anyhow::Result<()> {
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        let read = tokio::time::timeout(DEADLINE, stream.read_line(&mut line))
            .await
            .context("not listening in time")??;
        ensure!(read > 0, "exited before listening");
    }
    Ok(())
}

/// Sends SIGINT to `child` and fails unless it exits cleanly within [`EXIT_WITHIN`].
async fn interrupt(child: &mut Child) -> anyhow::Result<()> {
    let pid = child.id().context("exited before SIGINT")?;
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(EXIT_WITHIN, child.wait())
        .await
        .with_context(|| format!("still running {EXIT_WITHIN:?} after SIGINT"))??;
    ensure!(status.success(), "exited with {status}");
    Ok(())
}

/// Starts alice's chat on `dir` with `ui` arguments and stdin, stdout and stderr piped.
fn start(dir: &str, ui: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(p2pchat_binary())
        .args(["--name", "alice", "--data-dir", dir])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(ui)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_exits_on_sigint_while_stdout_is_not_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().context("path")?.to_owned();
    let lines: String = (0..HISTORY).map(|i| format!("line {i}\n")).collect();
    import("alice", &dir, &lines)?;
    let mut chat = start(&dir, &["--json"])?;
    let mut stdin = chat.stdin.take().context("stdin")?;
    // The pipes stay open, unread, until the end.
    let mut stdout = BufReader::new(chat.stdout.take().context("stdout")?);
    let _stderr = chat.stderr.take().context("stderr")?;
    wait_listening(&mut stdout).await?;
    // Let the history fill the pipe, then make the main loop report an error (a line too long).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin
        .write_all(format!("{}\n", "x".repeat(5000)).as_bytes())
        .await?;
    stdin.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    interrupt(&mut chat).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_exits_on_sigint_while_stdout_and_stderr_are_not_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().context("path")?.to_owned();
    let lines: String = (0..HISTORY).map(|i| format!("line {i}\n")).collect();
    import("alice", &dir, &lines)?;
    let mut chat = start(&dir, &["--ui", "plain"])?;
    let mut stdin = chat.stdin.take().context("stdin")?;
    // The pipes stay open, unread, until the end.
    let _stdout = chat.stdout.take().context("stdout")?;
    let mut stderr = BufReader::new(chat.stderr.take().context("stderr")?);
    wait_listening(&mut stderr).await?;
    // More `info>` lines than stderr's pipe holds, while the history fills stdout's.
    stdin
        .write_all(format!("/history {HISTORY}\n").as_bytes())
        .await?;
    stdin.flush().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    interrupt(&mut chat).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_status_reaches_stderr_while_stdout_is_not_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().context("path")?.to_owned();
    let lines: String = (0..HISTORY).map(|i| format!("line {i}\n")).collect();
    import("alice", &dir, &lines)?;
    let mut chat = start(&dir, &["--ui", "plain"])?;
    let mut stdin = chat.stdin.take().context("stdin")?;
    // Stdout stays open, unread: the history fills its pipe.
    let _stdout = chat.stdout.take().context("stdout")?;
    let mut stderr = BufReader::new(chat.stderr.take().context("stderr")?);
    wait_listening(&mut stderr).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The reply to a command is status: it must not wait behind the history.
    stdin.write_all(b"/help\n").await?;
    stdin.flush().await?;
    let mut line = String::new();
    while !line.contains("/help") {
        line.clear();
        let read = tokio::time::timeout(DEADLINE, stderr.read_line(&mut line))
            .await
            .context("the reply to /help never reached stderr while stdout was full")??;
        ensure!(read > 0, "exited before replying to /help");
    }
    interrupt(&mut chat).await
}
