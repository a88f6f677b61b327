//! What the chat prints: `NAME> TEXT` lines and `info>` status, or NDJSON events.
//!
//! The JSON schema (version 1) is documented in docs/json-events.md: one object per line, each
//! with `"v": 1` and a `"type"`.

use std::io::Write;

use p2pchat_node::{Event, Message, Stats};
use serde_json::{Value, json};

use crate::cli::display;

/// How output is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Messages on stdout as `NAME> TEXT`, status on stderr as `info> …`.
    Plain,
    /// NDJSON events on stdout.
    Json,
}

impl Output {
    /// Prints a chat message; `false` if stdout is gone.
    pub fn message(self, message: &Message) -> bool {
        let line = match self {
            Output::Plain => format!("{}> {}", display(&message.name), display(&message.text)),
            Output::Json => json!({
                "v": 1, "type": "message", "author": message.author.to_string(), "name": message.name,
                "seq": message.seq, "lamport": message.lamport, "timestamp": message.timestamp,
                "text": message.text,
            })
            .to_string(),
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
    }

    /// Prints a status event.
    pub fn event(self, event: &Event) {
        match self {
            Output::Plain => {
                if let Some(line) = plain(event) {
                    eprintln!("info> {line}");
                }
            }
            Output::Json => {
                if let Some(value) = as_json(event) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{value}").and_then(|()| stdout.flush());
                }
            }
        }
    }

    /// At exit, in JSON mode: what was received from peers.
    pub fn stats(self, stats: &Stats) {
        if self == Output::Json {
            let value = json!({
                "v": 1, "type": "stats", "received": stats.received, "stored": stats.stored,
                "duplicates": stats.duplicates, "rejected_batches": stats.rejected_batches,
            });
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{value}").and_then(|()| stdout.flush());
        }
    }

    /// Reports a problem the user caused or must fix (plain: on stderr; JSON: an error event).
    pub fn error(self, message: &str) {
        self.event(&Event::Error { message: message.to_owned() });
    }
}

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
        // Progress is for JSON consumers and the future interactive view.
        Event::SyncProgress { .. } | Event::SyncComplete { .. } => return None,
        _ => return None,
    })
}

fn as_json(event: &Event) -> Option<Value> {
    Some(match event {
        Event::Listening { address } => json!({"v": 1, "type": "listening", "address": address.to_string()}),
        Event::LookingFor { name } => json!({"v": 1, "type": "looking_for", "name": name}),
        Event::Connected { peer, name } => json!({"v": 1, "type": "connected", "peer": peer.to_string(), "name": name}),
        Event::Disconnected { peer, name } => {
            json!({"v": 1, "type": "disconnected", "peer": peer.to_string(), "name": name})
        }
        Event::SyncProgress { peer, name, received, total } => json!({
            "v": 1, "type": "sync_progress", "peer": peer.to_string(), "name": name,
            "received": received, "total": total,
        }),
        Event::SyncComplete { peer, name, received } => json!({
            "v": 1, "type": "sync_complete", "peer": peer.to_string(), "name": name, "received": received,
        }),
        Event::Warning { message } => json!({"v": 1, "type": "warning", "message": message}),
        Event::Error { message } => json!({"v": 1, "type": "error", "message": message}),
        _ => return None,
    })
}
