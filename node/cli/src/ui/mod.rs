//! The user interfaces over a running [`Node`]: a terminal UI ([`tui`]), plain lines and NDJSON
//! events ([`line`](mod@line)), and the slash commands they share ([`commands`]).

pub mod channels;
pub mod commands;
pub mod format;
pub mod input;
pub mod json;
pub mod line;
pub mod out;
pub mod rooms;
pub mod tui;
pub mod view;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::ValueEnum;
use p2pchat_node::{Contact, Node};
use p2pchat_protocol::Author;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How to talk to the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The terminal UI when stdin and stdout are terminals, plain lines otherwise.
    #[default]
    Auto,
    /// The terminal UI; stdin and stdout must be terminals.
    Tui,
    /// `NAME> TEXT` lines on stdout, `info> …` on stderr.
    Plain,
    /// NDJSON events on stdout (docs/json-events.md).
    Json,
}

impl Mode {
    /// `Auto` made concrete for this process's stdin and stdout.
    pub fn resolve(self) -> Mode {
        match self {
            Mode::Auto if on_terminal() => Mode::Tui,
            Mode::Auto => Mode::Plain,
            mode => mode,
        }
    }

    /// Why this mode cannot run in this process, if it cannot: the terminal UI asked for
    /// while stdin or stdout is not a terminal (it would draw into a pipe or a file).
    pub fn unusable(self) -> Option<&'static str> {
        (self == Mode::Tui && !on_terminal()).then_some(
            "--ui tui needs a terminal, and stdin or stdout is not one; use --ui plain or --json with pipes and files",
        )
    }
}

/// Whether stdin and stdout are both terminals.
fn on_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Runs the chat on `node` in `mode` until the user quits or SIGINT/SIGTERM, then shuts the
/// node down; `bell`: the chat window rings the terminal bell for mentions and direct messages.
pub async fn run(node: Node, mode: Mode, bell: bool) -> ExitCode {
    let signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("info> error: cannot install signal handlers: {e}");
            node.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    match mode.resolve() {
        Mode::Tui => tui::run(node, signals, bell).await,
        Mode::Json => line::run(node, line::Format::Json, signals).await,
        Mode::Plain | Mode::Auto => line::run(node, line::Format::Plain, signals).await,
    }
}

/// The user's name as the node has it now (what a mention names).
pub fn own_name(node: &Node) -> String {
    node.contacts()
        .into_iter()
        .find(|contact| contact.is_self)
        .map(|contact| contact.name)
        .unwrap_or_default()
}

/// SIGINT and SIGTERM, which both mean "quit cleanly".
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// The names last seen for each key, to tell the user about renames.
#[derive(Debug, Default)]
pub struct Names(HashMap<Author, String>);

impl Names {
    /// Records the current names; returns `OLD is now known as NEW` for each that changed
    /// (not for a first profile replacing a bare `#fingerprint`, nor for the user's own
    /// rename, which `/nick` answers already).
    pub fn update(&mut self, contacts: &[Contact]) -> Vec<String> {
        let mut notices = Vec::new();
        for contact in contacts {
            let old = self.0.insert(contact.author, contact.name.clone());
            let renamed = old.filter(|old| *old != contact.name && !old.starts_with('#'));
            if let Some(old) = renamed.filter(|_| !contact.is_self) {
                notices.push(format!(
                    "{} is now known as {}",
                    format::display(&old),
                    format::display(&contact.name)
                ));
            }
        }
        notices
    }

    /// The name last seen for `author`.
    pub fn get(&self, author: &Author) -> Option<&String> {
        self.0.get(author)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_are_noticed_once() {
        let contact = |name: &str| Contact {
            author: Author::from_bytes([7; 32]),
            peer: p2pchat_node::identity::peer_id_of(&Author::from_bytes([7; 32])),
            name: name.into(),
            is_self: false,
            connected: true,
            held: 1,
            sync: None,
            path: None,
        };
        let mut names = Names::default();
        assert!(names.update(&[contact("#070707")]).is_empty());
        assert!(
            names.update(&[contact("bob")]).is_empty(),
            "a first profile is not a rename"
        );
        assert_eq!(
            names.update(&[contact("robert")]),
            ["bob is now known as robert"]
        );
        assert!(names.update(&[contact("robert")]).is_empty());
        let me = Contact {
            is_self: true,
            ..contact("alice")
        };
        names.update(std::slice::from_ref(&me));
        let renamed = Contact {
            name: "alicia".into(),
            ..me
        };
        assert!(
            names.update(std::slice::from_ref(&renamed)).is_empty(),
            "your own rename is answered by /nick, not noticed again"
        );
        assert_eq!(
            names.get(&renamed.author).map(String::as_str),
            Some("alicia")
        );
    }
}
