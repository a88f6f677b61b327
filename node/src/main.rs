//! `p2pchat`: a serverless, encrypted LAN chat. See `p2pchat --help`.

mod cli;
mod output;

use std::collections::HashSet;
use std::process::ExitCode;

use clap::Parser;
use futures::FutureExt;
use p2pchat_node::{Event, Node, check_text};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

use cli::{ChatArgs, Cli, Command};
use output::Output;

/// Most typed lines stored in one durable write.
const GROUP_COMMIT_LINES: usize = 1024;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    match cli.command {
        Some(Command::Import { name, data_dir }) => import(&name, data_dir.as_ref()),
        None => chat(cli.chat),
    }
}

fn import(name: &str, data_dir: Option<&std::path::PathBuf>) -> ExitCode {
    let result = cli::data_dir(name, data_dir).and_then(|dir| {
        p2pchat_node::import(name, &dir, std::io::stdin().lock(), |line, reason| {
            eprintln!("info> error: line {line} skipped: {reason}");
        })
    });
    match result {
        Ok(imported) => {
            eprintln!("info> imported {} lines as {name} ({} skipped)", imported.appended, imported.skipped);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("info> error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chat(args: ChatArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("info> error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    // Stdin is read on a blocking thread that may never return; do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run(args: ChatArgs) -> ExitCode {
    let output = if args.json { Output::Json } else { Output::Plain };
    let node = match args.builder() {
        Ok(builder) => builder.spawn().await,
        Err(e) => Err(e),
    };
    let node = match node {
        Ok(node) => node,
        Err(e) => {
            output.error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let mut events = node.events();
    let mut printed = HashSet::new();
    for address in node.listen_addrs() {
        output.event(&Event::Listening { address: address.clone() });
        printed.insert(address);
    }

    let mut messages = node.messages();
    let printer = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            if !output.message(&message) {
                break;
            }
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let (mut sigint, mut sigterm) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(int), Ok(term)) => (int, term),
        _ => {
            output.error("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
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
                    if let Err(code) = send_lines(&node, output, &typed) {
                        break code;
                    }
                }
                Ok(None) | Err(_) => stdin_open = false, // keep relaying without input
            },
            event = events.recv() => match event {
                Ok(Event::Listening { address }) if !printed.insert(address.clone()) => {}
                Ok(Event::Error { message }) => {
                    output.error(&format!("{message}; stopping"));
                    break ExitCode::FAILURE;
                }
                Ok(event) => output.event(&event),
                Err(RecvError::Lagged(n)) => {
                    output.event(&Event::Warning { message: format!("{n} status messages were skipped") });
                }
                Err(RecvError::Closed) => break ExitCode::FAILURE,
            },
            _ = sigint.recv() => break ExitCode::SUCCESS,
            _ = sigterm.recv() => break ExitCode::SUCCESS,
        }
    };
    let stats = node.stats();
    node.shutdown().await;
    let _ = printer.await;
    output.stats(&stats);
    code
}

/// Sends typed lines: blank ones are skipped, invalid ones refused with a message, the rest
/// stored together. A storage failure is fatal (`Err` with the exit code).
fn send_lines(node: &Node, output: Output, lines: &[String]) -> Result<(), ExitCode> {
    let mut texts = Vec::with_capacity(lines.len());
    for line in lines {
        let text = line.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        match check_text(text) {
            Ok(()) => texts.push(text),
            Err(e) => output.error(&format!("line not sent: {e}")),
        }
    }
    if texts.is_empty() {
        return Ok(());
    }
    node.send_all(&texts).map_err(|e| {
        output.error(&format!("{e}; stopping"));
        ExitCode::FAILURE
    })
}
