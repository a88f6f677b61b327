//! Helpers for p2pchat's multi-node and end-to-end tests: start nodes in-process on
//! 127.0.0.1 (mDNS off), run the real `p2pchat` binary (mDNS off, or inside a [`netns::Netns`]),
//! and wait for output with deadlines.

pub mod adversary;
pub mod generate;
pub mod natlab;
pub mod netns;
pub mod sim;
pub mod tmux;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use libp2p::Multiaddr;
use p2pchat_node::{Message, MessageFeed, Node, PeerSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Starts an in-process node named `name` with its data in `dir`, listening on 127.0.0.1,
/// dialing `peers`.
pub async fn start_node(name: &str, dir: &Path, peers: &[Multiaddr]) -> anyhow::Result<Node> {
    let mut builder = Node::builder()
        .name(name)
        .data_dir(dir)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .mdns(false);
    for peer in peers {
        builder = builder.peer(PeerSpec::Addr(peer.clone()));
    }
    Ok(builder.spawn().await?)
}

/// The node's first listen address (with `/p2p/<id>`), to give to another node.
pub fn address_of(node: &Node) -> Multiaddr {
    node.listen_addrs()
        .into_iter()
        .next()
        .expect("a node started by start_node listens")
}

/// Reads `n` messages from `feed`, failing if they take longer than [`DEADLINE`].
pub async fn take(feed: &mut MessageFeed, n: usize) -> anyhow::Result<Vec<Message>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(DEADLINE, feed.next())
            .await
            .with_context(|| {
                format!(
                    "timed out after {} of {n} messages: {:?}",
                    out.len(),
                    texts(&out)
                )
            })?;
        out.push(next.context("feed ended")?);
    }
    Ok(out)
}

/// Asserts that `feed` yields nothing more within `quiet`.
pub async fn expect_silence(feed: &mut MessageFeed, quiet: Duration) -> anyhow::Result<()> {
    if let Ok(Some(extra)) = tokio::time::timeout(quiet, feed.next()).await {
        bail!("unexpected extra message {extra:?}");
    }
    Ok(())
}

/// `name> text` for each message, as the binary prints them.
pub fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| format!("{}> {}", m.name, m.text))
        .collect()
}

/// The `p2pchat` binary, built once per test run.
pub fn p2pchat_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Test executables live in target/<profile>/deps, the bench in target/<profile>; the
        // binary is built in the same profile, next to them.
        let exe = std::env::current_exe().expect("executable path");
        let mut dir = exe.parent().expect("target dir").to_owned();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "p2pchat",
            "--bin",
            "p2pchat",
            "--manifest-path",
        ]);
        build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().expect("cargo runs").success(),
            "building p2pchat failed"
        );
        dir.join("p2pchat")
    })
}

/// Appends `lines` (one message per line) to the log of a new user `name` whose data
/// directory is `dir`, offline, with `p2pchat import --create`. Fails with import's stderr.
pub fn import(name: &str, dir: impl AsRef<Path>, lines: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new(p2pchat_binary())
        .args(["import", "--create", "--name", name, "--data-dir"])
        .arg(dir.as_ref())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("import's stdin")?
        .write_all(lines.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Writes a new private room key to `path` with `p2pchat keygen-room`.
pub fn keygen_room(path: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(p2pchat_binary())
        .arg("keygen-room")
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keygen-room {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
/// A test's scratch directory: data directories and key files by name, deleted on drop.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new, empty scratch directory.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self(tempfile::tempdir()?))
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        self.0.path()
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// The path of `name` as an argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// A new private room key `NAME.key` (its room's label is NAME), as an argument.
    pub fn key(&self, name: &str) -> anyhow::Result<String> {
        let path = self.path(&format!("{name}.key"));
        keygen_room(&path)?;
        Ok(path.to_string_lossy().into_owned())
    }
}

/// Runs `p2pchat export` of user `name` in `dir` with `args` (room flags, `--format`),
/// returning its stdout, or an error with its stderr if it fails.
pub fn export_raw(name: &str, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(p2pchat_binary())
        .args(["export", "--name", name, "--data-dir"])
        .arg(dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "export of {}{args:?}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `p2pchat export`'s lines for user `name` in `dir` with `args`, in its (merged) order,
/// without their date and time: `NAME> TEXT`.
pub fn export(name: &str, dir: &Path, args: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(export_raw(name, dir, args)?
        .lines()
        .map(|line| line.splitn(3, ' ').nth(2).unwrap_or(line).to_owned())
        .collect())
}

/// `p2pchat export --format ndjson`'s message events for user `name` in `dir` with `args`.
pub fn export_events(
    name: &str,
    dir: &Path,
    args: &[&str],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = args.to_vec();
    all.extend(["--format", "ndjson"]);
    export_raw(name, dir, &all)?
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("export said {line:?}")))
        .collect()
}

/// Where libfaketime (Debian's `faketime` package) is installed, if it is. Preloaded
/// directly, not through faketime(1), which forks: a signal to it would not reach p2pchat.
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .iter()
    .map(|dir| Path::new(dir).join("faketime/libfaketime.so.1"))
    .find(|path| path.is_file())
}

/// The arguments of a chat as `name` with its data in `data_dir`, listening on a free
/// 127.0.0.1 port, dialing each of `peers`, then `extra`.
fn user_args<'a>(
    name: &'a str,
    data_dir: &'a str,
    peers: &[&'a str],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ];
    for peer in peers {
        args.extend(["--peer", peer]);
    }
    args.extend(extra);
    args
}

/// A running `p2pchat` process with its stdin, stdout and stderr.
pub struct Chat {
    /// The `--name` it was started with, for error messages.
    pub name: String,
    /// The process (killed on drop).
    pub child: Child,
    /// Write lines here to send them.
    pub stdin: ChildStdin,
    /// `NAME> TEXT` lines.
    pub stdout: Lines<BufReader<ChildStdout>>,
    /// `info> …` lines (and logs, with `RUST_LOG`), as they come.
    stderr: mpsc::Receiver<String>,
    /// Every stderr line so far, for error messages.
    stderr_log: Arc<Mutex<Vec<String>>>,
}

impl Chat {
    /// Starts `p2pchat` with `args` and mDNS off.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(p2pchat_binary());
        command.args(args).arg("--no-mdns");
        Self::spawn(command, args)
    }

    /// Starts `p2pchat` as `name` with its data in `data_dir`, listening on a free 127.0.0.1
    /// port, dialing each of `peers`, with `extra` arguments (mDNS off).
    pub fn start_user(
        name: &str,
        data_dir: &str,
        peers: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start(&user_args(name, data_dir, peers, extra))
    }

    /// [`Chat::start_user`] with the process's wall clock `offset` ahead (`+365d`, `+2h`: the
    /// offset syntax of faketime(1)) through libfaketime, preloaded (see [`libfaketime`]); its
    /// timers keep the real monotonic clock.
    pub fn start_user_ahead(
        offset: &str,
        name: &str,
        data_dir: &str,
        peers: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let library =
            libfaketime().context("libfaketime is not installed (apt-get install faketime)")?;
        let args = user_args(name, data_dir, peers, extra);
        let mut command = Command::new(p2pchat_binary());
        command
            .args(&args)
            .arg("--no-mdns")
            .env("LD_PRELOAD", library)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1");
        Self::spawn(command, &args)
    }

    /// Starts `p2pchat` with `args` and mDNS off under a wrapper command (`wrapper` then the
    /// binary's path then `args`), such as `strace -f -o FILE`.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> anyhow::Result<Self> {
        let (program, wrapper_args) = wrapper.split_first().context("no wrapper command")?;
        let mut command = Command::new(program);
        command
            .args(wrapper_args)
            .arg(p2pchat_binary())
            .args(args)
            .arg("--no-mdns");
        Self::spawn(command, args)
    }

    /// Starts `p2pchat` with `args` inside the network namespace `netns` (mDNS on unless
    /// `args` turn it off).
    pub fn start_in(netns: &netns::Namespace, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns.name()])
            .arg(p2pchat_binary())
            .args(args);
        Self::spawn(command, args)
    }

    fn spawn(mut command: Command, args: &[&str]) -> anyhow::Result<Self> {
        let (stderr, stderr_log) = (mpsc::channel(100_000), Arc::new(Mutex::new(Vec::new())));
        let (stderr_tx, stderr) = stderr;
        let name = args
            .iter()
            .skip_while(|a| **a != "--name")
            .nth(1)
            .unwrap_or(&"?")
            .to_string();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let log = stderr_log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line.clone());
                let _ = stderr_tx.try_send(line);
            }
        });
        Ok(Self {
            name,
            stdin: child.stdin.take().context("stdin")?,
            stdout: BufReader::new(child.stdout.take().context("stdout")?).lines(),
            stderr,
            stderr_log,
            child,
        })
    }

    /// Types a line.
    pub async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// Waits for stdout lines until one equals `expected`, returning the lines before it.
    pub async fn wait_line(&mut self, expected: &str) -> anyhow::Result<Vec<String>> {
        let mut before = Vec::new();
        loop {
            let line = self.next_line().await.with_context(|| {
                format!(
                    "{} waiting for {expected:?} after {before:?}{}",
                    self.name,
                    self.stderr_tail()
                )
            })?;
            if line == expected {
                return Ok(before);
            }
            before.push(line);
        }
    }

    /// Waits until every line of `expected` has appeared on stdout, in any order (entries of
    /// different authors can arrive in any order while catching up), returning every line
    /// read.
    pub async fn wait_lines_unordered(&mut self, expected: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut missing: Vec<&str> = expected.to_vec();
        let mut seen = Vec::new();
        while !missing.is_empty() {
            let line = self.next_line().await.with_context(|| {
                format!(
                    "{} still waiting for {missing:?} after {seen:?}{}",
                    self.name,
                    self.stderr_tail()
                )
            })?;
            missing.retain(|m| *m != line);
            seen.push(line);
        }
        Ok(seen)
    }

    /// The last stderr lines, for error messages.
    pub fn stderr_tail(&self) -> String {
        let log = self
            .stderr_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tail: Vec<&str> = log
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(String::as_str)
            .collect();
        format!(
            "\n--- {}'s stderr (last {} lines):\n{}",
            self.name,
            tail.len(),
            tail.join("\n")
        )
    }

    /// Waits for the next stdout line.
    pub async fn next_line(&mut self) -> anyhow::Result<String> {
        let line = tokio::time::timeout(DEADLINE, self.stdout.next_line())
            .await
            .context("timed out waiting for stdout")??;
        line.context("stdout closed")
    }

    /// Waits for a stderr line starting with `prefix`, returning it.
    pub async fn wait_stderr(&mut self, prefix: &str) -> anyhow::Result<String> {
        self.wait_stderr_within(prefix, DEADLINE).await
    }

    /// Waits at most `limit` for a stderr line starting with `prefix`, returning it.
    pub async fn wait_stderr_within(
        &mut self,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .ok()
                .flatten()
                .with_context(|| {
                    format!(
                        "{} saw no {prefix:?} on stderr{}",
                        self.name,
                        self.stderr_tail()
                    )
                })?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    /// Waits for a stderr line holding `needle` anywhere, returning it.
    pub async fn wait_stderr_containing(&mut self, needle: &str) -> anyhow::Result<String> {
        self.wait_stderr_with_all(&[needle]).await
    }

    /// Waits for a stderr line holding every one of `needles`, returning it.
    pub async fn wait_stderr_with_all(&mut self, needles: &[&str]) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .ok()
                .flatten()
                .with_context(|| {
                    format!(
                        "{} saw no stderr line with {needles:?}{}",
                        self.name,
                        self.stderr_tail()
                    )
                })?;
            if needles.iter().all(|needle| line.contains(needle)) {
                return Ok(line);
            }
        }
    }

    /// The stdout lines printed until none comes for `quiet` (at most [`DEADLINE`] in all).
    pub async fn lines_until_quiet(&mut self, quiet: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(quiet, self.stdout.next_line()).await {
                Ok(line) => lines.push(line?.context("stdout closed")?),
                Err(_) => return Ok(lines),
            }
        }
        bail!("{} kept printing for {DEADLINE:?}: {lines:?}", self.name)
    }

    /// Every stderr line printed so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the stderr lines already printed or printed within `wait`.
    pub async fn drain_stderr(&mut self, wait: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(wait, self.stderr.recv()).await {
            lines.push(line);
        }
        lines
    }

    /// The peer id in the `info> listening on …/p2p/<id>` line, and the TCP port.
    pub async fn identity(&mut self) -> anyhow::Result<(String, u16)> {
        let addr = self.listen_addr().await?;
        let peer = addr.rsplit('/').next().unwrap_or_default().to_owned();
        let port = addr
            .split('/')
            .nth(4)
            .and_then(|p| p.parse().ok())
            .context("no tcp port")?;
        Ok((peer, port))
    }

    /// Waits for the `info> listening on …` line and returns its address.
    pub async fn listen_addr(&mut self) -> anyhow::Result<String> {
        let line = self.wait_stderr("info> listening on ").await?;
        Ok(line.trim_start_matches("info> listening on ").to_owned())
    }

    /// Sends SIGINT and waits for the process to exit, returning whether it exited cleanly.
    pub async fn interrupt(mut self) -> anyhow::Result<bool> {
        let pid = self.child.id().context("process already exited")?;
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .context("no exit after SIGINT")??;
        Ok(status.success())
    }
}

/// A process stopped with SIGSTOP (frozen, as a hung or suspended peer looks from outside),
/// continued with SIGCONT by [`Frozen::thaw`] or, whatever happens to the test, when dropped.
pub struct Frozen {
    pid: u32,
    thawed: bool,
}

impl Frozen {
    /// Stops the process `pid` (one the test started).
    pub fn freeze(pid: u32) -> anyhow::Result<Self> {
        signal(pid, "STOP")?;
        Ok(Self { pid, thawed: false })
    }

    /// Continues the process.
    pub fn thaw(mut self) -> anyhow::Result<()> {
        self.thawed = true;
        signal(self.pid, "CONT")
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = signal(self.pid, "CONT");
        }
    }
}

/// Sends the signal `name` (`STOP`, `CONT`, `INT`, …) to the process `pid`, with `kill(1)`.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// What [`verify_store`] found in a data directory.
#[derive(Debug, Default)]
pub struct Verified {
    /// Each log's length.
    pub heads: p2pchat_protocol::Heads,
    /// Every text entry, as `(author, text)`.
    pub texts: Vec<(p2pchat_protocol::Author, String)>,
    /// Authors whose log the store holds a fork proof of (frozen).
    pub forked: Vec<p2pchat_protocol::Author>,
}

/// Opens the store of the data directory `dir` (its process must have exited) and checks that
/// every log is a valid chain from seq 1 to its head: full decoding (canonical form, limits),
/// links and clock order of every entry, and the newest entry's signature, which vouches for
/// the whole chain below it through the `prev` hashes (as for a batch from a peer).
pub fn verify_store(dir: &Path) -> anyhow::Result<Verified> {
    use p2pchat_protocol::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES};
    use p2pchat_protocol::{Body, Entry, validate};
    let room = p2pchat_protocol::Room::lan().id();
    let store = p2pchat_storage::Store::open(&dir.join("store"), room)?;
    let mut verified = Verified {
        heads: store.heads(),
        ..Default::default()
    };
    for (author, head) in &verified.heads {
        let mut last: Option<Entry> = None;
        let mut from = 1;
        while from <= *head {
            let rows = store.range_envelopes(author, from, MAX_BATCH_ENTRIES, BATCH_BYTE_BUDGET)?;
            if rows.is_empty() {
                bail!(
                    "{author}'s log ends at seq {} but its head says {head}",
                    from - 1
                );
            }
            for (seq, envelope) in rows {
                let entry = Entry::decode(envelope)
                    .with_context(|| format!("{author} seq {seq} does not decode"))?;
                validate::check_link(room, *author, last.as_ref(), &entry)
                    .with_context(|| format!("{author} seq {seq}"))?;
                if let Body::Text { text } = entry.body() {
                    verified.texts.push((*author, text.clone()));
                }
                from = seq + 1;
                last = Some(entry);
            }
        }
        if from != head + 1 {
            bail!("{author}'s log runs past its head {head}");
        }
        if !last.is_some_and(|newest| newest.signature_is_valid()) {
            bail!("{author}'s newest entry is not validly signed");
        }
        if store.is_frozen(author) {
            verified.forked.push(*author);
        }
    }
    Ok(verified)
}
