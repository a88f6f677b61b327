//! Line mode, for pipes and scripts. Plain: `NAME> TEXT` on stdout, `info> …` on stderr, slash
//! commands, a progress line during a long catch-up when stderr is a terminal. JSON: NDJSON
//! events on stdout, and every stdin line is a message. All output goes through [`out`]'s
//! writer thread, so a reader that stops reading never blocks the loop (or its signals).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::FutureExt;
use p2pchat_node::{Event, Message, Node, NodeError, check_text};
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast::error::RecvError;

use super::commands::{self, Input, Reply};
use super::format::{display, entries, thousands};
use super::out::{self, Out, Stream};
use super::{Names, Signals, json};

/// Most typed lines stored in one durable write.
const GROUP_COMMIT_LINES: usize = 1024;

/// Most chat messages queued for output as one piece.
const PRINT_BATCH: usize = 256;

/// How long the output may take to finish after the node stopped.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How often a progress line may be redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Line mode's two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Messages on stdout as `NAME> TEXT`, status on stderr as `info> …`.
    Plain,
    /// NDJSON events on stdout.
    Json,
}

/// Runs the chat in line mode until stdin's commands or a signal stop it.
pub async fn run(node: Node, format: Format, mut signals: Signals) -> ExitCode {
    let (out, writer) = match out::start() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("info> error: cannot start the output thread: {e}");
            node.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let mut status = Status {
        format,
        out: out.clone(),
        progress: None,
        tty: std::io::stderr().is_terminal(),
    };
    let mut events = node.events();
    let mut printed = HashSet::new();
    for address in node.listen_addrs() {
        status.event(&Event::Listening {
            address: address.clone(),
        });
        printed.insert(address);
    }

    let mut messages = node.messages();
    let mut printer = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            // The messages already at hand (a page of history) go out as one piece.
            let mut lines = message_line(format, &message);
            let mut count = 1;
            while count < PRINT_BATCH {
                let Some(Some(message)) = messages.next().now_or_never() else {
                    break;
                };
                lines.push_str(&message_line(format, &message));
                count += 1;
            }
            if !out.messages(lines, count).await {
                break; // stdout is gone
            }
        }
    });

    let mut names = Names::default();
    names.update(&node.contacts());
    let mut renames = tokio::time::interval(Duration::from_secs(1));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let code = loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    // Lines already waiting (a paste, a pipe) are stored with this one in a
                    // single durable write.
                    let mut typed = vec![line];
                    while typed.len() < GROUP_COMMIT_LINES {
                        match lines.next_line().now_or_never() {
                            Some(Ok(Some(line))) => typed.push(line),
                            Some(Ok(None) | Err(_)) => {
                                stdin_open = false;
                                break;
                            }
                            None => break,
                        }
                    }
                    // A command can take a while (`/history 50000` on a busy machine): a signal
                    // does not wait for it.
                    let handled = tokio::select! {
                        handled = status.typed(&node, &typed) => handled,
                        () = signals.recv() => break ExitCode::SUCCESS,
                    };
                    match handled {
                        Ok(true) => {}
                        Ok(false) => break ExitCode::SUCCESS,
                        Err(e) => {
                            status.error(&format!("{e}; stopping"));
                            break ExitCode::FAILURE;
                        }
                    }
                }
                Ok(None) | Err(_) => stdin_open = false, // keep relaying without input
            },
            event = events.recv() => match event {
                Ok(Event::Listening { address }) if !printed.insert(address.clone()) => {}
                Ok(Event::Error { message }) => {
                    status.error(&format!("{message}; stopping"));
                    break ExitCode::FAILURE;
                }
                Ok(event) => {
                    // A peer's profile arrives around its hello: learn its name now, so a
                    // rename right after is noticed.
                    if format == Format::Plain && matches!(event, Event::Connected { .. } | Event::SyncComplete { .. }) {
                        for notice in names.update(&node.contacts()) {
                            status.info(&notice);
                        }
                    }
                    status.event(&event);
                }
                Err(RecvError::Lagged(n)) => {
                    status.event(&Event::Warning { message: format!("{n} status messages were skipped") });
                }
                Err(RecvError::Closed) => break ExitCode::FAILURE,
            },
            _ = renames.tick(), if format == Format::Plain => {
                for notice in names.update(&node.contacts()) {
                    status.info(&notice);
                }
            }
            () = signals.recv() => break ExitCode::SUCCESS,
        }
    };
    status.clear_progress();
    let stats = node.stats();
    node.shutdown().await;
    // The printer ends once the node has stopped and its last messages are queued, and the
    // writer once all is written, unless stdout is blocked (a reader that stopped reading): do
    // not let that keep us from exiting.
    let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
    if tokio::time::timeout_at(deadline, &mut printer)
        .await
        .is_err()
    {
        printer.abort();
        let _ = printer.await;
    }
    if format == Format::Json {
        // Queued like a message, so it comes after every message still waiting: the last line.
        let stats = format!("{}\n", json::stats(&stats));
        let _ = tokio::time::timeout_at(deadline, status.out.messages(stats, 1)).await;
    }
    drop(status); // the last handle on the writer: it finishes once all is written
    writer.drained(deadline).await;
    code
}

/// A chat message as printed on stdout, newline included.
fn message_line(format: Format, message: &Message) -> String {
    match format {
        Format::Plain => format!("{}> {}\n", display(&message.name), display(&message.text)),
        Format::Json => format!("{}\n", json::message(message)),
    }
}

/// Status output: `info>` lines on stderr (with a redrawn progress line on a terminal), or
/// JSON events on stdout.
struct Status {
    format: Format,
    /// The writer of stdout and stderr.
    out: Out,
    /// When the progress line was last drawn, while one is on screen.
    progress: Option<Instant>,
    /// Whether stderr is a terminal (progress lines are only drawn there).
    tty: bool,
}

impl Status {
    /// Handles typed lines in order: messages (stored together, in one durable write, between
    /// commands), or commands in plain mode. `Ok(false)` to quit; `Err` when the node cannot
    /// go on.
    async fn typed(&mut self, node: &Node, lines: &[String]) -> Result<bool, NodeError> {
        let mut texts: Vec<String> = Vec::new();
        for line in lines {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let input = match self.format {
                Format::Plain => commands::parse(line),
                Format::Json => Input::Message(line.to_owned()),
            };
            match input {
                Input::Message(text) => match check_text(&text) {
                    Ok(()) => texts.push(text),
                    Err(e) => self.error(&format!("line not sent: {e}")),
                },
                Input::Invalid(why) => self.error(&why),
                Input::Command(command) => {
                    self.send(node, &mut texts)?;
                    match commands::run(node, &command).await? {
                        Reply::Lines(lines) => lines.iter().for_each(|line| self.info(line)),
                        Reply::Error(why) => self.error(&why),
                        Reply::Quit => return Ok(false),
                    }
                }
            }
        }
        self.send(node, &mut texts)?;
        Ok(true)
    }

    /// Stores and sends the pending `texts` in one write, and clears them.
    fn send(&mut self, node: &Node, texts: &mut Vec<String>) -> Result<(), NodeError> {
        if texts.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        node.send_all(&refs)?;
        texts.clear();
        Ok(())
    }

    /// Prints a status event.
    fn event(&mut self, event: &Event) {
        match self.format {
            Format::Json => {
                if let Some(value) = json::event(event) {
                    self.out.write(Stream::Stdout, format!("{value}\n"));
                }
            }
            Format::Plain => match event {
                Event::SyncProgress {
                    name,
                    received,
                    total,
                    ..
                } => self.draw_progress(name, *received, *total),
                Event::SyncComplete { name, received, .. } if self.progress.is_some() => {
                    self.clear_progress();
                    self.info(&format!(
                        "caught up with {}: {}",
                        display(name),
                        entries(*received)
                    ));
                }
                event => {
                    if let Some(line) = plain(event) {
                        self.info(&line);
                    }
                }
            },
        }
    }

    /// Reports a problem the user caused or must fix (plain: on stderr; JSON: an error event).
    fn error(&mut self, message: &str) {
        self.event(&Event::Error {
            message: message.to_owned(),
        });
    }

    /// An `info>` line on stderr (plain mode).
    fn info(&mut self, line: &str) {
        self.clear_progress();
        self.out.write(Stream::Stderr, format!("info> {line}\n"));
    }

    /// Redraws the one-line catch-up progress, at most every [`PROGRESS_EVERY`], on a terminal.
    fn draw_progress(&mut self, name: &str, received: u64, total: u64) {
        if !self.tty
            || self
                .progress
                .is_some_and(|drawn| drawn.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        self.out.write(
            Stream::Stderr,
            format!(
                "\r\x1b[Kinfo> catching up from {}: {} / {}",
                display(name),
                thousands(received),
                thousands(total)
            ),
        );
        self.progress = Some(Instant::now());
    }

    /// Erases the progress line, if one is on screen.
    fn clear_progress(&mut self) {
        if self.progress.take().is_some() {
            self.out.write(Stream::Stderr, "\r\x1b[K".into());
        }
    }
}

/// The `info>` text of a status event, if it has one.
fn plain(event: &Event) -> Option<String> {
    Some(match event {
        Event::Listening { address } => format!("listening on {address}"),
        Event::LookingFor { name } => format!("looking for {} on the LAN…", display(name)),
        Event::Connected { peer, name } => format!("connected to {} ({peer})", display(name)),
        Event::Disconnected { peer, name } => match name {
            Some(name) => format!("disconnected from {}", display(name)),
            None => format!("disconnected from {peer}"),
        },
        Event::Warning { message } => format!("warning: {}", display(message)),
        Event::Error { message } => format!("error: {}", display(message)),
        _ => return None,
    })
}
