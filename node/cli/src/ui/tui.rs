//! The terminal UI: owns the terminal (raw mode, alternate screen, mouse wheel, bracketed
//! paste), feeds keys, pastes, messages and status events into the [`App`], and redraws at
//! most every [`FRAME`].
//!
//! Input is read in bursts: each wake-up takes every event already waiting (a paste sent as
//! plain keys is thousands of them), in order, before the next redraw, and the lines submitted
//! in one burst are stored in one group commit ([`Node::send_all`]).

use std::collections::HashSet;
use std::io::{Write, stdout};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossterm::cursor::Show;
use crossterm::event::{
    self, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, EventStream,
};
use crossterm::execute;
use futures::StreamExt;
use p2pchat_node::{Event, Node, NodeError, Place, check_text};
use ratatui::DefaultTerminal;
use tokio::sync::broadcast::error::RecvError;

use super::Signals;
use super::commands::{self, Command, Input, Reply};
use super::format::{caught_up, connection_failed, display};
use super::rooms::Rooms;
use super::view::{Action, App, Item};

/// The shortest time between two redraws.
const FRAME: Duration = Duration::from_millis(30);
/// How often the people panel is refreshed without being asked.
const REFRESH: Duration = Duration::from_secs(1);
/// How long to wait for more input before a burst is taken as complete. Not zero: crossterm's
/// `/dev/tty` reader only reads the terminal when it may wait.
const BURST_GAP: Duration = Duration::from_millis(1);
/// The most input events taken in one burst (a key is one event; a bracketed paste is one).
const MAX_BURST: usize = 8192;
/// The most lines stored in one group commit.
const MAX_GROUP: usize = 1024;
/// The shortest time between two rings of the terminal bell (a catch-up may bring many
/// mentions at once).
const BELL_GAP: Duration = Duration::from_secs(1);
/// The terminal bell.
const BEL: &[u8] = b"\x07";

/// Runs the terminal UI until the user quits or a signal arrives; `bell`: ring the terminal
/// bell for a mention or a direct message (until `/set bell off`).
pub async fn run(node: Node, mut signals: Signals, bell: bool) -> ExitCode {
    let mut screen = match Screen::enter() {
        Ok(screen) => screen,
        Err(e) => {
            eprintln!("info> error: cannot use the terminal: {e} (try --ui plain)");
            node.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let rooms = Rooms::new(node.rooms().iter().map(|r| r.label().to_owned()).collect());
    let mut app = App::new(node.author(), rooms);
    app.set_bell(bell);
    let mut rung: Option<Instant> = None;
    // The stored history comes through the feed after the start-up notices: they go below
    // it, where they are seen. (A store that cannot be read fails the feed too.)
    for room in node.rooms() {
        if let Ok(Some(newest)) = node.newest_in(room.label()) {
            app.history_ends_at(room.label(), newest);
        }
    }
    app.set_contacts(node.contacts());
    let mut shown_addresses = HashSet::new();
    for address in node.listen_addrs() {
        app.push(Item::Notice(format!("listening on {address}")));
        shown_addresses.insert(address);
    }
    app.push(Item::Notice(
        "type a line and press Enter to send it; /help lists the commands".into(),
    ));

    let mut keys = EventStream::new();
    let mut messages = node.messages();
    let mut events = node.events();
    let mut looking_for = HashSet::new();
    let mut refresh = tokio::time::interval(REFRESH);
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let failure: Option<String> = loop {
        tokio::select! {
            input = keys.next() => {
                let burst = match input.map(|first| first.and_then(burst_from)) {
                    Some(Ok(burst)) => burst,
                    Some(Err(e)) => break Some(format!("reading the terminal failed: {e}")),
                    None => break None,
                };
                match on_input(&node, &mut app, burst).await {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            },
            message = messages.next() => match message {
                Some(message) => app.push(Item::Message(message)),
                None => break Some("the node stopped".into()),
            },
            event = events.recv() => {
                let refresh_contacts = match event {
                    Ok(Event::Listening { address }) => {
                        if shown_addresses.insert(address.clone()) {
                            app.push(Item::Notice(format!("listening on {address}")));
                        }
                        false
                    }
                    Ok(Event::LookingFor { name, lan, relays }) => {
                        if looking_for.insert(name.clone()) {
                            app.push(Item::Notice(super::line::looking_for(&name, lan, &relays)));
                        }
                        false
                    }
                    Ok(Event::Connected { peer, name, rooms, path, .. }) => {
                        let notice = match path {
                            p2pchat_node::Path::Direct => format!("{} connected", display(&name)),
                            p2pchat_node::Path::Relayed => format!("{} connected via relay", display(&name)),
                        };
                        for room in &rooms {
                            app.push_in(room, Item::Notice(notice.clone()));
                        }
                        if rooms.is_empty() {
                            app.push(Item::Notice(notice));
                        }
                        app.connected(peer, rooms);
                        true
                    }
                    Ok(Event::Disconnected { peer, name }) => {
                        let who = name.unwrap_or_else(|| peer.to_string());
                        let notice = format!("{} disconnected", display(&who));
                        let rooms = app.disconnected(&peer);
                        for room in &rooms {
                            app.push_in(room, Item::Notice(notice.clone()));
                        }
                        if rooms.is_empty() {
                            app.push(Item::Notice(notice));
                        }
                        true
                    }
                    Ok(Event::SyncComplete { name, room, received, .. }) => {
                        if received > 0 {
                            app.push_in(&room, Item::Notice(caught_up(&name, received)));
                        }
                        true
                    }
                    Ok(Event::ConnectionFailed { target, incoming, reason, count }) => {
                        app.push(Item::Warning(connection_failed(&target, incoming, &reason, count)));
                        false
                    }
                    Ok(Event::Warning { message }) => {
                        app.push(Item::Warning(message));
                        false
                    }
                    Ok(Event::OwnLogRestored { restored, from, sent }) => {
                        app.push(Item::Notice(super::format::own_log_restored(restored, &from, sent)));
                        true
                    }
                    Ok(Event::Error { message }) => break Some(message),
                    Ok(_) => true, // sync progress, shown in the people panel
                    Err(RecvError::Lagged(n)) => {
                        app.push(Item::Warning(format!("{n} status messages were skipped")));
                        true
                    }
                    Err(RecvError::Closed) => break Some("the node stopped".into()),
                };
                if refresh_contacts {
                    app.set_contacts(node.contacts());
                }
            },
            _ = refresh.tick() => app.set_contacts(node.contacts()),
            _ = frame.tick(), if dirty => {
                if let Err(e) = screen.terminal.draw(|frame| app.render(frame)) {
                    break Some(format!("drawing failed: {e}"));
                }
                if app.take_bell() && rung.is_none_or(|at| at.elapsed() >= BELL_GAP) {
                    rung = Some(Instant::now());
                    if let Err(e) = ring(&mut stdout()) {
                        break Some(format!("ringing the terminal bell failed: {e}"));
                    }
                }
                dirty = false;
                continue;
            },
            () = signals.recv() => break None,
        }
        dirty = true;
    };
    drop(screen);
    node.shutdown().await;
    match failure {
        None => ExitCode::SUCCESS,
        Some(why) => {
            eprintln!("info> error: {why}; stopped");
            ExitCode::FAILURE
        }
    }
}

/// `first` and every input event already waiting after it (at most [`MAX_BURST`]), in order.
fn burst_from(first: TermEvent) -> std::io::Result<Vec<TermEvent>> {
    let mut burst = vec![first];
    while burst.len() < MAX_BURST && event::poll(BURST_GAP)? {
        burst.push(event::read()?);
    }
    Ok(burst)
}

/// Handles a burst of input events in order. The messages submitted are stored together in
/// one durable write (between commands, at most [`MAX_GROUP`] lines each). A line refused for
/// its size is reported, and if it was the last line submitted and nothing was typed after
/// it, put back in the input line to be shortened. `Ok(false)` to quit (after storing what
/// was submitted before); `Err` if the node cannot go on.
async fn on_input(node: &Node, app: &mut App, burst: Vec<TermEvent>) -> Result<bool, NodeError> {
    let mut texts: Vec<String> = Vec::new();
    // The room and conversation `texts` were typed in: a key of the same burst may switch.
    let mut typed_in = app.target();
    let mut refused: Option<(String, NodeError)> = None;
    let mut submitted = false;
    for input in burst {
        let lines = match input {
            TermEvent::Key(key) => match app.on_key(key) {
                Some(Action::Submit(line)) => vec![line],
                Some(Action::Quit) => {
                    send(node, app, &typed_in, &mut texts)?;
                    return Ok(false);
                }
                None => continue,
            },
            TermEvent::Paste(text) => app.on_paste(&text),
            TermEvent::Mouse(mouse) => {
                app.on_mouse(mouse);
                continue;
            }
            _ => continue, // a resize: redrawn after the burst
        };
        for line in lines {
            submitted = true;
            if let Some((_, why)) = refused.take() {
                app.push(Item::Error(format!("line not sent: {why}")));
            }
            match commands::parse(&line) {
                Input::Message(text) => match check_text(&text) {
                    Ok(()) => {
                        if app.target() != typed_in {
                            send(node, app, &typed_in, &mut texts)?;
                            typed_in = app.target();
                        }
                        texts.push(text);
                        if texts.len() == MAX_GROUP {
                            send(node, app, &typed_in, &mut texts)?;
                        }
                    }
                    Err(why) => refused = Some((line, why)),
                },
                Input::Invalid(why) => app.push(Item::Error(why)),
                Input::Command(Command::Bell(on)) => {
                    app.set_bell(on);
                    app.push(Item::Notice(if on {
                        "the bell is on: it rings for a line naming you or a direct message".into()
                    } else {
                        "the bell is off".into()
                    }));
                }
                Input::Command(command) => {
                    send(node, app, &typed_in, &mut texts)?;
                    let (rooms, conversations) = app.state();
                    match commands::run(node, rooms, conversations, &command).await? {
                        Reply::Lines(lines) => lines
                            .into_iter()
                            .for_each(|line| app.push(Item::Notice(line))),
                        Reply::Error(why) => app.push(Item::Error(why)),
                        Reply::Quit => return Ok(false),
                    }
                }
            }
        }
    }
    send(node, app, &typed_in, &mut texts)?;
    if let Some((line, why)) = refused {
        let kept = if app.keep_input(&line) {
            "; it is kept in the input line to shorten (Ctrl-U clears it)"
        } else {
            ""
        };
        app.push(Item::Error(format!("line not sent: {why}{kept}")));
    }
    if submitted {
        app.set_contacts(node.contacts());
    }
    Ok(true)
}

/// Stores and sends `texts` at `to` (a room and a conversation of it), and clears them; a line
/// the node refuses (a direct message to someone without an encryption key) is reported.
/// `Err` if the node cannot go on.
fn send(
    node: &Node,
    app: &mut App,
    (room, place): &(String, Place),
    texts: &mut Vec<String>,
) -> Result<(), NodeError> {
    match commands::send_at(node, app.rooms(), room, place, texts) {
        Err(
            why @ (NodeError::NoEncryptionKey { .. }
            | NodeError::DirectToSelf
            | NodeError::Invalid(_)),
        ) => {
            texts.clear();
            app.push(Item::Error(format!("line not sent: {why}")));
            Ok(())
        }
        done => done,
    }
}

/// Rings the terminal bell on `out`.
fn ring(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(BEL)?;
    out.flush()
}

/// The terminal in UI mode; dropping it (or a panic) gives the terminal back as it was.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> std::io::Result<Self> {
        // try_init enters raw mode and the alternate screen and hooks panics to leave them.
        let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(stdout(), DisableBracketedPaste, DisableMouseCapture, Show);
            hook(info);
        }));
        let screen = Screen { terminal };
        execute!(stdout(), EnableMouseCapture, EnableBracketedPaste)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableBracketedPaste, DisableMouseCapture, Show);
        ratatui::restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bell_is_one_bel_byte() {
        let mut out = Vec::new();
        ring(&mut out).expect("a Vec takes bytes");
        assert_eq!(out, [0x07]);
    }
}
