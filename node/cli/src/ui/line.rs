//! Line mode, for pipes and scripts. Plain: `NAME> TEXT` on stdout, `info> …` on stderr, slash
//! commands, a progress line during a long catch-up when stderr is a terminal. JSON: NDJSON
//! events on stdout, and every stdin line is a message. All output goes through [`out`]'s
//! writer thread, so a reader that stops reading never blocks the loop (or its signals).
//!
//! A printed line cannot move, and a catch-up brings one log after another, so messages that
//! arrive during a catch-up are held and printed in merged order when it completes (see
//! [`Printer`]).

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use libp2p::{Multiaddr, PeerId};
use p2pchat_node::{Event, HistoryKey, Message, MessageFeed, Node, NodeError, Path, check_text};
use p2pchat_protocol::Author;
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::channels::Conversations;
use super::commands::{self, Command, Input, Reply};
use super::format::{caught_up, connection_failed, display, own_log_restored, thousands};
use super::out::{self, Out, Stream};
use super::rooms::Rooms;
use super::{Names, Signals, json};

/// Most typed lines stored in one durable write.
const GROUP_COMMIT_LINES: usize = 1024;

/// Most chat messages queued for output as one piece.
const PRINT_BATCH: usize = 256;

/// How long the output may take to finish after the node stopped.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How often a progress line may be redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Most messages held during a catch-up before they are printed anyway (in order).
const HOLD_LINES: usize = 10_000;

/// Longest a message is held during a catch-up.
const HOLD_FOR: Duration = Duration::from_secs(2);

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
    let tty = std::io::stderr().is_terminal();
    let dropped = match (format, tty) {
        (Format::Json, _) => dropped_events,
        (Format::Plain, false) => dropped_lines,
        (Format::Plain, true) => dropped_lines_on_a_terminal,
    };
    let (out, writer) = match out::start(dropped) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("info> error: cannot start the output threads: {e}");
            node.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let rooms = Rooms::new(node.rooms().iter().map(|r| r.label().to_owned()).collect());
    let conversations = Arc::new(Mutex::new(Conversations::new(
        rooms.labels().len(),
        &super::own_name(&node),
    )));
    let mut status = Status {
        format,
        out: out.clone(),
        rooms: rooms.clone(),
        conversations: conversations.clone(),
        progress: None,
        tty,
    };
    // The first subscriber: it gets what was said during start-up. The printer subscribes after.
    let mut events = node.events();
    let mut printed = HashSet::new();
    let mut looking_for = HashSet::new();
    for address in node.listen_addrs() {
        status.event(&Event::Listening {
            address: address.clone(),
        });
        printed.insert(address);
    }
    if format == Format::Plain && rooms.several() {
        // Where typed lines go, before any is typed.
        status.info(&rooms.list());
    }

    // The newest entry stored in each room at start: what the feed brings up to it was there
    // before, and is not new (as in the chat window).
    let stored = rooms
        .labels()
        .iter()
        .map(|label| node.newest_in(label).ok().flatten())
        .collect();
    let mut printer = tokio::spawn(
        Printer::new(&node, format, out, rooms, conversations, stored).run(node.messages()),
    );

    // Only plain output tells of renames (JSON shows each message's name as it is).
    let mut names = Names::default();
    if format == Format::Plain {
        names.update(&node.contacts());
    }
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
                // Said once per name, as in the chat window (JSON gets every repeat).
                Ok(Event::LookingFor { name, .. })
                    if format == Format::Plain && !looking_for.insert(name.clone()) => {}
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
    let held = node.held();
    if held > 0 {
        status.event(&Event::Warning {
            message: format!(
                "{held} held entries were not sent: your own log did not come back from a peer \
                 before p2pchat stopped; type them again once it has"
            ),
        });
    }
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

/// Prints chat messages on stdout, in merged order across catch-ups.
///
/// While a catch-up runs (from a peer's first `SyncProgress` to its `SyncComplete`), messages
/// are held, and printed sorted by [`Message::history_key`] when the last catch-up completes,
/// once [`HOLD_LINES`] are held, or once the first has waited [`HOLD_FOR`], whichever comes
/// first. A line of your own is never held: it is printed at once, after what was held (sorted
/// together), so you see it promptly, below the lines it may answer. Lines of a catch-up that
/// arrive after that are printed after it.
struct Printer {
    format: Format,
    out: Out,
    /// The node's rooms, for the `[ROOM] ` prefix of messages when there are several.
    rooms: Rooms,
    /// Where each message is noted as it is printed (unread counts, mentions).
    conversations: Arc<Mutex<Conversations>>,
    /// Each room's newest message stored at start (those up to it are not new).
    stored: Vec<Option<HistoryKey>>,
    me: Author,
    catch_ups: CatchUps,
    /// Messages held, in arrival order.
    held: Vec<Message>,
    /// When the first of `held` came.
    held_since: Option<tokio::time::Instant>,
}

impl Printer {
    fn new(
        node: &Node,
        format: Format,
        out: Out,
        rooms: Rooms,
        conversations: Arc<Mutex<Conversations>>,
        stored: Vec<Option<HistoryKey>>,
    ) -> Self {
        // Subscribed before looking at the catch-ups under way, so none is missed in between.
        let events = node.events();
        let running = node
            .catching_up()
            .into_iter()
            .map(|peer| (peer, HashSet::new()))
            .collect();
        Printer {
            format,
            out,
            rooms,
            conversations,
            stored,
            me: node.author(),
            catch_ups: CatchUps {
                events,
                open: true,
                running,
            },
            held: Vec::new(),
            held_since: None,
        }
    }

    /// Prints `messages` until the feed ends (the node stopped) or stdout is gone.
    async fn run(mut self, mut messages: MessageFeed) {
        loop {
            let deadline = self.held_since.map(|since| since + HOLD_FOR);
            let due = deadline.is_some_and(|at| at <= tokio::time::Instant::now())
                || self.held.len() >= HOLD_LINES;
            if !self.held.is_empty() && (self.catch_ups.running.is_empty() || due) {
                if self.catch_ups.running.is_empty() {
                    // The entries of the batch that completed it were stored before it was
                    // said: take them too.
                    while self.held.len() < HOLD_LINES {
                        let Some(Some(message)) = messages.next().now_or_never() else {
                            break;
                        };
                        self.held.push(message);
                    }
                }
                if !self.flush().await {
                    return;
                }
                continue;
            }
            tokio::select! {
                event = self.catch_ups.events.recv(), if self.catch_ups.open => {
                    self.catch_ups.note(event);
                }
                message = messages.next() => {
                    let Some(message) = message else { break };
                    // The messages already at hand (a page of history) go out as one piece.
                    let mut batch = vec![message];
                    while batch.len() < PRINT_BATCH {
                        let Some(Some(message)) = messages.next().now_or_never() else {
                            break;
                        };
                        batch.push(message);
                    }
                    // A catch-up is said to start before any of its entries is stored.
                    self.catch_ups.note_said();
                    let own = batch.iter().any(|message| message.author == self.me);
                    if self.catch_ups.running.is_empty() && self.held.is_empty() {
                        if !self.print(&batch).await {
                            return;
                        }
                    } else {
                        self.held.extend(batch);
                        self.held_since.get_or_insert_with(tokio::time::Instant::now);
                        if own && !self.flush().await {
                            return;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => {} // flushed at the top of the loop
            }
        }
        // The node stopped: print what is held.
        self.flush().await;
    }

    /// Prints what is held, in merged order; `false` once stdout is gone.
    async fn flush(&mut self) -> bool {
        let mut held = std::mem::take(&mut self.held);
        self.held_since = None;
        held.sort_unstable_by_key(Message::history_key);
        self.print(&held).await
    }

    /// Notes `messages` in their conversations and prints them; `false` once stdout is gone.
    async fn print(&mut self, messages: &[Message]) -> bool {
        {
            let mut conversations = lock(&self.conversations);
            for message in messages {
                if let Some(room) = self.rooms.index_of(&message.room) {
                    let stored = self.stored.get(room).copied().flatten();
                    let new = message.author != self.me && Some(message.history_key()) > stored;
                    conversations.seen(room, message, !new);
                }
            }
        }
        print(
            &self.out,
            self.format,
            &self.rooms,
            &mut self.catch_ups,
            messages,
        )
        .await
    }
}

/// The conversations, whoever panicked holding them (each change is one call).
fn lock(conversations: &Mutex<Conversations>) -> MutexGuard<'_, Conversations> {
    conversations.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The catch-ups under way, followed through the status events.
struct CatchUps {
    events: broadcast::Receiver<Event>,
    /// Whether the events still come (the node runs).
    open: bool,
    /// Peers with a catch-up that has started and not completed, and the rooms it is in
    /// (none known for one under way when the printer started: it ends with the first room's).
    running: HashMap<PeerId, HashSet<String>>,
}

impl CatchUps {
    /// Takes note of one event.
    fn note(&mut self, event: Result<Event, RecvError>) {
        match event {
            Ok(Event::SyncProgress { peer, room, .. }) => {
                self.running.entry(peer).or_default().insert(room);
            }
            Ok(Event::SyncComplete { peer, room, .. }) => {
                if let Some(rooms) = self.running.get_mut(&peer) {
                    rooms.remove(&room);
                    if rooms.is_empty() {
                        self.running.remove(&peer);
                    }
                }
            }
            Ok(Event::Disconnected { peer, .. }) => {
                self.running.remove(&peer);
            }
            Ok(_) => {}
            // Some events were lost: forget the catch-ups rather than hold lines for one that
            // ended; one still running says so again with its next batch.
            Err(RecvError::Lagged(_)) => self.running.clear(),
            Err(RecvError::Closed) => {
                self.open = false;
                self.running.clear();
            }
        }
    }

    /// Takes note of every event said so far.
    fn note_said(&mut self) {
        while self.open {
            match self.events.try_recv() {
                Ok(event) => self.note(Ok(event)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => self.note(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => self.note(Err(RecvError::Closed)),
            }
        }
    }
}

/// Queues `messages` on stdout in pieces of [`PRINT_BATCH`], following the catch-ups while it
/// waits for room (stdout read slowly); `false` once stdout is gone.
async fn print(
    out: &Out,
    format: Format,
    rooms: &Rooms,
    catch_ups: &mut CatchUps,
    messages: &[Message],
) -> bool {
    for piece in messages.chunks(PRINT_BATCH) {
        let lines: String = piece
            .iter()
            .map(|m| message_line(format, rooms, m))
            .collect();
        let queued = out.messages(lines, piece.len());
        tokio::pin!(queued);
        loop {
            tokio::select! {
                queued = &mut queued => if queued { break } else { return false },
                event = catch_ups.events.recv(), if catch_ups.open => catch_ups.note(event),
            }
        }
    }
    true
}

/// A chat message as printed on stdout, newline included: `NAME> TEXT`, `#CHANNEL NAME> TEXT`
/// or `@OTHER NAME> TEXT`, with several rooms after `[ROOM] `.
fn message_line(format: Format, rooms: &Rooms, message: &Message) -> String {
    match format {
        Format::Plain => format!(
            "{}{}\n",
            rooms.prefix(&message.room),
            super::format::message_line(message)
        ),
        Format::Json => format!("{}\n", json::message(message)),
    }
}

/// Status output: `info>` lines on stderr (with a redrawn progress line on a terminal), or
/// JSON events on stdout.
struct Status {
    format: Format,
    /// The writer of stdout and stderr.
    out: Out,
    /// The node's rooms and the current one, where typed lines go.
    rooms: Rooms,
    /// Each room's conversations and the current one, where typed lines go in it.
    conversations: Arc<Mutex<Conversations>>,
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
                    // Run on a copy, the printer noting messages meanwhile; its switch is kept.
                    let mut conversations = lock(&self.conversations).clone();
                    let reply =
                        commands::run(node, &mut self.rooms, &mut conversations, &command).await?;
                    lock(&self.conversations).follow(&conversations);
                    if let (Command::Nick(name), Reply::Lines(_)) = (&command, &reply) {
                        lock(&self.conversations).rename(name);
                    }
                    match reply {
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

    /// Stores and sends the pending `texts` in the current room's current conversation, and
    /// clears them.
    fn send(&mut self, node: &Node, texts: &mut Vec<String>) -> Result<(), NodeError> {
        let place = lock(&self.conversations)
            .current(self.rooms.current_index())
            .clone();
        let lines = if texts.len() == 1 { "line" } else { "lines" };
        if let Err(e) = commands::send_at(node, &self.rooms, self.rooms.current(), &place, texts) {
            texts.clear();
            let why = commands::refusal(e)?;
            self.error(&format!("{lines} not sent: {why}"));
        }
        Ok(())
    }

    /// Prints a status event.
    fn event(&mut self, event: &Event) {
        match self.format {
            Format::Json => {
                if let Some(value) = json::event(event) {
                    let line = format!("{value}\n");
                    match event {
                        Event::Error { .. } => self.out.write_error(Stream::Stdout, line),
                        _ => self.out.write(Stream::Stdout, line),
                    }
                }
            }
            Format::Plain => match event {
                Event::SyncProgress {
                    name,
                    room,
                    received,
                    total,
                    ..
                } => self.draw_progress(room, name, *received, *total),
                Event::SyncComplete {
                    name,
                    room,
                    received,
                    ..
                } if self.progress.is_some() => {
                    self.clear_progress();
                    let line = format!("{}{}", self.rooms.prefix(room), caught_up(name, *received));
                    self.info(&line);
                }
                event => {
                    if let Some(line) = plain(event, &self.rooms) {
                        self.say(&line, matches!(event, Event::Error { .. }));
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
        self.say(line, false);
    }

    /// An `info>` line on stderr (plain mode), kept in a flood if it is an `error`.
    fn say(&mut self, line: &str, error: bool) {
        self.clear_progress();
        let line = format!("info> {line}\n");
        if error {
            self.out.write_error(Stream::Stderr, line);
        } else {
            self.out.write(Stream::Stderr, line);
        }
    }

    /// Redraws the one-line catch-up progress, at most every [`PROGRESS_EVERY`], on a terminal
    /// (once anything is known to be missing: a catch-up opens at 0 of 0 while the heads are
    /// compared).
    fn draw_progress(&mut self, room: &str, name: &str, received: u64, total: u64) {
        if !self.tty
            || total == 0
            || self
                .progress
                .is_some_and(|drawn| drawn.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        self.out.write(
            Stream::Stderr,
            format!(
                "\r\x1b[Kinfo> {}catching up from {}: {} / {}",
                self.rooms.prefix(room),
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

/// The line said when `n` status lines were dropped: a warning event (JSON).
fn dropped_events(n: u64) -> String {
    let message = format!(
        "{} status events dropped: stdout is read too slowly",
        thousands(n)
    );
    json::event(&Event::Warning { message }).map_or_else(String::new, |event| format!("{event}\n"))
}

/// The line said when `n` status lines were dropped (plain mode).
fn dropped_lines(n: u64) -> String {
    format!(
        "info> … {} status lines dropped: stderr is read too slowly\n",
        thousands(n)
    )
}

/// [`dropped_lines`] on a terminal, erasing a progress line first (the line that would have
/// erased it may be among those dropped).
fn dropped_lines_on_a_terminal(n: u64) -> String {
    format!("\r\x1b[K{}", dropped_lines(n))
}

/// How a connection's path is said after "connected to NAME (ID)": nothing when direct (the
/// word "direct" is kept for the hole punch's own line, [`Event::DirectConnection`]).
fn via(path: Path) -> &'static str {
    match path {
        Path::Direct => "",
        Path::Relayed => " via relay",
    }
}

/// Where a `--peer NAME` not found yet is looked for, in words.
pub fn looking_for(name: &str, lan: bool, relays: &[Multiaddr]) -> String {
    let at: Vec<String> = relays.iter().map(ToString::to_string).collect();
    let name = display(name);
    match (lan, at.is_empty()) {
        (true, true) => format!("looking for {name} on the LAN (no --relay given)…"),
        (true, false) => format!("looking for {name} on the LAN and at {}…", at.join(", ")),
        (false, _) => format!("looking for {name} at {}…", at.join(", ")),
    }
}

/// The `info>` text of a status event, if it has one. With several `rooms`, a peer's
/// connection says which of them it shares.
fn plain(event: &Event, rooms: &Rooms) -> Option<String> {
    Some(match event {
        Event::Listening { address } => format!("listening on {address}"),
        Event::LookingFor { name, lan, relays } => looking_for(name, *lan, relays),
        Event::Connected {
            peer, name, path, ..
        } if !rooms.several() => {
            format!("connected to {} ({peer}){}", display(name), via(*path))
        }
        Event::Connected {
            peer,
            name,
            rooms,
            path,
            ..
        } => {
            let rooms: Vec<String> = rooms.iter().map(|room| display(room)).collect();
            let noun = if rooms.len() == 1 { "room" } else { "rooms" };
            format!(
                "connected to {} ({peer}){} in {noun} {}",
                display(name),
                via(*path),
                rooms.join(", ")
            )
        }
        Event::DirectConnection { name, .. } => format!("direct connection to {}", display(name)),
        Event::Disconnected { peer, name } => match name {
            Some(name) => format!("disconnected from {}", display(name)),
            None => format!("disconnected from {peer}"),
        },
        Event::ConnectionFailed {
            target,
            incoming,
            reason,
            count,
        } => display(&connection_failed(target, *incoming, reason, *count)),
        Event::Warning { message } => format!("warning: {}", display(message)),
        Event::Error { message } => format!("error: {}", display(message)),
        Event::OwnLogRestored {
            restored,
            from,
            sent,
        } => own_log_restored(*restored, from, *sent),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(labels: &[&str]) -> Rooms {
        Rooms::new(labels.iter().map(|l| (*l).to_owned()).collect())
    }

    fn message(room: &str) -> Message {
        Message {
            author: Author::from_bytes([2; 32]),
            name: "bob".into(),
            seq: 2,
            clock: 5,
            timestamp: 1_767_000_000_000,
            text: "hi\tthere".into(),
            room: room.into(),
            place: p2pchat_node::Place::general(),
        }
    }

    #[test]
    fn one_room_prints_as_before_and_several_say_the_room() {
        let one = rooms(&["lan"]);
        assert_eq!(
            message_line(Format::Plain, &one, &message("lan")),
            "bob> hi there\n"
        );
        let several = rooms(&["lan", "team"]);
        assert_eq!(
            message_line(Format::Plain, &several, &message("team")),
            "[team] bob> hi there\n"
        );
        assert_eq!(
            message_line(Format::Plain, &several, &message("lan")),
            "[lan] bob> hi there\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&message_line(Format::Json, &one, &message("lan")))
                .expect("one JSON line");
        assert_eq!(json["room"], "lan", "JSON names the room even with one");

        let peer = PeerId::random();
        let connected = Event::Connected {
            peer,
            name: "bob".into(),
            rooms: vec!["lan".into(), "team".into()],
            direction: p2pchat_node::Direction::Dialed,
            address: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            path: Path::Direct,
        };
        assert_eq!(
            plain(&connected, &one),
            Some(format!("connected to bob ({peer})"))
        );
        assert_eq!(
            plain(&connected, &several),
            Some(format!("connected to bob ({peer}) in rooms lan, team"))
        );
        let connected = Event::Connected {
            peer,
            name: "bob".into(),
            rooms: vec!["team".into()],
            direction: p2pchat_node::Direction::Listened,
            address: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            path: Path::Relayed,
        };
        assert_eq!(
            plain(&connected, &several),
            Some(format!("connected to bob ({peer}) via relay in room team"))
        );
        assert_eq!(
            plain(&connected, &one),
            Some(format!("connected to bob ({peer}) via relay"))
        );
        assert_eq!(
            plain(
                &Event::DirectConnection {
                    peer,
                    name: "bob".into()
                },
                &one
            ),
            Some("direct connection to bob".into())
        );
        let relay: Multiaddr = "/ip4/198.51.100.1/tcp/4001".parse().unwrap();
        assert_eq!(
            looking_for("bob", true, &[]),
            "looking for bob on the LAN (no --relay given)…"
        );
        assert_eq!(
            looking_for("bob", true, std::slice::from_ref(&relay)),
            format!("looking for bob on the LAN and at {relay}…")
        );
        assert_eq!(
            looking_for("bob", false, std::slice::from_ref(&relay)),
            format!("looking for bob at {relay}…")
        );
    }

    #[test]
    fn a_catch_up_runs_until_each_of_its_rooms_completes() {
        let (_sender, events) = broadcast::channel(1);
        let mut catch_ups = CatchUps {
            events,
            open: true,
            running: HashMap::new(),
        };
        let (bob, carol) = (PeerId::random(), PeerId::random());
        let progress = |peer, room: &str| Event::SyncProgress {
            peer,
            name: "x".into(),
            room: room.into(),
            received: 0,
            total: 1,
        };
        let complete = |peer, room: &str| Event::SyncComplete {
            peer,
            name: "x".into(),
            room: room.into(),
            received: 1,
        };
        catch_ups.note(Ok(progress(bob, "lan")));
        catch_ups.note(Ok(progress(bob, "team")));
        catch_ups.note(Ok(progress(carol, "team")));
        catch_ups.note(Ok(complete(bob, "lan")));
        assert!(catch_ups.running.contains_key(&bob), "team still runs");
        catch_ups.note(Ok(complete(bob, "team")));
        assert!(!catch_ups.running.contains_key(&bob));
        catch_ups.note(Ok(Event::Disconnected {
            peer: carol,
            name: None,
        }));
        assert!(catch_ups.running.is_empty());
    }

    #[test]
    fn channels_and_direct_messages_are_marked_in_plain_and_json() {
        let one = rooms(&["lan"]);
        let mut ops = message("lan");
        ops.place = p2pchat_node::Place::Channel("ops".into());
        assert_eq!(
            message_line(Format::Plain, &one, &ops),
            "#ops bob> hi there\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&message_line(Format::Json, &one, &ops)).expect("JSON");
        assert_eq!(
            (&json["channel"], &json["dm"]),
            (&"ops".into(), &serde_json::Value::Null)
        );
        let alice = Author::from_bytes([3; 32]);
        let mut direct = message("team");
        direct.place = p2pchat_node::Place::Direct {
            with: alice,
            with_name: "alice".into(),
        };
        let several = rooms(&["lan", "team"]);
        assert_eq!(
            message_line(Format::Plain, &several, &direct),
            "[team] @alice bob> hi there\n",
            "the room first"
        );
        let json: serde_json::Value =
            serde_json::from_str(&message_line(Format::Json, &one, &direct)).expect("JSON");
        assert_eq!(json["channel"], serde_json::Value::Null);
        assert_eq!(
            json["dm"],
            serde_json::json!({"with": alice.to_string(), "with_name": "alice", "outgoing": true})
        );
        let json: serde_json::Value =
            serde_json::from_str(&message_line(Format::Json, &one, &message("lan"))).expect("JSON");
        assert_eq!(json["channel"], "general");
    }

    #[test]
    fn dropped_status_lines_are_said_in_each_format() {
        let event: serde_json::Value =
            serde_json::from_str(&dropped_events(2048)).expect("one JSON line");
        assert_eq!(event["type"], "warning");
        assert_eq!(event["v"], 1);
        assert_eq!(
            event["message"],
            "2,048 status events dropped: stdout is read too slowly"
        );
        assert_eq!(
            dropped_lines(3),
            "info> … 3 status lines dropped: stderr is read too slowly\n"
        );
        assert!(dropped_lines_on_a_terminal(3).starts_with("\r\x1b[Kinfo> … 3 status"));
    }
}
