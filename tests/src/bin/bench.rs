//! The benchmark harness: drives real `p2pchat` processes (release build, `--json`, mDNS off)
//! on 127.0.0.1 through the scenarios of docs/benchmarks.md and prints one JSON line per
//! scenario. Run it with
//!
//!     cargo run --release -p p2pchat-tests --bin bench -- all
//!
//! or name scenarios: `catchup catchup_1m catchup_mixed live transitive relay100k reconnect
//! startup mesh authors live_under_catchup liveness sim1000 mesh64 soak`. Options: `--n N`
//! (catch-up size, default 100000, also of `catchup_mixed` and `relay100k`), `--big N` (size of
//! the reconnect/start-up store and of `catchup_1m`, the catch-up at that size, printed as
//! `"scenario":"catchup"` so `bench compare` pairs it; default 1000000), `--authors N` (authors
//! of the `authors` store, 10 entries each, default 10000), `--backlog N` (the catch-up under
//! which `live_under_catchup` measures live lines, default 20000), `--nodes N` (simulated nodes
//! of `sim1000`, default 1000), `--minutes N` (length of `soak`, default 10), `--scuttleup DIR`
//! (also run the scuttleup baseline from DIR, a writable copy of shared/peers/scuttleup with
//! `npm install`
//! done, and print its figures beside ours).
//!
//! `BENCH_P2PCHAT=PATH` runs that `p2pchat` binary instead of building one (a base build, to
//! alternate base and new runs in one session).
//!
//! `bench compare BASE.jsonl NEW.jsonl` reads two such outputs and prints, for every numeric
//! figure of a scenario in both, `scenario figure base new new/base`, one per line.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use p2pchat_node::{Event, identity};
use p2pchat_protocol::Author;
use p2pchat_protocol::dm::DmSecret;
use p2pchat_tests::Frozen;
use p2pchat_tests::generate::{self, generate};
use p2pchat_tests::sim::{self, Scenario};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// The scenarios, in the order `all` runs them.
const SCENARIOS: [&str; 15] = [
    "catchup",
    "catchup_1m",
    "catchup_mixed",
    "live",
    "transitive",
    "relay100k",
    "reconnect",
    "startup",
    "mesh",
    "authors",
    "live_under_catchup",
    "liveness",
    "sim1000",
    "mesh64",
    "soak",
];

/// What `bench --help` prints.
const USAGE: &str = "usage: bench [all|catchup|catchup_1m|catchup_mixed|live|transitive|relay100k|reconnect|startup|mesh|authors|live_under_catchup|liveness|sim1000|mesh64|soak]...
             [--n N] [--big N] [--authors N] [--backlog N] [--nodes N] [--minutes N]
             [--rate N] [--scuttleup DIR]
       bench compare BASE.jsonl NEW.jsonl
  --n N             catch-up size, also of catchup_mixed and relay100k (default 100000)
  --big N           size of the reconnect/start-up store and of catchup_1m (default 1000000)
  --authors N       authors in the `authors` store, 10 entries each (default 10000)
  --backlog N       entries of the catch-up in `live_under_catchup` (default 20000)
  --nodes N         simulated nodes in `sim1000`, 10 lines each (default 1000)
  --minutes N       length of `soak` (default 10)
  --rate N          lines a second each `soak` node writes (default 2)
  --scuttleup DIR   also run the scuttleup baseline from DIR (see docs/benchmarks.md)
  compare           for every figure of a scenario in both files: base, new and new/base
  BENCH_P2PCHAT=PATH (environment) runs that p2pchat binary, e.g. a base build to alternate with
Build it with --release: cargo run --release -p p2pchat-tests --bin bench -- all";

/// Longest any scenario step may take.
const STEP_LIMIT: Duration = Duration::from_secs(300);

/// 1 Mbit/s, in bytes per second: the throttled link of `live_under_catchup`.
const ONE_MBIT: u64 = 125_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "compare") {
        let files: Vec<String> = args.skip(1).collect();
        let [base, new] = files.as_slice() else {
            bail!("compare needs two files: bench compare BASE.jsonl NEW.jsonl");
        };
        for line in compare_files(Path::new(base), Path::new(new))? {
            println!("{line}");
        }
        return Ok(());
    }
    let mut scenarios = Vec::new();
    let (mut n, mut big, mut scuttleup) = (100_000u64, 1_000_000u64, None);
    let (mut authors, mut backlog, mut nodes) = (10_000usize, 20_000u64, 1_000usize);
    let (mut minutes, mut rate) = (10u64, 2u32);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--n" => n = args.next().context("--n needs a number")?.parse()?,
            "--big" => big = args.next().context("--big needs a number")?.parse()?,
            "--authors" => authors = args.next().context("--authors needs a number")?.parse()?,
            "--backlog" => backlog = args.next().context("--backlog needs a number")?.parse()?,
            "--nodes" => nodes = args.next().context("--nodes needs a number")?.parse()?,
            "--minutes" => minutes = args.next().context("--minutes needs a number")?.parse()?,
            "--rate" => rate = args.next().context("--rate needs a number")?.parse()?,
            "--scuttleup" => {
                scuttleup = Some(PathBuf::from(
                    args.next().context("--scuttleup needs a dir")?,
                ))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "all" => scenarios.extend(SCENARIOS.map(String::from)),
            other if SCENARIOS.contains(&other) => scenarios.push(other.to_owned()),
            other => bail!("unknown scenario or option {other:?}\n{USAGE}"),
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario given\n{USAGE}");
    }
    let work = tempfile::tempdir()?;
    let bench = Bench {
        // `BENCH_P2PCHAT` runs another build (a base to compare with, in the same session).
        binary: std::env::var_os("BENCH_P2PCHAT")
            .map_or_else(|| p2pchat_tests::p2pchat_binary().to_owned(), PathBuf::from),
        work: work.path().to_owned(),
    };
    for scenario in &scenarios {
        settle_disk().await;
        let result = match scenario.as_str() {
            "catchup" => bench.catchup(n).await,
            "catchup_1m" => bench.catchup(big).await,
            "catchup_mixed" => bench.catchup_mixed(n, 5).await,
            "live" => bench.live(1000, Duration::from_millis(10)).await,
            "transitive" => bench.transitive(10_000).await,
            "relay100k" => bench.relay(n).await,
            "reconnect" => bench.reconnect(big).await,
            "startup" => bench.startup(big).await,
            "mesh" => bench.mesh(16, 100).await,
            "authors" => bench.authors(authors, 10).await,
            "live_under_catchup" => {
                bench
                    .live_under_catchup(backlog, Duration::from_millis(50), ONE_MBIT)
                    .await
            }
            "liveness" => bench.liveness(3).await,
            "sim1000" => sim(nodes, 10).await,
            "mesh64" => bench.mesh(64, 20).await,
            "soak" => bench.soak(8, minutes, rate).await,
            other => bail!("unknown scenario {other}"),
        };
        let mut line = result.with_context(|| format!("scenario {scenario}"))?;
        line["machine"] = machine_load();
        println!("{line}");
        if let Some(dir) = &scuttleup
            && let Some(baseline) = scuttleup_baseline(dir, scenario, n).await?
        {
            println!("{baseline}");
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Writes the kernel's dirty pages to disk (`sync`), so a scenario's fsyncs do not queue
/// behind the writeback of the previous scenario's (or a fill's) hundreds of megabytes.
async fn settle_disk() {
    let _ = Command::new("sync").status().await;
}

struct Bench {
    binary: PathBuf,
    work: PathBuf,
}

/// A `p2pchat --json` process.
struct Peer {
    name: String,
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<(Instant, Value)>,
    addr: String,
}

impl Bench {
    fn dir(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Fills `name`'s log with `n` lines of ~60 bytes, offline, and waits until the disk has
    /// written them.
    async fn fill(&self, name: &str, n: u64) -> anyhow::Result<Duration> {
        let mut child = Command::new(&self.binary)
            .args(["import", "--create", "--name", name, "--data-dir"])
            .arg(self.dir(name))
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let started = Instant::now();
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&line(name, i));
            text.push('\n');
            if text.len() > 1 << 20 {
                stdin.write_all(text.as_bytes()).await?;
                text.clear();
            }
        }
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
        if !child.wait().await?.success() {
            bail!("import failed");
        }
        let took = started.elapsed();
        settle_disk().await;
        Ok(took)
    }

    async fn start(&self, name: &str, peers: &[&str]) -> anyhow::Result<Peer> {
        let mut command = Command::new(&self.binary);
        command.args([
            "--name",
            name,
            "--json",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ]);
        command.arg(self.dir(name));
        for peer in peers {
            command.args(["--peer", peer]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        // Unbounded on purpose: a peer's stdout must never block on the harness (a node whose
        // events nobody waits for, like A printing its whole history, would otherwise stall and
        // skew the figures); a scenario's events are bounded by its size.
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let at = Instant::now();
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send((at, value)).is_err()
                {
                    break;
                }
            }
        });
        let mut peer = Peer {
            name: name.to_owned(),
            child,
            stdin,
            events,
            addr: String::new(),
        };
        let (_, listening) = peer.wait(|e| e["type"] == "listening").await?;
        peer.addr = listening["address"].as_str().unwrap_or_default().to_owned();
        Ok(peer)
    }
}

impl Peer {
    /// Waits for the first event matching `wanted`, returning when it was read.
    async fn wait(&mut self, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<(Instant, Value)> {
        let deadline = tokio::time::Instant::now() + STEP_LIMIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv()).await;
            let (at, event) = next
                .with_context(|| format!("{}: timed out", self.name))?
                .context("process ended")?;
            if event["type"] == "error" {
                bail!("{}: {}", self.name, event["message"]);
            }
            if wanted(&event) {
                return Ok((at, event));
            }
        }
    }

    /// Reads events until none came for `quiet`: how many were messages, and when the last
    /// of them came (and how many of those were direct messages).
    async fn until_quiet(&mut self, quiet: Duration) -> anyhow::Result<Shown> {
        let deadline = Instant::now() + STEP_LIMIT;
        let mut shown = Shown::default();
        while let Ok(next) = tokio::time::timeout(quiet, self.events.recv()).await {
            let (at, event) = next.context("process ended")?;
            if event["type"] == "error" {
                bail!("{}: {}", self.name, event["message"]);
            }
            shown.count(at, &event);
            if at > deadline {
                bail!("{}: still printing after {STEP_LIMIT:?}", self.name);
            }
        }
        Ok(shown)
    }

    /// Waits until `count` messages whose text starts with `prefix` have been printed.
    async fn wait_messages(&mut self, prefix: &str, count: u64) -> anyhow::Result<Instant> {
        let mut seen = 0;
        loop {
            let (at, _) = self
                .wait(|e| {
                    e["type"] == "message"
                        && e["text"].as_str().is_some_and(|t| t.starts_with(prefix))
                })
                .await
                .with_context(|| {
                    format!("{seen} of {count} messages starting with {prefix:?} printed")
                })?;
            seen += 1;
            if seen == count {
                return Ok(at);
            }
        }
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{text}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// Peak resident memory so far, in MB.
    fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    /// Resident memory now, in MB.
    fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// Of the resident memory now, the process's own (heap, stacks), in MB: the rest is
    /// mapped files, mostly the binary's code, which processes of one binary share.
    fn rss_anon_mb(&self) -> f64 {
        self.status_mb("RssAnon:")
    }

    /// A memory figure of /proc/PID/status (`field` with its colon), in MB; 0 if unknown.
    fn status_mb(&self, field: &str) -> f64 {
        let status = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let kb = status
            .as_deref()
            .and_then(|s| s.lines().find(|l| l.starts_with(field)))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0);
        round(kb / 1024.0)
    }

    /// Stops the process (SIGINT) and returns its final stats event.
    async fn stop(mut self) -> anyhow::Result<Value> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()?;
        }
        let (_, stats) = self.wait(|e| e["type"] == "stats").await?;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await??;
        Ok(stats)
    }
}

fn line(name: &str, i: u64) -> String {
    format!("{name} says line {i:07} of the benchmark, about sixty bytes long.")
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0)
}

/// A TCP relay that counts the bytes it carries, to measure what goes on the wire; with a
/// `rate` (bytes per second), each direction is throttled to it, as over a slow link.
async fn counting_proxy(
    target: &str,
    rate: Option<u64>,
) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let port = target.split('/').nth(4).context("no port in address")?;
    let peer_id = target.rsplit('/').next().unwrap_or_default().to_owned();
    let upstream = format!("127.0.0.1:{port}");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (upstream, counter) = (upstream.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let (c1, c2) = (counter.clone(), counter);
                let up = async move { copy_counting(&mut ri, &mut wo, &c1, rate).await };
                let down = async move { copy_counting(&mut ro, &mut wi, &c2, rate).await };
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok((
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer_id}", local.port()),
        bytes,
    ))
}

async fn copy_counting(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    counter: &AtomicU64,
    rate: Option<u64>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut bucket = rate.map(TokenBucket::new);
    // Throttled, read no more than the bucket holds, so a read is passed on in one piece.
    let chunk = bucket.as_ref().map_or(64 * 1024, |b| b.burst as usize);
    let mut buf = vec![0u8; chunk];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if let Some(bucket) = &mut bucket {
            bucket.take(n).await;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

/// A token bucket: `rate` bytes per second on average, bursts of at most `burst` bytes.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second, holding 20 ms of it (at least 1,500 bytes).
    fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 50.0).max(1500.0);
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Waits until `n` bytes (at most `burst`) may pass, and takes them.
    async fn take(&mut self, n: usize) {
        let n = n as f64;
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens < n {
            let wait = Duration::from_secs_f64((n - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = n;
            self.at += wait;
        }
        self.tokens -= n;
    }
}

/// The message events a peer printed: how many, how many of them direct messages, and when
/// the last one came.
#[derive(Default)]
struct Shown {
    messages: u64,
    direct: u64,
    last: Option<Instant>,
}

impl Shown {
    fn count(&mut self, at: Instant, event: &Value) {
        if event["type"] == "message" {
            self.messages += 1;
            self.direct += u64::from(event["dm"].is_object());
            self.last = Some(at);
        }
    }
}

/// How long a peer prints nothing before its printing counts as done.
const QUIET: Duration = Duration::from_secs(2);

/// The run of `runs` with the median `key` (the middle one after sorting; `runs` is not empty).
fn median_by(runs: &[Value], key: &str) -> Value {
    let mut sorted: Vec<&Value> = runs.iter().collect();
    sorted.sort_by(|a, b| number(a, key).total_cmp(&number(b, key)));
    sorted
        .get(sorted.len() / 2)
        .map_or(Value::Null, |run| (*run).clone())
}

fn number(run: &Value, key: &str) -> f64 {
    run[key].as_f64().unwrap_or(0.0)
}

impl Bench {
    /// The catch-up of `catchup` over generated stores of `n` entries in one log of another
    /// author: plain texts in `general`; mixed (every tenth entry a direct message sealed to
    /// B's real key, the others round five channels, [`generate::generate_mixed`]); and the
    /// same mix with the direct messages sealed to someone else (what B stores and relays but
    /// does not open: the cost of the kinds without B's decryption). Each is caught up `runs`
    /// times by a fresh B with the same key, the three in turn so that all see the same
    /// machine; the median of each, and mixed over plain.
    async fn catchup_mixed(&self, n: u64, runs: usize) -> anyhow::Result<Value> {
        let bob_key = identity::load_or_create(&self.new_dir("mix-key")?)?;
        let carol_key = identity::load_or_create(&self.new_dir("mix-other-key")?)?;
        let kinds = ["plain", "mixed", "mixed_to_others"];
        let mut generate_ms = serde_json::Map::new();
        let mut sources = Vec::new();
        for kind in kinds {
            let name = format!("mix-{kind}{n}");
            let dir = self.new_dir(&name)?;
            let started = Instant::now();
            match kind {
                "plain" => generate(&dir, 1, n).map(drop)?,
                _ => {
                    let to = if kind == "mixed" {
                        &bob_key
                    } else {
                        &carol_key
                    };
                    let to_key = DmSecret::derive(to).public();
                    generate::generate_mixed(&dir, n, Author::of(to), to_key).map(drop)?
                }
            }
            generate_ms.insert(kind.into(), json!(ms(started.elapsed())));
            settle_disk().await;
            let mut source = self.start(&name, &[]).await?;
            // Up a while when B joins: its history is printed.
            source.until_quiet(QUIET).await?;
            sources.push(source);
        }
        let mut all_runs: Vec<Vec<Value>> = vec![Vec::new(); kinds.len()];
        for run in 0..runs {
            for (source, runs) in sources.iter().zip(&mut all_runs) {
                let b = format!("{}-b{run}", source.name);
                identity::load_or_create_with(&self.new_dir(&b)?, Some(&bob_key))?;
                runs.push(self.catch_up_from(source, &b, n).await?);
            }
        }
        for source in sources {
            source.stop().await?;
        }
        // A kind's figure over plain's, of each figure's median.
        let ratio = |runs: &[Value], key: &str| {
            let (p, m) = (
                number(&median_by(&all_runs[0], key), key),
                number(&median_by(runs, key), key),
            );
            if p > 0.0 {
                json!(round(m / p))
            } else {
                Value::Null
            }
        };
        let median = |runs: &[Value]| median_by(runs, "entries_per_s");
        Ok(json!({
            "scenario": "catchup_mixed", "n": n, "dm_every": 10, "channels": 1 + generate::CHANNELS.len(),
            "runs": runs, "generate_ms": generate_ms,
            "entries_per_s": median(&all_runs[1])["entries_per_s"],
            "plain_entries_per_s": median(&all_runs[0])["entries_per_s"],
            "ratio": ratio(&all_runs[1], "entries_per_s"),
            "shown_ratio": ratio(&all_runs[1], "shown_per_s"),
            "to_others_ratio": ratio(&all_runs[2], "entries_per_s"),
            "to_others_shown_ratio": ratio(&all_runs[2], "shown_per_s"),
            "plain": median(&all_runs[0]), "mixed": median(&all_runs[1]),
            "mixed_to_others": median(&all_runs[2]),
            "all_runs": {"plain": all_runs[0], "mixed": all_runs[1], "mixed_to_others": all_runs[2]},
        }))
    }

    /// An empty B (`b`, its data directory holding only its key) catches up from `source`,
    /// which holds `n` generated entries, through a counting proxy: until `sync_complete`,
    /// and until B printed the last line it shows (direct messages to it opened).
    async fn catch_up_from(&self, source: &Peer, b: &str, n: u64) -> anyhow::Result<Value> {
        let (via, wire) = counting_proxy(&source.addr, None).await?;
        let spawned = Instant::now();
        let mut bob = self.start(b, &[&via]).await?;
        let (connected, _) = bob.wait(|e| e["type"] == "connected").await?;
        let mut shown = Shown::default();
        let (done, complete) = loop {
            let (at, event) = bob
                .wait(|e| e["type"] == "sync_complete" || e["type"] == "message")
                .await?;
            if event["type"] == "sync_complete" {
                break (at, event);
            }
            shown.count(at, &event);
        };
        let received = complete["received"].as_u64().unwrap_or(0);
        if received < n {
            bail!("{b}: sync_complete after {received} of the {n} generated entries");
        }
        let after = bob.until_quiet(QUIET).await?;
        let printed = Shown {
            messages: shown.messages + after.messages,
            direct: shown.direct + after.direct,
            last: after.last.or(shown.last),
        };
        let took = done - connected;
        let shown_took = printed.last.map_or(took, |last| last.max(done) - connected);
        let rss = bob.peak_rss_mb();
        bob.stop().await?;
        Ok(json!({
            "received": received, "connect_ms": ms(connected - spawned), "catchup_ms": ms(took),
            "entries_per_s": (received as f64 / took.as_secs_f64()).round(),
            "shown": printed.messages, "shown_direct": printed.direct,
            "shown_ms": ms(shown_took),
            "shown_per_s": (printed.messages as f64 / shown_took.as_secs_f64()).round(),
            "wire_bytes_per_entry": round(wire.load(Ordering::Relaxed) as f64 / received.max(1) as f64),
            "peak_rss_mb_b": rss,
        }))
    }

    /// Creates the data directory of `name` (0700), empty.
    fn new_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.dir(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// A holds `n` lines; an empty B connects; until B has stored all of them.
    async fn catchup(&self, n: u64) -> anyhow::Result<Value> {
        let (a, b) = (format!("ca{n}"), format!("cb{n}"));
        let fill = self.fill(&a, n).await?;
        let mut alice = self.start(&a, &[]).await?;
        // A has been up a while when B joins, as on a real LAN: its own history is printed.
        alice.wait_messages("", n).await?;
        let (via, wire) = counting_proxy(&alice.addr, None).await?;
        let spawned = Instant::now();
        let mut bob = self.start(&b, &[&via]).await?;
        let (connected, _) = bob.wait(|e| e["type"] == "connected").await?;
        let (done, complete) = bob.wait(|e| e["type"] == "sync_complete").await?;
        let received = complete["received"].as_u64().unwrap_or(0);
        let took = done - connected;
        let (rss_a, rss_b) = (alice.peak_rss_mb(), bob.peak_rss_mb());
        let wire = wire.load(Ordering::Relaxed);
        bob.stop().await?;
        alice.stop().await?;
        Ok(json!({
            "scenario": "catchup", "n": n, "received": received,
            "fill_ms": ms(fill), "fill_per_s": (n as f64 / fill.as_secs_f64()).round(),
            "connect_ms": ms(connected - spawned), "catchup_ms": ms(took),
            "entries_per_s": (received as f64 / took.as_secs_f64()).round(),
            "wire_bytes_per_entry": round(wire as f64 / received.max(1) as f64),
            "peak_rss_mb": {"a": rss_a, "b": rss_b},
        }))
    }

    /// A appends a line every `interval`; the delay until B prints it.
    async fn live(&self, count: usize, interval: Duration) -> anyhow::Result<Value> {
        let mut alice = self.start("la", &[]).await?;
        let mut bob = self.start("lb", &[&alice.addr.clone()]).await?;
        bob.wait(|e| e["type"] == "sync_complete").await?;
        let mut sent = Vec::with_capacity(count);
        let mut ticker = tokio::time::interval(interval);
        for i in 0..count {
            ticker.tick().await;
            sent.push(Instant::now());
            alice.say(&format!("live {i}")).await?;
        }
        let at_bob = live_arrivals(&mut bob, count).await?;
        let at_alice = live_arrivals(&mut alice, count).await?;
        let delays = |arrivals: &HashMap<usize, Instant>| {
            let mut delays: Vec<Duration> = arrivals.iter().map(|(i, at)| *at - sent[*i]).collect();
            delays.sort();
            delays
        };
        let (delays, own) = (delays(&at_bob), delays(&at_alice));
        let pct = |delays: &[Duration], p: f64| {
            ms(delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)])
        };
        let (rss_a, rss_b) = (alice.peak_rss_mb(), bob.peak_rss_mb());
        bob.stop().await?;
        alice.stop().await?;
        Ok(json!({
            "scenario": "live", "messages": count, "interval_ms": ms(interval),
            "p50_ms": pct(&delays, 0.5), "p90_ms": pct(&delays, 0.9), "p99_ms": pct(&delays, 0.99),
            "max_ms": pct(&delays, 1.0),
            "own_echo_p50_ms": pct(&own, 0.5), "own_echo_p99_ms": pct(&own, 0.99),
            "peak_rss_mb": {"a": rss_a, "b": rss_b},
        }))
    }

    /// A–B–C in a line; A appends `n` lines while connected; until C has them all.
    async fn transitive(&self, n: u64) -> anyhow::Result<Value> {
        let mut alice = self.start("ta", &[]).await?;
        let mut bob = self.start("tb", &[&alice.addr.clone()]).await?;
        bob.wait(|e| e["type"] == "sync_complete").await?;
        let mut carol = self.start("tc", &[&bob.addr.clone()]).await?;
        carol.wait(|e| e["type"] == "sync_complete").await?;
        let started = Instant::now();
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&line("ta", i));
            text.push('\n');
        }
        alice.stdin.write_all(text.as_bytes()).await?;
        alice.stdin.flush().await?;
        let at_bob = bob.wait_messages("ta says", n).await?;
        let at_carol = carol.wait_messages("ta says", n).await?;
        let rss =
            json!({"a": alice.peak_rss_mb(), "b": bob.peak_rss_mb(), "c": carol.peak_rss_mb()});
        for peer in [carol, bob, alice] {
            peer.stop().await?;
        }
        let took = at_carol - started;
        Ok(json!({
            "scenario": "transitive", "n": n, "b_all_ms": ms(at_bob - started), "c_all_ms": ms(took),
            "c_entries_per_s": (n as f64 / took.as_secs_f64()).round(), "peak_rss_mb": rss,
        }))
    }

    /// A already holds `n` lines; B connects to A and, as soon as B listens, C connects only
    /// to B (A–B–C in a line): until B, and until C (everything relayed by B), printed all of
    /// them, both from B's `connected` to A (when the catch-up begins).
    async fn relay(&self, n: u64) -> anyhow::Result<Value> {
        let (a, b, c) = (format!("xa{n}"), format!("xb{n}"), format!("xc{n}"));
        self.fill(&a, n).await?;
        let mut alice = self.start(&a, &[]).await?;
        alice.wait_messages("", n).await?;
        let mut bob = self.start(&b, &[&alice.addr.clone()]).await?;
        let mut carol = self.start(&c, &[&bob.addr.clone()]).await?;
        let (started, _) = bob
            .wait(|e| {
                e["type"] == "connected" && e["name"].as_str().is_some_and(|n| n.starts_with(&a))
            })
            .await?;
        let prefix = format!("{a} says");
        let (at_bob, at_carol) = tokio::try_join!(
            bob.wait_messages(&prefix, n),
            carol.wait_messages(&prefix, n)
        )?;
        let rss =
            json!({"a": alice.peak_rss_mb(), "b": bob.peak_rss_mb(), "c": carol.peak_rss_mb()});
        for peer in [carol, bob, alice] {
            peer.stop().await?;
        }
        let (b_took, c_took) = (at_bob - started, at_carol - started);
        Ok(json!({
            "scenario": "relay100k", "n": n, "b_all_ms": ms(b_took), "c_all_ms": ms(c_took),
            "c_over_b": round(c_took.as_secs_f64() / b_took.as_secs_f64()),
            "b_entries_per_s": (n as f64 / b_took.as_secs_f64()).round(),
            "c_entries_per_s": (n as f64 / c_took.as_secs_f64()).round(), "peak_rss_mb": rss,
        }))
    }

    /// Both hold `n` entries; B restarts and reconnects with nothing new: time and bytes to sync.
    async fn reconnect(&self, n: u64) -> anyhow::Result<Value> {
        let (a, b) = ("ra", "rb");
        self.fill(a, n).await?;
        let alice = self.start(a, &[]).await?;
        let mut bob = self.start(b, &[&alice.addr.clone()]).await?;
        bob.wait(|e| e["type"] == "sync_complete").await?;
        bob.stop().await?;
        let (via, wire) = counting_proxy(&alice.addr, None).await?;
        let mut bob = self.start(b, &[&via]).await?;
        let ready = Instant::now(); // `start` returns once B listens
        let (done, complete) = bob.wait(|e| e["type"] == "sync_complete").await?;
        // Let anything else the two would exchange go over the wire before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bytes = wire.load(Ordering::Relaxed);
        let rss = json!({"a": alice.peak_rss_mb(), "b": bob.peak_rss_mb()});
        bob.stop().await?;
        alice.stop().await?;
        Ok(json!({
            "scenario": "reconnect", "stored": n, "received": complete["received"],
            "ready_to_in_sync_ms": ms(done - ready), "wire_bytes": bytes, "peak_rss_mb": rss,
        }))
    }

    /// A node with `n` entries stored: time from process start to listening.
    async fn startup(&self, n: u64) -> anyhow::Result<Value> {
        let name = "sa";
        self.fill(name, n).await?;
        let mut samples = Vec::new();
        let mut rss = 0.0;
        for _ in 0..5 {
            let spawned = Instant::now();
            let peer = self.start(name, &[]).await?;
            samples.push(spawned.elapsed());
            rss = peer.peak_rss_mb();
            peer.stop().await?;
        }
        samples.sort();
        // The same store with its active journal full, killed (as after a crash): each
        // counted start follows a kill; then closed cleanly (a first start and stop, not
        // counted, closes it): each counted start follows a clean close.
        let (mut peer, added, journal_bytes) = self.fill_journal(name).await?;
        peer.child.kill().await?;
        let (killed, killed_rss) = self.startups(name, 5, true).await?;
        self.startups(name, 1, false).await?;
        let closed_journal_bytes = active_journal_bytes(&self.dir(name).join("store"))?;
        let (full, full_rss) = self.startups(name, 5, false).await?;
        let median = |samples: &[Duration]| ms(samples[samples.len() / 2]);
        Ok(json!({
            "scenario": "startup", "stored": n, "ready_ms_median": ms(samples[samples.len() / 2]),
            "ready_ms_min": ms(samples[0]), "peak_rss_mb": rss,
            "full_journal_lines_added": added, "full_journal_bytes": journal_bytes,
            "full_journal_closed_bytes": closed_journal_bytes,
            "full_journal_ms": median(&full), "full_journal_ms_min": ms(full[0]),
            "full_journal_after_kill_ms": median(&killed),
            "full_journal_after_kill_ms_min": ms(killed[0]),
            "full_journal_peak_rss_mb": full_rss.max(killed_rss),
        }))
    }

    /// `nodes` nodes, each dialing a few others; each appends `lines` at once.
    async fn mesh(&self, nodes: usize, lines: u64) -> anyhow::Result<Value> {
        // Node names as before for 16 nodes; other sizes get their own directories.
        let prefix = if nodes == 16 {
            "m".to_owned()
        } else {
            format!("m{nodes}-")
        };
        let mut peers = self.start_mesh(&prefix, nodes).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        for (i, peer) in peers.iter_mut().enumerate() {
            let mut text = String::new();
            for j in 0..lines {
                text.push_str(&format!("mesh {i:02} line {j}\n"));
            }
            peer.stdin.write_all(text.as_bytes()).await?;
            peer.stdin.flush().await?;
        }
        let total = nodes as u64 * lines;
        let mut last = started;
        let mut printed = vec![0u64; nodes];
        let all_printed = async {
            for (peer, printed) in peers.iter_mut().zip(&mut printed) {
                while *printed < total {
                    let (at, _) = peer
                        .wait(|e| {
                            e["type"] == "message"
                                && e["text"].as_str().is_some_and(|t| t.starts_with("mesh "))
                        })
                        .await?;
                    *printed += 1;
                    last = last.max(at);
                }
            }
            anyhow::Ok(())
        };
        let outcome = tokio::time::timeout(MESH_LIMIT, all_printed).await;
        match outcome {
            Ok(result) => result?,
            Err(_) => bail!(
                "not all of {total} lines printed in {MESH_LIMIT:?}; printed per node (read in \
                 order, the first short one stops the count): {printed:?}"
            ),
        }
        let each: Vec<f64> = peers.iter().map(Peer::peak_rss_mb).collect();
        let anon: Vec<f64> = peers.iter().map(Peer::rss_anon_mb).collect();
        let rss = each.iter().copied().fold(0.0, f64::max);
        let (mut received, mut duplicates) = (0, 0);
        for peer in peers {
            let stats = peer.stop().await?;
            received += stats["received"].as_u64().unwrap_or(0);
            duplicates += stats["duplicates"].as_u64().unwrap_or(0);
        }
        // Each node needs the lines of every other node (profiles were exchanged before).
        let unique = (nodes as u64 - 1) * total;
        Ok(json!({
            "scenario": "mesh", "nodes": nodes, "lines_each": lines, "lines": total,
            "all_hold_all_ms": ms(last - started),
            "entries_received": received, "duplicates": duplicates, "unique_needed": unique,
            "received_over_unique": round(received as f64 / unique as f64), "max_peak_rss_mb": rss,
            "peak_rss_mb": rss_of_many(&each), "rss_anon_mb_at_end": rss_of_many(&anon),
        }))
    }
}

/// Lines `live_under_catchup` types at most (the catch-up normally ends long before).
const MAX_LIVE_LINES: usize = 4_000;

impl Bench {
    /// A holds `authors` generated logs of `entries` each (fresh keys, offline); an empty B
    /// catches up through the counting relay; then B restarts and reconnects with nothing new:
    /// time from B listening to in sync, and every byte both ways.
    async fn authors(&self, authors: usize, entries: u64) -> anyhow::Result<Value> {
        let (a, b) = (format!("aa{authors}"), format!("ab{authors}"));
        let dir = self.dir(&a);
        let started = Instant::now();
        let generated =
            tokio::task::spawn_blocking(move || generate(&dir, authors, entries)).await??;
        let generate_took = started.elapsed();
        settle_disk().await;
        let mut alice = self.start(&a, &[]).await?;
        // A has been up a while when B joins: its history is printed.
        let texts = generated.entries() - authors as u64;
        if texts > 0 {
            alice.wait_messages("", texts).await?;
        }
        let (via, wire) = counting_proxy(&alice.addr, None).await?;
        let mut bob = self.start(&b, &[&via]).await?;
        let (connected, _) = bob.wait(|e| e["type"] == "connected").await?;
        // Until B said `sync_complete` and printed every generated line (so it holds every
        // entry: a `sync_complete` said too early does not end the catch-up).
        let generated_line = |e: &Value| {
            e["type"] == "message"
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(generate::TEXT_PREFIX))
        };
        let (mut said, mut printed, mut last) = (None, 0, connected);
        while said.is_none() || printed < texts {
            let (at, event) = bob
                .wait(|e| e["type"] == "sync_complete" || generated_line(e))
                .await
                .with_context(|| {
                    format!(
                        "B printed {printed} of {texts} generated lines; sync_complete: {said:?}"
                    )
                })?;
            if event["type"] == "sync_complete" {
                said = Some((at, event["received"].as_u64().unwrap_or(0)));
            } else {
                printed += 1;
                last = at;
            }
        }
        // Every generated entry and A's profile.
        let received = generated.entries() + 1;
        let (said_at, said_received) = said.context("no sync_complete")?;
        // As in `catchup`, the catch-up ends at `sync_complete`, if it came with everything.
        let done = if said_received >= received {
            said_at
        } else {
            last
        };
        let took = done - connected;
        let catchup_wire = wire.load(Ordering::Relaxed);
        let rss_catchup = json!({"a": alice.peak_rss_mb(), "b": bob.peak_rss_mb()});
        bob.stop().await?;

        let (via, wire) = counting_proxy(&alice.addr, None).await?;
        let mut bob = self.start(&b, &[&via]).await?;
        let ready = Instant::now(); // `start` returns once B listens
        let (in_sync, again) = bob.wait(|e| e["type"] == "sync_complete").await?;
        // Let anything else the two would exchange go over the wire before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reconnect_wire = wire.load(Ordering::Relaxed);
        bob.stop().await?;
        alice.stop().await?;
        Ok(json!({
            "scenario": "authors", "authors": authors, "entries_each": entries,
            "generate_ms": ms(generate_took), "received": received, "catchup_ms": ms(took),
            "sync_complete_received": said_received,
            "entries_per_s": (received as f64 / took.as_secs_f64()).round(),
            "catchup_wire_bytes_per_entry": round(catchup_wire as f64 / received.max(1) as f64),
            "reconnect_received": again["received"],
            "reconnect_ready_to_in_sync_ms": ms(in_sync - ready),
            "reconnect_wire_bytes": reconnect_wire, "peak_rss_mb": rss_catchup,
        }))
    }

    /// A holds a `backlog`-entry log of another author (generated); B connects through a relay
    /// throttled to `rate` bytes per second each way; while B catches up, A types a line every
    /// `interval`: how long each took to reach B, and how long the catch-up took.
    ///
    /// B runs in this process (`p2pchat_node::Node`), and a line counts as received once B's
    /// store holds it (B's heads, looked at every 10 ms): the binary's printer would add its
    /// own wait (it holds lines that arrive during a catch-up, up to 2 s, to print them in
    /// merged order).
    async fn live_under_catchup(
        &self,
        backlog: u64,
        interval: Duration,
        rate: u64,
    ) -> anyhow::Result<Value> {
        let (a, b) = ("qa", "qb");
        let dir = self.dir(a);
        let generated = tokio::task::spawn_blocking(move || generate(&dir, 1, backlog)).await??;
        let other = *generated.heads.keys().next().context("nothing generated")?;
        settle_disk().await;
        let mut alice = self.start(a, &[]).await?;
        if backlog > 1 {
            alice.wait_messages("", backlog - 1).await?;
        }
        let (via, wire) = counting_proxy(&alice.addr, Some(rate)).await?;
        let bob = p2pchat_tests::start_node(b, &self.dir(b), &[via.parse()?]).await?;
        let mut events = bob.events();
        let (connected, alice_author) = loop {
            let event = tokio::time::timeout(STEP_LIMIT, events.recv())
                .await
                .context("qb: no connection")?;
            match event {
                Ok(Event::Connected { peer, .. }) => {
                    let author = identity::author_of(&peer).context("qa's peer id")?;
                    break (Instant::now(), author);
                }
                Ok(Event::Error { message }) => bail!("qb: {message}"),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => bail!("qb stopped"),
            }
        };
        let mut sent: Vec<Instant> = Vec::new();
        // When B's store first held each line (`live i` is seq i + 3 of A's log: its profile
        // and its encryption key are seqs 1 and 2).
        let mut arrived: Vec<Instant> = Vec::new();
        let mut caught_up: Option<Instant> = None;
        let mut ticker = tokio::time::interval(interval);
        let mut check = tokio::time::interval(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + STEP_LIMIT;
        loop {
            if caught_up.is_some() && arrived.len() == sent.len() {
                break;
            }
            let typing = caught_up.is_none() && sent.len() < MAX_LIVE_LINES;
            tokio::select! {
                _ = ticker.tick(), if typing => {
                    sent.push(Instant::now());
                    alice.say(&format!("live {}", sent.len() - 1)).await?;
                }
                _ = check.tick() => {
                    anyhow::ensure!(tokio::time::Instant::now() < deadline, "qb: timed out");
                    let (heads, now) = (bob.heads(), Instant::now());
                    if caught_up.is_none() && heads.get(&other) >= Some(&backlog) {
                        caught_up = Some(now);
                    }
                    let held = heads.get(&alice_author).map_or(0, |seq| seq.saturating_sub(2));
                    while (arrived.len() as u64) < held.min(sent.len() as u64) {
                        arrived.push(now);
                    }
                }
            }
        }
        let done = caught_up.context("qb never caught up")?;
        let mut delays: Vec<Duration> = arrived
            .iter()
            .zip(&sent)
            .map(|(at, sent)| *at - *sent)
            .collect();
        delays.sort();
        let pct = |p: f64| ms(delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)]);
        let rss_a = alice.peak_rss_mb();
        let wire = wire.load(Ordering::Relaxed);
        let stats = bob.stats();
        bob.shutdown().await;
        alice.stop().await?;
        let took = done - connected;
        Ok(json!({
            "scenario": "live_under_catchup", "backlog": backlog,
            "rate_bytes_per_s": rate, "interval_ms": ms(interval), "lines": sent.len(),
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "received": stats.received, "catchup_ms": ms(took),
            "entries_per_s": (backlog as f64 / took.as_secs_f64()).round(),
            "wire_bytes": wire, "peak_rss_mb": {"a": rss_a},
        }))
    }

    /// A and B connected; B is stopped with SIGSTOP: time until A says it is disconnected,
    /// then, after SIGCONT, until A says it is connected again; `runs` times.
    async fn liveness(&self, runs: usize) -> anyhow::Result<Value> {
        let mut alice = self.start("va", &[]).await?;
        let mut bob = self.start("vb", &[&alice.addr.clone()]).await?;
        bob.wait(|e| e["type"] == "sync_complete").await?;
        alice.wait(|e| e["type"] == "connected").await?;
        let (mut detected, mut back) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let frozen = Frozen::freeze(bob.child.id().context("vb has exited")?)?;
            let stopped = Instant::now();
            let (at, _) = alice.wait(|e| e["type"] == "disconnected").await?;
            detected.push(at - stopped);
            frozen.thaw()?;
            let thawed = Instant::now();
            let (at, _) = alice.wait(|e| e["type"] == "connected").await?;
            back.push(at - thawed);
        }
        bob.stop().await?;
        alice.stop().await?;
        let median = |samples: &mut Vec<Duration>| {
            samples.sort();
            ms(samples[samples.len() / 2])
        };
        Ok(json!({
            "scenario": "liveness", "runs": runs,
            "detect_ms": detected.iter().copied().map(ms).collect::<Vec<_>>(),
            "detect_ms_median": median(&mut detected),
            "reconnect_after_cont_ms": back.iter().copied().map(ms).collect::<Vec<_>>(),
            "reconnect_after_cont_ms_median": median(&mut back),
        }))
    }
}

// ---- mesh64, soak and start-up at a full journal (issue 17) ----

/// Longest the mesh may take until every node printed every line.
const MESH_LIMIT: Duration = Duration::from_secs(60);

/// How long the soak waits after its last line for every node to print everything.
const SOAK_DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Journal bytes that count as a full journal: fjall rotates its active journal only at the
/// first flush after it passed 64 MB (a constant in fjall's worker).
const FULL_JOURNAL: u64 = 56 << 20;

/// Lines written at once while the journal is filled up to [`FULL_JOURNAL`].
const JOURNAL_CHUNK: u64 = 20_000;

impl Bench {
    /// Starts `nodes` nodes named `{prefix}00`, `{prefix}01`, …, node i dialing nodes i−1,
    /// i−2 and i−5 (of those already started): every node ends with 3 to 6 neighbours, and
    /// the mesh has many paths. Returns once every node finished its first sync with each
    /// node it dialed.
    async fn start_mesh(&self, prefix: &str, nodes: usize) -> anyhow::Result<Vec<Peer>> {
        raise_open_files_limit(nodes)?;
        let mut peers: Vec<Peer> = Vec::new();
        for i in 0..nodes {
            let targets: Vec<String> = [1, 2, 5]
                .iter()
                .filter(|&&d| d <= i)
                .map(|&d| peers[i - d].addr.clone())
                .collect();
            let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
            peers.push(self.start(&format!("{prefix}{i:02}"), &refs).await?);
        }
        for (i, peer) in peers.iter_mut().enumerate() {
            let expected = [1, 2, 5].iter().filter(|&&d| d <= i).count();
            for _ in 0..expected {
                peer.wait(|e| e["type"] == "sync_complete").await?;
            }
        }
        Ok(peers)
    }

    /// `nodes` nodes in a mesh ([`Bench::start_mesh`]); each writes `per_second` lines a
    /// second (the writers in turn, evenly spaced) for `minutes` minutes. Per minute: the
    /// delay from writing a line to each other node printing it (p50, p99, of the lines
    /// written that minute) and every node's resident memory at the minute's end (`VmRSS`);
    /// `disconnected` events over the whole run.
    async fn soak(&self, nodes: usize, minutes: u64, per_second: u32) -> anyhow::Result<Value> {
        anyhow::ensure!(
            minutes > 0 && nodes > 1 && per_second > 0,
            "nothing to soak"
        );
        let mut peers = self.start_mesh("s", nodes).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let minute = Duration::from_secs(60);
        let mut ticker =
            tokio::time::interval(Duration::from_secs(1) / (per_second * nodes as u32));
        let mut drain = tokio::time::interval(Duration::from_millis(100));
        let begin = Instant::now();
        let end = begin + minute * minutes as u32;
        // When each node wrote each of its lines.
        let mut sent: Vec<Vec<Instant>> = vec![Vec::new(); nodes];
        // Delays of the lines written in each minute, at every other node.
        let mut delays: Vec<Vec<Duration>> = vec![Vec::new(); minutes as usize];
        // Every node's resident memory at the end of each minute, and of it its own.
        let (mut rss, mut anon): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (Vec::new(), Vec::new());
        let mut printed = vec![0u64; nodes];
        let (mut disconnects, mut writes) = (0u64, 0usize);
        loop {
            tokio::select! {
                _ = ticker.tick(), if Instant::now() < end => {
                    let writer = writes % nodes;
                    writes += 1;
                    let k = sent[writer].len();
                    sent[writer].push(Instant::now());
                    peers[writer].say(&format!("soak {writer:02} {k}")).await?;
                }
                _ = drain.tick() => {
                    for (receiver, peer) in peers.iter_mut().enumerate() {
                        while let Ok((at, event)) = peer.events.try_recv() {
                            match event["type"].as_str() {
                                Some("error") => bail!("{}: {}", peer.name, event["message"]),
                                Some("disconnected") => disconnects += 1,
                                _ => {}
                            }
                            let Some((writer, k)) = soak_line(&event) else { continue };
                            let Some(&at_writer) = sent.get(writer).and_then(|s| s.get(k)) else {
                                bail!("{}: printed a line never written: {}", peer.name, event["text"]);
                            };
                            if writer != receiver {
                                printed[receiver] += 1;
                                let m = ((at_writer - begin).as_secs() / 60) as usize;
                                delays[m.min(minutes as usize - 1)].push(at - at_writer);
                            }
                        }
                    }
                    let now = Instant::now();
                    if rss.len() < minutes as usize && now >= begin + minute * (rss.len() as u32 + 1) {
                        rss.push(peers.iter().map(Peer::rss_mb).collect());
                        anon.push(peers.iter().map(Peer::rss_anon_mb).collect());
                    }
                    let total: u64 = sent.iter().map(|s| s.len() as u64).sum();
                    let all = (0..nodes).all(|i| printed[i] == total - sent[i].len() as u64);
                    if now >= end && rss.len() == minutes as usize && all {
                        break;
                    }
                    if now >= end + SOAK_DRAIN_LIMIT {
                        bail!("soak: {SOAK_DRAIN_LIMIT:?} after the last line, not every node printed all {total}: {printed:?}");
                    }
                }
            }
        }
        let each: Vec<f64> = peers.iter().map(Peer::peak_rss_mb).collect();
        let (mut received, mut duplicates) = (0, 0);
        for peer in peers {
            let stats = peer.stop().await?;
            received += stats["received"].as_u64().unwrap_or(0);
            duplicates += stats["duplicates"].as_u64().unwrap_or(0);
        }
        let lines: u64 = sent.iter().map(|s| s.len() as u64).sum();
        let per_minute: Vec<Value> = delays
            .iter_mut()
            .zip(rss.iter().zip(&anon))
            .enumerate()
            .map(|(m, (delays, (rss, anon)))| {
                delays.sort();
                json!({
                    "minute": m + 1, "delays": delays.len(),
                    "p50_ms": percentile_ms(delays, 0.5), "p99_ms": percentile_ms(delays, 0.99),
                    "max_ms": percentile_ms(delays, 1.0),
                    "rss_mb": rss, "rss_max_mb": rss.iter().copied().fold(0.0, f64::max),
                    "rss_anon_mb": anon,
                })
            })
            .collect();
        // Of each node, its memory at the last minute over that at the first, less one (the
        // largest), and the same of its own memory alone.
        let growth = |rss: &[Vec<f64>]| {
            let (first, last) = (&rss[0], &rss[rss.len() - 1]);
            let growth = first
                .iter()
                .zip(last)
                .filter(|(first, _)| **first > 0.0)
                .map(|(first, last)| last / first - 1.0)
                .fold(f64::MIN, f64::max);
            (growth * 10_000.0).round() / 10_000.0
        };
        let unique = (nodes as u64 - 1) * lines;
        Ok(json!({
            "scenario": "soak", "nodes": nodes, "minutes": minutes,
            "lines_per_s_each": per_second, "lines": lines, "disconnects": disconnects,
            "rss_growth_after_first_minute": growth(&rss),
            "rss_anon_growth_after_first_minute": growth(&anon),
            "p50_first_minute_ms": per_minute[0]["p50_ms"],
            "p99_first_minute_ms": per_minute[0]["p99_ms"],
            "p50_last_minute_ms": per_minute[per_minute.len() - 1]["p50_ms"],
            "p99_last_minute_ms": per_minute[per_minute.len() - 1]["p99_ms"],
            "entries_received": received, "duplicates": duplicates, "unique_needed": unique,
            "received_over_unique": round(received as f64 / unique.max(1) as f64),
            "per_minute": per_minute, "peak_rss_mb": rss_of_many(&each),
        }))
    }

    /// Starts `name` (which holds `stored` lines) and writes lines to it until its active
    /// journal holds at least [`FULL_JOURNAL`] bytes: what a store looks like after a big
    /// import or catch-up, just before fjall rotates the journal. Returns the running node,
    /// the lines added and the journal's size.
    async fn fill_journal(&self, name: &str) -> anyhow::Result<(Peer, u64, u64)> {
        let store = self.dir(name).join("store");
        let mut peer = self.start(name, &[]).await?;
        let mut added = 0;
        // 64 MB of journal is some 300k lines; a rotation on the way starts it again.
        for _ in 0..60 {
            let size = active_journal_bytes(&store)?;
            if size >= FULL_JOURNAL {
                return Ok((peer, added, size));
            }
            let mut text = String::new();
            for i in added..added + JOURNAL_CHUNK {
                text.push_str(&format!(
                    "{name} fills its journal, line {i:07}, about sixty bytes.\n"
                ));
            }
            peer.stdin.write_all(text.as_bytes()).await?;
            peer.stdin.flush().await?;
            // Own lines are printed once durable.
            peer.wait_messages(&format!("{name} fills"), JOURNAL_CHUNK)
                .await?;
            added += JOURNAL_CHUNK;
        }
        bail!(
            "{}: the journal did not reach {FULL_JOURNAL} bytes after {added} more lines",
            store.display()
        )
    }

    /// `runs` start-ups of `name` (process start → listening), each stopped cleanly, or with
    /// `kill`, killed (SIGKILL: the store is not closed, as after a crash): the sorted times
    /// and the last run's peak RSS.
    async fn startups(
        &self,
        name: &str,
        runs: usize,
        kill: bool,
    ) -> anyhow::Result<(Vec<Duration>, f64)> {
        let mut samples = Vec::new();
        let mut rss = 0.0;
        for _ in 0..runs {
            let spawned = Instant::now();
            let mut peer = self.start(name, &[]).await?;
            samples.push(spawned.elapsed());
            rss = peer.peak_rss_mb();
            if kill {
                peer.child.kill().await?;
            } else {
                peer.stop().await?;
            }
        }
        samples.sort();
        Ok((samples, rss))
    }
}

/// `soak WW K` (line K of writer WW) of a message event.
fn soak_line(event: &Value) -> Option<(usize, usize)> {
    if event["type"] != "message" {
        return None;
    }
    let (writer, k) = event["text"]
        .as_str()?
        .strip_prefix("soak ")?
        .split_once(' ')?;
    Some((writer.parse().ok()?, k.parse().ok()?))
}

/// The `p` quantile of `sorted`, in ms (0 if empty).
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    ms(sorted[((sorted.len() as f64 * p) as usize).min(last)])
}

/// The peak RSS of many nodes: the largest, the median, and each node's (in start order).
fn rss_of_many(each: &[f64]) -> Value {
    let mut sorted = each.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "max": sorted.last().copied().unwrap_or(0.0),
        "median": sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        "each": each,
    })
}

/// The bytes written to the newest (active) fjall journal in `store`: fjall makes a journal
/// file 64 MiB long (zeros) when it starts one, so what counts is up to its last non-zero byte.
fn active_journal_bytes(store: &Path) -> anyhow::Result<u64> {
    let mut newest: Option<(u64, PathBuf)> = None;
    let entries =
        std::fs::read_dir(store).with_context(|| format!("cannot read {}", store.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str()?.strip_suffix(".jnl")?.parse::<u64>().ok())
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(newest, _)| id > *newest) {
            newest = Some((id, path));
        }
    }
    let Some((_, path)) = newest else {
        return Ok(0);
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last as u64 + 1))
}

/// Raises this process's soft limit of open files (which its children inherit) to what
/// `nodes` processes and their pipes need, if the hard limit allows.
fn raise_open_files_limit(nodes: usize) -> anyhow::Result<()> {
    // Per node: its three pipes and the reader's handles, with room to spare.
    let needed = (64 + nodes * 16) as libc::rlim_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!(
                "cannot read the open files limit: {}",
                std::io::Error::last_os_error()
            );
        }
        if limit.rlim_cur >= needed {
            return Ok(());
        }
        if limit.rlim_max < needed {
            bail!(
                "{nodes} nodes need {needed} open files, the hard limit is {}: raise it (ulimit -Hn)",
                limit.rlim_max
            );
        }
        limit.rlim_cur = needed;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!(
                "cannot raise the open files limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// `nodes` replicas in the deterministic simulator (`p2pchat_tests::sim`), on a simulated LAN,
/// each dialing 3 others and writing `lines` lines in the first 2 s: the simulator's report
/// (virtual convergence time, entries received over those needed, events per second).
async fn sim(nodes: usize, lines: usize) -> anyhow::Result<Value> {
    let mut scenario = Scenario::new("sim1000", 1, nodes);
    scenario.lines.per_writer = lines;
    scenario.time_limit = Duration::from_secs(300);
    // Bounded in real time too: 1,000 nodes do not converge in minutes yet (docs/benchmarks.md).
    scenario.wall_limit = Some(Duration::from_secs(300));
    // Every signature of a sample of nodes (all 1,000 would take longer than the run).
    scenario.verify_nodes = 20;
    let report = tokio::task::spawn_blocking(move || sim::run(scenario)).await?;
    let mut line: Value = serde_json::from_str(&report.json())?;
    line["lines_each"] = json!(lines);
    Ok(line)
}

/// The `N` of a `live N` message event.
fn live_index(event: &Value) -> Option<usize> {
    if event["type"] != "message" {
        return None;
    }
    event["text"].as_str()?.strip_prefix("live ")?.parse().ok()
}

/// When each `live N` message was printed by `peer`.
async fn live_arrivals(peer: &mut Peer, count: usize) -> anyhow::Result<HashMap<usize, Instant>> {
    let mut got = HashMap::new();
    while got.len() < count {
        let (at, event) = peer.wait(|e| e["type"] == "message").await?;
        if let Some(i) = live_index(&event) {
            got.insert(i, at);
        }
    }
    Ok(got)
}

/// How busy the machine was (all cores) over the last second, for judging noise.
fn machine_load() -> Value {
    let read = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = cpu.get(3)? + cpu.get(4)?;
        Some((cpu.iter().sum(), idle))
    };
    let before = read();
    std::thread::sleep(Duration::from_millis(300));
    match (before, read()) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            json!({"busy_cores_after": round(cores * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64)), "cores": cores})
        }
        _ => Value::Null,
    }
}

/// Runs the matching scuttleup benchmark from `dir` and returns its JSON line, tagged.
async fn scuttleup_baseline(dir: &Path, scenario: &str, n: u64) -> anyhow::Result<Option<Value>> {
    let args: Vec<String> = match scenario {
        "catchup" => vec!["catchup".into(), n.to_string()],
        "live" => vec!["live".into(), "1000".into()],
        "transitive" => vec!["transitive".into(), "10000".into()],
        _ => return Ok(None),
    };
    let out = Command::new("node")
        .arg("bench.js")
        .args(&args)
        .args(["--runs", "1"])
        .current_dir(dir)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().rev().find(|l| l.starts_with('{')) else {
        bail!(
            "scuttleup {scenario} printed no result: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut value: Value = serde_json::from_str(line)?;
    value["baseline"] = json!("scuttleup");
    Ok(Some(value))
}

/// The top-level fields that tell runs of a scenario apart: a line matches only the line of
/// the other file with the same `scenario` and the same values of those it has.
const PARAMETERS: [&str; 8] = [
    "baseline", "n", "nodes", "stored", "authors", "backlog", "messages", "minutes",
];

/// A scenario's line of `bench` output: its label (`scenario` and parameters, as
/// `catchup(n=100000)`) and its numeric figures by dotted path.
struct Run {
    label: String,
    figures: Vec<(String, f64)>,
}

impl Run {
    fn of(line: &Value) -> anyhow::Result<Run> {
        // The scuttleup baseline's own harness names its scenario `bench`.
        let scenario = line["scenario"]
            .as_str()
            .or_else(|| line.get("baseline").and(line["bench"].as_str()))
            .context("no \"scenario\" field")?;
        let parameters: Vec<String> = PARAMETERS
            .iter()
            .filter_map(|key| {
                let value = line.get(key)?;
                Some(match value.as_str() {
                    Some(text) => format!("{key}={text}"),
                    None => format!("{key}={value}"),
                })
            })
            .collect();
        let label = if parameters.is_empty() {
            scenario.to_owned()
        } else {
            format!("{scenario}({})", parameters.join(","))
        };
        let mut figures = Vec::new();
        if let Some(fields) = line.as_object() {
            for (key, value) in fields {
                if !PARAMETERS.contains(&key.as_str()) {
                    collect_figures(key, value, &mut figures);
                }
            }
        }
        Ok(Run { label, figures })
    }
}

/// Every number in `value`, by its dotted path under `path` (array items by index).
fn collect_figures(path: &str, value: &Value, figures: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(number) => figures.extend(number.as_f64().map(|x| (path.to_owned(), x))),
        Value::Object(fields) => {
            for (key, value) in fields {
                collect_figures(&format!("{path}.{key}"), value, figures);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                collect_figures(&format!("{path}.{i}"), value, figures);
            }
        }
        _ => {}
    }
}

/// Reads a file of `bench` output: one run per non-empty line.
fn read_runs(path: &Path) -> anyhow::Result<Vec<Run>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_runs(&path.display().to_string(), &text)
}

/// The runs of `text`, `name` naming it in errors (`name:line: …`).
fn parse_runs(name: &str, text: &str) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(anyhow::Error::from)
            .and_then(|value| Run::of(&value));
        let run = parsed.with_context(|| {
            format!(
                "{name}:{}: not a line of bench output (one JSON object per scenario)",
                i + 1
            )
        })?;
        runs.push(run);
    }
    Ok(runs)
}

/// The comparison of `base` and `new`, one line per figure both have, in the order of `base`:
/// `scenario figure base new new/base` (`-` where the base is 0). A scenario only one side
/// ran is said once, without figures; of a scenario run twice in one file, the first counts.
fn compare(base: &[Run], new: &[Run]) -> Vec<String> {
    let find = |runs: &[Run], label: &str| -> Option<usize> {
        runs.iter().position(|run| run.label == label)
    };
    let mut lines = Vec::new();
    for (i, run) in base.iter().enumerate() {
        if find(base, &run.label) != Some(i) {
            continue;
        }
        let Some(other) = find(new, &run.label).map(|j| &new[j]) else {
            lines.push(format!("{} only in base", run.label));
            continue;
        };
        for (figure, was) in &run.figures {
            let Some((_, now)) = other.figures.iter().find(|(f, _)| f == figure) else {
                continue;
            };
            let ratio = if *was == 0.0 {
                "-".to_owned()
            } else {
                format!("{:.2}", now / was)
            };
            lines.push(format!("{} {figure} {was} {now} {ratio}", run.label));
        }
    }
    for (j, run) in new.iter().enumerate() {
        if find(new, &run.label) == Some(j) && find(base, &run.label).is_none() {
            lines.push(format!("{} only in new", run.label));
        }
    }
    lines
}

/// [`compare`] of two files of `bench` output.
fn compare_files(base: &Path, new: &Path) -> anyhow::Result<Vec<String>> {
    Ok(compare(&read_runs(base)?, &read_runs(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(text: &str) -> Vec<Run> {
        match parse_runs("test", text) {
            Ok(runs) => runs,
            Err(e) => panic!("{e:#}"),
        }
    }

    #[test]
    fn matches_by_scenario_and_parameters() {
        let base = runs(concat!(
            r#"{"scenario":"catchup","n":1000,"catchup_ms":10.0}"#,
            "\n",
            r#"{"scenario":"catchup","n":100000,"catchup_ms":400.0}"#,
            "\n",
            r#"{"scenario":"catchup","n":100000,"baseline":"scuttleup","catchup_ms":9000}"#,
            "\n",
            r#"{"scenario":"live","p50_ms":1.0}"#,
        ));
        let new = runs(concat!(
            r#"{"scenario":"catchup","n":100000,"catchup_ms":200.0}"#,
            "\n\n",
            // As scuttleup's harness prints it.
            r#"{"bench":"catchup","n":100000,"baseline":"scuttleup","catchup_ms":9000}"#,
            "\n",
            r#"{"scenario":"mesh","nodes":16,"all_hold_all_ms":138}"#,
        ));
        assert_eq!(
            compare(&base, &new),
            [
                "catchup(n=1000) only in base",
                "catchup(n=100000) catchup_ms 400 200 0.50",
                "catchup(baseline=scuttleup,n=100000) catchup_ms 9000 9000 1.00",
                "live only in base",
                "mesh(nodes=16) only in new",
            ]
        );
    }

    #[test]
    fn nested_figures_by_dotted_path_and_only_those_in_both() {
        let base = runs(
            r#"{"scenario":"transitive","n":10,"peak_rss_mb":{"a":20.0,"b":30.0},"old":1,"runs":[4,"x"],"label":"x"}"#,
        );
        let new = runs(
            r#"{"scenario":"transitive","n":10,"peak_rss_mb":{"b":33.0,"c":5.0},"new":2,"runs":[6]}"#,
        );
        assert_eq!(
            compare(&base, &new),
            [
                "transitive(n=10) peak_rss_mb.b 30 33 1.10",
                "transitive(n=10) runs.0 4 6 1.50",
            ]
        );
    }

    #[test]
    fn a_zero_base_has_no_ratio() {
        let base = runs(r#"{"scenario":"reconnect","stored":5,"wire_bytes":0}"#);
        let new = runs(r#"{"scenario":"reconnect","stored":5,"wire_bytes":12}"#);
        assert_eq!(
            compare(&base, &new),
            ["reconnect(stored=5) wire_bytes 0 12 -"]
        );
    }

    #[test]
    fn a_line_that_is_not_json_is_named_by_file_and_line() {
        let text = "{\"scenario\":\"live\"}\nCompiling p2pchat\n";
        let error = parse_runs("base.jsonl", text)
            .err()
            .map(|e| format!("{e:#}"));
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with("base.jsonl:2: not a line of bench output"),
            "{error}"
        );
        let missing = parse_runs("x", r#"{"n":3}"#)
            .err()
            .map(|e| format!("{e:#}"));
        assert!(missing.unwrap_or_default().contains("x:1:"));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let path = Path::new("/nonexistent/base.jsonl");
        let error = read_runs(path)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            error.contains("cannot read /nonexistent/base.jsonl"),
            "{error}"
        );
    }
}
