//! Slash commands, the same in the terminal UI and in plain mode.

use p2pchat_node::{Contact, Message, Node, NodeError};
use p2pchat_protocol::entry::check_name;

use super::format::{display, entries, history_line, thousands};
use super::rooms::Rooms;

/// What `/help` prints.
pub const HELP: &[&str] = &[
    "/help              this list",
    "/peers             everyone known: name, fingerprint, connected or not, entries held",
    "/whois NAME        who answers to NAME (also NAME#fingerprint)",
    "/nick NEWNAME      rename yourself; peers see the new name, and it stays yours after a restart",
    "/history [N]       the last N messages (default 20), with dates",
    "/rooms             the rooms you are in; what you type goes to the current one",
    "/room NAME         make room NAME the current one (chat window: also Alt-Up / Alt-Down)",
    "/quit              leave (Ctrl-C works too)",
    "//text             send a line that starts with /",
];

/// How many messages `/history` shows without a count.
pub const DEFAULT_HISTORY: usize = 20;

/// A parsed slash command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// List the commands.
    Help,
    /// List the contacts.
    Peers,
    /// Describe who answers to a name.
    Whois(String),
    /// Rename the user.
    Nick(String),
    /// Show the last N messages.
    History(usize),
    /// List the rooms.
    Rooms,
    /// Make a room the current one.
    Room(String),
    /// Leave.
    Quit,
}

/// What a typed line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A message to send (a leading `//` has become `/`).
    Message(String),
    /// A command to run.
    Command(Command),
    /// A line that starts with `/` but is not a valid command: why, in words.
    Invalid(String),
}

/// Reads a typed line: a message, or a command.
pub fn parse(line: &str) -> Input {
    if let Some(escaped) = line.strip_prefix("//") {
        return Input::Message(format!("/{escaped}"));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Input::Message(line.to_owned());
    };
    let (name, rest) = command
        .trim_start()
        .split_once(char::is_whitespace)
        .unwrap_or((command.trim_start(), ""));
    // The rest of the line is the argument: a name may hold spaces (`/nick Alice Smith`).
    let argument = Some(rest.trim()).filter(|rest| !rest.is_empty());
    let usage = |usage: &str| Input::Invalid(format!("usage: {usage}"));
    let a_name = |name: &str| match check_name(name) {
        Ok(()) => Ok(name.to_owned()),
        Err(e) => Err(Input::Invalid(e.to_string())),
    };
    let command = match (name, argument) {
        ("help", None) => Command::Help,
        ("peers", None) => Command::Peers,
        ("quit" | "exit", None) => Command::Quit,
        ("whois", Some(name)) => match a_name(name) {
            Ok(name) => Command::Whois(name),
            Err(invalid) => return invalid,
        },
        ("whois", None) => return usage("/whois NAME"),
        ("nick", Some(name)) => match a_name(name) {
            Ok(name) => Command::Nick(name),
            Err(invalid) => return invalid,
        },
        ("nick", None) => return usage("/nick NEWNAME"),
        ("rooms", None) => Command::Rooms,
        ("room", Some(label)) => Command::Room(label.to_owned()),
        ("room", None) => return usage("/room NAME (/rooms lists them)"),
        ("history", None) => Command::History(DEFAULT_HISTORY),
        ("history", Some(n)) => match n.parse() {
            Ok(n) if n > 0 => Command::History(n),
            _ => return usage("/history [N], N a number of messages from 1"),
        },
        ("help" | "peers" | "rooms" | "quit" | "exit", Some(_)) => {
            return usage(&format!("/{name} (no arguments)"));
        }
        _ => {
            return Input::Invalid(format!(
                "unknown command /{}: nothing was sent (/help lists the commands; //text sends a line starting with /)",
                display(name)
            ));
        }
    };
    Input::Command(command)
}

/// The result of running a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Lines to show the user.
    Lines(Vec<String>),
    /// Something went wrong: why, in words.
    Error(String),
    /// The user wants to leave.
    Quit,
}

/// Runs `command` on `node`, in `rooms` (which `/room` switches). Only a storage failure is an
/// `Err`: the node cannot go on.
pub async fn run(node: &Node, rooms: &mut Rooms, command: &Command) -> Result<Reply, NodeError> {
    Ok(match command {
        Command::Help => Reply::Lines(HELP.iter().map(|line| (*line).to_owned()).collect()),
        Command::Peers => Reply::Lines(node.contacts().iter().map(describe).collect()),
        Command::Whois(name) => match node.whois(name).as_slice() {
            [] => Reply::Error(format!("nobody called {} is known", display(name))),
            found => Reply::Lines(
                found
                    .iter()
                    .map(|c| {
                        format!(
                            "{}, peer id {}",
                            describe(c),
                            c.peer.map(|p| p.to_string()).unwrap_or_default()
                        )
                    })
                    .collect(),
            ),
        },
        Command::Nick(name) => match node.rename(name) {
            Ok(()) => Reply::Lines(vec![format!(
                "you are now {} (kept when you start again with the same --name or --data-dir)",
                display(name)
            )]),
            Err(e @ (NodeError::Name(_) | NodeError::NameTaken { .. })) => {
                Reply::Error(e.to_string())
            }
            Err(e) => return Err(e),
        },
        Command::History(n) => {
            let messages = node.history_in(rooms.current(), *n).await?;
            if messages.is_empty() {
                Reply::Lines(vec!["no messages yet".to_owned()])
            } else {
                // Tens of thousands of lines take a while to format too: not on this task.
                let rooms = rooms.clone();
                let format = move || {
                    let line =
                        |m: &Message| format!("{}{}", rooms.prefix(&m.room), history_line(m));
                    messages.iter().map(line).collect()
                };
                let lines = tokio::task::spawn_blocking(format).await;
                Reply::Lines(lines.map_err(|_| NodeError::Stopped)?)
            }
        }
        Command::Rooms | Command::Room(_) => in_rooms(rooms, command),
        Command::Quit => Reply::Quit,
    })
}

/// Runs `/rooms` and `/room NAME`, which need no node.
fn in_rooms(rooms: &mut Rooms, command: &Command) -> Reply {
    match command {
        Command::Room(label) => match rooms.switch(label) {
            Ok(()) => Reply::Lines(vec![format!("now in room {}", display(label))]),
            Err(why) => Reply::Error(why),
        },
        _ => Reply::Lines(vec![rooms.list()]),
    }
}

/// Stores and sends `texts` in the room labelled `room`, one of `rooms` (in the default room in
/// one durable write), and clears them.
pub fn send(
    node: &Node,
    rooms: &Rooms,
    room: &str,
    texts: &mut Vec<String>,
) -> Result<(), NodeError> {
    if texts.is_empty() {
        return Ok(());
    }
    if rooms.index_of(room) == Some(0) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        node.send_all(&refs)?;
    } else {
        for text in texts.iter() {
            node.send_in(room, text)?;
        }
    }
    texts.clear();
    Ok(())
}

/// One line about a contact: `bob #91d0e4 connected, 43 entries, catching up 4,300 / 10,000`.
pub fn describe(contact: &Contact) -> String {
    let state = if contact.is_self {
        "you"
    } else if contact.connected {
        match contact.path {
            Some(p2pchat_node::Path::Relayed) => "connected, relayed",
            _ => "connected, direct",
        }
    } else {
        "not connected"
    };
    let mut line = format!(
        "{} #{} {state}, {}",
        display(&contact.name),
        contact.fingerprint(),
        entries(contact.held)
    );
    if let Some(sync) = contact.sync {
        line.push_str(&format!(
            ", catching up {} / {}",
            thousands(sync.received),
            thousands(sync.total)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Command {
        match parse(line) {
            Input::Command(command) => command,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(command("/help"), Command::Help);
        assert_eq!(command("/peers"), Command::Peers);
        assert_eq!(
            command("/whois bob#91d0e4"),
            Command::Whois("bob#91d0e4".into())
        );
        assert_eq!(command("/nick  carol "), Command::Nick("carol".into()));
        assert_eq!(
            command("/nick Alice Smith"),
            Command::Nick("Alice Smith".into())
        );
        assert_eq!(
            command("/whois  Alice Smith "),
            Command::Whois("Alice Smith".into())
        );
        assert_eq!(command("/history"), Command::History(DEFAULT_HISTORY));
        assert_eq!(command("/history 5"), Command::History(5));
        assert_eq!(command("/quit"), Command::Quit);
        assert_eq!(command("/rooms"), Command::Rooms);
        assert_eq!(command("/room  team "), Command::Room("team".into()));
        assert_eq!(
            command("/room my team"),
            Command::Room("my team".into()),
            "a key file's stem may hold spaces"
        );
    }

    #[test]
    fn rooms_are_listed_and_switched() {
        let mut rooms = Rooms::new(vec!["lan".into(), "team".into()]);
        let lines = |lines: &[&str]| Reply::Lines(lines.iter().map(|l| (*l).to_owned()).collect());
        assert_eq!(
            in_rooms(&mut rooms, &Command::Rooms),
            lines(&["rooms: lan (current), team"])
        );
        assert_eq!(
            in_rooms(&mut rooms, &Command::Room("team".into())),
            lines(&["now in room team"])
        );
        assert_eq!(rooms.current(), "team");
        assert_eq!(
            in_rooms(&mut rooms, &Command::Room("ops".into())),
            Reply::Error(
                "no room called ops: your rooms are lan, team (/room NAME switches)".into()
            )
        );
        assert_eq!(
            in_rooms(&mut rooms, &Command::Rooms),
            lines(&["rooms: lan, team (current)"])
        );
    }

    #[test]
    fn lines_that_are_not_commands_are_messages() {
        assert_eq!(parse("hello /peers"), Input::Message("hello /peers".into()));
        assert_eq!(
            parse("//peers is a command"),
            Input::Message("/peers is a command".into())
        );
    }

    #[test]
    fn mistakes_are_explained_and_never_sent() {
        let Input::Invalid(why) = parse("/frobnicate now") else {
            panic!("an unknown command is refused")
        };
        assert!(
            why.contains("unknown command /frobnicate") && why.contains("/help"),
            "{why}"
        );
        for line in [
            "/nick",
            "/nick a\tb",
            &format!("/nick {}", "n".repeat(65)),
            "/whois",
            &format!("/whois {}", "n".repeat(100)),
            "/history lots",
            "/history 0",
            "/history 1 2",
            "/quit now",
            "/room",
            "/rooms lan",
            "/",
        ] {
            assert!(
                matches!(parse(line), Input::Invalid(_)),
                "{line:?} is refused"
            );
        }
    }
}
