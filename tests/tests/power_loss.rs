//! The power-loss promise: an own line is on disk (its journal write fdatasync'd) before it is
//! shown or sent. The real binary runs under `strace`, and the order of its system calls is
//! checked: a crash test cannot see this, as a killed process loses nothing the OS holds.
//!
//! strace prints a call's entry before the kernel runs it and its result after it returns, so
//! a write whose entry comes after an fdatasync's result in the trace ran after the sync ended.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use p2pchat_tests::{Chat, DEADLINE, address_of, start_node, take, texts};

/// The typed line's length: its push frame is far larger than any other socket write then
/// (pings, window updates), so the socket writes that can carry it are known by size.
const LINE_LEN: usize = 3000;
/// A socket write at least this large may carry the line.
const CARRIER_BYTES: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_line_is_synced_to_disk_before_it_is_shown_or_sent() -> anyhow::Result<()> {
    if !strace_works()? {
        return Ok(());
    }
    let bob_dir = tempfile::tempdir()?;
    let bob = start_node("bob", bob_dir.path(), &[]).await?;
    let mut bob_feed = bob.messages();
    let alice_dir = tempfile::tempdir()?;
    let trace_dir = tempfile::tempdir()?;
    let trace = trace_dir.path().join("trace");
    let data_dir = alice_dir.path().to_str().context("utf-8 path")?;
    let bob_addr = address_of(&bob).to_string();
    let mut alice = Chat::start_wrapped(
        &[
            "strace",
            "-f",
            "-yy",
            "-s",
            "16384",
            "-e",
            "trace=read,write,pwrite64,writev,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync",
            "-o",
            trace.to_str().context("utf-8 path")?,
        ],
        &[
            "--name",
            "alice",
            "--data-dir",
            data_dir,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--peer",
            &bob_addr,
        ],
    )?;
    let traced = Traced(alice.child.id().context("strace started")?);
    alice.wait_stderr("info> connected to bob").await?;
    let line = format!("power-{}", "x".repeat(LINE_LEN));
    alice.say(&line).await?;
    alice.wait_line(&format!("alice> {line}")).await?;
    let received = texts(&take(&mut bob_feed, 1).await?);
    assert_eq!(received, [format!("alice> {line}")]);
    alice.say("/quit").await?;
    tokio::time::timeout(DEADLINE, alice.child.wait())
        .await
        .context("alice did not quit")??;
    drop(traced);
    bob.shutdown().await;

    let trace = std::fs::read_to_string(&trace)?;
    check_order(&trace, "power-")
}

/// Checks, in an strace log, that the journal write holding `marker` was fdatasync'd before
/// any write showing it on stdout or any socket write that may carry it.
fn check_order(trace: &str, marker: &str) -> anyhow::Result<()> {
    let calls = parse(trace);
    let read = calls
        .iter()
        .position(|c| c.name == "read" && c.fd.starts_with("0<") && c.text.contains(marker))
        .context("the line was never read from stdin")?;
    let append = calls
        .iter()
        .position(|c| is_write(c) && c.fd.ends_with(".jnl>") && c.text.contains(marker))
        .context("the line was never written to the journal")?;
    let synced = calls
        .iter()
        .filter(|c| matches!(c.name, "fdatasync" | "fsync") && c.fd.ends_with(".jnl>"))
        .find(|c| c.entry > calls[append].exit)
        .with_context(|| {
            format!(
                "the journal was never synced after the append:\n{}",
                short(calls[append].text)
            )
        })?
        .exit;
    let shown = calls
        .iter()
        .find(|c| {
            is_write(c) && c.fd.starts_with("1<") && c.text.contains(&format!("alice> {marker}"))
        })
        .context("the line was never written to stdout")?;
    ensure!(
        shown.entry > synced,
        "shown before its fsync ended:\n{}",
        short(shown.text)
    );
    let carriers: Vec<&Call> = calls
        .iter()
        .filter(|c| is_write(c) && c.fd.contains("<TCP") && c.entry > calls[read].exit)
        .filter(|c| c.bytes >= CARRIER_BYTES)
        .collect();
    for carrier in &carriers {
        ensure!(
            carrier.entry > synced,
            "a socket write of {} bytes before the fsync ended:\n{}",
            carrier.bytes,
            short(carrier.text)
        );
    }
    let sent: u64 = carriers.iter().map(|c| c.bytes).sum();
    ensure!(
        sent >= LINE_LEN as u64,
        "the line was not sent ({sent} bytes)"
    );
    Ok(())
}

/// A trace line cut to a readable length (the line itself is thousands of `x`).
fn short(line: &str) -> String {
    match line.char_indices().nth(160) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

fn is_write(call: &Call) -> bool {
    matches!(
        call.name,
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "sendto" | "sendmsg"
    )
}

/// One system call of the trace: where its entry and its result are (line numbers), its first
/// argument as `strace -yy` shows it (`12<TCP:[…]>`, `1<pipe:[…]>`), its text and its result.
#[derive(Debug)]
struct Call<'a> {
    name: &'a str,
    entry: usize,
    exit: usize,
    fd: &'a str,
    text: &'a str,
    bytes: u64,
}

/// The calls of an `strace -f` log, each matched with its result when another thread's line
/// interrupted it (`<unfinished ...>`, then `<... NAME resumed>`).
fn parse(trace: &str) -> Vec<Call<'_>> {
    let mut calls: Vec<Call> = Vec::new();
    let mut unfinished: std::collections::HashMap<&str, usize> = Default::default();
    for (number, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<...") {
            if let Some(index) = unfinished.remove(pid) {
                calls[index].exit = number;
                calls[index].bytes = result(rest);
                if calls[index].name == "read" {
                    calls[index].text = rest; // a read's data comes with its result
                }
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue; // signals, exits
        };
        let fd = first_argument(args);
        let mut call = Call {
            name,
            entry: number,
            exit: number,
            fd,
            text: rest,
            bytes: 0,
        };
        if rest.ends_with("<unfinished ...>") {
            unfinished.insert(pid, calls.len());
        } else {
            call.bytes = result(rest);
        }
        calls.push(call);
    }
    calls
}

/// A call's first argument: up to the `>` that closes an `strace -yy` fd annotation (which may
/// hold `->` itself), else up to the first `,` or `)`.
fn first_argument(args: &str) -> &str {
    let annotated = [">,", ">)", "> <unfinished"]
        .iter()
        .filter_map(|end| args.find(end))
        .min();
    match annotated {
        Some(end) => &args[..=end],
        None => args.split([',', ')']).next().unwrap_or_default(),
    }
}

/// The non-negative result of a finished call line (`… = 3040`), else 0.
fn result(line: &str) -> u64 {
    line.rsplit_once(" = ")
        .and_then(|(_, value)| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether strace can trace here. Missing or not permitted (no ptrace in the container): a
/// skip, with why, except in CI (`CI=true`), where .ci/run installs it and the test must run.
fn strace_works() -> anyhow::Result<bool> {
    let works = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        bail!("strace is missing or cannot trace, and CI=true: .ci/run installs it");
    }
    eprintln!(
        "skipped: strace is missing or cannot trace here (apt-get install strace to run the \
         power-loss test)"
    );
    Ok(false)
}

/// Ends the traced `p2pchat` (strace's child) if the test stops early: killing strace alone
/// would leave it running, detached.
struct Traced(u32);

impl Drop for Traced {
    fn drop(&mut self) {
        let children = Path::new("/proc")
            .join(self.0.to_string())
            .join("task")
            .join(self.0.to_string())
            .join("children");
        if let Ok(children) = std::fs::read_to_string(children) {
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

#[test]
fn the_checker_catches_a_line_shown_or_sent_before_its_sync() {
    let journal = "11</d/store/0.jnl>";
    let trace = |lines: &[&str]| lines.join("\n");
    let read = "7 read(0<pipe:[1]>, \"power-xx\\n\", 8192) = 9";
    let append = format!("7 write({journal}, \"..power-xx..\", 300) = 300");
    let sync = format!("7 fdatasync({journal}) = 0");
    let shown = "8 write(1<pipe:[2]>, \"alice> power-xx\\n\", 16) = 16";
    let sent = "9 write(12<TCP:[127.0.0.1:1->127.0.0.1:2]>, \"...\", 3100) = 3100";
    let good = trace(&[read, &append, &sync, shown, sent]);
    check_order(&good, "power-").unwrap();
    // A sync interrupted by the stdout write still ends after it starts: refused.
    let overlapping = trace(&[
        read,
        &append,
        &format!("7 fdatasync({journal} <unfinished ...>"),
        shown,
        "7 <... fdatasync resumed>) = 0",
        sent,
    ]);
    for bad in [
        trace(&[read, &append, shown, &sync, sent]),
        trace(&[read, &append, sent, &sync, shown]),
        trace(&[read, &append, shown, sent]),
        overlapping,
    ] {
        assert!(
            check_order(&bad, "power-").is_err(),
            "accepted a bad order:\n{bad}"
        );
    }
}
