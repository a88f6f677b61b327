//! Slash commands, the same in the terminal UI and in plain mode.

use p2pchat_node::{Contact, Message, Node, NodeError, Place, check_text};
use p2pchat_protocol::entry::{GENERAL, check_channel, check_name};

use super::channels::{Conversations, label};
use super::format::{display, entries, history_line, thousands};
use super::rooms::Rooms;

/// What `/help` prints.
pub const HELP: &[&str] = &[
    "/help              this list",
    "/peers             everyone known: name, fingerprint, connected or not, entries held",
    "/whois NAME        who answers to NAME (also NAME#fingerprint)",
    "/nick NEWNAME      rename yourself; peers see the new name, and it stays yours after a restart",
    "/history [N]       the last N messages (default 20) of the current channel or conversation",
    "/join #NAME        make channel NAME the current one: what you type goes there",
    "/part              back to #general",
    "/channels          the channels and conversations, with unread counts (! : one names you)",
    "/msg NAME TEXT     a direct message, end-to-end encrypted (a name with spaces in \"quotes\")",
    "/dm NAME           talk with NAME only: what you type is a direct message (/part ends it)",
    "/rooms             the rooms you are in; what you type goes to the current one",
    "/room NAME         make room NAME the current one (chat window: also Alt-Up / Alt-Down)",
    "/set bell on|off   chat window: ring the terminal bell for a mention or a direct message (also --bell)",
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
    /// Make a channel (lowercased; `general` included) the current conversation.
    Join(String),
    /// Make `#general` the current conversation.
    Part,
    /// List the conversations.
    Channels,
    /// Send a direct message.
    Msg {
        /// Whom to, as typed (`name`, `name#fingerprint`).
        to: String,
        /// The line.
        text: String,
    },
    /// Make the direct conversation with someone (as typed) the current one.
    Dm(String),
    /// Turn the chat window's terminal bell on or off.
    Bell(bool),
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
        ("join", Some(channel)) => match a_channel(channel) {
            Ok(channel) => Command::Join(channel),
            Err(why) => return Input::Invalid(why),
        },
        ("join", None) => return usage("/join #NAME"),
        ("part", None) => Command::Part,
        ("channels", None) => Command::Channels,
        ("msg", Some(rest)) => match split_name(rest) {
            Some((to, text)) if !text.is_empty() => match (a_name(&to), check_text(text)) {
                (Err(invalid), _) => return invalid,
                (_, Err(e)) => return Input::Invalid(format!("not sent: {e}")),
                (Ok(to), Ok(())) => Command::Msg {
                    to,
                    text: text.to_owned(),
                },
            },
            _ => return usage("/msg NAME TEXT (a name with spaces in \"quotes\")"),
        },
        ("msg", None) => return usage("/msg NAME TEXT"),
        ("dm", Some(name)) => match a_name(name.trim_matches('"')) {
            Ok(name) => Command::Dm(name),
            Err(invalid) => return invalid,
        },
        ("dm", None) => return usage("/dm NAME"),
        ("set", Some(setting)) => match setting.split_whitespace().collect::<Vec<_>>()[..] {
            ["bell", "on"] => Command::Bell(true),
            ["bell", "off"] => Command::Bell(false),
            _ => return usage("/set bell on|off"),
        },
        ("set", None) => return usage("/set bell on|off"),
        ("history", None) => Command::History(DEFAULT_HISTORY),
        ("history", Some(n)) => match n.parse() {
            Ok(n) if n > 0 => Command::History(n),
            _ => return usage("/history [N], N a number of messages from 1"),
        },
        ("help" | "peers" | "rooms" | "quit" | "exit" | "part" | "channels", Some(_)) => {
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

/// The channel `/join` names (`#ops`, `ops`, `Ops`: all `ops`), or why it cannot be one.
pub fn a_channel(typed: &str) -> Result<String, String> {
    let channel = typed.strip_prefix('#').unwrap_or(typed).to_lowercase();
    if channel == GENERAL {
        return Ok(channel);
    }
    match check_channel(&channel) {
        Ok(()) => Ok(channel),
        Err(_) => Err(format!(
            "{} cannot be a channel: a channel name is 1 to 32 of a-z 0-9 - _ . and starts with a letter or digit",
            display(typed)
        )),
    }
}

/// `/msg`'s argument as its name (the first word, or a `"quoted"` one) and the rest.
fn split_name(argument: &str) -> Option<(String, &str)> {
    let (name, rest) = match argument.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"')?,
        None => argument
            .split_once(char::is_whitespace)
            .unwrap_or((argument, "")),
    };
    Some((name.to_owned(), rest.trim()))
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

/// Runs `command` on `node`, in `rooms` (which `/room` switches) and their `conversations`
/// (which `/join`, `/part` and `/dm` switch). Only a storage failure is an `Err`: the node
/// cannot go on.
pub async fn run(
    node: &Node,
    rooms: &mut Rooms,
    conversations: &mut Conversations,
    command: &Command,
) -> Result<Reply, NodeError> {
    let (room, in_room) = (rooms.current_index(), rooms.current().to_owned());
    Ok(match command {
        Command::Help => Reply::Lines(HELP.iter().map(|line| (*line).to_owned()).collect()),
        Command::Peers => Reply::Lines(node.contacts().iter().map(describe).collect()),
        Command::Whois(name) => match node.whois(name).as_slice() {
            [] => Reply::Error(format!("nobody called {} is known", display(name))),
            found => Reply::Lines(
                found
                    .iter()
                    .map(|c| format!("{}, peer id {}", describe(c), c.peer))
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
            let place = conversations.current(room).clone();
            let messages = node.history_at(&in_room, &place, *n).await?;
            if messages.is_empty() {
                Reply::Lines(vec![format!("no messages in {} yet", label(&place))])
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
        Command::Join(channel) => {
            conversations.switch(room, Place::Channel(channel.clone()));
            Reply::Lines(vec![list(conversations, room)])
        }
        Command::Part => {
            conversations.switch(room, Place::general());
            Reply::Lines(vec![list(conversations, room)])
        }
        Command::Channels => Reply::Lines(vec![list(conversations, room)]),
        Command::Msg { to, text } => {
            let sent = node
                .resolve(&in_room, to)
                .and_then(|to| node.send_direct(&in_room, to.author, text));
            match sent {
                Ok(_) => Reply::Lines(Vec::new()), // the line itself shows it went
                Err(e) => Reply::Error(format!("not sent: {}", refusal(e)?)),
            }
        }
        Command::Dm(name) => match node.resolve(&in_room, name) {
            Ok(contact) if contact.is_self => Reply::Error(NodeError::DirectToSelf.to_string()),
            Ok(contact) => {
                let with = Place::Direct {
                    with: contact.author,
                    with_name: contact.name.clone(),
                };
                conversations.switch(room, with);
                Reply::Lines(vec![format!(
                    "what you type goes to {} #{} only, end-to-end encrypted (/part returns to #general)",
                    display(&contact.name),
                    contact.fingerprint()
                )])
            }
            Err(e) => Reply::Error(refusal(e)?),
        },
        // The chat window turns its bell on or off before this; plain lines have none.
        Command::Bell(_) => Reply::Lines(vec![
            "the terminal bell rings in the chat window only (--ui tui)".to_owned(),
        ]),
        Command::Quit => Reply::Quit,
    })
}

/// What the user is told of a refused name, line or message, or `Err` for a failure that
/// stops the node.
pub fn refusal(e: NodeError) -> Result<String, NodeError> {
    match e {
        NodeError::UnknownName { .. }
        | NodeError::AmbiguousName { .. }
        | NodeError::NoEncryptionKey { .. }
        | NodeError::DirectToSelf
        | NodeError::Invalid(_)
        | NodeError::OwnLogBehind(_) => Ok(e.to_string()),
        e => Err(e),
    }
}

/// `channels: #general, #ops (current), @bob (2 unread!)`: room `room`'s conversations as
/// `/channels` says them, `!` when an unread line names the user.
pub fn list(conversations: &Conversations, room: usize) -> String {
    let current = conversations.current_index(room);
    let listed: Vec<String> = conversations
        .list(room)
        .iter()
        .enumerate()
        .map(|(index, conversation)| {
            let mut item = label(&conversation.place);
            if index == current {
                item.push_str(" (current)");
            } else if conversation.unread > 0 {
                let mark = if conversation.mentioned { "!" } else { "" };
                item.push_str(&format!(
                    " ({} unread{mark})",
                    thousands(conversation.unread)
                ));
            }
            item
        })
        .collect();
    format!("channels: {}", listed.join(", "))
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

/// Stores and sends `texts` at `place` of the room labelled `room`: in `#general` as [`send`]
/// does, in another channel or a direct conversation one by one; and clears them. A line the
/// node refuses (a direct message to someone without an encryption key) is an `Err` too: the
/// caller tells a refusal from a failure.
pub fn send_at(
    node: &Node,
    rooms: &Rooms,
    room: &str,
    place: &Place,
    texts: &mut Vec<String>,
) -> Result<(), NodeError> {
    match place {
        Place::Channel(channel) if *place != Place::general() => {
            for text in texts.drain(..) {
                node.post(room, channel, &text)?;
            }
        }
        Place::Direct { with, .. } => {
            for text in texts.drain(..) {
                node.send_direct(room, *with, &text)?;
            }
        }
        Place::Channel(_) => send(node, rooms, room, texts)?,
    }
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
        assert_eq!(command("/set bell on"), Command::Bell(true));
        assert_eq!(command("/set  bell  off "), Command::Bell(false));
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
    fn channel_and_direct_commands_parse() {
        assert_eq!(command("/join #Ops"), Command::Join("ops".into()));
        assert_eq!(command("/join lunch.v2"), Command::Join("lunch.v2".into()));
        assert_eq!(command("/join #general"), Command::Join("general".into()));
        assert_eq!(command("/part"), Command::Part);
        assert_eq!(command("/channels"), Command::Channels);
        assert_eq!(
            command("/msg bob see you  at 5"),
            Command::Msg {
                to: "bob".into(),
                text: "see you  at 5".into()
            }
        );
        assert_eq!(
            command("/msg \"Alice Smith\" hi"),
            Command::Msg {
                to: "Alice Smith".into(),
                text: "hi".into()
            }
        );
        assert_eq!(command("/dm bob#91d0e4"), Command::Dm("bob#91d0e4".into()));
        assert_eq!(
            command("/dm \"Alice Smith\""),
            Command::Dm("Alice Smith".into())
        );
        let Input::Invalid(why) = parse("/join #no way") else {
            panic!("a channel name with a space is refused")
        };
        assert!(why.contains("#no way cannot be a channel"), "{why}");
        for line in [
            "/join",
            "/join -ops",
            &format!("/join {}", "c".repeat(33)),
            "/part now",
            "/channels all",
            "/msg",
            "/msg bob",
            "/msg \"bob hi",
            &format!("/msg bob {}", "x".repeat(5000)),
            "/dm",
        ] {
            assert!(
                matches!(parse(line), Input::Invalid(_)),
                "{line:?} is refused"
            );
        }
    }

    #[test]
    fn the_channel_list_marks_the_current_one_and_counts_the_others() {
        let mut conversations = Conversations::new(1, "alice");
        let message = crate::ui::channels::tests::message;
        let ops = Place::Channel("ops".into());
        conversations.seen(0, &message(ops.clone(), "alice?"), false);
        conversations.seen(0, &message(ops, "now"), false);
        let bob = Place::Direct {
            with: p2pchat_protocol::Author::from_bytes([2; 32]),
            with_name: "bob".into(),
        };
        conversations.seen(0, &message(bob, "psst"), false);
        assert_eq!(
            list(&conversations, 0),
            "channels: #general (current), #ops (2 unread!), @bob (1 unread)"
        );
        conversations.switch(0, Place::Channel("lunch".into()));
        assert_eq!(
            list(&conversations, 0),
            "channels: #general, #ops (2 unread!), @bob (1 unread), #lunch (current)"
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
            "/set",
            "/set bell",
            "/set bell loud",
            "/set volume on",
            "/",
        ] {
            assert!(
                matches!(parse(line), Input::Invalid(_)),
                "{line:?} is refused"
            );
        }
    }
}
