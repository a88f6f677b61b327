//! `p2pchat`: a serverless, encrypted LAN chat. See `p2pchat --help`.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use p2pchat_node::{Event, Node, NodeError};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};

use cli::{Cli, display};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("info> error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Stdin is read on a blocking thread that may never return; do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run(cli: Cli) -> ExitCode {
    let node = match cli.builder().map(|b| b.spawn()) {
        Ok(spawning) => spawning.await,
        Err(e) => Err(e),
    };
    let node = match node {
        Ok(node) => node,
        Err(e) => {
            eprintln!("info> error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = node.events();
    let mut printed = std::collections::HashSet::new();
    for address in node.listen_addrs() {
        eprintln!("info> listening on {address}");
        printed.insert(address);
    }

    let mut messages = node.messages();
    let printer = tokio::spawn(async move {
        let mut stdout = std::io::stdout();
        while let Some(message) = messages.next().await {
            let line = format!("{}> {}\n", display(&message.name), display(&message.text));
            if stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                break;
            }
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let (mut sigint, mut sigterm) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(int), Ok(term)) => (int, term),
        _ => {
            eprintln!("info> error: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let code = loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if let Err(code) = send_line(&node, &line) {
                        break code;
                    }
                }
                Ok(None) | Err(_) => stdin_open = false, // keep relaying without input
            },
            event = events.recv() => match event {
                Ok(Event::Listening { address }) => {
                    if printed.insert(address.clone()) {
                        eprintln!("info> listening on {address}");
                    }
                }
                Ok(Event::LookingFor { name }) => eprintln!("info> looking for {} on the LAN…", display(&name)),
                Ok(Event::Connected { peer, name }) => eprintln!("info> connected to {} ({peer})", display(&name)),
                Ok(Event::Disconnected { peer, name }) => match name {
                    Some(name) => eprintln!("info> disconnected from {}", display(&name)),
                    None => eprintln!("info> disconnected from {peer}"),
                },
                Ok(Event::Warning { message }) => eprintln!("info> warning: {}", display(&message)),
                Ok(Event::Error { message }) => {
                    eprintln!("info> error: {message}; stopping");
                    break ExitCode::FAILURE;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("info> warning: {n} status messages were skipped");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break ExitCode::FAILURE,
            },
            _ = sigint.recv() => break ExitCode::SUCCESS,
            _ = sigterm.recv() => break ExitCode::SUCCESS,
        }
    };
    node.shutdown().await;
    let _ = printer.await;
    code
}

/// Sends one typed line; a storage failure is fatal (`Err` with the exit code).
fn send_line(node: &Node, line: &str) -> Result<(), ExitCode> {
    let text = line.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Ok(());
    }
    match node.send(text) {
        Ok(_) => Ok(()),
        Err(NodeError::Invalid(e)) => {
            eprintln!("info> error: line not sent: {e}");
            Ok(())
        }
        Err(e) => {
            eprintln!("info> error: {e}; stopping");
            Err(ExitCode::FAILURE)
        }
    }
}
